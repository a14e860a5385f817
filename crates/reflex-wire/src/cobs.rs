//! Consistent Overhead Byte Stuffing: a frame's bytes re-coded so that none is zero, leaving
//! zero free to delimit frames on the serial line. Costs one byte per 254, plus one.

/// The longest encoding of `n` bytes.
pub const fn max_encoded_len(n: usize) -> usize {
    n + n / 254 + 1
}

/// Why a COBS frame could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CobsError {
    /// A zero inside the frame, or a code byte that points past its end.
    Malformed,
    /// The decoded bytes would not fit the output.
    TooLong,
}

/// Encodes `src` into `dst`; returns the encoded length, or `None` when `dst` is shorter than
/// [`max_encoded_len`] of the input needs.
pub fn encode(src: &[u8], dst: &mut [u8]) -> Option<usize> {
    let mut code_at = 0;
    let mut out = 1;
    let mut code = 1u8;
    if dst.is_empty() {
        return None;
    }
    for &b in src {
        if b == 0 {
            dst[code_at] = code;
            code_at = out;
            out += 1;
            code = 1;
        } else {
            *dst.get_mut(out)? = b;
            out += 1;
            code += 1;
            if code == 0xFF {
                dst[code_at] = code;
                code_at = out;
                out += 1;
                code = 1;
            }
        }
        if out > dst.len() {
            return None;
        }
    }
    *dst.get_mut(code_at)? = code;
    Some(out)
}

/// Decodes one frame `src` (without its delimiter) into `dst`; returns the decoded length.
pub fn decode(src: &[u8], dst: &mut [u8]) -> Result<usize, CobsError> {
    let mut i = 0;
    let mut out = 0;
    while i < src.len() {
        let code = src[i];
        if code == 0 {
            return Err(CobsError::Malformed);
        }
        i += 1;
        let run = code as usize - 1;
        let block = src.get(i..i + run).ok_or(CobsError::Malformed)?;
        if block.contains(&0) {
            return Err(CobsError::Malformed);
        }
        dst.get_mut(out..out + run)
            .ok_or(CobsError::TooLong)?
            .copy_from_slice(block);
        i += run;
        out += run;
        if code != 0xFF && i < src.len() {
            *dst.get_mut(out).ok_or(CobsError::TooLong)? = 0;
            out += 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_encodings() {
        let cases: [(&[u8], &[u8]); 5] = [
            (&[], &[0x01]),
            (&[0x00], &[0x01, 0x01]),
            (&[0x11, 0x22, 0x00, 0x33], &[0x03, 0x11, 0x22, 0x02, 0x33]),
            (&[0x11, 0x00, 0x00], &[0x02, 0x11, 0x01, 0x01]),
            (&[0x00, 0x00], &[0x01, 0x01, 0x01]),
        ];
        for (raw, encoded) in cases {
            let mut buf = [0u8; 16];
            let n = encode(raw, &mut buf).unwrap();
            assert_eq!(&buf[..n], encoded, "encoding {raw:02x?}");
            let mut back = [0u8; 16];
            let m = decode(encoded, &mut back).unwrap();
            assert_eq!(&back[..m], raw, "decoding {encoded:02x?}");
        }
    }

    #[test]
    fn a_run_of_254_non_zero_bytes_takes_one_extra_code() {
        let raw = [7u8; 254];
        let mut buf = [0u8; 300];
        let n = encode(&raw, &mut buf).unwrap();
        assert_eq!(n, 256);
        assert_eq!((buf[0], buf[255]), (0xFF, 0x01));
        let mut back = [0u8; 300];
        assert_eq!(decode(&buf[..n], &mut back), Ok(254));
        assert_eq!(&back[..254], &raw[..]);
    }

    #[test]
    fn a_short_output_is_refused_not_overrun() {
        let mut buf = [0u8; 3];
        assert_eq!(encode(&[1, 2, 3, 4], &mut buf), None);
        let mut small = [0u8; 2];
        assert_eq!(
            decode(&[0x04, 1, 2, 3], &mut small),
            Err(CobsError::TooLong)
        );
        assert_eq!(
            decode(&[0x05, 1, 2], &mut [0u8; 8]),
            Err(CobsError::Malformed)
        );
        assert_eq!(decode(&[0x02, 0], &mut [0u8; 8]), Err(CobsError::Malformed));
    }

    proptest! {
        #[test]
        fn round_trips_and_never_emits_zero(raw in proptest::collection::vec(any::<u8>(), 0..700)) {
            let mut buf = vec![0u8; max_encoded_len(raw.len())];
            let n = encode(&raw, &mut buf).unwrap();
            prop_assert!(n <= max_encoded_len(raw.len()));
            prop_assert!(!buf[..n].contains(&0));
            let mut back = vec![0u8; raw.len()];
            let m = decode(&buf[..n], &mut back).unwrap();
            prop_assert_eq!(&back[..m], &raw[..]);
        }

        #[test]
        fn decoding_anything_never_panics(src in proptest::collection::vec(any::<u8>(), 0..400)) {
            let mut out = [0u8; 256];
            if let Ok(n) = decode(&src, &mut out) {
                prop_assert!(n <= out.len());
            }
        }
    }
}
