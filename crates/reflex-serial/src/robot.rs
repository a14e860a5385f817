//! [`SerialRobot`]: an arm on Reflex's joint firmware behind the [`Robot`] trait.

use crate::link::{run_reader, ReaderStats, Shared, StateSample, SENT_SLOTS};
use crate::scene::{SceneLink, SceneLinkError};
use crate::setpoint::SetpointShaper;
use reflex_core::{
    check_limits_within, start_default, Action, ArmModel, Frame, JointCommand, JointLimits,
    Observation, Outcome, Robot, RobotError, RobotHealth, RobotState, SafetyLimits, SceneError,
    SceneReset, SceneSpec, SceneView, StartError, StepJudge, TrackedObject, ARM_DOF,
};
use reflex_runtime::EStop;
use reflex_wire::{
    BoardMode, Gains, Hello, HelloAck, Limits, ModeRequest, RejectCounts, Sender, ToBoard, JOINTS,
    MAX_FRAME, PROTOCOL_VERSION,
};
use serialport::SerialPort;
use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use triple_buffer::{triple_buffer, Input, Output};

const _: () = assert!(JOINTS == ARM_DOF, "the wire carries every arm joint slot");

/// How to reach a board and what to tell it.
#[derive(Clone, Debug)]
pub struct SerialParams {
    /// The serial device, e.g. `/dev/ttyACM0` or a pseudo-terminal.
    pub port: String,
    /// Baud rate (USB CDC and pseudo-terminals ignore it), bits per second.
    pub baud: u32,
    /// A state older than this is stale, milliseconds.
    pub state_timeout_ms: u64,
    /// How long to wait for the board's answer to a hello, milliseconds.
    pub handshake_timeout_ms: u64,
    /// PD gains to set at start (the board's own otherwise).
    pub gains: Option<Gains>,
    /// Send gravity-compensation torques as feed-forward (from the URDF's masses).
    pub gravity_feedforward: bool,
    /// Send the commands' rate of change as velocity feed-forward. Without it the board damps
    /// towards rest between setpoints, as the simulator's joint impedance does, so a policy
    /// trained there sees the lag it learned with.
    pub velocity_feedforward: bool,
    /// Clear the board's latched e-stop and faults at start (an operator's deliberate act).
    pub rearm_board: bool,
}

impl SerialParams {
    /// Defaults for `port`: 921,600 baud, stale after 20 ms, 2 s for the handshake, gravity
    /// and velocity feed-forward on, no re-arm.
    pub fn new(port: impl Into<String>) -> Self {
        Self {
            port: port.into(),
            baud: 921_600,
            state_timeout_ms: 20,
            handshake_timeout_ms: 2000,
            gains: None,
            gravity_feedforward: true,
            velocity_feedforward: true,
            rearm_board: false,
        }
    }
}

/// Why the port could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SerialError {
    /// The device could not be opened.
    #[error("opening serial port {port}: {source}")]
    Open {
        /// The device.
        port: String,
        /// Why.
        source: serialport::Error,
    },
}

/// Link counters and round-trip times, for people and benchmarks.
#[derive(Clone, Debug, Default)]
pub struct LinkStats {
    /// Host frames sent.
    pub sent: u64,
    /// Host frames not written whole (the line was full).
    pub send_errors: u64,
    /// The longest time between two setpoints under position control, microseconds (the
    /// host's loop stalling shows here first: the board's watchdog counts the same silence).
    pub longest_setpoint_gap_us: u64,
    /// Pauses between setpoints under position control longer than half the board's
    /// watchdog.
    pub long_setpoint_gaps: u64,
    /// What the reader counted.
    pub reader: ReaderStats,
}

impl LinkStats {
    /// Round-trip percentile `p` (0..=100), microseconds.
    pub fn rtt_percentile_us(&self, p: f64) -> Option<u32> {
        let mut v = self.reader.rtt_us.clone();
        if v.is_empty() {
            return None;
        }
        v.sort_unstable();
        let i = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
        v.get(i.min(v.len() - 1)).copied()
    }
}

/// An arm on Reflex's joint firmware, over a serial line.
///
/// [`Robot::start`] opens a session (hello, version and joint count checked, the board's limits
/// checked against the configured ones, the configured limits sent for the board to enforce
/// too) and leaves the board holding the arm; the first command puts it under position
/// control. Each command goes out as a setpoint with velocity and gravity feed-forward; a
/// reader thread turns the board's states into robot states. A board that stops on its own
/// (its link watchdog, a fault, its e-stop) or reboots latches the runtime's e-stop as well;
/// the operator's re-arm opens a new session and resumes. An episode that ends (the attached
/// scene's judge says done) leaves the board holding the arm at rest until the next scene
/// reset or episode, so whatever the host does between episodes (evaluation, checkpoints)
/// cannot trip the link watchdog; commands in between are not forwarded. [`Robot::stop`] asks
/// the board for a controlled stop and leaves it holding.
pub struct SerialRobot {
    params: SerialParams,
    model: ArmModel,
    estop: EStop,
    port: serialport::TTYPort,
    reader_port: Option<serialport::TTYPort>,
    reader: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
    state_tx: Option<Input<StateSample>>,
    state_rx: Output<StateSample>,
    sender: Sender,
    buf: [u8; MAX_FRAME],
    session: u32,
    board: Option<HelloAck>,
    limits: Limits,
    shaper: SetpointShaper,
    /// The board is under position control as far as the host knows.
    tracking: bool,
    /// The number of the frame that asked for position control.
    position_seq: u32,
    /// The board stopped on its own; waiting for the operator's re-arm.
    stopped_by_board: bool,
    /// Why the board stopped, for health.
    stop_reason: Option<&'static str>,
    stale_reads: u64,
    /// When a re-arm opened a new session (until the board's states carry it).
    reopened_ns: Option<u64>,
    /// A state older than this is stale: the configured timeout, or three of the board's
    /// state periods if that is longer.
    state_timeout_ns: u64,
    /// The tracked scene, when one is attached.
    scene: Option<AttachedScene>,
    /// The episode ended: the board holds the arm until the next reset or episode.
    between_episodes: bool,
    /// When the last setpoint went out under position control (0: none since tracking began).
    last_setpoint_ns: u64,
    /// The longest pause between setpoints under position control, nanoseconds.
    longest_gap_ns: u64,
    /// Pauses longer than half the board's watchdog.
    long_gaps: u64,
}

/// A scene link with what the task asks of it.
struct AttachedScene {
    link: SceneLink,
    spec: SceneSpec,
    judge: Option<Box<dyn StepJudge>>,
    /// Policy steps judged in this episode.
    steps: u64,
}

/// Why a scene reset through the scene link failed.
#[derive(Debug, thiserror::Error)]
pub enum SerialResetError {
    /// No scene link is attached.
    #[error("no scene link is attached: a real arm's episode starts where the arm is")]
    NoScene,
    /// The board did not let go of the arm for the reset.
    #[error(
        "the board on {port} did not go idle for the reset within 1 s (it is {mode:?}{faults}); \
         a board that stopped on its own holds the arm until an operator re-arms it \
         (--rearm-board once the cause is gone)"
    )]
    NotIdle {
        /// The port.
        port: String,
        /// Its mode.
        mode: BoardMode,
        /// Its latched faults, as `, faults: a, b` (empty without).
        faults: String,
    },
    /// The scene refused or did not answer.
    #[error(transparent)]
    Scene(#[from] SceneLinkError),
    /// No state from the board after the reset.
    #[error("no state from the board on {0} within 2 s after the reset")]
    NoState(String),
}

/// A fresh non-zero session id.
fn nonce() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    (h.finish() as u32).max(1)
}

impl SerialRobot {
    /// Opens `params.port` for the arm `model`; nothing is sent until [`Robot::start`].
    /// `estop` is the runtime's: the board stopping on its own latches it.
    pub fn open(params: &SerialParams, model: ArmModel, estop: EStop) -> Result<Self, SerialError> {
        let open = |timeout| {
            serialport::new(&params.port, params.baud)
                .timeout(timeout)
                .open_native()
                .map_err(|source| SerialError::Open {
                    port: params.port.clone(),
                    source,
                })
        };
        // The tick writes without waiting; the reader waits up to 20 ms per read (on its own
        // handle of the same open port, which is exclusive: no second host can open it).
        let port = open(Duration::ZERO)?;
        let mut reader_port = port
            .try_clone_native()
            .map_err(|source| SerialError::Open {
                port: params.port.clone(),
                source,
            })?;
        reader_port
            .set_timeout(Duration::from_millis(20))
            .map_err(|source| SerialError::Open {
                port: params.port.clone(),
                source,
            })?;
        let (state_tx, state_rx) = triple_buffer(&StateSample::default());
        Ok(Self {
            params: params.clone(),
            model: model.clone(),
            estop,
            port,
            reader_port: Some(reader_port),
            reader: None,
            shared: Arc::new(Shared::new()),
            state_tx: Some(state_tx),
            state_rx,
            sender: Sender::new(),
            buf: [0; MAX_FRAME],
            session: 0,
            board: None,
            limits: Limits::default(),
            shaper: SetpointShaper::new(
                model.clone(),
                params.velocity_feedforward,
                params.gravity_feedforward,
            ),
            tracking: false,
            position_seq: 0,
            stopped_by_board: false,
            stop_reason: None,
            stale_reads: 0,
            reopened_ns: None,
            state_timeout_ns: params.state_timeout_ms * 1_000_000,
            scene: None,
            between_episodes: false,
            last_setpoint_ns: 0,
            longest_gap_ns: 0,
            long_gaps: 0,
        })
    }

    /// Attaches a tracked scene: observations get the task's objects, keypoints and goals from
    /// `link`'s poses as `spec` says; `judge` (the task's judge over tracked poses) rewards
    /// the steps, which end at `spec.episode_steps`; episodes start through the link's reset.
    pub fn attach_scene(
        &mut self,
        link: SceneLink,
        spec: SceneSpec,
        judge: Option<Box<dyn StepJudge>>,
    ) {
        self.scene = Some(AttachedScene {
            link,
            spec,
            judge,
            steps: 0,
        });
    }

    /// The attached scene link, if any.
    pub fn scene_link(&self) -> Option<&SceneLink> {
        self.scene.as_ref().map(|s| &s.link)
    }

    /// The board's answer to the handshake, once started.
    pub fn board(&self) -> Option<&HelloAck> {
        self.board.as_ref()
    }

    /// The arm model.
    pub fn model(&self) -> &ArmModel {
        &self.model
    }

    /// The serial device.
    pub fn port(&self) -> &str {
        &self.params.port
    }

    /// The e-stop the board stopping on its own latches (the runtime's).
    pub fn estop(&self) -> &EStop {
        &self.estop
    }

    /// The instant [`Robot::now_ns`] counts from.
    pub fn clock_epoch(&self) -> Instant {
        self.shared.epoch
    }

    /// Asks the board for a controlled stop and waits up to 2 s for it to hold the arm; the
    /// next command takes the arm back under position control, bumpless.
    pub fn hold(&mut self) {
        if self.session != 0 {
            self.send(ToBoard::Mode(ModeRequest::Hold));
            let deadline = Instant::now() + Duration::from_secs(2);
            while Instant::now() < deadline {
                let s = *self.state_rx.read();
                if s.mode != BoardMode::Position && s.mode != BoardMode::Stopping {
                    break;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        self.tracking = false;
    }

    /// Link counters and round trips so far.
    pub fn link_stats(&self) -> LinkStats {
        self.link_with(ReaderStats::clone)
    }

    /// Link counters without the round-trip samples (health, errors).
    fn link_counters(&self) -> LinkStats {
        self.link_with(ReaderStats::counters)
    }

    fn link_with(&self, take: fn(&ReaderStats) -> ReaderStats) -> LinkStats {
        LinkStats {
            sent: self.shared.frames_sent.load(Ordering::Relaxed),
            send_errors: self.shared.send_errors.load(Ordering::Relaxed),
            longest_setpoint_gap_us: self.longest_gap_ns / 1000,
            long_setpoint_gaps: self.long_gaps,
            reader: take(&self.shared.stats.lock().unwrap_or_else(|p| p.into_inner())),
        }
    }

    /// Sends one frame now (never waits: a full line drops it and counts it); its number.
    fn send(&mut self, msg: ToBoard) -> u32 {
        let Ok((n, seq)) = self.sender.encode(&msg, &mut self.buf) else {
            self.shared.send_errors.fetch_add(1, Ordering::Relaxed);
            return 0;
        };
        self.shared.sent_ns[seq as usize % SENT_SLOTS]
            .store(self.shared.now_ns(), Ordering::Release);
        match self.port.write(&self.buf[..n]) {
            Ok(w) if w == n => {
                self.shared.frames_sent.fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                self.shared.send_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        seq
    }

    /// Opens a new session with the board's limits tightened to the configured ones.
    fn open_session(&mut self) -> u32 {
        let nonce = nonce();
        self.send(ToBoard::Hello(Hello { nonce }));
        self.send(ToBoard::Limits(self.limits));
        if let Some(g) = self.params.gains {
            self.send(ToBoard::Gains(g));
        }
        nonce
    }

    fn handshake(&mut self, timeout: Duration) -> Result<HelloAck, StartError> {
        let started = Instant::now();
        let mut hellos = 0u32;
        let nonce = nonce();
        loop {
            if let Ok(a) = self.shared.ack.lock() {
                if let Some(a) = a.filter(|a| a.session == nonce) {
                    self.session = nonce;
                    return Ok(a);
                }
            }
            let theirs = self.shared.their_version.load(Ordering::Acquire);
            if theirs != 0 {
                return Err(StartError::Refused(format!(
                    "the board on {} speaks wire protocol {theirs}; this host speaks {PROTOCOL_VERSION}: \
                     flash firmware built from the same Reflex release",
                    self.params.port
                )));
            }
            if started.elapsed() >= timeout {
                let st = self.link_counters();
                let reasons = describe(&st.reader.rejects);
                return Err(StartError::NoState {
                    waited_s: started.elapsed().as_secs_f64(),
                    last: format!(
                        "no answer to {hellos} hellos on {} ({} frames refused{}{reasons})",
                        self.params.port,
                        st.reader.rejects.total(),
                        if reasons.is_empty() { "" } else { ": " },
                    ),
                });
            }
            // A hello every 100 ms (the board may still be booting).
            if started.elapsed() >= Duration::from_millis(100) * hellos {
                let _ = self.send(ToBoard::Hello(Hello { nonce }));
                hellos += 1;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// The board stopped the arm on its own: latch the runtime's e-stop too.
    fn board_stopped(&mut self, reason: &'static str) {
        if !self.stopped_by_board {
            tracing::warn!(port = %self.params.port, reason, "the board stopped the arm");
            self.stopped_by_board = true;
            self.stop_reason = Some(reason);
            self.tracking = false;
            self.estop.press();
            self.estop.release();
        }
    }

    fn clock_ns(&self) -> u64 {
        self.shared.now_ns()
    }
}

/// The limits a session sends the board: its own, with the positions and speeds the host's
/// safety limits configure (the board only ever tightens its own with them).
pub fn limits_for_board(limits: &SafetyLimits, own: &Limits) -> Limits {
    let mut l = *own;
    for j in 0..ARM_DOF {
        l.pos_min_rad[j] = limits.joint_pos_min_rad[j] as f32;
        l.pos_max_rad[j] = limits.joint_pos_max_rad[j] as f32;
        l.vel_max_rad_s[j] = limits.joint_vel_max_rad_s[j] as f32;
    }
    l
}

impl Robot for SerialRobot {
    fn read_state(&mut self, state: &mut RobotState) -> Result<(), RobotError> {
        let s = *self.state_rx.read();
        if s.count == 0 {
            return Err(RobotError::Stale);
        }
        if self.clock_ns().saturating_sub(s.received_ns) > self.state_timeout_ns {
            self.stale_reads += 1;
            return Err(RobotError::Stale);
        }
        if s.non_finite {
            return Err(RobotError::NonFinite);
        }
        if self.stopped_by_board && !self.estop.is_latched() {
            // The operator re-armed: a new session, the board's faults cleared, tracking
            // resumes with the next command (bumpless on the board).
            self.session = self.open_session();
            self.send(ToBoard::Rearm);
            (self.stopped_by_board, self.stop_reason) = (false, None);
            self.reopened_ns = Some(self.clock_ns());
        }
        if self.session != 0 && s.session != self.session {
            // A state from before the new session's hello reached the board: not yet ours.
            if let Some(t) = self.reopened_ns {
                if self.clock_ns() - t < self.params.handshake_timeout_ms * 1_000_000 {
                    return Err(RobotError::Stale);
                }
            }
            // Our session is gone: the board rebooted (or another host took it).
            self.board_stopped("the board lost the session (rebooted?)");
            *state = s.state;
            return Err(RobotError::Disconnected);
        }
        self.reopened_ns = None;
        // Once the board has taken our request for position control (its states count the
        // host frames it took), any other mode is the board stopping on its own.
        let took_request = (s.last_host_seq.wrapping_sub(self.position_seq) as i32) >= 0;
        if self.tracking && took_request && s.mode != BoardMode::Position {
            self.board_stopped(match s.mode {
                BoardMode::EStopped => "the board's e-stop",
                BoardMode::Faulted => "a fault on the board",
                _ => "the board's link watchdog",
            });
        }
        *state = s.state;
        Ok(())
    }

    fn write_command(&mut self, command: &JointCommand) -> Result<(), RobotError> {
        if self.session == 0 || self.stopped_by_board {
            return Err(RobotError::Rejected);
        }
        if self.between_episodes {
            // The board holds the arm where the episode left it.
            return Ok(());
        }
        let finite = command.joint_pos_rad.iter().all(|v| v.is_finite())
            && command.gripper_width_m.is_finite();
        if !finite {
            return Err(RobotError::NonFinite);
        }
        if !self.tracking {
            self.position_seq = self.send(ToBoard::Mode(ModeRequest::Position));
            self.tracking = true;
            self.shaper.restart();
            self.last_setpoint_ns = 0;
        }
        let now = self.clock_ns();
        if self.last_setpoint_ns > 0 {
            let gap = now.saturating_sub(self.last_setpoint_ns);
            self.longest_gap_ns = self.longest_gap_ns.max(gap);
            let watchdog_ns = self.board.map_or(0, |b| b.watchdog_ms as u64 * 1_000_000);
            if watchdog_ns > 0 && 2 * gap > watchdog_ns {
                self.long_gaps += 1;
            }
        }
        self.last_setpoint_ns = now;
        let s = self.shaper.setpoint(command, now);
        self.send(ToBoard::Setpoint(s));
        Ok(())
    }

    fn now_ns(&self) -> u64 {
        self.clock_ns()
    }

    fn read_scene(&mut self, obs: &mut Observation) {
        if let Some(sc) = &mut self.scene {
            let sample = sc.link.read();
            sc.spec.fill(&sample.objects, obs);
        }
    }

    /// The task's judge over the tracked poses (pending without one); the step limit
    /// truncates.
    fn judge(&mut self, obs: &Observation, action: &Action) -> Outcome {
        let Some(sc) = &mut self.scene else {
            return Outcome::PENDING;
        };
        sc.steps += 1;
        let truncated = sc.spec.episode_steps > 0 && sc.steps >= sc.spec.episode_steps;
        let o = match &mut sc.judge {
            Some(j) => j.judge(obs, action, truncated),
            None => Outcome {
                truncated,
                ..Outcome::PENDING
            },
        };
        if o.done() {
            sc.steps = 0;
            // The board brings the arm to rest and holds it until the next episode (never
            // waits: the board's states say when it holds).
            if self.tracking {
                self.send(ToBoard::Mode(ModeRequest::Hold));
                self.tracking = false;
            }
            self.between_episodes = true;
        }
        o
    }

    fn begin_judging(&mut self, first: &Observation) {
        self.between_episodes = false;
        if let Some(sc) = &mut self.scene {
            sc.steps = 0;
            if let Some(j) = &mut sc.judge {
                j.begin(first);
            }
        }
    }

    fn own_limits(&self) -> Option<[JointLimits; ARM_DOF]> {
        let b = self.board.as_ref()?;
        // The wire carries f32: a limit configured from the same URDF must not fail the check
        // by its rounding, so each is widened by a few parts per million.
        let widen = |v: f32| v as f64 + (v as f64).abs() * 4e-7;
        Some(std::array::from_fn(|j| JointLimits {
            lower: -widen(-b.limits.pos_min_rad[j]),
            upper: widen(b.limits.pos_max_rad[j]),
            velocity: widen(b.limits.vel_max_rad_s[j]),
            effort: widen(b.limits.current_max_a[j] * b.torque_per_amp_nm_a[j]),
        }))
    }

    fn start(&mut self, limits: &SafetyLimits, timeout: Duration) -> Result<(), StartError> {
        if let (Some(port), Some(tx)) = (self.reader_port.take(), self.state_tx.take()) {
            let shared = self.shared.clone();
            let model = self.model.clone();
            let handle = std::thread::Builder::new()
                .name("reflex-serial-rx".into())
                .spawn(move || run_reader(port, shared, tx, model))
                .map_err(|e| StartError::Refused(format!("starting the reader thread: {e}")))?;
            self.reader = Some(handle);
        }
        let wait = timeout.min(Duration::from_millis(self.params.handshake_timeout_ms));
        let ack = self.handshake(wait)?;
        if ack.joints as usize != self.model.dof {
            return Err(StartError::Refused(format!(
                "the board on {} drives {} joints; the URDF's arm has {}",
                self.params.port, ack.joints, self.model.dof
            )));
        }
        self.board = Some(ack);
        let state_period_ns =
            1_000_000_000 * ack.state_every.max(1) as u64 / ack.rate_hz.max(1) as u64;
        self.state_timeout_ns = (self.params.state_timeout_ms * 1_000_000).max(3 * state_period_ns);
        tracing::info!(
            port = %self.params.port,
            firmware = ?ack.firmware,
            rate_hz = ack.rate_hz,
            watchdog_ms = ack.watchdog_ms,
            "board answered"
        );
        // The configured limits must lie within the board's own; the board then enforces the
        // configured ones too.
        if let Some(own) = self.own_limits() {
            check_limits_within(limits, &own)?;
        }
        self.limits = limits_for_board(limits, &ack.limits);
        self.send(ToBoard::Limits(self.limits));
        if let Some(g) = self.params.gains {
            self.send(ToBoard::Gains(g));
        }
        if self.params.rearm_board {
            self.send(ToBoard::Rearm);
        }
        self.send(ToBoard::Mode(ModeRequest::Hold));
        start_default(self, limits, timeout)?;
        let s = *self.state_rx.read();
        if !s.faults.is_empty() || matches!(s.mode, BoardMode::EStopped | BoardMode::Faulted) {
            let names: Vec<&str> = s.faults.names().collect();
            return Err(StartError::Refused(format!(
                "the board on {} is {:?} with latched faults: {}; clear them deliberately \
                 (--rearm-board) once the cause is gone",
                self.params.port,
                s.mode,
                names.join(", ")
            )));
        }
        Ok(())
    }

    fn stop(&mut self) {
        self.hold();
        self.shared.stop.store(true, Ordering::Release);
        if let Some(h) = self.reader.take() {
            let _ = h.join();
        }
    }

    fn health(&self) -> RobotHealth {
        let s = *self.state_rx.output_buffer();
        let now = self.clock_ns();
        let age = (s.count > 0).then(|| now.saturating_sub(s.received_ns) as f64 * 1e-9);
        let mut faults: Vec<String> = s.faults.names().map(|n| format!("board: {n}")).collect();
        if let Some(r) = self.stop_reason {
            faults.push(format!("stopped by {r}; re-arm to resume"));
        }
        let st = self.link_counters();
        if st.reader.lost > 0 {
            faults.push(format!("{} board frames lost", st.reader.lost));
        }
        for (name, c) in st.reader.rejects.iter().filter(|(_, c)| *c > 0) {
            faults.push(format!("{c} board frames refused ({name})"));
        }
        if st.reader.board_rejects > 0 {
            faults.push(format!(
                "{} host frames refused by the board",
                st.reader.board_rejects
            ));
        }
        if st.send_errors > 0 {
            faults.push(format!("{} host frames not sent whole", st.send_errors));
        }
        if st.long_setpoint_gaps > 0 {
            faults.push(format!(
                "{} pauses between setpoints longer than half the board's watchdog (longest \
                 {:.1} ms): the host's loop stalled",
                st.long_setpoint_gaps,
                st.longest_setpoint_gap_us as f64 / 1000.0
            ));
        }
        if let Some(sc) = &self.scene {
            let s = sc.link.peek();
            let age_s = sc.link.now_ns().saturating_sub(s.received_ns) as f64 * 1e-9;
            if s.count == 0 {
                faults.push(format!("no object poses from {} yet", sc.link.addr()));
            } else if age_s > 0.5 {
                faults.push(format!("object poses {age_s:.1} s old"));
            }
            let ls = sc.link.stats();
            for (reason, c) in &ls.refused {
                faults.push(format!("{c} scene messages refused ({reason})"));
            }
            if let Some(last) = ls.last_refusal {
                faults.push(format!("last scene refusal: {last}"));
            }
        }
        RobotHealth {
            connected: age.is_some_and(|a| a * 1e9 < self.state_timeout_ns as f64),
            state_age_s: age,
            faults,
        }
    }
}

impl SceneReset for SerialRobot {
    type Error = SerialResetError;

    /// Lets go of the arm (the board idles: a real board's brakes hold it), asks the scene
    /// for the reset and waits for its answer, then for poses and a board state from after
    /// it. The next command takes the arm back under position control, bumpless from where
    /// it is.
    fn reset_scene(&mut self, seed: u64) -> Result<(), SerialResetError> {
        if self.scene.is_none() {
            return Err(SerialResetError::NoScene);
        }
        let idle_seq = self.send(ToBoard::Mode(ModeRequest::Idle));
        self.tracking = false;
        self.between_episodes = false;
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            let s = *self.state_rx.read();
            let took = (s.last_host_seq.wrapping_sub(idle_seq) as i32) >= 0;
            if took && s.mode == BoardMode::Idle {
                break;
            }
            if Instant::now() >= deadline {
                let names: Vec<&str> = s.faults.names().collect();
                return Err(SerialResetError::NotIdle {
                    port: self.params.port.clone(),
                    mode: s.mode,
                    faults: if names.is_empty() {
                        String::new()
                    } else {
                        format!(", faults: {}", names.join(", "))
                    },
                });
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        if let Some(sc) = &mut self.scene {
            let goals = sc.link.reset(seed, Duration::from_secs(10))?;
            sc.steps = 0;
            // The new scene's goals, when the scene names them (else the task's, as attached).
            if !goals.is_empty() {
                if goals.len() != sc.spec.goals.len() {
                    return Err(SerialResetError::Scene(SceneLinkError::Reset {
                        addr: sc.link.addr(),
                        message: format!(
                            "the scene's reset named {} goals; the task has {}",
                            goals.len(),
                            sc.spec.goals.len()
                        ),
                    }));
                }
                sc.spec.goals = goals;
            }
        }
        let after = self.clock_ns();
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.state_rx.read().received_ns <= after {
            if Instant::now() >= deadline {
                return Err(SerialResetError::NoState(self.params.port.clone()));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }
}

impl SceneView for SerialRobot {
    /// None: the serial arm's cameras are not on this link.
    fn cameras(&self) -> Vec<String> {
        Vec::new()
    }

    fn render(&self, camera: &str, _frame: &mut Frame) -> Result<(), SceneError> {
        Err(SceneError::UnknownCamera {
            camera: camera.into(),
            available: Vec::new(),
        })
    }

    fn objects(&self, out: &mut Vec<TrackedObject>) {
        match &self.scene {
            Some(sc) => {
                let s = *sc.link.peek();
                sc.spec.tracked(&s.objects, s.seen, out);
            }
            None => out.clear(),
        }
    }
}

impl Drop for SerialRobot {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(h) = self.reader.take() {
            let _ = h.join();
        }
    }
}

/// For tests: counts by reason as `name count` pairs.
pub fn describe(r: &RejectCounts) -> String {
    r.iter()
        .filter(|(_, c)| *c > 0)
        .map(|(n, c)| format!("{n} {c}"))
        .collect::<Vec<_>>()
        .join(", ")
}
