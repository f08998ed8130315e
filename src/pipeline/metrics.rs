//! Prometheus metrics, served at GET /metrics.

use std::sync::OnceLock;

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

pub struct Metrics {
    pub registry: Registry,
    pub calls_total: IntCounter,
    pub calls_active: IntGauge,
    pub turns_total: IntCounter,
    pub barge_ins_total: IntCounter,
    /// Turns ended, by what ended them (smart_turn, transcript, silence).
    pub turn_ends_total: IntCounterVec,
    /// Calls refused at the door, by reason (full, number_busy, draining,
    /// bad_token, no_start).
    pub calls_refused_total: IntCounterVec,
    /// Caller audio dropped for arriving faster than real time.
    pub media_dropped_ms_total: IntCounter,
    /// Requests dropped from sources over the SIP rate limit.
    pub sip_dropped_total: IntCounter,
    /// SIP sources banned by the rate limit.
    pub sip_bans_total: IntCounter,
    /// Early-ended turns after which the caller went on speaking.
    pub turns_cut_early: IntCounter,
    pub voice_to_voice: Histogram,
    pub end_of_turn: Histogram,
    pub asr_final: Histogram,
    pub tts_first_audio: Histogram,
    pub protocol_errors_total: IntCounter,
    pub rtp_packets_received_total: IntCounter,
    pub rtp_packets_sent_total: IntCounter,
    pub rtp_packets_concealed_total: IntCounter,
    pub rtp_foreign_dropped_total: IntCounter,
    /// RTCP figures of SIP calls (RFC 3550): what the caller's stream lost,
    /// its interarrival jitter, and the round-trip time.
    pub rtp_packets_lost_total: IntCounter,
    pub rtp_jitter: Histogram,
    pub rtp_rtt: Histogram,
    /// Contact-center KPIs over the interactions table, refreshed per scrape.
    pub kpi_calls: Gauge,
    pub kpi_avg_response_seconds: Gauge,
    pub kpi_self_service_ratio: Gauge,
    pub kpi_transfer_ratio: Gauge,
    pub kpi_repeat_contact_ratio: Gauge,
    pub kpi_csat_average: Gauge,
    pub kpi_csat_responses: Gauge,
    pub kpi_desk_handled: Gauge,
    pub kpi_desk_avg_wait_seconds: Gauge,
    /// Callers on hold for the agent desk now.
    pub desk_waiting: Gauge,
    pub transfers_failed_total: IntCounter,
    /// Accounts locked by repeated wrong PINs (events in the store).
    pub account_lockouts: Gauge,
    /// The version of the agent this node gives new calls (0: its files).
    pub agent_version: Gauge,
}

fn gauge(r: &Registry, name: &str, help: &str) -> Gauge {
    let g = Gauge::new(name, help).expect("valid gauge");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

fn hist(r: &Registry, name: &str, help: &str) -> Histogram {
    let buckets = vec![
        0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0,
    ];
    hist_with(r, name, help, buckets)
}

fn hist_with(r: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
        .expect("valid histogram");
    r.register(Box::new(h.clone())).expect("unique metric");
    h
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid counter");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

pub fn metrics() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(|| {
        let r = Registry::new();
        let calls_active =
            IntGauge::new("attendant_calls_active", "Calls in progress").expect("gauge");
        r.register(Box::new(calls_active.clone()))
            .expect("unique metric");
        let turn_ends_total = IntCounterVec::new(
            Opts::new(
                "attendant_turn_ends_total",
                "Caller turns ended, by what decided the end",
            ),
            &["reason"],
        )
        .expect("valid counter");
        r.register(Box::new(turn_ends_total.clone()))
            .expect("unique metric");
        let calls_refused_total = IntCounterVec::new(
            Opts::new(
                "attendant_calls_refused_total",
                "Calls refused before they started, by reason",
            ),
            &["reason"],
        )
        .expect("valid counter");
        r.register(Box::new(calls_refused_total.clone()))
            .expect("unique metric");
        Metrics {
            turn_ends_total,
            calls_refused_total,
            media_dropped_ms_total: counter(
                &r,
                "attendant_media_dropped_ms_total",
                "Milliseconds of caller audio dropped for arriving faster than real time",
            ),
            sip_dropped_total: counter(
                &r,
                "attendant_sip_dropped_total",
                "SIP messages dropped from sources over the rate limit",
            ),
            sip_bans_total: counter(
                &r,
                "attendant_sip_bans_total",
                "SIP sources banned for flooding",
            ),
            turns_cut_early: counter(
                &r,
                "attendant_turns_cut_early_total",
                "Turns ended before the caller had finished (they went on within the fallback silence)",
            ),
            agent_version: gauge(
                &r,
                "attendant_agent_version",
                "Version of the agent served to new calls (0: its files alone)",
            ),
            calls_total: counter(&r, "attendant_calls_total", "Calls started"),
            turns_total: counter(&r, "attendant_turns_total", "Caller turns answered"),
            barge_ins_total: counter(
                &r,
                "attendant_barge_ins_total",
                "Bot replies interrupted by the caller",
            ),
            protocol_errors_total: counter(
                &r,
                "attendant_protocol_errors_total",
                "Connections closed for malformed input",
            ),
            rtp_packets_received_total: counter(
                &r,
                "attendant_rtp_packets_received_total",
                "RTP packets received from SIP callers",
            ),
            rtp_packets_sent_total: counter(
                &r,
                "attendant_rtp_packets_sent_total",
                "RTP packets sent to SIP callers",
            ),
            rtp_packets_concealed_total: counter(
                &r,
                "attendant_rtp_packets_concealed_total",
                "20 ms slots played from concealment (RTP lost, late, or the caller silent)",
            ),
            rtp_packets_lost_total: counter(
                &r,
                "attendant_rtp_packets_lost_total",
                "Packets of callers' RTP streams that never arrived (RTCP cumulative loss)",
            ),
            rtp_jitter: hist_with(
                &r,
                "attendant_rtp_jitter_seconds",
                "Interarrival jitter of callers' RTP streams, at each RTCP report",
                vec![0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2],
            ),
            rtp_rtt: hist_with(
                &r,
                "attendant_rtp_rtt_seconds",
                "Round-trip time to SIP callers, from their RTCP reports",
                vec![0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0],
            ),
            rtp_foreign_dropped_total: counter(
                &r,
                "attendant_rtp_foreign_dropped_total",
                "RTP packets dropped because they came from an address other than the call's peer",
            ),
            voice_to_voice: hist(
                &r,
                "attendant_voice_to_voice_seconds",
                "Caller's last voiced frame in to first bot frame out",
            ),
            end_of_turn: hist(
                &r,
                "attendant_end_of_turn_seconds",
                "Last voiced frame to end-of-turn decision",
            ),
            asr_final: hist(
                &r,
                "attendant_asr_final_seconds",
                "End-of-turn decision to final transcript",
            ),
            tts_first_audio: hist(
                &r,
                "attendant_tts_first_audio_seconds",
                "Reply text to first synthesised audio",
            ),
            kpi_calls: gauge(&r, "attendant_kpi_calls", "Calls in the interactions table"),
            kpi_avg_response_seconds: gauge(
                &r,
                "attendant_kpi_avg_response_seconds",
                "Mean voice-to-voice response time over calls",
            ),
            kpi_self_service_ratio: gauge(
                &r,
                "attendant_kpi_self_service_ratio",
                "Calls resolved by the bot without a human",
            ),
            kpi_transfer_ratio: gauge(
                &r,
                "attendant_kpi_transfer_ratio",
                "Calls handed to a human",
            ),
            kpi_repeat_contact_ratio: gauge(
                &r,
                "attendant_kpi_repeat_contact_ratio",
                "Known callers' calls within 7 days of their previous contact",
            ),
            kpi_csat_average: gauge(&r, "attendant_kpi_csat_average", "Mean CSAT (1-5)"),
            kpi_csat_responses: gauge(
                &r,
                "attendant_kpi_csat_responses",
                "Calls with a CSAT answer",
            ),
            kpi_desk_handled: gauge(
                &r,
                "attendant_kpi_desk_handled",
                "Calls taken by an agent at the desk",
            ),
            kpi_desk_avg_wait_seconds: gauge(
                &r,
                "attendant_kpi_desk_avg_wait_seconds",
                "Mean time on hold before a desk agent took the call",
            ),
            desk_waiting: gauge(
                &r,
                "attendant_desk_waiting",
                "Callers on hold for the agent desk now",
            ),
            transfers_failed_total: counter(
                &r,
                "attendant_transfers_failed_total",
                "Transfers the transport could not carry out (the bot took the caller back)",
            ),
            account_lockouts: gauge(
                &r,
                "attendant_account_lockouts",
                "Accounts locked after repeated wrong PINs (account_locked events on record)",
            ),
            calls_active,
            registry: r,
        }
    })
}

pub fn render() -> String {
    let mut buf = Vec::new();
    let _ = TextEncoder::new().encode(&metrics().registry.gather(), &mut buf);
    let mut text = String::from_utf8(buf).unwrap_or_default();
    // Counted below the pipeline (model workers, SIP), which cannot reach
    // this registry; rendered here in the same format.
    text.push_str(
        "# HELP attendant_faults_total Panics contained (the worker, core or call carried on or was rebuilt)\n\
         # TYPE attendant_faults_total counter\n",
    );
    for part in crate::faults::Part::ALL {
        let n = crate::faults::count(part);
        text.push_str(&format!(
            "attendant_faults_total{{part=\"{}\"}} {n}\n",
            part.name()
        ));
    }
    text
}
