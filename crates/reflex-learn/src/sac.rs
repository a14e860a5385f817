//! Soft actor-critic (with automatic temperature) and its TD3 variant, on [`Net`]s.
//!
//! - Actor: `obs -> [mean; raw log std]` (2 x action outputs), actions `tanh(mean + std * e)`;
//!   the log standard deviation is squashed into a fixed range by
//!   `reflex_policy::squash_log_std`, the same function the runtime's exploring residual uses.
//! - Critics: an ensemble of `critics` networks on `[obs; action]`; the target is the minimum of
//!   a random subset of `target_subset` target critics (all of them when the ensemble has two),
//!   and the actor follows the ensemble mean.
//! - Target critics follow the critics by Polyak averaging (`tau`).
//! - TD3: deterministic `tanh(mean)`, clipped target-policy smoothing noise, delayed actor
//!   updates; the log-std outputs stay at their initial bias and only set exploration noise.
//!
//! - Residual agents ([`Agent::with_residual`]): the actor outputs a correction `r`, and the
//!   arm executes `a = clip(b + scale * r, -1, 1)`, where `b` is the base action carried in the
//!   last `act_dim` observation values. Batches carry the executed action `a` exactly, and the
//!   critics read it as `(a - b) / scale`: an exact encoding of what was executed (given `b`,
//!   which they also see) in the residual's units, so a demonstration or an operator takeover
//!   far from the base is learned as it was executed (values beyond 1 included), never clipped
//!   into an action nobody took, while the policy's own actions keep the scale the critics were
//!   tuned on. The actor's gradient reaches `r` straight through the clip (the critic's slope at
//!   the executed action), so a component held at its bound keeps a gradient.
//!
//! The critics of one update run in parallel on rayon's pool (one critic per core).

use crate::nn::{Adam, Net, Normaliser, Tape};
pub use crate::replay::Batch;
use crate::rng::Rng;
use rayon::prelude::*;
use reflex_policy::{squash_log_std, Activation, Mlp, LOG_STD_MAX, LOG_STD_MIN};
use serde::{Deserialize, Serialize};

/// Which algorithm updates the networks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Algo {
    /// Soft actor-critic with automatic temperature.
    Sac,
    /// Twin delayed DDPG.
    Td3,
}

/// Hyper-parameters of the agent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// `sac` or `td3`.
    pub algo: Algo,
    /// Hidden widths of actor and critics.
    pub hidden: Vec<usize>,
    /// LayerNorm after each hidden layer.
    pub layer_norm: bool,
    /// Critics in the ensemble (2..=10).
    pub critics: usize,
    /// Target critics whose minimum forms the target (2 <= subset <= critics).
    pub target_subset: usize,
    /// Discount per environment step.
    pub gamma: f32,
    /// Polyak rate of the target critics.
    pub tau: f32,
    /// Actor learning rate.
    pub actor_lr: f32,
    /// Critic learning rate.
    pub critic_lr: f32,
    /// Temperature learning rate.
    pub temperature_lr: f32,
    /// Initial SAC temperature.
    pub init_temperature: f32,
    /// Target entropy per action component (SAC); the total is this times the action size.
    pub target_entropy_per_dim: f32,
    /// Update the actor every this many critic updates (TD3: 2).
    pub actor_delay: u32,
    /// TD3 target smoothing noise (std, pre-clip) and its clip.
    pub td3_target_noise: f32,
    /// Clip of the TD3 target smoothing noise.
    pub td3_noise_clip: f32,
    /// Initial standard deviation of exploration (pre-tanh).
    pub init_std: f32,
    /// Include the entropy bonus in the critics' targets (textbook SAC). Off by default: the
    /// summed bonus over a horizon of 1 / (1 - gamma) steps can outweigh a task's reward and
    /// make the policy value noise over success; the actor still trades entropy per step.
    pub backup_entropy: bool,
    /// Start the actor's output layer at zero (a residual that starts exactly at the base).
    pub zero_init_actor: bool,
    /// Weight of an imitation term in the actor's loss on the batch's demonstration rows
    /// (scripted demonstrations and operator takeovers): the squared distance between the
    /// action the policy would execute and the one that was executed, scaled by the batch's
    /// mean |Q| so the weight means the same whatever the reward scale (TD3+BC's
    /// normalisation; 0.4 matches its alpha of 2.5). 0 (the default): pure RLPD. Teleop
    /// sessions set it so the policy takes up the operator's corrections fast; it may differ
    /// between a run and the session continuing it.
    pub bc_weight: f32,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            algo: Algo::Sac,
            hidden: vec![256, 256],
            layer_norm: true,
            critics: 2,
            target_subset: 2,
            gamma: 0.99,
            tau: 0.005,
            actor_lr: 1e-4,
            critic_lr: 3e-4,
            temperature_lr: 3e-4,
            init_temperature: 0.01,
            target_entropy_per_dim: -1.0,
            actor_delay: 1,
            td3_target_noise: 0.2,
            td3_noise_clip: 0.5,
            init_std: 0.3,
            backup_entropy: false,
            zero_init_actor: true,
            bc_weight: 0.0,
        }
    }
}

impl AgentConfig {
    /// Checks ranges; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        let bad = |field: &str, why: String| Err(format!("agent.{field}: {why}"));
        if !(2..=10).contains(&self.critics) {
            return bad("critics", format!("must be 2..=10, got {}", self.critics));
        }
        if self.target_subset < 2 || self.target_subset > self.critics {
            return bad(
                "target_subset",
                format!(
                    "must be 2..=critics ({}), got {}",
                    self.critics, self.target_subset
                ),
            );
        }
        if self.hidden.is_empty() || self.hidden.iter().any(|&h| h == 0 || h > 4096) {
            return bad(
                "hidden",
                format!("widths must be 1..=4096, got {:?}", self.hidden),
            );
        }
        if !(self.gamma > 0.0 && self.gamma <= 1.0) {
            return bad("gamma", format!("must be in (0, 1], got {}", self.gamma));
        }
        if !(self.tau > 0.0 && self.tau <= 1.0) {
            return bad("tau", format!("must be in (0, 1], got {}", self.tau));
        }
        for (f, v) in [
            ("actor_lr", self.actor_lr),
            ("critic_lr", self.critic_lr),
            ("temperature_lr", self.temperature_lr),
            ("init_temperature", self.init_temperature),
            ("init_std", self.init_std),
        ] {
            if !(v > 0.0 && v.is_finite()) {
                return bad(f, format!("must be positive, got {v}"));
            }
        }
        let lo = LOG_STD_MIN.exp();
        let hi = LOG_STD_MAX.exp();
        if !(self.init_std > lo * 1.01 && self.init_std < hi * 0.99) {
            return bad("init_std", format!("must lie inside ({lo:.4}, {hi:.3})"));
        }
        if self.actor_delay == 0 {
            return bad("actor_delay", "must be at least 1".into());
        }
        if !(self.bc_weight >= 0.0 && self.bc_weight.is_finite()) {
            return bad(
                "bc_weight",
                format!("must be 0 or positive, got {}", self.bc_weight),
            );
        }
        Ok(())
    }
}

/// What one update measured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct UpdateStats {
    /// Mean squared TD error, averaged over critics.
    pub critic_loss: f32,
    /// Mean of the first critic's Q on the batch.
    pub q_mean: f32,
    /// Actor loss (NaN when the actor did not update).
    pub actor_loss: f32,
    /// SAC temperature.
    pub temperature: f32,
    /// Mean `-log pi` of the actor's samples (SAC's entropy estimate; NaN when not updated).
    pub entropy: f32,
    /// The actor (and temperature) updated in this step.
    pub actor_updated: bool,
}

#[derive(Clone)]
struct CriticWork {
    tape: Tape,
    grads: Vec<f32>,
    d_out: Vec<f32>,
    d_input: Vec<f32>,
    q: Vec<f32>,
}

/// Version of what a checkpoint's critics mean: 2 = critics on executed actions.
const CHECKPOINT_FORMAT: u64 = 2;

/// Actor, critic ensemble, targets, optimisers and temperature.
#[derive(Clone)]
pub struct Agent {
    cfg: AgentConfig,
    obs_dim: usize,
    act_dim: usize,
    /// `Some(scale)` for a residual agent: the executed action is `clip(b + scale * r)`.
    residual_scale: Option<f32>,
    /// The critics' action input for the last sampled policy rows, and its derivative with
    /// respect to the policy's output.
    exec: Vec<f32>,
    exec_grad: Vec<f32>,
    /// The critics' action input for a batch's executed actions.
    act_in: Vec<f32>,
    /// The policy network.
    pub actor: Net,
    /// The critic ensemble.
    pub critics: Vec<Net>,
    /// Polyak-averaged copies of the critics.
    pub targets: Vec<Net>,
    /// Actor optimiser.
    pub actor_opt: Adam,
    /// One optimiser per critic.
    pub critic_opts: Vec<Adam>,
    /// log of the SAC temperature.
    pub log_alpha: f32,
    /// Temperature optimiser (one parameter).
    pub alpha_opt: Adam,
    /// Updates done.
    pub updates: u64,
    /// Noise for sampling.
    pub rng: Rng,
    /// Fixed input normalisation of observations (actor and critics); export folds it in.
    norm: Normaliser,
    /// Normalised copies of a batch's observations and next observations.
    norm_obs: Vec<f32>,
    norm_next: Vec<f32>,
    work: Vec<CriticWork>,
    /// The actor's batch runs as two halves on two cores: a tape and gradients per half.
    actor_tapes: [Tape; 2],
    actor_grads: [Vec<f32>; 2],
    actor_split: usize,
    actor_d_out: Vec<f32>,
    eps: Vec<f32>,
    pi: Vec<f32>,
    logp: Vec<f32>,
    sa: Vec<f32>,
    next_sa: Vec<f32>,
    target: Vec<f32>,
}

fn log_prob_correction(u: f32) -> f32 {
    // log(1 - tanh(u)^2), computed stably: 2 (ln 2 - u - softplus(-2u)).
    let x = -2.0 * u;
    let softplus = if x > 20.0 { x } else { x.exp().ln_1p() };
    2.0 * (std::f32::consts::LN_2 - u - softplus)
}

const HALF_LN_TAU: f32 = 0.918_938_5; // 0.5 ln(2 pi)

impl Agent {
    /// A new agent for observations of `obs_dim` and actions of `act_dim` components.
    pub fn new(cfg: AgentConfig, obs_dim: usize, act_dim: usize, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let mut dims = vec![obs_dim];
        dims.extend(&cfg.hidden);
        dims.push(2 * act_dim);
        let mut actor = Net::new(&dims, cfg.layer_norm, &mut rng);
        let raw_std = raw_for_std(cfg.init_std);
        if cfg.zero_init_actor {
            let mut bias = vec![0.0; 2 * act_dim];
            bias[act_dim..].fill(raw_std);
            actor.zero_output_layer(&bias);
        } else {
            // Random means; every log std starts at init_std.
            actor.set_output_columns(act_dim..2 * act_dim, raw_std);
        }
        let mut cdims = vec![obs_dim + act_dim];
        cdims.extend(&cfg.hidden);
        cdims.push(1);
        let critics: Vec<Net> = (0..cfg.critics)
            .map(|_| Net::new(&cdims, cfg.layer_norm, &mut rng))
            .collect();
        let targets = critics.clone();
        let actor_opt = Adam::new(actor.num_params(), cfg.actor_lr);
        let critic_opts = critics
            .iter()
            .map(|c| Adam::new(c.num_params(), cfg.critic_lr))
            .collect();
        let work = critics
            .iter()
            .map(|c| CriticWork {
                tape: Tape::default(),
                grads: vec![0.0; c.num_params()],
                d_out: Vec::new(),
                d_input: Vec::new(),
                q: Vec::new(),
            })
            .collect();
        let actor_grads = vec![0.0; actor.num_params()];
        Self {
            log_alpha: cfg.init_temperature.ln(),
            alpha_opt: Adam::new(1, cfg.temperature_lr),
            cfg,
            obs_dim,
            act_dim,
            residual_scale: None,
            exec: Vec::new(),
            exec_grad: Vec::new(),
            act_in: Vec::new(),
            actor,
            critics,
            targets,
            actor_opt,
            critic_opts,
            updates: 0,
            rng,
            norm: Normaliser::identity(obs_dim),
            norm_obs: Vec::new(),
            norm_next: Vec::new(),
            work,
            actor_tapes: [Tape::default(), Tape::default()],
            actor_grads: [actor_grads.clone(), actor_grads],
            actor_split: 0,
            actor_d_out: Vec::new(),
            eps: Vec::new(),
            pi: Vec::new(),
            logp: Vec::new(),
            sa: Vec::new(),
            next_sa: Vec::new(),
            target: Vec::new(),
        }
    }

    /// Makes this a residual agent: the actor's output `r` is executed as
    /// `clip(b + scale * r, -1, 1)` with the base action `b` in the last `act_dim` observation
    /// values, and batches carry executed actions.
    pub fn with_residual(mut self, scale: f32) -> Self {
        assert!(
            self.obs_dim >= self.act_dim,
            "a residual agent's observation carries the base action"
        );
        self.residual_scale = Some(scale);
        self
    }

    /// The residual scale of a residual agent.
    pub fn residual_scale(&self) -> Option<f32> {
        self.residual_scale
    }

    /// The configuration.
    pub fn config(&self) -> &AgentConfig {
        &self.cfg
    }

    /// Fills `self.exec` with the critics' input for the actions the arm executes for
    /// `self.pi` on rows of raw observations `raw_obs` (the base action is their last
    /// `act_dim` values): `(clip(b + scale * pi) - b) / scale` for a residual agent, `pi`
    /// otherwise; and `self.exec_grad` with the factor the actor's gradient takes through it
    /// (1: straight through the clip).
    fn compose_executed(&mut self, raw_obs: &[f32], n: usize) {
        let (a, o) = (self.act_dim, self.obs_dim);
        self.exec.resize(n * a, 0.0);
        self.exec_grad.resize(n * a, 0.0);
        match self.residual_scale {
            None => {
                self.exec.copy_from_slice(&self.pi[..n * a]);
                self.exec_grad.fill(1.0);
            }
            Some(scale) => {
                for r in 0..n {
                    for j in 0..a {
                        let b = raw_obs[r * o + o - a + j];
                        let x = b + scale * self.pi[r * a + j];
                        let k = r * a + j;
                        self.exec[k] = (x.clamp(-1.0, 1.0) - b) / scale;
                        // Straight through the clip: the critic is asked at the action the arm
                        // executes, and its slope there reaches the policy even where the clip
                        // binds (a gripper already fully closed still learns to stay closed).
                        self.exec_grad[k] = 1.0;
                    }
                }
            }
        }
    }

    /// Observation width.
    pub fn obs_dim(&self) -> usize {
        self.obs_dim
    }

    /// Action width.
    pub fn act_dim(&self) -> usize {
        self.act_dim
    }

    /// Sets the fixed input normalisation (fitted on demonstrations before training; saved in
    /// checkpoints and folded into exported actors).
    pub fn set_normaliser(&mut self, norm: Normaliser) {
        assert_eq!(norm.dim(), self.obs_dim, "normaliser width");
        self.norm = norm;
    }

    /// The input normalisation.
    pub fn normaliser(&self) -> &Normaliser {
        &self.norm
    }

    /// Critic `k`'s gradient from the last update (for the reference test).
    #[cfg(test)]
    pub(crate) fn critic_grads(&self, k: usize) -> &[f32] {
        &self.work[k].grads
    }

    /// The actor's gradient from the last update (for the reference test).
    #[cfg(test)]
    pub(crate) fn actor_grads(&self) -> &[f32] {
        &self.actor_grads[0]
    }

    /// True when every weight, target, optimiser moment and the temperature are finite.
    pub fn is_finite(&self) -> bool {
        let finite = |v: &[f32]| v.iter().all(|x| x.is_finite());
        self.log_alpha.is_finite()
            && finite(&self.actor.params)
            && finite(&self.actor_opt.m)
            && finite(&self.actor_opt.v)
            && self.critics.iter().all(|c| finite(&c.params))
            && self.targets.iter().all(|c| finite(&c.params))
            && self
                .critic_opts
                .iter()
                .all(|o| finite(&o.m) && finite(&o.v))
    }

    /// Current SAC temperature.
    pub fn temperature(&self) -> f32 {
        self.log_alpha.exp()
    }

    /// Samples (or, with `explore` false, takes the mean of) the policy for `batch` rows of
    /// `obs`: fills `self.pi` with actions, `self.eps` with the noise and `self.logp` with log
    /// probabilities. The actor's tape keeps the forward pass.
    fn sample_policy(&mut self, obs: &[f32], batch: usize, explore: bool) {
        let a = self.act_dim;
        let split = if batch >= 64 { batch / 2 } else { batch };
        self.actor_split = split;
        let (o1, o2) = obs.split_at(split * self.obs_dim);
        let actor = &self.actor;
        let [t1, t2] = &mut self.actor_tapes;
        if split < batch {
            rayon::join(
                || actor.forward(o1, split, t1),
                || actor.forward(o2, batch - split, t2),
            );
        } else {
            actor.forward(obs, batch, t1);
        }
        self.pi.resize(batch * a, 0.0);
        self.eps.resize(batch * a, 0.0);
        self.logp.resize(batch, 0.0);
        for r in 0..batch {
            let row = actor_row(&self.actor_tapes, split, r, 2 * a);
            let mut lp = 0.0;
            for j in 0..a {
                let log_std = squash_log_std(row[a + j]);
                let e = if explore {
                    self.rng.normal() as f32
                } else {
                    0.0
                };
                let u = row[j] + log_std.exp() * e;
                self.eps[r * a + j] = e;
                self.pi[r * a + j] = u.tanh();
                lp += -0.5 * e * e - log_std - HALF_LN_TAU - log_prob_correction(u);
            }
            self.logp[r] = lp;
        }
    }

    /// Actions for `batch` rows of `obs` into `out` (`batch x act_dim`): sampled when `explore`,
    /// else `tanh(mean)`. For evaluation and small environments; the runtime uses the exported
    /// network instead.
    pub fn act(&mut self, obs: &[f32], batch: usize, explore: bool, out: &mut [f32]) {
        let mut x = std::mem::take(&mut self.norm_obs);
        x.clear();
        x.extend_from_slice(obs);
        self.norm.apply(&mut x);
        self.sample_policy(&x, batch, explore);
        self.norm_obs = x;
        out.copy_from_slice(&self.pi);
    }

    /// One update: every critic, then (after `actor_frozen` is false and on the actor's turn) the
    /// actor and the temperature, then the target critics.
    pub fn update(&mut self, b: &Batch, actor_frozen: bool) -> UpdateStats {
        self.update_with_obs_grad(b, actor_frozen, None)
    }

    /// [`Agent::update`], and, when `d_obs` is given (`size x obs_dim`), the gradient of the
    /// critics' summed loss with respect to the batch's raw observations (through the input
    /// normaliser), taken before the critics' step: what an image encoder in front of the
    /// observation learns from (DrQ's rule: the critic's loss trains the encoder, the actor
    /// reads its features detached).
    pub fn update_with_obs_grad(
        &mut self,
        b: &Batch,
        actor_frozen: bool,
        d_obs: Option<&mut [f32]>,
    ) -> UpdateStats {
        let (n, a, o) = (b.size, self.act_dim, self.obs_dim);
        let want_obs_grad = d_obs.is_some();
        assert_eq!(
            b.obs.len(),
            n * o,
            "batch observations do not match the agent"
        );
        assert_eq!(b.act.len(), n * a, "batch actions do not match the agent");
        let alpha = self.temperature();
        let ci = o + a;
        let mut obs = std::mem::take(&mut self.norm_obs);
        let mut next_obs = std::mem::take(&mut self.norm_next);
        obs.clear();
        obs.extend_from_slice(&b.obs);
        self.norm.apply(&mut obs);
        next_obs.clear();
        next_obs.extend_from_slice(&b.next_obs);
        self.norm.apply(&mut next_obs);

        // --- Targets: y = r + discount * (min_subset Q'(s', a') - alpha log pi(a'|s')).
        match self.cfg.algo {
            Algo::Sac => self.sample_policy(&next_obs, n, true),
            Algo::Td3 => {
                self.sample_policy(&next_obs, n, false);
                let (sd, clip) = (self.cfg.td3_target_noise, self.cfg.td3_noise_clip);
                for p in self.pi.iter_mut() {
                    let e = ((self.rng.normal() as f32) * sd).clamp(-clip, clip);
                    *p = (*p + e).clamp(-1.0, 1.0);
                }
                self.logp.fill(0.0);
            }
        }
        self.compose_executed(&b.next_obs, n);
        self.next_sa.resize(n * ci, 0.0);
        concat_rows(&mut self.next_sa, &next_obs, o, &self.exec, a, n);
        let subset = self.pick_subset();
        let next_sa = &self.next_sa;
        let targets = &self.targets;
        self.work
            .par_iter_mut()
            .enumerate()
            .filter(|(i, _)| subset.contains(i))
            .for_each(|(i, w)| {
                targets[i].forward(next_sa, n, &mut w.tape);
                w.q.clear();
                w.q.extend_from_slice(w.tape.output());
            });
        self.target.resize(n, 0.0);
        let ent_weight = if self.cfg.algo == Algo::Sac && self.cfg.backup_entropy {
            alpha
        } else {
            0.0
        };
        for r in 0..n {
            let q_min = subset
                .iter()
                .map(|&i| self.work[i].q[r])
                .fold(f32::INFINITY, f32::min);
            self.target[r] = b.reward[r] + b.discount[r] * (q_min - ent_weight * self.logp[r]);
        }

        // --- Critics: mean squared error to the target, one core per critic.
        self.act_in.clear();
        self.act_in.extend_from_slice(&b.act);
        if let Some(scale) = self.residual_scale {
            for r in 0..n {
                for j in 0..a {
                    let base = b.obs[r * o + o - a + j];
                    self.act_in[r * a + j] = (b.act[r * a + j] - base) / scale;
                }
            }
        }
        self.sa.resize(n * ci, 0.0);
        concat_rows(&mut self.sa, &obs, o, &self.act_in, a, n);
        let (sa, target) = (&self.sa, &self.target);
        let losses: Vec<(f32, f32, f32)> = self
            .critics
            .par_iter_mut()
            .zip(self.critic_opts.par_iter_mut())
            .zip(self.work.par_iter_mut())
            .map(|((c, opt), w)| {
                c.forward(sa, n, &mut w.tape);
                let q = w.tape.output();
                w.d_out.resize(n, 0.0);
                let mut loss = 0.0;
                let mut q_sum = 0.0;
                let mut q_abs = 0.0;
                for r in 0..n {
                    let e = q[r] - target[r];
                    loss += e * e;
                    q_sum += q[r];
                    q_abs += q[r].abs();
                    w.d_out[r] = 2.0 * e / n as f32;
                }
                if want_obs_grad {
                    w.d_input.resize(n * ci, 0.0);
                    c.backward(
                        &mut w.tape,
                        &w.d_out,
                        Some(&mut w.grads),
                        Some(&mut w.d_input),
                    );
                } else {
                    c.backward(&mut w.tape, &w.d_out, Some(&mut w.grads), None);
                }
                opt.step(&mut c.params, &w.grads);
                (loss / n as f32, q_sum / n as f32, q_abs / n as f32)
            })
            .collect();
        if let Some(d) = d_obs {
            assert_eq!(d.len(), n * o, "d_obs is not batch x obs_dim");
            d.fill(0.0);
            for w in &self.work {
                for r in 0..n {
                    let row = &mut d[r * o..(r + 1) * o];
                    let src = &w.d_input[r * ci..r * ci + o];
                    for ((dv, s), k) in row.iter_mut().zip(src).zip(&self.norm.inv_std) {
                        *dv += s * k;
                    }
                }
            }
        }
        let q_abs_mean = losses.iter().map(|l| l.2).sum::<f32>() / losses.len() as f32;
        let mut stats = UpdateStats {
            critic_loss: losses.iter().map(|l| l.0).sum::<f32>() / losses.len() as f32,
            q_mean: losses[0].1,
            actor_loss: f32::NAN,
            temperature: alpha,
            entropy: f32::NAN,
            actor_updated: false,
        };
        self.updates += 1;

        // --- Actor and temperature.
        if !actor_frozen && self.updates.is_multiple_of(u64::from(self.cfg.actor_delay)) {
            let im = Imitation {
                act: &b.act,
                demo_rows: b.demo_rows,
                q_scale: q_abs_mean,
            };
            let (loss, entropy) = self.update_actor(&obs, &b.obs, im);
            stats.actor_loss = loss;
            stats.entropy = entropy;
            stats.actor_updated = true;
        }
        self.norm_obs = obs;
        self.norm_next = next_obs;

        // --- Targets follow.
        let tau = self.cfg.tau;
        self.targets
            .par_iter_mut()
            .zip(self.critics.par_iter())
            .for_each(|(t, c)| t.polyak_from(c, tau));
        stats
    }

    fn update_actor(&mut self, obs: &[f32], raw_obs: &[f32], im: Imitation) -> (f32, f32) {
        let (loss, mean_logp) = self.actor_gradient(obs, raw_obs, im);
        self.actor_opt
            .step(&mut self.actor.params, &self.actor_grads[0]);
        let sac = self.cfg.algo == Algo::Sac;
        if sac {
            let target_entropy = self.cfg.target_entropy_per_dim * self.act_dim as f32;
            // Loss -log_alpha (logp + target_entropy): gradient -(mean logp + target_entropy).
            let g = [-(mean_logp + target_entropy)];
            let mut p = [self.log_alpha];
            self.alpha_opt.step(&mut p, &g);
            self.log_alpha = p[0];
        }
        (loss, if sac { -mean_logp } else { f32::NAN })
    }

    /// The actor loss `mean(alpha log pi - mean_k Q_k(s, executed))` on (normalised)
    /// observations `obs` (`raw_obs` before normalisation, for the base action), plus the
    /// imitation term on the first `demo_rows` rows (`bc_weight * q_scale * mean_rows
    /// |executed - act|^2`, `act` the batch's executed actions, `q_scale` the critics' mean
    /// |Q| at them), its gradient left in
    /// `actor_grads[0]`; returns the loss and the mean log-probability.
    fn actor_gradient(&mut self, obs: &[f32], raw_obs: &[f32], im: Imitation) -> (f32, f32) {
        let Imitation {
            act,
            demo_rows,
            q_scale,
        } = im;
        let (a, o) = (self.act_dim, self.obs_dim);
        let n = obs.len() / o;
        let ci = o + a;
        let sac = self.cfg.algo == Algo::Sac;
        let alpha = if sac { self.temperature() } else { 0.0 };
        self.sample_policy(obs, n, sac);
        self.compose_executed(raw_obs, n);
        self.sa.resize(n * ci, 0.0);
        concat_rows(&mut self.sa, obs, o, &self.exec, a, n);
        let k = self.critics.len() as f32;
        let sa = &self.sa;
        // dQ/da through every critic (input gradient only), each scaled for the ensemble mean.
        self.critics
            .par_iter()
            .zip(self.work.par_iter_mut())
            .for_each(|(c, w)| {
                c.forward(sa, n, &mut w.tape);
                w.q.clear();
                w.q.extend_from_slice(w.tape.output());
                w.d_out.clear();
                w.d_out.resize(n, -1.0 / (n as f32 * k));
                w.d_input.resize(n * ci, 0.0);
                c.backward(&mut w.tape, &w.d_out, None, Some(&mut w.d_input));
            });
        let mut q_mean_sum = 0.0;
        let mut logp_sum = 0.0;
        self.actor_d_out.clear();
        self.actor_d_out.resize(n * 2 * a, 0.0);
        let nf = n as f32;
        let split = self.actor_split;
        // The imitation term's weight, in the critics' units.
        let demo_rows = demo_rows.min(n);
        let bc = if demo_rows > 0 {
            self.cfg.bc_weight * q_scale.max(1e-3)
        } else {
            0.0
        };
        let mut bc_loss = 0.0;
        for r in 0..n {
            let q: f32 = self.work.iter().map(|w| w.q[r]).sum::<f32>() / k;
            q_mean_sum += q;
            logp_sum += self.logp[r];
            for j in 0..a {
                // dL/da_j = -mean dQ/da (already scaled by 1/(n k) and negated), plus the
                // imitation term's slope on demonstration rows (in the executed action's
                // units: residual units for a residual agent), carried from the executed
                // action back to the policy's output.
                let mut dl_dexec: f32 = self
                    .work
                    .iter()
                    .map(|w| w.d_input[r * ci + o + j])
                    .sum::<f32>();
                if bc > 0.0 && r < demo_rows {
                    let target = self.executed_target(raw_obs, act, r, j);
                    let e = self.exec[r * a + j] - target;
                    bc_loss += bc * e * e / demo_rows as f32;
                    dl_dexec += bc * 2.0 * e / demo_rows as f32;
                }
                let dl_da = dl_dexec * self.exec_grad[r * a + j];
                let pa = self.pi[r * a + j];
                // logp depends on u through -log(1 - tanh(u)^2): d/du = 2 tanh(u).
                let dl_du = dl_da * (1.0 - pa * pa) + alpha * 2.0 * pa / nf;
                self.actor_d_out[r * 2 * a + j] = dl_du;
                if sac {
                    let raw = actor_row(&self.actor_tapes, split, r, 2 * a)[a + j];
                    let log_std = squash_log_std(raw);
                    let e = self.eps[r * a + j];
                    let dl_dlogstd = dl_du * log_std.exp() * e - alpha / nf;
                    let t = raw.tanh();
                    let dlogstd_draw = 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (1.0 - t * t);
                    self.actor_d_out[r * 2 * a + a + j] = dl_dlogstd * dlogstd_draw;
                }
            }
        }
        let actor = &self.actor;
        let [t1, t2] = &mut self.actor_tapes;
        let [g1, g2] = &mut self.actor_grads;
        if split < n {
            let (d1, d2) = self.actor_d_out.split_at(split * 2 * a);
            rayon::join(
                || actor.backward(t1, d1, Some(g1), None),
                || actor.backward(t2, d2, Some(g2), None),
            );
            for (x, y) in g1.iter_mut().zip(g2.iter()) {
                *x += y;
            }
        } else {
            actor.backward(t1, &self.actor_d_out, Some(g1), None);
        }
        let mean_logp = logp_sum / nf;
        (alpha * mean_logp - q_mean_sum / nf + bc_loss, mean_logp)
    }

    /// Row `r`, component `j` of the batch's executed action `act` in the units of
    /// [`Agent::compose_executed`]'s output: residual units for a residual agent.
    fn executed_target(&self, raw_obs: &[f32], act: &[f32], r: usize, j: usize) -> f32 {
        let (a, o) = (self.act_dim, self.obs_dim);
        match self.residual_scale {
            None => act[r * a + j],
            Some(scale) => (act[r * a + j] - raw_obs[r * o + o - a + j]) / scale,
        }
    }

    fn pick_subset(&mut self) -> Vec<usize> {
        let k = self.critics.len();
        let m = self.cfg.target_subset.min(k);
        let mut idx: Vec<usize> = (0..k).collect();
        if m < k {
            // Partial Fisher-Yates: the first m are a uniform random subset.
            for i in 0..m {
                let j = i + (self.rng.next_u64() % (k - i) as u64) as usize;
                idx.swap(i, j);
            }
        }
        idx.truncate(m);
        idx
    }

    /// Everything needed to continue training: weights, targets, optimiser moments, counters.
    pub fn to_checkpoint(&self) -> (Vec<(String, Vec<f32>)>, serde_json::Value) {
        let mut t = vec![
            ("actor.params".to_owned(), self.actor.params.clone()),
            ("actor.adam.m".to_owned(), self.actor_opt.m.clone()),
            ("actor.adam.v".to_owned(), self.actor_opt.v.clone()),
            ("alpha.adam.m".to_owned(), self.alpha_opt.m.clone()),
            ("alpha.adam.v".to_owned(), self.alpha_opt.v.clone()),
            ("norm.mean".to_owned(), self.norm.mean.clone()),
            ("norm.inv_std".to_owned(), self.norm.inv_std.clone()),
        ];
        for (i, ((c, tg), o)) in self
            .critics
            .iter()
            .zip(&self.targets)
            .zip(&self.critic_opts)
            .enumerate()
        {
            t.push((format!("critic.{i}.params"), c.params.clone()));
            t.push((format!("critic.{i}.target"), tg.params.clone()));
            t.push((format!("critic.{i}.adam.m"), o.m.clone()));
            t.push((format!("critic.{i}.adam.v"), o.v.clone()));
        }
        let meta = serde_json::json!({
            "agent": self.cfg,
            "obs_dim": self.obs_dim,
            "act_dim": self.act_dim,
            "updates": self.updates,
            "log_alpha": self.log_alpha,
            "actor_adam_t": self.actor_opt.t,
            "alpha_adam_t": self.alpha_opt.t,
            "critic_adam_t": self.critic_opts.iter().map(|o| o.t).collect::<Vec<_>>(),
            "rng": self.rng.state().to_string(),
            "format": CHECKPOINT_FORMAT,
            "residual_scale": self.residual_scale,
        });
        (t, meta)
    }

    /// Restores what [`Agent::to_checkpoint`] saved into an agent built with the same
    /// configuration and widths; the message names what does not fit.
    pub fn restore(&mut self, tensors: &crate::store::Checkpoint) -> Result<(), String> {
        let meta = &tensors.meta;
        let mut agent: AgentConfig = serde_json::from_value(meta["agent"].clone())
            .map_err(|e| format!("metadata `agent`: {e}"))?;
        // The imitation weight is the objective's, not the networks': a session may weigh
        // the operator's takeovers differently from the run it continues.
        agent.bc_weight = self.cfg.bc_weight;
        if agent != self.cfg {
            return Err("the checkpoint was trained with another agent configuration".into());
        }
        if meta["format"].as_u64() != Some(CHECKPOINT_FORMAT) {
            return Err(format!(
                "the checkpoint is of format {} (critics on clipped residuals), this version \
                 needs format {CHECKPOINT_FORMAT} (critics on executed actions): start a new run",
                meta["format"].as_u64().unwrap_or(1)
            ));
        }
        let scale = meta["residual_scale"].as_f64().map(|v| v as f32);
        if scale != self.residual_scale {
            return Err(format!(
                "the checkpoint's residual scale is {scale:?}, this run's is {:?}",
                self.residual_scale
            ));
        }
        if meta["obs_dim"] != self.obs_dim || meta["act_dim"] != self.act_dim {
            return Err(format!(
                "the checkpoint is for observations of {} and actions of {}, this run has {} and {}",
                meta["obs_dim"], meta["act_dim"], self.obs_dim, self.act_dim
            ));
        }
        let take = |name: &str, into: &mut Vec<f32>| tensors.copy_into(name, into);
        take("actor.params", &mut self.actor.params)?;
        take("actor.adam.m", &mut self.actor_opt.m)?;
        take("actor.adam.v", &mut self.actor_opt.v)?;
        take("alpha.adam.m", &mut self.alpha_opt.m)?;
        take("alpha.adam.v", &mut self.alpha_opt.v)?;
        // Checkpoints from before input normalisation trained on raw inputs.
        if tensors.tensor("norm.mean").is_ok() {
            take("norm.mean", &mut self.norm.mean)?;
            take("norm.inv_std", &mut self.norm.inv_std)?;
        } else {
            self.norm = Normaliser::identity(self.obs_dim);
        }
        for i in 0..self.critics.len() {
            take(&format!("critic.{i}.params"), &mut self.critics[i].params)?;
            take(&format!("critic.{i}.target"), &mut self.targets[i].params)?;
            take(&format!("critic.{i}.adam.m"), &mut self.critic_opts[i].m)?;
            take(&format!("critic.{i}.adam.v"), &mut self.critic_opts[i].v)?;
        }
        let num = |k: &str| {
            meta[k]
                .as_u64()
                .ok_or_else(|| format!("metadata `{k}` is missing"))
        };
        self.updates = num("updates")?;
        self.actor_opt.t = num("actor_adam_t")?;
        self.alpha_opt.t = num("alpha_adam_t")?;
        let ts = meta["critic_adam_t"]
            .as_array()
            .ok_or("metadata `critic_adam_t` is missing")?;
        for (o, t) in self.critic_opts.iter_mut().zip(ts) {
            o.t = t
                .as_u64()
                .ok_or("metadata `critic_adam_t` is not a count")?;
        }
        self.log_alpha = meta["log_alpha"]
            .as_f64()
            .ok_or("metadata `log_alpha` is missing")? as f32;
        let rng: u64 = meta["rng"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .ok_or("metadata `rng` is missing")?;
        self.rng = Rng::from_state(rng);
        Ok(())
    }

    /// The network the runtime's exploring residual (`ResidualPolicy::tanh_gaussian`) runs.
    pub fn exploring_actor(&self) -> Mlp {
        self.folded_actor()
            .to_runtime(2 * self.act_dim, Activation::Identity)
    }

    /// The actor reading raw observations.
    fn folded_actor(&self) -> Net {
        let mut actor = self.actor.clone();
        actor.fold_input(&self.norm);
        actor
    }

    /// The deployed policy: `tanh(mean)`.
    pub fn deterministic_actor(&self) -> Mlp {
        self.folded_actor()
            .to_runtime(self.act_dim, Activation::Tanh)
    }
}

/// What the actor's imitation term reads: the batch's executed actions, how many leading rows
/// are demonstrations, and the critics' mean |Q| that scales the term.
#[derive(Clone, Copy)]
struct Imitation<'a> {
    act: &'a [f32],
    demo_rows: usize,
    q_scale: f32,
}

/// The deployed policy (`tanh(mean)`) of a published exploring actor, whose first `act_dim`
/// outputs are the means: what a live session snapshots from the weights it runs, without
/// reaching into the learner. The error says what does not fit.
pub fn deterministic_of(exploring: &Mlp, act_dim: usize) -> Result<Mlp, String> {
    let mut layers = exploring.layer_params();
    let last = layers.last_mut().ok_or("the actor has no layers")?;
    if last.outputs != 2 * act_dim {
        return Err(format!(
            "the exploring actor has {} outputs, not 2 x {act_dim} (means and log-stds)",
            last.outputs
        ));
    }
    last.weight.truncate(act_dim * last.inputs);
    last.bias.truncate(act_dim);
    last.outputs = act_dim;
    Mlp::from_layers(layers, exploring.activations().0, Activation::Tanh)
}

/// Row `r` of the actor's output when rows before `split` are in the first tape.
fn actor_row(tapes: &[Tape; 2], split: usize, r: usize, width: usize) -> &[f32] {
    let (t, i) = if r < split {
        (&tapes[0], r)
    } else {
        (&tapes[1], r - split)
    };
    &t.output()[i * width..(i + 1) * width]
}

/// The raw log-std output that stands for a standard deviation `std`.
pub fn raw_for_std(std: f32) -> f32 {
    let t = 2.0 * (std.ln() - LOG_STD_MIN) / (LOG_STD_MAX - LOG_STD_MIN) - 1.0;
    t.clamp(-0.999_999, 0.999_999).atanh()
}

/// `out[r] = [x[r]; y[r]]` for `n` rows.
fn concat_rows(out: &mut [f32], x: &[f32], xd: usize, y: &[f32], yd: usize, n: usize) {
    let w = xd + yd;
    for r in 0..n {
        out[r * w..r * w + xd].copy_from_slice(&x[r * xd..(r + 1) * xd]);
        out[r * w + xd..(r + 1) * w].copy_from_slice(&y[r * yd..(r + 1) * yd]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_observation_gradient_is_the_critic_losss_derivative() {
        // With discount 0 the target is the reward, so the critics' summed loss is a plain
        // function of the observations; central differences must match the returned gradient
        // (a normaliser that scales each input checks the chain rule through it).
        let cfg = AgentConfig {
            hidden: vec![16, 16],
            critics: 3,
            target_subset: 2,
            ..Default::default()
        };
        let (o, a, n) = (5, 2, 6);
        let mut agent = Agent::new(cfg, o, a, 9);
        agent.set_normaliser(Normaliser {
            mean: vec![0.1, -0.2, 0.0, 0.3, 0.5],
            inv_std: vec![1.0, 2.0, 0.5, 1.5, 3.0],
        });
        let mut b = Batch::new(n, o, a);
        for (i, v) in b.obs.iter_mut().enumerate() {
            *v = ((i * 7 % 13) as f32 - 6.0) * 0.1;
        }
        for (i, v) in b.act.iter_mut().enumerate() {
            *v = ((i * 5 % 9) as f32 - 4.0) * 0.2;
        }
        for (i, v) in b.reward.iter_mut().enumerate() {
            *v = (i as f32 * 0.7).sin();
        }
        let loss = |agent: &Agent, obs: &[f32]| -> f64 {
            let mut x = obs.to_vec();
            agent.norm.apply(&mut x);
            let mut sa = vec![0.0; n * (o + a)];
            concat_rows(&mut sa, &x, o, &b.act, a, n);
            let mut tape = Tape::default();
            agent
                .critics
                .iter()
                .map(|c| {
                    c.forward(&sa, n, &mut tape);
                    tape.output()
                        .iter()
                        .zip(&b.reward)
                        .map(|(q, r)| f64::from(q - r).powi(2))
                        .sum::<f64>()
                        / n as f64
                })
                .sum()
        };
        let before = agent.clone();
        let mut d = vec![0.0f32; n * o];
        agent.update_with_obs_grad(&b, true, Some(&mut d));
        let eps = 2e-3f32;
        for k in [0, 3, 7, 14, 22, 29] {
            let mut up = b.obs.clone();
            up[k] += eps;
            let mut down = b.obs.clone();
            down[k] -= eps;
            let fd = (loss(&before, &up) - loss(&before, &down)) / (2.0 * f64::from(eps));
            let got = f64::from(d[k]);
            assert!(
                (got - fd).abs() <= 0.02 * fd.abs() + 2e-4,
                "input {k}: {got} vs {fd}"
            );
        }
        assert!(
            d.iter().any(|v| v.abs() > 1e-3),
            "the test needs a gradient"
        );
    }

    #[test]
    fn raw_for_std_inverts_the_squash() {
        for s in [0.05f32, 0.3, 0.5, 1.0, 2.0] {
            assert!((squash_log_std(raw_for_std(s)).exp() - s).abs() < 1e-4 * s.max(1.0));
        }
    }

    #[test]
    fn log_prob_correction_matches_the_direct_formula() {
        for u in [-3.0f32, -0.5, 0.0, 0.7, 2.5] {
            let direct = (1.0 - u.tanh().powi(2)).ln();
            assert!((log_prob_correction(u) - direct).abs() < 1e-4, "{u}");
        }
    }

    #[test]
    fn the_deployed_policy_of_a_published_actor_is_the_agents_own() {
        let cfg = AgentConfig {
            hidden: vec![16, 16],
            zero_init_actor: false,
            ..Default::default()
        };
        let agent = Agent::new(cfg, 9, 3, 5).with_residual(0.3);
        let mut want = agent.deterministic_actor();
        let mut got = deterministic_of(&agent.exploring_actor(), 3).unwrap();
        let x: Vec<f32> = (0..9).map(|i| (i as f32 * 0.9).cos() * 2.0).collect();
        let (mut a, mut b) = ([0f32; 3], [0f32; 3]);
        want.forward(&x, &mut a).unwrap();
        got.forward(&x, &mut b).unwrap();
        assert!(a.iter().any(|v| v.abs() > 1e-4), "{a:?}");
        for (p, q) in a.iter().zip(&b) {
            assert!((p - q).abs() < 1e-6, "{a:?} {b:?}");
        }
        assert!(deterministic_of(&agent.exploring_actor(), 4).is_err());
    }

    #[test]
    fn a_zero_initialised_actor_means_zero_everywhere() {
        let mut agent = Agent::new(AgentConfig::default(), 10, 3, 1);
        let obs: Vec<f32> = (0..40).map(|i| (i as f32 * 0.7).sin() * 5.0).collect();
        let mut out = vec![1.0; 12];
        agent.act(&obs, 4, false, &mut out);
        assert!(out.iter().all(|v| *v == 0.0), "{out:?}");
        let mut mlp = agent.deterministic_actor();
        let mut one = [1.0f32; 3];
        mlp.forward(&obs[..10], &mut one).unwrap();
        assert_eq!(one, [0.0; 3]);
    }

    /// The analytic actor gradient (reparameterised tanh-Gaussian, log-std squash, entropy term
    /// at a non-trivial temperature, through both critics) against central differences with
    /// the same noise; for a plain agent and for a residual one, whose gradient passes through
    /// the composition `b + scale * r` with the base action in the observation (clear of the
    /// clip, where the straight-through gradient is the true one).
    #[test]
    fn actor_gradient_matches_finite_differences() {
        for (residual, bc_weight) in [(None, 0.0), (Some(0.5f32), 0.0), (Some(0.5f32), 0.4)] {
            let cfg = AgentConfig {
                hidden: vec![16, 16],
                zero_init_actor: false,
                init_temperature: 0.3,
                bc_weight,
                ..Default::default()
            };
            let mut agent = Agent::new(cfg, 4, 2, 11);
            if let Some(scale) = residual {
                agent = agent.with_residual(scale);
            }
            let mut rng = Rng::new(4);
            let mut b = Batch::new(80, 4, 2);
            b.obs
                .iter_mut()
                .for_each(|v| *v = rng.uniform(-1.0, 1.0) as f32);
            if residual.is_some() {
                // Base actions that leave room: the clip never binds, so the gradient (straight
                // through the clip) is the true one here.
                for row in b.obs.chunks_exact_mut(4) {
                    row[2] *= 0.4;
                    row[3] *= 0.4;
                }
            }
            b.act
                .iter_mut()
                .for_each(|v| *v = rng.uniform(-0.5, 0.5) as f32);
            // A third of the rows are demonstrations (the imitation term reads them).
            let (demo, q_scale) = (30, 3.0);
            let probe = agent.clone();
            let im = Imitation {
                act: &b.act,
                demo_rows: demo,
                q_scale,
            };
            agent.actor_gradient(&b.obs, &b.obs, im);
            let grads = agent.actor_grads[0].clone();
            let h = 1e-3f32;
            let mut worst = 0.0f64;
            let mut compared = 0;
            for i in (0..probe.actor.num_params()).step_by(7) {
                let loss_at = |d: f32| {
                    let mut p = probe.clone();
                    p.actor.params[i] += d;
                    p.actor_gradient(&b.obs, &b.obs, im).0 as f64
                };
                let (lp, l0, lm) = (loss_at(h), loss_at(0.0), loss_at(-h));
                let (fwd, bwd) = ((lp - l0) / h as f64, (l0 - lm) / h as f64);
                if (fwd - bwd).abs() > 0.05 * (1e-3 + fwd.abs()) {
                    continue; // a ReLU kink or a clip
                }
                compared += 1;
                let num = (lp - lm) / (2.0 * h as f64);
                worst = worst.max((num - grads[i] as f64).abs() / (0.02 + num.abs()));
            }
            assert!(compared > 40, "{residual:?} {bc_weight}: {compared}");
            assert!(
                worst < 0.05,
                "{residual:?} {bc_weight}: largest relative error {worst}"
            );
        }
    }

    /// The imitation term pulls the policy toward the demonstration rows' executed actions,
    /// wherever they are, and not toward the other rows'.
    #[test]
    fn the_imitation_term_pulls_the_policy_to_the_demonstrations() {
        let run = |bc_weight: f32, demo_act: f32| -> f32 {
            let cfg = AgentConfig {
                hidden: vec![16, 16],
                actor_lr: 1e-3,
                bc_weight,
                ..Default::default()
            };
            let mut agent = Agent::new(cfg, 3, 1, 5).with_residual(0.5);
            let mut rng = Rng::new(9);
            let mut b = Batch::new(64, 3, 1);
            for (r, row) in b.obs.chunks_exact_mut(3).enumerate() {
                row[0] = rng.uniform(-1.0, 1.0) as f32;
                row[1] = rng.uniform(-1.0, 1.0) as f32;
                row[2] = 0.0; // base action
                              // Demonstration rows executed `demo_act`; the others its opposite.
                b.act[r] = if r < 32 { demo_act } else { -demo_act };
            }
            b.next_obs.copy_from_slice(&b.obs);
            // Values of about 1 whatever the action: the critics give no direction.
            b.reward.fill(1.0);
            b.discount.fill(0.0);
            b.demo_rows = 32;
            for _ in 0..400 {
                agent.update(&b, false);
            }
            let mut out = [0.0f32; 2];
            agent.act(&[0.2, -0.4, 0.0], 1, false, &mut out[..1]);
            out[0]
        };
        // Executed 0.3 and -0.3 on a zero base: residuals of 0.6 and -0.6 at scale 0.5.
        let (up, down) = (run(2.0, 0.3), run(2.0, -0.3));
        assert!((up - 0.6).abs() < 0.15, "{up}");
        assert!((down + 0.6).abs() < 0.15, "{down}");
    }

    /// A residual agent's critics see the executed action (as `(a - b) / scale`): where the
    /// policy's correction would push past the action bounds, the executed action is clipped,
    /// and the actor's gradient passes straight through.
    #[test]
    fn a_residual_agent_composes_the_executed_action() {
        let mut agent = Agent::new(AgentConfig::default(), 3, 1, 1).with_residual(0.5);
        agent.pi = vec![1.0, -1.0, 0.2];
        let raw_obs = [0.0, 0.0, 0.8, 0.0, 0.0, -0.9, 0.0, 0.0, 0.1];
        agent.compose_executed(&raw_obs, 3);
        // Executed 1.0, -1.0 (clipped) and 0.2, read as (a - b) / scale.
        let want = [0.4, -0.2, 0.2];
        for (e, w) in agent.exec.iter().zip(want) {
            assert!((e - w).abs() < 1e-6, "{:?}", agent.exec);
        }
        assert_eq!(agent.exec_grad, vec![1.0, 1.0, 1.0]);
    }

    #[test]
    fn a_checkpoint_restores_the_same_agent() {
        let cfg = AgentConfig {
            hidden: vec![8, 8],
            ..Default::default()
        };
        let mut a = Agent::new(cfg.clone(), 3, 2, 1);
        let mut b = Batch::new(16, 3, 2);
        b.obs
            .iter_mut()
            .enumerate()
            .for_each(|(i, v)| *v = (i as f32).sin());
        b.discount.fill(0.9);
        for _ in 0..5 {
            a.update(&b, false);
        }
        let (t, meta) = a.to_checkpoint();
        let ck = crate::store::Checkpoint { tensors: t, meta };
        let mut fresh = Agent::new(cfg.clone(), 3, 2, 99);
        fresh.restore(&ck).unwrap();
        // Both continue identically.
        let sa = a.update(&b, false);
        let sb = fresh.update(&b, false);
        assert_eq!(sa, sb);
        assert_eq!(a.actor.params, fresh.actor.params);
        // Another shape is refused with the reason.
        let mut other = Agent::new(cfg, 4, 2, 1);
        let err = other.restore(&ck).unwrap_err();
        assert!(err.contains("observations of 3"), "{err}");
    }

    #[test]
    fn subsets_are_distinct_and_cover_the_ensemble() {
        let cfg = AgentConfig {
            critics: 10,
            target_subset: 2,
            ..Default::default()
        };
        let mut agent = Agent::new(cfg, 3, 1, 2);
        let mut seen = [0u32; 10];
        for _ in 0..500 {
            let s = agent.pick_subset();
            assert_eq!(s.len(), 2);
            assert_ne!(s[0], s[1]);
            for i in s {
                seen[i] += 1;
            }
        }
        assert!(seen.iter().all(|&c| c > 50), "{seen:?}");
    }
}

#[cfg(test)]
mod bandit {
    use super::*;

    /// A contextual bandit: reward -|a - target(obs)|^2, one step. SAC with the residual
    /// defaults must learn the target and keep its entropy near the target entropy.
    #[test]
    fn learns_a_contextual_bandit() {
        let cfg = AgentConfig {
            hidden: vec![64, 64],
            ..Default::default()
        };
        let mut agent = Agent::new(cfg, 3, 2, 1);
        let mut rng = Rng::new(7);
        let n = 128;
        let mut b = Batch::new(n, 3, 2);
        let target = |o: &[f32]| [0.6 * o[0], -0.5 * o[1] + 0.2 * o[2]];
        let mut data: Vec<([f32; 3], [f32; 2], f32)> = Vec::new();
        for step in 0..3000 {
            let o = [
                rng.uniform(-1.0, 1.0) as f32,
                rng.uniform(-1.0, 1.0) as f32,
                rng.uniform(-1.0, 1.0) as f32,
            ];
            let mut a = [0.0f32; 2];
            agent.act(&o, 1, true, &mut a);
            let t = target(&o);
            let r = -((a[0] - t[0]).powi(2) + (a[1] - t[1]).powi(2));
            data.push((o, a, r));
            if step >= 100 {
                for row in 0..n {
                    let (o, a, r) = data[(rng.next_u64() % data.len() as u64) as usize];
                    b.obs[row * 3..row * 3 + 3].copy_from_slice(&o);
                    b.next_obs[row * 3..row * 3 + 3].copy_from_slice(&o);
                    b.act[row * 2..row * 2 + 2].copy_from_slice(&a);
                    b.reward[row] = r;
                    b.discount[row] = 0.0;
                }
                let s = agent.update(&b, step < 300);
                if step % 500 == 0 {
                    eprintln!("{step}: {s:?}");
                }
            }
        }
        let mut err = 0.0;
        for _ in 0..200 {
            let o = [
                rng.uniform(-1.0, 1.0) as f32,
                rng.uniform(-1.0, 1.0) as f32,
                rng.uniform(-1.0, 1.0) as f32,
            ];
            let mut a = [0.0f32; 2];
            agent.act(&o, 1, false, &mut a);
            let t = target(&o);
            err += ((a[0] - t[0]).powi(2) + (a[1] - t[1]).powi(2)) / 200.0;
        }
        assert!(err < 0.01, "mean squared error {err}");
    }
}
