//! Lock-down against a real server, tried the way an attacker or a broken
//! peer would from the network: no data without credentials, signed
//! integrations, sign-in, and the Twilio edge's limits (message size, media
//! rate, start deadline, stream tokens, call caps).

use crate::common;

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use attendant::server::auth;
use attendant::store::Store;
use attendant::transport::twilio::{signature, twiml};
use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;

const TWILIO_TOKEN: &str = "security-test-twilio-token";
const INBOUND_SECRET: &str = "security-test-inbound-secret";
const PUBLIC: &str = "https://bot.example.com";

struct Locked {
    addr: SocketAddr,
    store_url: String,
}

/// One server with everything switched on.
fn locked() -> &'static Locked {
    static S: OnceLock<Locked> = OnceLock::new();
    S.get_or_init(|| {
        let store_url = scratch_store();
        let quoted = format!("\"{store_url}\"");
        let addr = start_server(config(&[
            ("ATTENDANT__STORE__URL", &quoted),
            ("ATTENDANT__TWILIO__AUTH_TOKEN", TWILIO_TOKEN),
            ("ATTENDANT__SERVER__PUBLIC_URL", PUBLIC),
            ("ATTENDANT__AUTH__INBOUND_SECRET", INBOUND_SECRET),
            ("ATTENDANT__TWILIO__START_TIMEOUT_MS", "1000"),
        ]));
        Locked { addr, store_url }
    })
}

fn store(url: &str) -> Store {
    rt().block_on(Store::open(url)).expect("store")
}

fn status(r: Result<ureq::Response, ureq::Error>) -> (u16, String) {
    match r {
        Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(c, r)) => (c, r.into_string().unwrap_or_default()),
        Err(e) => panic!("{e}"),
    }
}

const DATA_ROUTES: &[&str] = &[
    "/calls",
    "/calls/CA1",
    "/calls/CA1/handoff",
    "/calls/CA1/interaction",
    "/customers/c-maya",
    "/kpis",
    "/metrics",
    "/sip",
    "/outbox",
    "/threads",
    "/tickets",
    "/no/such/route",
];

#[test]
fn data_routes_answer_401_without_a_token_and_by_role_with_one() {
    let s = locked();
    let base = format!("http://{}", s.addr);
    for p in DATA_ROUTES {
        let (code, body) = status(ureq::get(&format!("{base}{p}")).call());
        assert_eq!(code, 401, "{p}: {body}");
        assert!(!body.contains('{'), "{p} leaked data: {body}");
        let (code, _) = status(
            ureq::get(&format!("{base}{p}"))
                .set("authorization", "Bearer att_not-a-real-token")
                .call(),
        );
        assert_eq!(code, 401, "{p} with a wrong token");
    }
    // The configured admin token passes everywhere.
    let (code, body) = status(api_get(&format!("{base}/outbox")).call());
    assert_eq!(code, 200, "{body}");
    // Tokens made for a role get what the role allows and 403 elsewhere.
    let st = store(&s.store_url);
    let agent = auth::new_secret("att_");
    let ops = auth::new_secret("att_");
    rt().block_on(async {
        st.put_token("desk-1", "agent", &auth::hash_secret(&agent))
            .await
            .unwrap();
        st.put_token("grafana", "ops", &auth::hash_secret(&ops))
            .await
            .unwrap();
    });
    let with = |tok: &str, p: &str| {
        status(
            ureq::get(&format!("{base}{p}"))
                .set("authorization", &format!("Bearer {tok}"))
                .call(),
        )
        .0
    };
    assert_eq!(with(&agent, "/calls"), 200);
    assert_eq!(with(&agent, "/customers/c-nobody"), 404);
    assert_eq!(with(&agent, "/metrics"), 403);
    assert_eq!(with(&agent, "/outbox"), 403);
    assert_eq!(with(&ops, "/metrics"), 200);
    assert_eq!(with(&ops, "/customers/c-nobody"), 403);
    // Revoked is gone at once.
    rt().block_on(st.revoke_token("grafana")).unwrap();
    assert_eq!(with(&ops, "/metrics"), 401);
    // Health stays open for probes.
    assert_eq!(status(ureq::get(&format!("{base}/healthz")).call()).0, 200);
}

#[test]
fn events_and_inbound_messages_need_a_fresh_signature_or_an_integration_token() {
    let s = locked();
    let base = format!("http://{}", s.addr);
    let body =
        r#"{"id":"sec-1","type":"return_processed","order_id":"345678","reason":"defective"}"#;
    let post = |path: &str, sig: Option<&str>, b: &str| {
        let mut r = ureq::post(&format!("{base}{path}")).set("content-type", "application/json");
        if let Some(sig) = sig {
            r = r.set("x-attendant-signature", sig);
        }
        status(r.send_string(b))
    };
    // Unsigned: nothing happens and nothing is revealed.
    assert_eq!(post("/events", None, body).0, 401);
    let (code, text) = post(
        "/messages/inbound",
        None,
        r#"{"from":"+15555550111","body":"awful"}"#,
    );
    assert_eq!(code, 401, "{text}");
    let (code2, _) = post(
        "/messages/inbound",
        None,
        r#"{"from":"+19999999999","body":"awful"}"#,
    );
    assert_eq!(code2, code, "customer and stranger look the same");
    // Forged with another key, or stale: refused.
    let now = attendant::store::now_ms() / 1000;
    let forged = attendant::handoff::sign("guess", now, body.as_bytes());
    assert_eq!(post("/events", Some(&forged), body).0, 401);
    let stale = attendant::handoff::sign(INBOUND_SECRET, now - 3600, body.as_bytes());
    assert_eq!(post("/events", Some(&stale), body).0, 401);
    // Signed right: taken once; the same request again is a replay.
    let good = attendant::handoff::sign(INBOUND_SECRET, now, body.as_bytes());
    let (code, text) = post("/events", Some(&good), body);
    assert_eq!(code, 202, "{text}");
    assert_eq!(post("/events", Some(&good), body).0, 401, "replay");
    // The signature covers the body.
    let other = body.replace("defective", "changed_mind");
    assert_eq!(post("/events", Some(&good), &other).0, 401);
    // An integration token works too; an agent's does not.
    let st = store(&s.store_url);
    let shop = auth::new_secret("att_");
    let desk = auth::new_secret("att_");
    rt().block_on(async {
        st.put_token("shop", "integration", &auth::hash_secret(&shop))
            .await
            .unwrap();
        st.put_token("desk-2", "agent", &auth::hash_secret(&desk))
            .await
            .unwrap();
    });
    let with = |tok: &str| {
        status(
            ureq::post(&format!("{base}/events"))
                .set("authorization", &format!("Bearer {tok}"))
                .set("content-type", "application/json")
                .send_string(body),
        )
        .0
    };
    assert_eq!(with(&shop), 202);
    assert_eq!(with(&desk), 403);
}

/// Password guessing slows down: a name's first failures are free, then
/// each try must wait (429 with Retry-After), the right password included;
/// other names are not slowed, and once the wait is over the owner signs in.
#[test]
fn guessing_a_password_is_slowed_down() {
    let s = locked();
    let base = format!("http://{}", s.addr);
    let st = store(&s.store_url);
    let hash = auth::hash_password("dee's own password").unwrap();
    rt().block_on(st.put_user("dee", "agent", &hash)).unwrap();
    // The status, and Retry-After's seconds when there is one.
    let try_as = |user: &str, password: &str| -> (u16, Option<u64>) {
        let r = match ureq::post(&format!("{base}/auth/login"))
            .send_json(serde_json::json!({"user": user, "password": password}))
        {
            Ok(r) | Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{e}"),
        };
        let wait = r.header("retry-after").and_then(|v| v.parse().ok());
        (r.status(), wait)
    };
    for i in 0..5 {
        assert_eq!(try_as("dee", &format!("guess {i}")).0, 401);
    }
    let (code, wait) = try_as("dee", "dee's own password");
    assert_eq!(code, 429);
    let wait = wait.expect("Retry-After seconds");
    assert!((1..=2).contains(&wait), "{wait}");
    assert_eq!(try_as("nobody", "guess").0, 401, "other names");
    std::thread::sleep(std::time::Duration::from_secs(wait));
    assert_eq!(try_as("dee", "dee's own password").0, 200);
}

#[test]
fn people_sign_in_with_a_cookie_that_other_sites_cannot_use() {
    let s = locked();
    let base = format!("http://{}", s.addr);
    let st = store(&s.store_url);
    let hash = auth::hash_password("a long enough password").unwrap();
    rt().block_on(st.put_user("sam", "supervisor", &hash))
        .unwrap();
    let login = ureq::post(&format!("{base}/auth/login"));
    let wrong = login
        .clone()
        .send_json(serde_json::json!({"user": "sam", "password": "wrong password!"}));
    assert_eq!(status(wrong).0, 401);
    let r = login
        .send_json(serde_json::json!({"user": "sam", "password": "a long enough password"}))
        .expect("sign-in");
    let set = r.header("set-cookie").unwrap().to_string();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    let cookie = set.split(';').next().unwrap().to_string();
    let (code, who) = status(
        ureq::get(&format!("{base}/auth/whoami"))
            .set("cookie", &cookie)
            .call(),
    );
    assert_eq!(code, 200);
    assert!(who.contains("supervisor") && who.contains("sam"), "{who}");
    assert_eq!(
        status(
            ureq::get(&format!("{base}/outbox"))
                .set("cookie", &cookie)
                .call()
        )
        .0,
        200
    );
    // A page on another site riding the cookie to change something: 403.
    let (code, _) = status(
        ureq::post(&format!("{base}/auth/whoami"))
            .set("cookie", &cookie)
            .set("origin", "https://evil.example")
            .send_string(""),
    );
    assert_eq!(code, 403);
    // A cookie is never enough for integration routes.
    let (code, _) = status(
        ureq::post(&format!("{base}/events"))
            .set("cookie", &cookie)
            .send_string("{}"),
    );
    assert_eq!(code, 403);
    // Signed out: the cookie is dead.
    status(
        ureq::post(&format!("{base}/auth/logout"))
            .set("cookie", &cookie)
            .call(),
    );
    assert_eq!(
        status(
            ureq::get(&format!("{base}/auth/whoami"))
                .set("cookie", &cookie)
                .call()
        )
        .0,
        401
    );
}

fn signed_upgrade(addr: SocketAddr) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    let mut req = ws_url(addr).into_client_request().unwrap();
    let sig = signature::compute(
        TWILIO_TOKEN,
        &format!("{}/twilio/stream", PUBLIC.replacen("https", "wss", 1)),
        &[],
    );
    req.headers_mut()
        .insert("X-Twilio-Signature", sig.parse().unwrap());
    req
}

/// What Twilio would be told by our webhook for this call.
fn webhook_params(addr: SocketAddr, call_sid: &str, from: &str) -> Vec<(String, String)> {
    let form = vec![
        ("CallSid".to_string(), call_sid.to_string()),
        ("From".to_string(), from.to_string()),
        ("To".to_string(), "+15550000000".to_string()),
    ];
    let sig = signature::compute(TWILIO_TOKEN, &format!("{PUBLIC}/twilio/voice"), &form);
    let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let xml = ureq::post(&format!("http://{addr}/twilio/voice"))
        .set("X-Twilio-Signature", &sig)
        .send_form(&pairs)
        .unwrap()
        .into_string()
        .unwrap();
    twiml::stream_parameters(&xml)
}

fn start_message(call_sid: &str, params: &[(String, String)]) -> Message {
    let custom: serde_json::Map<String, serde_json::Value> = params
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    Message::Text(
        serde_json::json!({
            "event": "start", "sequenceNumber": "1", "streamSid": "MZsec",
            "start": {"accountSid": "AC1", "streamSid": "MZsec", "callSid": call_sid,
                      "tracks": ["inbound"],
                      "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                      "customParameters": custom}
        })
        .to_string()
        .into(),
    )
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The close code, or None when the connection just ended; with how long it took.
async fn closed(ws: &mut Ws, within: Duration) -> (Option<u16>, bool) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Close(f)))) => return (f.map(|f| u16::from(f.code)), true),
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(_))) | Ok(None) => return (None, true),
            Err(_) => return (None, false),
        }
    }
}

/// Waits for the bot's first audio on a stream.
async fn hears_bot(ws: &mut Ws) -> bool {
    tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(Ok(m)) = ws.next().await {
            if let Message::Text(t) = m {
                if t.contains("\"media\"") {
                    return true;
                }
            }
        }
        false
    })
    .await
    .unwrap_or(false)
}

#[test]
fn streams_need_their_webhook_token_once() {
    let s = locked();
    rt().block_on(async {
        // A valid upgrade signature alone opens nothing.
        let (mut ws, _) = tokio_tungstenite::connect_async(signed_upgrade(s.addr))
            .await
            .unwrap();
        ws.send(start_message(
            "CAforged",
            &[("From".into(), "+15555550111".into())],
        ))
        .await
        .unwrap();
        assert_eq!(
            closed(&mut ws, Duration::from_secs(5)).await,
            (Some(1008), true)
        );
        // With the token our webhook gave this call: the bot answers.
        let params = webhook_params(s.addr, "CAtok1", "+15555550101");
        assert!(
            params.iter().any(|(k, _)| k == "attendant_token"),
            "{params:?}"
        );
        let (mut ws, _) = tokio_tungstenite::connect_async(signed_upgrade(s.addr))
            .await
            .unwrap();
        ws.send(start_message("CAtok1", &params)).await.unwrap();
        assert!(hears_bot(&mut ws).await, "the bot never spoke");
        // The same token again (a captured start replayed), or for another call: refused.
        let (mut again, _) = tokio_tungstenite::connect_async(signed_upgrade(s.addr))
            .await
            .unwrap();
        again.send(start_message("CAtok1", &params)).await.unwrap();
        assert_eq!(
            closed(&mut again, Duration::from_secs(5)).await.0,
            Some(1008)
        );
        let (mut other, _) = tokio_tungstenite::connect_async(signed_upgrade(s.addr))
            .await
            .unwrap();
        other.send(start_message("CAtok2", &params)).await.unwrap();
        assert_eq!(
            closed(&mut other, Duration::from_secs(5)).await.0,
            Some(1008)
        );
        let _ = ws.close(None).await;
    });
}

#[test]
fn a_stream_that_never_starts_is_closed() {
    let s = locked();
    rt().block_on(async {
        let (mut ws, _) = tokio_tungstenite::connect_async(signed_upgrade(s.addr))
            .await
            .unwrap();
        let t = Instant::now();
        assert_eq!(
            closed(&mut ws, Duration::from_secs(5)).await,
            (Some(1008), true)
        );
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    });
}

#[test]
fn a_20_mb_message_is_refused_without_growing_memory_or_stalling_the_node() {
    // A server process of its own, so its memory is measured alone.
    let server = ServerProcess::start(&[]);
    // A valid media event padded to 20 MB, sent as 16 KiB fragments the way
    // the attack came in. Made before measuring: this process is the
    // attacker too.
    let bytes = format!(
        r#"{{"event":"media","streamSid":"MZsec","media":{{"track":"inbound","chunk":"1","timestamp":"0","payload":"{}"}}}}"#,
        "/".repeat(20 * 1024 * 1024)
    )
    .into_bytes();
    // Let the server finish warming up after start.
    std::thread::sleep(Duration::from_secs(2));
    let before = server.rss_mb();
    let t = Instant::now();
    rt().block_on(async {
        let (mut ws, _) = tokio_tungstenite::connect_async(ws_url(server.addr))
            .await
            .unwrap();
        let chunks: Vec<&[u8]> = bytes.chunks(16 * 1024).collect();
        let n = chunks.len();
        for (i, c) in chunks.into_iter().enumerate() {
            let op = if i == 0 {
                OpCode::Data(Data::Text)
            } else {
                OpCode::Data(Data::Continue)
            };
            let f = Frame::message(c.to_vec(), op, i + 1 == n);
            if ws.send(Message::Frame(f)).await.is_err() {
                break;
            }
        }
        let (code, ended) = closed(&mut ws, Duration::from_secs(5)).await;
        assert!(ended, "the stream stayed open");
        assert!(matches!(code, None | Some(1009)), "{code:?}");
    });
    let took = t.elapsed();
    let t = Instant::now();
    let health = status(ureq::get(&format!("http://{}/healthz", server.addr)).call()).0;
    assert_eq!(health, 200);
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "health took {:?}",
        t.elapsed()
    );
    let after = server.rss_mb();
    eprintln!("20 MB message: refused in {took:?}, RSS {before:.0} → {after:.0} MB");
    assert!(after - before < 20.0, "RSS {before:.0} → {after:.0} MB");
}

#[test]
fn media_faster_than_real_time_is_dropped_then_the_stream_closed() {
    let s = locked();
    rt().block_on(async {
        let params = webhook_params(s.addr, "CAflood", "+15555550102");
        let (mut ws, _) = tokio_tungstenite::connect_async(signed_upgrade(s.addr))
            .await
            .unwrap();
        ws.send(start_message("CAflood", &params)).await.unwrap();
        let frame = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            [0xffu8; 160],
        );
        let t = Instant::now();
        // 10,000 frames (200 s of audio) at once.
        for i in 0..10_000 {
            let m = format!(
                r#"{{"event":"media","sequenceNumber":"{}","streamSid":"MZsec","media":{{"track":"inbound","chunk":"{i}","timestamp":"{}","payload":"{frame}"}}}}"#,
                i + 2,
                i * 20
            );
            if ws.send(Message::Text(m.into())).await.is_err() {
                break;
            }
        }
        let (code, ended) = closed(&mut ws, Duration::from_secs(10)).await;
        assert!(ended && code == Some(1008), "{code:?} after {:?}", t.elapsed());
        assert!(t.elapsed() < Duration::from_secs(10));
    });
}

#[test]
fn calls_over_the_cap_hear_busy_and_streams_are_refused() {
    let addr = start_server(config(&[
        ("ATTENDANT__SERVER__MAX_CALLS", "1"),
        ("ATTENDANT__SERVER__MAX_CALLS_PER_NUMBER", "1"),
    ]));
    rt().block_on(async {
        let (mut first, _) = tokio_tungstenite::connect_async(ws_url(addr))
            .await
            .unwrap();
        first
            .send(start_message(
                "CAcap1",
                &[("From".into(), "+15555550103".into())],
            ))
            .await
            .unwrap();
        assert!(hears_bot(&mut first).await);
        // The webhook says "busy" in words…
        let xml = ureq::post(&format!("http://{addr}/twilio/voice"))
            .send_form(&[("CallSid", "CAcap2"), ("From", "+15555550104")])
            .unwrap()
            .into_string()
            .unwrap();
        assert!(xml.contains("<Say>") && xml.contains("<Hangup/>"), "{xml}");
        assert!(!xml.contains("<Stream"), "{xml}");
        // …and a stream opened anyway is closed with "try again later".
        let (mut second, _) = tokio_tungstenite::connect_async(ws_url(addr))
            .await
            .unwrap();
        second
            .send(start_message(
                "CAcap2",
                &[("From".into(), "+15555550104".into())],
            ))
            .await
            .unwrap();
        assert_eq!(
            closed(&mut second, Duration::from_secs(5)).await.0,
            Some(1013)
        );
        // Once the first call ends, its place is free again.
        let _ = first.close(None).await;
        drop(first);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let xml = ureq::post(&format!("http://{addr}/twilio/voice"))
                .send_form(&[("CallSid", "CAcap3"), ("From", "+15555550104")])
                .unwrap()
                .into_string()
                .unwrap();
            if xml.contains("<Stream") {
                break;
            }
            assert!(Instant::now() < deadline, "the place was never freed");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
}

#[test]
fn a_public_address_without_a_twilio_token_does_not_start() {
    let cfg = config(&[]);
    let r = rt().block_on(attendant::server::serve(
        cfg,
        "0.0.0.0:0".parse().unwrap(),
        |_| {},
    ));
    let e = r.expect_err("must refuse");
    assert!(e.to_string().contains("allow_unsigned"), "{e}");
}
