//! Replay in memory: n-step aggregation, ring buffers, and RLPD's mixed sampling.
//!
//! Steps go in one at a time per stream ([`Step`], keyed by episode and step id); [`NStep`]
//! turns them into n-step records (discounted reward sum, bootstrap discount `gamma^k` or 0
//! after a terminal state, and the state `k` steps on), which a [`Ring`] keeps. A window never
//! spans a gap in the step ids or two episodes: steps of several episodes may arrive interleaved
//! (late rewards), each episode has its own window, and a gap or an interruption closes the
//! window as a truncation. [`sample_mixed`] draws each batch from a demonstration ring and an
//! online ring in a fixed proportion (RLPD, 50/50 by default).

use crate::rng::Rng;
use std::collections::VecDeque;

/// A batch of transitions, row-major.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Batch {
    /// Rows.
    pub size: usize,
    /// `size x obs_dim`.
    pub obs: Vec<f32>,
    /// `size x act_dim`, in [-1, 1].
    pub act: Vec<f32>,
    /// n-step discounted reward sums.
    pub reward: Vec<f32>,
    /// Discount to apply to the bootstrap value: `gamma^k`, or 0 after a terminal state.
    pub discount: Vec<f32>,
    /// `size x obs_dim`: the state `k` steps later.
    pub next_obs: Vec<f32>,
    /// Rows `0..demo_rows` came from the demonstration ring (scripted demonstrations and
    /// operator takeovers): what the actor's imitation term (`agent.bc_weight`) reads.
    pub demo_rows: usize,
}

impl Batch {
    /// An empty batch of `size` rows.
    pub fn new(size: usize, obs_dim: usize, act_dim: usize) -> Self {
        Self {
            size,
            obs: vec![0.0; size * obs_dim],
            act: vec![0.0; size * act_dim],
            reward: vec![0.0; size],
            discount: vec![0.0; size],
            next_obs: vec![0.0; size * obs_dim],
            demo_rows: 0,
        }
    }
}

/// Where a step came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    /// An offline demonstration (scripted expert, recorded teleop session).
    Demo,
    /// A step of the online stream an operator took over (trained on as a demonstration).
    Intervention,
    /// The learner's own policy acting.
    Online,
}

/// One environment step as the learner stores it.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    /// Episode id (unique within its stream: demonstrations, or the online runtime's).
    pub episode: u64,
    /// Policy step within the episode.
    pub step: u64,
    /// Where it came from.
    pub source: Source,
    /// Observation the action was chosen on.
    pub obs: Vec<f32>,
    /// The action executed, exactly (the critic's input; the residual is derived from it).
    pub act: Vec<f32>,
    /// Reward for this step.
    pub reward: f32,
    /// The episode ended in a terminal state (no bootstrap).
    pub terminated: bool,
    /// The episode ended here for any reason (terminal or time limit).
    pub episode_end: bool,
    /// Observation after the step.
    pub next_obs: Vec<f32>,
}

/// An n-step record.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    /// Where its first step came from.
    pub source: Source,
    /// Observation at the first step.
    pub obs: Vec<f32>,
    /// Action at the first step.
    pub act: Vec<f32>,
    /// `sum_i gamma^i r_i` over the k <= n steps covered.
    pub reward: f32,
    /// `gamma^k`, or 0 when the k-th step was terminal.
    pub discount: f32,
    /// `gamma^k` whether or not the k-th step was terminal (for potential-based shaping).
    pub horizon: f32,
    /// Observation after the k-th step.
    pub next_obs: Vec<f32>,
}

/// Episodes whose windows may be open at once; the oldest is closed (as a truncation) when
/// another one starts beyond this.
pub const MAX_OPEN_EPISODES: usize = 16;

/// The steps of one episode not yet covered by a full record.
#[derive(Clone, Debug)]
struct Window {
    episode: u64,
    last_step: u64,
    pending: VecDeque<Step>,
}

/// Turns streams of steps into n-step records, one window per episode.
#[derive(Clone, Debug)]
pub struct NStep {
    n: usize,
    gamma: f32,
    open: Vec<Window>,
    /// Windows closed early because a step id was skipped.
    pub gaps: u64,
}

impl NStep {
    /// An aggregator over `n` steps (1..=5 is typical) with discount `gamma`.
    pub fn new(n: usize, gamma: f32) -> Self {
        assert!(n >= 1, "n-step needs n >= 1");
        Self {
            n,
            gamma,
            open: Vec::new(),
            gaps: 0,
        }
    }

    /// Adds a step; emits every record it completes. At an episode's end every pending step
    /// of that episode is completed with the steps that remain (shorter than n). A step whose
    /// id does not follow its episode's last one first closes that episode's window.
    pub fn push(&mut self, step: Step, mut emit: impl FnMut(Record)) {
        let at = match self.open.iter().position(|w| w.episode == step.episode) {
            Some(i) if self.open[i].last_step.wrapping_add(1) == step.step => i,
            Some(i) => {
                self.gaps += 1;
                let w = self.open.remove(i);
                self.close(w, false, &mut emit);
                self.open_window(step.episode, &mut emit)
            }
            None => self.open_window(step.episode, &mut emit),
        };
        let end = step.episode_end || step.terminated;
        let terminated = step.terminated;
        let w = &mut self.open[at];
        w.last_step = step.step;
        w.pending.push_back(step);
        if end {
            let w = self.open.remove(at);
            self.close(w, terminated, &mut emit);
        } else if w.pending.len() == self.n {
            let r = self.first_record(&self.open[at].pending, false);
            emit(r);
            self.open[at].pending.pop_front();
        }
    }

    /// Closes `episode`'s window as a truncation (an interrupted step: nothing after it joins
    /// the records before it).
    pub fn end_episode(&mut self, episode: u64, mut emit: impl FnMut(Record)) {
        if let Some(i) = self.open.iter().position(|w| w.episode == episode) {
            let w = self.open.remove(i);
            self.close(w, false, &mut emit);
        }
    }

    /// Closes every open window as a truncation (at the end of a run, after a resume).
    pub fn flush(&mut self, mut emit: impl FnMut(Record)) {
        for w in std::mem::take(&mut self.open) {
            self.close(w, false, &mut emit);
        }
    }

    /// Episodes with an open window.
    pub fn open_episodes(&self) -> usize {
        self.open.len()
    }

    fn open_window(&mut self, episode: u64, emit: &mut impl FnMut(Record)) -> usize {
        if self.open.len() >= MAX_OPEN_EPISODES {
            let w = self.open.remove(0);
            self.close(w, false, emit);
        }
        self.open.push(Window {
            episode,
            last_step: 0,
            pending: VecDeque::with_capacity(self.n),
        });
        self.open.len() - 1
    }

    fn close(&self, mut w: Window, terminated: bool, emit: &mut impl FnMut(Record)) {
        while !w.pending.is_empty() {
            emit(self.first_record(&w.pending, terminated));
            w.pending.pop_front();
        }
    }

    fn first_record(&self, pending: &VecDeque<Step>, terminated: bool) -> Record {
        let first = &pending[0];
        let last = pending.back().expect("not empty");
        let mut reward = 0.0f32;
        let mut g = 1.0f32;
        for s in pending {
            reward += g * s.reward;
            g *= self.gamma;
        }
        Record {
            source: first.source,
            obs: first.obs.clone(),
            act: first.act.clone(),
            reward,
            discount: if terminated { 0.0 } else { g },
            horizon: g,
            next_obs: last.next_obs.clone(),
        }
    }
}

/// A fixed-capacity ring of n-step records (the oldest is overwritten).
#[derive(Clone, Debug)]
pub struct Ring {
    obs_dim: usize,
    act_dim: usize,
    capacity: usize,
    len: usize,
    next: usize,
    obs: Vec<f32>,
    act: Vec<f32>,
    reward: Vec<f32>,
    /// The reward each record came with (what [`Ring::reshape`] adds shaping to).
    stored: Vec<f32>,
    discount: Vec<f32>,
    horizon: Vec<f32>,
    next_obs: Vec<f32>,
    /// Records ever added.
    pub added: u64,
}

impl Ring {
    /// The stored observations, `len x obs_dim` (in storage order, not insertion order).
    pub fn observations(&self) -> &[f32] {
        &self.obs[..self.len * self.obs_dim]
    }

    /// Room for `capacity` records.
    pub fn new(capacity: usize, obs_dim: usize, act_dim: usize) -> Self {
        assert!(capacity > 0, "a ring needs room");
        Self {
            obs_dim,
            act_dim,
            capacity,
            len: 0,
            next: 0,
            obs: vec![0.0; capacity * obs_dim],
            act: vec![0.0; capacity * act_dim],
            reward: vec![0.0; capacity],
            stored: vec![0.0; capacity],
            discount: vec![0.0; capacity],
            horizon: vec![0.0; capacity],
            next_obs: vec![0.0; capacity * obs_dim],
            added: 0,
        }
    }

    /// Records held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds a record, overwriting the oldest when full.
    pub fn push(&mut self, r: &Record) {
        self.push_shaped(r, 0.0);
    }

    /// Adds a record whose reward is `r.reward + shaping` (`r.reward` is kept as its stored
    /// reward for [`Ring::reshape`]).
    pub fn push_shaped(&mut self, r: &Record, shaping: f32) {
        assert_eq!(r.obs.len(), self.obs_dim, "record observation width");
        assert_eq!(r.act.len(), self.act_dim, "record action width");
        let i = self.next;
        let (o, a) = (self.obs_dim, self.act_dim);
        self.obs[i * o..(i + 1) * o].copy_from_slice(&r.obs);
        self.act[i * a..(i + 1) * a].copy_from_slice(&r.act);
        self.reward[i] = r.reward + shaping;
        self.stored[i] = r.reward;
        self.discount[i] = r.discount;
        self.horizon[i] = r.horizon;
        self.next_obs[i * o..(i + 1) * o].copy_from_slice(&r.next_obs);
        self.next = (self.next + 1) % self.capacity;
        self.len = (self.len + 1).min(self.capacity);
        self.added += 1;
    }

    /// Rewards of every held record become `stored + scale * (gamma^k * phi(s') - phi(s))`,
    /// where `phi` reads the first `flat_dim` values of each observation (the task's flat
    /// observation; the rest is the base policy's action) in rows, writing one value per row.
    /// Shaping by a potential telescopes over the k steps a record covers. A terminal record
    /// keeps its last state's potential (`gamma^k`, not its zero bootstrap discount): with a
    /// potential that grows with progress, a zero terminal potential would charge the policy
    /// for finishing.
    pub fn reshape(
        &mut self,
        flat_dim: usize,
        scale: f32,
        phi: &mut dyn FnMut(&[f32], &mut [f32]),
    ) {
        assert!(flat_dim <= self.obs_dim, "flat part of the observation");
        const CHUNK: usize = 4096;
        let o = self.obs_dim;
        let mut rows = Vec::with_capacity(CHUNK.min(self.len) * flat_dim);
        let mut now = vec![0.0f32; CHUNK.min(self.len)];
        let mut next = vec![0.0f32; CHUNK.min(self.len)];
        let mut start = 0;
        while start < self.len {
            let end = (start + CHUNK).min(self.len);
            let n = end - start;
            for (src, out) in [(&self.obs, &mut now), (&self.next_obs, &mut next)] {
                rows.clear();
                for i in start..end {
                    rows.extend_from_slice(&src[i * o..i * o + flat_dim]);
                }
                phi(&rows, &mut out[..n]);
            }
            for (k, i) in (start..end).enumerate() {
                let shaped = self.horizon[i] * next[k] - now[k];
                self.reward[i] = self.stored[i] + scale * shaped;
            }
            start = end;
        }
    }

    /// Copies record `i` (0 = oldest held) into row `row` of `batch`.
    fn copy_into(&self, slot: usize, batch: &mut Batch, row: usize) {
        let (o, a) = (self.obs_dim, self.act_dim);
        batch.obs[row * o..(row + 1) * o].copy_from_slice(&self.obs[slot * o..(slot + 1) * o]);
        batch.act[row * a..(row + 1) * a].copy_from_slice(&self.act[slot * a..(slot + 1) * a]);
        batch.reward[row] = self.reward[slot];
        batch.discount[row] = self.discount[slot];
        batch.next_obs[row * o..(row + 1) * o]
            .copy_from_slice(&self.next_obs[slot * o..(slot + 1) * o]);
    }

    /// Fills rows `rows` of `batch` with records drawn uniformly (with replacement).
    pub fn sample_rows(&self, rng: &mut Rng, batch: &mut Batch, rows: std::ops::Range<usize>) {
        assert!(
            !self.is_empty() || rows.is_empty(),
            "sampling an empty ring"
        );
        for row in rows {
            let slot = (rng.next_u64() % self.len as u64) as usize;
            self.copy_into(slot, batch, row);
        }
    }
}

/// How many rows of a batch of `size` come from the demonstrations, given the configured
/// fraction and what the buffers hold (all from one buffer when the other is empty).
pub fn demo_rows(size: usize, demo_fraction: f32, demo_len: usize, online_len: usize) -> usize {
    if demo_len == 0 {
        0
    } else if online_len == 0 {
        size
    } else {
        ((size as f32 * demo_fraction).round() as usize).min(size)
    }
}

/// RLPD sampling: `demo_rows` rows from `demo`, the rest from `online`.
pub fn sample_mixed(
    online: &Ring,
    demo: &Ring,
    demo_fraction: f32,
    rng: &mut Rng,
    batch: &mut Batch,
) {
    let k = demo_rows(batch.size, demo_fraction, demo.len(), online.len());
    batch.demo_rows = k;
    demo.sample_rows(rng, batch, 0..k);
    online.sample_rows(rng, batch, k..batch.size);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(i: usize, reward: f32, terminated: bool, end: bool) -> Step {
        Step {
            episode: 0,
            step: i as u64,
            source: Source::Online,
            obs: vec![i as f32],
            act: vec![0.5],
            reward,
            terminated,
            episode_end: end,
            next_obs: vec![(i + 1) as f32],
        }
    }

    #[test]
    fn three_step_records_mid_episode_and_at_a_terminal() {
        let g = 0.9f32;
        let mut ns = NStep::new(3, g);
        let mut out = Vec::new();
        for i in 0..5 {
            let last = i == 4;
            ns.push(step(i, (i + 1) as f32, last, last), |r| out.push(r));
        }
        assert_eq!(out.len(), 5);
        // Full windows: obs 0 and 1 and 2 (2's window ends at the terminal step 4).
        let r0 = &out[0];
        assert_eq!(r0.obs, vec![0.0]);
        assert!((r0.reward - (1.0 + g * 2.0 + g * g * 3.0)).abs() < 1e-6);
        assert!((r0.discount - g * g * g).abs() < 1e-6);
        assert_eq!(r0.next_obs, vec![3.0]);
        // After the terminal: windows shorten and never bootstrap.
        let r2 = &out[2];
        assert!((r2.reward - (3.0 + g * 4.0 + g * g * 5.0)).abs() < 1e-5);
        assert_eq!(r2.discount, 0.0);
        assert_eq!(r2.next_obs, vec![5.0]);
        let r4 = &out[4];
        assert_eq!(r4.reward, 5.0);
        assert_eq!(r4.discount, 0.0);
    }

    #[test]
    fn a_time_limit_bootstraps_with_the_shorter_window() {
        let g = 0.5f32;
        let mut ns = NStep::new(4, g);
        let mut out = Vec::new();
        ns.push(step(0, 1.0, false, false), |r| out.push(r));
        ns.push(step(1, 1.0, false, true), |r| out.push(r));
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].reward, 1.5);
        assert_eq!(out[0].discount, 0.25);
        assert_eq!(out[0].next_obs, vec![2.0]);
        assert_eq!(out[1].reward, 1.0);
        assert_eq!(out[1].discount, 0.5);
        // The next episode starts clean.
        let mut next = step(10, 2.0, true, true);
        next.episode = 1;
        ns.push(next, |r| out.push(r));
        assert_eq!(out[2].obs, vec![10.0]);
        assert_eq!(out[2].reward, 2.0);
    }

    fn in_episode(episode: u64, i: usize, end: bool) -> Step {
        let mut s = step(i, 1.0, false, end);
        s.episode = episode;
        s.obs = vec![episode as f32 * 100.0 + i as f32];
        s.next_obs = vec![episode as f32 * 100.0 + i as f32 + 1.0];
        s
    }

    /// Windows are keyed by episode: interleaved episodes (late rewards arriving out of order)
    /// never share a window. The old aggregator kept one window for the whole stream, so a
    /// record started in one episode bootstrapped from another's state.
    #[test]
    fn interleaved_episodes_never_share_a_window() {
        let mut ns = NStep::new(3, 0.5);
        let mut out = Vec::new();
        for i in 0..4 {
            ns.push(in_episode(7, i, false), |r| out.push(r));
            ns.push(in_episode(8, i, i == 3), |r| out.push(r));
        }
        ns.flush(|r| out.push(r));
        assert_eq!(out.len(), 8);
        for r in &out {
            let (from, to) = (r.obs[0], r.next_obs[0]);
            assert_eq!(
                (from / 100.0).floor(),
                ((to - 1.0) / 100.0).floor(),
                "a record spans two episodes: {r:?}"
            );
            let k = (to - from) as i32;
            assert!((1..=3).contains(&k), "{r:?}");
            assert!((r.horizon - 0.5f32.powi(k)).abs() < 1e-6);
        }
    }

    /// A skipped step id closes the window: no record covers the gap.
    #[test]
    fn a_window_never_spans_a_dropped_step() {
        let mut ns = NStep::new(3, 0.5);
        let mut out = Vec::new();
        for i in [0, 1, 3, 4, 5] {
            ns.push(in_episode(1, i, false), |r| out.push(r));
        }
        assert_eq!(ns.gaps, 1);
        for r in &out {
            assert!(
                !(r.obs[0] < 102.0 && r.next_obs[0] > 103.0),
                "a record spans the gap: {r:?}"
            );
        }
        // Steps 0 and 1 were flushed as truncations at the gap (bootstrapping from step 1's
        // next state); step 3 heads the next full window.
        assert_eq!(out.len(), 3);
        assert_eq!((out[0].obs[0], out[0].next_obs[0]), (100.0, 102.0));
        assert_eq!((out[1].obs[0], out[1].next_obs[0]), (101.0, 102.0));
        assert_eq!((out[2].obs[0], out[2].next_obs[0]), (103.0, 106.0));
        assert!(out.iter().all(|r| r.discount > 0.0));
        ns.end_episode(1, |r| out.push(r));
        assert_eq!(ns.open_episodes(), 0);
        assert_eq!(out.len(), 5);
    }

    #[test]
    fn one_step_is_the_plain_transition() {
        let mut ns = NStep::new(1, 0.99);
        let mut out = Vec::new();
        ns.push(step(3, 0.25, false, false), |r| out.push(r));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].reward, 0.25);
        assert!((out[0].discount - 0.99).abs() < 1e-7);
    }

    #[test]
    fn rlpd_batches_are_half_demonstration() {
        let mut online = Ring::new(100, 1, 1);
        let mut demo = Ring::new(100, 1, 1);
        for i in 0..50 {
            let mut r = Record {
                source: Source::Online,
                obs: vec![1.0],
                act: vec![0.0],
                reward: 0.0,
                discount: 1.0,
                horizon: 1.0,
                next_obs: vec![0.0],
            };
            online.push(&r);
            r.obs = vec![-1.0];
            if i < 10 {
                demo.push(&r);
            }
        }
        let mut rng = Rng::new(1);
        let mut batch = Batch::new(256, 1, 1);
        sample_mixed(&online, &demo, 0.5, &mut rng, &mut batch);
        let from_demo = batch.obs.iter().filter(|v| **v < 0.0).count();
        assert_eq!(from_demo, 128);
        sample_mixed(&online, &demo, 0.25, &mut rng, &mut batch);
        assert_eq!(batch.obs.iter().filter(|v| **v < 0.0).count(), 64);
        // No demonstrations: everything online; no online data yet: everything from demos.
        assert_eq!(demo_rows(256, 0.5, 0, 10), 0);
        assert_eq!(demo_rows(256, 0.5, 10, 0), 256);
    }

    /// Reshaping adds `scale * (gamma^k * phi(s') - phi(s))` to each record's stored reward, reads
    /// only the flat part of the observation, keeps the terminal record's last potential, and a
    /// second potential replaces the first (it is not added on top).
    #[test]
    fn reshaping_adds_potential_differences_to_the_stored_reward() {
        let gamma = 0.9f32;
        let mut ns = NStep::new(2, gamma);
        let mut ring = Ring::new(10, 2, 1);
        // Observations [x, base action]; phi reads x only.
        for (k, end) in [(0, false), (1, false), (2, false), (3, true)] {
            let s = Step {
                episode: 0,
                step: k as u64,
                source: Source::Online,
                obs: vec![k as f32, 100.0],
                act: vec![0.0],
                reward: if end { 10.0 } else { 1.0 },
                terminated: end,
                episode_end: end,
                next_obs: vec![k as f32 + 1.0, 100.0],
            };
            ns.push(s, |r| ring.push(&r));
        }
        assert_eq!(ring.len(), 4);
        let stored = ring.reward.clone();
        let mut calls = 0;
        let mut phi = |rows: &[f32], out: &mut [f32]| {
            calls += 1;
            for (o, x) in out.iter_mut().zip(rows) {
                *o = 3.0 * x;
            }
        };
        ring.reshape(1, 0.5, &mut phi);
        assert_eq!(calls, 2, "one chunk, obs and next_obs");
        for (i, stored_i) in stored.iter().enumerate() {
            let (x0, x1) = (ring.obs[i * 2], ring.next_obs[i * 2]);
            let k = (x1 - x0) as i32;
            let shaped = gamma.powi(k) * 3.0 * x1 - 3.0 * x0;
            let want = stored_i + 0.5 * shaped;
            assert!((ring.reward[i] - want).abs() < 1e-5, "record {i}");
        }
        // The last record is terminal (no bootstrap) yet keeps its potential.
        let last = (0..4).find(|&i| ring.obs[i * 2] == 3.0).unwrap();
        assert_eq!(ring.discount[last], 0.0);
        assert!(ring.reward[last] > stored[last]);
        ring.reshape(1, 0.5, &mut |_: &[f32], out: &mut [f32]| out.fill(0.0));
        assert_eq!(ring.reward, stored);
    }

    #[test]
    fn the_ring_overwrites_its_oldest() {
        let mut ring = Ring::new(3, 1, 1);
        for i in 0..5 {
            ring.push(&Record {
                source: Source::Online,
                obs: vec![i as f32],
                act: vec![0.0],
                reward: 0.0,
                discount: 1.0,
                horizon: 1.0,
                next_obs: vec![0.0],
            });
        }
        assert_eq!(ring.len(), 3);
        let mut held: Vec<f32> = ring.obs.clone();
        held.sort_by(f32::total_cmp);
        assert_eq!(held, vec![2.0, 3.0, 4.0]);
    }
}
