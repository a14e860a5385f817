//! `reflex-wire`: the frames the Reflex host and its joint-controller firmware exchange over a
//! serial line. `#![no_std]`, no allocation, no panics on input: the same code runs in the
//! host's `SerialRobot` and on the board.
//!
//! - [`msg`]: the messages, host to board ([`ToBoard`]: hello, setpoints with feed-forward,
//!   gains, limits, mode, e-stop, re-arm, heartbeat) and board to host ([`ToHost`]: hello
//!   answer with the board's limits, measured state with faults and link counters).
//! - [`frame`]: postcard payloads behind a version, kind and sequence header, a CRC-32, COBS
//!   framing between zero bytes; a strict [`Decoder`] and a [`Receiver`] that refuses
//!   duplicates and out-of-order frames, counting every refusal by [`Reject`] reason.
//!
//! ```
//! use reflex_wire::{Receiver, Sender, ToBoard, Hello, MAX_FRAME};
//! let mut line = [0u8; MAX_FRAME];
//! let (n, seq) = Sender::new().encode(&ToBoard::Hello(Hello { nonce: 7 }), &mut line).unwrap();
//! let mut board = Receiver::<ToBoard>::new();
//! let got: Vec<_> = line[..n].iter().filter_map(|&b| board.push(b)).collect();
//! assert_eq!((got[0].seq, got[0].msg), (seq, ToBoard::Hello(Hello { nonce: 7 })));
//! ```
#![cfg_attr(not(test), no_std)]
#![deny(missing_docs)]

pub mod cobs;
mod crc;
pub mod frame;
pub mod msg;

pub use crc::crc32;
pub use frame::{
    decode_frame, encode, encode_as, encode_raw, Decoder, EncodeError, Frame, Receiver, Reject,
    RejectCounts, Sender, SeqTracker, Wire, CRC_LEN, HEADER_LEN, MAX_FRAME, MAX_PAYLOAD, MAX_RAW,
    PROTOCOL_VERSION,
};
pub use msg::*;
