//! ASR accuracy and speed over the real speech in ../shared/data/speech:
//! `cargo run --release --example asr_eval [-- SHARED_DIR]`. Configuration
//! comes from the usual ATTENDANT__ASR__* variables, so settings can be
//! compared: e.g. ATTENDANT__ASR__DYNAMIC_AUDIO_CTX=false.

use std::path::PathBuf;
use std::time::Instant;

use attendant::client::audio::read_wav;
use attendant::config::Config;
use attendant::eval::{edit_distance, normalize};
use attendant::media::resample::resample;

fn main() -> anyhow::Result<()> {
    attendant::asr::configure_threads();
    let shared = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("../shared/data/speech"));
    let cfg = Config::load(None, std::env::vars())?;
    let pool = attendant::asr::AsrPool::start(&cfg.server.models_dir, &cfg.asr)?;
    let manifest = std::fs::read_to_string(shared.join("manifest.jsonl"))?;
    let (mut errs, mut words, mut audio_s, mut decode_s) = (0usize, 0usize, 0f64, 0f64);
    let mut fsdd = 0;
    // Warm-up so the first timing is not an outlier.
    pool.transcribe_blocking(vec![0.0; 16000])?;
    for line in manifest.lines() {
        let v: serde_json::Value = serde_json::from_str(line)?;
        let path = v["path"].as_str().unwrap_or_default();
        if path.starts_with("fsdd/") {
            fsdd += 1;
            if fsdd % 100 != 1 {
                continue; // 20 of the 2,000 digits
            }
        }
        if path.ends_with(".flac") || v["duration_s"].as_f64().unwrap_or(0.0) > 29.0 {
            continue;
        }
        let (pcm, rate) = read_wav(&shared.join(path))?;
        let pcm = resample(&pcm, rate, 16000)?;
        let t = Instant::now();
        let tr = pool.transcribe_blocking(pcm.clone())?;
        let dt = t.elapsed().as_secs_f64();
        let r = normalize(v["transcript"].as_str().unwrap_or_default());
        let e = edit_distance(&r, &normalize(&tr.text));
        errs += e;
        words += r.len();
        audio_s += pcm.len() as f64 / 16000.0;
        decode_s += dt;
        println!(
            "{path:30} {:5.0} ms  err {e}/{}  {:?}",
            dt * 1000.0,
            r.len(),
            tr.text
        );
    }
    println!(
        "WER {:.1}% over {words} words; {:.1} s audio decoded in {:.1} s (RTF {:.3}); model {} workers {} threads {} dynamic_ctx {} margin {} ms",
        100.0 * errs as f64 / words.max(1) as f64,
        audio_s,
        decode_s,
        decode_s / audio_s,
        cfg.asr.model,
        cfg.asr.workers,
        cfg.asr.threads,
        cfg.asr.dynamic_audio_ctx,
        cfg.asr.audio_ctx_margin_ms
    );
    Ok(())
}
