//! Wire messages of Twilio's Media Streams WebSocket protocol.
//!
//! Twilio encodes `sequenceNumber`, `media.chunk` and `media.timestamp` as
//! strings; they are kept as received and parsed on demand.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    #[error("message is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("message has no \"event\" field")]
    NoEvent,
    #[error("field {field} is invalid: {reason}")]
    Field { field: &'static str, reason: String },
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum Inbound {
    Connected {
        #[serde(default)]
        protocol: String,
        #[serde(default)]
        version: String,
    },
    Start {
        #[serde(rename = "sequenceNumber", default)]
        sequence_number: Option<String>,
        start: StartInfo,
        #[serde(rename = "streamSid")]
        stream_sid: String,
    },
    Media {
        #[serde(rename = "sequenceNumber", default)]
        sequence_number: Option<String>,
        media: MediaPayload,
        #[serde(rename = "streamSid")]
        stream_sid: String,
    },
    Dtmf {
        #[serde(rename = "sequenceNumber", default)]
        sequence_number: Option<String>,
        dtmf: DtmfInfo,
        #[serde(rename = "streamSid")]
        stream_sid: String,
    },
    Mark {
        #[serde(rename = "sequenceNumber", default)]
        sequence_number: Option<String>,
        mark: MarkInfo,
        #[serde(rename = "streamSid")]
        stream_sid: String,
    },
    Stop {
        #[serde(rename = "sequenceNumber", default)]
        sequence_number: Option<String>,
        #[serde(default)]
        stop: Option<StopInfo>,
        #[serde(rename = "streamSid")]
        stream_sid: String,
    },
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StartInfo {
    #[serde(default)]
    pub account_sid: String,
    pub stream_sid: String,
    #[serde(default)]
    pub call_sid: String,
    #[serde(default)]
    pub tracks: Vec<String>,
    pub media_format: MediaFormat,
    #[serde(default)]
    pub custom_parameters: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MediaFormat {
    pub encoding: String,
    pub sample_rate: u32,
    pub channels: u16,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct MediaPayload {
    #[serde(default)]
    pub track: Option<String>,
    #[serde(default)]
    pub chunk: Option<String>,
    #[serde(default)]
    pub timestamp: Option<String>,
    pub payload: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct DtmfInfo {
    #[serde(default)]
    pub track: Option<String>,
    pub digit: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct MarkInfo {
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StopInfo {
    #[serde(default)]
    pub account_sid: String,
    #[serde(default)]
    pub call_sid: String,
}

/// Messages Attendant sends to Twilio.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum Outbound {
    Media {
        #[serde(rename = "streamSid")]
        stream_sid: String,
        media: OutboundMedia,
    },
    Mark {
        #[serde(rename = "streamSid")]
        stream_sid: String,
        mark: MarkInfo,
    },
    Clear {
        #[serde(rename = "streamSid")]
        stream_sid: String,
    },
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct OutboundMedia {
    pub payload: String,
}

/// Event names this side understands; anything else is ignored, so a
/// protocol addition by Twilio does not drop calls.
const KNOWN: &[&str] = &["connected", "start", "media", "dtmf", "mark", "stop"];

/// Parses one text frame. `Ok(None)` is an unknown but well-formed event.
pub fn parse_inbound(text: &str) -> Result<Option<Inbound>, MessageError> {
    let value: serde_json::Value = serde_json::from_str(text)?;
    let event = value
        .get("event")
        .and_then(|e| e.as_str())
        .ok_or(MessageError::NoEvent)?;
    if !KNOWN.contains(&event) {
        return Ok(None);
    }
    Ok(Some(serde_json::from_value(value)?))
}

impl Inbound {
    pub fn name(&self) -> &'static str {
        match self {
            Inbound::Connected { .. } => "connected",
            Inbound::Start { .. } => "start",
            Inbound::Media { .. } => "media",
            Inbound::Dtmf { .. } => "dtmf",
            Inbound::Mark { .. } => "mark",
            Inbound::Stop { .. } => "stop",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_inline_start() {
        let m = parse_inbound(r#"{"event":"start","sequenceNumber":"1","start":{"accountSid":"AC1","streamSid":"MZ1","callSid":"CA1","tracks":["inbound"],"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1},"customParameters":{"From":"x"}},"streamSid":"MZ1"}"#).unwrap().unwrap();
        match m {
            Inbound::Start { start, .. } => {
                assert_eq!(start.media_format.sample_rate, 8000);
                assert_eq!(start.custom_parameters["From"], "x");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unknown_event_is_ignored_not_an_error() {
        assert!(parse_inbound(r#"{"event":"futureThing","x":1}"#)
            .unwrap()
            .is_none());
    }

    #[test]
    fn malformed_messages_are_errors() {
        for bad in [
            "",
            "not json",
            "[]",
            "{}",
            r#"{"event":5}"#,
            r#"{"event":"media"}"#,
            r#"{"event":"media","streamSid":"MZ","media":{}}"#,
            r#"{"event":"start","streamSid":"MZ","start":{"streamSid":"MZ"}}"#,
            r#"{"event":"dtmf","streamSid":"MZ","dtmf":{"digit":7}}"#,
            "{\"event\":\"mark\",\"streamSid\":\"MZ\",\"mark\":{\"name\":\"\u{0}\"}",
        ] {
            assert!(parse_inbound(bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn outbound_serialises_like_the_docs() {
        let m = Outbound::Clear {
            stream_sid: "MZ1".into(),
        };
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"event":"clear","streamSid":"MZ1"}"#
        );
    }
}
