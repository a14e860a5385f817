//! The learner thread: drains the runtime's transitions, keeps the replay (in memory and on
//! disk), runs updates at the configured update-to-data ratio, and publishes the actor.
//!
//! The control loop never waits for it: transitions arrive through the runtime's drop-oldest
//! queue and weights leave through a `WeightsSlot` (an atomic pointer swap). In simulation the
//! training driver may hold the simulator back so that updates keep up with data (the UTD
//! ratio); on a real arm nothing waits and the ratio is whatever the learner manages.
//!
//! Residual actions: the runtime records the executed action `a` and the base action `b`; the
//! learner stores `a` exactly (the critics learn on what was executed; the agent derives the
//! residual, see `sac`) and the observation augmented with the base action (the residual
//! actor's input). How often the former scheme, storing `clip((a - b) / scale)`, would have
//! stored an action nobody took is counted (`clip_would_bind`). Steps an operator took over
//! also go to the demonstration buffer. Interrupted steps (an e-stop, a lost operator link)
//! are not stored; they close their episode's n-step window.
//!
//! Robustness: a non-finite loss or parameter rolls the agent back to its last good checkpoint
//! (in memory, the one last written) and is counted (`rollbacks`); non-finite weights are
//! never published. The replay log is synced at least every `store::SYNC_INTERVAL`.

use crate::nn::Normaliser;
use crate::replay::{sample_mixed, NStep, Record, Ring, Source, Step};
use crate::rng::Rng;
use crate::sac::{Agent, Batch, UpdateStats};
use crate::stage::RewardStage;
use crate::store::{save_checkpoint, Checkpoint, ReplayLog, StoreError, SYNC_INTERVAL};
use reflex_core::{Interruption, SpscReceiver, Transition};
use reflex_policy::{Mlp, MlpScratch, WeightsSlot};
use serde::{Deserialize, Serialize};
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
    /// Interrupted steps (e-stop, lost operator link): not stored, their windows closed.
    pub interrupted: AtomicU64,
    /// Stored steps whose executed action lies farther than the residual scale from the base
    /// in some component: the former scheme would have stored a clipped action nobody took.
    pub clip_would_bind: AtomicU64,
    /// Times a non-finite loss or parameter rolled the agent back to its last checkpoint.
    pub rollbacks: AtomicU64,
    /// Replay records known to be on disk.
    pub synced_records: AtomicU64,
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
    /// Set by the learner thread once it has seen `paused`, published the actor of its latest
    /// update and stopped updating; cleared when it resumes. An evaluation waits for it, so it
    /// judges the weights the learner holds, not ones up to `publish_every` updates older.
    pub holding: AtomicBool,
    /// The latest update's figures.
    pub last: Mutex<UpdateStats>,
    /// The reward stage's counters, refreshed about once a second (none without a stage).
    pub stage_report: Mutex<Option<serde_json::Value>>,
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
    nstep_demo: NStep,
    /// The last checkpoint's contents, to roll back to when training diverges.
    last_good: Option<Checkpoint>,
    log: Option<ReplayLog>,
    checkpoint_dir: Option<PathBuf>,
    base: Mlp,
    base_scratch: MlpScratch,
    slot: Arc<WeightsSlot>,
    batch: Batch,
    rng: Rng,
    /// When the stage's counters were last copied to `shared.stage_report`.
    stage_reported: std::time::Instant,
    stage: Option<Box<dyn RewardStage>>,
    /// The stage's potential shapes the replay's rewards (after its first round).
    shaped: bool,
    ready: Vec<Transition>,
    max_online_episode: Option<u64>,
    /// The update count whose actor was last published.
    published_updates: Option<u64>,
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
            nstep_demo: NStep::new(cfg.n_step, gamma),
            last_good: None,
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
            stage_reported: std::time::Instant::now(),
            stage: None,
            shaped: false,
            ready: Vec::new(),
            max_online_episode: None,
            published_updates: None,
            shared: Arc::new(LearnerShared::default()),
        }
    }

    /// Persists every step to `log` and checkpoints to `dir` from now on.
    pub fn persist(&mut self, log: ReplayLog, checkpoint_dir: PathBuf) {
        // What was recovered from the log is on disk already.
        self.shared
            .synced_records
            .store(log.synced_records, Ordering::Relaxed);
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

    /// The step a runtime transition stands for (from `source`'s stream), or None while its
    /// reward is pending or when it was interrupted (its window is closed then).
    pub fn step_from(&mut self, t: &Transition, source: Source) -> Option<Step> {
        if t.interrupted != Interruption::None {
            self.shared.interrupted.fetch_add(1, Ordering::Relaxed);
            self.close_episode(t.episode, source);
            return None;
        }
        if !t.outcome.has_reward() {
            self.shared.unrewarded.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let mut obs = Vec::with_capacity(self.obs_dim);
        obs.extend_from_slice(t.obs.as_slice());
        obs.extend_from_slice(t.base_action.as_slice());
        let act: Vec<f32> = t.action.as_slice().to_vec();
        let binds = act
            .iter()
            .zip(t.base_action.as_slice())
            .any(|(a, b)| (a - b).abs() > self.scale * (1.0 + 1e-6));
        if binds {
            self.shared.clip_would_bind.fetch_add(1, Ordering::Relaxed);
        }
        let mut next_obs = Vec::with_capacity(self.obs_dim);
        self.augment(t.next_obs.as_slice(), &mut next_obs);
        let mut reward = t.outcome.reward as f32 * self.cfg.reward_scale;
        if self.cfg.success_absorbing && t.outcome.success && t.outcome.terminated {
            reward /= 1.0 - self.gamma;
        }
        Some(Step {
            episode: t.episode,
            step: t.step,
            source,
            obs,
            act,
            reward,
            terminated: t.outcome.terminated,
            episode_end: t.outcome.done(),
            next_obs,
        })
    }

    /// Closes `episode`'s n-step window in `source`'s stream (what is pending becomes
    /// truncated records).
    fn close_episode(&mut self, episode: u64, source: Source) {
        let mut emitted: Vec<Record> = Vec::new();
        match source {
            Source::Demo => self.nstep_demo.end_episode(episode, |r| emitted.push(r)),
            _ => self.nstep.end_episode(episode, |r| emitted.push(r)),
        }
        for r in emitted {
            self.store_record(&r);
        }
    }

    /// Closes every open n-step window (after restoring a replay: nothing that comes later
    /// continues a window from before the restart).
    pub fn flush_windows(&mut self) {
        let mut emitted: Vec<Record> = Vec::new();
        self.nstep_demo.flush(|r| emitted.push(r));
        self.nstep.flush(|r| emitted.push(r));
        for r in emitted {
            self.store_record(&r);
        }
    }

    /// Records in the replay log (0 when not persisting).
    pub fn replay_records(&self) -> u64 {
        self.log.as_ref().map_or(0, |l| l.records)
    }

    /// The largest online episode id seen so far (to continue the numbering after a resume).
    pub fn max_online_episode(&self) -> Option<u64> {
        self.max_online_episode
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
    pub fn add_demo(&mut self, mut step: Step) -> Result<(), StoreError> {
        step.source = Source::Demo;
        if let Some(log) = &mut self.log {
            log.append(&step)?;
        }
        self.insert(step);
        Ok(())
    }

    /// Adds an online step (intervened steps count as demonstrations too).
    pub fn add_online(&mut self, step: Step) -> Result<(), StoreError> {
        if let Some(log) = &mut self.log {
            log.append(&step)?;
        }
        self.insert(step);
        Ok(())
    }

    /// Puts a step recovered from the replay log back, without logging it again.
    pub fn restore_step(&mut self, step: Step) {
        self.insert(step);
    }

    fn insert(&mut self, step: Step) {
        let mut emitted: Vec<Record> = Vec::new();
        if step.source == Source::Demo {
            self.nstep_demo.push(step, |r| emitted.push(r));
        } else {
            self.shared.env_steps.fetch_add(1, Ordering::Relaxed);
            if step.source == Source::Intervention {
                self.shared.intervened_steps.fetch_add(1, Ordering::Relaxed);
            }
            self.max_online_episode = Some(
                self.max_online_episode
                    .map_or(step.episode, |m| m.max(step.episode)),
            );
            self.nstep.push(step, |r| emitted.push(r));
        }
        for r in emitted {
            self.store_record(&r);
        }
    }

    /// Puts a finished n-step record into its ring(s): demonstrations into the demonstration
    /// ring, online records into the online ring, and operator takeovers into both.
    fn store_record(&mut self, r: &Record) {
        let shaping = self.shaping_of(r);
        match r.source {
            Source::Demo => self.demo.push_shaped(r, shaping),
            Source::Online => self.online.push_shaped(r, shaping),
            Source::Intervention => {
                self.online.push_shaped(r, shaping);
                self.demo.push_shaped(r, shaping);
            }
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

    /// One update regardless of the ratio (benchmarks, offline pre-training). A non-finite
    /// result rolls the agent back to its last checkpoint (counted in `rollbacks`).
    pub fn update_once(&mut self) -> UpdateStats {
        if self.last_good.is_none() {
            // The state to come back to before the first checkpoint: where training started.
            self.last_good = Some(self.snapshot());
        }
        sample_mixed(
            &self.online,
            &self.demo,
            self.cfg.demo_fraction,
            &mut self.rng,
            &mut self.batch,
        );
        let frozen = self.agent.updates < self.cfg.critic_warmup_updates;
        let s = self.agent.update(&self.batch, frozen);
        let diverged = !s.critic_loss.is_finite()
            || !s.q_mean.is_finite()
            || (s.actor_updated && !s.actor_loss.is_finite());
        if diverged
            || (self.agent.updates.is_multiple_of(self.cfg.publish_every)
                && !self.agent.is_finite())
        {
            self.roll_back();
            return s;
        }
        let u = self.agent.updates;
        self.shared.updates.store(u, Ordering::Relaxed);
        if let Ok(mut last) = self.shared.last.lock() {
            *last = s;
        }
        if u.is_multiple_of(self.cfg.publish_every) && !frozen {
            self.publish();
        }
        if self.cfg.checkpoint_every > 0 && u.is_multiple_of(self.cfg.checkpoint_every) {
            if let Err(e) = self.checkpoint() {
                tracing::error!("checkpoint failed (training continues): {e}");
            }
        }
        s
    }

    /// The agent's whole state (what a checkpoint holds).
    fn snapshot(&self) -> Checkpoint {
        let (tensors, meta) = self.agent.to_checkpoint();
        Checkpoint { tensors, meta }
    }

    /// Restores the last good checkpoint after a non-finite loss or parameter.
    fn roll_back(&mut self) {
        self.shared.rollbacks.fetch_add(1, Ordering::Relaxed);
        let Some(good) = self.last_good.clone() else {
            return;
        };
        match self.agent.restore(&good) {
            Ok(()) => tracing::error!(
                updates = self.agent.updates,
                "training diverged (a non-finite loss or weight): rolled back to the last checkpoint"
            ),
            Err(e) => tracing::error!("training diverged and the rollback failed: {e}"),
        }
        // The restored weights may differ from any published at this count.
        self.published_updates = None;
        self.shared
            .updates
            .store(self.agent.updates, Ordering::Relaxed);
    }

    /// Publishes the current actor to the runtime.
    pub fn publish(&mut self) {
        match self.slot.publish(self.agent.exploring_actor()) {
            Ok(_) => {
                self.shared.published.fetch_add(1, Ordering::Relaxed);
                self.published_updates = Some(self.agent.updates);
            }
            Err(e) => tracing::error!("actor not published: {e}"),
        }
    }

    /// Publishes the current actor unless the latest update's actor is already published:
    /// what an evaluation or a run's end calls, so the weights judged are the learner's own.
    pub fn publish_latest(&mut self) {
        if self.published_updates != Some(self.agent.updates) {
            self.publish();
        }
    }

    /// Syncs the replay log and writes a checkpoint (when persisting; in memory always, as the
    /// state to roll back to). A non-finite agent is never checkpointed: it is rolled back.
    pub fn checkpoint(&mut self) -> Result<Option<PathBuf>, StoreError> {
        if !self.agent.is_finite() {
            self.roll_back();
            return Ok(None);
        }
        let snapshot = self.snapshot();
        self.last_good = Some(snapshot.clone());
        let Some(dir) = self.checkpoint_dir.clone() else {
            return Ok(None);
        };
        let records = match &mut self.log {
            Some(log) => {
                log.sync()?;
                self.shared
                    .synced_records
                    .store(log.synced_records, Ordering::Relaxed);
                log.records
            }
            None => 0,
        };
        let Checkpoint { tensors, mut meta } = snapshot;
        meta["replay_records"] = records.into();
        meta["env_steps"] = self.shared.env_steps.load(Ordering::Relaxed).into();
        let path = save_checkpoint(&dir, self.agent.updates, &Checkpoint { tensors, meta })?;
        Ok(Some(path))
    }

    /// Syncs the replay log now (when persisting): everything taken in so far is on disk
    /// when this returns Ok. A fleet learner acknowledges actors' batches only after it.
    pub fn sync_replay(&mut self) -> Result<(), StoreError> {
        if let Some(log) = &mut self.log {
            log.sync()?;
            self.shared
                .synced_records
                .store(log.synced_records, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Syncs the replay log when its unsynced records are older than the sync interval, and
    /// refreshes the shared copy of the reward stage's counters as often.
    pub fn sync_replay_if_due(&mut self) -> Result<(), StoreError> {
        if self.stage.is_some() && self.stage_reported.elapsed() >= SYNC_INTERVAL {
            self.stage_reported = std::time::Instant::now();
            let report = self.stage_report();
            if let Ok(mut r) = self.shared.stage_report.lock() {
                *r = report;
            }
        }
        if let Some(log) = &mut self.log {
            if log.sync_if_due(SYNC_INTERVAL)? {
                self.shared
                    .synced_records
                    .store(log.synced_records, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// Takes in every transition waiting in `queue`; returns how many there were.
    /// With a reward stage, transitions go through it first and arrive once their rewards are
    /// known.
    pub fn drain(&mut self, queue: &SpscReceiver<Transition>) -> Result<usize, StoreError> {
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
            let source = if t.intervened {
                Source::Intervention
            } else {
                Source::Online
            };
            if let Some(step) = self.step_from(&t, source) {
                if let Err(e) = self.add_online(step) {
                    result = Err(e);
                    break;
                }
            }
        }
        ready.clear();
        self.ready = ready;
        if result.is_ok() {
            self.sync_replay_if_due()?;
        }
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
        queue: Arc<SpscReceiver<Transition>>,
    ) -> std::thread::JoinHandle<Result<Learner, StoreError>> {
        std::thread::Builder::new()
            .name("reflex-learner".into())
            .spawn(move || {
                let shared = self.shared.clone();
                while !shared.stop.load(Ordering::Acquire) {
                    let got = self.drain(&queue)?;
                    if shared.paused.load(Ordering::Acquire) {
                        if !shared.holding.load(Ordering::Relaxed) {
                            self.publish_latest();
                            shared.holding.store(true, Ordering::Release);
                        }
                        std::thread::sleep(Duration::from_micros(500));
                        continue;
                    }
                    shared.holding.store(false, Ordering::Release);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sac::AgentConfig;
    use reflex_core::{Action, ActionSpace, Outcome};
    use reflex_policy::Activation;

    const FLAT: usize = 6;
    const ACT: usize = 7;

    fn learner() -> (Learner, Arc<WeightsSlot>) {
        let cfg = AgentConfig {
            hidden: vec![16, 16],
            ..Default::default()
        };
        let agent = Agent::new(cfg, FLAT + ACT, ACT, 1).with_residual(0.3);
        let lcfg = LearnerConfig {
            batch_size: 16,
            critic_warmup_updates: 0,
            learning_starts: 1,
            publish_every: 1,
            replay_capacity: 1000,
            ..Default::default()
        };
        let base = Mlp::zeros(&[FLAT, 4, ACT], Activation::Relu, Activation::Tanh);
        let slot = WeightsSlot::new(agent.exploring_actor());
        (Learner::new(agent, lcfg, 0.3, base, slot.clone(), 1), slot)
    }

    fn record(i: usize, reward: f32) -> Record {
        Record {
            source: Source::Online,
            obs: (0..FLAT + ACT)
                .map(|k| ((i + k) as f32 * 0.37).sin())
                .collect(),
            act: (0..ACT)
                .map(|k| ((i * 3 + k) as f32 * 0.21).cos())
                .collect(),
            reward,
            discount: 0.97,
            horizon: 0.97,
            next_obs: (0..FLAT + ACT)
                .map(|k| ((i + k) as f32 * 0.41).cos())
                .collect(),
        }
    }

    #[test]
    fn a_non_finite_update_rolls_back_to_the_last_checkpoint_and_publishes_nothing() {
        let (mut l, slot) = learner();
        for i in 0..64 {
            l.online.push(&record(i, 0.5));
        }
        for _ in 0..5 {
            l.update_once();
        }
        l.checkpoint().unwrap(); // not persisting: the state to roll back to, in memory
        let good = l.agent.actor.params.clone();
        let good_updates = l.agent.updates;
        let version = slot.version();
        // Diverged data: every record's reward is NaN.
        l.online = Ring::new(100, FLAT + ACT, ACT);
        for i in 0..64 {
            l.online.push(&record(i, f32::NAN));
        }
        l.update_once();
        assert_eq!(l.shared.rollbacks.load(Ordering::Relaxed), 1);
        assert_eq!(
            l.agent.actor.params, good,
            "the weights are the checkpoint's"
        );
        assert_eq!(l.agent.updates, good_updates);
        assert!(l.agent.is_finite());
        assert_eq!(slot.version(), version, "nothing was published");
    }

    /// Waits (bounded) until `cond` holds.
    fn wait_until(what: &str, cond: impl Fn() -> bool) {
        let start = std::time::Instant::now();
        while !cond() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "timed out: {what}"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// An evaluation judges the learner's own weights: once paused, the thread publishes the
    /// actor of its latest update (the old thread left the runtime on weights up to
    /// `publish_every` updates older, so a run could stop on a score its final policy never
    /// earned) and says it is holding; it runs no update until resumed.
    #[test]
    fn a_paused_learner_publishes_its_latest_actor_and_holds() {
        let (mut l, slot) = learner();
        l.cfg.publish_every = 1000;
        for i in 0..64 {
            l.online.push(&record(i, 0.5));
        }
        l.shared.env_steps.store(7, Ordering::Relaxed);
        let shared = l.shared.clone();
        let version = slot.version();
        let (_tx, rx) = reflex_core::spsc::<Transition>(8);
        let thread = l.spawn(rx);
        wait_until("7 updates", || shared.updates.load(Ordering::Relaxed) == 7);
        assert_eq!(slot.version(), version, "no publication due yet");
        shared.paused.store(true, Ordering::Release);
        wait_until("holding", || shared.holding.load(Ordering::Acquire));
        assert_eq!(
            slot.version(),
            version + 1,
            "the latest actor was published"
        );
        // More data while paused: taken in, but no update runs.
        shared.env_steps.store(50, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(shared.updates.load(Ordering::Relaxed), 7);
        shared.paused.store(false, Ordering::Release);
        wait_until("resumed", || !shared.holding.load(Ordering::Acquire));
        wait_until("50 updates", || {
            shared.updates.load(Ordering::Relaxed) == 50
        });
        shared.paused.store(true, Ordering::Release);
        wait_until("holding again", || shared.holding.load(Ordering::Acquire));
        shared.stop.store(true, Ordering::Release);
        let l = thread.join().unwrap().unwrap();
        assert_eq!(l.agent.updates, 50);
        assert_eq!(
            slot.snapshot().layer_params(),
            l.agent.exploring_actor().layer_params(),
            "the runtime holds the weights of the learner's last update"
        );
    }

    fn transition(episode: u64, step: u64, action: f32, base: f32) -> Transition {
        let mut t = Transition::empty(ActionSpace::EeDelta);
        t.episode = episode;
        t.step = step;
        let mut a = Action::zeros(ActionSpace::EeDelta);
        a.as_mut_slice().fill(action);
        t.action = a;
        a.as_mut_slice().fill(base);
        t.base_action = a;
        let obs = [0.1f32; FLAT];
        t.obs.extend_from(&obs);
        t.next_obs.extend_from(&obs);
        t.outcome = Outcome {
            reward: 1.0,
            ..Outcome::PENDING
        };
        t
    }

    /// The critic learns the action that was executed: an operator's action far from the base
    /// is stored exactly. The old learner stored `clip((a - b) / scale)`, an action nobody took.
    #[test]
    fn executed_actions_are_stored_exactly_and_the_old_clip_is_counted() {
        let (mut l, _) = learner();
        let far = transition(1, 0, 0.9, 0.0); // 0.9 from the base, residual scale 0.3
        let step = l.step_from(&far, Source::Intervention).unwrap();
        assert_eq!(step.act, vec![0.9; ACT]);
        assert_eq!(
            &step.obs[FLAT..],
            &[0.0; ACT],
            "the base action rides in the observation"
        );
        assert_eq!(l.shared.clip_would_bind.load(Ordering::Relaxed), 1);
        let near = transition(1, 1, 0.2, 0.0);
        l.step_from(&near, Source::Online).unwrap();
        assert_eq!(l.shared.clip_would_bind.load(Ordering::Relaxed), 1);
    }

    /// A resume closes the windows that were open when the run stopped: a step recorded after
    /// the restart never joins a record begun before it.
    #[test]
    fn a_resume_closes_the_windows_open_at_the_restart() {
        let (mut l, _) = learner();
        for s in 0..2 {
            let step = l
                .step_from(&transition(9, s, 0.1, 0.0), Source::Online)
                .unwrap();
            l.restore_step(step);
        }
        assert_eq!(l.online.len(), 0);
        l.flush_windows();
        assert_eq!(
            l.online.len(),
            2,
            "the restored steps became truncated records"
        );
        let step = l
            .step_from(&transition(9, 2, 0.1, 0.0), Source::Online)
            .unwrap();
        l.add_online(step).unwrap();
        assert_eq!(l.online.len(), 2, "the next step opens a window of its own");
        assert_eq!(l.shared.env_steps.load(Ordering::Relaxed), 3);
        assert_eq!(l.max_online_episode(), Some(9));
    }

    /// Interrupted steps (e-stop, lost operator) are not stored and end their episode's window.
    #[test]
    fn interrupted_steps_are_not_stored_and_close_their_window() {
        let (mut l, _) = learner();
        for s in 0..2 {
            let step = l
                .step_from(&transition(4, s, 0.1, 0.0), Source::Online)
                .unwrap();
            l.add_online(step).unwrap();
        }
        assert_eq!(l.online.len(), 0, "a 3-step window is still open");
        let mut cut = transition(4, 2, 0.1, 0.0);
        cut.interrupted = reflex_core::Interruption::EStop;
        assert!(l.step_from(&cut, Source::Online).is_none());
        assert_eq!(
            l.online.len(),
            2,
            "the open window was closed as truncations"
        );
        assert_eq!(l.shared.interrupted.load(Ordering::Relaxed), 1);
        assert_eq!(l.shared.env_steps.load(Ordering::Relaxed), 2);
    }
}
