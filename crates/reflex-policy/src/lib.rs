//! # reflex-policy
//!
//! Everything a policy is, apart from the loop that runs it: the batch-1 inference [`Mlp`] (an
//! AVX2+FMA kernel picked at run time; weights as safetensors in `torch.nn.Linear` layout), the
//! [`WeightsSlot`] a learner hot-swaps weights through (arc-swap; non-finite weights refused),
//! the base [`NetPolicy`] and the learned [`ResidualPolicy`], and the policy file
//! ([`PolicyFile`]): weights plus the metadata that says what they are for (format version,
//! role, task, observation layout, action space, normaliser, residual scale, rates, the run's
//! seed and the code's commit), so a file is refused by a task it does not fit, naming both.
//! For arms seen through cameras, the [`ConvEncoder`] turns stacked camera frames into a short
//! feature vector in the tick, allocation-free (weights in `torch.nn` layout); the
//! [`PixelPolicy`] base runs one on the newest camera image (holding the arm on a stale one),
//! and a [`ResidualPolicy`] can see a camera too, its encoder's weights following an
//! [`EncoderSlot`] the learner publishes to (taken in place, never allocated on the tick).
//!
//! The runtime (`reflex-runtime`) runs these; the learner (`reflex-learn`) exports to them.
//! Neither depends on the other for them.

mod conv;
mod file;
mod mlp;
mod policy;

pub use conv::{
    stack_frames, ConvEncoder, ConvShape, EncoderParams, EncoderShape, PixelNet, PixelPolicy,
    ENCODER_FORMAT, MAX_CHANNELS, MAX_KERNEL, MAX_SIDE,
};
pub use file::{
    ObsLayout, PolicyFile, PolicyFileError, PolicyMeta, Role, POLICY_FORMAT, POLICY_META_KEY,
};
pub use mlp::{
    Activation, DimMismatch, LayerParams, Mlp, MlpScratch, WeightsError, LAYER_NORM_EPS,
};
pub use policy::{
    squash_log_std, EncoderSlot, NetPolicy, PolicyShapeError, PublishError, ResidualPolicy,
    ShapeMismatch, WeightsSlot, LOG_STD_MAX, LOG_STD_MIN,
};
