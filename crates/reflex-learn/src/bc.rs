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

#[cfg(test)]
mod tests {
    use super::*;

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
