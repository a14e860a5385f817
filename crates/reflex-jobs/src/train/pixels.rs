//! `reflex train` with `obs = "pixels"`: the policy and the critics see the cameras and what the
//! arm knows of itself, never the objects' poses (an arm with no object tracker).
//!
//! The same steps as the state job ([`super::driver`]), on images:
//! 1. Demonstrations: the scripted expert (with its DART noise) drives the runtime while the
//!    cameras take one picture per policy step; or, with `demo_sessions`, the
//!    successful episodes of recorded teleop sessions with their frames
//!    ([`super::session_demos`]), which need no object tracker.
//! 2. The base is cloned from those pictures and the proprioception
//!    ([`reflex_learn::bc::behaviour_clone_pixels`]) and runs on the tick as a
//!    [`PixelPolicy`]: it holds the arm when its newest picture is older than
//!    `pixels.max_age_s`.
//! 3. Training: the runtime runs that base plus an exploring residual that sees the same
//!    pictures through the critics' encoder ([`ResidualPolicy::pixel_tanh_gaussian`]); SAC
//!    from pixels ([`PixelAgent`]) learns from a replay that keeps each step's picture once
//!    ([`PixelReplay`]), demonstrations mixed in (RLPD). With a simulator the learner runs in
//!    lock step on this thread (its updates use both cores). Beside a real-time arm
//!    (`reflex ros train --obs pixels`) it runs on its own thread ([`PixelLearner`]), fed
//!    through a bounded queue and paused for each evaluation; the loop is paced and never
//!    waits for it.
//! 4. Evaluations, confirmations, the kept best and the held-out evaluation as in the state
//!    job; `summary.json`, `metrics.csv` and `curve.png` have the same form, so `--seeds`
//!    studies read pixel runs too.
//!
//! A reward source (`--reward classifier`, `sparse`, `vlm-keypoints`) works as in the state
//! job: its hook sees every training step (and, for a success classifier with `terminate`,
//! ends episodes), its stage rewards each transition before the transition and its picture go
//! into the replay, and demonstrations carry its `demo_reward`. `vlm-preference` is refused:
//! its model reshapes a replay of state rows.
//!
//! 5. Crash safety: every stored step also goes to the replay's log on disk ([`PixelLog`]),
//!    and the agent is checkpointed every `checkpoint_every` updates and at the end; `resume`
//!    reads the base back, refills the replay from the log, restores the newest usable
//!    checkpoint and the best evaluation's weights, and continues episode ids and counters.
//!
//! Files: `base_encoder.safetensors` + `base.safetensors` (the base's encoder and MLP),
//! `policy_encoder.safetensors` + `policy.safetensors` (the residual's, `tanh(mean)`),
//! `best_actor_encoder.safetensors` + `best_actor.safetensors` (the best evaluation's
//! exploring actor), `replay/` and `checkpoints/`.
//! A simulator's cameras are rendered on demand (its [`SceneView::render`]), just before a
//! tick that starts a policy step, and stamped with the robot's clock. A real-time arm's
//! arrive on their own schedule (`Arms::camera_source`: a ROS 2 arm's camera topics): a camera
//! thread ([`spawn_camera_pump`]) publishes each stack into the policies' cells and into the
//! driver's, which keeps the newest few by sequence number; each step is paired with the stack
//! its base acted on ([`PixelPolicy::seen`]), and a step whose stack is gone is left out and
//! counted. Picture buffers go round a pool, so the driver's thread stops allocating them.

use super::config::{stage, TrainConfig, TrainError};
use super::episodes::{
    confirm_seeds, heldout_seeds, seeds, success_and_return, HELDOUT_FIRST_SEED,
};
use super::plot::plot_curves;
use super::report::{
    write_atomic, write_metrics, write_state, Confirmation, EvalRow, HandedOver, HeldOut, Progress,
    RunState, Summary,
};
use super::session_demos::SessionDemoReport;
use super::{brake_to_rest, INTERRUPT, PROGRESS_EVERY_S};
use crate::arms::{runtime, Arms};
use crate::pixel_deploy::{spawn_camera_pump, CameraPump};
use reflex_core::{
    image_cell, Frame, ImageReader, ImageWriter, Robot, SceneView, Transition, FLAT_OBJECTS,
};
use reflex_learn::bc::{behaviour_clone_pixels, PixelDemos};
use reflex_learn::nn::INPUT_MIN_STD;
use reflex_learn::pixel_replay::{PixelLog, PixelReplay, PixelStep};
use reflex_learn::pixel_sac::PixelAgent;
use reflex_learn::replay::Source;
use reflex_learn::sac::UpdateStats;
use reflex_learn::stage::{RewardPlugin, RewardStage};
use reflex_policy::{
    ConvEncoder, EncoderParams, EncoderShape, EncoderSlot, Mlp, PixelNet, PixelPolicy,
    ResidualPolicy, WeightsSlot,
};
use reflex_runtime::{Runtime, TickReport, Ticker};
use reflex_sim::ScriptedExpert;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// The cameras of one runtime: a picture from each, stacked along the channels, published to
/// every image cell the runtime's policies read.
struct Cameras {
    names: Vec<String>,
    frames: Vec<Frame>,
    stacked: Vec<u8>,
    writers: Vec<ImageWriter>,
}

/// `n` image cells for stacks of `cameras` pictures at `side` x `side`.
fn cells(cameras: usize, side: usize, n: usize) -> (Vec<ImageWriter>, Vec<ImageReader>) {
    (0..n)
        .map(|_| image_cell(side * side * 3 * cameras))
        .unzip()
}

impl Cameras {
    /// Cameras `names` at `side` x `side`, publishing into `writers`.
    fn new(names: &[String], side: usize, writers: Vec<ImageWriter>) -> Self {
        Self {
            names: names.to_vec(),
            frames: names.iter().map(|_| Frame::new(side, side)).collect(),
            stacked: vec![0; side * side * 3 * names.len()],
            writers,
        }
    }

    /// Takes a picture from every camera into `stacked`.
    fn shoot<R: SceneView>(&mut self, robot: &R) -> Result<(), TrainError> {
        for (name, frame) in self.names.iter().zip(&mut self.frames) {
            robot
                .render(name, frame)
                .map_err(|e| stage("cameras")(format!("camera `{name}`: {e}")))?;
        }
        let views: Vec<&[u8]> = self.frames.iter().map(|f| &f.rgb[..]).collect();
        reflex_policy::stack_frames(&views, &mut self.stacked)
            .map_err(|e| stage("cameras")(format!("stacking the cameras' pictures: {e:?}")))
    }

    /// Takes the pictures and publishes them, stamped `stamp_ns`.
    fn publish<R: SceneView>(&mut self, robot: &R, stamp_ns: u64) -> Result<(), TrainError> {
        self.shoot(robot)?;
        for w in &mut self.writers {
            // Same length by construction.
            let _ = w.publish(stamp_ns, &self.stacked);
        }
        Ok(())
    }
}

/// Pictures a camera thread publishes (a real-time arm's camera topics): the driver keeps the
/// newest few stacks of its own cell, by sequence number, and pairs each policy step with the
/// one its action saw.
struct Tap {
    _pump: CameraPump,
    cell: ImageReader,
    /// The newest stacks, oldest first: (sequence number, bytes).
    ring: VecDeque<(u64, Vec<u8>)>,
    /// Where the base leaves the sequence number of the picture each action saw; `None` for a
    /// base that sees no pictures (the scripted expert): a step then takes the newest.
    seen: Option<Arc<AtomicU64>>,
    /// Steps whose picture was no longer kept (or never came): not learned from.
    missed: u64,
}

/// Stacks a [`Tap`] keeps: at 30 pictures a second, about a quarter of a second, past the
/// 0.1 s between a step's start and its transition leaving the runtime.
const TAP_RING: usize = 8;

impl Tap {
    /// Keeps the cell's newest stack if it is new (its buffer reused once the ring is full).
    fn refresh(&mut self) {
        let Some(img) = self.cell.latest() else {
            return;
        };
        if self.ring.back().is_some_and(|(seq, _)| *seq == img.seq) {
            return;
        }
        let mut buf = if self.ring.len() >= TAP_RING {
            self.ring.pop_front().map(|(_, b)| b).unwrap_or_default()
        } else {
            Vec::with_capacity(img.bytes.len())
        };
        buf.clear();
        buf.extend_from_slice(&img.bytes);
        self.ring.push_back((img.seq, buf));
    }

    /// The sequence number of the picture the step just started saw (0: none yet).
    fn step_seq(&self) -> u64 {
        match &self.seen {
            Some(seen) => seen.load(Ordering::Relaxed),
            None => self.ring.back().map_or(0, |(seq, _)| *seq),
        }
    }

    fn get(&self, seq: u64) -> Option<&[u8]> {
        self.ring
            .iter()
            .rev()
            .find(|(s, _)| *s == seq && seq > 0)
            .map(|(_, b)| &b[..])
    }
}

/// Where a runtime's pictures come from.
enum Shots {
    /// Rendered on demand just before each tick that starts a policy step (a simulator).
    Render(Cameras),
    /// Published by a camera thread as they arrive (a real-time arm).
    Pump(Tap),
}

/// The picture of a step in flight: its bytes, or the sequence number of a [`Tap`]'s stack.
enum Shown {
    Bytes(Vec<u8>),
    Seq(u64),
}

/// A runtime with its cameras; remembers the picture of every policy step until its transition
/// comes out of the runtime's queue. Ticks are paced at the loop rate on a real-time arm.
/// Picture buffers go round a pool (a learner hands them back), so a long run stops allocating
/// them.
struct PixelRt<R: Robot + SceneView> {
    rt: Runtime<R>,
    shots: Shots,
    shown: VecDeque<((u64, u64), Shown)>,
    ticker: Option<Ticker>,
    pool: Vec<Vec<u8>>,
}

/// A transition with the picture its action was chosen on, and the picture after it when it
/// ends its episode.
pub(super) struct Seen {
    pub(super) t: Transition,
    pub(super) image: Vec<u8>,
    pub(super) last: Option<Vec<u8>>,
}

/// Picture buffers a [`PixelRt`] keeps for reuse, at most.
const POOL_AT_MOST: usize = 1024;
/// Picture buffers a [`PixelRt`] fed by a camera thread starts with.
const POOL_PREFILLED: usize = 128;
/// Steps in flight whose pictures a [`PixelRt`] remembers, at most.
const SHOWN_AT_MOST: usize = 64;

impl<R: Robot + SceneView + reflex_core::SceneReset> PixelRt<R> {
    /// A copy of `bytes` in a buffer from the pool.
    fn copy(pool: &mut Vec<Vec<u8>>, bytes: &[u8]) -> Vec<u8> {
        let mut b = pool.pop().unwrap_or_default();
        b.clear();
        b.extend_from_slice(bytes);
        b
    }

    /// Takes back a picture buffer.
    fn recycle(&mut self, buf: Vec<u8>) {
        if self.pool.len() < POOL_AT_MOST {
            self.pool.push(buf);
        }
    }

    /// A new schedule for a paced runtime (after a reset, which may take long).
    fn restart_schedule(&mut self) {
        if self.ticker.is_some() {
            self.ticker = Some(Ticker::new(self.rt.config().servo_rate_hz));
        }
    }

    /// One tick (paced on a real-time arm); a tick that will start a policy step gets fresh
    /// pictures first when they are rendered on demand.
    fn tick(&mut self) -> Result<TickReport, TrainError> {
        self.before_tick()?;
        let rep = match &mut self.ticker {
            Some(t) => self.rt.tick_paced(t),
            None => self.rt.tick(),
        };
        self.after_tick(&rep);
        Ok(rep)
    }

    /// The pictures of the tick to come: rendered when it starts a policy step (a simulator);
    /// from a camera thread, the stack the base is about to read is kept before the tick as
    /// well as after it (a stack published between its read and the refresh after the tick
    /// would otherwise push it out of the cell unseen, and the step would be lost).
    fn before_tick(&mut self) -> Result<(), TrainError> {
        if !self.rt.policy_step_next() {
            return Ok(());
        }
        match &mut self.shots {
            Shots::Render(cams) => {
                let now = self.rt.robot().now_ns();
                cams.publish(self.rt.robot(), now)
            }
            Shots::Pump(tap) => {
                tap.refresh();
                Ok(())
            }
        }
    }

    /// Keeps the camera thread's newest stack and, after a policy step, which picture it saw.
    fn after_tick(&mut self, rep: &TickReport) {
        if let Shots::Pump(tap) = &mut self.shots {
            tap.refresh();
        }
        if rep.policy_step {
            let id = self.rt.step_in_flight();
            // Bounded: pictures of steps whose transitions never come (none in simulation).
            if self.shown.len() >= SHOWN_AT_MOST {
                if let Some((_, Shown::Bytes(b))) = self.shown.pop_front() {
                    self.recycle(b);
                }
            }
            let shown = match &self.shots {
                Shots::Render(cams) => Shown::Bytes(Self::copy(&mut self.pool, &cams.stacked)),
                Shots::Pump(tap) => Shown::Seq(tap.step_seq()),
            };
            self.shown.push_back((id, shown));
        }
    }

    /// The transitions out of the queue with their pictures (a step that ends its episode
    /// gets the picture of the scene now, its last). Interrupted steps are left out (never
    /// learned from), as is a step whose picture a camera thread no longer holds (counted in
    /// `Tap::missed`).
    fn drain(&mut self, out: &mut Vec<Seen>) -> Result<(), TrainError> {
        // (Called after a tick, whose `after_tick` has just refreshed the tap.)
        while let Some(t) = self.rt.transitions().pop() {
            let Some(i) = self
                .shown
                .iter()
                .position(|(id, _)| *id == (t.episode, t.step))
            else {
                continue;
            };
            let (_, shown) = self.shown.remove(i).expect("found");
            if t.interrupted != reflex_core::Interruption::None {
                // Never learned from (the arm held, or the episode was aborted).
                if let Shown::Bytes(b) = shown {
                    self.recycle(b);
                }
                continue;
            }
            let image = match (shown, &mut self.shots) {
                (Shown::Bytes(b), _) => b,
                (Shown::Seq(seq), Shots::Pump(tap)) => match tap.get(seq) {
                    Some(bytes) => Self::copy(&mut self.pool, bytes),
                    None => {
                        tap.missed += 1;
                        continue;
                    }
                },
                (Shown::Seq(_), Shots::Render(_)) => continue,
            };
            let last = if t.outcome.done() {
                Some(match &mut self.shots {
                    Shots::Render(cams) => {
                        cams.shoot(self.rt.robot())?;
                        Self::copy(&mut self.pool, &cams.stacked)
                    }
                    Shots::Pump(tap) => match tap.ring.back() {
                        Some((_, b)) => Self::copy(&mut self.pool, b),
                        None => Self::copy(&mut self.pool, &image),
                    },
                })
            } else {
                None
            };
            out.push(Seen { t, image, last });
        }
        Ok(())
    }

    /// Steps left out for want of their picture.
    fn pictures_missed(&self) -> u64 {
        match &self.shots {
            Shots::Pump(tap) => tap.missed,
            Shots::Render(_) => 0,
        }
    }

    /// Whole episodes from `seeds`; per episode (success, return), and every transition with
    /// its pictures when `keep`. An interrupt brakes the arm to rest.
    fn episodes(
        &mut self,
        seeds: impl Iterator<Item = u64>,
        keep: Option<&mut Vec<Seen>>,
    ) -> Result<Vec<(bool, f64)>, TrainError> {
        let mut results = Vec::new();
        let mut kept = Vec::new();
        let paced = self.ticker.is_some();
        for seed in seeds {
            self.rt.reset_episode(seed).map_err(stage("scene reset"))?;
            self.restart_schedule();
            self.shown.clear();
            let (mut ret, mut success) = (0.0, false);
            loop {
                if INTERRUPT.load(Ordering::Relaxed) {
                    brake_to_rest(&mut self.rt, paced);
                    return Err(TrainError::Interrupted);
                }
                let rep = self.tick()?;
                if let Some(o) = rep.outcome {
                    if o.has_reward() {
                        ret += o.reward;
                    }
                    success |= o.success;
                }
                self.drain(&mut kept)?;
                if keep.is_none() {
                    for s in kept.drain(..) {
                        self.recycle(s.image);
                        if let Some(l) = s.last {
                            self.recycle(l);
                        }
                    }
                }
                if rep.episode_done {
                    results.push((success, ret));
                    break;
                }
            }
        }
        if let Some(k) = keep {
            k.append(&mut kept);
        }
        Ok(results)
    }
}

/// The nets a run shares between its runtimes: the frozen base and the residual's slots.
struct Nets {
    base: PixelNet,
    actor: Arc<WeightsSlot>,
    encoder: Arc<EncoderSlot>,
    proprio: usize,
    act_dim: usize,
}

impl Nets {
    /// A runtime over `arms` running the base and the residual (exploring while `explore`).
    fn runtime<A: Arms>(
        &self,
        arms: &A,
        cfg: &TrainConfig,
        explore: &Arc<AtomicBool>,
        seed: u64,
    ) -> Result<PixelRt<A::Robot>, TrainError> {
        pixel_runtime(arms, cfg, self.base.clone(), |frames| {
            ResidualPolicy::pixel_tanh_gaussian(
                self.actor.clone(),
                self.encoder.clone(),
                frames,
                self.proprio,
                self.act_dim,
                explore.clone(),
                seed,
            )
        })
    }
}

/// A runtime over `arms` with cameras `cfg.pixels` feeding two image cells: the base's
/// ([`PixelPolicy`], holding the arm on a picture older than `pixels.max_age_s`) and the
/// residual's, which `residual` builds around its reader.
fn pixel_runtime<A: Arms>(
    arms: &A,
    cfg: &TrainConfig,
    base: PixelNet,
    residual: impl FnOnce(ImageReader) -> Result<ResidualPolicy, reflex_policy::PolicyShapeError>,
) -> Result<PixelRt<A::Robot>, TrainError> {
    let px = &cfg.pixels;
    let (writers, mut readers) = cells(px.cameras.len(), px.side, 2);
    let residual_frames = readers.pop().expect("two cells");
    let base_frames = readers.pop().expect("two cells");
    let base = PixelPolicy::new(base, base_frames, (px.max_age_s * 1e9) as u64)
        .map_err(stage("base policy"))?;
    let seen = base.seen();
    let residual = residual(residual_frames).map_err(stage("residual policy"))?;
    let rt = runtime(arms, 0, Box::new(base), Some(residual), &cfg.runtime)?;
    with_shots(arms, cfg, rt, writers, Some(seen))
}

/// `rt` with its pictures: rendered on demand into `writers` (a simulator), or published
/// into them and into the driver's own cell by a camera thread reading the robot's cameras
/// (`Arms::camera_source`: a real-time arm, whose ticks are then paced). `seen` is where the
/// base leaves the picture each action saw.
fn with_shots<A: Arms>(
    arms: &A,
    cfg: &TrainConfig,
    rt: Runtime<A::Robot>,
    mut writers: Vec<ImageWriter>,
    seen: Option<Arc<AtomicU64>>,
) -> Result<PixelRt<A::Robot>, TrainError> {
    let px = &cfg.pixels;
    let shots = match arms.camera_source(rt.robot()) {
        None => Shots::Render(Cameras::new(&px.cameras, px.side, writers)),
        Some(source) => {
            let listed = source.cameras();
            if let Some(c) = px.cameras.iter().find(|c| !listed.contains(c)) {
                return Err(stage("cameras")(format!(
                    "pixels.cameras lists `{c}`, which the arm does not have (it has \
                     {listed:?}); on a ROS 2 arm add it to parameter `cameras` with its \
                     `image_topic`"
                )));
            }
            let (tap_writer, mut tap) = cells(px.cameras.len(), px.side, 1);
            writers.append(&mut tap_writer.into_iter().collect());
            let pump = spawn_camera_pump(
                source,
                px.cameras.clone(),
                px.side,
                writers,
                std::time::Duration::from_millis(2),
            )
            .map_err(|e| stage("cameras")(format!("camera thread: {e}")))?;
            Shots::Pump(Tap {
                _pump: pump,
                cell: tap.pop().expect("one cell"),
                ring: VecDeque::new(),
                seen,
                missed: 0,
            })
        }
    };
    let ticker = arms
        .real_time()
        .then(|| Ticker::new(rt.config().servo_rate_hz));
    // Beside a learner thread, pictures are out of the pool until the learner hands them back
    // (after its next update): the pool starts with more than an episode's worth, so the loop
    // allocates none unless more are ever in flight at once. A simulator's inline learner
    // hands them back at once.
    let pool = match &shots {
        Shots::Pump(_) => {
            let len = px.side * px.side * 3 * px.cameras.len();
            (0..POOL_PREFILLED)
                .map(|_| Vec::with_capacity(len))
                .collect()
        }
        Shots::Render(_) => Vec::new(),
    };
    Ok(PixelRt {
        rt,
        shots,
        shown: VecDeque::with_capacity(SHOWN_AT_MOST),
        ticker,
        pool,
    })
}

/// Loads a pixel network: the MLP at `mlp` and its encoder beside it (`<stem>_encoder.safetensors`).
fn load_pixel_files(mlp: &Path) -> Result<(ConvEncoder, Mlp), TrainError> {
    let (encoder, net, _) = crate::pixel_deploy::load_pixel_net(mlp).map_err(stage("policy"))?;
    Ok((encoder, net))
}

/// `reflex eval` of a run from pixels (`evaluate_run` hands it over): its base and residual
/// (`residual` replaces `policy.safetensors`; its encoder is the file beside it named
/// `<stem>_encoder.safetensors`) on `seeds`; per episode (success, return).
pub(crate) fn evaluate_pixel_run<A: Arms>(
    arms: &A,
    cfg: &TrainConfig,
    run: &Path,
    residual: Option<&Path>,
    seeds: impl Iterator<Item = u64>,
) -> Result<Vec<(bool, f64)>, TrainError> {
    let act_dim = arms.task().action_space.dim();
    let (enc, mlp) = load_pixel_files(&run.join("base.safetensors"))?;
    let base = PixelNet::new(enc, mlp).map_err(stage("base policy"))?;
    let policy_path = residual.map_or_else(|| run.join("policy.safetensors"), Path::to_path_buf);
    let mut prt = if policy_path.exists() {
        let (enc, mlp) = load_pixel_files(&policy_path)?;
        let (actor, encoder) = (WeightsSlot::new(mlp), EncoderSlot::new(enc));
        pixel_runtime(arms, cfg, base, |frames| {
            ResidualPolicy::pixel(actor, encoder, frames, FLAT_OBJECTS, act_dim)
        })
        .map_err(|e| stage("policy")(format!("{}: {e}", policy_path.display())))?
    } else if residual.is_some() {
        return Err(stage("policy")(format!(
            "{}: no such file",
            policy_path.display()
        )));
    } else {
        // The base alone: a residual that is exactly zero.
        let enc = base.encoder().clone();
        let zero = Mlp::zeros(
            &[enc.features() + FLAT_OBJECTS + act_dim, act_dim],
            reflex_policy::Activation::Relu,
            reflex_policy::Activation::Tanh,
        );
        let (actor, encoder) = (WeightsSlot::new(zero), EncoderSlot::new(enc));
        pixel_runtime(arms, cfg, base, |frames| {
            ResidualPolicy::pixel(actor, encoder, frames, FLAT_OBJECTS, act_dim)
        })?
    };
    let results = prt.episodes(seeds, None)?;
    if prt.ticker.is_some() {
        // A real-time arm is left at rest.
        brake_to_rest(&mut prt.rt, true);
    }
    Ok(results)
}

/// The proprioception of a flat observation: what the arm knows of itself.
fn proprio_of(t: &Transition) -> (&[f32], &[f32]) {
    (
        &t.obs.as_slice()[..FLAT_OBJECTS],
        &t.next_obs.as_slice()[..FLAT_OBJECTS],
    )
}

/// Metadata of a pixel run's network files.
fn file_meta(cfg: &TrainConfig, role: &str, shape: &EncoderShape) -> HashMap<String, String> {
    let meta = serde_json::json!({
        "role": role,
        "task": cfg.task,
        "cameras": cfg.pixels.cameras,
        "encoder": shape,
        "proprio": "first FLAT_OBJECTS values of the flat observation",
        "proprio_dim": FLAT_OBJECTS,
        "residual_scale": cfg.runtime.residual_scale,
        "seed": cfg.seed,
        "commit": super::COMMIT,
    });
    HashMap::from([(
        crate::pixel_deploy::PIXEL_META_KEY.to_owned(),
        meta.to_string(),
    )])
}

fn save_nets(
    out: &Path,
    prefix: &str,
    cfg: &TrainConfig,
    encoder: &ConvEncoder,
    mlp: &Mlp,
) -> Result<(), TrainError> {
    let what = |e: reflex_policy::WeightsError| stage("saving the policy")(e.to_string());
    encoder
        .save(&out.join(format!("{prefix}_encoder.safetensors")))
        .map_err(what)?;
    mlp.save_with_metadata(
        &out.join(format!("{prefix}.safetensors")),
        &file_meta(cfg, prefix, encoder.shape()),
    )
    .map_err(what)
}

/// A fresh run's first two stages: demonstrations with a picture per step (into `demos`) by
/// the scripted expert, or read from recorded sessions (`demo_sessions`), and the base
/// cloned from them, saved as `base.safetensors` + `base_encoder.safetensors`.
fn clone_base<A: Arms>(
    arms: &A,
    cfg: &TrainConfig,
    out: &Path,
    shape: &EncoderShape,
    demos: &mut Vec<Seen>,
    progress: &mut impl FnMut(Progress),
) -> Result<(PixelNet, Option<SessionDemoReport>), TrainError> {
    let task = arms.task();
    let act_dim = task.action_space.dim();
    let obs_dim = arms.obs_layout()?.dim();
    let px = &cfg.pixels;
    let demo_episodes = cfg.demo_episodes();
    // 1. Demonstrations, with a picture per step.
    progress(Progress::Stage("demonstrations"));
    let from_sessions = if cfg.demo_sessions.is_empty() {
        let expert = ScriptedExpert::new(task, &arms.model()?);
        let noise =
            super::driver::demo_noise_policy(cfg.demo_noise_std(), obs_dim, act_dim, cfg.seed)?;
        let rt = runtime(arms, 0, Box::new(expert), noise, &cfg.runtime)?;
        let mut prt = with_shots(arms, cfg, rt, Vec::new(), None)?;
        prt.episodes(seeds(cfg.seed, 1, demo_episodes), Some(&mut *demos))?;
        if prt.pictures_missed() > 0 {
            tracing::warn!(
                steps = prt.pictures_missed(),
                "demonstration steps left out: the camera thread had no picture for them"
            );
        }
        if demos.is_empty() {
            return Err(stage("demonstrations")(
                "no demonstration step has a picture: are the cameras publishing?".to_owned(),
            ));
        }
        None
    } else {
        let (steps, report) = super::session_demos::read_for_run(cfg, task, obs_dim, true)?;
        *demos = steps;
        Some(report)
    };

    // 2. The base, cloned from the pictures.
    progress(Progress::Stage("behaviour cloning"));
    let fresh: EncoderParams =
        reflex_learn::pixels::fresh_encoder(shape, cfg.seed).map_err(stage("encoder"))?;
    let images: Vec<u8> = demos.iter().flat_map(|s| s.image.iter().copied()).collect();
    let demo_proprio: Vec<f32> = demos
        .iter()
        .flat_map(|s| proprio_of(&s.t).0.to_vec())
        .collect();
    let demo_act: Vec<f32> = demos
        .iter()
        .flat_map(|s| s.t.base_action.as_slice().to_vec())
        .collect();
    let (base, loss) = behaviour_clone_pixels(
        &PixelDemos {
            images: &images,
            proprio: &demo_proprio,
            act: &demo_act,
            proprio_dim: FLAT_OBJECTS,
            act_dim,
        },
        &fresh,
        px.sac.shift_pad,
        &cfg.bc(),
        cfg.seed,
    )
    .map_err(stage("behaviour cloning"))?;
    drop(images);
    tracing::info!(
        loss,
        pairs = demos.len(),
        "behaviour cloning from pixels done"
    );
    save_nets(out, "base", cfg, base.encoder(), base.mlp())?;
    Ok((base, from_sessions))
}

/// Runs (or, with `resume`, continues) a training run from pixels in `out` (see the module
/// docs).
pub(crate) fn train_pixels<A: Arms>(
    arms: &A,
    cfg: &TrainConfig,
    out: &Path,
    resume: bool,
    reward: Option<RewardPlugin>,
    mut progress: impl FnMut(Progress),
) -> Result<Summary, TrainError> {
    let started = Instant::now();
    let task = arms.task();
    let act_dim = task.action_space.dim();
    let px = &cfg.pixels;
    std::fs::create_dir_all(out).map_err(stage("creating the run directory"))?;
    let state_path = out.join("progress.json");
    let resuming = resume
        && state_path.exists()
        && ["base.safetensors", "base_encoder.safetensors"]
            .iter()
            .all(|f| out.join(f).exists());
    if resume && !resuming {
        tracing::warn!("nothing to resume in {}: starting a new run", out.display());
    }
    if !resuming {
        // Fresh run: clear what a previous run left (its replay, checkpoints and fleet ledger).
        for d in ["replay", "checkpoints", "fleet"] {
            let _ = std::fs::remove_dir_all(out.join(d));
        }
    }
    let config_text = toml::to_string(cfg).map_err(stage("configuration"))?;
    write_atomic(&out.join("config.toml"), config_text.as_bytes())?;
    let shape = EncoderShape::small(px.side, px.cameras.len());
    let per = shape.input_len();
    let proprio = FLAT_OBJECTS + act_dim;
    let lc = &cfg.learner;
    let demo_episodes = cfg.demo_episodes();
    let mut demos = Vec::new();
    let mut state = RunState {
        demo_episodes,
        ..Default::default()
    };
    let base = if resuming {
        // A resumed run reads its base back; its demonstrations are in the replay's log.
        let text = std::fs::read_to_string(&state_path).map_err(stage("progress.json"))?;
        state = serde_json::from_str(&text)
            .map_err(|e| stage("progress.json")(format!("{}: {e}", state_path.display())))?;
        let (enc, mlp) = load_pixel_files(&out.join("base.safetensors"))?;
        if enc.shape() != &shape {
            return Err(stage("base policy")(format!(
                "{}: its encoder is {:?}, this configuration's is {shape:?}",
                out.join("base_encoder.safetensors").display(),
                enc.shape()
            )));
        }
        PixelNet::new(enc, mlp).map_err(stage("base policy"))?
    } else {
        let (base, from_sessions) = clone_base(arms, cfg, out, &shape, &mut demos, &mut progress)?;
        if let Some(r) = from_sessions {
            state.demo_episodes = r.used;
            state.demo_sessions = Some(r);
        }
        base
    };
    let prior_wall = state.wall_s;
    let wall = |s: &Instant| prior_wall + s.elapsed().as_secs_f64();

    // The agent: its encoder starts from the base's (features that already tell the scene
    // apart), its actor at zero (the residual starts at exactly the base).
    let agent = PixelAgent::new(
        cfg.agent.clone(),
        px.sac.clone(),
        base.encoder().params(),
        proprio,
        act_dim,
        cfg.seed,
    )
    .map_err(stage("agent"))?
    .with_residual(cfg.runtime.residual_scale);
    let reward_name = reward
        .as_ref()
        .map_or("task".to_owned(), |r| r.name.clone());
    let (reward_stage, mut hook) = match reward {
        Some(r) => (Some(r.stage), Some(r.hook)),
        None => (None, None),
    };
    let nets = Nets {
        base: base.clone(),
        actor: WeightsSlot::new(agent.agent().exploring_actor()),
        encoder: EncoderSlot::new(agent.tick_encoder().map_err(stage("agent"))?),
        proprio: FLAT_OBJECTS,
        act_dim,
    };
    // Room for every demonstration step (a resumed run reads them back from its log).
    let demo_room = (state.demo_episodes * task.episode_steps as usize)
        .max(demos.len())
        .max(1000);
    let mut replay = PixelReplay::new(
        per,
        proprio,
        act_dim,
        demo_room,
        px.replay_capacity.min(lc.replay_capacity),
        lc.n_step,
        cfg.agent.gamma,
    );
    // The replay's log: a resumed run's steps come back from it into the replay.
    let (mut online, mut last_online_episode, mut replay_error) = (0u64, None::<u64>, None);
    let (log, recovery) = PixelLog::open(&out.join("replay"), proprio, act_dim, per, &mut |s| {
        if s.source == Source::Online {
            online += 1;
            last_online_episode = Some(last_online_episode.map_or(s.episode, |e| e.max(s.episode)));
        }
        if let Err(e) = replay.push(s.source, &s.as_step()) {
            replay_error.get_or_insert(e);
        }
    })
    .map_err(stage("replay"))?;
    if let Some(e) = replay_error {
        return Err(stage("replay")(e));
    }
    if resuming {
        tracing::info!(
            records = recovery.records,
            online,
            torn_bytes = recovery.torn_bytes,
            damaged = recovery.damaged_records,
            "resumed the replay"
        );
    }
    let mut learning = PixelLearning {
        agent,
        replay,
        log,
        checkpoints: out.join("checkpoints"),
        stage: reward_stage,
        held: BTreeMap::new(),
        judged: Vec::new(),
        rewarded: Vec::new(),
        kept: Vec::new(),
        pictures_missing: 0,
        base: base.clone(),
        base_act: vec![0.0; act_dim],
        rng: reflex_core::Rng::new(cfg.seed ^ 0x51DE),
        lc: lc.clone(),
        gamma: cfg.agent.gamma,
        env_steps: online,
        updates: 0,
        owed: 0.0,
        last: UpdateStats::default(),
        actor: nets.actor.clone(),
        encoder: nets.encoder.clone(),
    };
    if resuming {
        learning.resume()?;
    } else {
        learning.take_demos(&demos)?;
    }
    drop(demos);

    // 3. The base's evaluation (the residual is exactly zero); a resumed run has it.
    let quiet = Arc::new(AtomicBool::new(false));
    let mut eval_rt = nets.runtime(arms, cfg, &quiet, 0)?;
    let evaluate =
        |prt: &mut PixelRt<A::Robot>, seeds: Vec<u64>| -> Result<(f64, f64), TrainError> {
            Ok(success_and_return(&prt.episodes(seeds.into_iter(), None)?))
        };
    let eval_seeds = || seeds(cfg.seed, 2, cfg.eval_episodes).collect::<Vec<_>>();
    // The weights published last: the learner publishes as it pauses for an evaluation.
    let snapshot = || (nets.actor.snapshot(), nets.encoder.snapshot());
    // The best evaluation's exploring actor and encoder (kept on disk across resumes).
    let keep_best = |rate: f64, (actor, encoder): &(Mlp, ConvEncoder)| {
        tracing::debug!(rate, "a new best evaluation");
        save_nets(out, "best_actor", cfg, encoder, actor)
    };
    let mut best = if resuming {
        let row = state
            .evals
            .iter()
            .max_by(|a, b| a.success_rate.total_cmp(&b.success_rate))
            .cloned()
            .ok_or_else(|| stage("progress.json")("no evaluation to resume from".to_owned()))?;
        let nets_best = match load_pixel_files(&out.join("best_actor.safetensors")) {
            Ok((enc, mlp)) => (mlp, enc),
            Err(e) => {
                tracing::warn!("the best evaluation's weights were not read back ({e}): the run's newest stand in");
                snapshot()
            }
        };
        (row.success_rate, nets_best, row.env_steps, row.updates)
    } else {
        progress(Progress::Stage("evaluating the base"));
        let r = evaluate(&mut eval_rt, eval_seeds())?;
        state.base_success_rate = r.0;
        let row = EvalRow::base(wall(&started), r, learning.agent.agent().temperature());
        state.evals.push(row.clone());
        progress(Progress::Eval(row));
        let b = snapshot();
        keep_best(r.0, &b)?;
        (r.0, b, 0u64, 0u64)
    };
    write_metrics(out, &state)?;
    write_state(&state_path, &state)?;

    // 4. Training: the learner in lock step with a simulator, on its own thread beside a
    // real-time arm (which is never held back for it).
    progress(Progress::Stage("training"));
    let paced = arms.real_time();
    let explore = Arc::new(AtomicBool::new(true));
    let mut rt = nets.runtime(arms, cfg, &explore, cfg.seed ^ 0xE)?;
    let budget_s = cfg.minutes * 60.0;
    // A resumed run's training episodes (and their seeds) continue after the last one its
    // replay holds.
    let first_episode = last_online_episode.map_or(0, |e| e + 1);
    rt.rt
        .stats()
        .episodes
        .store(first_episode, Ordering::Relaxed);
    let mut train_seeds = seeds(cfg.seed, 3, usize::MAX).skip(first_episode as usize);
    let mut episodes = state.episodes;
    let mut recent: VecDeque<bool> = VecDeque::new();
    let mut ep_success = false;
    let mut last_eval = state.evals.last().map_or(0, |r| r.env_steps);
    let mut last_progress = Instant::now();
    let mut stop_reason = "time budget";
    let mut seen = Vec::new();
    let mut confirm_index = state.confirmations.len();
    let mut reward_wait = std::time::Duration::ZERO;
    // A success detector (HIL-SERL's classifier) ends training episodes instead of the
    // robot's own judgement of success.
    if hook.as_ref().is_some_and(|h| h.detects_success()) {
        rt.rt.set_end_on_success(false);
    }
    let mut learner = if paced {
        PixelLearner::spawn(learning)?
    } else {
        PixelLearner::Inline(Box::new(learning))
    };
    // A real-time arm's loop preempts the learner (started above, so it does not inherit the
    // policy), and its code stays in memory, as in the state job.
    let fifo = paced.then(|| reflex_runtime::FifoScope::enter(70));
    if let Some(Err(e)) = fifo.as_ref().map(|f| &f.got) {
        tracing::warn!("the training loop runs without SCHED_FIFO: {e}");
    }
    let locked = paced.then(reflex_runtime::MemoryLock::code);
    if let Some(Err(e)) = locked.as_ref().map(|l| &l.got) {
        tracing::warn!("the training loop's code is not locked in memory: {e}");
    }
    // Which runtime moved the arm last (the one to brake at the end of a real-time run).
    let mut evaluated_last = false;
    let mut episode_id =
        super::driver::start_episode(&mut rt.rt, train_seeds.next().unwrap_or(0), &mut hook)?;
    rt.restart_schedule();
    let mut step_id = 0u64;
    'train: loop {
        if INTERRUPT.load(Ordering::Relaxed) {
            brake_to_rest(&mut rt.rt, paced);
            stop_reason = "interrupted";
            break;
        }
        let rep = rt.tick()?;
        if let (Some(outcome), Some(h)) = (&rep.outcome, &mut hook) {
            h.step_judged(
                episode_id,
                step_id,
                outcome,
                rt.rt.observation(),
                rt.rt.robot(),
            );
            if !rep.episode_done && h.ends_episode(episode_id, step_id, !paced) {
                // A success detector saw the task done: the step in flight ends it.
                rt.rt.end_episode();
            }
        }
        if let Some(o) = &rep.outcome {
            step_id += 1;
            ep_success |= o.success;
        }
        rt.drain(&mut seen)?;
        learner.feed(&mut rt, &mut seen)?;
        let (env_steps, updates) = learner.counts();
        if last_progress.elapsed().as_secs_f64() >= PROGRESS_EVERY_S {
            last_progress = Instant::now();
            progress(Progress::Training {
                env_steps,
                updates,
                success: state.evals.last().map(|r| r.success_rate),
                elapsed_s: started.elapsed().as_secs_f64(),
                budget_s,
            });
        }
        if !rep.episode_done {
            continue;
        }
        episodes += 1;
        recent.push_back(ep_success);
        if recent.len() > 20 {
            recent.pop_front();
        }
        ep_success = false;
        if env_steps >= last_eval + cfg.eval_every {
            last_eval = env_steps;
            // The learner pauses (publishing its newest weights) while the policy is judged.
            learner.pause()?;
            let (env_steps, updates) = learner.counts();
            evaluated_last = true;
            let r = match evaluate(&mut eval_rt, eval_seeds()) {
                Err(TrainError::Interrupted) => {
                    stop_reason = "interrupted";
                    break;
                }
                other => other?,
            };
            let row = EvalRow::trained(
                env_steps,
                updates,
                wall(&started),
                episodes,
                r,
                &recent,
                &learner.last(),
            );
            state.evals.push(row.clone());
            if r.0 >= best.0 {
                best = (r.0, snapshot(), env_steps, updates);
                keep_best(r.0, &best.1)?;
            }
            progress(Progress::Eval(row.clone()));
            write_metrics(out, &state)?;
            write_state(&out.join("progress.json"), &state)?;
            if r.0 >= cfg.target_success {
                let passed = if cfg.confirm_episodes == 0 {
                    true
                } else {
                    let first = confirm_seeds(cfg.seed, confirm_index, cfg.confirm_episodes);
                    let seeds: Vec<u64> = first.collect();
                    confirm_index += 1;
                    let c = evaluate(&mut eval_rt, seeds.clone())?;
                    let passed = c.0 >= cfg.target_success;
                    state.confirmations.push(Confirmation {
                        env_steps,
                        updates,
                        eval_success_rate: r.0,
                        episodes: seeds.len(),
                        first_seed: seeds[0],
                        success_rate: c.0,
                        passed,
                    });
                    passed
                };
                if passed {
                    state.reached_target(&row);
                    stop_reason = "target success reached";
                    break 'train;
                }
            }
            learner.resume();
        }
        if cfg.max_env_steps > 0 && env_steps >= cfg.max_env_steps {
            stop_reason = "step budget";
            break;
        }
        if started.elapsed().as_secs_f64() >= budget_s {
            break;
        }
        // A simulator can wait for the reward source before the next episode (bounded, as in
        // the state job); a real-time arm never waits.
        let waited = Instant::now();
        while !paced
            && hook.as_ref().is_some_and(|h| h.busy())
            && waited.elapsed() < super::driver::REWARD_WAIT_LIMIT
            && started.elapsed().as_secs_f64() < budget_s
            && !INTERRUPT.load(Ordering::Relaxed)
        {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        reward_wait += waited.elapsed();
        episode_id =
            super::driver::start_episode(&mut rt.rt, train_seeds.next().unwrap_or(0), &mut hook)?;
        rt.restart_schedule();
        evaluated_last = false;
        step_id = 0;
    }
    if paced && stop_reason != "interrupted" {
        // A real-time arm is left at rest, by the runtime that moved it last.
        brake_to_rest(
            if evaluated_last {
                &mut eval_rt.rt
            } else {
                &mut rt.rt
            },
            true,
        );
    }
    drop((fifo, locked));
    let learner_dropped = learner.dropped();
    let learning = learner.finish()?;
    let (env_steps, updates) = (learning.env_steps, learning.updates);
    state.wall_s = wall(&started);
    state.episodes = episodes;
    if learning.pictures_missing > 0 {
        tracing::warn!(
            pictures_missing = learning.pictures_missing,
            "the reward stage held transitions past {HELD_AT_MOST} steps: their pictures were \
             dropped and they were not learned from"
        );
    }
    let pictures_missed = rt.pictures_missed();
    if pictures_missed + learner_dropped > 0 {
        tracing::warn!(
            pictures_missed,
            learner_dropped,
            "training steps not learned from: their picture was no longer kept, or the \
             learner thread's queue was full"
        );
    }

    // 5. Hand over: the last weights, or the best evaluation's for a run ended on its budget.
    let last_rate = state.evals.last().map_or(0.0, |r| r.success_rate);
    let ended_on_budget = matches!(stop_reason, "time budget" | "step budget");
    let (actor, encoder, handed_over) = if cfg.keep_best && ended_on_budget && best.0 > last_rate {
        let (_, (actor, encoder), steps, ups) = best;
        let h = HandedOver {
            env_steps: steps,
            updates: ups,
            success_rate: best.0,
            why: "best evaluation".into(),
        };
        (actor, encoder, h)
    } else {
        let (actor, encoder) = snapshot();
        let h = HandedOver {
            env_steps,
            updates,
            success_rate: last_rate,
            why: "last".into(),
        };
        (actor, encoder, h)
    };
    let deployed =
        reflex_learn::sac::deterministic_of(&actor, act_dim).map_err(stage("saving the policy"))?;
    save_nets(out, "policy", cfg, &encoder, &deployed)?;
    drop((actor, encoder, eval_rt));
    // The held-out figure is of the files handed over, read back as `reflex eval` reads them.
    let heldout = if cfg.heldout_episodes > 0 && stop_reason != "interrupted" {
        progress(Progress::Stage("held-out evaluation"));
        match evaluate_pixel_run(arms, cfg, out, None, heldout_seeds(cfg.heldout_episodes)) {
            Ok(r) => Some(HeldOut::from_results(HELDOUT_FIRST_SEED, &r)),
            Err(TrainError::Interrupted) => None,
            Err(e) => return Err(e),
        }
    } else {
        None
    };
    if let Err(e) = plot_curves(&out.join("curve.png"), &cfg.task, &state.evals) {
        tracing::warn!("curve.png not written: {e}");
    }
    let train_s = state.wall_s.max(1e-9);
    let stats = rt.rt.stats();
    let summary = Summary {
        commit: super::COMMIT.to_owned(),
        config: serde_json::to_value(cfg).map_err(stage("summary.json"))?,
        task: cfg.task.clone(),
        seed: cfg.seed,
        env_steps,
        updates,
        wall_s: state.wall_s,
        base_success_rate: state.base_success_rate,
        final_success_rate: last_rate,
        best_success_rate: state
            .evals
            .iter()
            .map(|r| r.success_rate)
            .fold(0.0, f64::max),
        heldout,
        steps_to_target: state.steps_to_target,
        minutes_to_target: state.minutes_to_target,
        confirmations: state.confirmations.clone(),
        handed_over: Some(handed_over),
        demo_episodes: state.demo_episodes,
        demo_sessions: state.demo_sessions.clone(),
        episodes,
        updates_per_s: updates as f64 / train_s,
        env_steps_per_s: env_steps as f64 / train_s,
        dropped_transitions: rt.rt.transitions().stats().dropped
            + pictures_missed
            + learner_dropped,
        intervened_steps: 0,
        stop_reason: stop_reason.to_owned(),
        reward: reward_name,
        reward_wait_s: reward_wait.as_secs_f64(),
        deadline_misses: if paced {
            stats
                .timing
                .compute
                .count_from((1e9 / cfg.runtime.servo_rate_hz) as u64)
        } else {
            0
        },
        reward_stage: learning.stage.as_ref().map(|st| st.report()),
        clip_would_bind: 0,
        interrupted_steps: stats.stale_policy_inputs.load(Ordering::Relaxed),
        rollbacks: 0,
        replay_records: {
            let (d, o) = learning.replay.len();
            (d + o) as u64
        },
    };
    // `progress.json` as a state run leaves it: what `reflex study` reads the curves from.
    write_state(&out.join("progress.json"), &state)?;
    let text = serde_json::to_string_pretty(&summary).map_err(stage("summary.json"))?;
    write_atomic(&out.join("summary.json"), text.as_bytes())?;
    Ok(summary)
}

/// The learner's half of a run from pixels: the agent, its replay and the replay's log, the
/// reward source's stage and the frozen base (whose action completes each stored row). Fed
/// whole [`Seen`] steps: inline, in lock step with a simulator, or on its own thread beside a
/// real-time arm ([`PixelLearner`]).
struct PixelLearning {
    agent: PixelAgent,
    replay: PixelReplay,
    /// Every step stored, on disk (synced at least every `store::SYNC_INTERVAL`).
    log: PixelLog,
    /// Where the agent's checkpoints go (every `checkpoint_every` updates and at the end).
    checkpoints: std::path::PathBuf,
    stage: Option<Box<dyn RewardStage>>,
    /// Steps the stage holds, with their pictures, by (episode, step).
    held: BTreeMap<(u64, u64), Seen>,
    judged: Vec<Transition>,
    rewarded: Vec<Seen>,
    kept: Vec<Seen>,
    /// Steps whose picture was trimmed while the stage held them.
    pictures_missing: u64,
    base: PixelNet,
    base_act: Vec<f32>,
    rng: reflex_core::Rng,
    lc: reflex_learn::learner::LearnerConfig,
    gamma: f32,
    env_steps: u64,
    updates: u64,
    owed: f64,
    last: UpdateStats,
    actor: Arc<WeightsSlot>,
    encoder: Arc<EncoderSlot>,
}

/// Updates a learner may owe at most (one that is slower than the arm takes what it can).
const OWED_AT_MOST: f64 = 10_000.0;

impl PixelLearning {
    fn reward_of(&self, t: &Transition) -> f32 {
        let mut r = t.outcome.reward as f32 * self.lc.reward_scale;
        if self.lc.success_absorbing && t.outcome.success && t.outcome.terminated {
            r /= 1.0 - self.gamma;
        }
        r
    }

    /// Stores the demonstrations relative to the cloned base (its action at each picture; under
    /// a reward source each carries the stage's `demo_reward`, as the state job stores them)
    /// and fits the proprioception's normaliser to them.
    fn take_demos(&mut self, demos: &[Seen]) -> Result<(), TrainError> {
        for s in demos {
            let (p0, p1) = proprio_of(&s.t);
            self.base
                .forward(&s.image, p0, &mut self.base_act)
                .map_err(|e| stage("behaviour cloning")(format!("{e:?}")))?;
            let row: Vec<f32> = p0.iter().chain(&self.base_act).copied().collect();
            let next = next_row(&mut self.base, s, p1, &mut self.base_act)?;
            let mut t = s.t;
            if let Some(st) = &self.stage {
                t.outcome.reward = st.demo_reward(&s.t);
            }
            let reward = self.reward_of(&t);
            self.store(Source::Demo, s, &row, &next, reward)?;
        }
        self.log.sync().map_err(stage("replay"))?;
        self.agent
            .fit_proprio_normaliser(&self.replay.proprio_rows(), INPUT_MIN_STD);
        Ok(())
    }

    /// A resumed run's agent: its newest usable checkpoint (falling back to older ones), or,
    /// with none (a crash before the first), a fresh agent whose normaliser fits every row
    /// read back; published.
    fn resume(&mut self) -> Result<(), TrainError> {
        let agent = &mut self.agent;
        let found = reflex_learn::store::load_latest(&self.checkpoints, |c| agent.restore(&c))
            .map_err(stage("checkpoint"))?;
        match found {
            Some((_, path)) => {
                self.updates = self.agent.agent().updates;
                tracing::info!(updates = self.updates, "resumed from {}", path.display());
            }
            None => {
                tracing::warn!("no checkpoint to resume from: the agent starts again");
                self.agent
                    .fit_proprio_normaliser(&self.replay.proprio_rows(), INPUT_MIN_STD);
            }
        }
        self.publish()
    }

    /// Stores one step in the replay and its log.
    fn store(
        &mut self,
        source: Source,
        s: &Seen,
        proprio: &[f32],
        next_proprio: &[f32],
        reward: f32,
    ) -> Result<(), TrainError> {
        let step = PixelStep {
            episode: s.t.episode,
            step: s.t.step,
            image: &s.image,
            proprio,
            act: s.t.action.as_slice(),
            reward,
            terminated: s.t.outcome.terminated,
            episode_end: s.t.outcome.done(),
            next_image: s.last.as_deref(),
            next_proprio,
        };
        self.replay.push(source, &step).map_err(stage("replay"))?;
        self.log.append(source, &step).map_err(stage("replay"))
    }

    /// Writes a checkpoint of the agent (the replay's log synced first, so a resume finds
    /// every step the agent learned from).
    fn checkpoint(&mut self) -> Result<(), TrainError> {
        self.log.sync().map_err(stage("replay"))?;
        let mut c = self.agent.to_checkpoint();
        c.meta["env_steps"] = self.env_steps.into();
        reflex_learn::store::save_checkpoint(&self.checkpoints, self.updates, &c)
            .map_err(stage("checkpoint"))?;
        Ok(())
    }

    /// Takes the steps of `seen` (emptied): interrupted ones are left out, the rest go
    /// through the reward stage into the replay. Their picture buffers go back through
    /// `recycle`.
    fn take(
        &mut self,
        seen: &mut Vec<Seen>,
        recycle: &mut dyn FnMut(Vec<u8>),
    ) -> Result<(), TrainError> {
        let mut kept = std::mem::take(&mut self.kept);
        for s in seen.drain(..) {
            if s.t.interrupted == reflex_core::Interruption::None {
                kept.push(s);
            } else {
                recycle_seen(s, recycle);
            }
        }
        let mut rewarded = std::mem::take(&mut self.rewarded);
        match &mut self.stage {
            Some(st) => pass_through_stage(
                st.as_mut(),
                &mut kept,
                &mut self.held,
                &mut self.judged,
                &mut rewarded,
                &mut self.pictures_missing,
            ),
            None => rewarded.append(&mut kept),
        }
        self.kept = kept;
        for s in rewarded.drain(..) {
            if s.t.outcome.has_reward() {
                let (p0, p1) = proprio_of(&s.t);
                let row: Vec<f32> = p0
                    .iter()
                    .chain(s.t.base_action.as_slice())
                    .copied()
                    .collect();
                let next = next_row(&mut self.base, &s, p1, &mut self.base_act)?;
                let reward = self.reward_of(&s.t);
                self.store(Source::Online, &s, &row, &next, reward)?;
                self.env_steps += 1;
                if self.env_steps as usize >= self.lc.learning_starts {
                    self.owed = (self.owed + f64::from(self.lc.utd)).min(OWED_AT_MOST);
                }
            }
            recycle_seen(s, recycle);
        }
        self.rewarded = rewarded;
        self.log
            .sync_if_due(reflex_learn::store::SYNC_INTERVAL)
            .map_err(stage("replay"))?;
        Ok(())
    }

    /// One update when one is owed and the replay can sample a batch; whether it ran.
    fn update_once(&mut self) -> Result<bool, TrainError> {
        if self.owed < 1.0 {
            return Ok(false);
        }
        let frozen = self.updates < self.lc.critic_warmup_updates;
        let Some(b) = self
            .replay
            .sample(&mut self.rng, self.lc.batch_size, self.lc.demo_fraction)
        else {
            return Ok(false);
        };
        self.owed -= 1.0;
        self.last = self.agent.update_with(&b, frozen);
        self.updates += 1;
        if !self.agent.agent().is_finite() {
            return Err(stage("training")(
                "the agent's weights became non-finite (no rollback for pixel runs yet)".to_owned(),
            ));
        }
        if self.updates.is_multiple_of(self.lc.publish_every.max(1)) {
            self.publish()?;
        }
        if self.lc.checkpoint_every > 0 && self.updates.is_multiple_of(self.lc.checkpoint_every) {
            self.checkpoint()?;
        }
        Ok(true)
    }

    /// Publishes the exploring actor and the encoder to the runtimes' slots.
    fn publish(&self) -> Result<(), TrainError> {
        self.actor
            .publish(self.agent.agent().exploring_actor())
            .map_err(|e| stage("publishing the actor")(e.to_string()))?;
        self.encoder
            .publish(self.agent.tick_encoder().map_err(stage("agent"))?)
            .map_err(stage("publishing the encoder"))?;
        Ok(())
    }
}

/// Hands a step's picture buffers back.
fn recycle_seen(s: Seen, recycle: &mut dyn FnMut(Vec<u8>)) {
    recycle(s.image);
    if let Some(l) = s.last {
        recycle(l);
    }
}

/// How the driver and a learner thread talk: a pause for each evaluation (the learner
/// publishes its newest weights, then says it has paused), the stop, and its counters.
#[derive(Default)]
struct PixelControl {
    pause: AtomicBool,
    paused: AtomicBool,
    stop: AtomicBool,
    env_steps: AtomicU64,
    updates: AtomicU64,
}

/// Steps the queue to a learner thread holds (about 7 minutes of a 10 Hz policy).
const LEARNER_QUEUE: usize = 4096;
/// Longest the driver waits for a learner thread to pause (one update from pixels takes a
/// fraction of a second here).
const PAUSE_WAIT_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

/// The learner of a run from pixels, as the driver holds it.
enum PixelLearner {
    /// In lock step with a simulator: fed and updated between its ticks.
    Inline(Box<PixelLearning>),
    /// On its own thread beside a real-time arm: fed through a bounded queue (picture
    /// buffers come back through another), updating as fast as it can up to its ratio.
    Thread {
        tx: reflex_core::SpscSender<Seen>,
        back: Arc<reflex_core::SpscReceiver<Vec<u8>>>,
        ctl: Arc<PixelControl>,
        _stop: StopOnDrop,
        handle: Option<std::thread::JoinHandle<Result<PixelLearning, TrainError>>>,
        dropped: u64,
        last: Arc<std::sync::Mutex<UpdateStats>>,
    },
}

impl PixelLearner {
    /// Starts `learning` on its own thread.
    fn spawn(mut learning: PixelLearning) -> Result<Self, TrainError> {
        let (tx, rx) = reflex_core::spsc::<Seen>(LEARNER_QUEUE);
        let (mut back_tx, back) = reflex_core::spsc::<Vec<u8>>(2 * LEARNER_QUEUE);
        let ctl = Arc::new(PixelControl::default());
        let last = Arc::new(std::sync::Mutex::new(UpdateStats::default()));
        let (c, l) = (ctl.clone(), last.clone());
        let handle = std::thread::Builder::new()
            .name("reflex-pixel-learner".into())
            .spawn(move || -> Result<PixelLearning, TrainError> {
                let mut batch = Vec::new();
                let mut recycle = |b: Vec<u8>| {
                    let _ = back_tx.send(b);
                };
                loop {
                    if c.pause.load(Ordering::Acquire) && !c.stop.load(Ordering::Acquire) {
                        learning.publish()?;
                        c.paused.store(true, Ordering::Release);
                        while c.pause.load(Ordering::Acquire) && !c.stop.load(Ordering::Acquire) {
                            std::thread::sleep(std::time::Duration::from_millis(1));
                        }
                        c.paused.store(false, Ordering::Release);
                    }
                    let stopping = c.stop.load(Ordering::Acquire);
                    while let Some(s) = rx.pop() {
                        batch.push(s);
                    }
                    learning.take(&mut batch, &mut recycle)?;
                    c.env_steps.store(learning.env_steps, Ordering::Relaxed);
                    if stopping {
                        break;
                    }
                    if learning.update_once()? {
                        c.updates.store(learning.updates, Ordering::Relaxed);
                        if let Ok(mut g) = l.lock() {
                            *g = learning.last;
                        }
                    } else {
                        std::thread::sleep(std::time::Duration::from_millis(1));
                    }
                }
                learning.publish()?;
                learning.checkpoint()?;
                Ok(learning)
            })
            .map_err(|e| stage("learner")(format!("starting its thread: {e}")))?;
        Ok(Self::thread(tx, back, ctl, handle, last))
    }

    /// The driver's end of a learner thread `handle` fed through `tx`, giving picture buffers
    /// back through `back`, controlled by `ctl`, leaving its latest figures in `last`.
    fn thread(
        tx: reflex_core::SpscSender<Seen>,
        back: Arc<reflex_core::SpscReceiver<Vec<u8>>>,
        ctl: Arc<PixelControl>,
        handle: std::thread::JoinHandle<Result<PixelLearning, TrainError>>,
        last: Arc<std::sync::Mutex<UpdateStats>>,
    ) -> Self {
        Self::Thread {
            tx,
            back,
            _stop: StopOnDrop(ctl.clone()),
            ctl,
            handle: Some(handle),
            dropped: 0,
            last,
        }
    }

    /// Hands `seen` (emptied) to the learner; inline, updates as owed.
    fn feed<R: Robot + SceneView + reflex_core::SceneReset>(
        &mut self,
        prt: &mut PixelRt<R>,
        seen: &mut Vec<Seen>,
    ) -> Result<(), TrainError> {
        match self {
            Self::Inline(l) => {
                l.take(seen, &mut |b| prt.recycle(b))?;
                while l.update_once()? {}
            }
            Self::Thread {
                tx, back, dropped, ..
            } => {
                for s in seen.drain(..) {
                    if let Err(s) = tx.send(s) {
                        *dropped += 1;
                        recycle_seen(s, &mut |b| prt.recycle(b));
                    }
                }
                while let Some(b) = back.pop() {
                    prt.recycle(b);
                }
            }
        }
        Ok(())
    }

    /// (Steps stored, updates) so far.
    fn counts(&self) -> (u64, u64) {
        match self {
            Self::Inline(l) => (l.env_steps, l.updates),
            Self::Thread { ctl, .. } => (
                ctl.env_steps.load(Ordering::Relaxed),
                ctl.updates.load(Ordering::Relaxed),
            ),
        }
    }

    /// The latest update's figures.
    fn last(&self) -> UpdateStats {
        match self {
            Self::Inline(l) => l.last,
            Self::Thread { last, .. } => last.lock().map(|g| *g).unwrap_or_default(),
        }
    }

    /// Steps the learner thread's queue had no room for.
    fn dropped(&self) -> u64 {
        match self {
            Self::Inline(_) => 0,
            Self::Thread { dropped, .. } => *dropped,
        }
    }

    /// Stops updates until [`PixelLearner::resume`], with the newest weights published.
    fn pause(&mut self) -> Result<(), TrainError> {
        match self {
            Self::Inline(l) => l.publish(),
            Self::Thread { ctl, handle, .. } => {
                ctl.pause.store(true, Ordering::Release);
                let waited = Instant::now();
                while !ctl.paused.load(Ordering::Acquire) {
                    if handle.as_ref().is_none_or(|h| h.is_finished()) {
                        return Err(stage("learner")("its thread ended".to_owned()));
                    }
                    if waited.elapsed() > PAUSE_WAIT_LIMIT {
                        return Err(stage("learner")(format!(
                            "the learner thread did not pause within {} s",
                            PAUSE_WAIT_LIMIT.as_secs()
                        )));
                    }
                    std::thread::sleep(std::time::Duration::from_micros(200));
                }
                Ok(())
            }
        }
    }

    fn resume(&self) {
        if let Self::Thread { ctl, .. } = self {
            ctl.pause.store(false, Ordering::Release);
        }
    }

    /// The learner back, its newest weights published (a thread takes what its queue still
    /// holds first).
    fn finish(self) -> Result<PixelLearning, TrainError> {
        match self {
            Self::Inline(mut l) => {
                l.publish()?;
                l.checkpoint()?;
                Ok(*l)
            }
            Self::Thread {
                ctl, mut handle, ..
            } => {
                ctl.stop.store(true, Ordering::Release);
                let h = handle.take().expect("joined once");
                h.join()
                    .map_err(|_| stage("learner")("its thread panicked".to_owned()))?
            }
        }
    }
}

/// Stops a learner thread when the driver lets go of it (an error on the way out).
struct StopOnDrop(Arc<PixelControl>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop.store(true, Ordering::Release);
    }
}

/// Hands the transitions of `seen` to the reward source's `stage` (their pictures wait in
/// `held`) and moves every one it has rewarded, with its picture, to `rewarded`. `held` keeps
/// at most [`HELD_AT_MOST`] pictures: those of transitions the stage dropped go first; a
/// transition whose picture went is counted in `missing` and not learned from.
fn pass_through_stage(
    stage: &mut dyn RewardStage,
    seen: &mut Vec<Seen>,
    held: &mut BTreeMap<(u64, u64), Seen>,
    judged: &mut Vec<Transition>,
    rewarded: &mut Vec<Seen>,
    missing: &mut u64,
) {
    for s in seen.drain(..) {
        let t = s.t;
        held.insert((t.episode, t.step), s);
        stage.take(t, &mut |t| judged.push(t));
    }
    stage.poll(&mut |t| judged.push(t));
    for t in judged.drain(..) {
        if let Some(mut s) = held.remove(&(t.episode, t.step)) {
            s.t = t;
            rewarded.push(s);
        } else {
            // Its picture was trimmed (the stage held it longer than `HELD_AT_MOST` steps).
            *missing += 1;
        }
    }
    while held.len() > HELD_AT_MOST {
        held.pop_first();
    }
}

/// Pictures of transitions a reward stage holds, at most (a classifier waits a few steps; a
/// VLM a few episodes).
const HELD_AT_MOST: usize = 4096;

/// The proprioception after a step with the base's action there: on the last picture for a
/// step that ends its episode; otherwise the replay takes the next step's own row.
fn next_row(
    base: &mut PixelNet,
    s: &Seen,
    next_proprio: &[f32],
    act: &mut [f32],
) -> Result<Vec<f32>, TrainError> {
    match &s.last {
        Some(img) => base
            .forward(img, next_proprio, act)
            .map_err(|e| stage("base policy")(format!("{e:?}")))?,
        None => act.fill(0.0),
    }
    Ok(next_proprio.iter().chain(act.iter()).copied().collect())
}

/// The driver's side of a real-time run from pixels, between its ticks, allocates nothing once
/// it runs: the camera thread's stacks kept in the tap's ring, each step's picture looked up by
/// the sequence number its base saw, copied into a pooled buffer, handed to the learner thread
/// through its bounded queue, and the buffers coming back. Counted per thread by a counting
/// allocator (this test binary's global allocator, which only counts).
#[cfg(test)]
mod driver_alloc {
    use super::*;
    use crate::arms::SimArms;
    use reflex_core::SceneError;
    use reflex_sim::{SimRobot, Task};
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    struct Counting;

    thread_local! {
        // Const-initialised, no destructor: touching it never allocates.
        static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
    }

    // SAFETY: every call is passed to the system allocator unchanged; the counter is a
    // thread-local `Cell` that never allocates.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            ALLOCATIONS.with(|c| c.set(c.get() + 1));
            // SAFETY: the caller's contract, passed on.
            unsafe { System.alloc(layout) }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: the caller's contract, passed on.
            unsafe { System.dealloc(ptr, layout) }
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            ALLOCATIONS.with(|c| c.set(c.get() + 1));
            // SAFETY: the caller's contract, passed on.
            unsafe { System.realloc(ptr, layout, new_size) }
        }
    }

    #[global_allocator]
    static GLOBAL: Counting = Counting;

    fn allocations() -> u64 {
        ALLOCATIONS.with(|c| c.get())
    }

    /// Two cameras whose images change every 5 ms (faster than the unpaced loop's policy
    /// steps, so the tap's ring turns over), stamped ahead of the simulator's clock (so they
    /// are always fresh to the policy).
    struct Moving(Instant);

    impl Moving {
        fn stamp(&self) -> u64 {
            u64::MAX / 2 + self.0.elapsed().as_millis() as u64 / 5 * 5_000_000
        }
    }

    impl crate::pixel_deploy::ColourSource for Moving {
        fn colour(
            &self,
            _camera: &str,
            out: &mut [u8],
            _w: usize,
            _h: usize,
        ) -> Result<u64, SceneError> {
            let s = self.stamp();
            for (i, v) in out.iter_mut().enumerate() {
                *v = (i as u64 + s / 1_000_000) as u8;
            }
            Ok(s)
        }

        fn newest_ns(&self, _camera: &str) -> Option<u64> {
            Some(self.stamp())
        }

        fn cameras(&self) -> Vec<String> {
            vec!["wrist".into(), "front".into()]
        }
    }

    /// The simulator with its pictures coming from a camera thread, as a real-time arm's do.
    struct Pumped(SimArms);

    impl Arms for Pumped {
        type Robot = SimRobot;

        fn task(&self) -> &Task {
            self.0.task()
        }

        fn rate_hz(&self) -> f64 {
            self.0.rate_hz()
        }

        fn make(
            &self,
            seed: u64,
        ) -> Result<(SimRobot, reflex_core::ArmModel), crate::arms::ArmsError> {
            self.0.make(seed)
        }

        fn camera_source(
            &self,
            _robot: &SimRobot,
        ) -> Option<Box<dyn crate::pixel_deploy::ColourSource>> {
            Some(Box::new(Moving(Instant::now())))
        }
    }

    fn mlp(dims: &[usize]) -> Mlp {
        let mut net = Mlp::zeros(
            dims,
            reflex_policy::Activation::Relu,
            reflex_policy::Activation::Tanh,
        );
        let mut x = 0x9E37_79B9u32;
        for l in 0..net.num_layers() {
            let (w, b) = net.layer_mut(l).expect("layer");
            for v in w.iter_mut().chain(b.iter_mut()) {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                *v = ((x % 2001) as f32 / 1000.0 - 1.0) * 0.1;
            }
        }
        net
    }

    #[test]
    fn the_real_time_drivers_work_between_ticks_allocates_nothing() {
        let task = Task::load("reach").expect("reach");
        let act_dim = task.action_space.dim();
        let arms = Pumped(SimArms::new(task, 250.0));
        let mut cfg = TrainConfig {
            task: "reach".into(),
            obs: super::super::config::ObsMode::Pixels,
            ..TrainConfig::default()
        };
        cfg.pixels.side = 16;
        cfg.pixels.sac.shift_pad = 2;
        let shape = EncoderShape::small(16, 2);
        let params = reflex_learn::pixels::fresh_encoder(&shape, 1).expect("encoder");
        let encoder = ConvEncoder::new(params).expect("encoder");
        let f = shape.features;
        let base =
            PixelNet::new(encoder.clone(), mlp(&[f + FLAT_OBJECTS, 32, act_dim])).expect("base");
        let nets = Nets {
            base,
            actor: WeightsSlot::new(mlp(&[f + FLAT_OBJECTS + act_dim, 32, 2 * act_dim])),
            encoder: EncoderSlot::new(encoder),
            proprio: FLAT_OBJECTS,
            act_dim,
        };
        let explore = Arc::new(AtomicBool::new(true));
        let mut prt = nets.runtime(&arms, &cfg, &explore, 7).expect("runtime");
        assert!(
            matches!(prt.shots, Shots::Pump(_)),
            "pictures from a camera thread"
        );

        // A learner thread's stand-in: it takes every step and hands its buffers back, as
        // `PixelLearning::take` does once it has copied them into the replay.
        let (tx, rx) = reflex_core::spsc::<Seen>(LEARNER_QUEUE);
        let (mut back_tx, back) = reflex_core::spsc::<Vec<u8>>(2 * LEARNER_QUEUE);
        let ctl = Arc::new(PixelControl::default());
        let taken = Arc::new(AtomicU64::new(0));
        let handle = {
            let (ctl, taken) = (ctl.clone(), taken.clone());
            std::thread::spawn(move || -> Result<PixelLearning, TrainError> {
                while !ctl.stop.load(Ordering::Acquire) {
                    while let Some(s) = rx.pop() {
                        recycle_seen(s, &mut |b| {
                            let _ = back_tx.send(b);
                        });
                        taken.fetch_add(1, Ordering::Release);
                    }
                    std::thread::sleep(std::time::Duration::from_micros(200));
                }
                Err(stage("learner")("a stand-in".to_owned()))
            })
        };
        let mut learner = PixelLearner::thread(
            tx,
            back,
            ctl,
            handle,
            Arc::new(std::sync::Mutex::new(UpdateStats::default())),
        );

        // Wait for the camera thread's first stack.
        let waited = Instant::now();
        while let Shots::Pump(tap) = &mut prt.shots {
            tap.refresh();
            if !tap.ring.is_empty() || waited.elapsed().as_secs() > 10 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let mut seen = Vec::with_capacity(64);
        let mut per_episode = Vec::new();
        let mut sent = 0u64;
        for seed in 0..6u64 {
            prt.rt.reset_episode(seed).expect("reset");
            prt.restart_schedule();
            prt.shown.clear();
            let before = allocations();
            let mut steps = 0u64;
            let mut in_tick = 0;
            loop {
                prt.before_tick().expect("before the tick");
                // The tick itself (the runtime over the simulator: its physics allocates) is
                // left out; the runtime's own tests count a tick over a stand-in arm.
                let n = allocations();
                let rep = prt.rt.tick();
                in_tick += allocations() - n;
                prt.after_tick(&rep);
                steps += u64::from(rep.policy_step);
                prt.drain(&mut seen).expect("drain");
                sent += seen.len() as u64;
                learner.feed(&mut prt, &mut seen).expect("feed");
                if rep.episode_done {
                    break;
                }
            }
            per_episode.push((steps, allocations() - before - in_tick));
            // The stand-in learner gives the episode's buffers back while the next one starts,
            // as a learner does between its updates.
            let waited = Instant::now();
            while taken.load(Ordering::Acquire) < sent && waited.elapsed().as_secs() < 10 {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            learner.feed(&mut prt, &mut seen).expect("feed");
        }
        assert!(
            taken.load(Ordering::Relaxed) > 50,
            "{} steps reached the learner",
            taken.load(Ordering::Relaxed)
        );
        // A step loses its picture only when two stacks arrive within one tick (the thread
        // preempted for longer than a camera period): rare, and never a wrong picture.
        assert!(prt.pictures_missed() <= 3, "{}", prt.pictures_missed());
        assert_eq!(learner.dropped(), 0);
        // The first episodes fill the tap's ring, the buffer pool and the queues; after them
        // nothing is allocated between (or in) the ticks.
        // The counter sees the driver: its first episode fills the pool.
        assert!(per_episode[0].1 > 0, "{per_episode:?}");
        let late: u64 = per_episode[3..].iter().map(|(_, a)| a).sum();
        assert!(
            per_episode[3..].iter().all(|(s, _)| *s > 5),
            "{per_episode:?}"
        );
        assert_eq!(
            late, 0,
            "allocations per (steps, allocations) episode: {per_episode:?}"
        );
    }
}
