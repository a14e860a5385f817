//! Lock-free bounded queues with a declared overflow rule and counters.
//!
//! Every queue that crosses a thread in Reflex is one of these. The producer never waits: when the
//! queue is full, the rule decides what is lost, and a counter records it so the slow side can
//! report it.

use crossbeam::queue::ArrayQueue;
use std::sync::atomic::{AtomicU64, Ordering};

/// What a full queue does with a new item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overflow {
    /// Evict the oldest item to make room (transitions, camera frames).
    DropOldest,
    /// Refuse the new item and hand it back (requests that must not silently replace others).
    Reject,
}

/// What happened to a pushed item.
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed<T> {
    /// Stored without loss.
    Stored,
    /// Stored; the oldest item was evicted and is returned.
    EvictedOldest(T),
    /// Refused because the queue was full; the item is returned.
    Rejected(T),
}

/// Counters a queue keeps; read from any thread.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Items accepted.
    pub pushed: u64,
    /// Items lost to the overflow rule (evicted or rejected).
    pub dropped: u64,
    /// Items taken out.
    pub popped: u64,
}

/// A bounded multi-producer multi-consumer queue with an overflow rule.
pub struct BoundedQueue<T> {
    inner: ArrayQueue<T>,
    overflow: Overflow,
    pushed: AtomicU64,
    dropped: AtomicU64,
    popped: AtomicU64,
}

impl<T> BoundedQueue<T> {
    /// A queue holding at most `capacity` items (at least 1).
    pub fn new(capacity: usize, overflow: Overflow) -> Self {
        Self {
            inner: ArrayQueue::new(capacity.max(1)),
            overflow,
            pushed: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            popped: AtomicU64::new(0),
        }
    }

    /// Pushes without waiting, applying the overflow rule when full.
    pub fn push(&self, item: T) -> Pushed<T> {
        match self.overflow {
            Overflow::DropOldest => match self.inner.force_push(item) {
                None => {
                    self.pushed.fetch_add(1, Ordering::Relaxed);
                    Pushed::Stored
                }
                Some(old) => {
                    self.pushed.fetch_add(1, Ordering::Relaxed);
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    Pushed::EvictedOldest(old)
                }
            },
            Overflow::Reject => match self.inner.push(item) {
                Ok(()) => {
                    self.pushed.fetch_add(1, Ordering::Relaxed);
                    Pushed::Stored
                }
                Err(item) => {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    Pushed::Rejected(item)
                }
            },
        }
    }

    /// Takes the oldest item, if any, without waiting.
    pub fn pop(&self) -> Option<T> {
        let item = self.inner.pop();
        if item.is_some() {
            self.popped.fetch_add(1, Ordering::Relaxed);
        }
        item
    }

    /// Items currently queued.
    pub fn len(&self) -> usize {
        self.inner.len()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    /// Maximum number of items.
    pub fn capacity(&self) -> usize {
        self.inner.capacity()
    }

    /// The overflow rule.
    pub fn overflow(&self) -> Overflow {
        self.overflow
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> QueueStats {
        QueueStats {
            pushed: self.pushed.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            popped: self.popped.load(Ordering::Relaxed),
        }
    }
}

/// A single-slot cell where the newest value wins (weights versions, intervention commands).
/// Writers never wait; the reader takes the newest value written since its last take.
pub struct LatestCell<T> {
    slot: BoundedQueue<T>,
}

impl<T> Default for LatestCell<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> LatestCell<T> {
    /// An empty cell.
    pub fn new() -> Self {
        Self {
            slot: BoundedQueue::new(1, Overflow::DropOldest),
        }
    }

    /// Stores `value`, replacing any value not yet taken (counted as overwritten).
    pub fn set(&self, value: T) {
        let _ = self.slot.push(value);
    }

    /// Takes the newest value, if one was written since the last take.
    pub fn take(&self) -> Option<T> {
        self.slot.pop()
    }

    /// Counters: `dropped` is the number of values overwritten before anyone took them.
    pub fn stats(&self) -> QueueStats {
        self.slot.stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn drop_oldest_evicts_and_counts() {
        let q = BoundedQueue::new(2, Overflow::DropOldest);
        assert_eq!(q.push(1), Pushed::Stored);
        assert_eq!(q.push(2), Pushed::Stored);
        assert_eq!(q.push(3), Pushed::EvictedOldest(1));
        assert_eq!(q.pop(), Some(2));
        assert_eq!(q.pop(), Some(3));
        assert_eq!(q.pop(), None);
        assert_eq!(
            q.stats(),
            QueueStats {
                pushed: 3,
                dropped: 1,
                popped: 2
            }
        );
    }

    #[test]
    fn reject_hands_the_item_back() {
        let q = BoundedQueue::new(1, Overflow::Reject);
        assert_eq!(q.push("a"), Pushed::Stored);
        assert_eq!(q.push("b"), Pushed::Rejected("b"));
        assert_eq!(q.pop(), Some("a"));
        assert_eq!(q.stats().dropped, 1);
    }

    #[test]
    fn latest_cell_keeps_only_the_newest() {
        let c = LatestCell::new();
        c.set(1);
        c.set(2);
        assert_eq!(c.take(), Some(2));
        assert_eq!(c.take(), None);
        assert_eq!(c.stats().dropped, 1);
    }

    #[test]
    fn no_item_is_lost_or_duplicated_across_threads() {
        let q = Arc::new(BoundedQueue::new(64, Overflow::DropOldest));
        let producer = {
            let q = q.clone();
            std::thread::spawn(move || {
                for i in 0..100_000u64 {
                    let _ = q.push(i);
                }
            })
        };
        let mut seen = 0u64;
        let mut last = None;
        while !producer.is_finished() || !q.is_empty() {
            if let Some(v) = q.pop() {
                if let Some(l) = last {
                    assert!(v > l, "items arrived out of order: {v} after {l}");
                }
                last = Some(v);
                seen += 1;
            }
        }
        producer.join().unwrap();
        let s = q.stats();
        assert_eq!(s.pushed, 100_000);
        assert_eq!(seen + s.dropped, 100_000);
        assert_eq!(s.popped, seen);
    }
}
