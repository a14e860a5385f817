//! Network policies on the control tick, with weights another thread can replace at any time.
//!
//! A [`WeightsSlot`] holds the current weights behind an `arc_swap::ArcSwap`. The tick loads
//! them once per forward pass (lock-free, no allocation), so one pass always uses one version:
//! a reader never sees a mix of old and new. The learner publishes whole new networks; the
//! versions they replace stay in the publisher's keeping until no reader holds them, so the last
//! reference to old weights is never dropped (freed) on the control thread.

use crate::conv::ConvEncoder;
use crate::mlp::{Activation, DimMismatch, Mlp, MlpScratch};
use arc_swap::ArcSwap;
use reflex_core::{Action, ImageReader, Observation, Policy, MAX_ACTION_DIM};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// New weights that do not fit the network they would replace.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("new weights have layer widths {got:?} ({got_act:?}), the running network has {expected:?} ({expected_act:?})")]
pub struct ShapeMismatch {
    /// Widths of the running network.
    pub expected: Vec<usize>,
    /// Widths offered.
    pub got: Vec<usize>,
    /// Activations of the running network.
    pub expected_act: (Activation, Activation),
    /// Activations offered.
    pub got_act: (Activation, Activation),
}

/// Why new weights were not published.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PublishError {
    /// They do not fit the running network.
    #[error(transparent)]
    Shape(#[from] ShapeMismatch),
    /// A parameter is NaN or infinite: the running weights stay.
    #[error("new weights refused: layer {layer} has a non-finite {what}")]
    NonFinite {
        /// The layer.
        layer: usize,
        /// Which parameter kind.
        what: &'static str,
    },
}

/// A value swapped whole, with a version count; the versions it replaces stay here until no
/// reader holds them. The mechanism of [`WeightsSlot`] and [`EncoderSlot`].
struct Swapped<T> {
    current: ArcSwap<T>,
    version: AtomicU64,
    retired: Mutex<Vec<Arc<T>>>,
}

impl<T: Clone> Swapped<T> {
    fn new(value: T) -> Self {
        Self {
            current: ArcSwap::from_pointee(value),
            version: AtomicU64::new(0),
            retired: Mutex::new(Vec::new()),
        }
    }

    /// Makes `value` current (slow side: allocates, takes a lock no tick takes); returns the
    /// new version number.
    fn replace(&self, value: T) -> u64 {
        let old = self.current.swap(Arc::new(value));
        let v = self.version.fetch_add(1, Ordering::AcqRel) + 1;
        let mut retired = self.retired.lock().unwrap_or_else(|p| p.into_inner());
        // Free only versions nobody reads any more. `swap` has turned every reader's borrow of
        // the old version into a counted reference, and no new reader can reach a retired
        // version, so a count of 1 (this list) means it is safe to free here, off the control
        // thread; a version still being read waits for a later publication.
        retired.retain(|w| Arc::strong_count(w) > 1);
        retired.push(old);
        v
    }

    fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    fn snapshot(&self) -> T {
        (**self.current.load()).clone()
    }
}

/// Shared network weights, swapped whole.
pub struct WeightsSlot {
    inner: Swapped<Mlp>,
}

impl WeightsSlot {
    /// A slot holding `mlp` as version 0.
    pub fn new(mlp: Mlp) -> Arc<Self> {
        Arc::new(Self {
            inner: Swapped::new(mlp),
        })
    }

    /// Replaces the weights (slow side: allocates, may take a lock no tick takes). The next
    /// forward pass on any thread uses them. Returns the new version number. Weights of another
    /// shape are refused, so a running loop's buffers always fit; so are weights with a NaN or
    /// infinite parameter, so a diverged learner never reaches the arm.
    pub fn publish(&self, mlp: Mlp) -> Result<u64, PublishError> {
        if let Some((layer, what)) = mlp.first_non_finite() {
            return Err(PublishError::NonFinite { layer, what });
        }
        let now = self.inner.current.load();
        if mlp.dims() != now.dims()
            || mlp.activations() != now.activations()
            || mlp.normalised_layers() != now.normalised_layers()
        {
            return Err(ShapeMismatch {
                expected: now.dims(),
                got: mlp.dims(),
                expected_act: now.activations(),
                got_act: mlp.activations(),
            }
            .into());
        }
        drop(now);
        Ok(self.inner.replace(mlp))
    }

    /// How many times the weights were replaced.
    pub fn version(&self) -> u64 {
        self.inner.version()
    }

    /// A copy of the current weights (slow side).
    pub fn snapshot(&self) -> Mlp {
        self.inner.snapshot()
    }

    /// Runs one forward pass on the current weights. No allocation, no lock.
    pub fn forward(
        &self,
        scratch: &mut MlpScratch,
        input: &[f32],
        output: &mut [f32],
    ) -> Result<(), DimMismatch> {
        let weights = self.inner.current.load();
        weights.forward_with(scratch, input, output)
    }

    fn dims(&self) -> (usize, usize) {
        let w = self.inner.current.load();
        (w.input_dim(), w.output_dim())
    }
}

/// Shared encoder weights, swapped whole: the [`WeightsSlot`] of a [`ConvEncoder`]. A reader
/// keeps its own copy (with its own buffers) and takes newer weights into it in place when the
/// version moves, so the tick never allocates or frees.
pub struct EncoderSlot {
    inner: Swapped<ConvEncoder>,
}

impl EncoderSlot {
    /// A slot holding `encoder` as version 0.
    pub fn new(encoder: ConvEncoder) -> Arc<Self> {
        Arc::new(Self {
            inner: Swapped::new(encoder),
        })
    }

    /// Replaces the weights (slow side). Refuses another shape, and weights with a NaN or
    /// infinite parameter (the running ones stay); the message says which.
    pub fn publish(&self, encoder: ConvEncoder) -> Result<u64, String> {
        encoder.params().check()?;
        if encoder.shape() != self.inner.current.load().shape() {
            return Err(format!(
                "new encoder weights have shape {:?}, the running encoder {:?}",
                encoder.shape(),
                self.inner.current.load().shape()
            ));
        }
        Ok(self.inner.replace(encoder))
    }

    /// How many times the weights were replaced.
    pub fn version(&self) -> u64 {
        self.inner.version()
    }

    /// A copy of the current weights (slow side).
    pub fn snapshot(&self) -> ConvEncoder {
        self.inner.snapshot()
    }
}

/// The residual's view of a camera: the encoder's features of the newest image from an
/// [`reflex_core::image_cell`] stand before the observation's first `proprio` values.
struct PixelFront {
    slot: Arc<EncoderSlot>,
    local: ConvEncoder,
    seen: u64,
    frames: ImageReader,
    proprio: usize,
}

impl PixelFront {
    /// Writes `[features | proprioception]` into `input`; false when there is no image of the
    /// encoder's size or too few observation values.
    fn fill(&mut self, flat: &[f32], input: &mut [f32]) -> bool {
        let v = self.slot.version();
        if v != self.seen {
            // Same shape by construction (`EncoderSlot::publish` checks it): no allocation.
            let _ = self.local.assign_from(&self.slot.inner.current.load());
            self.seen = v;
        }
        let k = self.local.features();
        let Some(proprio) = flat.get(..self.proprio) else {
            return false;
        };
        let Some(img) = self.frames.latest() else {
            return false;
        };
        if self.local.forward(&img.bytes, &mut input[..k]).is_err() {
            return false;
        }
        input[k..k + self.proprio].copy_from_slice(proprio);
        true
    }
}

/// Why a network does not fit a task.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyShapeError {
    /// Input width differs from what the policy is given.
    #[error("the network takes {got} inputs, but {what} has {expected}")]
    Inputs {
        /// What the input is made of.
        what: &'static str,
        /// Inputs available.
        expected: usize,
        /// Inputs the network takes.
        got: usize,
    },
    /// Output width differs from the action space.
    #[error("the network gives {got} outputs, but the action space has {expected}")]
    Outputs {
        /// Components of the action.
        expected: usize,
        /// Outputs of the network.
        got: usize,
    },
}

/// A frozen (or hot-swapped) network policy: the flat observation in, a normalised action out.
pub struct NetPolicy {
    weights: Arc<WeightsSlot>,
    scratch: MlpScratch,
    /// Forward passes refused (a shape mismatch; cannot happen after `new` checked it).
    pub errors: u64,
}

impl NetPolicy {
    /// A policy for observations of `obs_dim` and actions of `action_dim` components.
    pub fn new(
        weights: Arc<WeightsSlot>,
        obs_dim: usize,
        action_dim: usize,
    ) -> Result<Self, PolicyShapeError> {
        check_dims(&weights, obs_dim, "the task's flat observation", action_dim)?;
        let scratch = weights.inner.current.load().scratch();
        Ok(Self {
            weights,
            scratch,
            errors: 0,
        })
    }

    /// The weights this policy reads (publish to them to swap).
    pub fn weights(&self) -> &Arc<WeightsSlot> {
        &self.weights
    }
}

impl Policy for NetPolicy {
    fn act(&mut self, obs: &Observation, action: &mut Action) {
        if self
            .weights
            .forward(
                &mut self.scratch,
                obs.flat.as_slice(),
                action.as_mut_slice(),
            )
            .is_err()
        {
            // Cannot happen once `new` checked the shapes; a zero action is the safe answer.
            self.errors += 1;
            action.as_mut_slice().fill(0.0);
        }
    }
}

/// Smallest log standard deviation of a tanh-Gaussian policy head.
pub const LOG_STD_MIN: f32 = -5.0;
/// Largest log standard deviation of a tanh-Gaussian policy head.
pub const LOG_STD_MAX: f32 = 1.0;

/// The log standard deviation a tanh-Gaussian head's raw output stands for: squashed smoothly
/// into [`LOG_STD_MIN`, `LOG_STD_MAX`] (the trainer uses the same function).
pub fn squash_log_std(raw: f32) -> f32 {
    LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (raw.tanh() + 1.0)
}

/// How the residual network's outputs become a correction.
enum Head {
    /// The outputs are the correction (a deployed policy: tanh output activation).
    Direct,
    /// The outputs are means and raw log standard deviations (`2 x action_dim`); the correction
    /// is `tanh(mean)`, or `tanh(mean + std * noise)` while `explore` is set (training).
    TanhGaussian { explore: Arc<AtomicBool>, rng: u64 },
}

/// The learned residual: sees the flat observation and the base action, proposes a correction.
pub struct ResidualPolicy {
    weights: Arc<WeightsSlot>,
    scratch: MlpScratch,
    /// `[observation | base action]`, or with a camera `[features | proprioception | base]`.
    input: Vec<f32>,
    front: Option<PixelFront>,
    raw: [f32; 2 * MAX_ACTION_DIM],
    head: Head,
    /// Forward passes refused (a shape mismatch; cannot happen after `new` checked it).
    pub errors: u64,
}

impl ResidualPolicy {
    /// A residual for observations of `obs_dim` and actions of `action_dim` components: the
    /// network takes `obs_dim + action_dim` inputs and gives `action_dim` outputs.
    pub fn new(
        weights: Arc<WeightsSlot>,
        obs_dim: usize,
        action_dim: usize,
    ) -> Result<Self, PolicyShapeError> {
        Self::with_head(weights, obs_dim, action_dim, action_dim, Head::Direct)
    }

    fn with_head(
        weights: Arc<WeightsSlot>,
        obs_dim: usize,
        action_dim: usize,
        outputs: usize,
        head: Head,
    ) -> Result<Self, PolicyShapeError> {
        check_dims(
            &weights,
            obs_dim + action_dim,
            "the flat observation plus the base action",
            outputs,
        )?;
        let scratch = weights.inner.current.load().scratch();
        Ok(Self {
            weights,
            scratch,
            input: vec![0.0; obs_dim + action_dim],
            front: None,
            raw: [0.0; 2 * MAX_ACTION_DIM],
            head,
            errors: 0,
        })
    }

    /// A training-time residual whose network gives `2 x action_dim` outputs (means, then raw
    /// log standard deviations, see [`squash_log_std`]). While `explore` is set it samples
    /// `tanh(mean + std * noise)` with its own generator seeded by `seed`; otherwise it gives
    /// `tanh(mean)`, the deployed behaviour.
    pub fn tanh_gaussian(
        weights: Arc<WeightsSlot>,
        obs_dim: usize,
        action_dim: usize,
        explore: Arc<AtomicBool>,
        seed: u64,
    ) -> Result<Self, PolicyShapeError> {
        let head = Head::TanhGaussian {
            explore,
            rng: seed ^ 0x9E37_79B9_7F4A_7C15,
        };
        Self::with_head(weights, obs_dim, action_dim, 2 * action_dim, head)
    }

    /// A residual that sees a camera, as `reflex train --obs pixels` trains it: its network
    /// takes the encoder's features of the newest image in `frames`, the observation's first
    /// `proprio_dim` values and the base action, and gives `2 x action_dim` outputs (a
    /// tanh-Gaussian head, exploring while `explore` is set, see [`Self::tanh_gaussian`]). The
    /// encoder's weights follow `encoder`'s newest. Without an image of the encoder's size the
    /// correction is zero (the base policy, which holds the arm on a stale camera, decides).
    #[allow(clippy::too_many_arguments)]
    pub fn pixel_tanh_gaussian(
        weights: Arc<WeightsSlot>,
        encoder: Arc<EncoderSlot>,
        frames: ImageReader,
        proprio_dim: usize,
        action_dim: usize,
        explore: Arc<AtomicBool>,
        seed: u64,
    ) -> Result<Self, PolicyShapeError> {
        let head = Head::TanhGaussian {
            explore,
            rng: seed ^ 0x9E37_79B9_7F4A_7C15,
        };
        Self::with_front(
            weights,
            encoder,
            frames,
            proprio_dim,
            action_dim,
            2 * action_dim,
            head,
        )
    }

    /// The deployed form of [`Self::pixel_tanh_gaussian`]: the network gives the correction
    /// itself (`action_dim` outputs, tanh output activation), as `policy.safetensors` of a run
    /// from pixels holds it.
    pub fn pixel(
        weights: Arc<WeightsSlot>,
        encoder: Arc<EncoderSlot>,
        frames: ImageReader,
        proprio_dim: usize,
        action_dim: usize,
    ) -> Result<Self, PolicyShapeError> {
        Self::with_front(
            weights,
            encoder,
            frames,
            proprio_dim,
            action_dim,
            action_dim,
            Head::Direct,
        )
    }

    fn with_front(
        weights: Arc<WeightsSlot>,
        encoder: Arc<EncoderSlot>,
        frames: ImageReader,
        proprio_dim: usize,
        action_dim: usize,
        outputs: usize,
        head: Head,
    ) -> Result<Self, PolicyShapeError> {
        let local = encoder.snapshot();
        let features = local.features();
        check_dims(
            &weights,
            features + proprio_dim + action_dim,
            "the encoder's features, the proprioception and the base action",
            outputs,
        )?;
        let scratch = weights.inner.current.load().scratch();
        Ok(Self {
            weights,
            scratch,
            input: vec![0.0; features + proprio_dim + action_dim],
            front: Some(PixelFront {
                seen: encoder.version(),
                slot: encoder,
                local,
                frames,
                proprio: proprio_dim,
            }),
            raw: [0.0; 2 * MAX_ACTION_DIM],
            head,
            errors: 0,
        })
    }

    /// The weights this residual reads (publish to them to swap).
    pub fn weights(&self) -> &Arc<WeightsSlot> {
        &self.weights
    }

    /// Writes the correction for `obs` and `base` into `out`.
    pub fn act(&mut self, obs: &Observation, base: &Action, out: &mut Action) {
        let flat = obs.flat.as_slice();
        let seen = match &mut self.front {
            Some(f) => f
                .fill(flat, &mut self.input)
                .then_some(f.local.features() + f.proprio),
            None if flat.len() + base.dim() <= self.input.len() => {
                self.input[..flat.len()].copy_from_slice(flat);
                Some(flat.len())
            }
            None => None,
        };
        // No image to see, or inputs wider than the network's: no correction.
        let Some(k) = seen.filter(|k| k + base.dim() <= self.input.len()) else {
            self.errors += 1;
            out.as_mut_slice().fill(0.0);
            return;
        };
        let n = k + base.dim();
        self.input[k..n].copy_from_slice(base.as_slice());
        let dim = out.dim();
        let failed = match &mut self.head {
            Head::Direct => self
                .weights
                .forward(&mut self.scratch, &self.input[..n], out.as_mut_slice())
                .is_err(),
            Head::TanhGaussian { explore, rng } => {
                let raw = &mut self.raw[..2 * dim];
                let failed = self
                    .weights
                    .forward(&mut self.scratch, &self.input[..n], raw)
                    .is_err();
                let explore = explore.load(Ordering::Relaxed);
                for (j, o) in out.as_mut_slice().iter_mut().enumerate() {
                    let noise = if explore {
                        squash_log_std(raw[dim + j]).exp() * standard_normal(rng)
                    } else {
                        0.0
                    };
                    *o = (raw[j] + noise).tanh();
                }
                failed
            }
        };
        if failed {
            self.errors += 1;
            out.as_mut_slice().fill(0.0);
        }
    }
}

/// One standard normal draw (SplitMix64 + Box-Muller); no allocation, no lock.
fn standard_normal(state: &mut u64) -> f32 {
    let mut next = || {
        *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    };
    let u1 = next().max(1e-300);
    let u2 = next();
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

fn check_dims(
    weights: &WeightsSlot,
    inputs: usize,
    what: &'static str,
    outputs: usize,
) -> Result<(), PolicyShapeError> {
    let (i, o) = weights.dims();
    if i != inputs {
        return Err(PolicyShapeError::Inputs {
            what,
            expected: inputs,
            got: i,
        });
    }
    if o != outputs {
        return Err(PolicyShapeError::Outputs {
            expected: outputs,
            got: o,
        });
    }
    Ok(())
}
