//! The scene link: what a serial arm's host needs besides the board. A tracker's object poses
//! come in and episode resets go out, as one JSON object per UDP datagram, so any tracker (a
//! camera with fiducials, a motion-capture bridge, `reflex firmware-sim`'s simulated one) can
//! speak it in a few lines of any language.
//!
//! Every message carries `"v": 1` and a `"type"`:
//! - host -> scene: `{"v":1,"type":"subscribe"}` (every 500 ms: the scene sends to the newest
//!   subscriber), `{"v":1,"type":"reset","id":7,"seed":12}`;
//! - scene -> host: `{"v":1,"type":"objects","stamp_ns":…,"objects":[{"name":"cube",
//!   "position_m":[x,y,z],"quat_xyzw":[x,y,z,w]}]}`, `{"v":1,"type":"reset_done","id":7}`
//!   (with `"goals":[[x,y,z],…]` when the new scene's goals differ from scene to scene: the
//!   host then observes and judges the episode against them, in the task's order; their
//!   number must be the task's), `{"v":1,"type":"reset_failed","id":7,"error":"…"}`.
//!
//! Poses are in the arm's base frame. A datagram that is not JSON, of another version or type,
//! names an object the task does not have, or holds a non-finite or non-unit pose is refused
//! and counted by reason; the newest refusal is kept word for word for the operator.

use reflex_core::{ObjectState, Pose, MAX_OBJECTS};
use serde::{Deserialize, Serialize};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use triple_buffer::{triple_buffer, Input, Output};

/// The scene link's protocol version.
pub const SCENE_PROTOCOL: u32 = 1;

/// Largest datagram either side sends or reads, bytes.
pub const MAX_DATAGRAM: usize = 8192;

/// One message of the scene link.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SceneMsg {
    /// Host -> scene: send poses to me.
    Subscribe {
        /// Protocol version.
        v: u32,
    },
    /// Scene -> host: tracked poses.
    Objects {
        /// Protocol version.
        v: u32,
        /// When the poses were measured, on the tracker's clock, nanoseconds.
        stamp_ns: u64,
        /// The objects seen.
        objects: Vec<TrackedPose>,
    },
    /// Host -> scene: put the scene back to a start drawn from `seed`.
    Reset {
        /// Protocol version.
        v: u32,
        /// Request id, echoed.
        id: u64,
        /// Seed of the new scene.
        seed: u64,
    },
    /// Scene -> host: the reset is done.
    ResetDone {
        /// Protocol version.
        v: u32,
        /// The request's id.
        id: u64,
        /// The new scene's goal points in the arm's base frame, metres, in the task's order
        /// (omitted by a scene whose task has none, or whose goals never change).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        goals: Vec<[f64; 3]>,
    },
    /// Scene -> host: the reset failed.
    ResetFailed {
        /// Protocol version.
        v: u32,
        /// The request's id.
        id: u64,
        /// Why.
        error: String,
    },
}

impl SceneMsg {
    /// The version the message carries.
    pub fn version(&self) -> u32 {
        match self {
            Self::Subscribe { v }
            | Self::Objects { v, .. }
            | Self::Reset { v, .. }
            | Self::ResetDone { v, .. }
            | Self::ResetFailed { v, .. } => *v,
        }
    }

    /// The message as one datagram.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_else(|_| unreachable!("scene messages always encode"))
    }

    /// Parses one datagram.
    pub fn parse(bytes: &[u8]) -> Result<Self, SceneRefusal> {
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| SceneRefusal::Json(e.to_string()))?;
        match value.get("v").and_then(|v| v.as_u64()) {
            Some(v) if v == SCENE_PROTOCOL as u64 => {}
            Some(v) => return Err(SceneRefusal::Version(v)),
            None => {
                return Err(SceneRefusal::Json(
                    "no field `v` (the protocol version)".into(),
                ))
            }
        }
        serde_json::from_value(value).map_err(|e| SceneRefusal::Message(e.to_string()))
    }
}

/// One tracked object's pose, in the arm's base frame.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackedPose {
    /// The task's object name.
    pub name: String,
    /// Position, metres.
    pub position_m: [f64; 3],
    /// Orientation as a unit quaternion `[x, y, z, w]`.
    pub quat_xyzw: [f64; 4],
}

/// Why a datagram was refused.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum SceneRefusal {
    /// Not a JSON object of the protocol.
    #[error("not a scene message: {0}")]
    Json(String),
    /// Another protocol version.
    #[error("scene link protocol {0}; this host speaks {SCENE_PROTOCOL}")]
    Version(u64),
    /// A JSON object of the right version that is no message of the protocol.
    #[error("malformed scene message: {0}")]
    Message(String),
    /// An object the task does not have.
    #[error("unknown object `{0}` (not in the task)")]
    UnknownObject(String),
    /// A non-finite position or a quaternion that is not of unit length.
    #[error("object `{name}`: {what}")]
    Pose {
        /// The object.
        name: String,
        /// What is wrong.
        what: String,
    },
}

impl SceneRefusal {
    /// The counter it goes to.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Json(_) => "json",
            Self::Version(_) => "version",
            Self::Message(_) => "message",
            Self::UnknownObject(_) => "unknown_object",
            Self::Pose { .. } => "pose",
        }
    }
}

/// Checks one tracked pose and turns it into an object state.
pub fn object_state(p: &TrackedPose) -> Result<ObjectState, SceneRefusal> {
    let bad = |what: String| SceneRefusal::Pose {
        name: p.name.clone(),
        what,
    };
    if !p
        .position_m
        .iter()
        .chain(&p.quat_xyzw)
        .all(|v| v.is_finite())
    {
        return Err(bad("a non-finite number".into()));
    }
    let norm = p.quat_xyzw.iter().map(|v| v * v).sum::<f64>().sqrt();
    if (norm - 1.0).abs() > 1e-3 {
        return Err(bad(format!("quaternion of length {norm:.4}, expected 1")));
    }
    let q = p.quat_xyzw.map(|v| v / norm);
    Ok(ObjectState {
        pose: Pose {
            position_m: p.position_m,
            quat_xyzw: q,
        },
        lin_vel_m_s: [0.0; 3],
    })
}

/// The newest tracked scene, as the tick reads it.
#[derive(Clone, Copy, Debug, Default)]
pub struct SceneSample {
    /// Object states in the task's order.
    pub objects: [ObjectState; MAX_OBJECTS],
    /// Bit i: object i has been seen at least once.
    pub seen: u32,
    /// When it arrived, nanoseconds since the link opened.
    pub received_ns: u64,
    /// Pose messages accepted so far.
    pub count: u64,
}

/// What the link counted.
#[derive(Clone, Debug, Default)]
pub struct SceneLinkStats {
    /// Pose messages accepted.
    pub accepted: u64,
    /// Datagrams refused, by reason.
    pub refused: Vec<(&'static str, u64)>,
    /// The newest refusal, word for word.
    pub last_refusal: Option<String>,
}

struct Shared {
    stop: AtomicBool,
    stats: Mutex<SceneLinkStats>,
    epoch: Instant,
}

impl Shared {
    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    fn refuse(&self, r: &SceneRefusal) {
        let mut s = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        match s.refused.iter_mut().find(|(n, _)| *n == r.reason()) {
            Some((_, c)) => *c += 1,
            None => s.refused.push((r.reason(), 1)),
        }
        s.last_refusal = Some(r.to_string());
    }
}

/// Why the scene link failed.
#[derive(Debug, thiserror::Error)]
pub enum SceneLinkError {
    /// The socket could not be made.
    #[error("scene link to {addr}: {source}")]
    Socket {
        /// The scene's address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A reset was refused or not answered.
    #[error("scene reset at {addr}: {message}")]
    Reset {
        /// The scene's address.
        addr: SocketAddr,
        /// What happened.
        message: String,
    },
}

/// A reset's answer: its request id, and the new scene's goals or why it failed.
type ResetAnswer = (u64, Result<Vec<[f64; 3]>, String>);

/// The host's end of the scene link: a thread reads poses into a wait-free cell the control
/// tick reads without waiting; resets are asked for between episodes.
pub struct SceneLink {
    addr: SocketAddr,
    socket: UdpSocket,
    shared: Arc<Shared>,
    rx: Output<SceneSample>,
    replies: mpsc::Receiver<ResetAnswer>,
    next_id: u64,
    thread: Option<JoinHandle<()>>,
}

impl SceneLink {
    /// Opens a link to the scene at `addr` for the task's `objects` (names, in its order).
    pub fn connect(addr: SocketAddr, objects: &[String]) -> Result<Self, SceneLinkError> {
        let sock_err = |source| SceneLinkError::Socket { addr, source };
        let local: SocketAddr = match (addr.is_ipv4(), addr.ip().is_loopback()) {
            (true, true) => "127.0.0.1:0",
            (true, false) => "0.0.0.0:0",
            (false, true) => "[::1]:0",
            (false, false) => "[::]:0",
        }
        .parse()
        .unwrap_or_else(|_| unreachable!("literal addresses parse"));
        let socket = UdpSocket::bind(local).map_err(sock_err)?;
        socket.connect(addr).map_err(sock_err)?;
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .map_err(sock_err)?;
        let reader = socket.try_clone().map_err(sock_err)?;
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            stats: Mutex::new(SceneLinkStats::default()),
            epoch: Instant::now(),
        });
        let (tx, rx) = triple_buffer(&SceneSample::default());
        let (reply_tx, replies) = mpsc::channel();
        let names: Vec<String> = objects.iter().take(MAX_OBJECTS).cloned().collect();
        let sh = shared.clone();
        let thread = std::thread::Builder::new()
            .name("reflex-scene-rx".into())
            .spawn(move || read_loop(reader, sh, tx, reply_tx, names))
            .map_err(sock_err)?;
        Ok(Self {
            addr,
            socket,
            shared,
            rx,
            replies,
            next_id: 1,
            thread: Some(thread),
        })
    }

    /// The scene's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The newest scene (never waits, never allocates).
    pub fn read(&mut self) -> &SceneSample {
        self.rx.read()
    }

    /// The scene as last read (for the slow side: never updates it).
    pub fn peek(&self) -> &SceneSample {
        self.rx.output_buffer()
    }

    /// Nanoseconds since the link opened (the clock of [`SceneSample::received_ns`]).
    pub fn now_ns(&self) -> u64 {
        self.shared.now_ns()
    }

    /// What the link counted.
    pub fn stats(&self) -> SceneLinkStats {
        self.shared
            .stats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Asks the scene for a reset to `seed` and waits (at most `timeout`) for its answer and
    /// then for poses measured after it; the goals the answer named (empty if none).
    pub fn reset(&mut self, seed: u64, timeout: Duration) -> Result<Vec<[f64; 3]>, SceneLinkError> {
        let deadline = Instant::now() + timeout;
        let fail = |message: String| SceneLinkError::Reset {
            addr: self.addr,
            message,
        };
        let id = self.next_id;
        self.next_id += 1;
        while self.replies.try_recv().is_ok() {}
        let msg = SceneMsg::Reset {
            v: SCENE_PROTOCOL,
            id,
            seed,
        };
        self.socket
            .send(&msg.to_bytes())
            .map_err(|e| fail(format!("sending: {e}")))?;
        let goals = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.replies.recv_timeout(left) {
                Ok((got, answer)) if got == id => {
                    break answer.map_err(|e| fail(format!("the scene refused: {e}")))?;
                }
                Ok(_) => continue,
                Err(_) => {
                    return Err(fail(format!(
                        "no answer within {:.1} s",
                        timeout.as_secs_f64()
                    )))
                }
            }
        };
        // The episode starts from poses seen after the reset, never the last scene's.
        let after = self.shared.now_ns();
        while Instant::now() < deadline {
            if self.rx.read().received_ns > after {
                return Ok(goals);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Err(fail("no object poses after the reset".into()))
    }
}

impl Drop for SceneLink {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn read_loop(
    socket: UdpSocket,
    shared: Arc<Shared>,
    mut tx: Input<SceneSample>,
    replies: mpsc::Sender<ResetAnswer>,
    names: Vec<String>,
) {
    let subscribe = SceneMsg::Subscribe { v: SCENE_PROTOCOL }.to_bytes();
    let mut last_subscribe: Option<Instant> = None;
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut sample = SceneSample::default();
    while !shared.stop.load(Ordering::Acquire) {
        if last_subscribe.is_none_or(|t| t.elapsed() >= Duration::from_millis(500)) {
            // Refused (nobody listening yet) or sent, it is tried again in 500 ms.
            let _ = socket.send(&subscribe);
            last_subscribe = Some(Instant::now());
        }
        let n = match socket.recv(&mut buf) {
            Ok(n) => n,
            Err(_) => continue, // timeout, or the scene not up yet (connection refused)
        };
        let msg = match SceneMsg::parse(&buf[..n]) {
            Ok(m) => m,
            Err(r) => {
                shared.refuse(&r);
                continue;
            }
        };
        match msg {
            SceneMsg::Objects { objects, .. } => match apply_poses(&objects, &names, &mut sample) {
                Ok(()) => {
                    sample.received_ns = shared.now_ns();
                    sample.count += 1;
                    tx.write(sample);
                    let mut s = shared.stats.lock().unwrap_or_else(|p| p.into_inner());
                    s.accepted += 1;
                }
                Err(r) => shared.refuse(&r),
            },
            SceneMsg::ResetDone { id, goals, .. } => {
                // A goal that is not a finite point fails the reset, naming it.
                let answer = match goals.iter().position(|g| !g.iter().all(|v| v.is_finite())) {
                    None => Ok(goals),
                    Some(i) => {
                        let r = SceneRefusal::Message(format!(
                            "reset_done: goals[{i}] = {:?} is not a finite point",
                            goals[i]
                        ));
                        shared.refuse(&r);
                        Err(r.to_string())
                    }
                };
                let _ = replies.send((id, answer));
            }
            SceneMsg::ResetFailed { id, error, .. } => {
                let _ = replies.send((id, Err(error)));
            }
            SceneMsg::Subscribe { .. } | SceneMsg::Reset { .. } => shared.refuse(
                &SceneRefusal::Message("a host-to-scene message sent to the host".into()),
            ),
        }
    }
}

/// Applies a pose message to `sample`: all of it or (on the first refusal) none of it.
fn apply_poses(
    objects: &[TrackedPose],
    names: &[String],
    sample: &mut SceneSample,
) -> Result<(), SceneRefusal> {
    let mut next = *sample;
    for p in objects {
        let i = names
            .iter()
            .position(|n| *n == p.name)
            .ok_or_else(|| SceneRefusal::UnknownObject(p.name.clone()))?;
        next.objects[i] = object_state(p)?;
        next.seen |= 1 << i;
    }
    *sample = next;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pose(name: &str, q: [f64; 4]) -> TrackedPose {
        TrackedPose {
            name: name.into(),
            position_m: [0.5, 0.0, 0.025],
            quat_xyzw: q,
        }
    }

    #[test]
    fn messages_round_trip_and_refusals_name_the_problem() {
        let m = SceneMsg::Objects {
            v: 1,
            stamp_ns: 5,
            objects: vec![pose("cube", [0.0, 0.0, 0.0, 1.0])],
        };
        assert_eq!(SceneMsg::parse(&m.to_bytes()), Ok(m));
        let r = SceneMsg::parse(br#"{"v":2,"type":"subscribe"}"#).unwrap_err();
        assert_eq!(r.to_string(), "scene link protocol 2; this host speaks 1");
        let r = SceneMsg::parse(br#"{"v":1,"type":"teleport"}"#).unwrap_err();
        assert_eq!(r.reason(), "message");
        assert!(r.to_string().contains("teleport"), "{r}");
        let r = SceneMsg::parse(br#"{"v":1,"type":"reset","id":1}"#).unwrap_err();
        assert!(r.to_string().contains("seed"), "{r}");
        assert_eq!(SceneMsg::parse(b"\xff{").unwrap_err().reason(), "json");
    }

    #[test]
    fn a_reset_answer_may_carry_the_new_scenes_goals() {
        let with = SceneMsg::ResetDone {
            v: 1,
            id: 3,
            goals: vec![[0.5, -0.25, 0.125]],
        };
        assert_eq!(SceneMsg::parse(&with.to_bytes()), Ok(with));
        // A scene without goals omits them (and an answer without them parses).
        let without = SceneMsg::ResetDone {
            v: 1,
            id: 4,
            goals: vec![],
        };
        assert!(!String::from_utf8(without.to_bytes())
            .unwrap()
            .contains("goals"));
        assert_eq!(
            SceneMsg::parse(br#"{"v":1,"type":"reset_done","id":4}"#),
            Ok(without)
        );
        let r =
            SceneMsg::parse(br#"{"v":1,"type":"reset_done","id":4,"goals":[[1,2]]}"#).unwrap_err();
        assert_eq!(r.reason(), "message", "{r}");
    }

    #[test]
    fn a_bad_pose_changes_nothing() {
        let names = vec!["cube".to_string(), "peg".to_string()];
        let mut s = SceneSample::default();
        apply_poses(&[pose("peg", [0.0, 0.0, 0.0, 1.0])], &names, &mut s).unwrap();
        assert_eq!(s.seen, 0b10);
        for (bad, reason) in [
            (pose("cube", [0.0, 0.0, 0.0, 2.0]), "pose"),
            (pose("cube", [f64::NAN, 0.0, 0.0, 1.0]), "pose"),
            (pose("ball", [0.0, 0.0, 0.0, 1.0]), "unknown_object"),
        ] {
            let before = s;
            let good = pose("peg", [0.0, 0.0, 1.0, 0.0]);
            let r = apply_poses(&[good, bad], &names, &mut s).unwrap_err();
            assert_eq!(r.reason(), reason, "{r}");
            assert_eq!(s.seen, before.seen);
            assert_eq!(s.objects[1].pose.quat_xyzw, [0.0, 0.0, 0.0, 1.0]);
        }
    }
}
