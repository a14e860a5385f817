//! The control core's checks, as plain functions: `cargo test` runs them on the host and the
//! `selftest` binary runs them on the emulated Cortex-M4F (QEMU `mps2-an386`), so the same
//! code is proven on both CPUs. Each drives a [`Rig`]: the controller, a [`Plant`] and a host
//! end of the link, at the board's rate.

use crate::config::BoardConfig;
#[cfg(test)]
use crate::controller::sqrt;
use crate::controller::Controller;
use crate::plant::Plant;
use reflex_wire::*;

/// A failed check: what did not hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Failure(pub &'static str);

macro_rules! ensure {
    ($cond:expr, $what:expr) => {
        let held: bool = $cond;
        if !held {
            return Err(Failure($what));
        }
    };
}

/// A seven-joint test arm: ±2.5 rad, 2 rad/s, 10 A at 2 N m/A, 1 kHz, a 50 ms watchdog.
pub fn test_config() -> BoardConfig {
    BoardConfig {
        firmware: [0, 1, 0],
        joints: 7,
        rate_hz: 1000,
        state_every: 1,
        watchdog_ms: 50,
        limits: Limits {
            pos_min_rad: [-2.5; JOINTS],
            pos_max_rad: [2.5; JOINTS],
            vel_max_rad_s: [2.0; JOINTS],
            current_max_a: [10.0; JOINTS],
        },
        gains: Gains {
            kp_nm_per_rad: [100.0; JOINTS],
            kd_nm_s_per_rad: [5.0; JOINTS],
        },
        kp_max_nm_per_rad: [400.0; JOINTS],
        kd_max_nm_s_per_rad: [20.0; JOINTS],
        accel_max_rad_s2: [10.0; JOINTS],
        stop_decel_rad_s2: [10.0; JOINTS],
        torque_per_amp_nm_a: [2.0; JOINTS],
        overspeed_factor: 1.5,
        position_fault_margin_rad: 0.05,
        gripper_max_m: 0.08,
    }
}

/// The controller, a plant and the host's end of the link, stepped at the board's rate.
pub struct Rig {
    /// The controller under test.
    pub ctl: Controller,
    /// The arm.
    pub plant: Plant,
    /// Board time, microseconds.
    pub now_us: u64,
    host: Sender,
    rx: Receiver<ToHost>,
    /// The newest state the host received.
    pub state: Option<BoardState>,
    /// The newest hello answer the host received.
    pub ack: Option<HelloAck>,
    /// The highest joint speed measured since the last [`Rig::reset_peaks`], rad/s.
    pub peak_speed: f32,
    /// The highest |torque| commanded since the last [`Rig::reset_peaks`], N m.
    pub peak_torque: f32,
    /// When the host last sent a frame, microseconds.
    pub last_sent_us: u64,
}

impl Rig {
    /// The test arm at rest at zero.
    pub fn new() -> Self {
        let cfg = test_config();
        Self {
            ctl: Controller::new(cfg).expect("the test configuration is valid"),
            plant: Plant::at([0.0; JOINTS], cfg.torque_per_amp_nm_a[0]),
            now_us: 1_000,
            host: Sender::new(),
            rx: Receiver::new(),
            state: None,
            ack: None,
            peak_speed: 0.0,
            peak_torque: 0.0,
            last_sent_us: 0,
        }
    }

    /// The host sends `m` now.
    pub fn send(&mut self, m: ToBoard) {
        let mut buf = [0u8; MAX_FRAME];
        if let Ok((n, _)) = self.host.encode(&m, &mut buf) {
            self.ctl.receive(&buf[..n], self.now_us);
            self.last_sent_us = self.now_us;
        }
    }

    /// Sends `raw` bytes as they are.
    pub fn send_bytes(&mut self, bytes: &[u8]) {
        self.ctl.receive(bytes, self.now_us);
    }

    /// Runs `ms` periods; the host streams `stream` every period when given.
    pub fn run(&mut self, ms: u32, stream: Option<Setpoint>) {
        let dt = self.ctl.config().period_s();
        let period_us = 1_000_000 / self.ctl.config().rate_hz as u64;
        for _ in 0..ms {
            if let Some(s) = stream {
                self.send(ToBoard::Setpoint(s));
            }
            let cmd = self.ctl.tick(self.now_us, &self.plant.measure());
            for t in cmd.torque_nm {
                self.peak_torque = self.peak_torque.max(t.abs());
            }
            self.plant.step(&cmd, dt);
            for v in self.plant.vel_rad_s {
                self.peak_speed = self.peak_speed.max(v.abs());
            }
            let mut buf = [0u8; MAX_FRAME];
            if let Some(n) = self.ctl.encode_reply(&mut buf) {
                self.take(n, &buf);
            }
            if let Some(n) = self.ctl.encode_state(&mut buf) {
                self.take(n, &buf);
            }
            self.now_us += period_us;
        }
    }

    fn take(&mut self, n: usize, buf: &[u8; MAX_FRAME]) {
        for &b in &buf[..n] {
            match self.rx.push(b).map(|f| f.msg) {
                Some(ToHost::State(s)) => self.state = Some(s),
                Some(ToHost::HelloAck(a)) => self.ack = Some(a),
                None => {}
            }
        }
    }

    /// Forgets the peaks.
    pub fn reset_peaks(&mut self) {
        (self.peak_speed, self.peak_torque) = (0.0, 0.0);
    }

    /// Hello, then position control.
    pub fn start(&mut self, nonce: u32) -> Result<(), Failure> {
        self.send(ToBoard::Hello(Hello { nonce }));
        self.run(2, None);
        ensure!(
            self.ack.map(|a| a.session) == Some(nonce),
            "the board answers the hello"
        );
        self.send(ToBoard::Mode(ModeRequest::Position));
        self.run(1, None);
        ensure!(
            self.ctl.mode() == BoardMode::Position,
            "position control starts"
        );
        Ok(())
    }
}

impl Default for Rig {
    fn default() -> Self {
        Self::new()
    }
}

fn all_near(v: &[f32; JOINTS], target: f32, tol: f32) -> bool {
    v.iter().all(|x| (x - target).abs() <= tol)
}

fn setpoint(pos: f32) -> Setpoint {
    Setpoint {
        pos_rad: [pos; JOINTS],
        gripper_m: 0.04,
        ..Default::default()
    }
}

/// Setpoints are tracked, at no more than the speed limit.
pub fn tracks_setpoints_within_the_speed_limit() -> Result<(), Failure> {
    let mut r = Rig::new();
    r.start(7)?;
    r.run(1500, Some(setpoint(1.0)));
    ensure!(
        all_near(&r.plant.pos_rad, 1.0, 0.01),
        "reaches the setpoint"
    );
    // The reference never exceeds the limit; the arm's PD transient overshoots it by about
    // 7% on this plant (where the limit reaches cruise), far below the overspeed fault.
    ensure!(r.peak_speed <= 2.0 * 1.1, "stays within the speed limit");
    ensure!(r.plant.gripper_m == 0.04, "the gripper follows");
    let s = r.state.ok_or(Failure("the host hears the state"))?;
    ensure!(
        s.mode == BoardMode::Position && s.session == 7,
        "the state names mode and session"
    );
    Ok(())
}

/// A setpoint beyond the position limits stops at the limit, without a fault.
pub fn setpoints_beyond_the_limits_stop_at_them() -> Result<(), Failure> {
    let mut r = Rig::new();
    r.start(7)?;
    r.run(2000, Some(setpoint(10.0)));
    ensure!(all_near(&r.plant.pos_rad, 2.5, 0.01), "stops at the limit");
    ensure!(r.ctl.faults().is_empty(), "no fault");
    ensure!(
        r.peak_torque <= 20.0 + 1e-3,
        "torque within the current limit"
    );
    Ok(())
}

/// No valid frame for the watchdog time: a controlled stop the host cannot skip, then hold.
pub fn the_watchdog_stops_then_holds() -> Result<(), Failure> {
    let mut r = Rig::new();
    r.start(7)?;
    // Moving at full speed when the host goes quiet.
    r.run(300, Some(setpoint(2.4)));
    ensure!(r.plant.vel_rad_s[0] > 1.5, "moving when the link drops");
    let quiet_from = r.last_sent_us;
    r.run(40, None);
    ensure!(
        r.ctl.mode() == BoardMode::Position,
        "no stop before the watchdog time"
    );
    r.run(400, None);
    ensure!(r.ctl.mode() == BoardMode::Holding, "holds after the stop");
    ensure!(
        r.ctl.faults().contains(Faults::WATCHDOG),
        "the watchdog fault is latched"
    );
    let st = r.ctl.stats();
    ensure!(st.watchdog_trips == 1, "one trip");
    let trip_ms = (st.last_trip_us - quiet_from) / 1000;
    ensure!((50..=52).contains(&trip_ms), "trips at the watchdog time");
    // 2 rad/s at 10 rad/s^2: 200 ms of ramp.
    let rest_ms = (st.last_rest_us - quiet_from) / 1000;
    ensure!((245..=260).contains(&rest_ms), "rests after the ramp");
    ensure!(r.plant.vel_rad_s.iter().all(|v| v.abs() < 0.01), "at rest");
    let held = r.plant.pos_rad;
    // The link comes back: setpoints and a mode request are not enough.
    r.send(ToBoard::Mode(ModeRequest::Position));
    r.run(200, Some(setpoint(0.0)));
    ensure!(
        r.ctl.mode() == BoardMode::Holding,
        "setpoints do not skip the stop"
    );
    ensure!(
        r.plant
            .pos_rad
            .iter()
            .zip(&held)
            .all(|(a, b)| (a - b).abs() < 0.01),
        "the arm stays where it stopped"
    );
    // A new session clears the watchdog fault; position control must be asked for again.
    r.start(8)?;
    r.run(1500, Some(setpoint(0.0)));
    ensure!(
        all_near(&r.plant.pos_rad, 0.0, 0.01),
        "tracks again in the new session"
    );
    Ok(())
}

/// An e-stop brings the arm to rest and latches until a re-arm; a new session is not one.
pub fn the_estop_latches_until_rearmed() -> Result<(), Failure> {
    let mut r = Rig::new();
    r.start(7)?;
    r.run(300, Some(setpoint(2.0)));
    r.send(ToBoard::EStop);
    r.run(400, Some(setpoint(-2.0)));
    ensure!(r.ctl.mode() == BoardMode::EStopped, "e-stopped");
    ensure!(r.plant.vel_rad_s.iter().all(|v| v.abs() < 0.01), "at rest");
    let refused = r.ctl.stats().refused;
    r.send(ToBoard::Mode(ModeRequest::Position));
    r.send(ToBoard::Hello(Hello { nonce: 9 }));
    r.send(ToBoard::Mode(ModeRequest::Position));
    r.run(10, None);
    ensure!(r.ctl.mode() == BoardMode::EStopped, "still e-stopped");
    ensure!(
        r.ctl.stats().refused == refused + 2,
        "both mode requests refused"
    );
    let s = r.state.ok_or(Failure("state"))?;
    ensure!(s.faults.contains(Faults::ESTOP), "the host sees the e-stop");
    r.send(ToBoard::Rearm);
    r.run(1, None);
    ensure!(r.ctl.mode() == BoardMode::Holding, "re-armed: holding");
    ensure!(r.ctl.faults().is_empty(), "faults cleared");
    r.send(ToBoard::Mode(ModeRequest::Position));
    r.run(2000, Some(setpoint(-2.0)));
    ensure!(
        all_near(&r.plant.pos_rad, -2.0, 0.01),
        "tracks after the re-arm"
    );
    Ok(())
}

/// A bad measurement or an overcurrent latches a fault.
pub fn measurement_faults_latch() -> Result<(), Failure> {
    let mut r = Rig::new();
    r.start(7)?;
    r.run(100, Some(setpoint(0.5)));
    r.plant.pos_rad[2] = f32::NAN;
    r.run(1, Some(setpoint(0.5)));
    ensure!(r.ctl.mode() == BoardMode::Faulted, "a NaN faults the board");
    ensure!(
        r.ctl.faults().contains(Faults::SENSOR),
        "named as a sensor fault"
    );
    let s = r.state.ok_or(Failure("state"))?;
    ensure!(
        s.faults.contains(Faults::SENSOR),
        "the state still reaches the host"
    );
    r.plant.pos_rad[2] = 0.4;
    r.run(10, Some(setpoint(0.5)));
    ensure!(
        r.ctl.mode() == BoardMode::Faulted,
        "latched after the sensor recovers"
    );
    r.send(ToBoard::Rearm);
    r.send(ToBoard::Mode(ModeRequest::Position));
    r.run(10, None);
    ensure!(r.ctl.mode() == BoardMode::Position, "re-armed");
    r.plant.current_a[4] = 11.0;
    let cmd = r.ctl.tick(r.now_us, &r.plant.measure());
    ensure!(
        r.ctl.faults().contains(Faults::OVERCURRENT),
        "overcurrent latched"
    );
    ensure!(
        cmd.enabled,
        "an overcurrent stops along the ramp, motors on"
    );
    Ok(())
}

/// Nothing but a hello is obeyed before a session.
pub fn nothing_moves_without_a_session() -> Result<(), Failure> {
    let mut r = Rig::new();
    r.send(ToBoard::Mode(ModeRequest::Position));
    r.run(100, Some(setpoint(1.0)));
    ensure!(r.ctl.mode() == BoardMode::Idle, "idle");
    ensure!(all_near(&r.plant.pos_rad, 0.0, 1e-6), "no motion");
    ensure!(
        r.ctl.stats().refused == 101,
        "every frame refused and counted"
    );
    Ok(())
}

/// A hello of another protocol version is answered in this board's, so the host can name both.
pub fn another_versions_hello_is_answered_in_this_one() -> Result<(), Failure> {
    let mut r = Rig::new();
    let mut buf = [0u8; MAX_FRAME];
    let n = encode_as(
        PROTOCOL_VERSION + 1,
        &ToBoard::Hello(Hello { nonce: 3 }),
        1,
        &mut buf,
    )
    .map_err(|_| Failure("encode"))?;
    r.send_bytes(&buf[..n]);
    r.run(1, None);
    let ack = r.ack.ok_or(Failure("an answer in this board's version"))?;
    ensure!(ack.session == 0, "no session was opened");
    ensure!(
        r.ctl.rejects().get(Reject::Version { theirs: 0, kind: 0 }) == 1,
        "the hello is counted as another version"
    );
    Ok(())
}

/// The host may tighten the board's limits, never loosen them, and gains stay under the caps.
pub fn host_limits_only_tighten() -> Result<(), Failure> {
    let mut r = Rig::new();
    r.start(7)?;
    let own = r.ctl.config().limits;
    let mut loose = own;
    loose.pos_max_rad = [9.0; JOINTS];
    loose.vel_max_rad_s = [9.0; JOINTS];
    r.send(ToBoard::Limits(loose));
    ensure!(*r.ctl.limits() == own, "looser limits change nothing");
    let mut tight = own;
    tight.pos_max_rad = [1.0; JOINTS];
    tight.vel_max_rad_s = [1.0; JOINTS];
    r.send(ToBoard::Limits(tight));
    ensure!(*r.ctl.limits() == tight, "tighter limits apply");
    r.reset_peaks();
    r.run(3000, Some(setpoint(2.0)));
    ensure!(
        all_near(&r.plant.pos_rad, 1.0, 0.01),
        "stops at the host's limit"
    );
    ensure!(r.peak_speed <= 1.1, "at the host's speed");
    let refused = r.ctl.stats().refused;
    let mut inverted = own;
    inverted.pos_min_rad = [1.0; JOINTS];
    inverted.pos_max_rad = [-1.0; JOINTS];
    r.send(ToBoard::Limits(inverted));
    let mut hot = r.ctl.config().gains;
    hot.kp_nm_per_rad[0] = 1e4;
    r.send(ToBoard::Gains(hot));
    ensure!(
        r.ctl.stats().refused == refused + 2,
        "inverted limits and hot gains refused"
    );
    ensure!(*r.ctl.limits() == tight, "limits unchanged");
    Ok(())
}

/// Entering position control neither jumps nor pushes: the reference starts at the arm.
pub fn position_control_starts_bumpless() -> Result<(), Failure> {
    let mut r = Rig::new();
    r.plant.pos_rad = [0.3, -0.2, 0.1, -1.0, 0.5, 0.0, 1.2];
    r.send(ToBoard::Hello(Hello { nonce: 5 }));
    r.run(5, None);
    r.send(ToBoard::Mode(ModeRequest::Position));
    r.reset_peaks();
    r.run(200, None);
    ensure!(r.peak_torque < 1e-3, "no torque at the start");
    ensure!(
        r.ctl.reference_rad() == &r.plant.pos_rad,
        "the reference is the arm's position"
    );
    Ok(())
}

/// A joint already faster than its speed limit gets no torque that speeds it up, however far
/// behind its reference it lags: a loaded joint catching up would otherwise overshoot the
/// limit (and trip the overspeed fault). Below the limit the same lag drives it.
pub fn a_joint_past_its_speed_limit_is_not_sped_up() -> Result<(), Failure> {
    let mut r = Rig::new();
    r.start(8)?;
    // The reference cruises at the 2 rad/s limit.
    r.run(300, Some(setpoint(2.0)));
    let reference = *r.ctl.reference_rad();
    for (j, q) in reference.iter().enumerate().take(7) {
        r.plant.pos_rad[j] = q - 0.5;
        r.plant.vel_rad_s[j] = 2.2;
    }
    let cmd = r.ctl.tick(r.now_us, &r.plant.measure());
    ensure!(cmd.enabled, "still under position control");
    ensure!(
        cmd.torque_nm[..7].iter().all(|t| *t <= 0.0),
        "no torque speeds up a joint past its limit"
    );
    r.plant.vel_rad_s[..7].fill(1.5);
    let cmd = r.ctl.tick(r.now_us + 1_000, &r.plant.measure());
    ensure!(
        cmd.torque_nm[..7].iter().all(|t| *t > 0.0),
        "a joint below its limit is driven towards its reference"
    );
    Ok(())
}

/// A check: `Ok` when everything it looks at held.
pub type Check = fn() -> Result<(), Failure>;

/// Every check, by name.
pub const ALL: [(&str, Check); 10] = [
    (
        "tracks_setpoints_within_the_speed_limit",
        tracks_setpoints_within_the_speed_limit,
    ),
    (
        "setpoints_beyond_the_limits_stop_at_them",
        setpoints_beyond_the_limits_stop_at_them,
    ),
    (
        "the_watchdog_stops_then_holds",
        the_watchdog_stops_then_holds,
    ),
    (
        "the_estop_latches_until_rearmed",
        the_estop_latches_until_rearmed,
    ),
    ("measurement_faults_latch", measurement_faults_latch),
    (
        "nothing_moves_without_a_session",
        nothing_moves_without_a_session,
    ),
    (
        "another_versions_hello_is_answered_in_this_one",
        another_versions_hello_is_answered_in_this_one,
    ),
    ("host_limits_only_tighten", host_limits_only_tighten),
    (
        "position_control_starts_bumpless",
        position_control_starts_bumpless,
    ),
    (
        "a_joint_past_its_speed_limit_is_not_sped_up",
        a_joint_past_its_speed_limit_is_not_sped_up,
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! on_the_host {
        ($($name:ident),* $(,)?) => {$(
            #[test]
            fn $name() {
                if let Err(f) = super::$name() {
                    panic!("{}: {}", stringify!($name), f.0);
                }
            }
        )*};
    }

    on_the_host!(
        tracks_setpoints_within_the_speed_limit,
        setpoints_beyond_the_limits_stop_at_them,
        the_watchdog_stops_then_holds,
        the_estop_latches_until_rearmed,
        measurement_faults_latch,
        nothing_moves_without_a_session,
        another_versions_hello_is_answered_in_this_one,
        host_limits_only_tighten,
        position_control_starts_bumpless,
        a_joint_past_its_speed_limit_is_not_sped_up,
    );

    #[test]
    fn the_list_names_every_check() {
        assert_eq!(ALL.len(), 10);
        assert!(ALL.iter().all(|(n, _)| !n.is_empty()));
    }

    #[test]
    fn the_square_root_is_close() {
        for x in [1e-6f32, 0.01, 0.5, 2.0, 40.0, 1e4] {
            let r = sqrt(x) / x.sqrt();
            assert!((r - 1.0).abs() < 1e-6, "{x}: {r}");
        }
        assert_eq!(sqrt(-1.0), 0.0);
    }
}
