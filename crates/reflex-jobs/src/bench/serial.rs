//! `reflex bench serial`: the serial link end to end. The firmware's control core runs behind
//! a pseudo-terminal as a board runs behind USB (the core's stand-in plant as its motors), and
//! a [`SerialRobot`] commands it at the loop rate, as the runtime would: round trips (a host
//! frame sent to the first board state that acknowledges it), frames lost either way, and at
//! the end the board's own stop when the host goes silent mid-motion (its watchdog, then the
//! ramp to rest).

use super::BenchReport;
use anyhow::{Context, Result};
use reflex_core::{JointCommand, Robot, RobotState, SafetyLimits};
use reflex_fw_core::plant::Plant;
use reflex_serial::{board_config_for, spawn_board, SerialParams, SerialRobot};
use reflex_sim::{Env, Task};
use serialport::{SerialPort, TTYPort};
use std::time::{Duration, Instant};

/// Settings of `reflex bench serial`.
#[derive(Clone, Debug)]
pub struct BenchSerialSpec {
    /// Task whose arm is used.
    pub task: String,
    /// Host command rate and board control rate, Hz.
    pub rate_hz: u16,
    /// Seconds of commands.
    pub seconds: f64,
    /// The board's link watchdog, milliseconds.
    pub watchdog_ms: u16,
}

/// Runs the benchmark.
pub fn serial(spec: &BenchSerialSpec) -> Result<BenchReport> {
    let task = Task::load(&spec.task).with_context(|| format!("loading task {}", spec.task))?;
    let model = Env::new(task)?.model().clone();
    let (master, slave) = TTYPort::pair().context("opening a pseudo-terminal")?;
    let path = slave.name().context("the pseudo-terminal's name")?;
    drop(slave);
    // Keeps the terminal open without a lock, so the robot can open it by name.
    let _keep = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {path}"))?;
    let cfg = board_config_for(&model, spec.rate_hz, spec.watchdog_ms, 100.0, 5.0, 2.0);
    let home = [0.0, -0.2, 0.0, -2.3, 0.0, 2.1, 0.785];
    let board = spawn_board(master, cfg, Plant::at(home.map(|q: f64| q as f32), 2.0))
        .map_err(|e| anyhow::anyhow!("board configuration: {e}"))?;
    let params = SerialParams {
        // The stand-in plant has no gravity.
        gravity_feedforward: false,
        ..SerialParams::new(&path)
    };
    let limits = SafetyLimits::from_model(&model);
    let mut robot = SerialRobot::open(&params, model, Default::default())?;
    robot
        .start(&limits, Duration::from_secs(5))
        .map_err(|e| anyhow::anyhow!("starting the session: {e}"))?;

    let period = Duration::from_secs_f64(1.0 / spec.rate_hz as f64);
    let ticks = (spec.seconds * spec.rate_hz as f64) as u64;
    let mut state = RobotState::default();
    let mut stale = 0u64;
    let start = Instant::now();
    for i in 0..ticks {
        if robot.read_state(&mut state).is_err() {
            stale += 1;
        }
        let t = i as f64 / spec.rate_hz as f64;
        let mut q = home;
        q[0] += 0.5 * (std::f64::consts::TAU * 0.25 * t).sin();
        let _ = robot.write_command(&JointCommand {
            joint_pos_rad: q,
            gripper_width_m: 0.04,
        });
        if let Some(d) = (start + period * (i as u32 + 1)).checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
    }
    let link = robot.link_stats();
    let before = board.report();
    // The host goes silent mid-motion.
    drop(robot);
    let quiet = Instant::now();
    let mut after = board.report();
    while quiet.elapsed() < Duration::from_secs(3) {
        after = board.report();
        if after.stats.last_rest_us > after.stats.last_trip_us && after.stats.watchdog_trips > 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let trip_ms = after.stats.last_trip_us.saturating_sub(after.last_frame_us) as f64 / 1e3;
    let rest_ms = after.stats.last_rest_us.saturating_sub(after.last_frame_us) as f64 / 1e3;
    let p = |q| link.rtt_percentile_us(q).unwrap_or(0);
    let rtt_max = link.reader.rtt_us.iter().copied().max().unwrap_or(0);
    let lines = vec![
        format!(
            "serial link over a pseudo-terminal, {} Hz, {:.0} s: {} host frames, {} board states",
            spec.rate_hz, spec.seconds, link.sent, link.reader.states
        ),
        format!(
            "round trip host -> board -> host: p50 {} us, p99 {} us, max {} us ({} samples)",
            p(50.0),
            p(99.0),
            rtt_max,
            link.reader.rtt_us.len()
        ),
        format!(
            "frames lost: host -> board {}, board -> host {}; refused: by the board {}, by the host {}; \
             host frames not written whole {}; stale reads {stale}; board periods late {}",
            before.host_frames_lost,
            link.reader.lost,
            before.rejects.total(),
            link.reader.rejects.total(),
            link.send_errors,
            before.late_periods
        ),
        format!(
            "host silent mid-motion: board watchdog ({} ms) tripped {trip_ms:.1} ms after the last \
             frame, arm at rest {rest_ms:.1} ms after it",
            spec.watchdog_ms
        ),
    ];
    let json = serde_json::json!({
        "rate_hz": spec.rate_hz,
        "seconds": spec.seconds,
        "host_frames": link.sent,
        "board_states": link.reader.states,
        "rtt_us": {"p50": p(50.0), "p99": p(99.0), "max": rtt_max, "samples": link.reader.rtt_us.len()},
        "lost": {"host_to_board": before.host_frames_lost, "board_to_host": link.reader.lost},
        "refused": {"by_board": before.rejects.total(), "by_host": link.reader.rejects.total()},
        "send_errors": link.send_errors,
        "stale_reads": stale,
        "board_late_periods": before.late_periods,
        "watchdog_ms": spec.watchdog_ms,
        "stop_after_last_frame_ms": {"trip": trip_ms, "rest": rest_ms},
    });
    board.stop();
    Ok(BenchReport { lines, json })
}
