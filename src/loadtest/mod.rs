//! `attendant loadtest`: many simultaneous callers over the real protocol
//! (Twilio Media Streams or WebRTC, `--transport`), with
//! per-call and per-turn measurements, reply checks and a capacity search.
//!
//! The load generator keeps its own cost off the measurement: callers only
//! stream pre-decoded μ-law frames and time what comes back; the bot's
//! replies are transcribed for checking after every call has ended.

pub mod report;
pub mod scenario;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::client::{self, CallOptions, Script, Signing};
pub use scenario::{Expect, Scenario, ScenarioError};

/// How the load generator's callers reach the server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// Twilio Media Streams over WebSocket.
    #[default]
    Twilio,
    /// A browser-like WebRTC caller (Opus over DTLS-SRTP).
    Webrtc,
    /// A SIP trunk's caller: SIP/UDP signalling and G.711 RTP.
    Sip,
}

/// The number SIP callers dial (the server's number routes pick the agent).
pub const SIP_DIAL: &str = "1000";

#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Media Streams WebSocket URL (WebRTC: the server's base is taken from it).
    pub url: String,
    pub transport: Transport,
    /// The server's SIP/UDP address for `Transport::Sip` (`None`: asked of
    /// its `GET /sip`).
    pub sip: Option<std::net::SocketAddr>,
    pub signing: Option<Signing>,
    /// API token for reading call records.
    pub api_token: Option<String>,
    /// Calls to place (at least one).
    pub calls: usize,
    pub concurrency: usize,
    /// New calls per second while ramping up (0: all at once).
    pub ramp_per_s: f64,
    /// Keep placing calls until this many seconds have passed (then `calls`
    /// is a minimum).
    pub duration_s: Option<u64>,
    pub seed: u64,
    /// Longest a single call may last.
    pub max_call_s: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TurnResult {
    pub step: usize,
    pub kind: String,
    /// When the reply started, ms since the run started.
    pub at_ms: u64,
    /// Calls in progress when the reply started.
    pub concurrency: usize,
    /// Caller's last voiced frame → first bot audio frame received.
    pub voice_to_voice_ms: Option<u64>,
    /// Transcript of the reply (filled after the run).
    pub heard: Option<String>,
    pub expect: Option<Expect>,
    pub correct: Option<bool>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CallResult {
    pub index: usize,
    /// Which of the scenario's callers this call played.
    pub caller_index: usize,
    pub caller: String,
    pub call_sid: String,
    pub started_ms: u64,
    pub ended_ms: u64,
    pub ok: bool,
    pub failure: Option<String>,
    /// Connected → first greeting frame.
    pub time_to_answer_ms: Option<u64>,
    pub greeting_heard: Option<String>,
    pub greeting_correct: Option<bool>,
    pub turns: Vec<TurnResult>,
    /// Caller speech onset over the bot → bot audio stopped arriving.
    pub barge_in_stop_ms: Vec<u64>,
    pub pacing: client::Pacing,
    /// The server's own marks for this call's answered turns (from its
    /// call record), to set beside what the caller measured.
    #[serde(default)]
    pub server: ServerTurns,
    /// When each stretch of bot audio began and each step ended, in ms
    /// from the call's start: which reply answered which step.
    #[serde(default)]
    pub reply_starts_ms: Vec<u64>,
    #[serde(default)]
    pub step_ends_ms: Vec<u64>,
    #[serde(skip)]
    pub greeting_audio: Vec<u8>,
    #[serde(skip)]
    pub reply_audio: Vec<Vec<u8>>,
}

/// What the server's call record says of a call's turns.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ServerTurns {
    /// Server-measured voice-to-voice per answered turn.
    pub voice_to_voice_ms: Vec<u64>,
    /// What ended each spoken turn (smart_turn, transcript, silence).
    pub end_reasons: Vec<String>,
    /// Turns ended before the caller had finished.
    pub cut_early: usize,
}

impl ServerTurns {
    fn of(rec: &crate::pipeline::CallRecord) -> Self {
        let spoken = rec.turns.iter().filter(|t| t.dtmf.is_none());
        Self {
            voice_to_voice_ms: spoken
                .clone()
                .filter_map(|t| t.timings.voice_to_voice_ms)
                .collect(),
            end_reasons: spoken
                .clone()
                .map(|t| t.timings.end_reason.clone())
                .collect(),
            cut_early: spoken.filter(|t| t.timings.cut_early).count(),
        }
    }
}

/// Everything one run measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunResult {
    pub scenario: String,
    pub url: String,
    #[serde(default)]
    pub transport: Transport,
    pub concurrency: usize,
    pub wall_ms: u64,
    pub calls: Vec<CallResult>,
    /// CPU the load generator itself used, as a share of one core.
    pub generator_cpu_percent: f64,
}

#[allow(unsafe_code)]
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the struct we pass and nothing else.
    unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut u) != 0 {
            return 0.0;
        }
        let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
        t(u.ru_utime) + t(u.ru_stime)
    }
}

/// Live counters for a progress display.
#[derive(Debug, Default)]
pub struct Progress {
    pub started: AtomicUsize,
    pub finished: AtomicUsize,
    pub failed: AtomicUsize,
    pub latencies: parking_lot::Mutex<Vec<u64>>,
}

/// Places the calls and measures them. Reply transcription is separate
/// (`check_replies`), so it never competes with the calls for CPU.
pub async fn run(scenario: &Scenario, opts: &RunOptions, progress: Arc<Progress>) -> RunResult {
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    let mut rng = fastrand::Rng::with_seed(opts.seed);
    let sem = Arc::new(tokio::sync::Semaphore::new(opts.concurrency.max(1)));
    let active = Arc::new(AtomicUsize::new(0));
    let spans = Arc::new(parking_lot::Mutex::new(Vec::<(u64, u64)>::new()));
    let mut tasks = Vec::new();
    // SIP callers need the server's SIP address: given, or asked once.
    let sip = match (opts.transport, opts.sip) {
        (Transport::Sip, Some(a)) => Ok(a),
        (Transport::Sip, None) => client::sip::discover(&opts.url, opts.api_token.as_deref())
            .await
            .map_err(|e| e.to_string()),
        _ => Err("not a SIP run".to_string()),
    };
    let gap = if opts.ramp_per_s > 0.0 {
        Duration::from_secs_f64(1.0 / opts.ramp_per_s)
    } else {
        Duration::ZERO
    };
    let mut index = 0;
    // More calls while under --calls, or while --duration lasts.
    let want_more = |index: usize| {
        index < opts.calls.max(1)
            || opts
                .duration_s
                .is_some_and(|d| t0.elapsed() < Duration::from_secs(d))
    };
    loop {
        if !want_more(index) {
            break;
        }
        let permit = sem.clone().acquire_owned().await.expect("semaphore open");
        // Waiting for a slot may have used up the duration.
        if !want_more(index) {
            break;
        }
        let which = scenario.pick(&mut rng);
        let caller = scenario.callers[which].clone();
        let call_opts = CallOptions {
            url: opts.url.clone(),
            http: String::new(),
            from: caller.from.clone(),
            script: Script::Steps {
                steps: caller.steps.clone(),
                quiet_ms: 700,
            },
            linger_ms: 1000,
            max_secs: opts.max_call_s,
            dtmf: vec![],
            signing: opts.signing.clone(),
            api_token: opts.api_token.clone(),
        };
        let (active, spans, progress) = (active.clone(), spans.clone(), progress.clone());
        progress.started.fetch_add(1, Ordering::Relaxed);
        let i = index;
        let transport = opts.transport;
        let sip = sip.clone();
        tasks.push(tokio::spawn(async move {
            let started = t0.elapsed().as_millis() as u64;
            active.fetch_add(1, Ordering::Relaxed);
            let r = match (transport, sip) {
                (Transport::Twilio, _) => client::run_call(call_opts).await,
                (Transport::Webrtc, _) => client::webrtc::run_call(call_opts).await,
                (Transport::Sip, Ok(addr)) => {
                    client::sip::run_call(call_opts, addr, SIP_DIAL).await
                }
                (Transport::Sip, Err(reason)) => Err(client::ClientError::Connect {
                    url: "the server's SIP address".into(),
                    reason,
                }),
            };
            active.fetch_sub(1, Ordering::Relaxed);
            let ended = t0.elapsed().as_millis() as u64;
            spans.lock().push((started, ended));
            drop(permit);
            let mut res = measure(i, &caller, started, ended, r);
            res.caller_index = which;
            progress.finished.fetch_add(1, Ordering::Relaxed);
            if !res.ok {
                progress.failed.fetch_add(1, Ordering::Relaxed);
            }
            progress
                .latencies
                .lock()
                .extend(res.turns.iter().filter_map(|t| t.voice_to_voice_ms));
            res
        }));
        index += 1;
        if !gap.is_zero() {
            tokio::time::sleep(gap).await;
        }
    }
    let mut calls = Vec::new();
    for t in tasks {
        match t.await {
            Ok(c) => calls.push(c),
            Err(e) => calls.push(CallResult {
                failure: Some(format!("caller task failed: {e}")),
                ..Default::default()
            }),
        }
    }
    // Concurrency at each reply: calls whose span covers the reply's time.
    let spans = spans.lock().clone();
    for c in &mut calls {
        for t in &mut c.turns {
            t.concurrency = spans
                .iter()
                .filter(|(s, e)| *s <= t.at_ms && t.at_ms <= *e)
                .count();
        }
    }
    calls.sort_by_key(|c| c.index);
    let wall = t0.elapsed();
    RunResult {
        scenario: scenario.name.clone(),
        url: opts.url.clone(),
        transport: opts.transport,
        concurrency: opts.concurrency,
        wall_ms: wall.as_millis() as u64,
        calls,
        generator_cpu_percent: 100.0 * (cpu_seconds() - cpu0) / wall.as_secs_f64().max(1e-3),
    }
}

/// Turns one call's client report into per-turn results and a verdict.
fn measure(
    index: usize,
    caller: &scenario::Caller,
    started: u64,
    ended: u64,
    r: Result<client::CallReport, client::ClientError>,
) -> CallResult {
    let mut res = CallResult {
        index,
        caller: caller.name.clone(),
        started_ms: started,
        ended_ms: ended,
        ..Default::default()
    };
    let rep = match r {
        Ok(r) => r,
        Err(e) => {
            res.failure = Some(e.to_string());
            return res;
        }
    };
    res.call_sid = rep.call_sid.clone();
    res.time_to_answer_ms = rep.first_audio_ms;
    res.reply_starts_ms = rep.replies.iter().map(|r| r.at_ms).collect();
    res.step_ends_ms = rep.step_ends.clone();
    res.pacing = rep.pacing.clone();
    if let Some(rec) = &rep.record {
        res.server = ServerTurns::of(rec);
    }
    res.barge_in_stop_ms = rep.barge_ins.iter().filter_map(|b| b.stop_ms).collect();
    // Replies: the first is the greeting; each later one answers the step
    // that came before it.
    let mut replies = rep.replies.iter();
    if let Some(g) = replies.next() {
        res.greeting_audio = g.audio.clone();
    }
    let mut missing = Vec::new();
    for (i, kind) in caller.steps.iter().map(|s| s.kind()).enumerate() {
        let ended = rep.step_ends.get(i).copied();
        // The answer to this step: every stretch of bot audio from its end
        // to the next step's (a slow voice may pause between the pieces of
        // one reply longer than the client's reply gap). From, not after:
        // a cached reply to a key can arrive within the millisecond it was
        // pressed in.
        let next = rep.step_ends.get(i + 1).copied().unwrap_or(u64::MAX);
        let answer: Vec<_> = ended
            .map(|end| {
                rep.replies
                    .iter()
                    .skip(1)
                    .filter(|r| r.at_ms >= end && r.at_ms < next)
                    .collect()
            })
            .unwrap_or_default();
        match (ended, answer.first()) {
            (Some(_), Some(r)) => {
                res.turns.push(TurnResult {
                    step: i,
                    kind: kind.to_string(),
                    at_ms: started + r.at_ms,
                    voice_to_voice_ms: r.voice_to_voice_ms,
                    expect: caller.expects[i].clone(),
                    ..Default::default()
                });
                res.reply_audio.push(
                    answer
                        .iter()
                        .flat_map(|r| r.audio.iter().copied())
                        .collect(),
                );
            }
            _ => missing.push(i + 1),
        }
    }
    res.failure = if rep.first_audio_ms.is_none() {
        Some("no answer: the bot never spoke".into())
    } else if !missing.is_empty() {
        Some(format!("no reply to step(s) {missing:?}"))
    } else {
        match rep.closed_by_server {
            Some(c) if c != 1000 && c != 1005 => Some(format!("server closed with code {c}")),
            _ => None,
        }
    };
    res.ok = res.failure.is_none();
    res
}

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Asr(#[from] crate::asr::AsrError),
    #[error("cannot resample a reply: {0}")]
    Resample(String),
}

/// The recognisers that check `scenario`'s replies: the configured ones,
/// plus the multilingual lane when the scenario is in another language.
pub fn checker(
    models_dir: &std::path::Path,
    cfg: &crate::asr::AsrConfig,
    scenario: &Scenario,
) -> Result<crate::asr::AsrPool, crate::asr::AsrError> {
    let mut asr = crate::asr::AsrPool::start(models_dir, cfg)?;
    if Some(scenario.language) != crate::nlu::lang::Lang::parse(&cfg.language) {
        asr.add_languages(models_dir, cfg, Default::default())?;
    }
    Ok(asr)
}

/// Transcribes the greeting and every reply and applies the scenario's
/// checks. Run after the calls, so the ASR never slows a live call.
pub fn check_replies(
    result: &mut RunResult,
    scenario: &Scenario,
    asr: &crate::asr::AsrPool,
) -> Result<(), CheckError> {
    let hear = |mu: &[u8]| -> Result<String, CheckError> {
        if mu.is_empty() {
            return Ok(String::new());
        }
        let pcm: Vec<f32> = mu
            .iter()
            .map(|&b| crate::media::mulaw::decode(b) as f32 / 32768.0)
            .collect();
        let x16 = crate::media::resample::resample(&pcm, 8000, 16000)
            .map_err(|e| CheckError::Resample(e.to_string()))?;
        // Whisper's window is 30 s; a reply's first 28 s is plenty to check.
        let x16 = x16[..x16.len().min(16000 * 28)].to_vec();
        if !asr.multilingual() {
            return Ok(asr.transcribe_blocking(x16)?.text);
        }
        // Another language: its greeting and replies are heard in it.
        let p = asr.submit_spoken(
            crate::asr::Spoken::In(scenario.language),
            std::sync::Arc::new(x16),
            crate::asr::Priority::Final,
        )?;
        Ok(p.result
            .blocking_recv()
            .map_err(|_| crate::asr::AsrError::Closed)??
            .text)
    };
    for c in &mut result.calls {
        let Some(caller) = scenario.callers.get(c.caller_index) else {
            continue;
        };
        if let Some(e) = &caller.greeting {
            let h = hear(&c.greeting_audio)?;
            c.greeting_correct = Some(e.matches(&h));
            c.greeting_heard = Some(h);
        }
        for (t, audio) in c.turns.iter_mut().zip(&c.reply_audio) {
            let h = hear(audio)?;
            if let Some(e) = &t.expect {
                t.correct = Some(e.matches(&h));
            }
            t.heard = Some(h);
        }
    }
    Ok(())
}

#[derive(Debug, Clone)]
pub struct CapacityOptions {
    pub p95_ms: u64,
    pub max_error_rate: f64,
    pub max_concurrency: usize,
    /// Calls per concurrency slot at each level (calls = level × this, at
    /// least `MIN_LEVEL_CALLS`).
    pub calls_per_slot: usize,
    /// Place one uncounted call before the first level.
    pub warmup: bool,
}

/// Fewer calls than this give a p95 that is one outlier.
pub const MIN_LEVEL_CALLS: usize = 6;

/// Concurrency levels tried in order until one breaks a bound.
pub fn ladder(max: usize) -> Vec<usize> {
    let mut v = vec![1, 2, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128];
    v.retain(|&n| n <= max.max(1));
    if v.last() != Some(&max.max(1)) {
        v.push(max.max(1));
    }
    v
}

fn level_held(s: &report::Summary, c: &CapacityOptions) -> bool {
    s.error_rate <= c.max_error_rate
        && s.voice_to_voice_ms
            .as_ref()
            .is_some_and(|p| p.p95 <= c.p95_ms)
}

async fn level(
    scenario: &Scenario,
    base: &RunOptions,
    c: &CapacityOptions,
    n: usize,
    progress: Arc<Progress>,
) -> (RunResult, report::Level) {
    let opts = RunOptions {
        concurrency: n,
        calls: (n * c.calls_per_slot.max(1)).max(MIN_LEVEL_CALLS),
        duration_s: None,
        ..base.clone()
    };
    let r = run(scenario, &opts, progress).await;
    let s = report::summarize(&r);
    let held = level_held(&s, c);
    (
        r,
        report::Level {
            concurrency: n,
            summary: s,
            held,
        },
    )
}

/// Climbs the ladder until the p95 voice-to-voice latency or the error rate
/// breaks its bound, then bisects between the last level that held and the
/// first that did not. `on_level` sees each level's runs as they finish.
pub async fn find_capacity(
    scenario: &Scenario,
    base: &RunOptions,
    c: &CapacityOptions,
    mut on_level: impl FnMut(usize) -> Arc<Progress>,
) -> (Vec<RunResult>, report::Capacity) {
    // One uncounted call first: the server's first decode after start-up is
    // slow (caches, allocations) and would otherwise decide level 1.
    if c.warmup {
        let warm = RunOptions {
            calls: 1,
            concurrency: 1,
            duration_s: None,
            ..base.clone()
        };
        run(scenario, &warm, Arc::new(Progress::default())).await;
    }
    let mut runs = Vec::new();
    let mut levels = Vec::new();
    let mut held: Option<usize> = None;
    let mut broke: Option<usize> = None;
    for n in ladder(c.max_concurrency) {
        let (r, l) = level(scenario, base, c, n, on_level(n)).await;
        let ok = l.held;
        runs.push(r);
        levels.push(l);
        if ok {
            held = Some(n);
        } else {
            broke = Some(n);
            break;
        }
    }
    // Bisect the gap between the last good and the first bad level.
    if let Some(mut bad) = broke {
        let mut good = held.unwrap_or(0);
        while bad - good > 1 {
            let mid = (good + bad) / 2;
            let (r, l) = level(scenario, base, c, mid, on_level(mid)).await;
            if l.held {
                good = mid;
                held = Some(mid);
            } else {
                bad = mid;
            }
            runs.push(r);
            levels.push(l);
        }
    }
    levels.sort_by_key(|l| l.concurrency);
    (
        runs,
        report::Capacity {
            p95_bound_ms: c.p95_ms,
            max_error_rate: c.max_error_rate,
            highest_held: held,
            levels,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cached reply to a key can begin within the millisecond the key
    /// was pressed in: it still answers that step.
    #[test]
    fn a_reply_from_the_steps_own_millisecond_answers_it() {
        let caller = scenario::Caller {
            name: "menu".into(),
            weight: 1,
            from: String::new(),
            greeting: None,
            steps: vec![client::Step::Dtmf("9".into())],
            expects: vec![None],
        };
        let mut rep = client::CallReport::new("CA1".into(), "MZ1".into());
        rep.first_audio_ms = Some(48);
        for at_ms in [48, 11_221] {
            rep.replies.push(client::ReplyTiming {
                at_ms,
                voice_to_voice_ms: None,
                first_frame_ms: None,
                audio: Vec::new(),
            });
        }
        rep.step_ends = vec![11_221];
        let res = measure(0, &caller, 0, 30_000, Ok(rep));
        assert_eq!(res.failure, None);
        assert_eq!(res.turns.len(), 1);
        assert_eq!(res.reply_starts_ms, vec![48, 11_221]);
    }

    #[test]
    fn the_ladder_ends_at_the_maximum() {
        assert_eq!(ladder(16), vec![1, 2, 4, 6, 8, 12, 16]);
        assert_eq!(ladder(10), vec![1, 2, 4, 6, 8, 10]);
        assert_eq!(ladder(0), vec![1]);
    }
}
