//! A preference reward model learned while training, `reflex train --reward vlm-preference`
//! (RL-VLM-F's loop), as a [`RewardPlugin`] for the training job.
//!
//! - The hook (simulator thread, after policy steps) renders the front camera every
//!   `frame_every` steps and keeps the frame (PNG), its state features (the flat observation)
//!   and, for the oracle server only, the task's own reward at that step, in a pool of the most
//!   recent `pool` frames. Every `round_every` steps it draws `pairs_per_round` random pairs of
//!   pooled frames, until `max_labels` in all, and hands them to the VLM client as its bounded
//!   queue takes them (a few each step, never waiting).
//! - The stage (learner thread) passes every transition on at once with the sparse part of its
//!   reward (the task's success; nothing else is known on the tick). It joins each answer to
//!   its own pair by request id; when a round is answered (or `round_timeout_s` passed) it
//!   trains the Bradley-Terry ensemble on every label so far and hands the learner a new
//!   potential: the ensemble minimum, standardised on the labelled frames, clipped, times
//!   `weight`. The learner then reshapes the whole replay with it (potential-based shaping,
//!   see `reflex_learn::stage`).
//! - Unsure answers, failed answers and answers past the round's time limit are counted and
//!   never become labels.

use crate::parse::ParseError;
use crate::preference::{spearman, LabelledPair, PreferenceConfig, PreferenceModel};
use crate::vlm::{Answer, Png, Query, Request, VlmClient, VlmError};
use reflex_core::{Frame, Observation, Rng, SceneView};
use reflex_core::{Outcome, Transition};
use reflex_learn::stage::{success_only, EpisodeHook, RewardPlugin, RewardStage};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Settings of the preference reward in training.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PreferenceStageConfig {
    /// The camera frames are kept from (a name the robot's `SceneView` knows).
    pub camera: String,
    /// Camera image width, pixels.
    pub width: usize,
    /// Camera image height, pixels.
    pub height: usize,
    /// Keep a frame every this many policy steps (and at every success).
    pub frame_every: u64,
    /// Frames pooled for pairing (the most recent).
    pub pool: usize,
    /// Ask a round of labels every this many policy steps.
    pub round_every: u64,
    /// Pairs asked per round.
    pub pairs_per_round: usize,
    /// Questions asked in all, at most (the label budget).
    pub max_labels: usize,
    /// A round's answers are awaited this long, seconds; the rest are counted as timed out.
    pub round_timeout_s: f64,
    /// Scale of the potential (the model's output is in standard deviations, clipped).
    pub weight: f32,
    /// Reward of the task's success (the sparse part, never relabelled).
    pub success_reward: f64,
    /// Seed of the pairing and the networks (none: the training run's seed; 0 alone).
    pub seed: Option<u64>,
    /// The reward model.
    pub model: PreferenceConfig,
}

impl Default for PreferenceStageConfig {
    fn default() -> Self {
        Self {
            camera: "front".into(),
            width: 160,
            height: 120,
            frame_every: 5,
            pool: 600,
            round_every: 2500,
            pairs_per_round: 250,
            max_labels: 2000,
            round_timeout_s: 120.0,
            weight: 2.0,
            success_reward: 10.0,
            seed: None,
            model: PreferenceConfig::default(),
        }
    }
}

/// One finished round of the reward model.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainingRound {
    /// Labels used (all rounds so far).
    pub labels: usize,
    /// Mean Bradley-Terry loss of the round's last steps.
    pub loss: f32,
    /// Spearman correlation of the model with the task's own reward on the labelled frames
    /// (a diagnostic from simulator ground truth; a real VLM run has none).
    pub spearman_labelled: f64,
    /// Seconds the model trained.
    pub train_s: f64,
}

/// What the stage counts (`summary.json`'s `reward_stage`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreferenceStageCounters {
    /// Frames rendered into the pool.
    pub frames: u64,
    /// Questions asked.
    pub asked: u64,
    /// Questions the client's full queue refused.
    pub not_asked: u64,
    /// Usable labels.
    pub labels: u64,
    /// Answers that were "unsure" (dropped).
    pub unsure: u64,
    /// Answers that failed (HTTP, parse, budget) or were of the wrong kind (dropped).
    pub failed: u64,
    /// Questions unanswered at their round's time limit.
    pub timed_out: u64,
    /// Answers for no pair in an open round (late or unknown; ignored).
    pub late_replies: u64,
    /// Transitions passed on.
    pub passed: u64,
}

/// Builds the plugin for a task whose instruction is `instruction`: `client` asks the
/// questions.
pub fn preference_plugin(
    instruction: &str,
    client: Arc<VlmClient>,
    cfg: PreferenceStageConfig,
) -> Result<RewardPlugin, String> {
    if cfg.width < 16 || cfg.height < 16 {
        return Err("vlm-preference: image at least 16x16".into());
    }
    if cfg.frame_every == 0 || cfg.round_every == 0 || cfg.pairs_per_round == 0 || cfg.pool < 2 {
        return Err(
            "vlm-preference: frame_every, round_every and pairs_per_round positive, pool >= 2"
                .into(),
        );
    }
    if cfg.round_timeout_s.is_nan() || cfg.round_timeout_s <= 0.0 || !cfg.weight.is_finite() {
        return Err("vlm-preference: round_timeout_s positive and weight finite".into());
    }
    let (tx, rx) = crossbeam::channel::bounded(1024);
    let hook = PairHook {
        camera: cfg.camera.clone(),
        frame: Frame::new(cfg.width, cfg.height),
        instruction: instruction.to_owned(),
        client: client.clone(),
        rounds: tx,
        rng: Rng::new(cfg.seed.unwrap_or(0) ^ 0x9A1B),
        pool: VecDeque::new(),
        steps: 0,
        next_round_at: cfg.round_every,
        next_id: 0,
        round: 0,
        backlog: VecDeque::new(),
        refused_since: None,
        frames: 0,
        not_asked: 0,
        cfg: cfg.clone(),
    };
    let stage = PreferenceStage {
        model: None,
        client,
        rounds_rx: rx,
        open: Vec::new(),
        early: HashMap::new(),
        labels: Vec::new(),
        seen: Vec::new(),
        seen_progress: Vec::new(),
        dim: 0,
        due: false,
        report: Vec::new(),
        counters: PreferenceStageCounters::default(),
        hook_frames: 0,
        hook_not_asked: 0,
        cfg,
    };
    Ok(RewardPlugin {
        name: "vlm-preference".into(),
        hook: Box::new(hook),
        stage: Box::new(stage),
    })
}

/// A pooled frame.
#[derive(Clone)]
struct Pooled {
    image: Arc<Png>,
    features: Vec<f32>,
    progress: f64,
}

/// One asked pair as the stage needs it.
struct AskedPair {
    id: u64,
    a: Vec<f32>,
    b: Vec<f32>,
    progress: [f64; 2],
}

/// The hook's news: pairs of round `round` asked since the last message (`last` when the
/// round has been asked in full), and its running counts.
struct RoundMsg {
    round: u64,
    pairs: Vec<AskedPair>,
    last: bool,
    frames: u64,
    not_asked: u64,
}

struct PairHook {
    cfg: PreferenceStageConfig,
    camera: String,
    frame: Frame,
    instruction: String,
    client: Arc<VlmClient>,
    rounds: crossbeam::channel::Sender<RoundMsg>,
    rng: Rng,
    pool: VecDeque<Pooled>,
    steps: u64,
    next_round_at: u64,
    next_id: u64,
    round: u64,
    /// Pairs of the current round not yet accepted by the client's queue, and since when the
    /// queue has refused them.
    backlog: VecDeque<(Pooled, Pooled)>,
    refused_since: Option<Instant>,
    frames: u64,
    not_asked: u64,
}

impl PairHook {
    /// Keeps the camera's frame now with `obs` (the runtime's flat layout) as its features.
    fn keep_frame(&mut self, outcome: &Outcome, obs: &Observation, scene: &dyn SceneView) {
        if let Err(e) = scene.render(&self.camera, &mut self.frame) {
            tracing::warn!("vlm-preference: no frame: {e}");
            return;
        }
        let Ok(png) = Png::encode_rgb(self.frame.width, self.frame.height, &self.frame.rgb) else {
            return;
        };
        let features = obs.flat.as_slice().to_vec();
        if self.pool.len() == self.cfg.pool {
            self.pool.pop_front();
        }
        self.pool.push_back(Pooled {
            image: Arc::new(png),
            features,
            progress: outcome.reward,
        });
        self.frames += 1;
    }

    /// Draws the next round's pairs into the backlog (within the label budget).
    fn plan_round(&mut self) {
        let planned = self.next_id as usize + self.not_asked as usize;
        let n = self
            .cfg
            .pairs_per_round
            .min(self.cfg.max_labels.saturating_sub(planned));
        if n == 0 || self.pool.len() < 2 || !self.backlog.is_empty() {
            return;
        }
        let len = self.pool.len() as u64;
        while self.backlog.len() < n {
            let i = (self.rng.next_u64() % len) as usize;
            let j = (self.rng.next_u64() % len) as usize;
            if i != j {
                self.backlog
                    .push_back((self.pool[i].clone(), self.pool[j].clone()));
            }
        }
        self.round += 1;
        self.refused_since = None;
        tracing::info!(
            round = self.round,
            pairs = n,
            "asking for preference labels"
        );
    }

    /// Submits backlog pairs while the client's queue takes them, and tells the stage. A
    /// queue that refuses for longer than a round's time limit ends the round's asking.
    fn ask(&mut self) {
        if self.backlog.is_empty() {
            return;
        }
        let mut pairs = Vec::new();
        while let Some((a, b)) = self.backlog.pop_front() {
            let request = Request {
                id: self.next_id,
                query: Query::Preference {
                    first: a.image.clone(),
                    second: b.image.clone(),
                    instruction: self.instruction.clone(),
                },
                // Ground truth for the oracle server (a real VLM never sees it).
                hint: Some(serde_json::json!({ "progress": [a.progress, b.progress] })),
            };
            if self.client.submit(request).is_err() {
                self.backlog.push_front((a, b));
                break;
            }
            pairs.push(AskedPair {
                id: self.next_id,
                a: a.features,
                b: b.features,
                progress: [a.progress, b.progress],
            });
            self.next_id += 1;
        }
        if self.backlog.is_empty() {
            self.refused_since = None;
        } else {
            let since = *self.refused_since.get_or_insert_with(Instant::now);
            if since.elapsed().as_secs_f64() > self.cfg.round_timeout_s {
                self.not_asked += self.backlog.len() as u64;
                self.backlog.clear();
                self.refused_since = None;
            }
        }
        let last = self.backlog.is_empty();
        if pairs.is_empty() && !last {
            return;
        }
        let msg = RoundMsg {
            round: self.round,
            pairs,
            last,
            frames: self.frames,
            not_asked: self.not_asked,
        };
        // The stage drains this every learner pass; a full channel means it stopped.
        let _ = self.rounds.try_send(msg);
    }
}

impl EpisodeHook for PairHook {
    fn episode_started(&mut self, _episode: u64, _obs: &Observation, _scene: &dyn SceneView) {}

    fn step_judged(
        &mut self,
        _episode: u64,
        step: u64,
        outcome: &Outcome,
        obs: &Observation,
        scene: &dyn SceneView,
    ) {
        self.steps += 1;
        if step.is_multiple_of(self.cfg.frame_every) || outcome.success {
            self.keep_frame(outcome, obs, scene);
        }
        if self.steps >= self.next_round_at {
            self.next_round_at = self.steps + self.cfg.round_every;
            self.plan_round();
        }
        self.ask();
    }
}

/// A round whose answers are awaited.
struct OpenRound {
    round: u64,
    started: Instant,
    pairs: HashMap<u64, AskedPair>,
    /// Every pair of the round has been asked (or given up on).
    asked_in_full: bool,
}

struct PreferenceStage {
    cfg: PreferenceStageConfig,
    model: Option<PreferenceModel>,
    client: Arc<VlmClient>,
    rounds_rx: crossbeam::channel::Receiver<RoundMsg>,
    open: Vec<OpenRound>,
    /// Replies that came before their round's message (bounded).
    early: HashMap<u64, Result<Answer, VlmError>>,
    labels: Vec<LabelledPair>,
    /// Features of the labelled frames (standardisation) and their true progress (diagnostic).
    seen: Vec<f32>,
    seen_progress: Vec<f64>,
    dim: usize,
    due: bool,
    report: Vec<TrainingRound>,
    counters: PreferenceStageCounters,
    hook_frames: u64,
    hook_not_asked: u64,
}

impl PreferenceStage {
    fn answer(&mut self, pair: AskedPair, result: Result<Answer, VlmError>) {
        match result {
            Ok(Answer::Preference(label)) => {
                self.dim = pair.a.len();
                self.seen.extend_from_slice(&pair.a);
                self.seen.extend_from_slice(&pair.b);
                self.seen_progress.extend_from_slice(&pair.progress);
                self.labels.push(LabelledPair {
                    a: pair.a,
                    b: pair.b,
                    label,
                });
                self.counters.labels += 1;
            }
            Err(VlmError::Parse(ParseError::Unsure)) => self.counters.unsure += 1,
            Ok(_) | Err(_) => self.counters.failed += 1,
        }
    }

    fn learn(&mut self) {
        if self.labels.is_empty() || self.dim == 0 {
            return;
        }
        let started = Instant::now();
        let model = self.model.get_or_insert_with(|| {
            let mut m =
                PreferenceModel::new(self.cfg.model.clone(), self.dim, self.cfg.seed.unwrap_or(0));
            m.fit_inputs(&self.seen);
            m
        });
        let loss = model.train(&self.labels);
        model.calibrate(&self.seen);
        let r: Vec<f64> = model
            .reward(&self.seen)
            .into_iter()
            .map(f64::from)
            .collect();
        let round = TrainingRound {
            labels: self.labels.len(),
            loss,
            spearman_labelled: spearman(&r, &self.seen_progress),
            train_s: started.elapsed().as_secs_f64(),
        };
        tracing::info!(
            labels = round.labels,
            loss = round.loss,
            spearman = round.spearman_labelled,
            "preference model trained; the replay is reshaped"
        );
        self.report.push(round);
        self.due = true;
    }
}

impl RewardStage for PreferenceStage {
    fn take(&mut self, mut t: Transition, ready: &mut dyn FnMut(Transition)) {
        // The sparse part only: the learned potential is added in the replay.
        t.outcome.reward = self.demo_reward(&t);
        self.counters.passed += 1;
        ready(t);
    }

    fn poll(&mut self, _ready: &mut dyn FnMut(Transition)) {
        while let Ok(msg) = self.rounds_rx.try_recv() {
            self.hook_frames = msg.frames;
            self.hook_not_asked = msg.not_asked;
            self.counters.asked += msg.pairs.len() as u64;
            if !self.open.iter().any(|r| r.round == msg.round) {
                self.open.push(OpenRound {
                    round: msg.round,
                    started: Instant::now(),
                    pairs: HashMap::new(),
                    asked_in_full: false,
                });
            }
            let at = self
                .open
                .iter()
                .position(|r| r.round == msg.round)
                .expect("pushed above");
            self.open[at].asked_in_full |= msg.last;
            for p in msg.pairs {
                match self.early.remove(&p.id) {
                    Some(result) => self.answer(p, result),
                    None => {
                        self.open[at].pairs.insert(p.id, p);
                    }
                }
            }
        }
        while let Some(reply) = self.client.try_recv() {
            let found = self.open.iter_mut().find_map(|r| r.pairs.remove(&reply.id));
            match found {
                Some(pair) => self.answer(pair, reply.result),
                None if reply.id >= self.counters.asked && self.early.len() < 100_000 => {
                    // Its round's message is still in the channel.
                    self.early.insert(reply.id, reply.result);
                }
                None => self.counters.late_replies += 1,
            }
        }
        let timeout = Duration::from_secs_f64(self.cfg.round_timeout_s);
        let mut finished = 0;
        let mut timed_out = 0;
        self.open.retain(|r| {
            // The limit runs from the round's first question. Asking in full may take longer
            // when the queue is slow (the hook gives up after the same limit), so a round not
            // yet asked in full gets twice the limit.
            let limit = if r.asked_in_full {
                timeout
            } else {
                2 * timeout
            };
            let over = r.started.elapsed() > limit;
            if (r.asked_in_full && r.pairs.is_empty()) || over {
                finished += 1;
                timed_out += r.pairs.len() as u64;
                false
            } else {
                true
            }
        });
        self.counters.timed_out += timed_out;
        if finished > 0 {
            self.learn();
        }
    }

    fn report(&self) -> serde_json::Value {
        let mut c = self.counters;
        c.frames = self.hook_frames;
        c.not_asked = self.hook_not_asked;
        serde_json::json!({
            "preference": c,
            "rounds": self.report,
            "open_rounds": self.open.len(),
            "vlm": self.client.stats(),
        })
    }

    fn demo_reward(&self, t: &Transition) -> f64 {
        success_only(t, self.cfg.success_reward)
    }

    fn relabel_due(&mut self) -> bool {
        std::mem::take(&mut self.due)
    }

    fn potential(&mut self, rows: &[f32], out: &mut [f32]) {
        match &mut self.model {
            Some(m) if m.dim() > 0 && rows.len() == out.len() * m.dim() => {
                for (o, r) in out.iter_mut().zip(m.reward(rows)) {
                    *o = self.cfg.weight * r;
                }
            }
            _ => out.fill(0.0),
        }
    }
}
