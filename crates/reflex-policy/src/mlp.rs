//! Batch-1 f32 MLP inference for the control tick, and its weights file.
//!
//! Training happens in `reflex-learn`; the tick runs this: dense layers (optionally followed by
//! LayerNorm) with preallocated buffers, no allocation per call, and a kernel compiled for AVX2 + FMA chosen at run time when the CPU has
//! them (a portable kernel otherwise; both give the same numbers up to rounding).
//!
//! Weights travel as safetensors, so they move to and from PyTorch without conversion:
//! `layers.{i}.weight` with shape `[out, in]` and `layers.{i}.bias` with shape `[out]`, f32, in
//! the layout of `torch.nn.Linear`; a hidden layer followed by LayerNorm adds
//! `layers.{i}.norm.weight` and `layers.{i}.norm.bias` (shape `[out]`, `torch.nn.LayerNorm`
//! with eps 1e-5, applied before the activation); metadata `hidden_activation` and `output_activation`
//! (`relu`, `tanh` or `identity`).

// The kernels index weights, inputs and accumulators at computed offsets together.
#![allow(clippy::needless_range_loop)]

use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Non-linearity after a layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// max(0, x)
    Relu,
    /// tanh(x)
    Tanh,
    /// x
    Identity,
}

impl Activation {
    fn name(self) -> &'static str {
        match self {
            Activation::Relu => "relu",
            Activation::Tanh => "tanh",
            Activation::Identity => "identity",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "relu" => Some(Activation::Relu),
            "tanh" => Some(Activation::Tanh),
            "identity" => Some(Activation::Identity),
            _ => None,
        }
    }
}

/// Errors reading or writing a weights file; each names the file and the tensor or key.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    /// The file could not be read or written.
    #[error("{path}: {message}")]
    Io {
        /// The weights file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The file is not a valid safetensors file.
    #[error("{path}: not a safetensors file: {message}")]
    Format {
        /// The weights file.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// A tensor or metadata entry is missing or inconsistent.
    #[error("{path}: `{name}`: {message}")]
    Tensor {
        /// The weights file.
        path: PathBuf,
        /// The tensor or metadata key at fault.
        name: String,
        /// What was expected.
        message: String,
    },
}

/// An input or output slice of the wrong length (small and `Copy` for the control path).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DimMismatch {
    /// Length the network needs.
    pub expected: usize,
    /// Length given.
    pub got: usize,
}

/// One layer's parameters, as they travel between the trainer and the tick.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerParams {
    /// Inputs of the layer.
    pub inputs: usize,
    /// Outputs of the layer.
    pub outputs: usize,
    /// Row-major `[outputs][inputs]`, as `torch.nn.Linear` stores it.
    pub weight: Vec<f32>,
    /// `[outputs]`.
    pub bias: Vec<f32>,
    /// LayerNorm gain and bias (`[outputs]` each), applied before the activation.
    pub norm: Option<(Vec<f32>, Vec<f32>)>,
}

/// LayerNorm's variance guard (as `torch.nn.LayerNorm`'s default).
pub const LAYER_NORM_EPS: f32 = 1e-5;

#[derive(Clone, Debug)]
struct Dense {
    inputs: usize,
    outputs: usize,
    /// Row-major `[outputs][inputs]`, as `torch.nn.Linear` stores it.
    weight: Vec<f32>,
    bias: Vec<f32>,
    norm: Option<(Vec<f32>, Vec<f32>)>,
    activation: Activation,
}

/// Working memory for one forward pass; one per thread that evaluates a shared [`Mlp`].
#[derive(Clone, Debug, Default)]
pub struct MlpScratch {
    a: Vec<f32>,
    b: Vec<f32>,
}

/// A multilayer perceptron evaluated one sample at a time.
#[derive(Clone, Debug)]
pub struct Mlp {
    layers: Vec<Dense>,
    hidden: Activation,
    output: Activation,
    buf_a: Vec<f32>,
    buf_b: Vec<f32>,
    fast: bool,
}

impl Mlp {
    /// A network with the given layer widths (`dims[0]` inputs ... `dims[n]` outputs) and every
    /// weight and bias zero (a residual's starting point: it outputs exactly zero).
    pub fn zeros(dims: &[usize], hidden: Activation, output: Activation) -> Self {
        let layers = dims
            .windows(2)
            .map(|w| LayerParams {
                inputs: w[0],
                outputs: w[1],
                weight: vec![0.0; w[0] * w[1]],
                bias: vec![0.0; w[1]],
                norm: None,
            })
            .collect();
        Self::assemble(layers, hidden, output)
    }

    /// A network from its layers' parameters. Widths must chain, sizes must match, and only
    /// hidden layers may carry LayerNorm; the message says which layer is wrong.
    pub fn from_layers(
        layers: Vec<LayerParams>,
        hidden: Activation,
        output: Activation,
    ) -> Result<Self, String> {
        if layers.is_empty() {
            return Err("a network needs at least one layer".into());
        }
        for (i, l) in layers.iter().enumerate() {
            if l.weight.len() != l.inputs * l.outputs || l.bias.len() != l.outputs {
                return Err(format!(
                    "layer {i}: weight or bias size does not match {}x{}",
                    l.outputs, l.inputs
                ));
            }
            if i > 0 && layers[i - 1].outputs != l.inputs {
                return Err(format!(
                    "layer {i} takes {} inputs but layer {} gives {}",
                    l.inputs,
                    i - 1,
                    layers[i - 1].outputs
                ));
            }
            if let Some((g, b)) = &l.norm {
                if i + 1 == layers.len() {
                    return Err(format!(
                        "layer {i}: the output layer cannot carry LayerNorm"
                    ));
                }
                if g.len() != l.outputs || b.len() != l.outputs {
                    return Err(format!(
                        "layer {i}: LayerNorm size does not match {}",
                        l.outputs
                    ));
                }
            }
        }
        Ok(Self::assemble(layers, hidden, output))
    }

    /// The first parameter that is NaN or infinite, as (layer, what), or none.
    pub fn first_non_finite(&self) -> Option<(usize, &'static str)> {
        for (i, l) in self.layers.iter().enumerate() {
            if l.weight.iter().any(|v| !v.is_finite()) {
                return Some((i, "weight"));
            }
            if l.bias.iter().any(|v| !v.is_finite()) {
                return Some((i, "bias"));
            }
            if let Some((g, b)) = &l.norm {
                if g.iter().chain(b).any(|v| !v.is_finite()) {
                    return Some((i, "layer norm"));
                }
            }
        }
        None
    }

    /// Copies of every layer's parameters (slow side).
    pub fn layer_params(&self) -> Vec<LayerParams> {
        self.layers
            .iter()
            .map(|l| LayerParams {
                inputs: l.inputs,
                outputs: l.outputs,
                weight: l.weight.clone(),
                bias: l.bias.clone(),
                norm: l.norm.clone(),
            })
            .collect()
    }

    /// A network from checked layers.
    fn assemble(layers: Vec<LayerParams>, hidden: Activation, output: Activation) -> Self {
        let n = layers.len();
        let widest = layers
            .iter()
            .map(|l| l.inputs.max(l.outputs))
            .max()
            .unwrap_or(0);
        let layers = layers
            .into_iter()
            .enumerate()
            .map(|(i, l)| Dense {
                inputs: l.inputs,
                outputs: l.outputs,
                weight: l.weight,
                bias: l.bias,
                norm: l.norm,
                activation: if i + 1 == n { output } else { hidden },
            })
            .collect();
        Self {
            layers,
            hidden,
            output,
            buf_a: vec![0.0; widest],
            buf_b: vec![0.0; widest],
            fast: fast_kernel_available(),
        }
    }

    /// Inputs the network takes.
    pub fn input_dim(&self) -> usize {
        self.layers.first().map_or(0, |l| l.inputs)
    }

    /// Outputs the network gives.
    pub fn output_dim(&self) -> usize {
        self.layers.last().map_or(0, |l| l.outputs)
    }

    /// Layer widths, inputs first.
    pub fn dims(&self) -> Vec<usize> {
        let mut d: Vec<usize> = self.layers.iter().map(|l| l.inputs).collect();
        d.push(self.output_dim());
        d
    }

    /// Which layers carry LayerNorm.
    pub fn normalised_layers(&self) -> Vec<bool> {
        self.layers.iter().map(|l| l.norm.is_some()).collect()
    }

    /// Activations of the hidden layers and of the output layer.
    pub fn activations(&self) -> (Activation, Activation) {
        (self.hidden, self.output)
    }

    /// Whether the AVX2 + FMA kernel is in use.
    pub fn uses_fast_kernel(&self) -> bool {
        self.fast
    }

    /// Forces the portable kernel (for comparisons); the fast one is used when available.
    pub fn set_fast_kernel(&mut self, on: bool) {
        self.fast = on && fast_kernel_available();
    }

    /// Mutable access to layer `i`'s weight (row-major `[out][in]`) and bias, e.g. to load
    /// trained values or initialise randomly.
    pub fn layer_mut(&mut self, i: usize) -> Option<(&mut [f32], &mut [f32])> {
        self.layers
            .get_mut(i)
            .map(|l| (l.weight.as_mut_slice(), l.bias.as_mut_slice()))
    }

    /// Number of layers.
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Computes `output = net(input)` with the network's own buffers. Allocates nothing.
    pub fn forward(&mut self, input: &[f32], output: &mut [f32]) -> Result<(), DimMismatch> {
        let mut scratch = MlpScratch {
            a: std::mem::take(&mut self.buf_a),
            b: std::mem::take(&mut self.buf_b),
        };
        let r = self.forward_with(&mut scratch, input, output);
        self.buf_a = scratch.a;
        self.buf_b = scratch.b;
        r
    }

    /// Buffers for [`Mlp::forward_with`], sized for this network (allocates; do it once).
    pub fn scratch(&self) -> MlpScratch {
        let widest = self.widest();
        MlpScratch {
            a: vec![0.0; widest],
            b: vec![0.0; widest],
        }
    }

    /// Computes `output = net(input)` through shared weights, with the caller's buffers: the
    /// form hot-swapped weights are read in. Allocates nothing.
    pub fn forward_with(
        &self,
        scratch: &mut MlpScratch,
        input: &[f32],
        output: &mut [f32],
    ) -> Result<(), DimMismatch> {
        if input.len() != self.input_dim() {
            return Err(DimMismatch {
                expected: self.input_dim(),
                got: input.len(),
            });
        }
        if output.len() != self.output_dim() {
            return Err(DimMismatch {
                expected: self.output_dim(),
                got: output.len(),
            });
        }
        if scratch.a.len() < self.widest() || scratch.b.len() < self.widest() {
            return Err(DimMismatch {
                expected: self.widest(),
                got: scratch.a.len().min(scratch.b.len()),
            });
        }
        let fast = self.fast;
        let n = self.layers.len();
        let (mut a, mut b) = (&mut scratch.a, &mut scratch.b);
        a[..input.len()].copy_from_slice(input);
        for (i, l) in self.layers.iter().enumerate() {
            let x = &a[..l.inputs];
            let y = if i + 1 == n {
                &mut output[..]
            } else {
                &mut b[..l.outputs]
            };
            dense(fast, &l.weight, &l.bias, x, y);
            if let Some((gain, shift)) = &l.norm {
                layer_norm(y, gain, shift);
            }
            match l.activation {
                Activation::Relu => y.iter_mut().for_each(|v| *v = v.max(0.0)),
                Activation::Tanh => y.iter_mut().for_each(|v| *v = v.tanh()),
                Activation::Identity => {}
            }
            std::mem::swap(&mut a, &mut b);
        }
        Ok(())
    }

    fn widest(&self) -> usize {
        self.layers
            .iter()
            .map(|l| l.inputs.max(l.outputs))
            .max()
            .unwrap_or(0)
    }

    /// Serialises to safetensors bytes (layout in the module docs).
    pub fn to_safetensors(&self) -> Vec<u8> {
        self.to_safetensors_with(&HashMap::new())
    }

    /// [`Mlp::to_safetensors`] with `extra` metadata entries beside the network's own.
    pub fn to_safetensors_with(&self, extra: &HashMap<String, String>) -> Vec<u8> {
        let mut bytes: Vec<(String, Vec<u8>, Vec<usize>)> = Vec::new();
        for (i, l) in self.layers.iter().enumerate() {
            bytes.push((
                format!("layers.{i}.weight"),
                l.weight.iter().flat_map(|v| v.to_le_bytes()).collect(),
                vec![l.outputs, l.inputs],
            ));
            bytes.push((
                format!("layers.{i}.bias"),
                l.bias.iter().flat_map(|v| v.to_le_bytes()).collect(),
                vec![l.outputs],
            ));
            if let Some((gain, shift)) = &l.norm {
                for (part, v) in [("weight", gain), ("bias", shift)] {
                    bytes.push((
                        format!("layers.{i}.norm.{part}"),
                        v.iter().flat_map(|v| v.to_le_bytes()).collect(),
                        vec![l.outputs],
                    ));
                }
            }
        }
        let views: Vec<(String, TensorView)> = bytes
            .iter()
            .map(|(name, data, shape)| {
                let view = TensorView::new(Dtype::F32, shape.clone(), data)
                    .unwrap_or_else(|_| unreachable!("sizes match by construction"));
                (name.clone(), view)
            })
            .collect();
        let mut meta = extra.clone();
        meta.extend([
            ("format".to_owned(), "reflex-mlp".to_owned()),
            (
                "hidden_activation".to_owned(),
                self.hidden.name().to_owned(),
            ),
            (
                "output_activation".to_owned(),
                self.output.name().to_owned(),
            ),
        ]);
        safetensors::tensor::serialize(views, Some(meta))
            .unwrap_or_else(|_| unreachable!("valid views always serialise"))
    }

    /// Writes the weights to `path` atomically and durably: a temporary file, synced, renamed
    /// into place, then the directory synced. A reader never sees half a file, and a crash
    /// leaves the old weights or the new ones.
    pub fn save(&self, path: &Path) -> Result<(), WeightsError> {
        self.save_with_metadata(path, &HashMap::new())
    }

    /// [`Mlp::save`] with `extra` metadata entries (a policy file's).
    pub fn save_with_metadata(
        &self,
        path: &Path,
        extra: &HashMap<String, String>,
    ) -> Result<(), WeightsError> {
        write_atomically(path, &self.to_safetensors_with(extra))
    }

    /// Reads weights written by [`Mlp::save`], PyTorch or anything else that follows the layout.
    pub fn load(path: &Path) -> Result<Self, WeightsError> {
        Ok(Self::load_with_metadata(path)?.0)
    }

    /// [`Mlp::load`], and every metadata entry of the file.
    pub fn load_with_metadata(
        path: &Path,
    ) -> Result<(Self, HashMap<String, String>), WeightsError> {
        let bytes = std::fs::read(path).map_err(|e| WeightsError::Io {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let mlp = Self::from_safetensors(&bytes, path)?;
        let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| WeightsError::Format {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        Ok((mlp, meta.metadata().clone().unwrap_or_default()))
    }

    /// Parses safetensors bytes; `path` only names the source in errors.
    pub fn from_safetensors(bytes: &[u8], path: &Path) -> Result<Self, WeightsError> {
        let st = SafeTensors::deserialize(bytes).map_err(|e| WeightsError::Format {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let tensor_err = |name: &str, message: String| WeightsError::Tensor {
            path: path.to_owned(),
            name: name.to_owned(),
            message,
        };
        let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| WeightsError::Format {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let md = meta.metadata().clone().unwrap_or_default();
        let act = |key: &str| -> Result<Activation, WeightsError> {
            match md.get(key) {
                None => Ok(if key == "hidden_activation" {
                    Activation::Relu
                } else {
                    Activation::Identity
                }),
                Some(v) => Activation::parse(v).ok_or_else(|| {
                    tensor_err(key, format!("expected relu, tanh or identity, got \"{v}\""))
                }),
            }
        };
        let hidden = act("hidden_activation")?;
        let output = act("output_activation")?;

        let names: Vec<String> = st.names().into_iter().map(str::to_owned).collect();
        for n in &names {
            let ok = n
                .strip_prefix("layers.")
                .and_then(|r| r.split_once('.'))
                .is_some_and(|(i, kind)| {
                    i.parse::<usize>().is_ok()
                        && matches!(kind, "weight" | "bias" | "norm.weight" | "norm.bias")
                });
            if !ok {
                return Err(tensor_err(
                    n,
                    "unexpected tensor: expected layers.<i>.weight, layers.<i>.bias or layers.<i>.norm.{weight,bias}".into(),
                ));
            }
        }
        let mut layers: Vec<LayerParams> = Vec::new();
        let mut normed = 0;
        for i in 0.. {
            let wname = format!("layers.{i}.weight");
            let bname = format!("layers.{i}.bias");
            let Ok(w) = st.tensor(&wname) else {
                if st.tensor(&bname).is_ok() {
                    return Err(tensor_err(&wname, "missing (its bias exists)".into()));
                }
                break;
            };
            let b = st
                .tensor(&bname)
                .map_err(|_| tensor_err(&bname, "missing".into()))?;
            for (name, t) in [(&wname, &w), (&bname, &b)] {
                if t.dtype() != Dtype::F32 {
                    return Err(tensor_err(
                        name,
                        format!("expected F32, got {:?}", t.dtype()),
                    ));
                }
            }
            let &[outputs, inputs] = w.shape() else {
                return Err(tensor_err(
                    &wname,
                    format!("expected shape [out, in], got {:?}", w.shape()),
                ));
            };
            if b.shape() != [outputs] {
                return Err(tensor_err(
                    &bname,
                    format!("expected shape [{outputs}], got {:?}", b.shape()),
                ));
            }
            if let Some(prev) = layers.last() {
                let prev_out = prev.outputs;
                if prev_out != inputs {
                    return Err(tensor_err(
                        &wname,
                        format!("takes {inputs} inputs but the previous layer gives {prev_out}"),
                    ));
                }
            }
            let floats = |name: &str, data: &[u8]| -> Result<Vec<f32>, WeightsError> {
                let v: Vec<f32> = data
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                if let Some(k) = v.iter().position(|x| !x.is_finite()) {
                    return Err(tensor_err(name, format!("element {k} is not finite")));
                }
                Ok(v)
            };
            let gname = format!("layers.{i}.norm.weight");
            let sname = format!("layers.{i}.norm.bias");
            let norm = match (st.tensor(&gname), st.tensor(&sname)) {
                (Err(_), Err(_)) => None,
                (Ok(g), Ok(sh)) => {
                    for (name, t) in [(&gname, &g), (&sname, &sh)] {
                        if t.dtype() != Dtype::F32 || t.shape() != [outputs] {
                            return Err(tensor_err(
                                name,
                                format!(
                                    "expected F32 of shape [{outputs}], got {:?} {:?}",
                                    t.dtype(),
                                    t.shape()
                                ),
                            ));
                        }
                    }
                    Some((floats(&gname, g.data())?, floats(&sname, sh.data())?))
                }
                (Ok(_), Err(_)) => {
                    return Err(tensor_err(&sname, "missing (its gain exists)".into()))
                }
                (Err(_), Ok(_)) => {
                    return Err(tensor_err(&gname, "missing (its bias exists)".into()))
                }
            };
            normed += usize::from(norm.is_some());
            layers.push(LayerParams {
                inputs,
                outputs,
                weight: floats(&wname, w.data())?,
                bias: floats(&bname, b.data())?,
                norm,
            });
        }
        if layers.is_empty() {
            return Err(tensor_err(
                "layers.0.weight",
                "missing: the file holds no layer".into(),
            ));
        }
        if layers.last().is_some_and(|l| l.norm.is_some()) {
            return Err(tensor_err(
                &format!("layers.{}.norm.weight", layers.len() - 1),
                "the output layer cannot carry LayerNorm".into(),
            ));
        }
        if layers.len() * 2 + normed * 2 != names.len() {
            return Err(tensor_err(
                &format!("layers.{}", layers.len()),
                "layers must be numbered from 0 without gaps".into(),
            ));
        }
        Ok(Self::assemble(layers, hidden, output))
    }
}

/// Writes `bytes` to `path` atomically and durably: a temporary file, synced, renamed into
/// place, then the directory synced.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), WeightsError> {
    use std::io::Write;
    let io = |e: std::io::Error| WeightsError::Io {
        path: path.to_owned(),
        message: e.to_string(),
    };
    let tmp = path.with_extension("safetensors.tmp");
    {
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(io)?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io)
}

/// In-place LayerNorm of one row: `(y - mean) / sqrt(var + eps) * gain + shift`.
pub(crate) fn layer_norm(y: &mut [f32], gain: &[f32], shift: &[f32]) {
    let h = y.len() as f32;
    let mean = y.iter().sum::<f32>() / h;
    let var = y.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / h;
    let inv = 1.0 / (var + LAYER_NORM_EPS).sqrt();
    for ((v, g), s) in y.iter_mut().zip(gain).zip(shift) {
        *v = (*v - mean) * inv * g + s;
    }
}

/// True when this CPU can run the AVX2 + FMA kernel.
pub(crate) fn fast_kernel_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// y = W x + b for row-major W `[y.len()][x.len()]`.
#[inline]
pub(crate) fn dense(fast: bool, w: &[f32], b: &[f32], x: &[f32], y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if fast {
        // SAFETY: `fast` is only set when the CPU reports AVX2 and FMA.
        unsafe { dense_avx2_fma(w, b, x, y) };
        return;
    }
    let _ = fast;
    dense_portable(w, b, x, y);
}

/// AVX2 + FMA kernel: four output rows share each load of `x`, and two accumulators per row
/// keep eight independent FMA chains in flight.
///
/// # Safety
/// The CPU must support AVX2 and FMA; `w.len() == y.len() * x.len()` and `b.len() == y.len()`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dense_avx2_fma(w: &[f32], b: &[f32], x: &[f32], y: &mut [f32]) {
    use std::arch::x86_64::*;
    let n = x.len();
    debug_assert_eq!(w.len(), y.len() * n);
    debug_assert_eq!(b.len(), y.len());
    let full16 = n / 16 * 16;
    let full8 = n / 8 * 8;
    let xp = x.as_ptr();
    let hsum = |v: __m256| -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 1)))
    };
    let mut o = 0;
    while o + 4 <= y.len() {
        // SAFETY: rows o..o+4 lie inside `w`; every load below reads k..k+8 <= n of a row.
        unsafe {
            let p = [0, 1, 2, 3].map(|r| w.as_ptr().add((o + r) * n));
            let mut acc = [_mm256_setzero_ps(); 8];
            let mut k = 0;
            while k < full16 {
                let x0 = _mm256_loadu_ps(xp.add(k));
                let x1 = _mm256_loadu_ps(xp.add(k + 8));
                for r in 0..4 {
                    acc[2 * r] = _mm256_fmadd_ps(_mm256_loadu_ps(p[r].add(k)), x0, acc[2 * r]);
                    acc[2 * r + 1] =
                        _mm256_fmadd_ps(_mm256_loadu_ps(p[r].add(k + 8)), x1, acc[2 * r + 1]);
                }
                k += 16;
            }
            if k < full8 {
                let x0 = _mm256_loadu_ps(xp.add(k));
                for r in 0..4 {
                    acc[2 * r] = _mm256_fmadd_ps(_mm256_loadu_ps(p[r].add(k)), x0, acc[2 * r]);
                }
                k += 8;
            }
            for r in 0..4 {
                let mut s = b[o + r] + hsum(_mm256_add_ps(acc[2 * r], acc[2 * r + 1]));
                for kk in k..n {
                    s = (*p[r].add(kk)).mul_add(x[kk], s);
                }
                y[o + r] = s;
            }
        }
        o += 4;
    }
    while o < y.len() {
        // SAFETY: row o lies inside `w`; loads read k..k+8 <= n.
        unsafe {
            let p = w.as_ptr().add(o * n);
            let mut acc = _mm256_setzero_ps();
            let mut k = 0;
            while k < full8 {
                acc = _mm256_fmadd_ps(_mm256_loadu_ps(p.add(k)), _mm256_loadu_ps(xp.add(k)), acc);
                k += 8;
            }
            let mut s = b[o] + hsum(acc);
            for kk in k..n {
                s = (*p.add(kk)).mul_add(x[kk], s);
            }
            y[o] = s;
        }
        o += 1;
    }
}

/// The portable kernel: four output rows at a time share each load of `x`; eight independent
/// lanes per row let the compiler vectorise.
fn dense_portable(w: &[f32], b: &[f32], x: &[f32], y: &mut [f32]) {
    let n = x.len();
    let full = n / 8 * 8;
    let mut rows = y
        .chunks_exact_mut(4)
        .zip(w.chunks_exact(4 * n))
        .zip(b.chunks_exact(4));
    for ((yo, w4), b4) in &mut rows {
        let (r0, rest) = w4.split_at(n);
        let (r1, rest) = rest.split_at(n);
        let (r2, r3) = rest.split_at(n);
        let mut acc = [[0f32; 8]; 4];
        let mut k = 0;
        while k < full {
            let xs = &x[k..k + 8];
            for l in 0..8 {
                acc[0][l] += r0[k + l] * xs[l];
                acc[1][l] += r1[k + l] * xs[l];
                acc[2][l] += r2[k + l] * xs[l];
                acc[3][l] += r3[k + l] * xs[l];
            }
            k += 8;
        }
        for (j, out) in yo.iter_mut().enumerate() {
            let row = [r0, r1, r2, r3][j];
            let mut s = b4[j] + acc[j].iter().sum::<f32>();
            for kk in full..n {
                s += row[kk] * x[kk];
            }
            *out = s;
        }
    }
    // Rows left over when the output count is not a multiple of four.
    let done = y.len() / 4 * 4;
    for o in done..y.len() {
        let row = &w[o * n..(o + 1) * n];
        let mut acc = [0f32; 8];
        let mut k = 0;
        while k < full {
            for l in 0..8 {
                acc[l] += row[k + l] * x[k + l];
            }
            k += 8;
        }
        let mut s = b[o] + acc.iter().sum::<f32>();
        for kk in full..n {
            s += row[kk] * x[kk];
        }
        y[o] = s;
    }
}
