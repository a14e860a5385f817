//! `reflex bench ros`: the JointState-to-command round trip through the bridge, beside the same
//! round trip through an rclpy node, measured by one rclpy peer in the same run.
//!
//! The peer (`tests/interop/ros_bench_peer.py pinger`) publishes `sensor_msgs/JointState` at the
//! rate and times each until the first `std_msgs/Float64MultiArray` that follows it. The Reflex
//! candidate is the whole control loop on the arm's clock: the bridge wakes the control thread
//! when a state arrives, which runs one runtime tick (read, policy, safety filter, write). The
//! rclpy candidate (`... echo`) answers each state with its positions, and so does the r2r
//! candidate (`tests/interop/r2r_echo`, when built: `scripts/build-r2r-echo.sh`). Every
//! participant is restricted to loopback (rustdds to 127.0.0.1, Fast DDS to `LOCALHOST`).
//!
//! Built with the `r2r` feature, the bridge is measured over both of its backends.

use super::BenchReport;
use crate::arms::runtime_config;
use crate::ros::scene_spec;
use anyhow::{bail, Context, Result};
use reflex_core::{Action, Observation, Policy};
use reflex_ros::{BridgeParams, Reader, RosArgs, RosRobot};
use reflex_runtime::{EStop, Runtime, RuntimeSettings};
use reflex_sim::Task;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Settings of `reflex bench ros`.
#[derive(Clone, Debug)]
pub struct BenchRosSpec {
    /// State rates to measure at, Hz.
    pub rates: Vec<f64>,
    /// Seconds measured per candidate and rate (after 2 s of warm-up).
    pub seconds: f64,
    /// The Python with rclpy (scripts/test.sh installs one in target/pyenv).
    pub python: PathBuf,
    /// DDS domain.
    pub domain_id: u16,
    /// A command that runs the r2r candidate (None: not measured).
    pub r2r_echo: Option<PathBuf>,
}

/// Round trips of one candidate at one rate.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RoundTrips {
    /// Candidate.
    pub candidate: String,
    /// State rate, Hz.
    pub rate_hz: f64,
    /// States sent while measuring.
    pub sent: u64,
    /// States that got no command before the next one.
    pub unanswered: u64,
    /// Median, microseconds.
    pub p50_us: f64,
    /// 99th percentile, microseconds.
    pub p99_us: f64,
    /// Largest, microseconds.
    pub max_us: f64,
    /// Reflex candidates: the part of each round trip inside the bridge (from the executor
    /// taking the state to the answer going out), median and 99th percentile, microseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inside_bridge_us: Option<[f64; 2]>,
    /// Reflex candidates: the runtime tick's own compute time (read, policy, filter, write),
    /// median and 99th percentile, microseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tick_us: Option<[f64; 2]>,
}

struct Still;

impl Policy for Still {
    fn act(&mut self, _obs: &Observation, action: &mut Action) {
        action.as_mut_slice().fill(0.0);
        let g = action.as_slice().len() - 1;
        action.as_mut_slice()[g] = 1.0;
    }
}

fn peer(spec: &BenchRosSpec, args: &[String]) -> Result<Child> {
    Command::new(&spec.python)
        .arg(crate::ros::bench_peer_script())
        .args(args)
        .env("ROS_DOMAIN_ID", spec.domain_id.to_string())
        .env("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
        .env("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| {
            format!(
                "{}: a Python with rclpy is needed (scripts/test.sh installs one in target/pyenv)",
                spec.python.display()
            )
        })
}

fn pinger(spec: &BenchRosSpec, rate: f64) -> Result<Child> {
    peer(
        spec,
        &[
            "pinger".into(),
            rate.to_string(),
            spec.seconds.to_string(),
            "2.0".into(),
        ],
    )
}

fn summarise(candidate: &str, rate: f64, out: std::process::Output) -> Result<RoundTrips> {
    if !out.status.success() {
        bail!("the rclpy pinger failed ({})", out.status);
    }
    let line = out
        .stdout
        .split(|b| *b == b'\n')
        .find(|l| l.starts_with(b"{"))
        .context("the pinger printed no report")?;
    let v: serde_json::Value = serde_json::from_slice(line)?;
    let mut rtts: Vec<f64> = v["rtts_us"]
        .as_array()
        .context("rtts_us")?
        .iter()
        .filter_map(|x| x.as_f64())
        .collect();
    if rtts.is_empty() {
        bail!("{candidate} at {rate} Hz answered no state");
    }
    rtts.sort_by(|a, b| a.total_cmp(b));
    let q = |p: f64| rtts[((rtts.len() - 1) as f64 * p).round() as usize];
    Ok(RoundTrips {
        candidate: candidate.into(),
        rate_hz: rate,
        sent: v["sent"].as_u64().unwrap_or(0),
        unanswered: v["unanswered"].as_u64().unwrap_or(0),
        p50_us: q(0.5),
        p99_us: q(0.99),
        max_us: rtts[rtts.len() - 1],
        inside_bridge_us: None,
        tick_us: None,
    })
}

/// The bridge candidate: a runtime ticking once per received state, over `backend`.
fn reflex_round_trips(spec: &BenchRosSpec, rate: f64, backend: &str) -> Result<RoundTrips> {
    let task = Task::load("pick_cube")?;
    let args = RosArgs::parse(&[
        "-p".to_string(),
        format!("backend:={backend}"),
        "-p".to_string(),
        format!("domain_id:={}", spec.domain_id),
        "-p".into(),
        format!("urdf:={}", reflex_sim::default_urdf_path().display()),
        "-p".into(),
        "base_link:=link0".into(),
        "-p".into(),
        "joint_states_topic:=/bench/joint_states".into(),
        "-p".into(),
        "arm_controller:=/bench".into(),
        "-p".into(),
        "gripper_controller:=".into(),
        "-p".into(),
        "diagnostics_period_s:=0".into(),
    ])?;
    let mut r = Reader::new(args.parameters("/reflex_bench")?);
    let params = BridgeParams::read(&mut r)?;
    r.finish()?;
    let pinger = pinger(spec, rate)?;
    let robot = RosRobot::connect(
        &params,
        "reflex_bench",
        "/",
        scene_spec(&task, &[]),
        EStop::new(),
    )?;
    let model = robot.model().clone();
    let cfg = runtime_config(
        &task,
        &model,
        rate,
        &RuntimeSettings {
            start_timeout_s: 15.0,
            ..Default::default()
        },
    );
    let bridge_stats = robot.stats().clone();
    let mut rt = Runtime::new(robot, cfg, model, Box::new(Still), None, EStop::new())?;
    let stop = Arc::new(AtomicBool::new(false));
    let control = {
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("reflex-control".into())
            .spawn(move || {
                rt.robot().notify_on_state(std::thread::current());
                let mut seen = rt.robot().state_seq();
                let ticks = reflex_runtime::Histogram::default();
                while !stop.load(Ordering::Acquire) {
                    std::thread::park_timeout(Duration::from_millis(20));
                    let seq = rt.robot().state_seq();
                    if seq != seen {
                        seen = seq;
                        let t0 = std::time::Instant::now();
                        let r = rt.tick();
                        ticks.record(t0.elapsed().as_nanos() as u64);
                        if r.episode_done {
                            let _ = rt.begin_episode();
                        }
                    }
                }
                let tick = [ticks.quantile_ns(0.5), ticks.quantile_ns(0.99)];
                rt.shutdown(1000, false);
                tick
            })?
    };
    let out = pinger.wait_with_output()?;
    stop.store(true, Ordering::Release);
    let tick_ns = control.join().unwrap_or_default();
    let candidate = match backend {
        "r2r" => "reflex bridge (r2r backend: rcl, Fast DDS; one runtime tick per state)",
        _ => "reflex bridge (ros2-client/rustdds, one runtime tick per state)",
    };
    let mut row = summarise(candidate, rate, out)?;
    let h = &bridge_stats.answer;
    row.inside_bridge_us = Some([
        h.quantile_ns(0.5) as f64 / 1e3,
        h.quantile_ns(0.99) as f64 / 1e3,
    ]);
    row.tick_us = Some([tick_ns[0] as f64 / 1e3, tick_ns[1] as f64 / 1e3]);
    Ok(row)
}

fn rclpy_round_trips(spec: &BenchRosSpec, rate: f64) -> Result<RoundTrips> {
    let mut echo = peer(spec, &["echo".into()])?;
    let out = pinger(spec, rate)?.wait_with_output();
    let _ = echo.kill();
    let _ = echo.wait();
    summarise("rclpy node (Fast DDS)", rate, out?)
}

fn r2r_round_trips(
    spec: &BenchRosSpec,
    command: &std::path::Path,
    rate: f64,
) -> Result<RoundTrips> {
    let mut echo = Command::new(command)
        .env("ROS_DOMAIN_ID", spec.domain_id.to_string())
        .env("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("{}: the r2r candidate", command.display()))?;
    let out = pinger(spec, rate)?.wait_with_output();
    let _ = echo.kill();
    let _ = echo.wait();
    summarise("r2r node (rcl, Fast DDS)", rate, out?)
}

/// Runs the benchmark.
pub fn ros(spec: &BenchRosSpec) -> Result<BenchReport> {
    if cfg!(feature = "r2r") {
        // The r2r backend's rcl reads its domain and discovery range from the environment:
        // set before any thread of this benchmark exists.
        std::env::set_var("ROS_DOMAIN_ID", spec.domain_id.to_string());
        std::env::set_var("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST");
    }
    let mut rows = Vec::new();
    for &rate in &spec.rates {
        rows.push(reflex_round_trips(spec, rate, "rustdds")?);
        if cfg!(feature = "r2r") {
            rows.push(reflex_round_trips(spec, rate, "r2r")?);
        }
        rows.push(rclpy_round_trips(spec, rate)?);
        if let Some(c) = &spec.r2r_echo {
            rows.push(r2r_round_trips(spec, c, rate)?);
        }
    }
    let lines = rows
        .iter()
        .map(|r| {
            let inside = r
                .inside_bridge_us
                .map(|[p50, p99]| format!("; inside the bridge p50 {p50:.0} us, p99 {p99:.0} us"))
                .unwrap_or_default();
            let tick = r
                .tick_us
                .map(|[p50, p99]| format!(", of it the tick {p50:.0} / {p99:.0} us"))
                .unwrap_or_default();
            format!(
                "{:>6.0} Hz  {:<72} p50 {:>6.0} us  p99 {:>6.0} us  max {:>7.0} us  ({} states, {} unanswered{inside}{tick})",
                r.rate_hz, r.candidate, r.p50_us, r.p99_us, r.max_us, r.sent, r.unanswered
            )
        })
        .chain(spec.r2r_echo.is_none().then(|| {
            "r2r: not measured (build its candidate with scripts/build-r2r-echo.sh)".to_string()
        }))
        .collect();
    Ok(BenchReport {
        lines,
        json: serde_json::json!({ "round_trips": rows }),
    })
}
