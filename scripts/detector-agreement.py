#!/usr/bin/env python3
"""How often the success detector (`reflex ros detect`) agrees with the simulated arm's ground
truth, live over ROS 2. Simulation only: it reads `/reflex_sim/privileged_success`, which a
real arm does not have, to evaluate the detector, never to drive anything.

It listens for SECONDS to the detector's probabilities (std_msgs/Float64), its success
declarations (std_msgs/Bool) and the simulated arm's privileged success (std_msgs/Bool, at the
scene rate). Each probability is paired with the newest ground truth heard before it; each
declaration is checked against the ground truth at that moment. Prints one JSON object.

Usage: scripts/detector-agreement.py SECONDS [THRESHOLD] [PROBABILITY_TOPIC] [SUCCESS_TOPIC]
Needs rclpy (scripts/setup-tests.sh installs it into target/pyenv); run it with that Python,
ROS_DOMAIN_ID set to the arm's domain.
"""

import json
import os
import sys
import time

# Discovery and data stay on this machine; set before rclpy loads.
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
import rclpy  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy, HistoryPolicy  # noqa: E402
from std_msgs.msg import Bool, Float64  # noqa: E402


def main():
    seconds = float(sys.argv[1])
    threshold = float(sys.argv[2]) if len(sys.argv) > 2 else 0.5
    prob_topic = sys.argv[3] if len(sys.argv) > 3 else "/reflex/success_probability"
    success_topic = sys.argv[4] if len(sys.argv) > 4 else "/reflex/success"
    rclpy.init()
    node = Node("detector_agreement")
    qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE,
                     history=HistoryPolicy.KEEP_LAST)
    state = {"truth": None}
    frames = []  # (p, truth)
    declared = []  # truth at each declaration
    node.create_subscription(Bool, "/reflex_sim/privileged_success",
                             lambda m: state.__setitem__("truth", bool(m.data)), qos)
    node.create_subscription(Float64, prob_topic,
                             lambda m: frames.append((m.data, state["truth"])), qos)
    node.create_subscription(Bool, success_topic,
                             lambda m: declared.append(state["truth"]) if m.data else None, qos)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        rclpy.spin_once(node, timeout_sec=0.05)
    judged = [(p, t) for p, t in frames if t is not None]
    pos = [p for p, t in judged if t]
    neg = [p for p, t in judged if not t]
    tp = sum(1 for p in pos if p >= threshold)
    tn = sum(1 for p in neg if p < threshold)
    print(json.dumps({
        "threshold": threshold,
        "frames": len(judged),
        "frames_without_truth": len(frames) - len(judged),
        "positives": len(pos),
        "true_positive_rate": tp / len(pos) if pos else None,
        "true_negative_rate": tn / len(neg) if neg else None,
        "accuracy": (tp + tn) / len(judged) if judged else None,
        "declarations": len(declared),
        "declarations_while_done": sum(1 for d in declared if d),
    }), flush=True)
    node.destroy_node()
    rclpy.shutdown()


if __name__ == "__main__":
    main()
