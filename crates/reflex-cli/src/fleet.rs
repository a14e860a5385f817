//! `reflex learner` and `reflex actor`: a training run over several processes or machines.

use anyhow::{bail, Context, Result};
use clap::Args;
use reflex_jobs::arms::SimArms;
use reflex_jobs::board_sim::BoardSimArms;
use reflex_jobs::fleet::{fleet_actor, fleet_learner, link_settings, ActorSpec};
use reflex_jobs::ros::RosArms;
use reflex_jobs::run::RunRobot;
use reflex_jobs::serial::SerialArms;
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
    /// The robot (`--robot`: sim, sim-board, serial:PORT with `--scene`, or ros with
    /// `--params` and any `--ros-args ...` after the command's own: the bridge's parameters).
    #[command(flatten)]
    arm: crate::run::ArmArgs,
    /// With `--robot ros`: the bridge's parameter file (`node: ros__parameters:` form); same as
    /// `--ros-args --params-file FILE`.
    #[arg(long)]
    params: Option<PathBuf>,
    /// Runtimes in this process, one simulator each (a thread each: at most the cores). A real
    /// arm (serial, ros) is one runtime: run one actor per arm.
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
    let (mut cfg, out) = crate::train::config_and_out(&a.train, "fleet-")?;
    if let Some(r) = a.train.reward_flag() {
        cfg.reward.source = Some(r);
    }
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

pub fn run_actor(a: &ActorArgs, ros_args: &[String]) -> Result<()> {
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
    let one_arm = |what: &str| -> Result<()> {
        if a.envs != 1 {
            bail!(
                "--envs {}: {what} is one arm, driven by one runtime (run one actor per arm)",
                a.envs
            );
        }
        Ok(())
    };
    let report = if a.arm.name() == "ros" {
        a.arm.no_board_options()?;
        one_arm("--robot ros")?;
        let mut ros = reflex_ros::RosArgs::parse(ros_args)?;
        if let Some(p) = &a.params {
            ros.params_files.insert(0, p.clone());
        }
        let arms = RosArms::new(&task, &ros, cfg.runtime.servo_rate_hz)
            .map_err(|e| anyhow::anyhow!("--robot ros: {e}"))?;
        fleet_actor(&arms, &cfg, &settings, &spec)
    } else {
        if a.params.is_some() || !ros_args.is_empty() {
            bail!("--params and --ros-args belong to --robot ros");
        }
        match a.arm.robot()? {
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
            RunRobot::Serial(target) => {
                one_arm(&format!("--robot serial:{}", target.port))?;
                let arms = SerialArms::open(&task, &target, cfg.runtime.servo_rate_hz)
                    .map_err(|e| anyhow::anyhow!("--robot serial:{}: {e}", target.port))?;
                let report = fleet_actor(&arms, &cfg, &settings, &spec);
                tracing::info!(
                    health = ?arms.robot().with(|r| reflex_core::Robot::health(r)),
                    "board at the end"
                );
                report
            }
        }
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
