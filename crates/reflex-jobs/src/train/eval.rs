//! `reflex eval`: a trained run directory (or a base alone) on seeded episodes.

use super::config::{stage, TrainConfig, TrainError};
use super::episodes::{heldout_seeds, run_episodes, seeds, success_and_return, HELDOUT_FIRST_SEED};
use super::report::HeldOut;
use crate::arms::{runtime, Arms, SimArms};
use crate::policies::load_for;
use reflex_core::{Robot, SceneReset};
use reflex_policy::Role;
use reflex_runtime::{NetPolicy, ResidualPolicy, Runtime, WeightsSlot};
use reflex_sim::Task;
use std::path::Path;

/// Evaluates a trained run directory (or a base alone) on `episodes` seeded episodes with the
/// task, loop rate and residual scale its training used (from its `config.toml`, which must be
/// there); `task`, when given, must be the run's. `residual` replaces the run's
/// `policy.safetensors` (a snapshot a learning session wrote, say). The episodes' seeds are
/// the held-out ones every run's `summary.json` reports on, or with `seed` a stream of that
/// seed. Returns the success rate and the mean return.
pub fn evaluate_run(
    run: &Path,
    task: Option<&str>,
    residual: Option<&Path>,
    episodes: usize,
    seed: Option<u64>,
) -> Result<(f64, f64), TrainError> {
    let cfg_path = run.join("config.toml");
    if !cfg_path.exists() {
        return Err(TrainError::Config {
            path: cfg_path,
            message: "missing: a run directory holds the config.toml its training wrote (task, \
                      loop rate and residual scale come from it)"
                .into(),
        });
    }
    let cfg = TrainConfig::load(&cfg_path)?;
    if let Some(t) = task {
        if t != cfg.task {
            return Err(TrainError::Config {
                path: cfg_path,
                message: format!("the run trained on task `{}`, not `{t}`", cfg.task),
            });
        }
    }
    let task = Task::load(&cfg.task).map_err(stage("task"))?;
    let act_dim = task.action_space.dim();
    let arms = SimArms::new(task.clone(), cfg.runtime.servo_rate_hz);
    if cfg.obs == super::config::ObsMode::Pixels {
        let r = match seed {
            Some(seed) => super::pixels::evaluate_pixel_run(
                &arms,
                &cfg,
                run,
                residual,
                seeds(seed, 4, episodes),
            )?,
            None => super::pixels::evaluate_pixel_run(
                &arms,
                &cfg,
                run,
                residual,
                heldout_seeds(episodes),
            )?,
        };
        return Ok(success_and_return(&r));
    }
    let layout = arms.obs_layout()?;
    let obs_dim = layout.dim();
    let scale = cfg.runtime.residual_scale;
    let base_path = run.join("base.safetensors");
    let base = load_for(&base_path, Role::Base, &task, layout).map_err(stage("base policy"))?;
    let base = NetPolicy::new(WeightsSlot::new(base.mlp), obs_dim, act_dim)
        .map_err(|e| stage("base policy")(format!("{}: {e}", base_path.display())))?;
    let policy_path = residual.map_or_else(|| run.join("policy.safetensors"), Path::to_path_buf);
    if residual.is_some() && !policy_path.exists() {
        return Err(stage("policy")(format!(
            "{}: no such file",
            policy_path.display()
        )));
    }
    let residual = if policy_path.exists() {
        let file =
            load_for(&policy_path, Role::Residual, &task, layout).map_err(stage("policy"))?;
        if let Some(s) = file.meta.as_ref().and_then(|m| m.residual_scale) {
            if (s - scale).abs() > 1e-6 {
                return Err(stage("policy")(format!(
                    "{}: trained with residual_scale {s}, the run's config.toml says {scale}",
                    policy_path.display()
                )));
            }
        }
        Some(
            ResidualPolicy::new(WeightsSlot::new(file.mlp), obs_dim, act_dim)
                .map_err(|e| stage("policy")(format!("{}: {e}", policy_path.display())))?,
        )
    } else {
        None
    };
    let mut rt = runtime(&arms, 0, Box::new(base), residual, &cfg.runtime)?;
    let (r, _) = match seed {
        Some(seed) => run_episodes(&mut rt, seeds(seed, 4, episodes), false, false)?,
        None => run_episodes(&mut rt, heldout_seeds(episodes), false, false)?,
    };
    Ok(success_and_return(&r))
}

/// The held-out evaluation of a finished run: `episodes` episodes of `rt`'s policy on the
/// held-out seeds. An interrupt (the arm braked to rest) leaves it unreported: `None`.
pub(crate) fn heldout_evaluation<R: Robot + SceneReset>(
    rt: &mut Runtime<R>,
    episodes: usize,
) -> Result<Option<HeldOut>, TrainError> {
    match run_episodes(rt, heldout_seeds(episodes), false, false) {
        Ok((r, _)) => Ok(Some(HeldOut::from_results(HELDOUT_FIRST_SEED, &r))),
        Err(TrainError::Interrupted) => {
            tracing::warn!("the held-out evaluation was interrupted: none is reported");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}
