//! Lock-free bounded queues with a declared overflow rule and counters.
//!
//! Every queue that crosses a thread in Reflex is one of these. The producer never waits: when the
//! queue is full, the rule decides what is lost, and a counter records it so the slow side can
//! report it.

use crossbeam::queue::ArrayQueue;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// What a full queue does with a new item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overflow {
    /// Evict the oldest item to make room (transitions, camera frames).
    DropOldest,
    /// Refuse the new item and hand it back (requests that must not silently replace others).
    Reject,
    /// Refuse the new item and count it: a wait-free single producer ([`spsc`]) cannot evict.
    DropNewest,
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
            Overflow::Reject | Overflow::DropNewest => match self.inner.push(item) {
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

/// Counters of a single-producer single-consumer structure, shared by its two halves.
#[derive(Debug, Default)]
struct SpscCounters {
    pushed: AtomicU64,
    dropped: AtomicU64,
    popped: AtomicU64,
}

impl SpscCounters {
    fn snapshot(&self) -> QueueStats {
        QueueStats {
            pushed: self.pushed.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            popped: self.popped.load(Ordering::Relaxed),
        }
    }
}

/// A wait-free bounded single-producer single-consumer queue (an `rtrb` ring): what the control
/// thread emits on. The producer's `send` never spins, yields, locks or allocates. When the ring
/// is full the new item is refused and counted ([`Overflow::DropNewest`]): a wait-free producer
/// cannot evict the oldest item from a ring its consumer is reading.
pub fn spsc<T>(capacity: usize) -> (SpscSender<T>, Arc<SpscReceiver<T>>) {
    let capacity = capacity.max(1);
    let (producer, consumer) = rtrb::RingBuffer::new(capacity);
    let counters = Arc::new(SpscCounters::default());
    (
        SpscSender {
            inner: producer,
            counters: counters.clone(),
        },
        Arc::new(SpscReceiver {
            inner: Mutex::new(consumer),
            counters,
            capacity,
        }),
    )
}

/// The producing half of [`spsc`]; owned by one thread (the control loop).
pub struct SpscSender<T> {
    inner: rtrb::Producer<T>,
    counters: Arc<SpscCounters>,
}

impl<T> SpscSender<T> {
    /// Sends without waiting; a full ring refuses the item, counts it and hands it back.
    #[inline]
    pub fn send(&mut self, item: T) -> Result<(), T> {
        match self.inner.push(item) {
            Ok(()) => {
                self.counters.pushed.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(rtrb::PushError::Full(item)) => {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                Err(item)
            }
        }
    }

    /// Counters (shared with the receiver).
    pub fn stats(&self) -> QueueStats {
        self.counters.snapshot()
    }
}

/// The consuming half of [`spsc`]. Several slow-side threads may hold it (it is shared behind an
/// `Arc`); they take turns through a lock the producer never touches.
pub struct SpscReceiver<T> {
    inner: Mutex<rtrb::Consumer<T>>,
    counters: Arc<SpscCounters>,
    capacity: usize,
}

impl<T> SpscReceiver<T> {
    /// Takes the oldest item, if any (consumer side: may wait for another consumer, never for
    /// the producer).
    pub fn pop(&self) -> Option<T> {
        let mut c = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let item = c.pop().ok();
        if item.is_some() {
            self.counters.popped.fetch_add(1, Ordering::Relaxed);
        }
        item
    }

    /// Items currently queued.
    pub fn len(&self) -> usize {
        let c = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        c.slots()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Maximum number of items.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The overflow rule: [`Overflow::DropNewest`].
    pub fn overflow(&self) -> Overflow {
        Overflow::DropNewest
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> QueueStats {
        self.counters.snapshot()
    }
}

/// A wait-free latest-value channel (a triple buffer): the newest value written wins, and the
/// reader takes it once. The reading half belongs to one thread (the control loop) and never
/// spins, yields, locks or allocates. Writers may be many (a web page, a gamepad, a ROS topic):
/// they share the writing half through [`LatestSender`]'s lock, which only writers take.
pub fn latest<T: Copy + Default + Send>() -> (LatestSender<T>, LatestReceiver<T>) {
    let (input, output) = triple_buffer::triple_buffer(&T::default());
    let counters = Arc::new(SpscCounters::default());
    (
        LatestSender {
            inner: Arc::new(Mutex::new(input)),
            counters: counters.clone(),
        },
        LatestReceiver {
            inner: output,
            counters,
        },
    )
}

/// The writing half of [`latest`]; clone it for every source.
pub struct LatestSender<T: Send> {
    inner: Arc<Mutex<triple_buffer::Input<T>>>,
    counters: Arc<SpscCounters>,
}

impl<T: Send> Clone for LatestSender<T> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            counters: self.counters.clone(),
        }
    }
}

impl<T: Send> LatestSender<T> {
    /// Publishes `value`, replacing any value not yet taken.
    pub fn send(&self, value: T) {
        let mut input = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        input.write(value);
        self.counters.pushed.fetch_add(1, Ordering::Relaxed);
    }

    /// Counters: `pushed` values written, `popped` values taken; the difference was
    /// overwritten before the reader took it.
    pub fn stats(&self) -> QueueStats {
        let mut s = self.counters.snapshot();
        s.dropped = s.pushed.saturating_sub(s.popped);
        s
    }
}

/// The reading half of [`latest`]; owned by one thread.
pub struct LatestReceiver<T: Send> {
    inner: triple_buffer::Output<T>,
    counters: Arc<SpscCounters>,
}

impl<T: Copy + Send> LatestReceiver<T> {
    /// The newest value written since the last take, if any. Wait-free.
    #[inline]
    pub fn take(&mut self) -> Option<T> {
        if self.inner.update() {
            self.counters.popped.fetch_add(1, Ordering::Relaxed);
            Some(*self.inner.output_buffer())
        } else {
            None
        }
    }
}

/// A camera image as the control loop reads it: a fixed number of bytes and when it was taken.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StampedImage {
    /// When the image was taken, nanoseconds, on the clock of [`crate::RobotState::stamp_ns`].
    pub stamp_ns: u64,
    /// Images published before and including this one (0: none yet).
    pub seq: u64,
    /// The image (a policy's layout: stacked cameras, interleaved channels).
    pub bytes: Vec<u8>,
}

/// A wait-free latest-value cell for images of `len` bytes (a triple buffer of preallocated
/// images): a camera thread writes into its own buffer and publishes; the control loop reads
/// the newest published image in place. Neither side allocates, locks or waits.
pub fn image_cell(len: usize) -> (ImageWriter, ImageReader) {
    let empty = StampedImage {
        stamp_ns: 0,
        seq: 0,
        bytes: vec![0; len],
    };
    let (input, output) = triple_buffer::triple_buffer(&empty);
    (ImageWriter { input, seq: 0 }, ImageReader { output })
}

/// The writing half of [`image_cell`] (one camera thread).
pub struct ImageWriter {
    input: triple_buffer::Input<StampedImage>,
    seq: u64,
}

impl ImageWriter {
    /// Bytes per image.
    pub fn len(&self) -> usize {
        self.input.input_buffer().bytes.len()
    }

    /// True for a cell of empty images.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Publishes the image `fill` writes into the cell's buffer (all [`ImageWriter::len`] bytes
    /// of it), taken at `stamp_ns`. Allocates nothing.
    pub fn publish_with(&mut self, stamp_ns: u64, fill: impl FnOnce(&mut [u8])) {
        self.seq += 1;
        let buf = self.input.input_buffer_mut();
        fill(&mut buf.bytes);
        buf.stamp_ns = stamp_ns;
        buf.seq = self.seq;
        self.input.publish();
    }

    /// Publishes a copy of `bytes`, which must be [`ImageWriter::len`] long.
    pub fn publish(&mut self, stamp_ns: u64, bytes: &[u8]) -> Result<(), (usize, usize)> {
        if bytes.len() != self.len() {
            return Err((self.len(), bytes.len()));
        }
        self.publish_with(stamp_ns, |buf| buf.copy_from_slice(bytes));
        Ok(())
    }
}

/// The reading half of [`image_cell`] (the control loop).
pub struct ImageReader {
    output: triple_buffer::Output<StampedImage>,
}

impl ImageReader {
    /// The newest published image, or `None` before the first. Wait-free; the image stays
    /// valid until the next call.
    #[inline]
    pub fn latest(&mut self) -> Option<&StampedImage> {
        let img = self.output.read();
        (img.seq > 0).then_some(img)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn the_image_cell_hands_over_the_newest_image_in_place() {
        let (mut w, mut r) = image_cell(4);
        assert!(r.latest().is_none(), "nothing published yet");
        w.publish(10, &[1, 2, 3, 4]).unwrap();
        w.publish_with(20, |b| b.copy_from_slice(&[5, 6, 7, 8]));
        let img = r.latest().unwrap();
        assert_eq!(
            (img.stamp_ns, img.seq, img.bytes.as_slice()),
            (20, 2, &[5u8, 6, 7, 8][..])
        );
        // Read again without news: the same image.
        assert_eq!(r.latest().unwrap().seq, 2);
        assert_eq!(w.publish(30, &[0; 3]), Err((4, 3)));
        assert_eq!(
            r.latest().unwrap().seq,
            2,
            "a refused image is not published"
        );
    }

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
    fn latest_keeps_only_the_newest() {
        let (tx, mut rx) = latest::<u32>();
        assert_eq!(rx.take(), None);
        tx.send(1);
        tx.clone().send(2);
        assert_eq!(rx.take(), Some(2));
        assert_eq!(rx.take(), None);
        assert_eq!(tx.stats().dropped, 1);
    }

    #[test]
    fn a_full_spsc_ring_refuses_the_newest_and_counts_it() {
        let (mut tx, rx) = spsc(2);
        assert_eq!(tx.send(1), Ok(()));
        assert_eq!(tx.send(2), Ok(()));
        assert_eq!(tx.send(3), Err(3));
        assert_eq!(rx.pop(), Some(1));
        assert_eq!(tx.send(4), Ok(()));
        assert_eq!((rx.pop(), rx.pop(), rx.pop()), (Some(2), Some(4), None));
        assert_eq!(
            rx.stats(),
            QueueStats {
                pushed: 3,
                dropped: 1,
                popped: 3
            }
        );
    }

    #[test]
    fn spsc_loses_nothing_it_accepted_across_threads() {
        let (mut tx, rx) = spsc(64);
        let producer = std::thread::spawn(move || {
            let mut accepted = Vec::new();
            for i in 0..100_000u64 {
                if tx.send(i).is_ok() {
                    accepted.push(i);
                }
            }
            accepted
        });
        let mut seen = Vec::new();
        while !producer.is_finished() || !rx.is_empty() {
            if let Some(v) = rx.pop() {
                seen.push(v);
            }
        }
        let accepted = producer.join().unwrap();
        assert_eq!(seen, accepted, "every accepted item arrives once, in order");
        assert_eq!(rx.stats().dropped, 100_000 - accepted.len() as u64);
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
