//! The main job: from scripted demonstrations to a behaviour-cloned base to a residual trained
//! with SAC + RLPD in the simulator, all through the runtime's control loop.
//!
//! 1. Demonstrations: the task's scripted expert drives the runtime (`demo_episodes`), or the
//!    successful episodes of recorded teleop sessions are read (`demo_sessions`,
//!    [`session_demos`]).
//! 2. Behaviour cloning of the base from them (a deliberately small budget, so the base is
//!    imperfect and the residual has something to fix). Saved as `base.safetensors`.
//! 3. The base is evaluated (the residual starts at exactly zero, so this is the base).
//! 4. Training: the runtime runs base + exploring residual; the learner thread drains its
//!    transitions and publishes the actor every `publish_every` updates. The simulator is held
//!    back when updates fall behind `utd` per step (the control loop itself never waits on the
//!    learner: the driver simply does not tick). Every `eval_every` steps the deterministic
//!    policy is evaluated on `eval_episodes` fixed seeds; one that reaches `target_success`
//!    stops the run once the same weights reach it on `confirm_episodes` fresh scenes too.
//! 5. Outputs in the run directory: `summary.json`, `metrics.csv`, `curve.png`,
//!    `base.safetensors`, `policy.safetensors` (the deployed residual, `tanh(mean)`: the
//!    last weights, or the best evaluation's for a run ended on its budget below its best),
//!    `best_actor.safetensors`,
//!    `config.toml`, `progress.json`, `replay/` and `checkpoints/` (for `--resume`).

//!
//! The job is split by concern: [`config`] (the run's settings and errors), [`episodes`]
//! (whole episodes for demonstrations and evaluation, braking on interrupt), [`driver`] (the
//! training loop), [`eval`] (`reflex eval`), [`report`] (`summary.json`, `metrics.csv`,
//! `progress.json`), `select` (the confirmations of the target on fresh scenes and the best
//! evaluation's weights a run ended on its budget hands over), `scalars` (`scalars.jsonl`), [`plot`] (`curve.png`) and [`study`] (several
//! seeds read together: `study.json`, `band.png`). [`pixels`] is the same job when the policy
//! and the critics see the cameras (`obs = "pixels"`): pictures in the demonstrations and the
//! replay, a base cloned from them, SAC from pixels in lock step with a simulator or on its own
//! thread beside a real-time arm. Robots come from an [`crate::arms::Arms`]: the
//! simulator's by default, anything with the same traits otherwise.

pub mod config;
pub mod driver;
pub mod episodes;
pub mod eval;
pub mod pixels;
pub mod plot;
pub mod report;
mod scalars;
pub(crate) mod select;
pub mod session_demos;
pub mod study;

pub use config::{task_defaults, FleetConfig, TaskDefaults, TrainConfig, TrainError};
pub use driver::{train, train_on, train_with};
pub use episodes::{
    brake_to_rest, heldout_seeds, run_episodes, EpisodeResults, HELDOUT_FIRST_SEED, MAX_RUN_SEED,
};
pub use eval::evaluate_run;
pub use report::{EvalRow, HeldOut, Progress, Summary};
pub use study::{study, Interval, Study};

use std::sync::atomic::AtomicBool;

/// The commit this code was built from (`git describe --always --dirty`), recorded in every
/// `summary.json` and policy file.
pub const COMMIT: &str = env!("REFLEX_COMMIT");

/// Set (by a signal handler: the first Ctrl-C, SIGTERM) to stop the running [`train`]: it
/// presses the e-stop of the runtime that is driving the arm, ticks until the arm is at rest,
/// and ends the run with `summary.json`, `metrics.csv`, `curve.png`, the policy and the last
/// checkpoint written (no final evaluation).
pub static INTERRUPT: AtomicBool = AtomicBool::new(false);

/// Longest a run waits for the arm to come to rest after its e-stop was pressed, seconds of
/// loop time.
pub(crate) const BRAKE_LIMIT_S: f64 = 5.0;

/// Seconds between writes of `progress.json` while training (besides every evaluation): the
/// replay is synced about this often too, so the file tells how much of it is safe.
pub(crate) const PROGRESS_EVERY_S: f64 = 1.0;
