//! Contact-center KPIs computed from the interactions table: response time,
//! self-service (resolved without a human), transfers, repeat contacts and
//! CSAT. Served at GET /kpis and as Prometheus gauges on /metrics.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::store::{Interaction, Store};

/// A contact within this long of the customer's previous one is a repeat.
pub const REPEAT_WINDOW_MS: i64 = 7 * 86_400_000;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Kpis {
    pub calls: usize,
    pub calls_from_known_customers: usize,
    /// Mean over calls of each call's mean voice-to-voice time.
    pub avg_response_ms: Option<f64>,
    pub resolved_by_bot: usize,
    pub transferred: usize,
    pub abandoned: usize,
    pub self_service_rate: f64,
    pub transfer_rate: f64,
    /// Share of known callers' calls that came within 7 days of their
    /// previous contact.
    pub repeat_contact_rate: f64,
    pub csat_average: Option<f64>,
    pub csat_responses: usize,
    /// Calls sent to the agent desk, and what became of them.
    pub desk_calls: usize,
    pub desk_handled: usize,
    /// Hung up on hold before an agent took the call.
    pub desk_abandoned: usize,
    /// Mean time on hold of calls an agent took.
    pub desk_avg_wait_ms: Option<f64>,
    pub desk_avg_talk_ms: Option<f64>,
}

pub fn compute(list: &[Interaction]) -> Kpis {
    let mut k = Kpis {
        calls: list.len(),
        ..Default::default()
    };
    let mut resp = Vec::new();
    let mut csat = Vec::new();
    let mut last_seen: HashMap<&str, i64> = HashMap::new();
    let mut repeats = 0;
    let (mut waits, mut talks) = (Vec::new(), Vec::new());
    let mut sorted: Vec<&Interaction> = list.iter().collect();
    sorted.sort_by_key(|i| i.started_ms);
    for i in sorted {
        match i.outcome.as_str() {
            "transferred" => k.transferred += 1,
            "resolved" if i.handled_by == "bot" => k.resolved_by_bot += 1,
            "abandoned" => k.abandoned += 1,
            _ => {}
        }
        if let Some(r) = i.response_ms {
            resp.push(r as f64);
        }
        if let Some(w) = i.wait_ms {
            k.desk_calls += 1;
            match (&i.human_agent, i.talk_ms) {
                (Some(_), talk) => {
                    k.desk_handled += 1;
                    waits.push(w as f64);
                    talks.extend(talk.map(|t| t as f64));
                }
                (None, _) if i.outcome == "abandoned" => k.desk_abandoned += 1,
                _ => {}
            }
        }
        if let Some(c) = i.csat {
            csat.push(c as f64);
        }
        if let Some(c) = i.customer_id.as_deref() {
            k.calls_from_known_customers += 1;
            if let Some(prev) = last_seen.get(c) {
                if i.started_ms - prev <= REPEAT_WINDOW_MS {
                    repeats += 1;
                }
            }
            last_seen.insert(c, i.started_ms);
        }
    }
    let ratio = |n: usize, d: usize| if d == 0 { 0.0 } else { n as f64 / d as f64 };
    k.self_service_rate = ratio(k.resolved_by_bot, k.calls);
    k.transfer_rate = ratio(k.transferred, k.calls);
    k.repeat_contact_rate = ratio(repeats, k.calls_from_known_customers);
    k.avg_response_ms = (!resp.is_empty()).then(|| resp.iter().sum::<f64>() / resp.len() as f64);
    let mean = |v: &[f64]| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
    k.desk_avg_wait_ms = mean(&waits);
    k.desk_avg_talk_ms = mean(&talks);
    k.csat_responses = csat.len();
    k.csat_average = (!csat.is_empty()).then(|| csat.iter().sum::<f64>() / csat.len() as f64);
    k
}

pub async fn load(store: &Store) -> crate::store::Result<Kpis> {
    // Calls still going (or cut off by a node that died) are not counted.
    let mut list = store.all_interactions().await?;
    list.retain(|i| i.outcome != crate::dialogue::manager::IN_PROGRESS);
    Ok(compute(&list))
}

/// Copies the KPIs into the Prometheus gauges.
pub fn publish(k: &Kpis) {
    let m = crate::pipeline::metrics::metrics();
    m.kpi_calls.set(k.calls as f64);
    m.kpi_avg_response_seconds
        .set(k.avg_response_ms.unwrap_or(0.0) / 1000.0);
    m.kpi_self_service_ratio.set(k.self_service_rate);
    m.kpi_transfer_ratio.set(k.transfer_rate);
    m.kpi_repeat_contact_ratio.set(k.repeat_contact_rate);
    m.kpi_csat_average.set(k.csat_average.unwrap_or(0.0));
    m.kpi_csat_responses.set(k.csat_responses as f64);
    m.kpi_desk_handled.set(k.desk_handled as f64);
    m.kpi_desk_avg_wait_seconds
        .set(k.desk_avg_wait_ms.unwrap_or(0.0) / 1000.0);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(id: &str, cust: Option<&str>, day: i64, outcome: &str, by: &str) -> Interaction {
        Interaction {
            id: id.into(),
            customer_id: cust.map(str::to_string),
            started_ms: day * 86_400_000,
            outcome: outcome.into(),
            handled_by: by.into(),
            ..Default::default()
        }
    }

    #[test]
    fn rates_from_a_small_table() {
        let mut a = call("a", Some("c1"), 0, "resolved", "bot");
        a.response_ms = Some(1000);
        a.csat = Some(5);
        let mut b = call("b", Some("c1"), 2, "transferred", "human");
        b.response_ms = Some(2000);
        b.csat = Some(3);
        let c = call("c", Some("c2"), 1, "resolved", "bot");
        let d = call("d", None, 1, "abandoned", "bot");
        let e = call("e", Some("c2"), 30, "resolved", "bot");
        let k = compute(&[a, b, c, d, e]);
        assert_eq!(k.calls, 5);
        assert_eq!(k.resolved_by_bot, 3);
        assert!((k.self_service_rate - 0.6).abs() < 1e-9);
        assert!((k.transfer_rate - 0.2).abs() < 1e-9);
        // c1's second call within 2 days repeats; c2's after 29 days doesn't.
        assert!((k.repeat_contact_rate - 0.25).abs() < 1e-9);
        assert_eq!(k.avg_response_ms, Some(1500.0));
        assert_eq!(k.csat_average, Some(4.0));
        assert_eq!(k.desk_calls, 0);
    }

    #[test]
    fn desk_calls_count_handled_abandoned_and_their_times() {
        let mut a = call("a", None, 0, "transferred", "human");
        (a.human_agent, a.wait_ms, a.talk_ms) = (Some("al".into()), Some(10_000), Some(60_000));
        let mut b = call("b", None, 0, "transferred", "human");
        (b.human_agent, b.wait_ms, b.talk_ms) = (Some("bea".into()), Some(20_000), Some(30_000));
        let mut c = call("c", None, 0, "abandoned", "bot");
        c.wait_ms = Some(90_000);
        let k = compute(&[a, b, c, call("d", None, 0, "resolved", "bot")]);
        assert_eq!((k.desk_calls, k.desk_handled, k.desk_abandoned), (3, 2, 1));
        assert_eq!(k.desk_avg_wait_ms, Some(15_000.0));
        assert_eq!(k.desk_avg_talk_ms, Some(45_000.0));
        assert_eq!(k.transferred, 2);
    }
}
