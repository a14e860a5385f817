//! A 3Dconnexion SpaceMouse read directly from Linux's hidraw device (no system library), mapped
//! to the page's protocol messages and fed to the same [`crate::OperatorHub`], so the puck, the
//! page, a gamepad and the scripted operator are interchangeable. (On the ROS bridge, the
//! `spacenav` node's `spacenav/joy` can be the bridge's Joy topic instead: its axis layout is
//! the bridge's default mapping.)
//!
//! The mapping ([`SpaceMouseMapper`]): pushing or turning the puck past a dead zone drives (the
//! puck springs back to centre when let go, so "holding" is deflecting it; a short grace keeps
//! a takeover through brief pauses); push forward/back is x, left/right is y, up/down is z, and
//! the three turns are roll, pitch and yaw. The left button closes the gripper, the right one
//! opens it.
//!
//! The device's reports: id 1 carries the translation as three little-endian `i16` (some
//! models append the rotation in the same report, 12 bytes), id 2 the rotation, id 3 the
//! buttons as a bit mask. Full deflection reads about ±350.

use crate::hub::OperatorHub;
use crate::protocol::ClientMessage;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// USB vendor ids of 3Dconnexion devices (Logitech's, used by older models, and 3Dconnexion's).
pub const VENDORS: [u32; 2] = [0x046d, 0x256f];
/// Raw reading that counts as full deflection.
pub const FULL_SCALE: f64 = 350.0;
/// Deflections smaller than this share of full scale read zero.
pub const DEADZONE: f64 = 0.08;
/// After the puck returns to centre, the operator keeps driving this long.
pub const GRACE: Duration = Duration::from_millis(300);
/// How often the puck's state is sent (the page's rate).
const SEND_EVERY: Duration = Duration::from_millis(33);

/// A report the device sent, decoded.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Report {
    /// Translation (and, on models that send both together, rotation).
    Motion {
        /// x, y, z in the device's frame.
        translation: [i16; 3],
        /// rx, ry, rz, when in the same report.
        rotation: Option<[i16; 3]>,
    },
    /// Rotation alone.
    Rotation([i16; 3]),
    /// Buttons, bit i = button i down.
    Buttons(u32),
}

/// Why a report was not understood.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ReportError {
    /// No bytes.
    #[error("an empty report")]
    Empty,
    /// A known report id with too few bytes.
    #[error("report {id}: {len} bytes, expected at least {want}")]
    Short {
        /// The report id.
        id: u8,
        /// Its length, id included.
        len: usize,
        /// The least expected.
        want: usize,
    },
    /// A report id this reader does not use.
    #[error("report id {0}: not a SpaceMouse motion or button report")]
    Unknown(u8),
}

fn three(b: &[u8]) -> [i16; 3] {
    [
        i16::from_le_bytes([b[0], b[1]]),
        i16::from_le_bytes([b[2], b[3]]),
        i16::from_le_bytes([b[4], b[5]]),
    ]
}

/// Decodes one hidraw report (its first byte is the report id).
pub fn decode(report: &[u8]) -> Result<Report, ReportError> {
    let (&id, body) = report.split_first().ok_or(ReportError::Empty)?;
    let short = |want: usize| ReportError::Short {
        id,
        len: report.len(),
        want,
    };
    match id {
        1 if body.len() >= 12 => Ok(Report::Motion {
            translation: three(&body[..6]),
            rotation: Some(three(&body[6..12])),
        }),
        1 if body.len() >= 6 => Ok(Report::Motion {
            translation: three(&body[..6]),
            rotation: None,
        }),
        1 => Err(short(7)),
        2 if body.len() >= 6 => Ok(Report::Rotation(three(&body[..6]))),
        2 => Err(short(7)),
        3 if !body.is_empty() => {
            let mut mask = 0u32;
            for (i, b) in body.iter().take(4).enumerate() {
                mask |= u32::from(*b) << (8 * i);
            }
            Ok(Report::Buttons(mask))
        }
        3 => Err(short(2)),
        other => Err(ReportError::Unknown(other)),
    }
}

/// The puck's state, and the messages the page would send for it.
#[derive(Clone, Debug)]
pub struct SpaceMouseMapper {
    translation: [f64; 3],
    rotation: [f64; 3],
    buttons: u32,
    gripper: f64,
    last_deflected: Option<Instant>,
    seq: u64,
}

impl Default for SpaceMouseMapper {
    fn default() -> Self {
        Self {
            translation: [0.0; 3],
            rotation: [0.0; 3],
            buttons: 0,
            gripper: 1.0,
            last_deflected: None,
            seq: 0,
        }
    }
}

fn scaled(raw: [i16; 3]) -> [f64; 3] {
    raw.map(|v| {
        let v = (f64::from(v) / FULL_SCALE).clamp(-1.0, 1.0);
        if v.abs() < DEADZONE {
            0.0
        } else {
            v
        }
    })
}

impl SpaceMouseMapper {
    /// Takes one decoded report, at `now`.
    pub fn report(&mut self, r: Report, now: Instant) {
        match r {
            Report::Motion {
                translation,
                rotation,
            } => {
                self.translation = scaled(translation);
                if let Some(r) = rotation {
                    self.rotation = scaled(r);
                }
            }
            Report::Rotation(r) => self.rotation = scaled(r),
            Report::Buttons(mask) => {
                let pressed = mask & !self.buttons;
                if pressed & 1 != 0 {
                    self.gripper = -1.0;
                }
                if pressed & 2 != 0 {
                    self.gripper = 1.0;
                }
                self.buttons = mask;
            }
        }
        if self.deflected() {
            self.last_deflected = Some(now);
        }
    }

    fn deflected(&self) -> bool {
        self.translation
            .iter()
            .chain(&self.rotation)
            .any(|v| *v != 0.0)
    }

    /// The device went away: centred, not driving.
    pub fn lost(&mut self) {
        self.translation = [0.0; 3];
        self.rotation = [0.0; 3];
        self.last_deflected = None;
    }

    /// Whether the operator drives at `now`: the puck is deflected, or was within [`GRACE`].
    pub fn holding(&self, now: Instant) -> bool {
        self.deflected()
            || self
                .last_deflected
                .is_some_and(|t| now.saturating_duration_since(t) < GRACE)
    }

    /// The `input` message for the state at `now` (the next sequence number). The device's
    /// axes (x right, y toward the user, z down, as the puck reports them) become the tool's
    /// motion: forward is +x, left is +y, up is +z.
    pub fn input(&mut self, now: Instant) -> ClientMessage {
        self.seq += 1;
        let [tx, ty, tz] = self.translation;
        let [rx, ry, rz] = self.rotation;
        ClientMessage::Input {
            seq: self.seq,
            motion: [-ty, -tx, -tz, -ry, -rx, -rz],
            gripper: self.gripper,
            intervene: self.holding(now),
        }
    }
}

/// A hidraw device that is a SpaceMouse.
#[derive(Clone, Debug, PartialEq)]
pub struct Found {
    /// `/dev/hidrawN`.
    pub device: PathBuf,
    /// The device's name, as the kernel gives it.
    pub name: String,
}

/// Looks through `sys` (`/sys/class/hidraw` on a real system) for a 3Dconnexion device;
/// `dev` is where its nodes are (`/dev`). The error says what was looked for.
pub fn find(sys: &Path, dev: &Path) -> Result<Found, String> {
    let mut seen = Vec::new();
    let entries = std::fs::read_dir(sys)
        .map_err(|e| format!("--spacemouse: {}: {e} (no hidraw devices)", sys.display()))?;
    let mut names: Vec<_> = entries.flatten().map(|e| e.file_name()).collect();
    names.sort();
    for node in names {
        let uevent = sys.join(&node).join("device/uevent");
        let Ok(text) = std::fs::read_to_string(&uevent) else {
            continue;
        };
        let field = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(k).map(str::to_owned))
                .unwrap_or_default()
        };
        // HID_ID=<bus>:<vendor>:<product>, hexadecimal.
        let id = field("HID_ID=");
        let vendor = id
            .split(':')
            .nth(1)
            .and_then(|v| u32::from_str_radix(v, 16).ok());
        let name = field("HID_NAME=");
        if vendor.is_some_and(|v| VENDORS.contains(&v))
            && (vendor != Some(0x046d) || name.to_lowercase().contains("space"))
        {
            return Ok(Found {
                device: dev.join(&node),
                name,
            });
        }
        seen.push(format!("{} ({name})", node.to_string_lossy()));
    }
    Err(format!(
        "--spacemouse: no 3Dconnexion device among the hidraw devices ({}); plug one in, or \
         run ROS's spacenav node and send its twist to the bridge",
        if seen.is_empty() {
            "none".to_string()
        } else {
            seen.join(", ")
        }
    ))
}

/// A SpaceMouse read on a thread of its own, feeding a session's hub.
pub struct SpaceMouse {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The device's name.
    pub name: String,
    /// Reports not understood (counted, skipped).
    pub bad_reports: Arc<std::sync::atomic::AtomicU64>,
}

impl SpaceMouse {
    /// Opens the first SpaceMouse the system lists and starts feeding `hub`. No device, or no
    /// permission to read it, is an error saying so.
    pub fn open(hub: Arc<OperatorHub>) -> Result<Self, String> {
        let found = find(Path::new("/sys/class/hidraw"), Path::new("/dev"))?;
        let file = std::fs::File::open(&found.device).map_err(|e| {
            format!(
                "--spacemouse: {} ({}): {e} (the user needs read access: a udev rule, or the \
                 plugdev group)",
                found.device.display(),
                found.name
            )
        })?;
        Ok(Self::from_reader(file, found.name, hub))
    }

    /// Feeds `hub` from `device`, whose every read returns one report (as hidraw's do).
    pub fn from_reader(
        mut device: impl Read + Send + 'static,
        name: String,
        hub: Arc<OperatorHub>,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let bad = Arc::new(std::sync::atomic::AtomicU64::new(0));
        // Reports arrive on the reading thread; the sending thread sends the state at the
        // page's rate whether or not the device speaks (a still puck sends nothing).
        let state = Arc::new(std::sync::Mutex::new(SpaceMouseMapper::default()));
        let reader = {
            let (state, bad, stop) = (state.clone(), bad.clone(), stop.clone());
            move || {
                let mut buf = [0u8; 64];
                while !stop.load(Ordering::Acquire) {
                    match device.read(&mut buf) {
                        Ok(0) | Err(_) => {
                            tracing::warn!("the SpaceMouse went away: let go");
                            state.lock().unwrap_or_else(|p| p.into_inner()).lost();
                            return;
                        }
                        Ok(n) => match decode(&buf[..n]) {
                            Ok(r) => state
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .report(r, Instant::now()),
                            Err(_) => {
                                bad.fetch_add(1, Ordering::Relaxed);
                            }
                        },
                    }
                }
            }
        };
        // The reading thread may block in `read` until the device speaks; it is detached and
        // ends with the device.
        let _ = std::thread::Builder::new()
            .name("reflex-spacemouse-read".into())
            .spawn(reader);
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("reflex-spacemouse".into())
                .spawn(move || {
                    while !stop.load(Ordering::Acquire) {
                        std::thread::sleep(SEND_EVERY);
                        let msg = state
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .input(Instant::now());
                        hub.apply(&msg);
                    }
                    // Let go before leaving.
                    let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
                    s.lost();
                    hub.apply(&s.input(Instant::now()));
                })
                .ok()
        };
        Self {
            stop,
            thread,
            name,
            bad_reports: bad,
        }
    }
}

impl Drop for SpaceMouse {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(id: u8, v: [i16; 3]) -> Vec<u8> {
        let mut r = vec![id];
        v.iter().for_each(|x| r.extend_from_slice(&x.to_le_bytes()));
        r
    }

    #[test]
    fn reports_decode_and_malformed_ones_are_named() {
        assert_eq!(
            decode(&report(1, [10, -20, 350])).unwrap(),
            Report::Motion {
                translation: [10, -20, 350],
                rotation: None
            }
        );
        let mut both = report(1, [1, 2, 3]);
        both.extend_from_slice(&report(0, [4, 5, 6])[1..]);
        assert_eq!(
            decode(&both).unwrap(),
            Report::Motion {
                translation: [1, 2, 3],
                rotation: Some([4, 5, 6])
            }
        );
        assert_eq!(
            decode(&report(2, [-7, 0, 7])).unwrap(),
            Report::Rotation([-7, 0, 7])
        );
        assert_eq!(decode(&[3, 0b10]).unwrap(), Report::Buttons(2));
        assert_eq!(decode(&[]), Err(ReportError::Empty));
        let e = decode(&[1, 0, 0, 0]).unwrap_err();
        assert_eq!(e.to_string(), "report 1: 4 bytes, expected at least 7");
        assert_eq!(decode(&[9, 1]), Err(ReportError::Unknown(9)));
    }

    #[test]
    fn deflecting_the_puck_drives_with_a_grace_and_buttons_set_the_gripper() {
        let t0 = Instant::now();
        let mut m = SpaceMouseMapper::default();
        // Within the dead zone: not driving.
        m.report(
            Report::Motion {
                translation: [20, -20, 10],
                rotation: None,
            },
            t0,
        );
        let ClientMessage::Input {
            intervene,
            motion,
            gripper,
            seq,
        } = m.input(t0)
        else {
            panic!()
        };
        assert!(!intervene);
        assert_eq!(motion, [0.0; 6]);
        assert_eq!((gripper, seq), (1.0, 1));
        // Pushed forward (device -y), up (device -z) past full scale, turned: driving.
        m.report(
            Report::Motion {
                translation: [0, -175, -700],
                rotation: None,
            },
            t0,
        );
        m.report(Report::Rotation([0, 0, 350]), t0);
        let ClientMessage::Input {
            intervene, motion, ..
        } = m.input(t0)
        else {
            panic!()
        };
        assert!(intervene);
        assert_eq!(motion, [0.5, 0.0, 1.0, 0.0, 0.0, -1.0]);
        // Left button closes the gripper; holding it does not re-press; right opens.
        m.report(Report::Buttons(1), t0);
        let ClientMessage::Input { gripper, .. } = m.input(t0) else {
            panic!()
        };
        assert_eq!(gripper, -1.0);
        m.report(Report::Buttons(3), t0);
        let ClientMessage::Input { gripper, .. } = m.input(t0) else {
            panic!()
        };
        assert_eq!(gripper, 1.0);
        // Let go: still driving within the grace, then handed back.
        let t1 = t0 + Duration::from_millis(10);
        m.report(
            Report::Motion {
                translation: [0; 3],
                rotation: Some([0; 3]),
            },
            t1,
        );
        let ClientMessage::Input {
            intervene, motion, ..
        } = m.input(t1 + GRACE / 2)
        else {
            panic!()
        };
        assert!(intervene, "within the grace");
        assert_eq!(motion, [0.0; 6], "but commanding no motion");
        let ClientMessage::Input { intervene, .. } = m.input(t1 + GRACE * 2) else {
            panic!()
        };
        assert!(!intervene);
        // Unplugged mid-push: let go at once.
        m.report(
            Report::Motion {
                translation: [300, 0, 0],
                rotation: None,
            },
            t1,
        );
        m.lost();
        let ClientMessage::Input { intervene, .. } = m.input(t1) else {
            panic!()
        };
        assert!(!intervene);
    }

    #[test]
    fn the_device_is_found_by_vendor_and_a_missing_one_lists_what_is_there() {
        let root = std::env::temp_dir().join(format!("reflex-hidraw-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let add = |node: &str, id: &str, name: &str| {
            let d = root.join(node).join("device");
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(
                d.join("uevent"),
                format!("DRIVER=hid-generic\nHID_ID={id}\nHID_NAME={name}\n"),
            )
            .unwrap();
        };
        // A Logitech mouse (Logitech's vendor id, not a SpaceMouse) and a keyboard.
        add("hidraw0", "0003:0000046D:0000C52B", "Logitech USB Receiver");
        add("hidraw1", "0003:00001C4F:00000002", "SiGma Micro Keyboard");
        let e = find(&root, Path::new("/dev")).unwrap_err();
        assert!(e.contains("hidraw0 (Logitech USB Receiver)"), "{e}");
        assert!(e.contains("hidraw1"), "{e}");
        add(
            "hidraw2",
            "0003:0000256F:0000C635",
            "3Dconnexion SpaceMouse Compact",
        );
        let f = find(&root, Path::new("/dev")).unwrap();
        assert_eq!(f.device, Path::new("/dev/hidraw2"));
        assert_eq!(f.name, "3Dconnexion SpaceMouse Compact");
        // An older model under Logitech's id.
        std::fs::remove_dir_all(root.join("hidraw2")).unwrap();
        add(
            "hidraw3",
            "0003:0000046D:0000C626",
            "3Dconnexion SpaceNavigator",
        );
        assert_eq!(
            find(&root, Path::new("/dev")).unwrap().device,
            Path::new("/dev/hidraw3")
        );
        let e = find(&root.join("none"), Path::new("/dev")).unwrap_err();
        assert!(e.starts_with("--spacemouse:"), "{e}");
        let _ = std::fs::remove_dir_all(&root);
    }

    /// A device whose every read returns the next report, then ends.
    struct Scripted(std::collections::VecDeque<Vec<u8>>, Duration);

    impl Read for Scripted {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            std::thread::sleep(self.1);
            match self.0.pop_front() {
                Some(r) => {
                    buf[..r.len()].copy_from_slice(&r);
                    Ok(r.len())
                }
                None => Ok(0),
            }
        }
    }

    #[test]
    fn a_device_drives_the_hub_and_lets_go_when_it_goes_away() {
        use reflex_core::{latest, ActionSpace, OperatorCommand, Takeover};
        let (tx, mut rx) = latest::<OperatorCommand>();
        let hub = Arc::new(OperatorHub::new(
            tx,
            ActionSpace::EeDelta,
            reflex_runtime::EStop::new(),
        ));
        let reports: std::collections::VecDeque<Vec<u8>> = [
            report(1, [0, -350, 0]),
            vec![7, 1, 2], // not a SpaceMouse report: counted, skipped
            report(1, [0, -350, 0]),
            report(1, [0, -350, 0]),
        ]
        .into();
        let mouse = SpaceMouse::from_reader(
            Scripted(reports, Duration::from_millis(40)),
            "scripted".into(),
            hub.clone(),
        );
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut drove = false;
        while Instant::now() < deadline && !drove {
            if let Some(c) = rx.take() {
                drove = c.takeover == Takeover::Held && c.action.as_slice()[0] > 0.9;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(drove, "the puck pushed forward drives +x");
        // The device ends: after the grace, the operator lets go.
        std::thread::sleep(GRACE + Duration::from_millis(400));
        let mut last = None;
        while let Some(c) = rx.take() {
            last = Some(c);
        }
        std::thread::sleep(Duration::from_millis(80));
        if let Some(c) = rx.take() {
            last = Some(c);
        }
        assert_eq!(last.expect("still sending").takeover, Takeover::Released);
        assert_eq!(mouse.bad_reports.load(Ordering::Relaxed), 1);
    }
}
