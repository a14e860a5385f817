//! What the layers above the runtime may know about the world besides the robot's own state:
//! camera frames and tracked objects, behind [`SceneView`].
//!
//! The simulator implements it from its own world; a real arm implements it from camera topics
//! and an object tracker. Reward sources, the learner's reward seam and the success classifier
//! see only this trait, so they run unchanged on either. Nothing here is privileged: a real
//! camera gives RGB, depth, intrinsics and its pose; a tracker gives object poses and their
//! bounding boxes. Segmentation, where a source offers it, is an optional extra in
//! [`crate::Frame::segmentation`] that no reward path may need.

use crate::camera::Frame;
use crate::types::{ObjectState, Observation, MAX_GOALS, MAX_KEYPOINTS, MAX_OBJECTS};
use nalgebra::{Isometry3, Point3};

/// An object a tracker follows.
#[derive(Clone, Debug, PartialEq)]
pub struct TrackedObject {
    /// Its name (the task's object name).
    pub name: String,
    /// Its pose in the world.
    pub pose: Isometry3<f64>,
    /// Half side lengths of its bounding box in its own frame, metres.
    pub half_extents_m: [f64; 3],
}

impl TrackedObject {
    /// Distance from world point `p` to the object's bounding box, metres (0 inside).
    pub fn distance_m(&self, p: &Point3<f64>) -> f64 {
        let local = self.pose.inverse_transform_point(p);
        let mut d2 = 0.0;
        for i in 0..3 {
            let out = (local[i].abs() - self.half_extents_m[i]).max(0.0);
            d2 += out * out;
        }
        d2.sqrt()
    }
}

/// What a task asks of a scene seen through a tracker, in the task's order: the objects the
/// tracker follows, keypoints attached to them and the episode's goals. Robots without a
/// simulator behind them (the ROS 2 bridge, the serial arm) fill their observations' scene from
/// it and the tracked poses. Built by the jobs layer from a task file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SceneSpec {
    /// Object names, in the task's order (the default tracked frame names).
    pub objects: Vec<String>,
    /// Keypoints: the object index and the offset in the object's frame, metres.
    pub keypoints: Vec<(usize, [f64; 3])>,
    /// Goal points in the base frame, metres.
    pub goals: Vec<[f64; 3]>,
    /// Policy steps per episode (the time limit; 0: none).
    pub episode_steps: u64,
    /// Half side lengths of each object's bounding box, metres (for `SceneView::objects`).
    pub half_extents_m: Vec<[f64; 3]>,
}

impl SceneSpec {
    /// Fills `obs`'s scene from the tracked `objects` (in this spec's order): the objects, the
    /// keypoints on them and the goals. Allocates nothing.
    pub fn fill(&self, objects: &[ObjectState], obs: &mut Observation) {
        obs.num_objects = self.objects.len().min(objects.len()).min(MAX_OBJECTS);
        obs.objects[..obs.num_objects].copy_from_slice(&objects[..obs.num_objects]);
        obs.num_keypoints = self.keypoints.len().min(MAX_KEYPOINTS);
        for (i, (obj, offset)) in self.keypoints.iter().take(obs.num_keypoints).enumerate() {
            let p = obs.objects[*obj].pose.to_isometry() * Point3::from(*offset);
            obs.keypoints_m[i] = [p.x, p.y, p.z];
        }
        obs.num_goals = self.goals.len().min(MAX_GOALS);
        obs.goals_m[..obs.num_goals].copy_from_slice(&self.goals[..obs.num_goals]);
    }

    /// The tracked objects as [`SceneView::objects`] reports them: those whose bit is set in
    /// `seen` (bit i for object i; objects never seen are left out).
    pub fn tracked(&self, objects: &[ObjectState], seen: u32, out: &mut Vec<TrackedObject>) {
        out.clear();
        for (i, name) in self.objects.iter().enumerate().take(objects.len()) {
            if i >= 32 || seen & (1 << i) == 0 {
                continue;
            }
            out.push(TrackedObject {
                name: name.clone(),
                pose: objects[i].pose.to_isometry(),
                half_extents_m: self.half_extents_m.get(i).copied().unwrap_or([0.0; 3]),
            });
        }
    }
}

/// Why a scene could not answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SceneError {
    /// No camera of that name.
    #[error("no camera `{camera}` (this scene has: {})", available.join(", "))]
    UnknownCamera {
        /// The name asked for.
        camera: String,
        /// The cameras there are.
        available: Vec<String>,
    },
    /// The camera has not delivered a frame yet.
    #[error("camera `{camera}` has not sent a frame yet")]
    NoFrame {
        /// The camera.
        camera: String,
    },
    /// The newest frame is too old to describe the scene now.
    #[error("camera `{camera}`'s newest frame is {age_s:.3} s old")]
    Stale {
        /// The camera.
        camera: String,
        /// Its age, seconds.
        age_s: f64,
    },
    /// The frame could not be produced at the size asked for.
    #[error("camera `{camera}`: {message}")]
    Failed {
        /// The camera.
        camera: String,
        /// What went wrong.
        message: String,
    },
}

/// Cameras and tracked objects: what a reward source or classifier may look at.
///
/// Called from the driver thread between ticks (at an episode's start, after a judged step),
/// never from the control tick. Methods take `&self` so a driver holding the runtime can call
/// them through `Runtime::robot()`.
pub trait SceneView {
    /// The cameras' names.
    fn cameras(&self) -> Vec<String>;

    /// Fills `frame` at its own size (`frame.width` x `frame.height`) with camera `camera`'s
    /// image now: RGB, depth, intrinsics for that size, and the camera's pose in the world.
    fn render(&self, camera: &str, frame: &mut Frame) -> Result<(), SceneError>;

    /// The tracked objects now, always in the same order (the task's), into `out` (cleared).
    fn objects(&self, out: &mut Vec<TrackedObject>);
}

#[cfg(test)]
mod tests {
    use super::*;
    use nalgebra::{Translation3, UnitQuaternion};

    #[test]
    fn distance_to_a_rotated_box() {
        let o = TrackedObject {
            name: "cube".into(),
            pose: Isometry3::from_parts(
                Translation3::new(1.0, 0.0, 0.0),
                UnitQuaternion::from_euler_angles(0.0, 0.0, std::f64::consts::FRAC_PI_2),
            ),
            half_extents_m: [0.1, 0.02, 0.02],
        };
        // Rotated a quarter turn: the long side lies along world y.
        assert_eq!(o.distance_m(&Point3::new(1.0, 0.09, 0.0)), 0.0);
        assert!((o.distance_m(&Point3::new(1.05, 0.0, 0.0)) - 0.03).abs() < 1e-12);
        assert!((o.distance_m(&Point3::new(1.0, 0.0, 0.12)) - 0.10).abs() < 1e-12);
    }
}
