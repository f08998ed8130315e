//! Reading caller audio from WAV files of any rate and writing recordings.

use std::path::Path;

use crate::media::{resample, PHONE_RATE};

use super::ClientError;

/// Reads a WAV (any rate, int or float, any channel count) as 8 kHz mono.
pub fn read_wav_8k(path: &Path) -> Result<Vec<f32>, ClientError> {
    let (pcm, rate) = read_wav(path)?;
    resample::resample(&pcm, rate, PHONE_RATE).map_err(|e| ClientError::Input {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// Reads a WAV as mono f32 at its own rate.
pub fn read_wav(path: &Path) -> Result<(Vec<f32>, u32), ClientError> {
    let err = |e: hound::Error| ClientError::Input {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    let mut r = hound::WavReader::open(path).map_err(err)?;
    let spec = r.spec();
    let ch = spec.channels.max(1) as usize;
    let raw: Vec<f32> = match spec.sample_format {
        hound::SampleFormat::Float => r.samples::<f32>().collect::<Result<_, _>>().map_err(err)?,
        hound::SampleFormat::Int => {
            let scale = 1.0 / (1u64 << (spec.bits_per_sample - 1)) as f32;
            r.samples::<i32>()
                .map(|s| s.map(|v| v as f32 * scale))
                .collect::<Result<_, _>>()
                .map_err(err)?
        }
    };
    let mono = raw
        .chunks(ch)
        .map(|c| c.iter().sum::<f32>() / ch as f32)
        .collect();
    Ok((mono, spec.sample_rate))
}

/// Writes a stereo 8 kHz WAV: caller left, bot right.
pub fn write_stereo(path: &Path, caller: &[i16], bot: &[i16]) -> Result<(), hound::Error> {
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: PHONE_RATE,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec)?;
    for i in 0..caller.len().max(bot.len()) {
        w.write_sample(caller.get(i).copied().unwrap_or(0))?;
        w.write_sample(bot.get(i).copied().unwrap_or(0))?;
    }
    w.finalize()
}

/// Writes mono 8 kHz 16-bit PCM.
pub fn write_mono_8k(path: &Path, pcm: &[i16]) -> Result<(), hound::Error> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: PHONE_RATE,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec)?;
    for &s in pcm {
        w.write_sample(s)?;
    }
    w.finalize()
}
