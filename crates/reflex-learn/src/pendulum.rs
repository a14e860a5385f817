//! Pendulum swing-up (the equations of Gymnasium's `Pendulum-v1`, written out here) and a
//! plain SAC loop on it: an algorithm sanity check with a known answer.
//!
//! Dynamics: `thdot += (3 g / (2 l) sin th + 3 / (m l^2) u) dt`, clipped to +-8 rad/s, then
//! `th += thdot dt`, with g = 10, m = l = 1, dt = 0.05 and torque clipped to +-2. Reward
//! `-(wrap(th)^2 + 0.1 thdot^2 + 0.001 u^2)`; observation `[cos th, sin th, thdot]`; episodes
//! are 200 steps; the start is `th ~ U(-pi, pi)`, `thdot ~ U(-1, 1)`.

use crate::replay::{NStep, Ring, Source, Step};
use crate::rng::Rng;
use crate::sac::{Agent, AgentConfig, Batch};
use serde::Serialize;
use std::time::Instant;

/// Steps per episode.
pub const EPISODE_STEPS: usize = 200;

/// The pendulum.
#[derive(Clone, Debug)]
pub struct Pendulum {
    th: f64,
    thdot: f64,
    t: usize,
    rng: Rng,
}

impl Pendulum {
    /// A pendulum whose starts are drawn from `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            th: 0.0,
            thdot: 0.0,
            t: 0,
            rng: Rng::new(seed),
        }
    }

    /// Starts an episode.
    pub fn reset(&mut self) -> [f32; 3] {
        self.th = self
            .rng
            .uniform(-std::f64::consts::PI, std::f64::consts::PI);
        self.thdot = self.rng.uniform(-1.0, 1.0);
        self.t = 0;
        self.obs()
    }

    fn obs(&self) -> [f32; 3] {
        [
            self.th.cos() as f32,
            self.th.sin() as f32,
            self.thdot as f32,
        ]
    }

    /// Applies torque `2 * action` (action in [-1, 1]); returns observation, reward and whether
    /// the episode's 200 steps are up.
    pub fn step(&mut self, action: f32) -> ([f32; 3], f32, bool) {
        let (g, m, l, dt) = (10.0, 1.0, 1.0, 0.05);
        let u = (2.0 * action as f64).clamp(-2.0, 2.0);
        let wrapped = (self.th + std::f64::consts::PI).rem_euclid(std::f64::consts::TAU)
            - std::f64::consts::PI;
        let cost = wrapped * wrapped + 0.1 * self.thdot * self.thdot + 0.001 * u * u;
        let thdot = (self.thdot
            + (3.0 * g / (2.0 * l) * self.th.sin() + 3.0 / (m * l * l) * u) * dt)
            .clamp(-8.0, 8.0);
        self.th += thdot * dt;
        self.thdot = thdot;
        self.t += 1;
        (self.obs(), -cost as f32, self.t >= EPISODE_STEPS)
    }
}

/// What a pendulum run measured.
#[derive(Clone, Debug, Serialize)]
pub struct PendulumReport {
    /// Return of each finished episode.
    pub returns: Vec<f32>,
    /// Environment steps when the mean of the last 10 returns first exceeded -200.
    pub steps_to_solve: Option<usize>,
    /// Seconds from the start to that point.
    pub seconds_to_solve: Option<f64>,
    /// Steps run.
    pub env_steps: usize,
    /// Updates run.
    pub updates: u64,
    /// Wall-clock seconds.
    pub wall_s: f64,
}

/// Trains SAC on the pendulum for up to `max_steps` (one update per step after `warmup`
/// random steps), stopping early once solved when `stop_when_solved`.
pub fn train_pendulum(
    cfg: AgentConfig,
    max_steps: usize,
    batch_size: usize,
    warmup: usize,
    seed: u64,
    stop_when_solved: bool,
    mut progress: impl FnMut(usize, Option<f32>),
) -> PendulumReport {
    let start = Instant::now();
    let gamma = cfg.gamma;
    let mut agent = Agent::new(cfg, 3, 1, seed);
    let mut env = Pendulum::new(seed ^ 0xA5A5);
    let mut rng = Rng::new(seed ^ 0x5A5A);
    let mut ring = Ring::new(max_steps.max(1), 3, 1);
    let mut nstep = NStep::new(1, gamma);
    let mut batch = Batch::new(batch_size, 3, 1);
    let mut obs = env.reset();
    let mut ret = 0.0f32;
    let mut report = PendulumReport {
        returns: Vec::new(),
        steps_to_solve: None,
        seconds_to_solve: None,
        env_steps: 0,
        updates: 0,
        wall_s: 0.0,
    };
    let mut act = [0.0f32];
    let mut step_in_episode = 0u64;
    for t in 0..max_steps {
        if t < warmup {
            act[0] = rng.uniform(-1.0, 1.0) as f32;
        } else {
            agent.act(&obs, 1, true, &mut act);
        }
        let (next, reward, end) = env.step(act[0]);
        ret += reward;
        nstep.push(
            Step {
                episode: report.returns.len() as u64,
                step: step_in_episode,
                source: Source::Online,
                obs: obs.to_vec(),
                act: act.to_vec(),
                reward,
                terminated: false,
                episode_end: end,
                next_obs: next.to_vec(),
            },
            |r| ring.push(&r),
        );
        obs = next;
        step_in_episode += 1;
        report.env_steps = t + 1;
        if t + 1 >= warmup && ring.len() >= batch_size.min(warmup.max(1)) {
            ring.sample_rows(&mut rng, &mut batch, 0..batch_size);
            agent.update(&batch, false);
            report.updates += 1;
        }
        if end {
            report.returns.push(ret);
            ret = 0.0;
            step_in_episode = 0;
            obs = env.reset();
            let n = report.returns.len();
            let last10 = (n >= 10).then(|| report.returns[n - 10..].iter().sum::<f32>() / 10.0);
            progress(t + 1, last10);
            if report.steps_to_solve.is_none() && last10.is_some_and(|m| m > -200.0) {
                report.steps_to_solve = Some(t + 1);
                report.seconds_to_solve = Some(start.elapsed().as_secs_f64());
                if stop_when_solved {
                    break;
                }
            }
        }
    }
    report.wall_s = start.elapsed().as_secs_f64();
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamics_match_the_reference_equations() {
        let mut p = Pendulum::new(1);
        p.th = 0.5;
        p.thdot = -0.3;
        let (obs, r, end) = p.step(0.25);
        // thdot' = -0.3 + (15 sin 0.5 + 3 * 0.5) * 0.05; th' = 0.5 + thdot' * 0.05
        let thdot = -0.3 + (15.0 * 0.5f64.sin() + 1.5) * 0.05;
        let th = 0.5 + thdot * 0.05;
        assert!((obs[2] as f64 - thdot).abs() < 1e-6);
        assert!((obs[1] as f64 - th.sin()).abs() < 1e-6);
        let cost = 0.25 + 0.1 * 0.09 + 0.001 * 0.25;
        assert!((r as f64 + cost).abs() < 1e-6);
        assert!(!end);
        // Speed clips at 8 rad/s; angles wrap for the cost.
        p.thdot = 7.99;
        p.th = 1.0;
        let (obs, _, _) = p.step(1.0);
        assert_eq!(obs[2], 8.0);
        p.th = 2.0 * std::f64::consts::PI;
        p.thdot = 0.0;
        let (_, r, _) = p.step(0.0);
        assert!(r > -1e-9, "{r}");
    }
}
