//! The fleet's messages and their byte layout: transition batches (actor to learner), acks
//! (learner to one actor), status and weights (learner to every actor).
//!
//! Every message is `magic (4 bytes) | version (1) | body | crc32 of what precedes (4)`, integers
//! and floats little-endian. Decoding checks the length of every field before reading it and
//! the checksum before trusting anything; an error names the message and the field. A message
//! from a newer version is refused by name, not misread.

use reflex_core::{
    Action, ActionSpace, FlatObs, Interruption, Outcome, RewardTerms, Transition, MAX_ACTION_DIM,
    MAX_OBS_DIM, MAX_REWARD_TERMS,
};

/// The layout version every message carries.
pub const VERSION: u8 = 1;
const BATCH_MAGIC: &[u8; 4] = b"RFTB";
const ACK_MAGIC: &[u8; 4] = b"RFAK";
const WEIGHTS_MAGIC: &[u8; 4] = b"RFWT";
const STATUS_MAGIC: &[u8; 4] = b"RFST";
/// Most transitions one batch may hold (a bound on what a malformed length can make us allocate).
pub const MAX_BATCH: usize = 65_536;
/// Most bytes a weights message may carry.
pub const MAX_WEIGHTS_BYTES: usize = 256 << 20;

/// A message that could not be read: which message, which field, and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}: {field}: {why}")]
pub struct WireError {
    /// `batch`, `ack`, `status` or `weights`.
    pub message: &'static str,
    /// The field that could not be read (`transitions[3].obs`, `crc`, ...).
    pub field: String,
    /// What was wrong with it.
    pub why: String,
}

/// A numbered batch of one actor stream's transitions, in the order its runtime emitted them.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// The sending stream: one runtime of one actor process, new at every process start.
    pub stream: u64,
    /// The actor's name (for people: logs, the ledger, health).
    pub actor: String,
    /// This batch's number in its stream (0, 1, 2, ...).
    pub seq: u64,
    /// The oldest batch the actor still holds: every earlier unacknowledged one was dropped
    /// from its bounded buffer (the learner counts them lost and stops waiting for them).
    pub first_held: u64,
    /// Wall-clock time of sending (ns since the Unix epoch).
    pub sent_ns: u64,
    /// Episode and step ids are the actor runtime's own.
    pub transitions: Vec<Transition>,
}

/// What the learner tells one stream: the batches it holds durably.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ack {
    /// The stream acknowledged.
    pub stream: u64,
    /// Every batch up to and including this one is in the synced replay (None: none yet).
    pub through: Option<u64>,
}

/// How the learner is doing, broadcast to every actor a few times a second.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Status {
    /// Online steps the learner holds.
    pub env_steps: u64,
    /// Updates it has run.
    pub updates: u64,
    /// Whether updates have started (a simulated actor is held back for them only then).
    pub learning: bool,
    /// Its update-to-data ratio.
    pub utd: f32,
    /// The newest weights version published.
    pub weights_version: u64,
    /// The run is over: actors flush what they hold and stop.
    pub finished: bool,
}

/// A published actor network.
#[derive(Clone, Debug, PartialEq)]
pub struct Weights {
    /// Increases with every publication of a run (the learner's update count); an actor never
    /// goes back to an older version.
    pub version: u64,
    /// Wall-clock time of publication (ns since the Unix epoch).
    pub published_ns: u64,
    /// The network as safetensors bytes (`Mlp::to_safetensors`).
    pub safetensors: Vec<u8>,
}

struct Writer(Vec<u8>);

impl Writer {
    fn new(magic: &[u8; 4], capacity: usize) -> Self {
        let mut v = Vec::with_capacity(capacity + 9);
        v.extend_from_slice(magic);
        v.push(VERSION);
        Self(v)
    }
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn f64(&mut self, v: f64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn f32s(&mut self, v: &[f32]) {
        self.u8(v.len() as u8);
        for x in v {
            self.0.extend_from_slice(&x.to_le_bytes());
        }
    }
    fn bytes(&mut self, v: &[u8]) {
        self.u32(v.len() as u32);
        self.0.extend_from_slice(v);
    }
    fn finish(mut self) -> Vec<u8> {
        let crc = crc32fast::hash(&self.0);
        self.u32(crc);
        self.0
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
    message: &'static str,
}

impl<'a> Reader<'a> {
    /// Checks magic, version and checksum; the reader then covers the body.
    fn open(bytes: &'a [u8], magic: &[u8; 4], message: &'static str) -> Result<Self, WireError> {
        let err = |field: &str, why: String| WireError {
            message,
            field: field.into(),
            why,
        };
        if bytes.len() < 9 {
            return Err(err("length", format!("{} bytes is too short", bytes.len())));
        }
        if &bytes[..4] != magic {
            return Err(err(
                "magic",
                format!("{:02x?} is not {message}", &bytes[..4]),
            ));
        }
        if bytes[4] != VERSION {
            return Err(err(
                "version",
                format!("version {} (this build reads {VERSION})", bytes[4]),
            ));
        }
        let (body, tail) = bytes.split_at(bytes.len() - 4);
        let want = u32::from_le_bytes(tail.try_into().expect("4 bytes"));
        let got = crc32fast::hash(body);
        if want != got {
            return Err(err(
                "crc",
                format!("checksum {got:08x} does not match {want:08x}: the message is damaged"),
            ));
        }
        Ok(Self {
            buf: body,
            at: 5,
            message,
        })
    }
    fn err(&self, field: &str, why: impl Into<String>) -> WireError {
        WireError {
            message: self.message,
            field: field.into(),
            why: why.into(),
        }
    }
    fn take(&mut self, n: usize, field: &str) -> Result<&'a [u8], WireError> {
        if self.buf.len() - self.at < n {
            return Err(self.err(
                field,
                format!(
                    "needs {n} bytes at offset {}, {} left",
                    self.at,
                    self.buf.len() - self.at
                ),
            ));
        }
        let s = &self.buf[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }
    fn u8(&mut self, field: &str) -> Result<u8, WireError> {
        Ok(self.take(1, field)?[0])
    }
    fn u32(&mut self, field: &str) -> Result<u32, WireError> {
        Ok(u32::from_le_bytes(
            self.take(4, field)?.try_into().expect("4"),
        ))
    }
    fn u64(&mut self, field: &str) -> Result<u64, WireError> {
        Ok(u64::from_le_bytes(
            self.take(8, field)?.try_into().expect("8"),
        ))
    }
    fn f64(&mut self, field: &str) -> Result<f64, WireError> {
        Ok(f64::from_le_bytes(
            self.take(8, field)?.try_into().expect("8"),
        ))
    }
    fn f32s(&mut self, max: usize, field: &str, out: &mut [f32]) -> Result<usize, WireError> {
        let n = self.u8(field)? as usize;
        if n > max || n > out.len() {
            return Err(self.err(field, format!("{n} values, at most {max}")));
        }
        let raw = self.take(4 * n, field)?;
        for (o, c) in out.iter_mut().zip(raw.chunks_exact(4)) {
            *o = f32::from_le_bytes(c.try_into().expect("4"));
        }
        Ok(n)
    }
    fn bytes(&mut self, max: usize, field: &str) -> Result<&'a [u8], WireError> {
        let n = self.u32(field)? as usize;
        if n > max {
            return Err(self.err(field, format!("{n} bytes, at most {max}")));
        }
        self.take(n, field)
    }
    fn end(&self) -> Result<(), WireError> {
        if self.at != self.buf.len() {
            return Err(self.err(
                "length",
                format!("{} bytes after the last field", self.buf.len() - self.at),
            ));
        }
        Ok(())
    }
}

const SPACES: [ActionSpace; 2] = [ActionSpace::EeDelta, ActionSpace::JointDelta];
const INTERRUPTIONS: [Interruption; 5] = [
    Interruption::None,
    Interruption::EStop,
    Interruption::OperatorLost,
    Interruption::Discarded,
    Interruption::InputStale,
];

fn interruption_code(i: Interruption) -> u8 {
    INTERRUPTIONS.iter().position(|x| *x == i).unwrap_or(0) as u8
}

/// Bytes one transition of this shape takes (for sizing buffers and reporting bandwidth).
fn transition_size(t: &Transition) -> usize {
    16 + 4 * (t.obs.len() + t.next_obs.len() + 2 * t.action.dim())
        + 4
        + 2
        + 8
        + 1
        + 8 * t.outcome.terms.values().len()
        + 3
}

impl Batch {
    /// The message's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let size: usize = self.transitions.iter().map(transition_size).sum();
        let mut w = Writer::new(BATCH_MAGIC, 64 + self.actor.len() + size);
        w.u64(self.stream);
        w.bytes(self.actor.as_bytes());
        w.u64(self.seq);
        w.u64(self.first_held);
        w.u64(self.sent_ns);
        w.u32(self.transitions.len() as u32);
        for t in &self.transitions {
            w.u64(t.episode);
            w.u64(t.step);
            w.f32s(t.obs.as_slice());
            w.f32s(t.base_action.as_slice());
            w.f32s(t.action.as_slice());
            let o = &t.outcome;
            let flags = u8::from(t.intervened)
                | u8::from(t.safety_limited) << 1
                | u8::from(o.success) << 2
                | u8::from(o.terminated) << 3
                | u8::from(o.truncated) << 4;
            w.u8(flags);
            w.u8(interruption_code(t.interrupted));
            w.f64(o.reward);
            let terms = o.terms.values();
            w.u8(terms.len() as u8);
            for v in terms {
                w.f64(*v);
            }
            w.f32s(t.next_obs.as_slice());
        }
        w.finish()
    }

    /// Reads a batch; the error names the field.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::open(bytes, BATCH_MAGIC, "batch")?;
        let stream = r.u64("stream")?;
        let actor = std::str::from_utf8(r.bytes(256, "actor")?)
            .map_err(|e| r.err("actor", format!("not UTF-8: {e}")))?
            .to_owned();
        let seq = r.u64("seq")?;
        let first_held = r.u64("first_held")?;
        let sent_ns = r.u64("sent_ns")?;
        let n = r.u32("transitions")? as usize;
        if n > MAX_BATCH {
            return Err(r.err(
                "transitions",
                format!("{n} transitions, at most {MAX_BATCH}"),
            ));
        }
        let mut transitions = Vec::with_capacity(n.min(4096));
        let mut obs = [0f32; MAX_OBS_DIM];
        let mut act = [0f32; MAX_ACTION_DIM];
        for i in 0..n {
            let f = |name: &str| format!("transitions[{i}].{name}");
            let episode = r.u64(&f("episode"))?;
            let step = r.u64(&f("step"))?;
            let k = r.f32s(MAX_OBS_DIM, &f("obs"), &mut obs)?;
            let mut t_obs = FlatObs::default();
            t_obs.extend_from(&obs[..k]);
            // The action space is the one whose dimension the base action has.
            let k = r.f32s(MAX_ACTION_DIM, &f("base_action"), &mut act)?;
            let space = *SPACES.iter().find(|s| s.dim() == k).ok_or_else(|| {
                r.err(&f("base_action"), format!("no action space has {k} values"))
            })?;
            let mut base_action = Action::zeros(space);
            base_action.copy_from(&act[..k]);
            let mut action = Action::zeros(space);
            {
                let name = "action";
                let k = r.f32s(MAX_ACTION_DIM, &f(name), &mut act)?;
                if !action.copy_from(&act[..k]) {
                    return Err(r.err(
                        &f(name),
                        format!("{k} values for a {}-dimensional action space", space.dim()),
                    ));
                }
            }
            let flags = r.u8(&f("flags"))?;
            let code = r.u8(&f("interrupted"))? as usize;
            let interrupted = *INTERRUPTIONS
                .get(code)
                .ok_or_else(|| r.err(&f("interrupted"), format!("unknown code {code}")))?;
            let reward = r.f64(&f("reward"))?;
            let nt = r.u8(&f("terms"))? as usize;
            if nt > MAX_REWARD_TERMS {
                return Err(r.err(
                    &f("terms"),
                    format!("{nt} terms, at most {MAX_REWARD_TERMS}"),
                ));
            }
            let mut terms = RewardTerms::new(nt);
            for j in 0..nt {
                terms.set(j, r.f64(&f("terms"))?);
            }
            let k = r.f32s(MAX_OBS_DIM, &f("next_obs"), &mut obs)?;
            let mut next_obs = FlatObs::default();
            next_obs.extend_from(&obs[..k]);
            transitions.push(Transition {
                episode,
                step,
                obs: t_obs,
                base_action,
                action,
                intervened: flags & 1 != 0,
                safety_limited: flags & 2 != 0,
                interrupted,
                outcome: Outcome {
                    reward,
                    terms,
                    success: flags & 4 != 0,
                    terminated: flags & 8 != 0,
                    truncated: flags & 16 != 0,
                },
                next_obs,
            });
        }
        r.end()?;
        Ok(Self {
            stream,
            actor,
            seq,
            first_held,
            sent_ns,
            transitions,
        })
    }
}

impl Ack {
    /// The message's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new(ACK_MAGIC, 17);
        w.u64(self.stream);
        w.u8(u8::from(self.through.is_some()));
        w.u64(self.through.unwrap_or(0));
        w.finish()
    }

    /// Reads an ack; the error names the field.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::open(bytes, ACK_MAGIC, "ack")?;
        let stream = r.u64("stream")?;
        let has = r.u8("through")? != 0;
        let through = r.u64("through")?;
        r.end()?;
        Ok(Self {
            stream,
            through: has.then_some(through),
        })
    }
}

impl Status {
    /// The message's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new(STATUS_MAGIC, 32);
        w.u64(self.env_steps);
        w.u64(self.updates);
        w.u8(u8::from(self.learning) | u8::from(self.finished) << 1);
        w.u32(self.utd.to_bits());
        w.u64(self.weights_version);
        w.finish()
    }

    /// Reads a status; the error names the field.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::open(bytes, STATUS_MAGIC, "status")?;
        let env_steps = r.u64("env_steps")?;
        let updates = r.u64("updates")?;
        let flags = r.u8("flags")?;
        let s = Self {
            env_steps,
            updates,
            learning: flags & 1 != 0,
            finished: flags & 2 != 0,
            utd: f32::from_bits(r.u32("utd")?),
            weights_version: r.u64("weights_version")?,
        };
        r.end()?;
        Ok(s)
    }
}

impl Weights {
    /// The message's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new(WEIGHTS_MAGIC, 24 + self.safetensors.len());
        w.u64(self.version);
        w.u64(self.published_ns);
        w.bytes(&self.safetensors);
        w.finish()
    }

    /// Reads a weights message; the error names the field.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::open(bytes, WEIGHTS_MAGIC, "weights")?;
        let w = Self {
            version: r.u64("version")?,
            published_ns: r.u64("published_ns")?,
            safetensors: r.bytes(MAX_WEIGHTS_BYTES, "safetensors")?.to_vec(),
        };
        r.end()?;
        Ok(w)
    }
}

/// Nanoseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn transition(episode: u64, step: u64) -> Transition {
        let mut t = Transition::empty(ActionSpace::EeDelta);
        t.episode = episode;
        t.step = step;
        t.obs.extend_from(&[0.5, -1.0, step as f32]);
        t.next_obs.extend_from(&[0.25, 2.0, step as f32 + 1.0]);
        t.action.copy_from(&[0.1, 0.2, 0.3, -0.4, 0.5, 0.6, -1.0]);
        t.base_action
            .copy_from(&[0.0, 0.2, 0.3, -0.4, 0.5, 0.6, 1.0]);
        t.intervened = step.is_multiple_of(3);
        t.interrupted = if step == 7 {
            Interruption::EStop
        } else {
            Interruption::None
        };
        let mut terms = RewardTerms::new(2);
        terms.set(0, 0.5);
        terms.set(1, -2.0);
        t.outcome = Outcome {
            reward: -0.25,
            terms,
            success: step == 9,
            terminated: step == 9,
            truncated: false,
        };
        t
    }

    fn batch() -> Batch {
        Batch {
            stream: 0xDEAD_BEEF,
            actor: "arm-1".into(),
            seq: 42,
            first_held: 40,
            sent_ns: 123,
            transitions: (0..10).map(|s| transition(3, s)).collect(),
        }
    }

    #[test]
    fn messages_round_trip() {
        let b = batch();
        assert_eq!(Batch::decode(&b.encode()).unwrap(), b);
        let a = Ack {
            stream: 9,
            through: Some(41),
        };
        assert_eq!(Ack::decode(&a.encode()).unwrap(), a);
        let none = Ack { through: None, ..a };
        assert_eq!(Ack::decode(&none.encode()).unwrap(), none);
        let s = Status {
            env_steps: 1000,
            updates: 990,
            learning: true,
            utd: 1.0,
            weights_version: 3 << 40,
            finished: true,
        };
        assert_eq!(Status::decode(&s.encode()).unwrap(), s);
        let w = Weights {
            version: 7,
            published_ns: 5,
            safetensors: vec![1, 2, 3],
        };
        assert_eq!(Weights::decode(&w.encode()).unwrap(), w);
    }

    #[test]
    fn damaged_truncated_or_foreign_messages_are_refused_by_field() {
        let bytes = batch().encode();
        // Any single flipped bit is caught (by the checksum if not before).
        for i in (0..bytes.len()).step_by(7) {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            assert!(Batch::decode(&b).is_err(), "flip at {i} accepted");
        }
        for n in [0, 5, 9, bytes.len() - 1] {
            assert!(Batch::decode(&bytes[..n]).is_err());
        }
        let e = Ack::decode(&bytes).unwrap_err();
        assert_eq!((e.message, e.field.as_str()), ("ack", "magic"));
        let mut newer = bytes.clone();
        newer[4] = VERSION + 1;
        let e = Batch::decode(&newer).unwrap_err();
        assert_eq!(e.field, "version");
        // A well-formed message whose field says more than it holds names the field.
        let mut b = batch();
        b.transitions.truncate(1);
        let mut bytes = b.encode();
        let obs_len_at = 5 + 8 + 4 + 5 + 8 * 3 + 4 + 16;
        bytes[obs_len_at] = 200;
        let body = bytes.len() - 4;
        let crc = crc32fast::hash(&bytes[..body]);
        bytes[body..].copy_from_slice(&crc.to_le_bytes());
        let e = Batch::decode(&bytes).unwrap_err();
        assert_eq!(e.field, "transitions[0].obs", "{e}");
    }
}
