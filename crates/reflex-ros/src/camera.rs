//! Camera topics as [`SceneView`](reflex_core::SceneView) frames: the newest colour image,
//! its registered depth image and the camera info of one camera, resampled to the size a reward
//! source asks for, with the intrinsics scaled to match and the optical frame's pose from the
//! camera's calibration (`pose_in_base`). An image older than `max_age_s` is refused as stale.
//! A pixel policy's cameras need colour alone ([`CameraFeed::colour`]: no camera info, no pose,
//! so a wrist camera serves them). Slow path only: the executor stores messages here, reward
//! sources and the pixel policies' camera thread render from here; the control tick never
//! touches it.

use crate::msg::{CameraInfo, Image};
use crate::params::CameraParams;
use nalgebra::{Isometry3, Quaternion, Translation3, UnitQuaternion};
use reflex_core::{Frame, Intrinsics, SceneError};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The bridge's cameras, for a thread of their own (a pixel policy's camera thread,
/// [`crate::RosRobot::cameras_handle`]): the newest colour of each, on the bridge's clock. Each
/// call holds the feeds' lock for one resample, never across calls.
#[derive(Clone)]
pub struct RosCameras {
    feeds: Arc<Mutex<Vec<CameraFeed>>>,
    epoch: Instant,
}

impl RosCameras {
    pub(crate) fn new(feeds: Arc<Mutex<Vec<CameraFeed>>>, epoch: Instant) -> Self {
        Self { feeds, epoch }
    }

    /// The configured cameras' names.
    pub fn names(&self) -> Vec<String> {
        let feeds = self.feeds.lock().unwrap_or_else(|p| p.into_inner());
        feeds.iter().map(|f| f.params.name.clone()).collect()
    }

    /// The bridge's clock (the one joint states and images are stamped with on receipt), ns.
    pub fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// `camera`'s `max_age_s` parameter.
    pub fn max_age_s(&self, camera: &str) -> Result<f64, SceneError> {
        self.with(camera, |f| Ok(f.params.max_age_s))
    }

    /// When `camera`'s newest colour image was received (None: none yet).
    pub fn received_ns(&self, camera: &str) -> Result<Option<u64>, SceneError> {
        self.with(camera, |f| Ok(f.received_ns()))
    }

    /// [`CameraFeed::colour`] of `camera`, now.
    pub fn colour(
        &self,
        camera: &str,
        out: &mut [u8],
        w: usize,
        h: usize,
    ) -> Result<u64, SceneError> {
        let now = self.now_ns();
        self.with(camera, |f| f.colour(out, w, h, now))
    }

    fn with<T>(
        &self,
        camera: &str,
        f: impl FnOnce(&CameraFeed) -> Result<T, SceneError>,
    ) -> Result<T, SceneError> {
        let feeds = self.feeds.lock().unwrap_or_else(|p| p.into_inner());
        match feeds.iter().find(|x| x.params.name == camera) {
            Some(feed) => f(feed),
            None => Err(SceneError::UnknownCamera {
                camera: camera.to_owned(),
                available: feeds.iter().map(|x| x.params.name.clone()).collect(),
            }),
        }
    }
}

/// The newest messages of one camera.
#[derive(Clone, Debug)]
pub struct CameraFeed {
    /// The camera's parameters.
    pub params: CameraParams,
    /// Newest colour image and when it was received (bridge clock, ns).
    pub rgb: Option<(Image, u64)>,
    /// Newest depth image and when it was received.
    pub depth: Option<(Image, u64)>,
    /// Newest camera info.
    pub info: Option<CameraInfo>,
}

impl CameraFeed {
    /// A feed with nothing received yet.
    pub fn new(params: CameraParams) -> Self {
        Self {
            params,
            rgb: None,
            depth: None,
            info: None,
        }
    }

    fn failed(&self, message: String) -> SceneError {
        SceneError::Failed {
            camera: self.params.name.clone(),
            message,
        }
    }

    /// When the newest colour image was received (bridge clock, ns), if one was.
    pub fn received_ns(&self) -> Option<u64> {
        self.rgb.as_ref().map(|(_, t)| *t)
    }

    /// The newest colour image, if it is at most `max_age_s` old as of `now_ns`, and its size.
    fn fresh_colour(&self, now_ns: u64) -> Result<(&Image, u64), SceneError> {
        let Some((rgb, received)) = &self.rgb else {
            return Err(SceneError::NoFrame {
                camera: self.params.name.clone(),
            });
        };
        let age_s = now_ns.saturating_sub(*received) as f64 * 1e-9;
        if age_s > self.params.max_age_s {
            return Err(SceneError::Stale {
                camera: self.params.name.clone(),
                age_s,
            });
        }
        Ok((rgb, *received))
    }

    /// Resamples the newest colour image (nearest pixel centre) into `out`, `w` x `h` RGB rows
    /// (`out.len()` must be `w * h * 3`), as of `now_ns`; returns when that image was received
    /// (bridge clock, ns). Needs neither camera info nor a pose: what a pixel policy sees.
    pub fn colour(
        &self,
        out: &mut [u8],
        w: usize,
        h: usize,
        now_ns: u64,
    ) -> Result<u64, SceneError> {
        let (rgb, received) = self.fresh_colour(now_ns)?;
        let (sw, sh) = (rgb.width as usize, rgb.height as usize);
        if sw == 0 || sh == 0 || w == 0 || h == 0 || out.len() != w * h * 3 {
            return Err(self.failed(format!(
                "empty image or wrong output ({sw}x{sh} to {w}x{h}, {} bytes)",
                out.len()
            )));
        }
        let (r, b) = match rgb.encoding.as_str() {
            "rgb8" => (0, 2),
            "bgr8" => (2, 0),
            other => {
                return Err(self.failed(format!("colour encoding `{other}`: expected rgb8 or bgr8")))
            }
        };
        let step = rgb.step as usize;
        if step < sw * 3 || rgb.data.len() < step * sh {
            return Err(self.failed(format!(
                "colour image of {} bytes is short for {sw}x{sh} with step {step}",
                rgb.data.len()
            )));
        }
        for y in 0..h {
            for x in 0..w {
                let (u, v) = sample(x, y, (sw, sh), (w, h));
                let p = v * step + u * 3;
                let o = (y * w + x) * 3;
                out[o] = rgb.data[p + r];
                out[o + 1] = rgb.data[p + 1];
                out[o + 2] = rgb.data[p + b];
            }
        }
        Ok(received)
    }

    /// Fills `frame` at its own size from the newest messages, as of `now_ns`: colour, depth,
    /// intrinsics and the calibrated pose (a camera without `pose_in_base` is refused).
    pub fn render(&self, frame: &mut Frame, now_ns: u64) -> Result<(), SceneError> {
        let (rgb, _) = self.fresh_colour(now_ns)?;
        let info = self
            .info
            .as_ref()
            .ok_or_else(|| self.failed("no camera info yet".into()))?;
        let Some(p) = self.params.pose_in_base else {
            return Err(self.failed(format!(
                "cameras.{}.pose_in_base is not set: this camera serves pixel policies only, \
                 a posed frame needs its calibrated pose in the base frame",
                self.params.name
            )));
        };
        let (sw, sh) = (rgb.width as usize, rgb.height as usize);
        let (w, h) = (frame.width, frame.height);
        frame.rgb.resize(w * h * 3, 0);
        frame.depth_m.resize(w * h, 0.0);
        frame.segmentation.clear();
        self.colour(&mut frame.rgb, w, h, now_ns)?;
        let src = |x: usize, y: usize| sample(x, y, (sw, sh), (w, h));
        if self.params.depth_topic.is_empty() {
            frame.depth_m.fill(0.0);
        } else {
            let (depth, _) = self
                .depth
                .as_ref()
                .ok_or_else(|| self.failed("no depth image yet".into()))?;
            if (depth.width as usize, depth.height as usize) != (sw, sh) {
                return Err(self.failed(format!(
                    "depth {}x{} is not registered to the {sw}x{sh} colour image",
                    depth.width, depth.height
                )));
            }
            let (bytes, scale) = match depth.encoding.as_str() {
                "16UC1" | "mono16" => (2, 1e-3),
                "32FC1" => (4, 1.0),
                other => {
                    return Err(
                        self.failed(format!("depth encoding `{other}`: expected 16UC1 or 32FC1"))
                    )
                }
            };
            let dstep = depth.step as usize;
            if dstep < sw * bytes || depth.data.len() < dstep * sh {
                return Err(self.failed("depth image is short for its size".into()));
            }
            let big = depth.is_bigendian != 0;
            for y in 0..h {
                for x in 0..w {
                    let (u, v) = src(x, y);
                    let p = v * dstep + u * bytes;
                    let d = &depth.data[p..p + bytes];
                    let metres = if bytes == 2 {
                        let raw = if big {
                            u16::from_be_bytes([d[0], d[1]])
                        } else {
                            u16::from_le_bytes([d[0], d[1]])
                        };
                        raw as f64 * scale
                    } else {
                        let a = [d[0], d[1], d[2], d[3]];
                        (if big {
                            f32::from_be_bytes(a)
                        } else {
                            f32::from_le_bytes(a)
                        }) as f64
                    };
                    frame.depth_m[y * w + x] = if metres.is_finite() && metres > 0.0 {
                        metres as f32
                    } else {
                        0.0
                    };
                }
            }
        }
        // The intrinsics are the info's, for the info's image size, scaled to the frame's. ROS
        // puts pixel centres at whole numbers; Reflex's frames put pixel i over [i, i + 1].
        let (iw, ih) = if info.width > 0 && info.height > 0 {
            (info.width as f64, info.height as f64)
        } else {
            (sw as f64, sh as f64)
        };
        let (kx, ky) = (w as f64 / iw, h as f64 / ih);
        let k = info.k;
        if !(k[0] > 0.0 && k[4] > 0.0 && k.iter().all(|v| v.is_finite())) {
            return Err(self.failed("camera info has no valid intrinsic matrix".into()));
        }
        frame.intrinsics = Intrinsics {
            fx: k[0] * kx,
            fy: k[4] * ky,
            cx: (k[2] + 0.5) * kx,
            cy: (k[5] + 0.5) * ky,
        };
        frame.pose = Isometry3::from_parts(
            Translation3::new(p[0], p[1], p[2]),
            UnitQuaternion::from_quaternion(Quaternion::new(p[6], p[3], p[4], p[5])),
        );
        frame.stamp_ns = rgb.header.stamp.to_ns();
        Ok(())
    }
}

/// The pixel of a `sw` x `sh` image whose centre is nearest to pixel `(x, y)`'s of a `w` x `h`
/// picture stretched over it: how every camera image reaches a policy or a classifier.
pub fn sample(
    x: usize,
    y: usize,
    (sw, sh): (usize, usize),
    (w, h): (usize, usize),
) -> (usize, usize) {
    ((x * 2 + 1) * sw / (2 * w), (y * 2 + 1) * sh / (2 * h))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::Header;

    fn params(depth: bool) -> CameraParams {
        CameraParams {
            name: "front".into(),
            image_topic: "/front/color/image_raw".into(),
            depth_topic: if depth {
                "/front/depth".into()
            } else {
                String::new()
            },
            info_topic: "/front/color/camera_info".into(),
            pose_in_base: Some([1.0, 0.0, 0.5, 0.0, 0.0, 0.0, 1.0]),
            max_age_s: 0.5,
        }
    }

    fn feed() -> CameraFeed {
        let (w, h) = (4u32, 2u32);
        let mut rgb = vec![0u8; (w * h * 3) as usize];
        for (i, px) in rgb.chunks_mut(3).enumerate() {
            px.copy_from_slice(&[i as u8, 100, 200]);
        }
        let depth: Vec<u8> = (0..w * h)
            .flat_map(|i| ((i as u16 + 1) * 1000).to_le_bytes())
            .collect();
        let mut k = [0.0; 9];
        k[0] = 4.0;
        k[4] = 4.0;
        k[2] = 1.5;
        k[5] = 0.5;
        k[8] = 1.0;
        CameraFeed {
            params: params(true),
            rgb: Some((
                Image {
                    header: Header::default(),
                    height: h,
                    width: w,
                    encoding: "bgr8".into(),
                    is_bigendian: 0,
                    step: w * 3,
                    data: rgb,
                },
                1_000,
            )),
            depth: Some((
                Image {
                    header: Header::default(),
                    height: h,
                    width: w,
                    encoding: "16UC1".into(),
                    is_bigendian: 0,
                    step: w * 2,
                    data: depth,
                },
                1_000,
            )),
            info: Some(CameraInfo {
                width: w,
                height: h,
                k,
                ..Default::default()
            }),
        }
    }

    #[test]
    fn images_resample_with_their_intrinsics_and_depth_in_metres() {
        let f = feed();
        let mut frame = Frame::new(2, 1);
        f.render(&mut frame, 2_000).unwrap();
        // Pixel (0, 0) of the half-size frame samples source pixel (1, 1), number 5; bgr swaps
        // to rgb; depth 16UC1 is millimetres.
        assert_eq!(&frame.rgb[..3], &[200, 100, 5]);
        assert_eq!(frame.depth_m[0], 6.0);
        assert_eq!(frame.depth_m[1], 8.0);
        assert_eq!(frame.intrinsics.fx, 2.0);
        // The source's centre (1.5 in ROS's convention) is the frame's centre.
        assert_eq!(frame.intrinsics.cx, 1.0);
        assert_eq!(frame.pose.translation.vector.x, 1.0);
        assert!(frame.segmentation.is_empty());
    }

    #[test]
    fn stale_missing_and_malformed_images_are_named() {
        let f = feed();
        let mut frame = Frame::new(2, 1);
        let e = f.render(&mut frame, 1_000_000_000).unwrap_err();
        assert!(matches!(e, SceneError::Stale { .. }), "{e}");
        let mut g = feed();
        g.rgb.as_mut().unwrap().0.encoding = "yuv422".into();
        let e = g.render(&mut frame, 2_000).unwrap_err().to_string();
        assert!(e.contains("front") && e.contains("yuv422"), "{e}");
        let mut g = feed();
        g.depth.as_mut().unwrap().0.width = 3;
        let e = g.render(&mut frame, 2_000).unwrap_err().to_string();
        assert!(e.contains("registered"), "{e}");
        let mut g = feed();
        g.rgb = None;
        assert!(matches!(
            g.render(&mut frame, 2_000),
            Err(SceneError::NoFrame { .. })
        ));
        let mut g = feed();
        g.rgb.as_mut().unwrap().0.data.truncate(5);
        let e = g.render(&mut frame, 2_000).unwrap_err().to_string();
        assert!(e.contains("short"), "{e}");
    }

    #[test]
    fn a_camera_without_a_pose_gives_colour_for_pixel_policies_but_no_posed_frame() {
        let mut f = feed();
        f.params.pose_in_base = None;
        f.info = None;
        // Colour alone needs neither the info nor the pose: the same pixels as a posed render.
        let mut out = vec![0u8; 2 * 3];
        assert_eq!(f.colour(&mut out, 2, 1, 2_000).unwrap(), 1_000);
        assert_eq!(&out[..3], &[200, 100, 5]);
        assert_eq!(f.received_ns(), Some(1_000));
        let mut frame = Frame::new(2, 1);
        f.info = feed().info;
        let e = f.render(&mut frame, 2_000).unwrap_err().to_string();
        assert!(e.contains("cameras.front.pose_in_base"), "{e}");
        // Stale colour is refused like a stale frame; a wrong output size is named.
        assert!(matches!(
            f.colour(&mut out, 2, 1, 1_000_000_000),
            Err(SceneError::Stale { .. })
        ));
        let e = f.colour(&mut out, 3, 1, 2_000).unwrap_err().to_string();
        assert!(e.contains("wrong output"), "{e}");
    }
}
