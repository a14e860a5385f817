//! The success classifier as the reward of `reflex train --reward classifier`, as a
//! [`RewardPlugin`] for the training job (HIL-SERL's sparse reward).
//!
//! - The hook (driver thread, after every policy step) renders the configured camera at the
//!   classifier's size through the robot's `SceneView` and sends the frame, tagged with the
//!   step's episode and step ids, over a bounded channel. It never waits: a full channel loses
//!   the frame (counted), and the step whose frame was lost expires on the learner side.
//! - The stage (learner thread) holds transitions in arrival order until their own judgement
//!   (same episode, same step) is there and passes each on with the success reward when the
//!   probability reaches the threshold, else 0. The classifier's verdict is the transition's
//!   `success` (so success-absorbing learning follows the reward source).
//! - By default the CNN runs in the stage, on frames in batches, and the robot's own judge
//!   ends episodes. With `terminate` (HIL-SERL's use of it) the CNN runs on a worker thread
//!   beside the driver instead: its verdict ends the training episode (the robot's own success
//!   no longer does; a simulated driver waits for each verdict, a real-time one takes it when
//!   it comes), and the stage gets the probabilities. `end_after` asks for that many
//!   consecutive judged steps called a success before the episode ends ([`Streak`]; 1, the
//!   default, ends it on the first). A success is confirmed by the frame
//!   after the step that ends the episode (the driver ends it one step after the verdict);
//!   when that frame says no, the success was false and is relabelled: every step the
//!   classifier called a success since then earns 0 and the last one ends the episode cut
//!   short (truncated) rather than finished.
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
    /// HIL-SERL's use: the classifier's success ends the training episode (see the module's
    /// docs); off, it rewards only and the robot's judge ends episodes.
    pub terminate: bool,
    /// With `terminate`, the longest a simulated driver waits for a verdict, seconds.
    pub verdict_wait_s: f64,
    /// With `terminate`: consecutive judged steps the classifier must call a success before
    /// the episode ends (1: the first success ends it). A lost frame breaks the run.
    pub end_after: usize,
}

impl Default for ClassifierStageConfig {
    fn default() -> Self {
        Self {
            camera: "front".into(),
            success_reward: 10.0,
            threshold: None,
            max_wait_s: 10.0,
            channel: 4096,
            terminate: false,
            verdict_wait_s: 5.0,
            end_after: 1,
        }
    }
}

impl ClassifierStageConfig {
    /// Refuses settings the stage cannot run with, naming them.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_wait_s.is_nan()
            || self.max_wait_s <= 0.0
            || self.channel == 0
            || self.verdict_wait_s.is_nan()
            || self.verdict_wait_s <= 0.0
            || self.end_after == 0
        {
            return Err(
                "classifier reward: max_wait_s, verdict_wait_s, channel and end_after must be positive"
                    .into(),
            );
        }
        Ok(())
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
    /// With `terminate`: episodes the classifier ended.
    pub episodes_ended: u64,
    /// Of those, confirmed by the frame after the last step.
    pub ends_confirmed: u64,
    /// Of those, not confirmed: a false success found later, relabelled (its steps earn 0,
    /// the episode counts as cut short).
    pub ends_relabelled: u64,
    /// Steps relabelled from success to failure.
    pub steps_relabelled: u64,
    /// Ended episodes in which the simulator's predicate never held (false ends, against the
    /// simulator; a real arm has no such count).
    pub false_ends: u64,
    /// Of the false ends, those the relabelling caught.
    pub false_ends_relabelled: u64,
    /// Verdicts a simulated driver waited for in vain (`verdict_wait_s`).
    pub verdicts_late: u64,
}

/// The rule that ends a training episode on the classifier's word: `window` consecutive
/// judged steps at or above the threshold. A step without a verdict (a lost frame) breaks
/// the run, as a "no" does. The hook applies it to the worker's verdicts, and
/// [`episode_ends`] to recorded episodes.
#[derive(Clone, Copy, Debug)]
pub struct Streak {
    window: usize,
    threshold: f32,
    episode: u64,
    last: Option<u64>,
    run: usize,
}

impl Streak {
    /// A rule asking for `window` (at least 1) successes in a row at `threshold`.
    pub fn new(window: usize, threshold: f32) -> Self {
        Self {
            window: window.max(1),
            threshold,
            episode: 0,
            last: None,
            run: 0,
        }
    }

    /// Takes the verdict `p` on step `step` of `episode` (steps of one episode in order);
    /// true when it completes the run. A new episode starts a new run.
    pub fn take(&mut self, episode: u64, step: u64, p: f32) -> bool {
        if episode != self.episode {
            self.episode = episode;
            self.last = None;
            self.run = 0;
        }
        let follows = self.last.is_some_and(|l| step == l + 1);
        self.run = match (p >= self.threshold, follows) {
            (true, true) => self.run + 1,
            (true, false) => 1,
            (false, _) => 0,
        };
        self.last = Some(step);
        self.run >= self.window
    }
}

/// How a classifier that ends episodes would have ended recorded ones ([`episode_ends`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EndStats {
    /// Consecutive success verdicts that end an episode.
    pub window: usize,
    /// Episodes judged.
    pub episodes: usize,
    /// Of those, episodes in which the task's success held at some step.
    pub successes: usize,
    /// Episodes the classifier ended.
    pub ended: usize,
    /// Of the ended, episodes whose success had not held by the end (false ends).
    pub false_ends: usize,
    /// Of the false ends, those the confirming frame denies (relabelled by the stage).
    pub false_ends_caught: usize,
    /// Of the true ends, those the confirming frame denies (a real success relabelled).
    pub true_ends_denied: usize,
    /// Episodes whose success held but which the classifier never ended.
    pub missed: usize,
    /// Mean steps from the first step the success held to the end, over the true ends.
    pub mean_delay_steps: f64,
}

/// Replays the `terminate` rule on recorded episodes: `probs` and `labels` (the task's
/// success) per frame, episodes of `lengths` frames one after the other. An episode ends one
/// step after the run of `window` successes is complete (as the driver ends it), and the frame
/// there confirms or denies the success; an episode whose run completes on its last recorded
/// frame is confirmed by that frame. Frames past the end are not looked at.
pub fn episode_ends(
    probs: &[f32],
    labels: &[bool],
    lengths: &[usize],
    threshold: f32,
    window: usize,
) -> EndStats {
    let mut st = EndStats {
        window: window.max(1),
        ..Default::default()
    };
    let (mut start, mut delay_sum) = (0usize, 0.0f64);
    for &n in lengths {
        let end = (start + n).min(probs.len()).min(labels.len());
        let (p, l) = (&probs[start..end], &labels[start..end]);
        start = end;
        if p.is_empty() {
            continue;
        }
        st.episodes += 1;
        let first_true = l.iter().position(|&x| x);
        st.successes += usize::from(first_true.is_some());
        let mut streak = Streak::new(window, threshold);
        let Some(run_done) = (0..p.len()).find(|&i| streak.take(0, i as u64, p[i])) else {
            st.missed += usize::from(first_true.is_some());
            continue;
        };
        let last = (run_done + 1).min(p.len() - 1);
        let confirmed = p[last] >= threshold;
        st.ended += 1;
        match first_true.filter(|&t| t <= last) {
            Some(t) => {
                delay_sum += last as f64 - t as f64;
                st.true_ends_denied += usize::from(!confirmed);
            }
            None => {
                st.false_ends += 1;
                st.false_ends_caught += usize::from(!confirmed);
            }
        }
    }
    let true_ends = st.ended - st.false_ends;
    if true_ends > 0 {
        st.mean_delay_steps = delay_sum / true_ends as f64;
    }
    st
}

/// Builds the plugin for `classifier` (its size and threshold decide the camera and the
/// verdict).
pub fn classifier_plugin(
    classifier: Classifier,
    cfg: ClassifierStageConfig,
) -> Result<RewardPlugin, String> {
    cfg.validate()?;
    let threshold = cfg.threshold.unwrap_or(classifier.meta.threshold);
    if !(0.0..=1.0).contains(&threshold) {
        return Err(format!(
            "classifier reward: threshold must be within [0, 1], got {threshold}"
        ));
    }
    let size = classifier.meta.size;
    let meta = classifier.meta.clone();
    let (tx, rx) = crossbeam::channel::bounded(cfg.channel);
    let sent = Arc::new(AtomicU64::new(0));
    let lost = Arc::new(AtomicU64::new(0));
    let cnn = Arc::new(CnnTime::default());
    let late = Arc::new(AtomicU64::new(0));
    let (classifier, frames, verdicts) = if cfg.terminate {
        // The CNN moves to a worker beside the driver: frames in, probabilities out to the
        // stage and to the hook (which ends episodes on them).
        let (to_worker, worker_rx) = crossbeam::channel::bounded::<StepFrame>(cfg.channel);
        let (verdict_tx, verdict_rx) = crossbeam::channel::bounded(cfg.channel);
        let (stage_tx, cnn) = (tx, cnn.clone());
        std::thread::Builder::new()
            .name("reflex-classifier".into())
            .spawn(move || judge_frames(classifier, worker_rx, stage_tx, verdict_tx, &cnn))
            .map_err(|e| format!("classifier reward: starting its worker: {e}"))?;
        (None, to_worker, Some(verdict_rx))
    } else {
        (Some(classifier), tx, None)
    };
    let hook = FrameHook {
        camera: cfg.camera.clone(),
        frame: Frame::new(size, size),
        frames,
        sent: sent.clone(),
        lost: lost.clone(),
        verdicts,
        streak: Streak::new(cfg.end_after, threshold),
        wait: Duration::from_secs_f64(cfg.verdict_wait_s),
        ended: None,
        late: late.clone(),
    };
    let stage = ClassifierStage {
        classifier,
        meta,
        threshold,
        cfg,
        frames_rx: rx,
        sent,
        lost,
        late,
        cnn,
        frames: HashMap::new(),
        held: VecDeque::new(),
        counters: ClassifierStageCounters::default(),
        images: Vec::new(),
        batch: Vec::new(),
        pending: HashMap::new(),
    };
    Ok(RewardPlugin {
        name: "classifier".into(),
        hook: Box::new(hook),
        stage: Box::new(stage),
    })
}

/// What is known of one step's frame: the frame itself (the classifier's layout), or the
/// classifier's probability on it.
enum Judgement {
    Image(Vec<f32>),
    Probability(f32),
}

/// One step's frame or verdict.
struct StepFrame {
    episode: u64,
    step: u64,
    judgement: Judgement,
}

/// CNN time, shared by whichever thread runs it.
#[derive(Default)]
struct CnnTime {
    frames: AtomicU64,
    nanos: AtomicU64,
}

/// The worker of `terminate`: judges frames as they come (all that are queued at once), sends
/// each probability to the stage and to the hook. Ends when the hook is dropped.
fn judge_frames(
    classifier: Classifier,
    frames: crossbeam::channel::Receiver<StepFrame>,
    stage: crossbeam::channel::Sender<StepFrame>,
    verdicts: crossbeam::channel::Sender<(u64, u64, f32)>,
    cnn: &CnnTime,
) {
    let mut batch = Vec::new();
    let mut images = Vec::new();
    while let Ok(first) = frames.recv() {
        batch.clear();
        images.clear();
        for f in std::iter::once(first).chain(frames.try_iter()) {
            if let Judgement::Image(image) = &f.judgement {
                images.extend_from_slice(image);
                batch.push((f.episode, f.step));
            }
        }
        let started = Instant::now();
        let probs = match classifier.probabilities(&images) {
            Ok(p) => p,
            Err(e) => {
                // No verdict: the steps expire on the learner side, no episode ends on them.
                tracing::error!("classifier failed on {} frames: {e}", batch.len());
                continue;
            }
        };
        cnn.nanos
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        cnn.frames.fetch_add(probs.len() as u64, Ordering::Relaxed);
        for (&(episode, step), p) in batch.iter().zip(probs) {
            let _ = verdicts.try_send((episode, step, p));
            let _ = stage.try_send(StepFrame {
                episode,
                step,
                judgement: Judgement::Probability(p),
            });
        }
    }
}

struct FrameHook {
    camera: String,
    frame: Frame,
    /// To the stage (or, with `terminate`, to the worker).
    frames: crossbeam::channel::Sender<StepFrame>,
    sent: Arc<AtomicU64>,
    lost: Arc<AtomicU64>,
    /// With `terminate`: the worker's verdicts.
    verdicts: Option<crossbeam::channel::Receiver<(u64, u64, f32)>>,
    /// The run of success verdicts that ends an episode.
    streak: Streak,
    wait: Duration,
    /// The last episode this hook ended.
    ended: Option<u64>,
    late: Arc<AtomicU64>,
}

impl EpisodeHook for FrameHook {
    fn episode_started(&mut self, _episode: u64, _obs: &Observation, _scene: &dyn SceneView) {}

    fn detects_success(&self) -> bool {
        self.verdicts.is_some()
    }

    fn ends_episode(&mut self, episode: u64, step: u64, wait: bool) -> bool {
        let Some(verdicts) = &self.verdicts else {
            return false;
        };
        let streak = &mut self.streak;
        // (the run of successes is complete, the verdict on `step` or later seen)
        let mut take = |(yes, seen): (bool, bool), (e, s, p): (u64, u64, f32)| {
            if e == episode {
                (streak.take(e, s, p) || yes, seen || s >= step)
            } else {
                (yes, seen)
            }
        };
        let (mut yes, mut seen) = verdicts.try_iter().fold((false, false), &mut take);
        if wait && !seen {
            let deadline = Instant::now() + self.wait;
            while !seen {
                match verdicts.recv_deadline(deadline) {
                    Ok(v) => (yes, seen) = take((yes, seen), v),
                    Err(_) => {
                        self.late.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                }
            }
        }
        if yes && self.ended != Some(episode) {
            self.ended = Some(episode);
            return true;
        }
        false
    }

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
            judgement: Judgement::Image(image),
        };
        match self.frames.try_send(msg) {
            Ok(()) => self.sent.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.lost.fetch_add(1, Ordering::Relaxed),
        };
    }
}

struct ClassifierStage {
    /// The CNN, unless a worker runs it (`terminate`).
    classifier: Option<Classifier>,
    meta: crate::ClassifierMeta,
    threshold: f32,
    cfg: ClassifierStageConfig,
    frames_rx: crossbeam::channel::Receiver<StepFrame>,
    sent: Arc<AtomicU64>,
    lost: Arc<AtomicU64>,
    late: Arc<AtomicU64>,
    cnn: Arc<CnnTime>,
    /// Frames or verdicts waiting for their transition, by (episode, step), with their
    /// arrival time.
    frames: HashMap<(u64, u64), (Judgement, Instant)>,
    /// Transitions waiting for their judgement, in arrival order, with their arrival time.
    held: VecDeque<(Transition, Instant)>,
    counters: ClassifierStageCounters,
    images: Vec<f32>,
    batch: Vec<(Transition, Option<f32>)>,
    /// With `terminate`: per episode, the judged steps since the classifier's first success,
    /// waiting for the episode's end to be confirmed or relabelled.
    pending: HashMap<u64, (Vec<(Transition, bool)>, Instant)>,
}

impl ClassifierStage {
    /// Judges every transition at the head of the queue whose frame or verdict is in, in
    /// order; drops the head when it is overdue. Stops at the first transition still waiting
    /// in time.
    fn flush(&mut self, ready: &mut dyn FnMut(Transition)) {
        let max_wait = Duration::from_secs_f64(self.cfg.max_wait_s);
        self.images.clear();
        self.batch.clear();
        while let Some((t, arrived)) = self.held.front() {
            let key = (t.episode, t.step);
            if let Some((judgement, _)) = self.frames.remove(&key) {
                let p = match judgement {
                    Judgement::Image(image) => {
                        self.images.extend_from_slice(&image);
                        None
                    }
                    Judgement::Probability(p) => Some(p),
                };
                let (t, _) = self.held.pop_front().expect("front exists");
                self.batch.push((t, p));
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
        let mut probs = Vec::new().into_iter();
        if !self.images.is_empty() {
            let started = Instant::now();
            let got = match &self.classifier {
                Some(c) => c.probabilities(&self.images).map_err(|e| e.to_string()),
                None => Err("no classifier on this side".into()),
            };
            match got {
                Ok(p) => {
                    self.cnn
                        .nanos
                        .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
                    self.cnn.frames.fetch_add(p.len() as u64, Ordering::Relaxed);
                    probs = p.into_iter();
                }
                Err(e) => {
                    // Never reward from a failed judgement: those steps are dropped and
                    // counted.
                    tracing::error!("classifier failed, transitions dropped: {e}");
                }
            }
        }
        let batch = std::mem::take(&mut self.batch);
        for (mut t, p) in batch {
            let Some(p) = p.or_else(|| probs.next()) else {
                self.counters.expired += 1;
                continue;
            };
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
            if self.cfg.terminate {
                self.confirm(t, yes, truth, ready);
            } else {
                ready(t);
            }
        }
    }

    /// `terminate`: holds an episode's steps from the classifier's first success to the
    /// episode's end, then confirms them (the last frame says success too) or relabels them.
    /// `truth` is the robot judge's success on the step (the simulator's, for the counters).
    fn confirm(
        &mut self,
        t: Transition,
        yes: bool,
        truth: bool,
        ready: &mut dyn FnMut(Transition),
    ) {
        let open = self.pending.contains_key(&t.episode);
        if !open && !yes {
            ready(t);
            return;
        }
        if !t.outcome.done() {
            self.pending
                .entry(t.episode)
                .or_insert_with(|| (Vec::new(), Instant::now()))
                .0
                .push((t, truth));
            return;
        }
        let mut steps = self
            .pending
            .remove(&t.episode)
            .map(|(s, _)| s)
            .unwrap_or_default();
        steps.push((t, truth));
        let ended = t.outcome.terminated;
        let truly = steps.iter().any(|(_, truth)| *truth);
        if ended {
            self.counters.episodes_ended += 1;
            self.counters.false_ends += u64::from(!truly);
        }
        if ended && !yes {
            // The frame after the end does not show success: the success was false.
            self.counters.ends_relabelled += 1;
            self.counters.false_ends_relabelled += u64::from(!truly);
            for (s, _) in &mut steps {
                if s.outcome.success {
                    self.counters.steps_relabelled += 1;
                }
                s.outcome.success = false;
                s.outcome.reward = 0.0;
            }
            if let Some((last, _)) = steps.last_mut() {
                last.outcome.terminated = false;
                last.outcome.truncated = true;
            }
        } else if ended {
            self.counters.ends_confirmed += 1;
        }
        for (s, _) in steps {
            ready(s);
        }
    }

    /// `terminate`: an episode whose end never came in time (its last steps were lost) is
    /// passed on as judged.
    fn expire_pending(&mut self, ready: &mut dyn FnMut(Transition)) {
        let max_wait = Duration::from_secs_f64(self.cfg.max_wait_s);
        let old: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, (_, at))| at.elapsed() > max_wait)
            .map(|(e, _)| *e)
            .collect();
        for e in old {
            if let Some((steps, _)) = self.pending.remove(&e) {
                steps.into_iter().for_each(|(s, _)| ready(s));
            }
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
            self.frames.insert((f.episode, f.step), (f.judgement, now));
        }
        self.flush(ready);
        self.expire_pending(ready);
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
        c.verdicts_late = self.late.load(Ordering::Relaxed);
        let frames = self.cnn.frames.load(Ordering::Relaxed);
        if frames > 0 {
            c.cnn_us_per_frame =
                self.cnn.nanos.load(Ordering::Relaxed) as f64 / 1e3 / frames as f64;
        }
        serde_json::json!({
            "classifier": c,
            "held_now": self.held.len(),
            "size": self.meta.size,
            "threshold": self.threshold,
            "terminate": self.cfg.terminate,
            "end_after": self.cfg.end_after,
        })
    }

    fn demo_reward(&self, t: &Transition) -> f64 {
        success_only(t, self.cfg.success_reward)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reflex_core::ActionSpace;

    /// A `terminate` stage whose verdicts come from the test (no CNN), and the sender a
    /// worker would use.
    fn stage() -> (ClassifierStage, crossbeam::channel::Sender<StepFrame>) {
        let (tx, rx) = crossbeam::channel::bounded(64);
        let cfg = ClassifierStageConfig {
            terminate: true,
            ..Default::default()
        };
        let stage = ClassifierStage {
            classifier: None,
            meta: crate::ClassifierMeta {
                size: 8,
                threshold: 0.5,
                task: "pick_cube".into(),
            },
            threshold: 0.5,
            cfg,
            frames_rx: rx,
            sent: Arc::default(),
            lost: Arc::default(),
            late: Arc::default(),
            cnn: Arc::default(),
            frames: HashMap::new(),
            held: VecDeque::new(),
            counters: ClassifierStageCounters::default(),
            images: Vec::new(),
            batch: Vec::new(),
            pending: HashMap::new(),
        };
        (stage, tx)
    }

    /// Feeds episode `episode`: step k has probability `probs[k]` and the robot judge's
    /// success `truth[k]`; the last step ends it as `end` says (terminated by the detector,
    /// or truncated). Returns what the stage passed on.
    fn episode(
        stage: &mut ClassifierStage,
        tx: &crossbeam::channel::Sender<StepFrame>,
        episode: u64,
        probs: &[f32],
        truth: &[bool],
        terminated: bool,
    ) -> Vec<Transition> {
        let mut out = Vec::new();
        for (k, (&p, &truth)) in probs.iter().zip(truth).enumerate() {
            let mut t = Transition::empty(ActionSpace::EeDelta);
            t.episode = episode;
            t.step = k as u64;
            t.outcome.success = truth;
            if k + 1 == probs.len() {
                t.outcome.terminated = terminated;
                t.outcome.truncated = !terminated;
            }
            stage.take(t, &mut |t| out.push(t));
            tx.send(StepFrame {
                episode,
                step: k as u64,
                judgement: Judgement::Probability(p),
            })
            .unwrap();
            stage.poll(&mut |t| out.push(t));
        }
        out
    }

    /// A `terminate` hook ending episodes on `window` verdicts in a row at 0.5, waiting up to
    /// `wait` for one; the sender of its verdicts and the receiver of its frames.
    fn hook(
        window: usize,
        wait: Duration,
    ) -> (
        FrameHook,
        crossbeam::channel::Sender<(u64, u64, f32)>,
        crossbeam::channel::Receiver<StepFrame>,
    ) {
        let (frames, frames_rx) = crossbeam::channel::bounded(4);
        let (vtx, vrx) = crossbeam::channel::bounded(64);
        let hook = FrameHook {
            camera: "front".into(),
            frame: Frame::new(8, 8),
            frames,
            sent: Arc::default(),
            lost: Arc::default(),
            verdicts: Some(vrx),
            streak: Streak::new(window, 0.5),
            wait,
            ended: None,
            late: Arc::default(),
        };
        (hook, vtx, frames_rx)
    }

    fn rewards(ts: &[Transition]) -> Vec<f64> {
        ts.iter().map(|t| t.outcome.reward).collect()
    }

    /// The classifier's end is confirmed by the frame after it; one that the next frame does
    /// not confirm is a false success, relabelled: no reward, the episode cut short. An
    /// episode that ran out of time keeps its verdicts.
    #[test]
    fn a_success_the_next_frame_denies_is_relabelled() {
        let (mut s, tx) = stage();
        let confirmed = episode(
            &mut s,
            &tx,
            1,
            &[0.1, 0.9, 0.95],
            &[false, true, true],
            true,
        );
        assert_eq!(rewards(&confirmed), [0.0, 10.0, 10.0]);
        let last = confirmed[2].outcome;
        assert!(last.success && last.terminated && !last.truncated);

        let denied = episode(&mut s, &tx, 2, &[0.1, 0.9, 0.2], &[false; 3], true);
        assert_eq!(rewards(&denied), [0.0, 0.0, 0.0]);
        assert!(denied.iter().all(|t| !t.outcome.success));
        let last = denied[2].outcome;
        assert!(
            !last.terminated && last.truncated,
            "cut short, not finished"
        );

        let timed_out = episode(&mut s, &tx, 3, &[0.9, 0.8], &[true, true], false);
        assert_eq!(rewards(&timed_out), [10.0, 10.0]);
        assert!(timed_out[1].outcome.truncated && timed_out[1].outcome.success);

        let c = s.counters;
        assert_eq!(
            (c.episodes_ended, c.ends_confirmed, c.ends_relabelled),
            (2, 1, 1)
        );
        assert_eq!(c.steps_relabelled, 1);
        assert_eq!((c.false_ends, c.false_ends_relabelled), (1, 1));
        assert_eq!(c.rewarded, 8);
    }

    /// The hook ends an episode once, on the first success verdict of that episode; a
    /// simulated driver waits (bounded) for the step's verdict, a real-time one does not.
    #[test]
    fn the_hook_ends_an_episode_on_its_first_success_verdict() {
        let (mut hook, vtx, _rx) = hook(1, Duration::from_millis(50));
        let late = hook.late.clone();
        assert!(hook.detects_success());
        vtx.send((7, 0, 0.2)).unwrap();
        assert!(!hook.ends_episode(7, 0, true));
        // No verdict on step 1 yet: a real-time driver goes on, a simulated one waits in vain.
        assert!(!hook.ends_episode(7, 1, false));
        assert_eq!(late.load(Ordering::Relaxed), 0);
        assert!(!hook.ends_episode(7, 1, true));
        assert_eq!(late.load(Ordering::Relaxed), 1);
        // A verdict of another episode ends nothing; this one's success ends it, once.
        vtx.send((6, 9, 0.9)).unwrap();
        vtx.send((7, 2, 0.9)).unwrap();
        assert!(hook.ends_episode(7, 2, true));
        vtx.send((7, 3, 0.9)).unwrap();
        assert!(!hook.ends_episode(7, 3, true));
    }

    /// With `end_after = 3` an episode ends only on three success verdicts on consecutive
    /// steps: a "no" or a step without a verdict (a lost frame) starts the count again, and a
    /// new episode starts from nothing.
    #[test]
    fn end_after_asks_for_consecutive_success_verdicts() {
        let (mut hook, vtx, _rx) = hook(3, Duration::from_millis(20));
        let mut step = |e: u64, s: u64, p: f32| {
            vtx.send((e, s, p)).unwrap();
            hook.ends_episode(e, s, true)
        };
        // yes yes no yes yes (step 6 lost) yes yes yes
        let said = [
            step(1, 0, 0.9),
            step(1, 1, 0.9),
            step(1, 2, 0.1),
            step(1, 3, 0.9),
            step(1, 4, 0.9),
            step(1, 6, 0.9),
            step(1, 7, 0.9),
            step(1, 8, 0.9),
        ];
        assert_eq!(
            said,
            [false, false, false, false, false, false, false, true]
        );
        // Two successes at the end of episode 2 and one at the start of 3 make no run.
        assert!(!step(2, 0, 0.9) && !step(2, 1, 0.9));
        assert!(!step(3, 0, 0.9) && !step(3, 1, 0.9) && step(3, 2, 0.9));

        let cfg = ClassifierStageConfig {
            end_after: 0,
            ..Default::default()
        };
        let err = cfg.validate().expect_err("end_after 0 refused");
        assert!(err.contains("end_after"), "{err}");
    }

    /// Replaying the rule on recorded episodes counts true and false ends, the ends the next
    /// frame denies, missed successes and the delay, for each window.
    #[test]
    fn episode_ends_replays_the_rule_on_recorded_episodes() {
        // Episode A: a lone early "yes" (no success yet), then success from step 4 on.
        // Episode B: never succeeds; two "yes" in a row, then "no".
        // Episode C: succeeds at step 1, the classifier never says so.
        let probs = [
            0.1, 0.9, 0.2, 0.3, 0.8, 0.9, 0.9, 0.9, // A
            0.1, 0.7, 0.7, 0.2, 0.1, // B
            0.1, 0.2, 0.3, // C
        ];
        let labels = [
            false, false, false, false, true, true, true, true, // A
            false, false, false, false, false, // B
            false, true, true, // C
        ];
        let lengths = [8, 5, 3];
        let one = episode_ends(&probs, &labels, &lengths, 0.5, 1);
        assert_eq!((one.episodes, one.successes, one.ended), (3, 2, 2));
        // A ends at step 2 (run at 1), no success by then, and frame 2 denies it: caught.
        // B ends at step 2, frame 2 (0.7) confirms the false success.
        assert_eq!((one.false_ends, one.false_ends_caught), (2, 1));
        assert_eq!((one.missed, one.true_ends_denied), (1, 0));
        let two = episode_ends(&probs, &labels, &lengths, 0.5, 2);
        // A: run at 5, ends at 6 (success from 4: delay 2). B: run at 10, ends at 11, denied.
        assert_eq!(
            (two.ended, two.false_ends, two.false_ends_caught),
            (2, 1, 1)
        );
        assert_eq!(two.mean_delay_steps, 2.0);
        let three = episode_ends(&probs, &labels, &lengths, 0.5, 3);
        // A: run at 6, ends at 7 (delay 3). B never ends.
        assert_eq!((three.ended, three.false_ends, three.missed), (1, 0, 1));
        assert_eq!(three.mean_delay_steps, 3.0);
        // A run completing on the last frame is confirmed by that frame.
        let last = episode_ends(&[0.1, 0.9], &[false, true], &[2], 0.5, 1);
        assert_eq!(
            (last.ended, last.false_ends, last.true_ends_denied),
            (1, 0, 0)
        );
    }
}
