//! Batched MLPs with a fused forward and backward pass, Adam, and Polyak averaging.
//!
//! The training step is compute-bound (a full SAC update on batch 256 with [256, 256] networks
//! is about 0.64 GFLOP), so it runs on `matrixmultiply`'s single-precision GEMM, which reaches
//! 82 GFLOPS per core on 256x256x256 products on this machine. Every network keeps its
//! parameters in one flat `Vec<f32>`, so Adam, Polyak averaging, checkpoints and weight
//! publication are loops over one slice.
//!
//! A hidden block is `relu(layer_norm(x W + b))`; the output layer is `x W + b`. `W` is stored
//! `[in][out]` row-major (so the forward product needs no transpose); export to the runtime's
//! `torch.nn.Linear` layout transposes once.

// The kernels walk rows and columns of several matrices together.
#![allow(clippy::needless_range_loop, clippy::too_many_arguments)]

use crate::rng::Rng;
use reflex_policy::{Activation, LayerParams, Mlp};

const LN_EPS: f32 = 1e-5;

/// `C = A B + beta * C` for row/column-strided matrices (`A` is m x k, `B` k x n; `C` dense
/// row-major m x n).
pub(crate) fn sgemm(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    rsa: usize,
    csa: usize,
    b: &[f32],
    rsb: usize,
    csb: usize,
    beta: f32,
    c: &mut [f32],
) {
    if m == 0 || n == 0 {
        return;
    }
    // Bounds of every element the kernel touches, checked once here.
    if k > 0 {
        assert!(
            (m - 1) * rsa + (k - 1) * csa < a.len(),
            "sgemm: A too short"
        );
        assert!(
            (k - 1) * rsb + (n - 1) * csb < b.len(),
            "sgemm: B too short"
        );
    }
    assert!(m * n <= c.len(), "sgemm: C too short");
    // SAFETY: the asserts above keep every index the kernel forms inside the three slices, and
    // `c` does not alias `a` or `b` (it is borrowed mutably).
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            rsa as isize,
            csa as isize,
            b.as_ptr(),
            rsb as isize,
            csb as isize,
            beta,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct LayerAt {
    inputs: usize,
    outputs: usize,
    w: usize,
    b: usize,
    /// LayerNorm gain and bias offsets (hidden layers of a normalised network).
    norm: Option<(usize, usize)>,
}

/// Sum with eight independent lanes (so the compiler can vectorise the reduction).
#[inline]
pub(crate) fn sum_lanes(x: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let mut it = x.chunks_exact(8);
    for c in &mut it {
        for l in 0..8 {
            acc[l] += c[l];
        }
    }
    acc.iter().sum::<f32>() + it.remainder().iter().sum::<f32>()
}

/// Dot product with eight independent lanes.
#[inline]
pub(crate) fn dot_lanes(x: &[f32], y: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let mut ix = x.chunks_exact(8);
    let mut iy = y.chunks_exact(8);
    for (a, b) in (&mut ix).zip(&mut iy) {
        for l in 0..8 {
            acc[l] += a[l] * b[l];
        }
    }
    let tail: f32 = ix
        .remainder()
        .iter()
        .zip(iy.remainder())
        .map(|(a, b)| a * b)
        .sum();
    acc.iter().sum::<f32>() + tail
}

/// LayerNorm + ReLU of one row in place; keeps x-hat, returns 1/std.
#[inline]
fn ln_forward_row(row: &mut [f32], xhat: &mut [f32], gain: &[f32], shift: &[f32]) -> f32 {
    let h = row.len() as f32;
    let mean = sum_lanes(row) / h;
    for v in row.iter_mut() {
        *v -= mean;
    }
    let var = dot_lanes(row, row) / h;
    let inv = 1.0 / (var + LN_EPS).sqrt();
    for (((v, xh), g), s) in row.iter_mut().zip(xhat.iter_mut()).zip(gain).zip(shift) {
        let z = *v * inv;
        *xh = z;
        *v = (g * z + s).max(0.0);
    }
    inv
}

/// Backward of ReLU(LayerNorm(z)) for one row: `d` holds d(output) and becomes d(z);
/// accumulates the gain and shift gradients when given.
#[inline]
fn ln_backward_row(
    d: &mut [f32],
    y: &[f32],
    xhat: &[f32],
    gain: &[f32],
    inv: f32,
    grads: Option<(&mut [f32], &mut [f32])>,
) {
    for (dv, yv) in d.iter_mut().zip(y) {
        *dv = if *yv > 0.0 { *dv } else { 0.0 };
    }
    if let Some((gg, gb)) = grads {
        for (((a, b), dv), x) in gg.iter_mut().zip(gb.iter_mut()).zip(d.iter()).zip(xhat) {
            *a += dv * x;
            *b += dv;
        }
    }
    for (dv, g) in d.iter_mut().zip(gain) {
        *dv *= g;
    }
    let s1 = sum_lanes(d);
    let s2 = dot_lanes(d, xhat);
    let h = d.len() as f32;
    let k = inv / h;
    for (dv, x) in d.iter_mut().zip(xhat) {
        *dv = k * (h * *dv - s1 - x * s2);
    }
}

/// Smallest input spread the input normalisation assumes: inputs that barely move in the
/// demonstrations (a tool orientation held fixed) are not blown up when they move later. 0.1
/// measured best among 0.05, 0.1 and 0.2 for the cloned bases of reach and pick_cube.
pub const INPUT_MIN_STD: f32 = 0.1;

/// A fixed per-input affine map `(x - mean) * inv_std`, fitted once on demonstrations: the
/// networks train on inputs of comparable scale (a target 2 cm away and a joint angle of 1 rad
/// are otherwise worlds apart), and export folds the map into the first layer, so the runtime
/// reads raw observations.
#[derive(Clone, Debug, PartialEq)]
pub struct Normaliser {
    /// Per-input shift.
    pub mean: Vec<f32>,
    /// Per-input scale (1 / standard deviation, floored).
    pub inv_std: Vec<f32>,
}

impl Normaliser {
    /// Leaves `dim` inputs unchanged.
    pub fn identity(dim: usize) -> Self {
        Self {
            mean: vec![0.0; dim],
            inv_std: vec![1.0; dim],
        }
    }

    /// Fits rows of `dim` values; a standard deviation below `min_std` counts as `min_std`, so an
    /// input that barely moves in the data is not blown up when it moves later.
    pub fn fit(rows: &[f32], dim: usize, min_std: f32) -> Self {
        let n = rows.len() / dim.max(1);
        if n == 0 {
            return Self::identity(dim);
        }
        let mut mean = vec![0.0f64; dim];
        for r in rows.chunks_exact(dim) {
            for (m, v) in mean.iter_mut().zip(r) {
                *m += f64::from(*v);
            }
        }
        mean.iter_mut().for_each(|m| *m /= n as f64);
        let mut var = vec![0.0f64; dim];
        for r in rows.chunks_exact(dim) {
            for ((s, m), v) in var.iter_mut().zip(&mean).zip(r) {
                *s += (f64::from(*v) - m).powi(2);
            }
        }
        Self {
            mean: mean.iter().map(|m| *m as f32).collect(),
            inv_std: var
                .iter()
                .map(|s| 1.0 / ((s / n as f64).sqrt() as f32).max(min_std))
                .collect(),
        }
    }

    /// Inputs per row.
    pub fn dim(&self) -> usize {
        self.mean.len()
    }

    /// Normalises rows of [`Normaliser::dim`] values in place.
    pub fn apply(&self, rows: &mut [f32]) {
        for r in rows.chunks_exact_mut(self.dim()) {
            for ((v, m), k) in r.iter_mut().zip(&self.mean).zip(&self.inv_std) {
                *v = (*v - m) * k;
            }
        }
    }
}

/// A multilayer perceptron trained in batches.
#[derive(Clone, Debug, PartialEq)]
pub struct Net {
    dims: Vec<usize>,
    layer_norm: bool,
    layers: Vec<LayerAt>,
    /// Every parameter, layer by layer: `W [in][out]`, `b`, then LayerNorm gain and bias.
    pub params: Vec<f32>,
}

/// Activations a forward pass keeps for its backward pass; reused between calls.
#[derive(Clone, Debug, Default)]
pub struct Tape {
    batch: usize,
    /// Input of each layer (`xs[0]` is the network input), `batch x inputs`.
    xs: Vec<Vec<f32>>,
    /// Normalised pre-activations of hidden layers (LayerNorm's x-hat).
    xhat: Vec<Vec<f32>>,
    /// 1 / std of each row of each hidden layer.
    inv_std: Vec<Vec<f32>>,
    /// Network output, `batch x outputs`.
    pub out: Vec<f32>,
    /// Gradient scratch for the backward pass.
    d_a: Vec<f32>,
    d_b: Vec<f32>,
}

impl Tape {
    /// The output of the last forward pass (`batch x outputs`, row-major).
    pub fn output(&self) -> &[f32] {
        &self.out
    }
}

impl Net {
    /// A network with layer widths `dims` (inputs first), LayerNorm on hidden layers when
    /// `layer_norm`, weights and biases drawn like `torch.nn.Linear` (uniform in +-1/sqrt(in)).
    pub fn new(dims: &[usize], layer_norm: bool, rng: &mut Rng) -> Self {
        assert!(dims.len() >= 2, "a network needs at least one layer");
        let mut layers = Vec::new();
        let mut at = 0;
        let n = dims.len() - 1;
        for (i, w) in dims.windows(2).enumerate() {
            let (inputs, outputs) = (w[0], w[1]);
            let lw = at;
            let lb = lw + inputs * outputs;
            at = lb + outputs;
            let norm = if layer_norm && i + 1 < n {
                let g = at;
                at += 2 * outputs;
                Some((g, g + outputs))
            } else {
                None
            };
            layers.push(LayerAt {
                inputs,
                outputs,
                w: lw,
                b: lb,
                norm,
            });
        }
        let mut params = vec![0.0; at];
        for l in &layers {
            let bound = 1.0 / (l.inputs as f64).sqrt();
            for v in &mut params[l.w..l.b + l.outputs] {
                *v = rng.uniform(-bound, bound) as f32;
            }
            if let Some((g, _)) = l.norm {
                params[g..g + l.outputs].fill(1.0);
            }
        }
        Self {
            dims: dims.to_vec(),
            layer_norm,
            layers,
            params,
        }
    }

    /// Layer widths, inputs first.
    pub fn dims(&self) -> &[usize] {
        &self.dims
    }

    /// Inputs per sample.
    pub fn input_dim(&self) -> usize {
        self.dims[0]
    }

    /// Outputs per sample.
    pub fn output_dim(&self) -> usize {
        *self.dims.last().unwrap_or(&0)
    }

    /// Whether hidden layers are normalised.
    pub fn layer_norm(&self) -> bool {
        self.layer_norm
    }

    /// Number of parameters.
    pub fn num_params(&self) -> usize {
        self.params.len()
    }

    /// Sets the output layer's weights to zero and its bias to `bias` (length = outputs): a
    /// residual starts exactly at "no correction".
    pub fn zero_output_layer(&mut self, bias: &[f32]) {
        let l = *self.layers.last().expect("at least one layer");
        self.params[l.w..l.b].fill(0.0);
        self.params[l.b..l.b + l.outputs].copy_from_slice(bias);
    }

    /// Sets output columns `cols` of the last layer to a constant: zero weights, bias `bias`.
    pub fn set_output_columns(&mut self, cols: std::ops::Range<usize>, bias: f32) {
        let l = *self.layers.last().expect("at least one layer");
        for k in 0..l.inputs {
            self.params[l.w + k * l.outputs + cols.start..l.w + k * l.outputs + cols.end].fill(0.0);
        }
        self.params[l.b + cols.start..l.b + cols.end].fill(bias);
    }

    /// Folds `norm` into the first layer: afterwards the network reads raw inputs and computes
    /// what it computed before on normalised ones (`W' = diag(k) W`, `b' = b - (m k) W`).
    pub fn fold_input(&mut self, norm: &Normaliser) {
        let l = self.layers[0];
        assert_eq!(norm.dim(), l.inputs, "normaliser width");
        for i in 0..l.inputs {
            let (m, k) = (norm.mean[i], norm.inv_std[i]);
            for j in 0..l.outputs {
                let w = self.params[l.w + i * l.outputs + j] * k;
                self.params[l.w + i * l.outputs + j] = w;
                self.params[l.b + j] -= m * w;
            }
        }
    }

    /// Forward pass for `batch` rows of `input`, keeping what backward needs in `tape`.
    pub fn forward(&self, input: &[f32], batch: usize, tape: &mut Tape) {
        let nl = self.layers.len();
        assert_eq!(
            input.len(),
            batch * self.dims[0],
            "input is not batch x inputs"
        );
        if tape.xs.len() != nl || tape.batch != batch {
            tape.batch = batch;
            tape.xs = self
                .layers
                .iter()
                .map(|l| vec![0.0; batch * l.inputs])
                .collect();
            tape.xhat = self
                .layers
                .iter()
                .map(|l| vec![0.0; batch * l.outputs])
                .collect();
            tape.inv_std = self.layers.iter().map(|_| vec![0.0; batch]).collect();
            tape.out = vec![0.0; batch * self.output_dim()];
            let widest = self.dims.iter().copied().max().unwrap_or(0);
            tape.d_a = vec![0.0; batch * widest];
            tape.d_b = vec![0.0; batch * widest];
        }
        tape.xs[0].copy_from_slice(input);
        let p = &self.params;
        for (i, l) in self.layers.iter().enumerate() {
            let (head, tail) = tape.xs.split_at_mut(i + 1);
            let x = &head[i];
            let y: &mut [f32] = if i + 1 == nl {
                &mut tape.out
            } else {
                &mut tail[0]
            };
            let bias = &p[l.b..l.b + l.outputs];
            for row in y.chunks_exact_mut(l.outputs) {
                row.copy_from_slice(bias);
            }
            sgemm(
                batch,
                l.inputs,
                l.outputs,
                x,
                l.inputs,
                1,
                &p[l.w..l.b],
                l.outputs,
                1,
                1.0,
                y,
            );
            if i + 1 == nl {
                break;
            }
            match l.norm {
                Some((g, be)) => {
                    let gain = &p[g..g + l.outputs];
                    let shift = &p[be..be + l.outputs];
                    let xhat = &mut tape.xhat[i];
                    let inv = &mut tape.inv_std[i];
                    for (r, (row, xh)) in y
                        .chunks_exact_mut(l.outputs)
                        .zip(xhat.chunks_exact_mut(l.outputs))
                        .enumerate()
                    {
                        inv[r] = ln_forward_row(row, xh, gain, shift);
                    }
                }
                None => y.iter_mut().for_each(|v| *v = v.max(0.0)),
            }
        }
    }

    /// Backward pass from `d_out` (gradient of the loss with respect to the last forward's
    /// output). Writes parameter gradients into `grads` when given (overwriting) and the
    /// gradient with respect to the input into `d_input` when given.
    pub fn backward(
        &self,
        tape: &mut Tape,
        d_out: &[f32],
        mut grads: Option<&mut [f32]>,
        d_input: Option<&mut [f32]>,
    ) {
        let batch = tape.batch;
        let nl = self.layers.len();
        assert_eq!(
            d_out.len(),
            batch * self.output_dim(),
            "d_out is not batch x outputs"
        );
        if let Some(g) = grads.as_deref() {
            assert_eq!(
                g.len(),
                self.params.len(),
                "grads do not match the parameters"
            );
        }
        let p = &self.params;
        let Tape {
            xs,
            xhat,
            inv_std,
            d_a,
            d_b,
            ..
        } = tape;
        // `dz` holds the gradient at the current layer's pre-activation output.
        d_a[..d_out.len()].copy_from_slice(d_out);
        let mut dz_is_a = true;
        let mut d_input = d_input;
        for i in (0..nl).rev() {
            let l = self.layers[i];
            let (dz, dx) = if dz_is_a {
                (&mut d_a[..batch * l.outputs], &mut d_b[..batch * l.inputs])
            } else {
                (&mut d_b[..batch * l.outputs], &mut d_a[..batch * l.inputs])
            };
            if i + 1 < nl {
                // dz currently holds d(post-activation); turn it into d(pre-normalisation).
                let y = &xs[i + 1];
                match l.norm {
                    Some((g, be)) => {
                        let h = l.outputs;
                        let gain = &p[g..g + h];
                        let xh = &xhat[i];
                        let inv = &inv_std[i];
                        if let Some(gr) = grads.as_deref_mut() {
                            gr[g..g + h].fill(0.0);
                            gr[be..be + h].fill(0.0);
                        }
                        for r in 0..batch {
                            let row = &mut dz[r * h..(r + 1) * h];
                            let yr = &y[r * h..(r + 1) * h];
                            let xr = &xh[r * h..(r + 1) * h];
                            let gains = grads.as_deref_mut().map(|gr| {
                                let (a, b) = gr.split_at_mut(be);
                                (&mut a[g..g + h], &mut b[..h])
                            });
                            ln_backward_row(row, yr, xr, gain, inv[r], gains);
                        }
                    }
                    None => {
                        for (d, v) in dz.iter_mut().zip(y.iter()) {
                            if *v <= 0.0 {
                                *d = 0.0;
                            }
                        }
                    }
                }
            }
            let x = &xs[i];
            if let Some(gr) = grads.as_deref_mut() {
                // dW = x^T dz  (in x out)
                sgemm(
                    l.inputs,
                    batch,
                    l.outputs,
                    x,
                    1,
                    l.inputs,
                    dz,
                    l.outputs,
                    1,
                    0.0,
                    &mut gr[l.w..l.b],
                );
                let db = &mut gr[l.b..l.b + l.outputs];
                db.fill(0.0);
                for row in dz.chunks_exact(l.outputs) {
                    for (a, v) in db.iter_mut().zip(row) {
                        *a += v;
                    }
                }
            }
            if i == 0 && d_input.is_none() {
                break;
            }
            // dx = dz W^T  (batch x in)
            let target: &mut [f32] = if i == 0 {
                d_input.take().expect("checked above")
            } else {
                dx
            };
            assert_eq!(
                target.len(),
                batch * l.inputs,
                "d_input is not batch x inputs"
            );
            sgemm(
                batch,
                l.outputs,
                l.inputs,
                dz,
                l.outputs,
                1,
                &p[l.w..l.b],
                1,
                l.outputs,
                0.0,
                target,
            );
            dz_is_a = !dz_is_a;
        }
    }

    /// `self = (1 - tau) self + tau other` (Polyak averaging of a target network).
    pub fn polyak_from(&mut self, other: &Net, tau: f32) {
        assert_eq!(
            self.params.len(),
            other.params.len(),
            "networks differ in shape"
        );
        for (t, o) in self.params.iter_mut().zip(&other.params) {
            *t += tau * (o - *t);
        }
    }

    /// The network for the control tick (`torch.nn.Linear` layout), keeping the first
    /// `outputs` outputs of the last layer and applying `output` to them.
    pub fn to_runtime(&self, outputs: usize, output: Activation) -> Mlp {
        let nl = self.layers.len();
        let p = &self.params;
        let layers = self
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let out = if i + 1 == nl {
                    outputs.min(l.outputs)
                } else {
                    l.outputs
                };
                let mut weight = vec![0.0; out * l.inputs];
                for o in 0..out {
                    for k in 0..l.inputs {
                        weight[o * l.inputs + k] = p[l.w + k * l.outputs + o];
                    }
                }
                LayerParams {
                    inputs: l.inputs,
                    outputs: out,
                    weight,
                    bias: p[l.b..l.b + out].to_vec(),
                    norm: l
                        .norm
                        .map(|(g, be)| (p[g..g + out].to_vec(), p[be..be + out].to_vec())),
                }
            })
            .collect();
        Mlp::from_layers(layers, Activation::Relu, output)
            .unwrap_or_else(|e| unreachable!("widths chain by construction: {e}"))
    }

    /// Copies weights in from a runtime network of the same shape (e.g. a saved base policy).
    pub fn from_runtime(mlp: &Mlp) -> Self {
        let src = mlp.layer_params();
        let dims: Vec<usize> = mlp.dims();
        let layer_norm = src.first().is_some_and(|l| l.norm.is_some());
        let mut net = Net::new(&dims, layer_norm, &mut Rng::new(0));
        for (l, s) in net.layers.clone().iter().zip(&src) {
            for o in 0..l.outputs {
                for k in 0..l.inputs {
                    net.params[l.w + k * l.outputs + o] = s.weight[o * l.inputs + k];
                }
            }
            net.params[l.b..l.b + l.outputs].copy_from_slice(&s.bias);
            if let (Some((g, be)), Some((sg, sb))) = (l.norm, &s.norm) {
                net.params[g..g + l.outputs].copy_from_slice(sg);
                net.params[be..be + l.outputs].copy_from_slice(sb);
            }
        }
        net
    }
}

/// Adam (Kingma and Ba) over a flat parameter vector.
#[derive(Clone, Debug, PartialEq)]
pub struct Adam {
    /// Learning rate.
    pub lr: f32,
    /// First-moment decay.
    pub beta1: f32,
    /// Second-moment decay.
    pub beta2: f32,
    /// Denominator guard.
    pub eps: f32,
    /// First moments.
    pub m: Vec<f32>,
    /// Second moments.
    pub v: Vec<f32>,
    /// Steps taken.
    pub t: u64,
}

impl Adam {
    /// Optimiser state for `n` parameters.
    pub fn new(n: usize, lr: f32) -> Self {
        Self {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            m: vec![0.0; n],
            v: vec![0.0; n],
            t: 0,
        }
    }

    /// One descent step on `params` with gradients `grads`.
    pub fn step(&mut self, params: &mut [f32], grads: &[f32]) {
        assert_eq!(
            params.len(),
            self.m.len(),
            "optimiser built for another size"
        );
        assert_eq!(grads.len(), self.m.len(), "gradient of another size");
        self.t += 1;
        let t = self.t as i32;
        let bc1 = 1.0 - self.beta1.powi(t);
        let bc2 = 1.0 - self.beta2.powi(t);
        let step = self.lr / bc1;
        let (b1, b2, eps) = (self.beta1, self.beta2, self.eps);
        let sq2 = bc2.sqrt();
        for (((p, g), m), v) in params
            .iter_mut()
            .zip(grads)
            .zip(self.m.iter_mut())
            .zip(self.v.iter_mut())
        {
            *m = b1 * *m + (1.0 - b1) * g;
            *v = b2 * *v + (1.0 - b2) * g * g;
            *p -= step * *m / (v.sqrt() / sq2 + eps);
        }
    }
}

#[cfg(test)]
mod tests {

    /// A network trained on normalised inputs and folded computes the same on raw ones.
    #[test]
    fn folding_the_normaliser_is_exact() {
        let mut rng = Rng::new(5);
        let net = Net::new(&[4, 16, 3], true, &mut rng);
        let raw: Vec<f32> = (0..4 * 8)
            .map(|i| (i as f32 * 0.37).sin() * 3.0 + 1.0)
            .collect();
        let norm = Normaliser::fit(&raw, 4, 0.05);
        let mut normed = raw.clone();
        norm.apply(&mut normed);
        let mut tape = Tape::default();
        net.forward(&normed, 8, &mut tape);
        let want = tape.output().to_vec();
        let mut folded = net.clone();
        folded.fold_input(&norm);
        folded.forward(&raw, 8, &mut tape);
        for (a, b) in want.iter().zip(tape.output()) {
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        }
        // The fitted map centres and scales: each normalised column has mean 0 and spread 1.
        for c in 0..4 {
            let col: Vec<f32> = normed.chunks(4).map(|r| r[c]).collect();
            let m = col.iter().sum::<f32>() / 8.0;
            let v = col.iter().map(|x| (x - m).powi(2)).sum::<f32>() / 8.0;
            assert!(
                m.abs() < 1e-5 && (v - 1.0).abs() < 1e-3,
                "column {c}: {m} {v}"
            );
        }
    }

    use super::*;

    fn loss(net: &Net, x: &[f32], batch: usize, w: &[f32]) -> f64 {
        let mut tape = Tape::default();
        net.forward(x, batch, &mut tape);
        tape.out
            .iter()
            .zip(w)
            .map(|(o, w)| (*o as f64) * (*w as f64))
            .sum()
    }

    /// Central difference of the loss along one coordinate, or None at a ReLU kink (where the
    /// two one-sided differences disagree and no derivative exists to compare with).
    fn numeric(f: &dyn Fn(f32) -> f64, h: f32) -> Option<f64> {
        let (p, z, m) = (f(h), f(0.0), f(-h));
        let (fwd, bwd) = ((p - z) / h as f64, (z - m) / h as f64);
        ((fwd - bwd).abs() <= 0.02 * (1.0 + fwd.abs())).then_some((p - m) / (2.0 * h as f64))
    }

    fn check_gradients(layer_norm: bool) {
        let mut rng = Rng::new(3);
        let net = Net::new(&[5, 8, 6, 3], layer_norm, &mut rng);
        let batch = 4;
        let x: Vec<f32> = (0..batch * 5)
            .map(|_| rng.uniform(-1.0, 1.0) as f32)
            .collect();
        let w: Vec<f32> = (0..batch * 3)
            .map(|_| rng.uniform(-1.0, 1.0) as f32)
            .collect();
        let mut tape = Tape::default();
        net.forward(&x, batch, &mut tape);
        let mut grads = vec![0.0; net.num_params()];
        let mut dx = vec![0.0; x.len()];
        net.backward(&mut tape, &w, Some(&mut grads), Some(&mut dx));
        let h = 2e-3f32;
        let (mut worst, mut compared) = (0.0f64, 0);
        let mut compare = |num: Option<f64>, got: f32| {
            if let Some(num) = num {
                compared += 1;
                worst = worst.max((num - got as f64).abs() / (0.05 + num.abs()));
            }
        };
        for i in 0..net.num_params() {
            let f = |d: f32| {
                let mut n = net.clone();
                n.params[i] += d;
                loss(&n, &x, batch, &w)
            };
            compare(numeric(&f, h), grads[i]);
        }
        for i in 0..x.len() {
            let f = |d: f32| {
                let mut xp = x.clone();
                xp[i] += d;
                loss(&net, &xp, batch, &w)
            };
            compare(numeric(&f, h), dx[i]);
        }
        let total = net.num_params() + x.len();
        assert!(
            compared * 10 >= total * 9,
            "only {compared} of {total} compared"
        );
        assert!(worst < 0.05, "largest relative gradient error {worst}");
    }

    #[test]
    fn gradients_match_finite_differences_with_layer_norm() {
        check_gradients(true);
    }

    #[test]
    fn gradients_match_finite_differences_without_layer_norm() {
        check_gradients(false);
    }

    #[test]
    fn runtime_export_computes_the_same_function() {
        let mut rng = Rng::new(5);
        let net = Net::new(&[6, 16, 16, 4], true, &mut rng);
        let x: Vec<f32> = (0..6).map(|_| rng.uniform(-1.0, 1.0) as f32).collect();
        let mut tape = Tape::default();
        net.forward(&x, 1, &mut tape);
        let mut mlp = net.to_runtime(4, Activation::Identity);
        let mut out = [0.0f32; 4];
        mlp.forward(&x, &mut out).unwrap();
        for (a, b) in out.iter().zip(&tape.out) {
            assert!((a - b).abs() < 1e-4, "{out:?} vs {:?}", tape.out);
        }
        // The first two outputs through tanh: the deterministic head of a policy.
        let mut head = net.to_runtime(2, Activation::Tanh);
        let mut out2 = [0.0f32; 2];
        head.forward(&x, &mut out2).unwrap();
        for j in 0..2 {
            assert!((out2[j] - tape.out[j].tanh()).abs() < 1e-4);
        }
        // And back.
        let back = Net::from_runtime(&mlp);
        assert_eq!(back.params.len(), net.params.len());
        for (a, b) in back.params.iter().zip(&net.params) {
            assert_eq!(a, b);
        }
    }

    #[test]
    fn adam_minimises_a_quadratic_and_polyak_moves_a_fraction() {
        let mut p = vec![3.0f32, -2.0];
        let mut adam = Adam::new(2, 0.05);
        for _ in 0..2000 {
            let g: Vec<f32> = p.iter().map(|v| 2.0 * v).collect();
            adam.step(&mut p, &g);
        }
        assert!(p.iter().all(|v| v.abs() < 1e-2), "{p:?}");

        let mut rng = Rng::new(1);
        let a = Net::new(&[2, 3, 1], false, &mut rng);
        let mut t = Net::new(&[2, 3, 1], false, &mut rng);
        let before = t.params.clone();
        t.polyak_from(&a, 0.25);
        for i in 0..before.len() {
            let want = 0.75 * before[i] + 0.25 * a.params[i];
            assert!((t.params[i] - want).abs() < 1e-6);
        }
    }

    #[test]
    fn zero_output_layer_outputs_the_bias_exactly() {
        let mut rng = Rng::new(9);
        let mut net = Net::new(&[4, 8, 3], true, &mut rng);
        net.zero_output_layer(&[0.0, 0.0, -1.5]);
        let x: Vec<f32> = (0..8).map(|_| rng.uniform(-3.0, 3.0) as f32).collect();
        let mut tape = Tape::default();
        net.forward(&x, 2, &mut tape);
        assert_eq!(tape.out, vec![0.0, 0.0, -1.5, 0.0, 0.0, -1.5]);
    }
}
