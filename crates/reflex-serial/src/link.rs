//! The link's receiving side: a thread that reads the port, decodes the board's frames and
//! hands the newest state to the control tick through a wait-free cell. It also times round
//! trips (the board echoes the newest host frame it accepted) and counts what it refused.

use reflex_core::{ArmModel, Frames, Pose, RobotState, ARM_DOF};
use reflex_wire::{BoardMode, BoardState, Faults, HelloAck, Receiver, RejectCounts, ToHost};
use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use triple_buffer::Input;

/// Send times of host frames by sequence number modulo this, for round-trip timing.
pub(crate) const SENT_SLOTS: usize = 1024;
/// Round-trip samples kept (the newest win).
const RTT_SAMPLES: usize = 1 << 20;

/// The newest board state, as the tick sees it.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct StateSample {
    /// The measurement as a robot state (tool pose from the host's model).
    pub state: RobotState,
    /// The board's mode, faults and session.
    pub mode: BoardMode,
    pub faults: Faults,
    pub session: u32,
    /// The newest host frame the board had accepted when it measured.
    pub last_host_seq: u32,
    /// Host clock when it arrived, nanoseconds since the robot was opened.
    pub received_ns: u64,
    /// States received so far (0: none yet).
    pub count: u64,
    /// The state had a non-finite number (refused by the decoder, so never; kept for the
    /// conversion's own check).
    pub non_finite: bool,
}

/// What the reader counts (slow side; behind a mutex the tick never takes).
#[derive(Clone, Debug, Default)]
pub struct ReaderStats {
    /// States accepted.
    pub states: u64,
    /// Board frames that never arrived (gaps in its sequence numbers).
    pub lost: u64,
    /// Board frames refused, by reason.
    pub rejects: RejectCounts,
    /// Host frames the board says it refused.
    pub board_rejects: u32,
    /// Round trips: host frame sent to the board's first state acknowledging it,
    /// microseconds.
    pub rtt_us: Vec<u32>,
    /// Read errors other than timeouts (the port went away).
    pub read_errors: u64,
}

impl ReaderStats {
    /// The counters alone (no round-trip samples): what health reports need.
    pub fn counters(&self) -> Self {
        Self {
            states: self.states,
            lost: self.lost,
            rejects: self.rejects,
            board_rejects: self.board_rejects,
            rtt_us: Vec::new(),
            read_errors: self.read_errors,
        }
    }
}

/// Between the tick, the reader thread and the slow side.
pub(crate) struct Shared {
    /// Host clock of each host frame's sending, by sequence number modulo [`SENT_SLOTS`].
    pub sent_ns: Vec<AtomicU64>,
    pub frames_sent: AtomicU64,
    pub send_errors: AtomicU64,
    pub stop: AtomicBool,
    /// The newest hello answer.
    pub ack: Mutex<Option<HelloAck>>,
    /// A protocol version the board answered in that is not ours (0: none seen).
    pub their_version: AtomicU64,
    pub stats: Mutex<ReaderStats>,
    pub epoch: Instant,
}

impl Shared {
    pub fn new() -> Self {
        Self {
            sent_ns: (0..SENT_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            frames_sent: AtomicU64::new(0),
            send_errors: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            ack: Mutex::new(None),
            their_version: AtomicU64::new(0),
            stats: Mutex::new(ReaderStats::default()),
            epoch: Instant::now(),
        }
    }

    pub fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }
}

/// Turns a board state into a robot state: joints and gripper as measured, torques from
/// currents, the tool pose by forward kinematics.
pub fn robot_state(
    s: &BoardState,
    dof: usize,
    torque_per_amp: &[f32; ARM_DOF],
    model: &ArmModel,
    frames: &mut Frames,
    stamp_ns: u64,
) -> RobotState {
    let mut r = RobotState {
        gripper_width_m: s.gripper_m as f64,
        stamp_ns,
        ..Default::default()
    };
    for (j, kt) in torque_per_amp.iter().enumerate().take(dof) {
        r.joint_pos_rad[j] = s.pos_rad[j] as f64;
        r.joint_vel_rad_s[j] = s.vel_rad_s[j] as f64;
        r.joint_torque_nm[j] = (s.current_a[j] * kt) as f64;
    }
    model.forward(&r.joint_pos_rad, frames);
    r.tcp_pose = Pose::from_isometry(&frames.tcp);
    r
}

/// Reads the port until told to stop.
pub(crate) fn run_reader(
    mut port: serialport::TTYPort,
    shared: Arc<Shared>,
    mut state_tx: Input<StateSample>,
    model: ArmModel,
) {
    let mut rx = Receiver::<ToHost>::new();
    let mut buf = [0u8; 4096];
    let mut frames = Frames::default();
    let mut sample = StateSample::default();
    let mut kt = [0.0f32; ARM_DOF];
    let mut last_acked_seq = 0u32;
    let mut reported = RejectCounts::default();
    let dof = model.dof;
    while !shared.stop.load(Ordering::Acquire) {
        let n = match port.read(&mut buf) {
            Ok(0) => continue,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => continue,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => {
                // The other end closed (a pty without its board) or the adapter went away:
                // the tick sees the state go stale.
                if let Ok(mut st) = shared.stats.lock() {
                    st.read_errors += 1;
                }
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let now = shared.now_ns();
        for &b in &buf[..n] {
            let Some(frame) = rx.push(b) else { continue };
            match frame.msg {
                ToHost::HelloAck(ack) => {
                    kt = ack.torque_per_amp_nm_a;
                    if let Ok(mut a) = shared.ack.lock() {
                        *a = Some(ack);
                    }
                }
                ToHost::State(s) => {
                    sample.state = robot_state(&s, dof, &kt, &model, &mut frames, now);
                    sample.non_finite = !sample.state.is_finite();
                    (sample.mode, sample.faults, sample.session) = (s.mode, s.faults, s.session);
                    sample.last_host_seq = s.last_host_seq;
                    sample.received_ns = now;
                    sample.count += 1;
                    state_tx.write(sample);
                    let mut st = match shared.stats.lock() {
                        Ok(st) => st,
                        Err(p) => p.into_inner(),
                    };
                    st.states += 1;
                    st.board_rejects = s.host_rejects;
                    if s.last_host_seq != last_acked_seq && s.last_host_seq != 0 {
                        last_acked_seq = s.last_host_seq;
                        let slot = s.last_host_seq as usize % SENT_SLOTS;
                        let sent = shared.sent_ns[slot].swap(0, Ordering::AcqRel);
                        if sent > 0 && now > sent && now - sent < 1_000_000_000 {
                            if st.rtt_us.len() == RTT_SAMPLES {
                                st.rtt_us.clear();
                            }
                            st.rtt_us.push(((now - sent) / 1000) as u32);
                        }
                    }
                }
            }
        }
        if rx.rejects != reported {
            reported = rx.rejects;
            if let Some(reflex_wire::Reject::Version { theirs, .. }) = rx.last_reject {
                shared.their_version.store(theirs as u64, Ordering::Release);
            }
        }
        let mut st = match shared.stats.lock() {
            Ok(st) => st,
            Err(p) => p.into_inner(),
        };
        st.lost = rx.seq.lost;
        st.rejects = rx.rejects;
    }
}
