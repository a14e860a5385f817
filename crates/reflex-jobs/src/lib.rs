//! # reflex-jobs
//!
//! The jobs Reflex runs, and the only layer that wires a robot (the simulator today, a real arm
//! through the same traits) to learning and rewards. Everything below it (core, policy runtime,
//! learner, reward sources, classifier) sees the world through `reflex_core`'s `Robot` and
//! `SceneView` traits and never depends on the simulator; `reflex-cli` only parses arguments and
//! calls in here.
//!
//! - [`arms`]: the one builder of runtimes ([`arms::Arms`], [`arms::SimArms`],
//!   [`arms::runtime_config`]).
//! - [`bench`]: `reflex bench` (simulator, policy, loop, learner, pendulum, training, ROS 2
//!   round trips, teleop latency).
//! - [`train`]: `reflex train` (demonstrations, behaviour cloning, residual RL through the
//!   runtime, evaluation, reports and plots) and `reflex eval`.
//! - [`pixel_deploy`]: a pixel run's policies on an arm whose cameras come from elsewhere than
//!   the simulator's renderer (`reflex ros run` over camera topics), fed by a camera thread.
//! - [`policies`]: policy files written with their metadata and checked against a task.
//! - [`rewards`]: the reward source of a run (`[reward]` of its config), built as a
//!   `reflex_learn::stage` plugin.
//! - [`run`]: `reflex run`, the runtime driving the simulated arm (or a serial arm on Reflex's
//!   firmware) in real time from checked policy files, braking to rest on an interrupt.
//! - [`serial`]: `reflex train --robot serial:PORT`, the training job on an arm on Reflex's
//!   firmware, its runtimes taking turns on the one board.
//! - [`firmware_sim`]: `reflex firmware-sim`, the firmware's control core behind a
//!   pseudo-terminal with the simulated arm as its plant, and the scene link's simulated
//!   tracker and resets beside it.
//! - [`board_sim`]: `--robot sim-board`, the simulated arm behind the firmware's control core
//!   in process (the board's controller, limits and 1 ms physics at simulation speed), for
//!   `reflex run` and `reflex train`.
//! - [`sim`]: `reflex sim`, the scripted expert's episodes in parallel, with frames saved.
//! - [`preference`]: `reflex preference`, a preference reward model learned from a judge's
//!   labels on simulated frames and its rank correlation with true progress.
//! - [`classifier`]: labelled frames from the simulator for `reflex classifier`.
//! - [`teleop`]: `reflex teleop`, a correction session: the policy acts on the simulated arm in
//!   real time while an operator watches the page and takes over; with `--learn` it continues a
//!   training run and learns from the takeovers live; the scripted operator speaks the page's
//!   protocol; sessions are recorded with their camera streams and replayed.
//! - `export` (the `lerobot` feature): `reflex export lerobot`, recorded sessions as a LeRobot
//!   dataset (parquet tables, AV1 videos through the system's ffmpeg).

pub mod arms;
pub mod bench;
pub mod board_sim;
pub mod classifier;
#[cfg(feature = "lerobot")]
pub mod export;
pub mod firmware_sim;
#[cfg(feature = "fleet")]
pub mod fleet;
pub mod pixel_deploy;
pub mod policies;
pub mod preference;
pub mod rewards;
pub mod ros;
pub mod run;
pub mod serial;
pub mod sim;
pub mod teleop;
pub mod train;
