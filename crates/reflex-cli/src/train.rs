//! `reflex train` and `reflex eval`: the main job and its check.

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use reflex_classifier::training::{classifier_plugin, ClassifierStageConfig};
use reflex_classifier::Classifier;
use reflex_learn::stage::RewardPlugin;
use reflex_learn::train::{evaluate_run, train_with, Progress, TrainConfig};
use reflex_reward::oracle::{Oracle, OracleConfig};
use reflex_reward::preference_training::{preference_plugin, PreferenceStageConfig};
use reflex_reward::training::{keypoint_plugin, KeypointStageConfig};
use reflex_reward::vlm::VlmConfig;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;

/// Arguments of `reflex train`.
#[derive(Args)]
pub struct TrainArgs {
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
    resume: bool,
    /// Where training rewards come from [default: the config file's `[reward] source`, else
    /// task].
    #[arg(long, value_enum)]
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
    json: bool,
}

/// Reward sources `reflex train --reward` accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RewardSource {
    /// The task file's reward terms.
    Task,
    /// Keypoints proposed by a VLM, lifted to 3D and tracked (dense terms), plus the task's
    /// success.
    VlmKeypoints,
    /// A reward model learned during training from VLM preferences between frames (potential
    /// shaping of the replay), plus the task's success.
    VlmPreference,
    /// A trained success classifier on camera frames (`--classifier DIR`), as the sparse
    /// reward.
    Classifier,
}

/// The `[reward]` table of a training config file; flags override it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RewardSection {
    /// `task`, `vlm-keypoints`, `vlm-preference` or `classifier`.
    pub source: Option<RewardSource>,
    /// The VLM client (`base_url`, `model`, `api_key_env`, timeouts, retries, concurrency,
    /// queue, budget...). Without it (and without `--vlm-url`) a built-in oracle answers.
    pub vlm: Option<VlmConfig>,
    /// Directory of a trained success classifier.
    pub classifier: Option<PathBuf>,
    /// Keypoint rewards.
    pub keypoints: KeypointStageConfig,
    /// The preference model during training.
    pub preference: PreferenceStageConfig,
    /// The classifier reward during training.
    pub classifier_stage: ClassifierStageConfig,
}

impl RewardSection {
    /// Reads the `[reward]` table of `cfg` (loaded from `file`); errors name the file and field.
    pub fn from_config(cfg: &TrainConfig, file: Option<&std::path::Path>) -> Result<Self> {
        let where_ = file.map_or("the configuration".to_owned(), |p| p.display().to_string());
        toml::Value::Table(cfg.reward.clone())
            .try_into()
            .map_err(|e: toml::de::Error| anyhow::anyhow!("{where_}: [reward]: {}", e.message()))
    }
}

/// The reward plugin for the run, and the built-in oracle server when one is needed (kept
/// alive for the run).
fn reward_plugin(
    a: &TrainArgs,
    cfg: &TrainConfig,
    section: &RewardSection,
    out: &std::path::Path,
) -> Result<(Option<RewardPlugin>, Option<Oracle>)> {
    let source = a.reward.or(section.source).unwrap_or(RewardSource::Task);
    let client = || {
        crate::vlm_oracle::client_for(
            section.vlm.clone(),
            a.vlm_url.as_deref(),
            a.vlm_model.as_deref(),
            OracleConfig::default(),
            Some(out.join("vlm-cache")),
        )
    };
    let task = || reflex_sim::Task::load(&cfg.task).context("task");
    match source {
        RewardSource::Task => Ok((None, None)),
        RewardSource::VlmKeypoints => {
            let (client, oracle) = client()?;
            let plugin = keypoint_plugin(&task()?, Arc::new(client), section.keypoints.clone())
                .map_err(|e| anyhow::anyhow!("--reward vlm-keypoints: {e}"))?;
            Ok((Some(plugin), oracle))
        }
        RewardSource::VlmPreference => {
            let (client, oracle) = client()?;
            let mut pcfg = section.preference.clone();
            // The run's seed, unless the file gives the model its own.
            let own_seed = cfg.reward.get("preference").and_then(|p| p.get("seed"));
            if own_seed.is_none() {
                pcfg.seed = cfg.seed;
            }
            let plugin = preference_plugin(&task()?, Arc::new(client), pcfg)
                .map_err(|e| anyhow::anyhow!("--reward vlm-preference: {e}"))?;
            Ok((Some(plugin), oracle))
        }
        RewardSource::Classifier => {
            let Some(dir) = a.classifier.as_ref().or(section.classifier.as_ref()) else {
                bail!("--reward classifier needs --classifier DIR (a `reflex classifier train` output)");
            };
            let classifier =
                Classifier::load(dir).with_context(|| format!("--classifier {}", dir.display()))?;
            let task_name = task()?.name;
            if classifier.meta.task != task_name {
                bail!(
                    "--classifier {}: trained on task `{}`, not `{task_name}`",
                    dir.display(),
                    classifier.meta.task
                );
            }
            let plugin = classifier_plugin(classifier, section.classifier_stage.clone())
                .map_err(|e| anyhow::anyhow!("--reward classifier: {e}"))?;
            Ok((Some(plugin), None))
        }
    }
}

pub fn run_train(a: &TrainArgs) -> Result<()> {
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
        .unwrap_or_else(|| PathBuf::from("runs").join(format!("{name}-s{}", cfg.seed)));
    let section = RewardSection::from_config(&cfg, a.config.as_deref())?;
    let (plugin, oracle) = reward_plugin(a, &cfg, &section, &out)?;
    crate::stop_on_signals();
    let bar = ProgressBar::new(1000);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {elapsed_precise} [{bar:30}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let summary = train_with(&cfg, &out, a.resume, plugin, |p| match p {
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
    })
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
    /// Task name or file.
    #[arg(long)]
    task: String,
    /// Run directory (base.safetensors, policy.safetensors, config.toml).
    #[arg(long)]
    policy: PathBuf,
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
    let (success, ret) = evaluate_run(&a.task, &a.policy, a.episodes, a.seed, 500.0)?;
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
            serde_json::json!({"task": a.task, "policy": a.policy, "episodes": a.episodes,
                "success_rate": success, "mean_return": ret})
        );
    }
    Ok(())
}
