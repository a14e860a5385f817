"""A camera from rclpy, for the success detector's test: publishes sensor_msgs/Image scenes on
a topic at RATE Hz, segment after segment, while it listens to the detector's success
(std_msgs/Bool) and probability (std_msgs/Float64) topics. Prints one JSON report on stdout:
how many images it published, how many probabilities it heard, and for each success heard the
index of the last image published before it.

A scene is a grey image with a coloured square: "red" (the task done) or "blue" (not done), at
a place that moves from image to image. Encodings: rgb8, bgr8 (the same colours in the other
byte order), and mono8, which the detector must refuse. `pad` adds bytes at the end of every
row (a step larger than width * 3), as some camera drivers send.

Usage: ros_camera_scenes.py CONFIG_JSON
  keys: image_topic, success_topic, probability_topic, rate_hz, width, height,
        segments: [[scene, count, encoding, pad], ...]
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
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import Bool, Float64  # noqa: E402


def scene(kind, k, w, h, encoding, pad):
    grey = (128, 128, 128)
    colour = (220, 30, 30) if kind == "red" else (30, 30, 220)
    side = max(w, h) // 3
    x0 = (k * 7) % (w - side)
    y0 = (k * 5) % (h - side)
    if encoding == "mono8":
        row_bytes = w
    else:
        row_bytes = w * 3
    step = row_bytes + pad
    data = bytearray(step * h)
    for y in range(h):
        for x in range(w):
            inside = x0 <= x < x0 + side and y0 <= y < y0 + side
            r, g, b = colour if inside else grey
            if encoding == "mono8":
                data[y * step + x] = (r + g + b) // 3
                continue
            if encoding == "bgr8":
                r, b = b, r
            o = y * step + x * 3
            data[o:o + 3] = bytes((r, g, b))
    msg = Image()
    msg.height = h
    msg.width = w
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = step
    msg.data = bytes(data)
    msg.header.frame_id = "camera_optical"
    return msg


def main():
    cfg = json.loads(sys.argv[1])
    rclpy.init()
    node = Node("camera_scenes")
    reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE,
                          history=HistoryPolicy.KEEP_LAST)
    pub = node.create_publisher(Image, cfg["image_topic"], reliable)
    published = 0
    successes = []
    probabilities = []
    node.create_subscription(Bool, cfg["success_topic"],
                             lambda m: successes.append(published - 1) if m.data else None,
                             reliable)
    node.create_subscription(Float64, cfg["probability_topic"],
                             lambda m: probabilities.append(m.data), reliable)
    # Wait (bounded) until the detector reads the images and we hear its topics.
    deadline = time.monotonic() + 20.0
    while time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)
        if (pub.get_subscription_count() >= 1
                and node.count_publishers(cfg["success_topic"]) >= 1
                and node.count_publishers(cfg["probability_topic"]) >= 1):
            break
    matched = pub.get_subscription_count() >= 1
    time.sleep(0.5)
    period = 1.0 / cfg["rate_hz"]
    w, h = cfg["width"], cfg["height"]
    k = 0
    for kind, count, encoding, pad in cfg["segments"]:
        for _ in range(count):
            msg = scene(kind, k, w, h, encoding, pad)
            msg.header.stamp = node.get_clock().now().to_msg()
            pub.publish(msg)
            published += 1
            k += 1
            end = time.monotonic() + period
            while time.monotonic() < end:
                rclpy.spin_once(node, timeout_sec=max(0.0, end - time.monotonic()))
    end = time.monotonic() + 1.0
    while time.monotonic() < end:
        rclpy.spin_once(node, timeout_sec=0.05)
    print(json.dumps({"matched": matched, "published": published, "successes": successes,
                      "probabilities": len(probabilities)}), flush=True)
    node.destroy_node()
    rclpy.shutdown()


if __name__ == "__main__":
    main()
