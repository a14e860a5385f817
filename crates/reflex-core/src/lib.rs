//! # reflex-core
//!
//! The vocabulary every other Reflex crate speaks, and nothing else: fixed-size observation,
//! action and command types; the `Robot` and `Policy` traits; lock-free bounded queues with a
//! declared overflow rule; the safety limits the runtime enforces; the arm's kinematic model
//! read from a URDF (7 joints, or 6 with an inert seventh slot: [`ArmModel::dof`]); the mapping from normalised actions to joint setpoints (`ActionMapper`);
//! the records a control loop emits (`Outcome`, `Transition`); the seeded RNG every layer
//! shares ([`rng`]); cameras, frames and the way between pixels and world points ([`camera`]);
//! [`OperatorCommand`], what every operator device says to a loop; and [`SceneView`], the cameras
//! and tracked objects reward sources may look at ([`scene`]). No simulator, ROS or learning code depends in here, so a real-robot bridge
//! and the simulator share these types exactly.
//!
//! ```
//! use reflex_core::{ArmModel, SafetyLimits, BoundedQueue, Overflow, Pushed};
//! let urdf = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../urdf/reflex_arm.urdf");
//! let arm = ArmModel::from_urdf_file(&urdf, "link0", "tcp").unwrap();
//! let tcp = arm.tcp_pose(&[0.0, -0.3, 0.0, -2.2, 0.0, 2.0, 0.8]);
//! assert!(tcp.translation.z > 0.0);
//! let limits = SafetyLimits::from_model(&arm);
//! limits.validate().unwrap();
//! let q = BoundedQueue::new(2, Overflow::DropOldest);
//! assert_eq!(q.push(1), Pushed::Stored);
//! ```

// Validation writes `!(x > 0.0)` on purpose: unlike `x <= 0.0`, it also rejects NaN.
#![allow(clippy::neg_cmp_op_on_partial_ord)]

pub mod camera;
mod control;
mod kinematics;
mod operator;
mod queue;
pub mod rng;
mod robot;
mod safety;
pub mod scene;
mod transition;
mod types;

pub use camera::{look_at, Frame, Intrinsics, LiftError};

pub use control::{ActionMapper, ControlSpec, SpecError};
pub use kinematics::{
    ArmModel, Frames, GripperModel, Jacobian, JointLimits, ModelError, ENVELOPE_POINTS,
    INERT_JOINT_LIMITS,
};
pub use operator::{OperatorCommand, OperatorEvents, Takeover};
pub use queue::{
    image_cell, latest, spsc, BoundedQueue, ImageReader, ImageWriter, LatestReceiver, LatestSender,
    Overflow, Pushed, QueueStats, SpscReceiver, SpscSender, StampedImage,
};
pub use rng::Rng;
pub use robot::{
    check_limits_within, start_default, Policy, Robot, RobotError, RobotHealth, SceneReset,
    StartError, StepJudge,
};
pub use safety::{LimitsError, SafetyLimits};
pub use scene::{SceneError, SceneSpec, SceneView, TrackedObject};
pub use transition::{
    combine_success, FusionRule, Interruption, Outcome, RewardTerms, Transition, MAX_REWARD_TERMS,
};
pub use types::{
    Action, ActionSpace, FlatObs, JointCommand, ObjectState, Observation, Pose, RobotState,
    ARM_DOF, FLAT_OBJECTS, FLAT_OBJECT_STRIDE, FLAT_TCP_POS, MAX_ACTION_DIM, MAX_GOALS,
    MAX_KEYPOINTS, MAX_OBJECTS, MAX_OBS_DIM, MIN_ARM_DOF,
};
