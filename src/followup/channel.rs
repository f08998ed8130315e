//! Where proactive messages go out: SMS through Twilio's Messages API, or an
//! outbound call through its Calls API that speaks the message. Sending is
//! driven from the outbox, so a failed send is retried, not lost.

use std::time::Duration;

use crate::config::TwilioConfig;
use crate::handoff::{backoff_ms, HandoffConfig};
use crate::store::{now_ms, OutboxMessage, Store};

fn xml_text(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Sends one message; Ok carries the provider's id.
pub fn send(tw: &TwilioConfig, m: &OutboxMessage) -> Result<String, String> {
    if tw.account_sid.is_empty() || tw.auth_token.is_empty() {
        return Err("no channel configured (twilio.account_sid / auth_token)".into());
    }
    if m.recipient.is_empty() {
        return Err("no phone number on record".into());
    }
    let base = tw.api_base.trim_end_matches('/');
    let (url, form): (String, Vec<(&str, String)>) = match m.channel.as_str() {
        "sms" => (
            format!(
                "{base}/2010-04-01/Accounts/{}/Messages.json",
                tw.account_sid
            ),
            vec![
                ("To", m.recipient.clone()),
                ("From", tw.from_number.clone()),
                ("Body", m.body.clone()),
            ],
        ),
        "call" => (
            format!("{base}/2010-04-01/Accounts/{}/Calls.json", tw.account_sid),
            vec![
                ("To", m.recipient.clone()),
                ("From", tw.from_number.clone()),
                (
                    "Twiml",
                    format!("<Response><Say>{}</Say></Response>", xml_text(&m.body)),
                ),
            ],
        ),
        other => return Err(format!("unknown channel {other}")),
    };
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(10))
        .build();
    let auth = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("{}:{}", tw.account_sid, tw.auth_token),
    );
    match agent
        .post(&url)
        .set("authorization", &format!("Basic {auth}"))
        .send_form(&form)
    {
        Ok(r) => {
            let v: serde_json::Value = r.into_json().unwrap_or_default();
            Ok(v["sid"].as_str().unwrap_or("").to_string())
        }
        Err(ureq::Error::Status(code, _)) => Err(format!("Twilio answered {code}")),
        Err(e) => Err(format!("Twilio unreachable: {}", e.kind())),
    }
}

/// Sends every due outbox message once; returns how many went out.
pub async fn send_due(
    store: &Store,
    tw: &TwilioConfig,
    retry: &HandoffConfig,
) -> crate::store::Result<usize> {
    let mut sent = 0;
    // Leased: one node sends each message, however many share the store.
    let due = store
        .lease_due_outbox(store.node_id(), now_ms(), crate::handoff::lease_ms(retry))
        .await?;
    for m in due {
        let tw2 = tw.clone();
        let m2 = m.clone();
        let res = tokio::task::spawn_blocking(move || send(&tw2, &m2))
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
        let now = now_ms();
        match res {
            Ok(sid) => {
                store
                    .outbox_attempted(&m.id, "sent", Some(now), Some(&sid), now, "")
                    .await?;
                tracing::info!(message = %m.id, channel = %m.channel, "follow-up sent");
                sent += 1;
            }
            Err(e) => {
                let next = now + backoff_ms(retry, m.attempts);
                store
                    .outbox_attempted(&m.id, "pending", None, None, next, &e)
                    .await?;
                tracing::warn!(message = %m.id, error = %e, "follow-up not sent; will retry");
            }
        }
    }
    Ok(sent)
}
