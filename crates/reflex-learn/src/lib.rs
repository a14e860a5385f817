//! # reflex-learn
//!
//! Residual off-policy reinforcement learning for Reflex: a frozen base policy cloned from a
//! few demonstrations, and a small residual learned on top of it with SAC (or TD3), sampling
//! demonstrations and online data 50/50 (RLPD), while the runtime's control loop keeps running.
//!
//! - [`nn`]: batched MLPs (LayerNorm hidden blocks) with a fused forward/backward pass on
//!   `matrixmultiply`'s GEMM, Adam, Polyak averaging, export to the runtime's `Mlp`.
//! - [`sac`]: SAC with automatic temperature and TD3, critic ensembles with random-subset
//!   targets, on batches of n-step transitions; checkpoint state. Residual agents' critics learn
//!   on the executed action. A test computes one full update with burn's autodiff as the
//!   reference for every loss (`sac_reference`).
//! - [`replay`]: n-step aggregation, replay rings, RLPD's mixed batches, reshaping a ring's
//!   rewards with a potential.
//! - [`store`]: the crash-safe replay log (append-only checksummed segments) and atomic
//!   checkpoints.
//! - [`bc`]: behaviour cloning of the base policy.
//! - [`learner`]: the learner thread between the runtime's transition queue and its weights slot.
//! - [`stage`]: the seam for rewards that arrive late (a VLM's answer, a learned model): a hook
//!   on the driver at each episode start and after each judged step, which sees the world only
//!   through `reflex_core::SceneView`, and a stage on the learner thread that holds transitions
//!   until their rewards are known, rewards demonstrations, and may hand the learner a
//!   potential that reshapes the whole replay.
//! - [`pixels`]: the pixel encoder in burn (the tick's `reflex_policy::ConvEncoder`, trainable),
//!   DrQ's random shift, and the seam that carries a critic's gradient from this crate's
//!   kernels into burn's autodiff.
//! - [`burn_device`]: where burn's networks run: its CPU backend, or a GPU through burn's wgpu
//!   backend with the `gpu` feature (off by default; the build never needs a GPU).
//! - [`conv_net`]: the same pixel encoder on this crate's own kernels (im2col + GEMM, images
//!   across threads), checked against burn's gradients.
//! - [`pixel_sac`]: SAC from pixels: the agent behind the encoder, the encoder trained by the
//!   critics' loss alone (their gradient with respect to the features), a Polyak target
//!   encoder, random shifts on every batch; its checkpoint for `--resume`.
//! - [`pixel_replay`]: replay for SAC from pixels: each step's image stored once and referenced
//!   by serial from the n-step records, sampled RLPD-style with the images; and its log on
//!   disk (`PixelLog`, on the store's `SegmentLog` framing).
//! - [`pendulum`]: a pendulum swing-up to sanity-check the algorithm.
//!
//! The jobs that drive all this (`reflex train`, `reflex eval`) are `reflex-jobs`; nothing here
//! depends on the simulator, so the learner runs unchanged behind a real arm.
//!
//! Seams: the learner reads `reflex_core::Transition`s from the runtime's drop-oldest queue and
//! publishes `reflex_policy::Mlp`s through a `WeightsSlot`; the control loop never waits for
//! it. The networks train on this crate's own kernels (burn's CPU backends were measured slower
//! on this step, see the README); weights travel as safetensors in `torch.nn.Linear` layout.

pub mod bc;
pub mod burn_device;
pub mod conv_net;
pub mod learner;
pub mod nn;
pub mod pendulum;
pub mod pixel_replay;
pub mod pixel_sac;
pub mod pixels;
pub mod replay;
pub mod sac;
#[cfg(test)]
mod sac_reference;
pub mod stage;
pub mod store;

pub(crate) use reflex_core::rng;
