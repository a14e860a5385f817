//! `reflex teleop`: a correction session on the simulated arm, or on a ros2_control arm through
//! the ROS 2 bridge ([`SessionRobot`]; the bridge's operator topics reach the page's hub, which
//! arbitrates between them and the page). The policy acts in real time,
//! episode after episode; the operator watches the page [`reflex_teleop::TeleopServer`] serves
//! (on loopback by default, behind a random access token) and takes over by holding the intervene
//! control; success and failure presses end the episode with that label; the page's e-stop
//! brakes the arm and a re-arm resumes the session with a new episode.
//!
//! The control thread runs the loop and resets the scene between episodes (episode `i` is
//! scene `seed + i`); a drain thread takes the transitions, keeps the page's status and the
//! episode table, and with `--learn` ([`learn`]) hands them on to the learner's thread.
//! [`record`] writes the session's recording (and replays it); [`cameras`] its camera streams,
//! rendered by the control thread after every tick that begins a policy step and written by the
//! drain thread. [`operator`] is the scripted operator, a client of the same WebSocket a
//! person's page is.

pub mod cameras;
pub mod learn;
pub mod operator;
pub mod record;

use crate::run::{load_policies, sim_runtime_with, Policies, RunError};
use learn::{LearnSpec, LiveLearner};
use reflex_core::{Frame, OperatorCommand, SceneView, Transition};
use reflex_learn::learner::LearnerShared;
use reflex_policy::{ObsLayout, WeightsSlot};
use reflex_runtime::{EStop, NetPolicy, ResidualPolicy, RuntimeStats};
use reflex_sim::Task;
use reflex_teleop::{
    EpisodeRow, FramesFn, LearningStatus, OperatorHub, SessionInfo, Status, StatusFn, TeleopServer,
    RECENT_EPISODES,
};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The size the cameras are rendered at (for the page and the recording).
const VIEW_SIZE: (usize, usize) = (160, 120);

/// Which arm a session drives.
#[derive(Clone, Debug, Default)]
pub enum SessionRobot {
    /// The built-in simulator (scene `seed + i` for episode `i`).
    #[default]
    Sim,
    /// A ros2_control arm through the ROS 2 bridge, as these ROS arguments configure it (its
    /// parameter file: topics, limits, cameras, the reset service, the operator topics).
    Ros(reflex_ros::RosArgs),
}

/// What to run.
#[derive(Clone, Debug)]
pub struct TeleopSpec {
    /// The arm.
    pub robot: SessionRobot,
    /// The task.
    pub task: Task,
    /// `scripted` (the task's expert) or a base policy file.
    pub policy: String,
    /// A residual policy file.
    pub residual: Option<PathBuf>,
    /// The loop rate, Hz (default: the policy files', else 500).
    pub servo_rate_hz: Option<f64>,
    /// Seed of the first scene; episode i uses `seed + i`.
    pub seed: u64,
    /// Where to serve the page (another address than loopback only with `--bind`; the token is
    /// always needed).
    pub bind: SocketAddr,
    /// Learn from the session (`--learn`): the policies come from the run it continues, not
    /// from `policy` and `residual`.
    pub learn: Option<LearnSpec>,
    /// Where to record the session (`recording.jsonl`, `header.json`) when it does not learn
    /// (a learning session records into its own directory); `None`: not recorded.
    pub record: Option<PathBuf>,
    /// Record the cameras' frames with the session, one per policy step ([`cameras`]; needs
    /// the system's `ffmpeg`: without it the session warns and records no frames).
    pub record_frames: bool,
    /// Policy steps the arm holds still after the task's success before the episode ends
    /// ([`reflex_runtime::Runtime::set_success_hold`]; 0: the success ends it at once). The
    /// finished scene is then recorded `hold + 1` times per success: positives for a success
    /// classifier trained from the session (`reflex classifier train --sessions
    /// --positive-last`).
    pub success_hold_steps: u32,
}

/// Frame sets in the pool between the control thread and the recorder (a few seconds of
/// frames at a policy's 10 Hz).
const FRAME_POOL: usize = 32;

/// What a session did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct TeleopReport {
    /// Episodes that ended (not aborted by the e-stop).
    pub episodes: u64,
    /// Of them, successes (the task's, or the operator's label).
    pub successes: u64,
    /// Episodes the operator ended with a label.
    pub labelled: u64,
    /// Policy steps.
    pub policy_steps: u64,
    /// Policy steps the operator drove.
    pub intervened_steps: u64,
    /// E-stop presses from the page.
    pub estops: u64,
    /// Operator input messages applied.
    pub inputs: u64,
    /// Operator messages refused.
    pub refused: u64,
    /// Episodes the operator discarded (re-record): neither recorded nor learned from.
    pub discarded: u64,
    /// With `--learn`: updates over the run the session continues, and weights published to
    /// the running policy during the session.
    pub updates: Option<u64>,
    /// With `--learn`: weights published during the session.
    pub published: Option<u64>,
    /// With `--learn`: transitions the learner's queue had no room for.
    pub dropped_for_learner: Option<u64>,
    /// Every finished episode, in order.
    pub episode_rows: Vec<SessionEpisode>,
    /// Camera frames recorded per camera (`None`: frames were not recorded).
    pub frames_recorded: Option<u64>,
    /// Policy steps whose frames were skipped because the recorder had fallen behind.
    pub frames_skipped: u64,
}

/// One finished episode of a session (a row of `episodes.csv`).
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct SessionEpisode {
    /// The episode, as the page shows it.
    #[serde(flatten)]
    pub row: EpisodeRow,
    /// Seconds into the session it ended.
    pub wall_s: f64,
    /// Learner updates by then (0 without `--learn`).
    pub updates: u64,
}

/// The learner's side of a running session.
struct Learning {
    shared: Arc<LearnerShared>,
    actor_slot: Arc<WeightsSlot>,
    thread: Option<std::thread::JoinHandle<Result<reflex_learn::learner::Learner, String>>>,
    cfg: crate::train::TrainConfig,
    layout: ObsLayout,
    spec: LearnSpec,
    published_at_start: u64,
    dropped: Arc<AtomicU64>,
    next_snapshot_s: f64,
}

/// A running session.
pub struct TeleopSession {
    server: TeleopServer,
    hub: Arc<OperatorHub>,
    stats: Arc<RuntimeStats>,
    estop: EStop,
    stop: Arc<AtomicBool>,
    control: Option<std::thread::JoinHandle<Result<(), String>>>,
    drain: Option<std::thread::JoinHandle<()>>,
    ros_forward: Option<std::thread::JoinHandle<()>>,
    rows: Arc<Mutex<Vec<SessionEpisode>>>,
    learning: Option<Learning>,
    task: Task,
    started: Instant,
    frames_recorded: Arc<Mutex<Option<u64>>>,
    frames_skipped: Arc<AtomicU64>,
}

/// The session's policies: from policy files, or (learning) from the run it continues, with
/// the learner's exploring actor as the residual. `model` is the arm's (the scripted expert
/// plans on it), `layout` the task's observation layout.
fn session_policies(
    spec: &TeleopSpec,
    model: &reflex_core::ArmModel,
    layout: ObsLayout,
) -> Result<(Policies, Option<LiveLearner>), RunError> {
    let Some(l) = &spec.learn else {
        let p = load_policies(
            &spec.task,
            model,
            layout,
            &spec.policy,
            spec.residual.as_deref(),
            None,
            spec.servo_rate_hz.or(Some(500.0)),
            500.0,
        )?;
        return Ok((p, None));
    };
    let cfg = learn::prepare(l, &spec.task)?;
    let rate = cfg.runtime.servo_rate_hz;
    if let Some(r) = spec.servo_rate_hz {
        if (r - rate).abs() > 1e-9 {
            return Err(RunError::Setting(format!(
                "--rate {r}: the run this session continues trained at {rate} Hz ({})",
                l.dir.join("config.toml").display()
            )));
        }
    }
    let live = learn::open(cfg, &l.dir, &spec.task, layout)?;
    let (obs_dim, act_dim) = (layout.dim(), spec.task.action_space.dim());
    let shape = |e: reflex_runtime::PolicyShapeError| RunError::Setting(e.to_string());
    let base =
        NetPolicy::new(WeightsSlot::new(live.base.clone()), obs_dim, act_dim).map_err(shape)?;
    let residual = ResidualPolicy::tanh_gaussian(
        live.actor_slot.clone(),
        obs_dim,
        act_dim,
        Arc::new(AtomicBool::new(true)),
        live.cfg.seed ^ 0x7E1E,
    )
    .map_err(shape)?;
    let p = Policies {
        base: Box::new(base),
        residual: Some(residual),
        residual_scale: live.cfg.runtime.residual_scale,
        servo_rate_hz: rate,
    };
    Ok((p, Some(live)))
}

fn ros_error(e: crate::ros::RosJobError) -> RunError {
    RunError::Setting(e.to_string())
}

impl TeleopSession {
    /// Builds the runtime (over the simulator, or over a ros2_control arm through the bridge),
    /// starts the control loop and the page's server.
    pub fn start(spec: &TeleopSpec) -> Result<Self, RunError> {
        let estop = EStop::new();
        match &spec.robot {
            SessionRobot::Sim => {
                let mut env = reflex_sim::Env::new(spec.task.clone())?;
                let layout = ObsLayout::of(&env.reset(spec.seed)?);
                let model = env.model().clone();
                let (p, live) = session_policies(spec, &model, layout)?;
                let first = live.as_ref().map_or(0, |l| l.first_episode);
                let built = sim_runtime_with(
                    &spec.task,
                    p.base,
                    p.residual,
                    p.residual_scale,
                    p.servo_rate_hz,
                    spec.seed + first,
                    estop.clone(),
                )?;
                Self::start_on(spec, built.runtime, live, estop, true, None)
            }
            SessionRobot::Ros(args) => {
                let (robot, params, layout) =
                    crate::ros::connect_arm(&spec.task, args, "reflex", estop.clone())
                        .map_err(ros_error)?;
                let model = robot.model().clone();
                let (p, live) = session_policies(spec, &model, layout)?;
                let rt = crate::ros::arm_runtime(
                    &spec.task,
                    robot,
                    &params,
                    p.base,
                    p.residual,
                    p.residual_scale,
                    p.servo_rate_hz,
                    estop.clone(),
                )
                .map_err(ros_error)?;
                // The operator topics (TwistStamped, Joy) reach the hub, which arbitrates them
                // with the page's inputs and keeps one count of presses.
                let (tx, rx) = reflex_core::latest::<OperatorCommand>();
                rt.robot()
                    .attach_operator(tx, crate::ros::operator_mapper(&spec.task, &params));
                let resets = !params.reset_service.is_empty();
                if !resets {
                    tracing::warn!(
                        "the bridge has no reset service: each episode starts where the arm is \
                         (the operator sets the scene up)"
                    );
                }
                Self::start_on(spec, rt, live, estop, resets, Some(rx))
            }
        }
    }

    /// The session on a built runtime: `resets` says whether the robot rebuilds its scene
    /// between episodes (else the next episode starts where the arm is); `ros_operator` is
    /// the cell the bridge writes operator commands to.
    fn start_on<R>(
        spec: &TeleopSpec,
        mut rt: reflex_runtime::Runtime<R>,
        live: Option<LiveLearner>,
        estop: EStop,
        resets: bool,
        ros_operator: Option<reflex_core::LatestReceiver<OperatorCommand>>,
    ) -> Result<Self, RunError>
    where
        R: reflex_core::Robot + reflex_core::SceneReset + SceneView + Send + 'static,
    {
        // Episode i is scene seed + i. A learning session's ids continue the run's (the replay
        // knows the last one used). Every episode, the first too, starts with a reset, as a
        // replay of the recording does.
        let first = match &live {
            Some(l) => {
                rt.stats()
                    .episodes
                    .store(l.first_episode, Ordering::Relaxed);
                l.first_episode
            }
            None => rt.stats().episodes.load(Ordering::Relaxed),
        };
        if resets {
            rt.reset_episode(spec.seed + first)
                .map_err(|e| RunError::Control(e.to_string()))?;
        }
        // The cameras the page shows and the recording keeps: the robot's (the simulator's
        // front and wrist; the bridge's configured camera topics).
        let view_cameras: Vec<String> = rt.robot().cameras().into_iter().take(4).collect();
        let record_dir = spec
            .learn
            .as_ref()
            .map(|l| l.dir.clone())
            .or_else(|| spec.record.clone());
        let policy_rate_hz = rt.config().servo_rate_hz / f64::from(rt.ticks_per_step().max(1));
        let mut frames_ok = true;
        let mut recorder = match &record_dir {
            Some(dir) => {
                if spec.learn.is_none() && dir.join(record::RECORDING).exists() {
                    return Err(RunError::Setting(format!(
                        "--out {}: already holds a recorded session: choose another directory",
                        dir.display()
                    )));
                }
                let cameras = if spec.record_frames {
                    let names: Vec<&str> = view_cameras.iter().map(String::as_str).collect();
                    match cameras::CameraRecorder::open(
                        dir,
                        &names,
                        VIEW_SIZE.0,
                        VIEW_SIZE.1,
                        policy_rate_hz,
                    ) {
                        Ok(c) => Some(c),
                        Err(e) => {
                            tracing::warn!("camera frames are not recorded: {e}");
                            frames_ok = false;
                            None
                        }
                    }
                } else {
                    None
                };
                let r = record::Recorder::open(
                    dir,
                    &record::SessionHeader {
                        task: spec.task.name.clone(),
                        servo_rate_hz: rt.config().servo_rate_hz,
                        seed: spec.seed,
                        policy: if spec.learn.is_some() {
                            "base.safetensors".into()
                        } else {
                            spec.policy.clone()
                        },
                        residual: if spec.learn.is_some() {
                            Some("the live learner's actor".into())
                        } else {
                            spec.residual.as_ref().map(|p| p.display().to_string())
                        },
                        learning: spec.learn.is_some(),
                        commit: crate::train::COMMIT.to_owned(),
                        policy_rate_hz,
                        cameras: if cameras.is_some() {
                            view_cameras.clone()
                        } else {
                            Vec::new()
                        },
                        frame_size: [VIEW_SIZE.0, VIEW_SIZE.1],
                        started_unix_ms: record::unix_ms(),
                        robot: match spec.robot {
                            SessionRobot::Sim => "sim".into(),
                            SessionRobot::Ros(_) => "ros".into(),
                        },
                        success_hold_steps: spec.success_hold_steps,
                    },
                )?;
                Some(match cameras {
                    Some(c) => r.with_cameras(c),
                    None => r,
                })
            }
            None => None,
        };
        rt.set_success_hold(spec.success_hold_steps);
        let recording_frames = recorder.is_some() && spec.record_frames && frames_ok;
        let stats = rt.stats().clone();
        let transitions = rt.transitions().clone();
        let hub = Arc::new(OperatorHub::new(
            rt.operator().clone(),
            spec.task.action_space,
            estop.clone(),
        ));
        let stop = Arc::new(AtomicBool::new(false));
        // The cameras' newest views: rendered by the control thread between stretches of the
        // loop (the simulated scene is the control thread's), encoded by the server's thread.
        let views: Arc<Mutex<Vec<(String, u64, Frame)>>> = Arc::new(Mutex::new(
            view_cameras
                .iter()
                .map(|c| (c.clone(), 0, Frame::new(VIEW_SIZE.0, VIEW_SIZE.1)))
                .collect(),
        ));

        // Recorded frames: sets go round from a pool (the control thread fills them, the drain
        // thread writes them and hands them back), so the control thread never allocates them.
        let (mut filled_tx, filled_rx) = reflex_core::spsc::<cameras::FrameSet>(FRAME_POOL);
        let (mut free_tx, free_rx) = reflex_core::spsc::<cameras::FrameSet>(FRAME_POOL);
        if recording_frames {
            for _ in 0..FRAME_POOL {
                let set = cameras::FrameSet::new(view_cameras.len(), VIEW_SIZE.0, VIEW_SIZE.1);
                let _ = free_tx.send(set);
            }
        }
        let frames_skipped = Arc::new(AtomicU64::new(0));

        // The control thread: episodes back to back in real time; after an e-stop, waits for
        // the re-arm and starts a new episode. Every 200 ms of loop, the views are rendered;
        // when frames are recorded, the cameras are rendered after every tick that begins a
        // policy step.
        let control = {
            let (stop, estop, first_seed) = (stop.clone(), estop.clone(), spec.seed);
            let views = views.clone();
            let skipped = frames_skipped.clone();
            let cams = view_cameras.clone();
            std::thread::Builder::new()
                .name("reflex-control".into())
                .spawn(move || -> Result<(), String> {
                    let mut failure = None;
                    let mut scratch = Frame::new(VIEW_SIZE.0, VIEW_SIZE.1);
                    let mut rendered = 0u64;
                    while !stop.load(Ordering::Acquire) {
                        rendered += 1;
                        for camera in &cams {
                            if rt.robot().render(camera, &mut scratch).is_err() {
                                continue;
                            }
                            // Never waits: a view the server is reading is skipped.
                            if let Ok(mut v) = views.try_lock() {
                                if let Some(slot) = v.iter_mut().find(|(c, _, _)| c == camera) {
                                    slot.1 = rendered;
                                    std::mem::swap(&mut slot.2, &mut scratch);
                                }
                            }
                        }
                        let on_step = |rt: &mut reflex_runtime::Runtime<R>| {
                            if !recording_frames {
                                return;
                            }
                            let Some(mut set) = free_rx.pop() else {
                                skipped.fetch_add(1, Ordering::Relaxed);
                                return;
                            };
                            (set.episode, set.step) = rt.step_in_flight();
                            for (camera, frame) in cams.iter().zip(&mut set.frames) {
                                if rt.robot().render(camera, frame).is_err() {
                                    frame.rgb.fill(0);
                                }
                            }
                            // The pool holds as many sets as the queue has room for.
                            let _ = filled_tx.send(set);
                        };
                        rt.run_observed(Duration::from_millis(200), true, on_step, |rt, _| {
                            while estop.is_latched() && !stop.load(Ordering::Acquire) {
                                std::thread::sleep(Duration::from_millis(20));
                            }
                            if stop.load(Ordering::Acquire) {
                                return false;
                            }
                            if !resets {
                                // The next episode starts where the arm is.
                                return true;
                            }
                            // The id the next episode takes.
                            let next = rt.stats().episodes.load(Ordering::Relaxed);
                            match rt.reset_episode(first_seed + next) {
                                Ok(()) => true,
                                Err(e) => {
                                    failure = Some(e.to_string());
                                    false
                                }
                            }
                        });
                        if let Some(e) = failure.take() {
                            return Err(e);
                        }
                    }
                    rt.shutdown((2.0 * rt.config().servo_rate_hz) as u64, true);
                    Ok(())
                })
                .map_err(|e| RunError::Control(e.to_string()))?
        };

        // The learner's thread, fed by the drain thread (the runtime's queue has one reader).
        let rows: Arc<Mutex<Vec<SessionEpisode>>> = Arc::new(Mutex::new(Vec::new()));
        let dropped = Arc::new(AtomicU64::new(0));
        let (mut forward, learning) = match live {
            None => (None, None),
            Some(live) => {
                let (tx, rx) = reflex_core::spsc::<Transition>(1 << 16);
                let published_at_start = live.shared.published.load(Ordering::Relaxed);
                let thread = live.learner.spawn(rx);
                let l = spec.learn.clone().expect("learning");
                let thread = std::thread::Builder::new()
                    .name("reflex-learner-join".into())
                    .spawn(move || {
                        thread
                            .join()
                            .map_err(|_| "the learner thread panicked".to_string())?
                            .map_err(|e| e.to_string())
                    })
                    .map_err(|e| RunError::Control(e.to_string()))?;
                (
                    Some(tx),
                    Some(Learning {
                        shared: live.shared,
                        actor_slot: live.actor_slot,
                        thread: Some(thread),
                        cfg: live.cfg,
                        layout: live.layout,
                        next_snapshot_s: l.snapshot_every_s,
                        spec: l,
                        published_at_start,
                        dropped: dropped.clone(),
                    }),
                )
            }
        };
        let learner_shared = learning.as_ref().map(|l| l.shared.clone());

        // The drain thread: the page's status, the episode table, the learner's feed.
        let board = Arc::new(Mutex::new(Status::default()));
        let term_names = {
            use reflex_core::StepJudge;
            reflex_sim::TaskJudge::new(&spec.task).term_names()
        };
        let session_start = Instant::now();
        let frames_recorded: Arc<Mutex<Option<u64>>> = Arc::default();
        let drain = {
            let (board, stop, rows, shared) = (
                board.clone(),
                stop.clone(),
                rows.clone(),
                learner_shared.clone(),
            );
            let frames_recorded = frames_recorded.clone();
            std::thread::Builder::new()
                .name("reflex-teleop-drain".into())
                .spawn(move || {
                    let mut current = EpisodeRow::default();
                    let mut last: Option<Transition> = None;
                    let mut done = false;
                    // The episode in flight's steps, held back until it ends: a re-record
                    // discards them (the learner never sees them; the recorder drops the
                    // episode, as it drops every episode cut short).
                    let mut held: Vec<Transition> = Vec::with_capacity(1024);
                    // Frames first: an episode's last frame was sent before its last
                    // transition, so it is written before the recorder closes the episode.
                    let mut pump_frames = |recorder: &mut Option<record::Recorder>| {
                        while let Some(set) = filled_rx.pop() {
                            if let Some(r) = recorder {
                                r.frames(&set);
                            }
                            let _ = free_tx.send(set);
                        }
                    };
                    let mut hand_on = |held: &mut Vec<Transition>, keep: bool| {
                        pump_frames(&mut recorder);
                        for t in held.drain(..) {
                            if let Some(r) = &mut recorder {
                                r.take(&t);
                            }
                            if !keep {
                                continue;
                            }
                            if let Some(tx) = &mut forward {
                                if tx.send(t).is_err() {
                                    dropped.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                    };
                    loop {
                        let stopping = stop.load(Ordering::Acquire);
                        while let Some(t) = transitions.pop() {
                            if held.first().is_some_and(|h| h.episode != t.episode) {
                                // The e-stop cut the last episode short: its steps are data.
                                hand_on(&mut held, true);
                            }
                            if t.episode != current.episode || current.steps == 0 {
                                // A new episode (one cut short by the e-stop is not a row).
                                current = EpisodeRow {
                                    episode: t.episode,
                                    ..Default::default()
                                };
                            }
                            current.steps += 1;
                            current.intervened += u64::from(t.intervened);
                            current.success |= t.outcome.success;
                            held.push(t);
                            let discarded = t.interrupted == reflex_core::Interruption::Discarded;
                            if (t.outcome.terminated || t.outcome.truncated) && !discarded {
                                let updates = shared
                                    .as_ref()
                                    .map_or(0, |s| s.updates.load(Ordering::Relaxed));
                                rows.lock().unwrap_or_else(|p| p.into_inner()).push(
                                    SessionEpisode {
                                        row: current,
                                        wall_s: session_start.elapsed().as_secs_f64(),
                                        updates,
                                    },
                                );
                            }
                            if t.outcome.terminated
                                || t.outcome.truncated
                                || t.interrupted == reflex_core::Interruption::EStop
                            {
                                current.steps = 0;
                                hand_on(&mut held, !discarded);
                            }
                            last = Some(t);
                        }
                        if let Some(t) = last.take() {
                            let mut s = board.lock().unwrap_or_else(|p| p.into_inner());
                            // The newest observation: the one the step now running acts on
                            // (a transition is emitted as the next step begins).
                            s.step = t.step + 1;
                            s.intervening = t.intervened;
                            let o = t.next_obs.as_slice();
                            let p = reflex_core::FLAT_TCP_POS;
                            if o.len() >= p + 3 {
                                s.tool_m = [o[p] as f64, o[p + 1] as f64, o[p + 2] as f64];
                            }
                            s.observation = o.to_vec();
                            s.policy_action = t.base_action.as_slice().to_vec();
                            s.executed_action = t.action.as_slice().to_vec();
                            s.reward = t.outcome.reward.is_finite().then_some(t.outcome.reward);
                            // A step cut short (an e-stop) has no terms: keep the last ones.
                            if !t.outcome.terms.values().is_empty() {
                                s.reward_terms = term_names
                                    .iter()
                                    .cloned()
                                    .zip(t.outcome.terms.values().iter().copied())
                                    .collect();
                            }
                        }
                        if done {
                            // An episode still in flight at the end: its steps are data.
                            hand_on(&mut held, true);
                            break;
                        }
                        // Written as they come, so the pool goes round.
                        hand_on(&mut Vec::new(), true);
                        // One more pass after the stop: what the loop left in the queue.
                        done = stopping;
                        if !done {
                            std::thread::sleep(Duration::from_millis(10));
                        }
                    }
                    let written = recorder.as_mut().and_then(|r| r.finish());
                    match written {
                        Some(Ok(n)) => {
                            *frames_recorded.lock().unwrap_or_else(|p| p.into_inner()) = Some(n)
                        }
                        Some(Err(e)) => tracing::error!("camera frames: {e}"),
                        None => {}
                    }
                })
                .map_err(|e| RunError::Control(e.to_string()))?
        };

        let status: StatusFn = {
            let (board, stats, estop, hub) = (board, stats.clone(), estop.clone(), hub.clone());
            let (rows, shared) = (rows.clone(), learner_shared);
            let published_at_start = learning.as_ref().map_or(0, |l| l.published_at_start);
            Arc::new(move || {
                let mut s = board.lock().unwrap_or_else(|p| p.into_inner()).clone();
                {
                    let rows = rows.lock().unwrap_or_else(|p| p.into_inner());
                    s.episodes_done = rows.len() as u64;
                    let from = rows.len().saturating_sub(RECENT_EPISODES);
                    s.recent_episodes = rows[from..].iter().map(|r| r.row).collect();
                }
                s.learning = shared.as_ref().map(|l| {
                    let ld = |c: &AtomicU64| c.load(Ordering::Relaxed);
                    LearningStatus {
                        updates: ld(&l.updates),
                        published: ld(&l.published).saturating_sub(published_at_start),
                        env_steps: ld(&l.env_steps),
                        intervened_steps: ld(&l.intervened_steps),
                    }
                });
                let ld = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
                s.episode = ld(&stats.episodes);
                s.successes = ld(&stats.successes);
                let steps = ld(&stats.policy_steps).max(1);
                s.intervention_rate = ld(&stats.intervened_steps) as f64 / steps as f64;
                s.input_seq = hub.stats.last_seq.load(Ordering::Relaxed);
                s.estop_latched = estop.is_latched();
                // Latched, nobody drives (the last step's flag is from before the press).
                s.intervening &= !s.estop_latched;
                s.jitter_p99_us = stats.timing.jitter.quantile_ns(0.99) as f64 / 1e3;
                s.deadline_misses = ld(&stats.timing.deadline_misses);
                s
            })
        };
        let frames: FramesFn = Arc::new(move || {
            views
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .filter(|(_, seq, _)| *seq > 0)
                .cloned()
                .collect()
        });
        // The bridge's operator commands, handed to the hub as they come (every 2 ms).
        let ros_forward = match ros_operator {
            Some(mut rx) => {
                let (hub, stop) = (hub.clone(), stop.clone());
                Some(
                    std::thread::Builder::new()
                        .name("reflex-ros-operator".into())
                        .spawn(move || {
                            while !stop.load(Ordering::Acquire) {
                                if let Some(c) = rx.take() {
                                    hub.command(reflex_teleop::hub::Source::Ros, c);
                                }
                                std::thread::sleep(Duration::from_millis(2));
                            }
                        })
                        .map_err(|e| RunError::Control(e.to_string()))?,
                )
            }
            None => None,
        };
        let token = reflex_teleop::random_token()
            .map_err(|e| RunError::Setting(format!("access token: {e}")))?;
        let server = TeleopServer::start(
            spec.bind,
            token,
            hub.clone(),
            status,
            Some(frames),
            SessionInfo {
                task: spec.task.name.clone(),
                instruction: spec.task.instruction.clone(),
            },
        )
        .map_err(|e| RunError::Setting(format!("serving on {}: {e}", spec.bind)))?;
        Ok(Self {
            server,
            hub,
            stats,
            estop,
            stop,
            control: Some(control),
            drain: Some(drain),
            ros_forward,
            rows,
            learning,
            task: spec.task.clone(),
            started: session_start,
            frames_recorded,
            frames_skipped,
        })
    }

    /// The page's address with its access token.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// The WebSocket's address with its access token.
    pub fn ws_url(&self) -> String {
        self.server.ws_url()
    }

    /// The hub every operator source feeds (the page's connections; a native gamepad).
    pub fn hub(&self) -> &Arc<OperatorHub> {
        &self.hub
    }

    /// The e-stop the session's runtime obeys (the page presses it; so can a native device).
    pub fn estop(&self) -> &EStop {
        &self.estop
    }

    /// The loop's statistics.
    pub fn stats(&self) -> &Arc<RuntimeStats> {
        &self.stats
    }

    /// Runs until `until` says stop (checked every 100 ms), then ends the session: the arm is
    /// brought to rest and the server stops.
    pub fn run_until(
        mut self,
        mut until: impl FnMut(&Self) -> bool,
    ) -> Result<TeleopReport, RunError> {
        let started = Instant::now();
        while !until(&self) {
            std::thread::sleep(Duration::from_millis(100));
            if self.control.as_ref().is_some_and(|c| c.is_finished()) {
                break;
            }
            if self
                .learning
                .as_ref()
                .is_some_and(|l| l.thread.as_ref().is_some_and(|t| t.is_finished()))
            {
                tracing::error!("the learner stopped: ending the session");
                break;
            }
            self.snapshot_if_due();
        }
        tracing::info!(
            "teleop session over after {:.0} s",
            started.elapsed().as_secs_f64()
        );
        self.finish()
    }

    /// The episodes finished so far.
    pub fn episodes(&self) -> Vec<SessionEpisode> {
        self.rows.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The live learner's counters, with `--learn`.
    pub fn learner(&self) -> Option<&Arc<LearnerShared>> {
        self.learning.as_ref().map(|l| &l.shared)
    }

    fn snapshot_if_due(&mut self) {
        let Some(l) = &mut self.learning else { return };
        let t = self.started.elapsed().as_secs_f64();
        if l.spec.snapshot_every_s <= 0.0 || t < l.next_snapshot_s {
            return;
        }
        l.next_snapshot_s += l.spec.snapshot_every_s;
        let path = l
            .spec
            .dir
            .join("snapshots")
            .join(format!("policy-{:06.0}s.safetensors", t));
        match learn::save_deployed(&l.actor_slot, &self.task, l.layout, &l.cfg, &path) {
            Ok(()) => tracing::info!("snapshot {}", path.display()),
            Err(e) => tracing::warn!("snapshot {} not written: {e}", path.display()),
        }
    }

    fn finish(&mut self) -> Result<TeleopReport, RunError> {
        self.stop.store(true, Ordering::Release);
        let control = self.control.take().map(|c| c.join()).unwrap_or(Ok(Ok(())));
        if let Some(d) = self.drain.take() {
            let _ = d.join();
        }
        if let Some(f) = self.ros_forward.take() {
            let _ = f.join();
        }
        // The learner last: it takes in what the drain handed on, checkpoints and stops.
        let mut learned = None;
        if let Some(l) = &mut self.learning {
            l.shared.stop.store(true, Ordering::Release);
            if let Some(t) = l.thread.take() {
                let learner = t
                    .join()
                    .map_err(|_| RunError::Control("the learner thread panicked".into()))?
                    .map_err(|e| RunError::Control(format!("learner: {e}")))?;
                learned = Some(learner);
            }
        }
        control
            .map_err(|_| RunError::Control("the control thread panicked".into()))?
            .map_err(RunError::Control)?;
        let rows = self.episodes();
        let n_rows = rows.len() as u64;
        if let (Some(l), Some(learner)) = (&self.learning, &learned) {
            self.write_learning_outputs(l, learner, &rows)?;
        }
        let ld = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        let s = &self.stats;
        let h = &self.hub.stats;
        let learning = self.learning.as_ref();
        Ok(TeleopReport {
            updates: learned.as_ref().map(|l| l.agent.updates),
            published: learning
                .map(|l| ld(&l.shared.published).saturating_sub(l.published_at_start)),
            dropped_for_learner: learning.map(|l| ld(&l.dropped)),
            episode_rows: rows,
            episodes: n_rows,
            successes: ld(&s.successes),
            labelled: ld(&s.operator_labels),
            discarded: ld(&s.discarded_episodes),
            policy_steps: ld(&s.policy_steps),
            intervened_steps: ld(&s.intervened_steps),
            estops: ld(&h.estops),
            inputs: ld(&h.inputs),
            refused: ld(&h.refused),
            frames_recorded: *self
                .frames_recorded
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
            frames_skipped: ld(&self.frames_skipped),
        })
    }
}

impl TeleopSession {
    /// `policy.safetensors` (the deployed residual), `episodes.csv` and `intervention.png` in
    /// the session's directory.
    fn write_learning_outputs(
        &self,
        l: &Learning,
        learner: &reflex_learn::learner::Learner,
        rows: &[SessionEpisode],
    ) -> Result<(), RunError> {
        let dir = &l.spec.dir;
        let io = |what: &std::path::Path, e: &dyn std::fmt::Display| {
            RunError::Setting(format!("{}: {e}", what.display()))
        };
        let meta = crate::policies::meta_for(
            reflex_policy::Role::Residual,
            &self.task,
            l.layout,
            Some(l.cfg.runtime.residual_scale),
            l.cfg.runtime.servo_rate_hz,
            l.cfg.seed,
        );
        let policy = dir.join("policy.safetensors");
        reflex_policy::PolicyFile::save(&learner.agent.deterministic_actor(), &meta, &policy)
            .map_err(|e| io(&policy, &e))?;
        // episodes.csv grows across resumed sessions.
        let csv = dir.join("episodes.csv");
        let fresh = !csv.exists();
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&csv)
            .map_err(|e| io(&csv, &e))?;
        let mut text = String::new();
        if fresh {
            text.push_str("episode,steps,intervened,success,wall_s,updates\n");
        }
        for r in rows {
            text.push_str(&format!(
                "{},{},{},{},{:.1},{}\n",
                r.row.episode,
                r.row.steps,
                r.row.intervened,
                r.row.success as u8,
                r.wall_s,
                r.updates
            ));
        }
        f.write_all(text.as_bytes()).map_err(|e| io(&csv, &e))?;
        let all = read_episodes_csv(&csv).map_err(|e| io(&csv, &e))?;
        if let Err(e) = plot_interventions(&dir.join("intervention.png"), &self.task.name, &all) {
            tracing::warn!("intervention.png not drawn: {e}");
        }
        Ok(())
    }
}

/// Reads a session's `episodes.csv` back (every session it has held, in order).
pub fn read_episodes_csv(path: &std::path::Path) -> Result<Vec<SessionEpisode>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let bad = || {
            format!(
                "line {}: expected episode,steps,intervened,success,wall_s,updates",
                i + 1
            )
        };
        if f.len() != 6 {
            return Err(bad());
        }
        let n = |k: usize| f[k].parse::<u64>().map_err(|_| bad());
        out.push(SessionEpisode {
            row: EpisodeRow {
                episode: n(0)?,
                steps: n(1)?,
                intervened: n(2)?,
                success: n(3)? == 1,
            },
            wall_s: f[4].parse().map_err(|_| bad())?,
            updates: n(5)?,
        });
    }
    Ok(out)
}

/// The intervention rate and the success rate over a window of episodes, by episode: the
/// curve HIL-SERL sessions are read by.
pub fn plot_interventions(
    path: &std::path::Path,
    task: &str,
    rows: &[SessionEpisode],
) -> Result<(), String> {
    use plotters::prelude::*;
    const WINDOW: usize = 10;
    let root = BitMapBackend::new(path, (900, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let n = rows.len().max(2);
    let text = crate::train::plot::text_font();
    let mut builder = ChartBuilder::on(&root);
    builder
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50);
    if text {
        builder.caption(
            format!("{task}: operator takeovers while learning (mean of {WINDOW} episodes)"),
            ("sans-serif", 20),
        );
    }
    let mut chart = builder
        .build_cartesian_2d(0usize..n, 0f64..1.0)
        .map_err(|e| e.to_string())?;
    if text {
        chart
            .configure_mesh()
            .x_desc("episode of the session")
            .y_desc("share")
            .draw()
            .map_err(|e| e.to_string())?;
    } else {
        chart
            .configure_mesh()
            .x_labels(0)
            .y_labels(0)
            .draw()
            .map_err(|e| e.to_string())?;
    }
    let windowed = |f: &dyn Fn(&SessionEpisode) -> f64| -> Vec<(usize, f64)> {
        (0..rows.len())
            .map(|i| {
                let from = (i + 1).saturating_sub(WINDOW);
                let w = &rows[from..=i];
                (i, w.iter().map(f).sum::<f64>() / w.len() as f64)
            })
            .collect()
    };
    let rate = windowed(&|r| r.row.intervened as f64 / r.row.steps.max(1) as f64);
    let success = windowed(&|r| f64::from(u8::from(r.row.success)));
    chart
        .draw_series(LineSeries::new(rate, RED.stroke_width(2)))
        .map_err(|e| e.to_string())?
        .label("steps the operator drove")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    chart
        .draw_series(LineSeries::new(success, BLUE.stroke_width(2)))
        .map_err(|e| e.to_string())?
        .label("episodes that succeeded")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    if text {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())
}

impl Drop for TeleopSession {
    fn drop(&mut self) {
        if self.control.is_some() {
            let _ = self.finish();
        }
    }
}
