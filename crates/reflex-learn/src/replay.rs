//! Replay in memory: n-step aggregation, ring buffers, and RLPD's mixed sampling.
//!
//! Steps go in one at a time per stream ([`Step`]); [`NStep`] turns them into n-step records
//! (discounted reward sum, bootstrap discount `gamma^k` or 0 after a terminal state, and the
//! state `k` steps on), which a [`Ring`] keeps. [`sample_mixed`] draws each batch from a
//! demonstration ring and an online ring in a fixed proportion (RLPD, 50/50 by default).

use crate::rng::Rng;
use crate::sac::Batch;
use std::collections::VecDeque;

/// One environment step as the learner stores it.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    /// Observation the action was chosen on.
    pub obs: Vec<f32>,
    /// Action, in the learner's action space.
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
    /// Observation at the first step.
    pub obs: Vec<f32>,
    /// Action at the first step.
    pub act: Vec<f32>,
    /// `sum_i gamma^i r_i` over the k <= n steps covered.
    pub reward: f32,
    /// `gamma^k`, or 0 when the k-th step was terminal.
    pub discount: f32,
    /// Observation after the k-th step.
    pub next_obs: Vec<f32>,
}

/// Turns a stream of steps (one episode after another) into n-step records.
#[derive(Clone, Debug)]
pub struct NStep {
    n: usize,
    gamma: f32,
    pending: VecDeque<Step>,
}

impl NStep {
    /// An aggregator over `n` steps (1..=5 is typical) with discount `gamma`.
    pub fn new(n: usize, gamma: f32) -> Self {
        assert!(n >= 1, "n-step needs n >= 1");
        Self {
            n,
            gamma,
            pending: VecDeque::with_capacity(n),
        }
    }

    /// Adds a step; emits every record it completes. At an episode's end every pending step
    /// is completed with the steps that remain (shorter than n).
    pub fn push(&mut self, step: Step, mut emit: impl FnMut(Record)) {
        let end = step.episode_end || step.terminated;
        let terminated = step.terminated;
        self.pending.push_back(step);
        if end {
            while !self.pending.is_empty() {
                emit(self.first_record(terminated));
                self.pending.pop_front();
            }
        } else if self.pending.len() == self.n {
            emit(self.first_record(false));
            self.pending.pop_front();
        }
    }

    fn first_record(&self, terminated: bool) -> Record {
        let first = &self.pending[0];
        let last = self.pending.back().expect("not empty");
        let mut reward = 0.0f32;
        let mut g = 1.0f32;
        for s in &self.pending {
            reward += g * s.reward;
            g *= self.gamma;
        }
        Record {
            obs: first.obs.clone(),
            act: first.act.clone(),
            reward,
            discount: if terminated { 0.0 } else { g },
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
    discount: Vec<f32>,
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
            discount: vec![0.0; capacity],
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
        assert_eq!(r.obs.len(), self.obs_dim, "record observation width");
        assert_eq!(r.act.len(), self.act_dim, "record action width");
        let i = self.next;
        let (o, a) = (self.obs_dim, self.act_dim);
        self.obs[i * o..(i + 1) * o].copy_from_slice(&r.obs);
        self.act[i * a..(i + 1) * a].copy_from_slice(&r.act);
        self.reward[i] = r.reward;
        self.discount[i] = r.discount;
        self.next_obs[i * o..(i + 1) * o].copy_from_slice(&r.next_obs);
        self.next = (self.next + 1) % self.capacity;
        self.len = (self.len + 1).min(self.capacity);
        self.added += 1;
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
    demo.sample_rows(rng, batch, 0..k);
    online.sample_rows(rng, batch, k..batch.size);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(i: usize, reward: f32, terminated: bool, end: bool) -> Step {
        Step {
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
        ns.push(step(10, 2.0, true, true), |r| out.push(r));
        assert_eq!(out[2].obs, vec![10.0]);
        assert_eq!(out[2].reward, 2.0);
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
                obs: vec![1.0],
                act: vec![0.0],
                reward: 0.0,
                discount: 1.0,
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

    #[test]
    fn the_ring_overwrites_its_oldest() {
        let mut ring = Ring::new(3, 1, 1);
        for i in 0..5 {
            ring.push(&Record {
                obs: vec![i as f32],
                act: vec![0.0],
                reward: 0.0,
                discount: 1.0,
                next_obs: vec![0.0],
            });
        }
        assert_eq!(ring.len(), 3);
        let mut held: Vec<f32> = ring.obs.clone();
        held.sort_by(f32::total_cmp);
        assert_eq!(held, vec![2.0, 3.0, 4.0]);
    }
}
