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

/// `--obs`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum ObsArg {
    State,
    Pixels,
}

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
    #[arg(long, conflicts_with = "seeds")]
    seed: Option<u64>,
    /// Several seeds, one run after another (`0,1,2`, or a count: `3` is 0,1,2), each in
    /// `<out>/s<seed>`; then `<out>/study.json` (mean and 95% bootstrap interval of the
    /// held-out success and of the steps and minutes to the target) and `<out>/band.png`. With
    /// --resume, finished seeds are kept and the rest run. The simulator only.
    #[arg(long, value_parser = parse_seeds)]
    seeds: Option<SeedList>,
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
    /// What the policy and critics see: state (the task's observation, object poses included)
    /// or pixels (the cameras of `[pixels]` plus the arm's own joints, tool and gripper)
    /// [default: the config file's `obs`, else state].
    #[arg(long)]
    obs: Option<ObsArg>,
    /// Recorded teleop sessions (`reflex teleop --record DIR`; with frames for `--obs
    /// pixels`), comma-separated, whose successful episodes are the demonstrations instead of
    /// the scripted expert's (`demo_sessions`): what an operator showed the arm.
    #[arg(long, value_delimiter = ',')]
    demo_sessions: Vec<std::path::PathBuf>,
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
    #[cfg(feature = "fleet")]
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
    mut job: impl FnMut(
        &TrainConfig,
        &Path,
        Option<RewardPlugin>,
        &mut dyn FnMut(Progress),
    ) -> std::result::Result<Summary, TrainError>,
) -> Result<()> {
    let (cfg, out) = config_and_out(a, real.unwrap_or(""))?;
    let Some(SeedList(seeds)) = &a.seeds else {
        let summary = run_one(a, real, &cfg, &out, &mut job)?;
        if a.json {
            println!("{}", serde_json::to_string(&summary)?);
        }
        return Ok(());
    };
    if real.is_some() {
        bail!("--seeds: a study runs in the simulator; a real arm trains one seed per session");
    }
    let mut dirs = Vec::new();
    for &seed in seeds {
        let mut cfg = cfg.clone();
        cfg.seed = seed;
        if let Err(e) = cfg.validate() {
            bail!("--seeds: {e}");
        }
        let dir = out.join(format!("s{seed}"));
        if a.resume && finished(&dir) {
            println!("seed {seed}: finished before, kept ({})", dir.display());
        } else {
            println!("seed {seed} of {:?}:", seeds);
            run_one(a, real, &cfg, &dir, &mut job)?;
        }
        if reflex_jobs::train::INTERRUPT.load(std::sync::atomic::Ordering::Relaxed) {
            bail!(
                "interrupted during seed {seed}: its run is in {}; --resume with the same --seeds \
                 continues the study",
                dir.display()
            );
        }
        dirs.push(dir);
    }
    let st = reflex_jobs::train::study(&dirs, &out)?;
    print_study(&st, &out);
    if a.json {
        println!("{}", serde_json::to_string(&st)?);
    }
    Ok(())
}

/// Whether the run in `dir` ended (its `summary.json` says so) other than by an interrupt.
fn finished(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("summary.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Summary>(&t).ok())
        .is_some_and(|s| s.stop_reason != "interrupted")
}

/// The seeds of `--seeds`.
#[derive(Clone, Debug)]
pub struct SeedList(Vec<u64>);

/// `--seeds`: a comma-separated list, or a count `N` for seeds 0..N.
fn parse_seeds(s: &str) -> std::result::Result<SeedList, String> {
    let bad = |p: &str| format!("`{p}` is not a seed (give a count, 3, or a list, 0,1,2)");
    let seeds: Vec<u64> = if s.contains(',') {
        s.split(',')
            .filter(|p| !p.trim().is_empty())
            .map(|p| p.trim().parse().map_err(|_| bad(p)))
            .collect::<std::result::Result<_, _>>()?
    } else {
        let n: u64 = s.trim().parse().map_err(|_| bad(s))?;
        (0..n).collect()
    };
    if seeds.is_empty() {
        return Err(format!(
            "`{s}` gives no seeds (a single number is a count: 3 runs seeds 0, 1 and 2; for one \
             seed use --seed S, or a list such as 0,)"
        ));
    }
    let mut sorted = seeds.clone();
    sorted.sort_unstable();
    if sorted.windows(2).any(|w| w[0] == w[1]) {
        return Err(format!("{s}: a seed is given twice"));
    }
    Ok(SeedList(seeds))
}

/// The study's lines for people.
fn print_study(st: &reflex_jobs::train::Study, out: &Path) {
    let pct = |i: &reflex_jobs::train::Interval| {
        format!(
            "{:.1}% [{:.1}, {:.1}]",
            100.0 * i.mean,
            100.0 * i.lo,
            100.0 * i.hi
        )
    };
    let n = st.runs.len();
    println!(
        "{} with reward {}, {n} seeds (mean, {:.0}% bootstrap interval):",
        st.task,
        st.reward,
        100.0 * st.confidence
    );
    match &st.heldout_success {
        Some(h) => println!(
            "  held-out success ({} episodes each): {}",
            st.heldout_episodes,
            pct(h)
        ),
        None => println!("  held-out success: not measured by every run"),
    }
    println!("  last stopping evaluation: {}", pct(&st.final_success));
    println!("  cloned base: {}", pct(&st.base_success));
    match (&st.steps_to_target, &st.minutes_to_target) {
        (Some(s), Some(m)) => println!(
            "  to {:.0}%: reached by {} of {n}; {:.0} steps [{:.0}, {:.0}], {:.1} min [{:.1}, {:.1}]",
            100.0 * st.target_success,
            st.reached_target,
            s.mean,
            s.lo,
            s.hi,
            m.mean,
            m.lo,
            m.hi
        ),
        _ => println!(
            "  to {:.0}%: reached by none of {n}",
            100.0 * st.target_success
        ),
    }
    if let Some(g) = &st.selection_gap {
        println!(
            "  stopping evaluation minus its confirmation on fresh scenes: {:+.1} points [{:+.1}, {:+.1}] over {} confirmations",
            100.0 * g.mean,
            100.0 * g.lo,
            100.0 * g.hi,
            g.n
        );
    }
    println!(
        "  updates per step {:.2}; study.json and band.png in {}",
        st.utd.mean,
        out.display()
    );
}

/// One run of [`run_job`] in `out` with `cfg`: its reward source, progress bar and lines.
fn run_one(
    a: &TrainArgs,
    real: Option<&str>,
    cfg: &TrainConfig,
    out: &Path,
    job: &mut impl FnMut(
        &TrainConfig,
        &Path,
        Option<RewardPlugin>,
        &mut dyn FnMut(Progress),
    ) -> std::result::Result<Summary, TrainError>,
) -> Result<Summary> {
    let task = reflex_sim::Task::load(&cfg.task).with_context(|| format!("task {}", cfg.task))?;
    let flags = RewardFlags {
        source: a.reward,
        classifier: a.classifier.clone(),
        vlm_url: a.vlm_url.clone(),
        vlm_model: a.vlm_model.clone(),
    };
    let (plugin, mut oracle) =
        reward_plugin(&task, cfg.seed, &cfg.reward, &flags, out).map_err(|e| anyhow::anyhow!(e))?;
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
    let summary = job(cfg, out, plugin, &mut report)
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
    for c in &summary.confirmations {
        println!(
            "evaluation at {} steps ({:.0}%) confirmed on {} fresh scenes: {:.0}%, {}",
            c.env_steps,
            100.0 * c.eval_success_rate,
            c.episodes,
            100.0 * c.success_rate,
            if c.passed {
                "the target is reached"
            } else {
                "below the target, training went on"
            }
        );
    }
    if let Some(h) = summary.handed_over.as_ref().filter(|h| h.why != "last") {
        println!(
            "policy.safetensors holds the best evaluation's weights ({:.0}% at {} steps), not the last",
            100.0 * h.success_rate,
            h.env_steps
        );
    }
    if let Some(h) = &summary.heldout {
        println!(
            "held out: {:.1}% success over {} episodes no run trained or stopped on (the figure to report)",
            100.0 * h.success_rate,
            h.episodes
        );
    }
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
    Ok(summary)
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
    if let Some(o) = a.obs {
        cfg.obs = match o {
            ObsArg::State => reflex_jobs::train::config::ObsMode::State,
            ObsArg::Pixels => reflex_jobs::train::config::ObsMode::Pixels,
        };
    }
    if !a.demo_sessions.is_empty() {
        cfg.demo_sessions = a.demo_sessions.clone();
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
    /// Seed of the episodes [default: the held-out seeds every run's summary.json reports
    /// on, which no run trains, demonstrates or stops on].
    #[arg(long)]
    seed: Option<u64>,
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
                "episodes": a.episodes, "seed": a.seed, "heldout": a.seed.is_none(),
                "success_rate": success, "mean_return": ret})
        );
    }
    Ok(())
}

/// Arguments of `reflex study`.
#[derive(Args)]
pub struct StudyArgs {
    /// Finished run directories of one task and reward source (each with its summary.json
    /// and progress.json), one per seed.
    #[arg(required = true)]
    runs: Vec<PathBuf>,
    /// Where study.json and band.png go.
    #[arg(long)]
    out: PathBuf,
    /// Print study.json as the last line.
    #[arg(long)]
    json: bool,
}

pub fn run_study(a: &StudyArgs) -> Result<()> {
    let st = reflex_jobs::train::study(&a.runs, &a.out)?;
    print_study(&st, &a.out);
    if a.json {
        println!("{}", serde_json::to_string(&st)?);
    }
    Ok(())
}
