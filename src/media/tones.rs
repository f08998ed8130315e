//! Call-progress tones the caller hears from us (not from a carrier).

use super::{mulaw, PHONE_FRAME, PHONE_RATE};

/// North American ringback (ANSI T1.401): 440 Hz + 480 Hz, 2 s on, 4 s off.
/// Frame `n` (20 ms each, counted from the start of ringing) as μ-law.
pub fn ringback_frame(n: u64) -> Vec<u8> {
    const CYCLE: u64 = 6 * 50;
    const ON: u64 = 2 * 50;
    if n % CYCLE >= ON {
        return vec![mulaw::encode(0); PHONE_FRAME];
    }
    let start = n * PHONE_FRAME as u64;
    (0..PHONE_FRAME as u64)
        .map(|i| {
            let t = (start + i) as f64 / PHONE_RATE as f64;
            let two_pi = 2.0 * std::f64::consts::PI;
            // -19 dBm0 per tone (the standard's level): 22.2 dB under a
            // full-scale sine, which is +3.17 dBm0 in G.711.
            let x = 0.0776 * ((two_pi * 440.0 * t).sin() + (two_pi * 480.0 * t).sin());
            mulaw::encode((x * 32767.0) as i16)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rms(frame: &[u8]) -> f64 {
        let s: f64 = frame
            .iter()
            .map(|&b| (mulaw::decode(b) as f64).powi(2))
            .sum();
        (s / frame.len() as f64).sqrt()
    }

    #[test]
    fn ringback_cadence_is_two_seconds_on_four_off() {
        for n in [0u64, 50, 99, 300, 399] {
            assert!(rms(&ringback_frame(n)) > 1000.0, "frame {n} rings");
        }
        for n in [100u64, 200, 299, 400] {
            assert!(rms(&ringback_frame(n)) < 10.0, "frame {n} is quiet");
        }
        // Continuous across frames: the waveform does not restart each frame.
        let a = ringback_frame(0);
        let b = ringback_frame(1);
        assert_ne!(a, b);
    }
}
