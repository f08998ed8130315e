//! Whisper-style log-mel features (80 bins, 25 ms window, 10 ms hop at
//! 16 kHz), as Smart Turn v3 expects them: zero-mean/unit-variance
//! waveform, Slaney mel filters, log10, floor at max−8, then (x+4)/4.

use std::sync::{Arc, OnceLock};

use rustfft::num_complex::Complex;
use rustfft::{Fft, FftPlanner};

pub const N_FFT: usize = 400;
pub const HOP: usize = 160;
pub const N_MELS: usize = 80;
const BINS: usize = N_FFT / 2 + 1;

fn hz_to_mel(f: f64) -> f64 {
    if f >= 1000.0 {
        15.0 + (f / 1000.0).ln() * 27.0 / 6.4f64.ln()
    } else {
        3.0 * f / 200.0
    }
}

fn mel_to_hz(m: f64) -> f64 {
    if m >= 15.0 {
        1000.0 * (6.4f64.ln() / 27.0 * (m - 15.0)).exp()
    } else {
        200.0 * m / 3.0
    }
}

/// Slaney-normalised triangular filters, `[N_MELS][BINS]`.
pub fn mel_filters() -> &'static [[f32; BINS]; N_MELS] {
    static F: OnceLock<Box<[[f32; BINS]; N_MELS]>> = OnceLock::new();
    F.get_or_init(|| {
        let (lo, hi) = (hz_to_mel(0.0), hz_to_mel(8000.0));
        let pts: Vec<f64> = (0..N_MELS + 2)
            .map(|i| mel_to_hz(lo + (hi - lo) * i as f64 / (N_MELS + 1) as f64))
            .collect();
        let mut f = Box::new([[0f32; BINS]; N_MELS]);
        for (m, row) in f.iter_mut().enumerate() {
            let enorm = 2.0 / (pts[m + 2] - pts[m]);
            for (k, w) in row.iter_mut().enumerate() {
                let hz = 8000.0 * k as f64 / (BINS - 1) as f64;
                let down = (hz - pts[m]) / (pts[m + 1] - pts[m]);
                let up = (pts[m + 2] - hz) / (pts[m + 2] - pts[m + 1]);
                *w = (down.min(up).max(0.0) * enorm) as f32;
            }
        }
        f
    })
}

fn fft() -> Arc<dyn Fft<f32>> {
    static P: OnceLock<Arc<dyn Fft<f32>>> = OnceLock::new();
    P.get_or_init(|| FftPlanner::new().plan_fft_forward(N_FFT))
        .clone()
}

/// Log-mel features of exactly `n_frames` frames, row-major `[N_MELS][n_frames]`.
/// `audio` must hold `n_frames * HOP` samples (pad or trim beforehand).
pub fn log_mel(audio: &[f32], n_frames: usize, normalize: bool) -> Vec<f32> {
    let mut x: Vec<f32> = audio.to_vec();
    x.resize(n_frames * HOP, 0.0);
    if normalize {
        let n = x.len() as f64;
        let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
        let scale = 1.0 / (var + 1e-7).sqrt();
        for v in &mut x {
            *v = ((*v as f64 - mean) * scale) as f32;
        }
    }
    // Centre the frames with reflection padding, as torch.stft(center=True).
    let pad = N_FFT / 2;
    let len = x.len();
    let at = |i: isize| -> f32 {
        let j = if i < 0 {
            (-i) as usize
        } else if i as usize >= len {
            2 * (len - 1) - i as usize
        } else {
            i as usize
        };
        x[j.min(len - 1)]
    };
    let window: Vec<f32> = (0..N_FFT)
        .map(|i| 0.5 - 0.5 * (std::f32::consts::TAU * i as f32 / N_FFT as f32).cos())
        .collect();
    let filters = mel_filters();
    let plan = fft();
    let mut buf = vec![Complex::new(0f32, 0f32); N_FFT];
    let mut scratch = vec![Complex::new(0f32, 0f32); plan.get_inplace_scratch_len()];
    let mut power = [0f32; BINS];
    let mut out = vec![0f32; N_MELS * n_frames];
    for t in 0..n_frames {
        let start = (t * HOP) as isize - pad as isize;
        for (i, c) in buf.iter_mut().enumerate() {
            *c = Complex::new(at(start + i as isize) * window[i], 0.0);
        }
        plan.process_with_scratch(&mut buf, &mut scratch);
        for (k, p) in power.iter_mut().enumerate() {
            *p = buf[k].norm_sqr();
        }
        for (m, row) in filters.iter().enumerate() {
            let e: f32 = row.iter().zip(power.iter()).map(|(w, p)| w * p).sum();
            out[m * n_frames + t] = e.max(1e-10).log10();
        }
    }
    let max = out.iter().cloned().fold(f32::MIN, f32::max);
    for v in &mut out {
        *v = (v.max(max - 8.0) + 4.0) / 4.0;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_triangles_with_slaney_area() {
        let f = mel_filters();
        for row in f.iter() {
            assert!(row.iter().any(|&w| w > 0.0));
            assert!(row.iter().all(|&w| w >= 0.0));
        }
        // First filter peaks on bin 1 (25 Hz·2 spacing at low frequency).
        let peak = f[0].iter().cloned().fold(0.0, f32::max);
        assert!(peak > 0.01);
    }

    #[test]
    fn tone_energy_lands_in_the_right_band() {
        let x: Vec<f32> = (0..16000)
            .map(|i| (i as f32 * 1000.0 * std::f32::consts::TAU / 16000.0).sin())
            .collect();
        let m = log_mel(&x, 100, false);
        let frame = 50;
        let best = (0..N_MELS)
            .max_by(|&a, &b| m[a * 100 + frame].total_cmp(&m[b * 100 + frame]))
            .unwrap();
        // 1 kHz sits at mel 15, i.e. about bin 15/(mel(8k)=45.2)·81 ≈ 26.
        assert!((24..=28).contains(&best), "peak bin {best}");
        // Log range is clamped to 8 decades, i.e. 2.0 after the (x+4)/4 scaling.
        let max = m.iter().cloned().fold(f32::MIN, f32::max);
        let min = m.iter().cloned().fold(f32::MAX, f32::min);
        assert!(m.iter().all(|v| v.is_finite()));
        assert!(max - min <= 2.0 + 1e-5, "{min}..{max}");
    }
}
