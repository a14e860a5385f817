//! The main job: from scripted demonstrations to a behaviour-cloned base to a residual trained
//! with SAC + RLPD in the simulator, all through the runtime's control loop.
//!
//! 1. Demonstrations: the task's scripted expert drives the runtime (`demo_episodes`).
//! 2. Behaviour cloning of the base from them (a deliberately small budget, so the base is
//!    imperfect and the residual has something to fix). Saved as `base.safetensors`.
//! 3. The base is evaluated (the residual starts at exactly zero, so this is the base).
//! 4. Training: the runtime runs base + exploring residual; the learner thread drains its
//!    transitions and publishes the actor every `publish_every` updates. The simulator is held
//!    back when updates fall behind `utd` per step (the control loop itself never waits on the
//!    learner: the driver simply does not tick). Every `eval_every` steps the deterministic
//!    policy is evaluated on `eval_episodes` fixed seeds.
//! 5. Outputs in the run directory: `summary.json`, `metrics.csv`, `curve.png`,
//!    `base.safetensors`, `policy.safetensors` (the deployed residual, `tanh(mean)`),
//!    `config.toml`, `progress.json`, `replay/` and `checkpoints/` (for `--resume`).

use crate::bc::{behaviour_clone, BcConfig};
use crate::learner::{Learner, LearnerConfig};
use crate::nn::INPUT_MIN_STD;
use crate::plot::plot_curves;
use crate::replay::Source;
use crate::sac::{Agent, AgentConfig, UpdateStats};
use crate::stage::{EpisodeHook, RewardPlugin};
use crate::store::{load_latest, ReplayLog};
use reflex_core::{Policy, Transition};
use reflex_runtime::{Mlp, NetPolicy, ResidualPolicy, Runtime, RuntimeConfig, WeightsSlot};
use reflex_sim::{Env, ScriptedExpert, SimRobot, Task};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Everything a training run is configured by (a TOML file can set any part).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Task name (from `sim/tasks`) or task file.
    pub task: String,
    /// Seed of everything random in the run.
    pub seed: u64,
    /// Wall-clock budget, minutes.
    pub minutes: f64,
    /// Environment-step budget (0: none).
    pub max_env_steps: u64,
    /// Stop once an evaluation reaches this success rate (above 1: never stop early).
    pub target_success: f64,
    /// Scripted demonstrations for behaviour cloning and the demonstration buffer (0: the
    /// task's default).
    pub demo_episodes: usize,
    /// `a = base + scale * residual`.
    pub residual_scale: f32,
    /// Control-loop rate of the simulated runtime, Hz.
    pub loop_rate_hz: f64,
    /// Evaluate every this many environment steps.
    pub eval_every: u64,
    /// Episodes per evaluation.
    pub eval_episodes: usize,
    /// Behaviour cloning of the base.
    pub bc: BcConfig,
    /// The learner thread.
    pub learner: LearnerConfig,
    /// The agent.
    pub agent: AgentConfig,
    /// Where rewards come from and their settings (`[reward]`: read by the command that builds
    /// the reward plugin; kept here so the run directory's `config.toml` records it).
    #[serde(skip_serializing_if = "toml::Table::is_empty")]
    pub reward: toml::Table,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            task: "pick_cube".into(),
            seed: 0,
            minutes: 15.0,
            max_env_steps: 0,
            target_success: 0.95,
            demo_episodes: 0,
            residual_scale: 0.3,
            loop_rate_hz: 500.0,
            eval_every: 10_000,
            eval_episodes: 50,
            bc: BcConfig::default(),
            learner: LearnerConfig::default(),
            agent: AgentConfig::default(),
            reward: toml::Table::new(),
        }
    }
}

/// Set (by a signal handler: the first Ctrl-C, SIGTERM) to stop the running [`train`]: it
/// presses the e-stop of the runtime that is driving the arm, ticks until the arm is at rest,
/// and ends the run with `summary.json`, `metrics.csv`, `curve.png`, the policy and the last
/// checkpoint written (no final evaluation).
pub static INTERRUPT: AtomicBool = AtomicBool::new(false);

/// Longest a run waits for the arm to come to rest after its e-stop was pressed, seconds of
/// loop time.
const BRAKE_LIMIT_S: f64 = 5.0;

/// Seconds between writes of `progress.json` while training (besides every evaluation): the
/// replay is synced about this often too, so the file tells how much of it is safe.
const PROGRESS_EVERY_S: f64 = 1.0;

/// The demonstration budget that leaves each built-in task's cloned base imperfect (measured,
/// 50 fixed-seed episodes: reach 60%, push 32%, pick_cube 42%; peg_insert stays near 5% at any
/// budget up to 150).
pub fn default_demo_episodes(task: &str) -> usize {
    match task {
        "reach" => 40,
        "push" => 60,
        "pick_cube" => 15,
        "peg_insert" => 80,
        _ => 10,
    }
}

impl TrainConfig {
    /// Reads a TOML file; unknown keys and bad values are refused naming the file and field.
    pub fn load(path: &Path) -> Result<Self, TrainError> {
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::Config {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let cfg: Self = toml::from_str(&text).map_err(|e| TrainError::Config {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        cfg.validate().map_err(|message| TrainError::Config {
            path: path.to_owned(),
            message,
        })?;
        Ok(cfg)
    }

    /// Checks ranges; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.minutes > 0.0 && self.minutes.is_finite()) {
            return Err(format!("minutes: must be positive, got {}", self.minutes));
        }
        if !(0.1..=0.5).contains(&self.residual_scale) {
            return Err(format!(
                "residual_scale: must be in [0.1, 0.5], got {}",
                self.residual_scale
            ));
        }
        if self.eval_episodes == 0 || self.eval_every == 0 {
            return Err("eval_episodes and eval_every must be positive".into());
        }
        if !(self.loop_rate_hz > 0.0 && self.loop_rate_hz <= 10_000.0) {
            return Err(format!(
                "loop_rate_hz: must be in (0, 10000], got {}",
                self.loop_rate_hz
            ));
        }
        self.learner.validate()?;
        if self.learner.success_absorbing && self.agent.gamma >= 1.0 {
            return Err("learner.success_absorbing needs agent.gamma below 1".into());
        }
        self.agent.validate()
    }
}

/// Why a run failed; each names the file or stage.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The configuration file is unreadable or invalid.
    #[error("{path}: {message}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A stage failed.
    #[error("{stage}: {message}")]
    Stage {
        /// The stage.
        stage: &'static str,
        /// What went wrong.
        message: String,
    },
    /// An interrupt (Ctrl-C, SIGTERM) pressed the e-stop; the arm was brought to rest.
    #[error("interrupted: the e-stop was pressed and the arm brought to rest")]
    Interrupted,
}

fn stage<E: std::fmt::Display>(stage: &'static str) -> impl Fn(E) -> TrainError {
    move |e| TrainError::Stage {
        stage,
        message: e.to_string(),
    }
}

/// One evaluation, one row of `metrics.csv`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalRow {
    /// Online environment steps so far.
    pub env_steps: u64,
    /// Updates so far.
    pub updates: u64,
    /// Seconds of training so far (across resumes).
    pub wall_s: f64,
    /// Training episodes so far.
    pub episodes: u64,
    /// Success over the evaluation episodes (deterministic policy).
    pub success_rate: f64,
    /// Mean undiscounted return of the evaluation episodes.
    pub mean_return: f64,
    /// Success over the last 20 training (exploring) episodes (none before training).
    pub train_success_rate: Option<f64>,
    /// Latest critic loss (none before training).
    pub critic_loss: Option<f32>,
    /// Latest SAC temperature.
    pub temperature: f32,
    /// Latest mean Q of the first critic on a training batch (none before training).
    #[serde(default)]
    pub q_mean: Option<f32>,
    /// Latest entropy estimate of the exploring residual, `-log pi` (none before training).
    #[serde(default)]
    pub entropy: Option<f32>,
}

impl EvalRow {
    /// A row after training began: the evaluation, plus the learner's latest statistics and
    /// the success of the recent training episodes.
    #[allow(clippy::too_many_arguments)]
    fn trained(
        env_steps: u64,
        updates: u64,
        wall_s: f64,
        episodes: u64,
        (success_rate, mean_return): (f64, f64),
        recent: &VecDeque<bool>,
        last: &UpdateStats,
    ) -> Self {
        let finite = |v: f32| v.is_finite().then_some(v);
        Self {
            env_steps,
            updates,
            wall_s,
            episodes,
            success_rate,
            mean_return,
            train_success_rate: Some(
                recent.iter().filter(|s| **s).count() as f64 / recent.len().max(1) as f64,
            ),
            critic_loss: finite(last.critic_loss),
            temperature: last.temperature,
            q_mean: finite(last.q_mean),
            entropy: finite(last.entropy),
        }
    }
}

/// `summary.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Task.
    pub task: String,
    /// Seed.
    pub seed: u64,
    /// Online environment steps.
    pub env_steps: u64,
    /// Updates.
    pub updates: u64,
    /// Seconds of training (across resumes), demonstrations and cloning included.
    pub wall_s: f64,
    /// Success of the behaviour-cloned base.
    pub base_success_rate: f64,
    /// Success at the last evaluation.
    pub final_success_rate: f64,
    /// Best evaluation.
    pub best_success_rate: f64,
    /// Environment steps when an evaluation first reached `target_success`.
    pub steps_to_target: Option<u64>,
    /// Minutes when an evaluation first reached `target_success`.
    pub minutes_to_target: Option<f64>,
    /// Demonstration episodes used.
    pub demo_episodes: usize,
    /// Training episodes.
    pub episodes: u64,
    /// Updates per second of training time.
    pub updates_per_s: f64,
    /// Online environment steps per second of training time.
    pub env_steps_per_s: f64,
    /// Transitions the runtime's queue dropped (the learner fell behind).
    pub dropped_transitions: u64,
    /// Steps an operator took over.
    pub intervened_steps: u64,
    /// Why training stopped: `time budget`, `step budget`, `target success reached`,
    /// `interrupted` or `learner stopped`.
    #[serde(default)]
    pub stop_reason: String,
    /// Where training rewards came from: `task` or a reward source's name.
    #[serde(default)]
    pub reward: String,
    /// Training ticks whose work (simulated physics included) took a control period or longer.
    #[serde(default)]
    pub deadline_misses: u64,
    /// The reward source's counters (VLM queries, cache hits, failures, transitions held and
    /// dropped), when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reward_stage: Option<serde_json::Value>,
    /// Stored steps (demonstrations, takeovers, exploration) whose executed action lay farther
    /// than `residual_scale` from the base in some component: stored exactly now; the former
    /// scheme would have stored a clipped action nobody took.
    #[serde(default)]
    pub clip_would_bind: u64,
    /// Steps not stored because they were interrupted (e-stop, lost operator link).
    #[serde(default)]
    pub interrupted_steps: u64,
    /// Times training diverged (a non-finite loss or weight) and was rolled back.
    #[serde(default)]
    pub rollbacks: u64,
    /// Records in the replay log (demonstrations and online steps, across resumes).
    #[serde(default)]
    pub replay_records: u64,
}

/// Progress reported while a run goes.
#[derive(Clone, Debug)]
pub enum Progress {
    /// A stage started.
    Stage(&'static str),
    /// Training progressed.
    Training {
        /// Online steps.
        env_steps: u64,
        /// Updates.
        updates: u64,
        /// Latest evaluation success.
        success: Option<f64>,
        /// Seconds of the budget used.
        elapsed_s: f64,
        /// The budget, seconds.
        budget_s: f64,
    },
    /// An evaluation finished.
    Eval(EvalRow),
}

/// What survives a restart besides the checkpoint and replay (`progress.json`, written at
/// every evaluation and every few seconds while training).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct RunState {
    base_success_rate: f64,
    demo_episodes: usize,
    evals: Vec<EvalRow>,
    episodes: u64,
    wall_s: f64,
    steps_to_target: Option<u64>,
    minutes_to_target: Option<f64>,
    /// Online environment steps at the time of writing.
    #[serde(default)]
    env_steps: u64,
    /// Replay records on disk (synced) at the time of writing: a crash loses none of them.
    #[serde(default)]
    replay_synced: u64,
    /// Executed actions farther than `residual_scale` from the base in some component (stored
    /// exactly; the former scheme clipped them).
    #[serde(default)]
    clip_would_bind: u64,
}

/// Builds the runtime over a simulated arm for `task` with the given policies.
pub fn sim_runtime(
    task: &Task,
    rate_hz: f64,
    seed: u64,
    base: Box<dyn Policy + Send>,
    residual: Option<ResidualPolicy>,
    residual_scale: f32,
) -> Result<Runtime<SimRobot>, TrainError> {
    let mut env = Env::new(task.clone()).map_err(stage("simulator"))?;
    env.reset(seed).map_err(stage("simulator"))?;
    let model = env.model().clone();
    let cfg = RuntimeConfig {
        residual_scale,
        ..RuntimeConfig::new(
            rate_hz,
            task.control_rate_hz,
            task.action_space,
            task.control.clone(),
            task.arm.initial_joint_pos_rad,
            task.safety_limits(&model),
        )
    };
    let robot = SimRobot::new(env, rate_hz).map_err(stage("simulator"))?;
    Runtime::new(
        robot,
        cfg,
        model,
        base,
        residual,
        reflex_runtime::EStop::new(),
    )
    .map_err(stage("runtime"))
}

/// Per episode (success, return), and the transitions kept.
pub type EpisodeResults = (Vec<(bool, f64)>, Vec<Transition>);

/// Presses `rt`'s e-stop and ticks until the arm is at rest (at most [`BRAKE_LIMIT_S`]).
pub fn brake_to_rest(rt: &mut Runtime<SimRobot>) -> bool {
    rt.estop().press();
    let max_ticks = (BRAKE_LIMIT_S * rt.config().rate_hz) as u64;
    let rested = rt.tick_until_at_rest(max_ticks, false);
    if !rested {
        tracing::error!("the arm did not come to rest within {BRAKE_LIMIT_S} s of braking");
    }
    rested
}

/// Runs whole episodes on `rt` from seeds `seeds`; returns per-episode (success, return) and
/// every transition when `keep` (else they are drained and dropped). An interrupt brakes the
/// arm to rest and returns [`TrainError::Interrupted`].
pub fn run_episodes(
    rt: &mut Runtime<SimRobot>,
    seeds: impl Iterator<Item = u64>,
    keep: bool,
) -> Result<EpisodeResults, TrainError> {
    let mut results = Vec::new();
    let mut kept = Vec::new();
    let q = rt.transitions().clone();
    for seed in seeds {
        rt.reset_episode(seed).map_err(stage("simulator"))?;
        let mut ret = 0.0;
        let mut success = false;
        loop {
            if INTERRUPT.load(Ordering::Relaxed) {
                brake_to_rest(rt);
                return Err(TrainError::Interrupted);
            }
            let rep = rt.tick();
            if let Some(o) = rep.outcome {
                if o.has_reward() {
                    ret += o.reward;
                }
                success |= o.success;
            }
            while let Some(t) = q.pop() {
                if keep {
                    kept.push(t);
                }
            }
            if rep.episode_done {
                results.push((success, ret));
                break;
            }
        }
    }
    Ok((results, kept))
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), TrainError> {
    crate::store::write_atomic(path, bytes).map_err(stage("writing the run directory"))
}

fn seeds(run_seed: u64, stream: u64, n: usize) -> impl Iterator<Item = u64> {
    let base = run_seed
        .wrapping_mul(1_000_003)
        .wrapping_add(stream * 10_000_000);
    (0..n as u64).map(move |i| base + i)
}

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
    mut progress: impl FnMut(Progress),
) -> Result<Summary, TrainError> {
    cfg.validate().map_err(stage("configuration"))?;
    let started = Instant::now();
    let task = Task::load(&cfg.task).map_err(stage("task"))?;
    let act_dim = task.action_space.dim();
    let obs_dim = flat_obs_dim(&task)?;
    std::fs::create_dir_all(out).map_err(stage("creating the run directory"))?;
    let state_path = out.join("progress.json");
    let base_path = out.join("base.safetensors");
    let resuming = resume && state_path.exists() && base_path.exists();
    if resume && !resuming {
        tracing::warn!("nothing to resume in {}: starting a new run", out.display());
    }
    let config_text = toml::to_string(cfg).map_err(stage("configuration"))?;
    write_atomic(&out.join("config.toml"), config_text.as_bytes())?;

    let demo_episodes = if cfg.demo_episodes == 0 {
        default_demo_episodes(&cfg.task)
    } else {
        cfg.demo_episodes
    };
    let mut state = RunState {
        demo_episodes,
        ..Default::default()
    };
    let mut demos = Vec::new();
    let base_mlp = if resuming {
        let text = std::fs::read_to_string(&state_path).map_err(stage("progress.json"))?;
        state = serde_json::from_str(&text)
            .map_err(|e| stage("progress.json")(format!("{}: {e}", state_path.display())))?;
        Mlp::load(&base_path).map_err(stage("base policy"))?
    } else {
        // Fresh run: clear what a previous run left.
        for d in ["replay", "checkpoints"] {
            let _ = std::fs::remove_dir_all(out.join(d));
        }
        progress(Progress::Stage("demonstrations"));
        let expert = {
            let env = Env::new(task.clone()).map_err(stage("simulator"))?;
            ScriptedExpert::new(&task, env.model())
        };
        let mut rt = sim_runtime(
            &task,
            cfg.loop_rate_hz,
            0,
            Box::new(expert),
            None,
            cfg.residual_scale,
        )?;
        let (_, transitions) = run_episodes(&mut rt, seeds(cfg.seed, 1, demo_episodes), true)?;
        demos = transitions;
        progress(Progress::Stage("behaviour cloning"));
        let obs: Vec<f32> = demos
            .iter()
            .flat_map(|t| t.obs.as_slice().to_vec())
            .collect();
        let act: Vec<f32> = demos
            .iter()
            .flat_map(|t| t.action.as_slice().to_vec())
            .collect();
        let (mlp, loss) = behaviour_clone(&obs, &act, obs_dim, act_dim, &cfg.bc, cfg.seed);
        tracing::info!(loss, pairs = demos.len(), "behaviour cloning done");
        mlp.save(&base_path).map_err(stage("base policy"))?;
        mlp
    };

    // Networks shared with the runtimes.
    let base_slot = WeightsSlot::new(base_mlp.clone());
    let mut agent = Agent::new(cfg.agent.clone(), obs_dim + act_dim, act_dim, cfg.seed)
        .with_residual(cfg.residual_scale);
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
        cfg.residual_scale,
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
    let reward_name = reward
        .as_ref()
        .map_or("task".to_owned(), |r| r.name.clone());
    let mut hook = reward.map(|r| {
        learner.set_stage(r.stage);
        r.hook
    });
    for t in &demos {
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
    let mut eval_rt = sim_runtime(
        &task,
        cfg.loop_rate_hz,
        0,
        net(&base_slot)?,
        Some(residual(&eval_flag, 0)?),
        cfg.residual_scale,
    )?;
    let eval_seeds = || seeds(cfg.seed, 2, cfg.eval_episodes);
    let evaluate = |rt: &mut Runtime<SimRobot>| -> Result<(f64, f64), TrainError> {
        let (r, _) = run_episodes(rt, eval_seeds(), false)?;
        Ok(success_and_return(&r))
    };
    // The training runtime's episode ids (and seeds) continue across resumes: the replay knows
    // the last one used.
    let first_episode = learner.max_online_episode().map_or(1, |m| m + 1);
    let prior_wall = state.wall_s;
    let wall = |started: &Instant| prior_wall + started.elapsed().as_secs_f64();
    if !resuming {
        progress(Progress::Stage("evaluating the base"));
        let (success, ret) = evaluate(&mut eval_rt)?;
        state.base_success_rate = success;
        let row = EvalRow {
            env_steps: 0,
            updates: 0,
            wall_s: wall(&started),
            episodes: 0,
            success_rate: success,
            mean_return: ret,
            train_success_rate: None,
            critic_loss: None,
            temperature: learner.agent.temperature(),
            q_mean: None,
            entropy: None,
        };
        state.evals.push(row.clone());
        progress(Progress::Eval(row));
    }
    write_metrics(out, &state)?;
    write_progress(&state_path, &mut state, &learner.shared)?;

    // Training runtime: base + exploring residual; the learner drains its transitions.
    let explore = Arc::new(AtomicBool::new(true));
    let mut rt = sim_runtime(
        &task,
        cfg.loop_rate_hz,
        0,
        net(&base_slot)?,
        Some(residual(&explore, cfg.seed ^ 0xE)?),
        cfg.residual_scale,
    )?;
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
    let period_ns = (1e9 / cfg.loop_rate_hz) as u64;
    let mut episode_id = start_episode(&mut rt, train_seeds.next().unwrap_or(0), &mut hook)?;
    let mut step_id = 0u64;
    let result: Result<(), TrainError> = (|| {
        loop {
            if INTERRUPT.load(Ordering::Relaxed) {
                // Brake to a stop before anything else: the e-stop aborts the episode.
                brake_to_rest(&mut rt);
                stop_reason = "interrupted";
                return Ok(());
            }
            let t0 = Instant::now();
            let rep = rt.tick();
            tick_stats
                .timing
                .compute
                .record(t0.elapsed().as_nanos() as u64);
            if let (Some(outcome), Some(h)) = (&rep.outcome, &mut hook) {
                h.step_judged(episode_id, step_id, outcome, rt.robot().env());
            }
            if let Running::Inline(learner) = &mut running {
                learner.drain(rt.transitions()).map_err(stage("replay"))?;
                while learner.try_update() {}
            }
            if rep.outcome.is_some() {
                step_id += 1;
                // Hold the simulator while the learner is behind its update-to-data ratio.
                loop {
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
                if steps >= last_eval_steps + cfg.eval_every {
                    // Let the learner take in the last steps, then evaluate without updates.
                    std::thread::sleep(Duration::from_millis(2));
                    shared.paused.store(true, Ordering::Release);
                    let result = match evaluate(&mut eval_rt) {
                        Ok(r) => r,
                        Err(TrainError::Interrupted) => {
                            shared.paused.store(false, Ordering::Release);
                            stop_reason = "interrupted";
                            return Ok(());
                        }
                        Err(e) => return Err(e),
                    };
                    shared.paused.store(false, Ordering::Release);
                    let success = result.0;
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
                    if success >= cfg.target_success && state.steps_to_target.is_none() {
                        state.steps_to_target = Some(steps);
                        state.minutes_to_target = Some(row.wall_s / 60.0);
                    }
                    state.evals.push(row.clone());
                    state.episodes = episodes;
                    state.wall_s = wall(&started);
                    write_metrics(out, &state)?;
                    write_progress(&state_path, &mut state, &shared)?;
                    last_progress = Instant::now();
                    progress(Progress::Eval(row));
                    if success >= cfg.target_success {
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
                if running.finished() {
                    stop_reason = "learner stopped";
                    return Ok(());
                }
                episode_id = start_episode(&mut rt, train_seeds.next().unwrap_or(0), &mut hook)?;
                step_id = 0;
            }
            if last_progress.elapsed().as_secs_f64() > PROGRESS_EVERY_S {
                last_progress = Instant::now();
                state.episodes = episodes;
                state.wall_s = wall(&started);
                write_progress(&state_path, &mut state, &shared)?;
            }
            if last_report.elapsed() > Duration::from_millis(250) {
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
    if !interrupted && state.evals.last().is_none_or(|r| r.env_steps != env_steps) {
        progress(Progress::Stage("final evaluation"));
        let result = evaluate(&mut eval_rt)?;
        let success = result.0;
        let last = shared.last.lock().map(|l| *l).unwrap_or_default();
        state.evals.push(EvalRow::trained(
            env_steps,
            learner.agent.updates,
            wall(&started),
            episodes,
            result,
            &recent,
            &last,
        ));
        if success >= cfg.target_success && state.steps_to_target.is_none() {
            state.steps_to_target = Some(env_steps);
            state.minutes_to_target = Some(wall(&started) / 60.0);
        }
    }
    learner
        .agent
        .deterministic_actor()
        .save(&out.join("policy.safetensors"))
        .map_err(stage("policy"))?;
    state.episodes = episodes;
    state.wall_s = wall(&started);
    write_progress(&state_path, &mut state, &learner.shared)?;
    write_metrics(out, &state)?;
    if let Err(e) = plot_curves(&out.join("curve.png"), &cfg.task, &state.evals) {
        tracing::warn!("curve.png not drawn: {e}");
    }
    let train_s = (state.wall_s - state.evals.first().map_or(0.0, |r| r.wall_s)).max(1e-9);
    let summary = Summary {
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
        steps_to_target: state.steps_to_target,
        minutes_to_target: state.minutes_to_target,
        demo_episodes: state.demo_episodes,
        episodes,
        updates_per_s: learner.agent.updates as f64 / train_s,
        env_steps_per_s: env_steps as f64 / train_s,
        dropped_transitions: dropped,
        intervened_steps: shared.intervened_steps.load(Ordering::Relaxed),
        stop_reason: stop_reason.to_owned(),
        reward: reward_name,
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

/// Writes `progress.json` with the learner's counters.
fn write_progress(
    path: &Path,
    state: &mut RunState,
    shared: &crate::learner::LearnerShared,
) -> Result<(), TrainError> {
    state.env_steps = shared.env_steps.load(Ordering::Relaxed);
    state.replay_synced = shared.synced_records.load(Ordering::Relaxed);
    state.clip_would_bind = shared.clip_would_bind.load(Ordering::Relaxed);
    let text = serde_json::to_string_pretty(state).map_err(stage("progress.json"))?;
    write_atomic(path, text.as_bytes())
}

/// Resets the training scene with `seed`, opens the runtime's next episode and tells the
/// reward hook (if any) about it; returns the episode's id (as its transitions carry it).
fn start_episode(
    rt: &mut Runtime<SimRobot>,
    seed: u64,
    hook: &mut Option<Box<dyn EpisodeHook>>,
) -> Result<u64, TrainError> {
    rt.reset_episode(seed).map_err(stage("simulator"))?;
    let episode = rt
        .stats()
        .episodes
        .load(Ordering::Relaxed)
        .saturating_sub(1);
    if let Some(h) = hook {
        h.episode_started(episode, rt.robot().env());
    }
    Ok(episode)
}

/// The learner during training: on its own thread, or in step with the simulator.
enum Running {
    Thread(std::thread::JoinHandle<Result<Learner, crate::store::StoreError>>),
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

fn write_metrics(out: &Path, state: &RunState) -> Result<(), TrainError> {
    let opt = |v: Option<f32>| v.map_or(String::new(), |v| format!("{v:.6}"));
    let mut s = String::from(
        "env_steps,updates,wall_s,episodes,success_rate,mean_return,train_success_rate,critic_loss,temperature,q_mean,entropy\n",
    );
    for r in &state.evals {
        s.push_str(&format!(
            "{},{},{:.1},{},{:.4},{:.4},{},{},{:.6},{},{}\n",
            r.env_steps,
            r.updates,
            r.wall_s,
            r.episodes,
            r.success_rate,
            r.mean_return,
            r.train_success_rate
                .map_or(String::new(), |v| format!("{v:.4}")),
            opt(r.critic_loss),
            r.temperature,
            opt(r.q_mean),
            opt(r.entropy),
        ));
    }
    write_atomic(&out.join("metrics.csv"), s.as_bytes())
}

/// Evaluates a trained run directory (or a base alone) on `episodes` seeded episodes:
/// returns the success rate and the mean return.
pub fn evaluate_run(
    task_name: &str,
    run: &Path,
    episodes: usize,
    seed: u64,
    loop_rate_hz: f64,
) -> Result<(f64, f64), TrainError> {
    let task = Task::load(task_name).map_err(stage("task"))?;
    let act_dim = task.action_space.dim();
    let obs_dim = flat_obs_dim(&task)?;
    let cfg_path = run.join("config.toml");
    let scale = if cfg_path.exists() {
        TrainConfig::load(&cfg_path)?.residual_scale
    } else {
        TrainConfig::default().residual_scale
    };
    let base = Mlp::load(&run.join("base.safetensors")).map_err(stage("base policy"))?;
    let base = NetPolicy::new(WeightsSlot::new(base), obs_dim, act_dim).map_err(|e| {
        stage("base policy")(format!("{}: {e}", run.join("base.safetensors").display()))
    })?;
    let policy_path = run.join("policy.safetensors");
    let residual = if policy_path.exists() {
        let mlp = Mlp::load(&policy_path).map_err(stage("policy"))?;
        Some(
            ResidualPolicy::new(WeightsSlot::new(mlp), obs_dim, act_dim)
                .map_err(|e| stage("policy")(format!("{}: {e}", policy_path.display())))?,
        )
    } else {
        None
    };
    let mut rt = sim_runtime(&task, loop_rate_hz, 0, Box::new(base), residual, scale)?;
    let (r, _) = run_episodes(&mut rt, seeds(seed, 4, episodes), false)?;
    Ok(success_and_return(&r))
}

/// Success rate and mean return of per-episode results.
fn success_and_return(r: &[(bool, f64)]) -> (f64, f64) {
    let n = r.len().max(1) as f64;
    (
        r.iter().filter(|x| x.0).count() as f64 / n,
        r.iter().map(|x| x.1).sum::<f64>() / n,
    )
}

/// Width of `task`'s flat observation (from one reset of the simulator).
fn flat_obs_dim(task: &Task) -> Result<usize, TrainError> {
    let mut env = Env::new(task.clone()).map_err(stage("simulator"))?;
    Ok(env.reset(0).map_err(stage("simulator"))?.flat.len())
}
