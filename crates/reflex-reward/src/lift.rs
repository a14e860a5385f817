//! From a point in the world to a point that moves with the object it lies on. (From an image
//! point to a world point is `reflex_core::Frame::lift`.)

use nalgebra::{Isometry3, Point3, Vector3};
pub use reflex_core::camera::{LiftError, DEPTH_SEARCH_RADIUS};

/// A point fixed to a body: it moves as the body moves.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Attached {
    /// The object: its index in the scene's tracked objects (the task's object order).
    pub body: usize,
    /// The point in the body's frame.
    pub local: Vector3<f64>,
}

impl Attached {
    /// Attaches world point `p` to a body now at `body_pose`.
    pub fn new(body: usize, body_pose: &Isometry3<f64>, p: &Point3<f64>) -> Self {
        Self {
            body,
            local: body_pose.inverse_transform_point(p).coords,
        }
    }

    /// Where the point is when the body is at `body_pose`.
    pub fn world(&self, body_pose: &Isometry3<f64>) -> Point3<f64> {
        body_pose * Point3::from(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nalgebra::{Translation3, UnitQuaternion};

    /// An attached point follows its body through any motion.
    #[test]
    fn attached_points_follow_their_body() {
        let start = Isometry3::from_parts(
            Translation3::new(0.5, 0.0, 0.025),
            UnitQuaternion::from_euler_angles(0.0, 0.0, 0.3),
        );
        let p = Point3::new(0.51, 0.01, 0.05);
        let a = Attached::new(3, &start, &p);
        assert!((a.world(&start) - p).norm() < 1e-12);
        let lifted = Isometry3::from_parts(
            Translation3::new(0.5, 0.0, 0.125),
            UnitQuaternion::from_euler_angles(0.0, 0.0, 0.3),
        );
        assert!((a.world(&lifted) - (p + Vector3::new(0.0, 0.0, 0.1))).norm() < 1e-12);
    }
}
