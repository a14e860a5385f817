//! From a 2D point in a camera image to a 3D point in the world, and from there to a point that
//! moves with the body it lies on.
//!
//! Pinhole model, OpenCV convention (x right, y down, z forward); depth is measured along the
//! optical axis, 0 meaning "no return". Pixel (u, v) covers [u, u+1) x [v, v+1), so the point
//! (x, y) falls in pixel (floor x, floor y).

use nalgebra::{Isometry3, Point3, Vector3};

/// Pinhole intrinsics, pixels.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pinhole {
    /// Focal length along x.
    pub fx: f64,
    /// Focal length along y.
    pub fy: f64,
    /// Principal point x.
    pub cx: f64,
    /// Principal point y.
    pub cy: f64,
}

/// A depth image with what is needed to unproject it.
#[derive(Clone, Copy, Debug)]
pub struct DepthView<'a> {
    /// Width, pixels.
    pub width: usize,
    /// Height, pixels.
    pub height: usize,
    /// Depth along the optical axis, metres, row-major; 0 = no return.
    pub depth_m: &'a [f32],
    /// Intrinsics.
    pub intrinsics: Pinhole,
    /// Camera pose in the world.
    pub pose: Isometry3<f64>,
}

/// Why a point could not be lifted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LiftError {
    /// The point is not in the image.
    #[error("point ({0:.1}, {1:.1}) is outside the {2}x{3} image")]
    Outside(f64, f64, usize, usize),
    /// No depth return within the search radius.
    #[error("no depth within {radius} pixels of ({x:.1}, {y:.1})")]
    NoDepth {
        /// Point x.
        x: f64,
        /// Point y.
        y: f64,
        /// Search radius, pixels.
        radius: usize,
    },
}

/// How far (in pixels) [`lift`] looks for a depth return around a point without one: models
/// put points on object edges, where a pixel can just miss.
pub const DEPTH_SEARCH_RADIUS: usize = 3;

impl DepthView<'_> {
    /// The pixel nearest to `(x, y)` (within [`DEPTH_SEARCH_RADIUS`]) that has depth.
    pub fn pixel_with_depth(&self, x: f64, y: f64) -> Result<(usize, usize), LiftError> {
        if !(x >= 0.0 && y >= 0.0 && x <= self.width as f64 && y <= self.height as f64) {
            return Err(LiftError::Outside(x, y, self.width, self.height));
        }
        let u0 = (x as usize).min(self.width - 1);
        let v0 = (y as usize).min(self.height - 1);
        let r = DEPTH_SEARCH_RADIUS as isize;
        let mut best: Option<((usize, usize), isize)> = None;
        for dv in -r..=r {
            for du in -r..=r {
                let (u, v) = (u0 as isize + du, v0 as isize + dv);
                if u < 0 || v < 0 || u >= self.width as isize || v >= self.height as isize {
                    continue;
                }
                let d = self.depth_m[v as usize * self.width + u as usize];
                let dist = du * du + dv * dv;
                if d > 0.0 && d.is_finite() && best.is_none_or(|(_, b)| dist < b) {
                    best = Some(((u as usize, v as usize), dist));
                }
            }
        }
        best.map(|(p, _)| p).ok_or(LiftError::NoDepth {
            x,
            y,
            radius: DEPTH_SEARCH_RADIUS,
        })
    }

    /// The world point seen at image point `(x, y)`, using the depth of the nearest pixel with a
    /// return (the ray itself goes through `(x, y)` when that pixel has depth, else through the
    /// centre of the pixel used).
    pub fn lift(&self, x: f64, y: f64) -> Result<Point3<f64>, LiftError> {
        let (u, v) = self.pixel_with_depth(x, y)?;
        let (px, py) = if (x as usize, y as usize) == (u, v) {
            (x, y)
        } else {
            (u as f64 + 0.5, v as f64 + 0.5)
        };
        let z = f64::from(self.depth_m[v * self.width + u]);
        Ok(self.pose * unproject(&self.intrinsics, px, py, z))
    }
}

/// The camera-frame point at image point `(x, y)` and depth `z` along the optical axis.
pub fn unproject(k: &Pinhole, x: f64, y: f64, z: f64) -> Point3<f64> {
    Point3::new((x - k.cx) / k.fx * z, (y - k.cy) / k.fy * z, z)
}

/// The image point of camera-frame point `p` (None behind the camera).
pub fn project(k: &Pinhole, p: &Point3<f64>) -> Option<[f64; 2]> {
    (p.z > 1e-9).then(|| [k.fx * p.x / p.z + k.cx, k.fy * p.y / p.z + k.cy])
}

/// A point fixed to a body: it moves as the body moves.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Attached {
    /// The body (an index the tracker understands; in simulation, the segmentation id).
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
    use nalgebra::{Translation3, UnitQuaternion, Vector3};

    fn camera() -> (Pinhole, Isometry3<f64>) {
        let k = Pinhole {
            fx: 100.0,
            fy: 100.0,
            cx: 32.0,
            cy: 24.0,
        };
        // Looking down at the table from across it, the optical axis (+z) at (0.6, 0.1, 0.1).
        let pose = Isometry3::face_towards(
            &Point3::new(1.0, 0.2, 0.5),
            &Point3::new(0.6, 0.1, 0.1),
            &Vector3::z(),
        );
        (k, pose)
    }

    /// Projecting a world point and lifting it back with its own depth returns the point.
    #[test]
    fn lift_inverts_projection() {
        let (k, pose) = camera();
        let world = Point3::new(0.63, 0.12, 0.08);
        let cam = pose.inverse_transform_point(&world);
        assert!(cam.z > 0.0, "the test point must be in front: {cam}");
        let [x, y] = project(&k, &cam).unwrap();
        let (w, h) = (64, 48);
        assert!(
            x >= 0.0 && x < w as f64 && y >= 0.0 && y < h as f64,
            "{x} {y}"
        );
        let mut depth = vec![0.0f32; w * h];
        depth[y as usize * w + x as usize] = cam.z as f32;
        let view = DepthView {
            width: w,
            height: h,
            depth_m: &depth,
            intrinsics: k,
            pose,
        };
        let back = view.lift(x, y).unwrap();
        assert!((back - world).norm() < 1e-6, "{back} vs {world}");
    }

    /// A point just off the object uses the nearest pixel with depth; with none near, the error
    /// says so; outside the image is refused.
    #[test]
    fn missing_depth_searches_nearby_then_fails_clearly() {
        let (k, pose) = camera();
        let (w, h) = (64, 48);
        let mut depth = vec![0.0f32; w * h];
        depth[10 * w + 12] = 0.8;
        let view = DepthView {
            width: w,
            height: h,
            depth_m: &depth,
            intrinsics: k,
            pose,
        };
        assert_eq!(view.pixel_with_depth(10.2, 11.7).unwrap(), (12, 10));
        let p = view.lift(10.2, 11.7).unwrap();
        let cam = pose.inverse_transform_point(&p);
        assert!((cam.z - 0.8).abs() < 1e-6);
        assert!(matches!(
            view.lift(40.0, 40.0),
            Err(LiftError::NoDepth { .. })
        ));
        assert!(matches!(view.lift(-1.0, 3.0), Err(LiftError::Outside(..))));
        assert!(matches!(
            view.lift(f64::NAN, 3.0),
            Err(LiftError::Outside(..))
        ));
    }

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
