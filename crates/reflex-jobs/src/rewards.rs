//! The reward source of a training run: the `[reward]` table of its configuration (typed, so an
//! unknown key is refused naming the file and key), the flags that override it, and the
//! `reflex_learn::stage` plugin built from them.

use reflex_classifier::classifier_stage::{classifier_plugin, ClassifierStageConfig};
use reflex_classifier::Classifier;
use reflex_learn::stage::RewardPlugin;
use reflex_reward::keypoint_stage::{keypoint_plugin, KeypointStageConfig};
use reflex_reward::oracle::{Oracle, OracleConfig};
use reflex_reward::preference_stage::{preference_plugin, PreferenceStageConfig};
use reflex_reward::vlm::{VlmClient, VlmConfig};
use reflex_sim::Task;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where training rewards come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
    /// A trained success classifier on camera frames, as the sparse reward.
    Classifier,
    /// The baseline: the task's success alone, none of its shaping terms.
    Sparse,
}

impl RewardSource {
    /// Every source's name, as flags and files spell it.
    pub const NAMES: [&'static str; 5] = [
        "task",
        "vlm-keypoints",
        "vlm-preference",
        "classifier",
        "sparse",
    ];
}

impl std::str::FromStr for RewardSource {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "task" => Ok(Self::Task),
            "vlm-keypoints" => Ok(Self::VlmKeypoints),
            "vlm-preference" => Ok(Self::VlmPreference),
            "classifier" => Ok(Self::Classifier),
            "sparse" => Ok(Self::Sparse),
            _ => Err(format!(
                "unknown reward source `{s}` (one of: {})",
                Self::NAMES.join(", ")
            )),
        }
    }
}

/// The `[reward]` table of a training configuration.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RewardSection {
    /// `task`, `vlm-keypoints`, `vlm-preference`, `classifier` or `sparse` (default: task).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<RewardSource>,
    /// The VLM client (`base_url`, `model`, `api_key_env`, timeouts, retries, concurrency,
    /// queue, budget...). Without it (and without `--vlm-url`) a built-in oracle answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vlm: Option<VlmConfig>,
    /// Directory of a trained success classifier.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub classifier: Option<PathBuf>,
    /// Keypoint rewards.
    pub keypoints: KeypointStageConfig,
    /// The preference model during training.
    pub preference: PreferenceStageConfig,
    /// The classifier reward during training.
    pub classifier_stage: ClassifierStageConfig,
    /// The sparse baseline.
    pub sparse: SparseConfig,
    /// The built-in oracle's mistakes and faults, when it answers (no VLM server given).
    pub oracle: OracleSection,
}

/// The built-in VLM oracle's settings (`[reward.oracle]`), for simulated runs that study how
/// a reward source copes with a VLM's mistakes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OracleSection {
    /// Chance that an answer is wrong, 0..1.
    pub noise: f64,
    /// How wrong answers are wrong, drawn evenly: `random`, `wrong-part`, `distractor`,
    /// `wrong-way`, `left-right`, `depth`, `hedge`.
    pub noise_modes: Vec<reflex_reward::oracle::NoiseMode>,
    /// Delay before every answer, ms.
    pub latency_ms: u64,
    /// Chance of answering HTTP 500 or 429 instead, 0..1.
    pub error_rate: f64,
    /// Chance of answering prose with no answer in it, 0..1.
    pub garbage_rate: f64,
    /// Seed of its draws (default: the run's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

impl Default for OracleSection {
    fn default() -> Self {
        Self {
            noise: 0.0,
            noise_modes: vec![reflex_reward::oracle::NoiseMode::Random],
            latency_ms: 0,
            error_rate: 0.0,
            garbage_rate: 0.0,
            seed: None,
        }
    }
}

impl OracleSection {
    /// The oracle's configuration for a run with seed `seed`; errors name the field.
    pub fn config(&self, seed: u64) -> Result<OracleConfig, String> {
        for (name, v) in [
            ("noise", self.noise),
            ("error_rate", self.error_rate),
            ("garbage_rate", self.garbage_rate),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!("reward.oracle.{name}: must be in [0, 1], got {v}"));
            }
        }
        if self.error_rate + self.garbage_rate > 1.0 {
            return Err("reward.oracle: error_rate plus garbage_rate must not exceed 1".into());
        }
        Ok(OracleConfig {
            noise: self.noise,
            noise_modes: self.noise_modes.clone(),
            latency: std::time::Duration::from_millis(self.latency_ms),
            error_rate: self.error_rate,
            garbage_rate: self.garbage_rate,
            seed: self.seed.unwrap_or(seed),
        })
    }
}

/// The sparse baseline's reward (`[reward.sparse]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SparseConfig {
    /// Reward of a successful step (every other step earns 0); the other sources' success
    /// reward by default.
    pub success_reward: f64,
}

impl Default for SparseConfig {
    fn default() -> Self {
        Self {
            success_reward: 10.0,
        }
    }
}

/// What the command line overrides in [`RewardSection`].
#[derive(Clone, Debug, Default)]
pub struct RewardFlags {
    /// `--reward`.
    pub source: Option<RewardSource>,
    /// `--classifier DIR`.
    pub classifier: Option<PathBuf>,
    /// `--vlm-url`.
    pub vlm_url: Option<String>,
    /// `--vlm-model`.
    pub vlm_model: Option<String>,
}

/// The VLM client for a command's `--vlm-url` and `--vlm-model` over `settings` (a config
/// file's client settings); with no URL from either, a built-in oracle (configured by
/// `oracle`) is started on loopback and the client talks to it. Keep the returned oracle alive
/// as long as the client is used.
pub fn vlm_client(
    settings: Option<VlmConfig>,
    url: Option<&str>,
    model: Option<&str>,
    oracle: OracleConfig,
    cache_dir: Option<PathBuf>,
) -> Result<(VlmClient, Option<Oracle>), String> {
    let file_url = settings.as_ref().map(|s| s.base_url.clone());
    let (base_url, server) = match url.map(str::to_owned).or(file_url) {
        Some(u) => (u, None),
        None => {
            let o = Oracle::start(([127, 0, 0, 1], 0).into(), oracle)
                .map_err(|e| format!("starting the built-in VLM oracle: {e}"))?;
            tracing::info!(url = %o.base_url(), "no --vlm-url: a built-in oracle answers from simulator ground truth");
            (o.base_url(), Some(o))
        }
    };
    let mut cfg = settings.unwrap_or_default();
    cfg.base_url = base_url;
    if cfg.cache_dir.is_none() {
        cfg.cache_dir = cache_dir;
    }
    if let Some(m) = model {
        cfg.model = m.to_owned();
    }
    let client = VlmClient::start(cfg).map_err(|e| format!("--vlm-url: {e}"))?;
    Ok((client, server))
}

/// The reward plugin for a run on `task` with seed `seed` writing to `out`, and the built-in
/// oracle server when one is needed (keep it alive for the run). `None` for the task's own
/// rewards.
pub fn reward_plugin(
    task: &Task,
    seed: u64,
    section: &RewardSection,
    flags: &RewardFlags,
    out: &Path,
) -> Result<(Option<RewardPlugin>, Option<Oracle>), String> {
    let source = flags
        .source
        .or(section.source)
        .unwrap_or(RewardSource::Task);
    let oracle = section.oracle.config(seed)?;
    let client = || {
        vlm_client(
            section.vlm.clone(),
            flags.vlm_url.as_deref(),
            flags.vlm_model.as_deref(),
            oracle.clone(),
            Some(out.join("vlm-cache")),
        )
    };
    match source {
        RewardSource::Task => Ok((None, None)),
        RewardSource::Sparse => {
            let r = section.sparse.success_reward;
            if !(r.is_finite() && r > 0.0) {
                return Err(format!(
                    "reward.sparse.success_reward: must be positive, got {r}"
                ));
            }
            Ok((Some(reflex_learn::stage::sparse_plugin(r)), None))
        }
        RewardSource::VlmKeypoints => {
            if task.objects.is_empty() {
                return Err(format!(
                    "--reward vlm-keypoints: task `{}` has no objects to put keypoints on",
                    task.name
                ));
            }
            let (client, oracle) = client()?;
            let plugin = keypoint_plugin(
                &task.instruction,
                Arc::new(client),
                section.keypoints.clone(),
            )
            .map_err(|e| format!("--reward vlm-keypoints: {e}"))?;
            Ok((Some(plugin), oracle))
        }
        RewardSource::VlmPreference => {
            let (client, oracle) = client()?;
            let mut pcfg = section.preference.clone();
            // The run's seed, unless the file gives the model its own.
            pcfg.seed.get_or_insert(seed);
            let plugin = preference_plugin(&task.instruction, Arc::new(client), pcfg)
                .map_err(|e| format!("--reward vlm-preference: {e}"))?;
            Ok((Some(plugin), oracle))
        }
        RewardSource::Classifier => {
            let Some(dir) = flags.classifier.as_ref().or(section.classifier.as_ref()) else {
                return Err(
                    "--reward classifier needs --classifier DIR (a `reflex classifier train` output)"
                        .into(),
                );
            };
            let classifier = Classifier::load(dir)
                .map_err(|e| format!("--classifier {}: {e}", dir.display()))?;
            if classifier.meta.task != task.name {
                return Err(format!(
                    "--classifier {}: trained on task `{}`, not `{}`",
                    dir.display(),
                    classifier.meta.task,
                    task.name
                ));
            }
            let plugin = classifier_plugin(classifier, section.classifier_stage.clone())
                .map_err(|e| format!("--reward classifier: {e}"))?;
            Ok((Some(plugin), None))
        }
    }
}
