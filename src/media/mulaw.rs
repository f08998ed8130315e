//! ITU-T G.711 μ-law companding.

const BIAS: i32 = 0x84;
const CLIP: i32 = 32635;

/// Encodes one linear 16-bit sample to μ-law.
pub fn encode(sample: i16) -> u8 {
    let mut s = sample as i32;
    let sign = if s < 0 {
        s = -s;
        0x80
    } else {
        0
    };
    s = s.min(CLIP) + BIAS;
    // Exponent = position of the highest set bit above bit 7.
    let exponent = (31 - (s as u32).leading_zeros() as i32 - 7).clamp(0, 7);
    let mantissa = (s >> (exponent + 3)) & 0x0f;
    !(sign | (exponent << 4) | mantissa) as u8
}

/// Decodes one μ-law byte to a linear 16-bit sample.
pub fn decode(byte: u8) -> i16 {
    let u = !byte as i32;
    let sign = u & 0x80;
    let exponent = (u >> 4) & 0x07;
    let mantissa = u & 0x0f;
    let magnitude = (((mantissa << 3) + BIAS) << exponent) - BIAS;
    (if sign != 0 { -magnitude } else { magnitude }) as i16
}

/// Decodes μ-law bytes to float samples in [-1, 1].
pub fn decode_to_f32(bytes: &[u8], out: &mut Vec<f32>) {
    out.extend(bytes.iter().map(|&b| decode(b) as f32 / 32768.0));
}

/// Encodes float samples in [-1, 1] to μ-law bytes.
pub fn encode_from_f32(samples: &[f32], out: &mut Vec<u8>) {
    out.extend(
        samples
            .iter()
            .map(|&s| encode((s.clamp(-1.0, 1.0) * 32767.0) as i16)),
    );
}

/// μ-law byte of digital silence.
pub const SILENCE: u8 = 0xFF;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_round_trips() {
        assert_eq!(encode(0), SILENCE);
        assert_eq!(decode(SILENCE), 0);
    }

    #[test]
    fn every_code_is_a_fixed_point() {
        // decode∘encode∘decode == decode for all 256 codes (except the two zeros).
        for b in 0..=255u8 {
            let lin = decode(b);
            assert_eq!(decode(encode(lin)), lin, "code {b:#x}");
        }
    }

    #[test]
    fn quantisation_error_is_bounded() {
        for s in (-32768i32..32767).step_by(7) {
            let s = s as i16;
            let back = decode(encode(s)) as i32;
            let err = (back - s as i32).abs();
            // The largest μ-law step is 1024 at the top segment; half of it plus clipping.
            let allowed = if (s as i32).abs() > CLIP { 1200 } else { 520 };
            assert!(err <= allowed, "sample {s} -> {back}");
        }
    }

    #[test]
    fn known_values() {
        assert_eq!(encode(32767), 0x80);
        assert_eq!(encode(-32768), 0x00);
        assert_eq!(decode(0x80), 32124);
        assert_eq!(decode(0x00), -32124);
    }
}
