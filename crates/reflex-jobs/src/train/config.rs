//! A training run's settings (`config.toml`) and why a run fails.

use crate::arms::ArmsError;
use crate::rewards::RewardSection;
use reflex_learn::bc::BcConfig;
use reflex_learn::learner::LearnerConfig;
use reflex_learn::sac::AgentConfig;
use reflex_runtime::RuntimeSettings;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Everything a training run is configured by (a TOML file can set any part).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Task name (from `sim/tasks`) or task file.
    pub task: String,
    /// Seed of everything random in the run.
    pub seed: u64,
    /// Wall-clock budget, minutes.
    pub minutes: f64,
    /// Environment-step budget (0: none).
    pub max_env_steps: u64,
    /// Stop once an evaluation reaches this success rate (above 1: never stop early).
    pub target_success: f64,
    /// Scripted demonstrations for behaviour cloning and the demonstration buffer (0: the
    /// task's default, [`task_defaults`]).
    pub demo_episodes: usize,
    /// Noise injected into the scripted demonstrations (DART), as the standard deviation of
    /// a Gaussian before `tanh`: the arm executes the expert's action plus
    /// `runtime.residual_scale * tanh(N(0, s))` per motion component (the gripper is left
    /// alone), and the base is cloned onto the expert's own action at the states the noise
    /// leads to, so it learns to recover from its own mistakes. Negative: the task's default
    /// ([`task_defaults`]); 0: clean demonstrations.
    pub demo_noise: f64,
    /// Recorded teleop sessions (`reflex teleop --record DIR`; with frames for `obs =
    /// "pixels"`) whose successful episodes are the demonstrations instead of the scripted
    /// expert's: what a real arm's operator shows, for a task with no scripted expert or an
    /// arm without the object tracker the expert plans from. Empty: the scripted expert.
    pub demo_sessions: Vec<std::path::PathBuf>,
    /// The control loop: servo rate, residual scale, takeover threshold, hold and link
    /// timeout, re-arm ramp, queue size (`[runtime]`; the training default loop rate is 500 Hz).
    pub runtime: RuntimeSettings,
    /// Evaluate every this many environment steps.
    pub eval_every: u64,
    /// Episodes per evaluation. These evaluations decide when the run stops (the target)
    /// and draw the run's own evaluation seeds.
    pub eval_episodes: usize,
    /// Episodes of the held-out evaluation once training ends (0: none): the final policy on
    /// seeds no run trains, demonstrates or stops on, the same for every run seed
    /// (`summary.json`'s `heldout`, apart from the stopping evaluations). Simulated arms only:
    /// a real-time arm is evaluated with `reflex eval` or by its operator.
    pub heldout_episodes: usize,
    /// Episodes of a confirmation on fresh scenes once an evaluation reaches
    /// `target_success` (0: stop on that evaluation alone). Every evaluation replays the
    /// same `eval_episodes` scenes, so the first one at the target tends to pick weights that
    /// suit those scenes; the run stops only if the same weights also reach the target on
    /// scenes no evaluation or training episode has used (a new set each time, from a stream
    /// of their own). `summary.json`'s `confirmations` keeps every one.
    pub confirm_episodes: usize,
    /// When the run ends on its budget (steps or time) rather than its target, hand over the
    /// weights of its best evaluation (`policy.safetensors`, and the held-out figure is theirs)
    /// instead of the last ones, which may have drifted down since. Ties go to the later
    /// weights. `summary.json`'s `handed_over` says which.
    pub keep_best: bool,
    /// Behaviour cloning of the base (`steps = 0`, the default here: the task's number,
    /// [`task_defaults`]).
    pub bc: BcConfig,
    /// The learner thread.
    pub learner: LearnerConfig,
    /// The agent.
    pub agent: AgentConfig,
    /// Where rewards come from and their settings (`[reward]`).
    pub reward: RewardSection,
    /// Actors and a learner in separate processes or machines (`[fleet]`; `reflex learner`,
    /// `reflex actor`).
    pub fleet: FleetConfig,
    /// What the policy and the critics see: `state` (the task's flat observation, object poses
    /// included: an arm with an object tracker) or `pixels` (the cameras plus what the arm knows
    /// of itself, `[pixels]`: an arm without one).
    pub obs: ObsMode,
    /// The cameras and the image encoder of `obs = "pixels"`.
    pub pixels: PixelSettings,
}

/// What the policy and the critics see.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObsMode {
    /// The task's flat observation (joints, tool, gripper, tracked objects, goals).
    #[default]
    State,
    /// The wrist and front cameras plus the proprioception (joints, tool, gripper): no object
    /// poses.
    Pixels,
}

/// `[pixels]`: the cameras and the encoder of a run that learns from images.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PixelSettings {
    /// Image side, pixels (square images from every camera).
    pub side: usize,
    /// The cameras, stacked along the channels in this order.
    pub cameras: Vec<String>,
    /// Oldest image, against the observation's stamp, the policy acts on; beyond it the arm
    /// holds (seconds).
    pub max_age_s: f64,
    /// The encoder, its target and its augmentation during SAC.
    pub sac: reflex_learn::pixel_sac::PixelConfig,
    /// Records the online replay holds (each with its image, stored once per step).
    pub replay_capacity: usize,
}

impl Default for PixelSettings {
    fn default() -> Self {
        Self {
            side: 48,
            cameras: vec!["wrist".into(), "front".into()],
            max_age_s: 0.2,
            sac: reflex_learn::pixel_sac::PixelConfig::default(),
            replay_capacity: 50_000,
        }
    }
}

impl PixelSettings {
    /// Checks ranges; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        if !(16..=256).contains(&self.side) {
            return Err(format!(
                "pixels.side: must be in 16..=256, got {}",
                self.side
            ));
        }
        if self.cameras.is_empty() || self.cameras.len() > 4 {
            return Err(format!(
                "pixels.cameras: one to four cameras, got {}",
                self.cameras.len()
            ));
        }
        if !(self.max_age_s > 0.0 && self.max_age_s.is_finite()) {
            return Err(format!(
                "pixels.max_age_s: must be positive, got {}",
                self.max_age_s
            ));
        }
        if self.replay_capacity < 1000 {
            return Err(format!(
                "pixels.replay_capacity: at least 1000 records, got {}",
                self.replay_capacity
            ));
        }
        let c = &self.sac;
        if !(c.encoder_lr > 0.0 && c.encoder_lr.is_finite()) {
            return Err(format!(
                "pixels.sac.encoder_lr: must be positive, got {}",
                c.encoder_lr
            ));
        }
        if !(c.encoder_tau > 0.0 && c.encoder_tau <= 1.0) {
            return Err(format!(
                "pixels.sac.encoder_tau: must be in (0, 1], got {}",
                c.encoder_tau
            ));
        }
        if c.shift_pad > self.side / 4 {
            return Err(format!(
                "pixels.sac.shift_pad: at most a quarter of the side ({}), got {}",
                self.side / 4,
                c.shift_pad
            ));
        }
        Ok(())
    }
}

/// How `reflex learner` and `reflex actor` reach each other, batch, hold and publish.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FleetConfig {
    /// The learner's Zenoh endpoint, `tcp/HOST:PORT` or `tls/HOST:PORT` (the learner listens
    /// on it, actors connect to it; `--listen` and `--connect` override it).
    pub endpoint: String,
    /// The run's name, the key prefix `reflex/<run>` (empty: the task's name). Learners and
    /// actors of different runs can share a network.
    pub run: String,
    /// A Zenoh configuration file (JSON5) for TLS certificates, user/password authentication
    /// and access control; the endpoint and scouting settings here override it.
    pub zenoh_config: Option<PathBuf>,
    /// Transitions per batch an actor sends.
    pub batch_transitions: usize,
    /// A partial batch is sent after this long, ms.
    pub flush_ms: u64,
    /// Transitions an actor holds unacknowledged (while its learner is away); beyond it the
    /// oldest batches are dropped and counted.
    pub actor_hold_transitions: usize,
    /// An actor sends its unacknowledged batches again when none was acknowledged for this
    /// long while the learner is present, ms.
    pub resend_after_ms: u64,
    /// Received batches the learner queues before it drops new ones (they are resent).
    pub learner_queue_batches: usize,
    /// Shortest interval between weight broadcasts, ms.
    pub publish_interval_ms: u64,
    /// How often the learner syncs its replay and acknowledges, ms.
    pub ack_interval_ms: u64,
    /// How long an actor waits for the learner's base policy and first weights at start, s.
    pub wait_for_learner_s: f64,
}

impl Default for FleetConfig {
    fn default() -> Self {
        Self {
            endpoint: "tcp/127.0.0.1:7447".into(),
            run: String::new(),
            zenoh_config: None,
            batch_transitions: 256,
            flush_ms: 50,
            actor_hold_transitions: 200_000,
            resend_after_ms: 2_000,
            learner_queue_batches: 512,
            publish_interval_ms: 100,
            ack_interval_ms: 200,
            wait_for_learner_s: 300.0,
        }
    }
}

impl FleetConfig {
    /// Checks ranges; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.batch_transitions == 0 || self.batch_transitions > 65_536 {
            return Err(format!(
                "fleet.batch_transitions: must be in 1..=65536, got {}",
                self.batch_transitions
            ));
        }
        if self.actor_hold_transitions < self.batch_transitions {
            return Err(format!(
                "fleet.actor_hold_transitions: must hold at least one batch ({}), got {}",
                self.batch_transitions, self.actor_hold_transitions
            ));
        }
        for (name, v) in [
            ("flush_ms", self.flush_ms),
            ("resend_after_ms", self.resend_after_ms),
            ("ack_interval_ms", self.ack_interval_ms),
            ("learner_queue_batches", self.learner_queue_batches as u64),
        ] {
            if v == 0 {
                return Err(format!("fleet.{name}: must be positive"));
            }
        }
        if !(self.wait_for_learner_s > 0.0 && self.wait_for_learner_s.is_finite()) {
            return Err(format!(
                "fleet.wait_for_learner_s: must be positive, got {}",
                self.wait_for_learner_s
            ));
        }
        Ok(())
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            task: "pick_cube".into(),
            seed: 0,
            minutes: 15.0,
            max_env_steps: 0,
            target_success: 0.95,
            demo_episodes: 0,
            demo_noise: -1.0,
            demo_sessions: Vec::new(),
            runtime: RuntimeSettings::default(),
            eval_every: 10_000,
            eval_episodes: 50,
            heldout_episodes: 200,
            confirm_episodes: 50,
            keep_best: true,
            bc: BcConfig {
                steps: 0,
                ..BcConfig::default()
            },
            learner: LearnerConfig::default(),
            agent: AgentConfig::default(),
            reward: RewardSection::default(),
            fleet: FleetConfig::default(),
            obs: ObsMode::State,
            pixels: PixelSettings::default(),
        }
    }
}

/// What a built-in task's run starts from unless its configuration says otherwise, chosen by
/// measurement (README, "Learning"): how many scripted demonstrations, how long the base is
/// cloned on them, and how much noise the demonstrations carry.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TaskDefaults {
    /// Scripted demonstration episodes.
    pub demo_episodes: usize,
    /// Behaviour-cloning gradient steps.
    pub bc_steps: usize,
    /// Demonstration noise (`TrainConfig::demo_noise`).
    pub demo_noise: f64,
}

/// The defaults of task `task` (a task file's name gets the last row's).
pub fn task_defaults(task: &str) -> TaskDefaults {
    let (demo_episodes, bc_steps, demo_noise) = match task {
        "reach" => (40, 10_000, 0.0),
        "push" => (2_000, 40_000, 0.0),
        "pick_cube" => (15, 10_000, 0.0),
        "peg_insert" => (500, 30_000, 0.0),
        _ => (50, 10_000, 0.0),
    };
    TaskDefaults {
        demo_episodes,
        bc_steps,
        demo_noise,
    }
}

impl TrainConfig {
    /// Reads a TOML file; unknown keys and bad values are refused naming the file and field.
    pub fn load(path: &Path) -> Result<Self, TrainError> {
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::Config {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let cfg: Self = toml::from_str(&text).map_err(|e| TrainError::Config {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        cfg.validate().map_err(|message| TrainError::Config {
            path: path.to_owned(),
            message,
        })?;
        Ok(cfg)
    }

    /// Checks ranges; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.minutes > 0.0 && self.minutes.is_finite()) {
            return Err(format!("minutes: must be positive, got {}", self.minutes));
        }
        self.runtime.validate().map_err(|e| match e {
            reflex_runtime::RuntimeError::Config { field, message } => {
                format!("runtime.{field}: {message}")
            }
            other => format!("runtime: {other}"),
        })?;
        if !(0.1..=0.5).contains(&self.runtime.residual_scale) {
            return Err(format!(
                "runtime.residual_scale: must be in [0.1, 0.5], got {}",
                self.runtime.residual_scale
            ));
        }
        if self.seed >= super::episodes::MAX_RUN_SEED {
            return Err(format!(
                "seed: must be below 2^32 (so no run's scenes reach the held-out seeds), got {}",
                self.seed
            ));
        }
        if !(self.demo_noise.is_finite() && self.demo_noise <= DEMO_NOISE_MAX) {
            return Err(format!(
                "demo_noise: must be at most {DEMO_NOISE_MAX} (negative: the task's default), got {}",
                self.demo_noise
            ));
        }
        self.fleet.validate()?;
        self.pixels.validate()?;
        self.reward
            .classifier_stage
            .validate()
            .map_err(|e| format!("reward.classifier_stage: {e}"))?;
        if self.eval_episodes == 0 || self.eval_every == 0 {
            return Err("eval_episodes and eval_every must be positive".into());
        }
        if self.runtime.servo_rate_hz > 10_000.0 {
            return Err(format!(
                "runtime.servo_rate_hz: must be in (0, 10000], got {}",
                self.runtime.servo_rate_hz
            ));
        }
        self.learner.validate()?;
        if self.learner.success_absorbing && self.agent.gamma >= 1.0 {
            return Err("learner.success_absorbing needs agent.gamma below 1".into());
        }
        self.agent.validate()
    }
}

/// The largest `demo_noise` (the exploring head's largest standard deviation).
pub const DEMO_NOISE_MAX: f64 = 2.5;

impl TrainConfig {
    /// The demonstration noise this run uses (its own, or its task's default).
    pub fn demo_noise_std(&self) -> f64 {
        if self.demo_noise < 0.0 {
            task_defaults(&self.task).demo_noise
        } else {
            self.demo_noise
        }
    }

    /// The scripted demonstrations this run records (its own number, or its task's).
    pub fn demo_episodes(&self) -> usize {
        match self.demo_episodes {
            0 => task_defaults(&self.task).demo_episodes,
            n => n,
        }
    }

    /// Behaviour cloning as this run does it (`bc.steps` 0: the task's number of steps).
    pub fn bc(&self) -> BcConfig {
        let mut bc = self.bc.clone();
        if bc.steps == 0 {
            bc.steps = task_defaults(&self.task).bc_steps;
        }
        bc
    }
}

/// Why a run failed; each names the file or stage.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The configuration file is unreadable or invalid.
    #[error("{path}: {message}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A stage failed.
    #[error("{stage}: {message}")]
    Stage {
        /// The stage.
        stage: &'static str,
        /// What went wrong.
        message: String,
    },
    /// The robot or its runtime could not be built.
    #[error("{0}")]
    Arms(#[from] ArmsError),
    /// An interrupt (Ctrl-C, SIGTERM) pressed the e-stop; the arm was brought to rest.
    #[error("interrupted: the e-stop was pressed and the arm brought to rest")]
    Interrupted,
}

pub(crate) fn stage<E: std::fmt::Display>(stage: &'static str) -> impl Fn(E) -> TrainError {
    move |e| TrainError::Stage {
        stage,
        message: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<TrainConfig, String> {
        let path = std::env::temp_dir().join(format!(
            "reflex-train-config-{}-{}.toml",
            std::process::id(),
            text.len()
        ));
        std::fs::write(&path, text).unwrap();
        let r = TrainConfig::load(&path).map_err(|e| e.to_string());
        let _ = std::fs::remove_file(&path);
        r
    }

    /// The `[runtime]` table is the runtime's own settings: read with serde, every key known,
    /// every value checked when the file is read, the error naming the file and the key.
    #[test]
    fn the_runtime_table_is_read_and_checked_with_the_file() {
        let c = load("[runtime]\nservo_rate_hz = 250.0\nintervention_hold_s = 0.2\n").unwrap();
        assert_eq!(c.runtime.servo_rate_hz, 250.0);
        assert_eq!(c.runtime.intervention_hold_s, 0.2);
        assert_eq!(
            c.runtime.residual_scale, 0.3,
            "the rest keep their defaults"
        );
        let e = load("[runtime]\nintervention_hold_ss = 0.2\n").unwrap_err();
        assert!(
            e.contains(".toml") && e.contains("intervention_hold_ss"),
            "{e}"
        );
        let e = load("[runtime]\nintervention_link_timeout_s = 0.0\n").unwrap_err();
        assert!(e.contains("runtime.intervention_link_timeout_s"), "{e}");
        let e = load("[runtime]\nresidual_scale = 0.9\n").unwrap_err();
        assert!(e.contains("runtime.residual_scale"), "{e}");
        let e = load("loop_rate_hz = 500.0\n").unwrap_err();
        assert!(
            e.contains("loop_rate_hz"),
            "the old key is refused by name: {e}"
        );
    }

    /// `obs` and the `[pixels]` table: read with the file, every bad value refused by its key.
    #[test]
    fn the_pixels_table_is_read_and_checked_with_the_file() {
        let c = load("obs = \"pixels\"\n[pixels]\nside = 64\ncameras = [\"front\"]\n").unwrap();
        assert_eq!(c.obs, ObsMode::Pixels);
        assert_eq!((c.pixels.side, c.pixels.cameras.len()), (64, 1));
        assert_eq!(
            c.pixels.sac,
            reflex_learn::pixel_sac::PixelConfig::default()
        );
        for (text, key) in [
            ("obs = \"images\"\n", "obs"),
            ("[pixels]\nside = 8\n", "pixels.side"),
            ("[pixels]\ncameras = []\n", "pixels.cameras"),
            ("[pixels]\nmax_age_s = 0.0\n", "pixels.max_age_s"),
            ("[pixels]\nreplay_capacity = 10\n", "pixels.replay_capacity"),
            ("[pixels.sac]\nshift_pad = 40\n", "pixels.sac.shift_pad"),
            (
                "[pixels.sac]\nencoder_tau = 0.0\n",
                "pixels.sac.encoder_tau",
            ),
            ("[pixels]\nsides = 48\n", "sides"),
        ] {
            let e = load(text).unwrap_err();
            assert!(e.contains(".toml") && e.contains(key), "{text}: {e}");
        }
    }

    /// `[reward.classifier_stage]` is checked when the file is read: a window of 0 is refused
    /// with the file and the table named, before any classifier is loaded.
    #[test]
    fn the_classifier_stage_table_is_checked_with_the_file() {
        let c = load(
            "[reward.classifier_stage]
terminate = true
end_after = 4
",
        )
        .unwrap();
        assert_eq!(c.reward.classifier_stage.end_after, 4);
        let e = load(
            "[reward.classifier_stage]
end_after = 0
",
        )
        .unwrap_err();
        assert!(
            e.contains(".toml") && e.contains("reward.classifier_stage") && e.contains("end_after"),
            "{e}"
        );
    }
}
