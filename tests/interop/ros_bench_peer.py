"""Peers of `reflex bench ros`, in rclpy.

pinger RATE SECONDS: publishes sensor_msgs/JointState on /bench/joint_states at RATE, and times
    each one until the first std_msgs/Float64MultiArray on /bench/commands that follows it (the
    candidate answers every state with one command). Prints one JSON line: the round trips in
    microseconds and how many states went unanswered.
echo: answers every JointState on /bench/joint_states with a Float64MultiArray of its positions
    on /bench/commands (the rclpy candidate), until killed.
"""

import json
import os
import sys
import time

# Discovery and data stay on this machine (FACTS.md's network rules), whatever the caller's
# environment says; set before rclpy loads its middleware.
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
import rclpy  # noqa: E402
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, DurabilityPolicy, HistoryPolicy
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray

NAMES = [f"joint{i}" for i in range(1, 8)] + ["left_finger_joint", "right_finger_joint"]


def qos(reliable):
    return QoSProfile(
        reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.VOLATILE,
        history=HistoryPolicy.KEEP_LAST,
        depth=10,
    )


def pinger(rate, seconds, warmup):
    node = Node("bench_pinger")
    pending = {"t": None}
    rtts = []
    unanswered = [0]

    def on_command(_msg):
        t = pending["t"]
        if t is not None:
            rtts.append((time.perf_counter() - t) * 1e6)
            pending["t"] = None

    node.create_subscription(Float64MultiArray, "/bench/commands", on_command, qos(True))
    pub = node.create_publisher(JointState, "/bench/joint_states", qos(True))
    msg = JointState()
    msg.name = list(NAMES)
    msg.position = [0.0, -0.3, 0.0, -2.0, 0.0, 1.7, 0.8, 0.04, 0.04]
    msg.velocity = [0.0] * len(NAMES)
    msg.effort = [0.0] * len(NAMES)
    period = 1.0 / rate
    start = time.perf_counter()
    next_t = start
    sent = 0
    # Warm-up: discovery and the first answers are not measured.
    while time.perf_counter() - start < warmup + seconds:
        measuring = time.perf_counter() - start >= warmup
        if pending["t"] is not None and measuring:
            unanswered[0] += 1
        ns = time.time_ns()
        msg.header.stamp.sec = ns // 1_000_000_000
        msg.header.stamp.nanosec = ns % 1_000_000_000
        pending["t"] = time.perf_counter()
        pub.publish(msg)
        if not measuring:
            rtts.clear()
        else:
            sent += 1
        next_t += period
        while True:
            left = next_t - time.perf_counter()
            if left <= 0:
                break
            rclpy.spin_once(node, timeout_sec=left)
    print(json.dumps({"rtts_us": rtts, "sent": sent, "unanswered": unanswered[0]}), flush=True)


def echo():
    node = Node("bench_echo")
    out = Float64MultiArray()
    pub = node.create_publisher(Float64MultiArray, "/bench/commands", qos(True))

    def on_state(msg):
        out.data = list(msg.position[:7])
        pub.publish(out)

    node.create_subscription(JointState, "/bench/joint_states", on_state, qos(False))
    rclpy.spin(node)


def main():
    rclpy.init()
    if sys.argv[1] == "pinger":
        pinger(float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]))
    else:
        echo()
    rclpy.shutdown()


if __name__ == "__main__":
    main()
