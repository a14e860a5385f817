//! Policy files for a task: their metadata (role, task, observation layout, action space,
//! residual scale, rates, seed, commit; `PolicyFile::save` writes it), and reading a file back
//! checked against the task it is about to run, so a file trained for another layout is
//! refused naming both.

use crate::train::COMMIT;
use reflex_policy::{ObsLayout, PolicyFile, PolicyFileError, PolicyMeta, Role, POLICY_FORMAT};
use reflex_sim::Task;
use std::path::Path;

/// The metadata of a network trained on `task` with this `layout`.
pub fn meta_for(
    role: Role,
    task: &Task,
    layout: ObsLayout,
    residual_scale: Option<f32>,
    servo_rate_hz: f64,
    seed: u64,
) -> PolicyMeta {
    PolicyMeta {
        format_version: POLICY_FORMAT,
        role,
        task: task.name.clone(),
        obs_layout: layout,
        action_space: task.action_space,
        normaliser: "folded".into(),
        residual_scale: residual_scale.filter(|_| role == Role::Residual),
        policy_rate_hz: task.control_rate_hz,
        servo_rate_hz,
        seed,
        commit: COMMIT.to_owned(),
    }
}

/// Reads `path` as a `role` network for `task` with `layout`, refusing a file whose metadata
/// says it was made for another layout, action space or role, or for another decision rate.
pub fn load_for(
    path: &Path,
    role: Role,
    task: &Task,
    layout: ObsLayout,
) -> Result<PolicyFile, PolicyFileError> {
    let file = PolicyFile::load(path)?;
    file.check(path, role, &task.name, layout, task.action_space)?;
    if let Some(m) = &file.meta {
        if (m.policy_rate_hz - task.control_rate_hz).abs() > 1e-9 {
            return Err(PolicyFileError::Mismatch {
                path: path.to_owned(),
                what: "policy rate",
                file: format!("{} Hz", m.policy_rate_hz),
                task: task.name.clone(),
                wanted: format!("{} Hz", task.control_rate_hz),
            });
        }
    }
    Ok(file)
}
