"""An operator's twist from rclpy, for the teleop-over-ROS test: publishes
geometry_msgs/TwistStamped (base frame, m/s) on a topic at 30 Hz, moving the tool vertically for a
while, then still for a while, and prints one JSON report on stdout at the end.

Usage: ros_twist_operator.py CONFIG_JSON   (keys: topic, frame, vz_m_s, start_s, move_s, still_s)
"""

import json
import os
import sys
import time

# Discovery and data stay on this machine (FACTS.md's network rules); set before rclpy loads.
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
import rclpy  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy, HistoryPolicy  # noqa: E402
from geometry_msgs.msg import TwistStamped  # noqa: E402


def main():
    cfg = json.loads(sys.argv[1])
    rclpy.init()
    node = Node("twist_operator")
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
    pub = node.create_publisher(TwistStamped, cfg["topic"], qos)
    sent = {"moving": 0, "still": 0}
    t0 = time.monotonic()
    end = cfg["start_s"] + cfg["move_s"] + cfg["still_s"]
    while True:
        t = time.monotonic() - t0
        if t >= end:
            break
        if t >= cfg["start_s"]:
            msg = TwistStamped()
            msg.header.stamp = node.get_clock().now().to_msg()
            msg.header.frame_id = cfg["frame"]
            moving = t < cfg["start_s"] + cfg["move_s"]
            msg.twist.linear.z = cfg["vz_m_s"] if moving else 0.0
            pub.publish(msg)
            sent["moving" if moving else "still"] += 1
        time.sleep(1.0 / 30.0)
    print(json.dumps(sent), flush=True)
    node.destroy_node()
    rclpy.shutdown()


if __name__ == "__main__":
    main()
