//! Training on an arm on Reflex's joint firmware: `reflex train --robot serial:PORT`.
//!
//! [`SerialArms`] hands every runtime of the training job a handle on one board
//! ([`SharedSerialRobot`]: the port is exclusive; the job ticks one runtime at a time). Episodes
//! start through the scene link's reset and are judged by the task over the tracked poses, as
//! over ROS 2; the loop is paced in real time and the learner never holds the arm back.

use crate::arms::{Arms, ArmsError, TaskScene};
use crate::run::{RunError, SerialTarget};
use crate::train::{train_on, Progress, Summary, TrainConfig, TrainError};
use reflex_core::ArmModel;
use reflex_learn::stage::RewardPlugin;
use reflex_policy::ObsLayout;
use reflex_runtime::EStop;
use reflex_serial::SharedSerialRobot;
use reflex_sim::Task;
use std::path::Path;

/// The arm on the board at `target`, set up for a task, with a loop at a fixed rate.
pub struct SerialArms {
    task: Task,
    rate_hz: f64,
    robot: SharedSerialRobot,
    scene: TaskScene,
}

impl SerialArms {
    /// Opens `target`'s port and scene link for `task` (the board answers at the first
    /// runtime's start). Training needs the scene link: it starts the episodes and reports the
    /// objects the task is judged over.
    pub fn open(task: &Task, target: &SerialTarget, rate_hz: f64) -> Result<Self, RunError> {
        if target.scene.is_none() {
            return Err(RunError::Setting(format!(
                "--robot serial:{}: training needs --scene HOST:PORT (the tracker's poses judge \
                 each step and its resets start each episode)",
                target.port
            )));
        }
        let scene = TaskScene::of(task)?;
        let robot = target.open(task, &scene.model, &scene.goals, EStop::new())?;
        Ok(Self {
            task: task.clone(),
            rate_hz,
            robot: SharedSerialRobot::new(robot),
            scene,
        })
    }

    /// The shared robot (for its health and link statistics).
    pub fn robot(&self) -> &SharedSerialRobot {
        &self.robot
    }
}

impl Arms for SerialArms {
    type Robot = SharedSerialRobot;

    fn task(&self) -> &Task {
        &self.task
    }

    fn rate_hz(&self) -> f64 {
        self.rate_hz
    }

    /// A handle on the board; the scene resets when the runtime starts an episode.
    fn make(&self, _seed: u64) -> Result<(SharedSerialRobot, ArmModel), ArmsError> {
        Ok((self.robot.clone(), self.scene.model.clone()))
    }

    fn model(&self) -> Result<ArmModel, ArmsError> {
        Ok(self.scene.model.clone())
    }

    fn obs_layout(&self) -> Result<ObsLayout, ArmsError> {
        Ok(self.scene.layout)
    }

    fn real_time(&self) -> bool {
        true
    }

    fn estop_for(&self, robot: &SharedSerialRobot) -> EStop {
        robot.estop().clone()
    }
}

/// `reflex train --robot serial:PORT`: the training job ([`train_on`]) on the board `target`
/// names, with the task's reward judged over the tracked objects (or `reward`'s). The loop runs
/// at `cfg.runtime.servo_rate_hz`; the runtime waits up to 10 s for the board's first state.
/// The board is left holding the arm at rest.
pub fn serial_train(
    cfg: &TrainConfig,
    target: &SerialTarget,
    out: &Path,
    resume: bool,
    reward: Option<RewardPlugin>,
    progress: impl FnMut(Progress),
) -> Result<Summary, TrainError> {
    let task = Task::load(&cfg.task).map_err(crate::train::config::stage("task"))?;
    let arms = SerialArms::open(&task, target, cfg.runtime.servo_rate_hz)
        .map_err(crate::train::config::stage("serial arm"))?;
    let summary = train_on(&arms, cfg, out, resume, reward, progress);
    tracing::info!(health = ?arms.robot().with(|r| reflex_core::Robot::health(r)), "board at the end");
    summary
}
