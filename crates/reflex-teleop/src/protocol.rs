//! The WebSocket protocol between the operator's page (or any client: the scripted operator, a
//! test) and the session: JSON text messages tagged by `type`.
//!
//! Client to session:
//! - `{"type": "input", "seq": 7, "motion": [x, y, z, roll, pitch, yaw], "gripper": g,
//!   "intervene": true}`: the operator's motion in the task's normalised units (each component in
//!   -1..1, 1 is the task's top tool speed), the gripper (-1 closed .. 1 open) and whether the
//!   intervene control is held. Clients send it continuously (the page: 30 times a second);
//!   silence during a takeover holds the arm.
//! - `{"type": "event", "event": "success" | "failure" | "rerecord"}`: ends the episode with
//!   that label; a re-record discards it.
//! - `{"type": "estop"}`: presses the runtime's e-stop (latched); `{"type": "rearm"}` re-arms it,
//!   a separate, deliberate action.
//!
//! Session to client: `hello` once (the task and the key map), `status` about 20 times a second,
//! `frame` (a camera's newest view as base64 PNG, about 5 a second per camera), `rearm` (the
//! answer to a re-arm) and `error` (a message that was refused, naming the field; the connection
//! stays open).

use serde::{Deserialize, Serialize};

/// A message from the operator's side.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMessage {
    /// The operator's input, sent continuously.
    Input {
        /// The client's message counter (echoed in `status.input_seq`).
        seq: u64,
        /// Tool motion x, y, z, roll, pitch, yaw, each in -1..1.
        motion: [f64; 6],
        /// Gripper: -1 closed .. 1 open.
        gripper: f64,
        /// The intervene control is held.
        intervene: bool,
    },
    /// A labelling button.
    Event {
        /// Which.
        event: EventKind,
    },
    /// The e-stop button.
    Estop,
    /// The re-arm button.
    Rearm,
}

/// The labelling buttons.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The episode ends as a success.
    Success,
    /// The episode ends as a failure.
    Failure,
    /// The episode ends and is discarded (re-record): none of it becomes training data.
    Rerecord,
}

/// Where the session stands, as the page shows it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// Episodes started.
    pub episode: u64,
    /// Policy step within the episode.
    pub step: u64,
    /// The operator's action is being executed.
    pub intervening: bool,
    /// The e-stop is latched (re-arm to go on).
    pub estop_latched: bool,
    /// The action the policy proposed at the last step (normalised).
    pub policy_action: Vec<f32>,
    /// The action executed at the last step (normalised).
    pub executed_action: Vec<f32>,
    /// The last step's reward terms by name.
    pub reward_terms: Vec<(String, f64)>,
    /// Episodes ended with a success, and episodes ended.
    pub successes: u64,
    /// Episodes ended.
    pub episodes_done: u64,
    /// Share of policy steps the operator drove, over the session.
    pub intervention_rate: f64,
    /// Loop jitter, 99th percentile, microseconds.
    pub jitter_p99_us: f64,
    /// Ticks that missed their deadline.
    pub deadline_misses: u64,
    /// The newest input message applied (its `seq`).
    pub input_seq: u64,
    /// The tool centre point at the policy step now running, metres in the base frame.
    pub tool_m: [f64; 3],
    /// The last judged step's reward (the task's terms fused; none while pending).
    pub reward: Option<f64>,
    /// The flat observation of the policy step now running, `step` (the layout every network
    /// reads, see `reflex_core::Observation::rebuild_flat`): what a scripted operator acts on.
    pub observation: Vec<f32>,
    /// The last episodes (at most [`RECENT_EPISODES`]), oldest first: the page's
    /// intervention-rate curve.
    pub recent_episodes: Vec<EpisodeRow>,
    /// The live learner's counters (`--learn`), if one runs.
    pub learning: Option<LearningStatus>,
}

/// Episodes the status carries for the page's curve.
pub const RECENT_EPISODES: usize = 120;

/// One finished episode, as the page's curve shows it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EpisodeRow {
    /// The episode's id.
    pub episode: u64,
    /// Policy steps.
    pub steps: u64,
    /// Of them, steps the operator drove.
    pub intervened: u64,
    /// Ended with a success (the task's, or the operator's label).
    pub success: bool,
}

/// The live learner's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LearningStatus {
    /// Updates done (over the run the session continues).
    pub updates: u64,
    /// Weights published to the running policy during this session.
    pub published: u64,
    /// Online steps in the replay.
    pub env_steps: u64,
    /// Of them, steps the operator drove (stored as demonstrations too).
    pub intervened_steps: u64,
}

/// A message from the session.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// Sent once on connection.
    Hello {
        /// The task's name.
        task: String,
        /// The task's instruction.
        instruction: String,
        /// Whether the task takes tool motion from an operator (end-effector actions).
        cartesian: bool,
    },
    /// The session's state.
    Status(Box<Status>),
    /// A camera's newest view (about 5 a second).
    Frame {
        /// The camera's name.
        camera: String,
        /// The image as PNG, base64.
        png: String,
    },
    /// The answer to a re-arm.
    Rearm {
        /// Re-armed.
        ok: bool,
        /// Why not, or what happens now.
        message: String,
    },
    /// A refused message.
    Error {
        /// What was wrong, naming the field.
        message: String,
    },
}

/// Parses a client's text message; the error names what is wrong.
pub fn parse(text: &str) -> Result<ClientMessage, String> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("message is not JSON: {e}"))?;
    let fields: &[&str] = match v.get("type").and_then(|t| t.as_str()) {
        Some("input") => &["type", "seq", "motion", "gripper", "intervene"],
        Some("event") => &["type", "event"],
        Some("estop") | Some("rearm") => &["type"],
        Some(other) => {
            return Err(format!(
                "type `{other}`: expected input, event, estop or rearm"
            ))
        }
        None => return Err("message: no `type` field".into()),
    };
    if let Some(obj) = v.as_object() {
        if let Some(k) = obj.keys().find(|k| !fields.contains(&k.as_str())) {
            return Err(format!(
                "unknown field `{k}`: expected {}",
                fields.join(", ")
            ));
        }
    }
    if v.get("type").and_then(|t| t.as_str()) == Some("input") {
        match v.get("motion").and_then(|m| m.as_array()) {
            Some(m) if m.len() == 6 => {}
            Some(m) => {
                return Err(format!(
                    "motion has {} components: it needs 6 (x, y, z, roll, pitch, yaw)",
                    m.len()
                ))
            }
            None => return Err("motion is missing: 6 numbers (x, y, z, roll, pitch, yaw)".into()),
        }
    }
    let msg: ClientMessage = serde_json::from_value(v).map_err(|e| format!("message: {e}"))?;
    if let ClientMessage::Input {
        motion, gripper, ..
    } = &msg
    {
        if let Some(i) = motion.iter().position(|v| !(-1.0..=1.0).contains(v)) {
            return Err(format!(
                "motion[{i}] is {}: each component must be in -1..1",
                motion[i]
            ));
        }
        if !(-1.0..=1.0).contains(gripper) {
            return Err(format!("gripper is {gripper}: it must be in -1..1"));
        }
    }
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_parse_and_bad_ones_name_the_field() {
        let m = parse(
            r#"{"type":"input","seq":3,"motion":[0,0,0.5,0,0,0],"gripper":-1,"intervene":true}"#,
        )
        .unwrap();
        assert_eq!(
            m,
            ClientMessage::Input {
                seq: 3,
                motion: [0.0, 0.0, 0.5, 0.0, 0.0, 0.0],
                gripper: -1.0,
                intervene: true
            }
        );
        assert_eq!(
            parse(r#"{"type":"event","event":"failure"}"#).unwrap(),
            ClientMessage::Event {
                event: EventKind::Failure
            }
        );
        assert_eq!(parse(r#"{"type":"estop"}"#).unwrap(), ClientMessage::Estop);
        let e = parse(
            r#"{"type":"input","seq":3,"motion":[0,0,1.5,0,0,0],"gripper":0,"intervene":true}"#,
        )
        .unwrap_err();
        assert!(e.contains("motion[2]"), "{e}");
        let e = parse(r#"{"type":"input","seq":3,"motion":[0,0,0],"gripper":0,"intervene":true}"#)
            .unwrap_err();
        assert!(e.contains("motion"), "{e}");
        let e = parse(r#"{"type":"launch"}"#).unwrap_err();
        assert!(e.contains("launch"), "{e}");
        let e = parse(r#"{"type":"estop","force":true}"#).unwrap_err();
        assert!(e.contains("force"), "{e}");
        assert!(parse("not json").is_err());
    }
}
