//! The two seams every part of Reflex meets at: a `Robot` (simulated, ROS 2, or our firmware) and
//! a `Policy` (scripted, cloned, or learned).

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
}

/// Anything that maps an observation to an action. `act` fills a preallocated action and must not
/// allocate.
pub trait Policy {
    /// Computes the action for `obs`, writing it into `action` (whose space is already set).
    fn act(&mut self, obs: &Observation, action: &mut Action);
    /// Called at the start of every episode.
    fn reset(&mut self) {}
}
