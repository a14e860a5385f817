//! `reflex teleop --learn`: the session continues a training run. Its directory starts as a
//! copy of the run's (configuration, cloned base, replay with the demonstrations, newest
//! checkpoint), so the run itself is never written to; the learner trains on its own thread
//! from what the session's loop does, operator takeovers going to both the demonstration and
//! the online buffers, and publishes the exploring actor to the running policy (a weights swap,
//! never a wait). The directory stays a run directory: `reflex eval --policy DIR` evaluates it,
//! and `--resume` reopens it.

use crate::policies::{load_for, meta_for};
use crate::run::RunError;
use crate::train::driver::open_learner;
use crate::train::TrainConfig;
use reflex_learn::learner::{Learner, LearnerShared};
use reflex_learn::nn::INPUT_MIN_STD;
use reflex_policy::{Mlp, ObsLayout, Role, WeightsSlot};
use reflex_sim::Task;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where a learning session keeps its run.
#[derive(Clone, Debug)]
pub struct LearnSpec {
    /// The training run to continue (`reflex train`'s output directory); not needed with
    /// `resume`.
    pub from: Option<PathBuf>,
    /// The session's own directory.
    pub dir: PathBuf,
    /// Reopen `dir` (a session stopped earlier) instead of starting it from `from`.
    pub resume: bool,
    /// Seconds between snapshots of the deployed policy (`snapshots/policy-<s>s.safetensors`),
    /// for evaluating the session's progress afterwards; 0: none.
    pub snapshot_every_s: f64,
    /// Critic updates per environment step during the session (the run's own ratio when
    /// `None`). A real-time arm gives about ten steps a second, so the learner has room for
    /// many updates per step that a simulator run spends on simulating.
    pub utd: Option<f32>,
    /// Weight of the actor's imitation term on demonstrations and operator takeovers
    /// (`agent.bc_weight`; the run's own when `None`).
    pub bc_weight: Option<f32>,
}

/// What a run directory must hold to be continued.
const RUN_FILES: [&str; 2] = ["config.toml", "base.safetensors"];

fn setting(msg: String) -> RunError {
    RunError::Setting(msg)
}

fn copy_dir(from: &Path, to: &Path) -> Result<u64, RunError> {
    let mut bytes = 0;
    std::fs::create_dir_all(to).map_err(|e| setting(format!("{}: {e}", to.display())))?;
    let entries =
        std::fs::read_dir(from).map_err(|e| setting(format!("{}: {e}", from.display())))?;
    for entry in entries {
        let entry = entry.map_err(|e| setting(format!("{}: {e}", from.display())))?;
        let path = entry.path();
        if path.is_file() {
            bytes += std::fs::copy(&path, to.join(entry.file_name()))
                .map_err(|e| setting(format!("copying {}: {e}", path.display())))?;
        }
    }
    Ok(bytes)
}

/// Makes (or, resuming, checks) the session's directory and reads its training configuration,
/// which must be for `task`.
pub(super) fn prepare(spec: &LearnSpec, task: &Task) -> Result<TrainConfig, RunError> {
    let dir = &spec.dir;
    if spec.resume {
        for f in RUN_FILES {
            if !dir.join(f).exists() {
                return Err(setting(format!(
                    "--resume: {} has no {f}: it is not a learning session's directory",
                    dir.display()
                )));
            }
        }
    } else {
        let from = spec.from.as_ref().ok_or_else(|| {
            setting("--learn needs --policy RUN_DIR: the training run to continue".into())
        })?;
        if !from.is_dir() {
            return Err(setting(format!(
                "--policy {}: --learn continues a training run, so this must be a run directory (`reflex train --out`)",
                from.display()
            )));
        }
        for f in RUN_FILES {
            if !from.join(f).exists() {
                return Err(setting(format!(
                    "--policy {}: no {f} in it: not a training run's directory",
                    from.display()
                )));
            }
        }
        if dir.exists() && std::fs::read_dir(dir).map_or(true, |mut d| d.next().is_some()) {
            return Err(setting(format!(
                "--out {}: already exists and is not empty: pass --resume to continue that session, or another --out",
                dir.display()
            )));
        }
        std::fs::create_dir_all(dir).map_err(|e| setting(format!("{}: {e}", dir.display())))?;
        for f in RUN_FILES {
            std::fs::copy(from.join(f), dir.join(f))
                .map_err(|e| setting(format!("copying {}: {e}", from.join(f).display())))?;
        }
        let mut bytes = 0;
        for d in ["replay", "checkpoints"] {
            if from.join(d).is_dir() {
                bytes += copy_dir(&from.join(d), &dir.join(d))?;
            }
        }
        tracing::info!(
            from = %from.display(),
            to = %dir.display(),
            bytes,
            "the session starts from a copy of the run"
        );
    }
    let cfg_path = dir.join("config.toml");
    let mut cfg = TrainConfig::load(&cfg_path).map_err(|e| setting(e.to_string()))?;
    if let Some(u) = spec.utd {
        cfg.learner.utd = u;
        cfg.learner
            .validate()
            .map_err(|e| setting(format!("--utd: {e}")))?;
    }
    if let Some(w) = spec.bc_weight {
        cfg.agent.bc_weight = w;
        cfg.agent
            .validate()
            .map_err(|e| setting(format!("--bc-weight: {e}")))?;
    }
    // The directory's configuration is the session's as it runs (what `--resume` reads).
    let text =
        toml::to_string(&cfg).map_err(|e| setting(format!("{}: {e}", cfg_path.display())))?;
    std::fs::write(&cfg_path, text).map_err(|e| setting(format!("{}: {e}", cfg_path.display())))?;
    let run_task =
        Task::load(&cfg.task).map_err(|e| setting(format!("{}: task: {e}", cfg_path.display())))?;
    if run_task.name != task.name {
        return Err(setting(format!(
            "{}: the run trained on task `{}`, the session runs `{}`",
            cfg_path.display(),
            run_task.name,
            task.name
        )));
    }
    Ok(cfg)
}

/// The learner of a session, before and after its thread starts.
pub(super) struct LiveLearner {
    pub cfg: TrainConfig,
    pub base: Mlp,
    pub actor_slot: Arc<WeightsSlot>,
    pub shared: Arc<LearnerShared>,
    pub learner: Learner,
    /// The id the session's first episode takes (after the replay's newest).
    pub first_episode: u64,
    pub layout: ObsLayout,
}

/// Opens the learner over the session's directory (its replay and newest checkpoint).
pub(super) fn open(
    cfg: TrainConfig,
    dir: &Path,
    task: &Task,
    layout: ObsLayout,
) -> Result<LiveLearner, RunError> {
    let obs_dim = layout.dim();
    let act_dim = task.action_space.dim();
    let base = load_for(&dir.join("base.safetensors"), Role::Base, task, layout)?.mlp;
    let (mut learner, actor_slot, _) = open_learner(&cfg, dir, &base, obs_dim, act_dim, true)
        .map_err(|e| setting(e.to_string()))?;
    if learner.agent.updates == 0 {
        learner.fit_normaliser(INPUT_MIN_STD);
    }
    // Publish what the checkpoint holds: the running policy starts from it.
    learner.publish();
    let first_episode = learner.max_online_episode().map_or(1, |m| m + 1);
    Ok(LiveLearner {
        cfg,
        base,
        actor_slot,
        shared: learner.shared.clone(),
        learner,
        first_episode,
        layout,
    })
}

/// Saves the deployed form of the exploring actor `slot` holds to `path`.
pub(super) fn save_deployed(
    slot: &WeightsSlot,
    task: &Task,
    layout: ObsLayout,
    cfg: &TrainConfig,
    path: &Path,
) -> Result<(), String> {
    let mlp = reflex_learn::sac::deterministic_of(&slot.snapshot(), task.action_space.dim())?;
    let meta = meta_for(
        Role::Residual,
        task,
        layout,
        Some(cfg.runtime.residual_scale),
        cfg.runtime.servo_rate_hz,
        cfg.seed,
    );
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    reflex_policy::PolicyFile::save(&mlp, &meta, path).map_err(|e| e.to_string())
}
