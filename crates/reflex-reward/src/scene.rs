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

/// What a simulated VLM's mistakes are made of, for the oracle server's hint (never for
/// lifting): `object_box`, the pixel box `[x0, y0, x1, y1]` of the segment under `affordance`,
/// and `distractors`, one pixel on each other segment in view of at least a dozen pixels (its
/// pixel nearest its centroid), leaving out the most common one (the table). Both come from the
/// frame's segmentation, which only a simulator gives: without it, an empty object (the oracle
/// then falls back to random points).
pub fn oracle_mistakes(frame: &Frame, affordance: Pixel) -> serde_json::Value {
    let (w, h) = (frame.width, frame.height);
    if w == 0 || h == 0 || frame.segmentation.len() != w * h || frame.depth_m.len() != w * h {
        return serde_json::json!({});
    }
    // Per segment: pixels, coordinate sums, box.
    let mut segs: std::collections::BTreeMap<u16, (usize, f64, f64, [usize; 4])> =
        std::collections::BTreeMap::new();
    for y in 0..h {
        for x in 0..w {
            let i = y * w + x;
            if frame.depth_m[i] <= 0.0 {
                continue;
            }
            let e = segs
                .entry(frame.segmentation[i])
                .or_insert((0, 0.0, 0.0, [x, y, x, y]));
            e.0 += 1;
            e.1 += x as f64;
            e.2 += y as f64;
            e.3 = [e.3[0].min(x), e.3[1].min(y), e.3[2].max(x), e.3[3].max(y)];
        }
    }
    let common = segs.iter().max_by_key(|(_, v)| v.0).map(|(k, _)| *k);
    let ax = (affordance[0].max(0.0) as usize).min(w - 1);
    let ay = (affordance[1].max(0.0) as usize).min(h - 1);
    let target = frame.segmentation[ay * w + ax];
    let object_box = segs
        .get(&target)
        .filter(|_| Some(target) != common && frame.depth_m[ay * w + ax] > 0.0)
        .map(|v| [v.3[0], v.3[1], v.3[2] + 1, v.3[3] + 1]);
    let mut distractors = Vec::new();
    for (id, (n, sx, sy, _)) in &segs {
        if *id == target || Some(*id) == common || *n < 12 {
            continue;
        }
        let (cx, cy) = (sx / *n as f64, sy / *n as f64);
        let mut best = (f64::INFINITY, [0.0, 0.0]);
        for y in 0..h {
            for x in 0..w {
                let i = y * w + x;
                if frame.segmentation[i] == *id && frame.depth_m[i] > 0.0 {
                    let d = (x as f64 - cx).powi(2) + (y as f64 - cy).powi(2);
                    if d < best.0 {
                        best = (d, [x as f64 + 0.5, y as f64 + 0.5]);
                    }
                }
            }
        }
        distractors.push(best.1);
    }
    serde_json::json!({ "object_box": object_box, "distractors": distractors })
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A 20x10 frame: table (id 1) everywhere, a cube (id 2) at x 8..12, y 4..7, a link
    /// (id 3) at x 0..4, y 0..4, a speck (id 4) of 2 pixels, sky (no depth) in the top row.
    fn frame() -> Frame {
        let mut f = Frame::new(20, 10);
        f.segmentation = vec![1; 200];
        f.depth_m = vec![1.0; 200];
        for y in 0..10 {
            for x in 0..20 {
                let id = if (8..12).contains(&x) && (4..7).contains(&y) {
                    2
                } else if x < 4 && y < 4 {
                    3
                } else if y == 9 && x >= 18 {
                    4
                } else {
                    1
                };
                f.segmentation[y * 20 + x] = id;
            }
        }
        for x in 4..20 {
            f.depth_m[x] = 0.0;
        }
        f
    }

    #[test]
    fn the_oracle_hint_boxes_the_object_and_points_at_other_things() {
        let m = oracle_mistakes(&frame(), [9.5, 5.5]);
        assert_eq!(m["object_box"], serde_json::json!([8, 4, 12, 7]));
        let d = m["distractors"].as_array().unwrap();
        assert_eq!(
            d.len(),
            1,
            "the link only: the table is the most common, the speck small"
        );
        let (x, y) = (d[0][0].as_f64().unwrap(), d[0][1].as_f64().unwrap());
        assert!(x < 4.0 && y < 4.0, "{m}");
        // On the table there is no object box; without a segmentation, nothing.
        assert!(oracle_mistakes(&frame(), [16.5, 8.5])["object_box"].is_null());
        let mut bare = frame();
        bare.segmentation.clear();
        assert_eq!(oracle_mistakes(&bare, [9.5, 5.5]), serde_json::json!({}));
    }
}
