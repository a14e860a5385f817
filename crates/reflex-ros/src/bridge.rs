//! [`RosRobot`]: a ros2_control arm behind the [`Robot`] trait, over pure-Rust DDS
//! (ros2-client + rustdds) or, with `backend: r2r`, the sourced ROS 2's rcl.
//!
//! The ROS side runs on its own executor thread, which owns the node's endpoints (made by a
//! [`Transport`]) and drains and publishes them.
//! It exchanges wait-free latest-value cells (triple buffers) with the control tick: the newest
//! valid joint state (converted, matched by name, forward kinematics done) in one direction,
//! the newest command in the other, and wakes on a `mio` waker when the tick writes. The tick
//! never waits on DDS and never allocates.
//!
//! Every malformed message is refused and counted, never passed on: unknown or missing joint
//! names, wrong vector lengths, out-of-order stamps. A non-finite joint state is passed on as
//! `RobotError::NonFinite` (the loop holds at once); a state older than `state_timeout_s` is
//! `Stale` (the loop holds, then brakes, as in simulation).

use crate::camera::CameraFeed;
use crate::decode::{JointStateDecoder, Refused};
use crate::msg::{
    Bool, CameraInfo, DiagnosticArray, DiagnosticStatus, Float64MultiArray, Header, Image,
    JointState, JointTrajectory, JointTrajectoryPoint, Joy, KeyValue, MultiArrayDimension,
    MultiArrayLayout, PoseArray, RosDuration, RosType, TfMessage, Time, TriggerResponse,
    TwistStamped,
};
use crate::operator::{OperatorMapper, OperatorRefused};
use crate::params::{Backend, BridgeParams, CommandInterface, ObjectsSource};
use crate::transport::{Dds, Inbox, Outbox, Qos, Transport, TriggerClient, TriggerServer};
use nalgebra::{Quaternion as NQuat, UnitQuaternion};
use reflex_core::{
    spsc, Frame, LatestSender, SceneError, SceneSpec, SceneView, SpscReceiver, SpscSender,
    StepJudge, TrackedObject,
};
use reflex_core::{
    Action, ArmModel, JointCommand, JointLimits, ObjectState, Observation, OperatorCommand,
    Outcome, Pose, Robot, RobotError, RobotHealth, RobotState, SceneReset, StartError, ARM_DOF,
    MAX_GOALS, MAX_KEYPOINTS, MAX_OBJECTS,
};
use reflex_runtime::{EStop, Histogram, RuntimeStats};
use ros2_client::qos::{Durability, History, WhenFull};
use ros2_client::{Context, MessageTypeName, Name, Node, NodeName, NodeOptions, QosProfile};
use rustdds::mio1::{Events, Poll, Token, Waker};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use triple_buffer::{triple_buffer, Input, Output};

/// Why the bridge could not start; names the part.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    /// The URDF could not be read or lacks the chain.
    #[error("urdf: {0}")]
    Model(String),
    /// A parameter does not fit the URDF or the task.
    #[error("parameter `{name}`: {message}")]
    Param {
        /// The parameter.
        name: &'static str,
        /// What is wrong.
        message: String,
    },
    /// DDS refused to create an entity.
    #[error("DDS: {0}")]
    Dds(String),
}

/// Counters of everything the bridge saw, refused and sent (shared with `/diagnostics`).
#[derive(Debug, Default)]
pub struct BridgeStats {
    /// Joint states accepted.
    pub states: AtomicU64,
    /// Joint states refused: a configured joint missing.
    pub states_missing_joint: AtomicU64,
    /// Joint states refused: vector lengths that do not match the names.
    pub states_bad_length: AtomicU64,
    /// Joint states with a non-finite value (passed on as `NonFinite`).
    pub states_non_finite: AtomicU64,
    /// Joint states refused: stamped before the last accepted one.
    pub states_out_of_order: AtomicU64,
    /// Joint states superseded by a newer one before the tick read them.
    pub states_superseded: AtomicU64,
    /// Zero velocities sent because the loop's commands stopped for `command_timeout_s`
    /// (velocity controllers only).
    pub velocity_zeroed: AtomicU64,
    /// Judged steps published on the reward topic.
    pub rewards_published: AtomicU64,
    /// Judged steps not published: the queue to the executor was full.
    pub rewards_dropped: AtomicU64,
    /// Ticks that found the state stale.
    pub stale_reads: AtomicU64,
    /// Commands published.
    pub commands: AtomicU64,
    /// Commands DDS refused to send.
    pub command_failures: AtomicU64,
    /// Object pose messages accepted.
    pub object_updates: AtomicU64,
    /// Object pose messages refused (wrong frame, count or a non-finite pose).
    pub objects_refused: AtomicU64,
    /// E-stop messages (presses and releases).
    pub estop_messages: AtomicU64,
    /// Messages of any topic that could not be decoded (dropped).
    pub undecodable: AtomicU64,
    /// Re-arm requests answered.
    pub rearm_requests: AtomicU64,
    /// Operator messages (twist or joy) passed to the runtime.
    pub operator_messages: AtomicU64,
    /// Operator messages refused (wrong frame, non-finite, missing axis, joint-space task, or
    /// before the runtime was attached).
    pub operator_refused: AtomicU64,
    /// Scene resets done through the reset service.
    pub resets: AtomicU64,
    /// Diagnostics published.
    pub diagnostics: AtomicU64,
    /// For a loop on the arm's clock ([`RosRobot::notify_on_state`]): from the executor taking
    /// a joint state to the command that answered it going out (decoding, waking the loop, its
    /// tick, encoding and handing the command to the client library).
    pub answer: Histogram,
}

#[derive(Clone, Copy, Debug, Default)]
struct StateSample {
    state: RobotState,
    received_ns: u64,
    seq: u64,
    non_finite: bool,
}

#[derive(Clone, Copy, Debug, Default)]
struct CommandSample {
    command: JointCommand,
    /// Joint velocities for a velocity controller (zeros otherwise).
    velocity: [f64; ARM_DOF],
    seq: u64,
    /// The last command of the session: publish it, then leave.
    last: bool,
}

#[derive(Clone, Copy, Debug, Default)]
struct SceneSample {
    objects: [ObjectState; MAX_OBJECTS],
    /// Bit i: object i has been seen.
    seen: u32,
    received_ns: u64,
}

struct ResetRequest {
    done: mpsc::Sender<Result<String, String>>,
}

/// How long the executor waits for the answer of a loop on the arm's clock to a joint state.
const ANSWER_WAIT: Duration = Duration::from_micros(500);

/// Judged steps that may wait for the executor to publish them on the reward topic.
const REWARD_QUEUE: usize = 256;

/// The poll token of the tick's waker (a transport's readers take the ones above it).
const WAKER: Token = Token(0);

/// The DDS participant for `params`: restricted to loopback when `localhost_only`.
pub fn context(params: &BridgeParams) -> Result<Context, BridgeError> {
    participant(params.domain_id, params.localhost_only)
}

/// A DDS participant on `domain_id`: restricted to loopback when `localhost_only` (what every
/// Reflex node uses: the bridge, the simulated arm, the success detector).
pub fn participant(domain_id: u16, localhost_only: bool) -> Result<Context, BridgeError> {
    let mut b = rustdds::DomainParticipantBuilder::new(domain_id);
    if localhost_only {
        b = b.with_only_networks([std::net::Ipv4Addr::LOCALHOST]);
    }
    let dp = b.build().map_err(|e| BridgeError::Dds(e.to_string()))?;
    Context::from_domain_participant(dp).map_err(|e| BridgeError::Dds(e.to_string()))
}

/// A node named `namespace`/`name` on `ctx`, without rosout (errors name the node).
pub fn node(ctx: &Context, namespace: &str, name: &str) -> Result<Node, BridgeError> {
    let full = NodeName::new(namespace, name)
        .map_err(|e| BridgeError::Dds(format!("node name `{namespace}` `{name}`: {e:?}")))?;
    ctx.new_node(full, NodeOptions::new().enable_rosout(false))
        .map_err(|e| BridgeError::Dds(format!("node `{name}`: {e:?}")))
}

/// A topic or service name as ROS 2 writes it, split for ros2-client (`/a/b` -> `/a`, `b`).
pub fn ros_name(full: &str) -> Result<Name, BridgeError> {
    let (ns, base) = match full.rsplit_once('/') {
        Some(("", base)) => ("/", base),
        Some((ns, base)) => (ns, base),
        None => ("", full),
    };
    Name::new(ns, base).map_err(|e| BridgeError::Dds(format!("name `{full}`: {e:?}")))
}

/// QoS of sensor-like streams (joint states, object poses): reliable writers match, and only
/// the newest few samples matter.
pub fn qos_stream() -> QosProfile {
    QosProfile::subscription_default()
        .reliability_best_effort()
        .durability(Durability::Volatile)
        .history(History::KeepLast { depth: 10 })
}

/// QoS of commands: reliable (what `forward_command_controller` subscribes with), newest only,
/// and never waiting for a full send window.
pub fn qos_command() -> QosProfile {
    QosProfile::publisher_default()
        .reliability_reliable(WhenFull::Fail)
        .durability(Durability::Volatile)
        .history(History::KeepLast { depth: 1 })
}

/// QoS of latched operator state (the e-stop): reliable and transient-local, so a late joiner
/// sees whether the button is down.
pub fn qos_latched() -> QosProfile {
    QosProfile::publisher_default()
        .reliability_reliable(WhenFull::Wait(Duration::from_millis(10)))
        .durability(Durability::TransientLocal)
        .history(History::KeepLast { depth: 1 })
}

/// QoS of services (the ROS 2 default).
pub fn qos_service() -> QosProfile {
    QosProfile::publisher_default()
        .reliability_reliable(WhenFull::Wait(Duration::from_millis(100)))
        .durability(Durability::Volatile)
        .history(History::KeepLast { depth: 10 })
}

/// A topic of message type `M` on `node`.
pub fn topic<M: RosType>(
    node: &Node,
    name: &str,
    qos: &QosProfile,
) -> Result<ros2_client::dds::rustdds::Topic, BridgeError> {
    node.create_topic(
        &ros_name(name)?,
        MessageTypeName::new(M::PACKAGE, M::NAME),
        qos,
    )
    .map_err(|e| BridgeError::Dds(format!("topic `{name}`: {e:?}")))
}

/// A reader of `M` on topic `name` (errors name the topic).
pub fn subscribe<M: RosType + 'static>(
    node: &mut Node,
    name: &str,
    qos: QosProfile,
) -> Result<ros2_client::Subscription<M>, BridgeError> {
    let t = topic::<M>(node, name, &qos)?;
    node.create_subscription::<M>(&t, Some(qos))
        .map_err(|e| BridgeError::Dds(format!("reader on `{name}`: {e:?}")))
}

/// A reader of `M` on topic `name`, or none when `name` is empty (a topic turned off).
pub fn subscribe_if<M: RosType + 'static>(
    node: &mut Node,
    name: &str,
    qos: QosProfile,
) -> Result<Option<ros2_client::Subscription<M>>, BridgeError> {
    if name.is_empty() {
        return Ok(None);
    }
    subscribe(node, name, qos).map(Some)
}

/// A writer of `M` on topic `name` (errors name the topic).
pub fn advertise<M: RosType + serde::Serialize>(
    node: &mut Node,
    name: &str,
    qos: QosProfile,
) -> Result<ros2_client::Publisher<M>, BridgeError> {
    let t = topic::<M>(node, name, &qos)?;
    node.create_publisher::<M>(&t, Some(qos))
        .map_err(|e| BridgeError::Dds(format!("writer on `{name}`: {e:?}")))
}

/// Resolved joint bookkeeping.
#[derive(Clone, Debug)]
struct Joints {
    /// One per real arm joint (the model's `dof`), in command order.
    arm: Vec<String>,
    gripper: Vec<String>,
}

/// A ros2_control arm behind the [`Robot`] trait.
pub struct RosRobot {
    state_rx: Output<StateSample>,
    cmd_tx: Input<CommandSample>,
    scene_rx: Output<SceneSample>,
    waker: Arc<Waker>,
    epoch: Instant,
    state_timeout_ns: u64,
    cmd_seq: u64,
    last_command: JointCommand,
    model: ArmModel,
    spec: SceneSpec,
    steps: u64,
    success: Arc<AtomicBool>,
    stats: Arc<BridgeStats>,
    shutdown: Arc<AtomicBool>,
    executor: Option<JoinHandle<()>>,
    reset_tx: mpsc::Sender<ResetRequest>,
    has_reset: bool,
    runtime_stats: Arc<OnceLock<Arc<RuntimeStats>>>,
    connected: Arc<AtomicBool>,
    notify: Arc<StateNotify>,
    operator: Arc<OperatorSlot>,
    cameras: Arc<Mutex<Vec<CameraFeed>>>,
    scene_copy: Arc<Mutex<SceneSample>>,
    judge: Option<Box<dyn StepJudge>>,
    estop: EStop,
    reward_tx: SpscSender<(u64, Outcome)>,
    reward_label: Arc<OnceLock<String>>,
    /// Velocity controller: gain on the position error (None: a position interface).
    velocity_gain: Option<f64>,
    /// The last measured joint positions `read_state` handed out.
    measured: Option<[f64; ARM_DOF]>,
    /// When the last command was written (robot clock), for the setpoint's rate of change.
    last_command_ns: u64,
    /// Velocity commands stay within these (the URDF's, tightened by the loop's at start).
    velocity_limits: [f64; ARM_DOF],
    /// Object poses come from a tracker topic.
    tracks_objects: bool,
}

/// Where operator messages go once the runtime exists.
type OperatorSlot = OnceLock<(LatestSender<OperatorCommand>, OperatorMapper)>;

/// Who to wake when a joint state arrives, and the newest state's number.
#[derive(Default)]
struct StateNotify {
    thread: OnceLock<std::thread::Thread>,
    seq: AtomicU64,
}

impl RosRobot {
    /// Connects to the arm described by `params`: loads the URDF, creates the node `node_name`
    /// in `namespace`, its readers and writers, and starts the executor thread. `estop` is the
    /// one the runtime will obey: `/reflex/estop` presses and releases it, `/reflex/rearm`
    /// re-arms it. Returns at once; [`Robot::start`] waits for the first joint state.
    pub fn connect(
        params: &BridgeParams,
        node_name: &str,
        namespace: &str,
        spec: SceneSpec,
        estop: EStop,
    ) -> Result<Self, BridgeError> {
        let model = ArmModel::from_urdf_file(&params.urdf, &params.base_link, &params.tcp_link)
            .map_err(|e| BridgeError::Model(e.to_string()))?;
        let joints = resolve_joints(params, &model)?;
        if spec.objects.len() > MAX_OBJECTS
            || spec.keypoints.len() > MAX_KEYPOINTS
            || spec.goals.len() > MAX_GOALS
        {
            return Err(BridgeError::Param {
                name: "task",
                message: format!(
                    "at most {MAX_OBJECTS} objects, {MAX_KEYPOINTS} keypoints, {MAX_GOALS} goals"
                ),
            });
        }
        let frames = params
            .object_frames
            .clone()
            .unwrap_or_else(|| spec.objects.clone());
        if params.objects_source != ObjectsSource::None && frames.len() != spec.objects.len() {
            return Err(BridgeError::Param {
                name: "object_frames",
                message: format!(
                    "{} frames for the task's {} objects ({})",
                    frames.len(),
                    spec.objects.len(),
                    spec.objects.join(", ")
                ),
            });
        }

        let poll = Poll::new().map_err(|e| BridgeError::Dds(format!("poll: {e}")))?;
        let waker = Arc::new(
            Waker::new(poll.registry(), WAKER).map_err(|e| BridgeError::Dds(format!("{e}")))?,
        );
        let (state_tx, state_rx) = triple_buffer(&StateSample::default());
        let (cmd_tx, cmd_rx) = triple_buffer(&CommandSample::default());
        let (scene_tx, scene_rx) = triple_buffer(&SceneSample::default());
        let (reset_tx, reset_rx) = mpsc::channel();
        let epoch = Instant::now();
        let stats = Arc::new(BridgeStats::default());
        let shutdown = Arc::new(AtomicBool::new(false));
        let success = Arc::new(AtomicBool::new(false));
        let runtime_stats = Arc::new(OnceLock::new());
        let connected = Arc::new(AtomicBool::new(false));
        let notify = Arc::new(StateNotify::default());
        let operator = Arc::new(OperatorSlot::new());
        let cameras = Arc::new(Mutex::new(
            params
                .cameras
                .iter()
                .cloned()
                .map(CameraFeed::new)
                .collect::<Vec<_>>(),
        ));
        let scene_copy = Arc::new(Mutex::new(SceneSample::default()));
        let (reward_tx, reward_rx) = spsc(REWARD_QUEUE);
        let velocity_limits = std::array::from_fn(|j| model.limits[j].velocity);
        let tracks_objects =
            params.objects_source != ObjectsSource::None && !spec.objects.is_empty();
        let reward_label = Arc::new(OnceLock::new());
        let io = ExecutorIo {
            state_tx,
            cmd_rx,
            scene_tx,
            reset_rx,
            epoch,
            stats: stats.clone(),
            shutdown: shutdown.clone(),
            success: success.clone(),
            estop: estop.clone(),
            reward_rx,
            reward_label: reward_label.clone(),
            runtime_stats: runtime_stats.clone(),
            connected: connected.clone(),
            notify: notify.clone(),
            operator: operator.clone(),
            cameras: cameras.clone(),
            scene_copy: scene_copy.clone(),
        };
        let mut ex = match params.backend {
            Backend::Rustdds => {
                let ctx = context(params)?;
                let node = node(&ctx, namespace, node_name)?;
                let registry = poll
                    .registry()
                    .try_clone()
                    .map_err(|e| BridgeError::Dds(format!("poll: {e}")))?;
                let t = Dds::new(ctx, node, registry, stats.clone());
                Executor::new(t, poll, params, joints, frames, model.clone(), io)?
            }
            #[cfg(feature = "r2r")]
            Backend::R2r => {
                let t = crate::r2r_transport::R2r::new(
                    params,
                    node_name,
                    namespace,
                    waker.clone(),
                    stats.clone(),
                )?;
                Executor::new(t, poll, params, joints, frames, model.clone(), io)?
            }
            #[cfg(not(feature = "r2r"))]
            Backend::R2r => {
                return Err(BridgeError::Param {
                    name: "backend",
                    message: "r2r is not built in (the `r2r` feature)".into(),
                })
            }
        };
        let executor = std::thread::Builder::new()
            .name("reflex-ros".into())
            .spawn(move || ex.run())
            .map_err(|e| BridgeError::Dds(format!("executor thread: {e}")))?;
        Ok(Self {
            state_rx,
            cmd_tx,
            scene_rx,
            waker,
            epoch,
            state_timeout_ns: (params.state_timeout_s * 1e9) as u64,
            cmd_seq: 0,
            last_command: JointCommand::default(),
            model,
            spec,
            steps: 0,
            success,
            stats,
            shutdown,
            executor: Some(executor),
            reset_tx,
            has_reset: !params.reset_service.is_empty(),
            runtime_stats,
            connected,
            notify,
            operator,
            cameras,
            scene_copy,
            judge: None,
            estop,
            reward_tx,
            reward_label,
            velocity_gain: (params.command_interface == CommandInterface::ForwardVelocity)
                .then_some(params.velocity_gain),
            measured: None,
            last_command_ns: 0,
            velocity_limits,
            tracks_objects,
        })
    }

    /// The e-stop this bridge presses and releases from the e-stop topic and re-arms from the
    /// re-arm service: the one its runtime must obey.
    pub fn estop(&self) -> &EStop {
        &self.estop
    }

    /// Scores every policy step with `judge` (the task's reward and success over the tracked
    /// objects): without one, rewards are pending for a reward worker and only the success
    /// topic and the step limit end an episode.
    pub fn set_judge(&mut self, judge: Box<dyn StepJudge>) {
        let mut label = "step,reward,success,terminated,truncated".to_owned();
        for n in judge.term_names() {
            label.push(',');
            label.push_str(&n);
        }
        let _ = self.reward_label.set(label);
        self.judge = Some(judge);
    }

    /// Sends the operator's twist and joy messages, mapped by `mapper`, to the runtime's
    /// operator input (`Runtime::operator`). Set once; later calls are ignored.
    pub fn attach_operator(&self, sender: LatestSender<OperatorCommand>, mapper: OperatorMapper) {
        let _ = self.operator.set((sender, mapper));
    }

    /// Wakes `thread` (`Thread::unpark`) whenever a joint state arrives: a loop that runs on
    /// the arm's clock parks until then instead of keeping its own (see [`RosRobot::state_seq`]).
    /// Set once; later calls are ignored.
    pub fn notify_on_state(&self, thread: std::thread::Thread) {
        let _ = self.notify.thread.set(thread);
    }

    /// Number of joint states received so far (accepted or non-finite): it changes when a new
    /// one is ready.
    pub fn state_seq(&self) -> u64 {
        self.notify.seq.load(Ordering::Acquire)
    }

    /// The cameras, for a thread of their own (a pixel policy's camera thread).
    pub fn cameras_handle(&self) -> crate::camera::RosCameras {
        crate::camera::RosCameras::new(self.cameras.clone(), self.epoch)
    }

    /// The bridge's counters.
    pub fn stats(&self) -> &Arc<BridgeStats> {
        &self.stats
    }

    /// The arm model from the URDF.
    pub fn model(&self) -> &ArmModel {
        &self.model
    }

    /// Lets `/diagnostics` report the loop's figures too (call once the runtime exists).
    pub fn attach_runtime_stats(&self, stats: Arc<RuntimeStats>) {
        let _ = self.runtime_stats.set(stats);
    }

    /// Time since the bridge started, nanoseconds (the clock states are stamped with).
    fn clock_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    fn publish(&mut self, command: &JointCommand, last: bool) {
        let velocity = if last {
            [0.0; ARM_DOF]
        } else {
            self.velocity_for(command)
        };
        self.cmd_seq += 1;
        self.last_command = *command;
        self.cmd_tx.write(CommandSample {
            command: *command,
            velocity,
            seq: self.cmd_seq,
            last,
        });
        // A failed wake (never seen) leaves the executor to its 20 ms poll timeout.
        let _ = self.waker.wake();
    }
}

impl RosRobot {
    /// The joint velocities that track `command` on a velocity controller: the setpoint's rate
    /// of change since the last command plus the gain times the remaining error, each within
    /// the URDF's velocity limit; zeros for a position interface, and for anything non-finite.
    fn velocity_for(&mut self, command: &JointCommand) -> [f64; ARM_DOF] {
        let Some(gain) = self.velocity_gain else {
            return [0.0; ARM_DOF];
        };
        let now = self.clock_ns();
        let dt = now.saturating_sub(self.last_command_ns) as f64 * 1e-9;
        // A gap (the first command, a reset, a stalled loop) carries no rate of change.
        let feedforward = (self.last_command_ns > 0 && dt > 1e-4 && dt < 0.05).then_some(dt);
        self.last_command_ns = now;
        crate::decode::velocity_command(
            &command.joint_pos_rad,
            &self.last_command.joint_pos_rad,
            feedforward,
            self.measured.as_ref(),
            gain,
            &self.velocity_limits,
        )
    }
}

fn resolve_joints(params: &BridgeParams, model: &ArmModel) -> Result<Joints, BridgeError> {
    let arm = params
        .joint_names
        .clone()
        .unwrap_or_else(|| model.joint_names[..model.dof].to_vec());
    if arm.len() != model.dof {
        return Err(BridgeError::Param {
            name: "joint_names",
            message: format!(
                "{} names for the URDF's {}-joint arm ({})",
                arm.len(),
                model.dof,
                model.joint_names[..model.dof].join(", ")
            ),
        });
    }
    let gripper = match &params.gripper_joint_names {
        Some(g) => g.clone(),
        None => model
            .gripper
            .as_ref()
            .map(|g| g.finger_joints.to_vec())
            .unwrap_or_default(),
    };
    for (name, v) in [
        ("limits.joint_pos_min_rad", &params.joint_pos_min_rad),
        ("limits.joint_pos_max_rad", &params.joint_pos_max_rad),
        ("limits.joint_vel_max_rad_s", &params.joint_vel_max_rad_s),
    ] {
        if let Some(v) = v.as_ref().filter(|v| v.len() != model.dof) {
            return Err(BridgeError::Param {
                name,
                message: format!("{} values for the URDF's {}-joint arm", v.len(), model.dof),
            });
        }
    }
    let mut all: Vec<&String> = arm.iter().chain(&gripper).collect();
    all.sort();
    if let Some(w) = all.windows(2).find(|w| w[0] == w[1]) {
        return Err(BridgeError::Param {
            name: "joint_names",
            message: format!("joint `{}` is listed twice", w[0]),
        });
    }
    Ok(Joints { arm, gripper })
}

impl Robot for RosRobot {
    fn read_state(&mut self, state: &mut RobotState) -> Result<(), RobotError> {
        let sample = *self.state_rx.read();
        if sample.seq == 0 {
            return Err(RobotError::Stale);
        }
        let age = self.clock_ns().saturating_sub(sample.received_ns);
        if age > self.state_timeout_ns {
            self.stats.stale_reads.fetch_add(1, Ordering::Relaxed);
            return Err(RobotError::Stale);
        }
        if sample.non_finite {
            self.measured = None;
            return Err(RobotError::NonFinite);
        }
        *state = sample.state;
        self.measured = Some(sample.state.joint_pos_rad);
        Ok(())
    }

    fn write_command(&mut self, command: &JointCommand) -> Result<(), RobotError> {
        self.publish(command, false);
        Ok(())
    }

    fn now_ns(&self) -> u64 {
        self.clock_ns()
    }

    fn read_scene(&mut self, obs: &mut Observation) {
        let scene = *self.scene_rx.read();
        self.spec.fill(&scene.objects, obs);
    }

    /// The judge's outcome (pending without one); the step limit truncates; a message on the
    /// success topic (an operator's button, a detector) ends the episode as a success.
    fn judge(&mut self, obs: &Observation, action: &Action) -> Outcome {
        self.steps += 1;
        let truncated = self.spec.episode_steps > 0 && self.steps >= self.spec.episode_steps;
        let mut o = match &mut self.judge {
            Some(j) => j.judge(obs, action, truncated),
            None => Outcome {
                truncated,
                ..Outcome::PENDING
            },
        };
        if self.success.swap(false, Ordering::AcqRel) {
            o.success = true;
            o.terminated = true;
            o.truncated = false;
        }
        // For the reward topic; never waits (a full queue drops the step and counts it).
        if self.reward_tx.send((self.steps, o)).is_err() {
            self.stats.rewards_dropped.fetch_add(1, Ordering::Relaxed);
        }
        if o.done() {
            self.steps = 0;
        }
        o
    }

    fn begin_judging(&mut self, first: &Observation) {
        self.steps = 0;
        if let Some(j) = &mut self.judge {
            j.begin(first);
        }
    }

    fn own_limits(&self) -> Option<[JointLimits; ARM_DOF]> {
        Some(self.model.limits)
    }

    fn stop(&mut self) {
        // The runtime brought the command to rest: send it once more as the last word (the
        // controller holds it), then let the executor leave.
        let state = *self.state_rx.read();
        let mut hold = JointCommand {
            joint_pos_rad: state.state.joint_pos_rad,
            gripper_width_m: state.state.gripper_width_m,
        };
        if state.seq == 0 || state.non_finite {
            hold = self.last_command;
        }
        self.publish(&hold, true);
        if let Some(h) = self.executor.take() {
            let deadline = Instant::now() + Duration::from_secs(2);
            while !h.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
            self.shutdown.store(true, Ordering::Release);
            let _ = self.waker.wake();
            let _ = h.join();
        }
    }

    fn health(&self) -> RobotHealth {
        let mut faults = Vec::new();
        let s = &self.stats;
        for (name, c) in [
            ("joint states missing a joint", &s.states_missing_joint),
            ("joint states with bad lengths", &s.states_bad_length),
            ("non-finite joint states", &s.states_non_finite),
            ("out-of-order joint states", &s.states_out_of_order),
            ("refused object poses", &s.objects_refused),
            ("undecodable messages", &s.undecodable),
        ] {
            let n = c.load(Ordering::Relaxed);
            if n > 0 {
                faults.push(format!("{n} {name}"));
            }
        }
        RobotHealth {
            connected: self.connected.load(Ordering::Acquire),
            state_age_s: None,
            faults,
        }
    }

    fn start(
        &mut self,
        limits: &reflex_core::SafetyLimits,
        timeout: Duration,
    ) -> Result<(), StartError> {
        // A velocity controller is commanded within the loop's own speed limits.
        for (j, v) in self.velocity_limits.iter_mut().enumerate() {
            *v = v.min(limits.joint_vel_max_rad_s[j]);
        }
        reflex_core::start_default(self, limits, timeout).map_err(|e| match e {
            StartError::NoState { waited_s, last } => StartError::NoState {
                waited_s,
                last: format!(
                    "{last}; {} joint states accepted, {} missing a joint, {} with bad lengths",
                    self.stats.states.load(Ordering::Relaxed),
                    self.stats.states_missing_joint.load(Ordering::Relaxed),
                    self.stats.states_bad_length.load(Ordering::Relaxed),
                ),
            },
            other => other,
        })
    }
}

impl SceneView for RosRobot {
    fn cameras(&self) -> Vec<String> {
        let feeds = self.cameras.lock().unwrap_or_else(|p| p.into_inner());
        feeds.iter().map(|f| f.params.name.clone()).collect()
    }

    fn render(&self, camera: &str, frame: &mut Frame) -> Result<(), SceneError> {
        let feeds = self.cameras.lock().unwrap_or_else(|p| p.into_inner());
        let feed = feeds
            .iter()
            .find(|f| f.params.name == camera)
            .ok_or_else(|| SceneError::UnknownCamera {
                camera: camera.to_owned(),
                available: feeds.iter().map(|f| f.params.name.clone()).collect(),
            })?;
        feed.render(frame, self.clock_ns())
    }

    fn objects(&self, out: &mut Vec<TrackedObject>) {
        let scene = *self.scene_copy.lock().unwrap_or_else(|p| p.into_inner());
        self.spec.tracked(&scene.objects, scene.seen, out);
    }
}

impl Drop for RosRobot {
    fn drop(&mut self) {
        self.shutdown.store(true, Ordering::Release);
        let _ = self.waker.wake();
        if let Some(h) = self.executor.take() {
            let _ = h.join();
        }
    }
}

/// Why a scene reset through the reset service failed.
#[derive(Debug, thiserror::Error)]
pub enum ResetError {
    /// No `reset_service` is configured.
    #[error("no reset_service is configured: a real arm's episode starts where the arm is")]
    NoService,
    /// The service refused or did not answer.
    #[error("reset service: {0}")]
    Failed(String),
}

impl SceneReset for RosRobot {
    type Error = ResetError;

    /// Calls the reset service and waits (at most 10 s) for its answer and then for a joint
    /// state received after it.
    fn reset_scene(&mut self, _seed: u64) -> Result<(), ResetError> {
        if !self.has_reset {
            return Err(ResetError::NoService);
        }
        let (tx, rx) = mpsc::channel();
        self.reset_tx
            .send(ResetRequest { done: tx })
            .map_err(|_| ResetError::Failed("the bridge's executor is gone".into()))?;
        let _ = self.waker.wake();
        let answer = rx
            .recv_timeout(Duration::from_secs(10))
            .map_err(|_| ResetError::Failed("no answer within 10 s".into()))?;
        answer.map_err(ResetError::Failed)?;
        // The episode starts from what the arm and the tracker report after the reset: a pose
        // from before it would judge the new episode against the old scene (a cube lifted in
        // the last episode would be its start height).
        let after = self.clock_ns();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let state_fresh = self.state_rx.read().received_ns > after;
            let scene_fresh = !self.tracks_objects || self.scene_rx.read().received_ns > after;
            if state_fresh && scene_fresh {
                self.steps = 0;
                self.success.store(false, Ordering::Release);
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Err(ResetError::Failed(if self.tracks_objects {
            "no joint state and object pose within 5 s after the reset".into()
        } else {
            "no joint state within 5 s after the reset".into()
        }))
    }
}

struct ExecutorIo {
    reward_rx: Arc<SpscReceiver<(u64, Outcome)>>,
    reward_label: Arc<OnceLock<String>>,
    state_tx: Input<StateSample>,
    cmd_rx: Output<CommandSample>,
    scene_tx: Input<SceneSample>,
    reset_rx: mpsc::Receiver<ResetRequest>,
    epoch: Instant,
    stats: Arc<BridgeStats>,
    shutdown: Arc<AtomicBool>,
    success: Arc<AtomicBool>,
    estop: EStop,
    runtime_stats: Arc<OnceLock<Arc<RuntimeStats>>>,
    connected: Arc<AtomicBool>,
    notify: Arc<StateNotify>,
    operator: Arc<OperatorSlot>,
    cameras: Arc<Mutex<Vec<CameraFeed>>>,
    scene_copy: Arc<Mutex<SceneSample>>,
}

type Sub<M> = Box<dyn Inbox<M>>;
/// One camera's readers: colour, depth (when configured) and camera info.
type CameraSubs = (Sub<Image>, Option<Sub<Image>>, Sub<CameraInfo>);
type Pub<M> = Box<dyn Outbox<M>>;

/// The executor thread's state: the node and everything it reads and writes.
struct Executor {
    poll: Poll,
    io: ExecutorIo,
    joints: Joints,
    frames: Vec<String>,
    base_frame: String,
    interface: CommandInterface,
    lead: RosDuration,
    joint_states: Sub<JointState>,
    estop_sub: Sub<Bool>,
    objects_tf: Option<Sub<TfMessage>>,
    objects_array: Option<Sub<PoseArray>>,
    success_sub: Option<Sub<Bool>>,
    rearm: Box<dyn TriggerServer>,
    reset: Option<Box<dyn TriggerClient>>,
    arm_forward: Option<Pub<Float64MultiArray>>,
    arm_trajectory: Option<Pub<JointTrajectory>>,
    gripper: Option<Pub<Float64MultiArray>>,
    diagnostics: Option<Pub<DiagnosticArray>>,
    /// Per camera: colour, depth (if configured) and info readers.
    camera_subs: Vec<CameraSubs>,
    twist_sub: Option<Sub<TwistStamped>>,
    joy_sub: Option<Sub<Joy>>,
    mapper: Option<OperatorMapper>,
    intervening: Option<Pub<Bool>>,
    reward: Option<Pub<Float64MultiArray>>,
    intervened_steps: u64,
    next_intervening: Instant,
    diagnostics_period: Duration,
    /// Least time between two published commands (zero: every command).
    command_interval: Duration,
    last_publish: Option<Instant>,
    /// Velocity controllers: zeros go out when commands stop for this long.
    command_timeout: Duration,
    /// Velocity controllers: the last velocities sent were not all zero.
    moving: bool,
    seq: u64,
    decoder: JointStateDecoder,
    scene: SceneSample,
    prev_objects: [Option<(u64, [f64; 3])>; MAX_OBJECTS],
    cmd_seq: u64,
    arm_msg: Float64MultiArray,
    gripper_msg: Float64MultiArray,
    pending_reset: Option<(ResetRequest, Instant, u32)>,
    /// When the newest joint state for a loop on the arm's clock was taken (until answered).
    state_at: Option<Instant>,
    // Dropped last (fields drop in order): the endpoints above go before their node.
    _node: Box<dyn Send>,
}

impl Executor {
    fn new<T: Transport>(
        mut t: T,
        poll: Poll,
        params: &BridgeParams,
        joints: Joints,
        frames: Vec<String>,
        model: ArmModel,
        io: ExecutorIo,
    ) -> Result<Self, BridgeError> {
        let joint_states = t.subscribe::<JointState>(&params.joint_states_topic, Qos::Stream)?;
        let estop_sub = t.subscribe::<Bool>(&params.estop_topic, Qos::Latched)?;
        let (mut objects_tf, mut objects_array) = (None, None);
        match params.objects_source {
            ObjectsSource::None => {}
            ObjectsSource::Tf => {
                objects_tf = Some(t.subscribe::<TfMessage>(&params.objects_topic, Qos::Stream)?)
            }
            ObjectsSource::PoseArray => {
                objects_array = Some(t.subscribe::<PoseArray>(&params.objects_topic, Qos::Stream)?)
            }
        }
        let success_sub = match params.success_topic.as_str() {
            "" => None,
            topic => Some(t.subscribe::<Bool>(topic, Qos::Reliable)?),
        };
        let rearm = t.trigger_server(&params.rearm_service)?;
        let reset = match params.reset_service.as_str() {
            "" => None,
            service => Some(t.trigger_client(service)?),
        };
        let controller = params.arm_controller.trim_end_matches('/');
        let (mut arm_forward, mut arm_trajectory) = (None, None);
        match params.command_interface {
            CommandInterface::ForwardPosition | CommandInterface::ForwardVelocity => {
                let name = format!("{controller}/commands");
                arm_forward = Some(t.advertise::<Float64MultiArray>(&name, Qos::Command)?);
            }
            CommandInterface::JointTrajectory => {
                let name = format!("{controller}/joint_trajectory");
                arm_trajectory = Some(t.advertise::<JointTrajectory>(&name, Qos::Command)?);
            }
        }
        let mut gripper = None;
        if !params.gripper_controller.is_empty() && !joints.gripper.is_empty() {
            let name = format!(
                "{}/commands",
                params.gripper_controller.trim_end_matches('/')
            );
            gripper = Some(t.advertise::<Float64MultiArray>(&name, Qos::Command)?);
        }
        let mut diagnostics = None;
        if params.diagnostics_period_s > 0.0 {
            diagnostics = Some(t.advertise::<DiagnosticArray>("/diagnostics", Qos::Reliable)?);
        }
        let mut camera_subs = Vec::new();
        for c in &params.cameras {
            let depth = match c.depth_topic.as_str() {
                "" => None,
                topic => Some(t.subscribe::<Image>(topic, Qos::Stream)?),
            };
            camera_subs.push((
                t.subscribe::<Image>(&c.image_topic, Qos::Stream)?,
                depth,
                t.subscribe::<CameraInfo>(&c.info_topic, Qos::Stream)?,
            ));
        }
        let twist_sub = match params.intervention_twist_topic.as_str() {
            "" => None,
            topic => Some(t.subscribe::<TwistStamped>(topic, Qos::Stream)?),
        };
        let joy_sub = match params.intervention_joy_topic.as_str() {
            "" => None,
            topic => Some(t.subscribe::<Joy>(topic, Qos::Stream)?),
        };
        let intervening = match params.intervening_topic.as_str() {
            "" => None,
            topic => Some(t.advertise::<Bool>(topic, Qos::Reliable)?),
        };
        let reward = match params.reward_topic.as_str() {
            "" => None,
            // Reliable (a recorder keeps every step) and never waiting: a full window fails.
            topic => Some(t.advertise::<Float64MultiArray>(topic, Qos::Command)?),
        };
        let node = t.finish()?;
        let servo_period = 1.0 / 500.0;
        let lead_s = params.trajectory_lead_s.unwrap_or(2.0 * servo_period);
        let lead_ns = (lead_s * 1e9) as u64;
        let n_gripper = joints.gripper.len();
        let dof = joints.arm.len();
        let decoder = JointStateDecoder::new(&joints.arm, &joints.gripper, model);
        Ok(Self {
            _node: node,
            poll,
            joints,
            frames,
            base_frame: params.base_frame.clone(),
            interface: params.command_interface,
            lead: RosDuration {
                sec: (lead_ns / 1_000_000_000) as i32,
                nanosec: (lead_ns % 1_000_000_000) as u32,
            },
            joint_states,
            estop_sub,
            objects_tf,
            objects_array,
            success_sub,
            rearm,
            reset,
            arm_forward,
            arm_trajectory,
            gripper,
            diagnostics,
            camera_subs,
            twist_sub,
            joy_sub,
            mapper: None,
            intervening,
            reward,
            intervened_steps: 0,
            next_intervening: Instant::now(),
            diagnostics_period: Duration::from_secs_f64(params.diagnostics_period_s.max(0.01)),
            command_interval: if params.max_command_rate_hz > 0.0 {
                Duration::from_secs_f64(1.0 / params.max_command_rate_hz)
            } else {
                Duration::ZERO
            },
            last_publish: None,
            command_timeout: Duration::from_secs_f64(params.command_timeout_s),
            moving: false,
            seq: 0,
            decoder,
            scene: SceneSample::default(),
            prev_objects: [None; MAX_OBJECTS],
            cmd_seq: 0,
            arm_msg: Float64MultiArray {
                data: vec![0.0; dof],
                ..Default::default()
            },
            gripper_msg: Float64MultiArray {
                data: vec![0.0; n_gripper],
                ..Default::default()
            },
            pending_reset: None,
            state_at: None,
            io,
        })
    }

    fn now_ns(&self) -> u64 {
        self.io.epoch.elapsed().as_nanos() as u64
    }

    fn run(&mut self) {
        let mut events = Events::with_capacity(32);
        let mut next_diag = Instant::now() + self.diagnostics_period;
        loop {
            let timeout = next_diag
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(20))
                .min(self.deferred_for())
                .min(
                    self.next_intervening
                        .saturating_duration_since(Instant::now()),
                );
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != std::io::ErrorKind::Interrupted {
                    tracing::error!("reflex-ros executor: poll failed: {e}");
                    return;
                }
            }
            // Readers are edge-triggered: drain every one each round, whichever woke us.
            self.drain_joint_states();
            self.drain_estop();
            self.drain_objects();
            self.drain_success();
            self.answer_rearm();
            self.drive_reset();
            self.drain_operator();
            self.drain_cameras();
            self.publish_intervening();
            self.publish_rewards();
            if self.send_command() {
                // The last command is out: the session is over.
                return;
            }
            if Instant::now() >= next_diag {
                self.publish_diagnostics();
                next_diag = Instant::now() + self.diagnostics_period;
            }
            let shutting_down = self.io.shutdown.load(Ordering::Acquire);
            self.zero_velocity_if_silent(shutting_down);
            if shutting_down {
                return;
            }
        }
    }

    fn drain_joint_states(&mut self) {
        let taken_at = Instant::now();
        let mut newest = None;
        while let Some(msg) = self.joint_states.take() {
            if let Some(s) = self.convert(&msg) {
                if newest.is_some() {
                    self.io
                        .stats
                        .states_superseded
                        .fetch_add(1, Ordering::Relaxed);
                }
                newest = Some(s);
            }
        }
        if let Some(sample) = newest {
            self.io.connected.store(true, Ordering::Release);
            self.io.state_tx.write(sample);
            self.io.notify.seq.store(sample.seq, Ordering::Release);
            if let Some(t) = self.io.notify.thread.get() {
                t.unpark();
                self.state_at = Some(taken_at);
                self.await_answer();
            }
        }
    }

    /// A loop on the arm's clock answers each joint state with one tick: wait (briefly, not
    /// sleeping) for that command so it goes out at once instead of after another wake-up.
    fn await_answer(&mut self) {
        let deadline = Instant::now() + ANSWER_WAIT;
        let mut spins = 0u32;
        while self.io.cmd_rx.read().seq == self.cmd_seq && Instant::now() < deadline {
            spins += 1;
            if spins < 64 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }

    /// Decodes one joint state; `None`: refused (counted).
    fn convert(&mut self, msg: &JointState) -> Option<StateSample> {
        let stats = &self.io.stats;
        let now = self.io.epoch.elapsed().as_nanos() as u64;
        let decoded = match self.decoder.decode(msg, now) {
            Ok(d) => d,
            Err(Refused::BadLength) => {
                stats.states_bad_length.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            Err(Refused::MissingJoint(j)) => {
                let c = stats.states_missing_joint.fetch_add(1, Ordering::Relaxed);
                if c.is_multiple_of(1000) {
                    tracing::warn!(
                        "joint state without joint `{j}` refused (names: {:?})",
                        msg.name
                    );
                }
                return None;
            }
            Err(Refused::OutOfOrder) => {
                stats.states_out_of_order.fetch_add(1, Ordering::Relaxed);
                return None;
            }
        };
        let counter = if decoded.non_finite {
            &stats.states_non_finite
        } else {
            &stats.states
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.seq += 1;
        Some(StateSample {
            state: decoded.state,
            received_ns: now,
            seq: self.seq,
            non_finite: decoded.non_finite,
        })
    }

    fn drain_cameras(&mut self) {
        if self.camera_subs.is_empty() {
            return;
        }
        let now = self.io.epoch.elapsed().as_nanos() as u64;
        for (i, (rgb, depth, info)) in self.camera_subs.iter_mut().enumerate() {
            let mut newest = None;
            while let Some(m) = rgb.take() {
                newest = Some(m);
            }
            let mut newest_depth = None;
            if let Some(d) = depth {
                while let Some(m) = d.take() {
                    newest_depth = Some(m);
                }
            }
            let mut newest_info = None;
            while let Some(m) = info.take() {
                newest_info = Some(m);
            }
            if newest.is_none() && newest_depth.is_none() && newest_info.is_none() {
                continue;
            }
            let mut feeds = self.io.cameras.lock().unwrap_or_else(|p| p.into_inner());
            let feed = &mut feeds[i];
            if let Some(m) = newest {
                feed.rgb = Some((m, now));
            }
            if let Some(m) = newest_depth {
                feed.depth = Some((m, now));
            }
            if let Some(m) = newest_info {
                feed.info = Some(m);
            }
        }
    }

    /// Hands operator messages to the runtime (refused and counted before it is attached).
    fn drain_operator(&mut self) {
        let slot = self.io.operator.get();
        if self.mapper.is_none() {
            self.mapper = slot.map(|(_, m)| m.clone());
        }
        let stats = &self.io.stats;
        let deliver = |r: Option<Result<OperatorCommand, OperatorRefused>>| match (r, slot) {
            (Some(Ok(a)), Some((tx, _))) => {
                tx.send(a);
                stats.operator_messages.fetch_add(1, Ordering::Relaxed);
            }
            (r, _) => {
                if let Some(Err(e)) = r {
                    tracing::debug!("operator message refused: {e:?}");
                }
                stats.operator_refused.fetch_add(1, Ordering::Relaxed);
            }
        };
        if let Some(sub) = &mut self.twist_sub {
            while let Some(msg) = sub.take() {
                deliver(self.mapper.as_mut().map(|m| m.twist(&msg)));
            }
        }
        if let Some(sub) = &mut self.joy_sub {
            while let Some(msg) = sub.take() {
                deliver(self.mapper.as_mut().map(|m| m.joy(&msg)));
            }
        }
    }

    /// Publishes every judged step waiting in the queue from the tick.
    fn publish_rewards(&mut self) {
        let Some(p) = &mut self.reward else {
            while self.io.reward_rx.pop().is_some() {}
            return;
        };
        while let Some((step, o)) = self.io.reward_rx.pop() {
            let flag = |b: bool| f64::from(u8::from(b));
            let mut data = vec![
                step as f64,
                o.reward,
                flag(o.success),
                flag(o.terminated),
                flag(o.truncated),
            ];
            data.extend_from_slice(o.terms.values());
            let label = self
                .io
                .reward_label
                .get()
                .cloned()
                .unwrap_or_else(|| "step,reward,success,terminated,truncated".to_owned());
            let n = data.len() as u32;
            let msg = Float64MultiArray {
                layout: MultiArrayLayout {
                    dim: vec![MultiArrayDimension {
                        label,
                        size: n,
                        stride: n,
                    }],
                    data_offset: 0,
                },
                data,
            };
            if p.publish(&msg) {
                self.io
                    .stats
                    .rewards_published
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Publishes whether the operator drove any policy step in the last 100 ms.
    fn publish_intervening(&mut self) {
        if Instant::now() < self.next_intervening {
            return;
        }
        self.next_intervening = Instant::now() + Duration::from_millis(100);
        let (Some(p), Some(rt)) = (&mut self.intervening, self.io.runtime_stats.get()) else {
            return;
        };
        let steps = rt.intervened_steps.load(Ordering::Relaxed);
        p.publish(&Bool {
            data: steps > self.intervened_steps,
        });
        self.intervened_steps = steps;
    }

    fn drain_estop(&mut self) {
        while let Some(msg) = self.estop_sub.take() {
            self.io.stats.estop_messages.fetch_add(1, Ordering::Relaxed);
            if msg.data {
                tracing::warn!("e-stop pressed on the e-stop topic");
                self.io.estop.press();
            } else {
                self.io.estop.release();
            }
        }
    }

    fn drain_success(&mut self) {
        if let Some(s) = &mut self.success_sub {
            while let Some(msg) = s.take() {
                if msg.data {
                    self.io.success.store(true, Ordering::Release);
                }
            }
        }
    }

    fn drain_objects(&mut self) {
        let now = self.now_ns();
        let mut changed = false;
        let mut tf = self.objects_tf.take();
        if let Some(sub) = &mut tf {
            while let Some(msg) = sub.take() {
                for t in &msg.transforms {
                    let Some(i) = self.frames.iter().position(|f| *f == t.child_frame_id) else {
                        continue;
                    };
                    let r = t.transform.rotation;
                    let p = t.transform.translation;
                    if t.header.frame_id.trim_start_matches('/') != self.base_frame
                        || ![p.x, p.y, p.z, r.x, r.y, r.z, r.w]
                            .iter()
                            .all(|v| v.is_finite())
                    {
                        self.io
                            .stats
                            .objects_refused
                            .fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    let at = stamp_or(t.header.stamp, now);
                    self.set_object(i, [p.x, p.y, p.z], [r.x, r.y, r.z, r.w], at);
                    changed = true;
                }
            }
        }
        self.objects_tf = tf;
        let mut array = self.objects_array.take();
        if let Some(sub) = &mut array {
            while let Some(msg) = sub.take() {
                let finite = msg.poses.iter().all(|p| {
                    [
                        p.position.x,
                        p.position.y,
                        p.position.z,
                        p.orientation.x,
                        p.orientation.y,
                        p.orientation.z,
                        p.orientation.w,
                    ]
                    .iter()
                    .all(|v| v.is_finite())
                });
                if msg.header.frame_id.trim_start_matches('/') != self.base_frame
                    || msg.poses.len() != self.frames.len()
                    || !finite
                {
                    self.io
                        .stats
                        .objects_refused
                        .fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let at = stamp_or(msg.header.stamp, now);
                for (i, p) in msg.poses.iter().enumerate() {
                    let o = p.orientation;
                    self.set_object(
                        i,
                        [p.position.x, p.position.y, p.position.z],
                        [o.x, o.y, o.z, o.w],
                        at,
                    );
                }
                changed = true;
            }
        }
        self.objects_array = array;
        if changed {
            self.io.stats.object_updates.fetch_add(1, Ordering::Relaxed);
            self.scene.received_ns = now;
            self.io.scene_tx.write(self.scene);
            *self.io.scene_copy.lock().unwrap_or_else(|p| p.into_inner()) = self.scene;
        }
    }

    /// Sets object `i`'s pose, seen at `at` (ns; the tracker's stamp when it gives one), and
    /// its velocity from the previous pose.
    fn set_object(&mut self, i: usize, p: [f64; 3], q: [f64; 4], at: u64) {
        let now = at;
        let unit = UnitQuaternion::from_quaternion(NQuat::new(q[3], q[0], q[1], q[2]));
        let mut vel = [0.0; 3];
        if let Some((t, prev)) = self.prev_objects[i] {
            if now > t {
                let dt = (now - t) as f64 * 1e-9;
                vel = [
                    (p[0] - prev[0]) / dt,
                    (p[1] - prev[1]) / dt,
                    (p[2] - prev[2]) / dt,
                ];
            }
        }
        self.prev_objects[i] = Some((now, p));
        self.scene.objects[i] = ObjectState {
            pose: Pose {
                position_m: p,
                quat_xyzw: [unit.i, unit.j, unit.k, unit.w],
            },
            lin_vel_m_s: vel,
        };
        self.scene.seen |= 1 << i;
    }

    fn answer_rearm(&mut self) {
        let estop = &self.io.estop;
        let n = self.rearm.answer(&mut || match estop.rearm() {
            Ok(()) => TriggerResponse {
                success: true,
                message: "re-armed: the policy ramps back in".into(),
            },
            Err(e) => TriggerResponse {
                success: false,
                message: format!("not re-armed: {e}"),
            },
        });
        self.io
            .stats
            .rearm_requests
            .fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Sends a pending reset request (again every second until answered, at most 10 times).
    fn drive_reset(&mut self) {
        let Some(client) = self.reset.as_mut() else {
            while let Ok(r) = self.io.reset_rx.try_recv() {
                let _ = r.done.send(Err("no reset_service is configured".into()));
            }
            return;
        };
        if self.pending_reset.is_none() {
            if let Ok(r) = self.io.reset_rx.try_recv() {
                self.pending_reset = Some((r, Instant::now() - Duration::from_secs(2), 0));
            }
        }
        while let Some(resp) = client.response() {
            if let Some((r, _, _)) = self.pending_reset.take() {
                self.io.stats.resets.fetch_add(1, Ordering::Relaxed);
                let _ = r.done.send(if resp.success {
                    Ok(resp.message)
                } else {
                    Err(format!("refused: {}", resp.message))
                });
            }
        }
        if let Some((_, sent, tries)) = &mut self.pending_reset {
            if sent.elapsed() >= Duration::from_secs(1) {
                if *tries >= 10 {
                    if let Some((r, _, _)) = self.pending_reset.take() {
                        let _ = r.done.send(Err("no answer to 10 requests".into()));
                    }
                    return;
                }
                *tries += 1;
                *sent = Instant::now();
                client.call();
            }
        }
    }

    /// Publishes joint velocities to the velocity controller.
    fn publish_velocity(&mut self, v: &[f64; ARM_DOF]) -> bool {
        let dof = self.arm_msg.data.len();
        self.arm_msg.data.copy_from_slice(&v[..dof]);
        self.arm_forward
            .as_mut()
            .map(|p| p.publish(&self.arm_msg))
            .unwrap_or(false)
    }

    /// A velocity controller holds its last velocity forever: when the loop's commands stop
    /// for `command_timeout_s` (a stalled or dead loop), or the bridge shuts down, zeros go out
    /// once.
    fn zero_velocity_if_silent(&mut self, shutting_down: bool) {
        if self.interface != CommandInterface::ForwardVelocity || !self.moving {
            return;
        }
        let silent = self
            .last_publish
            .is_none_or(|t| t.elapsed() >= self.command_timeout);
        if silent || shutting_down {
            if self.publish_velocity(&[0.0; ARM_DOF]) {
                self.moving = false;
            }
            self.io
                .stats
                .velocity_zeroed
                .fetch_add(1, Ordering::Relaxed);
            if silent && !shutting_down {
                tracing::warn!(
                    "no command from the control loop for {:?}: velocities zeroed",
                    self.command_timeout
                );
            }
        }
    }

    /// How long until a command held back by `max_command_rate_hz` may go out (the poll's
    /// longest wait while one is pending).
    fn deferred_for(&mut self) -> Duration {
        match self.last_publish {
            Some(t) if self.io.cmd_rx.read().seq != self.cmd_seq => {
                self.command_interval.saturating_sub(t.elapsed())
            }
            _ => Duration::MAX,
        }
    }

    /// Publishes the newest command if there is a new one. Returns true after the last one.
    fn send_command(&mut self) -> bool {
        let sample = *self.io.cmd_rx.read();
        if sample.seq == self.cmd_seq {
            return false;
        }
        if !sample.last {
            if let Some(t) = self.last_publish {
                if t.elapsed() < self.command_interval {
                    // Too soon: the newest command goes out at the next poll after the interval.
                    return false;
                }
            }
        }
        self.last_publish = Some(Instant::now());
        self.cmd_seq = sample.seq;
        let c = &sample.command;
        let ok = match self.interface {
            CommandInterface::ForwardVelocity => {
                self.moving = sample.velocity.iter().any(|v| *v != 0.0);
                self.publish_velocity(&sample.velocity)
            }
            CommandInterface::ForwardPosition => {
                let dof = self.arm_msg.data.len();
                self.arm_msg.data.copy_from_slice(&c.joint_pos_rad[..dof]);
                self.arm_forward
                    .as_mut()
                    .map(|p| p.publish(&self.arm_msg))
                    .unwrap_or(false)
            }
            CommandInterface::JointTrajectory => {
                let msg = JointTrajectory {
                    header: Header::default(),
                    joint_names: self.joints.arm.clone(),
                    points: vec![JointTrajectoryPoint {
                        positions: c.joint_pos_rad[..self.joints.arm.len()].to_vec(),
                        time_from_start: self.lead,
                        ..Default::default()
                    }],
                };
                self.arm_trajectory
                    .as_mut()
                    .map(|p| p.publish(&msg))
                    .unwrap_or(false)
            }
        };
        let mut gripper_ok = true;
        if let Some(p) = &mut self.gripper {
            let n = self.gripper_msg.data.len() as f64;
            self.gripper_msg.data.fill(c.gripper_width_m / n);
            gripper_ok = p.publish(&self.gripper_msg);
        }
        let counter = if ok && gripper_ok {
            &self.io.stats.commands
        } else {
            &self.io.stats.command_failures
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if let Some(t) = self.state_at.take() {
            self.io.stats.answer.record(t.elapsed().as_nanos() as u64);
        }
        sample.last
    }

    fn publish_diagnostics(&mut self) {
        let Some(p) = self.diagnostics.as_mut() else {
            return;
        };
        let s = &self.io.stats;
        let kv = |k: &str, v: String| KeyValue {
            key: k.into(),
            value: v,
        };
        let refused = s.states_missing_joint.load(Ordering::Relaxed)
            + s.states_bad_length.load(Ordering::Relaxed)
            + s.states_out_of_order.load(Ordering::Relaxed);
        let mut bridge = DiagnosticStatus {
            level: if refused > 0 || s.states_non_finite.load(Ordering::Relaxed) > 0 {
                1
            } else {
                0
            },
            name: "reflex: bridge".into(),
            message: if self.io.connected.load(Ordering::Acquire) {
                "joint states flowing".into()
            } else {
                "no joint state yet".into()
            },
            hardware_id: self.joints.arm[0].clone(),
            values: Vec::new(),
        };
        for (k, c) in [
            ("joint_states", &s.states),
            ("joint_states_missing_joint", &s.states_missing_joint),
            ("joint_states_bad_length", &s.states_bad_length),
            ("joint_states_non_finite", &s.states_non_finite),
            ("joint_states_out_of_order", &s.states_out_of_order),
            ("joint_states_superseded", &s.states_superseded),
            ("stale_reads", &s.stale_reads),
            ("commands", &s.commands),
            ("command_failures", &s.command_failures),
            ("object_updates", &s.object_updates),
            ("objects_refused", &s.objects_refused),
            ("undecodable", &s.undecodable),
            ("estop_messages", &s.estop_messages),
            ("velocity_zeroed", &s.velocity_zeroed),
            ("rewards_published", &s.rewards_published),
            ("rewards_dropped", &s.rewards_dropped),
        ] {
            bridge
                .values
                .push(kv(k, c.load(Ordering::Relaxed).to_string()));
        }
        bridge
            .values
            .push(kv("estop_latched", self.io.estop.is_latched().to_string()));
        let mut status = vec![bridge];
        if let Some(rt) = self.io.runtime_stats.get() {
            let t = &rt.timing;
            let faults: u64 = rt.fault_counts().iter().sum();
            let misses = t.deadline_misses.load(Ordering::Relaxed);
            status.push(DiagnosticStatus {
                level: if misses > 0 || faults > 0 { 1 } else { 0 },
                name: "reflex: control loop".into(),
                message: format!(
                    "{} ticks, {misses} deadline misses",
                    t.ticks.load(Ordering::Relaxed)
                ),
                hardware_id: String::new(),
                values: vec![
                    kv("ticks", t.ticks.load(Ordering::Relaxed).to_string()),
                    kv("deadline_misses", misses.to_string()),
                    kv(
                        "jitter_p99_us",
                        format!("{:.1}", t.jitter.quantile_ns(0.99) as f64 / 1e3),
                    ),
                    kv(
                        "compute_p99_us",
                        format!("{:.1}", t.compute.quantile_ns(0.99) as f64 / 1e3),
                    ),
                    kv("safety_faults", faults.to_string()),
                    kv(
                        "read_errors",
                        rt.read_errors.load(Ordering::Relaxed).to_string(),
                    ),
                    kv(
                        "policy_steps",
                        rt.policy_steps.load(Ordering::Relaxed).to_string(),
                    ),
                    kv("episodes", rt.episodes.load(Ordering::Relaxed).to_string()),
                    kv(
                        "intervened_steps",
                        rt.intervened_steps.load(Ordering::Relaxed).to_string(),
                    ),
                ],
            });
        }
        let msg = DiagnosticArray {
            header: Header {
                stamp: Time::from_ns(wall_ns()),
                frame_id: String::new(),
            },
            status,
        };
        if p.publish(&msg) {
            s.diagnostics.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A message's stamp in nanoseconds, or `fallback` when it has none.
fn stamp_or(stamp: Time, fallback: u64) -> u64 {
    if stamp == Time::default() {
        fallback
    } else {
        stamp.to_ns()
    }
}

/// Wall-clock time since the Unix epoch, nanoseconds (ROS stamps).
pub fn wall_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}
