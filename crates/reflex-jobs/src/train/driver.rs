//! The training loop: demonstrations, behaviour cloning, the base's evaluation, then the
//! runtime driven episode after episode while the learner trains, evaluating as it goes.

use super::config::{stage, TrainConfig, TrainError};
use super::episodes::{brake_to_rest, run_episodes, seeds, success_and_return};
use super::eval::heldout_evaluation;
use super::plot::plot_curves;
use super::report::{
    write_atomic, write_metrics, write_progress, EvalRow, Progress, RunState, Summary,
};
use super::scalars::Scalars;
use super::select::{hand_over, judge_evaluation, keep_if_best, load_best};
use super::{INTERRUPT, PROGRESS_EVERY_S};

/// Episodes in a row without a rewarded step after which a run warns that its reward source
/// is failing.
const STALL_EPISODES: u64 = 50;

/// Longest the simulated driver waits for a busy reward source before starting an episode.
pub(super) const REWARD_WAIT_LIMIT: Duration = Duration::from_secs(60);
use crate::arms::{runtime, Arms, SimArms};
use reflex_core::{Policy, Robot, SceneReset, SceneView};
use reflex_learn::bc::behaviour_clone;
use reflex_learn::learner::Learner;
use reflex_learn::nn::INPUT_MIN_STD;
use reflex_learn::replay::Source;
use reflex_learn::sac::Agent;
use reflex_learn::stage::{EpisodeHook, RewardPlugin};
use reflex_learn::store::{load_latest, ReplayLog};
use reflex_policy::Role;
use reflex_runtime::{NetPolicy, ResidualPolicy, Runtime, Ticker, WeightsSlot};
use reflex_sim::{ScriptedExpert, Task};
use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Runs (or, with `resume`, continues) a training run in `out`.
pub fn train(
    cfg: &TrainConfig,
    out: &Path,
    resume: bool,
    progress: impl FnMut(Progress),
) -> Result<Summary, TrainError> {
    train_with(cfg, out, resume, None, progress)
}

/// [`train`] with the rewards of `reward` instead of the task's own: its hook sees every
/// training episode start, its stage fills in the rewards on the learner thread. Evaluation
/// still judges the task's own success.
pub fn train_with(
    cfg: &TrainConfig,
    out: &Path,
    resume: bool,
    reward: Option<RewardPlugin>,
    progress: impl FnMut(Progress),
) -> Result<Summary, TrainError> {
    cfg.validate().map_err(stage("configuration"))?;
    let task = Task::load(&cfg.task).map_err(stage("task"))?;
    let arms = SimArms::new(task, cfg.runtime.servo_rate_hz);
    train_on(&arms, cfg, out, resume, reward, progress)
}

/// [`train_with`] on the robots `arms` makes (their task and loop rate, not `cfg`'s): the
/// driver sees them only through `Robot`, `SceneView` and `SceneReset`.
pub fn train_on<A: Arms>(
    arms: &A,
    cfg: &TrainConfig,
    out: &Path,
    resume: bool,
    reward: Option<RewardPlugin>,
    mut progress: impl FnMut(Progress),
) -> Result<Summary, TrainError> {
    cfg.validate().map_err(stage("configuration"))?;
    if cfg.obs == super::config::ObsMode::Pixels {
        if let Some(r) = reward.as_ref().filter(|r| r.name == "vlm-preference") {
            return Err(stage("configuration")(format!(
                "obs = \"pixels\" cannot train on `{}`: its reward model reshapes a replay of \
                 state rows by a potential, and a replay from pixels holds pictures",
                r.name
            )));
        }
        return super::pixels::train_pixels(arms, cfg, out, resume, reward, progress);
    }
    let started = Instant::now();
    let task = arms.task();
    // A real-time arm is ticked at its loop rate and never held back for the learner.
    let paced = arms.real_time();
    let act_dim = task.action_space.dim();
    let layout = arms.obs_layout()?;
    let obs_dim = layout.dim();
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
        mut scalars,
    } = prepare(arms, cfg, out, resume, &mut progress, &file_meta)?;

    // Networks shared with the runtimes.
    let base_slot = WeightsSlot::new(base_mlp.clone());
    let reward_name = reward
        .as_ref()
        .map_or("task".to_owned(), |r| r.name.clone());
    let (stage_half, mut hook) = match reward {
        Some(r) => (Some(r.stage), Some(r.hook)),
        None => (None, None),
    };
    let (mut learner, actor_slot, _) = learner_with_demos(
        cfg, out, &base_mlp, &demos, resuming, obs_dim, act_dim, stage_half,
    )?;

    // Evaluation runtime: base + deterministic residual on the same slots.
    let eval_flag = Arc::new(AtomicBool::new(false));
    let net = |slot: &Arc<WeightsSlot>| -> Result<Box<dyn Policy + Send>, TrainError> {
        Ok(Box::new(
            NetPolicy::new(slot.clone(), obs_dim, act_dim).map_err(stage("base policy"))?,
        ))
    };
    let residual = |flag: &Arc<AtomicBool>, seed: u64| {
        ResidualPolicy::tanh_gaussian(actor_slot.clone(), obs_dim, act_dim, flag.clone(), seed)
            .map_err(stage("residual policy"))
    };
    let mut eval_rt = runtime(
        arms,
        0,
        net(&base_slot)?,
        Some(residual(&eval_flag, 0)?),
        &cfg.runtime,
    )?;
    let eval_seeds = || seeds(cfg.seed, 2, cfg.eval_episodes);
    let evaluate = |rt: &mut Runtime<A::Robot>| -> Result<(f64, f64), TrainError> {
        let (r, _) = run_episodes(rt, eval_seeds(), false, paced)?;
        Ok(success_and_return(&r))
    };
    // The best evaluation's exploring actor (`keep_best`), kept across resumes.
    let mut best_actor = load_best(cfg, &mut state, out, resuming)?;
    // The training runtime's episode ids (and seeds) continue across resumes: the replay knows
    // the last one used.
    let first_episode = learner.max_online_episode().map_or(1, |m| m + 1);
    let prior_wall = state.wall_s;
    let wall = |started: &Instant| prior_wall + started.elapsed().as_secs_f64();
    if !resuming {
        progress(Progress::Stage("evaluating the base"));
        let (success, ret) = evaluate(&mut eval_rt)?;
        state.base_success_rate = success;
        let row = EvalRow::base(wall(&started), (success, ret), learner.agent.temperature());
        state.evals.push(row.clone());
        // Training that only ever falls below the base hands back the untrained residual.
        keep_if_best(cfg, &mut state, &mut best_actor, &row, &actor_slot, out)?;
        progress(Progress::Eval(row));
    }
    write_metrics(out, &state)?;
    write_progress(&state_path, &mut state, &learner.shared)?;

    // Training runtime: base + exploring residual; the learner drains its transitions.
    let explore = Arc::new(AtomicBool::new(true));
    let mut rt = runtime(
        arms,
        0,
        net(&base_slot)?,
        Some(residual(&explore, cfg.seed ^ 0xE)?),
        &cfg.runtime,
    )?;
    // A success detector (HIL-SERL's classifier) ends training episodes instead of the
    // robot's own judgement of success.
    if hook.as_ref().is_some_and(|h| h.detects_success()) {
        rt.set_end_on_success(false);
    }
    let shared = learner.shared.clone();
    if resuming {
        learner.publish();
    }
    // `start_episode` opens the next id: begin_episode numbers from the runtime's counter.
    rt.stats().episodes.store(first_episode, Ordering::Relaxed);
    let mut running = if cfg.learner.lockstep {
        Running::Inline(Box::new(learner))
    } else {
        Running::Thread(learner.spawn(rt.transitions().clone()))
    };
    // A real-time arm's loop preempts the learner (started above, so it does not inherit the
    // policy) until the arm is left at rest: a board's link watchdog allows tens of ms.
    let fifo = paced.then(|| reflex_runtime::FifoScope::enter(70));
    if let Some(Err(e)) = fifo.as_ref().map(|f| &f.got) {
        tracing::warn!("the training loop runs without SCHED_FIFO: {e}");
    }
    // Nor may its code fault back in from disk mid-episode (the learner's replay writes fill
    // the page cache): the process's file-backed pages stay in memory until the end.
    let locked = paced.then(reflex_runtime::MemoryLock::code);
    match locked.as_ref().map(|l| &l.got) {
        Some(Ok(bytes)) => tracing::info!(mb = *bytes as f64 / 1e6, "code locked in memory"),
        Some(Err(e)) => tracing::warn!("the training loop's code is not locked in memory: {e}"),
        None => {}
    }
    progress(Progress::Stage("training"));
    let budget = Duration::from_secs_f64(cfg.minutes * 60.0);
    let budget_s = budget.as_secs_f64();
    let utd = cfg.learner.utd as f64;
    let slack = (utd * 20.0) as u64;
    let mut train_seeds = seeds(cfg.seed, 3, usize::MAX).skip(first_episode as usize);
    let mut recent: VecDeque<bool> = VecDeque::new();
    let mut last_eval_steps = state.evals.last().map_or(0, |r| r.env_steps);
    let mut episodes = state.episodes;
    let mut last_report = Instant::now();
    let mut last_progress = Instant::now();
    let mut stop_reason = "time budget";
    let mut ret_success = false;
    let tick_stats = rt.stats().clone();
    let period_ns = (1e9 / cfg.runtime.servo_rate_hz) as u64;
    let mut reward_wait = Duration::ZERO;
    // (Stored steps, episodes) when the stored steps last grew.
    let mut stalled = (0u64, 0u64);
    let mut episode_id = start_episode(&mut rt, train_seeds.next().unwrap_or(0), &mut hook)?;
    let mut step_id = 0u64;
    let mut ticker = paced.then(|| Ticker::new(cfg.runtime.servo_rate_hz));
    // Which runtime moved the arm last (the one to brake at the end of a real-time run).
    let mut evaluated_last = false;
    let result: Result<(), TrainError> = (|| {
        loop {
            if INTERRUPT.load(Ordering::Relaxed) {
                // Brake to a stop before anything else: the e-stop aborts the episode.
                brake_to_rest(&mut rt, paced);
                stop_reason = "interrupted";
                return Ok(());
            }
            let rep = match &mut ticker {
                // The paced tick records its own compute time and jitter.
                Some(t) => rt.tick_paced(t),
                None => {
                    let t0 = Instant::now();
                    let rep = rt.tick();
                    tick_stats
                        .timing
                        .compute
                        .record(t0.elapsed().as_nanos() as u64);
                    rep
                }
            };
            if let Some(o) = &rep.outcome {
                scalars.add_terms(&o.terms);
            }
            if let (Some(outcome), Some(h)) = (&rep.outcome, &mut hook) {
                h.step_judged(episode_id, step_id, outcome, rt.observation(), rt.robot());
                if !rep.episode_done && h.ends_episode(episode_id, step_id, !paced) {
                    // A success detector saw the task done: the step in flight ends it.
                    rt.end_episode();
                }
            }
            if let Running::Inline(learner) = &mut running {
                learner.drain(rt.transitions()).map_err(stage("replay"))?;
                while learner.try_update() {}
            }
            if rep.outcome.is_some() {
                step_id += 1;
                // Hold the simulator while the learner is behind its update-to-data ratio (a
                // real-time arm is never held: the learner takes what it can).
                loop {
                    if paced {
                        break;
                    }
                    let steps = shared.env_steps.load(Ordering::Relaxed);
                    let ups = shared.updates.load(Ordering::Relaxed);
                    let learning = shared.learning.load(Ordering::Acquire);
                    if !learning || ups + slack >= (steps as f64 * utd) as u64 {
                        break;
                    }
                    if started.elapsed() >= budget
                        || running.finished()
                        || INTERRUPT.load(Ordering::Relaxed)
                    {
                        break;
                    }
                    std::thread::sleep(Duration::from_micros(100));
                }
                ret_success |= rep.outcome.is_some_and(|o| o.success);
            }
            if rep.episode_done {
                episodes += 1;
                recent.push_back(ret_success);
                if recent.len() > 20 {
                    recent.pop_front();
                }
                ret_success = false;
                let steps = shared.env_steps.load(Ordering::Relaxed);
                // A reward source that answers nothing usable (a VLM server down, answers
                // that never parse) leaves every episode unrewarded: say so once, by name.
                if steps > stalled.0 || hook.is_none() {
                    stalled = (steps, episodes);
                } else if episodes - stalled.1 == STALL_EPISODES {
                    tracing::warn!(
                        reward = %reward_name,
                        "the reward source rewarded no step in the last {STALL_EPISODES} \
                         episodes: training waits on it (its counters: summary.json's \
                         reward_stage, scalars.jsonl's stage/...)"
                    );
                }
                if steps >= last_eval_steps + cfg.eval_every {
                    // Evaluate without updates, on the weights of the learner's latest
                    // update (published as it pauses), so a run that stops here hands over
                    // the policy this evaluation judged.
                    shared.paused.store(true, Ordering::Release);
                    hold_learner(&mut running, &shared)?;
                    evaluated_last = true;
                    let result = match evaluate(&mut eval_rt) {
                        Ok(r) => r,
                        Err(TrainError::Interrupted) => {
                            shared.paused.store(false, Ordering::Release);
                            stop_reason = "interrupted";
                            return Ok(());
                        }
                        Err(e) => return Err(e),
                    };
                    let last = shared.last.lock().map(|l| *l).unwrap_or_default();
                    let row = EvalRow::trained(
                        steps,
                        shared.updates.load(Ordering::Relaxed),
                        wall(&started),
                        episodes,
                        result,
                        &recent,
                        &last,
                    );
                    last_eval_steps = steps;
                    // With confirmations, only a confirmed evaluation counts as reaching it.
                    let judged = judge_evaluation(
                        cfg,
                        &mut state,
                        &mut best_actor,
                        &row,
                        &actor_slot,
                        out,
                        &mut |seeds| {
                            progress(Progress::Stage("confirming on fresh scenes"));
                            run_episodes(&mut eval_rt, seeds, false, paced).map(|(r, _)| r)
                        },
                    );
                    let reached = match judged {
                        Ok(reached) => reached,
                        Err(TrainError::Interrupted) => {
                            shared.paused.store(false, Ordering::Release);
                            stop_reason = "interrupted";
                            return Ok(());
                        }
                        Err(e) => return Err(e),
                    };
                    state.episodes = episodes;
                    state.wall_s = wall(&started);
                    write_metrics(out, &state)?;
                    write_progress(&state_path, &mut state, &shared)?;
                    last_progress = Instant::now();
                    write_scalars(
                        &mut scalars,
                        &shared,
                        &tick_stats,
                        period_ns,
                        &state,
                        Some(&row),
                    )?;
                    progress(Progress::Eval(row));
                    if reached {
                        // Still paused: no update changes the weights just judged.
                        stop_reason = "target success reached";
                        return Ok(());
                    }
                    shared.paused.store(false, Ordering::Release);
                }
                if cfg.max_env_steps > 0 && steps >= cfg.max_env_steps {
                    stop_reason = "step budget";
                    return Ok(());
                }
                if started.elapsed() >= budget {
                    return Ok(());
                }
                if running.finished() {
                    stop_reason = "learner stopped";
                    return Ok(());
                }
                // A simulator can wait for the reward source: the next episode starts once it
                // can take the episode's question (bounded, so a dead source cannot stall the
                // run; an episode it still cannot take is dropped and counted).
                let waited = Instant::now();
                while hook.as_ref().is_some_and(|h| h.busy())
                    && waited.elapsed() < REWARD_WAIT_LIMIT
                    && started.elapsed() < budget
                    && !INTERRUPT.load(Ordering::Relaxed)
                {
                    if let Running::Inline(learner) = &mut running {
                        learner.drain(rt.transitions()).map_err(stage("replay"))?;
                        learner.try_update();
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
                reward_wait += waited.elapsed();
                if paced && last_progress.elapsed().as_secs_f64() > PROGRESS_EVERY_S {
                    // A real-time arm's files are written here, between episodes (the arm
                    // is held), never mid-episode: a slow disk would stall the loop past a
                    // board's link watchdog.
                    last_progress = Instant::now();
                    state.episodes = episodes;
                    state.wall_s = wall(&started);
                    write_progress(&state_path, &mut state, &shared)?;
                    write_scalars(&mut scalars, &shared, &tick_stats, period_ns, &state, None)?;
                }
                episode_id = start_episode(&mut rt, train_seeds.next().unwrap_or(0), &mut hook)?;
                evaluated_last = false;
                step_id = 0;
                // The schedule restarts after the reset (not counted as a deadline miss).
                if paced {
                    ticker = Some(Ticker::new(cfg.runtime.servo_rate_hz));
                }
            }
            if !paced && last_progress.elapsed().as_secs_f64() > PROGRESS_EVERY_S {
                last_progress = Instant::now();
                state.episodes = episodes;
                state.wall_s = wall(&started);
                write_progress(&state_path, &mut state, &shared)?;
                write_scalars(&mut scalars, &shared, &tick_stats, period_ns, &state, None)?;
            }
            // A real-time arm's progress is reported between episodes only: the callback
            // draws a progress bar, and a slow terminal must not stall the loop.
            if (!paced || rep.episode_done) && last_report.elapsed() > Duration::from_millis(250) {
                last_report = Instant::now();
                progress(Progress::Training {
                    env_steps: shared.env_steps.load(Ordering::Relaxed),
                    updates: shared.updates.load(Ordering::Relaxed),
                    success: state.evals.last().map(|r| r.success_rate),
                    elapsed_s: started.elapsed().as_secs_f64(),
                    budget_s,
                });
            }
        }
    })();
    shared.stop.store(true, Ordering::Release);
    let learner = running.stop()?;
    result?;
    tracing::info!(reason = stop_reason, "training stopped");
    let dropped = rt.transitions().stats().dropped;
    let deadline_misses = tick_stats.timing.compute.count_from(period_ns);

    // The final policy and its evaluation (unless the last evaluation saw these weights).
    actor_slot
        .publish(learner.agent.exploring_actor())
        .map_err(stage("publishing"))?;
    let env_steps = shared.env_steps.load(Ordering::Relaxed);
    let interrupted = stop_reason == "interrupted";
    // A run stopped at its target was held since that evaluation: its weights were judged.
    let judged = |r: &EvalRow| {
        r.updates == learner.agent.updates
            && (r.env_steps == env_steps || stop_reason == "target success reached")
    };
    if !interrupted && !state.evals.last().is_some_and(judged) {
        progress(Progress::Stage("final evaluation"));
        evaluated_last = true;
        let result = evaluate(&mut eval_rt)?;
        let last = shared.last.lock().map(|l| *l).unwrap_or_default();
        let row = EvalRow::trained(
            env_steps,
            learner.agent.updates,
            wall(&started),
            episodes,
            result,
            &recent,
            &last,
        );
        // A final evaluation at the target is confirmed like any other (the run is over either
        // way; the confirmation says whether it counts as reaching the target).
        judge_evaluation(
            cfg,
            &mut state,
            &mut best_actor,
            &row,
            &actor_slot,
            out,
            &mut |seeds| run_episodes(&mut eval_rt, seeds, false, paced).map(|(r, _)| r),
        )?;
    }
    // The weights to hand over: the last, or (`keep_best`, a run ended on its budget) its
    // best evaluation's when the last evaluation fell below it.
    let (policy, handed_over) = hand_over(
        &state,
        best_actor.as_ref(),
        stop_reason,
        learner.agent.deterministic_actor(),
        (env_steps, learner.agent.updates),
        &actor_slot,
        act_dim,
    )?;
    // The figure to report: the final policy on seeds no run trained or stopped on.
    let heldout = if !interrupted && !paced && cfg.heldout_episodes > 0 {
        progress(Progress::Stage("held-out evaluation"));
        heldout_evaluation(&mut eval_rt, cfg.heldout_episodes)?
    } else {
        None
    };
    if paced && !interrupted {
        // A real-time arm is left at rest, by the runtime that moved it last.
        brake_to_rest(
            if evaluated_last {
                &mut eval_rt
            } else {
                &mut rt
            },
            true,
        );
    }
    drop((fifo, locked));
    reflex_policy::PolicyFile::save(
        &policy,
        &file_meta(Role::Residual),
        &out.join("policy.safetensors"),
    )
    .map_err(stage("policy"))?;
    state.episodes = episodes;
    state.wall_s = wall(&started);
    write_progress(&state_path, &mut state, &learner.shared)?;
    write_metrics(out, &state)?;
    if let Ok(mut r) = learner.shared.stage_report.lock() {
        *r = learner.stage_report();
    }
    write_scalars(
        &mut scalars,
        &learner.shared,
        &tick_stats,
        period_ns,
        &state,
        state.evals.last(),
    )?;
    if let Err(e) = plot_curves(&out.join("curve.png"), &cfg.task, &state.evals) {
        tracing::warn!("curve.png not drawn: {e}");
    }
    let train_s = (state.wall_s - state.evals.first().map_or(0.0, |r| r.wall_s)).max(1e-9);
    let summary = Summary {
        commit: super::COMMIT.to_owned(),
        config: serde_json::to_value(cfg).map_err(stage("summary.json"))?,
        task: cfg.task.clone(),
        seed: cfg.seed,
        env_steps,
        updates: learner.agent.updates,
        wall_s: state.wall_s,
        base_success_rate: state.base_success_rate,
        final_success_rate: state.evals.last().map_or(0.0, |r| r.success_rate),
        best_success_rate: state
            .evals
            .iter()
            .map(|r| r.success_rate)
            .fold(0.0, f64::max),
        heldout,
        steps_to_target: state.steps_to_target,
        minutes_to_target: state.minutes_to_target,
        confirmations: state.confirmations.clone(),
        handed_over,
        demo_episodes: state.demo_episodes,
        demo_sessions: state.demo_sessions.clone(),
        episodes,
        updates_per_s: learner.agent.updates as f64 / train_s,
        env_steps_per_s: env_steps as f64 / train_s,
        dropped_transitions: dropped,
        intervened_steps: shared.intervened_steps.load(Ordering::Relaxed),
        stop_reason: stop_reason.to_owned(),
        reward: reward_name,
        reward_wait_s: reward_wait.as_secs_f64(),
        deadline_misses,
        reward_stage: learner.stage_report().map(|mut r| {
            r["replay_reshapes"] = learner.shared.reshapes.load(Ordering::Relaxed).into();
            r
        }),
        clip_would_bind: shared.clip_would_bind.load(Ordering::Relaxed),
        interrupted_steps: shared.interrupted.load(Ordering::Relaxed),
        rollbacks: shared.rollbacks.load(Ordering::Relaxed),
        replay_records: learner.replay_records(),
    };
    let text = serde_json::to_string_pretty(&summary).map_err(stage("summary.json"))?;
    write_atomic(&out.join("summary.json"), text.as_bytes())?;
    Ok(summary)
}

/// A run's learner, the slot its actor is published to, and the `(episode, step)` of every
/// online step its replay held when it was opened.
pub(crate) type OpenedLearner = (Learner, Arc<WeightsSlot>, Vec<(u64, u64)>);

/// Where a run starts: its state (fresh, or read back when resuming), the cloned base, a
/// fresh run's demonstrations, and its scalars log.
pub(crate) struct Prepared {
    pub state: RunState,
    pub state_path: std::path::PathBuf,
    pub base_mlp: reflex_policy::Mlp,
    pub demos: Vec<reflex_core::Transition>,
    pub resuming: bool,
    pub scalars: Scalars,
}

/// Creates (or, with `resume`, reopens) the run directory `out`: its configuration, scalars
/// and progress; a fresh run records the scripted expert's demonstrations on `arms` and
/// clones the base from them (`base.safetensors`), a resumed one reads its base back.
pub(crate) fn prepare<A: Arms>(
    arms: &A,
    cfg: &TrainConfig,
    out: &Path,
    resume: bool,
    progress: &mut dyn FnMut(Progress),
    file_meta: &dyn Fn(Role) -> reflex_policy::PolicyMeta,
) -> Result<Prepared, TrainError> {
    let task = arms.task();
    let paced = arms.real_time();
    let layout = arms.obs_layout()?;
    let (obs_dim, act_dim) = (layout.dim(), task.action_space.dim());
    std::fs::create_dir_all(out).map_err(stage("creating the run directory"))?;
    let scalars = Scalars::open(
        out,
        task.reward.terms.iter().map(|t| t.name.clone()).collect(),
    )?;
    let state_path = out.join("progress.json");
    let base_path = out.join("base.safetensors");
    let resuming = resume && state_path.exists() && base_path.exists();
    if resume && !resuming {
        tracing::warn!("nothing to resume in {}: starting a new run", out.display());
    }
    let config_text = toml::to_string(cfg).map_err(stage("configuration"))?;
    write_atomic(&out.join("config.toml"), config_text.as_bytes())?;

    let demo_episodes = cfg.demo_episodes();
    let mut state = RunState {
        demo_episodes,
        ..Default::default()
    };
    let mut demos = Vec::new();
    let base_mlp = if resuming {
        let text = std::fs::read_to_string(&state_path).map_err(stage("progress.json"))?;
        state = serde_json::from_str(&text)
            .map_err(|e| stage("progress.json")(format!("{}: {e}", state_path.display())))?;
        crate::policies::load_for(&base_path, Role::Base, task, layout)
            .map_err(stage("base policy"))?
            .mlp
    } else {
        // Fresh run: clear what a previous run left (its replay, checkpoints and fleet ledger).
        for d in ["replay", "checkpoints", "fleet"] {
            let _ = std::fs::remove_dir_all(out.join(d));
        }
        progress(Progress::Stage("demonstrations"));
        if cfg.demo_sessions.is_empty() {
            let expert = ScriptedExpert::new(task, &arms.model()?);
            let noise = demo_noise_policy(cfg.demo_noise_std(), obs_dim, act_dim, cfg.seed)?;
            let mut rt = runtime(arms, 0, Box::new(expert), noise, &cfg.runtime)?;
            let (_, transitions) =
                run_episodes(&mut rt, seeds(cfg.seed, 1, demo_episodes), true, paced)?;
            demos = transitions;
        } else {
            // What an operator showed the arm: the recorded sessions' successful episodes.
            let (steps, report) = super::session_demos::read_for_run(cfg, task, obs_dim, false)?;
            demos = steps.into_iter().map(|s| s.t).collect();
            state.demo_episodes = report.used;
            state.demo_sessions = Some(report);
        }
        progress(Progress::Stage("behaviour cloning"));
        let obs: Vec<f32> = demos
            .iter()
            .flat_map(|t| t.obs.as_slice().to_vec())
            .collect();
        // The expert's own action (with demonstration noise, not the one executed).
        let act: Vec<f32> = demos
            .iter()
            .flat_map(|t| t.base_action.as_slice().to_vec())
            .collect();
        let (mlp, loss) = behaviour_clone(&obs, &act, obs_dim, act_dim, &cfg.bc(), cfg.seed);
        tracing::info!(loss, pairs = demos.len(), "behaviour cloning done");
        reflex_policy::PolicyFile::save(&mlp, &file_meta(Role::Base), &base_path)
            .map_err(stage("base policy"))?;
        mlp
    };

    Ok(Prepared {
        state,
        state_path,
        base_mlp,
        demos,
        resuming,
        scalars,
    })
}

/// The demonstrations' noise (DART) as an exploring residual whose mean is zero and whose
/// standard deviation before `tanh` is `std` on every motion component (the gripper's is the
/// smallest the head allows), or none when `std` is too small to matter. The runtime then
/// records the expert's action as each step's base action and the noisy one as executed.
pub(crate) fn demo_noise_policy(
    std: f64,
    obs_dim: usize,
    act_dim: usize,
    seed: u64,
) -> Result<Option<ResidualPolicy>, TrainError> {
    let min_std = f64::from(reflex_policy::LOG_STD_MIN).exp();
    if std <= 2.0 * min_std {
        return Ok(None);
    }
    // The raw head output whose squashed log-std is ln(std).
    let raw = |std: f64| {
        let (lo, hi) = (
            f64::from(reflex_policy::LOG_STD_MIN),
            f64::from(reflex_policy::LOG_STD_MAX),
        );
        let t = (2.0 * (std.ln() - lo) / (hi - lo) - 1.0).clamp(-0.999_999, 0.999_999);
        t.atanh() as f32
    };
    let mut mlp = reflex_policy::Mlp::zeros(
        &[obs_dim + act_dim, 2 * act_dim],
        reflex_policy::Activation::Relu,
        reflex_policy::Activation::Identity,
    );
    if let Some((_, bias)) = mlp.layer_mut(0) {
        for (j, b) in bias[act_dim..].iter_mut().enumerate() {
            *b = if j + 1 == act_dim {
                raw(min_std)
            } else {
                raw(std)
            };
        }
    }
    let on = Arc::new(AtomicBool::new(true));
    ResidualPolicy::tanh_gaussian(WeightsSlot::new(mlp), obs_dim, act_dim, on, seed ^ 0xDA27)
        .map(Some)
        .map_err(stage("demonstration noise"))
}

/// The run's learner ([`open_learner`]) with `stage` between transitions and replay, the
/// demonstrations `demos` in its demonstration buffer (rewarded by the stage if there is
/// one) and, before its first update, its input normalisation fitted on them. Also returns
/// the `(episode, step)` of every online step its replay held.
#[allow(clippy::too_many_arguments)]
pub(crate) fn learner_with_demos(
    cfg: &TrainConfig,
    out: &Path,
    base_mlp: &reflex_policy::Mlp,
    demos: &[reflex_core::Transition],
    resuming: bool,
    obs_dim: usize,
    act_dim: usize,
    stage_half: Option<Box<dyn reflex_learn::stage::RewardStage>>,
) -> Result<OpenedLearner, TrainError> {
    let (mut learner, actor_slot, stored) =
        open_learner(cfg, out, base_mlp, obs_dim, act_dim, resuming)?;
    if let Some(st) = stage_half {
        learner.set_stage(st);
    }
    for t in demos {
        // Demonstrations are stored relative to the cloned base, like every other step, and
        // with the reward the stage gives them (with a reward source, never the task's own).
        let mut t = *t;
        t.outcome.reward = learner.demo_reward(&t);
        let mut aug = Vec::new();
        learner.augment(t.obs.as_slice(), &mut aug);
        t.base_action.copy_from(&aug[obs_dim..]);
        if let Some(step) = learner.step_from(&t, Source::Demo) {
            learner.add_demo(step).map_err(stage("replay"))?;
        }
    }
    if learner.agent.updates == 0 {
        learner.fit_normaliser(INPUT_MIN_STD);
    }
    Ok((learner, actor_slot, stored))
}

/// The run's learner: its agent (restored from the run's newest checkpoint when `resuming`),
/// the replay recovered from `out/replay` and persisted there from now on, checkpoints written
/// to `out/checkpoints`; and the slot its exploring actor is published to.
pub(crate) fn open_learner(
    cfg: &TrainConfig,
    out: &Path,
    base_mlp: &reflex_policy::Mlp,
    obs_dim: usize,
    act_dim: usize,
    resuming: bool,
) -> Result<OpenedLearner, TrainError> {
    let mut agent = Agent::new(cfg.agent.clone(), obs_dim + act_dim, act_dim, cfg.seed)
        .with_residual(cfg.runtime.residual_scale);
    let ckpt_dir = out.join("checkpoints");
    if resuming {
        let got = load_latest(&ckpt_dir, |c| agent.restore(&c).map(|_| ()))
            .map_err(stage("checkpoint"))?;
        match got {
            Some((_, path)) => tracing::info!("resumed from {}", path.display()),
            None => tracing::warn!(
                "no checkpoint in {}: the agent starts afresh",
                ckpt_dir.display()
            ),
        }
    }
    let actor_slot = WeightsSlot::new(agent.exploring_actor());
    let mut learner = Learner::new(
        agent,
        cfg.learner.clone(),
        cfg.runtime.residual_scale,
        base_mlp.clone(),
        actor_slot.clone(),
        cfg.seed,
    );
    let (log, recovered, recovery) =
        ReplayLog::open(&out.join("replay"), obs_dim + act_dim, act_dim)
            .map_err(stage("replay"))?;
    if recovery.torn_bytes > 0 {
        tracing::warn!(
            bytes = recovery.torn_bytes,
            "replay: a torn tail was dropped"
        );
    }
    if recovery.damaged_records > 0 {
        tracing::warn!(
            damaged = recovery.damaged_records,
            bytes = recovery.skipped_bytes,
            "replay: damaged records were skipped; every intact record was kept"
        );
    }
    let recovered_records = recovered.len();
    let stored: Vec<(u64, u64)> = recovered
        .iter()
        .filter(|s| s.source != Source::Demo)
        .map(|s| (s.episode, s.step))
        .collect();
    for step in recovered {
        learner.restore_step(step);
    }
    // Nothing after the restart continues an n-step window from before it.
    learner.flush_windows();
    if resuming {
        tracing::info!(
            records = recovered_records,
            env_steps = learner.shared.env_steps.load(Ordering::Relaxed),
            "resumed the replay"
        );
    }
    learner.persist(log, ckpt_dir);
    Ok((learner, actor_slot, stored))
}

/// Resets the training scene with `seed`, opens the runtime's next episode and tells the
/// reward hook (if any) about it; returns the episode's id (as its transitions carry it).
pub(super) fn start_episode<R: Robot + SceneView + SceneReset>(
    rt: &mut Runtime<R>,
    seed: u64,
    hook: &mut Option<Box<dyn EpisodeHook>>,
) -> Result<u64, TrainError> {
    rt.reset_episode(seed).map_err(stage("scene reset"))?;
    let episode = rt
        .stats()
        .episodes
        .load(Ordering::Relaxed)
        .saturating_sub(1);
    if let Some(h) = hook {
        h.episode_started(episode, rt.observation(), rt.robot());
    }
    Ok(episode)
}

/// The learner during training: on its own thread, or in step with the simulator.
enum Running {
    Thread(std::thread::JoinHandle<Result<Learner, reflex_learn::store::StoreError>>),
    Inline(Box<Learner>),
}

impl Running {
    /// Whether the learner thread has ended (it only ends early on an error).
    fn finished(&self) -> bool {
        match self {
            Running::Thread(h) => h.is_finished(),
            Running::Inline(_) => false,
        }
    }

    /// Ends the learner (after its final checkpoint) and hands it back.
    fn stop(self) -> Result<Learner, TrainError> {
        match self {
            Running::Thread(h) => h
                .join()
                .map_err(|_| stage("learner")("the learner thread panicked"))?
                .map_err(stage("learner")),
            Running::Inline(mut l) => {
                l.checkpoint().map_err(stage("learner"))?;
                Ok(*l)
            }
        }
    }
}

/// Longest an evaluation waits for the learner thread to finish its update and publish.
const HOLD_WAIT_LIMIT: Duration = Duration::from_secs(30);

/// Pauses the learner before an evaluation (`shared.paused` is set): the actor of its latest
/// update is published and no update runs until `paused` clears. A thread is waited for
/// (bounded; it ends only on an error, which `stop` reports).
fn hold_learner(
    running: &mut Running,
    shared: &reflex_learn::learner::LearnerShared,
) -> Result<(), TrainError> {
    match running {
        Running::Inline(learner) => learner.publish_latest(),
        Running::Thread(h) => {
            let waited = Instant::now();
            while !shared.holding.load(Ordering::Acquire) && !h.is_finished() {
                if waited.elapsed() > HOLD_WAIT_LIMIT {
                    return Err(stage("learner")(format!(
                        "the learner thread did not pause within {} s",
                        HOLD_WAIT_LIMIT.as_secs()
                    )));
                }
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    }
    Ok(())
}

/// One line of `scalars.jsonl` from the learner's latest update and counters, the loop's
/// statistics and, after an evaluation, its row.
fn write_scalars(
    scalars: &mut Scalars,
    shared: &reflex_learn::learner::LearnerShared,
    loop_stats: &reflex_runtime::RuntimeStats,
    period_ns: u64,
    state: &RunState,
    eval: Option<&EvalRow>,
) -> Result<(), TrainError> {
    let last = shared.last.lock().map(|l| *l).unwrap_or_default();
    let n = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed) as f64;
    let env_steps = n(&shared.env_steps);
    let mut values = vec![
        ("env_steps", env_steps),
        ("updates", n(&shared.updates)),
        ("wall_s", state.wall_s),
        ("losses/critic_td_mse", f64::from(last.critic_loss)),
        ("losses/actor", f64::from(last.actor_loss)),
        ("values/q_mean", f64::from(last.q_mean)),
        ("charts/entropy", f64::from(last.entropy)),
        ("charts/temperature", f64::from(last.temperature)),
        ("charts/episodes", state.episodes as f64),
        (
            "learner/clip_would_bind_rate",
            n(&shared.clip_would_bind) / env_steps.max(1.0),
        ),
        ("learner/rollbacks", n(&shared.rollbacks)),
        ("learner/interrupted_steps", n(&shared.interrupted)),
        ("learner/replay_synced", n(&shared.synced_records)),
        ("learner/replay_reshapes", n(&shared.reshapes)),
        ("runtime/intervened_steps", n(&shared.intervened_steps)),
        (
            "runtime/deadline_misses",
            loop_stats.timing.compute.count_from(period_ns) as f64,
        ),
    ];
    if let Some(r) = eval {
        values.push(("charts/success_rate", r.success_rate));
        values.push(("charts/mean_return", r.mean_return));
        if let Some(t) = r.train_success_rate {
            values.push(("charts/train_success_rate", t));
        }
    }
    let stage_report = shared.stage_report.lock().ok().and_then(|r| r.clone());
    scalars.write(&values, stage_report.as_ref())
}
