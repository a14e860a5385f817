"""An arm driver on Eclipse Cyclone DDS (PyPI `cyclonedds`), with no ROS at all, for the bridge's
interop test: it speaks the ROS 2 wire types by their DDS names (`sensor_msgs::msg::dds_::
JointState_` on `rt/joint_states`, ...), publishes joint states in its own joint order, integrates
the `std_msgs/Float64MultiArray` commands it receives, and checks each (length, finite, inside the
limits given on the command line). Prints one JSON report at the end.

Usage: cyclone_arm.py CONFIG_JSON   (it restricts itself to loopback)
"""

import json
import math
import os
import sys
import time
from dataclasses import dataclass, field

# Loopback only, unicast discovery (FACTS.md's network rules), whatever the caller's environment
# says; set before Cyclone reads its configuration.
os.environ["CYCLONEDDS_URI"] = (
    '<CycloneDDS><Domain Id="any"><General><Interfaces><NetworkInterface name="lo"/></Interfaces>'
    "<AllowMulticast>false</AllowMulticast></General><Discovery><Peers>"
    '<Peer address="127.0.0.1"/></Peers><ParticipantIndex>auto</ParticipantIndex>'
    "<MaxAutoParticipantIndex>20</MaxAutoParticipantIndex></Discovery>"
    # Fast DDS peers (vendor 1.15: the bridge's r2r backend) send XTypes type information
    # Cyclone cannot parse; matching by type name works.
    "<Compatibility><IgnoreTypeInformation>1.15</IgnoreTypeInformation></Compatibility>"
    "</Domain></CycloneDDS>"
)

from cyclonedds.core import Qos, Policy  # noqa: E402
from cyclonedds.domain import DomainParticipant
from cyclonedds.idl import IdlStruct
from cyclonedds.idl.types import float64, int32, sequence, uint32
from cyclonedds.pub import DataWriter
from cyclonedds.sub import DataReader
from cyclonedds.internal import InvalidSample
from cyclonedds.topic import Topic


@dataclass
class Time(IdlStruct, typename="builtin_interfaces::msg::dds_::Time_"):
    sec: int32 = 0
    nanosec: uint32 = 0


@dataclass
class Header(IdlStruct, typename="std_msgs::msg::dds_::Header_"):
    stamp: Time = field(default_factory=Time)
    frame_id: str = ""


@dataclass
class JointState(IdlStruct, typename="sensor_msgs::msg::dds_::JointState_"):
    header: Header = field(default_factory=Header)
    name: sequence[str] = field(default_factory=list)
    position: sequence[float64] = field(default_factory=list)
    velocity: sequence[float64] = field(default_factory=list)
    effort: sequence[float64] = field(default_factory=list)


@dataclass
class MultiArrayDimension(IdlStruct, typename="std_msgs::msg::dds_::MultiArrayDimension_"):
    label: str = ""
    size: uint32 = 0
    stride: uint32 = 0


@dataclass
class MultiArrayLayout(IdlStruct, typename="std_msgs::msg::dds_::MultiArrayLayout_"):
    dim: sequence[MultiArrayDimension] = field(default_factory=list)
    data_offset: uint32 = 0


@dataclass
class Float64MultiArray(IdlStruct, typename="std_msgs::msg::dds_::Float64MultiArray_"):
    layout: MultiArrayLayout = field(default_factory=MultiArrayLayout)
    data: sequence[float64] = field(default_factory=list)


def main():
    cfg = json.loads(sys.argv[1])
    arm, fingers = cfg["joint_names"], cfg["finger_names"]
    qmin, qmax, vmax = cfg["joint_pos_min_rad"], cfg["joint_pos_max_rad"], cfg["joint_vel_max_rad_s"]
    rate, seconds = cfg["rate_hz"], cfg["seconds"]
    dp = DomainParticipant(cfg["domain_id"])
    reliable = Qos(Policy.Reliability.Reliable(max_blocking_time=100_000_000), Policy.History.KeepLast(10))
    js_writer = DataWriter(dp, Topic(dp, "rt/joint_states", JointState), qos=reliable)
    cmd_reader = DataReader(dp, Topic(dp, "rt/forward_position_controller/commands", Float64MultiArray), qos=reliable)
    grip_reader = DataReader(dp, Topic(dp, "rt/gripper_controller/commands", Float64MultiArray), qos=reliable)
    q = list(cfg["initial_joint_pos_rad"])
    target = list(q)
    width, target_width = 0.08, 0.08
    report = {"commands": 0, "gripper_commands": 0, "bad_length": 0, "non_finite": 0, "outside_limits": 0,
              "writer_gone": 0}
    names = list(reversed(arm)) + list(fingers) + ["conveyor_joint"]
    dt = 1.0 / rate
    start = time.monotonic()
    next_t = start
    while time.monotonic() - start < seconds:
        for msg in cmd_reader.take(N=100):
            if isinstance(msg, InvalidSample):
                # No data: the writer went away (the bridge shut down before this driver).
                report["writer_gone"] += 1
                continue
            report["commands"] += 1
            if len(msg.data) != len(arm):
                report["bad_length"] += 1
                continue
            if not all(math.isfinite(v) for v in msg.data):
                report["non_finite"] += 1
                continue
            if any(v < lo - 1e-9 or v > hi + 1e-9 for v, lo, hi in zip(msg.data, qmin, qmax)):
                report["outside_limits"] += 1
            target = list(msg.data)
        for msg in grip_reader.take(N=100):
            if isinstance(msg, InvalidSample):
                report["writer_gone"] += 1
                continue
            report["gripper_commands"] += 1
            if len(msg.data) == len(fingers):
                target_width = sum(msg.data)
        for j in range(len(arm)):
            q[j] += max(-2 * vmax[j] * dt, min(2 * vmax[j] * dt, target[j] - q[j]))
        width += max(-0.2 * dt, min(0.2 * dt, target_width - width))
        pos = dict(zip(arm, q))
        for f in fingers:
            pos[f] = width / len(fingers)
        pos["conveyor_joint"] = 0.0
        ns = time.time_ns()
        js_writer.write(JointState(
            header=Header(stamp=Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)),
            name=names,
            position=[pos[n] for n in names],
            velocity=[0.0] * len(names),
            effort=[0.0] * len(names),
        ))
        next_t += dt
        time.sleep(max(0.0, next_t - time.monotonic()))
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
