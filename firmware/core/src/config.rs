//! The board's own configuration: fixed when the firmware is built for an arm, never changed
//! by the host (which may only tighten limits and set gains below the caps here).

use reflex_wire::{Gains, Limits, JOINTS};

/// A board's configuration.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BoardConfig {
    /// Firmware version, `[major, minor, patch]`, reported in the handshake.
    pub firmware: [u8; 3],
    /// Joint slots driven (the first `joints` of every array; the rest get no torque).
    pub joints: u8,
    /// Control rate, hertz.
    pub rate_hz: u16,
    /// The state goes to the host every this many periods: 1 on USB, more on a UART whose
    /// baud rate cannot carry a state frame (about 120 bytes) every period.
    pub state_every: u16,
    /// No valid host frame for this long starts a controlled stop, milliseconds.
    pub watchdog_ms: u16,
    /// The board's own limits: references are kept inside them and measurements beyond them
    /// are faults.
    pub limits: Limits,
    /// Gains at boot.
    pub gains: Gains,
    /// The highest stiffness the host may set, newton metres per radian.
    pub kp_max_nm_per_rad: [f32; JOINTS],
    /// The highest damping the host may set, newton metre seconds per radian.
    pub kd_max_nm_s_per_rad: [f32; JOINTS],
    /// The references' acceleration limit while tracking, radians per second squared.
    pub accel_max_rad_s2: [f32; JOINTS],
    /// Deceleration of a controlled stop, radians per second squared.
    pub stop_decel_rad_s2: [f32; JOINTS],
    /// Joint torque per ampere of motor current (torque constant times gear ratio), newton
    /// metres per ampere: turns the current limit into a torque limit.
    pub torque_per_amp_nm_a: [f32; JOINTS],
    /// A measured speed above this multiple of the speed limit is an overspeed fault.
    pub overspeed_factor: f32,
    /// A measured position this far beyond a position limit is a fault, radians.
    pub position_fault_margin_rad: f32,
    /// The widest gripper opening, metres.
    pub gripper_max_m: f32,
}

/// Why a configuration cannot run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// `joints` is zero or more than the wire carries.
    Joints,
    /// `rate_hz` or `watchdog_ms` is zero, or the watchdog is shorter than two periods.
    Timing,
    /// A value of this field is not finite, negative where it must not be, or a minimum is
    /// above its maximum.
    Field(&'static str),
}

impl core::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ConfigError::Joints => write!(f, "`joints` must be 1..={JOINTS}"),
            ConfigError::Timing => f.write_str(
                "`rate_hz` and `watchdog_ms` must be positive and the watchdog at least two periods",
            ),
            ConfigError::Field(name) => write!(f, "`{name}` is out of range"),
        }
    }
}

fn all(field: &'static str, v: &[f32], ok: impl Fn(f32) -> bool) -> Result<(), ConfigError> {
    if v.iter().all(|&x| x.is_finite() && ok(x)) {
        Ok(())
    } else {
        Err(ConfigError::Field(field))
    }
}

impl BoardConfig {
    /// Checks every field.
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.joints == 0 || self.joints as usize > JOINTS {
            return Err(ConfigError::Joints);
        }
        if self.state_every == 0 {
            return Err(ConfigError::Field("state_every"));
        }
        if self.rate_hz == 0 || (self.watchdog_ms as u32) * (self.rate_hz as u32) < 2000 {
            return Err(ConfigError::Timing);
        }
        let l = &self.limits;
        all("limits.pos_min_rad", &l.pos_min_rad, |_| true)?;
        all("limits.pos_max_rad", &l.pos_max_rad, |_| true)?;
        if l.pos_min_rad.iter().zip(&l.pos_max_rad).any(|(a, b)| a > b) {
            return Err(ConfigError::Field("limits.pos_min_rad"));
        }
        all("limits.vel_max_rad_s", &l.vel_max_rad_s, |x| x >= 0.0)?;
        all("limits.current_max_a", &l.current_max_a, |x| x >= 0.0)?;
        all("kp_max_nm_per_rad", &self.kp_max_nm_per_rad, |x| x >= 0.0)?;
        all("kd_max_nm_s_per_rad", &self.kd_max_nm_s_per_rad, |x| {
            x >= 0.0
        })?;
        let g = &self.gains;
        let within =
            |v: &[f32; JOINTS], max: &[f32; JOINTS]| v.iter().zip(max).all(|(a, b)| a <= b);
        all("gains.kp_nm_per_rad", &g.kp_nm_per_rad, |x| x >= 0.0)?;
        all("gains.kd_nm_s_per_rad", &g.kd_nm_s_per_rad, |x| x >= 0.0)?;
        if !within(&g.kp_nm_per_rad, &self.kp_max_nm_per_rad) {
            return Err(ConfigError::Field("gains.kp_nm_per_rad"));
        }
        if !within(&g.kd_nm_s_per_rad, &self.kd_max_nm_s_per_rad) {
            return Err(ConfigError::Field("gains.kd_nm_s_per_rad"));
        }
        all("accel_max_rad_s2", &self.accel_max_rad_s2, |x| x > 0.0)?;
        all("stop_decel_rad_s2", &self.stop_decel_rad_s2, |x| x > 0.0)?;
        all("torque_per_amp_nm_a", &self.torque_per_amp_nm_a, |x| {
            x > 0.0
        })?;
        all("overspeed_factor", &[self.overspeed_factor], |x| x >= 1.0)?;
        all(
            "position_fault_margin_rad",
            &[self.position_fault_margin_rad],
            |x| x >= 0.0,
        )?;
        all("gripper_max_m", &[self.gripper_max_m], |x| x >= 0.0)?;
        Ok(())
    }

    /// The control period, seconds.
    pub fn period_s(&self) -> f32 {
        1.0 / self.rate_hz as f32
    }

    /// The torque limit of joint `j`, newton metres.
    pub fn torque_max_nm(&self, j: usize) -> f32 {
        self.limits.current_max_a[j] * self.torque_per_amp_nm_a[j]
    }
}
