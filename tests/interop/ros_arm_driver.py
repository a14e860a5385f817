"""A ros2_control-like arm driver in rclpy, for the bridge's interop tests.

It plays a real arm's ROS 2 side: a joint_state_broadcaster publishing /joint_states (joint names
in its own order, with one extra joint the bridge must ignore) and forward position controllers
for the arm and the gripper that integrate the commands it receives. It checks, from rclpy's
side, every command the bridge sends (type, QoS, length, finite, inside the limits given on the
command line, no larger step than the speed limit allows) and injects faults on a schedule:
e-stop press and release, a re-arm service call, NaN states, wrong joint names, wrong lengths,
out-of-order stamps and silence; and plays an operator sending a twist. Prints one JSON report on stdout at the end.

Usage: ros_arm_driver.py CONFIG_JSON   (see the test that starts it for the keys)
"""

import json
import os
import math
import sys
import time

# Discovery and data stay on this machine (FACTS.md's network rules), whatever the caller's
# environment says; set before rclpy loads its middleware.
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
import rclpy  # noqa: E402
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, DurabilityPolicy, HistoryPolicy
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float64MultiArray
from geometry_msgs.msg import TwistStamped
from trajectory_msgs.msg import JointTrajectory
from std_srvs.srv import Trigger
from diagnostic_msgs.msg import DiagnosticArray


def main():
    cfg = json.loads(sys.argv[1])
    arm = cfg["joint_names"]
    fingers = cfg["finger_names"]
    qmin, qmax = cfg["joint_pos_min_rad"], cfg["joint_pos_max_rad"]
    vmax = cfg["joint_vel_max_rad_s"]
    rate = cfg["rate_hz"]
    schedule = cfg["schedule"]  # list of [start_s, end_s, fault]
    seconds = cfg["seconds"]

    rclpy.init()
    node = Node("fake_arm")
    q = list(cfg["initial_joint_pos_rad"])
    width = cfg["initial_gripper_width_m"]
    target = list(q)
    target_width = width
    report = {
        "commands": 0,
        "gripper_commands": 0,
        "bad_length": 0,
        "non_finite": 0,
        "outside_limits": 0,
        "too_fast": 0,
        "max_step_ratio": 0.0,
        "layout_not_empty": 0,
        "diagnostics": 0,
        "diagnostic_keys": [],
        "rearm": None,
        "moved_during_estop_rad": 0.0,
        "faults_sent": {},
        "publisher_qos": None,
        "publisher_type": None,
        "intervening_seen": False,
        "trajectory_malformed": 0,
        "rewards": 0,
        "reward_labels": [],
        "reward_malformed": 0,
        "rewards_judged": 0,
        "rewards_pending": 0,
        "velocity_over_limit": 0,
        "velocity_stops": [],
        "last_velocity": None,
        "max_travel_rad": 0.0,
    }
    last_cmd = [None]
    last_cmd_time = [None]
    estop_window = [None]

    def on_command(msg):
        now = time.monotonic()
        report["commands"] += 1
        if msg.layout.dim:
            report["layout_not_empty"] += 1
        if len(msg.data) != len(arm):
            report["bad_length"] += 1
            return
        if not all(math.isfinite(v) for v in msg.data):
            report["non_finite"] += 1
            return
        for j, v in enumerate(msg.data):
            if v < qmin[j] - 1e-9 or v > qmax[j] + 1e-9:
                report["outside_limits"] += 1
                break
        if last_cmd[0] is not None:
            dt = max(now - last_cmd_time[0], 1e-4)
            for j, v in enumerate(msg.data):
                # The bridge's commands move at most vmax per servo period; messages may be
                # delayed or bunched, so compare against the elapsed time with slack.
                allowed = vmax[j] * max(dt, cfg["servo_period_s"]) * 3.0 + 1e-6
                ratio = abs(v - last_cmd[0][j]) / allowed
                report["max_step_ratio"] = max(report["max_step_ratio"], ratio)
                if ratio > 1.0:
                    report["too_fast"] += 1
        if estop_window[0] is not None:
            ref = estop_window[0]
            report["moved_during_estop_rad"] = max(
                report["moved_during_estop_rad"],
                max(abs(a - b) for a, b in zip(msg.data, ref)),
            )
        last_cmd[0] = list(msg.data)
        last_cmd_time[0] = now
        target[:] = msg.data

    velocity = [0.0] * len(arm)

    def on_velocity(msg):
        # A forward velocity controller: the arm moves at the commanded velocities until told
        # otherwise. Records every stop (all zeros after motion) with its time.
        report["commands"] += 1
        if len(msg.data) != len(arm):
            report["bad_length"] += 1
            return
        if not all(math.isfinite(v) for v in msg.data):
            report["non_finite"] += 1
            return
        if any(abs(v) > vmax[j] + 1e-9 for j, v in enumerate(msg.data)):
            report["velocity_over_limit"] += 1
        was_moving = any(v != 0.0 for v in velocity)
        velocity[:] = msg.data
        if was_moving and all(v == 0.0 for v in msg.data):
            report["velocity_stops"].append(round(time.monotonic() - start_time[0], 3))
        report["last_velocity"] = list(msg.data)

    start_time = [time.monotonic()]

    def on_gripper(msg):
        nonlocal target_width
        report["gripper_commands"] += 1
        if len(msg.data) == len(fingers) and all(math.isfinite(v) for v in msg.data):
            target_width = sum(msg.data)

    def on_diag(msg):
        report["diagnostics"] += 1
        keys = {kv.key for s in msg.status for kv in s.values}
        report["diagnostic_keys"] = sorted(keys | set(report["diagnostic_keys"]))

    reliable = QoSProfile(
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.VOLATILE,
        history=HistoryPolicy.KEEP_LAST,
        depth=10,
    )
    latched = QoSProfile(
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL,
        history=HistoryPolicy.KEEP_LAST,
        depth=1,
    )
    def on_trajectory(msg):
        # One point, the arm's joints by name, due a little in the future.
        point_ok = len(msg.points) == 1 and (
            msg.points[0].time_from_start.sec > 0 or msg.points[0].time_from_start.nanosec > 0
        )
        if list(msg.joint_names) != list(arm) or not point_ok:
            report["trajectory_malformed"] += 1
            return
        on_command(Float64MultiArray(data=list(msg.points[0].positions)))

    if cfg.get("interface") == "velocity":
        node.create_subscription(Float64MultiArray, "/forward_velocity_controller/commands", on_velocity, reliable)
        command_topic = "/forward_velocity_controller/commands"
    elif cfg.get("interface") == "trajectory":
        node.create_subscription(JointTrajectory, "/joint_trajectory_controller/joint_trajectory", on_trajectory, reliable)
        command_topic = "/joint_trajectory_controller/joint_trajectory"
    else:
        node.create_subscription(Float64MultiArray, "/forward_position_controller/commands", on_command, reliable)
        command_topic = "/forward_position_controller/commands"
    node.create_subscription(Float64MultiArray, "/gripper_controller/commands", on_gripper, reliable)
    node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, reliable)
    js_pub = node.create_publisher(JointState, "/joint_states", reliable)
    estop_pub = node.create_publisher(Bool, "/reflex/estop", latched)
    rearm = node.create_client(Trigger, "/reflex/rearm")
    twist_pub = node.create_publisher(TwistStamped, "/reflex/intervention/twist", reliable)

    def on_intervening(msg):
        if msg.data:
            report["intervening_seen"] = True

    node.create_subscription(Bool, "/reflex/intervening", on_intervening, reliable)

    def on_reward(msg):
        # [step, reward, success, terminated, truncated, terms...], named in the label; the
        # reward is NaN while pending (a bridge without a judge).
        report["rewards"] += 1
        dims = msg.layout.dim
        label = dims[0].label if len(dims) == 1 else ""
        if label not in report["reward_labels"]:
            report["reward_labels"].append(label)
        names = label.split(",")
        values = list(msg.data)
        if len(names) != len(values) or dims[0].size != len(values) \
                or not all(math.isfinite(v) for i, v in enumerate(values) if i != 1):
            report["reward_malformed"] += 1
        elif math.isfinite(values[1]):
            report["rewards_judged"] += 1
        else:
            report["rewards_pending"] += 1

    node.create_subscription(Float64MultiArray, "/reflex/reward", on_reward, reliable)

    # Names in the driver's own order: reversed, the fingers first, and a joint the bridge
    # does not know.
    names = list(reversed(fingers)) + list(reversed(arm)) + ["conveyor_joint"]
    dt = 1.0 / rate
    start = time.monotonic()
    start_time[0] = start
    q0 = list(q)
    next_t = start
    stamp_ns = time.time_ns()
    rearm_future = None
    estop_state = None
    next_graph = 0.0
    while time.monotonic() - start < seconds:
        t = time.monotonic() - start
        faults = [f for (a, b, f) in schedule if a <= t < b]
        if cfg.get("interface") == "velocity":
            # The arm moves at the commanded velocities; it must stay inside its limits.
            for j in range(len(arm)):
                q[j] += velocity[j] * dt
            if any(q[j] < qmin[j] - 1e-6 or q[j] > qmax[j] + 1e-6 for j in range(len(arm))):
                report["outside_limits"] += 1
            report["max_travel_rad"] = max(
                report["max_travel_rad"], max(abs(a - b) for a, b in zip(q, q0)))
        else:
            # The arm: each joint tracks its target at up to twice its speed limit.
            for j in range(len(arm)):
                step = max(-2 * vmax[j] * dt, min(2 * vmax[j] * dt, target[j] - q[j]))
                q[j] += step
        width += max(-0.2 * dt, min(0.2 * dt, target_width - width))
        want_estop = "estop" in faults
        if want_estop != estop_state:
            estop_pub.publish(Bool(data=want_estop))
            if want_estop:
                estop_window[0] = list(last_cmd[0]) if last_cmd[0] else None
            else:
                estop_window[0] = None
            estop_state = want_estop
        if "rearm" in faults and rearm_future is None and rearm.service_is_ready():
            rearm_future = rearm.call_async(Trigger.Request())
        if "twist" in faults:
            tw = TwistStamped()
            tw.header.frame_id = "link0"
            tw.twist.linear.z = 0.3
            twist_pub.publish(tw)
        if "silence" not in faults:
            stamp_ns += int(dt * 1e9)
            msg = JointState()
            s = stamp_ns
            if "out_of_order" in faults:
                s -= int(0.5e9)
            msg.header.stamp.sec = s // 1_000_000_000
            msg.header.stamp.nanosec = s % 1_000_000_000
            pos = {n: v for n, v in zip(arm, q)}
            for f in fingers:
                pos[f] = width / len(fingers)
            pos["conveyor_joint"] = 0.0
            msg.name = list(names)
            msg.position = [pos[n] for n in names]
            msg.velocity = [0.0] * len(names)
            msg.effort = [0.0] * len(names)
            if "nan" in faults:
                msg.position[3] = float("nan")
            if "wrong_names" in faults:
                msg.name = [n.replace("joint", "jnt") for n in names]
            if "bad_length" in faults:
                msg.position = msg.position[:-2]
            js_pub.publish(msg)
            for f in faults:
                report["faults_sent"][f] = report["faults_sent"].get(f, 0) + 1
            if "burst" in faults:
                for _ in range(5):
                    js_pub.publish(msg)
        # The bridge's command publisher, as ROS 2's graph shows it while the bridge runs
        # (a bridge that has left may already be gone from the graph at the end).
        if report["publisher_type"] is None and report["commands"] > 0 and t >= next_graph:
            next_graph = t + 0.5
            infos = node.get_publishers_info_by_topic(command_topic)
            if infos:
                report["publisher_qos"] = infos[0].qos_profile.reliability.name
                report["publisher_type"] = infos[0].topic_type
        rclpy.spin_once(node, timeout_sec=0)
        next_t += dt
        while True:
            left = next_t - time.monotonic()
            if left <= 0:
                break
            rclpy.spin_once(node, timeout_sec=min(left, 0.002))
    if rearm_future is not None:
        deadline = time.monotonic() + 2.0
        while not rearm_future.done() and time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.01)
        if rearm_future.done():
            r = rearm_future.result()
            report["rearm"] = {"success": r.success, "message": r.message}
    infos = node.get_publishers_info_by_topic(command_topic)
    if infos and report["publisher_type"] is None:
        report["publisher_qos"] = infos[0].qos_profile.reliability.name
        report["publisher_type"] = infos[0].topic_type
    print(json.dumps(report), flush=True)
    node.destroy_node()
    rclpy.shutdown()


if __name__ == "__main__":
    main()
