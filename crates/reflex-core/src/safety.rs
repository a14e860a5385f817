//! The limits the safety filter enforces on every command, whatever produced it.
//!
//! This module holds the limits and the per-component clamps. The runtime owns the filter that
//! applies them tick by tick (with its watchdog and e-stop state); the simulator uses the same
//! clamps for its own reference limiting, so a command means the same thing everywhere.

use crate::kinematics::ArmModel;
use crate::types::{JointCommand, ARM_DOF};
use serde::{Deserialize, Serialize};

/// A limit set that does not make sense, naming the field.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("safety limits: field `{field}`: {message}")]
pub struct LimitsError {
    /// The offending field, e.g. `joint_vel_max_rad_s[3]`.
    pub field: String,
    /// What was expected.
    pub message: String,
}

/// Everything a command must respect. Units are in the field names.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SafetyLimits {
    /// Lower joint position limits, radians (from the URDF).
    pub joint_pos_min_rad: [f64; ARM_DOF],
    /// Upper joint position limits, radians (from the URDF).
    pub joint_pos_max_rad: [f64; ARM_DOF],
    /// Distance kept from each position limit, radians. Default 0.05.
    pub joint_margin_rad: f64,
    /// Joint speed limits, rad/s (from the URDF).
    pub joint_vel_max_rad_s: [f64; ARM_DOF],
    /// Joint acceleration limits, rad/s^2. URDF has no field for them. Default 10 for the four
    /// proximal joints and 20 for the three lighter wrist joints: with 10 everywhere the wrist
    /// lagged the scripted peg insertion into failure one episode in five (see the README).
    pub joint_acc_max_rad_s2: [f64; ARM_DOF],
    /// Largest setpoint change per control tick, radians. Default 0.05.
    pub max_step_rad: f64,
    /// Tool-centre-point workspace box, lower corner in the base frame, metres.
    pub workspace_min_m: [f64; 3],
    /// Tool-centre-point workspace box, upper corner in the base frame, metres.
    pub workspace_max_m: [f64; 3],
    /// The tool approaches a wall of the workspace box no faster than lets it stop before the
    /// wall at this deceleration, m/s^2. Default 2.5.
    pub tool_decel_max_m_s2: f64,
    /// The whole arm's envelope, lower corner in the base frame, metres: every link origin
    /// (joints 1 to 7), the tool centre point and both fingertips (at the widest opening) stay
    /// inside it. Its floor is the table top less the depth the fingers may press into it.
    pub arm_box_min_m: [f64; 3],
    /// The whole arm's envelope, upper corner, metres.
    pub arm_box_max_m: [f64; 3],
    /// Link origins stay at least this far above the envelope's floor (a link's radius), metres.
    /// Default 0.06.
    pub link_clearance_m: f64,
    /// Gripper width range, metres.
    pub gripper_width_range_m: [f64; 2],
    /// Fastest change of the gripper width command, m/s (both fingers; from the URDF).
    pub gripper_speed_max_m_s: f64,
    /// Ticks without a fresh observation before the command holds. Default 3.
    pub watchdog_hold_ticks: u32,
    /// Ticks without a fresh observation before the arm brakes. Default 10.
    pub watchdog_brake_ticks: u32,
}

impl SafetyLimits {
    /// Limits taken from the arm model, with conservative defaults for the rest.
    pub fn from_model(model: &ArmModel) -> Self {
        let mut min = [0.0; ARM_DOF];
        let mut max = [0.0; ARM_DOF];
        let mut vel = [0.0; ARM_DOF];
        for (i, l) in model.limits.iter().enumerate() {
            min[i] = l.lower;
            max[i] = l.upper;
            vel[i] = l.velocity;
        }
        let width = model.gripper.as_ref().map_or(0.0, |g| g.max_width_m());
        let finger_speed = model
            .gripper
            .as_ref()
            .map_or(0.2, |g| 2.0 * g.finger_limits.velocity);
        Self {
            joint_pos_min_rad: min,
            joint_pos_max_rad: max,
            joint_margin_rad: 0.05,
            joint_vel_max_rad_s: vel,
            joint_acc_max_rad_s2: [10.0, 10.0, 10.0, 10.0, 20.0, 20.0, 20.0],
            max_step_rad: 0.05,
            workspace_min_m: [0.15, -0.6, 0.0],
            workspace_max_m: [0.85, 0.6, 0.8],
            tool_decel_max_m_s2: 2.5,
            arm_box_min_m: [-0.95, -0.95, -0.03],
            arm_box_max_m: [0.95, 0.95, 1.4],
            link_clearance_m: 0.06,
            gripper_width_range_m: [0.0, width],
            gripper_speed_max_m_s: finger_speed,
            watchdog_hold_ticks: 3,
            watchdog_brake_ticks: 10,
        }
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), LimitsError> {
        let bad = |field: String, message: &str| {
            Err(LimitsError {
                field,
                message: message.to_owned(),
            })
        };
        for i in 0..ARM_DOF {
            let (lo, hi) = (self.joint_pos_min_rad[i], self.joint_pos_max_rad[i]);
            if !(lo.is_finite() && hi.is_finite() && lo < hi) {
                return bad(
                    format!("joint_pos_min_rad[{i}]"),
                    "must be finite and below joint_pos_max_rad",
                );
            }
            if !(hi - lo > 2.0 * self.joint_margin_rad) {
                return bad(
                    format!("joint_margin_rad (joint {i})"),
                    "leaves no room between the limits",
                );
            }
            if !(self.joint_vel_max_rad_s[i] > 0.0 && self.joint_vel_max_rad_s[i].is_finite()) {
                return bad(
                    format!("joint_vel_max_rad_s[{i}]"),
                    "must be positive and finite",
                );
            }
            if !(self.joint_acc_max_rad_s2[i] > 0.0 && self.joint_acc_max_rad_s2[i].is_finite()) {
                return bad(
                    format!("joint_acc_max_rad_s2[{i}]"),
                    "must be positive and finite",
                );
            }
        }
        if !(self.joint_margin_rad >= 0.0) {
            return bad("joint_margin_rad".into(), "must be zero or positive");
        }
        if !(self.max_step_rad > 0.0 && self.max_step_rad.is_finite()) {
            return bad("max_step_rad".into(), "must be positive and finite");
        }
        if !(self.tool_decel_max_m_s2 > 0.0 && self.tool_decel_max_m_s2.is_finite()) {
            return bad("tool_decel_max_m_s2".into(), "must be positive and finite");
        }
        for a in 0..3 {
            let (lo, hi) = (self.workspace_min_m[a], self.workspace_max_m[a]);
            if !(lo.is_finite() && hi.is_finite() && lo < hi) {
                return bad(
                    format!("workspace_min_m[{a}]"),
                    "must be finite and below workspace_max_m",
                );
            }
        }
        for a in 0..3 {
            let (lo, hi) = (self.arm_box_min_m[a], self.arm_box_max_m[a]);
            if !(lo.is_finite() && hi.is_finite() && lo < hi) {
                return bad(
                    format!("arm_box_min_m[{a}]"),
                    "must be finite and below arm_box_max_m",
                );
            }
        }
        if !(self.link_clearance_m >= 0.0 && self.link_clearance_m.is_finite()) {
            return bad(
                "link_clearance_m".into(),
                "must be zero or positive, finite",
            );
        }
        if !(self.arm_box_min_m[2] + self.link_clearance_m < self.arm_box_max_m[2]) {
            return bad(
                "link_clearance_m".into(),
                "leaves no room between the envelope's floor and ceiling",
            );
        }
        if !(self.gripper_speed_max_m_s > 0.0 && self.gripper_speed_max_m_s.is_finite()) {
            return bad(
                "gripper_speed_max_m_s".into(),
                "must be positive and finite",
            );
        }
        let [w0, w1] = self.gripper_width_range_m;
        if !(w0.is_finite() && w1.is_finite() && 0.0 <= w0 && w0 <= w1) {
            return bad(
                "gripper_width_range_m".into(),
                "must be 0 <= min <= max, finite",
            );
        }
        if self.watchdog_brake_ticks < self.watchdog_hold_ticks {
            return bad(
                "watchdog_brake_ticks".into(),
                "must be at least watchdog_hold_ticks",
            );
        }
        Ok(())
    }

    /// Clamps a joint position into the limits less the margin. Non-finite input maps to the
    /// middle of the range, so a NaN can never leave this function.
    #[inline]
    pub fn clamp_joint(&self, joint: usize, q_rad: f64) -> f64 {
        let lo = self.joint_pos_min_rad[joint] + self.joint_margin_rad;
        let hi = self.joint_pos_max_rad[joint] - self.joint_margin_rad;
        if q_rad.is_finite() {
            q_rad.clamp(lo, hi)
        } else {
            0.5 * (lo + hi)
        }
    }

    /// Clamps a point into the workspace box (non-finite components go to the box centre).
    #[inline]
    pub fn clamp_workspace(&self, p_m: [f64; 3]) -> [f64; 3] {
        let mut out = p_m;
        for a in 0..3 {
            let (lo, hi) = (self.workspace_min_m[a], self.workspace_max_m[a]);
            out[a] = if p_m[a].is_finite() {
                p_m[a].clamp(lo, hi)
            } else {
                0.5 * (lo + hi)
            };
        }
        out
    }

    /// The signed distance of the envelope points (see [`crate::ArmModel::envelope_points`]) to
    /// the nearest wall, metres: the TCP (index 7) against the tool box, every point against
    /// the arm envelope (link origins also keep `link_clearance_m` above its floor). Negative
    /// when a point is outside; minus infinity when a point is not finite.
    pub fn envelope_slack(&self, points: &[nalgebra::Vector3<f64>]) -> f64 {
        let mut slack = f64::INFINITY;
        for (k, p) in points.iter().enumerate() {
            for a in 0..3 {
                if !p[a].is_finite() {
                    return f64::NEG_INFINITY;
                }
                let mut lo = self.arm_box_min_m[a];
                if a == 2 && k < ARM_DOF {
                    lo += self.link_clearance_m;
                }
                slack = slack.min(p[a] - lo).min(self.arm_box_max_m[a] - p[a]);
                if k == ARM_DOF {
                    slack = slack
                        .min(p[a] - self.workspace_min_m[a])
                        .min(self.workspace_max_m[a] - p[a]);
                }
            }
        }
        slack
    }

    /// True when the command is inside the joint and gripper limits (margin included).
    pub fn admits(&self, cmd: &JointCommand) -> bool {
        let eps = 1e-12;
        (0..ARM_DOF).all(|i| {
            let q = cmd.joint_pos_rad[i];
            q.is_finite()
                && q >= self.joint_pos_min_rad[i] + self.joint_margin_rad - eps
                && q <= self.joint_pos_max_rad[i] - self.joint_margin_rad + eps
        }) && cmd.gripper_width_m.is_finite()
            && cmd.gripper_width_m >= self.gripper_width_range_m[0] - eps
            && cmd.gripper_width_m <= self.gripper_width_range_m[1] + eps
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn limits() -> SafetyLimits {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../urdf/reflex_arm.urdf");
        let m = ArmModel::from_urdf_file(&path, "link0", "tcp").unwrap();
        SafetyLimits::from_model(&m)
    }

    #[test]
    fn limits_from_the_shipped_arm_are_valid() {
        limits().validate().unwrap();
    }

    #[test]
    fn validation_names_the_field() {
        let mut l = limits();
        l.joint_vel_max_rad_s[2] = f64::NAN;
        assert_eq!(l.validate().unwrap_err().field, "joint_vel_max_rad_s[2]");
        let mut l = limits();
        l.watchdog_brake_ticks = 1;
        assert_eq!(l.validate().unwrap_err().field, "watchdog_brake_ticks");
    }

    proptest! {
        #[test]
        fn clamped_joints_are_always_admitted(
            q in prop::array::uniform7(prop_oneof![
                any::<f64>(), Just(f64::NAN), Just(f64::INFINITY), Just(f64::NEG_INFINITY), -10.0..10.0f64
            ]),
            w in prop_oneof![any::<f64>(), Just(f64::NAN), -1.0..1.0f64],
        ) {
            let l = limits();
            let mut cmd = JointCommand::default();
            for (i, (out, q)) in cmd.joint_pos_rad.iter_mut().zip(q).enumerate() {
                *out = l.clamp_joint(i, q);
            }
            let [lo, hi] = l.gripper_width_range_m;
            cmd.gripper_width_m = if w.is_finite() { w.clamp(lo, hi) } else { lo };
            prop_assert!(l.admits(&cmd));
        }

        #[test]
        fn workspace_clamp_stays_in_the_box(p in prop::array::uniform3(prop_oneof![any::<f64>(), Just(f64::NAN)])) {
            let l = limits();
            let c = l.clamp_workspace(p);
            for ((v, lo), hi) in c.iter().zip(&l.workspace_min_m).zip(&l.workspace_max_m) {
                prop_assert!(v >= lo && v <= hi);
            }
        }
    }
}
