//! `reflex bench learner|pendulum|train`: learning throughput and the pendulum sanity check.

use super::BenchReport;
use crate::train::{train, TrainConfig};
use anyhow::{bail, Result};
use reflex_learn::pendulum::train_pendulum;
use reflex_learn::sac::{Agent, AgentConfig};
use std::time::Instant;

/// Settings of `reflex bench learner`.
#[derive(Clone, Debug)]
pub struct BenchLearnerSpec {
    /// Seconds to time updates for.
    pub seconds: f64,
    /// Rows per batch.
    pub batch: usize,
    /// Hidden width (two hidden layers).
    pub hidden: usize,
    /// Observation width.
    pub obs: usize,
    /// Action width.
    pub act: usize,
    /// Critics in the ensemble.
    pub critics: usize,
}

/// Full SAC updates (critics, actor, temperature, targets) per second, as training runs them:
/// the learner draws every batch from a filled replay, half demonstrations and half online
/// (RLPD), of 3-step records, for a residual agent whose critics see the executed action.
pub fn bench_learner(a: &BenchLearnerSpec) -> Result<BenchReport> {
    let mut out = BenchReport::default();
    use reflex_learn::learner::{Learner, LearnerConfig};
    use reflex_learn::replay::{Source, Step};
    use reflex_runtime::{Activation, Mlp, WeightsSlot};
    let cfg = AgentConfig {
        hidden: vec![a.hidden, a.hidden],
        critics: a.critics,
        zero_init_actor: false,
        ..Default::default()
    };
    if let Err(e) = cfg.validate() {
        bail!("{e}");
    }
    let scale = 0.3;
    let agent = Agent::new(cfg, a.obs + a.act, a.act, 1).with_residual(scale);
    let lcfg = LearnerConfig {
        batch_size: a.batch,
        critic_warmup_updates: 0,
        replay_capacity: 200_000,
        ..Default::default()
    };
    let base = Mlp::zeros(&[a.obs, 8, a.act], Activation::Relu, Activation::Tanh);
    let slot = WeightsSlot::new(agent.exploring_actor());
    let mut learner = Learner::new(agent, lcfg, scale, base, slot, 1);
    // Fill the replay: 5,000 demonstration steps and 50,000 online steps, in episodes of 100.
    let mut rng = reflex_sim::rng::Rng::new(3);
    let vec_of = |n: usize, rng: &mut reflex_sim::rng::Rng| -> Vec<f32> {
        (0..n).map(|_| rng.uniform(-1.0, 1.0) as f32).collect()
    };
    let fill_start = Instant::now();
    for i in 0..55_000u64 {
        let demo = i < 5_000;
        let step = Step {
            episode: i / 100,
            step: i % 100,
            source: if demo { Source::Demo } else { Source::Online },
            obs: vec_of(a.obs + a.act, &mut rng),
            act: vec_of(a.act, &mut rng),
            reward: rng.uniform(-1.0, 1.0) as f32,
            terminated: i % 100 == 99 && i % 300 == 99,
            episode_end: i % 100 == 99,
            next_obs: vec_of(a.obs + a.act, &mut rng),
        };
        if demo {
            learner.add_demo(step)?;
        } else {
            learner.add_online(step)?;
        }
    }
    let fill_s = fill_start.elapsed().as_secs_f64();
    for _ in 0..10 {
        learner.update_once();
    }
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed().as_secs_f64() < a.seconds {
        learner.update_once();
        n += 1;
    }
    let s = start.elapsed().as_secs_f64();
    let ups = n as f64 / s;
    let threads = rayon::current_num_threads();
    out.lines.push(format!(
        "full SAC updates from a filled replay (RLPD 50/50, {} demonstration and {} online records): {ups:.1}/s (batch {}, [{h}, {h}] actor and {} critics, obs {} + base {}, act {}, {threads} threads)",
        learner.demo.len(),
        learner.online.len(),
        a.batch,
        a.critics,
        a.obs,
        a.act,
        a.act,
        h = a.hidden
    ));
    {
        out.json = serde_json::json!({"updates_per_s": ups, "updates": n, "seconds": s, "batch": a.batch,
                "hidden": [a.hidden, a.hidden], "critics": a.critics, "obs": a.obs, "act": a.act,
                "threads": threads, "demo_records": learner.demo.len(),
                "online_records": learner.online.len(), "fill_s": fill_s,
                "rollbacks": learner.shared.rollbacks.load(std::sync::atomic::Ordering::Relaxed)});
    }
    Ok(out)
}

/// Settings of `reflex bench pendulum`.
#[derive(Clone, Debug)]
pub struct BenchPendulumSpec {
    /// Seeds to run (one run each).
    pub runs: u64,
    /// Step budget per run.
    pub max_steps: usize,
}

/// SAC on the pendulum until the last 10 returns average above -200; `progress(steps_done,
/// step_budget, message)` follows each run.
pub fn bench_pendulum(
    a: &BenchPendulumSpec,
    mut progress: impl FnMut(u64, u64, String),
) -> Result<BenchReport> {
    let mut out = BenchReport::default();
    let mut results = Vec::new();
    for seed in 0..a.runs {
        let cfg = AgentConfig {
            zero_init_actor: false,
            actor_lr: 1e-3,
            critic_lr: 1e-3,
            init_std: 1.0,
            backup_entropy: true,
            ..Default::default()
        };
        let mut last = String::new();
        let r = train_pendulum(cfg, a.max_steps, 256, 100, seed, true, |t, m| {
            if let Some(m) = m {
                last = format!("seed {seed}: last-10 mean return {m:.0}");
            }
            progress(t as u64, a.max_steps as u64, last.clone());
        });
        out.lines.push(format!(
            "seed {seed}: {} (updates {}, {:.1} s)",
            match (r.steps_to_solve, r.seconds_to_solve) {
                (Some(n), Some(s)) =>
                    format!("last-10 mean return above -200 at {n} steps, {s:.1} s"),
                _ => format!("not solved in {} steps", r.env_steps),
            },
            r.updates,
            r.wall_s
        ));
        results.push(r);
    }
    {
        let v: Vec<_> = results
            .iter()
            .enumerate()
            .map(|(i, r)| {
                serde_json::json!({"seed": i, "steps_to_solve": r.steps_to_solve,
                    "seconds_to_solve": r.seconds_to_solve, "updates": r.updates})
            })
            .collect();
        out.json = serde_json::json!({ "runs": v });
    }
    Ok(out)
}

/// Settings of `reflex bench train`.
#[derive(Clone, Debug)]
pub struct BenchTrainSpec {
    /// Task.
    pub task: String,
    /// Update-to-data ratio.
    pub utd: f32,
    /// Seconds of training.
    pub seconds: f64,
}

/// End-to-end environment steps and updates per second while training (no evaluations).
pub fn bench_train(a: &BenchTrainSpec) -> Result<BenchReport> {
    let mut out = BenchReport::default();
    let mut cfg = TrainConfig {
        task: a.task.clone(),
        minutes: a.seconds / 60.0,
        target_success: 2.0,
        eval_every: u64::MAX / 2,
        eval_episodes: 1,
        heldout_episodes: 0,
        ..Default::default()
    };
    cfg.learner.utd = a.utd;
    let dir = std::env::temp_dir().join(format!("reflex-bench-train-{}", std::process::id()));
    let s = train(&cfg, &dir, false, |_| {})?;
    let _ = std::fs::remove_dir_all(&dir);
    out.lines.push(format!(
        "{} at UTD {}: {:.1} environment steps/s, {:.1} updates/s end to end",
        a.task, a.utd, s.env_steps_per_s, s.updates_per_s
    ));
    {
        out.json = serde_json::json!({"task": a.task, "utd": a.utd, "env_steps_per_s": s.env_steps_per_s,
                "updates_per_s": s.updates_per_s, "env_steps": s.env_steps, "updates": s.updates});
    }
    Ok(out)
}
