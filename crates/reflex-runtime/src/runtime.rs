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
//! Nothing on the tick allocates, locks, formats or waits on another thread: policies fill
//! preallocated actions, weights are read through [`WeightsSlot`](crate::WeightsSlot), the
//! operator's action arrives through a wait-free triple buffer (`reflex_core::latest`),
//! transitions leave through a wait-free ring (`reflex_core::spsc`: a full ring refuses the
//! newest and counts it), and statistics are atomics another thread reads ([`RuntimeStats`]).
//! Pacing is separate ([`Runtime::run`] with a [`Ticker`]), so simulation training can call
//! [`Runtime::tick`] as fast as the world steps.
//!
//! Every command the robot receives comes out of the filter: no caller gets the robot mutably
//! ([`Runtime::robot`] is read-only); a simulator's scene is rebuilt through
//! [`Runtime::reset_episode`] (the `SceneReset` trait). The e-stop ([`Runtime::estop`]) aborts
//! the episode (the step in flight leaves marked [`Interruption::EStop`]) and the loop holds
//! until a re-arm, after which the policy restarts from the measured state with its output
//! ramped in over `rearm_ramp_s`. An operator who goes silent for
//! `intervention_link_timeout_s` during a takeover ends it: the arm holds until they are back.
//! A base policy whose own input is missing or too old (a camera frame; `Policy::ready` says
//! so) is not asked to act: the arm holds for that step, recorded as
//! [`Interruption::InputStale`] and counted in [`RuntimeStats::stale_policy_inputs`].
//! With a success hold ([`Runtime::set_success_hold`]), the robot's judgement of success does
//! not end the episode at once: the arm holds still for that many policy steps, so cameras
//! keep seeing the finished scene, and the episode then ends as a success only if the judge
//! still says so.
//!
//! Operators, whatever their device, send [`OperatorCommand`]s to [`Runtime::operator`]: an
//! action, whether the intervene control is held (the takeover rule is the composer's), and
//! success and failure presses, which end the episode in flight with that label.

use crate::compose::Composer;
use crate::safety_filter::{EStop, Faults, Mode, SafetyFilter};
use crate::stats::{Histogram, LoopStats};
use crate::ticker::Ticker;
use reflex_core::{
    latest, spsc, Action, ActionMapper, ActionSpace, ArmModel, ControlSpec, Frames, Interruption,
    JointCommand, LatestReceiver, LatestSender, LimitsError, Observation, OperatorCommand,
    OperatorEvents, Outcome, Policy, Robot, RobotError, RobotState, SafetyLimits, SceneReset,
    SpscReceiver, SpscSender, Transition, ARM_DOF,
};
use reflex_policy::ResidualPolicy;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The loop's own settings: what a user sets (a `[runtime]` table, read with serde; unknown keys
/// are refused). The task and the robot supply the rest of a [`RuntimeConfig`].
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeSettings {
    /// Servo (tick) rate of the control loop, Hz: a whole multiple of the task's
    /// `policy_rate_hz`. Default 500 (real arms usually run 1000).
    pub servo_rate_hz: f64,
    /// Residual scale in `a = base + scale * residual`. Default 0.3.
    pub residual_scale: f32,
    /// Operator action magnitude (any component, normalised units) that takes over. Default 0.5.
    pub intervention_threshold: f32,
    /// How long a takeover lasts after the last input above the threshold, seconds. Default 0.5.
    pub intervention_hold_s: f64,
    /// If no operator message arrives for this long during a takeover, the takeover ends and
    /// the arm holds until the operator is back, seconds. Default 0.1.
    pub intervention_link_timeout_s: f64,
    /// After a re-arm, the policy's output is ramped in from zero over this long, seconds.
    /// Default 1.0.
    pub rearm_ramp_s: f64,
    /// Transitions the queue to the learner holds; when full, new ones are refused and
    /// counted. Default 8192.
    pub transition_capacity: usize,
    /// How long the runtime waits for the robot's first state (`Robot::start`), seconds.
    /// Default 5.
    pub start_timeout_s: f64,
}

impl Default for RuntimeSettings {
    fn default() -> Self {
        Self {
            servo_rate_hz: 500.0,
            residual_scale: 0.3,
            intervention_threshold: 0.5,
            intervention_hold_s: 0.5,
            intervention_link_timeout_s: 0.1,
            rearm_ramp_s: 1.0,
            transition_capacity: 8192,
            start_timeout_s: 5.0,
        }
    }
}

impl RuntimeSettings {
    /// Checks every setting; the error names the first bad one.
    pub fn validate(&self) -> Result<(), RuntimeError> {
        let bad = |field: &str, message: String| {
            Err(RuntimeError::Config {
                field: field.to_owned(),
                message,
            })
        };
        if !(self.servo_rate_hz > 0.0 && self.servo_rate_hz.is_finite()) {
            return bad(
                "servo_rate_hz",
                format!(
                    "expected a positive, finite rate, got {}",
                    self.servo_rate_hz
                ),
            );
        }
        for (field, v) in [
            ("intervention_hold_s", self.intervention_hold_s),
            ("rearm_ramp_s", self.rearm_ramp_s),
            ("start_timeout_s", self.start_timeout_s),
        ] {
            if !(v >= 0.0 && v.is_finite()) {
                return bad(field, format!("expected a finite time >= 0, got {v}"));
            }
        }
        if !(self.intervention_link_timeout_s > 0.0 && self.intervention_link_timeout_s.is_finite())
        {
            return bad(
                "intervention_link_timeout_s",
                format!(
                    "expected a positive, finite time, got {}",
                    self.intervention_link_timeout_s
                ),
            );
        }
        if !(self.residual_scale >= 0.0 && self.residual_scale.is_finite()) {
            return bad(
                "residual_scale",
                format!("expected a finite scale >= 0, got {}", self.residual_scale),
            );
        }
        if !(self.intervention_threshold > 0.0 && self.intervention_threshold.is_finite()) {
            return bad(
                "intervention_threshold",
                format!(
                    "expected a positive, finite magnitude, got {}",
                    self.intervention_threshold
                ),
            );
        }
        if self.transition_capacity == 0 {
            return bad("transition_capacity", "must be at least 1".into());
        }
        Ok(())
    }
}

/// Everything the loop needs to know besides the robot and the policies: the task's and the
/// robot's part (decision rate, action space, control, rest pose, limits) and the
/// [`RuntimeSettings`].
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// Servo (tick) rate, Hz.
    pub servo_rate_hz: f64,
    /// The task's decision (policy) rate, Hz; `servo_rate_hz` must be a whole multiple of it.
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
    /// If no operator message arrives for this long during a takeover, the takeover ends and
    /// the arm holds until the operator is back, seconds. Default 0.1.
    pub intervention_link_timeout_s: f64,
    /// After a re-arm, the policy's output is ramped in from zero over this long, seconds.
    /// Default 1.0.
    pub rearm_ramp_s: f64,
    /// Transitions the queue holds; when full, new ones are refused and counted.
    pub transition_capacity: usize,
    /// How long [`Runtime::new`] waits for the robot's first state (`Robot::start`), seconds.
    /// Default 5.
    pub start_timeout_s: f64,
}

impl RuntimeConfig {
    /// A configuration at `servo_rate_hz` with the default settings for everything but the
    /// robot- and task-specific parts.
    pub fn new(
        servo_rate_hz: f64,
        policy_rate_hz: f64,
        action_space: ActionSpace,
        control: ControlSpec,
        rest_joint_pos_rad: [f64; ARM_DOF],
        limits: SafetyLimits,
    ) -> Self {
        let settings = RuntimeSettings {
            servo_rate_hz,
            ..Default::default()
        };
        Self::from_settings(
            &settings,
            policy_rate_hz,
            action_space,
            control,
            rest_joint_pos_rad,
            limits,
        )
    }

    /// The configuration of `settings` with the task's and the robot's part.
    pub fn from_settings(
        settings: &RuntimeSettings,
        policy_rate_hz: f64,
        action_space: ActionSpace,
        control: ControlSpec,
        rest_joint_pos_rad: [f64; ARM_DOF],
        limits: SafetyLimits,
    ) -> Self {
        let s = settings;
        Self {
            servo_rate_hz: s.servo_rate_hz,
            policy_rate_hz,
            action_space,
            control,
            rest_joint_pos_rad,
            limits,
            residual_scale: s.residual_scale,
            intervention_threshold: s.intervention_threshold,
            intervention_hold_s: s.intervention_hold_s,
            intervention_link_timeout_s: s.intervention_link_timeout_s,
            rearm_ramp_s: s.rearm_ramp_s,
            start_timeout_s: s.start_timeout_s,
            transition_capacity: s.transition_capacity,
        }
    }

    /// The user-set part of this configuration.
    pub fn settings(&self) -> RuntimeSettings {
        RuntimeSettings {
            servo_rate_hz: self.servo_rate_hz,
            residual_scale: self.residual_scale,
            intervention_threshold: self.intervention_threshold,
            intervention_hold_s: self.intervention_hold_s,
            intervention_link_timeout_s: self.intervention_link_timeout_s,
            rearm_ramp_s: self.rearm_ramp_s,
            transition_capacity: self.transition_capacity,
            start_timeout_s: self.start_timeout_s,
        }
    }

    /// Checks every setting; the error names the first bad one.
    pub fn validate(&self) -> Result<(), RuntimeError> {
        self.settings().validate()?;
        let ratio = self.servo_rate_hz / self.policy_rate_hz;
        if !(self.policy_rate_hz > 0.0 && self.policy_rate_hz.is_finite())
            || ratio < 1.0
            || (ratio - ratio.round()).abs() > 1e-6
        {
            return Err(RuntimeError::Config {
                field: "policy_rate_hz".into(),
                message: format!(
                    "{} Hz must be positive and divide the loop rate {} Hz a whole number of times",
                    self.policy_rate_hz, self.servo_rate_hz
                ),
            });
        }
        if let Some(i) = self.rest_joint_pos_rad.iter().position(|v| !v.is_finite()) {
            return Err(RuntimeError::Config {
                field: format!("rest_joint_pos_rad[{i}]"),
                message: format!(
                    "expected a finite angle, got {}",
                    self.rest_joint_pos_rad[i]
                ),
            });
        }
        self.control.validate().map_err(|e| RuntimeError::Config {
            field: format!("control.{}", e.field),
            message: e.message,
        })?;
        self.limits.validate()?;
        Ok(())
    }
}

/// Why a runtime cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A setting is out of range.
    #[error("runtime setting `{field}`: {message}")]
    Config {
        /// The setting.
        field: String,
        /// What was expected.
        message: String,
    },
    /// The safety limits are invalid.
    #[error(transparent)]
    Limits(#[from] LimitsError),
    /// The robot could not be read at start-up.
    #[error("cannot read the robot at start-up: {0}")]
    Robot(RobotError),
    /// The robot did not start (no state in time, limits beyond its own, refused).
    #[error("starting the robot: {0}")]
    Start(#[from] reflex_core::StartError),
}

/// Why a new episode could not start.
#[derive(Debug, thiserror::Error)]
pub enum ResetError<E: std::error::Error + 'static> {
    /// The scene could not be rebuilt.
    #[error("resetting the scene: {0}")]
    Scene(#[source] E),
    /// The robot could not be read afterwards.
    #[error("reading the robot after the reset: {0}")]
    Robot(RobotError),
}

/// How the operator ended an episode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Label {
    Success,
    Failure,
    Rerecord,
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
    /// Episodes the operator ended with a success or failure press.
    pub operator_labels: AtomicU64,
    /// Episodes the operator discarded (re-record).
    pub discarded_episodes: AtomicU64,
    /// Episodes a success detector ended ([`Runtime::end_episode`]: a success classifier).
    pub detector_ends: AtomicU64,
    /// Operator actions refused for having the wrong number of components.
    pub refused_operator_actions: AtomicU64,
    /// Takeovers ended because the operator's messages stopped (the arm held).
    pub operator_link_lost: AtomicU64,
    /// From an executed operator command's receipt by its source (`OperatorCommand::received`)
    /// to the first joint command it produced leaving the safety filter: the wait for the next
    /// policy step dominates it.
    pub operator_latency: Histogram,
    /// Episodes aborted by the e-stop.
    pub estop_aborts: AtomicU64,
    /// Re-arms after an e-stop (the policy restarted, ramped in).
    pub rearms: AtomicU64,
    /// Action components that were NaN or infinite (held; the filter never saw them).
    pub non_finite_actions: AtomicU64,
    /// Residual components that were NaN or infinite (the base alone was used).
    pub non_finite_residuals: AtomicU64,
    /// Robot reads that failed (the tick counted as stale).
    pub read_errors: AtomicU64,
    /// Robot writes that failed.
    pub write_errors: AtomicU64,
    /// Policy steps skipped because the observation was not finite.
    pub skipped_policy_steps: AtomicU64,
    /// Policy steps held because the policy's own input (a camera frame) was missing or too
    /// old ([`reflex_core::Policy::ready`]).
    pub stale_policy_inputs: AtomicU64,
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
    /// The episode is over: start the next one ([`Runtime::begin_episode`], or
    /// [`Runtime::reset_episode`] in simulation). Until then the loop holds the arm.
    pub episode_done: bool,
    /// The e-stop aborted the episode on this tick.
    pub aborted: bool,
    /// The robot read failed with this error.
    pub read_error: Option<RobotError>,
}

/// The one control loop, generic over the robot it drives.
///
/// Nothing outside the loop can write a command to the robot: there is no mutable access to
/// it (so no command can skip the safety filter).
///
/// ```compile_fail
/// fn bypass(rt: &mut reflex_runtime::Runtime<reflex_runtime::StandInArm>) {
///     use reflex_core::Robot;
///     rt.robot_mut().write_command(&Default::default());
/// }
/// ```
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
    operator_tx: LatestSender<OperatorCommand>,
    operator_rx: LatestReceiver<OperatorCommand>,
    /// The operator's newest command since the last policy step.
    operator_pending: Option<OperatorCommand>,
    /// The receipt time of the operator command this policy step executed (until its first
    /// joint command leaves the filter).
    operator_latency_from: Option<std::time::Instant>,
    /// Event presses in the last command received (None before the first: its counts are
    /// the baseline, not presses).
    operator_events: Option<OperatorEvents>,
    /// The operator pressed success (true) or failure (false): the step in flight ends the
    /// episode with that label.
    operator_label: Option<Label>,
    /// A success detector asked for the episode to end at the next judgement.
    detector_end: bool,
    /// Whether the robot's judgement of success ends the episode (off while a success
    /// detector decides instead).
    end_on_success: bool,
    /// Policy steps the arm holds still after the judge's first success before the episode
    /// ends ([`Runtime::set_success_hold`]; 0: the success ends it at once).
    success_hold: u32,
    /// Hold steps left in the episode in flight (0: not holding).
    holding: u32,
    ticks_since_operator: u64,
    link_timeout_ticks: u64,
    /// A takeover lost its operator: the arm holds until the operator is heard again.
    held_by_link: bool,
    transitions_tx: SpscSender<Transition>,
    transitions_rx: Arc<SpscReceiver<Transition>>,
    stats: Arc<RuntimeStats>,
    ticks_per_step: u32,
    tick_in_step: u32,
    state: RobotState,
    obs: Observation,
    base_action: Action,
    residual_action: Action,
    action: Action,
    /// The action executed in the last policy step (what a non-finite component holds).
    last_action: Action,
    /// The step in flight: observation, actions and flags, completed when it is judged.
    pending: Transition,
    step_open: bool,
    episode_done: bool,
    /// The e-stop was latched at the last tick.
    estopped: bool,
    /// Ticks since the last re-arm, and the ramp's length in ticks.
    ramp_tick: u64,
    ramp_ticks: u64,
    command: JointCommand,
}

impl<R: Robot> Runtime<R> {
    /// A loop for `robot` with a base policy and an optional residual. Validates the
    /// configuration (the error names the setting), starts the robot (`Robot::start`: its first
    /// state within `start_timeout_s`, the limits checked against its own) and reads it once
    /// to start the filter and mapper where the arm is.
    pub fn new(
        mut robot: R,
        cfg: RuntimeConfig,
        model: ArmModel,
        base: Box<dyn Policy + Send>,
        residual: Option<ResidualPolicy>,
        estop: EStop,
    ) -> Result<Self, RuntimeError> {
        cfg.validate()?;
        robot.start(&cfg.limits, Duration::from_secs_f64(cfg.start_timeout_s))?;
        let ratio = cfg.servo_rate_hz / cfg.policy_rate_hz;
        let mut state = RobotState::default();
        robot.read_state(&mut state).map_err(RuntimeError::Robot)?;
        let filter = SafetyFilter::new(
            cfg.limits.clone(),
            model.clone(),
            1.0 / cfg.servo_rate_hz,
            estop,
            &state,
        )?;
        let hold_steps = (cfg.intervention_hold_s * cfg.policy_rate_hz).ceil() as u32;
        let space = cfg.action_space;
        let mapper = mapper_at(&cfg, &model, &state);
        let (operator_tx, operator_rx) = latest::<OperatorCommand>();
        let (transitions_tx, transitions_rx) = spsc(cfg.transition_capacity);
        let mut rt = Self {
            composer: Composer::new(
                cfg.residual_scale,
                cfg.intervention_threshold,
                hold_steps.max(1),
            ),
            transitions_tx,
            transitions_rx,
            operator_tx,
            operator_rx,
            operator_pending: None,
            operator_latency_from: None,
            operator_events: None,
            operator_label: None,
            detector_end: false,
            end_on_success: true,
            success_hold: 0,
            holding: 0,
            ticks_since_operator: u64::MAX / 2,
            link_timeout_ticks: (cfg.intervention_link_timeout_s * cfg.servo_rate_hz).ceil() as u64,
            held_by_link: false,
            ticks_per_step: ratio.round() as u32,
            tick_in_step: 0,
            robot,
            model,
            frames: Frames::default(),
            mapper,
            filter,
            base,
            residual,
            stats: Arc::new(RuntimeStats::default()),
            state,
            obs: Observation::default(),
            base_action: Action::zeros(space),
            residual_action: Action::zeros(space),
            action: Action::zeros(space),
            last_action: Action::zeros(space),
            pending: Transition::empty(space),
            step_open: false,
            episode_done: false,
            estopped: false,
            ramp_tick: u64::MAX / 2,
            ramp_ticks: (cfg.rearm_ramp_s * cfg.servo_rate_hz).ceil() as u64,
            command: JointCommand::default(),
            cfg,
        };
        rt.command = *rt.filter.last_command();
        rt.begin_episode().map_err(RuntimeError::Robot)?;
        Ok(rt)
    }

    /// Starts an episode from where the arm is now (not on a tick). The command keeps its
    /// motion (the filter is not restarted), so a real arm never sees a jump; the policy
    /// starts from the measured state.
    pub fn begin_episode(&mut self) -> Result<(), RobotError> {
        self.robot.read_state(&mut self.state)?;
        // The episode's first observation, for whoever looks before the first policy step (a
        // reward source asking its question at the start).
        self.obs.robot = self.state;
        self.robot.read_scene(&mut self.obs);
        self.obs.step = 0;
        self.obs.rebuild_flat();
        self.robot.begin_judging(&self.obs);
        self.restart_mapper();
        self.composer = Composer::new(
            self.cfg.residual_scale,
            self.cfg.intervention_threshold,
            self.composer.hold_steps,
        );
        self.held_by_link = false;
        self.operator_pending = None;
        // A press between episodes does not end the next one.
        self.operator_label = None;
        self.detector_end = false;
        self.holding = 0;
        self.base.reset();
        self.tick_in_step = 0;
        self.step_open = false;
        self.episode_done = false;
        self.last_action = Action::zeros(self.cfg.action_space);
        let g = self.cfg.action_space.dim() - 1;
        self.last_action.as_mut_slice()[g] = self.mapper.gripper_action();
        self.pending = Transition::empty(self.cfg.action_space);
        self.pending.episode = self.stats.episodes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// A success detector (a classifier watching the camera) saw the task done: the step in
    /// flight ends the episode, terminated, when it is judged. The step keeps the robot's own
    /// judgement of success; the detector's verdict is the reward source's to record. Called
    /// between ticks by the thread that ticks; does nothing once the episode is over.
    pub fn end_episode(&mut self) {
        if !self.episode_done {
            self.detector_end = true;
        }
    }

    /// Whether the robot's judgement of success ends an episode (on by default). Off while a
    /// success detector ends episodes instead ([`Runtime::end_episode`]).
    pub fn set_end_on_success(&mut self, on: bool) {
        self.end_on_success = on;
    }

    /// Policy steps the arm holds still after the robot's judgement of success, before the
    /// episode ends (0, the default: the success ends it at once). During the hold the
    /// policies are still asked (a policy with memory sees every step, a recorded session's
    /// playback stays in step) but their actions are not executed: the arm's components are
    /// zeroed and the gripper keeps its command, as in [`Interruption::OperatorLost`]'s hold,
    /// and the steps are normal data. The last hold step ends the episode: terminated as a
    /// success if the judge still says success, truncated otherwise. The episode's time limit,
    /// an operator's label and the e-stop end it during the hold as at any other step. Not
    /// applied while a success detector ends episodes ([`Runtime::set_end_on_success`]).
    /// For sessions whose camera frames train a success classifier: each success then shows
    /// `steps + 1` frames of the finished scene instead of one.
    pub fn set_success_hold(&mut self, steps: u32) {
        self.success_hold = steps;
    }

    /// Runs one tick. Allocates nothing, takes no lock, never waits on another thread.
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
            aborted: false,
            read_error,
        };

        // The operator's link: newest action, and how long since one arrived.
        if let Some(h) = self.operator_rx.take() {
            if let Some(seen) = self.operator_events {
                if h.events.rerecord > seen.rerecord {
                    self.operator_label = Some(Label::Rerecord);
                } else if h.events.success > seen.success {
                    self.operator_label = Some(Label::Success);
                } else if h.events.failure > seen.failure {
                    self.operator_label = Some(Label::Failure);
                }
            }
            self.operator_events = Some(h.events);
            self.operator_pending = Some(h);
            self.ticks_since_operator = 0;
            self.held_by_link = false;
        } else {
            self.ticks_since_operator = self.ticks_since_operator.saturating_add(1);
        }
        if self.composer.intervening() && self.ticks_since_operator > self.link_timeout_ticks {
            // The operator went silent mid-takeover: hold, replay nothing.
            self.composer.end_takeover();
            self.held_by_link = true;
            if self.step_open {
                self.pending.interrupted = Interruption::OperatorLost;
            }
            self.stats
                .operator_link_lost
                .fetch_add(1, Ordering::Relaxed);
        }

        // The e-stop: a press aborts the episode; a re-arm restarts from the measured state.
        let latched = self.filter.estop().is_latched();
        if latched && !self.estopped {
            self.estopped = true;
            self.abort_episode(&mut report);
        } else if !latched && self.estopped {
            self.estopped = false;
            self.stats.rearms.fetch_add(1, Ordering::Relaxed);
            self.ramp_tick = 0;
            self.tick_in_step = 0;
            if fresh {
                self.restart_mapper();
            } else {
                self.mapper.follow(self.filter.last_command());
            }
            self.mapper.hold(&self.model);
        }

        let running = fresh && !self.episode_done && !self.estopped;
        if running && self.tick_in_step == 0 {
            self.policy_step(&mut report);
        }

        let track = running && self.step_open && !self.held_by_link;
        let (mode, faults) = if track {
            self.model
                .forward(&self.state.joint_pos_rad, &mut self.frames);
            let alpha = (self.tick_in_step + 1) as f64 / self.ticks_per_step as f64;
            self.mapper.update(
                &self.model,
                alpha,
                &self.state.joint_pos_rad,
                &self.frames.tcp,
                1.0 / self.cfg.servo_rate_hz,
            );
            let desired = self.mapper.command();
            self.filter
                .filter(&desired, &self.state, fresh, &mut self.command)
        } else {
            // Nothing to track (stale read, episode over, e-stop, operator lost): the command
            // decelerates to a stop where it can, within the limits.
            self.filter.hold(&self.state, fresh, &mut self.command)
        };
        if running && self.step_open {
            self.tick_in_step = (self.tick_in_step + 1) % self.ticks_per_step;
        }
        self.ramp_tick = self.ramp_tick.saturating_add(1);
        self.mapper.follow(&self.command);
        if let Some(t) = self.operator_latency_from.take() {
            self.stats
                .operator_latency
                .record(t.elapsed().as_nanos() as u64);
        }
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

    /// The action mapper restarts from the measured state, continuing from the last command.
    fn restart_mapper(&mut self) {
        self.mapper = mapper_at(&self.cfg, &self.model, &self.state);
        self.mapper.follow(self.filter.last_command());
    }

    /// The e-stop was pressed: the step in flight leaves marked as interrupted (not normal
    /// data) and the episode is over.
    fn abort_episode(&mut self, report: &mut TickReport) {
        if self.step_open {
            self.pending.interrupted = Interruption::EStop;
            self.pending.outcome = Outcome::PENDING;
            self.pending.next_obs = self.pending.obs;
            let _ = self.transitions_tx.send(self.pending);
        }
        if !self.episode_done {
            self.stats.estop_aborts.fetch_add(1, Ordering::Relaxed);
            report.aborted = true;
        }
        self.step_open = false;
        self.episode_done = true;
        self.composer.end_takeover();
        report.episode_done = true;
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
            let mut outcome = self.robot.judge(&self.obs, &self.action);
            if !self.end_on_success && outcome.success && outcome.terminated {
                // A success detector decides when the episode ends; the judge's success
                // stays on the step.
                outcome.terminated = false;
            }
            if self.holding > 0 {
                // Holding the finished scene: the last hold step ends the episode, a success
                // only if the judge still says so.
                self.holding -= 1;
                if !outcome.truncated {
                    if self.holding == 0 {
                        outcome.terminated = outcome.success;
                        outcome.truncated = !outcome.success;
                    } else {
                        outcome.terminated = false;
                    }
                }
            } else if self.success_hold > 0
                && self.end_on_success
                && outcome.success
                && outcome.terminated
            {
                // The first success: hold before ending.
                outcome.terminated = false;
                self.holding = self.success_hold;
            }
            if std::mem::take(&mut self.detector_end) && !outcome.done() {
                outcome.terminated = true;
                self.stats.detector_ends.fetch_add(1, Ordering::Relaxed);
            }
            if let Some(label) = self.operator_label.take() {
                // The operator's label ends the episode (on a real arm, the operator is the
                // success detector); the step's reward stays the task's. A re-record ends it
                // as discarded.
                outcome.success = label == Label::Success;
                outcome.terminated = true;
                outcome.truncated = false;
                if label == Label::Rerecord {
                    self.pending.interrupted = Interruption::Discarded;
                    self.stats
                        .discarded_episodes
                        .fetch_add(1, Ordering::Relaxed);
                } else {
                    self.stats.operator_labels.fetch_add(1, Ordering::Relaxed);
                }
            }
            self.pending.outcome = outcome;
            self.pending.next_obs = self.obs.flat;
            let _ = self.transitions_tx.send(self.pending);
            report.outcome = Some(outcome);
            if outcome.done() {
                if outcome.success {
                    self.stats.successes.fetch_add(1, Ordering::Relaxed);
                }
                self.episode_done = true;
                self.step_open = false;
                report.episode_done = true;
                return;
            }
            self.pending.step += 1;
        }
        report.policy_step = true;
        self.stats.policy_steps.fetch_add(1, Ordering::Relaxed);
        self.pending.interrupted = Interruption::None;

        if self.holding > 0 {
            // Holding the finished scene: the policies are asked, not executed.
            if self.base.ready(&self.obs) {
                self.base.act(&self.obs, &mut self.base_action);
                if let Some(r) = &mut self.residual {
                    r.act(&self.obs, &self.base_action, &mut self.residual_action);
                }
            }
            self.hold_step(Interruption::None);
            return;
        }
        if self.held_by_link {
            // The operator is gone: the arm holds; the step is recorded as interrupted.
            self.hold_step(Interruption::OperatorLost);
            return;
        }
        if !self.base.ready(&self.obs) {
            // The policy's own input (a camera frame) is missing or too old: acting on it
            // would be acting blind, so the arm holds as for a lost operator.
            self.stats
                .stale_policy_inputs
                .fetch_add(1, Ordering::Relaxed);
            self.hold_step(Interruption::InputStale);
            return;
        }

        self.base.act(&self.obs, &mut self.base_action);
        match &mut self.residual {
            Some(r) => r.act(&self.obs, &self.base_action, &mut self.residual_action),
            None => self.residual_action.as_mut_slice().fill(0.0),
        }
        let human = self.operator_pending.take();
        let done = self.composer.compose(
            &self.base_action,
            &self.residual_action,
            human.as_ref(),
            &mut self.action,
        );
        if done.intervened {
            self.stats.intervened_steps.fetch_add(1, Ordering::Relaxed);
            self.operator_latency_from = human.and_then(|h| h.received);
        }
        if done.refused_human {
            self.stats
                .refused_operator_actions
                .fetch_add(1, Ordering::Relaxed);
        }
        if done.non_finite_residual > 0 {
            self.stats
                .non_finite_residuals
                .fetch_add(done.non_finite_residual as u64, Ordering::Relaxed);
        }
        let bad = self.action.sanitize_holding(&self.last_action);
        if bad > 0 {
            self.stats
                .non_finite_actions
                .fetch_add(bad as u64, Ordering::Relaxed);
        }
        let ramp = if self.ramp_ticks == 0 {
            1.0
        } else {
            (self.ramp_tick as f64 / self.ramp_ticks as f64).min(1.0)
        };
        self.mapper.set_action_ramped(
            &self.model,
            self.action.as_slice(),
            &self.state.joint_pos_rad,
            ramp,
        );
        self.last_action = self.action;
        self.pending.obs = self.obs.flat;
        self.pending.base_action = self.base_action;
        self.pending.action = self.action;
        self.pending.intervened = done.intervened;
        self.pending.safety_limited = false;
        self.step_open = true;
    }

    /// A policy step in which the arm holds where it is (the arm's components of the action
    /// zeroed, the gripper's command kept), recorded as interrupted by `why` (`None` for a
    /// success hold: the hold is what was meant and executed).
    fn hold_step(&mut self, why: Interruption) {
        self.action = self.last_action;
        self.action.as_mut_slice()[..self.cfg.action_space.dim() - 1].fill(0.0);
        self.mapper.hold(&self.model);
        self.pending.obs = self.obs.flat;
        self.pending.base_action = self.base_action;
        self.pending.action = self.action;
        self.pending.intervened = false;
        self.pending.safety_limited = false;
        self.pending.interrupted = why;
        self.step_open = true;
    }

    /// Waits for `ticker`'s next scheduled start, runs one tick, and records its timing in the
    /// loop statistics (a tick that finishes after its deadline is a miss).
    pub fn tick_paced(&mut self, ticker: &mut Ticker) -> TickReport {
        let woke = ticker.wait(&self.stats.timing);
        let report = self.tick();
        ticker.finish(&self.stats.timing, woke);
        report
    }

    /// Runs ticks until `duration` has passed or `on_episode_end` returns false: paced at
    /// `rate_hz` (a real arm), or back to back when `paced` is false (a simulator that may run
    /// faster than real time; no jitter is recorded then). `on_episode_end` runs between
    /// episodes with the runtime and the last outcome (to reset a simulated scene through
    /// [`Runtime::reset_episode`]; it may be slow); when it returns true and has not started an
    /// episode, the next one starts where the arm is; when that start's read fails, the loop
    /// holds and tries again every tick (counted in `read_errors`). The schedule restarts after
    /// it, so a reset is not counted as a deadline miss.
    pub fn run(
        &mut self,
        duration: Duration,
        paced: bool,
        on_episode_end: impl FnMut(&mut Self, &Outcome) -> bool,
    ) {
        self.run_observed(duration, paced, |_| {}, on_episode_end)
    }

    /// [`Runtime::run`], with `on_policy_step` called after every tick that began a policy
    /// step ([`Runtime::step_in_flight`] names it), outside the tick: a simulated session
    /// renders its cameras there, so each frame shows the scene the step's observation was
    /// read from. When paced and the hook overran the next tick's start, the schedule restarts
    /// after it, so its time is not counted as a deadline miss (the simulated arm waits for it; a real arm's frames come from its
    /// camera drivers instead).
    pub fn run_observed(
        &mut self,
        duration: Duration,
        paced: bool,
        mut on_policy_step: impl FnMut(&mut Self),
        mut on_episode_end: impl FnMut(&mut Self, &Outcome) -> bool,
    ) {
        let end = Instant::now() + duration;
        let mut ticker = Ticker::new(self.cfg.servo_rate_hz);
        let mut last_outcome = Outcome::PENDING;
        // An episode waiting to start: its first read failed, so the loop holds (the episode
        // is done) and tries again next tick. One stale read at a boundary must not end a run.
        let mut starting = false;
        while Instant::now() < end {
            if starting {
                if self.begin_episode().is_ok() {
                    starting = false;
                    ticker = Ticker::new(self.cfg.servo_rate_hz);
                } else {
                    self.stats.read_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            let report = if paced {
                self.tick_paced(&mut ticker)
            } else {
                let woke = Instant::now();
                self.stats.timing.ticks.fetch_add(1, Ordering::Relaxed);
                let r = self.tick();
                self.stats
                    .timing
                    .compute
                    .record(woke.elapsed().as_nanos() as u64);
                r
            };
            if let Some(o) = report.outcome {
                last_outcome = o;
            }
            if report.policy_step {
                on_policy_step(self);
                if paced && Instant::now() > ticker.next_deadline() {
                    ticker = Ticker::new(self.cfg.servo_rate_hz);
                }
            }
            if report.episode_done && self.episode_done && !starting {
                if !on_episode_end(self, &last_outcome) {
                    return;
                }
                if self.episode_done && self.begin_episode().is_err() {
                    self.stats.read_errors.fetch_add(1, Ordering::Relaxed);
                    starting = true;
                }
                ticker = Ticker::new(self.cfg.servo_rate_hz);
            }
        }
    }

    /// The robot (read-only: every command goes through the filter, so no caller gets to write
    /// one).
    pub fn robot(&self) -> &R {
        &self.robot
    }

    /// Where operators send their commands (newest wins; clone it for every source). Event
    /// presses are counted per command: the runtime acts on an increase over the last command
    /// it received, so sources that send events must share one count.
    pub fn operator(&self) -> &LatestSender<OperatorCommand> {
        &self.operator_tx
    }

    /// Where transitions come out (refused and counted when the learner falls behind).
    pub fn transitions(&self) -> &Arc<SpscReceiver<Transition>> {
        &self.transitions_rx
    }

    /// The e-stop this loop obeys.
    pub fn estop(&self) -> &EStop {
        self.filter.estop()
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

    /// True when the command has stopped moving.
    pub fn at_rest(&self) -> bool {
        self.filter.at_rest()
    }

    /// The last observation built.
    pub fn observation(&self) -> &Observation {
        &self.obs
    }

    /// The episode and step the policy step in flight belongs to (what its transition will
    /// carry).
    pub fn step_in_flight(&self) -> (u64, u64) {
        (self.pending.episode, self.pending.step)
    }

    /// Ticks per policy step.
    pub fn ticks_per_step(&self) -> u32 {
        self.ticks_per_step
    }

    /// Whether the next tick will run a policy step if the robot's state arrives fresh (an
    /// episode is running, no e-stop, the step in flight is done): a camera that takes pictures
    /// on demand (the simulator's) takes the policy's picture now.
    pub fn policy_step_next(&self) -> bool {
        self.tick_in_step == 0 && !self.episode_done && !self.estopped
    }

    /// The end of a session: presses the e-stop, ticks (paced when `paced`) until the arm is at
    /// rest (at most `max_ticks`), then releases the robot (`Robot::stop`). Returns whether it
    /// came to rest.
    pub fn shutdown(&mut self, max_ticks: u64, paced: bool) -> bool {
        self.filter.estop().press();
        let rested = self.tick_until_at_rest(max_ticks, paced);
        self.robot.stop();
        rested
    }

    /// The robot's health (`Robot::health`).
    pub fn robot_health(&self) -> reflex_core::RobotHealth {
        self.robot.health()
    }

    /// Ticks (paced at the loop rate when `paced`) until the command is at rest, for at most
    /// `max_ticks`: what `reflex run` and `reflex train` do after pressing the e-stop, before
    /// they exit. Returns whether it came to rest.
    pub fn tick_until_at_rest(&mut self, max_ticks: u64, paced: bool) -> bool {
        let mut ticker = Ticker::new(self.cfg.servo_rate_hz);
        for _ in 0..max_ticks {
            if paced {
                self.tick_paced(&mut ticker);
            } else {
                self.tick();
            }
            if self.filter.at_rest() {
                return true;
            }
        }
        self.filter.at_rest()
    }
}

impl<R: Robot + SceneReset> Runtime<R> {
    /// Rebuilds a simulated scene for `seed` and starts an episode in it. The safety filter
    /// restarts at rest from the new state: the only jump a command may make, because the
    /// world itself was replaced.
    pub fn reset_episode(&mut self, seed: u64) -> Result<(), ResetError<R::Error>> {
        self.robot.reset_scene(seed).map_err(ResetError::Scene)?;
        self.robot
            .read_state(&mut self.state)
            .map_err(ResetError::Robot)?;
        self.filter.reset(&self.state);
        self.command = *self.filter.last_command();
        self.begin_episode().map_err(ResetError::Robot)
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
