//! `reflex-teleop`: teleop correction sessions. A policy acts; an operator takes over when it goes
//! wrong, from a web page, a gamepad, a SpaceMouse or ROS, and the corrections become training
//! data (the runtime records the executed action of every step it was intervened in).
//!
//! - [`protocol`]: the WebSocket messages between the operator's page (or any client: the
//!   scripted operator, a test) and the session.
//! - [`hub`]: [`OperatorHub`] turns every client's messages into the runtime's
//!   [`reflex_core::OperatorCommand`]s (holding, not toggling: the operator acts while the
//!   intervene control is held), presses its e-stop and re-arms it; it also takes commands
//!   made elsewhere (ROS topics through the bridge) and arbitrates them with the page's.
//! - [`server`]: [`TeleopServer`] serves the page and the WebSocket on loopback by default, and
//!   refuses every request without the session's random access token.
//! - [`client`]: [`OperatorClient`], a blocking client of the same WebSocket (what the
//!   scripted operator and device bridges speak).
//! - [`pad`]: native gamepads (the `gamepad` feature), mapped as the page maps the browser's,
//!   into the same hub.
//! - [`spacemouse`]: a 3Dconnexion SpaceMouse read from Linux's hidraw (no system library):
//!   deflecting the puck drives, its buttons set the gripper; into the same hub.
//!
//! The control loop never waits on any of this: commands reach it through the runtime's
//! wait-free operator cell, and a silent operator during a takeover is the runtime's link
//! timeout (the arm holds).

pub mod client;
pub mod hub;
pub mod pad;
pub mod protocol;
pub mod server;
pub mod spacemouse;

pub use client::{ClientError, OperatorClient};
pub use hub::{HubStats, OperatorHub};
pub use protocol::{
    ClientMessage, EpisodeRow, EventKind, LearningStatus, ServerMessage, Status, RECENT_EPISODES,
};
pub use server::{png_base64, random_token, FramesFn, SessionInfo, StatusFn, TeleopServer};

/// The operator's page (HTML, CSS and JavaScript in one file, no outside resources).
pub const PAGE: &str = include_str!("page.html");
