//! Streaming sample-rate conversion on top of rubato's FFT resampler.

use rubato::{FftFixedIn, Resampler};

#[derive(Debug, thiserror::Error)]
pub enum ResampleError {
    #[error("cannot build a resampler from {from} Hz to {to} Hz: {reason}")]
    Construct { from: u32, to: u32, reason: String },
    #[error("resampling failed: {0}")]
    Process(String),
}

/// Converts a mono stream chunk by chunk, whatever the chunk sizes pushed,
/// and removes the resampler's group delay so output aligns with input.
pub struct StreamResampler {
    inner: Option<FftFixedIn<f32>>,
    pending: Vec<f32>,
    to_skip: usize,
    ratio: f64,
    consumed: u64,
    produced: u64,
}

impl StreamResampler {
    pub fn new(from: u32, to: u32, chunk: usize) -> Result<Self, ResampleError> {
        let inner = if from == to {
            None
        } else {
            let r =
                FftFixedIn::<f32>::new(from as usize, to as usize, chunk, 1, 1).map_err(|e| {
                    ResampleError::Construct {
                        from,
                        to,
                        reason: e.to_string(),
                    }
                })?;
            Some(r)
        };
        let to_skip = inner.as_ref().map(|r| r.output_delay()).unwrap_or(0);
        Ok(Self {
            inner,
            pending: Vec::new(),
            to_skip,
            ratio: to as f64 / from as f64,
            consumed: 0,
            produced: 0,
        })
    }

    /// Pushes input samples; returns whatever output is ready.
    pub fn push(&mut self, input: &[f32]) -> Result<Vec<f32>, ResampleError> {
        let mut out = Vec::new();
        self.push_into(input, &mut out)?;
        Ok(out)
    }

    pub fn push_into(&mut self, input: &[f32], out: &mut Vec<f32>) -> Result<(), ResampleError> {
        self.consumed += input.len() as u64;
        let Some(r) = self.inner.as_mut() else {
            out.extend_from_slice(input);
            self.produced += input.len() as u64;
            return Ok(());
        };
        self.pending.extend_from_slice(input);
        let need = r.input_frames_next();
        let mut start = 0;
        while self.pending.len() - start >= need {
            let res = r
                .process(&[&self.pending[start..start + need]], None)
                .map_err(|e| ResampleError::Process(e.to_string()))?;
            start += need;
            Self::emit(&mut self.to_skip, &mut self.produced, &res[0], out);
        }
        self.pending.drain(..start);
        Ok(())
    }

    /// Flushes the tail so the output length matches input length × ratio.
    pub fn flush(&mut self) -> Result<Vec<f32>, ResampleError> {
        let mut out = Vec::new();
        let Some(r) = self.inner.as_mut() else {
            return Ok(out);
        };
        let expected = (self.consumed as f64 * self.ratio).round() as u64;
        // Push zero-padded chunks until the delayed tail has come out.
        let mut guard = 0;
        while self.produced < expected && guard < 8 {
            let need = r.input_frames_next();
            let mut chunk = std::mem::take(&mut self.pending);
            chunk.resize(need, 0.0);
            let res = r
                .process(&[&chunk[..]], None)
                .map_err(|e| ResampleError::Process(e.to_string()))?;
            Self::emit(&mut self.to_skip, &mut self.produced, &res[0], &mut out);
            guard += 1;
        }
        let excess = (self.produced.saturating_sub(expected)) as usize;
        out.truncate(out.len().saturating_sub(excess));
        self.produced = expected;
        Ok(out)
    }

    fn emit(to_skip: &mut usize, produced: &mut u64, chunk: &[f32], out: &mut Vec<f32>) {
        let skip = (*to_skip).min(chunk.len());
        *to_skip -= skip;
        out.extend_from_slice(&chunk[skip..]);
        *produced += (chunk.len() - skip) as u64;
    }
}

/// One-shot conversion of a whole buffer.
pub fn resample(input: &[f32], from: u32, to: u32) -> Result<Vec<f32>, ResampleError> {
    if from == to {
        return Ok(input.to_vec());
    }
    let mut r = StreamResampler::new(from, to, 1024)?;
    let mut out = r.push(input)?;
    out.extend(r.flush()?);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(rate: u32, hz: f32, secs: f32) -> Vec<f32> {
        (0..(rate as f32 * secs) as usize)
            .map(|i| (i as f32 * hz * std::f32::consts::TAU / rate as f32).sin() * 0.5)
            .collect()
    }

    fn dominant_hz(x: &[f32], rate: u32) -> f32 {
        // Zero-crossing estimate; good enough for a clean sine.
        let crossings = x.windows(2).filter(|w| w[0] < 0.0 && w[1] >= 0.0).count();
        crossings as f32 * rate as f32 / x.len() as f32
    }

    #[test]
    fn upsampling_keeps_length_and_pitch() {
        let x = sine(8000, 440.0, 1.0);
        let mut r = StreamResampler::new(8000, 16000, 160).unwrap();
        let mut y = Vec::new();
        for c in x.chunks(160) {
            y.extend(r.push(c).unwrap());
        }
        y.extend(r.flush().unwrap());
        assert_eq!(y.len(), 16000);
        let f = dominant_hz(&y[1000..15000], 16000);
        assert!((f - 440.0).abs() < 5.0, "{f}");
    }

    #[test]
    fn odd_chunks_and_downsampling() {
        let x = sine(22050, 300.0, 0.8);
        let mut r = StreamResampler::new(22050, 8000, 1024).unwrap();
        let mut y = Vec::new();
        for c in x.chunks(777) {
            y.extend(r.push(c).unwrap());
        }
        y.extend(r.flush().unwrap());
        let expected = (x.len() as f64 * 8000.0 / 22050.0).round() as usize;
        assert_eq!(y.len(), expected);
        let f = dominant_hz(&y[500..y.len() - 500], 8000);
        assert!((f - 300.0).abs() < 5.0, "{f}");
    }

    #[test]
    fn flush_with_nothing_pending_works() {
        let x = sine(22050, 300.0, 1024.0 * 3.0 / 22050.0);
        let y = resample(&x, 22050, 8000).unwrap();
        assert_eq!(
            y.len(),
            (x.len() as f64 * 8000.0 / 22050.0).round() as usize
        );
        assert!(resample(&[], 22050, 8000).unwrap().is_empty());
    }

    #[test]
    fn output_is_aligned_with_input() {
        // An impulse-like onset should land at the same time after resampling.
        let mut x = vec![0.0f32; 8000];
        for s in x.iter_mut().skip(4000).take(400) {
            *s = 0.5;
        }
        let y = resample(&x, 8000, 16000).unwrap();
        let onset = y.iter().position(|v| v.abs() > 0.25).unwrap();
        assert!((onset as i64 - 8000).abs() < 40, "onset at {onset}");
    }
}
