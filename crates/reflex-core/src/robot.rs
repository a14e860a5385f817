//! The two seams every part of Reflex meets at: a `Robot` (simulated, ROS 2, or our firmware) and
//! a `Policy` (scripted, cloned, or learned).

use crate::kinematics::JointLimits;
use crate::safety::SafetyLimits;
use crate::transition::Outcome;
use crate::types::{Action, JointCommand, Observation, RobotState, ARM_DOF};
use std::time::{Duration, Instant};

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

/// Why a robot could not start.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum StartError {
    /// No usable state arrived within the wait.
    #[error("no state from the robot within {waited_s:.1} s (last: {last})")]
    NoState {
        /// How long it waited, seconds.
        waited_s: f64,
        /// The last read's result.
        last: String,
    },
    /// A configured limit lies outside what the robot itself allows.
    #[error("safety limit `{field}` = {configured} lies outside the robot's own limit {own}")]
    BeyondRobot {
        /// The configured limit, e.g. `joint_vel_max_rad_s[3]`.
        field: String,
        /// Its value.
        configured: f64,
        /// The robot's own limit.
        own: f64,
    },
    /// The robot refused to start (driver error, protective stop, wrong mode).
    #[error("the robot refused to start: {0}")]
    Refused(String),
}

/// How a robot is doing, for operators and logs (slow path; never asked on the tick).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RobotHealth {
    /// The link to the robot is up.
    pub connected: bool,
    /// Age of the newest state, seconds (none before the first).
    pub state_age_s: Option<f64>,
    /// Faults the robot or its driver reports now (protective stop, driver errors).
    pub faults: Vec<String>,
}

/// Checks `limits` against a robot's own joint limits: every configured position range lies
/// inside the robot's and every speed limit at or below the robot's. The error names the first
/// field that does not.
pub fn check_limits_within(
    limits: &SafetyLimits,
    own: &[JointLimits; ARM_DOF],
) -> Result<(), StartError> {
    for (j, o) in own.iter().enumerate() {
        let checks = [
            (
                "joint_pos_min_rad",
                limits.joint_pos_min_rad[j],
                o.lower,
                limits.joint_pos_min_rad[j] >= o.lower,
            ),
            (
                "joint_pos_max_rad",
                limits.joint_pos_max_rad[j],
                o.upper,
                limits.joint_pos_max_rad[j] <= o.upper,
            ),
            (
                "joint_vel_max_rad_s",
                limits.joint_vel_max_rad_s[j],
                o.velocity,
                limits.joint_vel_max_rad_s[j] <= o.velocity,
            ),
        ];
        for (name, configured, own, ok) in checks {
            if !ok {
                return Err(StartError::BeyondRobot {
                    field: format!("{name}[{j}]"),
                    configured,
                    own,
                });
            }
        }
    }
    Ok(())
}

/// Anything the runtime can drive: read the state, write a command, tell the time; and its
/// lifecycle: [`Robot::start`] before the first tick, [`Robot::stop`] after the last,
/// [`Robot::health`] whenever someone asks.
///
/// Implementations must not block for longer than one control period in `read_state` or
/// `write_command`.
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

    /// An episode starts; `first` is its first observation (state and scene). A robot that
    /// judges its steps itself (a task judge over tracked objects) starts its episode here.
    /// Default: nothing. Must not allocate.
    fn begin_judging(&mut self, _first: &Observation) {}

    /// The robot's own joint limits (from its controller or driver), when it reports them.
    /// Default: none.
    fn own_limits(&self) -> Option<[JointLimits; ARM_DOF]> {
        None
    }

    /// Connects, waits up to `timeout` for a first finite state, and checks `limits` against
    /// [`Robot::own_limits`]. Called once, before the first tick (may block). A link-based
    /// robot overrides it to connect first and then calls [`start_default`].
    fn start(&mut self, limits: &SafetyLimits, timeout: Duration) -> Result<(), StartError>
    where
        Self: Sized,
    {
        start_default(self, limits, timeout)
    }

    /// Releases the robot after the runtime brought the arm to rest (drops the link, leaves
    /// the controller holding). Default: nothing.
    fn stop(&mut self) {}

    /// How the robot is doing. Default: connected, no faults, age unknown.
    fn health(&self) -> RobotHealth {
        RobotHealth {
            connected: true,
            ..Default::default()
        }
    }
}

/// What [`Robot::start`] does by default: poll `read_state` (every millisecond) until a finite
/// state arrives or `timeout` passes, then check `limits` against the robot's own.
pub fn start_default<R: Robot>(
    robot: &mut R,
    limits: &SafetyLimits,
    timeout: Duration,
) -> Result<(), StartError> {
    let started = Instant::now();
    let mut state = RobotState::default();
    loop {
        let last = match robot.read_state(&mut state) {
            Ok(()) if state.is_finite() => break,
            Ok(()) => "a non-finite state".to_owned(),
            Err(e) => e.to_string(),
        };
        if started.elapsed() >= timeout {
            return Err(StartError::NoState {
                waited_s: started.elapsed().as_secs_f64(),
                last,
            });
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    match robot.own_limits() {
        Some(own) => check_limits_within(limits, &own),
        None => Ok(()),
    }
}

/// Scores policy steps from observations alone, for a robot that cannot know its task's
/// reward itself (a real arm): a task's reward terms and success over tracked objects, a
/// detector. The robot calls [`StepJudge::begin`] from [`Robot::begin_judging`] and
/// [`StepJudge::judge`] from [`Robot::judge`]. Neither may allocate.
pub trait StepJudge: Send {
    /// An episode starts with `first` as its first observation.
    fn begin(&mut self, first: &Observation);
    /// The outcome of the step that ended in `obs`, in which `action` was executed;
    /// `truncated` says the episode reached its step limit with this step.
    fn judge(&mut self, obs: &Observation, action: &Action, truncated: bool) -> Outcome;
    /// The names of the outcome's reward terms, in order. Default: none.
    fn term_names(&self) -> Vec<String> {
        Vec::new()
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
    /// Whether the policy can act on `obs` now: false when an input of its own is missing or
    /// too old (a camera frame). The runtime then holds the arm instead of calling
    /// [`Policy::act`], and records the step as [`crate::Interruption::InputStale`].
    fn ready(&mut self, obs: &Observation) -> bool {
        let _ = obs;
        true
    }
    /// Computes the action for `obs`, writing it into `action` (whose space is already set).
    fn act(&mut self, obs: &Observation, action: &mut Action);
    /// Called at the start of every episode.
    fn reset(&mut self) {}
}
