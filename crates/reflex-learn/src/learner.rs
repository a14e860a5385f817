//! The learner thread: drains the runtime's transitions, keeps the replay (in memory and on
//! disk), runs updates at the configured update-to-data ratio, and publishes the actor.
//!
//! The control loop never waits for it: transitions arrive through the runtime's drop-oldest
//! queue and weights leave through a `WeightsSlot` (an atomic pointer swap). In simulation the
//! training driver may hold the simulator back so that updates keep up with data (the UTD
//! ratio); on a real arm nothing waits and the ratio is whatever the learner manages.
//!
//! Residual actions: the runtime records the executed action `a` and the base action `b`; the
//! learner stores the residual that explains it, `clip((a - b) / scale, -1, 1)`, and the
//! observation augmented with the base action (the residual actor's input). Steps an operator
//! took over also go to the demonstration buffer.

use crate::nn::Normaliser;
use crate::replay::{sample_mixed, NStep, Record, Ring, Step};
use crate::rng::Rng;
use crate::sac::{Agent, Batch, UpdateStats};
use crate::stage::RewardStage;
use crate::store::{save_checkpoint, Checkpoint, ReplayLog, Source, StoreError};
use reflex_core::{BoundedQueue, Transition};
use reflex_runtime::{Mlp, MlpScratch, WeightsSlot};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Settings of the learner.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LearnerConfig {
    /// Critic updates per environment step.
    pub utd: f32,
    /// Rows per batch.
    pub batch_size: usize,
    /// Share of each batch drawn from demonstrations (RLPD).
    pub demo_fraction: f32,
    /// Steps summed into one return (1..=5).
    pub n_step: usize,
    /// Online steps before updates start.
    pub learning_starts: usize,
    /// Updates during which only the critics learn (the actor stays at the base behaviour).
    pub critic_warmup_updates: u64,
    /// Publish the actor to the runtime every this many updates.
    pub publish_every: u64,
    /// Write a checkpoint every this many updates (0: only at the end).
    pub checkpoint_every: u64,
    /// Records each replay ring holds.
    pub replay_capacity: usize,
    /// Rewards are multiplied by this for learning (keeps values near 1..100).
    pub reward_scale: f32,
    /// A success that ends the episode is learned as an absorbing state that keeps paying its
    /// reward (`r / (1 - gamma)`): otherwise dense shaping collected by hovering just short of
    /// success can be worth more than succeeding, and the policy learns to avoid it.
    pub success_absorbing: bool,
    /// Run the learner on the training driver's thread, in step with the simulator: after each
    /// environment step it takes in the transition and runs the updates the ratio allows. A
    /// run is then reproducible from its seed (same build, same machine), at the cost of the
    /// overlap between simulating and learning. Simulation only; a real arm never waits.
    pub lockstep: bool,
}

impl Default for LearnerConfig {
    fn default() -> Self {
        Self {
            // Measured on pick_cube, 15 minutes on 2 cores: UTD 1 reached 98% at 9.0 min,
            // UTD 4 (a quarter of the data per second) 80% at 15 min. Data is cheap in
            // simulation; updates are the bottleneck.
            utd: 1.0,
            batch_size: 256,
            demo_fraction: 0.5,
            n_step: 3,
            learning_starts: 256,
            critic_warmup_updates: 2000,
            publish_every: 50,
            checkpoint_every: 5000,
            replay_capacity: 1_000_000,
            reward_scale: 0.1,
            success_absorbing: true,
            lockstep: false,
        }
    }
}

impl LearnerConfig {
    /// Checks ranges; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.utd > 0.0 && self.utd <= 64.0) {
            return Err(format!("learner.utd: must be in (0, 64], got {}", self.utd));
        }
        if !(1..=5).contains(&self.n_step) {
            return Err(format!(
                "learner.n_step: must be 1..=5, got {}",
                self.n_step
            ));
        }
        if !(0.0..=1.0).contains(&self.demo_fraction) {
            return Err(format!(
                "learner.demo_fraction: must be in [0, 1], got {}",
                self.demo_fraction
            ));
        }
        if !(self.reward_scale > 0.0 && self.reward_scale.is_finite()) {
            return Err(format!(
                "learner.reward_scale: must be positive, got {}",
                self.reward_scale
            ));
        }
        if self.batch_size == 0 || self.publish_every == 0 || self.replay_capacity == 0 {
            return Err(
                "learner.batch_size, publish_every and replay_capacity must be positive".into(),
            );
        }
        Ok(())
    }
}

/// Counters shared with the driver (all atomics; read them at any time).
#[derive(Debug, Default)]
pub struct LearnerShared {
    /// Updates done.
    pub updates: AtomicU64,
    /// Online environment steps received.
    pub env_steps: AtomicU64,
    /// Steps taken over by an operator (also stored as demonstrations).
    pub intervened_steps: AtomicU64,
    /// Transitions without a reward yet (dropped until a reward worker fills them in).
    pub unrewarded: AtomicU64,
    /// Weights published.
    pub published: AtomicU64,
    /// Times the replay's rewards were reshaped with a reward stage's new potential.
    pub reshapes: AtomicU64,
    /// Updates have started (enough online data): from now on the ratio binds.
    pub learning: AtomicBool,
    /// Ask the thread to stop (it writes a final checkpoint).
    pub stop: AtomicBool,
    /// While set, transitions are still taken in but no update runs (evaluation).
    pub paused: AtomicBool,
    /// The latest update's figures.
    pub last: Mutex<UpdateStats>,
}

/// The residual learner: agent, replay, persistence.
pub struct Learner {
    /// The agent being trained.
    pub agent: Agent,
    cfg: LearnerConfig,
    scale: f32,
    gamma: f32,
    obs_dim: usize,
    act_dim: usize,
    /// Online records.
    pub online: Ring,
    /// Demonstration records.
    pub demo: Ring,
    nstep: NStep,
    nstep_sources: VecDeque<Source>,
    nstep_demo: NStep,
    log: Option<ReplayLog>,
    checkpoint_dir: Option<PathBuf>,
    base: Mlp,
    base_scratch: MlpScratch,
    slot: Arc<WeightsSlot>,
    batch: Batch,
    rng: Rng,
    stage: Option<Box<dyn RewardStage>>,
    /// The stage's potential shapes the replay's rewards (after its first round).
    shaped: bool,
    ready: Vec<Transition>,
    /// Counters for the driver.
    pub shared: Arc<LearnerShared>,
}

impl Learner {
    /// A learner for flat observations of `flat_dim` and actions of `act_dim`; `base` is the
    /// frozen base policy, `slot` where the exploring actor is published, `scale` the
    /// residual scale.
    pub fn new(
        agent: Agent,
        cfg: LearnerConfig,
        scale: f32,
        base: Mlp,
        slot: Arc<WeightsSlot>,
        seed: u64,
    ) -> Self {
        let act_dim = agent.act_dim();
        let obs_dim = agent.obs_dim();
        let gamma = agent.config().gamma;
        Self {
            online: Ring::new(cfg.replay_capacity, obs_dim, act_dim),
            demo: Ring::new(cfg.replay_capacity, obs_dim, act_dim),
            nstep: NStep::new(cfg.n_step, gamma),
            nstep_sources: VecDeque::new(),
            nstep_demo: NStep::new(cfg.n_step, gamma),
            batch: Batch::new(cfg.batch_size, obs_dim, act_dim),
            base_scratch: base.scratch(),
            base,
            agent,
            cfg,
            scale,
            gamma,
            obs_dim,
            act_dim,
            log: None,
            checkpoint_dir: None,
            slot,
            rng: Rng::new(seed ^ 0x1EA2),
            stage: None,
            shaped: false,
            ready: Vec::new(),
            shared: Arc::new(LearnerShared::default()),
        }
    }

    /// Persists every step to `log` and checkpoints to `dir` from now on.
    pub fn persist(&mut self, log: ReplayLog, checkpoint_dir: PathBuf) {
        self.log = Some(log);
        self.checkpoint_dir = Some(checkpoint_dir);
    }

    /// The augmented observation `[flat; base(flat)]`.
    pub fn augment(&mut self, flat: &[f32], out: &mut Vec<f32>) {
        out.clear();
        out.extend_from_slice(flat);
        let n = out.len();
        out.resize(n + self.act_dim, 0.0);
        if self
            .base
            .forward_with(&mut self.base_scratch, flat, &mut out[n..])
            .is_err()
        {
            out[n..].fill(0.0);
        }
    }

    /// The step a runtime transition stands for, or None while its reward is pending.
    pub fn step_from(&mut self, t: &Transition) -> Option<Step> {
        if !t.outcome.has_reward() {
            self.shared.unrewarded.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let mut obs = Vec::with_capacity(self.obs_dim);
        obs.extend_from_slice(t.obs.as_slice());
        obs.extend_from_slice(t.base_action.as_slice());
        let act = t
            .action
            .as_slice()
            .iter()
            .zip(t.base_action.as_slice())
            .map(|(a, b)| ((a - b) / self.scale).clamp(-1.0, 1.0))
            .collect();
        let mut next_obs = Vec::with_capacity(self.obs_dim);
        self.augment(t.next_obs.as_slice(), &mut next_obs);
        let mut reward = t.outcome.reward as f32 * self.cfg.reward_scale;
        if self.cfg.success_absorbing && t.outcome.success && t.outcome.terminated {
            reward /= 1.0 - self.gamma;
        }
        Some(Step {
            obs,
            act,
            reward,
            terminated: t.outcome.terminated,
            episode_end: t.outcome.done(),
            next_obs,
        })
    }

    /// Fits the agent's input normalisation on the demonstrations taken in so far (call once,
    /// before training) and publishes the actor that reads raw observations.
    pub fn fit_normaliser(&mut self, min_std: f32) {
        if self.demo.is_empty() {
            return;
        }
        let norm = Normaliser::fit(self.demo.observations(), self.obs_dim, min_std);
        self.agent.set_normaliser(norm);
        self.publish();
    }

    /// Adds a demonstration step (already in the learner's spaces).
    pub fn add_demo(&mut self, step: Step) -> Result<(), StoreError> {
        if let Some(log) = &mut self.log {
            log.append(&step, Source::Demo)?;
        }
        self.insert(step);
        Ok(())
    }

    /// Adds an online step (intervened steps count as demonstrations too).
    pub fn add_online(&mut self, step: Step, intervened: bool) -> Result<(), StoreError> {
        let source = if intervened {
            Source::Intervention
        } else {
            Source::Online
        };
        if let Some(log) = &mut self.log {
            log.append(&step, source)?;
        }
        self.insert_online(step, source);
        Ok(())
    }

    /// Puts a step recovered from the replay log back, without logging it again.
    pub fn restore_step(&mut self, step: Step, source: Source) {
        match source {
            Source::Demo => self.insert(step),
            Source::Online | Source::Intervention => self.insert_online(step, source),
        }
    }

    fn insert(&mut self, step: Step) {
        let mut emitted: Vec<Record> = Vec::new();
        self.nstep_demo.push(step, |r| emitted.push(r));
        for r in emitted {
            let shaping = self.shaping_of(&r);
            self.demo.push_shaped(&r, shaping);
        }
    }

    /// The potential-based shaping of a record under the stage's current potential (0 until a
    /// stage has one).
    fn shaping_of(&mut self, r: &Record) -> f32 {
        if !self.shaped {
            return 0.0;
        }
        let Some(stage) = self.stage.as_mut() else {
            return 0.0;
        };
        let flat = self.obs_dim - self.act_dim;
        let mut rows = Vec::with_capacity(2 * flat);
        rows.extend_from_slice(&r.obs[..flat]);
        rows.extend_from_slice(&r.next_obs[..flat]);
        let mut phi = [0.0f32; 2];
        stage.potential(&rows, &mut phi);
        self.cfg.reward_scale * (r.horizon * phi[1] - phi[0])
    }

    /// Reshapes both replay rings with the stage's new potential.
    fn reshape(&mut self) {
        let Some(stage) = self.stage.as_mut() else {
            return;
        };
        let flat = self.obs_dim - self.act_dim;
        let scale = self.cfg.reward_scale;
        let started = std::time::Instant::now();
        let mut phi = |rows: &[f32], out: &mut [f32]| stage.potential(rows, out);
        self.online.reshape(flat, scale, &mut phi);
        self.demo.reshape(flat, scale, &mut phi);
        self.shaped = true;
        self.shared.reshapes.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            records = self.online.len() + self.demo.len(),
            ms = started.elapsed().as_secs_f64() * 1e3,
            "replay rewards reshaped with the new potential"
        );
    }

    fn insert_online(&mut self, step: Step, source: Source) {
        self.shared.env_steps.fetch_add(1, Ordering::Relaxed);
        if source == Source::Intervention {
            self.shared.intervened_steps.fetch_add(1, Ordering::Relaxed);
        }
        self.nstep_sources.push_back(source);
        let mut emitted: Vec<Record> = Vec::new();
        self.nstep.push(step, |r| emitted.push(r));
        for r in emitted {
            let src = self.nstep_sources.pop_front().unwrap_or(Source::Online);
            debug_assert!(
                src != Source::Demo,
                "offline demonstrations have their own stream"
            );
            let shaping = self.shaping_of(&r);
            self.online.push_shaped(&r, shaping);
            if src == Source::Intervention {
                self.demo.push_shaped(&r, shaping);
            }
        }
    }

    /// One update if the ratio allows it; returns whether one ran.
    pub fn try_update(&mut self) -> bool {
        let env_steps = self.shared.env_steps.load(Ordering::Relaxed);
        let updates = self.agent.updates;
        let allowed = (env_steps as f64 * self.cfg.utd as f64) as u64;
        if self.online.len() < self.cfg.learning_starts.max(1) || updates >= allowed {
            return false;
        }
        self.shared.learning.store(true, Ordering::Release);
        self.update_once();
        true
    }

    /// One update regardless of the ratio (benchmarks, offline pre-training).
    pub fn update_once(&mut self) -> UpdateStats {
        sample_mixed(
            &self.online,
            &self.demo,
            self.cfg.demo_fraction,
            &mut self.rng,
            &mut self.batch,
        );
        let frozen = self.agent.updates < self.cfg.critic_warmup_updates;
        let s = self.agent.update(&self.batch, frozen);
        let u = self.agent.updates;
        self.shared.updates.store(u, Ordering::Relaxed);
        if let Ok(mut last) = self.shared.last.lock() {
            *last = s;
        }
        if u % self.cfg.publish_every == 0 && !frozen {
            self.publish();
        }
        if self.cfg.checkpoint_every > 0 && u % self.cfg.checkpoint_every == 0 {
            if let Err(e) = self.checkpoint() {
                tracing::error!("checkpoint failed (training continues): {e}");
            }
        }
        s
    }

    /// Publishes the current actor to the runtime.
    pub fn publish(&mut self) {
        match self.slot.publish(self.agent.exploring_actor()) {
            Ok(_) => {
                self.shared.published.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => tracing::error!("actor not published: {e}"),
        }
    }

    /// Syncs the replay log and writes a checkpoint (when persisting).
    pub fn checkpoint(&mut self) -> Result<Option<PathBuf>, StoreError> {
        let Some(dir) = self.checkpoint_dir.clone() else {
            return Ok(None);
        };
        let records = match &mut self.log {
            Some(log) => {
                log.sync()?;
                log.records
            }
            None => 0,
        };
        let (tensors, mut meta) = self.agent.to_checkpoint();
        meta["replay_records"] = records.into();
        meta["env_steps"] = self.shared.env_steps.load(Ordering::Relaxed).into();
        let path = save_checkpoint(&dir, self.agent.updates, &Checkpoint { tensors, meta })?;
        Ok(Some(path))
    }

    /// Takes in every transition waiting in `queue`; returns how many there were.
    /// With a reward stage, transitions go through it first and arrive once their rewards are
    /// known.
    pub fn drain(&mut self, queue: &BoundedQueue<Transition>) -> Result<usize, StoreError> {
        let mut got = 0;
        let mut reshape = false;
        let mut ready = std::mem::take(&mut self.ready);
        match &mut self.stage {
            Some(stage) => {
                while let Some(t) = queue.pop() {
                    got += 1;
                    stage.take(t, &mut |r| ready.push(r));
                }
                stage.poll(&mut |r| ready.push(r));
                if stage.relabel_due() {
                    reshape = true;
                }
            }
            None => {
                while let Some(t) = queue.pop() {
                    got += 1;
                    ready.push(t);
                }
            }
        }
        if reshape {
            self.reshape();
        }
        let mut result = Ok(got);
        for t in ready.drain(..) {
            if let Some(step) = self.step_from(&t) {
                if let Err(e) = self.add_online(step, t.intervened) {
                    result = Err(e);
                    break;
                }
            }
        }
        ready.clear();
        self.ready = ready;
        result
    }

    /// Puts a reward stage between the runtime's transitions and the replay.
    pub fn set_stage(&mut self, stage: Box<dyn RewardStage>) {
        self.stage = Some(stage);
    }

    /// The reward a demonstration transition is stored with: the stage's
    /// [`RewardStage::demo_reward`], or the task's own reward without a stage.
    pub fn demo_reward(&self, t: &Transition) -> f64 {
        match &self.stage {
            Some(stage) => stage.demo_reward(t),
            None => t.outcome.reward,
        }
    }

    /// The reward stage's counters, if there is one.
    pub fn stage_report(&self) -> Option<serde_json::Value> {
        self.stage.as_ref().map(|s| s.report())
    }

    /// Runs on its own thread until `shared.stop`: drains `queue`, updates, publishes. Returns
    /// the learner (after a final checkpoint) when stopped.
    pub fn spawn(
        mut self,
        queue: Arc<BoundedQueue<Transition>>,
    ) -> std::thread::JoinHandle<Result<Learner, StoreError>> {
        std::thread::Builder::new()
            .name("reflex-learner".into())
            .spawn(move || {
                let shared = self.shared.clone();
                while !shared.stop.load(Ordering::Acquire) {
                    let got = self.drain(&queue)?;
                    if shared.paused.load(Ordering::Acquire) {
                        std::thread::sleep(Duration::from_micros(500));
                        continue;
                    }
                    if !self.try_update() && got == 0 {
                        std::thread::sleep(Duration::from_micros(200));
                    }
                }
                self.checkpoint()?;
                Ok(self)
            })
            .expect("spawning the learner thread")
    }
}
