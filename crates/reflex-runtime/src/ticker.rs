//! Fixed-rate ticking for the control thread, and the real-time settings it may ask for.
//!
//! The ticker sleeps until shortly before each deadline, then spins the rest: the kernel's sleep
//! alone wakes tens of microseconds late on an ordinary VM. Each tick has a deadline: its
//! scheduled start plus one period. A tick that finishes after it ([`Ticker::finish`]) is a
//! deadline miss; ticks that wake more than 10 % and 50 % of a period late are counted too. After
//! a late wake-up the schedule skips ahead rather than bursting to catch up, so a stall never
//! turns into a run of back-to-back commands.

use crate::stats::LoopStats;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// How long before a deadline the ticker stops sleeping and starts spinning.
const SPIN_NS: u64 = 80_000;

/// Wakes the control thread every period.
pub struct Ticker {
    period: Duration,
    next: Instant,
    deadline: Instant,
}

impl Ticker {
    /// A ticker whose first deadline is one period from now.
    pub fn new(rate_hz: f64) -> Self {
        let period = Duration::from_secs_f64(1.0 / rate_hz.max(1e-3));
        let next = Instant::now() + period;
        Self {
            period,
            next,
            deadline: next + period,
        }
    }

    /// The period.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// The next deadline.
    pub fn next_deadline(&self) -> Instant {
        self.next
    }

    /// The deadline of the tick that last woke: its scheduled start plus one period.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Waits for the next scheduled start; records the wake-up's lateness in `stats`. Returns
    /// the wake-up instant. No allocation; only `nanosleep` as a syscall.
    pub fn wait(&mut self, stats: &LoopStats) -> Instant {
        let now = Instant::now();
        if let Some(ahead) = self.next.checked_duration_since(now) {
            if ahead > Duration::from_nanos(SPIN_NS) {
                std::thread::sleep(ahead - Duration::from_nanos(SPIN_NS));
            }
            while Instant::now() < self.next {
                std::hint::spin_loop();
            }
        }
        let woke = Instant::now();
        let late = woke.saturating_duration_since(self.next);
        stats.jitter.record(late.as_nanos() as u64);
        stats.ticks.fetch_add(1, Ordering::Relaxed);
        if late * 10 > self.period {
            stats.late_10pct.fetch_add(1, Ordering::Relaxed);
        }
        if late * 2 > self.period {
            stats.late_50pct.fetch_add(1, Ordering::Relaxed);
        }
        self.deadline = self.next + self.period;
        if late > self.period {
            // Skip the deadlines already lost instead of running them back to back.
            let lost = (late.as_nanos() / self.period.as_nanos()) as u32;
            self.next += self.period * lost;
        }
        self.next += self.period;
        woke
    }

    /// Ends the tick that woke at `woke`: records its compute time, and a deadline miss when it
    /// finished after its deadline.
    pub fn finish(&self, stats: &LoopStats, woke: Instant) {
        let now = Instant::now();
        stats
            .compute
            .record(now.saturating_duration_since(woke).as_nanos() as u64);
        if now > self.deadline {
            stats.deadline_misses.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// What [`RealTime::request`] obtained; each field says why when it could not.
#[derive(Debug)]
pub struct RealTime {
    /// SCHED_FIFO at the requested priority, or why not.
    pub fifo: Result<(), String>,
    /// Memory locked (mlockall), or why not.
    pub mlock: Result<(), String>,
    /// Pinned to the requested CPU, or why not.
    pub pinned: Result<(), String>,
}

impl Default for RealTimeRequest {
    fn default() -> Self {
        Self {
            fifo_priority: Some(80),
            mlock: true,
            cpu: None,
        }
    }
}

/// Real-time settings to ask for on the calling thread.
#[derive(Clone, Debug)]
pub struct RealTimeRequest {
    /// SCHED_FIFO priority (1..=99), or none.
    pub fifo_priority: Option<i32>,
    /// Lock all current and future memory.
    pub mlock: bool,
    /// CPU to pin the thread to.
    pub cpu: Option<usize>,
}

/// The last OS error of `what`, with the privileges it may need.
fn os_err(what: &str) -> String {
    let e = std::io::Error::last_os_error();
    let hint = if e.raw_os_error() == Some(libc::EPERM) {
        " (needs root or CAP_SYS_NICE / CAP_IPC_LOCK, or an rtprio/memlock limit in limits.conf)"
    } else {
        ""
    };
    format!("{what}: {e}{hint}")
}

impl RealTime {
    /// Asks for each setting on the calling thread; never fails, reports what it got. Call at
    /// start-up, not on the tick.
    pub fn request(req: &RealTimeRequest) -> Self {
        let mut out = RealTime {
            fifo: Err("not requested".into()),
            mlock: Err("not requested".into()),
            pinned: Err("not requested".into()),
        };
        if let Some(p) = req.fifo_priority {
            let param = libc::sched_param { sched_priority: p };
            // SAFETY: plain syscall on the calling thread with a valid parameter struct.
            let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
            out.fifo = if rc == 0 {
                Ok(())
            } else {
                Err(os_err("SCHED_FIFO"))
            };
        }
        if req.mlock {
            // SAFETY: plain syscall; flags are valid constants.
            let rc = unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) };
            out.mlock = if rc == 0 {
                Ok(())
            } else {
                Err(os_err("mlockall"))
            };
        }
        if let Some(cpu) = req.cpu {
            // SAFETY: the set is zeroed then filled with one CPU index below CPU_SETSIZE.
            let rc = unsafe {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_ZERO(&mut set);
                if cpu < libc::CPU_SETSIZE as usize {
                    libc::CPU_SET(cpu, &mut set);
                }
                libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
            };
            out.pinned = if rc == 0 {
                Ok(())
            } else {
                Err(os_err(&format!("pin to CPU {cpu}")))
            };
        }
        out
    }
}

/// SCHED_FIFO for the calling thread until dropped, then its former policy again. Threads it
/// starts meanwhile inherit the policy: start them before entering.
pub struct FifoScope {
    former: Option<(i32, libc::sched_param)>,
    /// Whether SCHED_FIFO was granted, or why not.
    pub got: Result<(), String>,
}

impl FifoScope {
    /// Asks for SCHED_FIFO at `priority` (1..=99) on the calling thread.
    pub fn enter(priority: i32) -> Self {
        let mut param = libc::sched_param { sched_priority: 0 };
        // SAFETY: plain syscalls on the calling thread with a valid parameter struct.
        let (policy, rc) = unsafe {
            (
                libc::sched_getscheduler(0),
                libc::sched_getparam(0, &mut param),
            )
        };
        let got = RealTime::request(&RealTimeRequest {
            fifo_priority: Some(priority),
            mlock: false,
            cpu: None,
        })
        .fifo;
        Self {
            former: (got.is_ok() && policy >= 0 && rc == 0).then_some((policy, param)),
            got,
        }
    }
}

impl Drop for FifoScope {
    fn drop(&mut self) {
        if let Some((policy, param)) = self.former.take() {
            // SAFETY: restores the policy and parameters read from this thread at entry.
            unsafe { libc::sched_setscheduler(0, policy, &param) };
        }
    }
}

/// The process's file-backed pages (its code and read-only data, and its libraries') locked in
/// memory until dropped: a real-time loop's code cannot be evicted by another thread's disk
/// traffic (a learner writing its replay fills the page cache) and fault back in from disk
/// mid-tick. Anonymous memory (heaps, stacks) is left alone: without swap it is never paged
/// out; with swap, `reflex run`'s `mlockall` is the tool.
pub struct MemoryLock {
    /// Bytes locked, or why nothing was.
    pub got: Result<usize, String>,
    ranges: Vec<(usize, usize)>,
}

impl MemoryLock {
    /// Locks every readable file-backed mapping of the process (from `/proc/self/maps`).
    pub fn code() -> Self {
        let maps = match std::fs::read_to_string("/proc/self/maps") {
            Ok(m) => m,
            Err(e) => {
                return Self {
                    got: Err(format!("reading /proc/self/maps: {e}")),
                    ranges: Vec::new(),
                }
            }
        };
        let mut ranges = Vec::new();
        let mut error = None;
        for line in maps.lines() {
            let mut f = line.split_whitespace();
            let (Some(range), Some(perms)) = (f.next(), f.next()) else {
                continue;
            };
            // offset, device, inode, then the path of a file mapping.
            let path = f.nth(3).unwrap_or("");
            if !path.starts_with('/') || !perms.starts_with('r') {
                continue;
            }
            let Some((lo, hi)) = range.split_once('-') else {
                continue;
            };
            let (Ok(lo), Ok(hi)) = (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
            else {
                continue;
            };
            // SAFETY: the range is one of this process's mappings, as the kernel listed it.
            if unsafe { libc::mlock(lo as *const libc::c_void, hi - lo) } == 0 {
                ranges.push((lo, hi - lo));
            } else if error.is_none() {
                error = Some(os_err("mlock"));
            }
        }
        let bytes = ranges.iter().map(|r| r.1).sum();
        Self {
            got: match error {
                Some(e) if ranges.is_empty() => Err(e),
                _ => Ok(bytes),
            },
            ranges,
        }
    }
}

impl Drop for MemoryLock {
    fn drop(&mut self) {
        for &(at, len) in &self.ranges {
            // SAFETY: unlocks a range this lock locked.
            unsafe { libc::munlock(at as *const libc::c_void, len) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Locked kilobytes of this process, from /proc.
    fn locked_kb() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("VmLck:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    #[test]
    fn a_memory_lock_locks_the_pages_until_dropped() {
        let before = locked_kb();
        let lock = MemoryLock::code();
        if let Ok(bytes) = lock.got {
            // This test's own code is among them.
            assert!(bytes > 100_000, "{bytes} bytes locked");
            assert!(
                locked_kb() >= before + bytes as u64 / 1024 / 2,
                "{} kB",
                locked_kb()
            );
        }
        drop(lock);
        assert_eq!(locked_kb(), before);
    }

    #[test]
    fn a_fifo_scope_restores_the_former_policy() {
        std::thread::spawn(|| {
            // SAFETY: plain syscall on the calling thread.
            let policy = || unsafe { libc::sched_getscheduler(0) };
            let before = policy();
            let scope = FifoScope::enter(10);
            assert_eq!(
                policy() == libc::SCHED_FIFO,
                scope.got.is_ok(),
                "{:?}",
                scope.got
            );
            drop(scope);
            assert_eq!(policy(), before);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn every_wait_is_counted_and_recorded() {
        let stats = LoopStats::default();
        let mut t = Ticker::new(2000.0);
        let start = Instant::now();
        for _ in 0..50 {
            t.wait(&stats);
        }
        assert_eq!(stats.ticks.load(Ordering::Relaxed), 50);
        assert_eq!(stats.jitter.count(), 50);
        // Fifty 0.5 ms periods cannot pass in less than 25 ms (a lower bound, not a timing
        // assertion on a noisy machine).
        assert!(start.elapsed() >= Duration::from_micros(24_500));
    }

    #[test]
    fn a_stall_is_a_miss_and_does_not_cause_a_burst() {
        let stats = LoopStats::default();
        let mut t = Ticker::new(1000.0);
        t.wait(&stats);
        std::thread::sleep(Duration::from_millis(5));
        let woke = t.wait(&stats); // at least four periods late
        t.finish(&stats, woke);
        assert!(stats.deadline_misses.load(Ordering::Relaxed) >= 1);
        assert!(stats.late_50pct.load(Ordering::Relaxed) >= 1);
        assert!(stats.late_10pct.load(Ordering::Relaxed) >= 1);
        // The schedule skipped ahead: the next deadline is after the late wake-up, so the
        // lost ticks are not run back to back.
        assert!(t.next_deadline() > woke);
    }

    #[test]
    fn a_tick_that_wakes_on_time_but_finishes_late_is_a_miss() {
        //! The old ticker only counted a tick that woke more than a period late.
        let stats = LoopStats::default();
        let mut t = Ticker::new(1000.0);
        let woke = t.wait(&stats);
        std::thread::sleep(Duration::from_millis(3)); // the tick's work overruns its period
        t.finish(&stats, woke);
        assert_eq!(stats.deadline_misses.load(Ordering::Relaxed), 1);
        assert_eq!(stats.compute.count(), 1);
        assert!(stats.compute.max_ns() >= 3_000_000);
    }

    #[test]
    fn real_time_requests_report_instead_of_failing() {
        let rt = RealTime::request(&RealTimeRequest {
            fifo_priority: None,
            mlock: false,
            cpu: Some(0),
        });
        assert!(rt.fifo.is_err() && rt.mlock.is_err());
        // Pinning to CPU 0 is allowed for any user on Linux.
        assert!(rt.pinned.is_ok(), "{:?}", rt.pinned);
    }
}
