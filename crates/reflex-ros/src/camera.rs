//! Camera topics as [`SceneView`](reflex_core::SceneView) frames: the newest colour image,
//! its registered depth image and the camera info of one camera, resampled to the size a reward
//! source asks for, with the intrinsics scaled to match and the optical frame's pose from the
//! camera's calibration (`pose_in_base`). An image older than `max_age_s` is refused as stale.
//! Slow path only: the executor stores messages here, reward sources render from here; the
//! control tick never touches it.

use crate::msg::{CameraInfo, Image};
use crate::params::CameraParams;
use nalgebra::{Isometry3, Quaternion, Translation3, UnitQuaternion};
use reflex_core::{Frame, Intrinsics, SceneError};

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

    /// Fills `frame` at its own size from the newest messages, as of `now_ns`.
    pub fn render(&self, frame: &mut Frame, now_ns: u64) -> Result<(), SceneError> {
        let name = &self.params.name;
        let Some((rgb, received)) = &self.rgb else {
            return Err(SceneError::NoFrame {
                camera: name.clone(),
            });
        };
        let info = self
            .info
            .as_ref()
            .ok_or_else(|| self.failed("no camera info yet".into()))?;
        let age_s = now_ns.saturating_sub(*received) as f64 * 1e-9;
        if age_s > self.params.max_age_s {
            return Err(SceneError::Stale {
                camera: name.clone(),
                age_s,
            });
        }
        let (sw, sh) = (rgb.width as usize, rgb.height as usize);
        let (w, h) = (frame.width, frame.height);
        if sw == 0 || sh == 0 || w == 0 || h == 0 {
            return Err(self.failed(format!("empty image ({sw}x{sh} to {w}x{h})")));
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
        frame.rgb.resize(w * h * 3, 0);
        frame.depth_m.resize(w * h, 0.0);
        frame.segmentation.clear();
        let src = |x: usize, y: usize| ((x * 2 + 1) * sw / (2 * w), (y * 2 + 1) * sh / (2 * h));
        for y in 0..h {
            for x in 0..w {
                let (u, v) = src(x, y);
                let p = v * step + u * 3;
                let o = (y * w + x) * 3;
                frame.rgb[o] = rgb.data[p + r];
                frame.rgb[o + 1] = rgb.data[p + 1];
                frame.rgb[o + 2] = rgb.data[p + b];
            }
        }
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
        let p = self.params.pose_in_base;
        frame.pose = Isometry3::from_parts(
            Translation3::new(p[0], p[1], p[2]),
            UnitQuaternion::from_quaternion(Quaternion::new(p[6], p[3], p[4], p[5])),
        );
        frame.stamp_ns = rgb.header.stamp.to_ns();
        Ok(())
    }
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
            pose_in_base: [1.0, 0.0, 0.5, 0.0, 0.0, 0.0, 1.0],
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
}
