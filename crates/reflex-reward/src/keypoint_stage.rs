//! Keypoint rewards from a VLM (or the oracle server) during `reflex train --reward
//! vlm-keypoints`, as a [`RewardPlugin`] for the training job.
//!
//! - The hook (driver thread, at each episode start) renders the configured camera through the
//!   robot's `SceneView`, draws the grid, asks the VLM client for keypoints without waiting (the
//!   task's keypoints ride along as a hint, which the client gives only to our own oracle
//!   server), and sends the scene the answer will be lifted on to the stage.
//! - The stage (learner thread) holds each episode's transitions until that episode's answer
//!   arrives, matched by request id = episode, then lifts the answer onto the episode's own
//!   scene, rewards every held transition in step order from the keypoint terms (and the
//!   task's success, which overrides them) and passes them on; later transitions of the
//!   episode pass straight through.
//! - An episode whose answer fails (error, unusable answer, a point off the object) or does not
//!   come within `max_wait_s` is dropped whole and counted: nothing is rewarded from another
//!   episode's plan, and nothing waits forever. Held transitions are capped; the oldest
//!   episode goes first.

use crate::annotate::draw_grid;
use crate::fusion::{Bound, FusedTerm, Fusion, Rule};
use crate::keypoint::{KeypointReward, KeypointShaping, KEYPOINT_TERMS};
use crate::parse::{parse_keypoints, Grid};
use crate::scene::{oracle_keypoints, oracle_mistakes, Scene};
use crate::vlm::{Answer, Png, Query, Request, VlmClient};
use nalgebra::{Isometry3, Point3, Quaternion, Translation3, UnitQuaternion};
use reflex_core::{
    Frame, Observation, RewardTerms, Rng, SceneView, Transition, FLAT_OBJECTS, FLAT_OBJECT_STRIDE,
    FLAT_TCP_POS,
};
use reflex_learn::stage::{success_only, EpisodeHook, RewardPlugin, RewardStage};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Settings of keypoint rewards in training.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeypointStageConfig {
    /// The camera the question is asked on (a name the robot's `SceneView` knows).
    pub camera: String,
    /// Camera image width, pixels.
    pub width: usize,
    /// Camera image height, pixels.
    pub height: usize,
    /// Grid columns drawn on the image.
    pub grid_cols: usize,
    /// Grid rows drawn on the image.
    pub grid_rows: usize,
    /// Distances shaping the terms.
    pub shaping: KeypointShaping,
    /// Weight of `kp_reach`.
    pub reach_weight: f64,
    /// Weight of `kp_carry`.
    pub carry_weight: f64,
    /// Reward of the task's success (overrides the keypoint terms when it fires).
    pub success_reward: f64,
    /// An episode whose answer has not come this long after it started is dropped, seconds.
    pub max_wait_s: f64,
    /// Most transitions held while answers are awaited (the oldest episode is dropped first).
    pub max_held: usize,
}

impl Default for KeypointStageConfig {
    fn default() -> Self {
        Self {
            camera: "front".into(),
            width: 160,
            height: 120,
            grid_cols: 8,
            grid_rows: 6,
            shaping: KeypointShaping::default(),
            reach_weight: 1.0,
            carry_weight: 1.0,
            success_reward: 10.0,
            max_wait_s: 60.0,
            max_held: 200_000,
        }
    }
}

/// What the stage counts (`summary.json`'s `reward_stage`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeypointStageCounters {
    /// Episodes seen.
    pub episodes: u64,
    /// Episodes whose answer became a plan.
    pub planned: u64,
    /// Episodes dropped: the VLM gave no usable answer.
    pub failed_answers: u64,
    /// Episodes dropped: the answer could not be lifted onto a task object.
    pub unliftable: u64,
    /// Episodes dropped: no answer within `max_wait_s`, or the hold cap was reached.
    pub expired: u64,
    /// Episodes dropped: the question could not be asked (queue full, image failed).
    pub not_asked: u64,
    /// Replies for episodes already dropped or finished (ignored).
    pub late_replies: u64,
    /// Transitions passed on with keypoint rewards.
    pub rewarded: u64,
    /// Transitions dropped with their episode.
    pub dropped: u64,
    /// Largest number of transitions held at once.
    pub max_held: u64,
}

/// Builds the plugin for a task whose instruction is `instruction`: `client` asks the questions
/// (shared by both halves).
pub fn keypoint_plugin(
    instruction: &str,
    client: Arc<VlmClient>,
    cfg: KeypointStageConfig,
) -> Result<RewardPlugin, String> {
    if cfg.width < 16 || cfg.height < 16 || cfg.grid_cols == 0 || cfg.grid_cols > 26 {
        return Err("keypoints: image at least 16x16 and 1..=26 grid columns".into());
    }
    let fusion = Fusion::new(
        vec![
            term(KEYPOINT_TERMS[0], cfg.reach_weight, false),
            term(KEYPOINT_TERMS[1], cfg.carry_weight, false),
            term("success", cfg.success_reward, true),
        ],
        Rule::SuccessOverrides,
    )
    .map_err(|e| e.to_string())?;
    let (tx, rx) = crossbeam::channel::bounded(256);
    let grid = Grid {
        width: cfg.width,
        height: cfg.height,
        cols: cfg.grid_cols,
        rows: cfg.grid_rows,
    };
    let hook = KeypointHook {
        camera: cfg.camera.clone(),
        width: cfg.width,
        height: cfg.height,
        grid,
        instruction: instruction.to_owned(),
        client: client.clone(),
        scenes: tx,
        rng: Rng::new(0x6B70),
    };
    let stage = KeypointStage {
        cfg,
        grid,
        client,
        scenes: rx,
        fusion,
        episodes: BTreeMap::new(),
        held: 0,
        counters: KeypointStageCounters::default(),
    };
    Ok(RewardPlugin {
        name: "vlm-keypoints".into(),
        hook: Box::new(hook),
        stage: Box::new(stage),
    })
}

fn term(name: &str, weight: f64, success: bool) -> FusedTerm {
    FusedTerm {
        name: name.into(),
        weight,
        success,
        bound: if success {
            Bound::None
        } else {
            Bound::Clip { lo: 0.0, hi: 1.0 }
        },
    }
}

/// An episode's scene, or why there will be no plan for it.
enum Started {
    Asked(u64, Box<Scene>),
    NotAsked(u64),
}

struct KeypointHook {
    camera: String,
    width: usize,
    height: usize,
    grid: Grid,
    instruction: String,
    client: Arc<VlmClient>,
    scenes: crossbeam::channel::Sender<Started>,
    rng: Rng,
}

impl EpisodeHook for KeypointHook {
    fn episode_started(&mut self, episode: u64, obs: &Observation, scene: &dyn SceneView) {
        let asked = self.ask(episode, obs, scene);
        let msg = match asked {
            Ok(scene) => Started::Asked(episode, Box::new(scene)),
            Err(e) => {
                tracing::warn!(episode, "keypoints not asked: {e}");
                Started::NotAsked(episode)
            }
        };
        // The stage drains this every learner pass; a full channel means it stopped.
        let _ = self.scenes.try_send(msg);
    }

    fn busy(&self) -> bool {
        self.client.queue_free() == 0
    }
}

impl KeypointHook {
    fn ask(
        &mut self,
        episode: u64,
        obs: &Observation,
        view: &dyn SceneView,
    ) -> Result<Scene, String> {
        let scene = Scene::capture(view, &self.camera, Frame::new(self.width, self.height))
            .map_err(|e| e.to_string())?;
        let frame = &scene.frame;
        let mut rgb = frame.rgb.clone();
        draw_grid(&mut rgb, &self.grid);
        let image = Png::encode_rgb(frame.width, frame.height, &rgb).map_err(|e| e.to_string())?;
        // The task's keypoints as a hint for the oracle server (the client withholds it from
        // any other server; a real VLM never sees it).
        let hint = oracle_keypoints(frame, obs.keypoints(), obs.goals(), 0.0, &mut self.rng)
            .ok()
            .and_then(|t| parse_keypoints(&t, &self.grid).ok())
            .map(|truth| {
                let mut hint = oracle_mistakes(frame, truth.affordance);
                hint["keypoints"] = serde_json::json!({
                    "affordance": truth.affordance,
                    "waypoints": truth.waypoints,
                });
                hint["image"] = serde_json::json!([frame.width, frame.height]);
                hint
            });
        let request = Request {
            id: episode,
            query: Query::Keypoints {
                image: Arc::new(image),
                grid: self.grid,
                instruction: self.instruction.clone(),
            },
            hint,
        };
        self.client
            .submit(request)
            .map_err(|_| "the VLM client's queue is full".to_owned())?;
        Ok(scene)
    }
}

/// One episode as the stage sees it.
struct Episode {
    started: Instant,
    scene: Option<Box<Scene>>,
    plan: Option<(KeypointReward, Fusion)>,
    held: Vec<Transition>,
    /// Dropped: its transitions are discarded as they come.
    dropped: bool,
    /// Its last transition has been taken.
    finished: bool,
}

impl Episode {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            scene: None,
            plan: None,
            held: Vec::new(),
            dropped: false,
            finished: false,
        }
    }
}

struct KeypointStage {
    cfg: KeypointStageConfig,
    grid: Grid,
    client: Arc<VlmClient>,
    scenes: crossbeam::channel::Receiver<Started>,
    fusion: Fusion,
    episodes: BTreeMap<u64, Episode>,
    held: usize,
    counters: KeypointStageCounters,
}

/// The tool centre point and the pose of object `body` in a flat observation (the layout of
/// `Observation::rebuild_flat`).
fn tcp_and_object(flat: &[f32], body: usize) -> Option<(Point3<f64>, Isometry3<f64>)> {
    let o = FLAT_OBJECTS + FLAT_OBJECT_STRIDE * body;
    let v = |i: usize| flat.get(i).map(|x| f64::from(*x));
    let t = FLAT_TCP_POS;
    let tcp = Point3::new(v(t)?, v(t + 1)?, v(t + 2)?);
    let q = Quaternion::new(v(o + 6)?, v(o + 3)?, v(o + 4)?, v(o + 5)?);
    let pose = Isometry3::from_parts(
        Translation3::new(v(o)?, v(o + 1)?, v(o + 2)?),
        UnitQuaternion::from_quaternion(q),
    );
    Some((tcp, pose))
}

/// Rewards `t` from the episode's plan.
fn relabel(plan: &mut (KeypointReward, Fusion), mut t: Transition) -> Option<Transition> {
    let (kp, fusion) = plan;
    let (tcp, pose) = tcp_and_object(t.next_obs.as_slice(), kp.plan().affordance.body)?;
    let [reach, carry] = kp.terms(&tcp, &pose);
    let success = if t.outcome.success { 1.0 } else { 0.0 };
    let values = [reach, carry, success];
    let reward = fusion.fuse(&values);
    if !reward.is_finite() {
        return None;
    }
    let mut terms = RewardTerms::new(values.len());
    for (i, v) in values.iter().enumerate() {
        terms.set(i, *v);
    }
    t.outcome.reward = reward;
    t.outcome.terms = terms;
    Some(t)
}

impl KeypointStage {
    fn drop_episode(&mut self, id: u64) {
        if let Some(e) = self.episodes.get_mut(&id) {
            self.counters.dropped += e.held.len() as u64;
            self.held -= e.held.len();
            e.held = Vec::new();
            e.scene = None;
            e.dropped = true;
            if e.finished {
                self.episodes.remove(&id);
            }
        }
    }

    fn plan_ready(&mut self, id: u64, answer: Answer, ready: &mut dyn FnMut(Transition)) {
        let Some(e) = self.episodes.get_mut(&id) else {
            self.counters.late_replies += 1;
            return;
        };
        if e.dropped || e.plan.is_some() {
            self.counters.late_replies += 1;
            return;
        }
        let Answer::Keypoints(answer) = answer else {
            self.counters.failed_answers += 1;
            self.drop_episode(id);
            return;
        };
        let Some(scene) = &e.scene else {
            // The answer beat its own scene through the channel: cannot happen (the scene is
            // sent before the question is answered), but never lift on a wrong scene.
            self.counters.failed_answers += 1;
            self.drop_episode(id);
            return;
        };
        match scene.lift(&answer) {
            Ok(plan) => {
                let mut fusion = self.fusion.clone();
                fusion.begin_episode();
                let mut p = (KeypointReward::new(plan, self.cfg.shaping), fusion);
                let held = std::mem::take(&mut e.held);
                self.held -= held.len();
                for t in held {
                    match relabel(&mut p, t) {
                        Some(t) => {
                            self.counters.rewarded += 1;
                            ready(t);
                        }
                        None => self.counters.dropped += 1,
                    }
                }
                e.scene = None;
                e.plan = Some(p);
                self.counters.planned += 1;
                if e.finished {
                    self.episodes.remove(&id);
                }
            }
            Err(err) => {
                tracing::debug!(episode = id, "keypoint answer not lifted: {err}");
                self.counters.unliftable += 1;
                self.drop_episode(id);
            }
        }
    }
}

impl RewardStage for KeypointStage {
    fn take(&mut self, t: Transition, ready: &mut dyn FnMut(Transition)) {
        let id = t.episode;
        if !self.episodes.contains_key(&id) {
            self.counters.episodes += 1;
            self.episodes.insert(id, Episode::new());
        }
        let done = t.outcome.done();
        let e = self.episodes.get_mut(&id).expect("inserted above");
        e.finished |= done;
        if e.dropped {
            self.counters.dropped += 1;
        } else if let Some(p) = &mut e.plan {
            match relabel(p, t) {
                Some(t) => {
                    self.counters.rewarded += 1;
                    ready(t);
                }
                None => self.counters.dropped += 1,
            }
        } else {
            e.held.push(t);
            self.held += 1;
            self.counters.max_held = self.counters.max_held.max(self.held as u64);
        }
        // A finished episode that needs nothing more is forgotten.
        if done && (e.dropped || e.plan.is_some()) {
            self.episodes.remove(&id);
        }
        // Over the cap: drop the oldest waiting episodes.
        while self.held > self.cfg.max_held {
            let Some(oldest) = self
                .episodes
                .iter()
                .find(|(_, e)| !e.held.is_empty())
                .map(|(k, _)| *k)
            else {
                break;
            };
            self.counters.expired += 1;
            self.drop_episode(oldest);
        }
    }

    fn poll(&mut self, ready: &mut dyn FnMut(Transition)) {
        while let Ok(msg) = self.scenes.try_recv() {
            match msg {
                Started::Asked(id, scene) => {
                    let e = self.episodes.entry(id).or_insert_with(|| {
                        self.counters.episodes += 1;
                        Episode::new()
                    });
                    if !e.dropped {
                        e.scene = Some(scene);
                    }
                }
                Started::NotAsked(id) => {
                    if !self.episodes.contains_key(&id) {
                        self.counters.episodes += 1;
                        self.episodes.insert(id, Episode::new());
                    }
                    self.counters.not_asked += 1;
                    self.drop_episode(id);
                }
            }
        }
        while let Some(reply) = self.client.try_recv() {
            match reply.result {
                Ok(answer) => self.plan_ready(reply.id, answer, ready),
                Err(e) => {
                    tracing::debug!(episode = reply.id, "no keypoint answer: {e}");
                    match self.episodes.get(&reply.id) {
                        Some(ep) if !ep.dropped && ep.plan.is_none() => {
                            self.counters.failed_answers += 1;
                            self.drop_episode(reply.id);
                        }
                        _ => self.counters.late_replies += 1,
                    }
                }
            }
        }
        let max_wait = Duration::from_secs_f64(self.cfg.max_wait_s);
        let stale: Vec<u64> = self
            .episodes
            .iter()
            .filter(|(_, e)| !e.dropped && e.plan.is_none() && e.started.elapsed() > max_wait)
            .map(|(k, _)| *k)
            .collect();
        for id in stale {
            self.counters.expired += 1;
            self.drop_episode(id);
        }
    }

    fn report(&self) -> serde_json::Value {
        serde_json::json!({
            "keypoints": self.counters,
            "held_now": self.held,
            "grid": [self.grid.cols, self.grid.rows],
            "vlm": self.client.stats(),
        })
    }

    fn demo_reward(&self, t: &Transition) -> f64 {
        // No frame was shown for the demonstrations: only the task's success counts.
        success_only(t, self.cfg.success_reward)
    }
}
