//! Dialogue: one turn in (transcript, DTMF, timing, call metadata), one reply
//! plus actions out. The voice loop knows nothing else about the "brain", so
//! a richer dialogue manager can replace the FAQ bot behind this interface.

pub mod backend;
pub mod faq;
pub mod manager;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What the transport told us about the call.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CallMeta {
    pub call_id: String,
    pub channel: String,
    /// Caller ID as given by the carrier; never logged unmasked.
    pub from: Option<String>,
    pub to: Option<String>,
    pub params: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TurnInput {
    /// Final ASR transcript of the caller's turn, if they spoke.
    pub transcript: Option<String>,
    /// DTMF digits pressed, if any.
    pub dtmf: Option<String>,
    /// How long the caller spoke.
    pub speech_ms: u64,
    /// Turn number within the call (1-based).
    pub index: u32,
    /// The language the caller spoke, when it was identified.
    #[serde(default)]
    pub language: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Action {
    /// End the call once the reply has been played.
    Hangup,
    /// Hand the caller to a human once the reply has been played. The
    /// hand-off packet is stored under the call id before this is returned.
    Transfer {
        target: String,
        reason: String,
        /// 0–100 from the routing rules.
        #[serde(default)]
        priority: i64,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    /// What to say; empty means stay silent.
    pub say: String,
    pub actions: Vec<Action>,
    /// Where the answer came from (FAQ id, "fallback", …), for reports.
    pub source: String,
}

/// How much of the last reply the caller heard before interrupting.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Interruption {
    pub heard_text: String,
    pub heard_ms: u64,
}

/// How a call's time with the agent desk went (`desk:QUEUE` transfers).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HumanOutcome {
    pub queue: String,
    /// Who took the call; `None` if nobody did before the caller left or the
    /// wait ran out.
    pub agent: Option<String>,
    /// On hold before an agent took the call (or until it ended).
    pub wait_ms: u64,
    /// Agent and caller connected; `None` if they never were.
    pub talk_ms: Option<u64>,
    /// The agent gave the caller back to the bot (or nobody took the call
    /// in time): the conversation goes on with the bot.
    pub returned: bool,
}

/// What the bot's last question asks for. The voice loop uses it to pick
/// the recogniser (digits) and to end a turn as soon as the answer is whole.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Expect {
    /// Anything: a request, a question.
    #[default]
    Open,
    YesNo,
    /// A digit string (account digits, PIN) of this many digits.
    Digits {
        min: usize,
        max: usize,
    },
    /// A short value: a choice, an amount, a date, a name.
    Value,
}

/// A per-call conversation.
pub trait Dialogue: Send + Sync {
    fn greeting(&mut self, call: &CallMeta) -> Reply;
    fn on_turn(&mut self, call: &CallMeta, turn: &TurnInput) -> Reply;
    fn on_interrupted(&mut self, _what: &Interruption) {}
    /// What the caller is being asked for now.
    fn expecting(&self) -> Expect {
        Expect::Open
    }
    /// The conversation state, serialised (for call records and hand-offs).
    fn state_json(&self) -> Option<serde_json::Value> {
        None
    }
    /// The transport could not carry out the transfer this dialogue asked
    /// for: the caller is still with the bot.
    fn on_transfer_failed(&mut self, _status: u16) {}
    /// The caller's time with the agent desk ended (taken and finished,
    /// returned to the bot, or left waiting).
    fn on_human(&mut self, _outcome: &HumanOutcome) {}
    /// The call is over: persist what should outlive it. `response_ms` is
    /// the call's mean voice-to-voice time, when any turn was answered.
    fn on_call_end(&mut self, _response_ms: Option<i64>) {}
    /// The language the conversation is in (ISO 639-1), when it can be in
    /// more than one.
    fn language(&self) -> Option<String> {
        None
    }
    /// Whether `text` (the main language's recogniser on the caller's
    /// first words) is plainly that language: understood with confidence
    /// without any state changing. Such a turn need not wait for the
    /// caller's language to be identified.
    fn understands(&self, _text: &str) -> bool {
        false
    }
}

/// Business events waiting for the follow-up rules.
pub const EVENT_QUEUE: usize = 1024;

/// What dialogues share across calls: the customer store and hand-off
/// delivery settings.
pub struct Services {
    pub store: crate::store::Store,
    pub handoff: crate::handoff::HandoffConfig,
    /// Business events raised by calls (e.g. `conversation_resolved`) for
    /// the follow-up rules.
    /// Bounded (`EVENT_QUEUE`): one event per resolved call at most.
    pub events: Option<tokio::sync::mpsc::Sender<serde_json::Value>>,
}

/// Makes one dialogue per call.
pub trait DialogueFactory: Send + Sync {
    fn new_dialogue(&self) -> Box<dyn Dialogue>;
    /// Fixed texts worth synthesising ahead of time, and reply templates
    /// (texts with `{blanks}`) whose written words are.
    fn prompts(&self) -> Vec<String> {
        Vec::new()
    }
    /// Every language its dialogues answer in, the main one first (empty:
    /// only the main one).
    fn languages(&self) -> Vec<String> {
        Vec::new()
    }
    /// Sentences of the main language's prompts that are in another
    /// language (code, text), to be said in that language's voice.
    fn foreign_prompts(&self) -> Vec<(String, String)> {
        Vec::new()
    }
    /// As [`Self::prompts`], for each further language's voice.
    fn localised_prompts(&self) -> Vec<(String, Vec<String>)> {
        Vec::new()
    }
    /// Each further language's words to expect (see
    /// `Agent::speech_hint`), for the recogniser of that language.
    fn speech_hints(&self) -> Vec<(String, String)> {
        Vec::new()
    }
}
