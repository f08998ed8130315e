//! The HTTP/WebSocket server: health, metrics, call records, and the Twilio
//! webhook + Media Streams endpoint. Models load in the background; the
//! server answers 503 until they are ready.

pub mod twilio;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use crate::config::Config;
use crate::pipeline::{metrics, CallStore, Engines};

pub struct AppState {
    pub cfg: Config,
    pub engines: OnceLock<Arc<Engines>>,
    pub calls: Arc<CallStore>,
}

pub type Shared = Arc<AppState>;

pub fn router(state: Shared) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .route("/calls", get(list_calls))
        .route("/calls/{id}", get(get_call))
        .route("/twilio/voice", post(twilio::voice_webhook))
        .route("/twilio/stream", get(twilio::stream_upgrade))
        .with_state(state)
}

async fn healthz(State(s): State<Shared>) -> Response {
    match s.engines.get() {
        Some(_) => (StatusCode::OK, "ok\n").into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, "loading models\n").into_response(),
    }
}

async fn metrics_text() -> Response {
    (
        [("content-type", "text/plain; version=0.0.4")],
        metrics::render(),
    )
        .into_response()
}

async fn list_calls(State(s): State<Shared>) -> Json<Vec<String>> {
    Json(s.calls.ids())
}

async fn get_call(State(s): State<Shared>, Path(id): Path<String>) -> Response {
    match s.calls.get(&id) {
        Some(r) => Json(r).into_response(),
        None => (StatusCode::NOT_FOUND, "no such call\n").into_response(),
    }
}

/// Binds, starts loading models, and serves until the process ends.
/// `on_bound` receives the actual address (useful with port 0).
pub async fn serve(
    cfg: Config,
    listen: SocketAddr,
    on_bound: impl FnOnce(SocketAddr),
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let state = Arc::new(AppState {
        calls: Arc::new(CallStore::new(cfg.server.keep_calls)),
        cfg: cfg.clone(),
        engines: OnceLock::new(),
    });
    let loader = state.clone();
    tokio::task::spawn_blocking(move || match Engines::load(cfg) {
        Ok(e) => {
            let _ = loader.engines.set(e.clone());
            e.prewarm();
        }
        Err(err) => {
            tracing::error!(error = %err, "cannot load models; the server stays unhealthy");
        }
    });
    tracing::info!(%addr, "listening");
    on_bound(addr);
    axum::serve(listener, router(state)).await?;
    Ok(())
}
