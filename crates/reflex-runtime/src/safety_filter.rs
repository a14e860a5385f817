//! The safety filter: the last thing every command passes before it reaches a robot, on the
//! control tick (hot path: no allocation, no locks, no formatting).
//!
//! The filter owns the command's motion: the last command sent and its velocity. Every tick,
//! in every mode, the command that leaves it:
//! - is finite;
//! - keeps every joint inside its URDF limits less `joint_margin_rad`;
//! - moves each joint at most `max_step_rad` and `joint_vel_max_rad_s * dt` per tick;
//! - changes each joint's velocity by at most `joint_acc_max_rad_s2 * dt` per tick;
//! - keeps the tool centre point inside the workspace box, and every link origin and both
//!   fingertips inside the arm's envelope (above the table);
//! - keeps the gripper width in range and moves it no faster than `gripper_speed_max_m_s`.
//!
//! **How.** The filter keeps one invariant: from the command's current position and velocity,
//! braking every joint at its acceleration limit (`v -> v - sign(v) min(|v|, a dt)` per tick)
//! stops inside every limit. Braking is therefore always allowed, and it is what every stop is:
//! hold, watchdog, e-stop and a non-finite request all decelerate within the limits to where
//! the command can stop from its current motion (never back to an old measurement, never in
//! one tick). In normal running each joint approaches its requested position without
//! overshooting, no faster than it can stop before its position limit; the whole step is then
//! checked along its braking path for the envelope, and blended toward braking (a convex mix,
//! so speed and acceleration limits still hold) until that path stays inside. The check is
//! exact for every commanded point: it visits the path's ticks, skipping ahead only as far as
//! no envelope point can reach a wall (a joint turning by `d` moves no point further than the
//! arm's reach times `d`). Walls are also approached no faster than the tool could stop at
//! `tool_decel_max_m_s2`, where the joint limits leave room to do so.
//!
//! **Modes.** A request for a command tracks it ([`Mode::Normal`]); a non-finite component of
//! it brakes that component only. [`SafetyFilter::hold`] (no request: a stale read, an episode
//! over, a lost operator link), a non-finite state and `watchdog_hold_ticks` missed ticks hold
//! ([`Mode::Hold`]); `watchdog_brake_ticks` missed ticks and the e-stop brake
//! ([`Mode::Brake`]). Hold and brake follow the same law; the mode says why.
//!
//! **E-stop.** [`EStop`] is latched: pressing it brakes at once; releasing the button does not
//! resume anything; only [`EStop::rearm`] (refused while the button is down) lets requests
//! through again, and the runtime then restarts its policy from the measured state with the
//! output ramped in. Nothing that flows through [`SafetyFilter::filter`] can clear or bypass it.

// Joint loops index several parallel arrays (limits, command, velocity) at once.
#![allow(clippy::needless_range_loop)]

use nalgebra::Vector3;
use reflex_core::{
    ArmModel, Frames, JointCommand, LimitsError, RobotState, SafetyLimits, ARM_DOF, ENVELOPE_POINTS,
};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

/// Most points of one braking path checked; a path that needs more is refused (the step is
/// blended toward braking instead).
const PATH_SAMPLES_MAX: usize = 256;

/// What the filter did to a command, as bit flags (small and `Copy` for the control path).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Faults(u16);

impl Faults {
    /// A requested component was NaN or infinite; that component braked (its last command).
    pub const NON_FINITE_COMMAND: Faults = Faults(1 << 0);
    /// The measured state had a NaN or infinite component; the command held.
    pub const NON_FINITE_STATE: Faults = Faults(1 << 1);
    /// A joint request was clamped into its position limits.
    pub const JOINT_LIMIT: Faults = Faults(1 << 2);
    /// A joint's speed was cut to the step, speed or stopping-distance limit.
    pub const RATE_LIMIT: Faults = Faults(1 << 3);
    /// A joint's velocity change was cut to the acceleration limit.
    pub const ACCEL_LIMIT: Faults = Faults(1 << 4);
    /// The step was blended toward braking to keep the arm inside its envelope.
    pub const WORKSPACE: Faults = Faults(1 << 5);
    /// The gripper width was clamped into range or rate-limited.
    pub const GRIPPER_LIMIT: Faults = Faults(1 << 6);
    /// No fresh observation for `watchdog_hold_ticks`: holding.
    pub const WATCHDOG_HOLD: Faults = Faults(1 << 7);
    /// No fresh observation for `watchdog_brake_ticks`: braking.
    pub const WATCHDOG_BRAKE: Faults = Faults(1 << 8);
    /// The e-stop is latched: braking.
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
    /// Tracking the requested command (within every limit).
    #[default]
    Normal,
    /// Decelerating to a stop within the limits: no request, a stale or non-finite state.
    Hold,
    /// Decelerating to a stop within the limits: the watchdog's brake or the e-stop.
    Brake,
}

const PRESSED: u8 = 1;
const LATCHED: u8 = 2;

/// Why a re-arm was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RearmError {
    /// The e-stop button is still pressed: release it first.
    #[error("the e-stop is still pressed: release it before re-arming")]
    StillPressed,
}

#[derive(Debug, Default)]
struct EStopState {
    bits: AtomicU8,
    presses: AtomicU64,
    rearms: AtomicU64,
}

/// The e-stop, shared between the control loop and whoever may press it (a signal handler, a
/// ROS topic, a web page). Latched: pressing brakes the arm at once; releasing the button
/// resumes nothing; only [`EStop::rearm`] does, and only once the button is released.
#[derive(Clone, Debug, Default)]
pub struct EStop(Arc<EStopState>);

impl EStop {
    /// A released, armed e-stop.
    pub fn new() -> Self {
        Self::default()
    }

    /// Presses the button: latches the e-stop (from the next tick on, the filter brakes).
    /// Async-signal-safe (two atomic operations).
    pub fn press(&self) {
        self.0.bits.fetch_or(PRESSED | LATCHED, Ordering::SeqCst);
        self.0.presses.fetch_add(1, Ordering::Relaxed);
    }

    /// Releases the button. The e-stop stays latched until [`EStop::rearm`].
    pub fn release(&self) {
        self.0.bits.fetch_and(!PRESSED, Ordering::SeqCst);
    }

    /// Re-arms a released e-stop (an operator's deliberate act; policies have no handle to it).
    /// Refused while the button is pressed.
    pub fn rearm(&self) -> Result<(), RearmError> {
        self.0
            .bits
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| {
                (b & PRESSED == 0).then_some(b & !LATCHED)
            })
            .map_err(|_| RearmError::StillPressed)?;
        self.0.rearms.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// True while latched (pressed and not yet re-armed): the arm brakes and stays stopped.
    pub fn is_latched(&self) -> bool {
        self.0.bits.load(Ordering::SeqCst) & LATCHED != 0
    }

    /// True while the button is held down.
    pub fn is_pressed(&self) -> bool {
        self.0.bits.load(Ordering::SeqCst) & PRESSED != 0
    }

    /// How many times it was pressed.
    pub fn presses(&self) -> u64 {
        self.0.presses.load(Ordering::Relaxed)
    }

    /// How many times it was re-armed.
    pub fn rearms(&self) -> u64 {
        self.0.rearms.load(Ordering::Relaxed)
    }
}

/// The filter's state: the last command and its velocity, the watchdog, fault counters.
pub struct SafetyFilter {
    limits: SafetyLimits,
    model: ArmModel,
    dt_s: f64,
    estop: EStop,
    last: JointCommand,
    vel_rad_s: [f64; ARM_DOF],
    /// The previous finite request (to estimate how fast the requested target moves), or
    /// none after a stop.
    last_desired_rad: [f64; ARM_DOF],
    desired_known: [bool; ARM_DOF],
    stale_ticks: u32,
    /// How far the braking path of the last command may lie outside the envelope: 0 unless
    /// the arm started outside it, and never growing.
    envelope_budget_m: f64,
    reach_m: f64,
    frames: Frames,
    points: [Vector3<f64>; ENVELOPE_POINTS],
    counts: [u64; Faults::COUNT],
}

impl SafetyFilter {
    /// A filter for a loop of period `dt_s`, starting at rest at the measured `state` (clamped
    /// into the joint limits if it is outside them).
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
        let reach_m = model.reach_bound_m();
        let mut f = Self {
            limits,
            model,
            dt_s,
            estop,
            last: JointCommand::default(),
            vel_rad_s: [0.0; ARM_DOF],
            last_desired_rad: [0.0; ARM_DOF],
            desired_known: [false; ARM_DOF],
            stale_ticks: 0,
            envelope_budget_m: 0.0,
            reach_m,
            frames: Frames::default(),
            points: [Vector3::zeros(); ENVELOPE_POINTS],
            counts: [0; Faults::COUNT],
        };
        f.reset(state);
        Ok(f)
    }

    /// Restarts at rest at the measured `state`. Only for a discontinuity the command did not
    /// cause: the start, or a simulator whose scene was rebuilt. A real arm never needs it.
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
        self.vel_rad_s = [0.0; ARM_DOF];
        self.desired_known = [false; ARM_DOF];
        self.stale_ticks = 0;
        let q = self.last.joint_pos_rad;
        self.envelope_budget_m = (-self.slack_at(&q)).max(0.0);
    }

    /// The limits in force.
    pub fn limits(&self) -> &SafetyLimits {
        &self.limits
    }

    /// The e-stop this filter obeys.
    pub fn estop(&self) -> &EStop {
        &self.estop
    }

    /// The last command that left the filter.
    pub fn last_command(&self) -> &JointCommand {
        &self.last
    }

    /// The joint velocity of the last command, rad/s.
    pub fn velocity(&self) -> &[f64; ARM_DOF] {
        &self.vel_rad_s
    }

    /// True when the command has stopped moving.
    pub fn at_rest(&self) -> bool {
        self.vel_rad_s.iter().all(|v| *v == 0.0)
    }

    /// How many ticks raised each fault, in bit order of [`Faults`].
    pub fn fault_counts(&self) -> &[u64; Faults::COUNT] {
        &self.counts
    }

    /// Tracks `desired` within the limits, into `out`. `fresh` says whether `state` is a new
    /// observation this tick.
    pub fn filter(
        &mut self,
        desired: &JointCommand,
        state: &RobotState,
        fresh: bool,
        out: &mut JointCommand,
    ) -> (Mode, Faults) {
        self.step(Some(desired), state, fresh, out)
    }

    /// No request this tick: the command decelerates to a stop within the limits.
    pub fn hold(
        &mut self,
        state: &RobotState,
        fresh: bool,
        out: &mut JointCommand,
    ) -> (Mode, Faults) {
        self.step(None, state, fresh, out)
    }

    fn step(
        &mut self,
        desired: Option<&JointCommand>,
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
        desired: Option<&JointCommand>,
        state: &RobotState,
        fresh: bool,
        faults: &mut Faults,
        out: &mut JointCommand,
    ) -> Mode {
        self.stale_ticks = if fresh {
            0
        } else {
            self.stale_ticks.saturating_add(1)
        };
        if self.estop.is_latched() {
            faults.insert(Faults::ESTOP);
            self.stop(out);
            return Mode::Brake;
        }
        if self.stale_ticks >= self.limits.watchdog_brake_ticks {
            faults.insert(Faults::WATCHDOG_BRAKE);
            self.stop(out);
            return Mode::Brake;
        }
        if self.stale_ticks >= self.limits.watchdog_hold_ticks {
            faults.insert(Faults::WATCHDOG_HOLD);
            self.stop(out);
            return Mode::Hold;
        }
        if !state.is_finite() {
            faults.insert(Faults::NON_FINITE_STATE);
            self.stop(out);
            return Mode::Hold;
        }
        match desired {
            Some(d) => {
                self.track(d, faults, out);
                Mode::Normal
            }
            None => {
                self.stop(out);
                Mode::Hold
            }
        }
    }

    /// The velocity one tick of braking leaves from `v`, for joint `i`.
    #[inline]
    fn brake_vel(&self, i: usize, v: f64) -> f64 {
        let dv = self.limits.joint_acc_max_rad_s2[i] * self.dt_s;
        v - v.signum() * v.abs().min(dv)
    }

    /// Brakes every joint at its acceleration limit; the gripper keeps its last command.
    fn stop(&mut self, out: &mut JointCommand) {
        let mut v = [0.0; ARM_DOF];
        for (i, vi) in v.iter_mut().enumerate() {
            *vi = self.brake_vel(i, self.vel_rad_s[i]);
        }
        self.desired_known = [false; ARM_DOF];
        self.commit(&v, self.last.gripper_width_m, out);
    }

    /// Writes the command reached with joint velocities `v` and gripper width `width_m`.
    fn commit(&mut self, v: &[f64; ARM_DOF], width_m: f64, out: &mut JointCommand) {
        for i in 0..ARM_DOF {
            let lo = self.limits.joint_pos_min_rad[i] + self.limits.joint_margin_rad;
            let hi = self.limits.joint_pos_max_rad[i] - self.limits.joint_margin_rad;
            let last = self.last.joint_pos_rad[i];
            let q = (last + v[i] * self.dt_s).clamp(lo, hi);
            out.joint_pos_rad[i] = q;
            self.vel_rad_s[i] = (q - last) / self.dt_s;
        }
        out.gripper_width_m = width_m;
        self.last = *out;
    }

    fn track(&mut self, desired: &JointCommand, faults: &mut Faults, out: &mut JointCommand) {
        let dt = self.dt_s;
        let mut v_new = [0.0; ARM_DOF];
        let mut v_brake = [0.0; ARM_DOF];
        for i in 0..ARM_DOF {
            let prev = self.vel_rad_s[i];
            v_brake[i] = self.brake_vel(i, prev);
            let requested = desired.joint_pos_rad[i];
            if !requested.is_finite() {
                // This joint alone brakes; the others go on.
                faults.insert(Faults::NON_FINITE_COMMAND);
                v_new[i] = v_brake[i];
                self.desired_known[i] = false;
                continue;
            }
            let target = self.limits.clamp_joint(i, requested);
            if target != requested {
                faults.insert(Faults::JOINT_LIMIT);
            }
            let last = self.last.joint_pos_rad[i];
            let lo_lim = self.limits.joint_pos_min_rad[i] + self.limits.joint_margin_rad;
            let hi_lim = self.limits.joint_pos_max_rad[i] - self.limits.joint_margin_rad;
            let a = self.limits.joint_acc_max_rad_s2[i];
            let vmax = self.limits.joint_vel_max_rad_s[i].min(self.limits.max_step_rad / dt);
            // No faster than lets the joint stop before the limit at the acceleration limit;
            // this still holds after braking for one tick, so braking is always allowed (the
            // invariant the whole filter rests on).
            let stop_v = |d: f64| stop_speed(a, dt, d);
            let v_up = vmax.min(stop_v(hi_lim - last));
            let v_dn = vmax.min(stop_v(last - lo_lim));
            let v_target = if self.desired_known[i] {
                ((target - self.last_desired_rad[i]) / dt).clamp(-vmax, vmax)
            } else {
                0.0
            };
            // Approach the target no faster than lets the joint stop on it: no overshoot.
            let e = target - last;
            let want = (e / dt).clamp(v_target - stop_v(-e), v_target + stop_v(e));
            let rate = want.clamp(-v_dn, v_up);
            if rate != want {
                faults.insert(Faults::RATE_LIMIT);
            }
            let mut v = rate.clamp(prev - a * dt, prev + a * dt);
            if v != rate {
                faults.insert(Faults::ACCEL_LIMIT);
            }
            // The invariant makes this a no-op; it stays as the last word of position limits.
            v = v.clamp(-v_dn, v_up);
            v_new[i] = v;
            self.last_desired_rad[i] = target;
            self.desired_known[i] = true;
        }

        // The envelope: the step must leave a braking path that stays inside. Otherwise blend
        // toward braking (every blend keeps the speed and acceleration limits) until it does.
        let q_last = self.last.joint_pos_rad;
        let tcp_last = self.model.tcp_pose(&q_last).translation.vector;
        if !self.path_ok(&v_new, &tcp_last) {
            faults.insert(Faults::WORKSPACE);
            let (mut s_ok, mut s_bad) = (0.0, 1.0);
            for _ in 0..12 {
                let s = 0.5 * (s_ok + s_bad);
                let v = blend(&v_brake, &v_new, s);
                if self.path_ok(&v, &tcp_last) {
                    s_ok = s;
                } else {
                    s_bad = s;
                }
            }
            v_new = blend(&v_brake, &v_new, s_ok);
        }

        // The gripper: in range, at its speed limit; a non-finite request keeps the last width.
        let last_w = self.last.gripper_width_m;
        let width = if desired.gripper_width_m.is_finite() {
            let [lo, hi] = self.limits.gripper_width_range_m;
            let wanted = desired.gripper_width_m.clamp(lo, hi);
            let dw = self.limits.gripper_speed_max_m_s * dt;
            let w = wanted.clamp(last_w - dw, last_w + dw);
            if w != desired.gripper_width_m {
                faults.insert(Faults::GRIPPER_LIMIT);
            }
            w
        } else {
            faults.insert(Faults::NON_FINITE_COMMAND);
            last_w
        };
        self.commit(&v_new, width, out);
    }

    /// True when moving at `v` for one tick leaves a braking path inside the envelope (or, for
    /// an arm that started outside it, no further out than where it started), and approaches
    /// no wall of the tool box faster than the tool (now at `tcp_last`) could stop before it.
    fn path_ok(&mut self, v: &[f64; ARM_DOF], tcp_last: &Vector3<f64>) -> bool {
        let q0 = self.next_position(v);
        let s0 = self.slack_at(&q0);
        if !self.tool_approach_ok(tcp_last, &self.points[ARM_DOF]) {
            return false;
        }
        let allow = self.envelope_budget_m;
        if s0 < -allow - 1e-12 {
            return false;
        }
        let steps = self.braking_ticks(v);
        let total = self.travel_between(v, 0, steps);
        if s0 > self.reach_m * total {
            if allow > 0.0 && s0 > 0.0 {
                // The whole path lies strictly inside: the arm is back in its envelope.
                self.envelope_budget_m = 0.0;
            }
            return true;
        }
        // Visit the path: from a point with room `s + allow`, every later point within
        // `(s + allow) / reach` of joint travel is inside, so skip to the first one beyond.
        let (mut j, mut s, mut samples) = (0u64, s0, 1usize);
        let mut q = [0.0; ARM_DOF];
        while j < steps {
            let room = s + allow;
            let mut dj = 1u64;
            while j + 2 * dj <= steps && self.reach_m * self.travel_between(v, j, j + 2 * dj) < room
            {
                dj *= 2;
            }
            j += dj;
            for i in 0..ARM_DOF {
                q[i] = q0[i] + self.braking_displacement(i, v[i], j);
            }
            s = self.slack_at(&q);
            if s < -allow - 1e-12 {
                return false;
            }
            samples += 1;
            if samples > PATH_SAMPLES_MAX {
                return false;
            }
        }
        true
    }

    /// Summed joint travel of the braking path from `v` between its ticks `j1` and `j2`.
    fn travel_between(&self, v: &[f64; ARM_DOF], j1: u64, j2: u64) -> f64 {
        (0..ARM_DOF)
            .map(|i| {
                (self.braking_displacement(i, v[i], j2) - self.braking_displacement(i, v[i], j1))
                    .abs()
            })
            .sum()
    }

    /// The signed distance of the envelope points at `q` to the nearest wall (negative
    /// outside); also leaves those points in `self.points`.
    fn slack_at(&mut self, q: &[f64; ARM_DOF]) -> f64 {
        self.model.forward(q, &mut self.frames);
        self.model.envelope_points(&self.frames, &mut self.points);
        self.limits.envelope_slack(&self.points)
    }

    /// Where one tick at `v` takes the command.
    fn next_position(&self, v: &[f64; ARM_DOF]) -> [f64; ARM_DOF] {
        let mut q = [0.0; ARM_DOF];
        for i in 0..ARM_DOF {
            q[i] = self.last.joint_pos_rad[i] + v[i] * self.dt_s;
        }
        q
    }

    /// Ticks until every joint has stopped when braking from `v`.
    fn braking_ticks(&self, v: &[f64; ARM_DOF]) -> u64 {
        (0..ARM_DOF)
            .map(|i| {
                let dv = self.limits.joint_acc_max_rad_s2[i] * self.dt_s;
                (v[i].abs() / dv).ceil().min(1e7) as u64
            })
            .max()
            .unwrap_or(0)
    }

    /// How far joint `i` moves in the first `j` ticks of braking from `v` (after the tick that
    /// moved it at `v`).
    #[inline]
    fn braking_displacement(&self, i: usize, v: f64, j: u64) -> f64 {
        let dv = self.limits.joint_acc_max_rad_s2[i] * self.dt_s;
        let speed = v.abs();
        // Ticks with a positive speed left: |v| - m dv > 0 for m = 1..=k.
        let full = ((speed / dv).ceil() as u64).saturating_sub(1);
        let k = j.min(full) as f64;
        v.signum() * self.dt_s * (k * speed - dv * k * (k + 1.0) / 2.0)
    }

    /// The tool, moving from `p0` to `tcp_next` in one tick, approaches every wall of the tool
    /// box no faster than lets it stop before it at `tool_decel_max_m_s2` (with 1 mm/s of
    /// slack, so a tool resting on a wall may slide along it).
    fn tool_approach_ok(&self, p0: &Vector3<f64>, tcp_next: &Vector3<f64>) -> bool {
        let (a, dt) = (self.limits.tool_decel_max_m_s2, self.dt_s);
        let stop_v = |d: f64| stop_speed(a, dt, d);
        (0..3).all(|k| {
            let v = (tcp_next[k] - p0[k]) / dt;
            let d = if v > 0.0 {
                self.limits.workspace_max_m[k] - p0[k]
            } else {
                p0[k] - self.limits.workspace_min_m[k]
            };
            v.abs() <= stop_v(d) + 1e-3
        })
    }
}

/// The fastest speed from which one more tick at that speed, then braking at `decel`, covers
/// no more than `distance` (in discrete ticks of `dt`: `v dt + v^2 / (2 decel) <= distance`).
/// If that holds now it still holds after braking for one tick.
#[inline]
fn stop_speed(decel: f64, dt: f64, distance: f64) -> f64 {
    let (a, d) = (decel, distance.max(0.0));
    (-a * dt + (a * a * dt * dt + 2.0 * a * d).sqrt()).max(0.0)
}

fn blend(a: &[f64; ARM_DOF], b: &[f64; ARM_DOF], s: f64) -> [f64; ARM_DOF] {
    let mut out = [0.0; ARM_DOF];
    for i in 0..ARM_DOF {
        out[i] = a[i] + s * (b[i] - a[i]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_e_stop_latches_and_rearms_only_once_released() {
        let e = EStop::new();
        assert!(!e.is_latched());
        e.press();
        assert!(e.is_latched() && e.is_pressed());
        assert_eq!(e.rearm(), Err(RearmError::StillPressed));
        e.release();
        assert!(e.is_latched(), "releasing the button resumes nothing");
        e.rearm().unwrap();
        assert!(!e.is_latched());
        assert_eq!((e.presses(), e.rearms()), (1, 1));
    }
}
