//! The two seams every part of Reflex meets at: a `Robot` (simulated, ROS 2, or our firmware) and
//! a `Policy` (scripted, cloned, or learned).

use crate::transition::Outcome;
use crate::types::{Action, JointCommand, Observation, RobotState};

/// A real-time error from a robot. Small and `Copy` so the control path can return it without
/// allocating; the slow side turns it into a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RobotError {
    /// The link to the robot is gone.
    #[error("robot link is down")]
    Disconnected,
    /// No fresh state arrived in time.
    #[error("robot state is stale")]
    Stale,
    /// The robot reported a non-finite value; the state was not used.
    #[error("robot reported a non-finite value")]
    NonFinite,
    /// The robot refused the command (for example because it is in a protective stop).
    #[error("robot rejected the command")]
    Rejected,
}

/// Anything the runtime can drive: read the state, write a command, tell the time.
///
/// Implementations must not block for longer than one control period in either call.
pub trait Robot {
    /// Fills `state` with the latest measurement.
    fn read_state(&mut self, state: &mut RobotState) -> Result<(), RobotError>;
    /// Sends joint setpoints and a gripper width to the robot's own impedance controller.
    fn write_command(&mut self, command: &JointCommand) -> Result<(), RobotError>;
    /// The robot's clock, nanoseconds (simulated time in simulation).
    fn now_ns(&self) -> u64;

    /// Fills what this robot knows about the scene into `obs`: task objects, keypoints and
    /// goals. A simulator knows the truth; a real arm leaves them to a tracker, so by default
    /// nothing is filled. Called once per policy step; must not allocate.
    fn read_scene(&mut self, _obs: &mut Observation) {}

    /// Judges the policy step that just ended, in which `action` was executed; `obs` is the
    /// observation after it. A simulator knows the task's reward and success; a real arm by
    /// default reports the reward as pending (a reward worker answers later, joined by step id)
    /// and lets the episode run on. Called once per policy step; must not allocate.
    fn judge(&mut self, _obs: &Observation, _action: &Action) -> Outcome {
        Outcome::PENDING
    }
}

/// A robot whose whole scene can be put back to a seeded start without commanding the arm: a
/// simulator. A real arm has no such reset; it moves back through the runtime's filter like any
/// other motion. [`Runtime::reset_episode`](../reflex_runtime/struct.Runtime.html) is the only
/// caller, and it restarts the safety filter from the new state.
pub trait SceneReset {
    /// Why a reset failed.
    type Error: std::error::Error + Send + Sync + 'static;
    /// Rebuilds the scene for `seed` (slow; between episodes, never on a tick).
    fn reset_scene(&mut self, seed: u64) -> Result<(), Self::Error>;
}

/// Anything that maps an observation to an action. `act` fills a preallocated action and must not
/// allocate.
pub trait Policy {
    /// Computes the action for `obs`, writing it into `action` (whose space is already set).
    fn act(&mut self, obs: &Observation, action: &mut Action);
    /// Called at the start of every episode.
    fn reset(&mut self) {}
}
