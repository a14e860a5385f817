//! SerialRobot against the firmware's control core running behind a pseudo-terminal (as a
//! board runs behind its USB serial port): a session, the board's watchdog when the host goes
//! silent, a board reboot, a board of another protocol version, a board that never answers,
//! and a line that corrupts bytes.

use reflex_core::{ArmModel, JointCommand, Robot, RobotError, RobotState, SafetyLimits};
use reflex_fw_core::plant::Plant;
use reflex_runtime::EStop;
use reflex_serial::*;
use reflex_wire::*;
use serialport::{SerialPort, TTYPort};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The boards' link watchdog here: 150 ms, so that a shared test machine stalling a thread for
/// a few tens of milliseconds does not trip it (boards on real arms use 20-100 ms).
const WATCHDOG_MS: u16 = 150;

const HOME: [f64; 7] = [0.0, -0.2, 0.0, -2.3, 0.0, 2.1, 0.785];

fn arm() -> ArmModel {
    let urdf = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../urdf/reflex_arm.urdf");
    ArmModel::from_urdf_file(&urdf, "link0", "tcp").unwrap()
}

/// The stand-in plant (no gravity: the host sends no gravity feed-forward to it) at home.
fn plant() -> Plant {
    Plant::at(HOME.map(|q| q as f32), 2.0)
}

fn params(port: &str) -> SerialParams {
    SerialParams {
        gravity_feedforward: false,
        ..SerialParams::new(port)
    }
}

/// The tests run a 1 kHz board and a 1 kHz host each: one at a time, so that two cores keep
/// their periods.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

struct Setup {
    robot: SerialRobot,
    board: BoardHandle,
    estop: EStop,
    _slave: Slave,
}

/// A pseudo-terminal: the board's end, and the other end's path with a plain handle that keeps
/// it open (no lock: the robot opens it by name, exclusively), so the board's end never sees a
/// hang-up.
fn pair() -> (TTYPort, Slave) {
    let (master, slave) = TTYPort::pair().expect("a pseudo-terminal pair");
    let path = slave.name().expect("the slave's path");
    drop(slave);
    let keep = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    (master, Slave { path, _keep: keep })
}

struct Slave {
    path: String,
    _keep: std::fs::File,
}

impl Slave {
    fn name(&self) -> Option<String> {
        Some(self.path.clone())
    }

    fn open(&self) -> TTYPort {
        serialport::new(&self.path, 0).open_native().unwrap()
    }
}

fn setup() -> Setup {
    let (master, slave) = pair();
    let model = arm();
    let cfg = board_config_for(&model, 1000, WATCHDOG_MS, 100.0, 5.0, 2.0);
    let board = spawn_board(master, cfg, plant()).unwrap();
    let estop = EStop::new();
    let path = slave.name().expect("the slave's path");
    let robot = SerialRobot::open(&params(&path), model, estop.clone()).unwrap();
    Setup {
        robot,
        board,
        estop,
        _slave: slave,
    }
}

/// Ticks at 1 kHz for `ms`, commanding joint 0 along a slow sine about home; the read results.
fn drive(
    robot: &mut SerialRobot,
    ms: u64,
    t0_ms: u64,
) -> (RobotState, Vec<Result<(), RobotError>>) {
    let mut state = RobotState::default();
    let mut reads = Vec::new();
    let start = Instant::now();
    for i in 0..ms {
        reads.push(robot.read_state(&mut state));
        let t = (t0_ms + i) as f64 * 1e-3;
        let mut q = HOME;
        q[0] += 0.2 * (std::f64::consts::TAU * 0.5 * t).sin();
        let _ = robot.write_command(&JointCommand {
            joint_pos_rad: q,
            gripper_width_m: 0.04,
        });
        let next = start + Duration::from_millis(i + 1);
        if let Some(d) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
    }
    (state, reads)
}

fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn a_session_tracks_commands_over_a_pty() {
    let _serial = one_at_a_time();
    let mut s = setup();
    let limits = SafetyLimits::from_model(s.robot.model());
    s.robot.start(&limits, Duration::from_secs(3)).unwrap();
    let ack = *s.robot.board().unwrap();
    assert_eq!(
        (ack.joints, ack.rate_hz, ack.watchdog_ms),
        (7, 1000, WATCHDOG_MS)
    );
    wait_for("the board to hold the arm", Duration::from_secs(1), || {
        s.board.report().mode == BoardMode::Holding
    });
    let (state, reads) = drive(&mut s.robot, 1500, 0);
    // Stale reads happen when this machine stalls a thread for 20 ms; most must be fresh.
    let fresh = reads.iter().filter(|r| r.is_ok()).count();
    assert!(fresh > 1100, "{fresh} of 1500 reads fresh");
    assert!(!reads.contains(&Err(RobotError::Disconnected)));
    let want = HOME[0] + 0.2 * (std::f64::consts::TAU * 0.5 * 1.5).sin();
    assert!(
        (state.joint_pos_rad[0] - want).abs() < 0.03,
        "{} vs {want}",
        state.joint_pos_rad[0]
    );
    assert!(state.tcp_pose.is_finite() && state.tcp_pose.position_m[2] > 0.1);
    let b = s.board.report();
    assert_eq!((b.mode, b.faults), (BoardMode::Position, Faults::default()));
    assert_eq!(b.stats.refused + b.rejects.total(), 0, "{:?}", b.rejects);
    let link = s.robot.link_stats();
    assert_eq!(
        link.reader.rejects.total(),
        0,
        "{}",
        describe(&link.reader.rejects)
    );
    assert_eq!((link.send_errors, link.reader.board_rejects), (0, 0));
    let p50 = link.rtt_percentile_us(50.0).expect("round trips timed");
    assert!(p50 < 20_000, "round trip p50 {p50} us");
    s.robot.stop();
    assert_eq!(
        s.board.report().mode,
        BoardMode::Holding,
        "stop leaves the board holding"
    );
    // A test machine may stall this thread (the health says so); nothing else is wrong.
    let faults = s.robot.health().faults;
    assert!(
        faults.iter().all(|f| f.contains("the host's loop stalled")),
        "{faults:?}"
    );
}

/// A host that pauses between setpoints (its loop stalled) is told so by its health before
/// the board's watchdog ever trips: the longest pause is measured and every pause longer than
/// half the board's watchdog counted.
#[test]
fn a_stalled_host_loop_shows_in_the_link_stats() {
    let _serial = one_at_a_time();
    let mut s = setup();
    let limits = SafetyLimits::from_model(s.robot.model());
    s.robot.start(&limits, Duration::from_secs(3)).unwrap();
    drive(&mut s.robot, 200, 0);
    std::thread::sleep(Duration::from_millis(100));
    drive(&mut s.robot, 200, 300);
    let link = s.robot.link_stats();
    assert!(link.long_setpoint_gaps >= 1, "{link:?}");
    assert!(
        (100_000..WATCHDOG_MS as u64 * 1000).contains(&link.longest_setpoint_gap_us),
        "longest pause {} us",
        link.longest_setpoint_gap_us
    );
    assert_eq!(
        s.board.report().mode,
        BoardMode::Position,
        "no watchdog trip"
    );
    let faults = s.robot.health().faults;
    assert!(
        faults.iter().any(|f| f.contains("the host's loop stalled")),
        "{faults:?}"
    );
}

#[test]
fn a_silent_host_is_stopped_by_the_board_watchdog() {
    let _serial = one_at_a_time();
    let mut s = setup();
    let limits = SafetyLimits::from_model(s.robot.model());
    s.robot.start(&limits, Duration::from_secs(3)).unwrap();
    drive(&mut s.robot, 400, 0);
    assert_eq!(s.board.report().mode, BoardMode::Position);
    // The host dies mid-motion: no stop, the port simply goes quiet.
    drop(s.robot);
    wait_for("the board to hold", Duration::from_secs(2), || {
        s.board.report().mode == BoardMode::Holding
    });
    let b = s.board.report();
    assert!(b.faults.contains(Faults::WATCHDOG));
    assert_eq!(b.stats.watchdog_trips, 1);
    let trip_ms = (b.stats.last_trip_us - b.last_frame_us) as f64 / 1e3;
    let w = WATCHDOG_MS as f64;
    assert!(
        (w..w + 30.0).contains(&trip_ms),
        "tripped {trip_ms} ms after the last frame"
    );
    assert!(b.stats.last_rest_us >= b.stats.last_trip_us);
}

#[test]
fn a_rebooted_board_is_noticed_and_the_run_holds_until_rearmed() {
    let _serial = one_at_a_time();
    let mut s = setup();
    let limits = SafetyLimits::from_model(s.robot.model());
    s.robot.start(&limits, Duration::from_secs(3)).unwrap();
    drive(&mut s.robot, 300, 0);
    s.board.reboot();
    let (_, reads) = drive(&mut s.robot, 100, 300);
    assert!(
        reads.contains(&Err(RobotError::Disconnected)),
        "the host notices the lost session: {reads:?}"
    );
    assert!(s.estop.is_latched(), "and latches the runtime's e-stop");
    let b = s.board.report();
    assert_eq!((b.reboots, b.session, b.mode), (1, 0, BoardMode::Idle));
    assert!(s
        .robot
        .health()
        .faults
        .iter()
        .any(|f| f.contains("rebooted")));
    // The operator re-arms: a new session, position control again.
    s.estop.rearm().unwrap();
    let (_, reads) = drive(&mut s.robot, 300, 400);
    // Tracking again: no lost session, and fresh states (a machine stalling a thread for
    // 20 ms makes a few stale, as one CI run saw).
    assert!(
        !reads[50..].contains(&Err(RobotError::Disconnected)),
        "{:?}",
        &reads[50..]
    );
    let fresh = reads[50..].iter().filter(|r| r.is_ok()).count();
    assert!(fresh > 200, "{fresh} of 250 reads fresh after the re-arm");
    let b = s.board.report();
    assert_eq!(b.mode, BoardMode::Position);
    assert_ne!(b.session, 0);
}

#[test]
fn a_board_of_another_protocol_version_is_refused_naming_both() {
    let _serial = one_at_a_time();
    let (mut master, slave) = pair();
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    // A board from a future release: answers any hello in protocol 2.
    let board = std::thread::spawn(move || {
        master.set_timeout(Duration::from_millis(5)).unwrap();
        let mut buf = [0u8; 256];
        let mut out = [0u8; MAX_FRAME];
        while !s2.load(Ordering::Acquire) {
            if let Ok(n) = master.read(&mut buf) {
                if n > 0 {
                    let ack = ToHost::HelloAck(HelloAck {
                        session: 0,
                        firmware: [9, 0, 0],
                        joints: 7,
                        rate_hz: 1000,
                        state_every: 1,
                        watchdog_ms: 50,
                        limits: Limits::default(),
                        torque_per_amp_nm_a: [1.0; JOINTS],
                    });
                    let n = encode_as(2, &ack, 1, &mut out).unwrap();
                    let _ = master.write_all(&out[..n]);
                }
            }
        }
    });
    let model = arm();
    let limits = SafetyLimits::from_model(&model);
    let mut robot =
        SerialRobot::open(&params(&slave.name().unwrap()), model, EStop::new()).unwrap();
    let err = robot
        .start(&limits, Duration::from_secs(3))
        .unwrap_err()
        .to_string();
    stop.store(true, Ordering::Release);
    board.join().unwrap();
    assert!(
        err.contains("protocol 2") && err.contains("speaks 1"),
        "{err}"
    );
}

#[test]
fn a_board_that_never_answers_is_named() {
    let _serial = one_at_a_time();
    let (_master, slave) = pair();
    let model = arm();
    let limits = SafetyLimits::from_model(&model);
    let path = slave.name().unwrap();
    let p = SerialParams {
        handshake_timeout_ms: 300,
        ..params(&path)
    };
    let mut robot = SerialRobot::open(&p, model, EStop::new()).unwrap();
    let err = robot
        .start(&limits, Duration::from_secs(3))
        .unwrap_err()
        .to_string();
    assert!(err.contains(&path) && err.contains("hellos"), "{err}");
    let missing = SerialRobot::open(&params("/dev/reflex-no-such-port"), arm(), EStop::new());
    let err = missing.err().expect("no such port").to_string();
    assert!(err.contains("/dev/reflex-no-such-port"), "{err}");
}

/// Copies bytes between two ports, flipping one bit in about one byte of `every`.
fn corrupting_proxy(
    mut a: TTYPort,
    mut b: TTYPort,
    every: u64,
    stop: Arc<AtomicBool>,
    flipped: Arc<AtomicU64>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        a.set_timeout(Duration::ZERO).unwrap();
        b.set_timeout(Duration::ZERO).unwrap();
        let mut buf = [0u8; 4096];
        let mut n_seen = 0u64;
        while !stop.load(Ordering::Acquire) {
            let mut moved = false;
            for dir in 0..2 {
                let (from, to) = if dir == 0 {
                    (&mut a, &mut b)
                } else {
                    (&mut b, &mut a)
                };
                if let Ok(n) = from.read(&mut buf) {
                    for byte in &mut buf[..n] {
                        n_seen += 1;
                        // splitmix64 of the byte's index: seeded, no pattern the traffic's
                        // own rhythm could line up with.
                        let mut z = n_seen.wrapping_mul(0x9E37_79B9_7F4A_7C15);
                        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                        if (z ^ (z >> 31)).is_multiple_of(every) {
                            *byte ^= 1 << (n_seen % 8);
                            flipped.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    let _ = to.write_all(&buf[..n]);
                    moved |= n > 0;
                }
            }
            if !moved {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    })
}

#[test]
fn a_line_that_corrupts_bytes_costs_frames_not_control() {
    let _serial = one_at_a_time();
    let (board_master, board_slave) = pair();
    let (host_master, host_slave) = pair();
    let model = arm();
    let cfg = board_config_for(&model, 1000, WATCHDOG_MS, 100.0, 5.0, 2.0);
    let board = spawn_board(board_master, cfg, plant()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let flipped = Arc::new(AtomicU64::new(0));
    let proxy = corrupting_proxy(
        board_slave.open(),
        host_master,
        2000,
        stop.clone(),
        flipped.clone(),
    );
    let mut robot =
        SerialRobot::open(&params(&host_slave.name().unwrap()), model, EStop::new()).unwrap();
    let limits = SafetyLimits::from_model(robot.model());
    robot.start(&limits, Duration::from_secs(3)).unwrap();
    let (state, reads) = drive(&mut robot, 1500, 0);
    let b = board.report();
    let want = HOME[0] + 0.2 * (std::f64::consts::TAU * 0.5 * 1.5).sin();
    let link = robot.link_stats();
    robot.stop();
    stop.store(true, Ordering::Release);
    proxy.join().unwrap();
    eprintln!(
        "flipped {} bytes; host refused {}, lost {}; board refused {} ({})",
        flipped.load(Ordering::Relaxed),
        describe(&link.reader.rejects),
        link.reader.lost,
        b.rejects.total(),
        describe(&b.rejects)
    );
    assert!(
        flipped.load(Ordering::Relaxed) > 20,
        "the line flipped bits"
    );
    assert!(
        link.reader.rejects.total() > 0,
        "the host refused corrupted states"
    );
    assert!(
        b.rejects.total() > 0,
        "the board refused corrupted setpoints: {b:?}, {} bytes out",
        board.bytes_out.load(Ordering::Relaxed)
    );
    assert_eq!(
        b.stats.watchdog_trips, 0,
        "a frame lost here and there is not a dead link"
    );
    assert_eq!(b.mode, BoardMode::Position);
    assert!(reads.iter().filter(|r| r.is_ok()).count() > 1100);
    assert!((state.joint_pos_rad[0] - want).abs() < 0.03);
}
