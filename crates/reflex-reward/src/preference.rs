//! A reward model learned from preferences between frames (RL-VLM-F's recipe): a judge (a VLM,
//! or the oracle) says which of two frames shows more progress; an ensemble of small networks
//! `r(s)` is fitted with the Bradley-Terry likelihood `P(a > b) = sigmoid(r(a) - r(b))`.
//!
//! The networks read state features (the flat observation of the frame's step), not pixels: the
//! judge looks at images, the reward model only needs to rank the states behind them, and a
//! state MLP trains in milliseconds on this CPU. The reward handed to the learner is the
//! ensemble's minimum (or mean), standardised on the frames seen so far and clipped, so a policy
//! cannot farm a region where one member is wrong.

use crate::parse::Preference;
use reflex_core::Rng;
use reflex_learn::nn::{Adam, Net, Normaliser, Tape, INPUT_MIN_STD};

/// A labelled pair of frames, as state features.
#[derive(Clone, Debug, PartialEq)]
pub struct LabelledPair {
    /// Features of the first frame.
    pub a: Vec<f32>,
    /// Features of the second frame.
    pub b: Vec<f32>,
    /// Which one the judge preferred.
    pub label: Preference,
}

/// Training settings of the preference model.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PreferenceConfig {
    /// Ensemble size.
    pub members: usize,
    /// Hidden widths.
    pub hidden: Vec<usize>,
    /// Adam step size.
    pub lr: f32,
    /// Pairs per gradient step.
    pub batch_pairs: usize,
    /// Gradient steps per round of new labels.
    pub steps_per_round: usize,
    /// The learned reward is clipped to this many standard deviations.
    pub clip_std: f32,
}

impl Default for PreferenceConfig {
    fn default() -> Self {
        Self {
            members: 3,
            hidden: vec![64, 64],
            lr: 1e-3,
            batch_pairs: 64,
            steps_per_round: 300,
            clip_std: 3.0,
        }
    }
}

/// The Bradley-Terry loss of one pair, `-log sigmoid(r_win - r_lose)`, and its gradient with
/// respect to `r_a` (the gradient for `r_b` is its negative).
pub fn bradley_terry(r_a: f32, r_b: f32, label: Preference) -> (f32, f32) {
    // z = r_win - r_lose; loss = softplus(-z); d loss / d z = -sigmoid(-z).
    let (z, sign) = match label {
        Preference::First => (r_a - r_b, 1.0),
        Preference::Second => (r_b - r_a, -1.0),
    };
    let loss = if z > 20.0 {
        (-z).exp()
    } else if z < -20.0 {
        -z
    } else {
        (-z).exp().ln_1p()
    };
    let s = 1.0 / (1.0 + z.exp());
    (loss, -s * sign)
}

/// An ensemble of reward networks trained on preference pairs.
pub struct PreferenceModel {
    cfg: PreferenceConfig,
    dim: usize,
    nets: Vec<Net>,
    opts: Vec<Adam>,
    norm: Normaliser,
    /// Running statistics of the ensemble output, for standardisation.
    out_mean: f32,
    out_std: f32,
    rng: Rng,
    tape: Tape,
    x: Vec<f32>,
    d: Vec<f32>,
    grads: Vec<f32>,
}

impl PreferenceModel {
    /// An untrained ensemble for features of width `dim`.
    pub fn new(cfg: PreferenceConfig, dim: usize, seed: u64) -> Self {
        assert!(cfg.members > 0, "an ensemble needs members");
        let mut rng = Rng::new(seed);
        let mut dims = vec![dim];
        dims.extend(&cfg.hidden);
        dims.push(1);
        let nets: Vec<Net> = (0..cfg.members)
            .map(|_| Net::new(&dims, true, &mut rng))
            .collect();
        let opts = nets
            .iter()
            .map(|n| Adam::new(n.num_params(), cfg.lr))
            .collect();
        let grads = vec![0.0; nets[0].num_params()];
        Self {
            cfg,
            dim,
            nets,
            opts,
            norm: Normaliser::identity(dim),
            out_mean: 0.0,
            out_std: 1.0,
            rng,
            tape: Tape::default(),
            x: Vec::new(),
            d: Vec::new(),
            grads,
        }
    }

    /// Feature width.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Fits the input normalisation on `rows` of features (call before the first round).
    pub fn fit_inputs(&mut self, rows: &[f32]) {
        self.norm = Normaliser::fit(rows, self.dim, INPUT_MIN_STD);
    }

    /// One round of training on every label so far: `steps_per_round` steps per member, each on
    /// its own bootstrap draw of pairs. Returns the mean loss of the last steps.
    pub fn train(&mut self, pairs: &[LabelledPair]) -> f32 {
        if pairs.is_empty() {
            return f32::NAN;
        }
        let b = self.cfg.batch_pairs.min(pairs.len()).max(1);
        let dim = self.dim;
        let mut last = 0.0;
        for m in 0..self.nets.len() {
            let mut loss_sum = 0.0;
            for _ in 0..self.cfg.steps_per_round {
                // Rows 0..b are the first frames, b..2b the second.
                self.x.clear();
                self.x.resize(2 * b * dim, 0.0);
                let mut picked = Vec::with_capacity(b);
                for r in 0..b {
                    let i = (self.rng.next_u64() % pairs.len() as u64) as usize;
                    picked.push(i);
                    self.x[r * dim..(r + 1) * dim].copy_from_slice(&pairs[i].a);
                    self.x[(b + r) * dim..(b + r + 1) * dim].copy_from_slice(&pairs[i].b);
                }
                self.norm.apply(&mut self.x);
                self.nets[m].forward(&self.x, 2 * b, &mut self.tape);
                let out = self.tape.output();
                self.d.clear();
                self.d.resize(2 * b, 0.0);
                let mut loss = 0.0;
                for (r, &i) in picked.iter().enumerate() {
                    let (l, g) = bradley_terry(out[r], out[b + r], pairs[i].label);
                    loss += l;
                    self.d[r] = g / b as f32;
                    self.d[b + r] = -g / b as f32;
                }
                loss_sum = loss / b as f32;
                self.nets[m].backward(&mut self.tape, &self.d, Some(&mut self.grads), None);
                self.opts[m].step(&mut self.nets[m].params, &self.grads);
            }
            last += loss_sum;
        }
        last / self.nets.len() as f32
    }

    /// Raw outputs of every member for `rows` of features: `members x n`, member-major.
    pub fn members_raw(&mut self, rows: &[f32]) -> Vec<f32> {
        let n = rows.len() / self.dim;
        let mut x = rows.to_vec();
        self.norm.apply(&mut x);
        let mut out = Vec::with_capacity(self.nets.len() * n);
        for net in &self.nets {
            net.forward(&x, n, &mut self.tape);
            out.extend_from_slice(self.tape.output());
        }
        out
    }

    /// Re-estimates the standardisation from `rows` of features (frames seen so far).
    pub fn calibrate(&mut self, rows: &[f32]) {
        let n = rows.len() / self.dim;
        if n < 2 {
            return;
        }
        let raw = self.members_raw(rows);
        let min = self.ensemble_min(&raw, n);
        let mean = min.iter().sum::<f32>() / n as f32;
        let var = min.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / n as f32;
        self.out_mean = mean;
        self.out_std = var.sqrt().max(1e-6);
    }

    fn ensemble_min(&self, raw: &[f32], n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| {
                (0..self.nets.len())
                    .map(|m| raw[m * n + i])
                    .fold(f32::INFINITY, f32::min)
            })
            .collect()
    }

    /// The reward of `rows` of features: the ensemble minimum, standardised and clipped.
    pub fn reward(&mut self, rows: &[f32]) -> Vec<f32> {
        let n = rows.len() / self.dim;
        let raw = self.members_raw(rows);
        let c = self.cfg.clip_std;
        self.ensemble_min(&raw, n)
            .into_iter()
            .map(|v| ((v - self.out_mean) / self.out_std).clamp(-c, c))
            .collect()
    }
}

/// Spearman's rank correlation of two equally long samples (average ranks for ties).
pub fn spearman(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "samples of equal length");
    let (ra, rb) = (ranks(a), ranks(b));
    let n = a.len() as f64;
    let ma = ra.iter().sum::<f64>() / n;
    let mb = rb.iter().sum::<f64>() / n;
    let mut cov = 0.0;
    let mut va = 0.0;
    let mut vb = 0.0;
    for (x, y) in ra.iter().zip(&rb) {
        cov += (x - ma) * (y - mb);
        va += (x - ma).powi(2);
        vb += (y - mb).powi(2);
    }
    if va == 0.0 || vb == 0.0 {
        return 0.0;
    }
    cov / (va * vb).sqrt()
}

fn ranks(v: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&i, &j| v[i].total_cmp(&v[j]));
    let mut r = vec![0.0; v.len()];
    let mut k = 0;
    while k < idx.len() {
        let mut e = k;
        while e + 1 < idx.len() && v[idx[e + 1]] == v[idx[k]] {
            e += 1;
        }
        let avg = (k + e) as f64 / 2.0 + 1.0;
        for &i in &idx[k..=e] {
            r[i] = avg;
        }
        k = e + 1;
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Bradley-Terry gradient matches a central difference, for both labels, and the loss
    /// falls as the preferred frame's reward rises.
    #[test]
    fn bradley_terry_loss_and_gradient() {
        for label in [Preference::First, Preference::Second] {
            for (ra, rb) in [(0.3f32, -0.2f32), (-2.0, 1.5), (25.0, -3.0)] {
                let (_, g) = bradley_terry(ra, rb, label);
                let h = 1e-2;
                let num = (bradley_terry(ra + h, rb, label).0 - bradley_terry(ra - h, rb, label).0)
                    / (2.0 * h);
                assert!((g - num).abs() < 1e-3, "{label:?} {ra} {rb}: {g} vs {num}");
            }
        }
        let (l, _) = bradley_terry(0.0, 0.0, Preference::First);
        assert!((l - std::f32::consts::LN_2).abs() < 1e-6);
        assert!(bradley_terry(2.0, 0.0, Preference::First).0 < l);
        assert!(bradley_terry(2.0, 0.0, Preference::Second).0 > l);
    }

    #[test]
    fn spearman_of_known_samples() {
        assert!((spearman(&[1.0, 2.0, 3.0, 4.0], &[10.0, 20.0, 30.0, 40.0]) - 1.0).abs() < 1e-12);
        assert!((spearman(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]) + 1.0).abs() < 1e-12);
        // Monotone but not linear: still 1.
        assert!((spearman(&[1.0, 2.0, 3.0, 4.0], &[1.0, 8.0, 27.0, 64.0]) - 1.0).abs() < 1e-12);
        assert_eq!(ranks(&[5.0, 1.0, 5.0]), vec![2.5, 1.0, 2.5]);
    }

    /// Labels from a hidden progress function (with 10% of them flipped) teach the ensemble to
    /// rank new states by that progress.
    #[test]
    fn learns_to_rank_by_hidden_progress() {
        let dim = 5;
        let progress = |x: &[f32]| f64::from(-(x[0] - 0.3).abs() - 0.5 * (x[1] + 0.2).abs());
        let mut rng = Rng::new(9);
        let sample = |rng: &mut Rng| -> Vec<f32> {
            (0..dim).map(|_| rng.uniform(-1.0, 1.0) as f32).collect()
        };
        let pairs: Vec<LabelledPair> = (0..600)
            .map(|_| {
                let (a, b) = (sample(&mut rng), sample(&mut rng));
                let mut first = progress(&a) > progress(&b);
                if rng.uniform(0.0, 1.0) < 0.1 {
                    first = !first;
                }
                let label = if first {
                    Preference::First
                } else {
                    Preference::Second
                };
                LabelledPair { a, b, label }
            })
            .collect();
        let mut m = PreferenceModel::new(PreferenceConfig::default(), dim, 1);
        let rows: Vec<f32> = pairs.iter().flat_map(|p| p.a.clone()).collect();
        m.fit_inputs(&rows);
        m.train(&pairs);
        m.calibrate(&rows);
        let test: Vec<Vec<f32>> = (0..300).map(|_| sample(&mut rng)).collect();
        let flat: Vec<f32> = test.iter().flatten().copied().collect();
        let r = m.reward(&flat);
        let truth: Vec<f64> = test.iter().map(|x| progress(x)).collect();
        let rho = spearman(&r.iter().map(|v| f64::from(*v)).collect::<Vec<_>>(), &truth);
        assert!(rho > 0.9, "Spearman {rho}");
        assert!(r.iter().all(|v| v.abs() <= 3.0));
    }
}
