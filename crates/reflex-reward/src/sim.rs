//! Keypoint proposals in the simulator: the oracle's answer from ground truth, and lifting any
//! answer (oracle, fixed or VLM) to a plan on the simulated scene through the rendered depth and
//! segmentation.
//!
//! Waypoints float in the air, where the depth image sees whatever lies behind them, so they
//! are lifted at the camera depth of the affordance point: a waypoint drawn straight above the
//! object in the image becomes a point straight above it in the world, to within the camera's
//! tilt.

use crate::keypoint::KeypointPlan;
use crate::lift::{unproject, Attached, DepthView, LiftError, Pinhole};
use crate::parse::{KeypointAnswer, Pixel};
use nalgebra::{Isometry3, Point3};
use reflex_sim::rng::Rng;
use reflex_sim::{Env, Frame};

/// Why an answer could not become a plan.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    /// The affordance point could not be lifted.
    #[error("affordance: {0}")]
    Lift(#[from] LiftError),
    /// The affordance point is not on a task object.
    #[error("affordance: the point lies on `{0}`, not on a task object")]
    NotOnObject(String),
    /// The task has nothing to propose for.
    #[error("the task has no keypoints to propose from")]
    NoKeypoints,
}

/// Height above the object's start at which the oracle puts its lifting waypoint, metres.
pub const LIFT_WAYPOINT_M: f64 = 0.12;

fn pinhole(frame: &Frame) -> Pinhole {
    let k = frame.intrinsics;
    Pinhole {
        fx: k.fx,
        fy: k.fy,
        cx: k.cx,
        cy: k.cy,
    }
}

fn depth_view(frame: &Frame) -> DepthView<'_> {
    DepthView {
        width: frame.width,
        height: frame.height,
        depth_m: &frame.depth_m,
        intrinsics: pinhole(frame),
        pose: frame.pose,
    }
}

/// Where world point `p` appears in `frame` (None when behind the camera).
pub fn project_world(frame: &Frame, p: &Point3<f64>) -> Option<Pixel> {
    crate::lift::project(&pinhole(frame), &frame.pose.inverse_transform_point(p))
}

/// What an ideal proposer answers for the current state of `env` seen in `frame`: as the
/// affordance, the task keypoint the camera sees best (the one whose pixel's depth lifts back
/// closest to it: a keypoint inside an object is not visible), then a point
/// [`LIFT_WAYPOINT_M`] above it (or, with goals, the first goal), each moved by Gaussian pixel
/// noise of `noise_px`. The text is the JSON a well-behaved VLM would return.
pub fn oracle_keypoints(
    env: &Env,
    frame: &Frame,
    noise_px: f64,
    rng: &mut Rng,
) -> Result<String, PlanError> {
    let task = env.task();
    let obs = env.observation();
    if task.keypoints.is_empty() {
        return Err(PlanError::NoKeypoints);
    }
    let view = depth_view(frame);
    let visibility = |p: &Point3<f64>| {
        project_world(frame, p)
            .and_then(|q| view.lift(q[0], q[1]).ok())
            .map_or(f64::INFINITY, |l| (l - p).norm())
    };
    let aff = (0..task.keypoints.len())
        .map(|i| Point3::from(obs.keypoints_m[i]))
        .min_by(|a, b| visibility(a).total_cmp(&visibility(b)))
        .ok_or(PlanError::NoKeypoints)?;
    let way = match env.goals().first() {
        Some(g) => Point3::from(*g),
        None => aff + nalgebra::Vector3::new(0.0, 0.0, LIFT_WAYPOINT_M),
    };
    let mut px = |p: &Point3<f64>| -> [f64; 2] {
        let q = project_world(frame, p).unwrap_or([0.0, 0.0]);
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
/// frame (depth and segmentation), the names behind the segmentation ids and the task objects'
/// poses. Captured on the simulator's thread; the answer may be lifted later on another one.
#[derive(Clone, Debug)]
pub struct Scene {
    /// The frame the question was asked on.
    pub frame: Frame,
    /// Names of the segmentation ids (`World::seg`).
    pub seg_names: Vec<String>,
    /// Task objects in task-file order: name and pose.
    pub objects: Vec<(String, Isometry3<f64>)>,
}

impl Scene {
    /// Captures `env`'s scene as seen in `frame`.
    pub fn capture(env: &Env, frame: Frame) -> Self {
        let objects = env
            .task()
            .objects
            .iter()
            .enumerate()
            .map(|(i, o)| (o.name.clone(), object_pose(env, i)))
            .collect();
        Self {
            frame,
            seg_names: env.world().seg.iter().map(|s| s.name.clone()).collect(),
            objects,
        }
    }

    /// Lifts an answer given on this scene's frame to a plan: the affordance point attached to
    /// the task object under it, waypoints at the affordance point's camera depth. The plan's
    /// body index is the object's index in the task.
    pub fn lift(&self, answer: &KeypointAnswer) -> Result<KeypointPlan, PlanError> {
        let frame = &self.frame;
        let view = depth_view(frame);
        let [x, y] = answer.affordance;
        let (u, v) = view.pixel_with_depth(x, y)?;
        let p = view.lift(x, y)?;
        let seg = usize::from(frame.segmentation[v * frame.width + u]);
        let name = self
            .seg_names
            .get(seg)
            .map_or_else(|| "nothing".to_owned(), |s| s.clone());
        let (object, body_pose) = self
            .objects
            .iter()
            .enumerate()
            .find(|(_, (n, _))| *n == name)
            .map(|(i, (_, pose))| (i, *pose))
            .ok_or(PlanError::NotOnObject(name))?;
        let z = frame.pose.inverse_transform_point(&p).z;
        let k = pinhole(frame);
        let waypoints = answer
            .waypoints
            .iter()
            .map(|w| frame.pose * unproject(&k, w[0], w[1], z))
            .collect();
        Ok(KeypointPlan {
            affordance: Attached::new(object, &body_pose, &p),
            waypoints,
        })
    }
}

/// [`Scene::lift`] on `env`'s current scene seen in `frame`.
pub fn lift_answer(
    answer: &KeypointAnswer,
    env: &Env,
    frame: &Frame,
) -> Result<KeypointPlan, PlanError> {
    Scene::capture(env, frame.clone()).lift(answer)
}

/// Pose of task object `i` now.
pub fn object_pose(env: &Env, i: usize) -> Isometry3<f64> {
    let (p, q) = env.world().body_pose(env.world().objects[i]);
    reflex_core::Pose {
        position_m: p,
        quat_xyzw: q,
    }
    .to_isometry()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::{parse_keypoints, Grid};
    use reflex_sim::{Camera, Task};

    /// The oracle's noiseless answer on a rendered pick_cube frame parses, lifts back onto the
    /// cube within 5 mm of the visible keypoint (the centre of the top face), attaches to the
    /// cube, and puts the waypoint roughly above it.
    #[test]
    fn oracle_answers_lift_back_to_the_true_keypoints() {
        let task = Task::load("pick_cube").unwrap();
        let mut env = Env::new(task).unwrap();
        let cam = Camera::front(160, 120);
        let mut frame = Frame::new(cam.width, cam.height);
        let mut rng = Rng::new(1);
        for seed in 0..3 {
            env.reset(seed).unwrap();
            env.render(&cam, &mut frame, false);
            let text = oracle_keypoints(&env, &frame, 0.0, &mut rng).unwrap();
            let grid = Grid {
                width: frame.width,
                height: frame.height,
                cols: 8,
                rows: 6,
            };
            let answer = parse_keypoints(&text, &grid).unwrap();
            let plan = lift_answer(&answer, &env, &frame).unwrap();
            assert_eq!(plan.affordance.body, 0, "attached to the cube");
            // pick_cube's keypoints: the cube's centre (hidden inside it), the top face's centre.
            let truth = Point3::from(env.observation().keypoints_m[1]);
            let got = plan.affordance.world(&object_pose(&env, 0));
            assert!(
                (got - truth).norm() < 0.005,
                "seed {seed}: {got} vs {truth}"
            );
            let w = plan.waypoints[0];
            assert!(w.z > truth.z + 0.06, "seed {seed}: waypoint {w} vs {truth}");
            assert!(
                (w.xy() - truth.xy()).norm() < 0.08,
                "seed {seed}: {w} vs {truth}"
            );
        }
    }

    /// A point on the table is refused as an affordance, naming what it lies on.
    #[test]
    fn an_affordance_off_the_object_is_refused() {
        let task = Task::load("pick_cube").unwrap();
        let mut env = Env::new(task).unwrap();
        env.reset(0).unwrap();
        let cam = Camera::front(160, 120);
        let mut frame = Frame::new(cam.width, cam.height);
        env.render(&cam, &mut frame, false);
        // The bottom centre of the image sees the table's front edge region.
        let answer = KeypointAnswer {
            affordance: [80.0, 118.0],
            waypoints: vec![],
        };
        match lift_answer(&answer, &env, &frame) {
            Err(PlanError::NotOnObject(name)) => assert_ne!(name, "cube"),
            other => panic!("{other:?}"),
        }
    }
}
