//! A second opinion on the learner's math: one full SAC update of a residual agent (critics,
//! actor, temperature, target critics) computed by burn's autodiff from the same weights, the
//! same batch and the same noise, against the hand-written kernels of [`crate::sac`] and
//! [`crate::nn`]. burn is the reference every loss of this crate is held to.
//!
//! Tolerance: every gradient element agrees within `1e-4 * max|g| + 1e-3 * |g|` (f32 sums in
//! another order); every parameter after the update within `1e-6` (where the gradient is at
//! least `1e-4` of its tensor's largest, so Adam's first step `lr * g / |g|` is well defined)
//! or within `2 lr` (gradients at the noise floor, whose sign either side may round away).

use crate::nn::Net;
use crate::rng::Rng;
use crate::sac::{Agent, AgentConfig, Batch};
use burn::tensor::activation::{relu, softplus};
use burn::tensor::{Device, Tensor, TensorData};
use reflex_policy::{LOG_STD_MAX, LOG_STD_MIN};

const N: usize = 32;
const FLAT: usize = 3;
const A: usize = 2;
const O: usize = FLAT + A;
const SCALE: f32 = 0.5;
const LN_EPS: f32 = 1e-5;

/// One layer's parameters: `W [in][out]`, `b`, and the LayerNorm gain and shift.
type Layer = (Tensor<2>, Tensor<2>, Option<(Tensor<2>, Tensor<2>)>);

/// A network's parameters as burn leaves, in the layout of `Net::params`.
struct BurnNet {
    layers: Vec<Layer>,
}

fn leaf(data: &[f32], shape: [usize; 2], device: &Device, grad: bool) -> Tensor<2> {
    let t = Tensor::<2>::from_data(TensorData::new(data.to_vec(), shape), device);
    if grad {
        t.require_grad()
    } else {
        t
    }
}

impl BurnNet {
    fn from(net: &Net, device: &Device, grad: bool) -> Self {
        let dims = net.dims().to_vec();
        let p = &net.params;
        let mut at = 0;
        let mut layers = Vec::new();
        let n = dims.len() - 1;
        for (i, w) in dims.windows(2).enumerate() {
            let (inp, out) = (w[0], w[1]);
            let wt = leaf(&p[at..at + inp * out], [inp, out], device, grad);
            at += inp * out;
            let b = leaf(&p[at..at + out], [1, out], device, grad);
            at += out;
            let norm = if net.layer_norm() && i + 1 < n {
                let g = leaf(&p[at..at + out], [1, out], device, grad);
                let s = leaf(&p[at + out..at + 2 * out], [1, out], device, grad);
                at += 2 * out;
                Some((g, s))
            } else {
                None
            };
            layers.push((wt, b, norm));
        }
        assert_eq!(at, p.len());
        Self { layers }
    }

    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let n = self.layers.len();
        let mut x = x;
        for (i, (w, b, norm)) in self.layers.iter().enumerate() {
            x = x.matmul(w.clone()) + b.clone();
            if i + 1 < n {
                if let Some((g, s)) = norm {
                    let (var, mean) = x.clone().var_mean_bias(1);
                    x = (x - mean) / (var + LN_EPS).sqrt() * g.clone() + s.clone();
                }
                x = relu(x);
            }
        }
        x
    }

    /// Every parameter's gradient, flattened in the layout of `Net::params`.
    fn grads(&self, g: &burn::tensor::Gradients) -> Vec<f32> {
        let mut out = Vec::new();
        let mut push = |t: &Tensor<2>| {
            let shape = t.dims();
            match t.grad(g) {
                Some(gt) => out.extend(values(gt)),
                None => out.extend(std::iter::repeat_n(0.0, shape[0] * shape[1])),
            }
        };
        for (w, b, norm) in &self.layers {
            push(w);
            push(b);
            if let Some((gn, s)) = norm {
                push(gn);
                push(s);
            }
        }
        out
    }
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().expect("f32 data")
}

/// `log(1 - tanh(u)^2)`, the stable form the kernels use: `2 (ln 2 - u - softplus(-2u))`.
fn log_one_minus_tanh2(u: Tensor<2>) -> Tensor<2> {
    (softplus(u.clone() * -2.0, 1.0) + u - std::f32::consts::LN_2) * -2.0
}

/// The tanh-Gaussian residual for `obs` with fixed noise `eps`: the critics' reading of the
/// executed action, `(clip(b + scale * tanh(u)) - b) / scale` with the gradient passed straight
/// through the clip, and each row's log-probability.
fn policy(actor: &BurnNet, obs: &Tensor<2>, eps: &Tensor<2>) -> (Tensor<2>, Tensor<2>) {
    let out = actor.forward(obs.clone());
    let mean = out.clone().narrow(1, 0, A);
    let raw = out.narrow(1, A, A);
    let log_std = (raw.tanh() + 1.0) * (0.5 * (LOG_STD_MAX - LOG_STD_MIN)) + LOG_STD_MIN;
    let u = mean + log_std.clone().exp() * eps.clone();
    let pi = u.clone().tanh();
    let half_ln_tau = 0.5 * (2.0 * std::f32::consts::PI).ln();
    let logp = (eps.clone().powi_scalar(2) * -0.5 - log_std - half_ln_tau - log_one_minus_tanh2(u))
        .sum_dim(1);
    let base = obs.clone().narrow(1, FLAT, A);
    let x = base.clone() + pi * SCALE;
    // Straight through: the value of the clip, the gradient of the identity.
    let clipped = x.clone().clamp(-1.0, 1.0).detach() + x.clone() - x.detach();
    ((clipped - base) / SCALE, logp)
}

/// Adam's step as the kernels take it (bias-corrected, moments from zero, step `t`).
fn adam(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], lr: f32, t: i32) {
    let (b1, b2, eps) = (0.9f32, 0.999f32, 1e-8f32);
    let (bc1, bc2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
    for i in 0..p.len() {
        m[i] = b1 * m[i] + (1.0 - b1) * g[i];
        v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
        p[i] -= lr / bc1 * m[i] / (v[i].sqrt() / bc2.sqrt() + eps);
    }
}

fn assert_grads_agree(what: &str, ours: &[f32], burn: &[f32]) {
    assert_eq!(ours.len(), burn.len(), "{what}: sizes");
    let scale = burn.iter().fold(0.0f32, |m, g| m.max(g.abs()));
    assert!(scale > 0.0, "{what}: burn's gradient is all zero");
    for (i, (a, b)) in ours.iter().zip(burn).enumerate() {
        assert!(
            (a - b).abs() <= 1e-4 * scale + 1e-3 * b.abs(),
            "{what}[{i}]: kernels {a}, burn {b} (largest {scale})"
        );
    }
}

fn assert_params_agree(what: &str, ours: &[f32], reference: &[f32], grads: &[f32], lr: f32) {
    let scale = grads.iter().fold(0.0f32, |m, g| m.max(g.abs()));
    for (i, ((a, b), g)) in ours.iter().zip(reference).zip(grads).enumerate() {
        let tol = if g.abs() >= 1e-4 * scale {
            1e-6
        } else {
            2.0 * lr + 1e-6
        };
        assert!(
            (a - b).abs() <= tol,
            "{what}[{i}]: kernels {a}, reference {b} (gradient {g})"
        );
    }
}

#[test]
fn one_sac_update_agrees_with_burns_autodiff() {
    let cfg = AgentConfig {
        hidden: vec![16, 16],
        zero_init_actor: false,
        init_temperature: 0.2,
        backup_entropy: true,
        critics: 2,
        target_subset: 2,
        ..Default::default()
    };
    let mut agent = Agent::new(cfg.clone(), O, A, 7).with_residual(SCALE);
    // Targets that differ from the critics, as they do after training began.
    let mut r = Rng::new(5);
    for t in agent.targets.iter_mut() {
        for p in t.params.iter_mut() {
            *p += 0.05 * r.uniform(-1.0, 1.0) as f32;
        }
    }
    let mut b = Batch::new(N, O, A);
    for v in b.obs.iter_mut().chain(b.next_obs.iter_mut()) {
        *v = r.uniform(-1.0, 1.0) as f32;
    }
    for v in b.act.iter_mut() {
        *v = r.uniform(-1.0, 1.0) as f32;
    }
    for (rw, d) in b.reward.iter_mut().zip(b.discount.iter_mut()) {
        *rw = r.uniform(-1.0, 1.0) as f32;
        *d = if r.unit() < 0.2 { 0.0 } else { 0.97 };
    }
    // The noise the update will draw: next-state sampling, then the actor's sampling.
    let mut noise = agent.rng.clone();
    let eps_next: Vec<f32> = (0..N * A).map(|_| noise.normal() as f32).collect();
    let eps_actor: Vec<f32> = (0..N * A).map(|_| noise.normal() as f32).collect();
    let before = agent.clone();
    agent.update(&b, false);

    let device = Device::flex().autodiff();
    let obs = leaf(&b.obs, [N, O], &device, false);
    let next_obs = leaf(&b.next_obs, [N, O], &device, false);
    // The critics read executed actions as (a - b) / scale.
    let act = (leaf(&b.act, [N, A], &device, false) - obs.clone().narrow(1, FLAT, A)) / SCALE;
    let reward = leaf(&b.reward, [N, 1], &device, false);
    let discount = leaf(&b.discount, [N, 1], &device, false);
    let alpha = before.temperature();

    // Targets: y = r + d (min_k Q'_k(s', a') - alpha log pi(a'|s')), no gradient.
    let actor0 = BurnNet::from(&before.actor, &device, false);
    let (a_next, logp_next) = policy(&actor0, &next_obs, &leaf(&eps_next, [N, A], &device, false));
    let q_next: Vec<Tensor<2>> = before
        .targets
        .iter()
        .map(|t| {
            BurnNet::from(t, &device, false)
                .forward(Tensor::cat(vec![next_obs.clone(), a_next.clone()], 1))
        })
        .collect();
    let q_min = Tensor::cat(q_next, 1).min_dim(1);
    let y = (reward + discount * (q_min - logp_next * alpha)).detach();

    // Critics: mean squared error, one Adam step each.
    let mut critics_after = Vec::new();
    for (k, c) in before.critics.iter().enumerate() {
        let net = BurnNet::from(c, &device, true);
        let q = net.forward(Tensor::cat(vec![obs.clone(), act.clone()], 1));
        let loss = (q - y.clone()).powi_scalar(2).mean();
        let g = net.grads(&loss.backward());
        assert_grads_agree(&format!("critic {k} gradient"), agent.critic_grads(k), &g);
        let mut p = c.params.clone();
        let (mut m, mut v) = (vec![0.0; p.len()], vec![0.0; p.len()]);
        adam(&mut p, &g, &mut m, &mut v, cfg.critic_lr, 1);
        assert_params_agree(
            &format!("critic {k}"),
            &agent.critics[k].params,
            &p,
            &g,
            cfg.critic_lr,
        );
        let mut updated = c.clone();
        updated.params = p;
        critics_after.push(updated);
    }

    // Actor: mean(alpha log pi - mean_k Q_k(s, a)) through the updated critics (the kernels'
    // own, compared above: a parameter whose gradient is at the noise floor may step either way
    // in the two implementations, and the actor's gradient is checked on its own here).
    let actor = BurnNet::from(&before.actor, &device, true);
    let (a_pi, logp) = policy(&actor, &obs, &leaf(&eps_actor, [N, A], &device, false));
    let sa = Tensor::cat(vec![obs.clone(), a_pi], 1);
    let q_mean = agent
        .critics
        .iter()
        .map(|c| BurnNet::from(c, &device, false).forward(sa.clone()))
        .reduce(|x, y| x + y)
        .expect("two critics")
        / agent.critics.len() as f32;
    let loss = (logp.clone() * alpha - q_mean).mean();
    let grads = loss.backward();
    let g = actor.grads(&grads);
    assert_grads_agree("actor gradient", agent.actor_grads(), &g);
    let mut p = before.actor.params.clone();
    let (mut m, mut v) = (vec![0.0; p.len()], vec![0.0; p.len()]);
    adam(&mut p, &g, &mut m, &mut v, cfg.actor_lr, 1);
    assert_params_agree("actor", &agent.actor.params, &p, &g, cfg.actor_lr);

    // Temperature: d/d log_alpha of -log_alpha (log pi + target entropy).
    let mean_logp = values(logp.mean())[0];
    let g_alpha = -(mean_logp + cfg.target_entropy_per_dim * A as f32);
    let mut la = [before.log_alpha];
    let (mut m, mut v) = ([0.0], [0.0]);
    adam(&mut la, &[g_alpha], &mut m, &mut v, cfg.temperature_lr, 1);
    assert!(
        (agent.log_alpha - la[0]).abs() <= 1e-6,
        "log alpha: kernels {}, reference {}",
        agent.log_alpha,
        la[0]
    );

    // Target critics follow the updated critics by Polyak averaging.
    for (k, (t, c)) in before.targets.iter().zip(&critics_after).enumerate() {
        for (i, (tp, cp)) in t.params.iter().zip(&c.params).enumerate() {
            let want = tp + cfg.tau * (cp - tp);
            let got = agent.targets[k].params[i];
            assert!(
                (got - want).abs() <= 1e-6 + cfg.tau * 2.0 * cfg.critic_lr,
                "target {k}[{i}]: {got} vs {want}"
            );
        }
    }
}
