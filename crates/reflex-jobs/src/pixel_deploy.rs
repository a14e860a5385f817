//! A pixel run's policies (`reflex train --obs pixels`: `base.safetensors` +
//! `base_encoder.safetensors`, `policy.safetensors` + `policy_encoder.safetensors`) on an arm
//! whose cameras are not the simulator's renderer: `reflex ros run` over camera topics.
//!
//! A camera thread ([`spawn_camera_pump`]) polls the cameras the policy was trained with, in
//! the file's order, resamples each one's newest colour image to the encoder's side, stacks them
//! along the channels and publishes the stack into the base's and the residual's image cells,
//! stamped with when the oldest of them was received (the clock joint states are stamped with).
//! It publishes only when every camera has a fresh image and at least one is new. The control
//! tick reads the cells in place; an image older than the cameras' `max_age_s` makes the base
//! not ready and the arm holds for that step (`InputStale`), so a camera that stops, or never
//! starts, can never move the arm on an old picture.

use reflex_core::{image_cell, ImageReader, ImageWriter, SceneError, FLAT_OBJECTS};
use reflex_policy::{
    stack_frames, ConvEncoder, EncoderSlot, Mlp, PixelNet, PixelPolicy, ResidualPolicy, WeightsSlot,
};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The metadata key a pixel run's network files carry (JSON: role, task, cameras, encoder,
/// residual scale, seed, commit).
pub const PIXEL_META_KEY: &str = "reflex.pixel_policy";

/// The encoder file beside a pixel network file: `<stem>_encoder.safetensors`.
pub fn encoder_path(mlp: &Path) -> PathBuf {
    let stem = mlp.file_stem().and_then(|s| s.to_str()).unwrap_or("policy");
    mlp.with_file_name(format!("{stem}_encoder.safetensors"))
}

/// Whether `path` is one of a pixel run's network files (its encoder lies beside it).
pub fn is_pixel_file(path: &Path) -> bool {
    encoder_path(path).is_file()
}

/// A pixel network file: the encoder, the MLP and the file's pixel metadata (empty for a file
/// without it).
pub fn load_pixel_net(
    mlp: &Path,
) -> Result<(ConvEncoder, Mlp, serde_json::Map<String, serde_json::Value>), String> {
    let enc_path = encoder_path(mlp);
    let encoder = ConvEncoder::load(&enc_path).map_err(|e| e.to_string())?;
    let (net, meta) = Mlp::load_with_metadata(mlp).map_err(|e| e.to_string())?;
    let pixel = match meta.get(PIXEL_META_KEY) {
        None => serde_json::Map::new(),
        Some(text) => match serde_json::from_str(text) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => {
                return Err(format!(
                    "{}: metadata `{PIXEL_META_KEY}` is not a JSON object",
                    mlp.display()
                ))
            }
        },
    };
    Ok((encoder, net, pixel))
}

/// A pixel run's base and residual, ready for a runtime, and the writers of their image cells.
pub struct PixelPolicies {
    /// The base: holds the arm when its image is older than the cameras allow.
    pub base: PixelPolicy,
    /// The residual (`tanh(mean)` of the trained actor), if one was given.
    pub residual: Option<ResidualPolicy>,
    /// The residual's scale, from its file.
    pub residual_scale: Option<f32>,
    /// The cameras in the order the encoder stacks them.
    pub cameras: Vec<String>,
    /// Image side the encoder takes, pixels.
    pub side: usize,
    /// One writer per image cell (the base's, then the residual's).
    pub writers: Vec<ImageWriter>,
}

/// Reads `policy` (a pixel run's `base.safetensors`) and `residual` (its
/// `policy.safetensors`), checks them against `task` and each other, and builds the policies
/// over fresh image cells; an image older than `max_age_ns` is refused by the base.
pub fn pixel_policies(
    task: &str,
    act_dim: usize,
    policy: &Path,
    residual: Option<&Path>,
    max_age_ns: u64,
) -> Result<PixelPolicies, String> {
    let named = |p: &Path, e: String| format!("{}: {e}", p.display());
    let (enc, mlp, meta) = load_pixel_net(policy).map_err(|e| named(policy, e))?;
    check_meta(policy, &meta, "base", task)?;
    let cameras = cameras_of(policy, &meta)?;
    let shape = enc.shape().clone();
    if shape.height != shape.width || shape.channels != 3 * cameras.len() {
        return Err(format!(
            "{}: the encoder takes {}x{}x{} images, not {} square RGB cameras",
            encoder_path(policy).display(),
            shape.height,
            shape.width,
            shape.channels,
            cameras.len()
        ));
    }
    let base_net = PixelNet::new(enc, mlp).map_err(|e| named(policy, e))?;
    if base_net.mlp().output_dim() != act_dim {
        return Err(format!(
            "{}: the base gives {} actions, the task takes {act_dim}",
            policy.display(),
            base_net.mlp().output_dim()
        ));
    }
    let len = shape.height * shape.width * shape.channels;
    let (base_writer, base_frames) = image_cell(len);
    let base = PixelPolicy::new(base_net, base_frames, max_age_ns).map_err(|e| named(policy, e))?;
    let mut writers = vec![base_writer];
    let (mut residual_policy, mut residual_scale) = (None, None);
    if let Some(path) = residual {
        let (enc, mlp, meta) = load_pixel_net(path).map_err(|e| named(path, e))?;
        check_meta(path, &meta, "policy", task)?;
        let theirs = cameras_of(path, &meta)?;
        if theirs != cameras || enc.shape() != &shape {
            return Err(format!(
                "{}: made for cameras {theirs:?} at {}x{}, the base for {cameras:?} at {}x{}",
                path.display(),
                enc.shape().height,
                enc.shape().width,
                shape.height,
                shape.width
            ));
        }
        residual_scale = meta
            .get("residual_scale")
            .and_then(|v| v.as_f64())
            .map(|v| v as f32);
        let (writer, frames): (ImageWriter, ImageReader) = image_cell(len);
        writers.push(writer);
        residual_policy = Some(
            ResidualPolicy::pixel(
                WeightsSlot::new(mlp),
                EncoderSlot::new(enc),
                frames,
                FLAT_OBJECTS,
                act_dim,
            )
            .map_err(|e| named(path, e.to_string()))?,
        );
    }
    Ok(PixelPolicies {
        base,
        residual: residual_policy,
        residual_scale,
        cameras,
        side: shape.height,
        writers,
    })
}

fn check_meta(
    path: &Path,
    meta: &serde_json::Map<String, serde_json::Value>,
    role: &str,
    task: &str,
) -> Result<(), String> {
    if meta.is_empty() {
        return Err(format!(
            "{}: no `{PIXEL_META_KEY}` metadata; a pixel run's files carry it (role, task, \
             cameras)",
            path.display()
        ));
    }
    let got = |k: &str| meta.get(k).and_then(|v| v.as_str()).unwrap_or("");
    if got("role") != role {
        return Err(format!(
            "{}: a `{}` network, expected the run's `{role}`",
            path.display(),
            got("role")
        ));
    }
    if got("task") != task {
        return Err(format!(
            "{}: trained on task `{}`, used on `{task}`",
            path.display(),
            got("task")
        ));
    }
    Ok(())
}

fn cameras_of(
    path: &Path,
    meta: &serde_json::Map<String, serde_json::Value>,
) -> Result<Vec<String>, String> {
    let list = meta.get("cameras").and_then(|v| v.as_array()).map(|a| {
        a.iter()
            .map(|c| c.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
    });
    match list {
        Some(Some(c)) if !c.is_empty() => Ok(c),
        _ => Err(format!(
            "{}: metadata `{PIXEL_META_KEY}` has no `cameras` list",
            path.display()
        )),
    }
}

/// Where a camera thread gets colour images: the newest of `camera`, resampled to `w` x `h`
/// into `out`, and when it was received (the runtime's clock, ns).
pub trait ColourSource: Send + 'static {
    /// See the trait.
    fn colour(&self, camera: &str, out: &mut [u8], w: usize, h: usize) -> Result<u64, SceneError>;

    /// When `camera`'s newest image was received (None: none yet, or no such camera): a poll
    /// that finds every camera's unchanged does nothing.
    fn newest_ns(&self, camera: &str) -> Option<u64>;

    /// The cameras it has.
    fn cameras(&self) -> Vec<String>;
}

impl ColourSource for Box<dyn ColourSource> {
    fn colour(&self, camera: &str, out: &mut [u8], w: usize, h: usize) -> Result<u64, SceneError> {
        (**self).colour(camera, out, w, h)
    }

    fn newest_ns(&self, camera: &str) -> Option<u64> {
        (**self).newest_ns(camera)
    }

    fn cameras(&self) -> Vec<String> {
        (**self).cameras()
    }
}

impl ColourSource for reflex_ros::camera::RosCameras {
    fn colour(&self, camera: &str, out: &mut [u8], w: usize, h: usize) -> Result<u64, SceneError> {
        reflex_ros::camera::RosCameras::colour(self, camera, out, w, h)
    }

    fn newest_ns(&self, camera: &str) -> Option<u64> {
        self.received_ns(camera).ok().flatten()
    }

    fn cameras(&self) -> Vec<String> {
        self.names()
    }
}

/// A camera thread's counters.
#[derive(Debug, Default)]
pub struct PumpStats {
    /// Stacks published to the image cells.
    pub published: AtomicU64,
    /// Polls that found a new image but some camera without a fresh one (missing, stale or
    /// malformed): nothing was published, so the policy holds the arm once its last picture
    /// ages out.
    pub refused: AtomicU64,
}

/// A running camera thread; stops and joins when dropped.
pub struct CameraPump {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Its counters.
    pub stats: Arc<PumpStats>,
}

impl Drop for CameraPump {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts the camera thread for `cameras` (stacked in this order) at `side` x `side`, polling
/// `source` every `period` and publishing into `writers` (see the module's docs).
pub fn spawn_camera_pump(
    source: impl ColourSource,
    cameras: Vec<String>,
    side: usize,
    mut writers: Vec<ImageWriter>,
    period: Duration,
) -> std::io::Result<CameraPump> {
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(PumpStats::default());
    let (stop2, stats2) = (stop.clone(), stats.clone());
    let thread = std::thread::Builder::new()
        .name("reflex-cameras".into())
        .spawn(move || {
            let one = side * side * 3;
            let mut frames = vec![vec![0u8; one]; cameras.len()];
            let mut stacked = vec![0u8; one * cameras.len()];
            let mut last_stamp = 0u64;
            let mut last_error: HashMap<String, String> = HashMap::new();
            let mut seen: Vec<Option<u64>> = vec![None; cameras.len()];
            let mut first = true;
            while !stop2.load(Ordering::Acquire) {
                let now: Vec<Option<u64>> = cameras.iter().map(|c| source.newest_ns(c)).collect();
                if now == seen && !first {
                    std::thread::sleep(period);
                    continue;
                }
                seen = now;
                first = false;
                let mut stamp = u64::MAX;
                let mut newest = 0u64;
                let mut ok = true;
                for (name, frame) in cameras.iter().zip(&mut frames) {
                    match source.colour(name, frame, side, side) {
                        Ok(t) => {
                            stamp = stamp.min(t);
                            newest = newest.max(t);
                            last_error.remove(name);
                        }
                        Err(e) => {
                            ok = false;
                            let text = e.to_string();
                            // Said once per kind of failure, not at every poll.
                            let kind = text.split(':').next().unwrap_or("").to_owned();
                            if last_error.get(name) != Some(&kind) {
                                tracing::warn!(camera = %name, "no picture for the policy: {text}");
                                last_error.insert(name.clone(), kind);
                            }
                        }
                    }
                }
                if !ok {
                    stats2.refused.fetch_add(1, Ordering::Relaxed);
                } else if newest > last_stamp {
                    last_stamp = newest;
                    let views: Vec<&[u8]> = frames.iter().map(|f| &f[..]).collect();
                    if stack_frames(&views, &mut stacked).is_ok() {
                        for w in &mut writers {
                            // Same length by construction.
                            let _ = w.publish(stamp, &stacked);
                        }
                        stats2.published.fetch_add(1, Ordering::Relaxed);
                    }
                }
                std::thread::sleep(period);
            }
        })?;
    Ok(CameraPump {
        stop,
        thread: Some(thread),
        stats,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Per camera: (pixel value, stamp) of its image, or why it has none.
    type Shots = HashMap<String, Result<(u8, u64), String>>;

    /// A camera source whose images and failures the test sets.
    #[derive(Clone, Default)]
    struct Fake(Arc<Mutex<Shots>>);

    impl ColourSource for Fake {
        fn cameras(&self) -> Vec<String> {
            self.0.lock().unwrap().keys().cloned().collect()
        }

        fn newest_ns(&self, camera: &str) -> Option<u64> {
            match self.0.lock().unwrap().get(camera) {
                Some(Ok((_, stamp))) => Some(*stamp),
                _ => None,
            }
        }

        fn colour(
            &self,
            camera: &str,
            out: &mut [u8],
            _w: usize,
            _h: usize,
        ) -> Result<u64, SceneError> {
            match self.0.lock().unwrap().get(camera) {
                Some(Ok((value, stamp))) => {
                    out.fill(*value);
                    Ok(*stamp)
                }
                Some(Err(age)) => Err(SceneError::Stale {
                    camera: format!("{camera} ({age})"),
                    age_s: 1.0,
                }),
                None => Err(SceneError::NoFrame {
                    camera: camera.into(),
                }),
            }
        }
    }

    fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !ok() {
            assert!(std::time::Instant::now() < deadline, "{what} within 5 s");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn the_camera_thread_publishes_only_complete_fresh_stacks_stamped_with_the_oldest() {
        let fake = Fake::default();
        let (writer, mut reader) = image_cell(2 * 2 * 3 * 2);
        let pump = spawn_camera_pump(
            fake.clone(),
            vec!["wrist".into(), "front".into()],
            2,
            vec![writer],
            Duration::from_millis(1),
        )
        .unwrap();
        // One camera only: nothing reaches the policy.
        fake.0
            .lock()
            .unwrap()
            .insert("front".into(), Ok((9, 2_000)));
        wait_for("a refused poll", || {
            pump.stats.refused.load(Ordering::Relaxed) >= 1
        });
        assert!(reader.latest().is_none());
        assert_eq!(pump.stats.published.load(Ordering::Relaxed), 0);
        // Both: one stack, wrist then front along the channels, stamped with the older image.
        fake.0
            .lock()
            .unwrap()
            .insert("wrist".into(), Ok((7, 1_000)));
        wait_for("a stack", || {
            pump.stats.published.load(Ordering::Relaxed) == 1
        });
        let img = reader.latest().unwrap();
        assert_eq!(img.stamp_ns, 1_000);
        assert_eq!(&img.bytes[..6], &[7, 7, 7, 9, 9, 9]);
        // Nothing new: nothing republished or refused, however many polls.
        let refused = pump.stats.refused.load(Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(pump.stats.published.load(Ordering::Relaxed), 1);
        assert_eq!(pump.stats.refused.load(Ordering::Relaxed), refused);
        // A camera goes stale: refused again, and the cell keeps the old stamp, which the
        // policy's age check then refuses.
        fake.0
            .lock()
            .unwrap()
            .insert("wrist".into(), Err("stopped".into()));
        let before = pump.stats.refused.load(Ordering::Relaxed);
        wait_for("a refusal", || {
            pump.stats.refused.load(Ordering::Relaxed) > before
        });
        assert_eq!(pump.stats.published.load(Ordering::Relaxed), 1);
        assert_eq!(reader.latest().unwrap().stamp_ns, 1_000);
        drop(pump);
    }
}
