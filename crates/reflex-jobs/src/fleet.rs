//! `reflex learner` and `reflex actor`: the training run split over processes (or machines)
//! with `reflex-fleet`.
//!
//! The learner does what `reflex train` does before its loop (demonstrations, behaviour
//! cloning, the base's evaluation, the replay and checkpoints of its run directory), then
//! takes its online data from actors instead of a runtime of its own: it stores their
//! batches exactly once, updates at its ratio, acknowledges what is durable, publishes its
//! actor, evaluates on its own simulator, and stops on the run's budget or target.
//!
//! An actor fetches the base policy and the newest weights from the learner, then runs
//! `envs` runtimes (threads), each one stream with an outbox on its own sender thread. A
//! simulated actor is held back while the learner is behind its update-to-data ratio (as
//! `reflex train` holds its simulator); a real-time arm never is. When the learner goes away
//! an actor keeps acting on its last weights and holds its batches (up to the bound).

use crate::arms::{runtime, Arms};
use crate::train::config::{stage, TrainConfig, TrainError};
use crate::train::driver::{learner_with_demos, prepare, Prepared};
use crate::train::episodes::{run_episodes, seeds, success_and_return};
use crate::train::report::{write_atomic, write_metrics, write_progress, EvalRow};
use crate::train::select::{hand_over, judge_evaluation, keep_if_best, load_best};
use crate::train::{Progress, INTERRUPT, PROGRESS_EVERY_S};
use reflex_core::{Policy, Transition};
use reflex_fleet::{
    now_ns, ActorLink, Batch, Ingest, IngestCounters, LearnerLink, LinkSettings, Outbox,
    OutboxCounters, OutboxSettings, Status, Weights,
};
use reflex_learn::replay::Source;
use reflex_policy::{Mlp, Role};
use reflex_runtime::{NetPolicy, ResidualPolicy, Runtime, Ticker, WeightsSlot};
use serde::Serialize;
use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The link settings of a run from its configuration (`endpoint` overrides the file's).
pub fn link_settings(cfg: &TrainConfig, endpoint: Option<&str>) -> LinkSettings {
    let run = if cfg.fleet.run.is_empty() {
        Path::new(&cfg.task)
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("run")
            .to_owned()
    } else {
        cfg.fleet.run.clone()
    };
    LinkSettings {
        endpoint: endpoint.unwrap_or(&cfg.fleet.endpoint).to_owned(),
        zenoh_config: cfg.fleet.zenoh_config.clone(),
        run,
        queue: cfg.fleet.learner_queue_batches,
    }
}

fn link_err(e: reflex_fleet::LinkError) -> TrainError {
    stage("fleet link")(e)
}

/// `summary.json` of a learner run.
#[derive(Clone, Debug, Serialize)]
pub struct LearnerSummary {
    /// The task.
    pub task: String,
    /// The run's seed.
    pub seed: u64,
    /// This learner's incarnation (1 + restarts).
    pub incarnation: u64,
    /// Online steps in the replay.
    pub env_steps: u64,
    /// Updates run (over every incarnation).
    pub updates: u64,
    /// Wall-clock seconds (over every incarnation).
    pub wall_s: f64,
    /// The base's evaluation.
    pub base_success_rate: f64,
    /// The last evaluation (the run's own evaluation seeds, which decided when to stop).
    pub final_success_rate: f64,
    /// The final policy on the held-out seeds (see `reflex train`'s `summary.json`).
    pub heldout: Option<crate::train::HeldOut>,
    /// Steps when an evaluation first reached the target.
    pub steps_to_target: Option<u64>,
    /// Minutes then.
    pub minutes_to_target: Option<f64>,
    /// Confirmations of the target on fresh scenes (`confirm_episodes`).
    pub confirmations: Vec<crate::train::report::Confirmation>,
    /// The weights handed over (`keep_best`).
    pub handed_over: Option<crate::train::report::HandedOver>,
    /// Why the run stopped.
    pub stop_reason: String,
    /// Batches and transitions taken, duplicates and losses.
    pub ingest: IngestCounters,
    /// Transitions taken per second of this incarnation's loop.
    pub ingest_per_s: f64,
    /// Batches dropped by a full receive queue (resent by the actors).
    pub queue_drops: u64,
    /// Batches that could not be read.
    pub malformed_batches: u64,
    /// Actor liveliness tokens seen appearing and disappearing.
    pub actors_joined: u64,
    /// Tokens seen disappearing (an actor gone, or its link).
    pub actors_left: u64,
    /// Weight broadcasts.
    pub weights_published: u64,
    /// The newest weights version.
    pub weights_version: u64,
    /// Replay records on disk.
    pub replay_records: u64,
}

/// Runs (or, with `resume`, continues) a learner in `out`, listening on `settings`.
pub fn fleet_learner<A: Arms>(
    arms: &A,
    cfg: &TrainConfig,
    settings: &LinkSettings,
    out: &Path,
    resume: bool,
    mut progress: impl FnMut(Progress),
) -> Result<LearnerSummary, TrainError> {
    cfg.validate().map_err(stage("configuration"))?;
    if cfg.obs == crate::train::config::ObsMode::Pixels {
        return Err(stage("configuration")(
            "obs = \"pixels\": a fleet's learner and actors exchange states, not pictures, for \
             now; train from pixels with `reflex train`"
                .to_owned(),
        ));
    }
    task_reward_only(cfg)?;
    settings.validate().map_err(link_err)?;
    let started = Instant::now();
    let task = arms.task();
    let layout = arms.obs_layout()?;
    let (obs_dim, act_dim) = (layout.dim(), task.action_space.dim());
    let file_meta = |role: Role| {
        crate::policies::meta_for(
            role,
            task,
            layout,
            Some(cfg.runtime.residual_scale),
            arms.rate_hz(),
            cfg.seed,
        )
    };
    let Prepared {
        mut state,
        state_path,
        base_mlp,
        demos,
        resuming,
        scalars: _,
    } = prepare(arms, cfg, out, resume, &mut progress, &file_meta)?;
    let (mut learner, actor_slot, stored) = learner_with_demos(
        cfg, out, &base_mlp, &demos, resuming, obs_dim, act_dim, None,
    )?;
    let base_slot = WeightsSlot::new(base_mlp);
    let eval_flag = Arc::new(AtomicBool::new(false));
    let mut eval_rt = runtime(
        arms,
        0,
        Box::new(NetPolicy::new(base_slot, obs_dim, act_dim).map_err(stage("base policy"))?),
        Some(
            ResidualPolicy::tanh_gaussian(actor_slot.clone(), obs_dim, act_dim, eval_flag, 0)
                .map_err(stage("residual policy"))?,
        ),
        &cfg.runtime,
    )?;
    let paced = arms.real_time();
    // One episode at a time, with `between` after each: the learner keeps taking in and
    // acknowledging while it evaluates (without updating, so its actors are held back by the
    // ratio, as `reflex train` stops its simulator to evaluate).
    let episodes_with = |rt: &mut Runtime<A::Robot>,
                         seeds: &mut dyn Iterator<Item = u64>,
                         between: &mut dyn FnMut() -> Result<(), TrainError>|
     -> Result<Vec<(bool, f64)>, TrainError> {
        let mut all = Vec::with_capacity(cfg.eval_episodes);
        for seed in seeds {
            let (r, _) = run_episodes(rt, std::iter::once(seed), false, paced)?;
            all.extend(r);
            between()?;
        }
        Ok(all)
    };
    let evaluate = |rt: &mut Runtime<A::Robot>| {
        episodes_with(rt, &mut seeds(cfg.seed, 2, cfg.eval_episodes), &mut || {
            Ok(())
        })
        .map(|r| success_and_return(&r))
    };
    let mut best_actor = load_best(cfg, &mut state, out, resuming)?;
    let prior_wall = state.wall_s;
    let wall = |started: &Instant| prior_wall + started.elapsed().as_secs_f64();
    if !resuming {
        progress(Progress::Stage("evaluating the base"));
        let (success, ret) = evaluate(&mut eval_rt)?;
        state.base_success_rate = success;
        let row = EvalRow::base(wall(&started), (success, ret), learner.agent.temperature());
        state.evals.push(row.clone());
        keep_if_best(cfg, &mut state, &mut best_actor, &row, &actor_slot, out)?;
        progress(Progress::Eval(row));
    }
    write_metrics(out, &state)?;
    write_progress(&state_path, &mut state, &learner.shared)?;

    let mut ingest = Ingest::open(&out.join("fleet"), stored).map_err(stage("fleet ledger"))?;
    let base_bytes = std::fs::read(out.join("base.safetensors")).map_err(stage("base policy"))?;
    let link = LearnerLink::open(settings, base_bytes).map_err(link_err)?;
    let version_base = ingest.incarnation() << 40;
    let shared = learner.shared.clone();
    // The newest version published (what the status names).
    let weights_version = std::cell::Cell::new(0u64);
    let mut published = 0u64;
    let mut publish = |learner: &reflex_learn::learner::Learner| {
        let version = version_base | learner.agent.updates;
        weights_version.set(version);
        link.publish(&Weights {
            version,
            published_ns: now_ns(),
            safetensors: actor_slot.snapshot().to_safetensors(),
        });
        published += 1;
    };
    publish(&learner);
    tracing::info!(
        endpoint = %settings.endpoint,
        run = %settings.run,
        incarnation = ingest.incarnation(),
        "learner listening"
    );
    progress(Progress::Stage("training"));

    let budget = Duration::from_secs_f64(cfg.minutes * 60.0);
    let mut last_eval_steps = state.evals.last().map_or(0, |r| r.env_steps);
    let mut last_publish = Instant::now();
    let mut seen_published = shared.published.load(Ordering::Relaxed);
    let mut last_ack = Instant::now();
    let mut last_report = Instant::now();
    let mut last_progress = Instant::now();
    let mut malformed = 0u64;
    let mut stop_reason = "time budget";
    let ack_every = Duration::from_millis(cfg.fleet.ack_interval_ms);
    let publish_every = Duration::from_millis(cfg.fleet.publish_interval_ms);
    let status = |learner: &reflex_learn::learner::Learner, version: u64, finished: bool| Status {
        env_steps: learner.shared.env_steps.load(Ordering::Relaxed),
        updates: learner.agent.updates,
        learning: learner.shared.learning.load(Ordering::Relaxed),
        utd: cfg.learner.utd,
        weights_version: version,
        finished,
    };
    // Takes in what the actors sent (at most `max` batches), then syncs and acknowledges when
    // due. Returns whether anything arrived.
    let mut take_in = |learner: &mut reflex_learn::learner::Learner,
                       ingest: &mut Ingest,
                       max: usize,
                       force_ack: bool|
     -> Result<bool, TrainError> {
        let mut got = false;
        for _ in 0..max {
            let Some(bytes) = link.try_recv() else { break };
            got = true;
            let batch = match Batch::decode(&bytes) {
                Ok(b) => b,
                Err(e) => {
                    malformed += 1;
                    if malformed <= 10 {
                        tracing::warn!("a batch was refused: {e}");
                    }
                    continue;
                }
            };
            let mut failed = None;
            ingest
                .take(&batch, |t: &Transition| {
                    let source = if t.intervened {
                        Source::Intervention
                    } else {
                        Source::Online
                    };
                    if let Some(step) = learner.step_from(t, source) {
                        if let Err(e) = learner.add_online(step) {
                            failed = Some(e);
                        }
                    }
                })
                .map_err(stage("fleet ledger"))?;
            if let Some(e) = failed {
                return Err(stage("replay")(e));
            }
        }
        if force_ack || last_ack.elapsed() >= ack_every {
            last_ack = Instant::now();
            if ingest.pending() {
                learner.sync_replay().map_err(stage("replay"))?;
                for ack in ingest.synced().map_err(stage("fleet ledger"))? {
                    link.ack(&ack);
                }
            }
            link.status(&status(learner, weights_version.get(), false));
        }
        Ok(got)
    };
    let loop_started = Instant::now();
    let taken_before = ingest.counters.transitions;
    let result: Result<(), TrainError> = (|| loop {
        if INTERRUPT.load(Ordering::Relaxed) {
            stop_reason = "interrupted";
            return Ok(());
        }
        let got = take_in(&mut learner, &mut ingest, 64, false)?;
        let updated = learner.try_update();
        let p = shared.published.load(Ordering::Relaxed);
        if p != seen_published && last_publish.elapsed() >= publish_every {
            seen_published = p;
            last_publish = Instant::now();
            publish(&learner);
        }
        let steps = shared.env_steps.load(Ordering::Relaxed);
        if steps >= last_eval_steps + cfg.eval_every {
            // The weights judged are the learner's latest (no update runs until the next
            // iteration), so a run that stops here hands over what this evaluation saw.
            learner.publish_latest();
            let r = episodes_with(
                &mut eval_rt,
                &mut seeds(cfg.seed, 2, cfg.eval_episodes),
                &mut || take_in(&mut learner, &mut ingest, 64, false).map(|_| ()),
            )?;
            let result = success_and_return(&r);
            last_eval_steps = steps;
            let last = shared.last.lock().map(|l| *l).unwrap_or_default();
            let row = EvalRow::trained(
                steps,
                learner.agent.updates,
                wall(&started),
                0,
                result,
                &VecDeque::new(),
                &last,
            );
            let reached = judge_evaluation(
                cfg,
                &mut state,
                &mut best_actor,
                &row,
                &actor_slot,
                out,
                &mut |seeds| {
                    progress(Progress::Stage("confirming on fresh scenes"));
                    episodes_with(&mut eval_rt, seeds, &mut || {
                        take_in(&mut learner, &mut ingest, 64, false).map(|_| ())
                    })
                },
            )?;
            state.wall_s = wall(&started);
            write_metrics(out, &state)?;
            write_progress(&state_path, &mut state, &shared)?;
            progress(Progress::Eval(row));
            if reached {
                stop_reason = "target success reached";
                return Ok(());
            }
        }
        if cfg.max_env_steps > 0 && steps >= cfg.max_env_steps {
            stop_reason = "step budget";
            return Ok(());
        }
        if started.elapsed() >= budget {
            return Ok(());
        }
        if last_progress.elapsed().as_secs_f64() > PROGRESS_EVERY_S {
            last_progress = Instant::now();
            state.wall_s = wall(&started);
            write_progress(&state_path, &mut state, &shared)?;
        }
        if last_report.elapsed() > Duration::from_millis(250) {
            last_report = Instant::now();
            progress(Progress::Training {
                env_steps: steps,
                updates: learner.agent.updates,
                success: state.evals.last().map(|r| r.success_rate),
                elapsed_s: started.elapsed().as_secs_f64(),
                budget_s: budget.as_secs_f64(),
            });
        }
        if !got && !updated {
            std::thread::sleep(Duration::from_micros(200));
        }
    })();
    let loop_s = loop_started.elapsed().as_secs_f64();
    let taken = ingest.counters.transitions - taken_before;
    // The last weights go out, then the actors are told the run is over; the learner keeps
    // taking in and acknowledging while they flush.
    if version_base | learner.agent.updates != weights_version.get() {
        learner.publish();
        publish(&learner);
    }
    let finishing = Instant::now();
    while finishing.elapsed() < Duration::from_secs(3) {
        take_in(&mut learner, &mut ingest, usize::MAX, true)?;
        link.status(&status(&learner, weights_version.get(), true));
        std::thread::sleep(Duration::from_millis(100));
    }
    result?;
    learner.checkpoint().map_err(stage("learner"))?;
    actor_slot
        .publish(learner.agent.exploring_actor())
        .map_err(stage("publishing"))?;
    let env_steps = shared.env_steps.load(Ordering::Relaxed);
    // The last evaluation judged these weights when no update ran since.
    if stop_reason != "interrupted"
        && state
            .evals
            .last()
            .is_none_or(|r| r.updates != learner.agent.updates)
    {
        progress(Progress::Stage("final evaluation"));
        let result = evaluate(&mut eval_rt)?;
        let last = shared.last.lock().map(|l| *l).unwrap_or_default();
        let row = EvalRow::trained(
            env_steps,
            learner.agent.updates,
            wall(&started),
            0,
            result,
            &VecDeque::new(),
            &last,
        );
        judge_evaluation(
            cfg,
            &mut state,
            &mut best_actor,
            &row,
            &actor_slot,
            out,
            &mut |seeds| episodes_with(&mut eval_rt, seeds, &mut || Ok(())),
        )?;
    }
    let (policy, handed_over) = hand_over(
        &state,
        best_actor.as_ref(),
        stop_reason,
        learner.agent.deterministic_actor(),
        (env_steps, learner.agent.updates),
        &actor_slot,
        act_dim,
    )?;
    let heldout = if stop_reason != "interrupted" && !paced && cfg.heldout_episodes > 0 {
        progress(Progress::Stage("held-out evaluation"));
        crate::train::eval::heldout_evaluation(&mut eval_rt, cfg.heldout_episodes)?
    } else {
        None
    };
    reflex_policy::PolicyFile::save(
        &policy,
        &file_meta(Role::Residual),
        &out.join("policy.safetensors"),
    )
    .map_err(stage("policy"))?;
    state.wall_s = wall(&started);
    write_progress(&state_path, &mut state, &shared)?;
    write_metrics(out, &state)?;
    let summary = LearnerSummary {
        task: cfg.task.clone(),
        seed: cfg.seed,
        incarnation: ingest.incarnation(),
        env_steps,
        updates: learner.agent.updates,
        wall_s: state.wall_s,
        base_success_rate: state.base_success_rate,
        final_success_rate: state.evals.last().map_or(0.0, |r| r.success_rate),
        heldout,
        steps_to_target: state.steps_to_target,
        minutes_to_target: state.minutes_to_target,
        confirmations: state.confirmations.clone(),
        handed_over,
        stop_reason: stop_reason.to_owned(),
        ingest: ingest.counters,
        ingest_per_s: taken as f64 / loop_s.max(1e-9),
        queue_drops: link.queue_drops.load(Ordering::Relaxed),
        malformed_batches: malformed,
        actors_joined: link.actors.joined.load(Ordering::Relaxed),
        actors_left: link.actors.left.load(Ordering::Relaxed),
        weights_published: published,
        weights_version: weights_version.get(),
        replay_records: learner.replay_records(),
    };
    let text = serde_json::to_string_pretty(&summary).map_err(stage("summary.json"))?;
    write_atomic(&out.join("summary.json"), text.as_bytes())?;
    Ok(summary)
}

/// An actor process's settings.
#[derive(Clone, Debug)]
pub struct ActorSpec {
    /// The actor's name (logs, the learner's ledger).
    pub name: String,
    /// Runtimes (streams) in this process.
    pub envs: usize,
    /// Seed of its episodes' scenes and exploration (each runtime its own stream of them).
    pub seed: u64,
    /// Stop after this long even if the learner has not finished (None: when it finishes).
    pub minutes: Option<f64>,
    /// Where the base policy copy and `actor.json` go.
    pub out: std::path::PathBuf,
}

/// `actor.json`: what an actor process did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ActorReport {
    /// The actor's name.
    pub name: String,
    /// Per stream: its id (as the learner's ledger has it) and its outbox's counters.
    pub streams: Vec<(u64, OutboxCounters)>,
    /// Episodes run.
    pub episodes: u64,
    /// Episodes that succeeded.
    pub successes: u64,
    /// Steps run.
    pub env_steps: u64,
    /// Weights messages applied.
    pub weights_applied: u64,
    /// The newest weights version applied.
    pub weights_version: u64,
    /// Weights messages ignored as older than the one applied.
    pub weights_stale: u64,
    /// Publication-to-applied latency of the weights received, ms: p50 and p99.
    pub weights_latency_ms: Option<(f64, f64)>,
    /// Times the learner's token appeared and disappeared.
    pub learner_arrivals: u64,
    /// Times it disappeared.
    pub learner_departures: u64,
    /// Time spent held back for the learner's ratio, s.
    pub held_s: f64,
    /// Why the actor stopped.
    pub stop_reason: String,
}

/// Applies published weights to an actor's slot: newer versions only.
struct Follower {
    slot: Arc<WeightsSlot>,
    version: AtomicU64,
    applied: AtomicU64,
    stale: AtomicU64,
    latencies_ns: Mutex<Vec<u64>>,
}

impl Follower {
    fn apply(&self, w: &Weights, measure: bool) {
        if w.version <= self.version.load(Ordering::Acquire)
            && self.applied.load(Ordering::Relaxed) > 0
        {
            self.stale.fetch_add(1, Ordering::Relaxed);
            return;
        }
        match Mlp::from_safetensors(&w.safetensors, Path::new("<weights message>")) {
            Ok(mlp) => match self.slot.publish(mlp) {
                Ok(_) => {
                    self.version.store(w.version, Ordering::Release);
                    self.applied.fetch_add(1, Ordering::Relaxed);
                    if measure {
                        if let Ok(mut l) = self.latencies_ns.lock() {
                            l.push(now_ns().saturating_sub(w.published_ns));
                        }
                    }
                }
                Err(e) => tracing::warn!("weights refused: {e}"),
            },
            Err(e) => tracing::warn!("weights refused: {e}"),
        }
    }
}

/// A fleet run trains on the task's reward only. The other sources do not split across
/// processes yet: their hook needs the arm's camera (on the actor), the demonstrations' rewards
/// and a preference model that keeps learning belong to the learner. Refused by name rather
/// than trained on the task's reward unasked.
fn task_reward_only(cfg: &TrainConfig) -> Result<(), TrainError> {
    use crate::rewards::RewardSource;
    let name = match cfg.reward.source {
        None | Some(RewardSource::Task) => return Ok(()),
        Some(RewardSource::VlmKeypoints) => "vlm-keypoints",
        Some(RewardSource::VlmPreference) => "vlm-preference",
        Some(RewardSource::Classifier) => "classifier",
        Some(RewardSource::Sparse) => "sparse",
    };
    Err(stage("configuration")(format!(
        "reward source {name} (`--reward` or `[reward] source`): a run over the fleet trains on \
         the task's reward only so far; train with `reflex train` for this source"
    )))
}

/// Runs an actor: `spec.envs` runtimes on robots from `arms`, streaming to the learner of
/// `settings` until the learner finishes the run (or the actor's own budget ends).
pub fn fleet_actor<A: Arms + Sync>(
    arms: &A,
    cfg: &TrainConfig,
    settings: &LinkSettings,
    spec: &ActorSpec,
) -> Result<ActorReport, TrainError> {
    cfg.validate().map_err(stage("configuration"))?;
    if cfg.obs == crate::train::config::ObsMode::Pixels {
        return Err(stage("configuration")(
            "obs = \"pixels\": a fleet's learner and actors exchange states, not pictures, for \
             now; train from pixels with `reflex train`"
                .to_owned(),
        ));
    }
    task_reward_only(cfg)?;
    settings.validate().map_err(link_err)?;
    std::fs::create_dir_all(&spec.out).map_err(stage("the actor's directory"))?;
    let task = arms.task();
    let layout = arms.obs_layout()?;
    let (obs_dim, act_dim) = (layout.dim(), task.action_space.dim());
    let mut link = ActorLink::open(settings).map_err(link_err)?;
    let deadline = Instant::now() + Duration::from_secs_f64(cfg.fleet.wait_for_learner_s);
    let fetch = |link: &ActorLink, what: &str| -> Result<Vec<u8>, TrainError> {
        loop {
            if let Some(b) = link.query(what, Duration::from_secs(2)) {
                return Ok(b);
            }
            if Instant::now() >= deadline || INTERRUPT.load(Ordering::Relaxed) {
                return Err(stage("fleet link")(format!(
                    "no learner answered for `{what}` at {} within {} s",
                    settings.endpoint, cfg.fleet.wait_for_learner_s
                )));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    };
    let base_path = spec.out.join("base.safetensors");
    write_atomic(&base_path, &fetch(&link, "base")?)?;
    let base = crate::policies::load_for(&base_path, Role::Base, task, layout)
        .map_err(stage("the learner's base policy"))?;
    let first = Weights::decode(&fetch(&link, "weights")?).map_err(stage("weights"))?;
    let residual = Mlp::from_safetensors(&first.safetensors, Path::new("<weights message>"))
        .map_err(stage("weights"))?;
    let follower = Arc::new(Follower {
        slot: WeightsSlot::new(residual),
        version: AtomicU64::new(first.version),
        applied: AtomicU64::new(1),
        stale: AtomicU64::new(0),
        latencies_ns: Mutex::new(Vec::new()),
    });
    let f = follower.clone();
    link.on_weights(move |w| match w {
        Ok(w) => f.apply(&w, true),
        Err(e) => tracing::warn!("weights refused: {e}"),
    })
    .map_err(link_err)?;
    let base_slot = WeightsSlot::new(base.mlp);
    let heard = link.heard.clone();
    let finished = AtomicBool::new(false);
    let started = Instant::now();
    let budget = spec.minutes.map(|m| Duration::from_secs_f64(m * 60.0));
    let outbox_settings = OutboxSettings {
        batch: cfg.fleet.batch_transitions,
        flush_after: Duration::from_millis(cfg.fleet.flush_ms),
        hold: cfg.fleet.actor_hold_transitions,
        resend_after: Duration::from_millis(cfg.fleet.resend_after_ms),
    };
    let paced = arms.real_time();
    let slack = (cfg.learner.utd as f64 * 20.0) as u64 + cfg.fleet.batch_transitions as u64;
    let mut links = Vec::new();
    for i in 0..spec.envs {
        let stream = stream_id(&spec.name, i);
        links.push((stream, link.stream(stream).map_err(link_err)?));
    }
    let episodes = AtomicU64::new(0);
    let successes = AtomicU64::new(0);
    let env_steps = AtomicU64::new(0);
    let held_ns = AtomicU64::new(0);
    let stop_reason = Mutex::new(String::from("the learner finished the run"));
    let should_stop = || {
        if INTERRUPT.load(Ordering::Relaxed) {
            *stop_reason.lock().unwrap_or_else(|p| p.into_inner()) = "interrupted".into();
            return true;
        }
        if budget.is_some_and(|b| started.elapsed() >= b) {
            *stop_reason.lock().unwrap_or_else(|p| p.into_inner()) = "time budget".into();
            return true;
        }
        let fin = heard
            .status
            .lock()
            .ok()
            .and_then(|s| s.map(|(s, _)| s.finished))
            .unwrap_or(false);
        fin || finished.load(Ordering::Relaxed)
    };
    let running = AtomicU64::new(spec.envs as u64);
    let results: Vec<Result<OutboxCounters, TrainError>> = std::thread::scope(|scope| {
        // Weights published while this actor could not hear them (a cut link, a learner
        // restarting) are fetched: whenever the learner's status names a newer version than
        // the one applied, the newest is asked for (each query bounded).
        scope.spawn(|| {
            while running.load(Ordering::Acquire) > 0 {
                let newer = heard
                    .status
                    .lock()
                    .ok()
                    .and_then(|s| *s)
                    .is_some_and(|(s, _)| {
                        s.weights_version > follower.version.load(Ordering::Acquire)
                    });
                if newer {
                    if let Some(bytes) = link.query("weights", Duration::from_secs(1)) {
                        match Weights::decode(&bytes) {
                            Ok(w) => follower.apply(&w, false),
                            Err(e) => tracing::warn!("weights refused: {e}"),
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        });
        let mut handles = Vec::new();
        for (i, (stream, stream_link)) in links.into_iter().enumerate() {
            let base_slot = base_slot.clone();
            let follower = follower.clone();
            let heard = heard.clone();
            let (episodes, successes, env_steps, held_ns) =
                (&episodes, &successes, &env_steps, &held_ns);
            let should_stop = &should_stop;
            let finished = &finished;
            let running = &running;
            handles.push(scope.spawn(move || -> Result<OutboxCounters, TrainError> {
                let explore = Arc::new(AtomicBool::new(true));
                let mut rt = runtime(
                    arms,
                    0,
                    Box::new(
                        NetPolicy::new(base_slot, obs_dim, act_dim)
                            .map_err(stage("base policy"))?,
                    ) as Box<dyn Policy + Send>,
                    Some(
                        ResidualPolicy::tanh_gaussian(
                            follower.slot.clone(),
                            obs_dim,
                            act_dim,
                            explore,
                            spec.seed ^ stream,
                        )
                        .map_err(stage("residual policy"))?,
                    ),
                    &cfg.runtime,
                )?;
                let queue = rt.transitions().clone();
                let sending = AtomicBool::new(true);
                std::thread::scope(|inner| -> Result<OutboxCounters, TrainError> {
                    let sender = inner.spawn(|| {
                        let mut outbox = Outbox::new(outbox_settings, stream, &spec.name);
                        let mut stopping_since: Option<Instant> = None;
                        loop {
                            let mut got = false;
                            while let Some(t) = queue.pop() {
                                outbox.push(t, &stream_link);
                                got = true;
                            }
                            outbox.poll(&stream_link, &heard);
                            if !sending.load(Ordering::Acquire) {
                                let since = *stopping_since.get_or_insert_with(|| {
                                    outbox.flush(&stream_link);
                                    Instant::now()
                                });
                                // Wait (bounded) for the learner to acknowledge what is held.
                                if outbox.unacked() == 0
                                    || since.elapsed() > Duration::from_secs(10)
                                    || !heard.learner_alive.load(Ordering::Acquire)
                                {
                                    return outbox.counters;
                                }
                            }
                            if !got {
                                std::thread::sleep(Duration::from_millis(1));
                            }
                        }
                    });
                    let mut episode_seeds = seeds(spec.seed, 3 + i as u64, usize::MAX);
                    let run = (|| -> Result<(), TrainError> {
                        while !should_stop() {
                            rt.reset_episode(episode_seeds.next().unwrap_or(0))
                                .map_err(stage("scene reset"))?;
                            let mut ticker = paced.then(|| Ticker::new(cfg.runtime.servo_rate_hz));
                            let mut success = false;
                            loop {
                                let rep = match &mut ticker {
                                    Some(t) => rt.tick_paced(t),
                                    None => rt.tick(),
                                };
                                if let Some(o) = rep.outcome {
                                    success |= o.success;
                                    env_steps.fetch_add(1, Ordering::Relaxed);
                                    if !paced {
                                        hold_for_learner(&heard, slack, held_ns);
                                    }
                                }
                                if rep.episode_done {
                                    break;
                                }
                                if INTERRUPT.load(Ordering::Relaxed) {
                                    crate::train::brake_to_rest(&mut rt, paced);
                                    return Ok(());
                                }
                            }
                            episodes.fetch_add(1, Ordering::Relaxed);
                            successes.fetch_add(u64::from(success), Ordering::Relaxed);
                        }
                        Ok(())
                    })();
                    if paced {
                        crate::train::brake_to_rest(&mut rt, true);
                    }
                    finished.store(true, Ordering::Relaxed);
                    sending.store(false, Ordering::Release);
                    let counters = sender.join().map_err(|_| stage("sender")("panicked"));
                    running.fetch_sub(1, Ordering::AcqRel);
                    let counters = counters?;
                    run.map(|_| counters)
                })
            }));
        }
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(stage("actor")("a runtime panicked")))
            })
            .collect()
    });
    let mut report = ActorReport {
        name: spec.name.clone(),
        episodes: episodes.load(Ordering::Relaxed),
        successes: successes.load(Ordering::Relaxed),
        env_steps: env_steps.load(Ordering::Relaxed),
        weights_applied: follower.applied.load(Ordering::Relaxed),
        weights_version: follower.version.load(Ordering::Relaxed),
        weights_stale: follower.stale.load(Ordering::Relaxed),
        learner_arrivals: heard.learner_arrivals.load(Ordering::Relaxed),
        learner_departures: heard.learner_departures.load(Ordering::Relaxed),
        held_s: held_ns.load(Ordering::Relaxed) as f64 / 1e9,
        stop_reason: stop_reason.lock().map(|s| s.clone()).unwrap_or_default(),
        ..Default::default()
    };
    for (i, r) in results.into_iter().enumerate() {
        report.streams.push((stream_id(&spec.name, i), r?));
    }
    if let Ok(mut l) = follower.latencies_ns.lock() {
        if !l.is_empty() {
            l.sort_unstable();
            let q = |p: f64| l[((l.len() - 1) as f64 * p).round() as usize] as f64 / 1e6;
            report.weights_latency_ms = Some((q(0.5), q(0.99)));
        }
    }
    let text = serde_json::to_string_pretty(&report).map_err(stage("actor.json"))?;
    write_atomic(&spec.out.join("actor.json"), text.as_bytes())?;
    Ok(report)
}

/// Holds a simulated actor while its learner is present, learning and behind its ratio (as
/// `reflex train` holds its simulator), at most a second per step.
fn hold_for_learner(heard: &reflex_fleet::Heard, slack: u64, held_ns: &AtomicU64) {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(1) {
        if !heard.learner_alive.load(Ordering::Acquire) {
            break;
        }
        let Some((s, at)) = heard.status.lock().ok().and_then(|s| *s) else {
            break;
        };
        if at.elapsed() > Duration::from_secs(2)
            || !s.learning
            || s.finished
            || s.updates + slack >= (s.env_steps as f64 * f64::from(s.utd)) as u64
        {
            break;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    held_ns.fetch_add(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
}

/// A stream id new at every process start: name, runtime index, process id and clock mixed.
fn stream_id(name: &str, i: usize) -> u64 {
    static START: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let start = *START.get_or_init(now_ns);
    let mut h = crc32fast::Hasher::new();
    h.update(name.as_bytes());
    h.update(&(i as u64).to_le_bytes());
    h.update(&u64::from(std::process::id()).to_le_bytes());
    h.update(&start.to_le_bytes());
    (u64::from(h.finalize()) << 32) | (start & 0xFFFF_FFFF) ^ i as u64
}
