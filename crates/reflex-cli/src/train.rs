//! `reflex train` and `reflex eval`: the main job and its check.

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use reflex_jobs::board_sim::board_sim_train;
use reflex_jobs::rewards::{reward_plugin, RewardFlags, RewardSource};
use reflex_jobs::run::RunRobot;
use reflex_jobs::serial::serial_train;
use reflex_jobs::train::{evaluate_run, train_with, Progress, Summary, TrainConfig, TrainError};
use reflex_learn::stage::RewardPlugin;
use std::path::{Path, PathBuf};

/// Arguments of `reflex train`.
#[derive(Args)]
pub struct TrainArgs {
    // (Shared by `reflex ros train`.)
    /// Task name (from sim/tasks) or task file [default: the config file's, else pick_cube].
    #[arg(long)]
    task: Option<String>,
    /// Configuration file (TOML; any field of the run, see README). Flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Seed of the run.
    #[arg(long)]
    seed: Option<u64>,
    /// Run directory (default: runs/<task>-s<seed>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Wall-clock budget, minutes.
    #[arg(long)]
    minutes: Option<f64>,
    /// Environment-step budget.
    #[arg(long)]
    max_env_steps: Option<u64>,
    /// Scripted demonstrations for behaviour cloning and the demonstration buffer.
    #[arg(long)]
    demo_episodes: Option<usize>,
    /// Continue the run in --out from its last checkpoint and replay.
    #[arg(long)]
    pub(crate) resume: bool,
    /// Where training rewards come from: task, vlm-keypoints, vlm-preference or classifier
    /// [default: the config file's `[reward] source`, else task].
    #[arg(long)]
    reward: Option<RewardSource>,
    /// Trained success classifier (a `reflex classifier train` output directory), for
    /// `--reward classifier`.
    #[arg(long)]
    classifier: Option<PathBuf>,
    /// Base URL of an OpenAI-compatible VLM server (e.g. http://127.0.0.1:8000/v1). Without
    /// it, VLM rewards are answered by a built-in oracle from simulator ground truth.
    #[arg(long)]
    vlm_url: Option<String>,
    /// Model name sent to the VLM server.
    #[arg(long)]
    vlm_model: Option<String>,
    /// Print summary.json as the last line.
    #[arg(long)]
    pub(crate) json: bool,
}

impl TrainArgs {
    /// `--reward`, if given.
    pub(crate) fn reward_flag(&self) -> Option<RewardSource> {
        self.reward
    }
}

/// Arguments of `reflex train`: the run's and the arm's.
#[derive(Args)]
pub struct TrainCmd {
    #[command(flatten)]
    train: TrainArgs,
    #[command(flatten)]
    arm: crate::run::ArmArgs,
}

pub fn run_train(c: &TrainCmd) -> Result<()> {
    let a = &c.train;
    match c.arm.robot()? {
        RunRobot::Sim => run_job(a, None, |cfg, out, plugin, progress| {
            train_with(cfg, out, a.resume, plugin, progress)
        }),
        RunRobot::SimBoard(spec) => run_job(a, Some("board-"), |cfg, out, plugin, progress| {
            board_sim_train(cfg, spec, out, a.resume, plugin, progress)
        }),
        RunRobot::Serial(target) => run_job(a, Some("serial-"), |cfg, out, plugin, progress| {
            serial_train(cfg, &target, out, a.resume, plugin, progress)
        }),
    }
}

/// The configuration, run directory, reward source and progress bar of `reflex train`, around
/// `job` (the simulator's, or with `real` a real arm's: `Some(prefix)`, which goes before the
/// default run directory's name, `runs/<prefix><task>-s<seed>`).
pub fn run_job(
    a: &TrainArgs,
    real: Option<&str>,
    job: impl FnOnce(
        &TrainConfig,
        &Path,
        Option<RewardPlugin>,
        &mut dyn FnMut(Progress),
    ) -> std::result::Result<Summary, TrainError>,
) -> Result<()> {
    let (cfg, out) = config_and_out(a, real.unwrap_or(""))?;
    let task = reflex_sim::Task::load(&cfg.task).with_context(|| format!("task {}", cfg.task))?;
    let flags = RewardFlags {
        source: a.reward,
        classifier: a.classifier.clone(),
        vlm_url: a.vlm_url.clone(),
        vlm_model: a.vlm_model.clone(),
    };
    let (plugin, mut oracle) = reward_plugin(&task, cfg.seed, &cfg.reward, &flags, &out)
        .map_err(|e| anyhow::anyhow!(e))?;
    // (Taken only for a real arm: dropping the oracle would stop the simulator's.)
    if let Some(o) = oracle.take_if(|_| real.is_some()) {
        o.stop();
        bail!(
            "the built-in VLM oracle answers from the simulator's ground truth, which a real arm \
             does not have: give --vlm-url (an OpenAI-compatible server)"
        );
    }
    crate::stop_on_signals();
    let bar = ProgressBar::new(1000);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {elapsed_precise} [{bar:30}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let mut report = |p: Progress| match p {
        Progress::Stage(s) => bar.set_message(s.to_string()),
        Progress::Training {
            env_steps,
            updates,
            success,
            elapsed_s,
            budget_s,
        } => {
            bar.set_position(((elapsed_s / budget_s).min(1.0) * 1000.0) as u64);
            bar.set_message(format!(
                "steps {env_steps}  updates {updates}  success {}",
                success.map_or("-".into(), |s| format!("{:.0}%", 100.0 * s))
            ));
        }
        Progress::Eval(r) => bar.println(format!(
            "eval @ {:>7} steps, {:>6.1} min: success {:>5.1}%  return {:>8.2}",
            r.env_steps,
            r.wall_s / 60.0,
            100.0 * r.success_rate,
            r.mean_return
        )),
    };
    let summary = job(&cfg, &out, plugin, &mut report)
        .with_context(|| format!("training in {}", out.display()))?;
    bar.finish_and_clear();
    println!(
        "{}: base {:.0}% -> final {:.0}% (best {:.0}%) in {} steps, {} updates, {:.1} min; run in {}",
        summary.task,
        100.0 * summary.base_success_rate,
        100.0 * summary.final_success_rate,
        100.0 * summary.best_success_rate,
        summary.env_steps,
        summary.updates,
        summary.wall_s / 60.0,
        out.display()
    );
    if let Some(stage) = &summary.reward_stage {
        println!(
            "rewards from {}: {}; {} deadline misses",
            summary.reward,
            stage_line(stage),
            summary.deadline_misses
        );
    }
    if let Some(o) = oracle {
        o.stop();
    }
    if a.json {
        println!("{}", serde_json::to_string(&summary)?);
    }
    Ok(())
}

/// The run's configuration (the file's, with the flags over it) and its directory
/// (`--out`, else `runs/<prefix><task>-s<seed>`).
pub(crate) fn config_and_out(a: &TrainArgs, prefix: &str) -> Result<(TrainConfig, PathBuf)> {
    let mut cfg = match &a.config {
        Some(p) => TrainConfig::load(p)?,
        None => TrainConfig::default(),
    };
    if let Some(t) = &a.task {
        cfg.task = t.clone();
    }
    if let Some(s) = a.seed {
        cfg.seed = s;
    }
    if let Some(m) = a.minutes {
        cfg.minutes = m;
    }
    if let Some(n) = a.demo_episodes {
        cfg.demo_episodes = n;
    }
    if let Some(n) = a.max_env_steps {
        cfg.max_env_steps = n;
    }
    if let Err(e) = cfg.validate() {
        bail!("configuration: {e}");
    }
    let name = std::path::Path::new(&cfg.task)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("run")
        .to_owned();
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs").join(format!("{prefix}{name}-s{}", cfg.seed)));
    Ok((cfg, out))
}

/// One line on what a reward stage did (its `summary.json` counters).
fn stage_line(stage: &serde_json::Value) -> String {
    let n = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
    let v = &stage["vlm"];
    let vlm = || {
        format!(
            "VLM {} queries, {} cache hits, {} timeouts, {} failed",
            v["queries"], v["cache_hits"], v["timeouts"], v["failed"]
        )
    };
    if let Some(k) = stage.get("keypoints") {
        format!(
            "{} episodes planned, {} dropped ({} transitions); {}",
            k["planned"],
            n(&k["failed_answers"]) + n(&k["unliftable"]) + n(&k["expired"]) + n(&k["not_asked"]),
            k["dropped"],
            vlm()
        )
    } else if let Some(p) = stage.get("preference") {
        format!(
            "{} labels of {} asked ({} unsure, {} failed, {} timed out), {} model rounds, replay reshaped {} times; {}",
            p["labels"],
            p["asked"],
            p["unsure"],
            p["failed"],
            p["timed_out"],
            stage["rounds"].as_array().map_or(0, |r| r.len()),
            stage["replay_reshapes"],
            vlm()
        )
    } else if let Some(c) = stage.get("classifier") {
        format!(
            "{} steps judged, {} as success ({} false positives, {} false negatives against the simulator), {} expired, {} frames lost; CNN {:.0} us/frame",
            c["rewarded"],
            c["judged_success"],
            c["false_positives"],
            c["false_negatives"],
            c["expired"],
            c["frames_lost"],
            c["cnn_us_per_frame"].as_f64().unwrap_or(0.0)
        )
    } else {
        stage.to_string()
    }
}

/// Arguments of `reflex eval`.
#[derive(Args)]
pub struct EvalArgs {
    /// Task name or file; must be the run's own [default: the run's, from its config.toml].
    #[arg(long)]
    task: Option<String>,
    /// Run directory (base.safetensors, policy.safetensors, config.toml: the task, loop rate
    /// and residual scale come from it).
    #[arg(long)]
    policy: PathBuf,
    /// Residual to evaluate instead of the run's policy.safetensors (a learning session's
    /// snapshot, say).
    #[arg(long)]
    residual: Option<PathBuf>,
    /// Episodes.
    #[arg(long, default_value_t = 50)]
    episodes: usize,
    /// Seed of the episodes.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print a JSON object as the last line.
    #[arg(long)]
    json: bool,
}

pub fn run_eval(a: &EvalArgs) -> Result<()> {
    if a.episodes == 0 {
        bail!("--episodes must be positive");
    }
    let (success, ret) = evaluate_run(
        &a.policy,
        a.task.as_deref(),
        a.residual.as_deref(),
        a.episodes,
        a.seed,
    )?;
    println!(
        "{}: success {:.1}% over {} episodes (mean return {:.2})",
        a.policy.display(),
        100.0 * success,
        a.episodes,
        ret
    );
    if a.json {
        println!(
            "{}",
            serde_json::json!({"task": a.task, "policy": a.policy, "residual": a.residual,
                "episodes": a.episodes,
                "success_rate": success, "mean_return": ret})
        );
    }
    Ok(())
}
