//! The firmware's control core on the host, behind a serial port, as a board would run it
//! behind its USB serial port: every period it reads what the host sent, measures, ticks the
//! controller, drives the motors and answers. `reflex firmware-sim` runs it on a
//! pseudo-terminal with the simulated arm as its [`MotorPort`]; tests run it with the core's
//! stand-in plant.

use reflex_fw_core::wire::{BoardMode, Faults, RejectCounts, MAX_FRAME};
use reflex_fw_core::{BoardConfig, BoardStats, ConfigError, Controller, MotorPort};
use serialport::SerialPort;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the board loop reports (updated every period).
#[derive(Clone, Copy, Debug, Default)]
pub struct BoardReport {
    /// The controller's counters.
    pub stats: BoardStats,
    /// Host frames the wire refused, by reason.
    pub rejects: RejectCounts,
    /// Host frames that never arrived (gaps in their sequence numbers).
    pub host_frames_lost: u64,
    /// The controller's mode and faults.
    pub mode: BoardMode,
    /// Latched faults.
    pub faults: Faults,
    /// Its session.
    pub session: u32,
    /// Board time of the newest accepted host frame, microseconds.
    pub last_frame_us: u64,
    /// Board time now, microseconds.
    pub now_us: u64,
    /// Periods that started more than one period late.
    pub late_periods: u64,
    /// Frames not written whole (the host was not reading).
    pub send_drops: u64,
    /// Reboots so far.
    pub reboots: u64,
}

/// A running board loop.
pub struct BoardHandle {
    stop: Arc<AtomicBool>,
    reboot: Arc<AtomicBool>,
    report: Arc<Mutex<BoardReport>>,
    thread: Option<JoinHandle<()>>,
    /// Bytes the board wrote so far.
    pub bytes_out: Arc<AtomicU64>,
}

impl BoardHandle {
    /// The newest report.
    pub fn report(&self) -> BoardReport {
        match self.report.lock() {
            Ok(r) => *r,
            Err(p) => *p.into_inner(),
        }
    }

    /// Reboots the board: a fresh controller (idle, no session, counters at zero), the motors
    /// and the arm as they are.
    pub fn reboot(&self) {
        self.reboot.store(true, Ordering::Release);
    }

    /// Stops the loop (the arm keeps whatever the motors last did).
    pub fn stop(mut self) -> BoardReport {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.report()
    }
}

impl Drop for BoardHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs `cfg`'s controller over `port` with `motors`, on its own thread at `cfg.rate_hz`.
pub fn spawn_board<M: MotorPort + Send + 'static>(
    mut port: serialport::TTYPort,
    cfg: BoardConfig,
    mut motors: M,
) -> Result<BoardHandle, ConfigError> {
    let mut ctl = Controller::new(cfg)?;
    let stop = Arc::new(AtomicBool::new(false));
    let reboot = Arc::new(AtomicBool::new(false));
    let report = Arc::new(Mutex::new(BoardReport::default()));
    let bytes_out = Arc::new(AtomicU64::new(0));
    let (s, r, rep, out) = (
        stop.clone(),
        reboot.clone(),
        report.clone(),
        bytes_out.clone(),
    );
    // Reads and writes never wait: the loop keeps its period whatever the host does.
    let _ = port.set_timeout(Duration::ZERO);
    let thread = std::thread::Builder::new()
        .name("reflex-board".into())
        .spawn(move || {
            let period = Duration::from_secs_f64(1.0 / cfg.rate_hz as f64);
            let dt_s = cfg.period_s();
            let boot = Instant::now();
            let mut next = boot + period;
            let mut inbuf = [0u8; 1024];
            let mut outbuf = [0u8; MAX_FRAME];
            let mut late = 0u64;
            let mut drops = 0u64;
            let mut reboots = 0u64;
            while !s.load(Ordering::Acquire) {
                let now = Instant::now();
                if now < next {
                    std::thread::sleep(next - now);
                } else if now - next > period {
                    late += 1;
                    next = now;
                }
                next += period;
                if r.swap(false, Ordering::AcqRel) {
                    if let Ok(fresh) = Controller::new(cfg) {
                        ctl = fresh;
                        reboots += 1;
                    }
                }
                let now_us = boot.elapsed().as_micros() as u64;
                loop {
                    match port.read(&mut inbuf) {
                        Ok(n) if n > 0 => ctl.receive(&inbuf[..n], now_us),
                        _ => break,
                    }
                }
                let m = motors.measure();
                let faults_before = ctl.faults();
                let cmd = ctl.tick(now_us, &m);
                if ctl.faults() != faults_before {
                    // What the board measured when it latched (a real board's fault log).
                    let names: Vec<&str> = ctl.faults().names().collect();
                    tracing::warn!(
                        faults = ?names,
                        pos_rad = ?m.pos_rad,
                        vel_rad_s = ?m.vel_rad_s,
                        current_a = ?m.current_a,
                        "the board latched a fault"
                    );
                }
                motors.drive(&cmd, dt_s);
                // Each frame written before the next is encoded into the same buffer.
                for reply in [true, false] {
                    let n = if reply {
                        ctl.encode_reply(&mut outbuf)
                    } else if ctl.state_due() {
                        ctl.encode_state(&mut outbuf)
                    } else {
                        None
                    };
                    let Some(n) = n else { continue };
                    match port.write(&outbuf[..n]) {
                        Ok(w) if w == n => {
                            out.fetch_add(n as u64, Ordering::Relaxed);
                        }
                        _ => drops += 1,
                    }
                }
                if let Ok(mut rr) = rep.lock() {
                    let frames_before = rr.stats.frames;
                    *rr = BoardReport {
                        stats: ctl.stats(),
                        rejects: *ctl.rejects(),
                        host_frames_lost: ctl.host_frames_lost(),
                        mode: ctl.mode(),
                        faults: ctl.faults(),
                        session: ctl.session(),
                        last_frame_us: if ctl.stats().frames != frames_before {
                            now_us
                        } else {
                            rr.last_frame_us
                        },
                        now_us,
                        late_periods: late,
                        send_drops: drops,
                        reboots,
                    };
                }
            }
        })
        .map_err(|_| ConfigError::Timing)?;
    Ok(BoardHandle {
        stop,
        reboot,
        report,
        thread: Some(thread),
        bytes_out,
    })
}

/// A board configuration for `model`'s arm: its URDF's position and speed limits, its effort
/// limits as current limits at `torque_per_amp` N m/A, the given gains, rate and watchdog.
pub fn board_config_for(
    model: &reflex_core::ArmModel,
    rate_hz: u16,
    watchdog_ms: u16,
    kp_nm_per_rad: f32,
    kd_nm_s_per_rad: f32,
    torque_per_amp: f32,
) -> BoardConfig {
    use reflex_fw_core::wire::{Gains, Limits, JOINTS};
    let mut limits = Limits::default();
    for j in 0..JOINTS {
        let l = &model.limits[j];
        limits.pos_min_rad[j] = l.lower as f32;
        limits.pos_max_rad[j] = l.upper as f32;
        limits.vel_max_rad_s[j] = l.velocity as f32;
        limits.current_max_a[j] = l.effort as f32 / torque_per_amp;
    }
    BoardConfig {
        firmware: [0, 1, 0],
        joints: model.dof as u8,
        rate_hz,
        state_every: 1,
        watchdog_ms,
        limits,
        gains: Gains {
            kp_nm_per_rad: [kp_nm_per_rad; JOINTS],
            kd_nm_s_per_rad: [kd_nm_s_per_rad; JOINTS],
        },
        kp_max_nm_per_rad: [kp_nm_per_rad * 4.0; JOINTS],
        kd_max_nm_s_per_rad: [kd_nm_s_per_rad * 4.0; JOINTS],
        accel_max_rad_s2: [10.0; JOINTS],
        stop_decel_rad_s2: [10.0; JOINTS],
        torque_per_amp_nm_a: [torque_per_amp; JOINTS],
        overspeed_factor: 1.5,
        position_fault_margin_rad: 0.05,
        gripper_max_m: model
            .gripper
            .as_ref()
            .map_or(0.08, |g| g.max_width_m() as f32),
    }
}
