//! The ROS 2 jobs: the simulator served as a ros2_control arm (`reflex ros sim-arm`), the
//! runtime driving any ros2_control arm through the bridge (`reflex ros run`), and the
//! training job on such an arm (`reflex ros train`, through [`RosArms`]).
//!
//! `ros run` builds the same runtime as `reflex run`, over a [`RosRobot`] instead of the
//! simulator: the task file gives the policy rate, action space, limits and the scene's
//! objects and keypoints (poses come from the arm's tracker topic); the bridge's parameters
//! tighten the limits and are checked against the URDF's at start. A pixel run's base (a
//! `base.safetensors` with `base_encoder.safetensors` beside it) sees the bridge's camera topics
//! through a camera thread ([`crate::pixel_deploy`]) instead of the tracked objects.
//!
//! [`detect`] (`reflex ros detect`) is the success detector node: a success classifier on a
//! camera topic, publishing its verdicts on the topic the bridge's `success_topic` names, so an
//! arm without an object tracker has its episodes judged unattended.

use crate::arms::runtime_config;
pub use crate::arms::scene_spec;
use crate::train::INTERRUPT;
use reflex_core::{Action, JointCommand, Policy, Pose, Robot, SceneView};
use reflex_policy::ObsLayout;
use reflex_ros::arm_server::{serve, ArmServerSettings, ArmServerStats, ServedArm};
use reflex_ros::operator::OperatorMapper;
use reflex_ros::{BridgeParams, Reader, RosArgs, RosRobot};
use reflex_runtime::{
    EStop, ResidualPolicy, Runtime, RuntimeConfig, RuntimeSettings, RuntimeStats,
};
use reflex_sim::{Env, SimRobot, Task, TaskJudge};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub mod detect;

/// Why a ROS 2 job failed; names the part, parameter or file.
#[derive(Debug, thiserror::Error)]
pub enum RosJobError {
    /// A bad argument or parameter.
    #[error("{0}")]
    Setting(String),
    /// The bridge failed.
    #[error(transparent)]
    Bridge(#[from] reflex_ros::BridgeError),
    /// The simulator failed.
    #[error("simulator: {0}")]
    Sim(#[from] reflex_sim::SimError),
    /// A policy file was refused.
    #[error(transparent)]
    Policy(#[from] reflex_policy::PolicyFileError),
    /// The runtime refused its configuration or the robot did not start.
    #[error(transparent)]
    Runtime(#[from] reflex_runtime::RuntimeError),
}

fn setting(e: impl std::fmt::Display) -> RosJobError {
    RosJobError::Setting(e.to_string())
}

/// The simulator as a [`ServedArm`]: the runtime's `SimRobot` stepped by the server's clock;
/// the scene resets with seeds `seed`, `seed + 1`, ...
pub struct SimServedArm {
    robot: SimRobot,
    seed: u64,
    space: reflex_core::ActionSpace,
    ticks_per_step: u64,
    tick: u64,
    success: bool,
}

impl SimServedArm {
    /// `task` at a control rate of `rate_hz`, first scene from `seed`.
    pub fn new(task: &Task, rate_hz: f64, seed: u64) -> Result<Self, RosJobError> {
        let mut env = Env::new(task.clone())?;
        env.reset(seed)?;
        Ok(Self {
            space: task.action_space,
            ticks_per_step: (rate_hz / task.control_rate_hz).round().max(1.0) as u64,
            robot: SimRobot::new(env, rate_hz)?,
            seed,
            tick: 0,
            success: false,
        })
    }
}

impl ServedArm for SimServedArm {
    fn joint_names(&self) -> Vec<String> {
        let model = self.robot.env().model();
        let mut names = model.joint_names.to_vec();
        if let Some(g) = &model.gripper {
            names.extend(g.finger_joints.iter().cloned());
        }
        names
    }

    fn finger_count(&self) -> usize {
        self.robot.env().model().gripper.as_ref().map_or(0, |_| 2)
    }

    fn hold_command(&self) -> JointCommand {
        let mut s = reflex_core::RobotState::default();
        self.robot.env().read_robot_state(&mut s);
        JointCommand {
            joint_pos_rad: s.joint_pos_rad,
            gripper_width_m: s.gripper_width_m,
        }
    }

    fn step(&mut self, command: &JointCommand, pos: &mut [f64], vel: &mut [f64], eff: &mut [f64]) {
        let _ = self.robot.write_command(command);
        let mut s = reflex_core::RobotState::default();
        let _ = self.robot.read_state(&mut s);
        let n = reflex_core::ARM_DOF;
        pos[..n].copy_from_slice(&s.joint_pos_rad);
        vel[..n].copy_from_slice(&s.joint_vel_rad_s);
        eff[..n].copy_from_slice(&s.joint_torque_nm);
        if pos.len() > n {
            let (fp, fv) = self.robot.env().world().read_fingers();
            for k in 0..pos.len() - n {
                pos[n + k] = fp[k];
                vel[n + k] = fv[k];
                eff[n + k] = 0.0;
            }
        }
        self.tick += 1;
        if self.tick.is_multiple_of(self.ticks_per_step) {
            // The task's judgement at its own rate (ground truth, published as privileged).
            let step = self.robot.env_mut().conclude(&Action::zeros(self.space));
            self.success = step.info.success;
        }
    }

    fn objects(&self, out: &mut Vec<(String, Pose)>) {
        let mut tracked = Vec::new();
        SceneView::objects(&self.robot, &mut tracked);
        out.extend(
            tracked
                .into_iter()
                .map(|o| (o.name, Pose::from_isometry(&o.pose))),
        );
    }

    fn privileged_success(&mut self) -> bool {
        self.success
    }

    fn cameras(&self) -> Vec<String> {
        SceneView::cameras(&self.robot)
    }

    fn render(&mut self, camera: &str, frame: &mut reflex_core::Frame) -> bool {
        SceneView::render(&self.robot, camera, frame).is_ok()
    }

    fn reset(&mut self) -> Result<String, String> {
        self.seed += 1;
        self.robot.reset(self.seed).map_err(|e| e.to_string())?;
        self.tick = 0;
        self.success = false;
        Ok(format!("seed {}", self.seed))
    }
}

/// `reflex ros sim-arm`: what to serve.
#[derive(Clone, Debug)]
pub struct SimArmSpec {
    /// The task.
    pub task: Task,
    /// Control rate, Hz.
    pub rate_hz: f64,
    /// Seed of the first scene.
    pub seed: u64,
    /// Object poses (`/tf`) and success are published at this rate, Hz (a tracker's rate).
    pub scene_rate_hz: f64,
    /// Camera images are published at this rate, Hz (0: none).
    pub camera_rate_hz: f64,
    /// Camera images are this many pixels square.
    pub camera_size: usize,
    /// How long, seconds (None: until interrupted).
    pub seconds: Option<f64>,
    /// The ROS arguments (`-r __node:=`, `-p domain_id:=`, `--params-file`).
    pub ros: RosArgs,
}

/// A node's name (from `-r __node:=`, else `default_name`), namespace (`-r __ns:=`, else `/`)
/// and bridge parameters (its files and `-p`, the built-in URDF by default, remaps applied),
/// and whether `base_frame` was given.
fn node_params(
    ros: &RosArgs,
    default_name: &str,
) -> Result<(String, String, BridgeParams, bool), RosJobError> {
    let name = ros.node_name.clone().unwrap_or_else(|| default_name.into());
    let namespace = ros.namespace.clone().unwrap_or_else(|| "/".into());
    let fq = format!("{}/{}", namespace.trim_end_matches('/'), name);
    let mut r = Reader::new(ros.parameters(&fq).map_err(setting)?);
    let base_frame_set = r.is_set("base_frame");
    let mut params =
        BridgeParams::read_with_urdf(&mut r, &reflex_sim::default_urdf_path()).map_err(setting)?;
    r.finish().map_err(setting)?;
    params.apply_remaps(ros);
    Ok((name, namespace, params, base_frame_set))
}

/// Serves the simulated arm until the time is up or the interrupt flag is raised.
pub fn sim_arm(spec: &SimArmSpec) -> Result<Arc<ArmServerStats>, RosJobError> {
    let (node_name, namespace, mut params, base_frame_set) =
        node_params(&spec.ros, "reflex_sim_arm")?;
    let mut arm = SimServedArm::new(&spec.task, spec.rate_hz, spec.seed)?;
    if !base_frame_set {
        // Object poses are published in the arm's root link unless told otherwise.
        params.base_frame = arm.robot.env().model().base_link.clone();
    }
    let settings = ArmServerSettings {
        node_name,
        namespace,
        params,
        rate_hz: spec.rate_hz,
        scene_rate_hz: spec.scene_rate_hz,
        camera_rate_hz: spec.camera_rate_hz,
        camera_size: (spec.camera_size, spec.camera_size),
    };
    let stats = Arc::new(ArmServerStats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let timer = spec.seconds.map(|s| {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let end = std::time::Instant::now() + Duration::from_secs_f64(s);
            while std::time::Instant::now() < end && !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(20));
            }
            stop.store(true, Ordering::Release);
        })
    });
    let watcher = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if INTERRUPT.load(Ordering::Relaxed) {
                    stop.store(true, Ordering::Release);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let served = serve(&mut arm, &settings, &stop, &stats);
    stop.store(true, Ordering::Release);
    let _ = watcher.join();
    if let Some(t) = timer {
        let _ = t.join();
    }
    served?;
    Ok(stats)
}

/// `reflex ros run`: what to run.
#[derive(Clone, Debug)]
pub struct RosRunSpec {
    /// The task (its file gives rates, action space, limits and the scene).
    pub task: Task,
    /// `scripted` or a base policy file.
    pub policy: String,
    /// A residual policy file.
    pub residual: Option<PathBuf>,
    /// The loop rate, Hz.
    pub servo_rate_hz: f64,
    /// Stop after this many completed episodes (0: no limit).
    pub episodes: usize,
    /// Stop after this long, seconds (None: until the interrupt flag).
    pub seconds: Option<f64>,
    /// The ROS arguments.
    pub ros: RosArgs,
}

/// What a `ros run` session did.
pub struct RosRunResult {
    /// Success of every completed episode.
    pub episodes: Vec<bool>,
    /// The loop's statistics.
    pub stats: Arc<RuntimeStats>,
    /// The bridge's counters.
    pub bridge: Arc<reflex_ros::BridgeStats>,
    /// Whether the arm came to rest at the end.
    pub rested: bool,
    /// A pixel policy's camera thread: stacks published to the policy, polls refused (some
    /// camera missing or stale). None for a policy on state.
    pub camera_stacks: Option<(u64, u64)>,
}

/// The task's judge for an arm with `params`: none when the task has objects and the arm
/// tracks none (`objects_source: none`), since it would judge poses nobody reports (a cube
/// never lifted, distances to the origin). The success topic (an operator's button, a
/// detector) is then the only verdict, and steps carry no reward of the task's.
pub fn task_judge(task: &Task, params: &BridgeParams) -> Option<TaskJudge> {
    (!tracker_missing(task, params)).then(|| TaskJudge::new(task))
}

/// Whether `task` needs object poses that an arm with `params` does not report.
pub fn tracker_missing(task: &Task, params: &BridgeParams) -> bool {
    !task.objects.is_empty() && params.objects_source == reflex_ros::params::ObjectsSource::None
}

/// A bridge robot for `task` as `ros`'s parameters say (node `default_name` unless renamed),
/// its steps judged by the task over the tracked objects ([`task_judge`]; without a tracker,
/// by the success topic alone), obeying `estop`; with its parameters
/// and the observation layout a policy must match (the task's, read from the simulator's
/// scene description: no simulation runs).
pub fn connect_arm(
    task: &Task,
    ros: &RosArgs,
    default_name: &str,
    estop: EStop,
) -> Result<(RosRobot, BridgeParams, ObsLayout), RosJobError> {
    let (node_name, namespace, params, _) = node_params(ros, default_name)?;
    let scene = crate::arms::TaskScene::of(task)?;
    let mut robot = RosRobot::connect(
        &params,
        &node_name,
        &namespace,
        scene_spec(task, &scene.goals),
        estop,
    )?;
    match task_judge(task, &params) {
        Some(j) => robot.set_judge(Box::new(j)),
        None if params.success_topic.is_empty() => tracing::warn!(
            "task `{}` is judged over tracked objects and this arm has none (parameter \
             objects_source: none) and no success_topic: no episode will be judged a success \
             (an operator's button or `reflex ros detect` can be the success_topic)",
            task.name
        ),
        None => tracing::info!(
            "no object tracker: successes come from `{}` alone",
            params.success_topic
        ),
    }
    Ok((robot, params, scene.layout))
}

/// The runtime over a bridge robot: the task's limits tightened by the bridge's parameters,
/// 10 s to wait for the arm's first state, the runtime's counters on the bridge's diagnostics.
#[allow(clippy::too_many_arguments)]
pub fn arm_runtime(
    task: &Task,
    robot: RosRobot,
    params: &BridgeParams,
    base: Box<dyn Policy + Send>,
    residual: Option<ResidualPolicy>,
    residual_scale: f32,
    servo_rate_hz: f64,
    estop: EStop,
) -> Result<Runtime<RosRobot>, RosJobError> {
    let model = robot.model().clone();
    let mut cfg: RuntimeConfig = runtime_config(
        task,
        &model,
        servo_rate_hz,
        &RuntimeSettings {
            start_timeout_s: 10.0,
            residual_scale,
            ..Default::default()
        },
    );
    tighten(&mut cfg, params);
    let rt = Runtime::new(robot, cfg, model, base, residual, estop)?;
    rt.robot().attach_runtime_stats(rt.stats().clone());
    Ok(rt)
}

/// Drives the arm named by `spec.ros`'s parameters through the bridge.
pub fn ros_run(spec: &RosRunSpec) -> Result<RosRunResult, RosJobError> {
    let task = &spec.task;
    let estop = EStop::new();
    let (robot, params, layout) = connect_arm(task, &spec.ros, "reflex", estop.clone())?;
    let model = robot.model().clone();
    let mut pump = None;
    let (base, residual, residual_scale): (Box<dyn Policy + Send>, _, _) =
        if crate::pixel_deploy::is_pixel_file(Path::new(&spec.policy)) {
            let (px, cameras) = pixel_deploy(task, &robot, spec)?;
            pump = Some(cameras);
            (
                Box::new(px.base),
                px.residual,
                px.residual_scale.unwrap_or(0.3),
            )
        } else {
            let p = crate::run::load_policies(
                task,
                &model,
                layout,
                &spec.policy,
                spec.residual.as_deref(),
                None,
                Some(spec.servo_rate_hz),
                spec.servo_rate_hz,
            )
            .map_err(setting)?;
            (p.base, p.residual, p.residual_scale)
        };
    let has_reset = !params.reset_service.is_empty();
    let mut rt = arm_runtime(
        task,
        robot,
        &params,
        base,
        residual,
        residual_scale,
        spec.servo_rate_hz,
        estop.clone(),
    )?;
    rt.robot()
        .attach_operator(rt.operator().clone(), operator_mapper(task, &params));
    let stats = rt.stats().clone();
    let bridge = rt.robot().stats().clone();
    let transitions = rt.transitions().clone();
    let episodes_wanted = spec.episodes;
    // Without a limit, the loop runs until the interrupt flag presses the e-stop.
    let duration = Duration::from_secs_f64(spec.seconds.unwrap_or(3.0e7));
    type Control = Result<(Vec<bool>, bool), String>;
    let control = std::thread::Builder::new()
        .name("reflex-control".into())
        .spawn(move || -> Control {
            let mut episodes = Vec::new();
            let mut error = None;
            if has_reset {
                rt.reset_episode(0).map_err(|e| e.to_string())?;
            }
            rt.run(duration, true, |rt, outcome| {
                if rt.estop().is_latched() {
                    return false;
                }
                episodes.push(outcome.success);
                if episodes_wanted > 0 && episodes.len() >= episodes_wanted {
                    return false;
                }
                if has_reset {
                    if let Err(e) = rt.reset_episode(episodes.len() as u64) {
                        error = Some(e.to_string());
                        return false;
                    }
                }
                true
            });
            let rested = rt.shutdown((5.0 * rt.config().servo_rate_hz) as u64, true);
            match error {
                Some(e) => Err(e),
                None => Ok((episodes, rested)),
            }
        })
        .map_err(|e| RosJobError::Setting(format!("control thread: {e}")))?;
    while !control.is_finished() {
        std::thread::sleep(Duration::from_millis(50));
        if INTERRUPT.load(Ordering::Relaxed) && !estop.is_latched() {
            tracing::warn!("stopping: e-stop pressed, braking to rest");
            estop.press();
        }
        while transitions.pop().is_some() {}
    }
    let (episodes, rested) = control
        .join()
        .map_err(|_| RosJobError::Setting("the control thread panicked".into()))?
        .map_err(RosJobError::Setting)?;
    let camera_stacks = pump.map(|p| {
        (
            p.stats.published.load(Ordering::Relaxed),
            p.stats.refused.load(Ordering::Relaxed),
        )
    });
    Ok(RosRunResult {
        episodes,
        stats,
        bridge,
        rested,
        camera_stacks,
    })
}

/// A pixel run's policies for `ros run`, and the camera thread that feeds them from the
/// bridge's camera topics. The policy's cameras must be among the bridge's `cameras`; an image
/// older than the tightest of their `max_age_s` makes the arm hold.
fn pixel_deploy(
    task: &Task,
    robot: &RosRobot,
    spec: &RosRunSpec,
) -> Result<
    (
        crate::pixel_deploy::PixelPolicies,
        crate::pixel_deploy::CameraPump,
    ),
    RosJobError,
> {
    let feeds = robot.cameras_handle();
    let configured = feeds.names();
    let policy = Path::new(&spec.policy);
    // The policy's cameras first, from its metadata, to take their age limit.
    let (_, _, meta) = crate::pixel_deploy::load_pixel_net(policy)
        .map_err(|e| setting(format!("{}: {e}", policy.display())))?;
    let wanted: Vec<String> = meta
        .get("cameras")
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|c| c.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let mut max_age_s = f64::INFINITY;
    for c in &wanted {
        if !configured.contains(c) {
            return Err(setting(format!(
                "{}: the policy sees camera `{c}`, which parameter `cameras` does not list \
                 (it lists {configured:?}); add `cameras.{c}.image_topic` (a camera that moves \
                 with the arm needs no `pose_in_base`)",
                policy.display()
            )));
        }
        max_age_s = max_age_s.min(feeds.max_age_s(c).map_err(setting)?);
    }
    let mut px = crate::pixel_deploy::pixel_policies(
        &task.name,
        task.action_space.dim(),
        policy,
        spec.residual.as_deref(),
        (max_age_s * 1e9) as u64,
    )
    .map_err(setting)?;
    let writers = std::mem::take(&mut px.writers);
    let pump = crate::pixel_deploy::spawn_camera_pump(
        feeds,
        px.cameras.clone(),
        px.side,
        writers,
        Duration::from_millis(2),
    )
    .map_err(|e| setting(format!("camera thread: {e}")))?;
    tracing::info!(
        cameras = ?px.cameras,
        side = px.side,
        max_age_s,
        "pixel policy: the camera thread feeds it from the bridge's camera topics"
    );
    Ok((px, pump))
}

/// ros2_control arms through the bridge, for the training job ([`crate::train::train_on`]):
/// every robot is a new bridge node (the first named as the parameters say, later ones with
/// `_2`, `_3`, ... appended) whose steps are judged by the task's [`TaskJudge`] over the
/// tracked objects, with its own e-stop that the e-stop topic presses. Episodes start through
/// the reset service (required: the arm's own reset, or an operator's). Real time: every tick
/// is paced.
pub struct RosArms {
    task: Task,
    params: BridgeParams,
    node_name: String,
    namespace: String,
    rate_hz: f64,
    goals: Vec<[f64; 3]>,
    layout: ObsLayout,
    model: reflex_core::ArmModel,
    made: std::sync::atomic::AtomicUsize,
}

impl RosArms {
    /// The arm named by `ros`'s parameters, set up for `task`, with a loop at `rate_hz`.
    pub fn new(task: &Task, ros: &RosArgs, rate_hz: f64) -> Result<Self, RosJobError> {
        let (node_name, namespace, params, _) = node_params(ros, "reflex")?;
        if params.success_topic.contains("privileged") {
            return Err(RosJobError::Setting(format!(
                "parameter success_topic: {} is the simulator's ground truth, which may evaluate \
                 a run but not end a training episode; leave it empty (the task is judged over \
                 the tracked objects) or name an operator's or a detector's topic",
                params.success_topic
            )));
        }
        if tracker_missing(task, &params) && params.success_topic.is_empty() {
            return Err(RosJobError::Setting(format!(
                "parameter success_topic: task `{}` is judged over tracked objects and this arm \
                 has none (objects_source: none), so its evaluations need another verdict: name \
                 a std_msgs/Bool topic an operator's button or a success detector publishes on \
                 (`reflex ros detect --classifier DIR` publishes on /reflex/success)",
                task.name
            )));
        }
        if params.reset_service.is_empty() {
            return Err(RosJobError::Setting(
                "parameter reset_service: training needs a service that starts each episode \
                 (std_srvs/Trigger: the arm's or an operator's scene reset)"
                    .into(),
            ));
        }
        let model = reflex_core::ArmModel::from_urdf_file(
            &params.urdf,
            &params.base_link,
            &params.tcp_link,
        )
        .map_err(|e| RosJobError::Setting(format!("parameter urdf: {e}")))?;
        // The layout and goals come from the task's scene description (no simulation runs).
        let scene = crate::arms::TaskScene::of(task)?;
        Ok(Self {
            task: task.clone(),
            params,
            node_name,
            namespace,
            rate_hz,
            goals: scene.goals,
            layout: scene.layout,
            model,
            made: Default::default(),
        })
    }

    /// The bridge's parameters.
    pub fn params(&self) -> &BridgeParams {
        &self.params
    }
}

impl crate::arms::Arms for RosArms {
    type Robot = RosRobot;

    fn task(&self) -> &Task {
        &self.task
    }

    fn rate_hz(&self) -> f64 {
        self.rate_hz
    }

    fn make(
        &self,
        _seed: u64,
    ) -> Result<(RosRobot, reflex_core::ArmModel), crate::arms::ArmsError> {
        let n = self.made.fetch_add(1, Ordering::Relaxed);
        let name = if n == 0 {
            self.node_name.clone()
        } else {
            format!("{}_{}", self.node_name, n + 1)
        };
        let mut robot = RosRobot::connect(
            &self.params,
            &name,
            &self.namespace,
            scene_spec(&self.task, &self.goals),
            EStop::new(),
        )
        .map_err(|e| crate::arms::ArmsError::Robot(e.to_string()))?;
        if let Some(j) = task_judge(&self.task, &self.params) {
            robot.set_judge(Box::new(j));
        }
        let model = robot.model().clone();
        Ok((robot, model))
    }

    fn model(&self) -> Result<reflex_core::ArmModel, crate::arms::ArmsError> {
        Ok(self.model.clone())
    }

    fn obs_layout(&self) -> Result<ObsLayout, crate::arms::ArmsError> {
        Ok(self.layout)
    }

    fn real_time(&self) -> bool {
        true
    }

    fn estop_for(&self, robot: &RosRobot) -> EStop {
        robot.estop().clone()
    }

    fn configure(&self, cfg: &mut RuntimeConfig) {
        tighten(cfg, &self.params);
    }

    fn camera_source(
        &self,
        robot: &RosRobot,
    ) -> Option<Box<dyn crate::pixel_deploy::ColourSource>> {
        Some(Box::new(robot.cameras_handle()))
    }

    fn attach(&self, rt: &Runtime<RosRobot>) {
        rt.robot().attach_runtime_stats(rt.stats().clone());
        rt.robot().attach_operator(
            rt.operator().clone(),
            operator_mapper(&self.task, &self.params),
        );
    }
}

/// `reflex ros train`: the training job ([`crate::train::train_on`]) on the arm `ros` names,
/// with the task's reward judged over the tracked objects (or `reward`'s). The loop runs at
/// `cfg.runtime.servo_rate_hz`; the runtime waits up to 10 s for the arm's first joint state.
pub fn ros_train(
    cfg: &crate::train::TrainConfig,
    ros: &RosArgs,
    out: &Path,
    resume: bool,
    reward: Option<reflex_learn::stage::RewardPlugin>,
    progress: impl FnMut(crate::train::Progress),
) -> Result<crate::train::Summary, crate::train::TrainError> {
    let task = Task::load(&cfg.task).map_err(crate::train::config::stage("task"))?;
    let arms = RosArms::new(&task, ros, cfg.runtime.servo_rate_hz)
        .map_err(crate::train::config::stage("ROS 2 arm"))?;
    if tracker_missing(&task, &arms.params) {
        tracker_less_training(&task, cfg, reward.as_ref())
            .map_err(crate::train::config::stage("ROS 2 arm"))?;
    }
    crate::train::train_on(&arms, cfg, out, resume, reward, progress)
}

/// What training on an arm without the object tracker `task` is judged over needs: pictures
/// instead of object poses, demonstrations from recorded sessions instead of the scripted
/// expert (which plans from the poses), and a reward source instead of the task's reward.
fn tracker_less_training(
    task: &Task,
    cfg: &crate::train::TrainConfig,
    reward: Option<&reflex_learn::stage::RewardPlugin>,
) -> Result<(), String> {
    let why = format!(
        "task `{}` is judged over tracked objects and this arm has none (parameter \
         objects_source: none)",
        task.name
    );
    if cfg.obs != crate::train::config::ObsMode::Pixels {
        return Err(format!(
            "{why}: a policy on state would see no objects; train from the cameras \
             (--obs pixels)"
        ));
    }
    if cfg.demo_sessions.is_empty() {
        return Err(format!(
            "{why}: the scripted expert plans from object poses; give recorded sessions as \
             demonstrations (`demo_sessions`, from `reflex teleop --robot ros --record \
             DIR`)"
        ));
    }
    if reward.is_none() {
        return Err(format!(
            "{why}: the task's reward is computed over the poses; take it from the success \
             topic (--reward sparse) or a success classifier (--reward classifier)"
        ));
    }
    Ok(())
}

/// How an operator's twist and joy messages become actions for `task`.
pub fn operator_mapper(task: &Task, params: &BridgeParams) -> OperatorMapper {
    OperatorMapper::new(
        task.action_space,
        task.control.max_linear_speed_m_s,
        task.control.max_angular_speed_rad_s,
        &params.base_frame,
        params.joy.clone(),
    )
}

/// Applies the bridge's tighter limits: the tighter of the task's and the parameter's wins.
pub fn tighten(cfg: &mut RuntimeConfig, params: &BridgeParams) {
    // One value per real arm joint (the bridge checked the count against the URDF).
    let l = &mut cfg.limits;
    if let Some(v) = &params.joint_pos_min_rad {
        for (l, v) in l.joint_pos_min_rad.iter_mut().zip(v) {
            *l = l.max(*v);
        }
    }
    if let Some(v) = &params.joint_pos_max_rad {
        for (l, v) in l.joint_pos_max_rad.iter_mut().zip(v) {
            *l = l.min(*v);
        }
    }
    if let Some(v) = &params.joint_vel_max_rad_s {
        for (l, v) in l.joint_vel_max_rad_s.iter_mut().zip(v) {
            *l = l.min(*v);
        }
    }
}

/// The rclpy peers of `reflex bench ros`.
pub fn bench_peer_script() -> PathBuf {
    reflex_sim::task::repo_root().join("tests/interop/ros_bench_peer.py")
}
