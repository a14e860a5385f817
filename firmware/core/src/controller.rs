//! The joint controller: host frames in, motor torques out, once per control period.
//!
//! Every path to the motors goes through [`Controller::tick`], which enforces the board's
//! limits whatever the host sent: references stay inside the position limits and move no
//! faster than the speed limits, a joint past its speed limit gets no torque that speeds it up,
//! torques stay inside the current limits, and a measurement beyond a limit latches a fault. The link watchdog runs here too: with no valid host frame
//! for `watchdog_ms`, the arm is brought to rest along a deceleration ramp and then held, and
//! setpoints are ignored until the host opens a new session and asks for position control.

use crate::config::{BoardConfig, ConfigError};
use reflex_wire::*;

/// What the board's sensors measured this period.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Measured {
    /// Joint positions, radians.
    pub pos_rad: [f32; JOINTS],
    /// Joint velocities, radians per second.
    pub vel_rad_s: [f32; JOINTS],
    /// Motor currents, amperes.
    pub current_a: [f32; JOINTS],
    /// Gripper width, metres.
    pub gripper_m: f32,
}

/// What the motors are told this period.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct MotorCommand {
    /// Power stages enabled; when false every torque is zero.
    pub enabled: bool,
    /// Joint torques, newton metres.
    pub torque_nm: [f32; JOINTS],
    /// Gripper width setpoint, metres.
    pub gripper_m: f32,
}

/// A board's motors and encoders: what the control loop reads and drives each period. The
/// board image implements it over its hardware; `reflex firmware-sim` over the simulated arm.
pub trait MotorPort {
    /// This period's measurement.
    fn measure(&mut self) -> Measured;
    /// Applies this period's command (no torque when it is not enabled) for `dt_s` seconds.
    fn drive(&mut self, cmd: &MotorCommand, dt_s: f32);
}

/// How the references move.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Motion {
    /// Motors off.
    Off,
    /// Towards the newest setpoint.
    Track,
    /// Decelerating to rest.
    Ramp,
    /// At rest.
    Hold,
}

/// Counters for the board's own diagnostics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BoardStats {
    /// Control periods run.
    pub ticks: u64,
    /// Host frames accepted.
    pub frames: u64,
    /// Host frames refused by the wire (by reason in [`Controller::rejects`]).
    pub wire_rejects: u64,
    /// Well-formed messages the controller refused (no session, a mode it cannot enter,
    /// limits or gains out of range).
    pub refused: u64,
    /// Setpoints that arrived while not tracking (ignored).
    pub setpoints_ignored: u64,
    /// Times the watchdog stopped the arm.
    pub watchdog_trips: u64,
    /// Board time of the most recent watchdog trip, microseconds.
    pub last_trip_us: u64,
    /// Board time when the arm last came to rest after a stop began, microseconds.
    pub last_rest_us: u64,
}

/// The joint controller.
pub struct Controller {
    cfg: BoardConfig,
    limits: Limits,
    gains: Gains,
    mode: BoardMode,
    motion: Motion,
    faults: Faults,
    session: u32,
    decoder: Decoder<ToBoard>,
    seq: SeqTracker,
    rejects: RejectCounts,
    sender: Sender,
    last_frame_us: u64,
    pending_ack: bool,
    target: Option<Setpoint>,
    ref_pos: [f32; JOINTS],
    ref_vel: [f32; JOINTS],
    gripper_m: f32,
    measured: Measured,
    now_us: u64,
    last_tick_us: Option<u64>,
    stats: BoardStats,
}

fn clamp(x: f32, lo: f32, hi: f32) -> f32 {
    x.max(lo).min(hi)
}

/// Square root for `no_std` (core has none for floats): a bit-level first guess and three
/// Newton steps, within 1e-6 relative for the speeds and distances here.
pub(crate) fn sqrt(x: f32) -> f32 {
    if x <= 0.0 || !x.is_finite() {
        return 0.0;
    }
    let mut y = f32::from_bits((x.to_bits() >> 1) + 0x1FBD_1DF5);
    for _ in 0..3 {
        y = 0.5 * (y + x / y);
    }
    y
}

fn finite(v: &[f32]) -> bool {
    v.iter().all(|x| x.is_finite())
}

impl Controller {
    /// A controller at boot: idle, no session, motors off.
    pub fn new(cfg: BoardConfig) -> Result<Self, ConfigError> {
        cfg.check()?;
        Ok(Self {
            limits: cfg.limits,
            gains: cfg.gains,
            mode: BoardMode::Idle,
            motion: Motion::Off,
            faults: Faults::default(),
            session: 0,
            decoder: Decoder::new(),
            seq: SeqTracker::default(),
            rejects: RejectCounts::default(),
            sender: Sender::new(),
            last_frame_us: 0,
            pending_ack: false,
            target: None,
            ref_pos: [0.0; JOINTS],
            ref_vel: [0.0; JOINTS],
            gripper_m: 0.0,
            measured: Measured::default(),
            now_us: 0,
            last_tick_us: None,
            stats: BoardStats::default(),
            cfg,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &BoardConfig {
        &self.cfg
    }

    /// The controller's mode.
    pub fn mode(&self) -> BoardMode {
        self.mode
    }

    /// Latched faults.
    pub fn faults(&self) -> Faults {
        self.faults
    }

    /// The limits in force (the board's own, tightened by the host's).
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The session served (0: none since boot).
    pub fn session(&self) -> u32 {
        self.session
    }

    /// Diagnostics counters.
    pub fn stats(&self) -> BoardStats {
        self.stats
    }

    /// Host frames that never arrived (gaps in the host's sequence numbers).
    pub fn host_frames_lost(&self) -> u64 {
        self.seq.lost
    }

    /// Host frames refused by the wire, by reason.
    pub fn rejects(&self) -> &RejectCounts {
        &self.rejects
    }

    /// The position references, radians.
    pub fn reference_rad(&self) -> &[f32; JOINTS] {
        &self.ref_pos
    }

    /// Takes bytes from the host's line, received at `now_us`.
    pub fn receive(&mut self, bytes: &[u8], now_us: u64) {
        for &b in bytes {
            match self.decoder.push(b) {
                None => {}
                Some(Ok(f)) => self.accept(f, now_us),
                Some(Err(e)) => {
                    // A host of another version still learns this board's: it answers a
                    // hello of any version (kinds are frozen) in its own.
                    if let Reject::Version { kind, .. } = e {
                        if kind == KIND_HELLO {
                            self.pending_ack = true;
                        }
                    }
                    self.reject(e);
                }
            }
        }
    }

    fn reject(&mut self, e: Reject) {
        self.rejects.add(e);
        self.stats.wire_rejects += 1;
    }

    fn refuse(&mut self) {
        self.stats.refused += 1;
    }

    fn accept(&mut self, f: Frame<ToBoard>, now_us: u64) {
        let hello = f.msg.starts_session();
        if self.session == 0 && !hello {
            return self.refuse();
        }
        if let Err(e) = self.seq.check(f.seq, hello) {
            return self.reject(e);
        }
        self.stats.frames += 1;
        self.last_frame_us = now_us;
        match f.msg {
            ToBoard::Hello(h) => {
                if h.nonce == 0 {
                    return self.refuse();
                }
                self.session = h.nonce;
                self.pending_ack = true;
                self.target = None;
                // A new host is a deliberate restart: the old link's watchdog fault goes.
                // E-stop and measurement faults stay latched until a re-arm.
                self.faults.0 &= !Faults::WATCHDOG.0;
                if self.mode == BoardMode::Faulted && self.faults.is_empty() {
                    self.mode = BoardMode::Holding;
                }
            }
            ToBoard::Setpoint(s) => {
                if self.mode == BoardMode::Position {
                    self.target = Some(s);
                } else {
                    self.stats.setpoints_ignored += 1;
                }
            }
            ToBoard::Gains(g) => self.set_gains(g),
            ToBoard::Limits(l) => self.tighten(l),
            ToBoard::Mode(m) => self.request(m),
            ToBoard::EStop => {
                self.faults.insert(Faults::ESTOP);
                self.mode = BoardMode::EStopped;
                self.begin_stop();
            }
            ToBoard::Rearm => {
                if !finite(&self.measured.pos_rad) {
                    return self.refuse();
                }
                self.faults = Faults::default();
                if matches!(self.mode, BoardMode::EStopped | BoardMode::Faulted) {
                    self.mode = BoardMode::Holding;
                    self.hold_here();
                }
            }
            ToBoard::Heartbeat => {}
        }
    }

    fn set_gains(&mut self, g: Gains) {
        let ok = (0..JOINTS).all(|j| {
            (0.0..=self.cfg.kp_max_nm_per_rad[j]).contains(&g.kp_nm_per_rad[j])
                && (0.0..=self.cfg.kd_max_nm_s_per_rad[j]).contains(&g.kd_nm_s_per_rad[j])
        });
        if ok {
            self.gains = g;
        } else {
            self.refuse();
        }
    }

    /// Applies the host's limits where they are tighter than the board's own.
    fn tighten(&mut self, l: Limits) {
        let own = &self.cfg.limits;
        let ok = (0..JOINTS).all(|j| {
            l.pos_min_rad[j] <= l.pos_max_rad[j]
                && l.vel_max_rad_s[j] >= 0.0
                && l.current_max_a[j] >= 0.0
                && l.pos_min_rad[j].max(own.pos_min_rad[j])
                    <= l.pos_max_rad[j].min(own.pos_max_rad[j])
        });
        if !ok {
            return self.refuse();
        }
        for j in 0..JOINTS {
            self.limits.pos_min_rad[j] = l.pos_min_rad[j].max(own.pos_min_rad[j]);
            self.limits.pos_max_rad[j] = l.pos_max_rad[j].min(own.pos_max_rad[j]);
            self.limits.vel_max_rad_s[j] = l.vel_max_rad_s[j].min(own.vel_max_rad_s[j]);
            self.limits.current_max_a[j] = l.current_max_a[j].min(own.current_max_a[j]);
        }
    }

    fn request(&mut self, m: ModeRequest) {
        let latched = matches!(self.mode, BoardMode::EStopped | BoardMode::Faulted);
        if latched || !self.faults.is_empty() {
            return self.refuse();
        }
        match m {
            ModeRequest::Idle => {
                self.mode = BoardMode::Idle;
                self.motion = Motion::Off;
            }
            ModeRequest::Position => {
                if self.mode != BoardMode::Position {
                    // Bumpless: the reference starts where the arm is, at rest.
                    self.hold_here();
                    self.target = None;
                    self.mode = BoardMode::Position;
                    self.motion = Motion::Track;
                }
            }
            ModeRequest::Hold => match self.mode {
                BoardMode::Position => {
                    self.mode = BoardMode::Stopping;
                    self.begin_stop();
                }
                BoardMode::Idle => {
                    self.mode = BoardMode::Holding;
                    self.hold_here();
                }
                _ => {}
            },
        }
    }

    fn hold_here(&mut self) {
        for j in 0..JOINTS {
            self.ref_pos[j] = clamp(
                self.measured.pos_rad[j],
                self.limits.pos_min_rad[j],
                self.limits.pos_max_rad[j],
            );
        }
        self.ref_vel = [0.0; JOINTS];
        self.motion = Motion::Hold;
    }

    /// Starts a controlled stop from the current motion (from the arm's own state when the
    /// motors were off).
    fn begin_stop(&mut self) {
        match self.motion {
            Motion::Off => {
                self.hold_here();
                for j in 0..JOINTS {
                    let v = self.measured.vel_rad_s[j];
                    let max = self.limits.vel_max_rad_s[j];
                    self.ref_vel[j] = if v.is_finite() {
                        clamp(v, -max, max)
                    } else {
                        0.0
                    };
                }
            }
            Motion::Ramp => return,
            Motion::Track | Motion::Hold => {}
        }
        self.motion = Motion::Ramp;
    }

    fn fault(&mut self, f: Faults) {
        self.faults.insert(f);
        if self.mode != BoardMode::EStopped {
            self.mode = BoardMode::Faulted;
        }
        if f == Faults::SENSOR {
            // Without a measurement there is nothing to control against.
            self.motion = Motion::Off;
        } else if self.motion != Motion::Off {
            self.begin_stop();
        }
    }

    /// One control period at `now_us` with this period's measurement: the motors' command.
    pub fn tick(&mut self, now_us: u64, m: &Measured) -> MotorCommand {
        let dt = match self.last_tick_us {
            Some(t) if now_us > t => ((now_us - t) as f32 * 1e-6).min(4.0 * self.cfg.period_s()),
            _ => self.cfg.period_s(),
        };
        self.last_tick_us = Some(now_us);
        self.now_us = now_us;
        self.stats.ticks += 1;
        let n = self.cfg.joints as usize;

        if !(finite(&m.pos_rad[..n]) && finite(&m.vel_rad_s[..n]) && finite(&m.current_a[..n])) {
            self.fault(Faults::SENSOR);
        } else {
            self.measured = *m;
            let own = &self.cfg.limits;
            let margin = self.cfg.position_fault_margin_rad;
            let beyond = (0..n).any(|j| {
                m.pos_rad[j] < own.pos_min_rad[j] - margin
                    || m.pos_rad[j] > own.pos_max_rad[j] + margin
            });
            let fast = (0..n)
                .any(|j| m.vel_rad_s[j].abs() > own.vel_max_rad_s[j] * self.cfg.overspeed_factor);
            let hot = (0..n).any(|j| m.current_a[j].abs() > own.current_max_a[j]);
            for (bad, f) in [
                (beyond, Faults::POSITION_LIMIT),
                (fast, Faults::OVERSPEED),
                (hot, Faults::OVERCURRENT),
            ] {
                if bad && !self.faults.contains(f) {
                    self.fault(f);
                }
            }
        }

        let silent_us = now_us.saturating_sub(self.last_frame_us);
        let live = matches!(self.mode, BoardMode::Position);
        if live && silent_us > self.cfg.watchdog_ms as u64 * 1000 {
            self.faults.insert(Faults::WATCHDOG);
            self.mode = BoardMode::Stopping;
            self.begin_stop();
            self.stats.watchdog_trips += 1;
            self.stats.last_trip_us = now_us;
        }

        self.step_reference(dt, n);
        self.command(n)
    }

    fn step_reference(&mut self, dt: f32, n: usize) {
        let l = self.limits;
        match self.motion {
            Motion::Off | Motion::Hold => self.ref_vel = [0.0; JOINTS],
            Motion::Track => {
                if let Some(s) = self.target {
                    for j in 0..n {
                        let (max, acc) = (l.vel_max_rad_s[j], self.cfg.accel_max_rad_s2[j]);
                        let goal = clamp(s.pos_rad[j], l.pos_min_rad[j], l.pos_max_rad[j]);
                        let feed = clamp(s.vel_rad_s[j], -max, max);
                        let error = goal - self.ref_pos[j];
                        // The fastest approach that can still stop at the goal, on top of the
                        // setpoint's own velocity; speed and acceleration limited.
                        let brake = sqrt(2.0 * acc * error.abs()).copysign(error);
                        let want = clamp(feed + brake, -max, max);
                        let v = self.ref_vel[j];
                        let v = v + clamp(want - v, -acc * dt, acc * dt);
                        if error.abs() <= (v * dt).abs() && (v - feed).abs() <= acc * dt {
                            // Arrived: on the setpoint, moving with it.
                            (self.ref_pos[j], self.ref_vel[j]) = (goal, feed);
                        } else {
                            self.ref_pos[j] += v * dt;
                            self.ref_vel[j] = v;
                        }
                    }
                    self.gripper_m = clamp(s.gripper_m, 0.0, self.cfg.gripper_max_m);
                } else {
                    self.ref_vel = [0.0; JOINTS];
                }
            }
            Motion::Ramp => {
                let mut moving = false;
                for j in 0..n {
                    let dv = self.cfg.stop_decel_rad_s2[j] * dt;
                    let v = self.ref_vel[j];
                    let v = if v > dv {
                        v - dv
                    } else if v < -dv {
                        v + dv
                    } else {
                        0.0
                    };
                    self.ref_vel[j] = v;
                    self.ref_pos[j] += v * dt;
                    if self.ref_pos[j] <= l.pos_min_rad[j] || self.ref_pos[j] >= l.pos_max_rad[j] {
                        self.ref_pos[j] =
                            clamp(self.ref_pos[j], l.pos_min_rad[j], l.pos_max_rad[j]);
                        self.ref_vel[j] = 0.0;
                    }
                    moving |= self.ref_vel[j] != 0.0;
                }
                if !moving {
                    self.motion = Motion::Hold;
                    self.stats.last_rest_us = self.now_us;
                    if self.mode == BoardMode::Stopping {
                        self.mode = BoardMode::Holding;
                    }
                }
            }
        }
        // References always inside the limits in force (the host may have tightened them).
        for j in 0..n {
            self.ref_pos[j] = clamp(self.ref_pos[j], l.pos_min_rad[j], l.pos_max_rad[j]);
        }
    }

    fn command(&self, n: usize) -> MotorCommand {
        let mut c = MotorCommand {
            enabled: self.motion != Motion::Off,
            torque_nm: [0.0; JOINTS],
            gripper_m: self.gripper_m,
        };
        if !c.enabled {
            return c;
        }
        let m = &self.measured;
        for j in 0..n {
            let limit = self.limits.current_max_a[j] * self.cfg.torque_per_amp_nm_a[j];
            let feed = match (self.motion, self.target) {
                (Motion::Track, Some(s)) => clamp(s.torque_nm[j], -limit, limit),
                _ => 0.0,
            };
            let t = self.gains.kp_nm_per_rad[j] * (self.ref_pos[j] - m.pos_rad[j])
                + self.gains.kd_nm_s_per_rad[j] * (self.ref_vel[j] - m.vel_rad_s[j])
                + feed;
            // Speed governor: the reference never outruns the speed limit, but a joint that
            // lags it (loaded, or held back at its current limit) would overshoot the limit
            // catching up; past the limit, no torque pushes it faster.
            let v = m.vel_rad_s[j];
            let speeding = v.abs() > self.limits.vel_max_rad_s[j] && t * v > 0.0;
            c.torque_nm[j] = if t.is_finite() && !speeding {
                clamp(t, -limit, limit)
            } else {
                0.0
            };
        }
        c
    }

    /// Writes the answer to a hello, when one is due, into `out`; returns its length.
    pub fn encode_reply(&mut self, out: &mut [u8]) -> Option<usize> {
        if !core::mem::take(&mut self.pending_ack) {
            return None;
        }
        let ack = ToHost::HelloAck(HelloAck {
            session: self.session,
            firmware: self.cfg.firmware,
            joints: self.cfg.joints,
            rate_hz: self.cfg.rate_hz,
            state_every: self.cfg.state_every,
            watchdog_ms: self.cfg.watchdog_ms,
            limits: self.cfg.limits,
            torque_per_amp_nm_a: self.cfg.torque_per_amp_nm_a,
        });
        self.sender.encode(&ack, out).ok().map(|(n, _)| n)
    }

    /// True when this period's state goes to the host (every `state_every` periods).
    pub fn state_due(&self) -> bool {
        self.stats.ticks.is_multiple_of(self.cfg.state_every as u64)
    }

    /// Writes this period's state frame into `out` (at least [`MAX_FRAME`] bytes); returns its
    /// length.
    pub fn encode_state(&mut self, out: &mut [u8]) -> Option<usize> {
        let m = &self.measured;
        let zero_bad = |v: &[f32; JOINTS]| v.map(|x| if x.is_finite() { x } else { 0.0 });
        let state = ToHost::State(BoardState {
            board_us: self.now_us,
            session: self.session,
            pos_rad: zero_bad(&m.pos_rad),
            vel_rad_s: zero_bad(&m.vel_rad_s),
            current_a: zero_bad(&m.current_a),
            gripper_m: if m.gripper_m.is_finite() {
                m.gripper_m
            } else {
                0.0
            },
            mode: self.mode,
            faults: self.faults,
            last_host_seq: self.seq.last().unwrap_or(0),
            host_rejects: (self.stats.wire_rejects + self.stats.refused).min(u32::MAX as u64)
                as u32,
        });
        self.sender.encode(&state, out).ok().map(|(n, _)| n)
    }
}
