//! `reflex run`: the runtime driving an arm in real time (or, simulated, back to back), episode
//! after episode, from policy files checked against the task (their scale and loop rate taken
//! from them), on its own control thread with optional real-time settings; the calling thread
//! plays the learner's part (drains transitions) and watches the interrupt flag, which presses
//! the e-stop: the arm brakes to rest before the session ends.
//!
//! The arm is the built-in simulator or, with [`RunRobot::Serial`], an arm on Reflex's joint
//! firmware over a serial line ([`SerialRobot`]), its objects from a tracker on the scene link
//! and its steps judged by the task over them, episodes started through the link's reset.

use crate::arms::runtime_config;
use crate::board_sim::{BoardSimRobot, BoardSimSpec};
use crate::policies::load_for;
use crate::train::INTERRUPT;
use reflex_core::{Policy, Robot, SceneReset};
use reflex_policy::{ObsLayout, PolicyFileError, Role};
use reflex_runtime::{
    EStop, NetPolicy, RealTime, RealTimeRequest, ResidualPolicy, Runtime, RuntimeConfig,
    RuntimeSettings, RuntimeStats, WeightsSlot,
};
use reflex_serial::{SceneLink, SerialParams, SerialRobot};
use reflex_sim::{Env, ScriptedExpert, SimRobot, Task, TaskJudge};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// What to run.
#[derive(Clone, Debug)]
pub struct RunSpec {
    /// The task.
    pub task: Task,
    /// `scripted` (the task's scripted expert) or a base policy file.
    pub policy: String,
    /// A residual policy file.
    pub residual: Option<PathBuf>,
    /// The residual scale (default: the residual file's own, else 0.3; a file that records
    /// another is refused).
    pub residual_scale: Option<f32>,
    /// The loop rate, Hz (default: the rate the residual or base file was trained at, else
    /// 1000).
    pub servo_rate_hz: Option<f64>,
    /// How long, seconds of wall-clock time.
    pub seconds: f64,
    /// Seed of the first episode; episode i uses `seed + i`.
    pub seed: u64,
    /// Tick at the loop rate (else back to back).
    pub paced: bool,
    /// Ask for SCHED_FIFO, mlockall and CPU pinning.
    pub realtime: bool,
    /// The arm.
    pub robot: RunRobot,
}

/// The arm a session drives.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum RunRobot {
    /// The built-in simulator.
    #[default]
    Sim,
    /// An arm on Reflex's joint firmware over a serial line.
    Serial(SerialTarget),
    /// The built-in simulator behind the firmware's control core, in process
    /// ([`crate::board_sim`]).
    SimBoard(BoardSimSpec),
}

/// An arm on Reflex's joint firmware: its port and the scene beside it.
#[derive(Clone, Debug, PartialEq)]
pub struct SerialTarget {
    /// The serial device (a pseudo-terminal for `reflex firmware-sim`).
    pub port: String,
    /// The scene link (tracker and resets); without one, objects stay unknown and episodes
    /// start where the arm is.
    pub scene: Option<SocketAddr>,
    /// Clear the board's latched e-stop and faults at start.
    pub rearm_board: bool,
    /// Send velocity feed-forward with the setpoints ([`SerialParams::velocity_feedforward`]).
    pub velocity_feedforward: bool,
    /// Send gravity-compensation torques with the setpoints
    /// ([`SerialParams::gravity_feedforward`]).
    pub gravity_feedforward: bool,
}

impl SerialTarget {
    /// `port` with no scene link, no re-arm, both feed-forwards on.
    pub fn new(port: impl Into<String>) -> Self {
        Self {
            port: port.into(),
            scene: None,
            rearm_board: false,
            velocity_feedforward: true,
            gravity_feedforward: true,
        }
    }

    /// Opens the port (nothing sent yet) and attaches the scene link with `task`'s judge.
    pub fn open(
        &self,
        task: &Task,
        model: &reflex_core::ArmModel,
        goals: &[[f64; 3]],
        estop: EStop,
    ) -> Result<SerialRobot, RunError> {
        let params = SerialParams {
            rearm_board: self.rearm_board,
            velocity_feedforward: self.velocity_feedforward,
            gravity_feedforward: self.gravity_feedforward,
            ..SerialParams::new(&self.port)
        };
        let mut robot = SerialRobot::open(&params, model.clone(), estop)?;
        if let Some(addr) = self.scene {
            let spec = crate::arms::scene_spec(task, goals);
            let link = SceneLink::connect(addr, &spec.objects)?;
            robot.attach_scene(link, spec, Some(Box::new(TaskJudge::new(task))));
        }
        Ok(robot)
    }
}

impl RunRobot {
    /// Parses `sim`, `sim-board` or `serial:PORT`; a serial arm takes `serial`'s settings (its
    /// port replaced); the in-process board its feed-forward settings; the simulators refuse
    /// a scene link and a re-arm.
    pub fn parse(s: &str, serial: SerialTarget) -> Result<Self, String> {
        let simulated = |serial: &SerialTarget| {
            if serial.scene.is_some() {
                return Err(format!("--robot {s}: --scene is for --robot serial:PORT"));
            }
            if serial.rearm_board {
                return Err(format!(
                    "--robot {s}: --rearm-board is for --robot serial:PORT"
                ));
            }
            Ok(())
        };
        match s.split_once(':') {
            _ if s == "sim" => {
                simulated(&serial)?;
                if !(serial.velocity_feedforward && serial.gravity_feedforward) {
                    return Err(
                        "--robot sim: the feed-forward options are for a board (sim-board or \
                         serial:PORT)"
                            .into(),
                    );
                }
                Ok(Self::Sim)
            }
            _ if s == "sim-board" => {
                simulated(&serial)?;
                Ok(Self::SimBoard(BoardSimSpec {
                    velocity_feedforward: serial.velocity_feedforward,
                    gravity_feedforward: serial.gravity_feedforward,
                    ..BoardSimSpec::default()
                }))
            }
            Some(("serial", port)) if !port.is_empty() => Ok(Self::Serial(SerialTarget {
                port: port.into(),
                ..serial
            })),
            _ => Err(format!(
                "--robot {s}: expected `sim`, `sim-board` or `serial:PORT` (e.g. \
                 serial:/dev/ttyACM0)"
            )),
        }
    }
}

/// Why a session could not run; names the file or part.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A bad setting.
    #[error("{0}")]
    Setting(String),
    /// A policy file was refused.
    #[error(transparent)]
    Policy(#[from] PolicyFileError),
    /// The simulator failed.
    #[error("simulator: {0}")]
    Sim(#[from] reflex_sim::SimError),
    /// The runtime refused its configuration or the robot did not start.
    #[error(transparent)]
    Runtime(#[from] reflex_runtime::RuntimeError),
    /// The control thread failed.
    #[error("control thread: {0}")]
    Control(String),
    /// The serial port could not be opened.
    #[error(transparent)]
    Serial(#[from] reflex_serial::SerialError),
    /// The scene link could not be opened.
    #[error(transparent)]
    Scene(#[from] reflex_serial::SceneLinkError),
}

/// What a session did.
pub struct RunResult {
    /// The loop rate used, Hz.
    pub servo_rate_hz: f64,
    /// The residual scale used.
    pub residual_scale: f32,
    /// What the real-time requests obtained.
    pub realtime: RealTime,
    /// Success of every completed episode (an aborted one is not counted).
    pub episodes: Vec<bool>,
    /// After an e-stop: whether the arm came to rest within 5 s.
    pub rested: Option<bool>,
    /// Transitions the watching thread drained.
    pub drained: u64,
    /// The loop's statistics.
    pub stats: Arc<RuntimeStats>,
    /// The transition queue's counters.
    pub transitions: reflex_core::QueueStats,
    /// The e-stop was pressed.
    pub estop_pressed: bool,
}

/// Runs `spec`; `watch` is called about every 100 ms with the loop's statistics.
pub fn run(spec: &RunSpec, mut watch: impl FnMut(&RuntimeStats)) -> Result<RunResult, RunError> {
    if !(spec.seconds > 0.0 && spec.seconds.is_finite()) {
        return Err(RunError::Setting(format!(
            "--seconds {}: expected a positive duration",
            spec.seconds
        )));
    }
    let estop = EStop::new();
    match &spec.robot {
        RunRobot::Sim => {
            let built = sim_runtime(
                &spec.task,
                &spec.policy,
                spec.residual.as_deref(),
                spec.residual_scale,
                spec.servo_rate_hz,
                spec.seed,
                estop.clone(),
            )?;
            drive(built, spec, estop, [false, true, false], &mut watch)
        }
        RunRobot::SimBoard(board) => {
            let built = board_sim_runtime(spec, *board, estop.clone())?;
            drive(built, spec, estop, [false, true, false], &mut watch)
        }
        RunRobot::Serial(target) => {
            if !spec.paced {
                return Err(RunError::Setting(
                    "--unpaced is for the simulator: a serial arm runs in real time".into(),
                ));
            }
            let built = serial_runtime(spec, target, estop.clone())?;
            let resets = target.scene.is_some();
            drive(built, spec, estop, [resets, resets, true], &mut watch)
        }
    }
}

/// Runs `rt` for the session. `[reset_first, resets, release]`: the first episode starts with a
/// scene reset for `spec.seed`; every later one with the next seed (else episodes start where
/// the last ended); the arm is braked to rest and released at the end whatever ended the
/// session (a real arm: its board must not be left to its watchdog), not only after an e-stop.
fn drive<R: Robot + SceneReset + Send + 'static>(
    built: BuiltRuntime<R>,
    spec: &RunSpec,
    estop: EStop,
    [reset_first, resets, release]: [bool; 3],
    watch: &mut impl FnMut(&RuntimeStats),
) -> Result<RunResult, RunError> {
    let BuiltRuntime {
        runtime: mut rt,
        servo_rate_hz,
        residual_scale,
    } = built;
    let stats = rt.stats().clone();
    let transitions = rt.transitions().clone();

    let (realtime, paced) = (spec.realtime && spec.paced, spec.paced);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let duration = Duration::from_secs_f64(spec.seconds);
    let first_seed = spec.seed;
    type ControlResult = Result<(RealTime, Vec<bool>, Option<bool>, bool), String>;
    let control = std::thread::Builder::new()
        .name("reflex-control".into())
        .spawn(move || -> ControlResult {
            let got = RealTime::request(&RealTimeRequest {
                fifo_priority: realtime.then_some(80),
                mlock: realtime,
                cpu: realtime.then_some(cores - 1),
            });
            let mut seed = first_seed;
            let mut episodes = Vec::new();
            let mut reset_error = None;
            if reset_first {
                if let Err(e) = rt.reset_episode(seed) {
                    if release {
                        rt.shutdown((5.0 * rt.config().servo_rate_hz) as u64, paced);
                    }
                    return Err(e.to_string());
                }
            }
            rt.run(duration, paced, |rt, outcome| {
                if rt.estop().is_latched() {
                    return false; // the episode was aborted: not counted
                }
                episodes.push(outcome.success);
                seed += 1;
                if !resets {
                    return true;
                }
                match rt.reset_episode(seed) {
                    Ok(()) => true,
                    Err(e) => {
                        reset_error = Some(e.to_string());
                        false
                    }
                }
            });
            // Pressed (or a real arm at the end): brake to rest (paced like the loop itself)
            // and release the robot.
            let pressed = rt.estop().presses() > 0;
            let rested = (pressed || release)
                .then(|| rt.shutdown((5.0 * rt.config().servo_rate_hz) as u64, paced));
            if let Some(e) = reset_error {
                return Err(e);
            }
            Ok((got, episodes, rested, pressed))
        })
        .map_err(|e| RunError::Control(e.to_string()))?;

    // This thread plays the learner's part: it drains transitions so none are dropped.
    let mut drained = 0u64;
    while !control.is_finished() {
        std::thread::sleep(Duration::from_millis(100));
        if INTERRUPT.load(Ordering::Relaxed) && !estop.is_latched() {
            tracing::warn!("stopping: e-stop pressed, braking to rest");
            estop.press();
        }
        while transitions.pop().is_some() {
            drained += 1;
        }
        watch(&stats);
    }
    let (got, episodes, rested, pressed) = control
        .join()
        .map_err(|_| RunError::Control("the control thread panicked".into()))?
        .map_err(RunError::Control)?;
    if rested == Some(false) {
        tracing::error!("the arm did not come to rest within 5 s of the e-stop");
    }
    while transitions.pop().is_some() {
        drained += 1;
    }
    Ok(RunResult {
        servo_rate_hz,
        residual_scale,
        realtime: got,
        episodes,
        rested,
        drained,
        stats,
        transitions: transitions.stats(),
        estop_pressed: pressed,
    })
}

/// A runtime over the serial arm `target` for `spec`: the policies checked against the task's
/// observation layout (read from the simulator's scene description: nothing is simulated), the
/// scene link attached with the task's judge, 10 s for the board's first state.
pub fn serial_runtime(
    spec: &RunSpec,
    target: &SerialTarget,
    estop: EStop,
) -> Result<BuiltRuntime<SerialRobot>, RunError> {
    let task = &spec.task;
    let (scene, p) = spec_policies(spec)?;
    let robot = target.open(task, &scene.model, &scene.goals, estop.clone())?;
    let cfg = runtime_config(
        task,
        &scene.model,
        p.servo_rate_hz,
        &RuntimeSettings {
            start_timeout_s: 10.0,
            residual_scale: p.residual_scale,
            ..Default::default()
        },
    );
    BuiltRuntime::new(robot, cfg, scene.model, p, estop)
}

/// The task's scene description and `spec`'s policies checked against it (a 1 kHz loop
/// unless the files or `spec` say otherwise).
fn spec_policies(spec: &RunSpec) -> Result<(crate::arms::TaskScene, Policies), RunError> {
    let scene = crate::arms::TaskScene::of(&spec.task)?;
    let p = load_policies(
        &spec.task,
        &scene.model,
        scene.layout,
        &spec.policy,
        spec.residual.as_deref(),
        spec.residual_scale,
        spec.servo_rate_hz,
        1000.0,
    )?;
    Ok((scene, p))
}

/// A runtime over the simulated arm behind the in-process board ([`crate::board_sim`]) for
/// `spec`, from scene `spec.seed`.
pub fn board_sim_runtime(
    spec: &RunSpec,
    board: BoardSimSpec,
    estop: EStop,
) -> Result<BuiltRuntime<BoardSimRobot>, RunError> {
    let task = &spec.task;
    let (scene, p) = spec_policies(spec)?;
    let robot = BoardSimRobot::new(task, spec.seed, p.servo_rate_hz, board)?;
    let cfg = RuntimeConfig {
        transition_capacity: 4096,
        ..runtime_config(
            task,
            &scene.model,
            p.servo_rate_hz,
            &RuntimeSettings {
                residual_scale: p.residual_scale,
                ..Default::default()
            },
        )
    };
    BuiltRuntime::new(robot, cfg, scene.model, p, estop)
}

impl<R: Robot + Send + 'static> BuiltRuntime<R> {
    /// A runtime over `robot` with `p`'s policies.
    fn new(
        robot: R,
        cfg: RuntimeConfig,
        model: reflex_core::ArmModel,
        p: Policies,
        estop: EStop,
    ) -> Result<Self, RunError> {
        Ok(Self {
            runtime: Runtime::new(robot, cfg, model, p.base, p.residual, estop)?,
            servo_rate_hz: p.servo_rate_hz,
            residual_scale: p.residual_scale,
        })
    }
}

/// A runtime over the simulated arm, with its policies and loop rate.
pub type SimRuntime = BuiltRuntime<SimRobot>;

/// A runtime over an arm, with its policies' loop rate and residual scale.
pub struct BuiltRuntime<R: Robot> {
    /// The runtime (a simulated scene reset for the seed it was built with).
    pub runtime: Runtime<R>,
    /// The loop rate used, Hz.
    pub servo_rate_hz: f64,
    /// The residual scale used.
    pub residual_scale: f32,
}

/// A session's policies, checked against its task, with the loop rate and residual scale they
/// set.
pub struct Policies {
    /// The base policy.
    pub base: Box<dyn Policy + Send>,
    /// The residual, if any.
    pub residual: Option<ResidualPolicy>,
    /// The residual's scale.
    pub residual_scale: f32,
    /// The loop rate, Hz.
    pub servo_rate_hz: f64,
}

/// Loads `policy` (`scripted`: the task's expert on `model`; else a base policy file) and an
/// optional `residual` file for observations in `layout`. Policy files say what they were
/// trained for: a file for another layout, action space or decision rate is refused naming
/// both. The loop rate and residual scale default to the files' own (then to `default_rate_hz`
/// and 0.3); a flag that contradicts a file is refused, naming both.
#[allow(clippy::too_many_arguments)]
pub fn load_policies(
    task: &Task,
    model: &reflex_core::ArmModel,
    layout: ObsLayout,
    policy: &str,
    residual: Option<&Path>,
    residual_scale: Option<f32>,
    servo_rate_hz: Option<f64>,
    default_rate_hz: f64,
) -> Result<Policies, RunError> {
    let obs_dim = layout.dim();
    let act_dim = task.action_space.dim();
    for p in std::iter::once(Path::new(policy)).chain(residual) {
        if crate::pixel_deploy::is_pixel_file(p) {
            return Err(RunError::Setting(format!(
                "{}: a pixel run's network (its encoder is beside it); this command feeds \
                 policies on state. Evaluate the run with `reflex eval --policy RUN`, or drive \
                 an arm with it over its camera topics with `reflex ros run`",
                p.display()
            )));
        }
    }
    let base_file = match policy {
        "scripted" => None,
        p => Some(load_for(Path::new(p), Role::Base, task, layout)?),
    };
    let residual_file = match residual {
        Some(p) => Some(load_for(p, Role::Residual, task, layout)?),
        None => None,
    };
    let residual_name = || residual.unwrap_or(Path::new("")).display();
    let file_scale = residual_file
        .as_ref()
        .and_then(|f| f.meta.as_ref())
        .and_then(|m| m.residual_scale);
    let residual_scale = match (residual_scale, file_scale) {
        (Some(flag), Some(file)) if (flag - file).abs() > 1e-6 => {
            return Err(RunError::Setting(format!(
                "--residual-scale {flag}: {} was trained with {file}",
                residual_name()
            )))
        }
        (flag, file) => flag.or(file).unwrap_or(0.3),
    };
    let file_rate = [&residual_file, &base_file]
        .into_iter()
        .flatten()
        .find_map(|f| f.meta.as_ref().map(|m| m.servo_rate_hz));
    let servo_rate_hz = servo_rate_hz.or(file_rate).unwrap_or(default_rate_hz);
    let base: Box<dyn Policy + Send> = match base_file {
        None => Box::new(ScriptedExpert::new(task, model)),
        Some(f) => Box::new(
            NetPolicy::new(WeightsSlot::new(f.mlp), obs_dim, act_dim)
                .map_err(|e| RunError::Setting(format!("{policy}: {e}")))?,
        ),
    };
    let residual = match residual_file {
        Some(f) => Some(
            ResidualPolicy::new(WeightsSlot::new(f.mlp), obs_dim, act_dim)
                .map_err(|e| RunError::Setting(format!("{}: {e}", residual_name())))?,
        ),
        None => None,
    };
    Ok(Policies {
        base,
        residual,
        residual_scale,
        servo_rate_hz,
    })
}

/// A runtime over the simulated arm running `task` from scene `seed`, obeying `estop`:
/// `policy` is `scripted` (the task's expert) or a base policy file, `residual` an optional
/// residual file ([`load_policies`]; the loop rate defaults to the files', else 1000 Hz).
#[allow(clippy::too_many_arguments)]
pub fn sim_runtime(
    task: &Task,
    policy: &str,
    residual: Option<&Path>,
    residual_scale: Option<f32>,
    servo_rate_hz: Option<f64>,
    seed: u64,
    estop: EStop,
) -> Result<SimRuntime, RunError> {
    let mut env = Env::new(task.clone())?;
    let obs = env.reset(seed)?;
    let layout = ObsLayout::of(&obs);
    let model = env.model().clone();
    let p = load_policies(
        task,
        &model,
        layout,
        policy,
        residual,
        residual_scale,
        servo_rate_hz,
        1000.0,
    )?;
    finish_sim_runtime(
        env,
        p.base,
        p.residual,
        p.residual_scale,
        p.servo_rate_hz,
        estop,
    )
}

/// A runtime over the simulated arm running `task` from scene `seed` with the policies given
/// (networks a live learner publishes to, say), at `servo_rate_hz`, obeying `estop`.
pub fn sim_runtime_with(
    task: &Task,
    base: Box<dyn Policy + Send>,
    residual: Option<ResidualPolicy>,
    residual_scale: f32,
    servo_rate_hz: f64,
    seed: u64,
    estop: EStop,
) -> Result<SimRuntime, RunError> {
    let mut env = Env::new(task.clone())?;
    env.reset(seed)?;
    finish_sim_runtime(env, base, residual, residual_scale, servo_rate_hz, estop)
}

fn finish_sim_runtime(
    env: Env,
    base: Box<dyn Policy + Send>,
    residual: Option<ResidualPolicy>,
    residual_scale: f32,
    servo_rate_hz: f64,
    estop: EStop,
) -> Result<SimRuntime, RunError> {
    let model = env.model().clone();
    let cfg = RuntimeConfig {
        transition_capacity: 4096,
        ..runtime_config(
            env.task(),
            &model,
            servo_rate_hz,
            &RuntimeSettings {
                residual_scale,
                ..Default::default()
            },
        )
    };
    let robot = SimRobot::new(env, servo_rate_hz)?;
    let runtime = Runtime::new(robot, cfg, model, base, residual, estop)?;
    Ok(SimRuntime {
        runtime,
        servo_rate_hz,
        residual_scale,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn robot_names_parse_and_options_for_another_arm_are_refused() {
        let plain = SerialTarget::new("");
        assert_eq!(RunRobot::parse("sim", plain.clone()), Ok(RunRobot::Sim));
        assert_eq!(
            RunRobot::parse("serial:/dev/ttyACM0", plain.clone()),
            Ok(RunRobot::Serial(SerialTarget::new("/dev/ttyACM0")))
        );
        let no_vff = SerialTarget {
            velocity_feedforward: false,
            ..plain.clone()
        };
        assert_eq!(
            RunRobot::parse("sim-board", no_vff.clone()),
            Ok(RunRobot::SimBoard(BoardSimSpec {
                velocity_feedforward: false,
                ..BoardSimSpec::default()
            }))
        );
        let e = RunRobot::parse("sim", no_vff).unwrap_err();
        assert!(e.contains("feed-forward"), "{e}");
        let scene = SerialTarget {
            scene: Some(SocketAddr::from(([127, 0, 0, 1], 7420))),
            ..plain.clone()
        };
        let e = RunRobot::parse("sim-board", scene).unwrap_err();
        assert!(e.contains("--scene"), "{e}");
        let e = RunRobot::parse("serial:", plain.clone()).unwrap_err();
        assert!(e.contains("sim-board"), "{e}");
        let rearm = SerialTarget {
            rearm_board: true,
            ..plain
        };
        assert!(RunRobot::parse("sim", rearm).is_err());
    }
}
