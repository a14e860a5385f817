//! `reflex-serial`: arms on Reflex's own joint firmware, over a serial line.
//!
//! - [`SerialRobot`] implements [`reflex_core::Robot`] over a serial port speaking
//!   [`reflex_wire`]: a session handshake with version, joint-count and limit checks; commands
//!   out as setpoints with velocity and gravity feed-forward, written by the tick without
//!   waiting; states in on a reader thread, handed over in a wait-free cell; round trips timed
//!   and every refused frame counted. The board enforces its own limits and watchdog whatever
//!   the host does; the host latches its e-stop when the board stops on its own.
//! - [`SharedSerialRobot`] lets several runtimes take turns on one board (the port is
//!   exclusive): a training job's exploring and evaluating runtimes.
//! - [`SetpointShaper`] turns joint commands into the board's setpoints (velocity and gravity
//!   feed-forward), for `SerialRobot` and for the in-process board simulation alike.
//! - [`SceneLink`] gives it what the board cannot: a tracker's object poses (JSON datagrams
//!   over UDP) and episode resets, so the task's judge and observations work as over ROS 2.
//! - [`spawn_board`] runs the firmware's control core on the host behind a serial port (a
//!   pseudo-terminal), as a board runs it behind USB: `reflex firmware-sim` and the tests.
//!
//! ```no_run
//! use reflex_serial::{SerialParams, SerialRobot};
//! # fn f(model: reflex_core::ArmModel) -> Result<(), Box<dyn std::error::Error>> {
//! let robot = SerialRobot::open(&SerialParams::new("/dev/ttyACM0"), model, Default::default())?;
//! # Ok(()) }
//! ```

mod board;
mod link;
mod robot;
pub mod scene;
mod setpoint;
mod shared;

pub use board::{board_config_for, spawn_board, BoardHandle, BoardReport};
pub use link::{robot_state, ReaderStats};
pub use robot::{
    describe, limits_for_board, LinkStats, SerialError, SerialParams, SerialResetError, SerialRobot,
};
pub use scene::{SceneLink, SceneLinkError, SceneMsg, TrackedPose, SCENE_PROTOCOL};
pub use setpoint::SetpointShaper;
pub use shared::SharedSerialRobot;
