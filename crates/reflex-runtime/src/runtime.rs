//! The control loop: one [`Runtime`] type drives any [`Robot`] (the simulator, a ROS 2 arm, our
//! firmware) with the same policy code and the same safety filter.
//!
//! Every tick, at the servo rate (up to 1 kHz and more):
//! 1. read the robot (a failed read counts as a stale observation for the watchdog);
//! 2. at a policy-step boundary (every `rate_hz / policy_rate_hz` ticks): build the observation,
//!    judge the step that just ended and emit its [`Transition`], then run the base policy, the
//!    residual and the intervention rule into the action the mapper will follow;
//! 3. advance the [`ActionMapper`]'s joint setpoint toward that action's goal;
//! 4. pass it through the [`SafetyFilter`], write the result to the robot, and let the mapper
//!    continue from what was really commanded (anti-windup).
//!
//! Nothing on the tick allocates, locks or formats: policies fill preallocated actions, weights
//! are read through [`WeightsSlot`](crate::WeightsSlot), the operator's action arrives through a
//! [`LatestCell`], transitions leave through a drop-oldest [`BoundedQueue`], and statistics are
//! atomics another thread reads ([`RuntimeStats`]). Pacing is separate ([`Runtime::run`] with a
//! [`Ticker`]), so simulation training can call [`Runtime::tick`] as fast as the world steps.

use crate::compose::Composer;
use crate::policy::ResidualPolicy;
use crate::safety_filter::{EStop, Faults, Mode, SafetyFilter};
use crate::stats::LoopStats;
use crate::ticker::Ticker;
use reflex_core::{
    Action, ActionMapper, ActionSpace, ArmModel, BoundedQueue, ControlSpec, Frames, JointCommand,
    LatestCell, LimitsError, Observation, Outcome, Overflow, Policy, Robot, RobotError, RobotState,
    SafetyLimits, Transition, ARM_DOF,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Everything the loop needs to know besides the robot and the policies.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// Servo (tick) rate, Hz.
    pub rate_hz: f64,
    /// Policy rate, Hz; `rate_hz` must be a whole multiple of it.
    pub policy_rate_hz: f64,
    /// How actions are read.
    pub action_space: ActionSpace,
    /// Action-to-setpoint mapping (speeds, reference limiting, damping).
    pub control: ControlSpec,
    /// Posture the end-effector mapping's null space pulls toward, radians.
    pub rest_joint_pos_rad: [f64; ARM_DOF],
    /// Safety limits every command is held to.
    pub limits: SafetyLimits,
    /// Residual scale in `a = base + scale * residual`.
    pub residual_scale: f32,
    /// Operator action magnitude (any component) that takes over.
    pub intervention_threshold: f32,
    /// How long an intervention lasts after the last input above the threshold, seconds.
    pub intervention_hold_s: f64,
    /// Transitions the queue holds before the oldest is dropped (and counted).
    pub transition_capacity: usize,
}

/// Why a runtime cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A setting is out of range.
    #[error("runtime setting `{field}`: {message}")]
    Config {
        /// The setting.
        field: &'static str,
        /// What was expected.
        message: String,
    },
    /// The safety limits are invalid.
    #[error(transparent)]
    Limits(#[from] LimitsError),
    /// The robot could not be read at start-up.
    #[error("cannot read the robot at start-up: {0}")]
    Robot(RobotError),
}

/// Counters and histograms of a running loop; any thread may read them.
#[derive(Default)]
pub struct RuntimeStats {
    /// Tick timing: ticks, deadline misses, wake-up jitter and compute time.
    pub timing: LoopStats,
    /// Policy steps taken.
    pub policy_steps: AtomicU64,
    /// Episodes started.
    pub episodes: AtomicU64,
    /// Episodes that ended with the task's success.
    pub successes: AtomicU64,
    /// Policy steps in which the operator's action was used.
    pub intervened_steps: AtomicU64,
    /// Action components that were NaN or infinite (replaced by zero; the filter never saw them).
    pub non_finite_actions: AtomicU64,
    /// Robot reads that failed (the tick counted as stale).
    pub read_errors: AtomicU64,
    /// Robot writes that failed.
    pub write_errors: AtomicU64,
    /// Policy steps skipped because the observation was not finite.
    pub skipped_policy_steps: AtomicU64,
    /// Ticks on which each safety fault was raised, in bit order of [`Faults`].
    pub faults: [AtomicU64; Faults::COUNT],
}

impl RuntimeStats {
    /// Snapshot of the fault counters.
    pub fn fault_counts(&self) -> [u64; Faults::COUNT] {
        std::array::from_fn(|i| self.faults[i].load(Ordering::Relaxed))
    }
}

/// What one tick did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TickReport {
    /// The safety filter's mode for the command written.
    pub mode: Mode,
    /// Faults the filter raised.
    pub faults: Faults,
    /// A policy step started on this tick.
    pub policy_step: bool,
    /// The step that ended on this tick was judged so.
    pub outcome: Option<Outcome>,
    /// The episode is over: call [`Runtime::begin_episode`] after resetting the scene. Until
    /// then the loop holds the arm where it is.
    pub episode_done: bool,
    /// The robot read failed with this error.
    pub read_error: Option<RobotError>,
}

/// The one control loop, generic over the robot it drives.
pub struct Runtime<R: Robot> {
    robot: R,
    cfg: RuntimeConfig,
    model: ArmModel,
    frames: Frames,
    mapper: ActionMapper,
    filter: SafetyFilter,
    composer: Composer,
    base: Box<dyn Policy + Send>,
    residual: Option<ResidualPolicy>,
    intervention: Arc<LatestCell<Action>>,
    transitions: Arc<BoundedQueue<Transition>>,
    stats: Arc<RuntimeStats>,
    ticks_per_step: u32,
    tick_in_step: u32,
    state: RobotState,
    obs: Observation,
    base_action: Action,
    residual_action: Action,
    action: Action,
    /// The step in flight: observation, actions and flags, completed when it is judged.
    pending: Transition,
    step_open: bool,
    episode_done: bool,
    command: JointCommand,
    /// Where the arm is held while no policy step is open (episode over, no usable state yet).
    hold_target: JointCommand,
}

impl<R: Robot> Runtime<R> {
    /// A loop for `robot` with a base policy and an optional residual. Reads the robot once to
    /// start the filter and mapper where the arm is.
    pub fn new(
        mut robot: R,
        cfg: RuntimeConfig,
        model: ArmModel,
        base: Box<dyn Policy + Send>,
        residual: Option<ResidualPolicy>,
        estop: EStop,
    ) -> Result<Self, RuntimeError> {
        let ratio = cfg.rate_hz / cfg.policy_rate_hz;
        if !(cfg.policy_rate_hz > 0.0 && cfg.rate_hz.is_finite() && cfg.policy_rate_hz.is_finite())
            || ratio < 1.0
            || (ratio - ratio.round()).abs() > 1e-6
        {
            return Err(RuntimeError::Config {
                field: "rate_hz",
                message: format!(
                    "{} Hz must be a whole multiple of the policy rate {} Hz",
                    cfg.rate_hz, cfg.policy_rate_hz
                ),
            });
        }
        if !(cfg.intervention_hold_s >= 0.0 && cfg.intervention_hold_s.is_finite()) {
            return Err(RuntimeError::Config {
                field: "intervention_hold_s",
                message: format!(
                    "expected a finite time >= 0, got {}",
                    cfg.intervention_hold_s
                ),
            });
        }
        let mut state = RobotState::default();
        robot.read_state(&mut state).map_err(RuntimeError::Robot)?;
        let filter = SafetyFilter::new(
            cfg.limits.clone(),
            model.clone(),
            1.0 / cfg.rate_hz,
            estop,
            &state,
        )?;
        let hold_steps = (cfg.intervention_hold_s * cfg.policy_rate_hz).ceil() as u32;
        let space = cfg.action_space;
        let mapper = mapper_at(&cfg, &model, &state);
        let mut rt = Self {
            composer: Composer::new(
                cfg.residual_scale,
                cfg.intervention_threshold,
                hold_steps.max(1),
            ),
            transitions: Arc::new(BoundedQueue::new(
                cfg.transition_capacity,
                Overflow::DropOldest,
            )),
            ticks_per_step: ratio.round() as u32,
            tick_in_step: 0,
            robot,
            model,
            frames: Frames::default(),
            mapper,
            filter,
            base,
            residual,
            intervention: Arc::new(LatestCell::new()),
            stats: Arc::new(RuntimeStats::default()),
            state,
            obs: Observation::default(),
            base_action: Action::zeros(space),
            residual_action: Action::zeros(space),
            action: Action::zeros(space),
            pending: Transition::empty(space),
            step_open: false,
            episode_done: false,
            command: JointCommand::default(),
            hold_target: JointCommand::default(),
            cfg,
        };
        rt.begin_episode().map_err(RuntimeError::Robot)?;
        Ok(rt)
    }

    /// Starts an episode from where the arm is now (after the scene was reset; not on a tick).
    pub fn begin_episode(&mut self) -> Result<(), RobotError> {
        self.robot.read_state(&mut self.state)?;
        self.filter.reset(&self.state);
        self.mapper = mapper_at(&self.cfg, &self.model, &self.state);
        self.mapper.follow(self.filter.last_command());
        self.hold_target = *self.filter.last_command();
        self.composer = Composer::new(
            self.cfg.residual_scale,
            self.cfg.intervention_threshold,
            self.composer.hold_ticks,
        );
        self.base.reset();
        self.tick_in_step = 0;
        self.step_open = false;
        self.episode_done = false;
        self.pending = Transition::empty(self.cfg.action_space);
        self.pending.episode = self.stats.episodes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Runs one tick. Allocates nothing, takes no lock.
    pub fn tick(&mut self) -> TickReport {
        let read = self.robot.read_state(&mut self.state);
        let read_error = read.err();
        if read_error.is_some() {
            self.stats.read_errors.fetch_add(1, Ordering::Relaxed);
        }
        let fresh = read_error.is_none() && self.state.is_finite();
        let mut report = TickReport {
            mode: Mode::Normal,
            faults: Faults::empty(),
            policy_step: false,
            outcome: None,
            episode_done: self.episode_done,
            read_error,
        };

        if fresh && !self.episode_done && self.tick_in_step == 0 {
            self.policy_step(&mut report);
        }

        // The setpoint for this tick: the mapper's, or where the last command was when the
        // episode is over or the measurement unusable (the filter raises the faults).
        let desired = if fresh && !self.episode_done && self.step_open {
            self.model
                .forward(&self.state.joint_pos_rad, &mut self.frames);
            let alpha = (self.tick_in_step + 1) as f64 / self.ticks_per_step as f64;
            self.mapper.update(
                &self.model,
                alpha,
                &self.state.joint_pos_rad,
                &self.frames.tcp,
                1.0 / self.cfg.rate_hz,
            );
            self.tick_in_step = (self.tick_in_step + 1) % self.ticks_per_step;
            self.mapper.command()
        } else {
            // A fixed target: the command at the moment the policy stopped driving.
            self.hold_target
        };
        let (mode, faults) = self
            .filter
            .filter(&desired, &self.state, fresh, &mut self.command);
        self.mapper.follow(&self.command);
        if self.robot.write_command(&self.command).is_err() {
            self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
        }
        if !faults.is_empty() {
            self.pending.safety_limited = true;
            for (bit, c) in self.stats.faults.iter().enumerate() {
                if faults.bits() & (1 << bit) != 0 {
                    c.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        report.mode = mode;
        report.faults = faults;
        report
    }

    /// Observation, judgement of the last step, and the next action.
    fn policy_step(&mut self, report: &mut TickReport) {
        let obs = &mut self.obs;
        obs.robot = self.state;
        self.robot.read_scene(obs);
        obs.step = if self.step_open {
            self.pending.step + 1
        } else {
            0
        };
        if !obs.rebuild_flat() {
            self.stats
                .skipped_policy_steps
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        if self.step_open {
            let outcome = self.robot.judge(&self.obs, &self.action);
            self.pending.outcome = outcome;
            self.pending.next_obs = self.obs.flat;
            let _ = self.transitions.push(self.pending);
            report.outcome = Some(outcome);
            if outcome.done() {
                if outcome.success {
                    self.stats.successes.fetch_add(1, Ordering::Relaxed);
                }
                self.episode_done = true;
                self.step_open = false;
                self.hold_target = self.command;
                report.episode_done = true;
                return;
            }
            self.pending.step += 1;
        }
        report.policy_step = true;
        self.stats.policy_steps.fetch_add(1, Ordering::Relaxed);

        self.base.act(&self.obs, &mut self.base_action);
        match &mut self.residual {
            Some(r) => r.act(&self.obs, &self.base_action, &mut self.residual_action),
            None => self.residual_action.as_mut_slice().fill(0.0),
        }
        // The operator's newest action since the last step; while an intervention holds
        // without new input, the composer keeps the last one in `self.action`.
        let human = self.intervention.take();
        let intervened = self.composer.compose(
            &self.base_action,
            &self.residual_action,
            human.as_ref(),
            &mut self.action,
        );
        if intervened {
            self.stats.intervened_steps.fetch_add(1, Ordering::Relaxed);
        }
        let bad = self.action.sanitize();
        if bad > 0 {
            self.stats
                .non_finite_actions
                .fetch_add(bad as u64, Ordering::Relaxed);
        }
        self.mapper.set_action(
            &self.model,
            self.action.as_slice(),
            &self.state.joint_pos_rad,
        );
        self.pending.obs = self.obs.flat;
        self.pending.base_action = self.base_action;
        self.pending.action = self.action;
        self.pending.intervened = intervened;
        self.pending.safety_limited = false;
        self.step_open = true;
    }

    /// Runs ticks until `duration` has passed or `on_episode_end` returns false: paced at
    /// `rate_hz` (a real arm), or back to back when `paced` is false (a simulator that may run
    /// faster than real time; no jitter is recorded then). `on_episode_end` runs between
    /// episodes with the robot and the last outcome (to reset a scene; it may be slow); the
    /// schedule restarts after it, so a reset is not counted as a deadline miss.
    pub fn run(
        &mut self,
        duration: Duration,
        paced: bool,
        mut on_episode_end: impl FnMut(&mut R, &Outcome) -> bool,
    ) -> Result<(), RobotError> {
        let end = Instant::now() + duration;
        let mut ticker = Ticker::new(self.cfg.rate_hz);
        let mut last_outcome = Outcome::PENDING;
        while Instant::now() < end {
            let woke = if paced {
                ticker.wait(&self.stats.timing)
            } else {
                self.stats.timing.ticks.fetch_add(1, Ordering::Relaxed);
                Instant::now()
            };
            let report = self.tick();
            self.stats
                .timing
                .compute
                .record(woke.elapsed().as_nanos() as u64);
            if let Some(o) = report.outcome {
                last_outcome = o;
            }
            if report.episode_done {
                if !on_episode_end(&mut self.robot, &last_outcome) {
                    return Ok(());
                }
                self.begin_episode()?;
                ticker = Ticker::new(self.cfg.rate_hz);
            }
        }
        Ok(())
    }

    /// The robot.
    pub fn robot(&self) -> &R {
        &self.robot
    }

    /// The robot, mutable (between ticks).
    pub fn robot_mut(&mut self) -> &mut R {
        &mut self.robot
    }

    /// Where operators put their actions (newest wins).
    pub fn intervention(&self) -> &Arc<LatestCell<Action>> {
        &self.intervention
    }

    /// Where transitions come out (drop-oldest, counted).
    pub fn transitions(&self) -> &Arc<BoundedQueue<Transition>> {
        &self.transitions
    }

    /// The loop's statistics.
    pub fn stats(&self) -> &Arc<RuntimeStats> {
        &self.stats
    }

    /// The configuration.
    pub fn config(&self) -> &RuntimeConfig {
        &self.cfg
    }

    /// The last command written.
    pub fn last_command(&self) -> &JointCommand {
        &self.command
    }

    /// The last observation built.
    pub fn observation(&self) -> &Observation {
        &self.obs
    }

    /// Ticks per policy step.
    pub fn ticks_per_step(&self) -> u32 {
        self.ticks_per_step
    }
}

/// An action mapper at rest at the measured `state`.
fn mapper_at(cfg: &RuntimeConfig, model: &ArmModel, state: &RobotState) -> ActionMapper {
    ActionMapper::new(
        cfg.action_space,
        &cfg.control,
        cfg.policy_rate_hz,
        &cfg.rest_joint_pos_rad,
        model,
        &state.joint_pos_rad,
        state.gripper_width_m,
    )
}
