//! Native gamepads: a pad read by the session's own process (`gilrs`, behind the `gamepad`
//! feature: it needs libudev on Linux), mapped exactly as the page maps the browser's Gamepad
//! API, and fed to the same [`OperatorHub`] as protocol messages, so a native pad, the page and
//! the scripted operator are interchangeable.
//!
//! The mapping ([`PadMapper`], always built and tested): hold LB or RB to drive; left stick
//! forward/back is x, left/right is y; right stick forward/back is z, left/right is yaw; A closes
//! the gripper, B opens it; X labels the episode a success, Y a failure, Back (Select)
//! discards it to be recorded again (on the press).

use crate::protocol::{ClientMessage, EventKind};

/// The buttons the session reads (a standard pad's names, Xbox layout).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PadButton {
    /// A (bottom face button): gripper closed.
    South,
    /// B (right): gripper open.
    East,
    /// X (left): success.
    West,
    /// Y (top): failure.
    North,
    /// Back / Select: re-record (discard the episode).
    Select,
    /// LB: held to drive.
    LeftBumper,
    /// RB: held to drive.
    RightBumper,
}

/// The sticks' axes, each -1..1 with up and right positive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PadAxis {
    /// Left stick, left (-1) to right (1).
    LeftX,
    /// Left stick, back (-1) to forward (1).
    LeftY,
    /// Right stick, left to right.
    RightX,
    /// Right stick, back to forward.
    RightY,
}

/// Sticks closer to the centre than this read zero (as on the page).
pub const DEADZONE: f64 = 0.15;

/// A pad's state, and the messages the page would send for it.
#[derive(Clone, Debug)]
pub struct PadMapper {
    axes: [f64; 4],
    bumpers: [bool; 2],
    gripper: f64,
    events: Vec<EventKind>,
    seq: u64,
}

impl Default for PadMapper {
    fn default() -> Self {
        Self {
            axes: [0.0; 4],
            bumpers: [false; 2],
            gripper: 1.0,
            events: Vec::new(),
            seq: 0,
        }
    }
}

impl PadMapper {
    /// A button went down (`pressed`) or up.
    pub fn button(&mut self, b: PadButton, pressed: bool) {
        match (b, pressed) {
            (PadButton::South, true) => self.gripper = -1.0,
            (PadButton::East, true) => self.gripper = 1.0,
            (PadButton::West, true) => self.events.push(EventKind::Success),
            (PadButton::North, true) => self.events.push(EventKind::Failure),
            (PadButton::Select, true) => self.events.push(EventKind::Rerecord),
            (PadButton::LeftBumper, p) => self.bumpers[0] = p,
            (PadButton::RightBumper, p) => self.bumpers[1] = p,
            _ => {}
        }
    }

    /// An axis moved to `v` (non-finite values read as centred).
    pub fn axis(&mut self, a: PadAxis, v: f64) {
        let v = if v.is_finite() {
            v.clamp(-1.0, 1.0)
        } else {
            0.0
        };
        self.axes[a as usize] = v;
    }

    /// The pad was unplugged: nothing held, sticks centred.
    pub fn lost(&mut self) {
        self.axes = [0.0; 4];
        self.bumpers = [false; 2];
    }

    /// Whether the intervene control is held.
    pub fn holding(&self) -> bool {
        self.bumpers[0] || self.bumpers[1]
    }

    /// The `input` message for the pad's state now (the next sequence number).
    pub fn input(&mut self) -> ClientMessage {
        let d = |v: f64| if v.abs() < DEADZONE { 0.0 } else { v };
        let [lx, ly, rx, ry] = self.axes.map(d);
        self.seq += 1;
        ClientMessage::Input {
            seq: self.seq,
            motion: [ly, -lx, ry, 0.0, 0.0, -rx],
            gripper: self.gripper,
            intervene: self.holding(),
        }
    }

    /// The labelling presses since the last call, as `event` messages.
    pub fn take_events(&mut self) -> Vec<ClientMessage> {
        self.events
            .drain(..)
            .map(|event| ClientMessage::Event { event })
            .collect()
    }
}

#[cfg(feature = "gamepad")]
pub use native::NativePad;

#[cfg(feature = "gamepad")]
mod native {
    use super::{PadAxis, PadButton, PadMapper};
    use crate::hub::OperatorHub;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    /// How often the pad's state is sent (the page's rate).
    const SEND_EVERY: Duration = Duration::from_millis(33);

    /// A gamepad read on a thread of its own, feeding a session's hub.
    pub struct NativePad {
        stop: Arc<AtomicBool>,
        thread: Option<std::thread::JoinHandle<()>>,
        /// The pad's name, as the system gives it.
        pub name: String,
    }

    fn button(b: gilrs::Button) -> Option<PadButton> {
        use gilrs::Button as B;
        Some(match b {
            B::South => PadButton::South,
            B::East => PadButton::East,
            B::West => PadButton::West,
            B::North => PadButton::North,
            B::LeftTrigger => PadButton::LeftBumper,
            B::RightTrigger => PadButton::RightBumper,
            B::Select => PadButton::Select,
            _ => return None,
        })
    }

    fn axis(a: gilrs::Axis) -> Option<PadAxis> {
        use gilrs::Axis as A;
        Some(match a {
            A::LeftStickX => PadAxis::LeftX,
            A::LeftStickY => PadAxis::LeftY,
            A::RightStickX => PadAxis::RightX,
            A::RightStickY => PadAxis::RightY,
            _ => return None,
        })
    }

    impl NativePad {
        /// Opens the first connected gamepad and starts feeding `hub`. A system without a
        /// gamepad (or without access to one) is an error saying so, never a crash.
        pub fn open(hub: Arc<OperatorHub>) -> Result<Self, String> {
            let mut gilrs = gilrs::Gilrs::new().map_err(|e| {
                format!(
                    "--gamepad: the gamepad library could not start ({e}); on Linux it needs udev"
                )
            })?;
            let name = gilrs
                .gamepads()
                .next()
                .map(|(_, g)| g.name().to_owned())
                .ok_or_else(|| {
                    "--gamepad: no gamepad is connected (on Linux the user also needs read access \
                     to /dev/input/event*); the page's keys and the browser's gamepad still work"
                        .to_string()
                })?;
            let stop = Arc::new(AtomicBool::new(false));
            let thread = {
                let stop = stop.clone();
                std::thread::Builder::new()
                    .name("reflex-gamepad".into())
                    .spawn(move || {
                        let mut pad = PadMapper::default();
                        let mut last_send = Instant::now();
                        while !stop.load(Ordering::Acquire) {
                            while let Some(ev) =
                                gilrs.next_event_blocking(Some(Duration::from_millis(5)))
                            {
                                match ev.event {
                                    gilrs::EventType::ButtonPressed(b, _) => {
                                        if let Some(b) = button(b) {
                                            pad.button(b, true);
                                        }
                                    }
                                    gilrs::EventType::ButtonReleased(b, _) => {
                                        if let Some(b) = button(b) {
                                            pad.button(b, false);
                                        }
                                    }
                                    gilrs::EventType::AxisChanged(a, v, _) => {
                                        if let Some(a) = axis(a) {
                                            pad.axis(a, f64::from(v));
                                        }
                                    }
                                    gilrs::EventType::Disconnected => {
                                        tracing::warn!("the gamepad was unplugged: let go");
                                        pad.lost();
                                    }
                                    _ => {}
                                }
                                if last_send.elapsed() >= SEND_EVERY {
                                    break;
                                }
                            }
                            for e in pad.take_events() {
                                hub.apply(&e);
                            }
                            if last_send.elapsed() >= SEND_EVERY {
                                last_send = Instant::now();
                                hub.apply(&pad.input());
                            }
                        }
                        // Let go before leaving.
                        pad.lost();
                        hub.apply(&pad.input());
                    })
                    .map_err(|e| format!("--gamepad: {e}"))?
            };
            Ok(Self {
                stop,
                thread: Some(thread),
                name,
            })
        }
    }

    impl Drop for NativePad {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Release);
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pad_maps_as_the_page_does() {
        let mut p = PadMapper::default();
        // Sticks without a bumper move nothing on the arm (not held), but are read.
        p.axis(PadAxis::LeftY, 0.8);
        p.axis(PadAxis::LeftX, -0.5);
        p.axis(PadAxis::RightY, 0.1); // inside the dead zone
        p.axis(PadAxis::RightX, f64::NAN);
        match p.input() {
            ClientMessage::Input {
                seq,
                motion,
                gripper,
                intervene,
            } => {
                assert_eq!(seq, 1);
                assert_eq!(motion, [0.8, 0.5, 0.0, 0.0, 0.0, 0.0]);
                assert_eq!(gripper, 1.0);
                assert!(!intervene);
            }
            m => panic!("{m:?}"),
        }
        // Held while either bumper is down; A closes the gripper and it stays closed.
        p.button(PadButton::RightBumper, true);
        p.button(PadButton::South, true);
        p.button(PadButton::South, false);
        p.axis(PadAxis::RightX, 1.0);
        match p.input() {
            ClientMessage::Input {
                motion,
                gripper,
                intervene,
                ..
            } => {
                assert!(intervene);
                assert_eq!(gripper, -1.0);
                assert_eq!(motion[5], -1.0);
            }
            m => panic!("{m:?}"),
        }
        // X, Y, Back: a success, a failure and a re-record, each once.
        p.button(PadButton::West, true);
        p.button(PadButton::West, false);
        p.button(PadButton::North, true);
        p.button(PadButton::Select, true);
        let ev = p.take_events();
        assert_eq!(
            ev,
            vec![
                ClientMessage::Event {
                    event: EventKind::Success
                },
                ClientMessage::Event {
                    event: EventKind::Failure
                },
                ClientMessage::Event {
                    event: EventKind::Rerecord
                }
            ]
        );
        assert!(p.take_events().is_empty());
        // Unplugged: nothing held, sticks centred.
        p.lost();
        match p.input() {
            ClientMessage::Input {
                motion, intervene, ..
            } => {
                assert!(!intervene);
                assert_eq!(motion, [0.0; 6]);
            }
            m => panic!("{m:?}"),
        }
    }

    /// On a machine without a gamepad (CI's), opening one is a clear error, not a crash.
    #[cfg(feature = "gamepad")]
    #[test]
    fn a_missing_gamepad_is_a_clear_message() {
        use reflex_core::{latest, ActionSpace, OperatorCommand};
        let (tx, _rx) = latest::<OperatorCommand>();
        let hub = std::sync::Arc::new(crate::OperatorHub::new(
            tx,
            ActionSpace::EeDelta,
            reflex_runtime::EStop::new(),
        ));
        match NativePad::open(hub) {
            Ok(pad) => eprintln!("a gamepad is connected here: {}", pad.name),
            Err(e) => assert!(e.starts_with("--gamepad:"), "{e}"),
        }
    }
}
