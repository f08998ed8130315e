//! The HTTP/WebSocket server: health, metrics, call records, the Twilio
//! webhooks + Media Streams endpoint, the customer-store APIs (hand-off
//! packets, customers, KPIs) and proactive follow-up (events, replies,
//! outbox). Models load in the background; calls get 503 until they are
//! ready, while the store APIs answer at once.

pub mod admission;
pub mod auth;
pub mod cluster;
pub mod desk;
mod review;
mod signin;
pub mod sip;
pub mod twilio;
pub mod webrtc;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use crate::config::Config;
use crate::dialogue::Services;
use crate::followup::{FollowupError, Followups, RulesFile, Scorer};
use crate::pipeline::{metrics, CallStore, Engines};
use crate::store::Store;

pub struct AppState {
    pub cfg: Config,
    pub engines: OnceLock<Arc<Engines>>,
    pub calls: Arc<CallStore>,
    pub services: Arc<Services>,
    pub followups: OnceLock<Arc<Followups>>,
    pub sip: Arc<parking_lot::Mutex<sip::SipStatus>>,
    /// Signed requests already taken (see `auth`).
    pub replay: auth::ReplayGuard,
    /// Failed sign-ins and the Argon2 checks running (see `signin`).
    pub sign_in: signin::Throttle,
    /// Places for calls on this node (caps, draining).
    pub admission: Arc<admission::Admission>,
    /// Live WebRTC calls by id: how `DELETE /webrtc/calls/{id}` hangs up.
    pub webrtc: webrtc::Live,
    /// Callers waiting for, or talking to, people at the agent desk.
    pub desk: Arc<crate::desk::Desk>,
}

pub type Shared = Arc<AppState>;

/// Largest request body any route takes.
const BODY_LIMIT: usize = 256 * 1024;

pub fn router(state: Shared) -> Router {
    Router::new()
        .route("/healthz", get(readyz))
        .route("/readyz", get(readyz))
        .route("/livez", get(livez))
        .route("/sip", get(sip_status))
        .route("/metrics", get(metrics_text))
        .route("/calls", get(list_calls))
        .route("/calls/{id}", get(get_call))
        .route("/calls/{id}/handoff", get(get_handoff))
        .route("/calls/{id}/interaction", get(get_interaction))
        .route("/customers/{id}", get(get_customer))
        .route("/kpis", get(get_kpis))
        .route("/events", post(post_event))
        .route("/messages/inbound", post(post_inbound))
        .route("/outbox", get(get_outbox))
        .route("/threads", get(get_threads))
        .route("/tickets", get(get_tickets))
        .route("/twilio/voice", post(twilio::voice_webhook))
        .route("/twilio/sms", post(twilio::sms_webhook))
        .route("/twilio/stream", get(twilio::stream_upgrade))
        .route("/", get(webrtc::page))
        .route("/webrtc/config", get(webrtc::client_config))
        .route("/webrtc/offer", post(webrtc::offer))
        .route("/webrtc/calls/{id}", axum::routing::delete(webrtc::hang_up))
        .route("/rtc.js", get(desk::script))
        .route("/desk", get(desk::page))
        .route("/desk/state", get(desk::state))
        .route("/desk/review", get(review::queue))
        .route("/desk/review/labels", post(review::label))
        .route("/desk/events", get(desk::events))
        .route("/desk/calls/{id}/take", post(desk::take))
        .route("/desk/calls/{id}/return", post(desk::give_back))
        .route("/desk/calls/{id}/transfer", post(desk::pass_on))
        .route("/auth/login", post(auth::login))
        .route("/auth/logout", post(auth::logout))
        .route("/auth/whoami", get(auth::whoami))
        // One layer decides who may use what (see `auth::need`); no request
        // body is larger than a Twilio webhook or a business event needs.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::layer,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

async fn sip_status(State(s): State<Shared>) -> Response {
    Json(s.sip.lock().clone()).into_response()
}

/// Parts that can no longer serve calls: each is retried or rebuilt where
/// it failed, so being listed here means that did not work and only a
/// restart will help.
fn broken_parts(s: &Shared) -> Vec<&'static str> {
    let mut down = Vec::new();
    if let Some(e) = s.engines.get() {
        if !e.asr.healthy() {
            down.push("speech recognition workers");
        }
        if !e.tts.healthy() {
            down.push("speech synthesis workers");
        }
    }
    if s.sip.lock().signalling == sip::Signalling::Stopped {
        down.push("SIP signalling");
    }
    down
}

/// `GET /livez`: is the process worth keeping? 503 only when a part is
/// broken for good (a restart helps); loading, draining or full are alive.
async fn livez(State(s): State<Shared>) -> Response {
    let down = broken_parts(&s);
    if down.is_empty() {
        (StatusCode::OK, "alive\n").into_response()
    } else {
        let body = format!("down: {}\n", down.join(", "));
        (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    }
}

/// `GET /readyz` (and `/healthz`): should new calls come here? Not while
/// the models load, while draining, when every place is taken
/// (`server.max_calls`), or with a part down — so a load balancer or
/// Kubernetes sends calls to another node.
async fn readyz(State(s): State<Shared>) -> Response {
    if s.admission.draining() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response();
    }
    if s.engines.get().is_none() {
        return (StatusCode::SERVICE_UNAVAILABLE, "loading models\n").into_response();
    }
    let down = broken_parts(&s);
    if !down.is_empty() {
        let body = format!("down: {}\n", down.join(", "));
        return (StatusCode::SERVICE_UNAVAILABLE, body).into_response();
    }
    if !s.admission.accepting() {
        let body = format!("full: {} calls\n", s.admission.active());
        return (StatusCode::SERVICE_UNAVAILABLE, body).into_response();
    }
    (StatusCode::OK, "ok\n").into_response()
}

pub(crate) fn store_error(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "store request failed");
    (StatusCode::INTERNAL_SERVER_ERROR, "store unavailable\n").into_response()
}

async fn metrics_text(State(s): State<Shared>) -> Response {
    match crate::kpi::load(&s.services.store).await {
        Ok(k) => crate::kpi::publish(&k),
        Err(e) => tracing::warn!(error = %e, "KPIs not refreshed"),
    }
    match s
        .services
        .store
        .count_events(crate::store::LOCKED_EVENT)
        .await
    {
        Ok(n) => crate::pipeline::metrics::metrics()
            .account_lockouts
            .set(n as f64),
        Err(e) => tracing::warn!(error = %e, "lock-out count not refreshed"),
    }
    (
        [("content-type", "text/plain; version=0.0.4")],
        metrics::render(),
    )
        .into_response()
}

/// Calls of this node's memory, after those stored before it (a restart).
async fn list_calls(State(s): State<Shared>) -> Response {
    let live = s.calls.ids();
    let keep = s.cfg.server.keep_calls as i64;
    let mut ids = match s.services.store.recent_call_ids(keep).await {
        Ok(ids) => ids,
        Err(e) => return store_error(e),
    };
    ids.retain(|id| !live.contains(id));
    ids.extend(live);
    Json(ids).into_response()
}

async fn get_call(State(s): State<Shared>, Path(id): Path<String>) -> Response {
    if let Some(r) = s.calls.get(&id) {
        return Json(r).into_response();
    }
    match s.services.store.call_record(&id).await {
        Ok(Some(r)) => Json(r).into_response(),
        Ok(None) => (StatusCode::NOT_FOUND, "no such call\n").into_response(),
        Err(e) => store_error(e),
    }
}

/// Writes call records to the store as calls change them (a turn, an
/// outcome), one writer for the node: at most one version per call waits.
fn spawn_record_writer(calls: Arc<CallStore>, store: Store) {
    tokio::spawn(async move {
        loop {
            let recs = calls.next_changes().await;
            let n = recs.len();
            for r in recs {
                let json = match serde_json::to_value(&r) {
                    Ok(j) => j,
                    Err(e) => {
                        tracing::error!(call = %r.call_id, error = %e, "call record not serialisable");
                        continue;
                    }
                };
                if let Err(e) = store
                    .put_call_record(&r.call_id, r.started_unix_ms as i64, &json)
                    .await
                {
                    tracing::error!(call = %r.call_id, error = %e, "call record not stored");
                }
            }
            calls.written(n);
        }
    });
}

/// The hand-off packet; its webhook delivery state rides in headers.
async fn get_handoff(State(s): State<Shared>, Path(id): Path<String>) -> Response {
    match s.services.store.handoff(&id).await {
        Ok(Some(h)) => (
            [
                ("x-attendant-delivery", h.webhook_status.clone()),
                ("x-attendant-attempts", h.attempts.to_string()),
            ],
            Json(h.packet),
        )
            .into_response(),
        Ok(None) => (StatusCode::NOT_FOUND, "no hand-off for this call\n").into_response(),
        Err(e) => store_error(e),
    }
}

async fn get_interaction(State(s): State<Shared>, Path(id): Path<String>) -> Response {
    match s.services.store.interaction(&id).await {
        Ok(Some(i)) => Json(i).into_response(),
        Ok(None) => (StatusCode::NOT_FOUND, "no such interaction\n").into_response(),
        Err(e) => store_error(e),
    }
}

async fn get_customer(State(s): State<Shared>, Path(id): Path<String>) -> Response {
    let st = &s.services.store;
    let res = async {
        let Some(c) = st.customer(&id).await? else {
            return Ok(None);
        };
        let history = st.interactions_of(&id, 20).await?;
        let orders = st.orders_of(&id).await?;
        Ok::<_, crate::store::StoreError>(Some(serde_json::json!({
            "customer": c,
            "orders": orders,
            "interactions": history,
        })))
    }
    .await;
    match res {
        Ok(Some(v)) => Json(v).into_response(),
        Ok(None) => (StatusCode::NOT_FOUND, "no such customer\n").into_response(),
        Err(e) => store_error(e),
    }
}

async fn get_kpis(State(s): State<Shared>) -> Response {
    match crate::kpi::load(&s.services.store).await {
        Ok(k) => Json(k).into_response(),
        Err(e) => store_error(e),
    }
}

/// The follow-up engine loads in the background (it needs the embedder);
/// until then its endpoints answer 503.
fn followups(s: &Shared) -> Option<Arc<Followups>> {
    s.followups.get().cloned()
}

fn followups_loading() -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, "follow-ups are loading\n").into_response()
}

fn followup_error(e: FollowupError) -> Response {
    match e {
        FollowupError::Invalid(m) => (StatusCode::BAD_REQUEST, format!("{m}\n")).into_response(),
        FollowupError::UnknownCustomer => {
            (StatusCode::UNPROCESSABLE_ENTITY, format!("{e}\n")).into_response()
        }
        e => store_error(e),
    }
}

/// Business events: `{"type": "return_processed", "order_id": …, "reason": …}`.
async fn post_event(State(s): State<Shared>, body: String) -> Response {
    let ev: serde_json::Value = match serde_json::from_str(&body) {
        Ok(v) => v,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("bad JSON: {e}\n")).into_response(),
    };
    let Some(f) = followups(&s) else {
        return followups_loading();
    };
    match f.handle_event(&ev).await {
        Ok(o) => (StatusCode::ACCEPTED, Json(o)).into_response(),
        Err(e) => followup_error(e),
    }
}

#[derive(Deserialize)]
struct Inbound {
    from: String,
    body: String,
    #[serde(default = "sms")]
    channel: String,
}

fn sms() -> String {
    "sms".into()
}

async fn take_reply(
    s: &Shared,
    from: &str,
    body: &str,
    channel: &str,
) -> Result<crate::followup::ReplyOutcome, Response> {
    let f = followups(s).ok_or_else(followups_loading)?;
    f.handle_reply(from, body, channel)
        .await
        .map_err(followup_error)
}

/// A customer's reply from any channel: `{"from": "+1…", "body": "…"}`.
async fn post_inbound(State(s): State<Shared>, body: String) -> Response {
    let m: Inbound = match serde_json::from_str(&body) {
        Ok(v) => v,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("bad message: {e}\n")).into_response(),
    };
    match take_reply(&s, &m.from, &m.body, &m.channel).await {
        Ok(o) => Json(o).into_response(),
        Err(r) => r,
    }
}

async fn get_outbox(State(s): State<Shared>) -> Response {
    match s.services.store.outbox().await {
        Ok(v) => Json(v).into_response(),
        Err(e) => store_error(e),
    }
}

async fn get_threads(State(s): State<Shared>) -> Response {
    match s.services.store.threads().await {
        Ok(v) => Json(v).into_response(),
        Err(e) => store_error(e),
    }
}

async fn get_tickets(State(s): State<Shared>) -> Response {
    match s.services.store.tickets().await {
        Ok(v) => Json(v).into_response(),
        Err(e) => store_error(e),
    }
}

/// Opens the configured store, seeding the demo data into an empty one.
pub async fn open_store(cfg: &Config) -> anyhow::Result<Store> {
    let keys = crate::store::Keyring::for_store(&cfg.store.url, &cfg.store.key_file)?;
    let store = Store::open_with(&cfg.store.url, keys).await?;
    if cfg.store.seed_demo && store.customer_count().await? == 0 {
        let n =
            crate::store::seed::seed_text(&store, crate::store::seed::DEMO_TOML, "db/demo.toml")
                .await?;
        tracing::info!(customers = n.customers, "demo customers loaded");
    }
    tracing::info!(kind = store.url_kind, "customer store ready");
    Ok(store)
}

/// Sends due hand-offs and follow-up messages, forever.
fn spawn_workers(state: Shared) {
    let days = state.cfg.store.retention_days;
    if days > 0 {
        let store = state.services.store.clone();
        tokio::spawn(async move {
            loop {
                let cutoff = crate::store::now_ms() - (days as i64) * 86_400_000;
                match store.purge_before(cutoff).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(rows = n, days, "retention: old call data deleted"),
                    Err(e) => tracing::warn!(error = %e, "retention purge failed"),
                }
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
        });
    }
    tokio::spawn(async move {
        let tick = Duration::from_millis(state.cfg.followup.tick_ms.max(50));
        loop {
            let sv = &state.services;
            if let Err(e) = crate::handoff::deliver_due(&sv.store, &sv.handoff).await {
                tracing::warn!(error = %e, "hand-off worker");
            }
            if let Err(e) =
                crate::followup::channel::send_due(&sv.store, &state.cfg.twilio, &sv.handoff).await
            {
                tracing::warn!(error = %e, "outbox worker");
            }
            if let Some(f) = state.followups.get() {
                if let Err(e) = f.run_unfinished().await {
                    tracing::warn!(error = %e, "unfinished events");
                }
            }
            tokio::time::sleep(tick).await;
        }
    });
}

/// Loads the follow-up rules with the agent's sentiment model (or a fresh
/// one when the server runs without an agent).
fn load_followups(cfg: &Config, engines: &Engines, store: Store) -> anyhow::Result<Followups> {
    let rules = RulesFile::load(std::path::Path::new(&cfg.followup.rules))?;
    let scorer = match &engines.agent {
        Some(rt) => Scorer {
            embedder: rt.intents.embedder().clone(),
            model: rt.sentiment.clone(),
        },
        None => {
            let dir = cfg
                .server
                .models_dir
                .join(crate::nlu::embed::DEFAULT_DIR.trim_start_matches("models/"));
            let emb = Arc::new(crate::nlu::embed::Embedder::load(&dir)?);
            let model = Arc::new(crate::nlu::sentiment::SentimentModel::train(&emb)?);
            Scorer {
                embedder: emb,
                model,
            }
        }
    };
    Ok(Followups {
        rules,
        brand: cfg.followup.brand.clone(),
        store,
        scorer,
        lease_ms: crate::handoff::lease_ms(&cfg.handoff),
    })
}

/// Binds, opens the store, starts loading models, and serves until the
/// process ends. `on_bound` receives the actual address (useful with port 0).
pub async fn serve(
    cfg: Config,
    listen: SocketAddr,
    on_bound: impl FnOnce(SocketAddr),
) -> anyhow::Result<()> {
    serve_until(cfg, listen, on_bound, std::future::pending()).await
}

/// SIGTERM or SIGINT (Ctrl-C).
pub async fn termination() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Serves until `stop` completes, then drains: new calls are refused (busy
/// TwiML, WebSocket close 1013, SIP 503), `/healthz` answers 503 so load
/// balancers look elsewhere, live calls go on for `server.drain_timeout_ms`,
/// then the bot says `server.closing_prompt` and hangs up (SIP BYE,
/// WebSocket close); records are written before the function returns.
pub async fn serve_until(
    cfg: Config,
    listen: SocketAddr,
    on_bound: impl FnOnce(SocketAddr),
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // The trunk file is checked before anything binds; its number routes
    // name agents that load with the models.
    let mut cfg = cfg;
    let sip_cfg = if cfg.sip.enabled {
        let c = crate::transport::sip::SipConfig::load(&cfg.sip.config)?;
        for n in &c.numbers {
            if !n.agent.is_empty() && !cfg.dialogue.extra_agents.contains(&n.agent) {
                cfg.dialogue.extra_agents.push(n.agent.clone());
            }
        }
        Some(c)
    } else {
        None
    };
    if !listen.ip().is_loopback() && cfg.twilio.auth_token.is_empty() && !cfg.twilio.allow_unsigned
    {
        anyhow::bail!(
            "listening on {listen} with no twilio.auth_token: anyone who reaches this port could \
             open calls as any caller. Set TWILIO_AUTH_TOKEN, listen on 127.0.0.1 behind a proxy, \
             or set twilio.allow_unsigned = true to accept that"
        );
    }
    if cfg.twilio.account_sid.is_empty() || cfg.twilio.auth_token.is_empty() {
        tracing::warn!(
            "twilio.account_sid or twilio.auth_token is not set: a Twilio caller who asks for a \
             person cannot be transferred (the bot keeps the call and says so); set both to \
             transfer Twilio calls"
        );
    }
    let store = open_store(&cfg).await?;
    auth::bootstrap(&store, &cfg.auth).await?;
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let (events_tx, mut events_rx) = tokio::sync::mpsc::channel(crate::dialogue::EVENT_QUEUE);
    let services = Arc::new(Services {
        store: store.clone(),
        handoff: cfg.handoff.clone(),
        events: Some(events_tx),
    });
    let desk = crate::desk::Desk::new(cfg.desk.clone());
    let state = Arc::new(AppState {
        desk: desk.clone(),
        calls: Arc::new(CallStore::new(cfg.server.keep_calls)),
        cfg: cfg.clone(),
        engines: OnceLock::new(),
        services: services.clone(),
        followups: OnceLock::new(),
        sip: Arc::default(),
        replay: auth::ReplayGuard::default(),
        sign_in: signin::Throttle::default(),
        admission: admission::Admission::new(cfg.server.max_calls, cfg.server.max_calls_per_number),
        webrtc: Default::default(),
    });
    spawn_record_writer(state.calls.clone(), state.services.store.clone());
    // Nodes sharing a PostgreSQL store share one desk.
    let desk_link = store.is_shared().then(|| {
        let url = cluster::node_url(&cfg.server.node_url, addr);
        tracing::info!(node = %store.node_id(), %url, "desk shared with the nodes on this store");
        desk.link(store.clone(), url)
    });
    if let Some(sip_cfg) = sip_cfg {
        sip::start(state.clone(), sip_cfg, state.sip.clone()).await?;
    }
    spawn_workers(state.clone());
    let loader = state.clone();
    let here = tokio::runtime::Handle::current();
    let versions_store = store.clone();
    tokio::task::spawn_blocking(move || {
        match Engines::load(cfg.clone(), Some(services), Some(desk)) {
            Ok(e) => {
                // New calls get whichever version of the agent is promoted,
                // on every node, without a restart.
                if let (Some(slot), Some(rt)) = (e.agent_slot.clone(), e.agent.as_ref()) {
                    let base = rt.agent.clone();
                    here.spawn(crate::learn::follow(
                        versions_store,
                        slot,
                        base,
                        std::time::Duration::from_millis(cfg.dialogue.version_check_ms),
                    ));
                }
                match load_followups(&cfg, &e, store) {
                    Ok(f) => {
                        let _ = loader.followups.set(Arc::new(f));
                    }
                    Err(err) => tracing::error!(error = %err, "follow-up rules not loaded"),
                }
                // Ready only once the fixed prompts are synthesised: the
                // first callers' greetings then play without a gap.
                e.prewarm();
                let _ = loader.engines.set(e.clone());
                let admission = loader.admission.clone();
                e.prewarm_languages(&|| {
                    use crate::speech::Warm;
                    if admission.draining() {
                        Warm::Stop
                    } else if admission.active() > 0 {
                        Warm::Wait
                    } else {
                        Warm::Go
                    }
                });
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot load models; the server stays unhealthy");
            }
        }
    });
    // Events raised by calls themselves (a call resolved, with its mood).
    let ev_state = state.clone();
    tokio::spawn(async move {
        while let Some(ev) = events_rx.recv().await {
            let Some(f) = ev_state.followups.get().cloned() else {
                continue;
            };
            if let Err(e) = f.handle_event(&ev).await {
                tracing::debug!(error = %e, "call event not taken");
            }
        }
    });
    tracing::info!(%addr, "listening");
    on_bound(addr);
    let draining = state.clone();
    let leaving = state.services.store.clone();
    // Peer addresses reach handlers (a browser caller is known by its address).
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            stop.await;
            drain(&draining).await;
        })
        .await?;
    if let Some(link) = desk_link {
        // The other nodes stop showing this node's desk at once.
        link.abort();
        let _ = leaving.drop_node_rows(leaving.node_id(), 0).await;
    }
    Ok(())
}

/// After the drain deadline: how long the goodbyes may take.
const CLOSE_GRACE: Duration = Duration::from_secs(20);
/// How long hung-up calls may take to finish signalling (BYE answered).
const SIGNALLING_GRACE: Duration = Duration::from_secs(5);

async fn drain(s: &Shared) {
    s.admission.start_draining();
    let timeout = Duration::from_millis(s.cfg.server.drain_timeout_ms);
    tracing::warn!(
        live = s.calls.live(),
        timeout_ms = timeout.as_millis() as u64,
        "stopping: new calls are refused, live calls may finish"
    );
    let deadline = tokio::time::Instant::now() + timeout;
    if !s.calls.wait_idle(deadline).await {
        tracing::warn!(
            live = s.calls.live(),
            "drain deadline: the bot ends the remaining calls"
        );
        s.calls.close_all();
        if !s
            .calls
            .wait_idle(tokio::time::Instant::now() + CLOSE_GRACE)
            .await
        {
            tracing::error!(live = s.calls.live(), "calls still running at exit");
        }
    }
    // Transports let go of a call once its BYE is answered or its
    // WebSocket closed.
    let until = tokio::time::Instant::now() + SIGNALLING_GRACE;
    while s.admission.active() > 0 && tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    while !s.calls.flushed() && tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tracing::info!(
        left = s.admission.active(),
        records_flushed = s.calls.flushed(),
        "drained"
    );
}
