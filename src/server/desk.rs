//! The agent desk's routes: the page, its state and live feed (server-sent
//! events), and taking, returning and passing on callers. Taking a call is
//! WHIP-style like a browser caller's offer: the agent's page posts its SDP
//! offer and gets the answer; the agent's WebRTC leg is then bridged to the
//! waiting caller's pipeline, whichever transport the caller came in on.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures_util::Stream;
use serde::Deserialize;
use tokio::sync::{broadcast, mpsc};

use super::auth::{Principal, Role};
use super::cluster::{forward, forwarded};
use super::webrtc::{accept, created, drive, Accepted, Leg};
use super::Shared;
use crate::desk::{AgentLeg, DeskError, ToCall, Viewer, LEG_FRAMES};
use crate::pipeline::{CallHandle, CallInput, CallOutput};
use crate::transport::webrtc::MAX_OFFER;

fn viewer(p: &Principal) -> Viewer {
    Viewer {
        name: p.name.clone(),
        all: matches!(p.role, Role::Admin | Role::Supervisor),
    }
}

fn desk_error(e: DeskError) -> Response {
    let code = match e {
        DeskError::Disabled | DeskError::Full(_) | DeskError::NobodyOnline(_) => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        DeskError::NotWaiting => StatusCode::CONFLICT,
        DeskError::NotYourQueue | DeskError::NotYourCall => StatusCode::FORBIDDEN,
    };
    (code, format!("{e}\n")).into_response()
}

/// `GET /desk`: the agents' page (sign-in, queue, context cards, calls).
pub async fn page(State(s): State<Shared>) -> Response {
    if !s.cfg.desk.enabled {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    }
    html(include_str!("../../web/desk.html"))
}

fn html(body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

/// `GET /rtc.js`: the WebRTC helpers the caller page and the desk share.
pub async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        include_str!("../../web/rtc.js"),
    )
        .into_response()
}

/// `GET /desk/state`: who is waiting (for this agent's queues), who is
/// talking, and (for supervisors) the bot calls in progress.
pub async fn state(State(s): State<Shared>, Extension(p): Extension<Principal>) -> Response {
    let v = viewer(&p);
    let mut body = serde_json::to_value(s.desk.snapshot(&v)).unwrap_or_default();
    body["me"] = serde_json::json!({ "name": p.name, "role": p.role, "all": v.all });
    Json(body).into_response()
}

/// `GET /desk/events`: the desk's live feed for this viewer, as server-sent
/// events. A page that falls behind gets `resync` and reloads the state.
pub async fn events(
    State(s): State<Shared>,
    Extension(p): Extension<Principal>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let v = viewer(&p);
    let rx = s.desk.subscribe();
    // While the page listens, its person counts as at the desk.
    let here = s.desk.present(&v);
    let state = (rx, s, v, here);
    let stream = futures_util::stream::unfold(state, |(mut rx, s, v, here)| async move {
        loop {
            match rx.recv().await {
                Ok(e) if s.desk.shows(&v, &e) => {
                    let data = serde_json::to_string(&*e).unwrap_or_default();
                    return Some((Ok(Event::default().data(data)), (rx, s, v, here)));
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let ev = Event::default().data(r#"{"type":"resync"}"#);
                    return Some((Ok(ev), (rx, s, v, here)));
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// Call ids as they appear in paths (ours: letters, digits, `-`, `_`).
fn plain_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

/// The node holding call `id` when it is not this one (and this request
/// was not already passed on by a node).
fn elsewhere(s: &Shared, id: &str, headers: &HeaderMap) -> Option<String> {
    if forwarded(headers) || !plain_id(id) {
        return None;
    }
    s.desk.owner(id)
}

/// `POST /desk/calls/{id}/take` with the agent's SDP offer: the caller is
/// theirs, bridged to their browser once its leg is up. A caller another
/// node holds is taken through that node (the agent's audio goes there).
pub async fn take(
    State(s): State<Shared>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    req: Request,
) -> Response {
    if let Some(node) = elsewhere(&s, &id, req.headers()) {
        let (parts, body) = req.into_parts();
        let Ok(offer) = axum::body::to_bytes(body, MAX_OFFER).await else {
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                "offer too large
",
            )
                .into_response();
        };
        let path = format!("/desk/calls/{id}/take");
        let resp = forward(&node, "POST", &path, &parts.headers, offer).await;
        let leg = resp
            .headers()
            .get(header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .and_then(|l| l.strip_prefix("/webrtc/calls/"));
        if let Some(leg) = leg {
            s.desk.remember_leg(leg, &node);
        }
        tracing::info!(call = %id, agent = %p.name, %node, status = %resp.status(), "take passed to the node holding the call");
        return resp;
    }
    let asked = Instant::now();
    let v = viewer(&p);
    let Accepted { sess, sock, answer } = match accept(&s.cfg.webrtc, req).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let (call, info) = match s.desk.take(&v, &id) {
        Ok(x) => x,
        Err(e) => return desk_error(e),
    };
    let (from_agent_tx, from_agent) = mpsc::channel(LEG_FRAMES);
    let (to_agent, to_agent_rx) = mpsc::channel(LEG_FRAMES);
    let leg = AgentLeg {
        from_agent,
        to_agent,
    };
    let take = ToCall::Take {
        agent: p.name.clone(),
        leg,
        asked,
    };
    if call.try_send(take).is_err() {
        s.desk.untake(&id);
        return desk_error(DeskError::NotWaiting);
    }
    let leg_id = format!("desk-{}", uuid::Uuid::new_v4().simple());
    tracing::info!(call = %id, agent = %p.name, queue = %info.queue, leg = %leg_id, "agent takes the call");
    let hung_up = s.webrtc.add(&leg_id);
    let handle = bridge(from_agent_tx, to_agent_rx);
    tokio::spawn(drive(
        s.clone(),
        leg_id.clone(),
        Leg::Agent(handle),
        sess,
        sock,
        hung_up,
    ));
    created(&leg_id, answer)
}

/// The agent's WebRTC leg speaks `CallInput`/`CallOutput` like any call;
/// this turns that into the caller's bridge: the agent's voice to the
/// caller (dropped, not queued, when the caller's side is behind), the
/// caller's voice to the agent, and either side ending ends the other.
fn bridge(from_agent: mpsc::Sender<Vec<u8>>, mut to_agent: mpsc::Receiver<Vec<u8>>) -> CallHandle {
    let (input, mut from_leg) = mpsc::channel::<CallInput>(64);
    let (to_leg, output) = mpsc::channel::<CallOutput>(64);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                msg = from_leg.recv() => match msg {
                    Some(CallInput::Audio(ulaw)) => {
                        let _ = from_agent.try_send(ulaw);
                    }
                    Some(CallInput::Hangup) | None => break,
                    Some(_) => {}
                },
                frame = to_agent.recv() => match frame {
                    Some(ulaw) => {
                        let out = CallOutput::Audio { reply: 1, ulaw: std::sync::Arc::new(ulaw) };
                        if to_leg.send(out).await.is_err() {
                            break;
                        }
                    }
                    // The caller hung up or went back to the bot.
                    None => break,
                },
            }
        }
    });
    CallHandle { input, output }
}

/// `POST /desk/calls/{id}/return`: the agent gives the caller back to the bot.
pub async fn give_back(
    State(s): State<Shared>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(node) = elsewhere(&s, &id, &headers) {
        let path = format!("/desk/calls/{id}/return");
        return forward(&node, "POST", &path, &headers, Bytes::new()).await;
    }
    match s.desk.command(&viewer(&p), &id, ToCall::Return) {
        Ok(()) => (StatusCode::OK, "returned to the bot\n").into_response(),
        Err(e) => desk_error(e),
    }
}

#[derive(Deserialize)]
pub struct PassOn {
    queue: String,
}

/// `POST /desk/calls/{id}/transfer {"queue"}`: the agent passes the caller
/// on to another queue (they wait there with the same context card).
pub async fn pass_on(
    State(s): State<Shared>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(to): Json<PassOn>,
) -> Response {
    let queue = to.queue.trim();
    let ok = !queue.is_empty()
        && queue.len() <= 64
        && queue
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !ok {
        return (StatusCode::BAD_REQUEST, "queue: letters, digits, _ and -\n").into_response();
    }
    if let Some(node) = elsewhere(&s, &id, &headers) {
        let path = format!("/desk/calls/{id}/transfer");
        let body = serde_json::json!({ "queue": queue }).to_string();
        return forward(&node, "POST", &path, &headers, Bytes::from(body)).await;
    }
    let cmd = ToCall::Requeue {
        queue: queue.to_string(),
    };
    match s.desk.command(&viewer(&p), &id, cmd) {
        Ok(()) => (StatusCode::OK, "passed on\n").into_response(),
        Err(e) => desk_error(e),
    }
}
