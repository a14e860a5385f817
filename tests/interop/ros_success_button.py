"""An operator's success button from rclpy, for the tracker-less training test: publishes
std_msgs/Bool true on a topic every PERIOD seconds (a press ends the episode in flight as a
success) until it has run SECONDS, then prints one JSON report on stdout.

Usage: ros_success_button.py CONFIG_JSON   (keys: topic, period_s, seconds)
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
from std_msgs.msg import Bool  # noqa: E402


def main():
    cfg = json.loads(sys.argv[1])
    rclpy.init()
    node = Node("success_button")
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
    pub = node.create_publisher(Bool, cfg["topic"], qos)
    pressed = 0
    t0 = time.monotonic()
    while time.monotonic() - t0 < cfg["seconds"]:
        time.sleep(cfg["period_s"])
        msg = Bool()
        msg.data = True
        pub.publish(msg)
        pressed += 1
    print(json.dumps({"pressed": pressed}), flush=True)
    node.destroy_node()
    rclpy.shutdown()


if __name__ == "__main__":
    main()
