//! The three "know the caller" scenarios end to end, through a real server
//! with the real models and a real database (SQLite, or PostgreSQL when
//! `DATABASE_URL` points at one):
//!
//! - the late order: two voice calls over the Twilio path from a high-value
//!   customer; the second, annoyed, bypasses the bot to the priority queue,
//!   with a hand-off packet (schema-valid, both calls attached) delivered to a
//!   webhook that was down when the call happened;
//! - the defective return and the happy fix: business events and message
//!   replies, with SMS going out through a stand-in for Twilio's REST API.

use crate::common;

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use attendant::client::{self, audio, CallOptions, Script, Signing};
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use common::*;
use serde_json::{json, Value};

const ACCOUNT: &str = "AC00000000000000000000000000000001";
const TOKEN: &str = "scenario-auth-token";
const PUBLIC: &str = "https://bot.example.com";
const SECRET: &str = "scenario-webhook-secret";
const DANA: &str = "+15555550110";

#[derive(Debug, Clone)]
struct Hit {
    method: String,
    path: String,
    headers: HashMap<String, String>,
    body: String,
}

type Hits = Arc<Mutex<Vec<Hit>>>;

/// A loopback HTTP server that records every request and answers `reply`
/// (a stand-in for Twilio's REST API and for the agent desk's webhook).
fn recorder(listener: TcpListener, reply: Value) -> Hits {
    let hits: Hits = Arc::default();
    let h = hits.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            listener.set_nonblocking(true).unwrap();
            let l = tokio::net::TcpListener::from_std(listener).unwrap();
            let app = axum::Router::new().fallback(
                move |m: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                    let h = h.clone();
                    let reply = reply.clone();
                    async move {
                        h.lock().unwrap().push(Hit {
                            method: m.to_string(),
                            path: uri.path().to_string(),
                            headers: headers
                                .iter()
                                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                                .collect(),
                            body: String::from_utf8_lossy(&body).into_owned(),
                        });
                        (StatusCode::CREATED, axum::Json(reply))
                    }
                },
            );
            axum::serve(l, app).await.unwrap();
        });
    });
    hits
}

fn form(body: &str) -> HashMap<String, String> {
    url::form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect()
}

fn wait_for<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

struct Scenario {
    addr: SocketAddr,
    twilio: Hits,
    /// Where the webhook will listen once it comes up.
    webhook_port: u16,
    /// The server's database.
    store_url: String,
}

fn scenario() -> &'static Scenario {
    static S: OnceLock<Scenario> = OnceLock::new();
    S.get_or_init(|| {
        init_logs();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let twilio_addr = l.local_addr().unwrap();
        let twilio = recorder(
            l,
            json!({"sid": "SM00000000000000000000000000000001", "status": "queued"}),
        );
        // The webhook is down at first: nothing listens on this port until
        // the late-order test brings the receiver up.
        let webhook_port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let q = |s: String| format!("\"{s}\"");
        let repo = repo();
        let env = [
            (
                "ATTENDANT__DIALOGUE__AGENT",
                q(repo.join("agents/retailer").display().to_string()),
            ),
            (
                "ATTENDANT__FOLLOWUP__RULES",
                q(repo.join("config/followups.toml").display().to_string()),
            ),
            ("ATTENDANT__FOLLOWUP__TICK_MS", "200".into()),
            ("ATTENDANT__SERVER__PUBLIC_URL", q(PUBLIC.into())),
            ("ATTENDANT__TWILIO__AUTH_TOKEN", q(TOKEN.into())),
            ("ATTENDANT__TWILIO__ACCOUNT_SID", q(ACCOUNT.into())),
            (
                "ATTENDANT__TWILIO__API_BASE",
                q(format!("http://{twilio_addr}")),
            ),
            ("ATTENDANT__TWILIO__FROM_NUMBER", q("+15550009999".into())),
            (
                "ATTENDANT__TWILIO__WORKFLOW_SID",
                q("WW00000000000000000000000000000001".into()),
            ),
            (
                "ATTENDANT__HANDOFF__WEBHOOK_URL",
                q(format!("http://127.0.0.1:{webhook_port}/handoff")),
            ),
            ("ATTENDANT__HANDOFF__WEBHOOK_SECRET", q(SECRET.into())),
            ("ATTENDANT__HANDOFF__RETRY_INITIAL_MS", "300".into()),
            ("ATTENDANT__HANDOFF__RETRY_MAX_MS", "1500".into()),
        ];
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let cfg = config(&env);
        let store_url = cfg.store.url.clone();
        let addr = start_server(cfg);
        Scenario {
            addr,
            twilio,
            webhook_port,
            store_url,
        }
    })
}

fn get(addr: SocketAddr, path: &str) -> Option<(Value, HashMap<String, String>)> {
    let r = api_get(&format!("http://{addr}{path}")).call().ok()?;
    let headers = r
        .headers_names()
        .into_iter()
        .map(|k| (k.clone(), r.header(&k).unwrap_or("").to_string()))
        .collect();
    Some((r.into_json().ok()?, headers))
}

fn post(addr: SocketAddr, path: &str, body: Value) -> (u16, Value) {
    match api_post(&format!("http://{addr}{path}")).send_json(body) {
        Ok(r) => (r.status(), r.into_json().unwrap_or(Value::Null)),
        Err(ureq::Error::Status(code, r)) => (code, json!(r.into_string().unwrap_or_default())),
        Err(e) => panic!("POST {path}: {e}"),
    }
}

fn call(s: &Scenario, from: &str, turns: &[&str]) -> client::CallReport {
    let turns = turns
        .iter()
        .map(|f| audio::read_wav_8k(&fixture(f)).expect("fixture (audio-fixtures/make.sh)"))
        .collect();
    rt().block_on(client::run_call(CallOptions {
        url: ws_url(s.addr),
        http: String::new(),
        from: from.into(),
        script: Script::Turns {
            turns,
            quiet_ms: 700,
        },
        linger_ms: 2000,
        max_secs: 90,
        dtmf: vec![],
        api_token: Some(API_TOKEN.into()),
        signing: Some(Signing {
            auth_token: TOKEN.into(),
            public_url: format!("{}/twilio/stream", PUBLIC.replace("https://", "wss://")),
        }),
    }))
    .expect("call")
}

fn show(label: &str, rec: &attendant::pipeline::CallRecord) {
    let turns: Vec<_> = rec
        .turns
        .iter()
        .map(|t| (&t.caller_text, &t.bot_text))
        .collect();
    eprintln!("{label}: {turns:#?}");
}

fn interaction(s: &Scenario, call_sid: &str) -> Value {
    wait_for("the interaction to be stored", 20, || {
        get(s.addr, &format!("/calls/{call_sid}/interaction")).map(|(v, _)| v)
    })
}

fn schema() -> jsonschema::Validator {
    let text = std::fs::read_to_string(repo().join("docs/handoff.schema.json")).unwrap();
    jsonschema::validator_for(&serde_json::from_str(&text).unwrap()).expect("schema compiles")
}

#[test]
fn late_order_second_annoyed_call_goes_to_priority_care_with_full_context() {
    let s = scenario();

    // Call 1: where is my order? The bot knows Dana and her order.
    let first = call(
        s,
        DANA,
        &["order_where.wav", "order_bye.wav", "csat_four.wav"],
    );
    let rec = first.record.clone().expect("record");
    let replies: Vec<String> = rec.turns.iter().map(|t| t.bot_text.clone()).collect();
    show("call 1", &rec);
    assert!(
        rec.greeting.contains("Dana"),
        "greeted by name: {:?}",
        rec.greeting
    );
    assert!(
        replies
            .iter()
            .any(|r| r.contains("headphones") && r.contains("running late")),
        "order status given: {replies:?}"
    );
    let i1 = interaction(s, &first.call_sid);
    assert_eq!(i1["customer_id"], "C-2001");
    assert_eq!(i1["handled_by"], "bot");
    assert!(
        s.twilio
            .lock()
            .unwrap()
            .iter()
            .all(|h| !h.path.contains(&first.call_sid)),
        "no transfer on the first call"
    );

    // Call 2, annoyed: straight to a human at high priority.
    let second = call(s, DANA, &["order_annoyed.wav"]);
    let rec2 = second.record.clone().expect("record");
    show("call 2", &rec2);
    assert!(
        rec2.greeting.contains("called"),
        "history in the greeting: {:?}",
        rec2.greeting
    );
    assert_eq!(rec2.turns.len(), 1, "no further bot turns after the bypass");
    assert!(
        rec2.turns[0].bot_text.contains("priority care"),
        "{:?}",
        rec2.turns[0].bot_text
    );
    let i2 = interaction(s, &second.call_sid);
    assert_eq!(i2["outcome"], "transferred");
    // Every turn is kept for review and retraining: what was said, the top
    // intents with scores, the action, and what came of it.
    for i in [&i1, &i2] {
        let turns = i["turns"].as_array().expect("learned turns");
        assert!(!turns.is_empty(), "{i}");
        for t in turns {
            assert!(!t["text"].as_str().unwrap_or_default().is_empty(), "{t}");
            let top = t["intents"].as_array().expect("top intents");
            assert!(!top.is_empty() && top[0][1].as_f64().is_some(), "{t}");
            assert!(!t["action"].as_str().unwrap_or_default().is_empty(), "{t}");
            assert!(
                !t["followed"].as_str().unwrap_or_default().is_empty(),
                "{t}"
            );
        }
    }
    let last = i2["turns"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["followed"], "transferred", "{last}");

    // Twilio was told to move the live call into the priority queue.
    let update = wait_for("the Twilio call update", 10, || {
        s.twilio
            .lock()
            .unwrap()
            .iter()
            .find(|h| {
                h.path
                    .ends_with(&format!("/Calls/{}.json", second.call_sid))
            })
            .cloned()
    });
    assert_eq!(update.method, "POST");
    assert!(update.path.contains(ACCOUNT));
    assert!(update.headers["authorization"].starts_with("Basic "));
    let twiml = form(&update.body)["Twiml"].clone();
    assert!(
        twiml.starts_with("<Response><Enqueue workflowSid="),
        "{twiml}"
    );
    assert!(twiml.contains("priority_care"), "{twiml}");
    assert!(twiml.contains("<Task priority=\""), "{twiml}");

    // The packet: stored, schema-valid, with the record and both calls.
    let (packet, headers) =
        get(s.addr, &format!("/calls/{}/handoff", second.call_sid)).expect("hand-off packet");
    let errors: Vec<String> = schema()
        .iter_errors(&packet)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    assert!(errors.is_empty(), "packet violates the schema: {errors:#?}");
    assert_eq!(packet["target"], "queue:priority_care");
    assert_eq!(packet["priority"]["level"], "high");
    let signals: Vec<&str> = packet["priority"]["signals"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    for want in ["high_value", "repeat_contact", "unhappy"] {
        assert!(signals.contains(&want), "{want} missing from {signals:?}");
    }
    assert_eq!(packet["customer"]["id"], "C-2001");
    assert!(
        !packet.to_string().contains(DANA),
        "raw number in the packet"
    );
    assert!(packet["transcript"]
        .as_array()
        .unwrap()
        .iter()
        .any(|u| u["speaker"] == "caller"
            && u["text"]
                .as_str()
                .unwrap()
                .to_lowercase()
                .contains("headphone"))); // "headphone(s)": the words, not the ASR's plural
    let previous = packet["previous_interactions"].as_array().unwrap();
    assert!(
        previous.iter().any(|p| p["id"] == first.call_sid.as_str()),
        "first call attached: {previous:#?}"
    );
    assert!(
        packet["sentiment"]["current"].as_f64().unwrap() < 0.0,
        "{}",
        packet["sentiment"]
    );
    eprintln!("summary: {}", packet["summary"]);

    // The webhook was down: the packet waits, with failed attempts counted.
    let attempts = wait_for("a failed delivery attempt", 10, || {
        let (_, h) = get(s.addr, &format!("/calls/{}/handoff", second.call_sid))?;
        let n: u32 = h.get("x-attendant-attempts")?.parse().ok()?;
        (n >= 1).then_some(n)
    });
    assert_eq!(
        get(s.addr, &format!("/calls/{}/handoff", second.call_sid))
            .unwrap()
            .1["x-attendant-delivery"],
        "pending",
        "after {attempts} attempts"
    );
    drop(headers);

    // The desk comes up; the packet arrives, signed.
    let desk = recorder(
        TcpListener::bind(("127.0.0.1", s.webhook_port)).expect("webhook port"),
        json!({"ok": true}),
    );
    let up = Instant::now();
    let hit = wait_for("the webhook delivery", 15, || {
        desk.lock()
            .unwrap()
            .iter()
            .find(|h| h.headers.get("x-attendant-delivery") == Some(&second.call_sid))
            .cloned()
    });
    eprintln!(
        "webhook delivered {} ms after it came up",
        up.elapsed().as_millis()
    );
    assert_eq!(hit.path, "/handoff");
    assert!(attendant::handoff::verify(
        SECRET,
        &hit.headers["x-attendant-signature"],
        hit.body.as_bytes()
    ));
    let delivered: Value = serde_json::from_str(&hit.body).unwrap();
    assert_eq!(delivered, packet);
    wait_for("delivery recorded", 10, || {
        let (_, h) = get(s.addr, &format!("/calls/{}/handoff", second.call_sid))?;
        (h.get("x-attendant-delivery")? == "delivered").then_some(())
    });

    // The KPIs as the server reports them after these calls.
    let (kpis, _) = get(s.addr, "/kpis").expect("kpis");
    eprintln!("KPIs: {kpis:#}");
    assert!(kpis["calls"].as_u64().unwrap() >= 2);
    assert!(kpis["transferred"].as_u64().unwrap() >= 1);
    assert!(kpis["repeat_contact_rate"].as_f64().unwrap() > 0.0);
    assert!(kpis["avg_response_ms"].as_f64().unwrap() > 0.0);
    let metrics = api_get(&format!("http://{}/metrics", s.addr))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert!(metrics.contains("attendant_kpi_transfer_ratio"));
}

fn sms_to(s: &Scenario, to: &str, after: usize) -> Vec<String> {
    s.twilio
        .lock()
        .unwrap()
        .iter()
        .skip(after)
        .filter(|h| h.path.ends_with("/Messages.json"))
        .map(|h| form(&h.body))
        .filter(|f| f.get("To").map(String::as_str) == Some(to))
        .map(|f| f["Body"].clone())
        .collect()
}

fn sms_count(s: &Scenario) -> usize {
    s.twilio.lock().unwrap().len()
}

#[test]
fn defective_return_gets_an_apology_then_a_discount() {
    let s = scenario();
    let maya = "+15555550111";
    let mark = sms_count(s);
    let (code, out) = post(
        s.addr,
        "/events",
        json!({"id": "rma-9001", "type": "return_processed", "order_id": "345678", "reason": "defective"}),
    );
    assert_eq!(code, 202, "{out}");
    assert_eq!(out["messages"].as_array().unwrap().len(), 1, "{out}");
    let first = wait_for("the apology SMS", 10, || {
        sms_to(s, maya, mark).into_iter().next()
    });
    assert!(first.contains("Maya") && first.contains("sorry"), "{first}");
    assert!(first.contains("dress"), "{first}");

    // The same event again (a retried webhook upstream) sends nothing new.
    let (code, again) = post(
        s.addr,
        "/events",
        json!({"id": "rma-9001", "type": "return_processed", "order_id": "345678", "reason": "defective"}),
    );
    assert_eq!(code, 202);
    assert_eq!(again["duplicate"], true, "{again}");

    let (code, reply) = post(
        s.addr,
        "/messages/inbound",
        json!({"from": maya, "body": "the refund was fine but i'm still disappointed"}),
    );
    assert_eq!(code, 200, "{reply}");
    assert_eq!(reply["label"], "negative", "{reply}");
    let second = wait_for("the discount SMS", 10, || {
        sms_to(s, maya, mark).into_iter().nth(1)
    });
    // Predicted value 1,800 at 1 % per 100 → 18 %.
    assert!(second.contains("18 percent off"), "{second}");
    assert!(second.contains("SORRY18-"), "{second}");
    assert_eq!(sms_to(s, maya, mark).len(), 2, "nothing sent twice");

    let (outbox, _) = get(s.addr, "/outbox").unwrap();
    let mine: Vec<&Value> = outbox
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["customer_id"] == "C-2002")
        .collect();
    assert_eq!(mine.len(), 2);
    wait_for("outbox marked sent", 10, || {
        let (o, _) = get(s.addr, "/outbox")?;
        o.as_array()?
            .iter()
            .filter(|m| m["customer_id"] == "C-2002")
            .all(|m| m["status"] == "sent")
            .then_some(())
    });
}

#[test]
fn happy_fix_asks_for_a_review_and_an_unhappy_answer_goes_to_the_care_team() {
    let s = scenario();
    let sam = "+15555550112";
    let lee = "+15555550113";
    let mark = sms_count(s);
    for customer in ["C-2003", "C-2004"] {
        let (code, out) = post(
            s.addr,
            "/events",
            json!({"type": "conversation_resolved", "customer_id": customer, "sentiment": 0.7}),
        );
        assert_eq!(code, 202, "{out}");
        assert_eq!(out["messages"].as_array().unwrap().len(), 1, "{out}");
    }
    let ask = wait_for("Sam's question", 10, || {
        sms_to(s, sam, mark).into_iter().next()
    });
    assert!(ask.contains("eyeshadow palette"), "{ask}");

    let (_, happy) = post(
        s.addr,
        "/messages/inbound",
        json!({"from": sam, "body": "i love it, the colours are great"}),
    );
    assert_eq!(happy["label"], "positive", "{happy}");
    let review = wait_for("the review request", 10, || {
        sms_to(s, sam, mark).into_iter().nth(1)
    });
    assert!(review.contains("https://reviews.example.com/"), "{review}");

    wait_for("Lee's question", 10, || {
        sms_to(s, lee, mark).into_iter().next()
    });
    let (_, unhappy) = post(
        s.addr,
        "/messages/inbound",
        json!({"from": lee, "body": "honestly i'm not happy with it, the quality is really poor"}),
    );
    assert_eq!(unhappy["label"], "negative", "{unhappy}");
    assert_eq!(unhappy["tickets"].as_array().unwrap().len(), 1, "{unhappy}");
    let answer = wait_for("the care-team answer", 10, || {
        sms_to(s, lee, mark).into_iter().nth(1)
    });
    assert!(answer.contains("care team"), "{answer}");
    assert!(!answer.contains("review"), "{answer}");
    let (tickets, _) = get(s.addr, "/tickets").unwrap();
    assert!(
        tickets
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["customer_id"] == "C-2004" && t["queue"] == "care_team"),
        "{tickets:#}"
    );
}

/// A node took a business event (recorded it, leased it) and died before
/// its rules ran: once the lease is over the live node runs them — the
/// apology goes out once, not before the lease ends — and the same event
/// posted again is a duplicate.
#[test]
fn an_event_a_dead_node_took_is_finished_by_the_live_one_once() {
    let s = scenario();
    let robin = "+15555550190";
    let mark = sms_count(s);
    let lease_ms = 1500;
    let ends = rt().block_on(async {
        // The dead node: a store of its own (its own node id) on the same
        // database.
        let dead = attendant::store::Store::open(&s.store_url).await.unwrap();
        attendant::store::seed::seed_text(
            &dead,
            r#"
[[customer]]
id = "C-2901"
name = "Robin Diaz"
phones = ["+15555550190"]
tier = "standard"
lifetime_value = 120.0
predicted_value = 950.0
customer_since = "2026-10-01"
consent_sms = true

[[order]]
id = "290101"
customer = "C-2901"
item = "rain jacket"
status = "delivered"
placed = "2026-11-01"
promised = "2026-11-05"
eta = "2026-11-05"
delivered = "2026-11-05"
total = 120.00
currency = "USD"
address = "3 Pier Lane, 94107"
"#,
            "robin.toml",
        )
        .await
        .unwrap();
        let ev = json!({"id": "rma-dead-1", "type": "return_processed", "order_id": "290101", "reason": "defective"});
        let ends = attendant::store::now_ms() + lease_ms;
        assert!(dead
            .insert_event("rma-dead-1", "return_processed", Some("C-2901"), &ev, Some(ends))
            .await
            .unwrap());
        ends
    });
    let sms = wait_for("the apology after the dead node's lease", 15, || {
        sms_to(s, robin, mark).into_iter().next()
    });
    let sent_at = attendant::store::now_ms();
    assert!(
        sent_at >= ends,
        "sent {} ms before the lease ended",
        ends - sent_at
    );
    assert!(
        sms.contains("Robin") && sms.contains("rain jacket"),
        "{sms}"
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(sms_to(s, robin, mark).len(), 1, "sent once");
    let (code, again) = post(
        s.addr,
        "/events",
        json!({"id": "rma-dead-1", "type": "return_processed", "order_id": "290101", "reason": "defective"}),
    );
    assert_eq!(code, 202);
    assert_eq!(again["duplicate"], true, "{again}");
    let (threads, _) = get(s.addr, "/threads").unwrap();
    let mine = threads
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["customer_id"] == "C-2901")
        .count();
    assert_eq!(mine, 1, "{threads}");
    eprintln!(
        "unfinished event: run {} ms after the dead node's lease ended",
        sent_at - ends
    );
}
