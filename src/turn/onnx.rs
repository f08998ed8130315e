//! One ONNX Runtime per process, loaded from the shared library that
//! sherpa-onnx also uses (models/lib/libonnxruntime.so).

use std::path::Path;
use std::sync::OnceLock;

#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    #[error("cannot load ONNX Runtime from {path}: {reason}")]
    Load { path: String, reason: String },
    #[error("cannot open model {path}: {reason}")]
    Model { path: String, reason: String },
    #[error("inference failed: {0}")]
    Run(String),
}

static INIT: OnceLock<Result<ort::environment::Environment, String>> = OnceLock::new();

/// Loads ONNX Runtime once; later calls return the first outcome.
pub fn init(lib: &Path) -> Result<(), OnnxError> {
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
        .with_intra_threads(1)
        .map_err(|e| err(e.to_string()))?
        .with_inter_threads(1)
        .map_err(|e| err(e.to_string()))?
        .commit_from_file(path)
        .map_err(|e| err(e.to_string()))
}
