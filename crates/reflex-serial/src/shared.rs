//! [`SharedSerialRobot`]: one board, several runtimes taking turns on it.
//!
//! A serial port is exclusive, yet a training job holds several runtimes over the same arm (the
//! one that explores, the one that evaluates) and ticks one at a time. Each gets a handle on
//! one [`SerialRobot`]: one session, one link, one e-stop. The first start opens the session;
//! a later start finds it open. A stop brings the arm to rest and leaves the board holding; the
//! port and its reader close with the last handle.
//!
//! The tick never waits on the handle's lock: a turn taken while another runtime holds the
//! robot reads as a stale state, and the command is not sent (the board's own watchdog and
//! limits still govern the arm).

use crate::robot::{SerialResetError, SerialRobot};
use reflex_core::{
    Action, Frame, JointCommand, JointLimits, Observation, Outcome, Robot, RobotError, RobotHealth,
    RobotState, SafetyLimits, SceneError, SceneReset, SceneView, StartError, TrackedObject,
    ARM_DOF,
};
use reflex_runtime::EStop;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

/// A handle on a [`SerialRobot`] that several runtimes share; clone it for each.
#[derive(Clone)]
pub struct SharedSerialRobot {
    inner: Arc<Mutex<SerialRobot>>,
    started: Arc<AtomicBool>,
    epoch: Instant,
    estop: EStop,
    port: String,
}

impl SharedSerialRobot {
    /// Shares `robot` (not yet started).
    pub fn new(robot: SerialRobot) -> Self {
        Self {
            epoch: robot.clock_epoch(),
            estop: robot.estop().clone(),
            port: robot.port().to_owned(),
            inner: Arc::new(Mutex::new(robot)),
            started: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The e-stop every runtime over this robot must obey (the board stopping latches it).
    pub fn estop(&self) -> &EStop {
        &self.estop
    }

    /// Runs `f` on the robot, waiting for another handle's turn to end (not for the tick).
    pub fn with<T>(&self, f: impl FnOnce(&mut SerialRobot) -> T) -> T {
        f(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The robot now, or `None` while another handle holds it.
    fn turn(&self) -> Option<MutexGuard<'_, SerialRobot>> {
        match self.inner.try_lock() {
            Ok(g) => Some(g),
            Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }
    }
}

impl Robot for SharedSerialRobot {
    fn read_state(&mut self, state: &mut RobotState) -> Result<(), RobotError> {
        self.turn().ok_or(RobotError::Stale)?.read_state(state)
    }

    fn write_command(&mut self, command: &JointCommand) -> Result<(), RobotError> {
        self.turn()
            .ok_or(RobotError::Rejected)?
            .write_command(command)
    }

    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    fn read_scene(&mut self, obs: &mut Observation) {
        if let Some(mut r) = self.turn() {
            r.read_scene(obs);
        }
    }

    fn judge(&mut self, obs: &Observation, action: &Action) -> Outcome {
        self.turn()
            .map_or(Outcome::PENDING, |mut r| r.judge(obs, action))
    }

    fn begin_judging(&mut self, first: &Observation) {
        if let Some(mut r) = self.turn() {
            r.begin_judging(first);
        }
    }

    fn own_limits(&self) -> Option<[JointLimits; ARM_DOF]> {
        self.with(|r| r.own_limits())
    }

    /// The first start opens the session; a later one finds it open (and checks `limits`
    /// against the board's again).
    fn start(&mut self, limits: &SafetyLimits, timeout: Duration) -> Result<(), StartError> {
        self.with(|r| {
            if self.started.load(Ordering::Acquire) {
                if let Some(own) = r.own_limits() {
                    reflex_core::check_limits_within(limits, &own)?;
                }
                return reflex_core::start_default(r, limits, timeout);
            }
            r.start(limits, timeout)?;
            self.started.store(true, Ordering::Release);
            Ok(())
        })
    }

    /// Brings the arm to rest and leaves the board holding; the last handle also closes the
    /// session's reader.
    fn stop(&mut self) {
        let last = Arc::strong_count(&self.inner) == 1;
        self.with(|r| if last { r.stop() } else { r.hold() });
    }

    fn health(&self) -> RobotHealth {
        match self.turn() {
            Some(r) => r.health(),
            None => RobotHealth {
                connected: true,
                state_age_s: None,
                faults: vec![format!("{}: another runtime's turn", self.port)],
            },
        }
    }
}

impl SceneReset for SharedSerialRobot {
    type Error = SerialResetError;

    fn reset_scene(&mut self, seed: u64) -> Result<(), SerialResetError> {
        self.with(|r| r.reset_scene(seed))
    }
}

impl SceneView for SharedSerialRobot {
    fn cameras(&self) -> Vec<String> {
        Vec::new()
    }

    fn render(&self, camera: &str, frame: &mut Frame) -> Result<(), SceneError> {
        self.with(|r| r.render(camera, frame))
    }

    fn objects(&self, out: &mut Vec<TrackedObject>) {
        self.with(|r| r.objects(out))
    }
}
