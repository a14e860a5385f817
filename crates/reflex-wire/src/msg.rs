//! The messages: what the host sends a joint board ([`ToBoard`]) and what the board answers
//! ([`ToHost`]). Every value carries its unit in its name; arrays have one slot per joint
//! ([`JOINTS`]), unused slots zero.
//!
//! Kind bytes are frozen: a kind keeps its number across protocol versions, and the handshake's
//! two ([`KIND_HELLO`], [`KIND_HELLO_ACK`]) keep their layout too, so two ends that speak
//! different versions can still tell each other which ones.

use serde::{Deserialize, Serialize};

/// Joint slots in every per-joint array (the host's arm has at most seven joints).
pub const JOINTS: usize = 7;

/// The kind byte of [`ToBoard::Hello`], the same in every protocol version.
pub const KIND_HELLO: u8 = 0x01;
/// The kind byte of [`ToHost::HelloAck`], the same in every protocol version.
pub const KIND_HELLO_ACK: u8 = 0x81;

/// The host opens a session: the board answers with [`HelloAck`], resets its sequence
/// tracking and takes this nonce as the session's id.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// A new random non-zero number per session; echoed in every [`BoardState`].
    pub nonce: u32,
}

/// Where each joint should be now, with feed-forward terms for the board's PD loop.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Setpoint {
    /// Position setpoints, radians.
    pub pos_rad: [f32; JOINTS],
    /// Velocity feed-forward, radians per second.
    pub vel_rad_s: [f32; JOINTS],
    /// Torque feed-forward (gravity, friction), newton metres.
    pub torque_nm: [f32; JOINTS],
    /// Gripper width setpoint, metres.
    pub gripper_m: f32,
}

/// PD gains of the board's position loop.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Gains {
    /// Stiffness, newton metres per radian.
    pub kp_nm_per_rad: [f32; JOINTS],
    /// Damping, newton metre seconds per radian.
    pub kd_nm_s_per_rad: [f32; JOINTS],
}

/// Joint limits. In [`HelloAck`] the board's own; from the host, limits the board applies only
/// where they are tighter than its own.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    /// Lowest position, radians.
    pub pos_min_rad: [f32; JOINTS],
    /// Highest position, radians.
    pub pos_max_rad: [f32; JOINTS],
    /// Highest speed, radians per second.
    pub vel_max_rad_s: [f32; JOINTS],
    /// Highest motor current, amperes.
    pub current_max_a: [f32; JOINTS],
}

/// What the host asks the board's controller to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ModeRequest {
    /// Motors off (brakes on where the arm has them).
    Idle,
    /// Track the newest [`Setpoint`]. Refused while e-stopped or faulted.
    Position,
    /// Controlled stop, then hold where the arm came to rest.
    Hold,
}

/// Host to board.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum ToBoard {
    /// Open a session (kind [`KIND_HELLO`]).
    Hello(Hello),
    /// The newest setpoint.
    Setpoint(Setpoint),
    /// New PD gains.
    Gains(Gains),
    /// Tighter limits.
    Limits(Limits),
    /// A mode change.
    Mode(ModeRequest),
    /// Stop now and latch until [`ToBoard::Rearm`].
    EStop,
    /// Clear latched e-stop and faults; the board then holds the arm where it is until asked
    /// for a mode.
    Rearm,
    /// The link is alive (sent when there is no setpoint to send).
    Heartbeat,
}

/// The board controller's mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum BoardMode {
    /// Motors off.
    #[default]
    Idle,
    /// Tracking setpoints.
    Position,
    /// Decelerating to rest (after a lost link or a hold request).
    Stopping,
    /// At rest, holding position.
    Holding,
    /// E-stopped: motors off, latched until re-armed.
    EStopped,
    /// A fault latched: motors off until re-armed.
    Faulted,
}

/// Latched faults, one bit each.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Faults(pub u16);

impl Faults {
    /// No valid host frame within the watchdog time.
    pub const WATCHDOG: Faults = Faults(1 << 0);
    /// The e-stop was pressed (host message or the board's own input).
    pub const ESTOP: Faults = Faults(1 << 1);
    /// A measured position left the board's limits.
    pub const POSITION_LIMIT: Faults = Faults(1 << 2);
    /// A measured speed exceeded the board's limit.
    pub const OVERSPEED: Faults = Faults(1 << 3);
    /// A motor current exceeded the board's limit.
    pub const OVERCURRENT: Faults = Faults(1 << 4);
    /// A sensor reading was not finite.
    pub const SENSOR: Faults = Faults(1 << 5);
    /// Every fault with its name, in bit order.
    pub const ALL: [(Faults, &'static str); 6] = [
        (Self::WATCHDOG, "watchdog"),
        (Self::ESTOP, "e-stop"),
        (Self::POSITION_LIMIT, "position limit"),
        (Self::OVERSPEED, "overspeed"),
        (Self::OVERCURRENT, "overcurrent"),
        (Self::SENSOR, "sensor"),
    ];

    /// True when every bit of `other` is set.
    pub const fn contains(self, other: Faults) -> bool {
        self.0 & other.0 == other.0
    }

    /// True when no fault is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Sets the bits of `other`.
    pub fn insert(&mut self, other: Faults) {
        self.0 |= other.0;
    }

    /// The names of the faults set, in bit order.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        Self::ALL
            .into_iter()
            .filter(move |(f, _)| self.contains(*f))
            .map(|(_, n)| n)
    }
}

/// The board's answer to [`Hello`]: the session begins.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct HelloAck {
    /// The Hello's nonce: the session's id.
    pub session: u32,
    /// Firmware version, `[major, minor, patch]`.
    pub firmware: [u8; 3],
    /// Joint slots the board drives (the first `joints` of every array).
    pub joints: u8,
    /// The board's control rate, hertz.
    pub rate_hz: u16,
    /// It sends its state every this many control periods (what its link carries).
    pub state_every: u16,
    /// The link watchdog: no valid host frame for this long starts a controlled stop,
    /// milliseconds.
    pub watchdog_ms: u16,
    /// The board's own limits.
    pub limits: Limits,
    /// Joint torque per ampere of motor current, newton metres per ampere: the host turns
    /// measured currents into torques with it.
    pub torque_per_amp_nm_a: [f32; JOINTS],
}

/// What the board measured, sent once per control period (or every few).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BoardState {
    /// The board's clock, microseconds since boot.
    pub board_us: u64,
    /// The session it serves (the nonce of the Hello it accepted; 0 before any: a reboot).
    pub session: u32,
    /// Measured positions, radians.
    pub pos_rad: [f32; JOINTS],
    /// Measured velocities, radians per second.
    pub vel_rad_s: [f32; JOINTS],
    /// Measured motor currents, amperes.
    pub current_a: [f32; JOINTS],
    /// Measured gripper width, metres.
    pub gripper_m: f32,
    /// The controller's mode.
    pub mode: BoardMode,
    /// Latched faults.
    pub faults: Faults,
    /// The newest host frame's sequence number it accepted.
    pub last_host_seq: u32,
    /// Host frames it rejected so far (any reason).
    pub host_rejects: u32,
}

/// Board to host.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum ToHost {
    /// The session begins (kind [`KIND_HELLO_ACK`]).
    HelloAck(HelloAck),
    /// The newest measurement.
    State(BoardState),
}

fn finite(values: &[f32]) -> bool {
    values.iter().all(|v| v.is_finite())
}

impl Limits {
    /// True when every value is finite.
    pub fn is_finite(&self) -> bool {
        finite(&self.pos_min_rad)
            && finite(&self.pos_max_rad)
            && finite(&self.vel_max_rad_s)
            && finite(&self.current_max_a)
    }
}

impl ToBoard {
    /// True when every number in it is finite.
    pub fn is_finite(&self) -> bool {
        match self {
            ToBoard::Setpoint(s) => {
                finite(&s.pos_rad)
                    && finite(&s.vel_rad_s)
                    && finite(&s.torque_nm)
                    && s.gripper_m.is_finite()
            }
            ToBoard::Gains(g) => finite(&g.kp_nm_per_rad) && finite(&g.kd_nm_s_per_rad),
            ToBoard::Limits(l) => l.is_finite(),
            _ => true,
        }
    }
}

impl ToHost {
    /// True when every number in it is finite.
    pub fn is_finite(&self) -> bool {
        match self {
            ToHost::HelloAck(a) => a.limits.is_finite() && finite(&a.torque_per_amp_nm_a),
            ToHost::State(s) => {
                finite(&s.pos_rad)
                    && finite(&s.vel_rad_s)
                    && finite(&s.current_a)
                    && s.gripper_m.is_finite()
            }
        }
    }
}
