//! `reflex firmware-sim`: the firmware's control core on the host behind a pseudo-terminal, as
//! a board runs it behind its USB serial port, with the simulated arm as its plant. Every
//! millisecond the core reads the simulated joints, runs its controller and drives the
//! simulated motors with explicit joint torques (one physics step of 1 ms); with its power
//! stage off, the joints are braked where they are. The fingers follow the gripper setpoint.
//!
//! Beside the board runs the scene a real arm's tracker and reset routine would provide, on
//! the scene link ([`reflex_serial::scene`]): object poses at the tracker's rate, and resets
//! that rebuild the scene for a seed while the board idles. Nothing of the simulator reaches
//! the host any other way: joints through the board's frames, objects through the tracker's
//! datagrams.

use reflex_core::ARM_DOF;
use reflex_fw_core::wire::JOINTS;
use reflex_fw_core::{BoardConfig, Measured, MotorCommand, MotorPort};
use reflex_serial::scene::{SceneMsg, TrackedPose, MAX_DATAGRAM, SCENE_PROTOCOL};
use reflex_serial::{board_config_for, spawn_board, BoardHandle, BoardReport};
use reflex_sim::{Env, Task};
use serialport::{SerialPort, TTYPort};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Refused frames as `reason count` pairs.
pub use reflex_serial::describe as describe_rejects;

/// The simulated motors' torque constant, newton metres per ampere.
pub const TORQUE_PER_AMP_NM_A: f32 = 2.0;

/// What to simulate.
#[derive(Clone, Debug)]
pub struct FirmwareSimSpec {
    /// The task (its arm, objects and scene sampling).
    pub task: Task,
    /// Seed of the first scene.
    pub seed: u64,
    /// The board's control rate, Hz (also the physics rate).
    pub rate_hz: u16,
    /// The board's link watchdog, milliseconds.
    pub watchdog_ms: u16,
    /// Where the scene link listens.
    pub scene_bind: SocketAddr,
    /// Object poses per second to the subscriber.
    pub scene_rate_hz: f64,
    /// Serve on this serial device instead of a new pseudo-terminal.
    pub port: Option<String>,
}

impl FirmwareSimSpec {
    /// Defaults for `task`: seed 0, 1 kHz, a 50 ms watchdog, the scene on a free loopback
    /// port at 100 Hz, a new pseudo-terminal.
    pub fn new(task: Task) -> Self {
        Self {
            task,
            seed: 0,
            rate_hz: 1000,
            watchdog_ms: 50,
            scene_bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            scene_rate_hz: 100.0,
            port: None,
        }
    }
}

/// Why the simulated board could not start.
#[derive(Debug, thiserror::Error)]
pub enum FirmwareSimError {
    /// The simulator refused the task.
    #[error("simulator: {0}")]
    Sim(#[from] reflex_sim::SimError),
    /// The serial side failed.
    #[error("{0}")]
    Serial(String),
    /// The scene link's socket failed.
    #[error("scene link on {addr}: {source}")]
    Scene {
        /// Where it should listen.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// The simulated arm as the board's motors and encoders.
pub(crate) struct Plant {
    pub(crate) env: Env,
    /// Where the brakes hold the joints (while the power stage is off).
    pub(crate) braked: Option<[f64; ARM_DOF]>,
    current_a: [f32; JOINTS],
    /// Physics steps since start.
    pub(crate) steps: u64,
}

impl Plant {
    /// The arm of `env`, its power stage off.
    pub(crate) fn new(env: Env) -> Self {
        Self {
            env,
            braked: None,
            current_a: [0.0; JOINTS],
            steps: 0,
        }
    }

    /// What the board's encoders and current sensors read.
    pub(crate) fn measure(&self) -> Measured {
        let mut q = [0.0; ARM_DOF];
        let mut qd = [0.0; ARM_DOF];
        self.env.world().read_joints(&mut q, &mut qd);
        let (fingers, _) = self.env.world().read_fingers();
        Measured {
            pos_rad: q.map(|v| v as f32),
            vel_rad_s: qd.map(|v| v as f32),
            current_a: self.current_a,
            gripper_m: (fingers[0] + fingers[1]) as f32,
        }
    }

    /// Applies the board's motor command for one physics step and takes the step.
    pub(crate) fn drive(&mut self, cmd: &MotorCommand) {
        if cmd.enabled {
            self.braked = None;
            self.env
                .world_mut()
                .apply_joint_torques(&cmd.torque_nm.map(|t| t as f64));
            self.current_a = cmd.torque_nm.map(|t| t / TORQUE_PER_AMP_NM_A);
        } else {
            let world = self.env.world();
            let at = *self.braked.get_or_insert_with(|| {
                let mut q = [0.0; ARM_DOF];
                let mut qd = [0.0; ARM_DOF];
                world.read_joints(&mut q, &mut qd);
                q
            });
            self.env.world_mut().brake_joints(&at);
            self.current_a = [0.0; JOINTS];
        }
        self.env
            .world_mut()
            .set_gripper_target(cmd.gripper_m as f64);
        self.env.physics_step_only();
        self.steps += 1;
    }
}

/// The [`MotorPort`] over the shared plant (the scene thread resets it between episodes).
struct SimMotors(Arc<Mutex<Plant>>);

impl MotorPort for SimMotors {
    fn measure(&mut self) -> Measured {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).measure()
    }

    fn drive(&mut self, cmd: &MotorCommand, _dt_s: f32) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).drive(cmd)
    }
}

/// The board's configuration for the simulated arm: the URDF's limits, the task's joint
/// stiffness and damping as PD gains, accelerations half again the host filter's (the board
/// is the backstop, not the governor).
pub fn sim_board_config(env: &Env, rate_hz: u16, watchdog_ms: u16) -> BoardConfig {
    let task = env.task();
    let model = env.model();
    let mut cfg = board_config_for(model, rate_hz, watchdog_ms, 0.0, 0.0, TORQUE_PER_AMP_NM_A);
    let host = task.safety_limits(model);
    for j in 0..ARM_DOF {
        cfg.gains.kp_nm_per_rad[j] = task.arm.stiffness_nm_rad[j] as f32;
        cfg.gains.kd_nm_s_per_rad[j] = task.arm.damping_nms_rad[j] as f32;
        cfg.kp_max_nm_per_rad[j] = 2.0 * cfg.gains.kp_nm_per_rad[j];
        cfg.kd_max_nm_s_per_rad[j] = 2.0 * cfg.gains.kd_nm_s_per_rad[j];
        cfg.accel_max_rad_s2[j] = 1.5 * host.joint_acc_max_rad_s2[j] as f32;
        cfg.stop_decel_rad_s2[j] = host.joint_acc_max_rad_s2[j] as f32;
    }
    cfg
}

/// What the scene side counted.
#[derive(Debug, Default)]
pub struct SceneCounters {
    /// Pose messages sent.
    pub poses_sent: AtomicU64,
    /// Resets done.
    pub resets: AtomicU64,
    /// Datagrams refused.
    pub refused: AtomicU64,
}

/// A running simulated board and its scene.
pub struct FirmwareSim {
    /// The serial device the host opens.
    pub device: String,
    /// Where the scene link listens.
    pub scene_addr: SocketAddr,
    /// The scene side's counters.
    pub scene: Arc<SceneCounters>,
    board: Option<BoardHandle>,
    plant: Arc<Mutex<Plant>>,
    stop: Arc<AtomicBool>,
    scene_thread: Option<JoinHandle<()>>,
    /// Keeps a pseudo-terminal's far end open so hosts can come and go.
    _keep: Option<std::fs::File>,
}

impl FirmwareSim {
    /// Builds the scene for `spec.seed`, opens the pseudo-terminal (or the given device) and
    /// starts the board loop and the scene link.
    pub fn start(spec: &FirmwareSimSpec) -> Result<Self, FirmwareSimError> {
        let mut task = spec.task.clone();
        // One physics step per control period.
        task.physics_dt_s = 1.0 / spec.rate_hz.max(1) as f64;
        let mut env = Env::new(task)?;
        env.reset(spec.seed)?;
        let cfg = sim_board_config(&env, spec.rate_hz, spec.watchdog_ms);
        let serial = |what: &str, e: &dyn std::fmt::Display| {
            FirmwareSimError::Serial(format!("{what}: {e}"))
        };
        let (port, device, keep) = match &spec.port {
            Some(dev) => {
                let p = serialport::new(dev, 1_562_500)
                    .open_native()
                    .map_err(|e| serial(&format!("opening {dev}"), &e))?;
                (p, dev.clone(), None)
            }
            None => {
                let (master, slave) =
                    TTYPort::pair().map_err(|e| serial("opening a pseudo-terminal", &e))?;
                let path = slave.name().ok_or_else(|| {
                    FirmwareSimError::Serial("the pseudo-terminal has no name".into())
                })?;
                drop(slave);
                let keep = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&path)
                    .map_err(|e| serial(&format!("opening {path}"), &e))?;
                (master, path, Some(keep))
            }
        };
        let socket =
            UdpSocket::bind(spec.scene_bind).map_err(|source| FirmwareSimError::Scene {
                addr: spec.scene_bind,
                source,
            })?;
        let scene_addr = socket
            .local_addr()
            .map_err(|source| FirmwareSimError::Scene {
                addr: spec.scene_bind,
                source,
            })?;
        let plant = Arc::new(Mutex::new(Plant::new(env)));
        let board = spawn_board(port, cfg, SimMotors(plant.clone()))
            .map_err(|e| serial("board configuration", &e))?;
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(SceneCounters::default());
        let period = Duration::from_secs_f64(1.0 / spec.scene_rate_hz.clamp(1.0, 1000.0));
        let scene_thread = {
            let (plant, stop, counters) = (plant.clone(), stop.clone(), counters.clone());
            std::thread::Builder::new()
                .name("reflex-sim-scene".into())
                .spawn(move || serve_scene(socket, plant, stop, counters, period))
                .map_err(|e| serial("starting the scene thread", &e))?
        };
        Ok(Self {
            device,
            scene_addr,
            scene: counters,
            board: Some(board),
            plant,
            stop,
            scene_thread: Some(scene_thread),
            _keep: keep,
        })
    }

    /// The board loop's newest report.
    pub fn report(&self) -> BoardReport {
        self.board.as_ref().map(|b| b.report()).unwrap_or_default()
    }

    /// Reboots the board (a fresh controller; the arm as it is).
    pub fn reboot(&self) {
        if let Some(b) = &self.board {
            b.reboot();
        }
    }

    /// Physics steps run so far.
    pub fn physics_steps(&self) -> u64 {
        self.plant.lock().map_or(0, |p| p.steps)
    }

    /// The simulated joints now, radians (ground truth, for tests).
    pub fn joint_positions(&self) -> [f64; ARM_DOF] {
        let p = self.plant.lock().unwrap_or_else(|e| e.into_inner());
        let mut q = [0.0; ARM_DOF];
        let mut qd = [0.0; ARM_DOF];
        p.env.world().read_joints(&mut q, &mut qd);
        q
    }

    /// Ground truth for evaluating a run (never sent to the host): the task's objects' poses.
    pub fn object_positions(&self) -> Vec<[f64; 3]> {
        let p = self.plant.lock().unwrap_or_else(|e| e.into_inner());
        let w = p.env.world();
        w.objects.iter().map(|&h| w.body_pose(h).0).collect()
    }

    /// Stops the board and the scene; the board's last report.
    pub fn stop(mut self) -> BoardReport {
        self.shutdown()
    }

    fn shutdown(&mut self) -> BoardReport {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.scene_thread.take() {
            let _ = t.join();
        }
        self.board.take().map(|b| b.stop()).unwrap_or_default()
    }
}

impl Drop for FirmwareSim {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The scene side: poses to the newest subscriber at the tracker's rate, resets on request.
fn serve_scene(
    socket: UdpSocket,
    plant: Arc<Mutex<Plant>>,
    stop: Arc<AtomicBool>,
    counters: Arc<SceneCounters>,
    period: Duration,
) {
    let _ = socket.set_read_timeout(Some(Duration::from_millis(1)));
    let epoch = Instant::now();
    let mut peer: Option<SocketAddr> = None;
    let mut next = Instant::now();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let send_poses = |to: SocketAddr| {
        let msg = {
            let p = plant.lock().unwrap_or_else(|e| e.into_inner());
            let w = p.env.world();
            let objects = p
                .env
                .task()
                .objects
                .iter()
                .zip(&w.objects)
                .map(|(o, &h)| {
                    let (position_m, quat_xyzw) = w.body_pose(h);
                    TrackedPose {
                        name: o.name.clone(),
                        position_m,
                        quat_xyzw,
                    }
                })
                .collect();
            SceneMsg::Objects {
                v: SCENE_PROTOCOL,
                stamp_ns: epoch.elapsed().as_nanos() as u64,
                objects,
            }
        };
        if socket.send_to(&msg.to_bytes(), to).is_ok() {
            counters.poses_sent.fetch_add(1, Ordering::Relaxed);
        }
    };
    while !stop.load(Ordering::Acquire) {
        if let Ok((n, from)) = socket.recv_from(&mut buf) {
            match SceneMsg::parse(&buf[..n]) {
                Ok(SceneMsg::Subscribe { .. }) => peer = Some(from),
                Ok(SceneMsg::Reset { id, seed, .. }) => {
                    let answer = {
                        let mut p = plant.lock().unwrap_or_else(|e| e.into_inner());
                        let r = p.env.reset(seed).map(|_| p.env.goals().to_vec());
                        p.braked = None;
                        r
                    };
                    let reply = match answer {
                        Ok(goals) => {
                            counters.resets.fetch_add(1, Ordering::Relaxed);
                            tracing::info!(seed, "scene reset");
                            SceneMsg::ResetDone {
                                v: SCENE_PROTOCOL,
                                id,
                                goals,
                            }
                        }
                        Err(e) => SceneMsg::ResetFailed {
                            v: SCENE_PROTOCOL,
                            id,
                            error: e.to_string(),
                        },
                    };
                    let _ = socket.send_to(&reply.to_bytes(), from);
                    send_poses(from);
                }
                Ok(other) => {
                    counters.refused.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%from, ?other, "scene message for a host, refused");
                }
                Err(e) => {
                    counters.refused.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%from, "scene datagram refused: {e}");
                }
            }
        }
        if Instant::now() >= next {
            next += period;
            if let Some(to) = peer {
                send_poses(to);
            }
        }
    }
}
