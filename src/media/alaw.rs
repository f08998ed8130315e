//! G.711 A-law (ITU-T G.711 §A), for SIP trunks that prefer PCMA. The
//! pipeline speaks μ-law, so A-law streams are transcoded through linear
//! PCM at the RTP edge.

/// Segment end points of the 13-bit magnitude.
const SEG_END: [i32; 8] = [0x1f, 0x3f, 0x7f, 0xff, 0x1ff, 0x3ff, 0x7ff, 0xfff];

/// The A-law byte of silence.
pub const SILENCE: u8 = 0xd5;

pub fn encode(sample: i16) -> u8 {
    let mut v = (sample as i32) >> 3;
    let mask = if v >= 0 {
        0xd5
    } else {
        v = -v - 1;
        0x55
    };
    let Some(seg) = SEG_END.iter().position(|&e| v <= e) else {
        return 0x7f ^ mask;
    };
    let mant = if seg < 2 {
        (v >> 1) & 0x0f
    } else {
        (v >> seg) & 0x0f
    };
    (((seg as i32) << 4) | mant) as u8 ^ mask
}

pub fn decode(byte: u8) -> i16 {
    let a = byte ^ 0x55;
    let seg = (a & 0x70) >> 4;
    let mut t = ((a & 0x0f) as i32) << 4;
    t += match seg {
        0 => 8,
        _ => 0x108,
    };
    if seg > 1 {
        t <<= seg - 1;
    }
    (if a & 0x80 != 0 { t } else { -t }) as i16
}

/// μ-law bytes to A-law bytes (and back), sample by sample.
pub fn from_ulaw(ulaw: &[u8]) -> Vec<u8> {
    ulaw.iter()
        .map(|&b| encode(super::mulaw::decode(b)))
        .collect()
}

pub fn to_ulaw(alaw: &[u8]) -> Vec<u8> {
    alaw.iter()
        .map(|&b| super::mulaw::encode(decode(b)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_and_silence_is_d5() {
        for b in 0..=255u8 {
            assert_eq!(encode(decode(b)), b, "{b:#x}");
        }
        assert_eq!(encode(0), SILENCE);
        assert_eq!(decode(SILENCE), 8);
        // Full scale saturates instead of wrapping.
        assert_eq!(decode(encode(i16::MAX)), 32256);
        assert_eq!(decode(encode(i16::MIN)), -32256);
        // A sine keeps its shape through A-law → μ-law → A-law.
        let sine: Vec<u8> = (0..160)
            .map(|i| encode(((i as f32 * 0.3).sin() * 12000.0) as i16))
            .collect();
        let back = from_ulaw(&to_ulaw(&sine));
        let err: i32 = sine
            .iter()
            .zip(&back)
            .map(|(a, b)| (decode(*a) as i32 - decode(*b) as i32).abs())
            .max()
            .unwrap();
        assert!(err < 600, "max error {err}");
    }
}
