//! `reflex eval`: a trained run directory (or a base alone) on seeded episodes.

use super::config::{stage, TrainConfig, TrainError};
use super::episodes::{run_episodes, seeds, success_and_return};
use crate::arms::{runtime, Arms, SimArms};
use reflex_runtime::{Mlp, NetPolicy, ResidualPolicy, WeightsSlot};
use reflex_sim::Task;
use std::path::Path;

/// Evaluates a trained run directory (or a base alone) on `episodes` seeded episodes:
/// returns the success rate and the mean return.
pub fn evaluate_run(
    task_name: &str,
    run: &Path,
    episodes: usize,
    seed: u64,
    loop_rate_hz: f64,
) -> Result<(f64, f64), TrainError> {
    let task = Task::load(task_name).map_err(stage("task"))?;
    let act_dim = task.action_space.dim();
    let arms = SimArms::new(task, loop_rate_hz);
    let obs_dim = arms.obs_dim()?;
    let cfg_path = run.join("config.toml");
    let scale = if cfg_path.exists() {
        TrainConfig::load(&cfg_path)?.residual_scale
    } else {
        TrainConfig::default().residual_scale
    };
    let base = Mlp::load(&run.join("base.safetensors")).map_err(stage("base policy"))?;
    let base = NetPolicy::new(WeightsSlot::new(base), obs_dim, act_dim).map_err(|e| {
        stage("base policy")(format!("{}: {e}", run.join("base.safetensors").display()))
    })?;
    let policy_path = run.join("policy.safetensors");
    let residual = if policy_path.exists() {
        let mlp = Mlp::load(&policy_path).map_err(stage("policy"))?;
        Some(
            ResidualPolicy::new(WeightsSlot::new(mlp), obs_dim, act_dim)
                .map_err(|e| stage("policy")(format!("{}: {e}", policy_path.display())))?,
        )
    } else {
        None
    };
    let mut rt = runtime(&arms, 0, Box::new(base), residual, scale)?;
    let (r, _) = run_episodes(&mut rt, seeds(seed, 4, episodes), false)?;
    Ok(success_and_return(&r))
}
