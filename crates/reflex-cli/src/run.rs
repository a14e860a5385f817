//! `reflex run`: arguments and the report; the session itself is `reflex_jobs::run` (the
//! runtime's control loop driving the simulated arm in real time, paced at
//! the loop rate, episode after episode, with success and timing statistics at the end.
//! SIGTERM or the first Ctrl-C presses the e-stop: the arm brakes to rest within its limits
//! before the command exits (a second Ctrl-C kills it at once).

use anyhow::{Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use reflex_jobs::run::{RunRobot, RunSpec, SerialTarget};
use reflex_runtime::Faults;
use reflex_sim::Task;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// Arguments of `reflex run`.
#[derive(Args)]
pub struct RunArgs {
    /// Task name (from sim/tasks) or path to a task file.
    #[arg(long)]
    task: String,
    /// Base policy: `scripted` (the task's scripted expert) or a safetensors weights file
    /// (flat observation in, normalised action out).
    #[arg(long, default_value = "scripted")]
    policy: String,
    /// Residual network (safetensors): flat observation and base action in, correction out.
    #[arg(long)]
    residual: Option<PathBuf>,
    /// Residual scale in `a = base + scale * residual` [default: the residual file's own, else
    /// 0.3]; a file that records another scale is refused.
    #[arg(long)]
    residual_scale: Option<f32>,
    /// Control loop (servo) rate, Hz: a whole multiple of the task's policy rate [default: the
    /// rate the residual (or base) file was trained at, else 1000].
    #[arg(long)]
    rate: Option<f64>,
    /// How long to run, seconds of wall-clock time (episodes run back to back).
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Seed of the first episode; episode i uses `seed + i`.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Tick back to back instead of at the loop rate: simulated time runs as fast as the
    /// machine allows (same loop, same filter; no jitter figures).
    #[arg(long)]
    unpaced: bool,
    /// Do not ask for SCHED_FIFO, mlockall and CPU pinning.
    #[arg(long)]
    no_realtime: bool,
    #[command(flatten)]
    arm: ArmArgs,
    /// Print a JSON summary as the last line (with every completed episode's success in seed
    /// order, `outcomes`, from `first_seed`).
    #[arg(long)]
    json: bool,
}

/// Which arm a job drives (`reflex run`, `reflex train`).
#[derive(Args)]
pub struct ArmArgs {
    /// The arm: `sim` (the built-in simulator), `sim-board` (the simulator behind the
    /// firmware's control core in process: the board's dynamics at simulation speed) or
    /// `serial:PORT` (an arm on Reflex's joint firmware, e.g. serial:/dev/ttyACM0, or the
    /// pseudo-terminal `reflex firmware-sim` prints). `reflex actor` also takes `ros`: an arm
    /// through the ROS 2 bridge, with `--params` and `--ros-args`.
    #[arg(long, default_value = "sim")]
    robot: String,
    /// With `--robot serial:PORT`: the scene link (the tracker's poses and the scene's
    /// resets), HOST:PORT. Without it objects are unknown and episodes start where the arm is
    /// (`reflex train` needs it).
    #[arg(long)]
    scene: Option<std::net::SocketAddr>,
    /// With `--robot serial:PORT`: clear the board's latched e-stop and faults at start (do
    /// this once the cause is gone).
    #[arg(long)]
    rearm_board: bool,
    /// With a board (`serial:PORT`, `sim-board`): send no velocity feed-forward (the board then damps towards
    /// rest between setpoints, like the simulator's joint impedance a policy was trained on).
    #[arg(long)]
    no_velocity_feedforward: bool,
    /// With a board (`serial:PORT`, `sim-board`): send no gravity-compensation torques (the arm then sags
    /// under gravity by what its stiffness allows, as the simulator's joint impedance does).
    #[arg(long)]
    no_gravity_feedforward: bool,
}

impl ArmArgs {
    /// `--robot` as given.
    #[cfg(feature = "fleet")]
    pub fn name(&self) -> &str {
        &self.robot
    }

    /// Refuses the board's options, for an arm set up elsewhere (`reflex actor --robot ros`).
    #[cfg(feature = "fleet")]
    pub fn no_board_options(&self) -> Result<()> {
        if self.scene.is_some()
            || self.rearm_board
            || self.no_velocity_feedforward
            || self.no_gravity_feedforward
        {
            anyhow::bail!(
                "--robot {}: --scene, --rearm-board and the feed-forward options are for a board \
                 (serial:PORT, sim-board)",
                self.robot
            );
        }
        Ok(())
    }

    /// The arm these arguments name.
    pub fn robot(&self) -> Result<RunRobot> {
        RunRobot::parse(
            &self.robot,
            SerialTarget {
                scene: self.scene,
                rearm_board: self.rearm_board,
                velocity_feedforward: !self.no_velocity_feedforward,
                gravity_feedforward: !self.no_gravity_feedforward,
                ..SerialTarget::new("")
            },
        )
        .map_err(anyhow::Error::msg)
    }
}

pub fn run(a: &RunArgs) -> Result<()> {
    let task = Task::load(&a.task).with_context(|| format!("loading task {}", a.task))?;
    let spec = RunSpec {
        task: task.clone(),
        policy: a.policy.clone(),
        residual: a.residual.clone(),
        residual_scale: a.residual_scale,
        servo_rate_hz: a.rate,
        seconds: a.seconds,
        seed: a.seed,
        paced: !a.unpaced,
        realtime: !a.no_realtime,
        robot: a.arm.robot()?,
    };
    crate::stop_on_signals();
    let bar = ProgressBar::new((a.seconds * 10.0) as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {elapsed}/{msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let start = Instant::now();
    let r = reflex_jobs::run::run(&spec, |stats| {
        bar.set_position((start.elapsed().as_secs_f64() * 10.0) as u64);
        bar.set_message(format!(
            "{:.0}s  {} episodes, {} succeeded, {} deadline misses",
            a.seconds,
            stats.episodes.load(Ordering::Relaxed).saturating_sub(1),
            stats.successes.load(Ordering::Relaxed),
            stats.timing.deadline_misses.load(Ordering::Relaxed),
        ));
    })?;
    bar.finish_and_clear();
    let (got, episodes, drained, stats) = (&r.realtime, &r.episodes, r.drained, &r.stats);
    let (servo_rate_hz, residual_scale) = (r.servo_rate_hz, r.residual_scale);
    if spec.realtime && spec.paced {
        for (what, res) in [
            ("SCHED_FIFO", &got.fifo),
            ("mlockall", &got.mlock),
            ("CPU pinning", &got.pinned),
        ] {
            if let Err(e) = res {
                tracing::warn!("{what} not obtained: {e}");
            }
        }
    }

    let us = |ns: u64| ns as f64 / 1e3;
    let t = &stats.timing;
    let successes = episodes.iter().filter(|s| **s).count();
    let n = episodes.len();
    let rate = if n > 0 {
        successes as f64 / n as f64
    } else {
        0.0
    };
    let faults = stats.fault_counts();
    let q = r.transitions;
    println!(
        "{}: {successes}/{n} completed episodes succeeded ({:.1}%) in {:.1} s; {} ticks at {} Hz, {} deadline misses, jitter p50 {:.1} us p99 {:.1} us max {:.1} us, compute p50 {:.1} us p99 {:.1} us; {} transitions ({} dropped)",
        task.name,
        100.0 * rate,
        a.seconds,
        t.ticks.load(Ordering::Relaxed),
        servo_rate_hz,
        t.deadline_misses.load(Ordering::Relaxed),
        us(t.jitter.quantile_ns(0.5)),
        us(t.jitter.quantile_ns(0.99)),
        us(t.jitter.max_ns()),
        us(t.compute.quantile_ns(0.5)),
        us(t.compute.quantile_ns(0.99)),
        q.pushed,
        q.dropped,
    );
    let active: Vec<String> = Faults::NAMES
        .iter()
        .zip(faults)
        .filter(|(_, c)| *c > 0)
        .map(|(name, c)| format!("{name} {c}"))
        .collect();
    if !active.is_empty() {
        println!("safety filter activity (ticks): {}", active.join(", "));
    }
    if a.json {
        let fault_map: serde_json::Map<String, serde_json::Value> = Faults::NAMES
            .iter()
            .zip(faults)
            .map(|(name, c)| ((*name).to_owned(), c.into()))
            .collect();
        let status = |r: &std::result::Result<(), String>| match r {
            Ok(()) => "ok".to_owned(),
            Err(e) => e.clone(),
        };
        println!(
            "{}",
            serde_json::json!({
                "task": task.name,
                "robot": a.arm.robot,
                "policy": a.policy,
                "residual": a.residual,
                "rate_hz": servo_rate_hz,
                "residual_scale": residual_scale,
                "seconds": a.seconds,
                "episodes": n,
                "successes": successes,
                "success_rate": rate,
                "first_seed": a.seed,
                "outcomes": r.episodes,
                "policy_steps": stats.policy_steps.load(Ordering::Relaxed),
                "intervened_steps": stats.intervened_steps.load(Ordering::Relaxed),
                "ticks": t.ticks.load(Ordering::Relaxed),
                "deadline_misses": t.deadline_misses.load(Ordering::Relaxed),
                "jitter_p50_us": us(t.jitter.quantile_ns(0.5)),
                "jitter_p99_us": us(t.jitter.quantile_ns(0.99)),
                "jitter_max_us": us(t.jitter.max_ns()),
                "compute_p50_us": us(t.compute.quantile_ns(0.5)),
                "compute_p99_us": us(t.compute.quantile_ns(0.99)),
                "transitions": q.pushed,
                "transitions_dropped": q.dropped,
                "transitions_drained": drained,
                "non_finite_actions": stats.non_finite_actions.load(Ordering::Relaxed),
                "stale_policy_inputs": stats.stale_policy_inputs.load(Ordering::Relaxed),
                "read_errors": stats.read_errors.load(Ordering::Relaxed),
                "write_errors": stats.write_errors.load(Ordering::Relaxed),
                "faults": fault_map,
                "estop_pressed": r.estop_pressed,
                "estop_aborts": stats.estop_aborts.load(Ordering::Relaxed),
                "at_rest_after_estop": r.rested,
                "stop_reason": if r.estop_pressed { "e-stop" } else { "time" },
                "late_10pct": t.late_10pct.load(Ordering::Relaxed),
                "late_50pct": t.late_50pct.load(Ordering::Relaxed),
                "sched_fifo": status(&got.fifo),
                "mlockall": status(&got.mlock),
                "pinned": status(&got.pinned),
            })
        );
    }
    Ok(())
}
