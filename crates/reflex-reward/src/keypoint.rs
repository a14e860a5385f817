//! Keypoint rewards: a plan of 3D points (where to grasp, then waypoints to carry the object
//! through) turned into dense reward terms.
//!
//! A proposer (the task file, the simulator's ground truth, or a VLM looking at the first frame)
//! gives the plan in image coordinates; [`crate::lift`] lifts it to 3D and attaches the
//! affordance point to the body under it, so it moves with the object. Each step then earns:
//!
//! - `kp_reach = 1 - tanh(|tcp - affordance| / scale)`: get the gripper to the grasp point;
//! - `kp_carry = (k + 1 - tanh(|affordance - waypoint_k| / scale)) / n`: bring the grasped point
//!   to the next waypoint `k` not reached yet (a waypoint counts as reached within
//!   `reached_m`; stages never go back, so the term rises monotonically along the plan).
//!
//! Both terms lie in [0, 1]: a policy cannot farm them beyond finishing the plan, and the task's
//! sparse success still overrides them when it fires (see [`crate::fusion`]).

use crate::lift::Attached;
use nalgebra::{Isometry3, Point3};

/// A plan in the world: where to grasp (attached to its body) and where to go.
#[derive(Clone, Debug, PartialEq)]
pub struct KeypointPlan {
    /// The affordance point, on the object.
    pub affordance: Attached,
    /// Waypoints in the world, in order.
    pub waypoints: Vec<Point3<f64>>,
}

/// Distances that shape the terms.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeypointShaping {
    /// Distance scale of the tanh, metres.
    pub scale_m: f64,
    /// A waypoint is reached within this distance, metres.
    pub reached_m: f64,
}

impl Default for KeypointShaping {
    fn default() -> Self {
        Self {
            scale_m: 0.1,
            reached_m: 0.02,
        }
    }
}

/// Names of the terms [`KeypointReward::terms`] returns, in order.
pub const KEYPOINT_TERMS: [&str; 2] = ["kp_reach", "kp_carry"];

/// Per-episode state of a keypoint reward.
#[derive(Clone, Debug)]
pub struct KeypointReward {
    plan: KeypointPlan,
    shaping: KeypointShaping,
    /// Waypoints reached so far.
    reached: usize,
}

impl KeypointReward {
    /// A fresh episode on `plan`.
    pub fn new(plan: KeypointPlan, shaping: KeypointShaping) -> Self {
        Self {
            plan,
            shaping,
            reached: 0,
        }
    }

    /// The plan.
    pub fn plan(&self) -> &KeypointPlan {
        &self.plan
    }

    /// Waypoints reached so far.
    pub fn reached(&self) -> usize {
        self.reached
    }

    /// Where the affordance point is, given its body's pose.
    pub fn affordance(&self, body_pose: &Isometry3<f64>) -> Point3<f64> {
        self.plan.affordance.world(body_pose)
    }

    /// The terms for the state after a step: the tool centre point and the pose of the body the
    /// affordance point is attached to. Advances the waypoint stage.
    pub fn terms(&mut self, tcp: &Point3<f64>, body_pose: &Isometry3<f64>) -> [f64; 2] {
        let s = self.shaping.scale_m;
        let aff = self.affordance(body_pose);
        let reach = 1.0 - ((tcp - aff).norm() / s).tanh();
        let n = self.plan.waypoints.len();
        while self.reached < n
            && (aff - self.plan.waypoints[self.reached]).norm() <= self.shaping.reached_m
        {
            self.reached += 1;
        }
        let carry = if n == 0 {
            0.0
        } else if self.reached == n {
            1.0
        } else {
            let d = (aff - self.plan.waypoints[self.reached]).norm();
            (self.reached as f64 + 1.0 - (d / s).tanh()) / n as f64
        };
        [reach, carry]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nalgebra::{Translation3, UnitQuaternion, Vector3};

    fn cube_at(z: f64) -> Isometry3<f64> {
        Isometry3::from_parts(Translation3::new(0.5, 0.0, z), UnitQuaternion::identity())
    }

    fn plan() -> KeypointPlan {
        KeypointPlan {
            affordance: Attached::new(2, &cube_at(0.025), &Point3::new(0.5, 0.0, 0.05)),
            waypoints: vec![Point3::new(0.5, 0.0, 0.10), Point3::new(0.5, 0.0, 0.15)],
        }
    }

    /// Approaching the grasp point raises `kp_reach`; lifting the object through the waypoints
    /// raises `kp_carry` monotonically to 1; going back down does not undo reached stages.
    #[test]
    fn terms_follow_the_plan() {
        let mut r = KeypointReward::new(plan(), KeypointShaping::default());
        let far = r.terms(&Point3::new(0.5, 0.3, 0.3), &cube_at(0.025));
        let near = r.terms(&Point3::new(0.5, 0.0, 0.06), &cube_at(0.025));
        assert!(near[0] > far[0] && near[0] > 0.9, "{far:?} {near:?}");
        let mut last = near[1];
        for k in 1..=14 {
            let z = 0.025 + 0.01 * k as f64;
            let t = r.terms(&Point3::new(0.5, 0.0, z + 0.025), &cube_at(z));
            assert!(t[1] >= last, "carry fell at z = {z}: {last} -> {}", t[1]);
            assert!((0.0..=1.0).contains(&t[1]) && (0.0..=1.0).contains(&t[0]));
            last = t[1];
        }
        assert_eq!(r.reached(), 2);
        assert_eq!(last, 1.0);
        // Dropping the object keeps the stages reached.
        let t = r.terms(&Point3::new(0.5, 0.0, 0.3), &cube_at(0.025));
        assert_eq!(t[1], 1.0);
    }

    /// The affordance point rides on its body (here the cube turns and slides).
    #[test]
    fn affordance_moves_with_its_body() {
        let r = KeypointReward::new(plan(), KeypointShaping::default());
        let moved = Isometry3::from_parts(
            Translation3::new(0.6, 0.1, 0.025),
            UnitQuaternion::from_euler_angles(0.0, 0.0, 0.7),
        );
        let p = r.affordance(&moved);
        assert!((p - Point3::new(0.6, 0.1, 0.05)).norm() < 1e-12);
        let tilted = Isometry3::from_parts(
            Translation3::new(0.5, 0.0, 0.025),
            UnitQuaternion::from_axis_angle(&Vector3::x_axis(), std::f64::consts::FRAC_PI_2),
        );
        let p = r.affordance(&tilted);
        assert!((p - Point3::new(0.5, -0.025, 0.025)).norm() < 1e-12, "{p}");
    }
}
