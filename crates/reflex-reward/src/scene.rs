//! Keypoint answers on a scene: the oracle's answer from the task's keypoints, and lifting any
//! answer (oracle, fixed or VLM) to a plan through the frame's depth and the tracked objects.
//!
//! The affordance point is lifted through the camera's depth and attached to the tracked object
//! whose bounding box it lies on (within [`ATTACH_MARGIN_M`]); no segmentation is used, so the
//! same lifting runs on a real camera and tracker. Waypoints float in the air, where the depth
//! image sees whatever lies behind them, so they are lifted at the camera depth of the
//! affordance point: a waypoint drawn straight above the object in the image becomes a point
//! straight above it in the world, to within the camera's tilt.

use crate::keypoint::KeypointPlan;
use crate::lift::{Attached, LiftError};
use crate::parse::{KeypointAnswer, Pixel};
use nalgebra::Point3;
use reflex_core::{Frame, Rng, SceneError, SceneView, TrackedObject};

/// Why an answer could not become a plan.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    /// The affordance point could not be lifted.
    #[error("affordance: {0}")]
    Lift(#[from] LiftError),
    /// The affordance point is not on a tracked object.
    #[error("affordance: the point lies {distance_m:.3} m from the nearest object, `{nearest}` (at most {ATTACH_MARGIN_M} m attaches)")]
    NotOnObject {
        /// The nearest tracked object.
        nearest: String,
        /// Its distance from the point, metres.
        distance_m: f64,
    },
    /// The scene tracks no objects.
    #[error("the scene tracks no objects to attach keypoints to")]
    NoObjects,
    /// The task has nothing to propose for.
    #[error("the task has no keypoints to propose from")]
    NoKeypoints,
}

/// Height above the affordance point at which the oracle puts its lifting waypoint, metres.
pub const LIFT_WAYPOINT_M: f64 = 0.12;

/// A lifted affordance point attaches to an object whose bounding box is at most this far,
/// metres (depth noise and the box's slack around a rounded shape).
pub const ATTACH_MARGIN_M: f64 = 0.015;

/// What an ideal proposer answers seeing `frame`, given the task's keypoints now (`keypoints`,
/// world points; an observation carries them) and its goals: as the affordance, the keypoint
/// the camera sees best (the one whose pixel's depth lifts back closest to it: a keypoint
/// inside an object is not visible), then a point [`LIFT_WAYPOINT_M`] above it (or, with
/// goals, the first goal), each moved by Gaussian pixel noise of `noise_px`. The text is the
/// JSON a well-behaved VLM would return. Only our own oracle server sees it, as a hint.
pub fn oracle_keypoints(
    frame: &Frame,
    keypoints: &[[f64; 3]],
    goals: &[[f64; 3]],
    noise_px: f64,
    rng: &mut Rng,
) -> Result<String, PlanError> {
    let visibility = |p: &Point3<f64>| {
        frame
            .project_world(p)
            .and_then(|q| frame.lift(q[0], q[1]).ok())
            .map_or(f64::INFINITY, |l| (l - p).norm())
    };
    let aff = keypoints
        .iter()
        .map(|k| Point3::from(*k))
        .min_by(|a, b| visibility(a).total_cmp(&visibility(b)))
        .ok_or(PlanError::NoKeypoints)?;
    let way = match goals.first() {
        Some(g) => Point3::from(*g),
        None => aff + nalgebra::Vector3::new(0.0, 0.0, LIFT_WAYPOINT_M),
    };
    let mut px = |p: &Point3<f64>| -> Pixel {
        let q = frame.project_world(p).unwrap_or([0.0, 0.0]);
        let n = [rng.normal() * noise_px, rng.normal() * noise_px];
        [
            (q[0] + n[0]).clamp(0.0, frame.width as f64 - 1e-3),
            (q[1] + n[1]).clamp(0.0, frame.height as f64 - 1e-3),
        ]
    };
    let a = px(&aff);
    let w = px(&way);
    Ok(serde_json::json!({ "affordance": a, "waypoints": [w] }).to_string())
}

/// What lifting an answer needs to know about the scene at the moment its frame was taken: the
/// frame (depth, intrinsics, camera pose) and the tracked objects. Captured on the driver's
/// thread; the answer may be lifted later on another one.
#[derive(Clone, Debug)]
pub struct Scene {
    /// The frame the question was asked on.
    pub frame: Frame,
    /// The tracked objects when it was taken, in the scene's order.
    pub objects: Vec<TrackedObject>,
}

impl Scene {
    /// Renders `camera` of `view` into `frame` (at its size) and captures the scene with it.
    pub fn capture(
        view: &dyn SceneView,
        camera: &str,
        mut frame: Frame,
    ) -> Result<Self, SceneError> {
        view.render(camera, &mut frame)?;
        let mut objects = Vec::new();
        view.objects(&mut objects);
        Ok(Self { frame, objects })
    }

    /// Lifts an answer given on this scene's frame to a plan: the affordance point attached to
    /// the tracked object it lies on, waypoints at the affordance point's camera depth. The
    /// plan's body index is the object's index in [`Scene::objects`].
    pub fn lift(&self, answer: &KeypointAnswer) -> Result<KeypointPlan, PlanError> {
        let frame = &self.frame;
        let [x, y] = answer.affordance;
        let p = frame.lift(x, y)?;
        let (object, nearest) = self
            .objects
            .iter()
            .enumerate()
            .min_by(|(_, a), (_, b)| a.distance_m(&p).total_cmp(&b.distance_m(&p)))
            .ok_or(PlanError::NoObjects)?;
        let distance_m = nearest.distance_m(&p);
        // A NaN distance (a non-finite pose) attaches to nothing.
        if distance_m.is_nan() || distance_m > ATTACH_MARGIN_M {
            return Err(PlanError::NotOnObject {
                nearest: nearest.name.clone(),
                distance_m,
            });
        }
        let z = frame.pose.inverse_transform_point(&p).z;
        let waypoints = answer
            .waypoints
            .iter()
            .map(|w| frame.unproject_world(w[0], w[1], z))
            .collect();
        Ok(KeypointPlan {
            affordance: Attached::new(object, &nearest.pose, &p),
            waypoints,
        })
    }
}
