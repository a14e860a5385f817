//! The trainable side of the pixel encoder: the same network as `reflex_policy::ConvEncoder`
//! in burn (0.22, the `flex` CPU backend with autodiff), random-shift augmentation, and the
//! seam between burn's encoder and this crate's own MLP kernels.
//!
//! The encoder learns from the critic's loss only, as in DrQ and SERL: the critic (a
//! [`crate::nn::Net`]) computes its loss and, through `Net::backward`'s `d_input`, the gradient
//! of that loss with respect to the features it was given. [`EncoderTrainer::apply`] carries
//! that gradient on through burn's autodiff (the surrogate loss `sum(features * d_features)`
//! has exactly that gradient) and takes an Adam step. The actor reads the same features
//! detached. A test checks the seam against burn computing the whole loss itself.
//!
//! Images are `height x width x channels` bytes, row-major and channel-interleaved (several
//! cameras stacked along the channels by `reflex_policy::stack_frames`), batched one after the
//! other. [`random_shift`] pads each image by repeating its border and crops it back at a random
//! offset (DrQ's augmentation). [`PixelEncoder::to_params`] exports the weights in the layout the
//! tick's `ConvEncoder` reads, and [`PixelEncoder::from_params`] imports them.

use crate::rng::Rng;
use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor, TensorData};
use reflex_policy::{EncoderParams, EncoderShape};

/// Fresh encoder weights of `shape` (PyTorch's default initialisation, seeded by `seed`).
pub fn fresh_encoder(shape: &EncoderShape, seed: u64) -> Result<EncoderParams, String> {
    let device = Device::flex().autodiff();
    device.seed(seed);
    Ok(PixelEncoder::new(shape, &device)?.to_params(shape))
}

/// The encoder in burn: `reflex_policy::ConvEncoder`'s network, trainable.
#[derive(Module, Debug)]
pub struct PixelEncoder {
    convs: Vec<Conv2d>,
    head: Linear,
    norm: LayerNorm,
}

fn tensor_values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .try_to_vec::<f32>()
        .unwrap_or_else(|_| unreachable!("the encoder's tensors are f32"))
}

impl PixelEncoder {
    /// A fresh encoder of `shape` (burn's default initialisation), or a message naming the
    /// layer that does not fit.
    pub fn new(shape: &EncoderShape, device: &Device) -> Result<Self, String> {
        let flat = shape.flat_len()?;
        let mut in_ch = shape.channels;
        let convs = shape
            .convs
            .iter()
            .map(|c| {
                let p = c.padding;
                let conv = Conv2dConfig::new([in_ch, c.channels], [c.kernel, c.kernel])
                    .with_stride([c.stride, c.stride])
                    .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
                    .init(device);
                in_ch = c.channels;
                conv
            })
            .collect();
        Ok(Self {
            convs,
            head: LinearConfig::new(flat, shape.features).init(device),
            norm: LayerNormConfig::new(shape.features).init(device),
        })
    }

    /// Features `[n, features]` in (-1, 1) for images `[n, channels, height, width]` in [0, 1].
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let mut x = x;
        for c in &self.convs {
            x = relu(c.forward(x));
        }
        let x: Tensor<2> = x.flatten(1, 3);
        self.norm.forward(self.head.forward(x)).tanh()
    }

    /// The weights in the tick's layout (`torch.nn` order; burn keeps a linear layer's weight
    /// as `[in, out]`, so the head is transposed).
    pub fn to_params(&self, shape: &EncoderShape) -> EncoderParams {
        let convs = self
            .convs
            .iter()
            .map(|c| {
                let w = tensor_values(c.weight.val());
                let b = c
                    .bias
                    .as_ref()
                    .map(|b| tensor_values(b.val()))
                    .unwrap_or_else(|| vec![0.0; c.weight.val().dims()[0]]);
                (w, b)
            })
            .collect();
        let [flat, f] = self.head.weight.val().dims();
        let w_in_out = tensor_values(self.head.weight.val());
        let mut head_weight = vec![0.0; f * flat];
        for i in 0..flat {
            for o in 0..f {
                head_weight[o * flat + i] = w_in_out[i * f + o];
            }
        }
        let head_bias = self
            .head
            .bias
            .as_ref()
            .map(|b| tensor_values(b.val()))
            .unwrap_or_else(|| vec![0.0; f]);
        let norm_shift = self
            .norm
            .beta
            .as_ref()
            .map(|b| tensor_values(b.val()))
            .unwrap_or_else(|| vec![0.0; f]);
        EncoderParams {
            shape: shape.clone(),
            convs,
            head_weight,
            head_bias,
            norm_gain: tensor_values(self.norm.gamma.val()),
            norm_shift,
        }
    }

    /// An encoder holding `params` (checked; the message names the tensor at fault).
    pub fn from_params(params: &EncoderParams, device: &Device) -> Result<Self, String> {
        params.check()?;
        let shape = &params.shape;
        let mut enc = Self::new(shape, device)?;
        let mut in_ch = shape.channels;
        for ((conv, (w, b)), c) in enc.convs.iter_mut().zip(&params.convs).zip(&shape.convs) {
            let dims = [c.channels, in_ch, c.kernel, c.kernel];
            conv.weight = Param::from_data(TensorData::new(w.clone(), dims), device);
            conv.bias = Some(Param::from_data(
                TensorData::new(b.clone(), [c.channels]),
                device,
            ));
            in_ch = c.channels;
        }
        let f = shape.features;
        let flat = params.head_weight.len() / f;
        let mut w_in_out = vec![0.0; f * flat];
        for o in 0..f {
            for i in 0..flat {
                w_in_out[i * f + o] = params.head_weight[o * flat + i];
            }
        }
        enc.head.weight = Param::from_data(TensorData::new(w_in_out, [flat, f]), device);
        enc.head.bias = Some(Param::from_data(
            TensorData::new(params.head_bias.clone(), [f]),
            device,
        ));
        enc.norm.gamma = Param::from_data(TensorData::new(params.norm_gain.clone(), [f]), device);
        enc.norm.beta = Some(Param::from_data(
            TensorData::new(params.norm_shift.clone(), [f]),
            device,
        ));
        Ok(enc)
    }
}

#[cfg(test)]
impl PixelEncoder {
    /// Every parameter's gradient in `grads`, flattened in `conv_net::ConvNet`'s order (the
    /// weights file's layout).
    pub(crate) fn param_grads(
        &self,
        grads: &burn::tensor::Gradients,
        shape: &EncoderShape,
    ) -> Vec<f32> {
        let mut out = Vec::new();
        for c in &self.convs {
            out.extend(tensor_values(
                c.weight.grad(grads).expect("conv weight grad"),
            ));
            let b = c.bias.as_ref().expect("conv bias");
            out.extend(tensor_values(b.grad(grads).expect("conv bias grad")));
        }
        let f = shape.features;
        let g = tensor_values(self.head.weight.grad(grads).expect("head grad"));
        let flat = g.len() / f;
        for o in 0..f {
            for i in 0..flat {
                out.push(g[i * f + o]);
            }
        }
        let hb = self.head.bias.as_ref().expect("head bias");
        out.extend(tensor_values(hb.grad(grads).expect("head bias grad")));
        out.extend(tensor_values(
            self.norm.gamma.grad(grads).expect("gain grad"),
        ));
        let beta = self.norm.beta.as_ref().expect("shift");
        out.extend(tensor_values(beta.grad(grads).expect("shift grad")));
        out
    }
}

/// `n` images (interleaved bytes, see the module docs) as a `[n, channels, height, width]`
/// tensor in [0, 1].
pub fn images_tensor(shape: &EncoderShape, images: &[u8], device: &Device) -> Tensor<4> {
    let (h, w, c) = (shape.height, shape.width, shape.channels);
    let per = h * w * c;
    let n = images.len() / per;
    let mut x = vec![0.0f32; n * per];
    for (img, out) in images.chunks_exact(per).zip(x.chunks_exact_mut(per)) {
        for (p, px) in img.chunks_exact(c).enumerate() {
            for (ch, &v) in px.iter().enumerate() {
                out[ch * h * w + p] = f32::from(v) * (1.0 / 255.0);
            }
        }
    }
    Tensor::<4>::from_data(TensorData::new(x, [n, c, h, w]), device)
}

/// DrQ's random shift: each image is padded by `pad` pixels that repeat its border, then
/// cropped back to its size at an offset drawn uniformly from `0..=2 * pad` on each axis.
/// `images` and `out` hold the same number of images of `shape`.
pub fn random_shift(
    shape: &EncoderShape,
    pad: usize,
    images: &[u8],
    out: &mut [u8],
    rng: &mut Rng,
) {
    let (h, w, c) = (shape.height, shape.width, shape.channels);
    let per = h * w * c;
    assert_eq!(images.len(), out.len(), "as many images out as in");
    for (img, dst) in images.chunks_exact(per).zip(out.chunks_exact_mut(per)) {
        let dy = (rng.next_u64() % (2 * pad as u64 + 1)) as isize - pad as isize;
        let dx = (rng.next_u64() % (2 * pad as u64 + 1)) as isize - pad as isize;
        for y in 0..h {
            let sy = (y as isize + dy).clamp(0, h as isize - 1) as usize;
            for x in 0..w {
                let sx = (x as isize + dx).clamp(0, w as isize - 1) as usize;
                dst[(y * w + x) * c..][..c].copy_from_slice(&img[(sy * w + sx) * c..][..c]);
            }
        }
    }
}

/// Settings of the encoder's training.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EncoderTrainConfig {
    /// Adam step size.
    pub lr: f64,
    /// Random-shift padding, pixels (DrQ: 4 at 84x84); 0 turns the augmentation off.
    pub shift_pad: usize,
    /// Seed of burn's initial weights.
    pub seed: u64,
}

impl Default for EncoderTrainConfig {
    fn default() -> Self {
        Self {
            lr: 3e-4,
            shift_pad: 4,
            seed: 0,
        }
    }
}

/// Features computed with their autodiff graph kept, for [`EncoderTrainer::apply`].
pub struct Encoded {
    tensor: Tensor<2>,
    /// Row-major `[n, features]`, for the critic's kernels.
    pub values: Vec<f32>,
}

/// The encoder with its optimiser.
pub struct EncoderTrainer {
    shape: EncoderShape,
    model: PixelEncoder,
    opt: ModuleOptimizer,
    device: Device,
    cfg: EncoderTrainConfig,
}

impl EncoderTrainer {
    /// A fresh encoder of `shape`, seeded from `cfg.seed`.
    pub fn new(shape: &EncoderShape, cfg: EncoderTrainConfig) -> Result<Self, String> {
        Self::new_on(shape, cfg, Device::flex().autodiff())
    }

    /// A fresh encoder of `shape` on `device` (an autodiff device, e.g. a
    /// [`crate::burn_device::BurnDevice`]'s), seeded from `cfg.seed`.
    pub fn new_on(
        shape: &EncoderShape,
        cfg: EncoderTrainConfig,
        device: Device,
    ) -> Result<Self, String> {
        device.seed(cfg.seed);
        let model = PixelEncoder::new(shape, &device)?;
        Ok(Self::with_model(shape, model, device, cfg))
    }

    /// A trainer that continues from `params` (a checkpoint's or a policy file's encoder).
    pub fn from_params(params: &EncoderParams, cfg: EncoderTrainConfig) -> Result<Self, String> {
        Self::from_params_on(params, cfg, Device::flex().autodiff())
    }

    /// [`EncoderTrainer::from_params`] on `device` (an autodiff device).
    pub fn from_params_on(
        params: &EncoderParams,
        cfg: EncoderTrainConfig,
        device: Device,
    ) -> Result<Self, String> {
        let model = PixelEncoder::from_params(params, &device)?;
        Ok(Self::with_model(&params.shape, model, device, cfg))
    }

    fn with_model(
        shape: &EncoderShape,
        model: PixelEncoder,
        device: Device,
        cfg: EncoderTrainConfig,
    ) -> Self {
        Self {
            shape: shape.clone(),
            model,
            opt: AdamConfig::new().init(),
            device,
            cfg,
        }
    }

    /// The shape.
    pub fn shape(&self) -> &EncoderShape {
        &self.shape
    }

    /// The settings.
    pub fn config(&self) -> &EncoderTrainConfig {
        &self.cfg
    }

    /// Features of `images` with the graph kept for [`EncoderTrainer::apply`].
    pub fn encode(&self, images: &[u8]) -> Encoded {
        let tensor = self
            .model
            .forward(images_tensor(&self.shape, images, &self.device));
        let values = tensor_values(tensor.clone());
        Encoded { tensor, values }
    }

    /// Features of `images` for reading only (an actor's input, a target's).
    pub fn features(&self, images: &[u8]) -> Vec<f32> {
        tensor_values(
            self.model
                .forward(images_tensor(&self.shape, images, &self.device))
                .detach(),
        )
    }

    /// Carries `d_features` (the gradient of a loss with respect to `encoded.values`, as a
    /// critic's backward pass gives it) through the encoder and takes one Adam step.
    pub fn apply(&mut self, encoded: Encoded, d_features: &[f32]) {
        let dims = encoded.tensor.dims();
        assert_eq!(
            d_features.len(),
            dims[0] * dims[1],
            "d_features is not n x features"
        );
        let d = Tensor::<2>::from_data(TensorData::new(d_features.to_vec(), dims), &self.device);
        // d(sum(f * d)) / df = d: the surrogate's gradient is exactly the critic's.
        let surrogate = (encoded.tensor * d).sum();
        let grads = GradientsParams::from_grads(surrogate.backward(), &self.model);
        let model = self.model.clone();
        self.model = self.opt.step(self.cfg.lr, model, grads);
    }

    /// The weights in the tick's layout.
    pub fn params(&self) -> EncoderParams {
        self.model.to_params(&self.shape)
    }

    /// The burn module (for tests and checkpoints).
    pub fn model(&self) -> &PixelEncoder {
        &self.model
    }
}

/// Scenes and shapes the pixel tests share.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;
    use reflex_policy::ConvShape;

    /// A small encoder for tests: two 3x3 convolutions of stride 2 (8 channels), 16 features.
    pub(crate) fn small_shape(side: usize, cameras: usize) -> EncoderShape {
        let conv = |channels| ConvShape {
            channels,
            kernel: 3,
            stride: 2,
            padding: 1,
        };
        EncoderShape {
            height: side,
            width: side,
            channels: 3 * cameras,
            convs: vec![conv(8), conv(8)],
            features: 16,
        }
    }

    /// Paints one RGB image of `side` pixels: a dark background and a bright 5x5 square on the
    /// left or the right, at a random height. Returns true for the right.
    pub(crate) fn square_scene(rng: &mut Rng, img: &mut [u8], side: usize) -> bool {
        img.fill(30);
        let right = rng.next_u64() % 2 == 1;
        let x0 = if right { side - 7 } else { 2 };
        let y0 = 2 + (rng.next_u64() % (side as u64 - 9)) as usize;
        for y in y0..y0 + 5 {
            for x in x0..x0 + 5 {
                img[(y * side + x) * 3..][..3].fill(220);
            }
        }
        right
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reflex_policy::{ConvEncoder, ConvShape};

    use super::fixtures::small_shape as shape;

    fn images(shape: &EncoderShape, n: usize, seed: u64) -> Vec<u8> {
        let mut rng = Rng::new(seed);
        (0..n * shape.input_len())
            .map(|_| (rng.next_u64() % 256) as u8)
            .collect()
    }

    #[test]
    fn the_tick_computes_what_burn_computes() {
        let s = EncoderShape::small(32, 2);
        let device = Device::flex().autodiff();
        device.seed(4);
        let enc = PixelEncoder::new(&s, &device).unwrap();
        let imgs = images(&s, 3, 9);
        let want = tensor_values(enc.forward(images_tensor(&s, &imgs, &device)));
        let mut tick = ConvEncoder::new(enc.to_params(&s)).unwrap();
        let mut got = vec![0.0; s.features];
        for (k, img) in imgs.chunks_exact(s.input_len()).enumerate() {
            tick.forward(img, &mut got).unwrap();
            for (g, w) in got.iter().zip(&want[k * s.features..]) {
                assert!((g - w).abs() < 1e-4, "image {k}: {g} vs {w}");
            }
        }
        // And back: importing the exported weights gives the same network.
        let again = PixelEncoder::from_params(&enc.to_params(&s), &device).unwrap();
        assert_eq!(again.to_params(&s), enc.to_params(&s));
    }

    /// The GPU path (built with `gpu`; CI runs it on Mesa's lavapipe, a software Vulkan
    /// driver) computes the same features and takes the same Adam step as burn's CPU backend.
    #[cfg(feature = "gpu")]
    #[test]
    fn the_gpu_device_encodes_and_steps_as_the_cpu_does() {
        let s = shape(16, 2);
        let cfg = EncoderTrainConfig {
            seed: 3,
            ..EncoderTrainConfig::default()
        };
        let mut cpu = EncoderTrainer::new(&s, cfg.clone()).unwrap();
        let gpu_device = crate::burn_device::BurnDevice::Gpu
            .open()
            .unwrap_or_else(|e| panic!("the gpu feature is built but {e}"));
        let before = cpu.params();
        let mut gpu = EncoderTrainer::from_params_on(&before, cfg, gpu_device.device).unwrap();
        let imgs = images(&s, 6, 5);
        let close = |a: &[f32], b: &[f32], tol: f32, what: &str| {
            assert_eq!(a.len(), b.len(), "{what}");
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                assert!((x - y).abs() <= tol, "{what}[{i}]: cpu {x} vs gpu {y}");
            }
        };
        close(&cpu.features(&imgs), &gpu.features(&imgs), 1e-4, "features");
        let d: Vec<f32> = (0..6 * s.features)
            .map(|i| ((i % 9) as f32 - 4.0) * 0.05)
            .collect();
        let e = cpu.encode(&imgs);
        cpu.apply(e, &d);
        let e = gpu.encode(&imgs);
        gpu.apply(e, &d);
        let (c, g) = (cpu.params(), gpu.params());
        close(&c.head_weight, &g.head_weight, 1e-5, "head after a step");
        close(&c.convs[0].0, &g.convs[0].0, 1e-5, "conv 0 after a step");
        // The step moved the weights (an Adam step moves each by about the learning rate).
        let moved = c
            .head_weight
            .iter()
            .zip(&before.head_weight)
            .filter(|(a, b)| (*a - *b).abs() > 1e-4)
            .count();
        assert!(
            moved > c.head_weight.len() / 2,
            "the step moved {moved} weights"
        );
    }

    #[test]
    fn the_surrogate_carries_the_critics_gradient_exactly() {
        // The loss 0.5 * |F M - t|^2 computed by burn end to end, against the same loss whose
        // gradient with respect to the features F is computed outside burn and handed to the
        // surrogate: the encoder's parameter gradients must agree.
        let s = shape(16, 1);
        let device = Device::flex().autodiff();
        device.seed(1);
        let enc = PixelEncoder::new(&s, &device).unwrap();
        let n = 4;
        let imgs = images(&s, n, 2);
        let f = s.features;
        let m: Vec<f32> = (0..f * 2)
            .map(|i| ((i * 7 % 11) as f32 - 5.0) * 0.1)
            .collect();
        let t = [0.3f32, -0.2];

        let feats = enc.forward(images_tensor(&s, &imgs, &device));
        let mt = Tensor::<2>::from_data(TensorData::new(m.clone(), [f, 2]), &device);
        let tt = Tensor::<2>::from_data(TensorData::new(t.repeat(n), [n, 2]), &device);
        let loss = (feats.matmul(mt) - tt).powi_scalar(2).sum() * 0.5;
        let grads = loss.backward();
        let want = enc.convs[0].weight.grad(&grads).map(tensor_values).unwrap();
        let want_head = enc.head.weight.grad(&grads).map(tensor_values).unwrap();

        let feats = enc.forward(images_tensor(&s, &imgs, &device));
        let fv = tensor_values(feats.clone());
        let mut d = vec![0.0f32; n * f];
        for r in 0..n {
            for o in 0..2 {
                let y: f32 = (0..f).map(|k| fv[r * f + k] * m[k * 2 + o]).sum::<f32>() - t[o];
                for k in 0..f {
                    d[r * f + k] += y * m[k * 2 + o];
                }
            }
        }
        let dt = Tensor::<2>::from_data(TensorData::new(d, [n, f]), &device);
        let grads = (feats * dt).sum().backward();
        let got = enc.convs[0].weight.grad(&grads).map(tensor_values).unwrap();
        let got_head = enc.head.weight.grad(&grads).map(tensor_values).unwrap();
        for (a, b) in got
            .iter()
            .chain(&got_head)
            .zip(want.iter().chain(&want_head))
        {
            assert!((a - b).abs() <= 1e-5 + 1e-3 * b.abs(), "{a} vs {b}");
        }
        assert!(
            want.iter().any(|v| v.abs() > 1e-6),
            "the test needs a gradient"
        );
    }

    #[test]
    fn the_encoder_learns_through_the_seam() {
        // Which half of the image holds a bright square: learnable only through the pixels.
        // The "critic" is a fixed linear read-out of feature 0; its gradient goes through
        // `apply`, and the read-out's error must fall.
        let s = shape(16, 1);
        let mut trainer = EncoderTrainer::new(
            &s,
            EncoderTrainConfig {
                lr: 3e-3,
                shift_pad: 0,
                seed: 3,
            },
        )
        .unwrap();
        let mut rng = Rng::new(5);
        let batch = 16;
        let make = |rng: &mut Rng| {
            let mut imgs = vec![20u8; batch * s.input_len()];
            let mut target = vec![0.0f32; batch];
            for (k, img) in imgs.chunks_exact_mut(s.input_len()).enumerate() {
                let right = rng.next_u64() % 2 == 1;
                target[k] = if right { 0.8 } else { -0.8 };
                let x0 = if right { 10 } else { 2 };
                let y0 = (rng.next_u64() % 10) as usize + 2;
                for y in y0..y0 + 4 {
                    for x in x0..x0 + 4 {
                        img[(y * 16 + x) * 3..][..3].fill(230);
                    }
                }
            }
            (imgs, target)
        };
        let loss = |feats: &[f32], target: &[f32]| -> f32 {
            target
                .iter()
                .enumerate()
                .map(|(k, t)| (feats[k * s.features] - t).powi(2))
                .sum::<f32>()
                / target.len() as f32
        };
        let (held_imgs, held_t) = make(&mut Rng::new(99));
        let before = loss(&trainer.features(&held_imgs), &held_t);
        for _ in 0..150 {
            let (imgs, t) = make(&mut rng);
            let enc = trainer.encode(&imgs);
            let mut d = vec![0.0; enc.values.len()];
            for k in 0..batch {
                d[k * s.features] = 2.0 * (enc.values[k * s.features] - t[k]) / batch as f32;
            }
            trainer.apply(enc, &d);
        }
        let after = loss(&trainer.features(&held_imgs), &held_t);
        assert!(after < 0.2 * before && after < 0.1, "{before} -> {after}");
        // The trained weights still run in the tick.
        let mut tick = ConvEncoder::new(trainer.params()).unwrap();
        let mut out = vec![0.0; s.features];
        tick.forward(&held_imgs[..s.input_len()], &mut out).unwrap();
        let burn = trainer.features(&held_imgs[..s.input_len()]);
        for (a, b) in out.iter().zip(&burn) {
            assert!((a - b).abs() < 1e-4);
        }
    }

    #[test]
    fn a_random_shift_moves_the_image_and_repeats_its_border() {
        let s = EncoderShape {
            height: 6,
            width: 5,
            channels: 2,
            convs: vec![ConvShape {
                channels: 1,
                kernel: 1,
                stride: 1,
                padding: 0,
            }],
            features: 1,
        };
        let n = 64;
        let imgs: Vec<u8> = (0..n * s.input_len()).map(|i| (i % 251) as u8).collect();
        let mut out = vec![0u8; imgs.len()];
        random_shift(&s, 2, &imgs, &mut out, &mut Rng::new(1));
        let mut offsets = std::collections::HashSet::new();
        for (img, o) in imgs
            .chunks_exact(s.input_len())
            .zip(out.chunks_exact(s.input_len()))
        {
            // Find the offset that explains every pixel.
            let found = (-2isize..=2)
                .flat_map(|dy| (-2isize..=2).map(move |dx| (dy, dx)))
                .find(|&(dy, dx)| {
                    (0..6).all(|y| {
                        (0..5).all(|x| {
                            let sy = (y as isize + dy).clamp(0, 5) as usize;
                            let sx = (x as isize + dx).clamp(0, 4) as usize;
                            o[(y * 5 + x) * 2..][..2] == img[(sy * 5 + sx) * 2..][..2]
                        })
                    })
                });
            offsets.insert(found.expect("every output is a shifted input"));
        }
        // 64 draws over 25 offsets: most of them appear, so the shift is random.
        assert!(offsets.len() >= 15, "{offsets:?}");
        // Padding 0 is the identity.
        random_shift(&s, 0, &imgs, &mut out, &mut Rng::new(1));
        assert_eq!(out, imgs);
    }
}
