//! The policy file: an [`Mlp`]'s safetensors with Reflex's metadata under one key
//! ([`POLICY_META_KEY`], JSON). Files from elsewhere (PyTorch, older runs) carry no metadata and
//! still load; a file with metadata is checked against the task it is used on.

use crate::mlp::{Mlp, WeightsError};
use reflex_core::{ActionSpace, Observation};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Version of the metadata's meaning.
pub const POLICY_FORMAT: u32 = 1;

/// The safetensors metadata key the policy's metadata is stored under.
pub const POLICY_META_KEY: &str = "reflex_policy";

/// What a network is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Observation in, action out.
    Base,
    /// Observation and base action in, correction out (`a = base + scale * residual`).
    Residual,
}

/// The flat observation's layout (`Observation::rebuild_flat`): the robot's 22 values, then 7
/// per object, 3 per keypoint and 3 per goal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObsLayout {
    /// Tracked objects.
    pub objects: usize,
    /// Keypoints.
    pub keypoints: usize,
    /// Goal points.
    pub goals: usize,
}

impl ObsLayout {
    /// The layout of `obs`.
    pub fn of(obs: &Observation) -> Self {
        Self {
            objects: obs.num_objects,
            keypoints: obs.num_keypoints,
            goals: obs.num_goals,
        }
    }

    /// Width of the flat observation.
    pub fn dim(&self) -> usize {
        Observation::flat_len(self.objects, self.keypoints, self.goals)
    }
}

impl std::fmt::Display for ObsLayout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "robot 22 + {} objects x 7 + {} keypoints x 3 + {} goals x 3 = {}",
            self.objects,
            self.keypoints,
            self.goals,
            self.dim()
        )
    }
}

/// What a policy file says about its network.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyMeta {
    /// [`POLICY_FORMAT`] when written.
    pub format_version: u32,
    /// Base or residual.
    pub role: Role,
    /// The task it was trained on.
    pub task: String,
    /// The observation it reads.
    pub obs_layout: ObsLayout,
    /// The actions it writes.
    pub action_space: ActionSpace,
    /// How inputs are normalised: `folded` (the training normaliser is folded into the first
    /// layer: the network reads raw observations).
    pub normaliser: String,
    /// For a residual: the scale in `a = base + scale * residual` it was trained with.
    pub residual_scale: Option<f32>,
    /// The task's decision rate it was trained at, Hz.
    pub policy_rate_hz: f64,
    /// The control loop's rate it was trained at, Hz.
    pub servo_rate_hz: f64,
    /// The training run's seed.
    pub seed: u64,
    /// The code's commit (`git describe`).
    pub commit: String,
}

/// Why a policy file was refused; names the file and what does not fit.
#[derive(Debug, thiserror::Error)]
pub enum PolicyFileError {
    /// The weights could not be read.
    #[error(transparent)]
    Weights(#[from] WeightsError),
    /// The metadata is unreadable.
    #[error("{path}: metadata `{POLICY_META_KEY}`: {message}")]
    Meta {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The file does not fit the task it is used on.
    #[error("{path}: {what}: the file has {file}, task `{task}` has {wanted}")]
    Mismatch {
        /// The file.
        path: PathBuf,
        /// What differs (`observation layout`, `action space`, `role`, ...).
        what: &'static str,
        /// The file's.
        file: String,
        /// The task.
        task: String,
        /// The task's.
        wanted: String,
    },
}

/// A network and, when the file has it, its metadata.
#[derive(Clone, Debug)]
pub struct PolicyFile {
    /// The network.
    pub mlp: Mlp,
    /// Its metadata (none for a bare weights file).
    pub meta: Option<PolicyMeta>,
}

impl PolicyFile {
    /// Reads `path`.
    pub fn load(path: &Path) -> Result<Self, PolicyFileError> {
        let (mlp, extra) = Mlp::load_with_metadata(path)?;
        let meta = match extra.get(POLICY_META_KEY) {
            None => None,
            Some(text) => {
                let meta: PolicyMeta =
                    serde_json::from_str(text).map_err(|e| PolicyFileError::Meta {
                        path: path.to_owned(),
                        message: e.to_string(),
                    })?;
                if meta.format_version > POLICY_FORMAT {
                    return Err(PolicyFileError::Meta {
                        path: path.to_owned(),
                        message: format!(
                            "format_version {} is newer than this build reads ({POLICY_FORMAT})",
                            meta.format_version
                        ),
                    });
                }
                Some(meta)
            }
        };
        Ok(Self { mlp, meta })
    }

    /// Writes `mlp` with `meta` to `path` (atomically and durably, like [`Mlp::save`]).
    pub fn save(mlp: &Mlp, meta: &PolicyMeta, path: &Path) -> Result<(), WeightsError> {
        let text = serde_json::to_string(meta)
            .unwrap_or_else(|_| unreachable!("the metadata always serialises"));
        mlp.save_with_metadata(path, &HashMap::from([(POLICY_META_KEY.to_owned(), text)]))
    }

    /// Checks the file against the task it is about to run: its role, observation layout and
    /// action space must be the task's. A file without metadata passes (its shapes are checked
    /// when the policy is built). `path` names the file in errors.
    pub fn check(
        &self,
        path: &Path,
        role: Role,
        task: &str,
        layout: ObsLayout,
        action_space: ActionSpace,
    ) -> Result<(), PolicyFileError> {
        let Some(m) = &self.meta else {
            return Ok(());
        };
        let mismatch = |what, file: String, wanted: String| PolicyFileError::Mismatch {
            path: path.to_owned(),
            what,
            file,
            task: task.to_owned(),
            wanted,
        };
        if m.role != role {
            return Err(mismatch(
                "role",
                format!("{:?}", m.role),
                format!("{role:?} wanted"),
            ));
        }
        if m.obs_layout != layout {
            return Err(mismatch(
                "observation layout",
                m.obs_layout.to_string(),
                layout.to_string(),
            ));
        }
        if m.action_space != action_space {
            return Err(mismatch(
                "action space",
                format!("{:?}", m.action_space),
                format!("{action_space:?}"),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mlp::Activation;

    fn meta() -> PolicyMeta {
        PolicyMeta {
            format_version: POLICY_FORMAT,
            role: Role::Residual,
            task: "pick_cube".into(),
            obs_layout: ObsLayout {
                objects: 1,
                keypoints: 2,
                goals: 0,
            },
            action_space: ActionSpace::EeDelta,
            normaliser: "folded".into(),
            residual_scale: Some(0.3),
            policy_rate_hz: 10.0,
            servo_rate_hz: 500.0,
            seed: 3,
            commit: "abc".into(),
        }
    }

    #[test]
    fn metadata_survives_a_save_and_a_mismatch_names_file_task_and_both_layouts() {
        let dir = std::env::temp_dir().join(format!("reflex-policy-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("policy.safetensors");
        let mlp = Mlp::zeros(&[35 + 7, 8, 7], Activation::Relu, Activation::Tanh);
        PolicyFile::save(&mlp, &meta(), &path).unwrap();
        let f = PolicyFile::load(&path).unwrap();
        assert_eq!(f.meta.as_ref(), Some(&meta()));
        assert_eq!(f.mlp.dims(), mlp.dims());
        let layout = meta().obs_layout;
        f.check(
            &path,
            Role::Residual,
            "pick_cube",
            layout,
            ActionSpace::EeDelta,
        )
        .unwrap();
        let other = ObsLayout {
            objects: 2,
            keypoints: 2,
            goals: 1,
        };
        let e = f
            .check(&path, Role::Residual, "push", other, ActionSpace::EeDelta)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("policy.safetensors")
                && e.contains("observation layout")
                && e.contains("`push`")
                && e.contains("= 35")
                && e.contains("= 45"),
            "{e}"
        );
        let e = f
            .check(&path, Role::Base, "pick_cube", layout, ActionSpace::EeDelta)
            .unwrap_err()
            .to_string();
        assert!(e.contains("role"), "{e}");
        // A bare weights file (no metadata) loads and passes.
        mlp.save(&path).unwrap();
        let bare = PolicyFile::load(&path).unwrap();
        assert!(bare.meta.is_none());
        bare.check(&path, Role::Base, "x", other, ActionSpace::JointDelta)
            .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unreadable_or_newer_metadata_is_refused_naming_the_key() {
        let dir = std::env::temp_dir().join(format!("reflex-policy-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("p.safetensors");
        let mlp = Mlp::zeros(&[4, 2], Activation::Relu, Activation::Identity);
        mlp.save_with_metadata(
            &path,
            &HashMap::from([(POLICY_META_KEY.to_owned(), "{not json".to_owned())]),
        )
        .unwrap();
        let e = PolicyFile::load(&path).unwrap_err().to_string();
        assert!(
            e.contains("p.safetensors") && e.contains(POLICY_META_KEY),
            "{e}"
        );
        let mut m = meta();
        m.format_version = POLICY_FORMAT + 1;
        PolicyFile::save(&mlp, &m, &path).unwrap();
        let e = PolicyFile::load(&path).unwrap_err().to_string();
        assert!(e.contains("newer"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
