//! The success classifier as the reward of `reflex train --reward classifier`, as a
//! [`RewardPlugin`] for the training job (HIL-SERL's sparse reward).
//!
//! - The hook (driver thread, after every policy step) renders the configured camera at the
//!   classifier's size through the robot's `SceneView` and sends the frame, tagged with the step's episode and step ids, over a
//!   bounded channel. It never waits: a full channel loses the frame (counted), and the step
//!   whose frame was lost expires on the learner side.
//! - The stage (learner thread) holds transitions in arrival order until their own frame
//!   (same episode, same step) is there, runs the CNN on the frames in batches, and passes each
//!   transition on with the success reward when the probability reaches the threshold, else 0.
//!   The classifier's verdict is the transition's `success` (so success-absorbing learning
//!   follows the reward source); termination stays the robot's own.
//! - Demonstrations (recorded before training, with no frames) carry the task's success only.

use crate::{image_tensor_layout, Classifier};
use reflex_core::{Frame, Observation, Outcome, RewardTerms, SceneView, Transition};
use reflex_learn::stage::{success_only, EpisodeHook, RewardPlugin, RewardStage};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Settings of the classifier reward in training.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClassifierStageConfig {
    /// The camera the classifier looks through (a name the robot's `SceneView` knows).
    pub camera: String,
    /// Reward of a step the classifier judges a success.
    pub success_reward: f64,
    /// Probability at or above which a frame counts as success (None: the classifier's own).
    pub threshold: Option<f32>,
    /// A transition whose frame has not come this long after it arrived is dropped, seconds.
    pub max_wait_s: f64,
    /// Frames in flight between the simulator and the learner, at most.
    pub channel: usize,
}

impl Default for ClassifierStageConfig {
    fn default() -> Self {
        Self {
            camera: "front".into(),
            success_reward: 10.0,
            threshold: None,
            max_wait_s: 10.0,
            channel: 4096,
        }
    }
}

/// What the stage counts (`summary.json`'s `reward_stage`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ClassifierStageCounters {
    /// Frames the hook rendered and sent.
    pub frames_sent: u64,
    /// Frames lost because the channel was full.
    pub frames_lost: u64,
    /// Transitions passed on with the classifier's reward.
    pub rewarded: u64,
    /// Of those, judged a success.
    pub judged_success: u64,
    /// Of those, judged a success where the simulator's predicate disagrees (false positives).
    pub false_positives: u64,
    /// Of those, the simulator's predicate holds but the classifier said no (false negatives).
    pub false_negatives: u64,
    /// Transitions dropped: their frame never came within `max_wait_s`.
    pub expired: u64,
    /// Frames whose transition never came (dropped when stale).
    pub orphan_frames: u64,
    /// Largest number of transitions held at once.
    pub max_held: u64,
    /// Mean CNN time per frame, microseconds.
    pub cnn_us_per_frame: f64,
}

/// Builds the plugin for `classifier` (its size and threshold decide the camera and the
/// verdict).
pub fn classifier_plugin(
    classifier: Classifier,
    cfg: ClassifierStageConfig,
) -> Result<RewardPlugin, String> {
    if cfg.max_wait_s.is_nan() || cfg.max_wait_s <= 0.0 || cfg.channel == 0 {
        return Err("classifier reward: max_wait_s and channel must be positive".into());
    }
    let threshold = cfg.threshold.unwrap_or(classifier.meta.threshold);
    if !(0.0..=1.0).contains(&threshold) {
        return Err(format!(
            "classifier reward: threshold must be within [0, 1], got {threshold}"
        ));
    }
    let size = classifier.meta.size;
    let (tx, rx) = crossbeam::channel::bounded(cfg.channel);
    let sent = Arc::new(AtomicU64::new(0));
    let lost = Arc::new(AtomicU64::new(0));
    let hook = FrameHook {
        camera: cfg.camera.clone(),
        frame: Frame::new(size, size),
        frames: tx,
        sent: sent.clone(),
        lost: lost.clone(),
    };
    let stage = ClassifierStage {
        classifier,
        threshold,
        cfg,
        frames_rx: rx,
        sent,
        lost,
        frames: HashMap::new(),
        held: VecDeque::new(),
        counters: ClassifierStageCounters::default(),
        cnn_frames: 0,
        cnn_time: Duration::ZERO,
        images: Vec::new(),
        batch: Vec::new(),
    };
    Ok(RewardPlugin {
        name: "classifier".into(),
        hook: Box::new(hook),
        stage: Box::new(stage),
    })
}

/// A rendered frame in the classifier's layout, for one step.
struct StepFrame {
    episode: u64,
    step: u64,
    image: Vec<f32>,
}

struct FrameHook {
    camera: String,
    frame: Frame,
    frames: crossbeam::channel::Sender<StepFrame>,
    sent: Arc<AtomicU64>,
    lost: Arc<AtomicU64>,
}

impl EpisodeHook for FrameHook {
    fn episode_started(&mut self, _episode: u64, _obs: &Observation, _scene: &dyn SceneView) {}

    fn step_judged(
        &mut self,
        episode: u64,
        step: u64,
        _outcome: &Outcome,
        _obs: &Observation,
        scene: &dyn SceneView,
    ) {
        if let Err(e) = scene.render(&self.camera, &mut self.frame) {
            // The step's transition expires on the learner side, like a lost frame.
            tracing::warn!(episode, step, "classifier reward: no frame: {e}");
            self.lost.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let mut image = Vec::with_capacity(3 * self.frame.width * self.frame.height);
        image_tensor_layout(&self.frame, &mut image);
        let msg = StepFrame {
            episode,
            step,
            image,
        };
        match self.frames.try_send(msg) {
            Ok(()) => self.sent.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.lost.fetch_add(1, Ordering::Relaxed),
        };
    }
}

struct ClassifierStage {
    classifier: Classifier,
    threshold: f32,
    cfg: ClassifierStageConfig,
    frames_rx: crossbeam::channel::Receiver<StepFrame>,
    sent: Arc<AtomicU64>,
    lost: Arc<AtomicU64>,
    /// Frames waiting for their transition, by (episode, step), with their arrival time.
    frames: HashMap<(u64, u64), (Vec<f32>, Instant)>,
    /// Transitions waiting for their frame, in arrival order, with their arrival time.
    held: VecDeque<(Transition, Instant)>,
    counters: ClassifierStageCounters,
    cnn_frames: u64,
    cnn_time: Duration,
    images: Vec<f32>,
    batch: Vec<Transition>,
}

impl ClassifierStage {
    /// Judges every transition at the head of the queue whose frame is in, in order; drops the
    /// head when its frame is overdue. Stops at the first transition still waiting in time.
    fn flush(&mut self, ready: &mut dyn FnMut(Transition)) {
        let max_wait = Duration::from_secs_f64(self.cfg.max_wait_s);
        self.images.clear();
        self.batch.clear();
        while let Some((t, arrived)) = self.held.front() {
            let key = (t.episode, t.step);
            if let Some((image, _)) = self.frames.remove(&key) {
                self.images.extend_from_slice(&image);
                let (t, _) = self.held.pop_front().expect("front exists");
                self.batch.push(t);
            } else if arrived.elapsed() > max_wait {
                self.counters.expired += 1;
                self.held.pop_front();
            } else {
                break;
            }
        }
        if self.batch.is_empty() {
            return;
        }
        let started = Instant::now();
        let probs = match self.classifier.probabilities(&self.images) {
            Ok(p) => p,
            Err(e) => {
                // Never reward from a failed judgement: the batch is dropped and counted.
                tracing::error!(
                    "classifier failed, {} transitions dropped: {e}",
                    self.batch.len()
                );
                self.counters.expired += self.batch.len() as u64;
                return;
            }
        };
        self.cnn_time += started.elapsed();
        self.cnn_frames += probs.len() as u64;
        for (mut t, p) in self.batch.drain(..).zip(probs) {
            let yes = p >= self.threshold;
            let truth = t.outcome.success;
            self.counters.rewarded += 1;
            self.counters.judged_success += u64::from(yes);
            self.counters.false_positives += u64::from(yes && !truth);
            self.counters.false_negatives += u64::from(!yes && truth);
            let mut terms = RewardTerms::new(2);
            terms.set(0, f64::from(p));
            terms.set(1, if yes { 1.0 } else { 0.0 });
            t.outcome.reward = if yes { self.cfg.success_reward } else { 0.0 };
            t.outcome.terms = terms;
            t.outcome.success = yes;
            ready(t);
        }
    }
}

impl RewardStage for ClassifierStage {
    fn take(&mut self, t: Transition, ready: &mut dyn FnMut(Transition)) {
        self.held.push_back((t, Instant::now()));
        self.counters.max_held = self.counters.max_held.max(self.held.len() as u64);
        // Judged in batches by `poll`, once the frames are taken in.
        let _ = ready;
    }

    fn poll(&mut self, ready: &mut dyn FnMut(Transition)) {
        let now = Instant::now();
        while let Ok(f) = self.frames_rx.try_recv() {
            self.frames.insert((f.episode, f.step), (f.image, now));
        }
        self.flush(ready);
        // A frame whose transition never came (the runtime's queue overflowed) goes stale.
        let max_wait = Duration::from_secs_f64(self.cfg.max_wait_s);
        let before = self.frames.len();
        self.frames.retain(|_, (_, at)| at.elapsed() <= max_wait);
        self.counters.orphan_frames += (before - self.frames.len()) as u64;
    }

    fn report(&self) -> serde_json::Value {
        let mut c = self.counters;
        c.frames_sent = self.sent.load(Ordering::Relaxed);
        c.frames_lost = self.lost.load(Ordering::Relaxed);
        if self.cnn_frames > 0 {
            c.cnn_us_per_frame = self.cnn_time.as_secs_f64() * 1e6 / self.cnn_frames as f64;
        }
        serde_json::json!({
            "classifier": c,
            "held_now": self.held.len(),
            "size": self.classifier.meta.size,
            "threshold": self.threshold,
        })
    }

    fn demo_reward(&self, t: &Transition) -> f64 {
        success_only(t, self.cfg.success_reward)
    }
}
