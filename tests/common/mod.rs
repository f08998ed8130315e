//! A real Attendant server for integration tests, started once per test
//! binary on a free loopback port with the real models.

#![allow(dead_code)]

pub mod sipp;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use attendant::config::Config;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `../shared/data` beside the checkout (CI provides it).
pub fn shared() -> PathBuf {
    let p = repo().join("../shared/data");
    assert!(
        p.join("speech/manifest.jsonl").exists(),
        "shared test data not found at {}; it must sit beside the checkout",
        p.display()
    );
    p
}

/// The admin token every test server accepts (`auth.admin_token`).
pub const API_TOKEN: &str = "test-admin-token-0123456789abcdef";

/// GET with the test admin token.
pub fn api_get(url: &str) -> ureq::Request {
    ureq::get(url).set("authorization", &format!("Bearer {API_TOKEN}"))
}

/// POST with the test admin token.
pub fn api_post(url: &str) -> ureq::Request {
    ureq::post(url).set("authorization", &format!("Bearer {API_TOKEN}"))
}

pub fn config(env: &[(&str, &str)]) -> Config {
    let mut vars: Vec<(String, String)> = vec![
        (
            "ATTENDANT__SERVER__MODELS_DIR".into(),
            format!("\"{}\"", repo().join("models").display()),
        ),
        ("ATTENDANT__AUTH__ADMIN_TOKEN".into(), API_TOKEN.into()),
    ];
    // Every test server gets a database of its own, never the checkout's
    // data/ (PostgreSQL when DATABASE_URL points at one).
    if !env.iter().any(|(k, _)| *k == "ATTENDANT__STORE__URL") {
        vars.push((
            "ATTENDANT__STORE__URL".into(),
            format!("\"{}\"", scratch_store()),
        ));
    }
    // SIP binds 5060 by default; tests that want it point [sip] at a
    // config of their own on free ports.
    if !env.iter().any(|(k, _)| k.starts_with("ATTENDANT__SIP__")) {
        vars.push(("ATTENDANT__SIP__ENABLED".into(), "false".into()));
    }
    // Test callers share caller IDs; the per-number cap has its own test.
    vars.push(("ATTENDANT__SERVER__MAX_CALLS_PER_NUMBER".into(), "0".into()));
    if let Some(v) = light_spanish_voice(env) {
        vars.push(v);
    }
    vars.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Config::load(None, vars).expect("test configuration")
}

/// espeak-ng's Spanish voice for a test server that does not choose one.
/// Servers testing something else then start without loading Kokoro or
/// synthesising its prompts beside other tests on a fresh machine (two
/// cores shared by every test). The shipped voice is tested on its own
/// (tests/e2e/asr.rs).
fn light_spanish_voice(env: &[(&str, &str)]) -> Option<(String, String)> {
    (!env
        .iter()
        .any(|(k, _)| k.starts_with("ATTENDANT__TTS__VOICES__")))
    .then(|| {
        (
            "ATTENDANT__TTS__VOICES__ES".into(),
            "espeak-ng:es-419".into(),
        )
    })
}

/// A fresh scratch database URL (SQLite in a temporary folder kept for the
/// process, or a new PostgreSQL database under `DATABASE_URL`).
pub fn scratch_store() -> String {
    let dir = tempfile::tempdir().expect("temp dir").keep();
    rt().block_on(attendant::store::scratch_url(&dir))
        .expect("scratch database")
}

/// Starts a server on its own runtime thread and waits until it is healthy.
pub fn start_server(cfg: Config) -> SocketAddr {
    attendant::asr::configure_threads();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
            let bound = tx.clone();
            // A server that cannot start says why, to the waiting test.
            if let Err(e) = attendant::server::serve(cfg, listen, move |a| {
                let _ = bound.send(Ok(a));
            })
            .await
            {
                let _ = tx.send(Err(format!("{e:#}")));
            }
        });
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("server bound")
        .unwrap_or_else(|e| panic!("server did not start: {e}"));
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(r) = ureq::get(&format!("http://{addr}/healthz")).call() {
            if r.status() == 200 {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "server never became healthy (models missing?)"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    addr
}

/// Logs to the test's output, at `ATTENDANT_LOG` (default warn).
pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            std::env::var("ATTENDANT_LOG").unwrap_or_else(|_| "warn".into()),
        ))
        .with_test_writer()
        .try_init();
}

/// The default server, shared by the tests of one binary.
pub fn server() -> SocketAddr {
    static S: OnceLock<SocketAddr> = OnceLock::new();
    *S.get_or_init(|| {
        init_logs();
        start_server(config(&[]))
    })
}

/// A WebRTC line to the server at `http` (a caller's or a desk agent's),
/// playing `steps`.
pub fn webrtc_line(
    http: SocketAddr,
    steps: Vec<attendant::client::Step>,
    linger_ms: u64,
    max_secs: u64,
) -> attendant::client::CallOptions {
    attendant::client::CallOptions {
        url: format!("http://{http}"),
        http: String::new(),
        from: String::new(),
        script: attendant::client::Script::Steps {
            steps,
            quiet_ms: 700,
        },
        linger_ms,
        max_secs,
        dtmf: vec![],
        signing: None,
        api_token: Some(API_TOKEN.into()),
    }
}

/// The server's SIP/UDP address, from its `GET /sip`.
pub fn sip_udp(http: SocketAddr) -> SocketAddr {
    let st: serde_json::Value = api_get(&format!("http://{http}/sip"))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    st["udp"][0].as_str().unwrap().parse().unwrap()
}

/// A call's record once the call has ended.
pub fn ended_record(http: SocketAddr, id: &str) -> attendant::pipeline::CallRecord {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = api_get(&format!("http://{http}/calls/{id}")).call() {
            let rec: attendant::pipeline::CallRecord = r.into_json().unwrap();
            if rec.ended_unix_ms.is_some() {
                return rec;
            }
        }
        assert!(Instant::now() < deadline, "no ended record for {id}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The transcript `../shared/data/speech/manifest.jsonl` gives a recording
/// (`path` relative to `speech/`).
pub fn manifest_transcript(path: &str) -> String {
    let manifest = std::fs::read_to_string(shared().join("speech/manifest.jsonl")).unwrap();
    manifest
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["path"] == path)
        .expect("manifest entry")["transcript"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Writes 16 kHz mono 16-bit samples (a browser's fake microphone).
pub fn write_wav_16k(path: &std::path::Path, samples: &[f32]) {
    let mut w = hound::WavWriter::create(
        path,
        hound::WavSpec {
            channels: 1,
            sample_rate: 16000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        },
    )
    .unwrap();
    for s in samples {
        w.write_sample((s * 32767.0) as i16).unwrap();
    }
    w.finalize().unwrap();
}

/// A WAV a browser recorded, as 8 kHz 16-bit PCM for `transcribe`.
pub fn read_wav_pcm8k(path: &std::path::Path) -> Vec<i16> {
    let mut r = hound::WavReader::open(path).unwrap();
    let rate = r.spec().sample_rate;
    let x: Vec<f32> = r
        .samples::<i16>()
        .map(|s| s.unwrap() as f32 / 32768.0)
        .collect();
    attendant::media::resample::resample(&x, rate, 8000)
        .unwrap()
        .iter()
        .map(|s| (s * 32767.0) as i16)
        .collect()
}

pub fn ws_url(addr: SocketAddr) -> String {
    format!("ws://{addr}/twilio/stream")
}

pub fn fixture(name: &str) -> PathBuf {
    repo().join("audio-fixtures").join(name)
}

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// An `attendant serve` of its own, as a child process: for figures about
/// the server alone (its RSS), apart from the test process.
pub struct ServerProcess {
    pub addr: SocketAddr,
    /// Its database, to look into after it has stopped.
    pub store_url: String,
    pub child: std::process::Child,
    /// Everything it has logged (stdout) so far.
    pub logs: std::sync::Arc<std::sync::Mutex<String>>,
}

impl ServerProcess {
    pub fn start(env: &[(&str, &str)]) -> ServerProcess {
        use std::io::BufRead;
        let cfg = config(env);
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_attendant"));
        cmd.args(["serve", "--listen", "127.0.0.1:0"])
            .current_dir(repo())
            .env("ATTENDANT_LOG", "warn")
            .env(
                "ATTENDANT__SERVER__MODELS_DIR",
                format!("\"{}\"", repo().join("models").display()),
            )
            .env("ATTENDANT__AUTH__ADMIN_TOKEN", API_TOKEN)
            .env("ATTENDANT__STORE__URL", format!("\"{}\"", cfg.store.url))
            .env("ATTENDANT__SERVER__MAX_CALLS_PER_NUMBER", "0")
            .stdout(std::process::Stdio::piped());
        if !env.iter().any(|(k, _)| k.starts_with("ATTENDANT__SIP__")) {
            cmd.env("ATTENDANT__SIP__ENABLED", "false");
        }
        if let Some((k, v)) = light_spanish_voice(env) {
            cmd.env(k, v);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("attendant binary");
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let logs = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let addr: SocketAddr = loop {
            let mut line = String::new();
            if out.read_line(&mut line).unwrap() == 0 {
                panic!("server exited before listening:\n{}", logs.lock().unwrap());
            }
            logs.lock().unwrap().push_str(&line);
            if let Some(a) = line.trim().strip_prefix("attendant listening on http://") {
                break a.parse().unwrap_or_else(|_| panic!("server said {line:?}"));
            }
        };
        // Keep reading, so the server never blocks on a full pipe.
        let sink = logs.clone();
        std::thread::spawn(move || {
            let mut line = String::new();
            while out.read_line(&mut line).is_ok_and(|n| n > 0) {
                sink.lock().unwrap().push_str(&line);
                line.clear();
            }
        });
        let deadline = Instant::now() + Duration::from_secs(120);
        while !ureq::get(&format!("http://{addr}/healthz"))
            .call()
            .is_ok_and(|r| r.status() == 200)
        {
            assert!(
                Instant::now() < deadline,
                "server process never became healthy"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        ServerProcess {
            addr,
            store_url: cfg.store.url.clone(),
            child,
            logs,
        }
    }

    /// Resident memory of the server process, MB.
    pub fn rss_mb(&self) -> f64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        s.lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap()
            / 1024.0
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port for a peer we start (sipp): free for UDP and TCP, with
/// the three after it (sipp's media sockets), and taken below the kernel's
/// ephemeral range so that no outgoing connection of this process or the
/// server grabs it between this check and the peer's bind. Ports from
/// `bind(0)` come from that range and did collide with sipp's TCP bind.
pub fn peer_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 21_000;
    const SPAN: u32 = 11_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // Each test binary starts somewhere of its own in the span.
    let start = (std::process::id() * 97) % SPAN;
    for _ in 0..SPAN / 4 {
        let n = NEXT.fetch_add(4, Ordering::Relaxed);
        let port = (LOW + (start + n) % (SPAN - 4)) as u16;
        let free = (port..port + 4).all(|p| {
            std::net::UdpSocket::bind(("127.0.0.1", p)).is_ok()
                && std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()
        });
        if free {
            return port;
        }
    }
    panic!("no free loopback port in {LOW}..{}", LOW + SPAN);
}

/// Transcribes 8 kHz 16-bit audio with the real models (what a caller heard).
pub fn transcribe(pcm: &[i16]) -> String {
    static ASR: OnceLock<attendant::asr::AsrPool> = OnceLock::new();
    let asr = ASR.get_or_init(|| {
        let cfg = config(&[]);
        attendant::asr::AsrPool::start(&cfg.server.models_dir, &cfg.asr).expect("ASR")
    });
    // Trailing silence of the spurt is dropped by Whisper anyway.
    let x: Vec<f32> = pcm.iter().map(|&s| s as f32 / 32768.0).collect();
    let x16 = attendant::media::resample::resample(&x, 8000, 16000).unwrap();
    asr.transcribe_blocking(x16[..x16.len().min(16000 * 28)].to_vec())
        .unwrap()
        .text
}

/// Share of the expected words found in what was heard.
pub fn words_found(expected: &str, heard: &str) -> f64 {
    let want = attendant::eval::normalize(expected);
    let got = attendant::eval::normalize(heard);
    want.iter().filter(|w| got.contains(w)).count() as f64 / want.len().max(1) as f64
}

/// Copies a directory tree (an agent to change in a test).
pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}
