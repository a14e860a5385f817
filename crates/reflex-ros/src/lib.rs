//! `reflex-ros`: the ROS 2 bridge. The same runtime, safety filter and policies that drive the
//! simulator drive any ros2_control arm through it.
//!
//! - [`RosRobot`] implements [`reflex_core::Robot`] in ros2_control conventions: joint states in
//!   (`sensor_msgs/JointState`, matched by name), commands out to a forward position or velocity
//!   controller (`std_msgs/Float64MultiArray`; velocities zeroed when the loop stops) or a joint
//!   trajectory controller
//!   (`trajectory_msgs/JointTrajectory`), the gripper on its own controller; object poses from
//!   `/tf` or a `geometry_msgs/PoseArray`; the e-stop topic and re-arm service; an operator's
//!   `TwistStamped` or `Joy` into the runtime's takeover rule ([`operator`]); `/diagnostics`,
//!   `/reflex/intervening` and `/reflex/reward` (every judged step). A
//!   [`reflex_core::StepJudge`] given with [`RosRobot::set_judge`] scores each policy step from
//!   the observation (the jobs give the task's judge over the tracked objects); without one,
//!   rewards are pending for a reward worker. With cameras configured it is also a
//!   [`reflex_core::SceneView`] over their image, depth and camera-info topics ([`camera`]),
//!   and hands a camera thread their newest colour ([`RosRobot::cameras_handle`]; a wrist
//!   camera without a calibrated pose serves pixel policies this way only).
//! - The ROS side runs on its own executor thread and meets the control tick only in wait-free
//!   latest-value cells. It reaches ROS 2 through [`transport`]: ros2-client + rustdds by
//!   default (no ROS install needed), or r2r over the sourced ROS 2's rcl (`backend: r2r`, the
//!   `r2r` feature). Decoding, refusing and counting are the executor's, the same for both.
//! - [`args`] parses the `--ros-args` a launch file appends and the parameter files it names;
//!   [`params`] types the bridge's parameters; [`decode`] turns joint states into robot states
//!   or refuses them, as a pure function that property tests cover.
//! - [`netns`] runs a DDS test inside a network namespace that holds only loopback.
//! - [`arm_server`] publishes any stepped arm (the simulator, in `reflex ros sim-arm`) exactly as
//!   a ros2_control robot with a `joint_state_broadcaster` and forward position controllers
//!   would.
//!
//! Every participant is restricted to loopback unless `localhost_only` is false (with r2r, the
//! bridge refuses to start unless rcl's environment says so too).

pub mod args;
pub mod arm_server;
mod bridge;
pub mod camera;
pub mod decode;
pub mod msg;
pub mod netns;
pub mod operator;
pub mod params;
#[cfg(feature = "r2r")]
mod r2r_transport;
pub mod transport;

pub use args::{ArgsError, ParamSet, ParamValue, RosArgs};
pub use bridge::{
    advertise, context, node, participant, qos_command, qos_latched, qos_service, qos_stream,
    ros_name, subscribe, subscribe_if, topic, wall_ns, BridgeError, BridgeStats, ResetError,
    RosRobot,
};
pub use params::{Backend, BridgeParams, CommandInterface, ObjectsSource, ParamError, Reader};
/// What a task asks of the tracked scene (defined with the scene seam in `reflex-core`).
pub use reflex_core::SceneSpec;
