//! Cameras as every layer sees them: pinhole intrinsics, a camera's pose, a frame (RGB, depth,
//! optionally segmentation), and the way between image points and world points.
//!
//! Pinhole model, OpenCV convention: x right, y down, z forward; depth is measured along the
//! optical axis, 0 meaning "no return". Pixel (u, v) covers [u, u+1) x [v, v+1), so the image
//! point (x, y) falls in pixel (floor x, floor y).

use nalgebra::{Isometry3, Matrix3, Point3, Rotation3, UnitQuaternion, Vector3};

/// Pinhole intrinsics, pixels.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Intrinsics {
    /// Focal length along x.
    pub fx: f64,
    /// Focal length along y.
    pub fy: f64,
    /// Principal point x.
    pub cx: f64,
    /// Principal point y.
    pub cy: f64,
}

impl Intrinsics {
    /// Square pixels, the principal point at the image centre, and a vertical field of view of
    /// `fov_y_deg` degrees.
    pub fn from_fov(width: usize, height: usize, fov_y_deg: f64) -> Self {
        let fy = 0.5 * height as f64 / (0.5 * fov_y_deg.to_radians()).tan();
        Self {
            fx: fy,
            fy,
            cx: 0.5 * width as f64,
            cy: 0.5 * height as f64,
        }
    }

    /// The camera-frame point at image point `(x, y)` and depth `z` along the optical axis.
    pub fn unproject(&self, x: f64, y: f64, z: f64) -> Point3<f64> {
        Point3::new((x - self.cx) / self.fx * z, (y - self.cy) / self.fy * z, z)
    }

    /// The image point of camera-frame point `p` (None behind the camera).
    pub fn project(&self, p: &Point3<f64>) -> Option<[f64; 2]> {
        (p.z > 1e-9).then(|| [self.fx * p.x / p.z + self.cx, self.fy * p.y / p.z + self.cy])
    }
}

/// Camera pose at `eye` looking at `target`, with `up` projected to image up (-y).
pub fn look_at(eye: Point3<f64>, target: Point3<f64>, up: Vector3<f64>) -> Isometry3<f64> {
    let z = (target - eye).normalize();
    let mut x = z.cross(&up);
    if x.norm() < 1e-9 {
        x = z.cross(&Vector3::x());
    }
    let x = x.normalize();
    let y = z.cross(&x);
    let r = Matrix3::from_columns(&[x, y, z]);
    Isometry3::from_parts(
        eye.coords.into(),
        UnitQuaternion::from_rotation_matrix(&Rotation3::from_matrix_unchecked(r)),
    )
}

/// One camera image with what is needed to use it geometrically. A frame is sized by whoever
/// asks for it ([`Frame::new`]); a source fills it at that size.
#[derive(Clone, Debug, PartialEq)]
pub struct Frame {
    /// Width, pixels.
    pub width: usize,
    /// Height, pixels.
    pub height: usize,
    /// RGB, row-major, 3 bytes per pixel.
    pub rgb: Vec<u8>,
    /// Depth along the optical axis, metres, row-major; 0 = no return.
    pub depth_m: Vec<f32>,
    /// Segmentation id per pixel, when the source offers it (a simulator does; a real camera
    /// does not): empty otherwise. Nothing on a real arm's path may need it.
    pub segmentation: Vec<u16>,
    /// Intrinsics the frame was taken with.
    pub intrinsics: Intrinsics,
    /// Camera pose in the world when the frame was taken (x right, y down, z forward).
    pub pose: Isometry3<f64>,
    /// When the frame was taken, nanoseconds on the robot's clock (0 when unknown).
    pub stamp_ns: u64,
}

/// Why an image point could not be lifted to a world point.
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

/// How far (in pixels) [`Frame::lift`] looks for a depth return around a point without one:
/// models put points on object edges, where a pixel can just miss.
pub const DEPTH_SEARCH_RADIUS: usize = 3;

impl Frame {
    /// Buffers for a `width` x `height` frame (no segmentation; black, no depth, identity pose).
    pub fn new(width: usize, height: usize) -> Self {
        Self {
            width,
            height,
            rgb: vec![0; width * height * 3],
            depth_m: vec![0.0; width * height],
            segmentation: Vec::new(),
            intrinsics: Intrinsics {
                fx: 1.0,
                fy: 1.0,
                cx: 0.0,
                cy: 0.0,
            },
            pose: Isometry3::identity(),
            stamp_ns: 0,
        }
    }

    /// Where world point `p` appears in this frame (None when behind the camera).
    pub fn project_world(&self, p: &Point3<f64>) -> Option<[f64; 2]> {
        self.intrinsics
            .project(&self.pose.inverse_transform_point(p))
    }

    /// The world point at image point `(x, y)` and camera depth `z`.
    pub fn unproject_world(&self, x: f64, y: f64, z: f64) -> Point3<f64> {
        self.pose * self.intrinsics.unproject(x, y, z)
    }

    /// The pixel nearest to `(x, y)` (within [`DEPTH_SEARCH_RADIUS`]) that has depth.
    pub fn pixel_with_depth(&self, x: f64, y: f64) -> Result<(usize, usize), LiftError> {
        let (w, h) = (self.width, self.height);
        if w == 0 || h == 0 || !(x >= 0.0 && y >= 0.0 && x <= w as f64 && y <= h as f64) {
            return Err(LiftError::Outside(x, y, w, h));
        }
        let u0 = (x as usize).min(w - 1);
        let v0 = (y as usize).min(h - 1);
        let r = DEPTH_SEARCH_RADIUS as isize;
        let mut best: Option<((usize, usize), isize)> = None;
        for dv in -r..=r {
            for du in -r..=r {
                let (u, v) = (u0 as isize + du, v0 as isize + dv);
                if u < 0 || v < 0 || u >= w as isize || v >= h as isize {
                    continue;
                }
                let d = self.depth_m.get(v as usize * w + u as usize).copied();
                let dist = du * du + dv * dv;
                if d.is_some_and(|d| d > 0.0 && d.is_finite()) && best.is_none_or(|(_, b)| dist < b)
                {
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
        Ok(self.unproject_world(px, py, z))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 64x48 frame seen from across a table, looking down at (0.6, 0.1, 0.1), no depth yet.
    fn frame() -> Frame {
        let mut f = Frame::new(64, 48);
        f.intrinsics = Intrinsics {
            fx: 100.0,
            fy: 100.0,
            cx: 32.0,
            cy: 24.0,
        };
        f.pose = Isometry3::face_towards(
            &Point3::new(1.0, 0.2, 0.5),
            &Point3::new(0.6, 0.1, 0.1),
            &Vector3::z(),
        );
        f
    }

    /// Projecting a world point and lifting it back with its own depth returns the point.
    #[test]
    fn lift_inverts_projection() {
        let mut f = frame();
        let world = Point3::new(0.63, 0.12, 0.08);
        let cam = f.pose.inverse_transform_point(&world);
        assert!(cam.z > 0.0, "the test point must be in front: {cam}");
        let [x, y] = f.project_world(&world).unwrap();
        assert!(
            (0.0..64.0).contains(&x) && (0.0..48.0).contains(&y),
            "{x} {y}"
        );
        f.depth_m[y as usize * 64 + x as usize] = cam.z as f32;
        let back = f.lift(x, y).unwrap();
        assert!((back - world).norm() < 1e-6, "{back} vs {world}");
    }

    /// A point just off the object uses the nearest pixel with depth; with none near, the error
    /// says so; outside the image (or NaN) is refused.
    #[test]
    fn missing_depth_searches_nearby_then_fails_clearly() {
        let mut f = frame();
        f.depth_m[10 * 64 + 12] = 0.8;
        assert_eq!(f.pixel_with_depth(10.2, 11.7).unwrap(), (12, 10));
        let p = f.lift(10.2, 11.7).unwrap();
        let cam = f.pose.inverse_transform_point(&p);
        assert!((cam.z - 0.8).abs() < 1e-6);
        assert!(matches!(f.lift(40.0, 40.0), Err(LiftError::NoDepth { .. })));
        assert!(matches!(f.lift(-1.0, 3.0), Err(LiftError::Outside(..))));
        assert!(matches!(f.lift(f64::NAN, 3.0), Err(LiftError::Outside(..))));
    }

    /// `look_at` puts the target on the optical axis, image up toward `up`.
    #[test]
    fn look_at_centres_the_target() {
        let mut f = Frame::new(64, 48);
        f.intrinsics = Intrinsics::from_fov(64, 48, 60.0);
        f.pose = look_at(
            Point3::new(1.0, 0.0, 0.5),
            Point3::new(0.0, 0.0, 0.0),
            Vector3::z(),
        );
        let [x, y] = f.project_world(&Point3::origin()).unwrap();
        assert!((x - 32.0).abs() < 1e-9 && (y - 24.0).abs() < 1e-9);
        let [_, above] = f.project_world(&Point3::new(0.0, 0.0, 0.1)).unwrap();
        assert!(
            above < 24.0,
            "a point above the target is higher in the image"
        );
    }
}
