//! The review queue on the desk, for supervisors: what callers asked that
//! the bot missed, grouped by what was said, and labelling it (what
//! `attendant agent retrain` learns from).

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;

use super::auth::Principal;
use super::Shared;
use crate::store::LabelKind;

/// Turns one request may label.
const MAX_TURNS: usize = 1_000;

#[derive(Debug, Deserialize)]
pub struct QueueQuery {
    /// Turns this alike share a group (0.75 by default).
    similarity: Option<f32>,
    /// Calls of the last N days (30 by default; at most ten years).
    days: Option<u32>,
}

/// `GET /desk/review`: the queue, biggest group first.
pub async fn queue(State(s): State<Shared>, Query(q): Query<QueueQuery>) -> Response {
    let Some(e) = s.engines.get() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "still loading\n").into_response();
    };
    let Some(rt) = e.agent.as_ref() else {
        return (StatusCode::NOT_FOUND, "no agent is configured\n").into_response();
    };
    let similarity = q.similarity.unwrap_or(0.75).clamp(0.3, 0.99);
    let embedder = rt.intents.embedder().clone();
    let days = q.days.unwrap_or(crate::learn::QUEUE_DAYS).clamp(1, 3650);
    match crate::learn::queue(&s.services.store, embedder, similarity, days).await {
        Ok(q) => Json(q).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "review queue");
            (StatusCode::INTERNAL_SERVER_ERROR, "cannot read the queue\n").into_response()
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelBody {
    /// CALL#TURN each.
    turns: Vec<String>,
    kind: LabelKind,
    /// The intent (or kb:ARTICLE), the new intent's name, or what the
    /// knowledge base lacks; empty for noise.
    #[serde(default)]
    value: String,
}

/// `POST /desk/review/labels`: labels turns as the signed-in supervisor.
pub async fn label(
    State(s): State<Shared>,
    Extension(p): Extension<Principal>,
    Json(b): Json<LabelBody>,
) -> Response {
    if b.turns.is_empty() || b.turns.len() > MAX_TURNS {
        return (StatusCode::BAD_REQUEST, "1 to 1000 turns\n").into_response();
    }
    if b.kind != LabelKind::Noise && b.value.trim().is_empty() {
        return (StatusCode::BAD_REQUEST, "a label needs a value\n").into_response();
    }
    if b.value.len() > 200 {
        return (StatusCode::BAD_REQUEST, "value too long\n").into_response();
    }
    let mut turns = Vec::with_capacity(b.turns.len());
    for t in &b.turns {
        match crate::learn::parse_turn(t) {
            Some(x) => turns.push(x),
            None => return (StatusCode::BAD_REQUEST, "turns are CALL#TURN\n").into_response(),
        }
    }
    match crate::learn::label(&s.services.store, &turns, b.kind, b.value.trim(), &p.name).await {
        Ok(n) => Json(serde_json::json!({ "labelled": n })).into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    }
}
