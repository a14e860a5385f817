//! Any stepped arm published exactly as a ros2_control robot would publish it: a
//! `joint_state_broadcaster` (`/joint_states`, every joint by name), a forward position
//! controller for the arm (`<arm_controller>/commands`) and one for the gripper's fingers
//! (`<gripper_controller>/commands`), object poses on `/tf` (from a tracker's point of view:
//! parent `base_frame`, child the object's name) and, as a pose-array tracker would, on
//! `/objects` (`geometry_msgs/PoseArray` in the task's object order), and camera images with their camera info as
//! a ROS camera driver would publish them (`/<camera>/color/image_raw`, ...). Like `forward_command_controller`, a command
//! of the wrong length or with a non-finite value is dropped (and counted) and the last good one
//! is held.
//!
//! The simulator is served this way by `reflex ros sim-arm`. Two extras exist only because it
//! is a simulator, under `/reflex_sim/`: a `std_srvs/Trigger` reset (`/reflex_sim/reset`) and
//! the task's ground-truth success (`/reflex_sim/privileged_success`, `std_msgs/Bool`), for
//! evaluating a run, never for its rewards or observations.

use crate::bridge::{
    advertise, context, qos_command, qos_service, qos_stream, ros_name, subscribe, wall_ns,
};
use crate::msg::{
    Bool, CameraInfo, Float64MultiArray, Header, Image, JointState, PoseArray, TfMessage, Time,
    Transform, TransformStamped, TriggerRequest, TriggerResponse,
};
use crate::params::BridgeParams;
use reflex_core::{Frame, JointCommand, Pose, ARM_DOF};
use ros2_client::{ServiceMapping, ServiceTypeName};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// An arm the server steps: the simulator, or anything else that integrates commands.
pub trait ServedArm {
    /// Names of the published joints: the 7 arm joints, then the finger joints.
    fn joint_names(&self) -> Vec<String>;
    /// Number of finger joints among [`ServedArm::joint_names`] (each at half the width).
    fn finger_count(&self) -> usize;
    /// The position to hold before the first command arrives.
    fn hold_command(&self) -> JointCommand;
    /// Advances the arm by one period under `command`; fills positions, velocities and efforts
    /// in [`ServedArm::joint_names`] order.
    fn step(&mut self, command: &JointCommand, pos: &mut [f64], vel: &mut [f64], eff: &mut [f64]);
    /// Poses of the tracked objects, by name, in the base frame.
    fn objects(&self, out: &mut Vec<(String, Pose)>);
    /// The task's ground-truth success (privileged: for evaluation only).
    fn privileged_success(&mut self) -> bool;
    /// Resets the scene; returns a description (e.g. the seed).
    fn reset(&mut self) -> Result<String, String>;
    /// Cameras to publish. Default: none.
    fn cameras(&self) -> Vec<String> {
        Vec::new()
    }
    /// Renders `camera` into `frame` at the frame's size. Default: no camera.
    fn render(&mut self, _camera: &str, _frame: &mut Frame) -> bool {
        false
    }
}

/// Settings of an [`serve`].
#[derive(Clone, Debug)]
pub struct ArmServerSettings {
    /// Node name.
    pub node_name: String,
    /// Namespace.
    pub namespace: String,
    /// DDS domain and loopback restriction (only `domain_id`, `localhost_only`, `base_frame`,
    /// `joint_states_topic`, `arm_controller` and `gripper_controller` are read).
    pub params: BridgeParams,
    /// Control rate: joint states are published and commands applied at this rate, Hz.
    pub rate_hz: f64,
    /// Object poses and success are published at this rate, Hz.
    pub scene_rate_hz: f64,
    /// Camera images are published at this rate, Hz (0: none), on `/<camera>/color/image_raw`
    /// (`rgb8`), `/<camera>/depth/image_rect_raw` (`32FC1`, metres) and
    /// `/<camera>/color/camera_info`.
    pub camera_rate_hz: f64,
    /// Camera image size, pixels (width, height).
    pub camera_size: (usize, usize),
}

/// Counters of an [`serve`].
#[derive(Debug, Default)]
pub struct ArmServerStats {
    /// Control periods run.
    pub ticks: AtomicU64,
    /// Arm commands applied.
    pub commands: AtomicU64,
    /// Commands dropped (wrong length or non-finite), as `forward_command_controller` does.
    pub dropped: AtomicU64,
    /// Resets done.
    pub resets: AtomicU64,
    /// Periods that started late by more than one period.
    pub overruns: AtomicU64,
}

/// Serves a [`ServedArm`] over DDS until `stop` is set.
pub fn serve<A: ServedArm>(
    arm: &mut A,
    settings: &ArmServerSettings,
    stop: &AtomicBool,
    stats: &Arc<ArmServerStats>,
) -> Result<(), crate::BridgeError> {
    use crate::BridgeError;
    let p = &settings.params;
    let ctx = context(p)?;
    let dds = |what: &str, e: ros2_client::CreateError| BridgeError::Dds(format!("{what}: {e:?}"));
    let mut node = crate::bridge::node(&ctx, &settings.namespace, &settings.node_name)?;
    let n = &mut node;
    let js_pub = advertise::<JointState>(n, &p.joint_states_topic, qos_service())?;
    let arm_topic = format!("{}/commands", p.arm_controller.trim_end_matches('/'));
    let arm_sub = subscribe::<Float64MultiArray>(n, &arm_topic, qos_command())?;
    let grip_topic = format!("{}/commands", p.gripper_controller.trim_end_matches('/'));
    let grip_sub = subscribe::<Float64MultiArray>(n, &grip_topic, qos_command())?;
    let tf_pub = advertise::<TfMessage>(n, "/tf", qos_service())?;
    let objects_pub = advertise::<PoseArray>(n, "/objects", qos_service())?;
    let success_pub = advertise::<Bool>(n, "/reflex_sim/privileged_success", qos_service())?;
    let reset = node
        .create_server::<TriggerRequest, TriggerResponse>(
            ServiceMapping::Enhanced,
            &ros_name("/reflex_sim/reset")?,
            &ServiceTypeName::new("std_srvs", "Trigger"),
            qos_service(),
            qos_service(),
        )
        .map_err(|e| dds("reset service", e))?;

    let mut cameras = Vec::new();
    if settings.camera_rate_hz > 0.0 {
        for name in arm.cameras() {
            let rgb =
                advertise::<Image>(&mut node, &format!("/{name}/color/image_raw"), qos_stream())?;
            let depth = advertise::<Image>(
                &mut node,
                &format!("/{name}/depth/image_rect_raw"),
                qos_stream(),
            )?;
            let info = advertise::<CameraInfo>(
                &mut node,
                &format!("/{name}/color/camera_info"),
                qos_stream(),
            )?;
            cameras.push((name, rgb, depth, info));
        }
    }
    let (cw, ch) = settings.camera_size;
    let mut frame = Frame::new(cw, ch);
    let camera_every = if settings.camera_rate_hz > 0.0 {
        (settings.rate_hz / settings.camera_rate_hz)
            .round()
            .max(1.0) as u64
    } else {
        u64::MAX
    };
    let names = arm.joint_names();
    let n = names.len();
    let fingers = arm.finger_count();
    let mut command = arm.hold_command();
    let mut msg = JointState {
        header: Header::default(),
        name: names,
        position: vec![0.0; n],
        velocity: vec![0.0; n],
        effort: vec![0.0; n],
    };
    let period = Duration::from_secs_f64(1.0 / settings.rate_hz);
    let scene_every = (settings.rate_hz / settings.scene_rate_hz).round().max(1.0) as u64;
    let mut objects = Vec::new();
    let mut next = Instant::now();
    let mut tick = 0u64;
    while !stop.load(Ordering::Acquire) {
        while let Ok(Some((c, _))) = arm_sub.take() {
            if c.data.len() == ARM_DOF && c.data.iter().all(|v| v.is_finite()) {
                command.joint_pos_rad.copy_from_slice(&c.data);
                stats.commands.fetch_add(1, Ordering::Relaxed);
            } else {
                stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        while let Ok(Some((c, _))) = grip_sub.take() {
            if c.data.len() == fingers && c.data.iter().all(|v| v.is_finite()) {
                command.gripper_width_m = c.data.iter().sum();
            } else {
                stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        while let Ok(Some((id, _))) = reset.receive_request() {
            let resp = match arm.reset() {
                Ok(m) => {
                    stats.resets.fetch_add(1, Ordering::Relaxed);
                    command = arm.hold_command();
                    TriggerResponse {
                        success: true,
                        message: m,
                    }
                }
                Err(m) => TriggerResponse {
                    success: false,
                    message: m,
                },
            };
            let _ = reset.send_response(id, resp);
            next = Instant::now();
        }
        arm.step(
            &command,
            &mut msg.position,
            &mut msg.velocity,
            &mut msg.effort,
        );
        msg.header.stamp = Time::from_ns(wall_ns());
        let _ = js_pub.publish(msg.clone());
        if tick.is_multiple_of(scene_every) {
            objects.clear();
            arm.objects(&mut objects);
            let stamp = msg.header.stamp;
            let array = PoseArray {
                header: Header {
                    stamp,
                    frame_id: p.base_frame.clone(),
                },
                poses: objects
                    .iter()
                    .map(|(_, pose)| {
                        let (position, orientation) = msg_pose(pose);
                        crate::msg::Pose {
                            position,
                            orientation,
                        }
                    })
                    .collect(),
            };
            let _ = objects_pub.publish(array);
            let tf = TfMessage {
                transforms: objects
                    .iter()
                    .map(|(name, pose)| TransformStamped {
                        header: Header {
                            stamp,
                            frame_id: p.base_frame.clone(),
                        },
                        child_frame_id: name.clone(),
                        transform: {
                            let (translation, rotation) = msg_pose(pose);
                            Transform {
                                translation,
                                rotation,
                            }
                        },
                    })
                    .collect(),
            };
            let _ = tf_pub.publish(tf);
            let _ = success_pub.publish(Bool {
                data: arm.privileged_success(),
            });
        }
        if tick % camera_every == camera_every / 2 {
            for (name, rgb_pub, depth_pub, info_pub) in &cameras {
                if !arm.render(name, &mut frame) {
                    continue;
                }
                let header = Header {
                    stamp: msg.header.stamp,
                    frame_id: format!("{name}_optical_frame"),
                };
                let _ = rgb_pub.publish(Image {
                    header: header.clone(),
                    height: ch as u32,
                    width: cw as u32,
                    encoding: "rgb8".into(),
                    is_bigendian: 0,
                    step: (cw * 3) as u32,
                    data: frame.rgb.clone(),
                });
                let _ = depth_pub.publish(Image {
                    header: header.clone(),
                    height: ch as u32,
                    width: cw as u32,
                    encoding: "32FC1".into(),
                    is_bigendian: 0,
                    step: (cw * 4) as u32,
                    data: frame.depth_m.iter().flat_map(|d| d.to_le_bytes()).collect(),
                });
                let k = frame.intrinsics;
                // ROS puts pixel centres at whole numbers.
                let (cx, cy) = (k.cx - 0.5, k.cy - 0.5);
                let _ = info_pub.publish(CameraInfo {
                    header,
                    height: ch as u32,
                    width: cw as u32,
                    distortion_model: "plumb_bob".into(),
                    d: vec![0.0; 5],
                    k: [k.fx, 0.0, cx, 0.0, k.fy, cy, 0.0, 0.0, 1.0],
                    r: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
                    p: [k.fx, 0.0, cx, 0.0, 0.0, k.fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0],
                    ..Default::default()
                });
            }
        }
        tick += 1;
        stats.ticks.fetch_add(1, Ordering::Relaxed);
        next += period;
        let now = Instant::now();
        if now < next {
            std::thread::sleep(next - now);
        } else if now - next > period {
            stats.overruns.fetch_add(1, Ordering::Relaxed);
            next = now;
        }
    }
    Ok(())
}

/// A pose as ROS message parts: position (or translation) and orientation.
fn msg_pose(pose: &Pose) -> (crate::msg::Vector3, crate::msg::Quaternion) {
    let (p, q) = (pose.position_m, pose.quat_xyzw);
    (
        crate::msg::Vector3 {
            x: p[0],
            y: p[1],
            z: p[2],
        },
        crate::msg::Quaternion {
            x: q[0],
            y: q[1],
            z: q[2],
            w: q[3],
        },
    )
}
