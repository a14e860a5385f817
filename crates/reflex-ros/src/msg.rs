//! The ROS 2 messages the bridge speaks, as serde structs in the field order of their `.msg`
//! definitions (CDR has no field names: order and types are the whole contract). Each type
//! knows its ROS name through [`RosType`].

use serde::{Deserialize, Serialize};

/// A message type with its ROS 2 package and name (`sensor_msgs/msg/JointState`).
pub trait RosType {
    /// Package, e.g. `sensor_msgs`.
    const PACKAGE: &'static str;
    /// Type name, e.g. `JointState`.
    const NAME: &'static str;
}

macro_rules! ros_type {
    ($t:ty, $pkg:literal, $name:literal) => {
        impl RosType for $t {
            const PACKAGE: &'static str = $pkg;
            const NAME: &'static str = $name;
        }
        impl ros2_client::Message for $t {}
    };
}

/// `builtin_interfaces/Time`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Time {
    /// Seconds.
    pub sec: i32,
    /// Nanoseconds within the second.
    pub nanosec: u32,
}

impl Time {
    /// From nanoseconds.
    pub fn from_ns(ns: u64) -> Self {
        Self {
            sec: (ns / 1_000_000_000) as i32,
            nanosec: (ns % 1_000_000_000) as u32,
        }
    }

    /// To nanoseconds (negative times clamp to zero).
    pub fn to_ns(self) -> u64 {
        (self.sec.max(0) as u64) * 1_000_000_000 + self.nanosec as u64
    }
}

/// `builtin_interfaces/Duration`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RosDuration {
    /// Seconds.
    pub sec: i32,
    /// Nanoseconds within the second.
    pub nanosec: u32,
}

/// `std_msgs/Header`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Time of the data.
    pub stamp: Time,
    /// Frame the data is expressed in.
    pub frame_id: String,
}

/// `sensor_msgs/JointState`: what `joint_state_broadcaster` publishes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct JointState {
    /// Stamp and frame.
    pub header: Header,
    /// Joint names, any order.
    pub name: Vec<String>,
    /// Positions, radians (or metres for prismatic joints).
    pub position: Vec<f64>,
    /// Velocities (may be empty).
    pub velocity: Vec<f64>,
    /// Efforts (may be empty).
    pub effort: Vec<f64>,
}
ros_type!(JointState, "sensor_msgs", "JointState");

/// `std_msgs/MultiArrayDimension`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MultiArrayDimension {
    /// Label of the dimension.
    pub label: String,
    /// Size of the dimension.
    pub size: u32,
    /// Stride of the dimension.
    pub stride: u32,
}

/// `std_msgs/MultiArrayLayout`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MultiArrayLayout {
    /// Dimensions (empty for a flat vector, as ros2_controllers expects).
    pub dim: Vec<MultiArrayDimension>,
    /// Padding before the data.
    pub data_offset: u32,
}

/// `std_msgs/Float64MultiArray`: what a `forward_command_controller` takes on `~/commands`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Float64MultiArray {
    /// Layout (empty).
    pub layout: MultiArrayLayout,
    /// One value per controller joint, in the controller's joint order.
    pub data: Vec<f64>,
}
ros_type!(Float64MultiArray, "std_msgs", "Float64MultiArray");

/// `std_msgs/Bool`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bool {
    /// The value.
    pub data: bool,
}
ros_type!(Bool, "std_msgs", "Bool");

/// `std_msgs/Float64`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Float64 {
    /// The value.
    pub data: f64,
}
ros_type!(Float64, "std_msgs", "Float64");

/// `std_srvs/Trigger` request (an empty message carries one placeholder byte in CDR).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriggerRequest {
    /// The placeholder every empty ROS 2 message carries.
    pub structure_needs_at_least_one_member: u8,
}
impl ros2_client::Message for TriggerRequest {}

/// `std_srvs/Trigger` response.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriggerResponse {
    /// Whether the service did what was asked.
    pub success: bool,
    /// Why not, or what it did.
    pub message: String,
}
impl ros2_client::Message for TriggerResponse {}

/// `trajectory_msgs/JointTrajectoryPoint`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct JointTrajectoryPoint {
    /// Positions, one per joint name.
    pub positions: Vec<f64>,
    /// Velocities (empty: not commanded).
    pub velocities: Vec<f64>,
    /// Accelerations (empty).
    pub accelerations: Vec<f64>,
    /// Efforts (empty).
    pub effort: Vec<f64>,
    /// When this point is to be reached, from the trajectory's start.
    pub time_from_start: RosDuration,
}

/// `trajectory_msgs/JointTrajectory`: what a `joint_trajectory_controller` takes on
/// `~/joint_trajectory`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct JointTrajectory {
    /// Stamp (zero: start now) and frame.
    pub header: Header,
    /// Joint names of every point's vectors.
    pub joint_names: Vec<String>,
    /// The points.
    pub points: Vec<JointTrajectoryPoint>,
}
ros_type!(JointTrajectory, "trajectory_msgs", "JointTrajectory");

/// `geometry_msgs/Vector3`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Vector3 {
    /// x.
    pub x: f64,
    /// y.
    pub y: f64,
    /// z.
    pub z: f64,
}

/// `geometry_msgs/Point`.
pub type Point = Vector3;

/// `geometry_msgs/Quaternion`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Quaternion {
    /// x.
    pub x: f64,
    /// y.
    pub y: f64,
    /// z.
    pub z: f64,
    /// w.
    pub w: f64,
}

impl Default for Quaternion {
    fn default() -> Self {
        Self {
            x: 0.0,
            y: 0.0,
            z: 0.0,
            w: 1.0,
        }
    }
}

/// `geometry_msgs/Pose`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Pose {
    /// Position, metres.
    pub position: Point,
    /// Orientation.
    pub orientation: Quaternion,
}

/// `geometry_msgs/PoseArray`: tracked objects from any tracker, in a configured order.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PoseArray {
    /// Stamp and the frame the poses are in.
    pub header: Header,
    /// The poses.
    pub poses: Vec<Pose>,
}
ros_type!(PoseArray, "geometry_msgs", "PoseArray");

/// `geometry_msgs/Transform`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Transform {
    /// Translation, metres.
    pub translation: Vector3,
    /// Rotation.
    pub rotation: Quaternion,
}

/// `geometry_msgs/TransformStamped`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TransformStamped {
    /// Stamp and the parent frame.
    pub header: Header,
    /// The child frame.
    pub child_frame_id: String,
    /// Pose of the child in the parent.
    pub transform: Transform,
}

/// `tf2_msgs/TFMessage`: what `/tf` carries.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TfMessage {
    /// The transforms.
    pub transforms: Vec<TransformStamped>,
}
ros_type!(TfMessage, "tf2_msgs", "TFMessage");

/// `geometry_msgs/Twist`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Twist {
    /// Linear velocity, m/s.
    pub linear: Vector3,
    /// Angular velocity, rad/s.
    pub angular: Vector3,
}

/// `geometry_msgs/TwistStamped`: an operator's velocity command (SpaceMouse, teleop nodes).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TwistStamped {
    /// Stamp and frame.
    pub header: Header,
    /// The twist.
    pub twist: Twist,
}
ros_type!(TwistStamped, "geometry_msgs", "TwistStamped");

/// `sensor_msgs/Joy`: a gamepad's axes and buttons.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Joy {
    /// Stamp and frame.
    pub header: Header,
    /// Axes, each in [-1, 1].
    pub axes: Vec<f32>,
    /// Buttons, 0 or 1.
    pub buttons: Vec<i32>,
}
ros_type!(Joy, "sensor_msgs", "Joy");

/// `diagnostic_msgs/KeyValue`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    /// Key.
    pub key: String,
    /// Value.
    pub value: String,
}

/// `diagnostic_msgs/DiagnosticStatus`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiagnosticStatus {
    /// OK = 0, WARN = 1, ERROR = 2, STALE = 3.
    pub level: u8,
    /// What is reported on.
    pub name: String,
    /// A summary.
    pub message: String,
    /// The hardware's id.
    pub hardware_id: String,
    /// The figures.
    pub values: Vec<KeyValue>,
}

/// `diagnostic_msgs/DiagnosticArray`: what `/diagnostics` carries.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiagnosticArray {
    /// Stamp.
    pub header: Header,
    /// One status per component.
    pub status: Vec<DiagnosticStatus>,
}
ros_type!(DiagnosticArray, "diagnostic_msgs", "DiagnosticArray");

/// `sensor_msgs/Image`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    /// Stamp (capture time) and the camera's optical frame.
    pub header: Header,
    /// Rows.
    pub height: u32,
    /// Columns.
    pub width: u32,
    /// `rgb8`, `bgr8`, `16UC1` (depth, millimetres) or `32FC1` (depth, metres) are understood.
    pub encoding: String,
    /// 1 if the data is big-endian.
    pub is_bigendian: u8,
    /// Bytes per row.
    pub step: u32,
    /// The pixels.
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}
ros_type!(Image, "sensor_msgs", "Image");

/// `sensor_msgs/RegionOfInterest`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionOfInterest {
    /// Left edge.
    pub x_offset: u32,
    /// Top edge.
    pub y_offset: u32,
    /// Rows.
    pub height: u32,
    /// Columns.
    pub width: u32,
    /// Whether to rectify.
    pub do_rectify: bool,
}

/// `sensor_msgs/CameraInfo`: the intrinsics of a camera's images.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CameraInfo {
    /// Stamp and the optical frame.
    pub header: Header,
    /// Rows of the calibrated image.
    pub height: u32,
    /// Columns of the calibrated image.
    pub width: u32,
    /// Distortion model name.
    pub distortion_model: String,
    /// Distortion parameters.
    pub d: Vec<f64>,
    /// Intrinsic matrix, row-major: `[fx 0 cx; 0 fy cy; 0 0 1]`.
    pub k: [f64; 9],
    /// Rectification rotation.
    pub r: [f64; 9],
    /// Projection matrix.
    pub p: [f64; 12],
    /// Binning along x.
    pub binning_x: u32,
    /// Binning along y.
    pub binning_y: u32,
    /// Region of interest.
    pub roi: RegionOfInterest,
}
ros_type!(CameraInfo, "sensor_msgs", "CameraInfo");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_round_trips_through_nanoseconds() {
        let t = Time::from_ns(12_345_678_901);
        assert_eq!(
            t,
            Time {
                sec: 12,
                nanosec: 345_678_901
            }
        );
        assert_eq!(t.to_ns(), 12_345_678_901);
        assert_eq!(
            Time {
                sec: -3,
                nanosec: 5
            }
            .to_ns(),
            5
        );
    }
}
