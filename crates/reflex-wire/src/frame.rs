//! Frames: a message as bytes on the line, and back.
//!
//! ```text
//! 0x00 | COBS( version u8 | kind u8 | seq u32 LE | postcard payload | CRC-32 LE ) | 0x00
//! ```
//!
//! The CRC covers everything before it. The leading zero ends whatever noise came before, so
//! a corrupted byte costs at most the frame it hit. Decoding is strict: a frame is either the
//! one encoding of exactly one message, or it is rejected with a [`Reject`] reason.

use crate::cobs;
use crate::crc::crc32;
use crate::msg::*;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The protocol version this build speaks, carried in every frame.
pub const PROTOCOL_VERSION: u8 = 1;
/// Version, kind and sequence number.
pub const HEADER_LEN: usize = 6;
/// The CRC-32 after the payload.
pub const CRC_LEN: usize = 4;
/// The largest payload any message needs, with room to spare.
pub const MAX_PAYLOAD: usize = 192;
/// The largest frame before COBS.
pub const MAX_RAW: usize = HEADER_LEN + MAX_PAYLOAD + CRC_LEN;
/// The largest frame on the line, both delimiters included: size send buffers with it.
pub const MAX_FRAME: usize = cobs::max_encoded_len(MAX_RAW) + 2;

/// Why a frame was refused. Small and `Copy`; every refusal is counted ([`RejectCounts`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reject {
    /// No delimiter within [`MAX_FRAME`] bytes.
    Overlong,
    /// Not valid COBS (bytes lost or inserted on the line).
    Cobs,
    /// Too short to hold a header and a CRC.
    Short,
    /// The CRC does not match (bits flipped on the line).
    Crc,
    /// The other end speaks another protocol version.
    Version {
        /// The version in the frame.
        theirs: u8,
        /// The frame's kind byte (kinds are frozen across versions).
        kind: u8,
    },
    /// A kind this direction does not have.
    Kind {
        /// The kind byte.
        kind: u8,
    },
    /// The payload is not exactly one message of its kind (undecodable, bytes left over, or
    /// not in the one canonical encoding).
    Payload,
    /// A number in the message is not finite.
    NonFinite,
    /// Not newer than the last frame accepted: a duplicate or out of order.
    Sequence,
}

impl Reject {
    /// Number of reasons.
    pub const COUNT: usize = 9;
    /// Every reason's name, by [`Reject::index`].
    pub const NAMES: [&'static str; Self::COUNT] = [
        "overlong",
        "cobs",
        "short",
        "crc",
        "version",
        "kind",
        "payload",
        "non_finite",
        "sequence",
    ];

    /// The reason's slot in [`RejectCounts`].
    pub const fn index(self) -> usize {
        match self {
            Reject::Overlong => 0,
            Reject::Cobs => 1,
            Reject::Short => 2,
            Reject::Crc => 3,
            Reject::Version { .. } => 4,
            Reject::Kind { .. } => 5,
            Reject::Payload => 6,
            Reject::NonFinite => 7,
            Reject::Sequence => 8,
        }
    }

    /// The reason's name.
    pub const fn name(self) -> &'static str {
        Self::NAMES[self.index()]
    }
}

impl core::fmt::Display for Reject {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Reject::Version { theirs, kind } => write!(
                f,
                "protocol version {theirs} (kind 0x{kind:02x}); this end speaks {PROTOCOL_VERSION}"
            ),
            Reject::Kind { kind } => write!(f, "unknown kind 0x{kind:02x}"),
            other => f.write_str(other.name()),
        }
    }
}

/// Refusals counted by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RejectCounts(pub [u32; Reject::COUNT]);

impl RejectCounts {
    /// Counts one refusal.
    pub fn add(&mut self, r: Reject) {
        let c = &mut self.0[r.index()];
        *c = c.saturating_add(1);
    }

    /// Refusals for `r`'s reason.
    pub fn get(&self, r: Reject) -> u32 {
        self.0[r.index()]
    }

    /// All refusals.
    pub fn total(&self) -> u64 {
        self.0.iter().map(|&c| c as u64).sum()
    }

    /// `(name, count)` for every reason.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u32)> + '_ {
        Reject::NAMES.into_iter().zip(self.0)
    }
}

/// Why a message could not be encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncodeError {
    /// The output buffer is shorter than [`MAX_FRAME`] needs for this message.
    BufferTooSmall,
    /// A number in the message is not finite: it is not sent.
    NonFinite,
}

/// A set of messages for one direction of the link.
pub trait Wire: Sized + Copy {
    /// The message's frozen kind byte.
    fn kind(&self) -> u8;
    /// True for a message that opens a session (sequence tracking restarts at it).
    fn starts_session(&self) -> bool;
    /// True when every number in it is finite.
    fn is_finite(&self) -> bool;
    /// Writes the payload (without kind) into `buf`; returns its length.
    fn encode_payload(&self, buf: &mut [u8]) -> Result<usize, EncodeError>;
    /// Reads a payload of `kind`; must consume all of it.
    fn decode_payload(kind: u8, payload: &[u8]) -> Result<Self, Reject>;
}

fn put<T: Serialize>(value: &T, buf: &mut [u8]) -> Result<usize, EncodeError> {
    postcard::to_slice(value, buf)
        .map(|s| s.len())
        .map_err(|_| EncodeError::BufferTooSmall)
}

/// Decodes exactly one `T` from `payload`: nothing left over, and re-encoding gives the same
/// bytes (postcard accepts over-long varints; the wire does not).
fn take<T: DeserializeOwned + Serialize>(payload: &[u8]) -> Result<T, Reject> {
    let (value, rest) = postcard::take_from_bytes::<T>(payload).map_err(|_| Reject::Payload)?;
    if !rest.is_empty() {
        return Err(Reject::Payload);
    }
    let mut again = [0u8; MAX_PAYLOAD];
    match postcard::to_slice(&value, &mut again) {
        Ok(bytes) if *bytes == *payload => Ok(value),
        _ => Err(Reject::Payload),
    }
}

fn empty(payload: &[u8]) -> Result<(), Reject> {
    if payload.is_empty() {
        Ok(())
    } else {
        Err(Reject::Payload)
    }
}

impl Wire for ToBoard {
    fn kind(&self) -> u8 {
        match self {
            ToBoard::Hello(_) => KIND_HELLO,
            ToBoard::Setpoint(_) => 0x02,
            ToBoard::Gains(_) => 0x03,
            ToBoard::Limits(_) => 0x04,
            ToBoard::Mode(_) => 0x05,
            ToBoard::EStop => 0x06,
            ToBoard::Rearm => 0x07,
            ToBoard::Heartbeat => 0x08,
        }
    }

    fn starts_session(&self) -> bool {
        matches!(self, ToBoard::Hello(_))
    }

    fn is_finite(&self) -> bool {
        ToBoard::is_finite(self)
    }

    fn encode_payload(&self, buf: &mut [u8]) -> Result<usize, EncodeError> {
        match self {
            ToBoard::Hello(m) => put(m, buf),
            ToBoard::Setpoint(m) => put(m, buf),
            ToBoard::Gains(m) => put(m, buf),
            ToBoard::Limits(m) => put(m, buf),
            ToBoard::Mode(m) => put(m, buf),
            ToBoard::EStop | ToBoard::Rearm | ToBoard::Heartbeat => Ok(0),
        }
    }

    fn decode_payload(kind: u8, p: &[u8]) -> Result<Self, Reject> {
        Ok(match kind {
            KIND_HELLO => ToBoard::Hello(take(p)?),
            0x02 => ToBoard::Setpoint(take(p)?),
            0x03 => ToBoard::Gains(take(p)?),
            0x04 => ToBoard::Limits(take(p)?),
            0x05 => ToBoard::Mode(take(p)?),
            0x06 => empty(p).map(|_| ToBoard::EStop)?,
            0x07 => empty(p).map(|_| ToBoard::Rearm)?,
            0x08 => empty(p).map(|_| ToBoard::Heartbeat)?,
            kind => return Err(Reject::Kind { kind }),
        })
    }
}

impl Wire for ToHost {
    fn kind(&self) -> u8 {
        match self {
            ToHost::HelloAck(_) => KIND_HELLO_ACK,
            ToHost::State(_) => 0x82,
        }
    }

    fn starts_session(&self) -> bool {
        // A board without a session (just booted) has no sequence the host must keep to: its
        // numbers restart with it, and the host learns of the reboot from the session id.
        match self {
            ToHost::HelloAck(_) => true,
            ToHost::State(s) => s.session == 0,
        }
    }

    fn is_finite(&self) -> bool {
        ToHost::is_finite(self)
    }

    fn encode_payload(&self, buf: &mut [u8]) -> Result<usize, EncodeError> {
        match self {
            ToHost::HelloAck(m) => put(m, buf),
            ToHost::State(m) => put(m, buf),
        }
    }

    fn decode_payload(kind: u8, p: &[u8]) -> Result<Self, Reject> {
        Ok(match kind {
            KIND_HELLO_ACK => ToHost::HelloAck(take(p)?),
            0x82 => ToHost::State(take(p)?),
            kind => return Err(Reject::Kind { kind }),
        })
    }
}

/// Writes `msg` as frame `seq` into `out` (both delimiters included); returns its length.
pub fn encode<M: Wire>(msg: &M, seq: u32, out: &mut [u8]) -> Result<usize, EncodeError> {
    encode_as(PROTOCOL_VERSION, msg, seq, out)
}

/// [`encode`] with another protocol version in the header: for tests of the handshake.
pub fn encode_as<M: Wire>(
    version: u8,
    msg: &M,
    seq: u32,
    out: &mut [u8],
) -> Result<usize, EncodeError> {
    if !msg.is_finite() {
        return Err(EncodeError::NonFinite);
    }
    let mut raw = [0u8; MAX_RAW];
    raw[0] = version;
    raw[1] = msg.kind();
    raw[2..HEADER_LEN].copy_from_slice(&seq.to_le_bytes());
    let n = msg.encode_payload(&mut raw[HEADER_LEN..HEADER_LEN + MAX_PAYLOAD])?;
    let end = HEADER_LEN + n;
    let crc = crc32(&raw[..end]);
    raw[end..end + CRC_LEN].copy_from_slice(&crc.to_le_bytes());
    encode_raw(&raw[..end + CRC_LEN], out)
}

/// Frames already-assembled raw bytes (header, payload, CRC): for tests that build frames
/// the encoder would not.
pub fn encode_raw(raw: &[u8], out: &mut [u8]) -> Result<usize, EncodeError> {
    if out.len() < 2 {
        return Err(EncodeError::BufferTooSmall);
    }
    let last = out.len() - 1;
    out[0] = 0;
    let n = cobs::encode(raw, &mut out[1..last]).ok_or(EncodeError::BufferTooSmall)?;
    out[1 + n] = 0;
    Ok(n + 2)
}

/// A decoded frame.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Frame<M> {
    /// The sender's sequence number.
    pub seq: u32,
    /// The message.
    pub msg: M,
}

/// Decodes one frame's COBS bytes (between delimiters). `scratch` holds the raw bytes.
pub fn decode_frame<M: Wire>(
    encoded: &[u8],
    scratch: &mut [u8; MAX_RAW],
) -> Result<Frame<M>, Reject> {
    let n = cobs::decode(encoded, scratch).map_err(|e| match e {
        cobs::CobsError::Malformed => Reject::Cobs,
        cobs::CobsError::TooLong => Reject::Overlong,
    })?;
    let raw = &scratch[..n];
    if n < HEADER_LEN + CRC_LEN {
        return Err(Reject::Short);
    }
    let (body, crc) = raw.split_at(n - CRC_LEN);
    if crc32(body).to_le_bytes() != crc {
        return Err(Reject::Crc);
    }
    let (version, kind) = (body[0], body[1]);
    if version != PROTOCOL_VERSION {
        return Err(Reject::Version {
            theirs: version,
            kind,
        });
    }
    let seq = u32::from_le_bytes([body[2], body[3], body[4], body[5]]);
    let msg = M::decode_payload(kind, &body[HEADER_LEN..])?;
    if !msg.is_finite() {
        return Err(Reject::NonFinite);
    }
    Ok(Frame { seq, msg })
}

/// Collects bytes from the line into frames. Fixed buffers; never allocates or panics.
pub struct Decoder<M> {
    buf: [u8; MAX_FRAME],
    len: usize,
    /// Discarding bytes up to the next delimiter after an over-long frame.
    skipping: bool,
    raw: [u8; MAX_RAW],
    _m: core::marker::PhantomData<M>,
}

impl<M: Wire> Default for Decoder<M> {
    fn default() -> Self {
        Self::new()
    }
}

impl<M: Wire> Decoder<M> {
    /// An empty decoder.
    pub const fn new() -> Self {
        Self {
            buf: [0; MAX_FRAME],
            len: 0,
            skipping: false,
            raw: [0; MAX_RAW],
            _m: core::marker::PhantomData,
        }
    }

    /// Takes one byte; a frame or a refusal when it completes one.
    pub fn push(&mut self, byte: u8) -> Option<Result<Frame<M>, Reject>> {
        if byte != 0 {
            if self.skipping {
                return None;
            }
            if self.len == self.buf.len() {
                (self.len, self.skipping) = (0, true);
                return Some(Err(Reject::Overlong));
            }
            self.buf[self.len] = byte;
            self.len += 1;
            return None;
        }
        if self.skipping {
            self.skipping = false;
            return None;
        }
        if self.len == 0 {
            return None;
        }
        let n = core::mem::take(&mut self.len);
        Some(decode_frame(&self.buf[..n], &mut self.raw))
    }

    /// Drops a partial frame (after the link was reopened).
    pub fn clear(&mut self) {
        (self.len, self.skipping) = (0, false);
    }
}

/// Sequence numbers from one sender: newer ones are accepted (gaps counted as lost), older
/// or repeated ones refused. Serial-number arithmetic, so the counter may wrap.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SeqTracker {
    last: Option<u32>,
    /// Frames accepted.
    pub accepted: u64,
    /// Frames that never arrived (gaps between accepted ones).
    pub lost: u64,
}

impl SeqTracker {
    /// Checks `seq`; a session start restarts tracking at it.
    pub fn check(&mut self, seq: u32, starts_session: bool) -> Result<(), Reject> {
        match self.last {
            Some(last) if !starts_session => {
                let ahead = seq.wrapping_sub(last) as i32;
                if ahead <= 0 {
                    return Err(Reject::Sequence);
                }
                self.lost += (ahead - 1) as u64;
            }
            _ => {}
        }
        self.last = Some(seq);
        self.accepted += 1;
        Ok(())
    }

    /// The newest sequence number accepted.
    pub fn last(&self) -> Option<u32> {
        self.last
    }
}

/// One end's receiving side: a [`Decoder`], its [`SeqTracker`] and the refusal counts.
pub struct Receiver<M> {
    decoder: Decoder<M>,
    /// Sequence tracking.
    pub seq: SeqTracker,
    /// Refusals by reason.
    pub rejects: RejectCounts,
    /// The most recent refusal.
    pub last_reject: Option<Reject>,
}

impl<M: Wire> Default for Receiver<M> {
    fn default() -> Self {
        Self::new()
    }
}

impl<M: Wire> Receiver<M> {
    /// A receiver that has seen nothing.
    pub const fn new() -> Self {
        Self {
            decoder: Decoder::new(),
            seq: SeqTracker {
                last: None,
                accepted: 0,
                lost: 0,
            },
            rejects: RejectCounts([0; Reject::COUNT]),
            last_reject: None,
        }
    }

    /// Takes one byte; an accepted frame when it completes one (refusals are counted).
    pub fn push(&mut self, byte: u8) -> Option<Frame<M>> {
        let checked = match self.decoder.push(byte)? {
            Ok(f) => self.seq.check(f.seq, f.msg.starts_session()).map(|_| f),
            Err(e) => Err(e),
        };
        match checked {
            Ok(f) => Some(f),
            Err(e) => {
                self.rejects.add(e);
                self.last_reject = Some(e);
                None
            }
        }
    }

    /// Drops a partial frame and forgets the sequence (a new link).
    pub fn reset(&mut self) {
        self.decoder.clear();
        self.seq.last = None;
    }
}

/// One end's sending side: numbers its frames.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sender {
    next: u32,
}

impl Sender {
    /// A sender whose first frame is number 1.
    pub const fn new() -> Self {
        Self { next: 1 }
    }

    /// Encodes `msg` as the next frame into `out`; returns the frame's length and number.
    pub fn encode<M: Wire>(
        &mut self,
        msg: &M,
        out: &mut [u8],
    ) -> Result<(usize, u32), EncodeError> {
        let seq = self.next.max(1);
        let n = encode(msg, seq, out)?;
        self.next = seq.wrapping_add(1);
        Ok((n, seq))
    }
}
