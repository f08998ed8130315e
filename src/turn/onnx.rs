//! One ONNX Runtime per process, loaded from the shared library that
//! sherpa-onnx also uses (models/lib/libonnxruntime.so).

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    #[error("cannot load ONNX Runtime from {path}: {reason}")]
    Load { path: String, reason: String },
    #[error("cannot open model {path}: {reason}")]
    Model { path: String, reason: String },
    #[error("inference failed: {0}")]
    Run(String),
    #[error("the process is shutting down")]
    ShuttingDown,
}

static SHUTTING_DOWN: AtomicBool = AtomicBool::new(false);
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// Marks one ONNX Runtime call (ours or sherpa-onnx's) as running. At process
/// exit, ONNX Runtime's static destructors must not run under a live call —
/// it throws and the process aborts — so exit waits for these to finish.
///
/// ONNX Runtime creates many of its statics lazily, on first use, and their
/// destructors run in reverse order of creation; so the exit hook is
/// registered again after the first call at each site completes, which puts
/// it ahead of every static that call created.
pub struct InferenceGuard(&'static OnceLock<()>);

impl InferenceGuard {
    /// `site` is a `static OnceLock<()>` owned by the calling code path.
    pub fn enter(site: &'static OnceLock<()>) -> Result<Self, OnnxError> {
        IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
        if SHUTTING_DOWN.load(Ordering::SeqCst) {
            IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
            return Err(OnnxError::ShuttingDown);
        }
        Ok(Self(site))
    }
}

impl Drop for InferenceGuard {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
        self.0.get_or_init(register_exit_hook);
    }
}

#[allow(unsafe_code)]
fn register_exit_hook() {
    // SAFETY: registers a plain extern "C" fn with no captured state; the
    // handler is idempotent, so registering it several times is harmless.
    unsafe {
        libc::atexit(drain_at_exit);
    }
}

pub fn shutting_down() -> bool {
    SHUTTING_DOWN.load(Ordering::SeqCst)
}

extern "C" fn drain_at_exit() {
    SHUTTING_DOWN.store(true, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(10);
    while IN_FLIGHT.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Registers the exit hook once. atexit handlers run in reverse order of
/// registration, so this one runs before the destructors of the already
/// loaded ONNX Runtime library.
pub fn install_exit_guard() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(register_exit_hook);
}

static INIT: OnceLock<Result<ort::environment::Environment, String>> = OnceLock::new();

/// Loads ONNX Runtime once; later calls return the first outcome.
pub fn init(lib: &Path) -> Result<(), OnnxError> {
    install_exit_guard();
    INIT.get_or_init(|| {
        ort::init_from(lib)
            .map_err(|e| e.to_string())?
            .with_name("attendant")
            .build()
            .map_err(|e| e.to_string())
    })
    .as_ref()
    .map(|_| ())
    .map_err(|reason| OnnxError::Load {
        path: lib.display().to_string(),
        reason: reason.clone(),
    })
}

/// Opens a model for single-threaded inference: these models are small and
/// many calls run them at once, so parallelism comes from calls, not ops.
pub fn session(path: &Path) -> Result<ort::session::Session, OnnxError> {
    session_threads(path, 1)
}

/// Opens a model whose one run is long enough to be worth `threads` cores
/// (a neural voice's sentence).
pub fn session_threads(path: &Path, threads: usize) -> Result<ort::session::Session, OnnxError> {
    let err = |e: String| OnnxError::Model {
        path: path.display().to_string(),
        reason: e,
    };
    let env = match INIT.get() {
        Some(Ok(env)) => env,
        _ => return Err(err("ONNX Runtime is not initialised".into())),
    };
    ort::session::Session::builder(env)
        .map_err(|e| err(e.to_string()))?
        .with_intra_threads(threads.max(1))
        .map_err(|e| err(e.to_string()))?
        .with_inter_threads(1)
        .map_err(|e| err(e.to_string()))?
        .commit_from_file(path)
        .map_err(|e| err(e.to_string()))
}

/// Several sessions of one model, so calls running it at once do not queue
/// behind one lock: a caller takes any free session, and waits only when
/// every one is busy.
pub struct SessionPool {
    sessions: Vec<parking_lot::Mutex<ort::session::Session>>,
    next: AtomicUsize,
}

impl SessionPool {
    /// `size` sessions of the model at `path` (at least one).
    pub fn open(path: &Path, size: usize) -> Result<Self, OnnxError> {
        let sessions = (0..size.max(1))
            .map(|_| session(path).map(parking_lot::Mutex::new))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            sessions,
            next: AtomicUsize::new(0),
        })
    }

    /// One session per core and one spare: each run is single-threaded.
    pub fn default_size() -> usize {
        std::thread::available_parallelism().map_or(2, |n| n.get()) + 1
    }

    /// Runs `f` on a free session.
    pub fn with<R>(&self, f: impl FnOnce(&mut ort::session::Session) -> R) -> R {
        let n = self.sessions.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        for i in 0..n {
            if let Some(mut s) = self.sessions[(start + i) % n].try_lock() {
                return f(&mut s);
            }
        }
        f(&mut self.sessions[start].lock())
    }
}
