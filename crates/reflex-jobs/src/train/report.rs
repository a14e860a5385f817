//! What a run reports: evaluation rows (`metrics.csv`), `summary.json`, progress while it goes,
//! and `progress.json`, the state a resume starts from.

use super::config::{stage, TrainError};
use reflex_learn::learner::LearnerShared;
use reflex_learn::sac::UpdateStats;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::Ordering;

/// One evaluation, one row of `metrics.csv`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalRow {
    /// Online environment steps so far.
    pub env_steps: u64,
    /// Updates so far.
    pub updates: u64,
    /// Seconds of training so far (across resumes).
    pub wall_s: f64,
    /// Training episodes so far.
    pub episodes: u64,
    /// Success over the evaluation episodes (deterministic policy).
    pub success_rate: f64,
    /// Mean undiscounted return of the evaluation episodes.
    pub mean_return: f64,
    /// Success over the last 20 training (exploring) episodes (none before training).
    pub train_success_rate: Option<f64>,
    /// Latest critic loss (none before training).
    pub critic_loss: Option<f32>,
    /// Latest SAC temperature.
    pub temperature: f32,
    /// Latest mean Q of the first critic on a training batch (none before training).
    #[serde(default)]
    pub q_mean: Option<f32>,
    /// Latest entropy estimate of the exploring residual, `-log pi` (none before training).
    #[serde(default)]
    pub entropy: Option<f32>,
}

impl EvalRow {
    /// The row of the base's evaluation, before any training.
    pub(crate) fn base(
        wall_s: f64,
        (success_rate, mean_return): (f64, f64),
        temperature: f32,
    ) -> Self {
        Self {
            env_steps: 0,
            updates: 0,
            wall_s,
            episodes: 0,
            success_rate,
            mean_return,
            train_success_rate: None,
            critic_loss: None,
            temperature,
            q_mean: None,
            entropy: None,
        }
    }

    /// A row after training began: the evaluation, plus the learner's latest statistics and
    /// the success of the recent training episodes.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn trained(
        env_steps: u64,
        updates: u64,
        wall_s: f64,
        episodes: u64,
        (success_rate, mean_return): (f64, f64),
        recent: &VecDeque<bool>,
        last: &UpdateStats,
    ) -> Self {
        let finite = |v: f32| v.is_finite().then_some(v);
        Self {
            env_steps,
            updates,
            wall_s,
            episodes,
            success_rate,
            mean_return,
            train_success_rate: Some(
                recent.iter().filter(|s| **s).count() as f64 / recent.len().max(1) as f64,
            ),
            critic_loss: finite(last.critic_loss),
            temperature: last.temperature,
            q_mean: finite(last.q_mean),
            entropy: finite(last.entropy),
        }
    }
}

/// `summary.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// The code's commit (`git describe --always --dirty` when built; `unknown` outside git).
    #[serde(default)]
    pub commit: String,
    /// The run's whole configuration as resolved (file, flags and defaults).
    #[serde(default)]
    pub config: serde_json::Value,
    /// Task.
    pub task: String,
    /// Seed.
    pub seed: u64,
    /// Online environment steps.
    pub env_steps: u64,
    /// Updates.
    pub updates: u64,
    /// Seconds of training (across resumes), demonstrations and cloning included.
    pub wall_s: f64,
    /// Success of the behaviour-cloned base.
    pub base_success_rate: f64,
    /// Success at the last evaluation on the run's own evaluation seeds (the stream that
    /// decided when to stop: it is biased upwards by that choice; see `heldout`).
    pub final_success_rate: f64,
    /// Best evaluation on the run's own evaluation seeds.
    pub best_success_rate: f64,
    /// The final policy on the held-out seeds, after training (none when interrupted, on a
    /// real-time arm, or with `heldout_episodes = 0`): the figure to report.
    #[serde(default)]
    pub heldout: Option<HeldOut>,
    /// Environment steps when an evaluation first reached `target_success` (and, with
    /// `confirm_episodes`, its confirmation on fresh scenes did too).
    pub steps_to_target: Option<u64>,
    /// Minutes when an evaluation first reached `target_success` (and was confirmed).
    pub minutes_to_target: Option<f64>,
    /// Every confirmation on fresh scenes of an evaluation that reached the target.
    #[serde(default)]
    pub confirmations: Vec<Confirmation>,
    /// The weights handed over (`policy.safetensors`, judged by `heldout`): the last ones, or
    /// with `keep_best` and a run ended on its budget, those of its best evaluation.
    #[serde(default)]
    pub handed_over: Option<HandedOver>,
    /// Demonstration episodes used.
    pub demo_episodes: usize,
    /// Where the demonstrations came from when they were read from recorded sessions (a run
    /// from pixels with `[pixels] demo_sessions`); none for the scripted expert's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub demo_sessions: Option<super::session_demos::SessionDemoReport>,
    /// Training episodes.
    pub episodes: u64,
    /// Updates per second of training time.
    pub updates_per_s: f64,
    /// Online environment steps per second of training time.
    pub env_steps_per_s: f64,
    /// Transitions the runtime's queue dropped (the learner fell behind).
    pub dropped_transitions: u64,
    /// Steps an operator took over.
    pub intervened_steps: u64,
    /// Why training stopped: `time budget`, `step budget`, `target success reached`,
    /// `interrupted` or `learner stopped`.
    #[serde(default)]
    pub stop_reason: String,
    /// Where training rewards came from: `task` or a reward source's name.
    #[serde(default)]
    pub reward: String,
    /// Seconds the simulated driver waited between episodes for a busy reward source (its
    /// client's queue full), this session.
    #[serde(default)]
    pub reward_wait_s: f64,
    /// Training ticks whose work (simulated physics included) took a control period or longer.
    #[serde(default)]
    pub deadline_misses: u64,
    /// The reward source's counters (VLM queries, cache hits, failures, transitions held and
    /// dropped), when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reward_stage: Option<serde_json::Value>,
    /// Stored steps (demonstrations, takeovers, exploration) whose executed action lay farther
    /// than `residual_scale` from the base in some component: stored exactly now; the former
    /// scheme would have stored a clipped action nobody took.
    #[serde(default)]
    pub clip_would_bind: u64,
    /// Steps not stored because they were interrupted (e-stop, lost operator link).
    #[serde(default)]
    pub interrupted_steps: u64,
    /// Times training diverged (a non-finite loss or weight) and was rolled back.
    #[serde(default)]
    pub rollbacks: u64,
    /// Records in the replay log (demonstrations and online steps, across resumes).
    #[serde(default)]
    pub replay_records: u64,
}

/// A confirmation of an evaluation that reached the target, on scenes no evaluation or
/// training episode used.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Confirmation {
    /// Online environment steps of the evaluation confirmed.
    pub env_steps: u64,
    /// Updates of the weights judged.
    pub updates: u64,
    /// The evaluation's success on the run's own evaluation seeds.
    pub eval_success_rate: f64,
    /// Episodes of the confirmation.
    pub episodes: usize,
    /// Its first seed (the rest follow it).
    pub first_seed: u64,
    /// Success over them.
    pub success_rate: f64,
    /// Whether it reached the target too (the run stopped).
    pub passed: bool,
}

/// Which weights a run handed over, and why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HandedOver {
    /// Online environment steps of the evaluation that judged them.
    pub env_steps: u64,
    /// Their updates.
    pub updates: u64,
    /// That evaluation's success on the run's own evaluation seeds.
    pub success_rate: f64,
    /// `last` (the weights training ended with) or `best evaluation` (`keep_best`, a run
    /// ended on its budget whose last evaluation was below its best).
    pub why: String,
}

/// A held-out evaluation: episodes on seeds no run trained, demonstrated or stopped on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HeldOut {
    /// Episodes.
    pub episodes: usize,
    /// Their first seed (the rest follow it).
    pub first_seed: u64,
    /// Episodes that succeeded.
    pub successes: usize,
    /// `successes / episodes`.
    pub success_rate: f64,
    /// Mean undiscounted return (the task's reward).
    pub mean_return: f64,
}

impl HeldOut {
    /// From per-episode (success, return) on seeds starting at `first_seed`.
    pub fn from_results(first_seed: u64, results: &[(bool, f64)]) -> Self {
        let successes = results.iter().filter(|r| r.0).count();
        let n = results.len().max(1) as f64;
        Self {
            episodes: results.len(),
            first_seed,
            successes,
            success_rate: successes as f64 / n,
            mean_return: results.iter().map(|r| r.1).sum::<f64>() / n,
        }
    }
}

/// Progress reported while a run goes.
#[derive(Clone, Debug)]
pub enum Progress {
    /// A stage started.
    Stage(&'static str),
    /// Training progressed.
    Training {
        /// Online steps.
        env_steps: u64,
        /// Updates.
        updates: u64,
        /// Latest evaluation success.
        success: Option<f64>,
        /// Seconds of the budget used.
        elapsed_s: f64,
        /// The budget, seconds.
        budget_s: f64,
    },
    /// An evaluation finished.
    Eval(EvalRow),
}

/// What survives a restart besides the checkpoint and replay (`progress.json`, written at
/// every evaluation and every few seconds while training).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct RunState {
    pub(crate) base_success_rate: f64,
    pub(crate) demo_episodes: usize,
    pub(crate) evals: Vec<EvalRow>,
    pub(crate) episodes: u64,
    pub(crate) wall_s: f64,
    pub(crate) steps_to_target: Option<u64>,
    pub(crate) minutes_to_target: Option<f64>,
    /// Online environment steps at the time of writing.
    #[serde(default)]
    pub(crate) env_steps: u64,
    /// Replay records on disk (synced) at the time of writing: a crash loses none of them.
    #[serde(default)]
    pub(crate) replay_synced: u64,
    /// Executed actions farther than `residual_scale` from the base in some component (stored
    /// exactly; the former scheme clipped them).
    #[serde(default)]
    pub(crate) clip_would_bind: u64,
    /// Confirmations on fresh scenes so far (the next one draws the next set).
    #[serde(default)]
    pub(crate) confirmations: Vec<Confirmation>,
    /// The best evaluation so far whose weights are kept (`best_actor.safetensors`).
    #[serde(default)]
    pub(crate) best: Option<HandedOver>,
    /// The recorded sessions the demonstrations came from, if they did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) demo_sessions: Option<super::session_demos::SessionDemoReport>,
}

impl RunState {
    /// Records `row` as the first to reach the target unless one already has.
    pub(crate) fn reached_target(&mut self, row: &EvalRow) {
        if self.steps_to_target.is_none() {
            self.steps_to_target = Some(row.env_steps);
            self.minutes_to_target = Some(row.wall_s / 60.0);
        }
    }

    /// Whether `row`'s weights are the best so far (ties go to the later weights); if so they
    /// become the kept best.
    pub(crate) fn offer_best(&mut self, row: &EvalRow) -> bool {
        if self
            .best
            .as_ref()
            .is_some_and(|b| b.success_rate > row.success_rate)
        {
            return false;
        }
        self.best = Some(HandedOver {
            env_steps: row.env_steps,
            updates: row.updates,
            success_rate: row.success_rate,
            why: "best evaluation".into(),
        });
        true
    }
}

/// Writes `progress.json` with the learner's counters.
pub(crate) fn write_progress(
    path: &Path,
    state: &mut RunState,
    shared: &LearnerShared,
) -> Result<(), TrainError> {
    state.env_steps = shared.env_steps.load(Ordering::Relaxed);
    state.replay_synced = shared.synced_records.load(Ordering::Relaxed);
    state.clip_would_bind = shared.clip_would_bind.load(Ordering::Relaxed);
    write_state(path, state)
}

/// Writes `state` to `path` (`progress.json`) as it stands.
pub(crate) fn write_state(path: &Path, state: &RunState) -> Result<(), TrainError> {
    let text = serde_json::to_string_pretty(state).map_err(stage("progress.json"))?;
    write_atomic(path, text.as_bytes())
}

pub(crate) fn write_metrics(out: &Path, state: &RunState) -> Result<(), TrainError> {
    let opt = |v: Option<f32>| v.map_or(String::new(), |v| format!("{v:.6}"));
    let mut s = String::from(
        "env_steps,updates,wall_s,episodes,success_rate,mean_return,train_success_rate,critic_loss,temperature,q_mean,entropy\n",
    );
    for r in &state.evals {
        s.push_str(&format!(
            "{},{},{:.1},{},{:.4},{:.4},{},{},{:.6},{},{}\n",
            r.env_steps,
            r.updates,
            r.wall_s,
            r.episodes,
            r.success_rate,
            r.mean_return,
            r.train_success_rate
                .map_or(String::new(), |v| format!("{v:.4}")),
            opt(r.critic_loss),
            r.temperature,
            opt(r.q_mean),
            opt(r.entropy),
        ));
    }
    write_atomic(&out.join("metrics.csv"), s.as_bytes())
}

pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), TrainError> {
    reflex_learn::store::write_atomic(path, bytes).map_err(stage("writing the run directory"))
}
