//! # reflex-sim
//!
//! The simulator every Reflex training run and most tests stand on: a rapier3d world built from
//! `urdf/reflex_arm.urdf` and a task file from `sim/tasks/`, driven like a real arm (joint
//! impedance with gravity compensation at the physics rate under a slower policy), with ray-cast
//! cameras and a Gymnasium-style [`Env`].
//!
//! - [`task`]: the task-file schema and its validation (errors name file and field).
//! - [`world`]: building the rapier world; the arm's motors and joint read-out.
//! - [`camera`]: RGB, depth and segmentation by ray casting through rapier's query pipeline.
//!   [`Env`] and [`SimRobot`] implement `reflex_core::SceneView` (cameras `front` and `wrist`,
//!   the task's objects as a tracker would report them), which is all reward sources see.
//! - [`env`] / [`vec_env`]: `reset(seed)` / `step(action)`, one or many environments.
//! - [`reward`]: [`TaskJudge`], the task's reward terms, success and lost-object check as a
//!   function of the observation alone; [`Env`] scores its steps with it, and the ROS 2 jobs
//!   score a real arm's steps with it over the tracker's object poses.
//! - [`expert`]: scripted experts for demonstrations.
//! - [`sim_robot`]: [`SimRobot`], the simulator behind the `Robot` trait, for the runtime's
//!   control loop.
//!
//! Actions become joint setpoints through `reflex_core::ActionMapper`, the mapper the runtime
//! uses on real arms too.
//!
//! ```no_run
//! use reflex_core::{Action, Policy};
//! use reflex_sim::{Env, ScriptedExpert, Task};
//! let task = Task::load("reach").unwrap();
//! let mut env = Env::new(task.clone()).unwrap();
//! let mut expert = ScriptedExpert::new(&task, env.model());
//! let mut obs = env.reset(7).unwrap();
//! let mut action = Action::zeros(task.action_space);
//! loop {
//!     expert.act(&obs, &mut action);
//!     let step = env.step(&action).unwrap();
//!     obs = step.obs;
//!     if step.terminated || step.truncated {
//!         println!("success: {}", step.info.success);
//!         break;
//!     }
//! }
//! ```

// Validation writes `!(x > 0.0)` on purpose: unlike `x <= 0.0`, it also rejects NaN.
#![allow(clippy::neg_cmp_op_on_partial_ord)]

pub mod camera;
/// The seeded generator (it lives in `reflex-core`, shared by every layer).
pub use reflex_core::rng;
pub mod env;
mod error;
pub mod expert;
pub mod reward;
pub mod sim_robot;
pub mod task;
pub mod vec_env;
pub mod world;

pub use camera::{save_png, Camera, Frame, Intrinsics, Mount};
pub use env::{default_urdf_path, Env, Step, StepInfo, Termination};
pub use error::SimError;
pub use expert::{noisy_expert_episodes, ScriptedExpert};
pub use reward::{Judgement, RewardTerms, TaskJudge};
pub use sim_robot::SimRobot;
pub use task::Task;
pub use vec_env::VecEnv;
