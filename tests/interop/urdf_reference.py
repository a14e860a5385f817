"""Reference kinematics and statics of a URDF from programs we did not write.

Reads a JSON list of arm joint configurations on stdin; prints JSON with, per configuration, the
tool-centre-point pose and the gravity torques MuJoCo computes, after checking that ROS's own
URDF parser (urdf_parser_py) accepts the file. Used by crates/reflex-core/tests/urdf_reference.rs.

usage: python urdf_reference.py ARM.urdf < configs.json
"""
import json
import sys

import mujoco
import numpy as np
from urdf_parser_py.urdf import URDF

# Distance from the finger joints' origin to the TCP along the hand's z axis, from the URDF's
# tcp_joint (0.1034) and finger joints (0.0584): MuJoCo fuses fixed links, so the TCP is rebuilt
# from the left finger's body frame (whose finger joint stays at 0).
FINGER_TO_TCP_M = 0.1034 - 0.0584


def main():
    path = sys.argv[1]
    with open(path) as f:
        robot = URDF.from_xml_string(f.read())
    joints = {j.name: j for j in robot.joints}
    report = {
        "ros_parser": {
            "revolute": [j.name for j in robot.joints if j.type == "revolute"],
            "prismatic": [j.name for j in robot.joints if j.type == "prismatic"],
            "limits": {n: [j.limit.lower, j.limit.upper, j.limit.velocity, j.limit.effort]
                       for n, j in joints.items() if j.limit is not None},
        },
        "samples": [],
    }
    model = mujoco.MjModel.from_xml_path(path)
    data = mujoco.MjData(model)
    arm = [mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, f"joint{i}") for i in range(1, 8)]
    finger = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, "left_finger")
    for q in json.load(sys.stdin):
        data.qpos[:] = 0.0
        data.qvel[:] = 0.0
        for j, v in zip(arm, q):
            data.qpos[model.jnt_qposadr[j]] = v
        mujoco.mj_forward(model, data)
        rot = data.xmat[finger].reshape(3, 3)
        tcp = data.xpos[finger] + FINGER_TO_TCP_M * rot[:, 2]
        # At zero velocity the bias force is the generalized gravity force: the torque that holds
        # the arm still.
        gravity = [float(data.qfrc_bias[model.jnt_dofadr[j]]) for j in arm]
        report["samples"].append({
            "q": q,
            "tcp_m": [float(v) for v in tcp],
            "tcp_rot": [float(v) for v in rot.flatten()],
            "gravity_nm": gravity,
        })
    json.dump(report, sys.stdout)


if __name__ == "__main__":
    main()
