//! Random messages for the frame tests, from a small seeded generator (the fuzz test needs a
//! million of them quickly; proptest drives the same builders through its own seeds).
#![allow(dead_code)]

use reflex_wire::*;

/// splitmix64: seeded, fast, good enough to spread test inputs.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn byte(&mut self) -> u8 {
        self.next_u64() as u8
    }

    /// A finite float: mostly joint-sized values, sometimes extremes, zeros and subnormals.
    pub fn f32(&mut self) -> f32 {
        match self.below(8) {
            0 => 0.0,
            1 => -0.0,
            2 => f32::from_bits(self.next_u64() as u32 & 0x007F_FFFF), // subnormal
            3 => {
                let v = f32::from_bits(self.next_u64() as u32);
                if v.is_finite() {
                    v
                } else {
                    f32::MAX
                }
            }
            _ => (self.next_u64() as i32) as f32 * 1e-9,
        }
    }

    pub fn joints(&mut self) -> [f32; JOINTS] {
        core::array::from_fn(|_| self.f32())
    }

    pub fn limits(&mut self) -> Limits {
        Limits {
            pos_min_rad: self.joints(),
            pos_max_rad: self.joints(),
            vel_max_rad_s: self.joints(),
            current_max_a: self.joints(),
        }
    }

    pub fn board_msg(&mut self) -> ToBoard {
        match self.below(8) {
            0 => ToBoard::Hello(Hello {
                nonce: self.next_u64() as u32,
            }),
            1 | 2 => ToBoard::Setpoint(Setpoint {
                pos_rad: self.joints(),
                vel_rad_s: self.joints(),
                torque_nm: self.joints(),
                gripper_m: self.f32(),
            }),
            3 => ToBoard::Gains(Gains {
                kp_nm_per_rad: self.joints(),
                kd_nm_s_per_rad: self.joints(),
            }),
            4 => ToBoard::Limits(self.limits()),
            5 => ToBoard::Mode(
                [ModeRequest::Idle, ModeRequest::Position, ModeRequest::Hold]
                    [self.below(3) as usize],
            ),
            6 => [ToBoard::EStop, ToBoard::Rearm][self.below(2) as usize],
            _ => ToBoard::Heartbeat,
        }
    }

    pub fn host_msg(&mut self) -> ToHost {
        if self.below(8) == 0 {
            return ToHost::HelloAck(HelloAck {
                session: self.next_u64() as u32,
                firmware: [self.byte(), self.byte(), self.byte()],
                joints: self.byte(),
                rate_hz: self.next_u64() as u16,
                state_every: self.next_u64() as u16,
                watchdog_ms: self.next_u64() as u16,
                limits: self.limits(),
                torque_per_amp_nm_a: self.joints(),
            });
        }
        let modes = [
            BoardMode::Idle,
            BoardMode::Position,
            BoardMode::Stopping,
            BoardMode::Holding,
            BoardMode::EStopped,
            BoardMode::Faulted,
        ];
        ToHost::State(BoardState {
            board_us: self.next_u64() >> self.below(64),
            session: self.next_u64() as u32,
            pos_rad: self.joints(),
            vel_rad_s: self.joints(),
            current_a: self.joints(),
            gripper_m: self.f32(),
            mode: modes[self.below(6) as usize],
            faults: Faults(self.next_u64() as u16),
            last_host_seq: self.next_u64() as u32 >> self.below(32),
            host_rejects: self.next_u64() as u32 >> self.below(32),
        })
    }
}

/// Feeds `bytes` to a fresh decoder; every frame or refusal it produces.
pub fn decode_all<M: Wire>(bytes: &[u8]) -> Vec<Result<Frame<M>, Reject>> {
    let mut d = Decoder::<M>::new();
    bytes.iter().filter_map(|&b| d.push(b)).collect()
}

/// The raw bytes (header, payload, CRC) of `msg` as frame `seq`.
pub fn raw_of<M: Wire>(msg: &M, seq: u32) -> Vec<u8> {
    let mut line = [0u8; MAX_FRAME];
    let n = encode(msg, seq, &mut line).expect("a finite message encodes");
    let mut raw = [0u8; MAX_RAW];
    let m = cobs::decode(&line[1..n - 1], &mut raw).expect("its own encoding decodes");
    raw[..m].to_vec()
}

/// Replaces the CRC at the end of `raw` with the right one for its (changed) bytes.
pub fn reseal(raw: &mut [u8]) {
    let n = raw.len() - CRC_LEN;
    let crc = crc32(&raw[..n]);
    raw[n..].copy_from_slice(&crc.to_le_bytes());
}

/// Frames raw bytes for the line.
pub fn line_of(raw: &[u8]) -> Vec<u8> {
    let mut line = vec![0u8; cobs::max_encoded_len(raw.len()) + 2];
    let n = encode_raw(raw, &mut line).expect("room for the frame");
    line.truncate(n);
    line
}
