//! The seam for rewards that are not known on the tick: a VLM's keypoint plan answered a second
//! after the episode started, a preference model, a success classifier.
//!
//! A reward source comes in two halves. The [`EpisodeHook`] runs on the training driver (the
//! thread that owns the simulator) at each reset: it looks at the scene (renders a camera
//! frame), asks its question without waiting, and returns. The [`RewardStage`] runs on the
//! learner thread between the runtime's transition queue and the replay: it holds each
//! episode's transitions until the answer for that episode arrives, fills in their rewards
//! (joined by episode and step id, never by arrival order), and drops and counts what expires
//! or cannot be answered. Neither half ever runs on the control tick.

use reflex_core::Transition;
use reflex_sim::Env;

/// The driver half: told about every training episode as it starts.
pub trait EpisodeHook: Send {
    /// `env` was just reset for the runtime's episode `episode`. Must return promptly: take
    /// what the question needs, submit it, return.
    fn episode_started(&mut self, episode: u64, env: &Env);
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
}

/// A reward source for [`crate::train::train_with`].
pub struct RewardPlugin {
    /// Its name (`summary.json`'s `reward`).
    pub name: String,
    /// The driver half.
    pub hook: Box<dyn EpisodeHook>,
    /// The learner half.
    pub stage: Box<dyn RewardStage>,
}
