//! SAC from pixels: the agent of [`crate::sac`] behind the image encoder of
//! [`crate::conv_net`], as DrQ and SERL train it.
//!
//! Each update:
//! 1. shifts every image of the batch at random ([`crate::pixels::random_shift`]; the next
//!    images get their own shifts);
//! 2. encodes the images with the encoder and the next images with its Polyak-averaged target;
//! 3. runs the ordinary SAC update on `[features | proprioception]` observations and takes the
//!    gradient of the critics' loss with respect to the features
//!    ([`Agent::update_with_obs_grad`]);
//! 4. steps the encoder on that gradient alone, and moves its target towards it.
//!
//! The actor reads the same features detached: its loss never reaches the encoder. Nothing
//! here knows where the images come from; a rendered simulator frame and a real camera's are
//! the same bytes.

use crate::conv_net::{ConvNet, ConvTape};
use crate::nn::Adam;
use crate::pixels::random_shift;
use crate::replay::Batch;
use crate::rng::Rng;
use crate::sac::{Agent, AgentConfig, UpdateStats};
use reflex_policy::{EncoderParams, EncoderShape};

/// Settings of the encoder beside the agent's.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PixelConfig {
    /// Adam step size of the encoder.
    pub encoder_lr: f32,
    /// Polyak rate of the target encoder.
    pub encoder_tau: f32,
    /// Random-shift padding, pixels; 0 turns the augmentation off.
    pub shift_pad: usize,
}

impl Default for PixelConfig {
    fn default() -> Self {
        Self {
            encoder_lr: 3e-4,
            encoder_tau: 0.05,
            shift_pad: 4,
        }
    }
}

/// One batch of image transitions. Images are interleaved bytes of the encoder's shape, one
/// after another; `proprio` rows are what the arm knows of itself (joints, tool, gripper).
pub struct PixelBatch<'a> {
    /// Rows.
    pub size: usize,
    /// `size` images.
    pub images: &'a [u8],
    /// `size x proprio_dim`.
    pub proprio: &'a [f32],
    /// `size x act_dim`, in [-1, 1].
    pub act: &'a [f32],
    /// n-step discounted reward sums.
    pub reward: &'a [f32],
    /// Discount of the bootstrap value (0 after a terminal state).
    pub discount: &'a [f32],
    /// `size` images, `k` steps later.
    pub next_images: &'a [u8],
    /// `size x proprio_dim`, `k` steps later.
    pub next_proprio: &'a [f32],
    /// Rows `0..demo_rows` are demonstrations.
    pub demo_rows: usize,
}

/// The agent with its encoder, target encoder and their working memory.
pub struct PixelAgent {
    agent: Agent,
    encoder: ConvNet,
    target: ConvNet,
    adam: Adam,
    cfg: PixelConfig,
    proprio_dim: usize,
    rng: Rng,
    shifted: Vec<u8>,
    shifted_next: Vec<u8>,
    tape: ConvTape,
    target_tape: ConvTape,
    batch: Batch,
    d_obs: Vec<f32>,
    d_features: Vec<f32>,
    grads: Vec<f32>,
}

impl PixelAgent {
    /// An agent whose observation is the encoder's features followed by `proprio_dim` values;
    /// the encoder starts from `encoder` (fresh weights from `pixels::PixelEncoder`, or a
    /// checkpoint's).
    pub fn new(
        agent_cfg: AgentConfig,
        pixel_cfg: PixelConfig,
        encoder: &EncoderParams,
        proprio_dim: usize,
        act_dim: usize,
        seed: u64,
    ) -> Result<Self, String> {
        let net = ConvNet::from_params(encoder)?;
        let obs_dim = encoder.shape.features + proprio_dim;
        let agent = Agent::new(agent_cfg, obs_dim, act_dim, seed);
        Ok(Self {
            adam: Adam::new(net.num_params(), pixel_cfg.encoder_lr),
            grads: vec![0.0; net.num_params()],
            target: net.clone(),
            encoder: net,
            agent,
            cfg: pixel_cfg,
            proprio_dim,
            rng: Rng::new(seed ^ 0xD5_0A11),
            shifted: Vec::new(),
            shifted_next: Vec::new(),
            tape: ConvTape::default(),
            target_tape: ConvTape::default(),
            batch: Batch::new(0, obs_dim, act_dim),
            d_obs: Vec::new(),
            d_features: Vec::new(),
        })
    }

    /// Makes this a residual agent ([`Agent::with_residual`]): the proprioception's last
    /// `act_dim` values are the base action, and the actor's output `r` is executed as
    /// `clip(b + scale * r, -1, 1)`.
    pub fn with_residual(mut self, scale: f32) -> Self {
        self.agent = self.agent.with_residual(scale);
        self
    }

    /// Fits the agent's input normalisation on `proprio` rows: the features (bounded by their
    /// tanh) pass unchanged, the proprioception is standardised (deviations below `min_std`
    /// count as `min_std`).
    pub fn fit_proprio_normaliser(&mut self, proprio: &[f32], min_std: f32) {
        let f = self.encoder.shape().features;
        let fitted = crate::nn::Normaliser::fit(proprio, self.proprio_dim, min_std);
        let mut norm = crate::nn::Normaliser::identity(f + self.proprio_dim);
        norm.mean[f..].copy_from_slice(&fitted.mean);
        norm.inv_std[f..].copy_from_slice(&fitted.inv_std);
        self.agent.set_normaliser(norm);
    }

    /// Everything needed to continue training: the SAC agent's checkpoint
    /// ([`Agent::to_checkpoint`]) with the encoder, its target, the encoder's Adam moments and
    /// the random shifts' state (metadata `encoder`).
    pub fn to_checkpoint(&self) -> crate::store::Checkpoint {
        let (mut tensors, mut meta) = self.agent.to_checkpoint();
        for (name, v) in [
            ("encoder.params", &self.encoder.params),
            ("encoder.target", &self.target.params),
            ("encoder.adam.m", &self.adam.m),
            ("encoder.adam.v", &self.adam.v),
        ] {
            tensors.push((name.to_owned(), v.clone()));
        }
        meta["encoder"] = serde_json::json!({
            "shape": self.encoder.shape(),
            "pixel": self.cfg,
            "proprio_dim": self.proprio_dim,
            "adam_t": self.adam.t,
            "rng": self.rng.state().to_string(),
        });
        crate::store::Checkpoint { tensors, meta }
    }

    /// Restores what [`PixelAgent::to_checkpoint`] saved into an agent built with the same
    /// configuration, encoder shape and widths; the message names what does not fit.
    pub fn restore(&mut self, c: &crate::store::Checkpoint) -> Result<(), String> {
        let e = &c.meta["encoder"];
        let shape: EncoderShape = serde_json::from_value(e["shape"].clone())
            .map_err(|err| format!("metadata `encoder.shape`: {err}"))?;
        if &shape != self.encoder.shape() {
            return Err(format!(
                "the checkpoint's encoder is {shape:?}, this run's is {:?}",
                self.encoder.shape()
            ));
        }
        let pixel: PixelConfig = serde_json::from_value(e["pixel"].clone())
            .map_err(|err| format!("metadata `encoder.pixel`: {err}"))?;
        if pixel != self.cfg || e["proprio_dim"] != self.proprio_dim {
            return Err(
                "the checkpoint was trained with other pixel settings or proprioception".into(),
            );
        }
        self.agent.restore(c)?;
        for (name, into) in [
            ("encoder.params", &mut self.encoder.params),
            ("encoder.target", &mut self.target.params),
            ("encoder.adam.m", &mut self.adam.m),
            ("encoder.adam.v", &mut self.adam.v),
        ] {
            c.copy_into(name, into)?;
        }
        self.adam.t = e["adam_t"]
            .as_u64()
            .ok_or("metadata `encoder.adam_t` is missing")?;
        let rng: u64 = e["rng"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .ok_or("metadata `encoder.rng` is missing")?;
        self.rng = Rng::from_state(rng);
        Ok(())
    }

    /// The encoder, as the tick runs it.
    pub fn tick_encoder(&self) -> Result<reflex_policy::ConvEncoder, String> {
        reflex_policy::ConvEncoder::new(self.encoder.to_params())
    }

    /// The SAC agent (its actor reads `[features | proprioception]`).
    pub fn agent(&self) -> &Agent {
        &self.agent
    }

    /// The encoder's weights, in the tick's layout.
    pub fn encoder_params(&self) -> EncoderParams {
        self.encoder.to_params()
    }

    /// The encoder's shape.
    pub fn shape(&self) -> &EncoderShape {
        self.encoder.shape()
    }

    /// One update on `b` (see the module docs).
    pub fn update(&mut self, b: &PixelBatch) -> UpdateStats {
        self.update_with(b, false)
    }

    /// [`Self::update`], with the actor held still when `actor_frozen` (the critics' warm-up).
    pub fn update_with(&mut self, b: &PixelBatch, actor_frozen: bool) -> UpdateStats {
        let n = b.size;
        let shape = self.encoder.shape().clone();
        let (f, p) = (shape.features, self.proprio_dim);
        let o = f + p;
        let per = shape.input_len();
        assert_eq!(b.images.len(), n * per, "images do not match the batch");
        assert_eq!(
            b.next_images.len(),
            n * per,
            "next images do not match the batch"
        );
        assert_eq!(
            b.proprio.len(),
            n * p,
            "proprioception does not match the batch"
        );
        assert_eq!(
            b.next_proprio.len(),
            n * p,
            "next proprioception does not match"
        );

        self.shifted.resize(n * per, 0);
        self.shifted_next.resize(n * per, 0);
        let pad = self.cfg.shift_pad;
        random_shift(&shape, pad, b.images, &mut self.shifted, &mut self.rng);
        random_shift(
            &shape,
            pad,
            b.next_images,
            &mut self.shifted_next,
            &mut self.rng,
        );
        self.encoder.forward(&self.shifted, &mut self.tape);
        self.target
            .forward(&self.shifted_next, &mut self.target_tape);

        let batch = &mut self.batch;
        batch.size = n;
        batch.obs.resize(n * o, 0.0);
        batch.next_obs.resize(n * o, 0.0);
        for r in 0..n {
            batch.obs[r * o..r * o + f].copy_from_slice(&self.tape.features()[r * f..][..f]);
            batch.obs[r * o + f..(r + 1) * o].copy_from_slice(&b.proprio[r * p..][..p]);
            batch.next_obs[r * o..r * o + f]
                .copy_from_slice(&self.target_tape.features()[r * f..][..f]);
            batch.next_obs[r * o + f..(r + 1) * o].copy_from_slice(&b.next_proprio[r * p..][..p]);
        }
        batch.act.clear();
        batch.act.extend_from_slice(b.act);
        batch.reward.clear();
        batch.reward.extend_from_slice(b.reward);
        batch.discount.clear();
        batch.discount.extend_from_slice(b.discount);
        batch.demo_rows = b.demo_rows;

        self.d_obs.resize(n * o, 0.0);
        let stats =
            self.agent
                .update_with_obs_grad(&self.batch, actor_frozen, Some(&mut self.d_obs));
        self.d_features.resize(n * f, 0.0);
        for r in 0..n {
            self.d_features[r * f..(r + 1) * f].copy_from_slice(&self.d_obs[r * o..r * o + f]);
        }
        self.encoder
            .backward(&self.tape, &self.d_features, &mut self.grads);
        self.adam.step(&mut self.encoder.params, &self.grads);
        let tau = self.cfg.encoder_tau;
        for (t, s) in self.target.params.iter_mut().zip(&self.encoder.params) {
            *t += tau * (s - *t);
        }
        stats
    }

    /// Deterministic actions for `images` and `proprio` (`n` rows), through the current
    /// encoder (no shift), into `out` (`n x act_dim`).
    pub fn act(&mut self, images: &[u8], proprio: &[f32], n: usize, out: &mut [f32]) {
        let f = self.encoder.shape().features;
        let p = self.proprio_dim;
        let mut tape = ConvTape::default();
        self.encoder.forward(images, &mut tape);
        let mut obs = vec![0.0f32; n * (f + p)];
        for r in 0..n {
            obs[r * (f + p)..r * (f + p) + f].copy_from_slice(&tape.features()[r * f..][..f]);
            obs[r * (f + p) + f..(r + 1) * (f + p)].copy_from_slice(&proprio[r * p..][..p]);
        }
        self.agent.act(&obs, n, false, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pixels::fixtures::{small_shape, square_scene};
    use crate::pixels::PixelEncoder;
    use burn::tensor::Device;

    /// A one-step task seen only through pixels: a bright square on the left asks for action
    /// -0.7, on the right for +0.7. The reward is `-(a - want)^2`; no proprioception helps.
    fn scene(rng: &mut Rng, shape: &EncoderShape, images: &mut [u8], want: &mut [f32]) {
        for (img, w) in images
            .chunks_exact_mut(shape.input_len())
            .zip(want.iter_mut())
        {
            let right = square_scene(rng, img, shape.height);
            *w = if right { 0.7 } else { -0.7 };
        }
    }

    /// The whole update end to end: shifted images, encoder and target encoder, SAC on the
    /// features, the encoder stepped on the critics' gradient, acting through the encoder.
    /// This task is simple enough that the encoder's random initial features already separate
    /// it (with the encoder frozen the actor also learns it); that the encoder receives the
    /// right gradient is proven by `sac`'s observation-gradient test and `conv_net`'s test
    /// against burn, and here only that its weights move.
    #[test]
    fn sac_learns_a_task_seen_only_through_pixels() {
        let shape = small_shape(20, 1);
        let device = Device::flex().autodiff();
        device.seed(11);
        let params = PixelEncoder::new(&shape, &device)
            .unwrap()
            .to_params(&shape);
        let cfg = AgentConfig {
            hidden: vec![64, 64],
            actor_lr: 1e-3,
            critic_lr: 1e-3,
            ..AgentConfig::default()
        };
        let pixel = PixelConfig {
            encoder_lr: 1e-3,
            shift_pad: 1,
            ..PixelConfig::default()
        };
        let mut agent = PixelAgent::new(cfg, pixel, &params, 1, 1, 4).unwrap();
        let before = agent.encoder_params();

        let n = 64;
        let mut rng = Rng::new(2);
        let mut images = vec![0u8; n * shape.input_len()];
        let mut want = vec![0.0f32; n];
        let proprio = vec![0.5f32; n];
        let discount = vec![0.0f32; n];
        let mut act = vec![0.0f32; n];
        let mut reward = vec![0.0f32; n];
        for _ in 0..400 {
            scene(&mut rng, &shape, &mut images, &mut want);
            for (a, r) in act.iter_mut().zip(&mut reward) {
                *a = (rng.unit() as f32) * 2.0 - 1.0;
                *r = 0.0;
            }
            for ((r, a), w) in reward.iter_mut().zip(&act).zip(&want) {
                *r = -(a - w) * (a - w);
            }
            agent.update(&PixelBatch {
                size: n,
                images: &images,
                proprio: &proprio,
                act: &act,
                reward: &reward,
                discount: &discount,
                next_images: &images,
                next_proprio: &proprio,
                demo_rows: 0,
            });
        }
        // Fresh scenes: the actor must answer with the right side.
        let mut held = Rng::new(77);
        scene(&mut held, &shape, &mut images, &mut want);
        let mut out = vec![0.0f32; n];
        agent.act(&images, &proprio, n, &mut out);
        let right = out
            .iter()
            .zip(&want)
            .filter(|(a, w)| a.signum() == w.signum() && (**a - **w).abs() < 0.4)
            .count();
        assert!(right >= 58, "{right} of {n} right: {out:?}");
        // The encoder learned (from the critic's gradient alone).
        assert_ne!(agent.encoder_params(), before);
    }

    /// A restored checkpoint continues exactly: after the same next update, the restored agent
    /// and the original have the same encoder and act alike. Another encoder shape is refused.
    #[test]
    fn a_restored_checkpoint_continues_exactly() {
        let shape = small_shape(12, 1);
        let device = Device::flex().autodiff();
        device.seed(5);
        let params = PixelEncoder::new(&shape, &device)
            .unwrap()
            .to_params(&shape);
        let cfg = AgentConfig {
            hidden: vec![16, 16],
            ..AgentConfig::default()
        };
        let make = || PixelAgent::new(cfg.clone(), PixelConfig::default(), &params, 2, 1, 9);
        let n = 8;
        let mut rng = Rng::new(4);
        let mut images = vec![0u8; n * shape.input_len()];
        let mut want = vec![0.0f32; n];
        let proprio: Vec<f32> = (0..2 * n).map(|i| i as f32 * 0.1).collect();
        let zeros = vec![0.0f32; n];
        let step = |agent: &mut PixelAgent, images: &[u8], want: &[f32]| {
            agent.update(&PixelBatch {
                size: n,
                images,
                proprio: &proprio,
                act: want,
                reward: want,
                discount: &zeros,
                next_images: images,
                next_proprio: &proprio,
                demo_rows: 0,
            });
        };
        let mut a = make().unwrap();
        a.fit_proprio_normaliser(&proprio, 1e-3);
        for _ in 0..3 {
            scene(&mut rng, &shape, &mut images, &mut want);
            step(&mut a, &images, &want);
        }
        let ckpt = a.to_checkpoint();
        let mut b = make().unwrap();
        b.restore(&ckpt).unwrap();
        scene(&mut rng, &shape, &mut images, &mut want);
        step(&mut a, &images, &want);
        step(&mut b, &images, &want);
        assert_eq!(a.encoder_params(), b.encoder_params());
        let (mut out_a, mut out_b) = (vec![0.0; n], vec![0.0; n]);
        a.act(&images, &proprio, n, &mut out_a);
        b.act(&images, &proprio, n, &mut out_b);
        assert_eq!(out_a, out_b);

        let other = small_shape(16, 1);
        device.seed(5);
        let p2 = PixelEncoder::new(&other, &device)
            .unwrap()
            .to_params(&other);
        let mut c = PixelAgent::new(cfg.clone(), PixelConfig::default(), &p2, 2, 1, 9).unwrap();
        let err = c.restore(&ckpt).unwrap_err();
        assert!(err.contains("encoder"), "{err}");
    }
}
