//! Behaviour cloning of the base policy: an MLP regressed onto demonstrated actions through a
//! tanh output (mean squared error), trained with Adam on the same fused kernels as SAC.

use crate::nn::{Adam, Net, Normaliser, Tape, INPUT_MIN_STD};
use crate::rng::Rng;
use reflex_policy::{Activation, Mlp};
use serde::{Deserialize, Serialize};

/// Settings of behaviour cloning.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BcConfig {
    /// Hidden widths.
    pub hidden: Vec<usize>,
    /// LayerNorm after hidden layers.
    pub layer_norm: bool,
    /// Gradient steps (in a training run's configuration, 0: the task's default).
    pub steps: usize,
    /// Rows per step.
    pub batch_size: usize,
    /// Adam learning rate.
    pub lr: f32,
}

impl Default for BcConfig {
    fn default() -> Self {
        Self {
            hidden: vec![256, 256],
            layer_norm: true,
            steps: 2000,
            batch_size: 256,
            lr: 1e-3,
        }
    }
}

/// Fits `tanh(net(obs)) ~ act` on `n` pairs (`obs` is `n x obs_dim`, `act` is `n x act_dim`),
/// on inputs normalised by the data's own statistics, folded into the first layer on export.
/// Returns the network for the runtime (tanh output) and the final training loss.
pub fn behaviour_clone(
    obs: &[f32],
    act: &[f32],
    obs_dim: usize,
    act_dim: usize,
    cfg: &BcConfig,
    seed: u64,
) -> (Mlp, f32) {
    let n = obs.len() / obs_dim;
    assert!(n > 0, "behaviour cloning needs data");
    assert_eq!(act.len(), n * act_dim, "as many actions as observations");
    let mut rng = Rng::new(seed);
    let norm = Normaliser::fit(obs, obs_dim, INPUT_MIN_STD);
    let mut obs = obs.to_vec();
    norm.apply(&mut obs);
    let mut dims = vec![obs_dim];
    dims.extend(&cfg.hidden);
    dims.push(act_dim);
    let mut net = Net::new(&dims, cfg.layer_norm, &mut rng);
    let mut opt = Adam::new(net.num_params(), cfg.lr);
    let b = cfg.batch_size.min(n);
    let mut x = vec![0.0; b * obs_dim];
    let mut y = vec![0.0; b * act_dim];
    let mut d = vec![0.0; b * act_dim];
    let mut grads = vec![0.0; net.num_params()];
    let mut tape = Tape::default();
    let mut loss = f32::NAN;
    for _ in 0..cfg.steps {
        for r in 0..b {
            let i = (rng.next_u64() % n as u64) as usize;
            x[r * obs_dim..(r + 1) * obs_dim].copy_from_slice(&obs[i * obs_dim..(i + 1) * obs_dim]);
            y[r * act_dim..(r + 1) * act_dim].copy_from_slice(&act[i * act_dim..(i + 1) * act_dim]);
        }
        net.forward(&x, b, &mut tape);
        let mut l = 0.0;
        for ((dv, o), t) in d.iter_mut().zip(tape.output()).zip(&y) {
            let p = o.tanh();
            let e = p - t;
            l += e * e;
            *dv = 2.0 * e * (1.0 - p * p) / b as f32;
        }
        loss = l / b as f32;
        net.backward(&mut tape, &d, Some(&mut grads), None);
        opt.step(&mut net.params, &grads);
    }
    net.fold_input(&norm);
    (net.to_runtime(act_dim, Activation::Tanh), loss)
}

/// Demonstrations seen through cameras: `n` images (interleaved bytes of the encoder's shape,
/// one after another), `n x proprio_dim` proprioception and `n x act_dim` actions.
pub struct PixelDemos<'a> {
    /// The images.
    pub images: &'a [u8],
    /// What the arm knows of itself at each image.
    pub proprio: &'a [f32],
    /// The demonstrated actions, in [-1, 1].
    pub act: &'a [f32],
    /// Values per proprioception row.
    pub proprio_dim: usize,
    /// Values per action.
    pub act_dim: usize,
}

/// [`behaviour_clone`] for a policy that sees pixels: the encoder (starting from `encoder`) and
/// the MLP after it learn together on the same loss, each batch shifted at random by
/// `shift_pad` pixels (DrQ's augmentation, so a few demonstrations do not teach exact pixel
/// positions). The proprioception is normalised by the data's own statistics, folded into the
/// MLP's first layer on export; the features are not. Returns the runtime's network and the
/// final training loss.
pub fn behaviour_clone_pixels(
    demos: &PixelDemos,
    encoder: &reflex_policy::EncoderParams,
    shift_pad: usize,
    cfg: &BcConfig,
    seed: u64,
) -> Result<(reflex_policy::PixelNet, f32), String> {
    use crate::conv_net::{ConvNet, ConvTape};
    let mut enc = ConvNet::from_params(encoder)?;
    let shape = encoder.shape.clone();
    let (f, p, a) = (shape.features, demos.proprio_dim, demos.act_dim);
    let per = shape.input_len();
    let n = demos.images.len() / per;
    if n == 0 || demos.images.len() != n * per {
        return Err(format!(
            "behaviour cloning needs whole {}x{}x{} images, got {} bytes",
            shape.height,
            shape.width,
            shape.channels,
            demos.images.len()
        ));
    }
    if p == 0 || demos.proprio.len() != n * p || demos.act.len() != n * a {
        return Err(format!(
            "{n} images need {n} x {p} proprioception values (got {}) and {n} x {a} actions (got {})",
            demos.proprio.len(),
            demos.act.len()
        ));
    }
    let mut rng = Rng::new(seed);
    let proprio_norm = Normaliser::fit(demos.proprio, p, INPUT_MIN_STD);
    let mut proprio = demos.proprio.to_vec();
    proprio_norm.apply(&mut proprio);
    let o = f + p;
    let mut dims = vec![o];
    dims.extend(&cfg.hidden);
    dims.push(a);
    let mut net = Net::new(&dims, cfg.layer_norm, &mut rng);
    let mut opt = Adam::new(net.num_params(), cfg.lr);
    let mut enc_opt = Adam::new(enc.num_params(), cfg.lr);
    let b = cfg.batch_size.min(n);
    let mut raw = vec![0u8; b * per];
    let mut shifted = vec![0u8; b * per];
    let mut x = vec![0.0; b * o];
    let mut y = vec![0.0; b * a];
    let mut d = vec![0.0; b * a];
    let mut d_x = vec![0.0; b * o];
    let mut d_feat = vec![0.0; b * f];
    let mut grads = vec![0.0; net.num_params()];
    let mut enc_grads = vec![0.0; enc.num_params()];
    let mut tape = Tape::default();
    let mut enc_tape = ConvTape::default();
    let mut loss = f32::NAN;
    let mut picks = vec![0usize; b];
    for _ in 0..cfg.steps {
        for (r, pick) in picks.iter_mut().enumerate() {
            let i = (rng.next_u64() % n as u64) as usize;
            *pick = i;
            raw[r * per..(r + 1) * per].copy_from_slice(&demos.images[i * per..(i + 1) * per]);
            y[r * a..(r + 1) * a].copy_from_slice(&demos.act[i * a..(i + 1) * a]);
        }
        crate::pixels::random_shift(&shape, shift_pad, &raw, &mut shifted, &mut rng);
        enc.forward(&shifted, &mut enc_tape);
        for (r, &i) in picks.iter().enumerate() {
            x[r * o..r * o + f].copy_from_slice(&enc_tape.features()[r * f..(r + 1) * f]);
            x[r * o + f..(r + 1) * o].copy_from_slice(&proprio[i * p..(i + 1) * p]);
        }
        net.forward(&x, b, &mut tape);
        let mut l = 0.0;
        for ((dv, out), t) in d.iter_mut().zip(tape.output()).zip(&y) {
            let q = out.tanh();
            let e = q - t;
            l += e * e;
            *dv = 2.0 * e * (1.0 - q * q) / b as f32;
        }
        loss = l / b as f32;
        net.backward(&mut tape, &d, Some(&mut grads), Some(&mut d_x));
        opt.step(&mut net.params, &grads);
        for r in 0..b {
            d_feat[r * f..(r + 1) * f].copy_from_slice(&d_x[r * o..r * o + f]);
        }
        enc.backward(&enc_tape, &d_feat, &mut enc_grads);
        enc_opt.step(&mut enc.params, &enc_grads);
    }
    let mut norm = Normaliser::identity(o);
    norm.mean[f..].copy_from_slice(&proprio_norm.mean);
    norm.inv_std[f..].copy_from_slice(&proprio_norm.inv_std);
    net.fold_input(&norm);
    let encoder = reflex_policy::ConvEncoder::new(enc.to_params())?;
    let policy = reflex_policy::PixelNet::new(encoder, net.to_runtime(a, Activation::Tanh))?;
    Ok((policy, loss))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_a_policy_that_must_look_at_the_image() {
        // The first action is the side of a bright square (only the image shows it), the
        // second follows the proprioception. The deployed network (the tick's encoder and MLP)
        // must reproduce both on images it never saw.
        use crate::pixels::fixtures::{small_shape, square_scene};
        let side = 20;
        let shape = small_shape(side, 1);
        let make = |rng: &mut Rng, n: usize| {
            let mut images = vec![0u8; n * shape.input_len()];
            let mut proprio = vec![0.0f32; n];
            let mut act = vec![0.0f32; 2 * n];
            for (k, img) in images.chunks_exact_mut(shape.input_len()).enumerate() {
                let right = square_scene(rng, img, side);
                proprio[k] = rng.uniform(-1.0, 1.0) as f32 * 3.0 + 2.0;
                act[2 * k] = if right { 0.6 } else { -0.6 };
                act[2 * k + 1] = 0.5 * (proprio[k] - 2.0) / 3.0;
            }
            (images, proprio, act)
        };
        let mut rng = Rng::new(4);
        let (images, proprio, act) = make(&mut rng, 300);
        // Fresh encoder weights, drawn the way the trainer's burn twin draws them.
        let device = burn::tensor::Device::flex().autodiff();
        device.seed(2);
        let encoder = crate::pixels::PixelEncoder::new(&shape, &device)
            .unwrap()
            .to_params(&shape);
        let cfg = BcConfig {
            hidden: vec![64, 64],
            steps: 400,
            batch_size: 64,
            ..Default::default()
        };
        let demos = PixelDemos {
            images: &images,
            proprio: &proprio,
            act: &act,
            proprio_dim: 1,
            act_dim: 2,
        };
        let (mut policy, loss) = behaviour_clone_pixels(&demos, &encoder, 1, &cfg, 3).unwrap();
        assert!(loss < 0.02, "training loss {loss}");
        assert_ne!(policy.encoder().params(), &encoder, "the encoder learned");
        let (images, proprio, act) = make(&mut Rng::new(99), 50);
        let mut out = [0.0f32; 2];
        let mut worst = 0.0f32;
        for k in 0..50 {
            let img = &images[k * shape.input_len()..(k + 1) * shape.input_len()];
            policy.forward(img, &proprio[k..k + 1], &mut out).unwrap();
            worst = worst
                .max((out[0] - act[2 * k]).abs())
                .max((out[1] - act[2 * k + 1]).abs());
        }
        assert!(worst < 0.2, "largest error on unseen images {worst}");
        // Bad demonstrations are refused with the sizes.
        let bad = PixelDemos {
            images: &images[..10],
            ..demos
        };
        assert!(behaviour_clone_pixels(&bad, &encoder, 1, &cfg, 3)
            .unwrap_err()
            .contains("20x20x3"));
    }

    #[test]
    fn clones_a_smooth_policy() {
        let mut rng = Rng::new(2);
        let n = 2000;
        let obs: Vec<f32> = (0..n * 3).map(|_| rng.uniform(-1.0, 1.0) as f32).collect();
        let act: Vec<f32> = obs
            .chunks(3)
            .flat_map(|o| [(o[0] - 0.5 * o[1]).tanh() * 0.8, o[2] * 0.5])
            .collect();
        let cfg = BcConfig {
            hidden: vec![64, 64],
            steps: 1500,
            ..Default::default()
        };
        let (mut mlp, loss) = behaviour_clone(&obs, &act, 3, 2, &cfg, 1);
        assert!(loss < 2e-3, "training loss {loss}");
        let mut out = [0.0f32; 2];
        mlp.forward(&[0.3, -0.2, 0.6], &mut out).unwrap();
        assert!((out[0] - 0.4f32.tanh() * 0.8).abs() < 0.05, "{out:?}");
        assert!((out[1] - 0.3).abs() < 0.05, "{out:?}");
    }
}
