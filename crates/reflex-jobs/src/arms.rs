//! The one builder of runtimes: every job (demonstrations, training, evaluation, `reflex run`,
//! benchmarks) gets its arm and its runtime configuration from here.
//!
//! An [`Arms`] makes the robots a job drives. [`SimArms`] makes simulated ones; anything that
//! implements `Robot + SceneView + SceneReset` can stand in (a test drives training through a
//! wrapper that hides the simulator behind those traits), so the jobs never reach past the
//! traits into the simulator.

use reflex_core::{ArmModel, Observation, Policy, Robot, SceneReset, SceneSpec, SceneView};
use reflex_policy::ObsLayout;
use reflex_runtime::{EStop, ResidualPolicy, Runtime, RuntimeConfig, RuntimeSettings};
use reflex_sim::{Env, SimRobot, Task};

/// Why a runtime could not be built; names the part.
#[derive(Debug, thiserror::Error)]
pub enum ArmsError {
    /// The robot (or the simulator behind it) failed.
    #[error("robot: {0}")]
    Robot(String),
    /// The runtime refused its configuration or policies.
    #[error("runtime: {0}")]
    Runtime(String),
}

/// Makes the robots of a job.
pub trait Arms {
    /// The robot type.
    type Robot: Robot + SceneView + SceneReset + 'static;

    /// The task the robots are set up for.
    fn task(&self) -> &Task;

    /// Control-loop rate the robots are stepped at, Hz.
    fn rate_hz(&self) -> f64;

    /// A robot with its scene reset for `seed`, and the arm model its safety filter uses.
    fn make(&self, seed: u64) -> Result<(Self::Robot, ArmModel), ArmsError>;

    /// The arm model the robots' safety filters and the scripted expert use. Default: a fresh
    /// robot's.
    fn model(&self) -> Result<ArmModel, ArmsError> {
        Ok(self.make(0)?.1)
    }

    /// Whether the robots run in real time (a real arm, an arm over a network): every tick is
    /// then paced at the loop rate (braking included), and the job never holds the arm back
    /// for the learner. Default: false (a simulator ticked as fast as it computes).
    fn real_time(&self) -> bool {
        false
    }

    /// The e-stop a runtime over `robot` obeys (a networked robot's, which its e-stop topic
    /// presses). Default: a new one.
    fn estop_for(&self, _robot: &Self::Robot) -> EStop {
        EStop::new()
    }

    /// Adjusts a runtime's configuration before it is built (tighter limits from a robot's
    /// parameters). Default: nothing.
    fn configure(&self, _cfg: &mut RuntimeConfig) {}

    /// Connects a new runtime's statistics and operator input to its robot. Default: nothing.
    fn attach(&self, _rt: &Runtime<Self::Robot>) {}

    /// Where a camera thread reads `robot`'s colour images for a policy that sees its cameras
    /// (a job from pixels), when they arrive on their own schedule (a real-time arm's camera
    /// topics) rather than being rendered on demand. Default: none (the job renders them
    /// through `SceneView` just before each policy step, as a simulator can).
    fn camera_source(
        &self,
        _robot: &Self::Robot,
    ) -> Option<Box<dyn crate::pixel_deploy::ColourSource>> {
        None
    }

    /// The layout of the task's flat observation, read from a fresh robot.
    fn obs_layout(&self) -> Result<ObsLayout, ArmsError> {
        let (mut robot, _) = self.make(0)?;
        let mut obs = Observation::default();
        robot
            .read_state(&mut obs.robot)
            .map_err(|e| ArmsError::Robot(e.to_string()))?;
        robot.read_scene(&mut obs);
        Ok(ObsLayout::of(&obs))
    }
}

/// Simulated arms for `task`, stepped at `rate_hz`.
#[derive(Clone, Debug)]
pub struct SimArms {
    task: Task,
    rate_hz: f64,
}

impl SimArms {
    /// Simulated arms for `task` at a `rate_hz` control loop.
    pub fn new(task: Task, rate_hz: f64) -> Self {
        Self { task, rate_hz }
    }
}

impl Arms for SimArms {
    type Robot = SimRobot;

    fn task(&self) -> &Task {
        &self.task
    }

    fn rate_hz(&self) -> f64 {
        self.rate_hz
    }

    fn make(&self, seed: u64) -> Result<(SimRobot, ArmModel), ArmsError> {
        let sim = |e: reflex_sim::SimError| ArmsError::Robot(format!("simulator: {e}"));
        let mut env = Env::new(self.task.clone()).map_err(sim)?;
        env.reset(seed).map_err(sim)?;
        let model = env.model().clone();
        Ok((SimRobot::new(env, self.rate_hz).map_err(sim)?, model))
    }
}

/// What a real arm's jobs take from a task's scene description (nothing is simulated): the
/// layout of its flat observation, the built-in arm's model, and the goals of its first scene
/// (a tracker reports objects, not goals).
#[derive(Clone, Debug)]
pub struct TaskScene {
    /// The flat observation's layout.
    pub layout: ObsLayout,
    /// The task's arm as the simulator builds it.
    pub model: ArmModel,
    /// Goal positions, metres, base frame.
    pub goals: Vec<[f64; 3]>,
}

impl TaskScene {
    /// Reads `task`'s scene description.
    pub fn of(task: &Task) -> Result<Self, reflex_sim::SimError> {
        let mut env = Env::new(task.clone())?;
        let first = env.reset(0)?;
        Ok(Self {
            layout: ObsLayout::of(&first),
            model: env.model().clone(),
            goals: env.goals().to_vec(),
        })
    }
}

/// The runtime configuration for `task` on an arm described by `model`: the task's policy
/// rate, action space, control and limits with `settings` (at a loop of `servo_rate_hz`).
pub fn runtime_config(
    task: &Task,
    model: &ArmModel,
    servo_rate_hz: f64,
    settings: &RuntimeSettings,
) -> RuntimeConfig {
    RuntimeConfig::from_settings(
        &RuntimeSettings {
            servo_rate_hz,
            ..settings.clone()
        },
        task.control_rate_hz,
        task.action_space,
        task.control.clone(),
        task.arm.initial_joint_pos_rad,
        task.safety_limits(model),
    )
}

/// The shortest wait for a real-time arm's first state, s.
pub const REAL_ARM_START_TIMEOUT_S: f64 = 10.0;

/// A runtime over a new robot from `arms` (scene reset for `seed`) with these policies and
/// `settings` (the loop runs at the arms' rate).
pub fn runtime<A: Arms>(
    arms: &A,
    seed: u64,
    base: Box<dyn Policy + Send>,
    residual: Option<ResidualPolicy>,
    settings: &RuntimeSettings,
) -> Result<Runtime<A::Robot>, ArmsError> {
    let (robot, model) = arms.make(seed)?;
    let mut cfg = runtime_config(arms.task(), &model, arms.rate_hz(), settings);
    if arms.real_time() {
        // A real arm's first state may take a while to arrive (a board answering its
        // handshake, a driver's first joint state over DDS).
        cfg.start_timeout_s = cfg.start_timeout_s.max(REAL_ARM_START_TIMEOUT_S);
    }
    arms.configure(&mut cfg);
    let estop = arms.estop_for(&robot);
    let rt = Runtime::new(robot, cfg, model, base, residual, estop)
        .map_err(|e| ArmsError::Runtime(e.to_string()))?;
    arms.attach(&rt);
    Ok(rt)
}

/// The scene a task asks a tracker for.
pub fn scene_spec(task: &Task, goals: &[[f64; 3]]) -> SceneSpec {
    SceneSpec {
        objects: task.objects.iter().map(|o| o.name.clone()).collect(),
        keypoints: task
            .keypoints
            .iter()
            .map(|k| (task.object(&k.object).unwrap_or(0), k.offset_m))
            .collect(),
        goals: goals.to_vec(),
        episode_steps: task.episode_steps as u64,
        half_extents_m: task
            .objects
            .iter()
            .map(|o| o.shape.half_extents_m())
            .collect(),
    }
}
