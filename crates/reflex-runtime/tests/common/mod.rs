//! Shared test set-up: the shipped arm, its default limits, a start state inside the workspace.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use reflex_core::{ArmModel, RobotState, SafetyLimits};

pub const HOME: [f64; 7] = [0.0, -0.2, 0.0, -2.3, 0.0, 2.1, 0.785];
pub const DT_S: f64 = 0.001;

pub fn arm() -> ArmModel {
    let urdf = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../urdf/reflex_arm.urdf");
    ArmModel::from_urdf_file(&urdf, "link0", "tcp").unwrap()
}

pub fn limits(arm: &ArmModel) -> SafetyLimits {
    SafetyLimits::from_model(arm)
}

pub fn home_state() -> RobotState {
    RobotState {
        joint_pos_rad: HOME,
        gripper_width_m: 0.04,
        ..Default::default()
    }
}

/// A kinematic arm for runtime tests: each joint moves a fixed fraction of the way to its
/// command per tick (a first-order lag, like a stiff impedance controller), the gripper too.
/// Reads can be made to fail every `fail_every` ticks to exercise the watchdog.
pub struct FollowerArm {
    pub model: ArmModel,
    pub q: [f64; 7],
    pub qd: [f64; 7],
    pub width_m: f64,
    pub t_ns: u64,
    pub dt_s: f64,
    pub fail_every: u64,
    pub reads: u64,
    pub commands: u64,
    pub last_command: reflex_core::JointCommand,
}

impl FollowerArm {
    pub fn new(dt_s: f64) -> Self {
        Self {
            model: arm(),
            q: HOME,
            qd: [0.0; 7],
            width_m: 0.04,
            t_ns: 0,
            dt_s,
            fail_every: 0,
            reads: 0,
            commands: 0,
            last_command: reflex_core::JointCommand::default(),
        }
    }
}

impl reflex_core::Robot for FollowerArm {
    fn read_state(&mut self, s: &mut RobotState) -> Result<(), reflex_core::RobotError> {
        self.reads += 1;
        if self.fail_every > 0 && self.reads % self.fail_every == 0 {
            return Err(reflex_core::RobotError::Stale);
        }
        s.joint_pos_rad = self.q;
        s.joint_vel_rad_s = self.qd;
        s.gripper_width_m = self.width_m;
        s.tcp_pose = reflex_core::Pose::from_isometry(&self.model.tcp_pose(&self.q));
        s.stamp_ns = self.t_ns;
        Ok(())
    }

    fn write_command(
        &mut self,
        c: &reflex_core::JointCommand,
    ) -> Result<(), reflex_core::RobotError> {
        self.commands += 1;
        self.last_command = *c;
        for i in 0..7 {
            let next = self.q[i] + 0.3 * (c.joint_pos_rad[i] - self.q[i]);
            self.qd[i] = (next - self.q[i]) / self.dt_s;
            self.q[i] = next;
        }
        self.width_m += 0.3 * (c.gripper_width_m - self.width_m);
        self.t_ns += (self.dt_s * 1e9) as u64;
        Ok(())
    }

    fn now_ns(&self) -> u64 {
        self.t_ns
    }
}

/// A runtime configuration for the follower arm: 1 kHz servo, 100 Hz policy, end-effector
/// actions.
pub fn follower_config(arm: &ArmModel) -> reflex_runtime::RuntimeConfig {
    reflex_runtime::RuntimeConfig {
        rate_hz: 1000.0,
        policy_rate_hz: 100.0,
        action_space: reflex_core::ActionSpace::EeDelta,
        control: reflex_core::ControlSpec::default(),
        rest_joint_pos_rad: HOME,
        limits: limits(arm),
        residual_scale: 0.5,
        intervention_threshold: 0.5,
        intervention_hold_s: 0.05,
        transition_capacity: 64,
    }
}
