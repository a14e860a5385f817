//! The seam for rewards that are not known on the tick: a VLM's keypoint plan answered a second
//! after the episode started, a preference model, a success classifier.
//!
//! A reward source comes in two halves. The [`EpisodeHook`] runs on the training driver (the
//! thread that owns the robot, simulated or real) at each episode start: it looks at the scene
//! through `reflex_core::SceneView` (a camera frame, the tracked objects), asks its question
//! without waiting, and returns. It never sees the simulator, so the same source runs on a real
//! arm. The [`RewardStage`] runs on the
//! learner thread between the runtime's transition queue and the replay: it holds each
//! episode's transitions until the answer for that episode arrives, fills in their rewards
//! (joined by episode and step id, never by arrival order), and drops and counts what expires
//! or cannot be answered. Neither half ever runs on the control tick.
//!
//! Two more seams serve learned rewards:
//! - [`EpisodeHook::step_judged`] sees the scene after every policy step (a classifier needs a
//!   frame per step, a preference model a frame now and then);
//! - [`RewardStage::relabel_due`] and [`RewardStage::potential`] let a model that keeps
//!   learning reshape the whole replay: every record's reward becomes its stored (sparse) reward
//!   plus `gamma^k * phi(s') - phi(s)`, potential-based shaping, which telescopes over n-step
//!   records and pays nothing for going round in circles, so a policy cannot farm the model.
//!
//! Demonstrations are recorded before training, with no frames and no answers: under a reward
//! source they carry [`RewardStage::demo_reward`], never the task's own shaped reward.

use reflex_core::{Observation, Outcome, SceneView, Transition};

/// The driver half: told about every training episode as it starts.
pub trait EpisodeHook: Send {
    /// The runtime's episode `episode` just started; `obs` is its first observation and
    /// `scene` shows the world. Must return promptly: take what the question needs, submit
    /// it, return.
    fn episode_started(&mut self, episode: u64, obs: &Observation, scene: &dyn SceneView);

    /// Step `step` of episode `episode` (the ids its transition carries) was just judged
    /// `outcome`; `obs` is the observation after it and `scene` shows the world. Must return
    /// promptly. Default: nothing.
    fn step_judged(
        &mut self,
        episode: u64,
        step: u64,
        outcome: &Outcome,
        obs: &Observation,
        scene: &dyn SceneView,
    ) {
        let _ = (episode, step, outcome, obs, scene);
    }

    /// True when the source decides when a training episode is over (a success classifier,
    /// as HIL-SERL uses it): the driver then stops the robot's own success from ending
    /// episodes and asks [`EpisodeHook::ends_episode`] after every step. Default: false.
    fn detects_success(&self) -> bool {
        false
    }

    /// After [`EpisodeHook::step_judged`] for (`episode`, `step`): true when the source saw
    /// the task done in `episode`, which the driver then ends. With `wait` (a simulated
    /// driver, which may), the source waits, bounded, for its verdict on that step, so the
    /// episode ends where the verdict was; without it (a real-time arm), it answers with the
    /// verdicts it has, however late. Default: never.
    fn ends_episode(&mut self, episode: u64, step: u64, wait: bool) -> bool {
        let _ = (episode, step, wait);
        false
    }

    /// True while the source could not take another episode's question (its client's queue
    /// is full). A simulated driver waits before starting the next episode, so simulation
    /// never outruns the answers; a real arm cannot wait and lets the episode be dropped and
    /// counted. Default: never busy.
    fn busy(&self) -> bool {
        false
    }
}

/// The learner half: transitions in, transitions with rewards out.
pub trait RewardStage: Send {
    /// Takes one transition from the runtime. `ready` receives every transition whose reward
    /// is now known, in step order within each episode.
    fn take(&mut self, t: Transition, ready: &mut dyn FnMut(Transition));
    /// Joins answers that arrived since the last call and expires what waited too long.
    fn poll(&mut self, ready: &mut dyn FnMut(Transition));
    /// Counters for `summary.json` (a JSON object).
    fn report(&self) -> serde_json::Value;

    /// The reward a demonstration step is stored with (the learner applies its reward scale).
    fn demo_reward(&self, t: &Transition) -> f64;

    /// True once after the potential changed (a model finished a round of learning): the
    /// learner then reshapes its replay with [`RewardStage::potential`]. Default: never.
    fn relabel_due(&mut self) -> bool {
        false
    }

    /// The potential `phi` (weight included) of each row of `rows` (flat observations of the
    /// task's width), written to `out` (one per row). Default: zero.
    fn potential(&mut self, rows: &[f32], out: &mut [f32]) {
        let _ = rows;
        out.fill(0.0);
    }
}

/// The reward of a step that only the task's success can judge (demonstrations under a reward
/// source; the sparse part of a learned reward): `success_reward` when it succeeded, else 0.
pub fn success_only(t: &Transition, success_reward: f64) -> f64 {
    if t.outcome.success {
        success_reward
    } else {
        0.0
    }
}

/// A reward source for a training job (`reflex_jobs::train`).
pub struct RewardPlugin {
    /// Its name (`summary.json`'s `reward`).
    pub name: String,
    /// The driver half.
    pub hook: Box<dyn EpisodeHook>,
    /// The learner half.
    pub stage: Box<dyn RewardStage>,
}

/// The sparse baseline: the task's success alone (`success_reward` on a successful step, 0
/// otherwise), with none of the task's shaping terms. Trained with the same demonstrations
/// and RLPD, it shows what a reward source adds beyond the success signal.
pub fn sparse_plugin(success_reward: f64) -> RewardPlugin {
    RewardPlugin {
        name: "sparse".into(),
        hook: Box::new(NoQuestions),
        stage: Box::new(SparseStage {
            success_reward,
            steps: 0,
            successes: 0,
        }),
    }
}

/// A hook with nothing to ask.
struct NoQuestions;

impl EpisodeHook for NoQuestions {
    fn episode_started(&mut self, _episode: u64, _obs: &Observation, _scene: &dyn SceneView) {}
}

/// Rewards each transition on arrival from its success.
struct SparseStage {
    success_reward: f64,
    steps: u64,
    successes: u64,
}

impl RewardStage for SparseStage {
    fn take(&mut self, mut t: Transition, ready: &mut dyn FnMut(Transition)) {
        t.outcome.reward = success_only(&t, self.success_reward);
        self.steps += 1;
        self.successes += u64::from(t.outcome.success);
        ready(t);
    }

    fn poll(&mut self, _ready: &mut dyn FnMut(Transition)) {}

    fn report(&self) -> serde_json::Value {
        serde_json::json!({"sparse": {
            "success_reward": self.success_reward,
            "steps": self.steps,
            "successes": self.successes,
        }})
    }

    fn demo_reward(&self, t: &Transition) -> f64 {
        success_only(t, self.success_reward)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every shaped term is gone: a step earns the success reward or nothing, on arrival.
    #[test]
    fn the_sparse_stage_keeps_only_the_success() {
        let mut p = sparse_plugin(10.0);
        let mut t = Transition::empty(reflex_core::ActionSpace::EeDelta);
        t.outcome.reward = 0.7;
        let mut got = Vec::new();
        p.stage.take(t, &mut |t| got.push(t.outcome.reward));
        t.outcome.success = true;
        p.stage.take(t, &mut |t| got.push(t.outcome.reward));
        assert_eq!(got, [0.0, 10.0]);
        assert_eq!(p.stage.demo_reward(&t), 10.0);
        assert_eq!(p.stage.report()["sparse"]["successes"], 1);
    }
}
