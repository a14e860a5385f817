//! `reflex run`: the runtime's control loop driving the simulated arm in real time, paced at
//! the loop rate, episode after episode, with success and timing statistics at the end.
//! SIGTERM or the first Ctrl-C presses the e-stop: the arm brakes to rest within its limits
//! before the command exits (a second Ctrl-C kills it at once).

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use reflex_core::Policy;
use reflex_jobs::policies::load_for;
use reflex_policy::{ObsLayout, Role};
use reflex_runtime::{
    EStop, Faults, NetPolicy, RealTime, RealTimeRequest, ResidualPolicy, Runtime, RuntimeConfig,
    RuntimeSettings, WeightsSlot,
};
use reflex_sim::{Env, ScriptedExpert, SimRobot, Task};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

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
    /// Print a JSON summary as the last line.
    #[arg(long)]
    json: bool,
}

pub fn run(a: &RunArgs) -> Result<()> {
    let task = Task::load(&a.task).with_context(|| format!("loading task {}", a.task))?;
    if !(a.seconds > 0.0 && a.seconds.is_finite()) {
        bail!("--seconds {}: expected a positive duration", a.seconds);
    }
    let mut env = Env::new(task.clone()).context("building the simulator")?;
    let obs = env.reset(a.seed)?;
    let layout = ObsLayout::of(&obs);
    let obs_dim = layout.dim();
    let act_dim = task.action_space.dim();
    let model = env.model().clone();

    // Policy files say what they were trained for: a file for another layout, action space
    // or decision rate is refused naming both.
    let base_file = match a.policy.as_str() {
        "scripted" => None,
        p => Some(load_for(Path::new(p), Role::Base, &task, layout)?),
    };
    let residual_file = match &a.residual {
        Some(p) => Some(load_for(p, Role::Residual, &task, layout)?),
        None => None,
    };
    let file_scale = residual_file
        .as_ref()
        .and_then(|f| f.meta.as_ref())
        .and_then(|m| m.residual_scale);
    let residual_scale = match (a.residual_scale, file_scale) {
        (Some(flag), Some(file)) if (flag - file).abs() > 1e-6 => bail!(
            "--residual-scale {flag}: {} was trained with {file}",
            a.residual.as_deref().unwrap_or(Path::new("")).display()
        ),
        (flag, file) => flag.or(file).unwrap_or(0.3),
    };
    let file_rate = [&residual_file, &base_file]
        .into_iter()
        .flatten()
        .find_map(|f| f.meta.as_ref().map(|m| m.servo_rate_hz));
    let servo_rate_hz = a.rate.or(file_rate).unwrap_or(1000.0);
    let base: Box<dyn Policy + Send> = match base_file {
        None => Box::new(ScriptedExpert::new(&task, &model)),
        Some(f) => Box::new(
            NetPolicy::new(WeightsSlot::new(f.mlp), obs_dim, act_dim)
                .map_err(|e| anyhow::anyhow!("{}: {e}", a.policy))?,
        ),
    };
    let residual = match residual_file {
        Some(f) => Some(
            ResidualPolicy::new(WeightsSlot::new(f.mlp), obs_dim, act_dim).map_err(|e| {
                anyhow::anyhow!(
                    "{}: {e}",
                    a.residual.as_deref().unwrap_or(Path::new("")).display()
                )
            })?,
        ),
        None => None,
    };
    let cfg = RuntimeConfig {
        transition_capacity: 4096,
        ..reflex_jobs::arms::runtime_config(
            &task,
            &model,
            servo_rate_hz,
            &RuntimeSettings {
                residual_scale,
                ..Default::default()
            },
        )
    };
    let robot = SimRobot::new(env, servo_rate_hz)?;
    let estop = EStop::new();
    let mut rt = Runtime::new(robot, cfg, model, base, residual, estop.clone())?;
    let stats = rt.stats().clone();
    let transitions = rt.transitions().clone();
    crate::stop_on_signals();

    let realtime = !a.no_realtime && !a.unpaced;
    let paced = !a.unpaced;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let duration = Duration::from_secs_f64(a.seconds);
    let first_seed = a.seed;
    let control = std::thread::Builder::new()
        .name("reflex-control".into())
        .spawn(move || -> Result<(RealTime, Vec<bool>, Option<bool>)> {
            let got = RealTime::request(&RealTimeRequest {
                fifo_priority: realtime.then_some(80),
                mlock: realtime,
                cpu: realtime.then_some(cores - 1),
            });
            let mut seed = first_seed;
            let mut episodes = Vec::new();
            let mut reset_error = None;
            rt.run(duration, paced, |rt, outcome| {
                if rt.estop().is_latched() {
                    return false; // the episode was aborted: not counted
                }
                episodes.push(outcome.success);
                seed += 1;
                match rt.reset_episode(seed) {
                    Ok(()) => true,
                    Err(e) => {
                        reset_error = Some(e);
                        false
                    }
                }
            });
            if let Some(e) = reset_error {
                return Err(e.into());
            }
            // Pressed: brake to rest (paced like the loop itself) before handing back.
            let rested = rt
                .estop()
                .is_latched()
                .then(|| rt.shutdown((5.0 * rt.config().servo_rate_hz) as u64, paced));
            Ok((got, episodes, rested))
        })?;

    // This thread plays the learner's part: it drains transitions so none are dropped, and it
    // shows progress.
    let bar = ProgressBar::new((a.seconds * 10.0) as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {elapsed}/{msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let start = Instant::now();
    let mut drained = 0u64;
    while !control.is_finished() {
        std::thread::sleep(Duration::from_millis(100));
        if reflex_jobs::train::INTERRUPT.load(Ordering::Relaxed) && !estop.is_latched() {
            bar.println("stopping: e-stop pressed, braking to rest");
            estop.press();
        }
        while transitions.pop().is_some() {
            drained += 1;
        }
        bar.set_position((start.elapsed().as_secs_f64() * 10.0) as u64);
        bar.set_message(format!(
            "{:.0}s  {} episodes, {} succeeded, {} deadline misses",
            a.seconds,
            stats.episodes.load(Ordering::Relaxed).saturating_sub(1),
            stats.successes.load(Ordering::Relaxed),
            stats.timing.deadline_misses.load(Ordering::Relaxed),
        ));
    }
    bar.finish_and_clear();
    let (got, episodes, rested) = control
        .join()
        .map_err(|_| anyhow::anyhow!("the control thread panicked"))??;
    if rested == Some(false) {
        tracing::error!("the arm did not come to rest within 5 s of the e-stop");
    }
    while transitions.pop().is_some() {
        drained += 1;
    }
    if realtime {
        for (what, r) in [
            ("SCHED_FIFO", &got.fifo),
            ("mlockall", &got.mlock),
            ("CPU pinning", &got.pinned),
        ] {
            if let Err(e) = r {
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
    let q = transitions.stats();
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
                "policy": a.policy,
                "residual": a.residual,
                "rate_hz": servo_rate_hz,
                "residual_scale": residual_scale,
                "seconds": a.seconds,
                "episodes": n,
                "successes": successes,
                "success_rate": rate,
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
                "read_errors": stats.read_errors.load(Ordering::Relaxed),
                "write_errors": stats.write_errors.load(Ordering::Relaxed),
                "faults": fault_map,
                "estop_pressed": estop.presses() > 0,
                "estop_aborts": stats.estop_aborts.load(Ordering::Relaxed),
                "at_rest_after_estop": rested,
                "stop_reason": if estop.presses() > 0 { "e-stop" } else { "time" },
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
