//! The hand-off context packet (docs/handoff.schema.json) and its delivery.
//!
//! On every transfer the packet is stored first, then POSTed to the
//! configured webhook by a background worker, HMAC-signed and retried with
//! capped exponential backoff until it is accepted. Because the store is the
//! queue, a webhook that is down (or a restart) delays a packet but never
//! loses it. The packet is also readable at `GET /calls/{id}/handoff`.

use std::collections::BTreeMap;
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::store::{now_ms, Customer, Handoff, Interaction, SentimentSample, Store, Utterance};

pub const SCHEMA_ID: &str = "attendant.handoff/v1";

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Priority {
    /// 0–100, from the agent's routing rules.
    pub score: i64,
    /// normal, medium or high.
    pub level: String,
    /// Why the call is being handed over.
    pub reason: String,
    /// The routing signals that held.
    pub signals: Vec<String>,
}

impl Priority {
    pub fn level_of(score: i64) -> &'static str {
        if score >= 80 {
            "high"
        } else if score >= 50 {
            "medium"
        } else {
            "normal"
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct IntentMark {
    pub turn: u32,
    pub intent: String,
    pub confidence: f32,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SentimentInfo {
    pub current: f32,
    pub trend: f32,
    pub trajectory: Vec<SentimentSample>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PreviousInteraction {
    pub id: String,
    pub started_at: String,
    pub channel: String,
    pub intents: Vec<String>,
    pub outcome: String,
    pub handled_by: String,
    pub summary: String,
    pub transcript: Vec<TimedUtterance>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TimedUtterance {
    pub speaker: String,
    pub text: String,
    /// RFC 3339, UTC.
    pub at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtmf: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Packet {
    pub schema: String,
    pub call_id: String,
    pub created_at: String,
    pub channel: String,
    pub agent: String,
    /// Where the caller is being sent (queue:NAME, tel:…, sip:…).
    pub target: String,
    pub priority: Priority,
    /// A few sentences for the human who picks up.
    pub summary: String,
    pub customer: Option<Customer>,
    /// Whether the caller passed identity verification on this call.
    pub verified: bool,
    pub transcript: Vec<TimedUtterance>,
    pub intents: Vec<IntentMark>,
    /// Slot values gathered; secret ones (PINs) are masked.
    pub slots: BTreeMap<String, String>,
    pub sentiment: SentimentInfo,
    /// The customer's earlier contacts, newest first.
    pub previous_interactions: Vec<PreviousInteraction>,
    /// Where the full packet can be fetched again.
    pub context_path: String,
    /// The language the caller spoke (ISO 639-1), so the call reaches
    /// someone who speaks it.
    #[serde(default)]
    pub language: String,
}

pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

pub fn timed(u: &[Utterance]) -> Vec<TimedUtterance> {
    u.iter()
        .map(|u| TimedUtterance {
            speaker: u.speaker.clone(),
            text: u.text.clone(),
            at: rfc3339(u.at_ms),
            dtmf: u.dtmf.clone(),
        })
        .collect()
}

pub fn previous(list: &[Interaction], except: &str) -> Vec<PreviousInteraction> {
    list.iter()
        .filter(|i| i.id != except)
        .map(|i| PreviousInteraction {
            id: i.id.clone(),
            started_at: rfc3339(i.started_ms),
            channel: i.channel.clone(),
            intents: i.intents.clone(),
            outcome: i.outcome.clone(),
            handled_by: i.handled_by.clone(),
            summary: i.summary.clone(),
            transcript: timed(&i.transcript),
        })
        .collect()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HandoffConfig {
    /// POST target for packets; empty disables delivery (packets are still
    /// stored and served by the API).
    pub webhook_url: String,
    /// HMAC-SHA256 key for `X-Attendant-Signature`.
    pub webhook_secret: String,
    pub retry_initial_ms: u64,
    pub retry_max_ms: u64,
    pub timeout_ms: u64,
    /// How long a node holds a due delivery (hand-off or follow-up message)
    /// it took, when several nodes share the store: a dead node's work goes
    /// to another node after this. Longer than `timeout_ms`.
    pub lease_ms: u64,
}

impl Default for HandoffConfig {
    fn default() -> Self {
        Self {
            webhook_url: String::new(),
            webhook_secret: String::new(),
            retry_initial_ms: 1000,
            retry_max_ms: 300_000,
            timeout_ms: 5000,
            lease_ms: 60_000,
        }
    }
}

/// `t=UNIX_SECONDS,v1=HEX(HMAC_SHA256(secret, "UNIX_SECONDS." + body))`.
pub fn sign(secret: &str, unix_s: i64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(unix_s.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={unix_s},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// Checks a signature header as a receiver would (used by tests and docs).
pub fn verify(secret: &str, header: &str, body: &[u8]) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", x)) => t = x.parse::<i64>().ok(),
            Some(("v1", x)) => v1 = Some(x.to_string()),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    let Ok(sig) = hex::decode(v1) else {
        return false;
    };
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

pub fn backoff_ms(cfg: &HandoffConfig, attempts: i64) -> i64 {
    let exp = attempts.clamp(0, 20) as u32;
    (cfg.retry_initial_ms.saturating_mul(1u64 << exp)).min(cfg.retry_max_ms) as i64
}

/// Stores a packet and queues it for the webhook.
pub async fn save(store: &Store, cfg: &HandoffConfig, p: &Packet) -> crate::store::Result<()> {
    let now = now_ms();
    store
        .save_handoff(&Handoff {
            call_id: p.call_id.clone(),
            packet: serde_json::to_value(p)?,
            created_ms: now,
            webhook_status: if cfg.webhook_url.is_empty() {
                "disabled".into()
            } else {
                "pending".into()
            },
            next_attempt_ms: now,
            ..Default::default()
        })
        .await
}

/// One POST; Ok on any 2xx.
fn post(cfg: &HandoffConfig, call_id: &str, body: &[u8]) -> Result<(), String> {
    let now_s = now_ms() / 1000;
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_millis(cfg.timeout_ms))
        .build();
    let mut req = agent
        .post(&cfg.webhook_url)
        .set("content-type", "application/json")
        .set("x-attendant-event", "handoff")
        .set("x-attendant-delivery", call_id);
    if !cfg.webhook_secret.is_empty() {
        req = req.set(
            "x-attendant-signature",
            &sign(&cfg.webhook_secret, now_s, body),
        );
    }
    match req.send_bytes(body) {
        Ok(_) => Ok(()),
        Err(ureq::Error::Status(code, _)) => Err(format!("webhook answered {code}")),
        Err(e) => Err(format!("webhook unreachable: {}", e.kind())),
    }
}

/// A lease outlasts a delivery's time-out, whatever the settings say.
pub fn lease_ms(cfg: &HandoffConfig) -> i64 {
    cfg.lease_ms.max(cfg.timeout_ms * 2) as i64
}

/// Delivers every due packet once; returns how many were delivered.
pub async fn deliver_due(store: &Store, cfg: &HandoffConfig) -> crate::store::Result<usize> {
    if cfg.webhook_url.is_empty() {
        return Ok(0);
    }
    let mut delivered = 0;
    // Leased, so another node sharing the store never sends it too; the
    // lease outlasts a delivery's time-outs.
    for h in store
        .lease_due_handoffs(store.node_id(), now_ms(), lease_ms(cfg))
        .await?
    {
        let body = serde_json::to_vec(&h.packet)?;
        let c = cfg.clone();
        let id = h.call_id.clone();
        let res = tokio::task::spawn_blocking(move || post(&c, &id, &body))
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
        let now = now_ms();
        match res {
            Ok(()) => {
                store
                    .handoff_attempted(&h.call_id, Some(now), now, "")
                    .await?;
                tracing::info!(call = %h.call_id, attempts = h.attempts + 1, "hand-off delivered");
                delivered += 1;
            }
            Err(e) => {
                let next = now + backoff_ms(cfg, h.attempts);
                store.handoff_attempted(&h.call_id, None, next, &e).await?;
                tracing::warn!(call = %h.call_id, attempts = h.attempts + 1, error = %e, "hand-off delivery failed; will retry");
            }
        }
    }
    Ok(delivered)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_and_detect_tampering() {
        let h = sign("k", 1_700_000_000, b"{\"a\":1}");
        assert!(verify("k", &h, b"{\"a\":1}"));
        assert!(!verify("k", &h, b"{\"a\":2}"));
        assert!(!verify("other", &h, b"{\"a\":1}"));
        assert!(!verify("k", "garbage", b""));
    }

    #[test]
    fn backoff_grows_and_caps() {
        let c = HandoffConfig {
            retry_initial_ms: 100,
            retry_max_ms: 1000,
            ..Default::default()
        };
        let v: Vec<i64> = (0..6).map(|a| backoff_ms(&c, a)).collect();
        assert_eq!(v, vec![100, 200, 400, 800, 1000, 1000]);
    }
}
