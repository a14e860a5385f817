//! The Reflex joint controller on a Cortex-M4F board: the control core ([`Controller`]) at
//! 1 kHz behind the board's UART0, the link to the host.
//!
//! Built for the MPS2-AN386 (a Cortex-M4F FPGA image that QEMU emulates exactly, so CI runs
//! the very image it builds): its CMSDK UART0 carries the host's frames, received by interrupt
//! into a ring buffer; SysTick paces the control period. The board's motors and encoders are a
//! [`MotorPort`]: QEMU has none, so this image drives the core's stand-in [`Plant`]. A real
//! arm's board implements `MotorPort` over its encoders and motor drivers and keeps everything
//! else.
//!
//! cortex-m-rt rather than embassy: the board does one thing at a fixed rate (a polled
//! SysTick, one receive interrupt), and a superloop has no executor between the period and
//! the motors, a smaller image, and nothing to reason about for worst-case timing.
//!
//! `qemu-system-arm -cpu cortex-m4 -machine mps2-an386 -nographic -serial pty -kernel IMAGE`
//! runs it with UART0 on a pseudo-terminal.
#![no_std]
#![no_main]

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicUsize, Ordering};
use cortex_m::interrupt::InterruptNumber;
use cortex_m::peripheral::syst::SystClkSource;
use cortex_m_rt::{entry, exception};
use panic_halt as _;
use reflex_fw_core::plant::Plant;
use reflex_fw_core::wire::{Gains, Limits, JOINTS, MAX_FRAME};
use reflex_fw_core::{BoardConfig, Controller, MotorPort};

/// The MPS2's system clock, hertz.
const SYSCLK_HZ: u32 = 25_000_000;
/// The link's baud rate: the CMSDK UART's fastest (divider 16). QEMU paces its emulated UART
/// by it too.
const BAUD: u32 = 1_562_500;

/// The arm this image drives: the seven joints of `urdf/reflex_arm.urdf` (its position and
/// speed limits; its effort limits at 2 N m/A), at 1 kHz, with a 50 ms link watchdog.
fn board_config() -> BoardConfig {
    BoardConfig {
        firmware: [0, 1, 0],
        joints: 7,
        rate_hz: 1000,
        // 100 states a second: a state frame every period needs about 1.2 Mbaud, more than
        // this UART carries once the host's setpoints share it.
        state_every: 10,
        watchdog_ms: 50,
        limits: Limits {
            pos_min_rad: [
                -2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973,
            ],
            pos_max_rad: [2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973],
            vel_max_rad_s: [2.175, 2.175, 2.175, 2.175, 2.61, 2.61, 2.61],
            current_max_a: [43.5, 43.5, 43.5, 43.5, 6.0, 6.0, 6.0],
        },
        gains: Gains {
            kp_nm_per_rad: [100.0; JOINTS],
            kd_nm_s_per_rad: [5.0; JOINTS],
        },
        kp_max_nm_per_rad: [400.0; JOINTS],
        kd_max_nm_s_per_rad: [20.0; JOINTS],
        accel_max_rad_s2: [10.0; JOINTS],
        stop_decel_rad_s2: [10.0; JOINTS],
        torque_per_amp_nm_a: [2.0; JOINTS],
        overspeed_factor: 1.5,
        position_fault_margin_rad: 0.05,
        gripper_max_m: 0.08,
    }
}

/// The CMSDK APB UART's registers.
struct Uart(usize);

impl Uart {
    const DATA: usize = 0x00;
    const STATE: usize = 0x04;
    const CTRL: usize = 0x08;
    const INTCLEAR: usize = 0x0C;
    const BAUDDIV: usize = 0x10;
    const TX_FULL: u32 = 1 << 0;
    const RX_FULL: u32 = 1 << 1;

    fn reg(&self, offset: usize) -> *mut u32 {
        (self.0 + offset) as *mut u32
    }

    /// Transmit and receive on, receive interrupt on.
    fn init(&self, baud: u32) {
        // SAFETY: the UART's registers, at the address the board's memory map gives.
        unsafe {
            self.reg(Self::BAUDDIV)
                .write_volatile((SYSCLK_HZ / baud).max(16));
            self.reg(Self::CTRL).write_volatile(0b1011);
        }
    }

    fn read(&self) -> Option<u8> {
        // SAFETY: as in `init`.
        unsafe {
            if self.reg(Self::STATE).read_volatile() & Self::RX_FULL == 0 {
                return None;
            }
            let b = self.reg(Self::DATA).read_volatile() as u8;
            self.reg(Self::INTCLEAR).write_volatile(0b10);
            Some(b)
        }
    }

    fn write_all(&self, bytes: &[u8]) {
        for &b in bytes {
            // SAFETY: as in `init`.
            unsafe {
                while self.reg(Self::STATE).read_volatile() & Self::TX_FULL != 0 {}
                self.reg(Self::DATA).write_volatile(b as u32);
            }
        }
    }
}

const UART0: Uart = Uart(0x4000_4000);

/// UART0's receive interrupt on the MPS2-AN386.
#[derive(Clone, Copy)]
struct Uart0Rx;

// SAFETY: IRQ 0 is UART0's receive interrupt in the AN386's interrupt map.
unsafe impl InterruptNumber for Uart0Rx {
    fn number(self) -> u16 {
        0
    }
}

/// Bytes from the host: written by the receive interrupt, read by the control loop. One
/// producer, one consumer; a full ring drops the byte and counts it (the frame's CRC or COBS
/// then refuses the frame, and the counters say why).
struct Ring {
    buf: UnsafeCell<[u8; 1024]>,
    head: AtomicUsize,
    tail: AtomicUsize,
    dropped: AtomicUsize,
}

// SAFETY: `push` runs only in the receive interrupt and `pop` only in the main loop; each
// index is written by one side only, and a slot is published by the release store of `head`.
unsafe impl Sync for Ring {}

impl Ring {
    fn push(&self, b: u8) {
        let head = self.head.load(Ordering::Relaxed);
        let next = (head + 1) % 1024;
        if next == self.tail.load(Ordering::Acquire) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // SAFETY: slot `head` is not visible to the consumer until `head` moves past it.
        unsafe { (*self.buf.get())[head] = b };
        self.head.store(next, Ordering::Release);
    }

    fn pop(&self) -> Option<u8> {
        let tail = self.tail.load(Ordering::Relaxed);
        if tail == self.head.load(Ordering::Acquire) {
            return None;
        }
        // SAFETY: the producer published slot `tail` before moving `head` past it.
        let b = unsafe { (*self.buf.get())[tail] };
        self.tail.store((tail + 1) % 1024, Ordering::Release);
        Some(b)
    }
}

static RX: Ring = Ring {
    buf: UnsafeCell::new([0; 1024]),
    head: AtomicUsize::new(0),
    tail: AtomicUsize::new(0),
    dropped: AtomicUsize::new(0),
};

/// Every device interrupt lands here (no device crate): UART0's receive is the only one on.
#[exception]
unsafe fn DefaultHandler(irqn: i16) {
    if irqn == 0 {
        while let Some(b) = UART0.read() {
            RX.push(b);
        }
    }
}

#[entry]
fn main() -> ! {
    let cfg = board_config();
    // In a static, so the image's RAM figure counts the controller (frame buffers and all).
    let Some(ctl) = Controller::new(cfg)
        .ok()
        .and_then(|c| cortex_m::singleton!(: Controller = c))
    else {
        // A configuration that does not check never drives a motor.
        #[allow(clippy::empty_loop)]
        loop {}
    };
    // QEMU has no motors: the stand-in plant is the arm.
    let mut motors = Plant::at([0.0, -0.2, 0.0, -2.3, 0.0, 2.1, 0.785], 2.0);
    let Some(mut cp) = cortex_m::Peripherals::take() else {
        #[allow(clippy::empty_loop)]
        loop {}
    };
    UART0.init(BAUD);
    // SAFETY: the receive handler shares only the ring with the main loop.
    unsafe { cortex_m::peripheral::NVIC::unmask(Uart0Rx) };
    cp.SYST.set_clock_source(SystClkSource::Core);
    cp.SYST.set_reload(SYSCLK_HZ / cfg.rate_hz as u32 - 1);
    cp.SYST.clear_current();
    cp.SYST.enable_counter();

    let period_us = 1_000_000 / cfg.rate_hz as u64;
    let dt_s = cfg.period_s();
    let mut now_us = 0u64;
    let mut chunk = [0u8; 64];
    let mut out = [0u8; MAX_FRAME];
    loop {
        while !cp.SYST.has_wrapped() {}
        now_us += period_us;
        loop {
            let mut n = 0;
            while n < chunk.len() {
                match RX.pop() {
                    Some(b) => {
                        chunk[n] = b;
                        n += 1;
                    }
                    None => break,
                }
            }
            if n == 0 {
                break;
            }
            ctl.receive(&chunk[..n], now_us);
        }
        let cmd = ctl.tick(now_us, &MotorPort::measure(&mut motors));
        motors.drive(&cmd, dt_s);
        if let Some(n) = ctl.encode_reply(&mut out) {
            UART0.write_all(&out[..n]);
        }
        if ctl.state_due() {
            if let Some(n) = ctl.encode_state(&mut out) {
                UART0.write_all(&out[..n]);
            }
        }
    }
}
