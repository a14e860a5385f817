//! `reflex learner` and `reflex actor`: a training run over several processes or machines.

use anyhow::{bail, Context, Result};
use clap::Args;
use reflex_jobs::arms::SimArms;
use reflex_jobs::board_sim::BoardSimArms;
use reflex_jobs::fleet::{fleet_actor, fleet_learner, link_settings, ActorSpec};
use reflex_jobs::run::RunRobot;
use reflex_jobs::train::{Progress, TrainConfig};
use std::path::PathBuf;

/// Arguments of `reflex learner`.
#[derive(Args)]
pub struct LearnerArgs {
    #[command(flatten)]
    train: crate::train::TrainArgs,
    /// The endpoint to listen on, tcp/HOST:PORT or tls/HOST:PORT [default: the config's
    /// `[fleet] endpoint`, tcp/127.0.0.1:7447].
    #[arg(long)]
    listen: Option<String>,
}

/// Arguments of `reflex actor`.
#[derive(Args)]
pub struct ActorArgs {
    /// The learner's endpoint, tcp/HOST:PORT or tls/HOST:PORT [default: the config's].
    #[arg(long)]
    connect: Option<String>,
    /// Task name or file (the learner's).
    #[arg(long, default_value = "pick_cube")]
    task: String,
    /// Configuration file (the learner's: runtime, learner ratio and `[fleet]` settings).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The robot: sim (the simulator) or sim-board (the simulator behind the firmware's
    /// control core).
    #[arg(long, default_value = "sim")]
    robot: String,
    /// Runtimes in this process, one simulator each (a thread each: at most the cores).
    #[arg(long, default_value_t = 1)]
    envs: usize,
    /// The actor's name [default: actor-<pid>].
    #[arg(long)]
    name: Option<String>,
    /// Seed of the actor's scenes and exploration [default: the process id].
    #[arg(long)]
    seed: Option<u64>,
    /// Stop after this many minutes even if the learner goes on.
    #[arg(long)]
    minutes: Option<f64>,
    /// Where the actor keeps the base policy it fetched and its report, actor.json
    /// [default: runs/actors/<name>].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print actor.json as the last line.
    #[arg(long)]
    json: bool,
}

pub fn run_learner(a: &LearnerArgs) -> Result<()> {
    let (cfg, out) = crate::train::config_and_out(&a.train, "fleet-")?;
    let task = reflex_sim::Task::load(&cfg.task).with_context(|| format!("task {}", cfg.task))?;
    let arms = SimArms::new(task, cfg.runtime.servo_rate_hz);
    let settings = link_settings(&cfg, a.listen.as_deref());
    crate::stop_on_signals();
    let summary = fleet_learner(&arms, &cfg, &settings, &out, a.train.resume, |p| match p {
        Progress::Stage(s) => tracing::info!("{s}"),
        Progress::Eval(r) => tracing::info!(
            env_steps = r.env_steps,
            updates = r.updates,
            minutes = r.wall_s / 60.0,
            success = r.success_rate,
            "evaluation"
        ),
        Progress::Training { .. } => {}
    })
    .with_context(|| format!("learner in {}", out.display()))?;
    println!(
        "{}: base {:.0}% -> final {:.0}% in {} steps from {} streams ({} transitions/s taken, {} duplicates skipped), {} updates; run in {}",
        summary.task,
        100.0 * summary.base_success_rate,
        100.0 * summary.final_success_rate,
        summary.env_steps,
        summary.ingest.streams,
        summary.ingest_per_s.round(),
        summary.ingest.duplicate_transitions,
        summary.updates,
        out.display()
    );
    if a.train.json {
        println!("{}", serde_json::to_string(&summary)?);
    }
    Ok(())
}

pub fn run_actor(a: &ActorArgs) -> Result<()> {
    let mut cfg = match &a.config {
        Some(p) => TrainConfig::load(p)?,
        None => TrainConfig::default(),
    };
    cfg.task = a.task.clone();
    if a.envs == 0 {
        bail!("--envs: must be at least 1");
    }
    let name = a
        .name
        .clone()
        .unwrap_or_else(|| format!("actor-{}", std::process::id()));
    let spec = ActorSpec {
        name: name.clone(),
        envs: a.envs,
        seed: a.seed.unwrap_or(u64::from(std::process::id())),
        minutes: a.minutes,
        out: a
            .out
            .clone()
            .unwrap_or_else(|| PathBuf::from("runs/actors").join(&name)),
    };
    let settings = link_settings(&cfg, a.connect.as_deref());
    let task = reflex_sim::Task::load(&cfg.task).with_context(|| format!("task {}", cfg.task))?;
    crate::stop_on_signals();
    let serial = reflex_jobs::run::SerialTarget::new("");
    let report = match RunRobot::parse(&a.robot, serial).map_err(|e| anyhow::anyhow!(e))? {
        RunRobot::Sim => fleet_actor(
            &SimArms::new(task, cfg.runtime.servo_rate_hz),
            &cfg,
            &settings,
            &spec,
        ),
        RunRobot::SimBoard(board) => fleet_actor(
            &BoardSimArms::new(task, cfg.runtime.servo_rate_hz, board),
            &cfg,
            &settings,
            &spec,
        ),
        RunRobot::Serial(_) => bail!(
            "--robot: an actor drives sim or sim-board so far (a serial arm trains with `reflex train --robot serial:PORT`)"
        ),
    }
    .with_context(|| format!("actor {name}"))?;
    println!(
        "{name}: {} episodes ({} succeeded), {} steps, {} weights applied (p50/p99 {}), learner seen {} times",
        report.episodes,
        report.successes,
        report.env_steps,
        report.weights_applied,
        report
            .weights_latency_ms
            .map_or("-".into(), |(a, b)| format!("{a:.1}/{b:.1} ms")),
        report.learner_arrivals
    );
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
    }
    Ok(())
}
