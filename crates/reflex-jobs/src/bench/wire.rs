//! `reflex bench wire`: the serial link's frames. How many frames a second one core encodes
//! and decodes (through the same `Receiver` the host and the board use), how many bytes each
//! message takes, and what a 1 kHz link needs of its baud rate.

use super::BenchReport;
use anyhow::Result;
use reflex_wire::*;
use std::hint::black_box;
use std::time::Instant;

/// Settings of `reflex bench wire`.
#[derive(Clone, Debug)]
pub struct BenchWireSpec {
    /// Seconds per measurement.
    pub seconds: f64,
}

fn state(i: u32) -> ToHost {
    let f = i as f32 * 1e-3;
    ToHost::State(BoardState {
        board_us: i as u64 * 1000,
        session: 0x5EED,
        pos_rad: [f.sin(), 0.3, -0.2, -1.5, 0.1, 1.6, f.cos()],
        vel_rad_s: [0.5, -0.25, 0.1, 0.0, 0.2, -0.1, 0.3],
        current_a: [1.5, 2.5, 0.5, 1.0, 0.2, 0.1, 0.05],
        gripper_m: 0.04,
        mode: BoardMode::Position,
        faults: Faults::default(),
        last_host_seq: i,
        host_rejects: 0,
    })
}

fn setpoint(i: u32) -> ToBoard {
    let f = i as f32 * 1e-3;
    ToBoard::Setpoint(Setpoint {
        pos_rad: [f.sin(), 0.3, -0.2, -1.5, 0.1, 1.6, f.cos()],
        vel_rad_s: [f.cos(), 0.0, 0.0, 0.0, 0.0, 0.0, -f.sin()],
        torque_nm: [0.0, 4.2, 0.0, 1.1, 0.0, 0.2, 0.0],
        gripper_m: 0.04,
    })
}

/// One direction: encode rate, decode rate and frame size.
fn direction<M: Wire>(
    name: &str,
    make: impl Fn(u32) -> M,
    seconds: f64,
) -> Result<(serde_json::Value, String)> {
    const BATCH: u32 = 10_000;
    let msgs: Vec<M> = (0..BATCH).map(&make).collect();
    let mut sender = Sender::new();
    let mut buf = [0u8; MAX_FRAME];
    let mut stream = Vec::with_capacity(BATCH as usize * MAX_FRAME);
    for m in &msgs {
        let (n, _) = sender
            .encode(m, &mut buf)
            .map_err(|e| anyhow::anyhow!("encoding a {name} frame: {e:?}"))?;
        stream.extend_from_slice(&buf[..n]);
    }
    let frame_bytes = stream.len() as f64 / BATCH as f64;

    let start = Instant::now();
    let mut encoded = 0u64;
    while start.elapsed().as_secs_f64() < seconds {
        for m in &msgs {
            black_box(sender.encode(black_box(m), &mut buf).ok());
        }
        encoded += BATCH as u64;
    }
    let encode_per_s = encoded as f64 / start.elapsed().as_secs_f64();

    let start = Instant::now();
    let mut decoded = 0u64;
    while start.elapsed().as_secs_f64() < seconds {
        // A fresh receiver per pass: the stream's numbers start again at 1.
        let mut rx = Receiver::<M>::new();
        for &b in &stream {
            if let Some(f) = rx.push(b) {
                black_box(f);
                decoded += 1;
            }
        }
        if rx.rejects.total() > 0 {
            anyhow::bail!("{name}: {} frames refused", rx.rejects.total());
        }
    }
    let decode_per_s = decoded as f64 / start.elapsed().as_secs_f64();
    // 10 bits a byte on a UART (start, 8 data, stop).
    let baud_at_1khz = frame_bytes * 1000.0 * 10.0;
    let line = format!(
        "{name:<16} {frame_bytes:>5.0} B/frame  encode {:>10.0} frames/s  decode {:>10.0} frames/s ({:.0} MB/s)  1 kHz needs {:.0} baud",
        encode_per_s,
        decode_per_s,
        decode_per_s * frame_bytes / 1e6,
        baud_at_1khz
    );
    let json = serde_json::json!({
        "frame_bytes": frame_bytes,
        "encode_frames_per_s": encode_per_s,
        "decode_frames_per_s": decode_per_s,
        "decode_bytes_per_s": decode_per_s * frame_bytes,
        "baud_for_1khz": baud_at_1khz,
    });
    Ok((json, line))
}

/// Runs the benchmark.
pub fn wire(spec: &BenchWireSpec) -> Result<BenchReport> {
    let (state_json, state_line) = direction("state (to host)", state, spec.seconds)?;
    let (set_json, set_line) = direction("setpoint (to board)", setpoint, spec.seconds)?;
    Ok(BenchReport {
        lines: vec![
            format!("reflex-wire protocol {PROTOCOL_VERSION}, one core"),
            state_line,
            set_line,
        ],
        json: serde_json::json!({
            "protocol": PROTOCOL_VERSION,
            "state": state_json,
            "setpoint": set_json,
        }),
    })
}
