//! Frames from both directions: round trips, each refusal reason, the sequence rules, and
//! property tests that decoding anything never panics and never decodes a frame inexactly.

mod common;

use common::*;
use proptest::prelude::*;
use reflex_wire::*;

#[test]
fn every_message_round_trips_in_both_directions() {
    let mut rng = Rng(1);
    for seq in 1..2_000u32 {
        let m = rng.board_msg();
        let line = {
            let mut b = [0u8; MAX_FRAME];
            let n = encode(&m, seq, &mut b).unwrap();
            b[..n].to_vec()
        };
        assert!(line.len() <= MAX_FRAME);
        assert_eq!(
            decode_all::<ToBoard>(&line),
            vec![Ok(Frame { seq, msg: m })]
        );
        let h = rng.host_msg();
        let mut b = [0u8; MAX_FRAME];
        let n = encode(&h, seq, &mut b).unwrap();
        assert_eq!(
            decode_all::<ToHost>(&b[..n]),
            vec![Ok(Frame { seq, msg: h })]
        );
    }
}

#[test]
fn the_largest_messages_fit_the_frame_bounds() {
    let big = Limits {
        pos_min_rad: [f32::MAX; JOINTS],
        pos_max_rad: [f32::MAX; JOINTS],
        vel_max_rad_s: [f32::MAX; JOINTS],
        current_max_a: [f32::MAX; JOINTS],
    };
    let ack = ToHost::HelloAck(HelloAck {
        session: u32::MAX,
        firmware: [255; 3],
        joints: 255,
        rate_hz: u16::MAX,
        state_every: u16::MAX,
        watchdog_ms: u16::MAX,
        limits: big,
        torque_per_amp_nm_a: [f32::MAX; JOINTS],
    });
    let state = ToHost::State(BoardState {
        board_us: u64::MAX,
        session: u32::MAX,
        last_host_seq: u32::MAX,
        host_rejects: u32::MAX,
        faults: Faults(u16::MAX),
        ..Default::default()
    });
    for m in [ack, state] {
        let raw = raw_of(&m, u32::MAX);
        assert!(raw.len() <= MAX_RAW, "{} raw bytes", raw.len());
    }
}

#[test]
fn a_non_finite_message_is_not_sent_and_not_accepted() {
    let mut s = Setpoint::default();
    s.pos_rad[3] = f32::NAN;
    let m = ToBoard::Setpoint(s);
    assert_eq!(
        encode(&m, 1, &mut [0u8; MAX_FRAME]),
        Err(EncodeError::NonFinite)
    );
    // A peer that sends one anyway: postcard carries the NaN, the decoder refuses it.
    let mut raw = vec![PROTOCOL_VERSION, m.kind(), 1, 0, 0, 0];
    let mut payload = [0u8; MAX_PAYLOAD];
    raw.extend_from_slice(postcard::to_slice(&s, &mut payload).unwrap());
    raw.extend_from_slice(&[0; CRC_LEN]);
    reseal(&mut raw);
    assert_eq!(
        decode_all::<ToBoard>(&line_of(&raw)),
        vec![Err(Reject::NonFinite)]
    );
}

#[test]
fn each_refusal_names_its_reason() {
    let m = ToBoard::Gains(Gains::default());
    let raw = raw_of(&m, 5);
    let cases: Vec<(&str, Vec<u8>, Reject)> = vec![
        (
            "a flipped payload bit",
            {
                let mut r = raw.clone();
                r[8] ^= 0x10;
                line_of(&r)
            },
            Reject::Crc,
        ),
        (
            "a newer version",
            {
                let mut b = [0u8; MAX_FRAME];
                let n = encode_as(2, &m, 5, &mut b).unwrap();
                b[..n].to_vec()
            },
            Reject::Version {
                theirs: 2,
                kind: 0x03,
            },
        ),
        (
            "a board-to-host kind sent to the board",
            {
                let mut r = raw.clone();
                r[1] = 0x82;
                reseal(&mut r);
                line_of(&r)
            },
            Reject::Kind { kind: 0x82 },
        ),
        (
            "a byte left over",
            {
                let mut r = raw.clone();
                r.insert(r.len() - CRC_LEN, 0);
                reseal(&mut r);
                line_of(&r)
            },
            Reject::Payload,
        ),
        (
            "a byte missing",
            {
                let mut r = raw.clone();
                r.remove(r.len() - CRC_LEN - 1);
                reseal(&mut r);
                line_of(&r)
            },
            Reject::Payload,
        ),
        (
            "an over-long varint",
            {
                // Mode(Hold) is the varint 2; 0x82 0x00 is also 2 to a lenient decoder.
                let mut r = raw_of(&ToBoard::Mode(ModeRequest::Hold), 5);
                assert_eq!(r[HEADER_LEN], 2);
                r[HEADER_LEN] = 0x82;
                r.insert(HEADER_LEN + 1, 0x00);
                reseal(&mut r);
                line_of(&r)
            },
            Reject::Payload,
        ),
        (
            "a mode that does not exist",
            {
                let mut r = raw_of(&ToBoard::Mode(ModeRequest::Hold), 5);
                r[HEADER_LEN] = 3;
                reseal(&mut r);
                line_of(&r)
            },
            Reject::Payload,
        ),
        (
            "payload on a message that has none",
            {
                let mut r = raw_of(&ToBoard::EStop, 5);
                r.insert(HEADER_LEN, 1);
                reseal(&mut r);
                line_of(&r)
            },
            Reject::Payload,
        ),
        ("a frame cut short", line_of(&raw[..7]), Reject::Short),
        (
            "a zero lost from a run",
            {
                let mut l = line_of(&raw);
                // The first code byte claims more bytes than the frame has.
                l[1] = 0xFE;
                l
            },
            Reject::Cobs,
        ),
    ];
    for (what, line, want) in cases {
        assert_eq!(decode_all::<ToBoard>(&line), vec![Err(want)], "{what}");
    }
    // No delimiter for longer than any frame: refused once, then the next frame decodes.
    let mut line = vec![0x55u8; MAX_FRAME + 50];
    line.extend_from_slice(&line_of(&raw));
    assert_eq!(
        decode_all::<ToBoard>(&line),
        vec![Err(Reject::Overlong), Ok(Frame { seq: 5, msg: m })]
    );
}

#[test]
fn noise_before_a_frame_costs_nothing_but_the_noise() {
    let m = ToHost::State(BoardState::default());
    let mut line = vec![0x13, 0x37, 0x42];
    line.extend_from_slice(&line_of(&raw_of(&m, 9)));
    let got = decode_all::<ToHost>(&line);
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got[0].is_err());
    assert_eq!(got[1], Ok(Frame { seq: 9, msg: m }));
}

#[test]
fn duplicates_and_late_frames_are_refused_and_gaps_counted() {
    let mut rx = Receiver::<ToBoard>::new();
    let feed = |rx: &mut Receiver<ToBoard>, m: ToBoard, seq: u32| {
        line_of(&raw_of(&m, seq))
            .into_iter()
            .filter_map(|b| rx.push(b))
            .count()
    };
    let hb = ToBoard::Heartbeat;
    assert_eq!(feed(&mut rx, hb, 10), 1);
    assert_eq!(feed(&mut rx, hb, 11), 1);
    assert_eq!(feed(&mut rx, hb, 11), 0, "a duplicate");
    assert_eq!(feed(&mut rx, hb, 9), 0, "a late frame");
    assert_eq!(feed(&mut rx, hb, 15), 1, "three lost");
    assert_eq!((rx.seq.accepted, rx.seq.lost), (3, 3));
    assert_eq!(rx.rejects.get(Reject::Sequence), 2);
    // A new session (a Hello) may start anywhere: the sender restarted.
    assert_eq!(feed(&mut rx, ToBoard::Hello(Hello { nonce: 1 }), 1), 1);
    assert_eq!(feed(&mut rx, hb, 2), 1);
    // Half the counter's range away is in the past, not the future.
    assert_eq!(feed(&mut rx, hb, u32::MAX), 0);
    // The counter wraps.
    assert_eq!(feed(&mut rx, hb, 0x7FFF_FFF0), 1);
    assert_eq!(feed(&mut rx, hb, 0xF000_0000), 1);
    assert_eq!(feed(&mut rx, hb, u32::MAX), 1);
    assert_eq!(feed(&mut rx, hb, 0), 1);
    assert_eq!(feed(&mut rx, hb, u32::MAX), 0);
    assert_eq!(rx.rejects.total(), 4);
}

#[test]
fn the_sender_numbers_frames_from_one_and_skips_zero_on_wrap() {
    let mut s = Sender::new();
    let mut b = [0u8; MAX_FRAME];
    assert_eq!(s.encode(&ToBoard::Heartbeat, &mut b).unwrap().1, 1);
    assert_eq!(s.encode(&ToBoard::Heartbeat, &mut b).unwrap().1, 2);
}

fn any_to_board() -> impl Strategy<Value = ToBoard> {
    any::<u64>().prop_map(|s| Rng(s).board_msg())
}

fn any_to_host() -> impl Strategy<Value = ToHost> {
    any::<u64>().prop_map(|s| Rng(s).host_msg())
}

proptest! {
    #[test]
    fn round_trips(m in any_to_board(), h in any_to_host(), seq in any::<u32>()) {
        prop_assert_eq!(decode_all::<ToBoard>(&line_of(&raw_of(&m, seq))), vec![Ok(Frame { seq, msg: m })]);
        prop_assert_eq!(decode_all::<ToHost>(&line_of(&raw_of(&h, seq))), vec![Ok(Frame { seq, msg: h })]);
    }

    /// Any bytes at all: no panic, and whatever decodes is the one encoding of what it says.
    #[test]
    fn anything_decodes_exactly_or_not_at_all(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let mut d = Decoder::<ToHost>::new();
        let mut start = 0;
        for (i, &b) in bytes.iter().enumerate() {
            if let Some(Ok(f)) = d.push(b) {
                let mut raw = [0u8; MAX_RAW];
                let n = cobs::decode(&bytes[start..i], &mut raw).unwrap();
                prop_assert_eq!(raw_of(&f.msg, f.seq), raw[..n].to_vec());
            }
            if b == 0 {
                start = i + 1;
            }
        }
    }

    /// A valid frame with its CRC made right again after any change to its raw bytes:
    /// refused, or exactly the message those bytes are.
    #[test]
    fn resealed_mutations_decode_exactly_or_not_at_all(
        m in any_to_board(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let mut raw = raw_of(&m, 1);
        let i = at.index(raw.len() - CRC_LEN);
        raw[i] = byte;
        reseal(&mut raw);
        for f in decode_all::<ToBoard>(&line_of(&raw)).into_iter().flatten() {
            prop_assert_eq!(raw_of(&f.msg, f.seq), raw.clone());
        }
    }
}

/// A board that rebooted numbers its frames from 1 again; its states carry no session, and
/// the host's tracking restarts at them instead of refusing them as old (the host then sees
/// the lost session and stops the run).
#[test]
fn a_rebooted_boards_states_are_not_refused_as_old() {
    let mut rx = Receiver::<ToHost>::new();
    let mut feed = |m: ToHost, seq: u32| {
        line_of(&raw_of(&m, seq))
            .into_iter()
            .filter_map(|b| rx.push(b))
            .count()
    };
    let in_session = ToHost::State(BoardState {
        session: 42,
        ..Default::default()
    });
    assert_eq!(feed(in_session, 5000), 1);
    assert_eq!(feed(in_session, 17), 0, "an old frame of the same session");
    let rebooted = ToHost::State(BoardState::default());
    assert_eq!(feed(rebooted, 1), 1);
    assert_eq!(feed(rebooted, 2), 1);
}
