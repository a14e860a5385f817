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

/// The 6-DoF UR5e-class arm (its seventh joint slot inert).
pub fn ur_arm() -> ArmModel {
    let urdf = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../urdf/ur5e.urdf");
    ArmModel::from_urdf_file(&urdf, "base_link", "tool0").unwrap()
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
    /// Reads that fail from now on (counted down; shared, so a test can set it while the
    /// runtime owns the arm).
    pub fail_next: std::sync::Arc<std::sync::atomic::AtomicU32>,
    /// Policy steps after which an episode is truncated (0: episodes never end).
    pub episode_steps: u64,
    /// Policy steps from which the task counts as done, a success that ends the episode (0:
    /// never).
    pub success_from: u64,
    /// Policy steps from which the success no longer holds (0: it holds for good).
    pub success_until: u64,
    /// The joint limits this arm reports as its own (none: it reports none).
    pub own: Option<[reflex_core::JointLimits; 7]>,
    /// `stop` was called.
    pub stopped: bool,
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
            fail_next: Default::default(),
            episode_steps: 0,
            success_from: 0,
            success_until: 0,
            own: None,
            stopped: false,
            reads: 0,
            commands: 0,
            last_command: reflex_core::JointCommand::default(),
        }
    }
}

impl reflex_core::Robot for FollowerArm {
    fn read_state(&mut self, s: &mut RobotState) -> Result<(), reflex_core::RobotError> {
        self.reads += 1;
        use std::sync::atomic::Ordering;
        if self
            .fail_next
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(reflex_core::RobotError::Stale);
        }
        if self.fail_every > 0 && self.reads.is_multiple_of(self.fail_every) {
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

    fn own_limits(&self) -> Option<[reflex_core::JointLimits; 7]> {
        self.own
    }

    fn stop(&mut self) {
        self.stopped = true;
    }

    fn judge(
        &mut self,
        obs: &reflex_core::Observation,
        _action: &reflex_core::Action,
    ) -> reflex_core::Outcome {
        let success = self.success_from > 0
            && obs.step >= self.success_from
            && (self.success_until == 0 || obs.step < self.success_until);
        reflex_core::Outcome {
            truncated: self.episode_steps > 0 && obs.step >= self.episode_steps,
            success,
            terminated: success,
            ..reflex_core::Outcome::PENDING
        }
    }
}

/// A runtime configuration for the follower arm: 1 kHz servo, 100 Hz policy, end-effector
/// actions.
pub fn follower_config(arm: &ArmModel) -> reflex_runtime::RuntimeConfig {
    reflex_runtime::RuntimeConfig {
        residual_scale: 0.5,
        intervention_threshold: 0.5,
        intervention_hold_s: 0.05,
        transition_capacity: 64,
        ..reflex_runtime::RuntimeConfig::new(
            1000.0,
            100.0,
            reflex_core::ActionSpace::EeDelta,
            reflex_core::ControlSpec::default(),
            HOME,
            limits(arm),
        )
    }
}

/// The points the envelope covers at `q`, computed here from the model's frames (not by the
/// filter): link origins 1..=7, the TCP, and both fingertips at the widest opening.
pub fn envelope(arm: &ArmModel, q: &[f64; 7]) -> Vec<nalgebra::Vector3<f64>> {
    let mut f = reflex_core::Frames::default();
    arm.forward(q, &mut f);
    let mut pts: Vec<_> = f.links.iter().map(|l| l.translation.vector).collect();
    pts.push(f.tcp.translation.vector);
    for tip in &arm.fingertips_in_tcp_m {
        pts.push((f.tcp * nalgebra::Point3::from(*tip)).coords);
    }
    pts
}

/// How far outside its boxes the arm at `q` is (0 inside): the TCP in the tool box, every point
/// in the arm box, link origins `link_clearance_m` above its floor. Independent of the filter.
pub fn outside_by(arm: &ArmModel, lim: &SafetyLimits, q: &[f64; 7]) -> f64 {
    let pts = envelope(arm, q);
    let mut worst = 0.0f64;
    for (k, p) in pts.iter().enumerate() {
        for a in 0..3 {
            let floor = lim.arm_box_min_m[a]
                + if a == 2 && k < 7 {
                    lim.link_clearance_m
                } else {
                    0.0
                };
            worst = worst.max(floor - p[a]).max(p[a] - lim.arm_box_max_m[a]);
            if k == 7 {
                worst = worst
                    .max(lim.workspace_min_m[a] - p[a])
                    .max(p[a] - lim.workspace_max_m[a]);
            }
        }
    }
    worst
}

/// A joint plant that lags its command: first order (`x += alpha (cmd - x)`) or second order
/// (a damped spring at `omega`, `zeta`), per joint, with the gripper following at first order.
#[derive(Clone, Debug)]
pub struct Plant {
    pub q: [f64; 7],
    pub qd: [f64; 7],
    pub width_m: f64,
    pub second_order: bool,
    pub alpha: f64,
    pub omega: f64,
    pub zeta: f64,
}

impl Plant {
    pub fn step(&mut self, cmd: &reflex_core::JointCommand, dt: f64) {
        for i in 0..7 {
            if self.second_order {
                let acc = self.omega * self.omega * (cmd.joint_pos_rad[i] - self.q[i])
                    - 2.0 * self.zeta * self.omega * self.qd[i];
                self.qd[i] += acc * dt;
                self.q[i] += self.qd[i] * dt;
            } else {
                let next = self.q[i] + self.alpha * (cmd.joint_pos_rad[i] - self.q[i]);
                self.qd[i] = (next - self.q[i]) / dt;
                self.q[i] = next;
            }
        }
        self.width_m += self.alpha * (cmd.gripper_width_m - self.width_m);
    }

    pub fn state(&self) -> RobotState {
        RobotState {
            joint_pos_rad: self.q,
            joint_vel_rad_s: self.qd,
            gripper_width_m: self.width_m,
            ..Default::default()
        }
    }
}
