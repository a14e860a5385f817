//! From a policy's normalised action to joint setpoints, the same way in simulation and on a real
//! arm: a slow policy sets a goal, a fast servo loop (the physics rate in simulation, the control
//! loop's rate on hardware) moves a joint setpoint toward it, and the robot's joint impedance
//! tracks the setpoint.
//!
//! End-effector actions move a Cartesian reference; every servo tick, one damped least-squares
//! step (with a null-space pull toward the start posture) maps the interpolated reference to the
//! joint setpoint. Joint actions move the joint reference directly. Either way the setpoint is
//! clamped to the joint limits and never leads the measured joints by more than
//! `max_setpoint_lead_rad` (reference limiting), so a blocked arm does not wind up.
//! Nothing here allocates.

use crate::kinematics::{ArmModel, Frames, Jacobian};
use crate::types::{ActionSpace, JointCommand, ARM_DOF};
use nalgebra::{Isometry3, Matrix6, SVector, Translation3, UnitQuaternion, Vector3};
use serde::Deserialize;

type Vec7 = SVector<f64, ARM_DOF>;
type Vec6 = SVector<f64, 6>;

/// How normalised actions become setpoints.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlSpec {
    /// Tool speed at action 1, m/s (end-effector actions). Default 0.5.
    pub max_linear_speed_m_s: f64,
    /// Tool angular speed at action 1, rad/s (end-effector actions). Default 1.5.
    pub max_angular_speed_rad_s: f64,
    /// Joint speed at action 1, rad/s (joint actions). Default 1.0.
    pub max_joint_speed_rad_s: f64,
    /// Reference limiting: the setpoint never leads the measured joint by more, radians. Default 0.2.
    pub max_setpoint_lead_rad: f64,
    /// Reference limiting on the tool: the Cartesian reference never leads the measured tool by
    /// more, metres (checked at the physics rate). Default 0.05: a blocked tool pushes with at
    /// most this lead; free motion reaches about 0.3 m/s through the impedance lag.
    pub max_setpoint_lead_m: f64,
    /// Damping of the damped least-squares inverse, metres. Default 0.05.
    pub dls_damping: f64,
    /// Gain pulling the redundant joint towards the start pose (null space). Default 0.2.
    pub null_space_gain: f64,
    /// Tool workspace box (lower corner), metres; the Cartesian target is clamped into it.
    pub workspace_min_m: [f64; 3],
    /// Tool workspace box (upper corner), metres.
    pub workspace_max_m: [f64; 3],
}

/// A control spec that does not make sense, naming the field.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("control spec: field `{field}`: {message}")]
pub struct SpecError {
    /// The offending field, e.g. `max_linear_speed_m_s`.
    pub field: String,
    /// What was expected, and what was found.
    pub message: String,
}

impl ControlSpec {
    /// Checks every field (NaN, negative and inverted values are refused); the error names the
    /// first bad one.
    pub fn validate(&self) -> Result<(), SpecError> {
        let bad = |field: String, message: String| Err(SpecError { field, message });
        for (field, v) in [
            ("max_linear_speed_m_s", self.max_linear_speed_m_s),
            ("max_angular_speed_rad_s", self.max_angular_speed_rad_s),
            ("max_joint_speed_rad_s", self.max_joint_speed_rad_s),
            ("max_setpoint_lead_rad", self.max_setpoint_lead_rad),
            ("max_setpoint_lead_m", self.max_setpoint_lead_m),
            ("dls_damping", self.dls_damping),
        ] {
            if !(v > 0.0 && v.is_finite()) {
                return bad(
                    field.into(),
                    format!("must be positive and finite, got {v}"),
                );
            }
        }
        if !(self.null_space_gain >= 0.0 && self.null_space_gain.is_finite()) {
            return bad(
                "null_space_gain".into(),
                format!(
                    "must be zero or positive, finite, got {}",
                    self.null_space_gain
                ),
            );
        }
        for k in 0..3 {
            let (lo, hi) = (self.workspace_min_m[k], self.workspace_max_m[k]);
            if !(lo.is_finite() && hi.is_finite() && lo < hi) {
                return bad(
                    format!("workspace_min_m[{k}]"),
                    format!("must be finite and below workspace_max_m[{k}], got {lo} and {hi}"),
                );
            }
        }
        Ok(())
    }
}

impl Default for ControlSpec {
    fn default() -> Self {
        Self {
            max_linear_speed_m_s: 0.5,
            max_angular_speed_rad_s: 1.5,
            max_joint_speed_rad_s: 1.0,
            max_setpoint_lead_rad: 0.2,
            max_setpoint_lead_m: 0.05,
            dls_damping: 0.05,
            null_space_gain: 0.2,
            workspace_min_m: [0.2, -0.45, 0.005],
            workspace_max_m: [0.8, 0.45, 0.6],
        }
    }
}

/// Maps actions to joint setpoints; the setpoint state carried across servo ticks.
#[derive(Clone, Debug)]
pub struct ActionMapper {
    space: ActionSpace,
    spec: ControlSpec,
    period_s: f64,
    /// Joint setpoint sent to the impedance motors.
    pub q_setpoint: [f64; ARM_DOF],
    /// Posture the null space pulls toward.
    q_rest: [f64; ARM_DOF],
    /// Cartesian reference at the start and end of the current policy step.
    x_from: Isometry3<f64>,
    x_goal: Isometry3<f64>,
    /// Joint reference at the start and end of the current policy step.
    q_from: [f64; ARM_DOF],
    q_goal: [f64; ARM_DOF],
    /// Gripper width setpoint and goal, metres.
    pub width_setpoint_m: f64,
    width_goal_m: f64,
    max_width_m: f64,
    finger_speed_m_s: f64,
    frames: Frames,
    jac: Jacobian,
    limit_margin_rad: f64,
}

/// Margin kept from the joint limits by the setpoint, radians.
const LIMIT_MARGIN_RAD: f64 = 0.02;

impl ActionMapper {
    /// A mapper at rest at the measured configuration `q` and gripper width, for a policy
    /// running at `policy_rate_hz` whose null space pulls toward `q_rest`.
    pub fn new(
        space: ActionSpace,
        spec: &ControlSpec,
        policy_rate_hz: f64,
        q_rest: &[f64; ARM_DOF],
        model: &ArmModel,
        q: &[f64; ARM_DOF],
        width_m: f64,
    ) -> Self {
        let gripper = model.gripper.as_ref();
        let mut c = Self {
            space,
            spec: spec.clone(),
            period_s: 1.0 / policy_rate_hz,
            q_setpoint: *q,
            q_rest: *q_rest,
            x_from: Isometry3::identity(),
            x_goal: Isometry3::identity(),
            q_from: *q,
            q_goal: *q,
            width_setpoint_m: width_m,
            width_goal_m: width_m,
            max_width_m: gripper.map_or(0.08, |g| g.max_width_m()),
            finger_speed_m_s: gripper.map_or(0.2, |g| g.finger_limits.velocity * 2.0),
            frames: Frames::default(),
            jac: Jacobian::zeros(),
            limit_margin_rad: LIMIT_MARGIN_RAD,
        };
        model.clamp_to_limits(&mut c.q_setpoint, c.limit_margin_rad);
        let x = model.tcp_pose(&c.q_setpoint);
        c.x_from = x;
        c.x_goal = x;
        c
    }

    /// Sets the goal for the next policy step from a sanitised action in [-1, 1].
    /// `q_meas` is the measured configuration (for reference limiting).
    pub fn set_action(&mut self, model: &ArmModel, action: &[f32], q_meas: &[f64; ARM_DOF]) {
        self.set_action_ramped(model, action, q_meas, 1.0);
    }

    /// [`Self::set_action`] with the motion scaled by `ramp` in [0, 1] and the gripper goal
    /// moved only that fraction of the way from its setpoint: a policy's output ramped in after
    /// a re-arm.
    pub fn set_action_ramped(
        &mut self,
        model: &ArmModel,
        action: &[f32],
        q_meas: &[f64; ARM_DOF],
        ramp: f64,
    ) {
        let ramp = if ramp.is_finite() {
            ramp.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let a = |i: usize| action.get(i).copied().unwrap_or(0.0) as f64 * ramp;
        let t = self.period_s;
        match self.space {
            ActionSpace::EeDelta => {
                // Start from where the setpoint really is, then bound how far the reference may
                // lead the measured tool.
                model.forward(&self.q_setpoint, &mut self.frames);
                let x_sp = self.frames.tcp;
                let x_meas = model.tcp_pose(q_meas);
                let lin = Vector3::new(a(0), a(1), a(2)) * (self.spec.max_linear_speed_m_s * t);
                let ang = Vector3::new(a(3), a(4), a(5)) * (self.spec.max_angular_speed_rad_s * t);
                let mut p = x_sp.translation.vector + lin;
                let lead = p - x_meas.translation.vector;
                if lead.norm() > self.spec.max_setpoint_lead_m {
                    p = x_meas.translation.vector
                        + lead.normalize() * self.spec.max_setpoint_lead_m;
                }
                for k in 0..3 {
                    p[k] = p[k].clamp(self.spec.workspace_min_m[k], self.spec.workspace_max_m[k]);
                }
                let r = UnitQuaternion::from_scaled_axis(ang) * x_sp.rotation;
                self.x_from = x_sp;
                self.x_goal = Isometry3::from_parts(Translation3::from(p), r);
                self.q_rest_follow_wrist();
            }
            ActionSpace::JointDelta => {
                let step = self.spec.max_joint_speed_rad_s * t;
                self.q_from = self.q_setpoint;
                let lead = self.spec.max_setpoint_lead_rad;
                for (i, (goal, q)) in self.q_goal.iter_mut().zip(q_meas).enumerate() {
                    *goal = (self.q_setpoint[i] + a(i) * step).clamp(q - lead, q + lead);
                }
                model.clamp_to_limits(&mut self.q_goal, self.limit_margin_rad);
            }
        }
        let g = action.get(self.space.dim() - 1).copied().unwrap_or(0.0) as f64;
        let wanted = (0.5 * (g + 1.0) * self.max_width_m).clamp(0.0, self.max_width_m);
        self.width_goal_m = self.width_setpoint_m + ramp * (wanted - self.width_setpoint_m);
    }

    /// Holds: the goal becomes where the setpoint is now, the gripper included (nothing moves
    /// on; the safety filter brings the command to rest within its limits).
    pub fn hold(&mut self, model: &ArmModel) {
        model.forward(&self.q_setpoint, &mut self.frames);
        self.x_from = self.frames.tcp;
        self.x_goal = self.frames.tcp;
        self.q_from = self.q_setpoint;
        self.q_goal = self.q_setpoint;
        self.width_goal_m = self.width_setpoint_m;
    }

    /// The gripper action component that stands for the gripper's current width setpoint
    /// (what a held or non-finite gripper component means).
    pub fn gripper_action(&self) -> f32 {
        if self.max_width_m > 0.0 {
            (2.0 * self.width_setpoint_m / self.max_width_m - 1.0).clamp(-1.0, 1.0) as f32
        } else {
            0.0
        }
    }

    /// The joint and gripper setpoint as a command.
    pub fn command(&self) -> JointCommand {
        JointCommand {
            joint_pos_rad: self.q_setpoint,
            gripper_width_m: self.width_setpoint_m,
        }
    }

    /// Continues from what the robot was really commanded (after a safety filter changed the
    /// setpoint), so the reference does not run away from the command: anti-windup.
    pub fn follow(&mut self, commanded: &JointCommand) {
        self.q_setpoint = commanded.joint_pos_rad;
        self.width_setpoint_m = commanded.gripper_width_m;
    }

    /// The action space this mapper reads.
    pub fn space(&self) -> ActionSpace {
        self.space
    }

    /// The last joint keeps whatever angle the policy gave it: the null space only holds the
    /// posture of the first six joints, so wrist yaw commands are not fought.
    fn q_rest_follow_wrist(&mut self) {
        self.q_rest[ARM_DOF - 1] = self.q_setpoint[ARM_DOF - 1];
    }

    /// Advances the setpoint by one servo tick; `alpha` in (0, 1] is how far through the
    /// policy step this tick ends.
    /// `tcp_meas` is the tool pose at `q_meas` (the caller has it from gravity compensation).
    pub fn update(
        &mut self,
        model: &ArmModel,
        alpha: f64,
        q_meas: &[f64; ARM_DOF],
        tcp_meas: &Isometry3<f64>,
        dt_s: f64,
    ) {
        match self.space {
            ActionSpace::EeDelta => self.track_cartesian(model, alpha, tcp_meas, dt_s),
            ActionSpace::JointDelta => {
                for i in 0..ARM_DOF {
                    self.q_setpoint[i] = self.q_from[i] + alpha * (self.q_goal[i] - self.q_from[i]);
                }
            }
        }
        // Reference limiting and joint limits, whatever produced the setpoint.
        let lead = self.spec.max_setpoint_lead_rad;
        for (sp, q) in self.q_setpoint.iter_mut().zip(q_meas) {
            *sp = sp.clamp(q - lead, q + lead);
        }
        model.clamp_to_limits(&mut self.q_setpoint, self.limit_margin_rad);
        // Fingers move at most at their speed limit.
        let max_dw = self.finger_speed_m_s * dt_s;
        let dw = (self.width_goal_m - self.width_setpoint_m).clamp(-max_dw, max_dw);
        self.width_setpoint_m += dw;
    }

    fn track_cartesian(
        &mut self,
        model: &ArmModel,
        alpha: f64,
        tcp_meas: &Isometry3<f64>,
        dt_s: f64,
    ) {
        let mut p = self
            .x_from
            .translation
            .vector
            .lerp(&self.x_goal.translation.vector, alpha);
        // Reference limiting at the physics rate: the reference stays within
        // `max_setpoint_lead_m` of the measured tool, so a blocked arm neither winds up nor
        // pushes harder than that lead times its stiffness.
        let lead = p - tcp_meas.translation.vector;
        if lead.norm() > self.spec.max_setpoint_lead_m {
            p = tcp_meas.translation.vector + lead.normalize() * self.spec.max_setpoint_lead_m;
        }
        let r = self.x_from.rotation.slerp(&self.x_goal.rotation, alpha);
        model.forward(&self.q_setpoint, &mut self.frames);
        model.jacobian(&self.frames, &mut self.jac);
        let x = self.frames.tcp;
        let e_lin = p - x.translation.vector;
        let e_ang = (r * x.rotation.inverse()).scaled_axis();
        let e = Vec6::new(e_lin.x, e_lin.y, e_lin.z, e_ang.x, e_ang.y, e_ang.z);
        let j = &self.jac;
        let lambda2 = self.spec.dls_damping * self.spec.dls_damping;
        let jjt: Matrix6<f64> = j * j.transpose() + Matrix6::identity() * lambda2;
        let Some(chol) = jjt.cholesky() else {
            return; // Cannot happen with lambda > 0; hold the setpoint if it does.
        };
        // Null-space pull toward the rest posture r, without disturbing the tool:
        // dq = J+ e + (I - J+ J) r = J+ (e - J r) + r, with J+ = J^T (J J^T + lambda^2 I)^-1.
        // A 6-DoF arm has no redundancy to spend: no pull (its seventh slot is inert).
        let mut rest = Vec7::zeros();
        if model.dof == ARM_DOF {
            for (i, r) in rest.iter_mut().enumerate() {
                *r =
                    self.spec.null_space_gain * (self.q_rest[i] - self.q_setpoint[i]) * dt_s * 10.0;
            }
        }
        let dq: Vec7 = j.transpose() * chol.solve(&(e - j * rest)) + rest;
        // The setpoint moves no faster than each joint's speed limit.
        for i in 0..ARM_DOF {
            let vmax = model.limits[i].velocity * dt_s;
            self.q_setpoint[i] += dq[i].clamp(-vmax, vmax);
        }
    }
}
