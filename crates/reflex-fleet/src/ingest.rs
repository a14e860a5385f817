//! Exactly once into the replay: the learner's bookkeeping of every actor stream.
//!
//! Each actor runtime sends its transitions as a stream of numbered batches. The learner takes a
//! stream's batches in order only (a batch after a gap waits for its resend, go-back-N), and
//! acknowledges a batch only once the replay log holding it is synced to disk. An actor keeps
//! every unacknowledged batch (up to a bound) and sends them again when the learner comes back
//! or stops acknowledging. So a batch may arrive twice; it is stored once:
//!
//! - A batch numbered below the next one expected is a duplicate (it is acknowledged again).
//! - Within a batch, a transition at or before the stream's last stored `(episode, step)` is a
//!   duplicate. Runtimes emit their steps in order, so this is exact; it is what keeps a learner
//!   restarted after a crash from storing twice what reached its replay log but was never
//!   acknowledged: the stream's last stored step is read back from the replay.
//!
//! Episode ids: an actor runtime numbers its episodes from 1. In the replay a stream's episode
//! `e` becomes `key << 40 | e`, where `key` is the stream's number in this run's ledger (1, 2,
//! ...): episodes of different actors never share an n-step window. The ledger (`streams.json`
//! in the run's `fleet/` directory) is written and synced before a new stream's first
//! transition is stored, and again after every acknowledgement round.

use crate::wire::{Ack, Batch};
use reflex_core::Transition;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Bits of a replay episode id that hold the stream's own episode counter.
pub const EPISODE_BITS: u32 = 40;

/// The replay episode id of a stream's episode.
pub fn replay_episode(key: u32, episode: u64) -> u64 {
    (u64::from(key) << EPISODE_BITS) | (episode & ((1 << EPISODE_BITS) - 1))
}

/// The stream key and the stream's own episode of a replay episode id.
pub fn split_episode(replay_episode: u64) -> (u32, u64) {
    (
        (replay_episode >> EPISODE_BITS) as u32,
        replay_episode & ((1 << EPISODE_BITS) - 1),
    )
}

/// Why the ledger could not be read or written; names the file.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {why}")]
pub struct LedgerError {
    /// The ledger file.
    pub path: PathBuf,
    /// What went wrong.
    pub why: String,
}

/// One stream as the ledger keeps it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamEntry {
    /// The stream's id (random, new at every actor process start).
    pub stream: u64,
    /// The actor's name.
    pub actor: String,
    /// Its episodes' key in the replay.
    pub key: u32,
    /// Last batch acknowledged (durable in the replay).
    pub acked: Option<u64>,
}

/// The ledger file's contents.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LedgerFile {
    /// Times a learner has opened this run (weights versions start above every earlier
    /// learner's).
    incarnation: u64,
    streams: Vec<StreamEntry>,
}

#[derive(Clone, Debug)]
struct Stream {
    entry: StreamEntry,
    /// The next batch number taken.
    expected: u64,
    /// Whether `expected` is known (from an earlier batch or the ledger); if not, the stream's
    /// first batch seen sets it.
    known: bool,
    /// Last `(episode, step)` taken (stored or judged unstorable).
    last: Option<(u64, u64)>,
    /// Last batch taken, not yet durable.
    pending: Option<u64>,
}

/// What happened to one batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Taken: `fresh` transitions handed on, `duplicates` skipped.
    Taken {
        /// Transitions handed to the replay.
        fresh: usize,
        /// Transitions already taken earlier (a resend after a restart).
        duplicates: usize,
    },
    /// Already taken (a resend): nothing handed on.
    Duplicate,
    /// An earlier batch is missing: dropped, it comes again after the missing one.
    OutOfOrder,
}

/// Counters over every stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct IngestCounters {
    /// Batches taken.
    pub batches: u64,
    /// Transitions handed to the replay.
    pub transitions: u64,
    /// Whole batches received again after being taken.
    pub duplicate_batches: u64,
    /// Transitions of taken batches skipped as already stored.
    pub duplicate_transitions: u64,
    /// Batches dropped because an earlier one was missing (they are resent).
    pub out_of_order: u64,
    /// Batches the actors dropped from their buffers before the learner took them.
    pub lost_batches: u64,
    /// Streams seen.
    pub streams: u64,
}

/// The learner's view of every actor stream.
pub struct Ingest {
    path: PathBuf,
    incarnation: u64,
    streams: BTreeMap<u64, Stream>,
    next_key: u32,
    /// Totals.
    pub counters: IngestCounters,
}

impl Ingest {
    /// Opens (or starts) the ledger in `dir` and counts this learner as a new incarnation.
    /// `stored` lists the `(replay episode, step)` of every online step the replay holds, so
    /// that a resend of what it already holds is skipped.
    pub fn open(
        dir: &Path,
        stored: impl IntoIterator<Item = (u64, u64)>,
    ) -> Result<Self, LedgerError> {
        let path = dir.join("streams.json");
        let err = |why: String| LedgerError {
            path: path.clone(),
            why,
        };
        std::fs::create_dir_all(dir).map_err(|e| err(format!("creating its directory: {e}")))?;
        let file: LedgerFile = match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| err(e.to_string()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => LedgerFile::default(),
            Err(e) => return Err(err(e.to_string())),
        };
        let mut last_by_key: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
        for (episode, step) in stored {
            let (key, e) = split_episode(episode);
            let l = last_by_key.entry(key).or_insert((e, step));
            *l = (*l).max((e, step));
        }
        let mut streams = BTreeMap::new();
        let mut next_key = 1;
        for entry in file.streams {
            next_key = next_key.max(entry.key + 1);
            let last = last_by_key.get(&entry.key).copied();
            streams.insert(
                entry.stream,
                Stream {
                    expected: entry.acked.map_or(0, |a| a + 1),
                    known: entry.acked.is_some(),
                    last,
                    pending: None,
                    entry,
                },
            );
        }
        let mut ingest = Self {
            path,
            incarnation: file.incarnation + 1,
            counters: IngestCounters {
                streams: streams.len() as u64,
                ..Default::default()
            },
            streams,
            next_key,
        };
        ingest.write()?;
        Ok(ingest)
    }

    /// This learner's incarnation (1 for the first learner of a run).
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// The streams known, as the ledger keeps them.
    pub fn entries(&self) -> impl Iterator<Item = &StreamEntry> {
        self.streams.values().map(|s| &s.entry)
    }

    /// Takes `batch` if it is the next one of its stream: hands every transition not taken
    /// before to `store`, with its episode id made the replay's.
    pub fn take(
        &mut self,
        batch: &Batch,
        mut store: impl FnMut(&Transition),
    ) -> Result<Verdict, LedgerError> {
        if !self.streams.contains_key(&batch.stream) {
            let key = self.next_key;
            self.next_key += 1;
            self.streams.insert(
                batch.stream,
                Stream {
                    entry: StreamEntry {
                        stream: batch.stream,
                        actor: batch.actor.clone(),
                        key,
                        acked: None,
                    },
                    expected: 0,
                    known: false,
                    last: None,
                    pending: None,
                },
            );
            self.counters.streams += 1;
            // Durable before any of its transitions is.
            self.write()?;
        }
        let s = self.streams.get_mut(&batch.stream).expect("inserted above");
        if !s.known {
            // Nothing of this stream was ever acknowledged: its oldest batch held is the start.
            s.expected = batch.first_held.min(batch.seq);
            s.known = true;
        }
        if batch.seq < s.expected {
            self.counters.duplicate_batches += 1;
            return Ok(Verdict::Duplicate);
        }
        if batch.seq > s.expected {
            if batch.first_held > s.expected {
                // The actor dropped the batches between from its bounded buffer.
                self.counters.lost_batches += batch.first_held.min(batch.seq) - s.expected;
                s.expected = batch.first_held.min(batch.seq);
            }
            if batch.seq > s.expected {
                self.counters.out_of_order += 1;
                return Ok(Verdict::OutOfOrder);
            }
        }
        let (mut fresh, mut duplicates) = (0, 0);
        for t in &batch.transitions {
            let id = (t.episode, t.step);
            if s.last.is_some_and(|l| id <= l) {
                duplicates += 1;
                continue;
            }
            s.last = Some(id);
            let mut t = *t;
            t.episode = replay_episode(s.entry.key, t.episode);
            store(&t);
            fresh += 1;
        }
        s.expected = batch.seq + 1;
        s.pending = Some(batch.seq);
        self.counters.batches += 1;
        self.counters.transitions += fresh as u64;
        self.counters.duplicate_transitions += duplicates as u64;
        Ok(Verdict::Taken { fresh, duplicates })
    }

    /// The acknowledgement a stream gets now (what is durable), if it ever got one.
    pub fn ack_of(&self, stream: u64) -> Option<Ack> {
        let s = self.streams.get(&stream)?;
        Some(Ack {
            stream,
            through: s.entry.acked,
        })
    }

    /// Everything taken so far is durable (the replay log was synced): returns the acks to
    /// send (streams whose durable batch moved) after writing them to the ledger.
    pub fn synced(&mut self) -> Result<Vec<Ack>, LedgerError> {
        let mut acks = Vec::new();
        for (id, s) in &mut self.streams {
            if let Some(p) = s.pending.take() {
                s.entry.acked = Some(p);
                acks.push(Ack {
                    stream: *id,
                    through: Some(p),
                });
            }
        }
        if !acks.is_empty() {
            self.write()?;
        }
        Ok(acks)
    }

    /// Whether something taken waits for a sync.
    pub fn pending(&self) -> bool {
        self.streams.values().any(|s| s.pending.is_some())
    }

    /// Writes the ledger: a temporary file, synced, renamed over the old one.
    fn write(&mut self) -> Result<(), LedgerError> {
        let file = LedgerFile {
            incarnation: self.incarnation,
            streams: self.streams.values().map(|s| s.entry.clone()).collect(),
        };
        let err = |why: String| LedgerError {
            path: self.path.clone(),
            why,
        };
        let text = serde_json::to_string_pretty(&file).map_err(|e| err(e.to_string()))?;
        let tmp = self.path.with_extension("json.tmp");
        let mut f = std::fs::File::create(&tmp).map_err(|e| err(e.to_string()))?;
        f.write_all(text.as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(|e| err(e.to_string()))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| err(e.to_string()))?;
        if let Some(dir) = self.path.parent() {
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::tests::transition;

    fn batch(stream: u64, seq: u64, first_held: u64, steps: std::ops::Range<u64>) -> Batch {
        Batch {
            stream,
            actor: format!("actor-{stream}"),
            seq,
            first_held,
            sent_ns: 0,
            transitions: steps.map(|s| transition(1, s)).collect(),
        }
    }

    fn take(ingest: &mut Ingest, b: &Batch, stored: &mut Vec<(u64, u64)>) -> Verdict {
        ingest
            .take(b, |t| stored.push((t.episode, t.step)))
            .unwrap()
    }

    #[test]
    fn resends_in_any_order_store_every_step_once() {
        let dir = tempdir("ingest-order");
        let mut ingest = Ingest::open(&dir, []).unwrap();
        let mut stored = Vec::new();
        let b = |seq: u64| batch(7, seq, 0, seq * 4..seq * 4 + 4);
        assert!(matches!(
            take(&mut ingest, &b(0), &mut stored),
            Verdict::Taken { fresh: 4, .. }
        ));
        // Batch 1 lost on the way: 2 waits for it.
        assert_eq!(take(&mut ingest, &b(2), &mut stored), Verdict::OutOfOrder);
        take(&mut ingest, &b(1), &mut stored);
        // The actor resends everything unacknowledged: 0 is a duplicate now, 2 is new.
        assert_eq!(take(&mut ingest, &b(0), &mut stored), Verdict::Duplicate);
        take(&mut ingest, &b(2), &mut stored);
        assert_eq!(take(&mut ingest, &b(1), &mut stored), Verdict::Duplicate);
        let want: Vec<(u64, u64)> = (0..12).map(|s| (replay_episode(1, 1), s)).collect();
        assert_eq!(stored, want);
        let acks = ingest.synced().unwrap();
        assert_eq!(
            acks,
            vec![Ack {
                stream: 7,
                through: Some(2)
            }]
        );
        assert!(ingest.synced().unwrap().is_empty(), "acked once per move");
    }

    #[test]
    fn a_restarted_learner_skips_what_its_replay_holds_but_never_acked() {
        let dir = tempdir("ingest-restart");
        let mut stored = Vec::new();
        {
            let mut ingest = Ingest::open(&dir, []).unwrap();
            take(&mut ingest, &batch(7, 0, 0, 0..4), &mut stored);
            ingest.synced().unwrap();
            // Taken (and written to the replay) but the learner dies before the next sync.
            take(&mut ingest, &batch(7, 1, 0, 4..8), &mut stored);
        }
        let replay = stored.clone();
        let mut ingest = Ingest::open(&dir, replay).unwrap();
        assert_eq!(ingest.incarnation(), 2);
        // The actor resends batch 1 (unacknowledged) and goes on with 2.
        let mut again = Vec::new();
        assert_eq!(
            take(&mut ingest, &batch(7, 1, 1, 4..8), &mut again),
            Verdict::Taken {
                fresh: 0,
                duplicates: 4
            }
        );
        take(&mut ingest, &batch(7, 2, 1, 8..10), &mut again);
        assert_eq!(again.len(), 2);
        assert_eq!(ingest.counters.duplicate_transitions, 4);
        // A new stream after the restart gets a new key.
        take(&mut ingest, &batch(9, 0, 0, 0..1), &mut again);
        assert_eq!(split_episode(again[2].0).0, 2);
    }

    #[test]
    fn batches_an_actor_dropped_are_counted_lost_and_not_waited_for() {
        let dir = tempdir("ingest-lost");
        let mut ingest = Ingest::open(&dir, []).unwrap();
        let mut stored = Vec::new();
        take(&mut ingest, &batch(3, 0, 0, 0..2), &mut stored);
        // Batches 1..=4 fell out of the actor's buffer while the learner was away.
        let v = take(&mut ingest, &batch(3, 5, 5, 20..22), &mut stored);
        assert!(matches!(v, Verdict::Taken { fresh: 2, .. }));
        assert_eq!(ingest.counters.lost_batches, 4);
    }

    pub(crate) fn tempdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("reflex-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }
}
