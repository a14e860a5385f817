//! Batch-1 convolutional image encoder for the control tick: camera pixels in, a short feature
//! vector out, with preallocated buffers and no allocation per call.
//!
//! The network is the small encoder of image-based off-policy RL (DrQ, SERL): strided 2-D
//! convolutions with ReLU, then one linear layer, LayerNorm and tanh. Its input is one image of
//! `height x width x channels` bytes in row-major, channel-interleaved order (the layout of
//! [`reflex_core::Frame::rgb`]); several cameras of the same size are stacked along the channels
//! ([`stack_frames`]). Bytes are scaled to [0, 1] before the first convolution.
//!
//! Training happens elsewhere (`reflex-learn`'s `pixels`, on burn); weights travel as safetensors
//! in PyTorch's layout, so a `torch.nn.Conv2d` / `Linear` / `LayerNorm` stack saves to it
//! directly:
//! - `convs.{i}.weight` `[out, in, k, k]` and `convs.{i}.bias` `[out]` (zero padding on every
//!   side; the stride and padding of each layer in the metadata `strides` and `paddings`, comma
//!   separated);
//! - `head.weight` `[features, flat]` and `head.bias` `[features]`, where `flat` flattens the
//!   last convolution's output in PyTorch's channel-major order (`c * h * w + y * w + x`);
//! - `head.norm.weight` and `head.norm.bias` `[features]` (LayerNorm, eps 1e-5, before tanh);
//! - metadata `format = reflex-conv-encoder` and `input = "HxWxC"`.
//!
//! Internally the activations are channel-interleaved (`(y * w + x) * c + channel`), so the
//! innermost loop runs over a layer's output channels with contiguous weights; the loaded
//! weights are reordered once for that.

// The kernels index weights, inputs and accumulators at computed offsets together.
#![allow(clippy::needless_range_loop)]

use crate::mlp::{dense, fast_kernel_available, layer_norm, DimMismatch, WeightsError};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::HashMap;
use std::path::Path;

/// Largest image side an encoder accepts, pixels.
pub const MAX_SIDE: usize = 4096;
/// Most channels of an input, a convolution or the features.
pub const MAX_CHANNELS: usize = 1024;
/// Largest kernel side.
pub const MAX_KERNEL: usize = 31;

/// Tag in the metadata of an encoder's weights file.
pub const ENCODER_FORMAT: &str = "reflex-conv-encoder";

/// One convolution's shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConvShape {
    /// Output channels.
    pub channels: usize,
    /// Square kernel side.
    pub kernel: usize,
    /// Step between outputs, pixels (both axes).
    pub stride: usize,
    /// Zero padding on every side, pixels.
    pub padding: usize,
}

impl ConvShape {
    /// Output side for an input side, or `None` when the kernel does not fit.
    pub fn output_side(&self, input: usize) -> Option<usize> {
        let padded = input + 2 * self.padding;
        if self.stride == 0 || self.kernel == 0 || padded < self.kernel {
            return None;
        }
        Some((padded - self.kernel) / self.stride + 1)
    }
}

/// The shape of an encoder: its input image, its convolutions and its feature count.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncoderShape {
    /// Image rows, pixels.
    pub height: usize,
    /// Image columns, pixels.
    pub width: usize,
    /// Channels per pixel (3 per RGB camera stacked).
    pub channels: usize,
    /// The convolutions, first to last.
    pub convs: Vec<ConvShape>,
    /// Length of the feature vector.
    pub features: usize,
}

impl EncoderShape {
    /// The default for `cameras` RGB cameras of `side x side` pixels: three 3x3 convolutions of
    /// stride 2 (16, 32, 32 channels) and 64 features.
    pub fn small(side: usize, cameras: usize) -> Self {
        let conv = |channels| ConvShape {
            channels,
            kernel: 3,
            stride: 2,
            padding: 1,
        };
        Self {
            height: side,
            width: side,
            channels: 3 * cameras,
            convs: vec![conv(16), conv(32), conv(32)],
            features: 64,
        }
    }

    /// Bytes of one input image.
    pub fn input_len(&self) -> usize {
        self.height * self.width * self.channels
    }

    /// `(height, width, channels)` after each convolution; an error names the layer that does
    /// not fit.
    pub fn layer_outputs(&self) -> Result<Vec<(usize, usize, usize)>, String> {
        if self.height == 0 || self.width == 0 || self.channels == 0 {
            return Err(format!(
                "the input {}x{}x{} is empty",
                self.height, self.width, self.channels
            ));
        }
        if self.convs.is_empty() || self.features == 0 {
            return Err("an encoder needs at least one convolution and one feature".into());
        }
        // Bounds far above any camera encoder, so that no size computed below can overflow
        // whatever a file claims.
        if self.height > MAX_SIDE || self.width > MAX_SIDE || self.channels > MAX_CHANNELS {
            return Err(format!(
                "the input {}x{}x{} exceeds {MAX_SIDE}x{MAX_SIDE}x{MAX_CHANNELS}",
                self.height, self.width, self.channels
            ));
        }
        if self.features > MAX_CHANNELS {
            return Err(format!("{} features exceed {MAX_CHANNELS}", self.features));
        }
        let mut out = Vec::with_capacity(self.convs.len());
        let (mut h, mut w) = (self.height, self.width);
        for (i, c) in self.convs.iter().enumerate() {
            if c.padding > MAX_KERNEL || c.stride > MAX_SIDE {
                return Err(format!(
                    "convolution {i}: stride {} and padding {} (at most {MAX_SIDE} and {MAX_KERNEL})",
                    c.stride, c.padding
                ));
            }
            let (Some(nh), Some(nw)) = (c.output_side(h), c.output_side(w)) else {
                return Err(format!(
                    "convolution {i}: a {}x{} kernel with stride {} and padding {} does not fit a {h}x{w} input",
                    c.kernel, c.kernel, c.stride, c.padding
                ));
            };
            if c.channels == 0 || c.channels > MAX_CHANNELS || c.kernel > MAX_KERNEL {
                return Err(format!(
                    "convolution {i}: {} output channels and a {}x{} kernel (1..={MAX_CHANNELS} channels, kernels up to {MAX_KERNEL})",
                    c.channels, c.kernel, c.kernel
                ));
            }
            (h, w) = (nh, nw);
            out.push((h, w, c.channels));
        }
        Ok(out)
    }

    /// Length of the flattened last convolution (the head's input).
    pub fn flat_len(&self) -> Result<usize, String> {
        let last = *self.layer_outputs()?.last().expect("at least one layer");
        Ok(last.0 * last.1 * last.2)
    }
}

/// An encoder's parameters in PyTorch's layout (see the module docs), as they travel between
/// the trainer and the tick.
#[derive(Clone, Debug, PartialEq)]
pub struct EncoderParams {
    /// The shape.
    pub shape: EncoderShape,
    /// Per convolution: weight `[out, in, k, k]` and bias `[out]`.
    pub convs: Vec<(Vec<f32>, Vec<f32>)>,
    /// `[features, flat]`, flat in channel-major order.
    pub head_weight: Vec<f32>,
    /// `[features]`.
    pub head_bias: Vec<f32>,
    /// LayerNorm gain `[features]`.
    pub norm_gain: Vec<f32>,
    /// LayerNorm shift `[features]`.
    pub norm_shift: Vec<f32>,
}

impl EncoderParams {
    /// Every size checked against the shape; the message names the tensor.
    pub fn check(&self) -> Result<(), String> {
        let outs = self.shape.layer_outputs()?;
        if self.convs.len() != self.shape.convs.len() {
            return Err(format!(
                "{} convolutions' weights for {} convolutions",
                self.convs.len(),
                self.shape.convs.len()
            ));
        }
        let mut in_ch = self.shape.channels;
        for (i, ((w, b), c)) in self.convs.iter().zip(&self.shape.convs).enumerate() {
            let want = c.channels * in_ch * c.kernel * c.kernel;
            if w.len() != want {
                return Err(format!(
                    "convs.{i}.weight: {} values, expected [{}, {in_ch}, {}, {}] = {want}",
                    w.len(),
                    c.channels,
                    c.kernel,
                    c.kernel
                ));
            }
            if b.len() != c.channels {
                return Err(format!(
                    "convs.{i}.bias: {} values, expected {}",
                    b.len(),
                    c.channels
                ));
            }
            in_ch = c.channels;
        }
        let last = outs.last().expect("at least one layer");
        let flat = last.0 * last.1 * last.2;
        let f = self.shape.features;
        for (name, len, want) in [
            ("head.weight", self.head_weight.len(), f * flat),
            ("head.bias", self.head_bias.len(), f),
            ("head.norm.weight", self.norm_gain.len(), f),
            ("head.norm.bias", self.norm_shift.len(), f),
        ] {
            if len != want {
                return Err(format!("{name}: {len} values, expected {want}"));
            }
        }
        let all = self
            .convs
            .iter()
            .flat_map(|(w, b)| [("convs weight", w), ("convs bias", b)])
            .chain([
                ("head.weight", &self.head_weight),
                ("head.bias", &self.head_bias),
                ("head.norm.weight", &self.norm_gain),
                ("head.norm.bias", &self.norm_shift),
            ]);
        for (name, v) in all {
            if let Some(k) = v.iter().position(|x| !x.is_finite()) {
                return Err(format!("{name}: element {k} is not finite"));
            }
        }
        Ok(())
    }
}

/// One convolution, weights reordered to `[ky][kx][in][out]`.
#[derive(Clone, Debug)]
struct Conv {
    in_h: usize,
    in_w: usize,
    in_ch: usize,
    out_h: usize,
    out_w: usize,
    out_ch: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    weight: Vec<f32>,
    bias: Vec<f32>,
}

/// The encoder evaluated one image at a time, with its own buffers.
#[derive(Clone, Debug)]
pub struct ConvEncoder {
    params: EncoderParams,
    convs: Vec<Conv>,
    /// `[features][flat]`, flat in channel-interleaved order.
    head: Vec<f32>,
    buf_a: Vec<f32>,
    buf_b: Vec<f32>,
    fast: bool,
}

impl ConvEncoder {
    /// An encoder from its parameters; the message names what does not fit.
    pub fn new(params: EncoderParams) -> Result<Self, String> {
        params.check()?;
        let outs = params.shape.layer_outputs()?;
        let mut convs = Vec::with_capacity(outs.len());
        let (mut in_h, mut in_w, mut in_ch) = (
            params.shape.height,
            params.shape.width,
            params.shape.channels,
        );
        let mut widest = in_h * in_w * in_ch;
        for ((s, (w, b)), &(out_h, out_w, out_ch)) in
            params.shape.convs.iter().zip(&params.convs).zip(&outs)
        {
            let k = s.kernel;
            let mut weight = vec![0.0; w.len()];
            for o in 0..out_ch {
                for i in 0..in_ch {
                    for ky in 0..k {
                        for kx in 0..k {
                            weight[((ky * k + kx) * in_ch + i) * out_ch + o] =
                                w[((o * in_ch + i) * k + ky) * k + kx];
                        }
                    }
                }
            }
            convs.push(Conv {
                in_h,
                in_w,
                in_ch,
                out_h,
                out_w,
                out_ch,
                kernel: k,
                stride: s.stride,
                padding: s.padding,
                weight,
                bias: b.clone(),
            });
            widest = widest.max(out_h * out_w * out_ch);
            (in_h, in_w, in_ch) = (out_h, out_w, out_ch);
        }
        let (h, w, c) = (in_h, in_w, in_ch);
        let flat = h * w * c;
        let f = params.shape.features;
        let mut head = vec![0.0; f * flat];
        for r in 0..f {
            for ch in 0..c {
                for y in 0..h {
                    for x in 0..w {
                        head[r * flat + (y * w + x) * c + ch] =
                            params.head_weight[r * flat + ch * h * w + y * w + x];
                    }
                }
            }
        }
        Ok(Self {
            params,
            convs,
            head,
            buf_a: vec![0.0; widest],
            buf_b: vec![0.0; widest],
            fast: fast_kernel_available(),
        })
    }

    /// Takes `other`'s weights in place (same shape; the kernel choice stays): no allocation,
    /// so a tick-side copy can follow a trainer's newer weights. Refuses another shape.
    pub fn assign_from(&mut self, other: &ConvEncoder) -> Result<(), String> {
        if other.params.shape != self.params.shape {
            return Err(format!(
                "an encoder of shape {:?} cannot take the weights of one of shape {:?}",
                self.params.shape, other.params.shape
            ));
        }
        let (p, q) = (&mut self.params, &other.params);
        for ((w, b), (ow, ob)) in p.convs.iter_mut().zip(&q.convs) {
            w.copy_from_slice(ow);
            b.copy_from_slice(ob);
        }
        p.head_weight.copy_from_slice(&q.head_weight);
        p.head_bias.copy_from_slice(&q.head_bias);
        p.norm_gain.copy_from_slice(&q.norm_gain);
        p.norm_shift.copy_from_slice(&q.norm_shift);
        for (c, oc) in self.convs.iter_mut().zip(&other.convs) {
            c.weight.copy_from_slice(&oc.weight);
            c.bias.copy_from_slice(&oc.bias);
        }
        self.head.copy_from_slice(&other.head);
        Ok(())
    }

    /// The shape.
    pub fn shape(&self) -> &EncoderShape {
        &self.params.shape
    }

    /// The parameters, in PyTorch's layout.
    pub fn params(&self) -> &EncoderParams {
        &self.params
    }

    /// Bytes of one input image.
    pub fn input_len(&self) -> usize {
        self.params.shape.input_len()
    }

    /// Length of the feature vector.
    pub fn features(&self) -> usize {
        self.params.shape.features
    }

    /// Whether the AVX2 + FMA kernels run (chosen at construction when the CPU has them).
    pub fn uses_fast_kernel(&self) -> bool {
        self.fast
    }

    /// Chooses the portable kernels (`false`) or, where the CPU has them, AVX2 + FMA (`true`).
    pub fn set_fast_kernel(&mut self, on: bool) {
        self.fast = on && fast_kernel_available();
    }

    /// Computes `features = encoder(image)`. Allocates nothing.
    pub fn forward(&mut self, image: &[u8], features: &mut [f32]) -> Result<(), DimMismatch> {
        if image.len() != self.input_len() {
            return Err(DimMismatch {
                expected: self.input_len(),
                got: image.len(),
            });
        }
        if features.len() != self.features() {
            return Err(DimMismatch {
                expected: self.features(),
                got: features.len(),
            });
        }
        let flat = self.head.len() / self.params.shape.features;
        let (mut a, mut b) = (&mut self.buf_a, &mut self.buf_b);
        for (v, &p) in a.iter_mut().zip(image) {
            *v = f32::from(p) * (1.0 / 255.0);
        }
        for c in &self.convs {
            let x = &a[..c.in_h * c.in_w * c.in_ch];
            let y = &mut b[..c.out_h * c.out_w * c.out_ch];
            conv_relu(self.fast, c, x, y);
            std::mem::swap(&mut a, &mut b);
        }
        dense(
            self.fast,
            &self.head,
            &self.params.head_bias,
            &a[..flat],
            features,
        );
        layer_norm(features, &self.params.norm_gain, &self.params.norm_shift);
        features.iter_mut().for_each(|v| *v = v.tanh());
        Ok(())
    }

    /// Serialises to safetensors bytes (layout in the module docs).
    pub fn to_safetensors(&self) -> Vec<u8> {
        let p = &self.params;
        let s = &p.shape;
        let le = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
        let mut tensors: Vec<(String, Vec<u8>, Vec<usize>)> = Vec::new();
        let mut in_ch = s.channels;
        for (i, ((w, b), c)) in p.convs.iter().zip(&s.convs).enumerate() {
            tensors.push((
                format!("convs.{i}.weight"),
                le(w),
                vec![c.channels, in_ch, c.kernel, c.kernel],
            ));
            tensors.push((format!("convs.{i}.bias"), le(b), vec![c.channels]));
            in_ch = c.channels;
        }
        let f = s.features;
        let flat = p.head_weight.len() / f;
        tensors.push(("head.weight".into(), le(&p.head_weight), vec![f, flat]));
        tensors.push(("head.bias".into(), le(&p.head_bias), vec![f]));
        tensors.push(("head.norm.weight".into(), le(&p.norm_gain), vec![f]));
        tensors.push(("head.norm.bias".into(), le(&p.norm_shift), vec![f]));
        let views: Vec<(String, TensorView)> = tensors
            .iter()
            .map(|(name, data, shape)| {
                let view = TensorView::new(Dtype::F32, shape.clone(), data)
                    .unwrap_or_else(|_| unreachable!("sizes match by construction"));
                (name.clone(), view)
            })
            .collect();
        let join = |f: fn(&ConvShape) -> usize| -> String {
            s.convs
                .iter()
                .map(|c| f(c).to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        let meta = HashMap::from([
            ("format".to_owned(), ENCODER_FORMAT.to_owned()),
            (
                "input".to_owned(),
                format!("{}x{}x{}", s.height, s.width, s.channels),
            ),
            ("strides".to_owned(), join(|c| c.stride)),
            ("paddings".to_owned(), join(|c| c.padding)),
        ]);
        safetensors::tensor::serialize(views, Some(meta))
            .unwrap_or_else(|_| unreachable!("valid views always serialise"))
    }

    /// Writes the weights to `path` (a temporary file, synced, renamed into place).
    pub fn save(&self, path: &Path) -> Result<(), WeightsError> {
        crate::mlp::write_atomically(path, &self.to_safetensors())
    }

    /// Reads weights written by [`ConvEncoder::save`] or by PyTorch in the same layout.
    pub fn load(path: &Path) -> Result<Self, WeightsError> {
        let bytes = std::fs::read(path).map_err(|e| WeightsError::Io {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        Self::from_safetensors(&bytes, path)
    }

    /// Parses safetensors bytes; `path` only names the source in errors, which also name the
    /// tensor or metadata key at fault.
    pub fn from_safetensors(bytes: &[u8], path: &Path) -> Result<Self, WeightsError> {
        let format_err = |message: String| WeightsError::Format {
            path: path.to_owned(),
            message,
        };
        let tensor_err = |name: &str, message: String| WeightsError::Tensor {
            path: path.to_owned(),
            name: name.to_owned(),
            message,
        };
        let st = SafeTensors::deserialize(bytes).map_err(|e| format_err(e.to_string()))?;
        let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| format_err(e.to_string()))?;
        let md = meta.metadata().clone().unwrap_or_default();
        let key = |k: &str| -> Result<&String, WeightsError> {
            md.get(k)
                .ok_or_else(|| tensor_err(k, "missing metadata entry".into()))
        };
        let format = key("format")?;
        if format != ENCODER_FORMAT {
            return Err(tensor_err(
                "format",
                format!("expected \"{ENCODER_FORMAT}\", got \"{format}\""),
            ));
        }
        let input = key("input")?;
        let dims: Vec<usize> = input
            .split('x')
            .map(str::parse)
            .collect::<Result<_, _>>()
            .map_err(|_| tensor_err("input", format!("expected HxWxC, got \"{input}\"")))?;
        let &[height, width, channels] = dims.as_slice() else {
            return Err(tensor_err(
                "input",
                format!("expected HxWxC, got \"{input}\""),
            ));
        };
        let list = |k: &str| -> Result<Vec<usize>, WeightsError> {
            let v = key(k)?;
            v.split(',')
                .map(str::parse)
                .collect::<Result<_, _>>()
                .map_err(|_| {
                    tensor_err(k, format!("expected comma-separated integers, got \"{v}\""))
                })
        };
        let strides = list("strides")?;
        let paddings = list("paddings")?;
        if strides.len() != paddings.len() {
            return Err(tensor_err(
                "paddings",
                format!("{} paddings for {} strides", paddings.len(), strides.len()),
            ));
        }
        let floats =
            |name: &str, shape: Option<&[usize]>| -> Result<(Vec<f32>, Vec<usize>), WeightsError> {
                let t = st
                    .tensor(name)
                    .map_err(|_| tensor_err(name, "missing".into()))?;
                if t.dtype() != Dtype::F32 {
                    return Err(tensor_err(
                        name,
                        format!("expected F32, got {:?}", t.dtype()),
                    ));
                }
                if let Some(want) = shape {
                    if t.shape() != want {
                        return Err(tensor_err(
                            name,
                            format!("expected shape {want:?}, got {:?}", t.shape()),
                        ));
                    }
                }
                let v: Vec<f32> = t
                    .data()
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                if let Some(k) = v.iter().position(|x| !x.is_finite()) {
                    return Err(tensor_err(name, format!("element {k} is not finite")));
                }
                Ok((v, t.shape().to_vec()))
            };
        let mut convs = Vec::with_capacity(strides.len());
        let mut shapes = Vec::with_capacity(strides.len());
        let mut in_ch = channels;
        for (i, (&stride, &padding)) in strides.iter().zip(&paddings).enumerate() {
            let wname = format!("convs.{i}.weight");
            let (w, ws) = floats(&wname, None)?;
            let &[out, inp, kh, kw] = ws.as_slice() else {
                return Err(tensor_err(
                    &wname,
                    format!("expected shape [out, in, k, k], got {ws:?}"),
                ));
            };
            if inp != in_ch || kh != kw {
                return Err(tensor_err(
                    &wname,
                    format!("expected shape [out, {in_ch}, k, k], got {ws:?}"),
                ));
            }
            let (b, _) = floats(&format!("convs.{i}.bias"), Some(&[out]))?;
            shapes.push(ConvShape {
                channels: out,
                kernel: kh,
                stride,
                padding,
            });
            convs.push((w, b));
            in_ch = out;
        }
        let expected_tensors = 2 * convs.len() + 4;
        if st.names().len() != expected_tensors {
            let extra = st
                .names()
                .into_iter()
                .find(|n| {
                    !(n.starts_with("head.")
                        || n.strip_prefix("convs.")
                            .and_then(|r| r.split_once('.'))
                            .and_then(|(i, _)| i.parse::<usize>().ok())
                            .is_some_and(|i| i < convs.len()))
                })
                .unwrap_or("convs")
                .to_owned();
            return Err(tensor_err(
                &extra,
                format!(
                    "unexpected tensor: the metadata lists {} convolutions",
                    convs.len()
                ),
            ));
        }
        let (head_weight, hs) = floats("head.weight", None)?;
        let &[features, _] = hs.as_slice() else {
            return Err(tensor_err(
                "head.weight",
                format!("expected shape [features, flat], got {hs:?}"),
            ));
        };
        let (head_bias, _) = floats("head.bias", Some(&[features]))?;
        let (norm_gain, _) = floats("head.norm.weight", Some(&[features]))?;
        let (norm_shift, _) = floats("head.norm.bias", Some(&[features]))?;
        let params = EncoderParams {
            shape: EncoderShape {
                height,
                width,
                channels,
                convs: shapes,
                features,
            },
            convs,
            head_weight,
            head_bias,
            norm_gain,
            norm_shift,
        };
        params
            .shape
            .layer_outputs()
            .map_err(|m| tensor_err("input", m))?;
        Self::new(params).map_err(|m| tensor_err("head.weight", m))
    }
}

/// A policy network that sees pixels: the encoder's features followed by the proprioception
/// (what the arm knows of itself) feed an MLP. Evaluated one step at a time with its own
/// buffers; allocates nothing per call.
#[derive(Clone, Debug)]
pub struct PixelNet {
    encoder: ConvEncoder,
    mlp: crate::Mlp,
    input: Vec<f32>,
}

impl PixelNet {
    /// The encoder and the MLP after it; the MLP must take the encoder's features plus at
    /// least one more value.
    pub fn new(encoder: ConvEncoder, mlp: crate::Mlp) -> Result<Self, String> {
        if mlp.input_dim() <= encoder.features() {
            return Err(format!(
                "the MLP takes {} inputs, which leaves nothing after the encoder's {} features",
                mlp.input_dim(),
                encoder.features()
            ));
        }
        Ok(Self {
            input: vec![0.0; mlp.input_dim()],
            encoder,
            mlp,
        })
    }

    /// Values after the features.
    pub fn proprio_dim(&self) -> usize {
        self.mlp.input_dim() - self.encoder.features()
    }

    /// The encoder.
    pub fn encoder(&self) -> &ConvEncoder {
        &self.encoder
    }

    /// The MLP.
    pub fn mlp(&self) -> &crate::Mlp {
        &self.mlp
    }

    /// `out = mlp([encoder(image) | proprio])`. Allocates nothing.
    pub fn forward(
        &mut self,
        image: &[u8],
        proprio: &[f32],
        out: &mut [f32],
    ) -> Result<(), DimMismatch> {
        let f = self.encoder.features();
        if proprio.len() != self.proprio_dim() {
            return Err(DimMismatch {
                expected: self.proprio_dim(),
                got: proprio.len(),
            });
        }
        let (features, rest) = self.input.split_at_mut(f);
        self.encoder.forward(image, features)?;
        rest.copy_from_slice(proprio);
        self.mlp.forward(&self.input, out)
    }
}

/// A base policy that sees pixels, for the runtime: a [`PixelNet`] on the newest camera image
/// from an [`reflex_core::image_cell`] and on the observation's proprioception (its first
/// [`reflex_core::FLAT_OBJECTS`] values: what the arm knows of itself, no object poses).
///
/// It is [`Policy::ready`](reflex_core::Policy::ready) only while its newest image is at most
/// `max_age_ns` older than the observation (both stamps on the robot's clock), so the runtime
/// holds the arm rather than act on a frozen or missing camera.
pub struct PixelPolicy {
    net: PixelNet,
    frames: reflex_core::ImageReader,
    max_age_ns: u64,
    /// Steps refused for a missing or old image.
    pub stale: u64,
    /// Forward passes refused (a size mismatch; cannot happen after `new` checked it).
    pub errors: u64,
    /// The sequence number of the image the last action was computed on ([`PixelPolicy::seen`]).
    seen: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl PixelPolicy {
    /// The policy over `frames` (images of the encoder's input size) with images at most
    /// `max_age_ns` old; the network must take [`reflex_core::FLAT_OBJECTS`] proprioception
    /// values.
    pub fn new(
        net: PixelNet,
        frames: reflex_core::ImageReader,
        max_age_ns: u64,
    ) -> Result<Self, String> {
        if net.proprio_dim() != reflex_core::FLAT_OBJECTS {
            return Err(format!(
                "the network takes {} proprioception values, the observation gives {}",
                net.proprio_dim(),
                reflex_core::FLAT_OBJECTS
            ));
        }
        Ok(Self {
            net,
            frames,
            max_age_ns,
            stale: 0,
            errors: 0,
            seen: Default::default(),
        })
    }

    /// Where the policy leaves the sequence number ([`reflex_core::StampedImage::seq`]) of the
    /// image each action was computed on (0 before the first): a job that keeps the pictures a
    /// camera thread publishes pairs each step with the one its action saw. One relaxed store
    /// per action.
    pub fn seen(&self) -> std::sync::Arc<std::sync::atomic::AtomicU64> {
        self.seen.clone()
    }
}

impl reflex_core::Policy for PixelPolicy {
    fn ready(&mut self, obs: &reflex_core::Observation) -> bool {
        let want = self.net.encoder().input_len();
        let fresh = self.frames.latest().is_some_and(|img| {
            img.bytes.len() == want
                && obs.robot.stamp_ns.saturating_sub(img.stamp_ns) <= self.max_age_ns
        });
        if !fresh {
            self.stale += 1;
        }
        fresh
    }

    fn act(&mut self, obs: &reflex_core::Observation, action: &mut reflex_core::Action) {
        let proprio = obs.flat.as_slice().get(..reflex_core::FLAT_OBJECTS);
        let ok = match (self.frames.latest(), proprio) {
            (Some(img), Some(proprio)) => {
                self.seen
                    .store(img.seq, std::sync::atomic::Ordering::Relaxed);
                self.net
                    .forward(&img.bytes, proprio, action.as_mut_slice())
                    .is_ok()
            }
            _ => false,
        };
        if !ok {
            // Only reachable when `ready` was not asked; a zero action is the safe answer.
            self.errors += 1;
            action.as_mut_slice().fill(0.0);
        }
    }
}

/// Interleaves `frames` (each `height x width x 3` bytes, row-major) into one image of
/// `3 * frames.len()` channels, the encoder's input. Allocates nothing.
pub fn stack_frames(frames: &[&[u8]], out: &mut [u8]) -> Result<(), DimMismatch> {
    let n = frames.len();
    let pixels = out.len() / (3 * n.max(1));
    if n == 0 || out.len() != pixels * 3 * n {
        return Err(DimMismatch {
            expected: pixels * 3 * n.max(1),
            got: out.len(),
        });
    }
    for f in frames {
        if f.len() != pixels * 3 {
            return Err(DimMismatch {
                expected: pixels * 3,
                got: f.len(),
            });
        }
    }
    for (p, px) in out.chunks_exact_mut(3 * n).enumerate() {
        for (cam, f) in frames.iter().enumerate() {
            px[3 * cam..3 * cam + 3].copy_from_slice(&f[3 * p..3 * p + 3]);
        }
    }
    Ok(())
}

fn conv_relu(fast: bool, c: &Conv, x: &[f32], y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if fast {
        // SAFETY: `fast` is only set when the CPU reports AVX2 and FMA.
        unsafe { conv_relu_avx2_fma(c, x, y) };
        return;
    }
    let _ = fast;
    conv_relu_body(c, x, y);
}

/// The same loop compiled for AVX2 + FMA (the compiler vectorises the output-channel loop).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn conv_relu_avx2_fma(c: &Conv, x: &[f32], y: &mut [f32]) {
    conv_relu_body(c, x, y);
}

/// `y = relu(conv(x))` in channel-interleaved layout: each output pixel's channels accumulate
/// one input value times a contiguous row of weights at a time. The common channel counts keep
/// the accumulators in registers.
#[inline(always)]
fn conv_relu_body(c: &Conv, x: &[f32], y: &mut [f32]) {
    match c.out_ch {
        8 => conv_relu_fixed::<8>(c, x, y),
        16 => conv_relu_fixed::<16>(c, x, y),
        32 => conv_relu_fixed::<32>(c, x, y),
        64 => conv_relu_fixed::<64>(c, x, y),
        _ => conv_relu_any(c, x, y),
    }
}

/// The kernel rows and columns of output `o` (along one axis) that fall inside an input of
/// `len`: `(first, end)` of the kernel taps, so that `o * stride + tap - padding` is in range.
#[inline(always)]
fn tap_range(c: &Conv, o: usize, len: usize) -> (usize, usize) {
    let start = (o * c.stride) as isize - c.padding as isize;
    let first = (-start).max(0) as usize;
    let end = ((len as isize - start).max(0) as usize).min(c.kernel);
    (first.min(end), end)
}

// No closures in the kernels: a closure is not inlined into the AVX2 + FMA copy by
// `inline(always)`, and would run without those features.
#[inline(always)]
fn conv_relu_fixed<const OC: usize>(c: &Conv, x: &[f32], y: &mut [f32]) {
    let (k, ic) = (c.kernel, c.in_ch);
    let mut bias = [0f32; OC];
    bias.copy_from_slice(&c.bias);
    for oy in 0..c.out_h {
        let (ky0, ky1) = tap_range(c, oy, c.in_h);
        for ox in 0..c.out_w {
            let (kx0, kx1) = tap_range(c, ox, c.in_w);
            let mut acc = bias;
            for ky in ky0..ky1 {
                let iy = oy * c.stride + ky - c.padding;
                for kx in kx0..kx1 {
                    let ix = ox * c.stride + kx - c.padding;
                    let px = &x[(iy * c.in_w + ix) * ic..][..ic];
                    let w = &c.weight[(ky * k + kx) * ic * OC..][..ic * OC];
                    for (v, row) in px.iter().zip(w.chunks_exact(OC)) {
                        for o in 0..OC {
                            acc[o] += v * row[o];
                        }
                    }
                }
            }
            let out = &mut y[(oy * c.out_w + ox) * OC..][..OC];
            for o in 0..OC {
                out[o] = acc[o].max(0.0);
            }
        }
    }
}

fn conv_relu_any(c: &Conv, x: &[f32], y: &mut [f32]) {
    let (k, oc, ic) = (c.kernel, c.out_ch, c.in_ch);
    for oy in 0..c.out_h {
        let (ky0, ky1) = tap_range(c, oy, c.in_h);
        for ox in 0..c.out_w {
            let (kx0, kx1) = tap_range(c, ox, c.in_w);
            let acc = &mut y[(oy * c.out_w + ox) * oc..][..oc];
            acc.copy_from_slice(&c.bias);
            for ky in ky0..ky1 {
                let iy = oy * c.stride + ky - c.padding;
                for kx in kx0..kx1 {
                    let ix = ox * c.stride + kx - c.padding;
                    let px = &x[(iy * c.in_w + ix) * ic..][..ic];
                    let w = &c.weight[(ky * k + kx) * ic * oc..][..ic * oc];
                    for (v, row) in px.iter().zip(w.chunks_exact(oc)) {
                        for (a, wv) in acc.iter_mut().zip(row) {
                            *a += v * wv;
                        }
                    }
                }
            }
            acc.iter_mut().for_each(|v| *v = v.max(0.0));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic small weights.
    fn params(shape: EncoderShape, seed: u32) -> EncoderParams {
        let mut s = seed.wrapping_mul(2_654_435_761).max(1);
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s as f32 / u32::MAX as f32 - 0.5) * 0.4
        };
        let mut in_ch = shape.channels;
        let convs = shape
            .convs
            .iter()
            .map(|c| {
                let w = (0..c.channels * in_ch * c.kernel * c.kernel)
                    .map(|_| next())
                    .collect();
                let b = (0..c.channels).map(|_| next()).collect();
                in_ch = c.channels;
                (w, b)
            })
            .collect();
        let flat = shape.flat_len().unwrap();
        let f = shape.features;
        EncoderParams {
            convs,
            head_weight: (0..f * flat).map(|_| next()).collect(),
            head_bias: (0..f).map(|_| next()).collect(),
            norm_gain: (0..f).map(|_| 1.0 + next()).collect(),
            norm_shift: (0..f).map(|_| next()).collect(),
            shape,
        }
    }

    /// The textbook definition in PyTorch's layout: what the reordered kernels must equal.
    fn reference(p: &EncoderParams, image: &[u8]) -> Vec<f32> {
        let s = &p.shape;
        let (mut h, mut w, mut ch) = (s.height, s.width, s.channels);
        // Channel-major activations, as PyTorch holds them.
        let mut x: Vec<f32> = vec![0.0; h * w * ch];
        for y in 0..h {
            for xx in 0..w {
                for c in 0..ch {
                    x[c * h * w + y * w + xx] = f32::from(image[(y * w + xx) * ch + c]) / 255.0;
                }
            }
        }
        for (cs, (wt, b)) in s.convs.iter().zip(&p.convs) {
            let (oh, ow) = (cs.output_side(h).unwrap(), cs.output_side(w).unwrap());
            let k = cs.kernel;
            let mut y = vec![0.0f32; cs.channels * oh * ow];
            for o in 0..cs.channels {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut acc = b[o];
                        for i in 0..ch {
                            for ky in 0..k {
                                for kx in 0..k {
                                    let iy = (oy * cs.stride + ky) as isize - cs.padding as isize;
                                    let ix = (ox * cs.stride + kx) as isize - cs.padding as isize;
                                    if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w
                                    {
                                        acc += wt[((o * ch + i) * k + ky) * k + kx]
                                            * x[i * h * w + iy as usize * w + ix as usize];
                                    }
                                }
                            }
                        }
                        y[o * oh * ow + oy * ow + ox] = acc.max(0.0);
                    }
                }
            }
            (h, w, ch, x) = (oh, ow, cs.channels, y);
        }
        let f = s.features;
        let mut out: Vec<f32> = (0..f)
            .map(|r| {
                p.head_bias[r]
                    + x.iter()
                        .enumerate()
                        .map(|(j, v)| p.head_weight[r * x.len() + j] * v)
                        .sum::<f32>()
            })
            .collect();
        layer_norm(&mut out, &p.norm_gain, &p.norm_shift);
        out.iter().map(|v| v.tanh()).collect()
    }

    fn image(len: usize, seed: u64) -> Vec<u8> {
        (0..len as u64)
            .map(|i| ((i.wrapping_mul(2_654_435_761) ^ seed) % 251) as u8)
            .collect()
    }

    #[test]
    fn the_reordered_kernels_equal_the_textbook_convolution() {
        // Odd sizes, a stride of 1, a 5x5 kernel and no padding cover the edge cases.
        let shape = EncoderShape {
            height: 13,
            width: 11,
            channels: 6,
            convs: vec![
                ConvShape {
                    channels: 8,
                    kernel: 5,
                    stride: 2,
                    padding: 2,
                },
                ConvShape {
                    channels: 12,
                    kernel: 3,
                    stride: 1,
                    padding: 0,
                },
            ],
            features: 10,
        };
        let p = params(shape, 3);
        let img = image(13 * 11 * 6, 7);
        let want = reference(&p, &img);
        for fast in [false, true] {
            let mut enc = ConvEncoder::new(p.clone()).unwrap();
            enc.set_fast_kernel(fast);
            let mut got = vec![0.0; 10];
            enc.forward(&img, &mut got).unwrap();
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() < 1e-4, "fast {fast}: {got:?} vs {want:?}");
            }
        }
    }

    #[test]
    fn weights_survive_a_round_trip_through_safetensors() {
        let p = params(EncoderShape::small(32, 2), 5);
        let mut enc = ConvEncoder::new(p.clone()).unwrap();
        let bytes = enc.to_safetensors();
        let mut back = ConvEncoder::from_safetensors(&bytes, Path::new("enc.safetensors")).unwrap();
        assert_eq!(back.params(), &p);
        let img = image(32 * 32 * 6, 1);
        let (mut a, mut b) = (vec![0.0; 64], vec![0.0; 64]);
        enc.forward(&img, &mut a).unwrap();
        back.forward(&img, &mut b).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn a_bad_file_names_the_tensor_or_key() {
        let p = params(EncoderShape::small(16, 1), 2);
        let enc = ConvEncoder::new(p.clone()).unwrap();
        let path = Path::new("enc.safetensors");
        let err = |bytes: &[u8]| {
            ConvEncoder::from_safetensors(bytes, path)
                .unwrap_err()
                .to_string()
        };

        // A non-finite weight.
        let mut bad = p.clone();
        bad.convs[1].0[4] = f32::NAN;
        assert!(ConvEncoder::new(bad).unwrap_err().contains("not finite"));

        // A wrong head width: its tensor is named.
        let mut wrong = p.clone();
        wrong.head_bias.pop();
        assert!(ConvEncoder::new(wrong).unwrap_err().contains("head.bias"));

        // Metadata that lies about the input.
        let bytes = enc.to_safetensors();
        let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let rewrite = |key: &str, value: &str| {
            let mut md = meta.metadata().clone().unwrap();
            md.insert(key.into(), value.into());
            let views: Vec<(String, TensorView)> = st
                .names()
                .into_iter()
                .map(|n| (n.to_owned(), st.tensor(n).unwrap()))
                .collect();
            safetensors::tensor::serialize(views, Some(md)).unwrap()
        };
        let e = err(&rewrite("input", "16x16x4"));
        assert!(
            e.contains("enc.safetensors") && e.contains("convs.0.weight"),
            "{e}"
        );
        let e = err(&rewrite("input", "99999999999x99999999999x3"));
        assert!(e.contains("`input`") && e.contains("exceeds"), "{e}");
        let e = err(&rewrite("paddings", "1,99999999999999,1"));
        assert!(e.contains("`input`") && e.contains("padding"), "{e}");
        let e = err(&rewrite("input", "sixteen"));
        assert!(e.contains("`input`"), "{e}");
        let e = err(&rewrite("format", "reflex-mlp"));
        assert!(e.contains("`format`"), "{e}");
        let e = err(&rewrite("strides", "2,2"));
        assert!(e.contains("`paddings`"), "{e}");
        let e = err(&bytes[..bytes.len() - 9]);
        assert!(e.contains("not a safetensors file"), "{e}");
        // An MLP's file is not an encoder.
        let mlp = crate::Mlp::zeros(&[4, 3], crate::Activation::Relu, crate::Activation::Tanh);
        let e = err(&mlp.to_safetensors());
        assert!(e.contains("`format`"), "{e}");
    }

    #[test]
    fn shapes_that_do_not_fit_are_refused_with_the_layer() {
        let mut s = EncoderShape::small(4, 1);
        s.convs[0].kernel = 9;
        assert!(s.layer_outputs().unwrap_err().contains("convolution 0"));
        let s = EncoderShape::small(64, 2);
        assert_eq!(
            s.layer_outputs().unwrap(),
            vec![(32, 32, 16), (16, 16, 32), (8, 8, 32)]
        );
        assert_eq!(s.flat_len().unwrap(), 2048);
        assert_eq!(s.input_len(), 64 * 64 * 6);
    }

    #[test]
    fn frames_are_stacked_pixel_by_pixel() {
        let a = [1u8, 2, 3, 4, 5, 6];
        let b = [11u8, 12, 13, 14, 15, 16];
        let mut out = [0u8; 12];
        stack_frames(&[&a, &b], &mut out).unwrap();
        assert_eq!(out, [1, 2, 3, 11, 12, 13, 4, 5, 6, 14, 15, 16]);
        assert!(stack_frames(&[&a, &b[..3]], &mut out).is_err());
        assert!(stack_frames(&[&a, &b], &mut out[..11]).is_err());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Whatever a camera sends, the features are finite and in [-1, 1].
        #[test]
        fn any_frame_gives_finite_bounded_features(
            image in proptest::collection::vec(proptest::prelude::any::<u8>(), 16 * 16 * 6),
            fast in proptest::prelude::any::<bool>(),
        ) {
            let mut enc = ConvEncoder::new(params(EncoderShape::small(16, 2), 8)).unwrap();
            enc.set_fast_kernel(fast);
            let mut f = vec![0.0; 64];
            enc.forward(&image, &mut f).unwrap();
            proptest::prop_assert!(f.iter().all(|v| v.is_finite() && v.abs() <= 1.0));
        }

        /// Damaged weights files are refused with an error, never a panic.
        #[test]
        fn damaged_files_are_refused_without_panicking(
            at in 0usize..4096,
            byte in proptest::prelude::any::<u8>(),
            cut in 0usize..4096,
        ) {
            let enc = ConvEncoder::new(params(EncoderShape::small(8, 1), 6)).unwrap();
            let mut bytes = enc.to_safetensors();
            let n = bytes.len();
            bytes[at % n] ^= byte | 1;
            let _ = ConvEncoder::from_safetensors(&bytes, Path::new("x.safetensors"));
            let _ = ConvEncoder::from_safetensors(&bytes[..cut % n], Path::new("x.safetensors"));
        }
    }

    #[test]
    fn the_pixel_policy_is_ready_only_on_a_fresh_image() {
        use reflex_core::{image_cell, Action, ActionSpace, Observation, Policy, FLAT_OBJECTS};
        let shape = EncoderShape::small(16, 1);
        let mlp = crate::Mlp::zeros(
            &[64 + FLAT_OBJECTS, 8, 7],
            crate::Activation::Relu,
            crate::Activation::Tanh,
        );
        let mut mlp = mlp;
        mlp.layer_mut(1).unwrap().1.fill(0.3);
        mlp.layer_mut(0)
            .unwrap()
            .0
            .iter_mut()
            .enumerate()
            .for_each(|(i, w)| {
                *w = ((i % 7) as f32 - 3.0) * 0.05;
            });
        let net = PixelNet::new(ConvEncoder::new(params(shape.clone(), 4)).unwrap(), mlp).unwrap();
        let (mut writer, reader) = image_cell(shape.input_len());
        let mut policy = PixelPolicy::new(net.clone(), reader, 50_000_000).unwrap();
        let mut obs = Observation::default();
        obs.robot.stamp_ns = 1_000_000_000;
        obs.rebuild_flat();
        assert!(!policy.ready(&obs), "no image yet");

        let img = image(shape.input_len(), 3);
        writer
            .publish(obs.robot.stamp_ns - 40_000_000, &img)
            .unwrap();
        assert!(policy.ready(&obs), "40 ms old");
        let mut action = Action::zeros(ActionSpace::EeDelta);
        policy.act(&obs, &mut action);
        let mut want = [0.0f32; 7];
        let mut direct = net.clone();
        direct
            .forward(&img, &obs.flat.as_slice()[..FLAT_OBJECTS], &mut want)
            .unwrap();
        assert_eq!(
            action.as_slice(),
            want,
            "the network's answer on that image"
        );
        assert!(want.iter().any(|v| v.abs() > 0.1));

        obs.robot.stamp_ns += 20_000_000;
        assert!(!policy.ready(&obs), "60 ms old: stale");
        assert_eq!(policy.stale, 2);
        // A network for another observation layout is refused.
        let other = crate::Mlp::zeros(
            &[64 + 5, 7],
            crate::Activation::Relu,
            crate::Activation::Tanh,
        );
        let wrong =
            PixelNet::new(ConvEncoder::new(params(shape.clone(), 4)).unwrap(), other).unwrap();
        assert!(PixelPolicy::new(wrong, image_cell(shape.input_len()).1, 1).is_err());
    }

    #[test]
    fn a_wrong_input_length_is_refused() {
        let mut enc = ConvEncoder::new(params(EncoderShape::small(16, 1), 1)).unwrap();
        let mut f = vec![0.0; 64];
        assert_eq!(
            enc.forward(&[0; 10], &mut f),
            Err(DimMismatch {
                expected: 768,
                got: 10
            })
        );
        assert!(enc.forward(&[0; 768], &mut f[..3]).is_err());
        enc.forward(&[0; 768], &mut f).unwrap();
        assert!(f.iter().all(|v| v.is_finite() && v.abs() <= 1.0));
    }

    /// The residual that sees a camera: no image, no correction; with one, exactly
    /// `tanh(mlp([encoder(image) | proprioception | base]))`; after the slot gets newer
    /// encoder weights the next step uses them. The slot refuses another shape and
    /// non-finite weights, and `assign_from` refuses another shape.
    #[test]
    fn the_pixel_residual_sees_the_newest_image_through_the_newest_encoder() {
        use crate::{EncoderSlot, Mlp, ResidualPolicy, WeightsSlot};
        use reflex_core::{image_cell, Action, ActionSpace, Observation};
        use std::sync::atomic::AtomicBool;
        use std::sync::Arc;
        let shape = EncoderShape::small(16, 1);
        let (f, p, a) = (shape.features, 3usize, 7usize);
        let space = ActionSpace::EeDelta;
        let mut mlp = Mlp::zeros(
            &[f + p + a, 2 * a],
            crate::Activation::Relu,
            crate::Activation::Identity,
        );
        let (w, _) = mlp.layer_mut(0).unwrap();
        for (i, v) in w.iter_mut().enumerate() {
            *v = ((i % 11) as f32 - 5.0) * 0.05;
        }
        let actor = WeightsSlot::new(mlp.clone());
        let first = ConvEncoder::new(params(shape.clone(), 1)).unwrap();
        let slot = EncoderSlot::new(first.clone());
        let (mut cam, frames) = image_cell(shape.input_len());
        let quiet = Arc::new(AtomicBool::new(false));
        let mut r =
            ResidualPolicy::pixel_tanh_gaussian(actor, slot.clone(), frames, p, a, quiet, 0)
                .unwrap();
        let mut obs = Observation::default();
        assert!(obs.flat.extend_from(&[0.3, -0.2, 0.5, 9.0, 9.0]));
        let mut base = Action::zeros(space);
        let base_values = [0.1, -0.4, 0.0, 0.2, 0.0, 0.0, 1.0];
        base.as_mut_slice().copy_from_slice(&base_values);
        let mut out = Action::zeros(space);
        r.act(&obs, &base, &mut out);
        assert_eq!(out.as_slice(), &[0.0; 7], "no image: no correction");
        assert_eq!(r.errors, 1);

        let image: Vec<u8> = (0..shape.input_len())
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        cam.publish(1, &image).unwrap();
        let mut expect = |enc: &ConvEncoder| {
            let mut enc = enc.clone();
            let mut input = vec![0.0; f];
            enc.forward(&image, &mut input).unwrap();
            input.extend_from_slice(&[0.3, -0.2, 0.5]);
            input.extend_from_slice(&base_values);
            let mut raw = vec![0.0; 2 * a];
            mlp.forward(&input, &mut raw).unwrap();
            raw[..a].iter().map(|v| v.tanh()).collect::<Vec<f32>>()
        };
        r.act(&obs, &base, &mut out);
        let want = expect(&first);
        for (g, w) in out.as_slice().iter().zip(&want) {
            assert!((g - w).abs() < 1e-5, "{:?} vs {want:?}", out.as_slice());
        }

        let second = ConvEncoder::new(params(shape.clone(), 2)).unwrap();
        assert_eq!(slot.publish(second.clone()), Ok(1));
        r.act(&obs, &base, &mut out);
        let want2 = expect(&second);
        assert_ne!(want, want2);
        for (g, w) in out.as_slice().iter().zip(&want2) {
            assert!((g - w).abs() < 1e-5, "{:?} vs {want2:?}", out.as_slice());
        }

        let other = ConvEncoder::new(params(EncoderShape::small(20, 1), 3)).unwrap();
        assert!(slot.publish(other.clone()).is_err());
        let mut bad = params(shape.clone(), 4);
        bad.head_bias[0] = f32::NAN;
        let bad = ConvEncoder::new(bad);
        assert!(bad.is_err(), "the encoder itself refuses NaN weights");
        assert_eq!(slot.version(), 1);
        let mut local = first.clone();
        assert!(local.assign_from(&other).is_err());
    }
}
