//! The simulated arm behind the firmware's control core, in process: `--robot sim-board`.
//!
//! [`BoardSimRobot`] is what `reflex firmware-sim` runs behind its pseudo-terminal, without the
//! line and without the wall clock: each command becomes the setpoint `SerialRobot` would send
//! ([`SetpointShaper`]: velocity and gravity feed-forward), encoded as a wire frame and handed
//! to the board's [`Controller`], which then runs at its own rate (1 kHz) on the simulated
//! joints with explicit torques, one physics step per board period. So the arm moves as it
//! does through the board (its PD gains, its reference shaping, its speed, current and
//! position limits, its 1 ms physics step) while time runs as fast as the machine computes:
//! a policy can be trained and evaluated on the board's dynamics in minutes, and the gap
//! between this and `--robot serial:PORT` is what the line and the wall clock cost.
//!
//! Objects, success and episode ends are the simulator's, as for [`reflex_sim::SimRobot`]
//! (the tracker and the task's judge over its poses, on a real arm).

use crate::firmware_sim::{sim_board_config, Plant, TORQUE_PER_AMP_NM_A};
use reflex_core::{
    start_default, Action, ArmModel, Frames, JointCommand, JointLimits, Observation, Outcome,
    Robot, RobotError, RobotHealth, RobotState, SafetyLimits, SceneReset, StartError, ARM_DOF,
};
use reflex_fw_core::wire::{
    BoardMode, BoardState, Hello, ModeRequest, Sender, ToBoard, JOINTS, MAX_FRAME,
};
use reflex_fw_core::{Controller, Measured};
use reflex_serial::{limits_for_board, robot_state, SetpointShaper};
use reflex_sim::{Env, SimError, Step, Task};
use std::time::Duration;

/// The board's link watchdog in process, milliseconds of simulated time (as `reflex
/// firmware-sim`'s default).
pub const BOARD_SIM_WATCHDOG_MS: u16 = 50;

/// The session number the in-process host opens.
const SESSION: u32 = 0x5eed;

/// How the in-process board is set up.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BoardSimSpec {
    /// The board's control rate, Hz (also the physics rate).
    pub board_rate_hz: u16,
    /// Send velocity feed-forward with the setpoints.
    pub velocity_feedforward: bool,
    /// Send gravity-compensation torques with the setpoints.
    pub gravity_feedforward: bool,
}

impl Default for BoardSimSpec {
    /// 1 kHz, both feed-forwards on (as `reflex firmware-sim` and `SerialRobot`'s defaults).
    fn default() -> Self {
        Self {
            board_rate_hz: 1000,
            velocity_feedforward: true,
            gravity_feedforward: true,
        }
    }
}

/// The simulated arm driven through the firmware's control core, advanced in lock step with
/// the control loop (see the module docs).
pub struct BoardSimRobot {
    plant: Plant,
    ctl: Controller,
    sender: Sender,
    frame: [u8; MAX_FRAME],
    shaper: SetpointShaper,
    model: ArmModel,
    frames: Frames,
    torque_per_amp: [f32; ARM_DOF],
    /// The measurement the board's last period used (what its state frame carried).
    measured: Measured,
    /// The board's clock, microseconds.
    now_us: u64,
    period_us: u64,
    tick_dt_s: f64,
    board_dt_s: f64,
    /// Simulated time owed to the board, seconds.
    owed_s: f64,
    /// The board is under position control as far as the host knows.
    tracking: bool,
    /// The episode ended: the board holds the arm until the next reset or episode.
    between_episodes: bool,
    /// Times the board stopped on its own (a fault, its watchdog); each reset re-arms it.
    board_stops: u64,
    last_step: Option<Step>,
}

impl BoardSimRobot {
    /// The arm of `task` with its scene reset for `seed`, behind a board at `spec`, for a
    /// control loop at `rate_hz` (not slower than the task's policy rate, not faster than the
    /// board).
    pub fn new(task: &Task, seed: u64, rate_hz: f64, spec: BoardSimSpec) -> Result<Self, SimError> {
        let board_hz = spec.board_rate_hz.max(1);
        let policy = task.control_rate_hz;
        if !(rate_hz.is_finite() && rate_hz >= policy && rate_hz <= board_hz as f64) {
            return Err(SimError::Setting {
                setting: "rate_hz",
                message: format!(
                    "control loop rate {rate_hz} Hz: expected between the task's policy rate \
                     ({policy} Hz) and the board's rate ({board_hz} Hz)"
                ),
            });
        }
        let mut task = task.clone();
        // One physics step per board period, as `reflex firmware-sim` steps it.
        task.physics_dt_s = 1.0 / board_hz as f64;
        let mut env = Env::new(task)?;
        env.reset(seed)?;
        let cfg = sim_board_config(&env, board_hz, BOARD_SIM_WATCHDOG_MS);
        let ctl = Controller::new(cfg).map_err(|e| SimError::Setting {
            setting: "board",
            message: format!("the board refused its configuration: {e}"),
        })?;
        let model = env.model().clone();
        let plant = Plant::new(env);
        let measured = plant.measure();
        Ok(Self {
            plant,
            ctl,
            sender: Sender::new(),
            frame: [0; MAX_FRAME],
            shaper: SetpointShaper::new(
                model.clone(),
                spec.velocity_feedforward,
                spec.gravity_feedforward,
            ),
            model,
            frames: Frames::default(),
            torque_per_amp: [TORQUE_PER_AMP_NM_A; ARM_DOF],
            measured,
            now_us: 0,
            period_us: 1_000_000 / board_hz as u64,
            tick_dt_s: 1.0 / rate_hz,
            board_dt_s: 1.0 / board_hz as f64,
            owed_s: 0.0,
            tracking: false,
            between_episodes: false,
            board_stops: 0,
            last_step: None,
        })
    }

    /// The environment (ground truth, for evaluation and tests).
    pub fn env(&self) -> &Env {
        &self.plant.env
    }

    /// The board's mode now.
    pub fn board_mode(&self) -> BoardMode {
        self.ctl.mode()
    }

    /// Times the board stopped the arm on its own so far.
    pub fn board_stops(&self) -> u64 {
        self.board_stops
    }

    /// The last judged policy step.
    pub fn last_step(&self) -> Option<&Step> {
        self.last_step.as_ref()
    }

    /// Hands `msg` to the board as a wire frame, at the board's time now.
    fn send(&mut self, msg: ToBoard) {
        if let Ok((n, _)) = self.sender.encode(&msg, &mut self.frame) {
            self.ctl.receive(&self.frame[..n], self.now_us);
        }
    }

    /// One board period: measure, control, drive, one physics step.
    fn board_period(&mut self) {
        self.now_us += self.period_us;
        let m = self.plant.measure();
        let cmd = self.ctl.tick(self.now_us, &m);
        self.plant.drive(&cmd);
        self.measured = m;
        if self.tracking && self.ctl.mode() != BoardMode::Position {
            // The board stopped on its own (a fault or its watchdog): it holds the arm and
            // refuses setpoints until the next reset re-arms it.
            let faults: Vec<&str> = self.ctl.faults().names().collect();
            tracing::warn!(
                mode = ?self.ctl.mode(),
                ?faults,
                pos_rad = ?m.pos_rad,
                vel_rad_s = ?m.vel_rad_s,
                current_a = ?m.current_a,
                "the simulated board stopped the arm"
            );
            self.board_stops += 1;
            self.tracking = false;
        }
    }
}

impl SceneReset for BoardSimRobot {
    type Error = SimError;

    /// The board idles (re-armed if it stopped on its own), the scene is rebuilt for `seed`,
    /// and the next command takes the arm back under position control, bumpless.
    fn reset_scene(&mut self, seed: u64) -> Result<(), SimError> {
        if matches!(self.ctl.mode(), BoardMode::Faulted | BoardMode::EStopped) {
            self.send(ToBoard::Rearm);
        }
        self.send(ToBoard::Mode(ModeRequest::Idle));
        self.tracking = false;
        self.between_episodes = false;
        self.board_period();
        self.owed_s = 0.0;
        self.last_step = None;
        self.plant.env.reset(seed)?;
        self.plant.braked = None;
        // The idle board measures the new scene's arm (as a real host waits for a state from
        // after the reset): position control then starts bumpless from there.
        self.board_period();
        Ok(())
    }
}

impl Robot for BoardSimRobot {
    fn own_limits(&self) -> Option<[JointLimits; ARM_DOF]> {
        // The board is configured from the same URDF.
        Some(self.model.limits)
    }

    fn start(&mut self, limits: &SafetyLimits, timeout: Duration) -> Result<(), StartError> {
        self.send(ToBoard::Hello(Hello { nonce: SESSION }));
        // The board's answer to the hello goes nowhere: this host knows the board.
        let _ = self.ctl.encode_reply(&mut self.frame);
        let own = self.ctl.config().limits;
        self.send(ToBoard::Limits(limits_for_board(limits, &own)));
        self.send(ToBoard::Mode(ModeRequest::Hold));
        self.board_period();
        if self.ctl.session() != SESSION {
            return Err(StartError::Refused(
                "the simulated board did not open the session".into(),
            ));
        }
        start_default(self, limits, timeout)
    }

    fn stop(&mut self) {
        self.send(ToBoard::Mode(ModeRequest::Hold));
        self.tracking = false;
    }

    fn read_state(&mut self, state: &mut RobotState) -> Result<(), RobotError> {
        let m = &self.measured;
        let finite = m.pos_rad.iter().chain(&m.vel_rad_s).all(|v| v.is_finite());
        if !finite {
            return Err(RobotError::NonFinite);
        }
        let s = BoardState {
            board_us: self.now_us,
            session: self.ctl.session(),
            pos_rad: m.pos_rad,
            vel_rad_s: m.vel_rad_s,
            current_a: m.current_a,
            gripper_m: m.gripper_m,
            mode: self.ctl.mode(),
            faults: self.ctl.faults(),
            last_host_seq: 0,
            host_rejects: 0,
        };
        *state = robot_state(
            &s,
            self.model.dof.min(JOINTS),
            &self.torque_per_amp,
            &self.model,
            &mut self.frames,
            self.now_us * 1000,
        );
        Ok(())
    }

    fn write_command(&mut self, command: &JointCommand) -> Result<(), RobotError> {
        let finite = command.joint_pos_rad.iter().all(|v| v.is_finite())
            && command.gripper_width_m.is_finite();
        if !finite {
            return Err(RobotError::NonFinite);
        }
        if !self.between_episodes {
            if !self.tracking && self.ctl.mode() != BoardMode::Position {
                if matches!(self.ctl.mode(), BoardMode::Faulted | BoardMode::EStopped) {
                    return Err(RobotError::Rejected);
                }
                self.send(ToBoard::Mode(ModeRequest::Position));
                self.shaper.restart();
            }
            self.tracking = true;
            let s = self.shaper.setpoint(command, self.now_us * 1000);
            self.send(ToBoard::Setpoint(s));
        }
        self.owed_s += self.tick_dt_s;
        // Board periods when at least half of one is owed (as `SimRobot` steps physics).
        while self.owed_s >= 0.5 * self.board_dt_s {
            self.board_period();
            self.owed_s -= self.board_dt_s;
        }
        Ok(())
    }

    fn now_ns(&self) -> u64 {
        self.now_us * 1000
    }

    fn read_scene(&mut self, obs: &mut Observation) {
        self.plant.env.read_scene(obs);
    }

    fn judge(&mut self, _obs: &Observation, action: &Action) -> Outcome {
        let step = self.plant.env.conclude(action);
        let outcome = Outcome::from(&step);
        self.last_step = Some(step);
        if outcome.done() {
            // As over the line: the board holds the arm at rest until the next episode.
            self.send(ToBoard::Mode(ModeRequest::Hold));
            self.tracking = false;
            self.between_episodes = true;
        }
        outcome
    }

    fn begin_judging(&mut self, _first: &Observation) {
        self.between_episodes = false;
    }

    fn health(&self) -> RobotHealth {
        let mut faults: Vec<String> = self
            .ctl
            .faults()
            .names()
            .map(|n| format!("board: {n}"))
            .collect();
        if self.board_stops > 0 {
            faults.push(format!(
                "the board stopped the arm {} times",
                self.board_stops
            ));
        }
        RobotHealth {
            connected: true,
            state_age_s: Some(0.0),
            faults,
        }
    }
}

impl reflex_core::SceneView for BoardSimRobot {
    fn cameras(&self) -> Vec<String> {
        self.env().cameras()
    }

    fn render(
        &self,
        camera: &str,
        frame: &mut reflex_core::Frame,
    ) -> Result<(), reflex_core::SceneError> {
        reflex_core::SceneView::render(self.env(), camera, frame)
    }

    fn objects(&self, out: &mut Vec<reflex_core::TrackedObject>) {
        self.env().objects(out)
    }
}

/// Simulated arms behind the in-process board, for training and evaluation jobs.
#[derive(Clone, Debug)]
pub struct BoardSimArms {
    task: Task,
    rate_hz: f64,
    spec: BoardSimSpec,
}

impl BoardSimArms {
    /// Arms for `task` at a `rate_hz` control loop, behind boards set up as `spec` says.
    pub fn new(task: Task, rate_hz: f64, spec: BoardSimSpec) -> Self {
        Self {
            task,
            rate_hz,
            spec,
        }
    }
}

impl crate::arms::Arms for BoardSimArms {
    type Robot = BoardSimRobot;

    fn task(&self) -> &Task {
        &self.task
    }

    fn rate_hz(&self) -> f64 {
        self.rate_hz
    }

    fn make(&self, seed: u64) -> Result<(BoardSimRobot, ArmModel), crate::arms::ArmsError> {
        let robot = BoardSimRobot::new(&self.task, seed, self.rate_hz, self.spec)
            .map_err(|e| crate::arms::ArmsError::Robot(format!("simulator: {e}")))?;
        let model = robot.model.clone();
        Ok((robot, model))
    }
}

/// `reflex train --robot sim-board`: the training job ([`crate::train::train_on`]) on the
/// simulated arm behind the in-process board set up as `spec` says, at simulation speed.
pub fn board_sim_train(
    cfg: &crate::train::TrainConfig,
    spec: BoardSimSpec,
    out: &std::path::Path,
    resume: bool,
    reward: Option<reflex_learn::stage::RewardPlugin>,
    progress: impl FnMut(crate::train::Progress),
) -> Result<crate::train::Summary, crate::train::TrainError> {
    let task = Task::load(&cfg.task).map_err(crate::train::config::stage("task"))?;
    let arms = BoardSimArms::new(task, cfg.runtime.servo_rate_hz, spec);
    crate::train::train_on(&arms, cfg, out, resume, reward, progress)
}
