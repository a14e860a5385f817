//! The operator hub: every client's messages become the runtime's [`OperatorCommand`]s, sent to
//! its operator cell, and its e-stop presses and re-arms. One hub per session, shared by every
//! connection (and by native devices), so event counts are one count: the runtime acts on each
//! increase.
//!
//! Commands that arrive already made (ROS `TwistStamped`/`Joy` through the bridge:
//! [`OperatorHub::command`]) are a second source. The hub arbitrates between the two: a source
//! that holds (a held control, or a twist that moves) keeps the arm until it lets go or falls
//! silent for [`DRIVER_SILENCE`]; meanwhile the other source's released commands do not reach
//! the runtime (they would hand the arm back between two of the driver's messages). Each
//! source's success, failure and re-record presses are counted by the source, and the hub adds
//! each source's increase to the one count the runtime sees, so a source's own count never
//! reads as a press of the other's.

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
    /// Commands from another source ([`OperatorHub::command`]).
    pub commands: AtomicU64,
    /// Commands held back because the other source was driving.
    pub yielded: AtomicU64,
}

/// How long a source that holds the arm may stay silent before another source may take it.
pub const DRIVER_SILENCE: std::time::Duration = std::time::Duration::from_millis(500);

/// Where a command came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The page's connections and native devices (one shared state).
    Clients,
    /// Commands made elsewhere (ROS topics through the bridge).
    Ros,
}

struct Latest {
    /// The clients' command; its events are the session's one count.
    command: OperatorCommand,
    clients_at: Option<std::time::Instant>,
    /// The other source's newest command, when, and the event counts it carried.
    ros: Option<(OperatorCommand, std::time::Instant)>,
    /// The event counts the other source last carried (`None` before its first command: its
    /// count then is its history, not presses).
    ros_seen: Option<OperatorEvents>,
    driver: Option<Source>,
}

/// Whether a command drives the arm: a held control, or a magnitude takeover that moves.
fn holding(c: &OperatorCommand) -> bool {
    match c.takeover {
        Takeover::Held => true,
        Takeover::Released => false,
        Takeover::ByMagnitude => {
            let a = c.action.as_slice();
            a[..a.len().saturating_sub(1)].iter().any(|v| *v != 0.0)
        }
    }
}

impl Latest {
    fn of(&self, s: Source) -> Option<(OperatorCommand, std::time::Instant)> {
        match s {
            Source::Clients => self.clients_at.map(|t| (self.command, t)),
            Source::Ros => self.ros,
        }
    }

    /// Whether `from`'s newest command may reach the runtime now (and who drives after it).
    fn arbitrate(&mut self, from: Source, now: std::time::Instant) -> bool {
        if let Some(d) = self.driver.filter(|d| *d != from) {
            let still = self
                .of(d)
                .is_some_and(|(c, t)| holding(&c) && now.duration_since(t) < DRIVER_SILENCE);
            if still {
                return false;
            }
        }
        let holds = self.of(from).is_some_and(|(c, _)| holding(&c));
        self.driver = holds.then_some(from);
        true
    }

    /// The driver's newest command (the clients' when nobody drives), with the one count.
    fn current(&self) -> OperatorCommand {
        let mut c = match (self.driver, self.ros) {
            (Some(Source::Ros), Some((r, _))) => r,
            _ => self.command,
        };
        c.events = self.command.events;
        c
    }
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
                clients_at: None,
                ros: None,
                ros_seen: None,
                driver: None,
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
                let now = std::time::Instant::now();
                let command = {
                    let mut l = self.latest.lock().unwrap_or_else(|p| p.into_inner());
                    l.command.action = action;
                    l.command.received = Some(now);
                    l.command.takeover = if *intervene {
                        Takeover::Held
                    } else {
                        Takeover::Released
                    };
                    l.clients_at = Some(now);
                    l.arbitrate(Source::Clients, now).then_some(l.command)
                };
                match command {
                    Some(c) => self.tx.send(c),
                    None => {
                        self.stats.yielded.fetch_add(1, Ordering::Relaxed);
                    }
                }
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
                    l.current()
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

    /// Takes a command made by another source (ROS topics through the bridge): arbitrated
    /// with the clients' (module doc), its event presses added to the session's count.
    pub fn command(&self, from: Source, mut c: OperatorCommand) {
        let now = std::time::Instant::now();
        let forward = {
            let mut l = self.latest.lock().unwrap_or_else(|p| p.into_inner());
            // The source's presses since its last command (a source that restarted counts
            // from zero again: nothing is pressed by that).
            let seen = l.ros_seen.unwrap_or(c.events);
            let up = |now: u32, before: u32| now.saturating_sub(before);
            let (s, f, r) = (
                up(c.events.success, seen.success),
                up(c.events.failure, seen.failure),
                up(c.events.rerecord, seen.rerecord),
            );
            l.ros_seen = Some(c.events);
            let e = &mut l.command.events;
            e.success += s;
            e.failure += f;
            e.rerecord += r;
            let pressed = s + f + r > 0;
            c.events = l.command.events;
            if c.received.is_none() {
                c.received = Some(now);
            }
            l.ros = Some((c, now));
            if l.arbitrate(from, now) {
                Some(l.current())
            } else if pressed {
                // Another source drives; the press still counts.
                Some(l.current())
            } else {
                None
            }
        };
        match forward {
            Some(c) => self.tx.send(c),
            None => {
                self.stats.yielded.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.stats.commands.fetch_add(1, Ordering::Relaxed);
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

    fn twist(x: f32, success: u32) -> OperatorCommand {
        let mut a = Action::zeros(ActionSpace::EeDelta);
        a.as_mut_slice()[0] = x;
        let mut c = OperatorCommand::released(ActionSpace::EeDelta);
        c.action = a;
        c.takeover = Takeover::ByMagnitude;
        c.events.success = success;
        c
    }

    fn input(hub: &OperatorHub, z: f64, intervene: bool) {
        hub.apply(&ClientMessage::Input {
            seq: 1,
            motion: [0.0, 0.0, z, 0.0, 0.0, 0.0],
            gripper: 1.0,
            intervene,
        });
    }

    #[test]
    fn a_ros_operator_and_the_page_take_turns_and_their_presses_stay_their_own() {
        //! Before the hub arbitrated, ROS commands went straight to the runtime's cell beside
        //! the page's: the page's released inputs handed the arm back between two twists, and a
        //! ROS node whose own success count was 3 read as three presses against the page's 0.
        let (tx, mut rx) = latest::<OperatorCommand>();
        let hub = OperatorHub::new(tx, ActionSpace::EeDelta, EStop::new());
        // The page streams released inputs; a ROS node that has counted 3 presses in its life
        // connects, not moving: its old count is not a press.
        input(&hub, 0.0, false);
        hub.command(Source::Ros, twist(0.0, 3));
        let c = rx.take().unwrap();
        assert_eq!(c.events.success, 0, "a source's own history is not a press");
        // The twist moves: ROS drives, and the page's released stream does not hand back.
        hub.command(Source::Ros, twist(0.5, 3));
        assert_eq!(rx.take().unwrap().action.as_slice()[0], 0.5);
        input(&hub, 0.0, false);
        assert!(rx.take().is_none(), "the page yields while ROS drives");
        // Nor may the page grab the arm while ROS holds it.
        input(&hub, 1.0, true);
        assert!(rx.take().is_none());
        assert_eq!(hub.stats.yielded.load(Ordering::Relaxed), 2);
        // A press on the ROS side counts once, against the one count.
        hub.command(Source::Ros, twist(0.5, 4));
        assert_eq!(rx.take().unwrap().events.success, 1);
        // The page presses too: its press adds to the same count, and ROS keeps driving.
        hub.apply(&ClientMessage::Event {
            event: EventKind::Success,
        });
        let c = rx.take().unwrap();
        assert_eq!(c.events.success, 2);
        assert_eq!(c.takeover, Takeover::ByMagnitude);
        // ROS lets go (zero twist): the page may drive again.
        hub.command(Source::Ros, twist(0.0, 4));
        rx.take();
        input(&hub, 1.0, true);
        let c = rx.take().unwrap();
        assert_eq!(c.takeover, Takeover::Held);
        assert_eq!(c.action.as_slice()[2], 1.0);
        assert_eq!(c.events.success, 2);
        // Now the page drives: a moving twist waits for it.
        hub.command(Source::Ros, twist(0.7, 4));
        assert!(rx.take().is_none());
        // The page holds but falls silent: after DRIVER_SILENCE the twist takes over.
        std::thread::sleep(DRIVER_SILENCE + std::time::Duration::from_millis(20));
        hub.command(Source::Ros, twist(0.7, 4));
        assert_eq!(rx.take().unwrap().action.as_slice()[0], 0.7);
        // A restarted ROS node counts from zero: no press.
        hub.command(Source::Ros, twist(0.7, 0));
        assert_eq!(rx.take().unwrap().events.success, 2);
        hub.command(Source::Ros, twist(0.7, 1));
        assert_eq!(rx.take().unwrap().events.success, 3);
    }
}
