//! The simulator as a [`Robot`]: what the runtime's control loop drives in simulation, through
//! exactly the seam a real arm's driver implements.
//!
//! Each `write_command` advances simulated time by one control-loop period: the command is
//! tracked by the simulated joint impedance (with gravity compensation, as a torque-controlled
//! arm does it) for as many physics steps as fall due, so a 1 kHz loop over 2 ms physics steps
//! one physics step every other tick. At policy-step boundaries the runtime asks for the scene
//! (objects, keypoints, goals: simulator ground truth) and for the task's judgement of the step.

use crate::env::{Env, Step};
use crate::error::SimError;
use reflex_core::{
    Action, JointCommand, Observation, Outcome, Robot, RobotError, RobotState, SceneReset,
};

/// An [`Env`] behind the [`Robot`] trait, advanced in lock step with the control loop.
pub struct SimRobot {
    env: Env,
    tick_dt_s: f64,
    /// Simulated time owed to the world, seconds (positive: physics is behind the loop).
    owed_s: f64,
    last_step: Option<Step>,
}

impl SimRobot {
    /// Wraps `env` for a control loop running at `rate_hz`. The loop must not be slower than
    /// the task's policy rate and not faster than 100 kHz.
    pub fn new(env: Env, rate_hz: f64) -> Result<Self, SimError> {
        let policy = env.task().control_rate_hz;
        if !(rate_hz.is_finite() && rate_hz >= policy && rate_hz <= 100_000.0) {
            return Err(SimError::Setting {
                setting: "rate_hz",
                message: format!(
                    "control loop rate {rate_hz} Hz: expected between the task's policy rate \
                     ({policy} Hz) and 100000 Hz"
                ),
            });
        }
        Ok(Self {
            env,
            tick_dt_s: 1.0 / rate_hz,
            owed_s: 0.0,
            last_step: None,
        })
    }

    /// Starts a new episode (slow: rebuilds the world; call it between episodes, not on a tick).
    pub fn reset(&mut self, seed: u64) -> Result<Observation, SimError> {
        self.owed_s = 0.0;
        self.last_step = None;
        self.env.reset(seed)
    }

    /// The environment.
    pub fn env(&self) -> &Env {
        &self.env
    }

    /// The environment, mutable (fault injection, inspection).
    pub fn env_mut(&mut self) -> &mut Env {
        &mut self.env
    }

    /// The last judged policy step (reward terms, success, termination reason).
    pub fn last_step(&self) -> Option<&Step> {
        self.last_step.as_ref()
    }
}

impl SceneReset for SimRobot {
    type Error = SimError;

    fn reset_scene(&mut self, seed: u64) -> Result<(), SimError> {
        self.reset(seed).map(|_| ())
    }
}

impl Robot for SimRobot {
    fn own_limits(&self) -> Option<[reflex_core::JointLimits; reflex_core::ARM_DOF]> {
        // The simulated joints are built from the same URDF.
        Some(self.env.model().limits)
    }

    fn read_state(&mut self, state: &mut RobotState) -> Result<(), RobotError> {
        if self.env.read_robot_state(state) {
            Ok(())
        } else {
            Err(RobotError::NonFinite)
        }
    }

    fn write_command(&mut self, command: &JointCommand) -> Result<(), RobotError> {
        let dt = self.env.task().physics_dt_s;
        self.owed_s += self.tick_dt_s;
        // Step when at least half a physics step is owed: the loop and physics stay within half
        // a physics step of each other whatever their ratio.
        while self.owed_s >= 0.5 * dt {
            self.env.servo(command);
            self.owed_s -= dt;
        }
        Ok(())
    }

    fn now_ns(&self) -> u64 {
        (self.env.sim_time_s() * 1e9) as u64
    }

    fn read_scene(&mut self, obs: &mut Observation) {
        self.env.read_scene(obs);
    }

    fn judge(&mut self, _obs: &Observation, action: &Action) -> Outcome {
        let step = self.env.conclude(action);
        let outcome = Outcome::from(&step);
        self.last_step = Some(step);
        outcome
    }
}

impl reflex_core::SceneView for SimRobot {
    fn cameras(&self) -> Vec<String> {
        self.env().cameras()
    }

    fn render(
        &self,
        camera: &str,
        frame: &mut reflex_core::Frame,
    ) -> Result<(), reflex_core::SceneError> {
        reflex_core::SceneView::render(self.env(), camera, frame)
    }

    fn objects(&self, out: &mut Vec<reflex_core::TrackedObject>) {
        self.env().objects(out)
    }
}
