//! `reflex-fw-core`: the joint controller of Reflex's firmware, as a `no_std` library with no
//! HAL in it. A board crate wires its timer, serial port, encoders and motor drivers to a
//! [`Controller`]; `reflex firmware-sim` wires the same controller to the rapier arm behind a
//! pseudo-terminal; the [`checks`] run on the host and on the emulated Cortex-M4F.
//!
//! Per control period the board calls [`Controller::receive`] with the bytes the host sent,
//! [`Controller::tick`] with the measurement (it returns the motor torques), then
//! [`Controller::encode_reply`] and [`Controller::encode_state`] for the bytes to send back.
//!
//! ```
//! use reflex_fw_core::{checks::test_config, Controller, Measured};
//! let mut ctl = Controller::new(test_config()).unwrap();
//! let cmd = ctl.tick(1_000, &Measured::default());
//! assert!(!cmd.enabled, "idle at boot until a host opens a session");
//! ```
#![cfg_attr(not(test), no_std)]
#![deny(missing_docs)]

pub mod checks;
mod config;
mod controller;
pub mod plant;

pub use config::{BoardConfig, ConfigError};
pub use controller::{BoardStats, Controller, Measured, MotorCommand, MotorPort};
pub use reflex_wire as wire;
