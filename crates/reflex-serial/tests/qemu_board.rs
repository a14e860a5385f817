//! SerialRobot against the firmware's board image itself, running on QEMU's emulated
//! Cortex-M4F (MPS2-AN386) with its UART0 on a pseudo-terminal: the handshake, position
//! control of the image's stand-in plant, the round trip, and the board's watchdog when the
//! host goes silent. scripts/test-firmware.sh builds the image and runs this test with
//! `REFLEX_BOARD_IMAGE` naming it (`--ignored`: a plain `cargo test` has no image to run).

use reflex_core::{ArmModel, JointCommand, Robot, RobotState, SafetyLimits};
use reflex_runtime::EStop;
use reflex_serial::{SerialParams, SerialRobot};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const HOME: [f64; 7] = [0.0, -0.2, 0.0, -2.3, 0.0, 2.1, 0.785];

/// QEMU, killed when dropped.
struct Qemu(std::process::Child);

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
#[ignore = "needs the board image: scripts/test-firmware.sh builds it and runs this test"]
fn the_board_image_on_an_emulated_cortex_m4f_keeps_a_session() {
    let image = std::env::var("REFLEX_BOARD_IMAGE")
        .expect("REFLEX_BOARD_IMAGE names the board image (scripts/test-firmware.sh sets it)");
    let mut child = Command::new("qemu-system-arm")
        .args(["-cpu", "cortex-m4", "-machine", "mps2-an386", "-nographic"])
        .args(["-monitor", "none", "-serial", "pty", "-kernel", &image])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("qemu-system-arm runs");
    let out = child.stdout.take().unwrap();
    let qemu = Qemu(child);
    // "char device redirected to /dev/pts/N (label serial0)"
    let mut path = None;
    for line in BufReader::new(out).lines().take(5) {
        let line = line.unwrap();
        if let Some(i) = line.find("/dev/pts/") {
            path = Some(line[i..].split_whitespace().next().unwrap().to_owned());
            break;
        }
    }
    let path = path.expect("QEMU names the pseudo-terminal of UART0");

    let urdf = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../urdf/reflex_arm.urdf");
    let model = ArmModel::from_urdf_file(&urdf, "link0", "tcp").unwrap();
    let limits = SafetyLimits::from_model(&model);
    let params = SerialParams {
        // The image's stand-in plant has no gravity.
        gravity_feedforward: false,
        // An emulated CPU on a shared machine: allow for pauses.
        state_timeout_ms: 100,
        ..SerialParams::new(&path)
    };
    let mut robot = SerialRobot::open(&params, model, EStop::new()).unwrap();
    robot.start(&limits, Duration::from_secs(10)).unwrap();
    let ack = *robot.board().unwrap();
    assert_eq!(
        (ack.firmware, ack.joints, ack.rate_hz),
        ([0, 1, 0], 7, 1000)
    );

    // Setpoints at 50 Hz (well inside the image's 50 ms watchdog) and states at its 100 Hz: QEMU
    // hands the emulated UART's receiver a few kilobytes a second, far less than its baud
    // rate, so a 1 kHz stream of setpoints would queue.
    let mut state = RobotState::default();
    let start = Instant::now();
    let mut fresh = 0;
    for i in 0..120u64 {
        if robot.read_state(&mut state).is_ok() {
            fresh += 1;
        }
        let mut q = HOME;
        q[0] += 0.3 * (i as f64 / 120.0);
        if let Err(e) = robot.write_command(&JointCommand {
            joint_pos_rad: q,
            gripper_width_m: 0.04,
        }) {
            panic!("command {i}: {e}; {:?}", robot.health());
        }
        if let Some(d) =
            (start + Duration::from_millis(20 * (i + 1))).checked_duration_since(Instant::now())
        {
            std::thread::sleep(d);
        }
    }
    // The emulated UART queues: hold the last setpoint (feeding the board's watchdog) until
    // the measured joint arrives, for up to 10 s.
    let target = HOME[0] + 0.3 * (119.0 / 120.0);
    let settle = Instant::now();
    while settle.elapsed() < Duration::from_secs(10) {
        let mut q = HOME;
        q[0] = target;
        robot
            .write_command(&JointCommand {
                joint_pos_rad: q,
                gripper_width_m: 0.04,
            })
            .unwrap();
        std::thread::sleep(Duration::from_millis(20));
        if robot.read_state(&mut state).is_ok() && (state.joint_pos_rad[0] - target).abs() < 0.01 {
            break;
        }
    }
    let link = robot.link_stats();
    eprintln!(
        "QEMU board: {fresh} of 120 reads fresh; joint 0 at {:.4} rad after {:.2} s more; {} \
         states, {} lost, round trip p50 {:?} us p99 {:?} us",
        state.joint_pos_rad[0],
        settle.elapsed().as_secs_f64(),
        link.reader.states,
        link.reader.lost,
        link.rtt_percentile_us(50.0),
        link.rtt_percentile_us(99.0)
    );
    assert!(
        (state.joint_pos_rad[0] - (HOME[0] + 0.3)).abs() < 0.02,
        "{:?}",
        state.joint_pos_rad
    );
    assert_eq!(link.reader.rejects.total(), 0);
    assert!(fresh > 80, "{fresh} of 120 reads fresh");
    robot.stop();
    drop(qemu);
}
