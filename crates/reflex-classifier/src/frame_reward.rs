//! A reward model on camera frames learned from preferences, as RL-VLM-F learns it: a judge
//! (a VLM) says which of two frames shows more progress, and a small CNN `r(image)` (the
//! success classifier's architecture, one scalar out) is fitted with the Bradley-Terry
//! likelihood `P(a > b) = sigmoid(r(a) - r(b))`, on frames shifted at random by a few pixels
//! (DrQ's augmentation) so it ranks scenes, not pixel positions.
//!
//! Frames are `[3, size, size]` floats in [0, 1], as [`crate::image_tensor_layout`] makes
//! them. Nothing here knows the simulator.

use crate::SuccessCnn;
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::activation::softplus;
use burn::tensor::{Device, Tensor, TensorData};
use reflex_core::Rng;
use reflex_learn::burn_device::BurnDevice;
use serde::{Deserialize, Serialize};

/// Settings of the frame reward model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FrameRewardConfig {
    /// Image side the CNN reads, pixels (a multiple of 8).
    pub size: usize,
    /// Pairs per gradient step.
    pub batch_pairs: usize,
    /// Gradient steps per round of new labels.
    pub steps_per_round: usize,
    /// Adam step size.
    pub lr: f64,
    /// Largest random shift of a training frame, pixels (0: none).
    pub shift_px: usize,
    /// Where the CNN trains and judges: burn's CPU backend, or a GPU (the `gpu` feature).
    pub device: BurnDevice,
}

impl Default for FrameRewardConfig {
    fn default() -> Self {
        Self {
            size: 64,
            batch_pairs: 32,
            steps_per_round: 300,
            lr: 1e-3,
            shift_px: 4,
            device: BurnDevice::Cpu,
        }
    }
}

/// A labelled pair of frames: indices into the frames given to [`FrameRewardModel::train`],
/// and whether the first was preferred.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FramePair {
    /// The first frame.
    pub a: usize,
    /// The second frame.
    pub b: usize,
    /// The judge preferred the first.
    pub first_better: bool,
}

/// The CNN reward model.
pub struct FrameRewardModel {
    cfg: FrameRewardConfig,
    model: SuccessCnn,
    optim: ModuleOptimizer,
    device: Device,
    rng: Rng,
}

impl FrameRewardModel {
    /// A fresh model, its weights drawn from `seed`.
    pub fn new(cfg: FrameRewardConfig, seed: u64) -> Result<Self, String> {
        if cfg.size < 16 || !cfg.size.is_multiple_of(8) {
            return Err(format!(
                "frame reward: size must be a multiple of 8, at least 16, got {}",
                cfg.size
            ));
        }
        if cfg.batch_pairs == 0 || !(cfg.lr > 0.0 && cfg.lr.is_finite()) {
            return Err("frame reward: batch_pairs and lr must be positive".into());
        }
        let device = cfg.device.open()?.device;
        device.seed(seed);
        Ok(Self {
            model: SuccessCnn::new(cfg.size, &device),
            optim: AdamConfig::new().init(),
            device,
            rng: Rng::new(seed ^ 0xF4A3),
            cfg,
        })
    }

    /// The image side it reads.
    pub fn size(&self) -> usize {
        self.cfg.size
    }

    /// `steps_per_round` Bradley-Terry steps on `pairs` of `frames` (concatenated images);
    /// returns the mean loss of the last tenth of the steps (NaN without pairs).
    pub fn train(&mut self, frames: &[f32], pairs: &[FramePair]) -> f32 {
        let per = 3 * self.cfg.size * self.cfg.size;
        let n = frames.len() / per;
        let pairs: Vec<FramePair> = pairs
            .iter()
            .copied()
            .filter(|p| p.a < n && p.b < n)
            .collect();
        if pairs.is_empty() {
            return f32::NAN;
        }
        let b = self.cfg.batch_pairs;
        let s = self.cfg.size;
        let mut xa = vec![0.0f32; b * per];
        let mut xb = vec![0.0f32; b * per];
        let mut sign = vec![0.0f32; b];
        let tail = (self.cfg.steps_per_round / 10).max(1);
        let (mut sum, mut count) = (0.0f32, 0usize);
        for step in 0..self.cfg.steps_per_round {
            for k in 0..b {
                let p = pairs[(self.rng.next_u64() % pairs.len() as u64) as usize];
                let shift = self.cfg.shift_px;
                random_shift(
                    &frames[p.a * per..][..per],
                    s,
                    shift,
                    &mut self.rng,
                    &mut xa[k * per..][..per],
                );
                random_shift(
                    &frames[p.b * per..][..per],
                    s,
                    shift,
                    &mut self.rng,
                    &mut xb[k * per..][..per],
                );
                sign[k] = if p.first_better { 1.0 } else { -1.0 };
            }
            let ta =
                Tensor::<4>::from_data(TensorData::new(xa.clone(), [b, 3, s, s]), &self.device);
            let tb =
                Tensor::<4>::from_data(TensorData::new(xb.clone(), [b, 3, s, s]), &self.device);
            let y = Tensor::<2>::from_data(TensorData::new(sign.clone(), [b, 1]), &self.device);
            let d = self.model.forward(ta) - self.model.forward(tb);
            // -log sigmoid(sign * d) = softplus(-sign * d).
            let loss = softplus(d.mul(y).neg(), 1.0).mean();
            if step + tail >= self.cfg.steps_per_round {
                let v = crate::first_value(loss.clone());
                sum += v;
                count += 1;
            }
            let grads = GradientsParams::from_grads(loss.backward(), &self.model);
            // (A module's clone shares its tensors: cheap.)
            self.model = self.optim.step(self.cfg.lr, self.model.clone(), grads);
        }
        sum / count.max(1) as f32
    }

    /// The model's reward of each of `frames` (concatenated images).
    pub fn rewards(&self, frames: &[f32]) -> Vec<f32> {
        let s = self.cfg.size;
        let per = 3 * s * s;
        let mut out = Vec::with_capacity(frames.len() / per);
        for chunk in frames.chunks(128 * per) {
            let n = chunk.len() / per;
            if n == 0 {
                break;
            }
            let x =
                Tensor::<4>::from_data(TensorData::new(chunk.to_vec(), [n, 3, s, s]), &self.device);
            let r = self.model.forward(x);
            out.extend(
                r.into_data()
                    .try_to_vec::<f32>()
                    .unwrap_or_else(|_| vec![f32::NAN; n]),
            );
        }
        out
    }
}

/// Copies `image` (`[3, size, size]`) into `out` shifted by a random whole number of pixels
/// in `-max..=max` along each axis, repeating the edge pixels into the uncovered border (the
/// pad-and-crop augmentation of DrQ).
pub fn random_shift(image: &[f32], size: usize, max: usize, rng: &mut Rng, out: &mut [f32]) {
    if max == 0 {
        out.copy_from_slice(image);
        return;
    }
    let span = 2 * max as u64 + 1;
    let dx = (rng.next_u64() % span) as isize - max as isize;
    let dy = (rng.next_u64() % span) as isize - max as isize;
    let last = size as isize - 1;
    for c in 0..3 {
        let plane = &image[c * size * size..][..size * size];
        let dst = &mut out[c * size * size..][..size * size];
        for y in 0..size {
            let sy = (y as isize + dy).clamp(0, last) as usize;
            for x in 0..size {
                let sx = (x as isize + dx).clamp(0, last) as usize;
                dst[y * size + x] = plane[sy * size + sx];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frames whose brightness is their progress: a few hundred judged pairs teach the CNN to
    /// rank new frames by it.
    #[test]
    fn the_cnn_learns_to_rank_frames_from_pairs() {
        let cfg = FrameRewardConfig {
            size: 16,
            batch_pairs: 16,
            steps_per_round: 150,
            ..Default::default()
        };
        let per = 3 * 16 * 16;
        let frame = |v: f32, out: &mut Vec<f32>| {
            // A bright square on a dark field, its brightness the progress.
            for _ in 0..3 {
                for y in 0..16 {
                    for x in 0..16 {
                        let inside = (4..12).contains(&x) && (4..12).contains(&y);
                        out.push(if inside { v } else { 0.1 });
                    }
                }
            }
        };
        let mut frames = Vec::new();
        let progress: Vec<f32> = (0..20).map(|i| i as f32 / 19.0).collect();
        for p in &progress {
            frame(*p, &mut frames);
        }
        let mut rng = Rng::new(3);
        let pairs: Vec<FramePair> = (0..200)
            .map(|_| {
                let a = (rng.next_u64() % 20) as usize;
                let b = (rng.next_u64() % 20) as usize;
                FramePair {
                    a,
                    b,
                    first_better: progress[a] > progress[b],
                }
            })
            .filter(|p| p.a != p.b)
            .collect();
        let mut m = FrameRewardModel::new(cfg, 1).unwrap();
        let loss = m.train(&frames, &pairs);
        assert!(loss < 0.4, "loss {loss}");
        let mut test = Vec::new();
        for v in [0.05, 0.33, 0.66, 0.95] {
            frame(v, &mut test);
        }
        let r = m.rewards(&test);
        assert_eq!(r.len(), 4);
        assert!(r.windows(2).all(|w| w[0] < w[1]), "{r:?}");
        assert_eq!(frames.len() / per, 20);
    }

    #[test]
    fn a_random_shift_moves_the_image_and_repeats_its_edges() {
        let size = 4;
        let image: Vec<f32> = (0..3 * 16).map(|i| i as f32).collect();
        let mut out = vec![0.0; 48];
        let mut rng = Rng::new(1);
        random_shift(&image, size, 0, &mut rng, &mut out);
        assert_eq!(out, image);
        for seed in 0..20 {
            let mut rng = Rng::new(seed);
            random_shift(&image, size, 1, &mut rng, &mut out);
            // Every value comes from the same channel, and the centre stays near the centre.
            for c in 0..3 {
                let lo = (c * 16) as f32;
                assert!(out[c * 16..][..16]
                    .iter()
                    .all(|v| (lo..lo + 16.0).contains(v)));
            }
            let centre = out[5] - 0.0;
            assert!(
                [0.0, 1.0, 2.0, 4.0, 5.0, 6.0, 8.0, 9.0, 10.0].contains(&centre),
                "{centre}"
            );
        }
    }
}
