//! The safety filter: the last thing every command passes before it reaches a robot, on the
//! control tick (hot path: no allocation, no locks, no formatting).
//!
//! Whatever the policy, the residual or the operator asked for, the command that leaves the
//! filter:
//! - is finite;
//! - keeps every joint inside its URDF limits less `joint_margin_rad`;
//! - moves each joint at most `max_step_rad` and at most `joint_vel_max_rad_s * dt` per tick, and
//!   slowly enough to stop before the position limit at the joint's acceleration limit;
//! - changes joint velocity by at most `joint_acc_max_rad_s2 * dt` per tick while running
//!   normally (stopping is exempt: hold, brake, e-stop, and a step slowed or cut short at the
//!   workspace wall; joint limits are approached slowly enough to stop in time at the joint
//!   acceleration limit, the workspace walls slowly enough to stop in time at
//!   `tool_decel_max_m_s2`);
//! - keeps the tool centre point inside the workspace box (or, if the arm starts outside it,
//!   never moves it further out);
//! - keeps the gripper width in range.
//!
//! Non-finite commands or states hold the last safe command and raise a fault. A stale
//! observation holds after `watchdog_hold_ticks` missed ticks and brakes (commands the measured
//! position, rate-limited) after `watchdog_brake_ticks`. The e-stop brakes and stays set until
//! someone clears it through [`EStop::clear`]; nothing that flows through [`SafetyFilter::filter`]
//! can clear or bypass it.

use nalgebra::Vector3;
use reflex_core::{ArmModel, Frames, JointCommand, LimitsError, RobotState, SafetyLimits, ARM_DOF};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// What the filter did to a command, as bit flags (small and `Copy` for the control path).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Faults(u16);

impl Faults {
    /// The command had a NaN or infinite component; the last safe command was held.
    pub const NON_FINITE_COMMAND: Faults = Faults(1 << 0);
    /// The measured state had a NaN or infinite component; the last safe command was held.
    pub const NON_FINITE_STATE: Faults = Faults(1 << 1);
    /// A joint was clamped into its position limits.
    pub const JOINT_LIMIT: Faults = Faults(1 << 2);
    /// A joint step was cut to the step, speed or stopping-distance limit.
    pub const RATE_LIMIT: Faults = Faults(1 << 3);
    /// A joint's velocity change was cut to the acceleration limit.
    pub const ACCEL_LIMIT: Faults = Faults(1 << 4);
    /// The step was shortened to keep the tool inside the workspace box.
    pub const WORKSPACE: Faults = Faults(1 << 5);
    /// The gripper width was clamped into range.
    pub const GRIPPER_LIMIT: Faults = Faults(1 << 6);
    /// No fresh observation for `watchdog_hold_ticks`: holding.
    pub const WATCHDOG_HOLD: Faults = Faults(1 << 7);
    /// No fresh observation for `watchdog_brake_ticks`: braking.
    pub const WATCHDOG_BRAKE: Faults = Faults(1 << 8);
    /// The e-stop is set: braking.
    pub const ESTOP: Faults = Faults(1 << 9);

    /// Number of distinct flags.
    pub const COUNT: usize = 10;

    /// Names of the flags in bit order (for logs and JSON).
    pub const NAMES: [&'static str; Faults::COUNT] = [
        "non_finite_command",
        "non_finite_state",
        "joint_limit",
        "rate_limit",
        "accel_limit",
        "workspace",
        "gripper_limit",
        "watchdog_hold",
        "watchdog_brake",
        "estop",
    ];

    /// No flag set.
    pub const fn empty() -> Self {
        Faults(0)
    }

    /// True when no flag is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// True when every flag of `other` is set.
    pub const fn contains(self, other: Faults) -> bool {
        self.0 & other.0 == other.0
    }

    /// Sets the flags of `other`.
    pub fn insert(&mut self, other: Faults) {
        self.0 |= other.0;
    }

    /// The raw bits.
    pub const fn bits(self) -> u16 {
        self.0
    }
}

/// How the command of this tick was produced.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// The (possibly clamped) requested command.
    #[default]
    Normal,
    /// The last safe command, repeated.
    Hold,
    /// The measured position, approached at the step limit: the arm stops where it is.
    Brake,
}

/// The e-stop flag, shared between the control loop and whoever may press or release it.
#[derive(Clone, Debug, Default)]
pub struct EStop(Arc<AtomicBool>);

impl EStop {
    /// A released e-stop.
    pub fn new() -> Self {
        Self::default()
    }

    /// Presses the e-stop: from the next tick on, the filter brakes.
    pub fn trigger(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Releases the e-stop (an operator's decision; policies have no handle to call this).
    pub fn clear(&self) {
        self.0.store(false, Ordering::SeqCst);
    }

    /// True while pressed.
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// The filter's state: the last safe command and its velocity, the watchdog, fault counters.
pub struct SafetyFilter {
    limits: SafetyLimits,
    model: ArmModel,
    dt_s: f64,
    estop: EStop,
    last: JointCommand,
    last_vel_rad_s: [f64; ARM_DOF],
    /// The previous finite request, to estimate how fast the requested target moves.
    last_desired_rad: [f64; ARM_DOF],
    stale_ticks: u32,
    frames: Frames,
    counts: [u64; Faults::COUNT],
}

impl SafetyFilter {
    /// A filter for a loop of period `dt_s`, starting from the measured `state` (clamped into the
    /// limits if it is outside them).
    pub fn new(
        limits: SafetyLimits,
        model: ArmModel,
        dt_s: f64,
        estop: EStop,
        state: &RobotState,
    ) -> Result<Self, LimitsError> {
        limits.validate()?;
        if !(dt_s > 0.0 && dt_s.is_finite()) {
            return Err(LimitsError {
                field: "dt_s".into(),
                message: format!("the control period must be positive and finite, got {dt_s}"),
            });
        }
        let mut f = Self {
            limits,
            model,
            dt_s,
            estop,
            last: JointCommand::default(),
            last_vel_rad_s: [0.0; ARM_DOF],
            last_desired_rad: [0.0; ARM_DOF],
            stale_ticks: 0,
            frames: Frames::default(),
            counts: [0; Faults::COUNT],
        };
        f.reset(state);
        Ok(f)
    }

    /// Restarts from the measured `state` at rest (after a reset or a recovery).
    pub fn reset(&mut self, state: &RobotState) {
        for i in 0..ARM_DOF {
            self.last.joint_pos_rad[i] = self.limits.clamp_joint(i, state.joint_pos_rad[i]);
        }
        let [lo, hi] = self.limits.gripper_width_range_m;
        self.last.gripper_width_m = if state.gripper_width_m.is_finite() {
            state.gripper_width_m.clamp(lo, hi)
        } else {
            lo
        };
        self.last_vel_rad_s = [0.0; ARM_DOF];
        self.last_desired_rad = self.last.joint_pos_rad;
        self.stale_ticks = 0;
    }

    /// The limits in force.
    pub fn limits(&self) -> &SafetyLimits {
        &self.limits
    }

    /// The last command that left the filter.
    pub fn last_command(&self) -> &JointCommand {
        &self.last
    }

    /// How many ticks raised each fault, in bit order of [`Faults`].
    pub fn fault_counts(&self) -> &[u64; Faults::COUNT] {
        &self.counts
    }

    /// Filters `desired` into `out`. `fresh` says whether `state` is a new observation this tick.
    pub fn filter(
        &mut self,
        desired: &JointCommand,
        state: &RobotState,
        fresh: bool,
        out: &mut JointCommand,
    ) -> (Mode, Faults) {
        let mut faults = Faults::empty();
        let mode = self.decide(desired, state, fresh, &mut faults, out);
        for (bit, count) in self.counts.iter_mut().enumerate() {
            if faults.bits() & (1 << bit) != 0 {
                *count += 1;
            }
        }
        (mode, faults)
    }

    fn decide(
        &mut self,
        desired: &JointCommand,
        state: &RobotState,
        fresh: bool,
        faults: &mut Faults,
        out: &mut JointCommand,
    ) -> Mode {
        if self.estop.is_set() {
            faults.insert(Faults::ESTOP);
            return self.brake(state, out);
        }
        self.stale_ticks = if fresh {
            0
        } else {
            self.stale_ticks.saturating_add(1)
        };
        if self.stale_ticks >= self.limits.watchdog_brake_ticks {
            faults.insert(Faults::WATCHDOG_BRAKE);
            return self.brake(state, out);
        }
        if self.stale_ticks >= self.limits.watchdog_hold_ticks {
            faults.insert(Faults::WATCHDOG_HOLD);
            return self.hold(out);
        }
        if !state.is_finite() {
            faults.insert(Faults::NON_FINITE_STATE);
            return self.hold(out);
        }
        let finite = desired.joint_pos_rad.iter().all(|v| v.is_finite())
            && desired.gripper_width_m.is_finite();
        if !finite {
            faults.insert(Faults::NON_FINITE_COMMAND);
            return self.hold(out);
        }

        let dt = self.dt_s;
        let mut q = [0.0; ARM_DOF];
        let mut vel = [0.0; ARM_DOF];
        for i in 0..ARM_DOF {
            let target = self.limits.clamp_joint(i, desired.joint_pos_rad[i]);
            if target != desired.joint_pos_rad[i] {
                faults.insert(Faults::JOINT_LIMIT);
            }
            let last = self.last.joint_pos_rad[i];
            let lo_lim = self.limits.joint_pos_min_rad[i] + self.limits.joint_margin_rad;
            let hi_lim = self.limits.joint_pos_max_rad[i] - self.limits.joint_margin_rad;
            let a = self.limits.joint_acc_max_rad_s2[i];
            let vmax = self.limits.joint_vel_max_rad_s[i].min(self.limits.max_step_rad / dt);
            // No faster than lets the joint stop before the limit at the acceleration limit, in
            // discrete ticks: one more tick at v, then braking, covers v*dt + v^2/(2a) <= d.
            // If that holds now it still holds after slowing by a*dt, so braking never needs
            // more than the acceleration limit.
            let stop_v =
                |d: f64| (-a * dt + (a * a * dt * dt + 2.0 * a * d.max(0.0)).sqrt()).max(0.0);
            let v_up = vmax.min(stop_v(hi_lim - last));
            let v_dn = vmax.min(stop_v(last - lo_lim));
            let v_target = ((target - self.last_desired_rad[i]) / dt).clamp(-vmax, vmax);
            let e = target - last;
            let want = (e / dt).clamp(v_target - stop_v(-e), v_target + stop_v(e));
            let rate = want.clamp(-v_dn, v_up);
            if rate != want {
                faults.insert(Faults::RATE_LIMIT);
            }
            let prev = self.last_vel_rad_s[i];
            let (acc_lo, acc_hi) = (prev - a * dt, prev + a * dt);
            let mut v = rate.clamp(acc_lo, acc_hi);
            if v != rate {
                faults.insert(Faults::ACCEL_LIMIT);
            }
            // Position and speed limits outrank the acceleration limit.
            v = v.clamp(-v_dn.max(0.0), v_up.max(0.0));
            q[i] = (last + v * dt).clamp(lo_lim, hi_lim);
            vel[i] = (q[i] - last) / dt;
        }

        // Workspace approach: the tool moves toward a wall no faster than lets it stop before
        // the wall at the tool deceleration limit (the same discrete-time bound as the joints).
        // The whole step is scaled, so the tool keeps its direction.
        if self.slow_toward_walls(&mut q) {
            faults.insert(Faults::WORKSPACE);
            for i in 0..ARM_DOF {
                vel[i] = (q[i] - self.last.joint_pos_rad[i]) / dt;
            }
        }
        // Workspace: shorten the step (toward the last safe command) until the tool is inside.
        if self.shorten_into_workspace(&mut q) {
            faults.insert(Faults::WORKSPACE);
            for i in 0..ARM_DOF {
                vel[i] = (q[i] - self.last.joint_pos_rad[i]) / dt;
            }
        }

        let [wlo, whi] = self.limits.gripper_width_range_m;
        let width = desired.gripper_width_m.clamp(wlo, whi);
        if width != desired.gripper_width_m {
            faults.insert(Faults::GRIPPER_LIMIT);
        }
        out.joint_pos_rad = q;
        out.gripper_width_m = width;
        self.last = *out;
        self.last_vel_rad_s = vel;
        for i in 0..ARM_DOF {
            self.last_desired_rad[i] = self.limits.clamp_joint(i, desired.joint_pos_rad[i]);
        }
        Mode::Normal
    }

    fn hold(&mut self, out: &mut JointCommand) -> Mode {
        *out = self.last;
        self.last_vel_rad_s = [0.0; ARM_DOF];
        Mode::Hold
    }

    /// Moves the command toward the measured position (the arm stops where it is), at most
    /// `max_step_rad` per tick, inside the limits. A non-finite measurement holds instead.
    fn brake(&mut self, state: &RobotState, out: &mut JointCommand) -> Mode {
        if !state.joint_pos_rad.iter().all(|v| v.is_finite()) {
            // No usable measurement to stop at: stay at the last safe command.
            self.hold(out);
            return Mode::Brake;
        }
        let step = self.limits.max_step_rad;
        let mut q = [0.0; ARM_DOF];
        for (i, qi) in q.iter_mut().enumerate() {
            let target = self.limits.clamp_joint(i, state.joint_pos_rad[i]);
            let last = self.last.joint_pos_rad[i];
            *qi = self
                .limits
                .clamp_joint(i, last + (target - last).clamp(-step, step));
        }
        // Stopping where a pushed arm ended up must not take the command out of the box.
        self.shorten_into_workspace(&mut q);
        out.joint_pos_rad = q;
        out.gripper_width_m = self.last.gripper_width_m;
        self.last = *out;
        self.last_vel_rad_s = [0.0; ARM_DOF];
        Mode::Brake
    }

    /// If the tool at `q` is outside the workspace box, moves `q` back along the step from the
    /// last safe command until it is inside (bisection). A last command outside the box (only
    /// possible at start-up) allows steps that reduce the violation. Returns whether `q` changed.
    fn shorten_into_workspace(&mut self, q: &mut [f64; ARM_DOF]) -> bool {
        if self.tcp_inside(q) {
            return false;
        }
        let last_q = self.last.joint_pos_rad;
        let last_out = self.box_violation(&last_q);
        let s = if last_out > 0.0 {
            if self.box_violation(q) < last_out {
                1.0
            } else {
                0.0
            }
        } else {
            let (mut s_ok, mut s_bad) = (0.0, 1.0);
            for _ in 0..12 {
                let s = 0.5 * (s_ok + s_bad);
                if self.tcp_inside(&lerp(&last_q, q, s)) {
                    s_ok = s;
                } else {
                    s_bad = s;
                }
            }
            s_ok
        };
        *q = lerp(&last_q, q, s);
        true
    }

    /// Scales the step from the last command to `q` so that along every axis the tool moves
    /// toward a wall no faster than it can stop before it at `tool_decel_max_m_s2`. Returns
    /// whether `q` changed.
    fn slow_toward_walls(&mut self, q: &mut [f64; ARM_DOF]) -> bool {
        let last_q = self.last.joint_pos_rad;
        self.model.forward(&last_q, &mut self.frames);
        let p0: Vector3<f64> = self.frames.tcp.translation.vector;
        self.model.forward(q, &mut self.frames);
        let p1: Vector3<f64> = self.frames.tcp.translation.vector;
        let (a, dt) = (self.limits.tool_decel_max_m_s2, self.dt_s);
        let stop_v = |d: f64| (-a * dt + (a * a * dt * dt + 2.0 * a * d.max(0.0)).sqrt()).max(0.0);
        let mut scale: f64 = 1.0;
        for k in 0..3 {
            let v = (p1[k] - p0[k]) / dt;
            let d = if v > 0.0 {
                self.limits.workspace_max_m[k] - p0[k]
            } else {
                p0[k] - self.limits.workspace_min_m[k]
            };
            // 1 mm/s of slack: a tool resting on a wall may still slide along it; numerical
            // crumbs of wall-ward motion are left to the bisection below.
            let allowed = stop_v(d) + 1e-3;
            if v.abs() > allowed {
                scale = scale.min(allowed / v.abs());
            }
        }
        if scale >= 1.0 || !scale.is_finite() {
            return false;
        }
        *q = lerp(&last_q, q, scale);
        true
    }

    fn tcp_inside(&mut self, q: &[f64; ARM_DOF]) -> bool {
        self.box_violation(q) <= 0.0
    }

    /// How far the tool at `q` is outside the workspace box (0 inside), metres.
    fn box_violation(&mut self, q: &[f64; ARM_DOF]) -> f64 {
        self.model.forward(q, &mut self.frames);
        let p: Vector3<f64> = self.frames.tcp.translation.vector;
        let mut d2 = 0.0;
        for k in 0..3 {
            let lo = self.limits.workspace_min_m[k];
            let hi = self.limits.workspace_max_m[k];
            let e = (lo - p[k]).max(p[k] - hi).max(0.0);
            d2 += e * e;
        }
        d2.sqrt()
    }
}

fn lerp(a: &[f64; ARM_DOF], b: &[f64; ARM_DOF], s: f64) -> [f64; ARM_DOF] {
    let mut out = [0.0; ARM_DOF];
    for i in 0..ARM_DOF {
        out[i] = a[i] + s * (b[i] - a[i]);
    }
    out
}
