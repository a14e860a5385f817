//! Whatever the host sends (any message, any numbers, noise, silence) and whatever the sensors
//! read, the board never commands a torque beyond its current limits, never a non-finite one,
//! keeps its references inside its own position limits, and stops tracking once the link has
//! been silent for the watchdog time.

use proptest::prelude::*;
use reflex_fw_core::checks::test_config;
use reflex_fw_core::plant::Plant;
use reflex_fw_core::wire::*;
use reflex_fw_core::{Controller, Measured};

#[derive(Clone, Debug)]
enum Op {
    /// A well-formed message with arbitrary numbers (finite or not: a non-finite one is sent
    /// raw, as a faulty host would).
    Send(u8, [f32; 8], u32),
    /// Arbitrary bytes on the line.
    Noise(Vec<u8>),
    /// Periods of control, with the sensors read through a corruption mask.
    Run(u16, u8),
    /// Time passes without ticks (a stalled board loop), microseconds.
    Gap(u32),
}

fn value() -> impl Strategy<Value = f32> {
    prop_oneof![
        6 => -5.0f32..5.0,
        1 => Just(f32::NAN),
        1 => Just(f32::INFINITY),
        1 => -1e6f32..1e6,
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..9, prop::array::uniform8(value()), any::<u32>()).prop_map(|(k, v, n)| Op::Send(k, v, n)),
        1 => prop::collection::vec(any::<u8>(), 0..80).prop_map(Op::Noise),
        6 => (1u16..300, any::<u8>()).prop_map(|(n, m)| Op::Run(n, m)),
        1 => (0u32..200_000).prop_map(Op::Gap),
    ]
}

fn message(kind: u8, v: [f32; 8], n: u32) -> ToBoard {
    let spread = |i: usize| -> [f32; JOINTS] { core::array::from_fn(|j| v[(i + j) % 8]) };
    match kind {
        0 => ToBoard::Hello(Hello { nonce: n }),
        1 | 2 => ToBoard::Setpoint(Setpoint {
            pos_rad: spread(0),
            vel_rad_s: spread(1),
            torque_nm: spread(2).map(|t| t * 10.0),
            gripper_m: v[7],
        }),
        3 => ToBoard::Gains(Gains {
            kp_nm_per_rad: spread(0).map(|x| x.abs() * 100.0),
            kd_nm_s_per_rad: spread(1).map(|x| x.abs() * 5.0),
        }),
        4 => ToBoard::Limits(Limits {
            pos_min_rad: spread(0),
            pos_max_rad: spread(1),
            vel_max_rad_s: spread(2),
            current_max_a: spread(3).map(|x| x * 4.0),
        }),
        5 => ToBoard::Mode(
            [ModeRequest::Idle, ModeRequest::Position, ModeRequest::Hold][n as usize % 3],
        ),
        6 => ToBoard::EStop,
        7 => ToBoard::Rearm,
        _ => ToBoard::Heartbeat,
    }
}

/// The frame for `m`, non-finite numbers included (built by hand: the encoder refuses them).
fn frame(m: &ToBoard, seq: u32) -> Vec<u8> {
    let mut raw = vec![PROTOCOL_VERSION, m.kind()];
    raw.extend_from_slice(&seq.to_le_bytes());
    let mut payload = [0u8; MAX_PAYLOAD];
    let n = m.encode_payload(&mut payload).unwrap();
    raw.extend_from_slice(&payload[..n]);
    let crc = crc32(&raw);
    raw.extend_from_slice(&crc.to_le_bytes());
    let mut line = vec![0u8; MAX_FRAME];
    let n = encode_raw(&raw, &mut line).unwrap();
    line.truncate(n);
    line
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn the_board_never_commands_beyond_its_limits(ops in prop::collection::vec(op(), 1..60)) {
        let cfg = test_config();
        let mut ctl = Controller::new(cfg).unwrap();
        let mut plant = Plant::at([0.0; JOINTS], cfg.torque_per_amp_nm_a[0]);
        let mut now_us = 1_000u64;
        let mut seq = 1u32;
        let mut last_frame_us = 0u64;
        let n = cfg.joints as usize;
        for op in ops {
            match op {
                Op::Send(k, v, nonce) => {
                    let m = message(k, v, nonce);
                    let before = ctl.stats().frames;
                    ctl.receive(&frame(&m, seq), now_us);
                    seq += 1;
                    if ctl.stats().frames > before {
                        last_frame_us = now_us;
                    }
                }
                Op::Noise(bytes) => ctl.receive(&bytes, now_us),
                Op::Gap(us) => now_us += us as u64,
                Op::Run(periods, mask) => {
                    for i in 0..periods {
                        let mut m: Measured = plant.measure();
                        // Now and then a sensor lies.
                        if mask & 0x80 != 0 && i % 37 == 0 {
                            m.pos_rad[(mask & 7) as usize % n] = [f32::NAN, 9.0, -9.0][i as usize % 3];
                        }
                        if mask & 0x40 != 0 && i % 53 == 0 {
                            m.current_a[(mask & 7) as usize % n] = 50.0;
                        }
                        let cmd = ctl.tick(now_us, &m);
                        for j in 0..JOINTS {
                            let t = cmd.torque_nm[j];
                            prop_assert!(t.is_finite());
                            let limit = cfg.limits.current_max_a[j] * cfg.torque_per_amp_nm_a[j];
                            prop_assert!(t.abs() <= limit * (1.0 + 1e-6), "joint {j}: {t} N m");
                            if j >= n || !cmd.enabled {
                                prop_assert_eq!(t, 0.0);
                            }
                            let r = ctl.reference_rad()[j];
                            prop_assert!(r >= cfg.limits.pos_min_rad[j] && r <= cfg.limits.pos_max_rad[j]);
                        }
                        prop_assert!((0.0..=cfg.gripper_max_m).contains(&cmd.gripper_m));
                        if ctl.mode() == BoardMode::Idle {
                            prop_assert!(!cmd.enabled);
                        }
                        if now_us.saturating_sub(last_frame_us) > cfg.watchdog_ms as u64 * 1000 + 1000 {
                            prop_assert!(ctl.mode() != BoardMode::Position, "tracking a silent host");
                        }
                        let mut out = [0u8; MAX_FRAME];
                        prop_assert!(ctl.encode_state(&mut out).is_some(), "the state always encodes");
                        plant.step(&cmd, 0.001);
                        // Keep the stand-in plant finite whatever it was told.
                        for p in plant.pos_rad.iter_mut().chain(plant.vel_rad_s.iter_mut()) {
                            if !p.is_finite() { *p = 0.0; }
                        }
                        now_us += 1000;
                    }
                }
            }
        }
    }
}
