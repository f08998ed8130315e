//! What happened on each call, kept in memory for GET /calls/{id} and the
//! `attendant call` client. Phone numbers are stored masked.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Notify};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Timings {
    /// Caller's last voiced frame → end-of-turn decision.
    pub end_of_turn_ms: Option<u64>,
    /// End-of-turn decision → final transcript.
    pub asr_final_ms: Option<u64>,
    /// Time the recogniser spent on the final transcript.
    pub asr_decode_ms: Option<u64>,
    /// The engine that decoded it ("moonshine", "whisper").
    #[serde(default)]
    pub asr_engine: String,
    /// Final transcript → dialogue reply.
    pub dialogue_ms: Option<u64>,
    /// Dialogue reply → first synthesised audio.
    pub tts_first_audio_ms: Option<u64>,
    /// First synthesised audio → first bot frame sent.
    pub first_frame_ms: Option<u64>,
    /// Headline: last voiced caller frame in → first bot frame out.
    pub voice_to_voice_ms: Option<u64>,
    pub smart_turn_probability: Option<f32>,
    /// "smart_turn", "transcript" (the words answered or closed a
    /// sentence), "silence" (the fallback) or "dtmf".
    pub end_reason: String,
    /// Ended too early: the caller spoke again sooner than the silence
    /// fallback would have waited, so the turn was cut mid-thought.
    #[serde(default)]
    pub cut_early: bool,
    /// The speculative transcript (started at the pause) was used.
    pub speculative_hit: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TurnRecord {
    pub index: u32,
    pub caller_text: String,
    pub partials: Vec<String>,
    pub dtmf: Option<String>,
    pub speech_ms: u64,
    pub bot_text: String,
    pub source: String,
    pub interrupted: bool,
    pub heard_text: String,
    pub heard_ms: u64,
    pub timings: Timings,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CallRecord {
    pub call_id: String,
    pub stream_id: String,
    pub channel: String,
    pub from_masked: Option<String>,
    pub started_unix_ms: u64,
    pub ended_unix_ms: Option<u64>,
    pub greeting: String,
    /// Call start → first greeting frame out.
    pub greeting_first_frame_ms: Option<u64>,
    pub turns: Vec<TurnRecord>,
    pub barge_ins: u32,
    /// Transfers the transport could not complete (the bot took the call back).
    #[serde(default)]
    pub transfer_failures: u32,
    /// Media quality from RTCP (SIP calls), as of the last report.
    #[serde(default)]
    pub media: Option<MediaQuality>,
    pub outcome: String,
    /// The call's time with the agent desk, when it was sent there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub human: Option<HumanRecord>,
    /// The dialogue's final state (flow, slots, sentiment trajectory, turn
    /// traces), when the dialogue exposes one.
    #[serde(default)]
    pub dialogue: Option<serde_json::Value>,
    /// The caller's language (ISO 639-1), once identified or chosen, when
    /// the agent answers in more than one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
}

pub use crate::store::mask_phone;

/// A desk hand-over as the call record shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HumanRecord {
    pub queue: String,
    pub agent: Option<String>,
    pub wait_ms: u64,
    /// "Take call" pressed → the agent's first audio reached the caller's side.
    pub take_to_audio_ms: Option<u64>,
    pub talk_ms: Option<u64>,
    pub returned: bool,
}

/// A call's media quality (RFC 3550 receiver and sender reports).
pub use crate::transport::rtp::rtcp::Quality as MediaQuality;

/// The node's calls: the latest record of each (the most recent `cap`),
/// which records changed since they were last written to the database, how
/// many calls are running, and whether the node is closing.
pub struct CallStore {
    cap: usize,
    inner: Mutex<(HashMap<String, CallRecord>, VecDeque<String>)>,
    /// Records changed and not yet persisted (ids; at most `cap`).
    dirty: Mutex<HashSet<String>>,
    /// Records handed to the writer and not yet reported written.
    writing: AtomicUsize,
    changed: Notify,
    live: AtomicUsize,
    idle: Notify,
    closing: watch::Sender<bool>,
}

/// Held by a running call; dropping it counts the call as over.
pub struct Live {
    store: Arc<CallStore>,
}

impl Drop for Live {
    fn drop(&mut self) {
        self.store.live.fetch_sub(1, Ordering::SeqCst);
        self.store.idle.notify_waiters();
    }
}

impl CallStore {
    pub fn new(cap: usize) -> Self {
        Self {
            cap: cap.max(1),
            inner: Mutex::new((HashMap::new(), VecDeque::new())),
            dirty: Mutex::new(HashSet::new()),
            writing: AtomicUsize::new(0),
            changed: Notify::new(),
            live: AtomicUsize::new(0),
            idle: Notify::new(),
            closing: watch::channel(false).0,
        }
    }

    pub fn upsert(&self, rec: CallRecord) {
        let mut g = self.inner.lock();
        let (map, order) = &mut *g;
        if !map.contains_key(&rec.call_id) {
            order.push_back(rec.call_id.clone());
        }
        self.dirty.lock().insert(rec.call_id.clone());
        map.insert(rec.call_id.clone(), rec);
        while order.len() > self.cap {
            if let Some(old) = order.pop_front() {
                map.remove(&old);
                self.dirty.lock().remove(&old);
            }
        }
        drop(g);
        self.changed.notify_one();
    }

    /// The records changed since the last call (latest version of each),
    /// waiting until there is one. The caller reports them with `written`.
    pub async fn next_changes(&self) -> Vec<CallRecord> {
        loop {
            let g = self.inner.lock();
            let ids: Vec<String> = self.dirty.lock().drain().collect();
            if !ids.is_empty() {
                let recs: Vec<CallRecord> =
                    ids.iter().filter_map(|id| g.0.get(id).cloned()).collect();
                self.writing.fetch_add(recs.len(), Ordering::SeqCst);
                return recs;
            }
            drop(g);
            self.changed.notified().await;
        }
    }

    /// `n` records from `next_changes` are written (or given up on).
    pub fn written(&self, n: usize) {
        self.writing.fetch_sub(n, Ordering::SeqCst);
    }

    /// Whether every change so far has been written.
    pub fn flushed(&self) -> bool {
        let g = self.inner.lock();
        let clean = self.dirty.lock().is_empty();
        drop(g);
        clean && self.writing.load(Ordering::SeqCst) == 0
    }

    /// Counts a call as running until the guard drops.
    pub fn begin(self: &Arc<Self>) -> Live {
        self.live.fetch_add(1, Ordering::SeqCst);
        Live {
            store: self.clone(),
        }
    }

    pub fn live(&self) -> usize {
        self.live.load(Ordering::SeqCst)
    }

    /// Waits until no call runs, or `deadline`; true when none does.
    pub async fn wait_idle(&self, deadline: tokio::time::Instant) -> bool {
        loop {
            let idle = self.idle.notified();
            if self.live() == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                return self.live() == 0;
            }
        }
    }

    /// Asks every running call to say goodbye and end.
    pub fn close_all(&self) {
        self.closing.send_replace(true);
    }

    /// Becomes true when the node wants its calls to end.
    pub fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }

    pub fn get(&self, id: &str) -> Option<CallRecord> {
        self.inner.lock().0.get(id).cloned()
    }

    pub fn ids(&self) -> Vec<String> {
        self.inner.lock().1.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_phone_numbers() {
        assert_eq!(mask_phone("+14155550123"), "+*********23");
        assert_eq!(mask_phone("12"), "12");
    }

    #[test]
    fn store_is_bounded() {
        let s = CallStore::new(2);
        for i in 0..3 {
            s.upsert(CallRecord {
                call_id: format!("c{i}"),
                ..Default::default()
            });
        }
        assert!(s.get("c0").is_none());
        assert!(s.get("c2").is_some());
        assert_eq!(s.ids(), vec!["c1", "c2"]);
    }
}
