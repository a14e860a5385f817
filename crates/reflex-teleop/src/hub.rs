//! The operator hub: every client's messages become the runtime's [`OperatorCommand`]s, sent to
//! its operator cell, and its e-stop presses and re-arms. One hub per session, shared by every
//! connection (and by native devices), so event counts are one count: the runtime acts on each
//! increase.

use crate::protocol::{ClientMessage, EventKind, ServerMessage};
use reflex_core::{Action, ActionSpace, LatestSender, OperatorCommand, OperatorEvents, Takeover};
use reflex_runtime::EStop;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// What the hub did, for the page and the session's report.
#[derive(Debug, Default)]
pub struct HubStats {
    /// Input messages passed to the runtime.
    pub inputs: AtomicU64,
    /// Messages refused (malformed, out of range, tool motion for a joint-space task).
    pub refused: AtomicU64,
    /// E-stop presses from clients.
    pub estops: AtomicU64,
    /// Success and failure presses.
    pub events: AtomicU64,
    /// The newest input's `seq`.
    pub last_seq: AtomicU64,
}

struct Latest {
    command: OperatorCommand,
}

/// Turns client messages into operator commands for one runtime.
pub struct OperatorHub {
    tx: LatestSender<OperatorCommand>,
    space: ActionSpace,
    estop: EStop,
    latest: Mutex<Latest>,
    /// Counters.
    pub stats: HubStats,
}

impl OperatorHub {
    /// A hub for a task with actions in `space`, feeding `tx` (the runtime's
    /// [`operator`](reflex_runtime::Runtime::operator) cell) and pressing `estop` (the one the
    /// runtime obeys).
    pub fn new(tx: LatestSender<OperatorCommand>, space: ActionSpace, estop: EStop) -> Self {
        Self {
            tx,
            space,
            estop,
            latest: Mutex::new(Latest {
                command: OperatorCommand::released(space),
            }),
            stats: HubStats::default(),
        }
    }

    /// Whether the task takes tool motion from an operator.
    pub fn cartesian(&self) -> bool {
        self.space == ActionSpace::EeDelta
    }

    /// Applies one client message; returns the answer to send back, if any.
    pub fn apply(&self, msg: &ClientMessage) -> Option<ServerMessage> {
        match msg {
            ClientMessage::Input {
                seq,
                motion,
                gripper,
                intervene,
            } => {
                if !self.cartesian() {
                    self.stats.refused.fetch_add(1, Ordering::Relaxed);
                    return Some(ServerMessage::Error {
                        message: format!(
                            "this task's actions are {:?}, not tool motion: the page cannot drive it",
                            self.space
                        ),
                    });
                }
                let mut action = Action::zeros(self.space);
                let a = action.as_mut_slice();
                for (o, v) in a.iter_mut().zip(motion) {
                    *o = *v as f32;
                }
                a[6] = *gripper as f32;
                let command = {
                    let mut l = self.latest.lock().unwrap_or_else(|p| p.into_inner());
                    l.command.action = action;
                    l.command.received = Some(std::time::Instant::now());
                    l.command.takeover = if *intervene {
                        Takeover::Held
                    } else {
                        Takeover::Released
                    };
                    l.command
                };
                self.tx.send(command);
                self.stats.inputs.fetch_add(1, Ordering::Relaxed);
                self.stats.last_seq.fetch_max(*seq, Ordering::Relaxed);
                None
            }
            ClientMessage::Event { event } => {
                let command = {
                    let mut l = self.latest.lock().unwrap_or_else(|p| p.into_inner());
                    let e: &mut OperatorEvents = &mut l.command.events;
                    match event {
                        EventKind::Success => e.success += 1,
                        EventKind::Failure => e.failure += 1,
                        EventKind::Rerecord => e.rerecord += 1,
                    }
                    l.command
                };
                self.tx.send(command);
                self.stats.events.fetch_add(1, Ordering::Relaxed);
                None
            }
            ClientMessage::Estop => {
                // Latched: the button comes back up at once, re-arming is separate.
                self.estop.press();
                self.estop.release();
                self.stats.estops.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("e-stop pressed on the teleop page");
                None
            }
            ClientMessage::Rearm => Some(match self.estop.rearm() {
                Ok(()) => ServerMessage::Rearm {
                    ok: true,
                    message: "re-armed: the policy ramps back in".into(),
                },
                Err(e) => ServerMessage::Rearm {
                    ok: false,
                    message: format!("not re-armed: {e}"),
                },
            }),
        }
    }

    /// Counts a message that could not be parsed.
    pub fn refuse(&self) {
        self.stats.refused.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reflex_core::latest;

    #[test]
    fn inputs_events_and_the_estop_reach_the_runtime() {
        let (tx, mut rx) = latest::<OperatorCommand>();
        let estop = EStop::new();
        let hub = OperatorHub::new(tx, ActionSpace::EeDelta, estop.clone());
        hub.apply(&ClientMessage::Input {
            seq: 1,
            motion: [0.0, 0.0, 0.5, 0.0, 0.0, 0.0],
            gripper: -1.0,
            intervene: true,
        });
        let c = rx.take().unwrap();
        assert_eq!(c.takeover, Takeover::Held);
        assert_eq!(c.action.as_slice(), &[0.0, 0.0, 0.5, 0.0, 0.0, 0.0, -1.0]);
        // An event keeps the last input and adds a press; a second one adds another.
        hub.apply(&ClientMessage::Event {
            event: EventKind::Success,
        });
        hub.apply(&ClientMessage::Event {
            event: EventKind::Success,
        });
        let c = rx.take().unwrap();
        assert_eq!(c.events.success, 2);
        assert_eq!(c.takeover, Takeover::Held);
        hub.apply(&ClientMessage::Input {
            seq: 2,
            motion: [0.0; 6],
            gripper: 1.0,
            intervene: false,
        });
        let c = rx.take().unwrap();
        assert_eq!((c.takeover, c.events.success), (Takeover::Released, 2));
        // The e-stop latches; re-arming is its own message.
        assert!(hub.apply(&ClientMessage::Estop).is_none());
        assert!(estop.is_latched());
        match hub.apply(&ClientMessage::Rearm) {
            Some(ServerMessage::Rearm { ok: true, .. }) => {}
            other => panic!("{other:?}"),
        }
        assert!(!estop.is_latched());
        // A joint-space task takes no tool motion from the page.
        let (tx, mut rx) = latest::<OperatorCommand>();
        let joint = OperatorHub::new(tx, ActionSpace::JointDelta, EStop::new());
        let r = joint.apply(&ClientMessage::Input {
            seq: 1,
            motion: [0.0; 6],
            gripper: 0.0,
            intervene: true,
        });
        assert!(matches!(r, Some(ServerMessage::Error { .. })));
        assert!(rx.take().is_none());
        assert_eq!(joint.stats.refused.load(Ordering::Relaxed), 1);
    }
}
