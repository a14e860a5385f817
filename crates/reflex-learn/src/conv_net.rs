//! The pixel encoder on this crate's own kernels: a batched forward pass that keeps what the
//! backward pass needs, and a backward pass that gives every parameter's gradient and takes the
//! gradient of the features from a critic. The same network as `reflex_policy::ConvEncoder`
//! and [`crate::pixels::PixelEncoder`] (burn), which is the reference its tests check against.
//!
//! Each convolution is `im2col` followed by one GEMM per image (`matrixmultiply`), in
//! PyTorch's channel-major layout, so the parameters are stored exactly as the weights file
//! holds them: per convolution the weight `[out, in, k, k]` and bias, then the head's weight
//! `[features, flat]` and bias, then LayerNorm's gain and shift, all in one flat `Vec<f32>` that
//! [`crate::nn::Adam`] steps. The backward pass recomputes `im2col` rather than storing it.
//! Images are split across threads (rayon) in both passes.

// The kernels walk rows and columns of several matrices together.
#![allow(clippy::needless_range_loop)]

use crate::nn::{dot_lanes, sgemm, sum_lanes};
use rayon::prelude::*;
use reflex_policy::{EncoderParams, EncoderShape};

const LN_EPS: f32 = 1e-5;

/// One convolution's geometry and the offsets of its parameters.
#[derive(Clone, Copy, Debug)]
struct Geom {
    in_h: usize,
    in_w: usize,
    in_ch: usize,
    out_h: usize,
    out_w: usize,
    out_ch: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    w: usize,
    b: usize,
}

impl Geom {
    fn cols(&self) -> usize {
        self.in_ch * self.kernel * self.kernel
    }
    fn pixels(&self) -> usize {
        self.out_h * self.out_w
    }
    fn in_len(&self) -> usize {
        self.in_h * self.in_w * self.in_ch
    }
    fn out_len(&self) -> usize {
        self.out_ch * self.pixels()
    }
}

/// The encoder's parameters and geometry.
#[derive(Clone, Debug)]
pub struct ConvNet {
    shape: EncoderShape,
    convs: Vec<Geom>,
    flat: usize,
    head_w: usize,
    head_b: usize,
    gain: usize,
    shift: usize,
    /// Every parameter, in the order of the module docs.
    pub params: Vec<f32>,
}

/// What a forward pass keeps for the backward pass.
#[derive(Clone, Debug, Default)]
pub struct ConvTape {
    batch: usize,
    /// The images as floats in [0, 1], channel-major, one after the other.
    input: Vec<f32>,
    /// Each convolution's output after ReLU, channel-major, image after image.
    acts: Vec<Vec<f32>>,
    xhat: Vec<f32>,
    inv_std: Vec<f32>,
    /// The features `[batch, features]`.
    out: Vec<f32>,
}

impl ConvTape {
    /// The features of the last forward pass, `[batch, features]` row-major.
    pub fn features(&self) -> &[f32] {
        &self.out
    }
}

impl ConvNet {
    /// The network holding `params` (checked; the message names the tensor at fault).
    pub fn from_params(p: &EncoderParams) -> Result<Self, String> {
        p.check()?;
        let outs = p.shape.layer_outputs()?;
        let mut convs = Vec::with_capacity(outs.len());
        let mut params = Vec::new();
        let (mut h, mut w, mut c) = (p.shape.height, p.shape.width, p.shape.channels);
        for ((s, (wt, b)), &(oh, ow, oc)) in p.shape.convs.iter().zip(&p.convs).zip(&outs) {
            let wo = params.len();
            params.extend_from_slice(wt);
            let bo = params.len();
            params.extend_from_slice(b);
            convs.push(Geom {
                in_h: h,
                in_w: w,
                in_ch: c,
                out_h: oh,
                out_w: ow,
                out_ch: oc,
                kernel: s.kernel,
                stride: s.stride,
                padding: s.padding,
                w: wo,
                b: bo,
            });
            (h, w, c) = (oh, ow, oc);
        }
        let head_w = params.len();
        params.extend_from_slice(&p.head_weight);
        let head_b = params.len();
        params.extend_from_slice(&p.head_bias);
        let gain = params.len();
        params.extend_from_slice(&p.norm_gain);
        let shift = params.len();
        params.extend_from_slice(&p.norm_shift);
        Ok(Self {
            shape: p.shape.clone(),
            convs,
            flat: h * w * c,
            head_w,
            head_b,
            gain,
            shift,
            params,
        })
    }

    /// The parameters in the tick's layout.
    pub fn to_params(&self) -> EncoderParams {
        let p = &self.params;
        let f = self.shape.features;
        EncoderParams {
            shape: self.shape.clone(),
            convs: self
                .convs
                .iter()
                .map(|g| (p[g.w..g.b].to_vec(), p[g.b..g.b + g.out_ch].to_vec()))
                .collect(),
            head_weight: p[self.head_w..self.head_b].to_vec(),
            head_bias: p[self.head_b..self.head_b + f].to_vec(),
            norm_gain: p[self.gain..self.gain + f].to_vec(),
            norm_shift: p[self.shift..self.shift + f].to_vec(),
        }
    }

    /// The shape.
    pub fn shape(&self) -> &EncoderShape {
        &self.shape
    }

    /// Number of parameters.
    pub fn num_params(&self) -> usize {
        self.params.len()
    }

    /// Features of `images` (interleaved bytes, one image after another) into `tape`.
    pub fn forward(&self, images: &[u8], tape: &mut ConvTape) {
        let s = &self.shape;
        let per = s.input_len();
        assert!(
            per > 0 && images.len().is_multiple_of(per),
            "images are not whole {}x{}x{} images",
            s.height,
            s.width,
            s.channels
        );
        let n = images.len() / per;
        tape.batch = n;
        tape.input.resize(n * per, 0.0);
        let (hw, c) = (s.height * s.width, s.channels);
        tape.input
            .par_chunks_mut(per)
            .zip(images.par_chunks(per))
            .for_each(|(out, img)| {
                for (p, px) in img.chunks_exact(c).enumerate() {
                    for (ch, &v) in px.iter().enumerate() {
                        out[ch * hw + p] = f32::from(v) * (1.0 / 255.0);
                    }
                }
            });
        tape.acts.resize(self.convs.len(), Vec::new());
        for (l, g) in self.convs.iter().enumerate() {
            let (before, rest) = tape.acts.split_at_mut(l);
            let x: &[f32] = if l == 0 { &tape.input } else { &before[l - 1] };
            let y = &mut rest[0];
            y.resize(n * g.out_len(), 0.0);
            let w = &self.params[g.w..g.b];
            let b = &self.params[g.b..g.b + g.out_ch];
            y.par_chunks_mut(g.out_len())
                .zip(x.par_chunks(g.in_len()))
                .for_each_init(
                    || vec![0.0f32; g.cols() * g.pixels()],
                    |cols, (yi, xi)| {
                        im2col(g, xi, cols);
                        sgemm(
                            g.out_ch,
                            g.cols(),
                            g.pixels(),
                            w,
                            g.cols(),
                            1,
                            cols,
                            g.pixels(),
                            1,
                            0.0,
                            yi,
                        );
                        for (row, bv) in yi.chunks_exact_mut(g.pixels()).zip(b) {
                            row.iter_mut().for_each(|v| *v = (*v + bv).max(0.0));
                        }
                    },
                );
        }
        // Head: z = x W^T + b, LayerNorm, tanh.
        let f = s.features;
        let x: &[f32] = tape.acts.last().map_or(&tape.input, |v| v);
        tape.out.resize(n * f, 0.0);
        sgemm(
            n,
            self.flat,
            f,
            x,
            self.flat,
            1,
            &self.params[self.head_w..self.head_b],
            1,
            self.flat,
            0.0,
            &mut tape.out,
        );
        tape.xhat.resize(n * f, 0.0);
        tape.inv_std.resize(n, 0.0);
        let bias = &self.params[self.head_b..self.head_b + f];
        let gain = &self.params[self.gain..self.gain + f];
        let shift = &self.params[self.shift..self.shift + f];
        for ((row, xh), inv) in tape
            .out
            .chunks_exact_mut(f)
            .zip(tape.xhat.chunks_exact_mut(f))
            .zip(tape.inv_std.iter_mut())
        {
            for (v, b) in row.iter_mut().zip(bias) {
                *v += b;
            }
            let mean = sum_lanes(row) / f as f32;
            row.iter_mut().for_each(|v| *v -= mean);
            let var = dot_lanes(row, row) / f as f32;
            *inv = 1.0 / (var + LN_EPS).sqrt();
            for (((v, x), g), sh) in row.iter_mut().zip(xh.iter_mut()).zip(gain).zip(shift) {
                *x = *v * *inv;
                *v = (g * *x + sh).tanh();
            }
        }
    }

    /// Backward pass from `d_features` (the gradient of a loss with respect to the last
    /// forward's features): writes every parameter's gradient into `grads` (overwriting).
    pub fn backward(&self, tape: &ConvTape, d_features: &[f32], grads: &mut [f32]) {
        let n = tape.batch;
        let f = self.shape.features;
        assert_eq!(
            d_features.len(),
            n * f,
            "d_features is not batch x features"
        );
        assert_eq!(
            grads.len(),
            self.params.len(),
            "grads do not match the parameters"
        );
        grads.fill(0.0);
        // Through tanh and LayerNorm: dz per row.
        let gain = &self.params[self.gain..self.gain + f];
        let mut dz = d_features.to_vec();
        {
            let (head, norm) = grads.split_at_mut(self.gain);
            let (g_gain, g_shift) = norm.split_at_mut(f);
            for r in 0..n {
                let row = &mut dz[r * f..(r + 1) * f];
                let y = &tape.out[r * f..(r + 1) * f];
                let xh = &tape.xhat[r * f..(r + 1) * f];
                for k in 0..f {
                    row[k] *= 1.0 - y[k] * y[k];
                    g_gain[k] += row[k] * xh[k];
                    g_shift[k] += row[k];
                    row[k] *= gain[k];
                }
                let s1 = sum_lanes(row);
                let s2 = dot_lanes(row, xh);
                let k = tape.inv_std[r] / f as f32;
                for (d, x) in row.iter_mut().zip(xh) {
                    *d = k * (f as f32 * *d - s1 - x * s2);
                }
            }
            // Head: dW = dz^T x, db = sum dz.
            let x: &[f32] = tape.acts.last().map_or(&tape.input, |v| v);
            sgemm(
                f,
                n,
                self.flat,
                &dz,
                1,
                f,
                x,
                self.flat,
                1,
                0.0,
                &mut head[self.head_w..self.head_b],
            );
            let db = &mut head[self.head_b..self.head_b + f];
            for row in dz.chunks_exact(f) {
                for (a, v) in db.iter_mut().zip(row) {
                    *a += v;
                }
            }
        }
        if self.convs.is_empty() {
            return;
        }
        // dx of the head's input = dz W.
        let mut d_cur = vec![0.0f32; n * self.flat];
        sgemm(
            n,
            f,
            self.flat,
            &dz,
            f,
            1,
            &self.params[self.head_w..self.head_b],
            self.flat,
            1,
            0.0,
            &mut d_cur,
        );
        for l in (0..self.convs.len()).rev() {
            let g = self.convs[l];
            let x: &[f32] = if l == 0 {
                &tape.input
            } else {
                &tape.acts[l - 1]
            };
            let y = &tape.acts[l];
            // Through ReLU.
            for (d, v) in d_cur.iter_mut().zip(y) {
                if *v <= 0.0 {
                    *d = 0.0;
                }
            }
            let w = &self.params[g.w..g.b];
            let want_dx = l > 0;
            let mut d_prev = if want_dx {
                vec![0.0f32; n * g.in_len()]
            } else {
                Vec::new()
            };
            // Per image: dW += dY cols^T, db += row sums, dX = col2im(W^T dY). Each thread
            // accumulates its own weight gradient; they are summed after.
            let k_cols = g.cols();
            let p = g.pixels();
            let in_len = g.in_len();
            let work = |(i, dyi): (usize, &[f32]),
                        acc: &mut (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>)| {
                let (cols, dw, db, dcols) = acc;
                im2col(&g, &x[i * in_len..(i + 1) * in_len], cols);
                sgemm(g.out_ch, p, k_cols, dyi, p, 1, cols, 1, p, 1.0, dw);
                for (a, row) in db.iter_mut().zip(dyi.chunks_exact(p)) {
                    *a += sum_lanes(row);
                }
                if want_dx {
                    sgemm(k_cols, g.out_ch, p, w, 1, k_cols, dyi, p, 1, 0.0, dcols);
                }
            };
            let init = || {
                (
                    vec![0.0f32; k_cols * p],
                    vec![0.0f32; g.out_ch * k_cols],
                    vec![0.0f32; g.out_ch],
                    if want_dx {
                        vec![0.0f32; k_cols * p]
                    } else {
                        Vec::new()
                    },
                )
            };
            let partials: Vec<(Vec<f32>, Vec<f32>)> = if want_dx {
                d_prev
                    .par_chunks_mut(in_len)
                    .zip(d_cur.par_chunks(g.out_len()).enumerate())
                    .fold(
                        || (init(), ()),
                        |(mut acc, ()), (dxi, item)| {
                            work(item, &mut acc);
                            col2im(&g, &acc.3, dxi);
                            (acc, ())
                        },
                    )
                    .map(|((_, dw, db, _), ())| (dw, db))
                    .collect()
            } else {
                d_cur
                    .par_chunks(g.out_len())
                    .enumerate()
                    .fold(init, |mut acc, item| {
                        work(item, &mut acc);
                        acc
                    })
                    .map(|(_, dw, db, _)| (dw, db))
                    .collect()
            };
            for (dw, db) in partials {
                for (a, v) in grads[g.w..g.b].iter_mut().zip(&dw) {
                    *a += v;
                }
                for (a, v) in grads[g.b..g.b + g.out_ch].iter_mut().zip(&db) {
                    *a += v;
                }
            }
            d_cur = d_prev;
        }
    }
}

/// `cols[(c * k + ky) * k + kx][oy * out_w + ox] = x[c][oy * s + ky - p][ox * s + kx - p]`
/// (zero outside the image), for one channel-major image.
fn im2col(g: &Geom, x: &[f32], cols: &mut [f32]) {
    let (k, p) = (g.kernel, g.pixels());
    for c in 0..g.in_ch {
        let plane = &x[c * g.in_h * g.in_w..(c + 1) * g.in_h * g.in_w];
        for ky in 0..k {
            for kx in 0..k {
                let row = &mut cols[((c * k + ky) * k + kx) * p..][..p];
                for oy in 0..g.out_h {
                    let iy = (oy * g.stride + ky) as isize - g.padding as isize;
                    let out = &mut row[oy * g.out_w..(oy + 1) * g.out_w];
                    if iy < 0 || iy >= g.in_h as isize {
                        out.fill(0.0);
                        continue;
                    }
                    let src = &plane[iy as usize * g.in_w..(iy as usize + 1) * g.in_w];
                    for (ox, v) in out.iter_mut().enumerate() {
                        let ix = (ox * g.stride + kx) as isize - g.padding as isize;
                        *v = if ix < 0 || ix >= g.in_w as isize {
                            0.0
                        } else {
                            src[ix as usize]
                        };
                    }
                }
            }
        }
    }
}

/// The adjoint of [`im2col`]: adds each column entry back onto the pixel it came from.
fn col2im(g: &Geom, cols: &[f32], dx: &mut [f32]) {
    let (k, p) = (g.kernel, g.pixels());
    for c in 0..g.in_ch {
        let plane = &mut dx[c * g.in_h * g.in_w..(c + 1) * g.in_h * g.in_w];
        for ky in 0..k {
            for kx in 0..k {
                let row = &cols[((c * k + ky) * k + kx) * p..][..p];
                for oy in 0..g.out_h {
                    let iy = (oy * g.stride + ky) as isize - g.padding as isize;
                    if iy < 0 || iy >= g.in_h as isize {
                        continue;
                    }
                    let dst = &mut plane[iy as usize * g.in_w..(iy as usize + 1) * g.in_w];
                    for (ox, v) in row[oy * g.out_w..(oy + 1) * g.out_w].iter().enumerate() {
                        let ix = (ox * g.stride + kx) as isize - g.padding as isize;
                        if ix >= 0 && ix < g.in_w as isize {
                            dst[ix as usize] += v;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pixels::{images_tensor, PixelEncoder};
    use crate::rng::Rng;
    use burn::tensor::{Device, Tensor, TensorData};
    use reflex_policy::{ConvEncoder, ConvShape};

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().unwrap()
    }

    #[test]
    fn forward_and_every_gradient_match_burn() {
        // Odd sizes, a stride of 1 and no padding on the second layer cover im2col's edges.
        let shape = EncoderShape {
            height: 15,
            width: 12,
            channels: 6,
            convs: vec![
                ConvShape {
                    channels: 8,
                    kernel: 3,
                    stride: 2,
                    padding: 1,
                },
                ConvShape {
                    channels: 16,
                    kernel: 3,
                    stride: 1,
                    padding: 0,
                },
            ],
            features: 12,
        };
        let device = Device::flex().autodiff();
        device.seed(7);
        let reference = PixelEncoder::new(&shape, &device).unwrap();
        let params = reference.to_params(&shape);
        let net = ConvNet::from_params(&params).unwrap();
        assert_eq!(net.to_params(), params);

        let n = 5;
        let mut rng = Rng::new(3);
        let images: Vec<u8> = (0..n * shape.input_len())
            .map(|_| (rng.next_u64() % 256) as u8)
            .collect();
        let d: Vec<f32> = (0..n * shape.features)
            .map(|i| ((i * 37 % 19) as f32 - 9.0) * 0.05)
            .collect();

        let feats = reference.forward(images_tensor(&shape, &images, &device));
        let want_out = values(feats.clone());
        let dt = Tensor::<2>::from_data(TensorData::new(d.clone(), [n, shape.features]), &device);
        let grads = (feats * dt).sum().backward();

        let mut tape = ConvTape::default();
        net.forward(&images, &mut tape);
        for (a, b) in tape.features().iter().zip(&want_out) {
            assert!((a - b).abs() < 1e-4, "features: {a} vs {b}");
        }
        // The tick agrees as well.
        let mut tick = ConvEncoder::new(params.clone()).unwrap();
        let mut one = vec![0.0; shape.features];
        tick.forward(&images[..shape.input_len()], &mut one)
            .unwrap();
        for (a, b) in one.iter().zip(tape.features()) {
            assert!((a - b).abs() < 1e-4, "tick: {a} vs {b}");
        }

        let mut got = vec![0.0; net.num_params()];
        net.backward(&tape, &d, &mut got);
        let want = reference.param_grads(&grads, &shape);
        assert_eq!(got.len(), want.len());
        let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(scale > 1e-3, "the test needs gradients");
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            assert!(
                (a - b).abs() <= 1e-4 * scale + 1e-3 * b.abs(),
                "parameter {i}: {a} vs {b}"
            );
        }
    }
}
