//! # reflex-runtime
//!
//! The one control loop that drives a simulated or a real arm: [`Runtime`] reads any
//! `reflex_core::Robot`, builds the observation, runs the base policy ([`NetPolicy`] from a
//! safetensors file, or any `Policy` such as a scripted expert) and the learned
//! [`ResidualPolicy`], composes them with an operator's intervention ([`Composer`]), maps the
//! action to joint setpoints (`reflex_core::ActionMapper`), passes every command through the
//! [`SafetyFilter`] and writes it, emitting one `Transition` per policy step on a drop-oldest
//! queue. The policy types (MLP, [`WeightsSlot`], base and residual policies, the policy file)
//! are `reflex-policy`'s, re-exported here. Weights are hot-swapped through a [`WeightsSlot`]; statistics are atomics
//! ([`RuntimeStats`]); pacing is a [`Ticker`] with optional [`RealTime`] settings. Nothing on the
//! tick allocates or takes a lock (a counting-allocator test proves it).
//!
//! ```
//! use reflex_core::{ArmModel, JointCommand, RobotState, SafetyLimits};
//! use reflex_runtime::{EStop, Faults, Mode, SafetyFilter};
//! let urdf = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../urdf/reflex_arm.urdf");
//! let arm = ArmModel::from_urdf_file(&urdf, "link0", "tcp").unwrap();
//! let mut state = RobotState::default();
//! state.joint_pos_rad = [0.0, -0.2, 0.0, -2.3, 0.0, 2.1, 0.785];
//! let estop = EStop::new();
//! let mut filter =
//!     SafetyFilter::new(SafetyLimits::from_model(&arm), arm, 0.001, estop.clone(), &state).unwrap();
//! let mut wish = JointCommand { joint_pos_rad: state.joint_pos_rad, gripper_width_m: 0.04 };
//! wish.joint_pos_rad[0] = f64::NAN; // this joint brakes (it is at rest: it stays)
//! wish.joint_pos_rad[1] += 0.5; // this one moves, within every limit
//! let mut out = JointCommand::default();
//! let (mode, faults) = filter.filter(&wish, &state, true, &mut out);
//! assert_eq!(mode, Mode::Normal);
//! assert!(faults.contains(Faults::NON_FINITE_COMMAND));
//! assert_eq!(out.joint_pos_rad[0], state.joint_pos_rad[0]);
//! assert!(out.joint_pos_rad[1] > state.joint_pos_rad[1]);
//! estop.press();
//! let (mode, _) = filter.filter(&wish, &state, true, &mut out);
//! assert_eq!(mode, Mode::Brake); // and it stays so until estop.release() and estop.rearm()
//! ```

// Limit checks write `!(x > 0.0)` on purpose: unlike `x <= 0.0`, it also rejects NaN.
#![allow(clippy::neg_cmp_op_on_partial_ord)]

mod compose;
mod runtime;
mod safety_filter;
mod stand_in;
mod stats;
mod ticker;

pub use compose::{Composed, Composer};
/// The policy types the loop runs (they live in `reflex-policy`).
pub use reflex_policy::{
    squash_log_std, Activation, DimMismatch, LayerParams, Mlp, MlpScratch, NetPolicy,
    PolicyShapeError, PublishError, ResidualPolicy, ShapeMismatch, WeightsError, WeightsSlot,
    LAYER_NORM_EPS, LOG_STD_MAX, LOG_STD_MIN,
};
pub use runtime::{
    ResetError, Runtime, RuntimeConfig, RuntimeError, RuntimeSettings, RuntimeStats, TickReport,
};
pub use safety_filter::{EStop, Faults, Mode, RearmError, SafetyFilter};
pub use stand_in::StandInArm;
pub use stats::{Histogram, LoopStats};
pub use ticker::{FifoScope, MemoryLock, RealTime, RealTimeRequest, Ticker};
