//! Actors and a learner on several machines, over Zenoh.
//!
//! An actor process runs `Runtime`s (the same control loop as everywhere) and streams their
//! transitions to the learner in numbered batches ([`outbox`]); the learner stores each batch
//! exactly once ([`ingest`]), acknowledges it once it is durable, trains, and publishes
//! versioned weights that every actor swaps in (latest wins). Liveliness tokens tell each side
//! when the other comes and goes ([`link`]); the message layouts are in [`wire`].
//!
//! Nothing here waits without a deadline and nothing here runs on a control loop's thread: an
//! actor's runtimes hand their transitions to the outbox through the runtime's own bounded
//! queue, and weights arrive through the runtime's `WeightsSlot`.

pub mod ingest;
pub mod link;
pub mod outbox;
pub mod wire;

pub use ingest::{replay_episode, split_episode, Ingest, IngestCounters, LedgerError, Verdict};
pub use link::{ActorLink, Heard, LearnerLink, LinkError, LinkSettings, Presence, StreamLink};
pub use outbox::{Outbox, OutboxCounters, OutboxSettings};
pub use wire::{now_ns, Ack, Batch, Status, Weights, WireError};
