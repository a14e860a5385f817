//! A million frames, valid, truncated, bit-flipped, of another version, of the wrong length,
//! resealed after random changes, out of order, and plain noise: every one is decoded exactly
//! (the message it was, or the one message its bytes are) or refused with a counted reason.
//! Every input yields at least one outcome (a flip that makes a zero splits a frame in two).
//! `cargo test -p reflex-wire --test fuzz -- --nocapture` prints the tally.

mod common;

use common::*;
use reflex_wire::*;

/// What became of a category's frames.
#[derive(Default)]
struct Tally {
    inputs: u64,
    exact: u64,
    rejects: RejectCounts,
}

impl Tally {
    /// Decodes `line` with a fresh decoder; accepted frames must pass `exact`.
    fn feed<M: Wire + PartialEq + core::fmt::Debug>(
        &mut self,
        line: &[u8],
        exact: impl Fn(&Frame<M>) -> bool,
    ) {
        self.inputs += 1;
        // The next frame's leading delimiter ends a frame whose own end was damaged.
        let mut stream = line.to_vec();
        stream.push(0);
        let got = decode_all::<M>(&stream);
        assert!(!got.is_empty(), "nothing came of {line:02x?}");
        for r in got {
            match r {
                Ok(f) => {
                    assert!(exact(&f), "decoded inexactly: {f:?} from {line:02x?}");
                    self.exact += 1;
                }
                Err(e) => self.rejects.add(e),
            }
        }
    }

    fn print(&self, name: &str) {
        let reasons: Vec<String> = self
            .rejects
            .iter()
            .filter(|(_, c)| *c > 0)
            .map(|(n, c)| format!("{n} {c}"))
            .collect();
        eprintln!(
            "{name:<22} {:>8} inputs {:>8} decoded  refused: {}",
            self.inputs,
            self.exact,
            reasons.join(", ")
        );
    }
}

/// The one message `line`'s frame is: re-encoding what was decoded gives the same raw bytes.
fn is_its_own_encoding<M: Wire>(line: &[u8], f: &Frame<M>) -> bool {
    let body: Vec<u8> = line.iter().copied().filter(|&b| b != 0).collect();
    let mut raw = [0u8; MAX_RAW];
    match cobs::decode(&body, &mut raw) {
        Ok(n) => raw_of(&f.msg, f.seq) == raw[..n],
        Err(_) => false,
    }
}

fn valid_line(rng: &mut Rng, seq: u32) -> (ToBoard, Vec<u8>) {
    let m = rng.board_msg();
    (m, line_of(&raw_of(&m, seq)))
}

#[test]
fn a_million_frames_decode_exactly_or_are_refused_with_a_reason() {
    let mut rng = Rng(0x5EED);
    let mut total = 0u64;

    let mut valid = Tally::default();
    for i in 0..200_000u32 {
        if i % 2 == 0 {
            let (m, line) = valid_line(&mut rng, i);
            valid.feed::<ToBoard>(&line, |f| f.msg == m && f.seq == i);
        } else {
            let h = rng.host_msg();
            let line = line_of(&raw_of(&h, i));
            valid.feed::<ToHost>(&line, |f| f.msg == h && f.seq == i);
        }
    }
    assert_eq!((valid.exact, valid.rejects.total()), (200_000, 0));
    valid.print("valid");
    total += valid.inputs;

    let mut cut = Tally::default();
    for i in 0..200_000u32 {
        let (_, line) = valid_line(&mut rng, i);
        // Keep the leading delimiter and 1..all-but-one of the body, then end the frame.
        let keep = 2 + rng.below(line.len() as u64 - 3) as usize;
        let mut short = line[..keep].to_vec();
        short.push(0);
        cut.feed::<ToBoard>(&short, |_| false);
    }
    assert_eq!(cut.exact, 0);
    cut.print("truncated");
    total += cut.inputs;

    let mut flips = Tally::default();
    for i in 0..200_000u32 {
        let (m, mut line) = valid_line(&mut rng, i);
        for _ in 0..1 + rng.below(3) {
            let at = rng.below(line.len() as u64) as usize;
            line[at] ^= 1 << rng.below(8);
        }
        flips.feed::<ToBoard>(&line, |f| f.msg == m && f.seq == i);
    }
    flips.print("bit flips");
    total += flips.inputs;

    let mut version = Tally::default();
    for i in 0..100_000u32 {
        let m = rng.board_msg();
        let v = loop {
            let v = rng.byte();
            if v != PROTOCOL_VERSION {
                break v;
            }
        };
        let mut b = [0u8; MAX_FRAME];
        let n = encode_as(v, &m, i, &mut b).unwrap();
        version.feed::<ToBoard>(&b[..n], |_| false);
    }
    assert_eq!(
        version.rejects.get(Reject::Version { theirs: 0, kind: 0 }),
        100_000
    );
    version.print("other version");
    total += version.inputs;

    let mut length = Tally::default();
    for i in 0..100_000u32 {
        let m = rng.board_msg();
        let mut raw = raw_of(&m, i);
        let payload_end = raw.len() - CRC_LEN;
        if rng.below(2) == 0 || payload_end == HEADER_LEN {
            let at = HEADER_LEN + rng.below((payload_end - HEADER_LEN + 1) as u64) as usize;
            raw.insert(at, rng.byte());
        } else {
            let at = HEADER_LEN + rng.below((payload_end - HEADER_LEN) as u64) as usize;
            raw.remove(at);
        }
        reseal(&mut raw);
        let line = line_of(&raw);
        length.feed::<ToBoard>(&line, |f| is_its_own_encoding(&line, f));
    }
    length.print("wrong length");
    total += length.inputs;

    let mut resealed = Tally::default();
    for i in 0..100_000u32 {
        let h = rng.host_msg();
        let mut raw = raw_of(&h, i);
        for _ in 0..1 + rng.below(4) {
            let at = rng.below((raw.len() - CRC_LEN) as u64) as usize;
            raw[at] = rng.byte();
        }
        reseal(&mut raw);
        let line = line_of(&raw);
        resealed.feed::<ToHost>(&line, |f| is_its_own_encoding(&line, f));
    }
    resealed.print("resealed changes");
    total += resealed.inputs;

    // Out of order: bursts of frames whose numbers jump back and repeat, through a Receiver.
    let mut order = Tally::default();
    let mut rx = Receiver::<ToBoard>::new();
    let mut newest: Option<u32> = None;
    let mut next = 1u32;
    for _ in 0..100_000 {
        let seq = match rng.below(4) {
            0 => next.wrapping_sub(1 + rng.below(50) as u32),
            1 => next.wrapping_sub(1),
            _ => {
                next = next.wrapping_add(1 + rng.below(3) as u32);
                next
            }
        };
        let line = line_of(&raw_of(&ToBoard::Heartbeat, seq));
        order.inputs += 1;
        let before = rx.rejects;
        let got: Vec<_> = line.iter().filter_map(|&b| rx.push(b)).collect();
        let newer = newest.is_none_or(|n| (seq.wrapping_sub(n) as i32) > 0);
        if newer {
            assert_eq!(got.len(), 1, "frame {seq} after {newest:?}");
            assert_eq!(got[0].seq, seq);
            newest = Some(seq);
            order.exact += 1;
        } else {
            assert!(got.is_empty(), "frame {seq} after {newest:?} was accepted");
            assert_eq!(
                rx.rejects.get(Reject::Sequence),
                before.get(Reject::Sequence) + 1
            );
        }
    }
    order.rejects = rx.rejects;
    assert_eq!(order.exact + order.rejects.total(), order.inputs);
    order.print("out of order");
    total += order.inputs;

    let mut noise = Tally::default();
    for _ in 0..50_000 {
        let n = rng.below(300) as usize;
        let line: Vec<u8> = (0..n).map(|_| rng.byte()).chain([0]).collect();
        let mut d = Decoder::<ToHost>::new();
        noise.inputs += 1;
        let mut start = 0;
        for (i, &b) in line.iter().enumerate() {
            match d.push(b) {
                Some(Ok(f)) => {
                    assert!(is_its_own_encoding(&line[start..=i], &f));
                    noise.exact += 1;
                }
                Some(Err(e)) => noise.rejects.add(e),
                None => {}
            }
            if b == 0 {
                start = i + 1;
            }
        }
    }
    noise.print("noise");
    total += noise.inputs;

    eprintln!("{total} inputs in all");
    assert!(total >= 1_000_000);
}
