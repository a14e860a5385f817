//! What one policy step leaves behind: how it was judged ([`Outcome`]) and the record the learner
//! trains on ([`Transition`]). Both are fixed size and `Copy`, so the control loop can emit them
//! on a bounded queue without allocating.

use crate::types::{Action, ActionSpace, FlatObs};

/// Most named reward terms a task may declare.
pub const MAX_REWARD_TERMS: usize = 8;

/// How weighted reward terms combine into one scalar: the one rule task files, keypoint, VLM and
/// learned rewards all use (`fusion = "success_overrides"` or `"sum"` in files).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FusionRule {
    /// Weighted sum of every term.
    Sum,
    /// Weighted sum, except that a success term that fired replaces the dense terms (dense
    /// shaping never adds to or takes from a success).
    #[default]
    SuccessOverrides,
}

/// The one rule for the sparse success term: the weighted `dense` terms plus `success` under
/// [`FusionRule::Sum`]; under [`FusionRule::SuccessOverrides`], `success` alone when the success
/// term `fired`, else `dense` alone.
pub fn combine_success(dense: f64, success: f64, fired: bool, rule: FusionRule) -> f64 {
    match rule {
        FusionRule::Sum => dense + success,
        FusionRule::SuccessOverrides if fired => success,
        FusionRule::SuccessOverrides => dense,
    }
}

/// The raw values of a task's named reward terms for one step (`reward/<name>` in logs), in
/// task-file order.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RewardTerms {
    values: [f64; MAX_REWARD_TERMS],
    len: usize,
}

impl RewardTerms {
    /// Zeroed terms for a task with `len` terms (at most [`MAX_REWARD_TERMS`]).
    pub fn new(len: usize) -> Self {
        Self {
            values: [0.0; MAX_REWARD_TERMS],
            len: len.min(MAX_REWARD_TERMS),
        }
    }

    /// The raw (unweighted) term values.
    pub fn values(&self) -> &[f64] {
        &self.values[..self.len]
    }

    /// Sets term `i` (ignored past the declared number of terms).
    pub fn set(&mut self, i: usize, v: f64) {
        if i < self.len {
            self.values[i] = v;
        }
    }
}

/// How the step that just ended is judged. On a real arm the reward is usually not known on the
/// tick (a VLM or a classifier answers later, joined by step id), so it may be pending.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Outcome {
    /// Fused reward, or NaN while a reward worker has not answered yet.
    pub reward: f64,
    /// Named terms behind `reward` (empty when pending).
    pub terms: RewardTerms,
    /// The task's success predicate holds.
    pub success: bool,
    /// The episode ended (success, failure or fault): no bootstrapping past this step.
    pub terminated: bool,
    /// The episode hit its time limit: bootstrapping continues.
    pub truncated: bool,
}

impl Outcome {
    /// Nothing known yet: reward pending, episode continuing.
    pub const PENDING: Outcome = Outcome {
        reward: f64::NAN,
        terms: RewardTerms {
            values: [0.0; MAX_REWARD_TERMS],
            len: 0,
        },
        success: false,
        terminated: false,
        truncated: false,
    };

    /// True when the reward is known.
    pub fn has_reward(&self) -> bool {
        self.reward.is_finite()
    }

    /// True when the episode is over either way.
    pub fn done(&self) -> bool {
        self.terminated || self.truncated
    }
}

/// Why a step is not normal data: the learner stores no interrupted step and ends its n-step
/// windows there (a window never spans one).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Interruption {
    /// A normal step: the recorded action was executed.
    #[default]
    None,
    /// The e-stop was pressed during the step: the episode was aborted there.
    EStop,
    /// The operator's link went silent during a takeover: the arm was held, so the recorded
    /// action is not what was executed.
    OperatorLost,
    /// The operator discarded the episode (re-record): it ends here, and none of its steps are
    /// training data (a teleop session holds an episode's steps back until it ends).
    Discarded,
    /// The policy's own input was missing or too old (a camera frame): the arm was held, so
    /// the recorded action is not what was executed.
    InputStale,
}

/// One policy step as the learner sees it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Transition {
    /// Episode counter of the runtime that produced it.
    pub episode: u64,
    /// Policy step within the episode (the id late rewards are joined by, with `episode`).
    pub step: u64,
    /// Observation the action was chosen from.
    pub obs: FlatObs,
    /// What the frozen base policy proposed.
    pub base_action: Action,
    /// The action sent to the arm's controller (after composition and sanitising).
    pub action: Action,
    /// A human's action replaced the policy's in this step.
    pub intervened: bool,
    /// The safety filter changed at least one command during this step.
    pub safety_limited: bool,
    /// Set when the step is not normal data (an e-stop, a lost operator link).
    pub interrupted: Interruption,
    /// How the step was judged.
    pub outcome: Outcome,
    /// Observation after the step.
    pub next_obs: FlatObs,
}

impl Transition {
    /// An empty record for an action space (a placeholder to fill).
    pub fn empty(space: ActionSpace) -> Self {
        Self {
            episode: 0,
            step: 0,
            obs: FlatObs::default(),
            base_action: Action::zeros(space),
            action: Action::zeros(space),
            intervened: false,
            safety_limited: false,
            interrupted: Interruption::None,
            outcome: Outcome::PENDING,
            next_obs: FlatObs::default(),
        }
    }
}
