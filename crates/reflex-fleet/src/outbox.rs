//! An actor stream's outbox: transitions into numbered batches, every batch held until the
//! learner acknowledges it, sent again when the learner comes back or stops acknowledging,
//! and the oldest dropped (counted) beyond a bound, so an actor outlives its learner in
//! bounded memory.

use crate::link::{Heard, StreamLink};
use crate::wire::{now_ns, Batch};
use reflex_core::Transition;
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// How an outbox batches, holds and resends.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OutboxSettings {
    /// Transitions per batch.
    pub batch: usize,
    /// A partial batch is sent once its oldest transition is this old.
    pub flush_after: Duration,
    /// Most transitions held unacknowledged; beyond it the oldest batches are dropped.
    pub hold: usize,
    /// Unacknowledged batches are sent again when no acknowledgement moved for this long
    /// while the learner is present.
    pub resend_after: Duration,
}

/// What an outbox did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct OutboxCounters {
    /// Transitions put in.
    pub transitions: u64,
    /// Batches made.
    pub batches: u64,
    /// Batches sent again.
    pub resent: u64,
    /// Batches acknowledged.
    pub acked_batches: u64,
    /// Transitions acknowledged.
    pub acked_transitions: u64,
    /// Batches dropped unacknowledged (the hold bound).
    pub dropped_batches: u64,
    /// Transitions in them.
    pub dropped_transitions: u64,
    /// Sends the link refused.
    pub send_errors: u64,
}

/// One stream's outbox.
pub struct Outbox {
    settings: OutboxSettings,
    stream: u64,
    actor: String,
    next_seq: u64,
    current: Vec<Transition>,
    current_since: Option<Instant>,
    held: VecDeque<Batch>,
    held_transitions: usize,
    last_progress: Instant,
    arrivals_seen: u64,
    /// Totals.
    pub counters: OutboxCounters,
}

impl Outbox {
    /// An empty outbox for `stream` of `actor`.
    pub fn new(settings: OutboxSettings, stream: u64, actor: &str) -> Self {
        Self {
            settings,
            stream,
            actor: actor.to_owned(),
            next_seq: 0,
            current: Vec::with_capacity(settings.batch),
            current_since: None,
            held: VecDeque::new(),
            held_transitions: 0,
            last_progress: Instant::now(),
            arrivals_seen: 0,
            counters: OutboxCounters::default(),
        }
    }

    /// Adds a transition; a full batch is made and sent.
    pub fn push(&mut self, t: Transition, link: &StreamLink) {
        self.counters.transitions += 1;
        self.current.push(t);
        self.current_since.get_or_insert_with(Instant::now);
        if self.current.len() >= self.settings.batch {
            self.flush(link);
        }
    }

    /// Makes a batch of what is pending and sends it (nothing if nothing is pending).
    pub fn flush(&mut self, link: &StreamLink) {
        if self.current.is_empty() {
            return;
        }
        let transitions =
            std::mem::replace(&mut self.current, Vec::with_capacity(self.settings.batch));
        self.current_since = None;
        self.held_transitions += transitions.len();
        self.held.push_back(Batch {
            stream: self.stream,
            actor: self.actor.clone(),
            seq: self.next_seq,
            first_held: 0,
            sent_ns: 0,
            transitions,
        });
        self.next_seq += 1;
        self.counters.batches += 1;
        while self.held_transitions > self.settings.hold && self.held.len() > 1 {
            let b = self.held.pop_front().expect("non-empty");
            self.held_transitions -= b.transitions.len();
            self.counters.dropped_batches += 1;
            self.counters.dropped_transitions += b.transitions.len() as u64;
        }
        let last = self.held.len() - 1;
        self.send(last, link);
    }

    fn send(&mut self, i: usize, link: &StreamLink) {
        let first = self.held.front().map_or(0, |b| b.seq);
        let b = &mut self.held[i];
        b.first_held = first;
        b.sent_ns = now_ns();
        if !link.send(b.encode()) {
            self.counters.send_errors += 1;
        }
    }

    /// Takes in acknowledgements; sends everything held again when the learner came back or
    /// acknowledged nothing for `resend_after`; sends a partial batch that waited long enough.
    pub fn poll(&mut self, link: &StreamLink, heard: &Heard) {
        while let Some(ack) = link.try_ack() {
            let Some(through) = ack.through else { continue };
            let mut moved = false;
            while self.held.front().is_some_and(|b| b.seq <= through) {
                let b = self.held.pop_front().expect("non-empty");
                self.held_transitions -= b.transitions.len();
                self.counters.acked_batches += 1;
                self.counters.acked_transitions += b.transitions.len() as u64;
                moved = true;
            }
            if moved {
                self.last_progress = Instant::now();
            }
        }
        let arrivals = heard.learner_arrivals.load(Ordering::Acquire);
        let came_back = arrivals != self.arrivals_seen;
        self.arrivals_seen = arrivals;
        let alive = heard.learner_alive.load(Ordering::Acquire);
        let stalled = alive
            && !self.held.is_empty()
            && self.last_progress.elapsed() >= self.settings.resend_after;
        if came_back || stalled {
            self.resend_all(link);
        }
        if self
            .current_since
            .is_some_and(|t| t.elapsed() >= self.settings.flush_after)
        {
            self.flush(link);
        }
    }

    /// Sends every held batch again, oldest first.
    pub fn resend_all(&mut self, link: &StreamLink) {
        for i in 0..self.held.len() {
            self.send(i, link);
            self.counters.resent += 1;
        }
        self.last_progress = Instant::now();
    }

    /// Transitions not yet acknowledged (held and pending).
    pub fn unacked(&self) -> usize {
        self.held_transitions + self.current.len()
    }
}
