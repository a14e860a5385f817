//! `reflex train` with `obs = "pixels"`: the policy and the critics see the cameras and what the
//! arm knows of itself, never the objects' poses (an arm with no object tracker).
//!
//! The same steps as the state job ([`super::driver`]), on images:
//! 1. Demonstrations: the scripted expert (with its DART noise) drives the runtime while the
//!    cameras take one picture per policy step.
//! 2. The base is cloned from those pictures and the proprioception
//!    ([`reflex_learn::bc::behaviour_clone_pixels`]) and runs on the tick as a
//!    [`PixelPolicy`]: it holds the arm when its newest picture is older than
//!    `pixels.max_age_s`.
//! 3. Training: the runtime runs that base plus an exploring residual that sees the same
//!    pictures through the critics' encoder ([`ResidualPolicy::pixel_tanh_gaussian`]); SAC
//!    from pixels ([`PixelAgent`]) learns from a replay that keeps each step's picture once
//!    ([`PixelReplay`]), demonstrations mixed in (RLPD). The learner runs in lock step with the
//!    simulator on this thread (its updates use both cores); a real arm's learner thread for
//!    pixels is not built yet.
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
//! Files: `base_encoder.safetensors` + `base.safetensors` (the base's encoder and MLP),
//! `policy_encoder.safetensors` + `policy.safetensors` (the residual's, `tanh(mean)`).
//! Cameras are rendered on demand here (the simulator's [`SceneView::render`]), just before a
//! tick that starts a policy step, and stamped with the robot's clock.

use super::config::{stage, TrainConfig, TrainError};
use super::episodes::{
    confirm_seeds, heldout_seeds, seeds, success_and_return, HELDOUT_FIRST_SEED,
};
use super::plot::plot_curves;
use super::report::{
    write_atomic, write_metrics, write_state, Confirmation, EvalRow, HandedOver, HeldOut, Progress,
    RunState, Summary,
};
use super::{brake_to_rest, INTERRUPT, PROGRESS_EVERY_S};
use crate::arms::{runtime, Arms};
use reflex_core::{
    image_cell, Frame, ImageReader, ImageWriter, Robot, SceneView, Transition, FLAT_OBJECTS,
};
use reflex_learn::bc::{behaviour_clone_pixels, PixelDemos};
use reflex_learn::nn::INPUT_MIN_STD;
use reflex_learn::pixel_replay::{PixelReplay, PixelStep};
use reflex_learn::pixel_sac::PixelAgent;
use reflex_learn::replay::Source;
use reflex_learn::sac::UpdateStats;
use reflex_learn::stage::{RewardPlugin, RewardStage};
use reflex_policy::{
    ConvEncoder, EncoderParams, EncoderShape, EncoderSlot, Mlp, PixelNet, PixelPolicy,
    ResidualPolicy, WeightsSlot,
};
use reflex_runtime::{Runtime, TickReport};
use reflex_sim::ScriptedExpert;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
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

impl Cameras {
    /// Cameras `names` at `side` x `side`, and `readers` cells for the policies.
    fn new(names: &[String], side: usize, readers: usize) -> (Self, Vec<ImageReader>) {
        let len = side * side * 3 * names.len();
        let (writers, readers): (Vec<_>, Vec<_>) = (0..readers).map(|_| image_cell(len)).unzip();
        let cams = Self {
            names: names.to_vec(),
            frames: names.iter().map(|_| Frame::new(side, side)).collect(),
            stacked: vec![0; len],
            writers,
        };
        (cams, readers)
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

/// A runtime with its cameras; remembers the picture of every policy step until its transition
/// comes out of the runtime's queue.
struct PixelRt<R: Robot + SceneView> {
    rt: Runtime<R>,
    cams: Cameras,
    shown: VecDeque<((u64, u64), Vec<u8>)>,
}

/// A transition with the picture its action was chosen on, and the picture after it when it
/// ends its episode.
struct Seen {
    t: Transition,
    image: Vec<u8>,
    last: Option<Vec<u8>>,
}

impl<R: Robot + SceneView + reflex_core::SceneReset> PixelRt<R> {
    /// One tick; a tick that will start a policy step gets fresh pictures first.
    fn tick(&mut self) -> Result<TickReport, TrainError> {
        if self.rt.policy_step_next() {
            let now = self.rt.robot().now_ns();
            self.cams.publish(self.rt.robot(), now)?;
        }
        let rep = self.rt.tick();
        if rep.policy_step {
            let id = self.rt.step_in_flight();
            // Bounded: pictures of steps whose transitions never come (none in simulation).
            if self.shown.len() >= 64 {
                self.shown.pop_front();
            }
            self.shown.push_back((id, self.cams.stacked.clone()));
        }
        Ok(rep)
    }

    /// The transitions out of the queue with their pictures (a step that ends its episode
    /// gets the picture of the scene now, its last).
    fn drain(&mut self, out: &mut Vec<Seen>) -> Result<(), TrainError> {
        while let Some(t) = self.rt.transitions().pop() {
            let Some(i) = self
                .shown
                .iter()
                .position(|(id, _)| *id == (t.episode, t.step))
            else {
                continue;
            };
            let (_, image) = self.shown.remove(i).expect("found");
            let last = if t.outcome.done() {
                self.cams.shoot(self.rt.robot())?;
                Some(self.cams.stacked.clone())
            } else {
                None
            };
            out.push(Seen { t, image, last });
        }
        Ok(())
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
        for seed in seeds {
            self.rt.reset_episode(seed).map_err(stage("scene reset"))?;
            self.shown.clear();
            let (mut ret, mut success) = (0.0, false);
            loop {
                if INTERRUPT.load(Ordering::Relaxed) {
                    brake_to_rest(&mut self.rt, false);
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
                    kept.clear();
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
    let (cams, mut readers) = Cameras::new(&px.cameras, px.side, 2);
    let residual_frames = readers.pop().expect("two cells");
    let base_frames = readers.pop().expect("two cells");
    let base = PixelPolicy::new(base, base_frames, (px.max_age_s * 1e9) as u64)
        .map_err(stage("base policy"))?;
    let residual = residual(residual_frames).map_err(stage("residual policy"))?;
    let rt = runtime(arms, 0, Box::new(base), Some(residual), &cfg.runtime)?;
    Ok(PixelRt {
        rt,
        cams,
        shown: VecDeque::new(),
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
    prt.episodes(seeds, None)
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

/// Runs a fresh training run from pixels in `out` (see the module docs).
pub(crate) fn train_pixels<A: Arms>(
    arms: &A,
    cfg: &TrainConfig,
    out: &Path,
    reward: Option<RewardPlugin>,
    mut progress: impl FnMut(Progress),
) -> Result<Summary, TrainError> {
    let started = Instant::now();
    let task = arms.task();
    let act_dim = task.action_space.dim();
    let obs_dim = arms.obs_layout()?.dim();
    let px = &cfg.pixels;
    std::fs::create_dir_all(out).map_err(stage("creating the run directory"))?;
    for d in ["replay", "checkpoints", "fleet"] {
        let _ = std::fs::remove_dir_all(out.join(d));
    }
    let config_text = toml::to_string(cfg).map_err(stage("configuration"))?;
    write_atomic(&out.join("config.toml"), config_text.as_bytes())?;
    let shape = EncoderShape::small(px.side, px.cameras.len());
    let per = shape.input_len();
    let proprio = FLAT_OBJECTS + act_dim;
    let lc = &cfg.learner;

    // 1. Demonstrations, with a picture per step.
    progress(Progress::Stage("demonstrations"));
    let demo_episodes = cfg.demo_episodes();
    let mut demos = Vec::new();
    {
        let expert = ScriptedExpert::new(task, &arms.model()?);
        let noise =
            super::driver::demo_noise_policy(cfg.demo_noise_std(), obs_dim, act_dim, cfg.seed)?;
        let rt = runtime(arms, 0, Box::new(expert), noise, &cfg.runtime)?;
        let (cams, _) = Cameras::new(&px.cameras, px.side, 0);
        let mut prt = PixelRt {
            rt,
            cams,
            shown: VecDeque::new(),
        };
        prt.episodes(seeds(cfg.seed, 1, demo_episodes), Some(&mut demos))?;
    }

    // 2. The base, cloned from the pictures.
    progress(Progress::Stage("behaviour cloning"));
    let fresh: EncoderParams =
        reflex_learn::pixels::fresh_encoder(&shape, cfg.seed).map_err(stage("encoder"))?;
    let images: Vec<u8> = demos.iter().flat_map(|s| s.image.iter().copied()).collect();
    let demo_proprio: Vec<f32> = demos
        .iter()
        .flat_map(|s| proprio_of(&s.t).0.to_vec())
        .collect();
    let demo_act: Vec<f32> = demos
        .iter()
        .flat_map(|s| s.t.base_action.as_slice().to_vec())
        .collect();
    let (mut base, loss) = behaviour_clone_pixels(
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

    // The agent: its encoder starts from the base's (features that already tell the scene
    // apart), its actor at zero (the residual starts at exactly the base).
    let mut agent = PixelAgent::new(
        cfg.agent.clone(),
        px.sac.clone(),
        base.encoder().params(),
        proprio,
        act_dim,
        cfg.seed,
    )
    .map_err(stage("agent"))?
    .with_residual(cfg.runtime.residual_scale);
    let gamma = cfg.agent.gamma;
    let reward_name = reward
        .as_ref()
        .map_or("task".to_owned(), |r| r.name.clone());
    let (mut reward_stage, mut hook) = match reward {
        Some(r) => (Some(r.stage), Some(r.hook)),
        None => (None, None),
    };
    let reward_of = |t: &Transition| {
        let mut r = t.outcome.reward as f32 * lc.reward_scale;
        if lc.success_absorbing && t.outcome.success && t.outcome.terminated {
            r /= 1.0 - gamma;
        }
        r
    };
    let demo_cap = demos.len().max(1000);
    let mut replay = PixelReplay::new(
        per,
        proprio,
        act_dim,
        demo_cap,
        px.replay_capacity.min(lc.replay_capacity),
        lc.n_step,
        gamma,
    );
    // Demonstrations are stored relative to the cloned base: its action at each picture.
    let mut base_act = vec![0.0f32; act_dim];
    for s in &demos {
        let (p0, p1) = proprio_of(&s.t);
        base.forward(&s.image, p0, &mut base_act)
            .map_err(|e| stage("behaviour cloning")(format!("{e:?}")))?;
        let row: Vec<f32> = p0.iter().chain(&base_act).copied().collect();
        let next = next_row(&mut base, s, p1, &mut base_act)?;
        // Under a reward source, a demonstration carries its `demo_reward` (the task's
        // success, as the state job stores them).
        let mut t = s.t;
        if let Some(st) = &reward_stage {
            t.outcome.reward = st.demo_reward(&s.t);
        }
        push_seen(&mut replay, Source::Demo, s, &row, &next, reward_of(&t))?;
    }
    agent.fit_proprio_normaliser(&replay.proprio_rows(), INPUT_MIN_STD);
    drop(demos);

    let nets = Nets {
        base: base.clone(),
        actor: WeightsSlot::new(agent.agent().exploring_actor()),
        encoder: EncoderSlot::new(agent.tick_encoder().map_err(stage("agent"))?),
        proprio: FLAT_OBJECTS,
        act_dim,
    };
    let publish = |agent: &PixelAgent| -> Result<(), TrainError> {
        nets.actor
            .publish(agent.agent().exploring_actor())
            .map_err(|e| stage("publishing the actor")(e.to_string()))?;
        nets.encoder
            .publish(agent.tick_encoder().map_err(stage("agent"))?)
            .map_err(stage("publishing the encoder"))?;
        Ok(())
    };

    // 3. The base's evaluation (the residual is exactly zero).
    let quiet = Arc::new(AtomicBool::new(false));
    let mut eval_rt = nets.runtime(arms, cfg, &quiet, 0)?;
    let mut state = RunState {
        demo_episodes,
        ..Default::default()
    };
    let wall = |s: &Instant| s.elapsed().as_secs_f64();
    progress(Progress::Stage("evaluating the base"));
    let evaluate =
        |prt: &mut PixelRt<A::Robot>, seeds: Vec<u64>| -> Result<(f64, f64), TrainError> {
            Ok(success_and_return(&prt.episodes(seeds.into_iter(), None)?))
        };
    let eval_seeds = || seeds(cfg.seed, 2, cfg.eval_episodes).collect::<Vec<_>>();
    let r = evaluate(&mut eval_rt, eval_seeds())?;
    state.base_success_rate = r.0;
    let row = EvalRow::base(wall(&started), r, agent.agent().temperature());
    state.evals.push(row.clone());
    progress(Progress::Eval(row));
    let snapshot = |agent: &PixelAgent| -> Result<(Mlp, ConvEncoder), TrainError> {
        Ok((
            agent.agent().exploring_actor(),
            agent.tick_encoder().map_err(stage("agent"))?,
        ))
    };
    let mut best = (0.0f64, snapshot(&agent)?, 0u64, 0u64);
    best.0 = r.0;
    write_metrics(out, &state)?;
    write_state(&out.join("progress.json"), &state)?;

    // 4. Training, the learner in lock step.
    progress(Progress::Stage("training"));
    let explore = Arc::new(AtomicBool::new(true));
    let mut rt = nets.runtime(arms, cfg, &explore, cfg.seed ^ 0xE)?;
    let budget_s = cfg.minutes * 60.0;
    let mut train_seeds = seeds(cfg.seed, 3, usize::MAX);
    let mut rng = reflex_core::Rng::new(cfg.seed ^ 0x51DE);
    let (mut env_steps, mut updates, mut episodes) = (0u64, 0u64, 0u64);
    let mut owed = 0.0f64;
    let mut last = UpdateStats::default();
    let mut recent: VecDeque<bool> = VecDeque::new();
    let mut ep_success = false;
    let mut last_eval = 0u64;
    let mut last_progress = Instant::now();
    let mut stop_reason = "time budget";
    let mut seen = Vec::new();
    let mut confirm_index = 0usize;
    // Under a reward source: transitions its stage holds, with their pictures, by (episode,
    // step), and the ones it passed on.
    let mut held: BTreeMap<(u64, u64), Seen> = BTreeMap::new();
    let (mut judged, mut rewarded) = (Vec::new(), Vec::new());
    let mut pictures_missing = 0u64;
    let mut reward_wait = std::time::Duration::ZERO;
    // A success detector (HIL-SERL's classifier) ends training episodes instead of the
    // robot's own judgement of success.
    if hook.as_ref().is_some_and(|h| h.detects_success()) {
        rt.rt.set_end_on_success(false);
    }
    let mut episode_id =
        super::driver::start_episode(&mut rt.rt, train_seeds.next().unwrap_or(0), &mut hook)?;
    let mut step_id = 0u64;
    'train: loop {
        if INTERRUPT.load(Ordering::Relaxed) {
            brake_to_rest(&mut rt.rt, false);
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
            if !rep.episode_done && h.ends_episode(episode_id, step_id, true) {
                // A success detector saw the task done: the step in flight ends it.
                rt.rt.end_episode();
            }
        }
        if rep.outcome.is_some() {
            step_id += 1;
        }
        rt.drain(&mut seen)?;
        seen.retain(|s| s.t.interrupted == reflex_core::Interruption::None);
        if let Some(st) = &mut reward_stage {
            pass_through_stage(
                st.as_mut(),
                &mut seen,
                &mut held,
                &mut judged,
                &mut rewarded,
                &mut pictures_missing,
            );
        } else {
            rewarded.append(&mut seen);
        }
        for s in rewarded.drain(..) {
            if !s.t.outcome.has_reward() {
                continue;
            }
            let (p0, p1) = proprio_of(&s.t);
            let row: Vec<f32> = p0
                .iter()
                .chain(s.t.base_action.as_slice())
                .copied()
                .collect();
            let next = next_row(&mut base, &s, p1, &mut base_act)?;
            push_seen(
                &mut replay,
                Source::Online,
                &s,
                &row,
                &next,
                reward_of(&s.t),
            )?;
            env_steps += 1;
            ep_success |= s.t.outcome.success;
            if env_steps as usize >= lc.learning_starts {
                owed += f64::from(lc.utd);
            }
        }
        while owed >= 1.0 {
            owed -= 1.0;
            let frozen = updates < lc.critic_warmup_updates;
            let Some(b) = replay.sample(&mut rng, lc.batch_size, lc.demo_fraction) else {
                break;
            };
            last = agent.update_with(&b, frozen);
            updates += 1;
            if !agent.agent().is_finite() {
                return Err(stage("training")(
                    "the agent's weights became non-finite (no rollback for pixel runs yet)"
                        .to_owned(),
                ));
            }
            if updates % lc.publish_every.max(1) == 0 {
                publish(&agent)?;
            }
        }
        if last_progress.elapsed().as_secs_f64() >= PROGRESS_EVERY_S {
            last_progress = Instant::now();
            progress(Progress::Training {
                env_steps,
                updates,
                success: state.evals.last().map(|r| r.success_rate),
                elapsed_s: wall(&started),
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
            publish(&agent)?;
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
                &last,
            );
            state.evals.push(row.clone());
            if r.0 >= best.0 {
                best = (r.0, snapshot(&agent)?, env_steps, updates);
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
        }
        if cfg.max_env_steps > 0 && env_steps >= cfg.max_env_steps {
            stop_reason = "step budget";
            break;
        }
        if wall(&started) >= budget_s {
            break;
        }
        // A simulator can wait for the reward source before the next episode (bounded, as in
        // the state job).
        let waited = Instant::now();
        while hook.as_ref().is_some_and(|h| h.busy())
            && waited.elapsed() < super::driver::REWARD_WAIT_LIMIT
            && wall(&started) < budget_s
            && !INTERRUPT.load(Ordering::Relaxed)
        {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        reward_wait += waited.elapsed();
        episode_id =
            super::driver::start_episode(&mut rt.rt, train_seeds.next().unwrap_or(0), &mut hook)?;
        step_id = 0;
    }
    state.wall_s = wall(&started);
    state.episodes = episodes;
    if pictures_missing > 0 {
        tracing::warn!(
            pictures_missing,
            "the reward stage held transitions past {HELD_AT_MOST} steps: their pictures were \
             dropped and they were not learned from"
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
        let (actor, encoder) = snapshot(&agent)?;
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
        demo_episodes,
        episodes,
        updates_per_s: updates as f64 / train_s,
        env_steps_per_s: env_steps as f64 / train_s,
        dropped_transitions: rt.rt.transitions().stats().dropped,
        intervened_steps: 0,
        stop_reason: stop_reason.to_owned(),
        reward: reward_name,
        reward_wait_s: reward_wait.as_secs_f64(),
        deadline_misses: 0,
        reward_stage: reward_stage.as_ref().map(|st| st.report()),
        clip_would_bind: 0,
        interrupted_steps: stats.stale_policy_inputs.load(Ordering::Relaxed),
        rollbacks: 0,
        replay_records: {
            let (d, o) = replay.len();
            (d + o) as u64
        },
    };
    // `progress.json` as a state run leaves it: what `reflex study` reads the curves from.
    write_state(&out.join("progress.json"), &state)?;
    let text = serde_json::to_string_pretty(&summary).map_err(stage("summary.json"))?;
    write_atomic(&out.join("summary.json"), text.as_bytes())?;
    Ok(summary)
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

fn push_seen(
    replay: &mut PixelReplay,
    source: Source,
    s: &Seen,
    proprio: &[f32],
    next_proprio: &[f32],
    reward: f32,
) -> Result<(), TrainError> {
    replay
        .push(
            source,
            &PixelStep {
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
            },
        )
        .map_err(stage("replay"))
}
