//! The Twilio edge against a real server: documented messages, malformed
//! input (close codes, never a panic) and X-Twilio-Signature.

use crate::common;

use std::time::Duration;

use attendant::transport::twilio::messages::{parse_inbound, Outbound};
use attendant::transport::twilio::signature;
use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

#[test]
fn every_documented_message_parses() {
    let dir = shared().join("twilio/docs_examples");
    let mut n = 0;
    for entry in std::fs::read_dir(dir.join("from_twilio")).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        assert!(parse_inbound(&text).unwrap().is_some(), "{text}");
        n += 1;
    }
    for entry in std::fs::read_dir(dir.join("to_twilio")).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        let m: Outbound = serde_json::from_str(&text).unwrap();
        // What we send serialises to the same JSON as the docs.
        let again: serde_json::Value = serde_json::to_value(&m).unwrap();
        assert_eq!(
            again,
            serde_json::from_str::<serde_json::Value>(&text).unwrap()
        );
        n += 1;
    }
    assert!(n >= 10, "only {n} documented messages found");
    // The whole recorded session parses line by line.
    let s = std::fs::read_to_string(shared().join("twilio/derived_session_osr0034_inbound.jsonl"))
        .unwrap();
    for line in s.lines().filter(|l| !l.is_empty()) {
        assert!(parse_inbound(line).unwrap().is_some());
    }
}

const START: &str = r#"{"event":"start","sequenceNumber":"1","start":{"accountSid":"AC1","streamSid":"MZ1","callSid":"CAproto","tracks":["inbound"],"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1},"customParameters":{}},"streamSid":"MZ1"}"#;

/// Sends `msgs` and returns the close code the server answered with.
async fn close_code_for(url: &str, msgs: Vec<Message>) -> Option<u16> {
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    for m in msgs {
        if ws.send(m).await.is_err() {
            break;
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Close(f)))) => return f.map(|f| u16::from(f.code)),
            Ok(Some(Ok(_))) => continue,
            _ => return None,
        }
    }
}

#[test]
fn malformed_input_gets_a_close_code_and_the_server_survives() {
    let addr = server();
    let url = ws_url(addr);
    let cases: Vec<(Vec<Message>, u16)> = vec![
        (vec![Message::Text("not json".into())], 1007),
        (
            vec![Message::Text(
                r#"{"event":"media","streamSid":"MZ1","media":{"payload":"//8="}}"#.into(),
            )],
            1002,
        ),
        (
            vec![
                Message::Text(START.into()),
                Message::Text(
                    r#"{"event":"media","streamSid":"MZ1","media":{"payload":"***"}}"#.into(),
                ),
            ],
            1007,
        ),
        (
            vec![Message::Text(
                START.replace("audio/x-mulaw", "audio/opus").into(),
            )],
            1003,
        ),
        (
            vec![Message::Text(START.into()), Message::Text(START.into())],
            1002,
        ),
        (vec![Message::Binary(vec![1, 2, 3].into())], 1003),
        (
            vec![
                Message::Text(START.into()),
                Message::Text(r#"{"event":"dtmf","streamSid":"MZ1","dtmf":{"digit":"x1"}}"#.into()),
            ],
            1007,
        ),
        (
            vec![
                Message::Text(START.into()),
                Message::Text(r#"{"event":"mark","streamSid":"MZ9","mark":{"name":"a"}}"#.into()),
            ],
            1002,
        ),
    ];
    rt().block_on(async {
        for (msgs, want) in cases {
            let desc = format!("{msgs:?}");
            assert_eq!(close_code_for(&url, msgs).await, Some(want), "{desc}");
        }
    });
    // Still healthy, and a well-formed unknown event is ignored, not fatal.
    assert_eq!(
        ureq::get(&format!("http://{addr}/healthz"))
            .call()
            .unwrap()
            .status(),
        200
    );
    rt().block_on(async {
        let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
        ws.send(Message::Text(START.into())).await.unwrap();
        ws.send(Message::Text(
            r#"{"event":"somethingNew","streamSid":"MZ1"}"#.into(),
        ))
        .await
        .unwrap();
        // The greeting still arrives.
        let got_media = tokio::time::timeout(Duration::from_secs(20), async {
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
        .unwrap_or(false);
        assert!(got_media);
    });
}

#[test]
fn twilio_signatures_are_enforced_when_a_token_is_set() {
    let token = "test-auth-token";
    let addr = start_server(config(&[
        ("ATTENDANT__TWILIO__AUTH_TOKEN", token),
        ("ATTENDANT__SERVER__PUBLIC_URL", "https://bot.example.com"),
    ]));
    let url = format!("http://{addr}/twilio/voice");
    let body = "CallSid=CA123&From=%2B15551234567&To=%2B15557654321";
    let params = vec![
        ("CallSid".to_string(), "CA123".to_string()),
        ("From".to_string(), "+15551234567".to_string()),
        ("To".to_string(), "+15557654321".to_string()),
    ];
    // Missing and wrong signatures: 403.
    let r = ureq::post(&url)
        .set("content-type", "application/x-www-form-urlencoded")
        .send_string(body);
    assert!(matches!(r, Err(ureq::Error::Status(403, _))));
    let bad = signature::compute(
        "other-token",
        "https://bot.example.com/twilio/voice",
        &params,
    );
    let r = ureq::post(&url)
        .set("content-type", "application/x-www-form-urlencoded")
        .set("X-Twilio-Signature", &bad)
        .send_string(body);
    assert!(matches!(r, Err(ureq::Error::Status(403, _))));
    // Right signature: TwiML connecting the call to our stream.
    let good = signature::compute(token, "https://bot.example.com/twilio/voice", &params);
    let r = ureq::post(&url)
        .set("content-type", "application/x-www-form-urlencoded")
        .set("X-Twilio-Signature", &good)
        .send_string(body)
        .expect("signed webhook accepted");
    let xml = r.into_string().unwrap();
    assert!(
        xml.contains("<Connect><Stream url=\"wss://bot.example.com/twilio/stream\">"),
        "{xml}"
    );
    assert!(
        xml.contains("<Parameter name=\"From\" value=\"+15551234567\"/>"),
        "{xml}"
    );
    // The SMS webhook is checked the same way, over its own URL and fields.
    let sms = format!("http://{addr}/twilio/sms");
    let sms_form = [("From", "+15551234567"), ("Body", "yes please")];
    let r = ureq::post(&sms).send_form(&sms_form);
    assert!(matches!(r, Err(ureq::Error::Status(403, _))), "{r:?}");
    let fields: Vec<(String, String)> = sms_form
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let on_voice_url = signature::compute(token, "https://bot.example.com/twilio/voice", &fields);
    let r = ureq::post(&sms)
        .set("X-Twilio-Signature", &on_voice_url)
        .send_form(&sms_form);
    assert!(matches!(r, Err(ureq::Error::Status(403, _))), "{r:?}");
    // Signed: accepted, and answered with empty TwiML even from a number
    // no customer has (an error would only be a failed webhook at Twilio).
    let good = signature::compute(token, "https://bot.example.com/twilio/sms", &fields);
    let r = ureq::post(&sms)
        .set("X-Twilio-Signature", &good)
        .send_form(&sms_form)
        .expect("signed SMS accepted");
    assert!(r.into_string().unwrap().contains("<Response/>"));
    // The stream upgrade needs its own signature over the wss URL.
    let ws = format!("ws://{addr}/twilio/stream");
    rt().block_on(async {
        let e = tokio_tungstenite::connect_async(ws.as_str())
            .await
            .unwrap_err();
        assert!(e.to_string().contains("403"), "{e}");
        let mut req =
            tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
                ws.as_str(),
            )
            .unwrap();
        let sig = signature::compute(token, "wss://bot.example.com/twilio/stream", &[]);
        req.headers_mut()
            .insert("X-Twilio-Signature", sig.parse().unwrap());
        let (mut conn, resp) = tokio_tungstenite::connect_async(req)
            .await
            .expect("signed upgrade accepted");
        assert_eq!(resp.status(), 101);
        let _ = conn.close(None).await;
    });
}

#[test]
fn unsigned_webhook_works_without_a_token() {
    let addr = server();
    let r = ureq::post(&format!("http://{addr}/twilio/voice"))
        .set("content-type", "application/x-www-form-urlencoded")
        .set("Host", "bot.local:8080")
        .send_string("CallSid=CA1&From=%2B1555&To=%2B1666")
        .unwrap();
    let xml = r.into_string().unwrap();
    assert!(xml.contains("/twilio/stream\">"), "{xml}");
    assert!(xml.starts_with("<?xml"));
}
