//! Sans-IO core of one Media Streams WebSocket: text frames and `Instant`s
//! in; events for the call pipeline, paced outbound frames and timeouts out.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use base64::Engine;

use super::messages::{
    parse_inbound, Inbound, MarkInfo, MessageError, Outbound, OutboundMedia, StartInfo,
};
use crate::media::{mulaw, FRAME_MS, PHONE_FRAME};

const FRAME: Duration = Duration::from_millis(FRAME_MS);
/// If the driver was late by more than this, resynchronise the clock rather
/// than bursting the backlog at the caller.
const MAX_LAG: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error(transparent)]
    Message(#[from] MessageError),
    #[error("media payload is not valid base64")]
    Payload,
    #[error("unsupported media format {encoding} at {rate} Hz x{channels} (want audio/x-mulaw, 8000 Hz, mono)")]
    Format {
        encoding: String,
        rate: u32,
        channels: u16,
    },
    #[error("'{0}' arrived before 'start'")]
    NotStarted(&'static str),
    #[error("second 'start' on one stream")]
    DuplicateStart,
    #[error("message for stream {got} on stream {expected}")]
    WrongStream { got: String, expected: String },
    #[error("invalid DTMF digit {0:?}")]
    Digit(String),
}

impl StreamError {
    /// WebSocket close code (RFC 6455 §7.4.1) for this error.
    pub fn close_code(&self) -> u16 {
        match self {
            StreamError::Message(_) | StreamError::Payload | StreamError::Digit(_) => 1007,
            StreamError::Format { .. } => 1003,
            _ => 1002,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    Started(StartInfo),
    /// μ-law bytes of one inbound media message, with Twilio's timestamp (ms).
    Audio {
        ulaw: Vec<u8>,
        timestamp_ms: Option<u64>,
    },
    Dtmf(char),
    /// The caller's side has played everything up to this mark.
    MarkPlayed(String),
    Stopped,
}

#[derive(Debug)]
enum Queued {
    Frame(Vec<u8>),
    Mark(String),
}

pub struct StreamSession {
    stream_sid: Option<String>,
    stopped: bool,
    queue: VecDeque<Queued>,
    transmits: VecDeque<Outbound>,
    next_frame_at: Option<Instant>,
    prebuffer_frames: usize,
    burst_left: usize,
    frames_sent: u64,
    marks_in_flight: Vec<String>,
    paused: bool,
}

impl StreamSession {
    /// `prebuffer_frames` frames are sent at once when playback starts, so
    /// the far end has a small cushion against network jitter.
    pub fn new(prebuffer_frames: usize) -> Self {
        Self {
            stream_sid: None,
            stopped: false,
            queue: VecDeque::new(),
            transmits: VecDeque::new(),
            next_frame_at: None,
            prebuffer_frames,
            burst_left: prebuffer_frames,
            frames_sent: 0,
            marks_in_flight: Vec::new(),
            paused: false,
        }
    }

    /// Holds queued audio without dropping it (the caller may be starting to
    /// talk over the bot); `false` resumes with a fresh clock.
    pub fn set_paused(&mut self, paused: bool) {
        if self.paused && !paused {
            self.next_frame_at = None;
            self.burst_left = self.prebuffer_frames;
        }
        self.paused = paused;
    }

    pub fn is_paused(&self) -> bool {
        self.paused
    }

    pub fn stream_sid(&self) -> Option<&str> {
        self.stream_sid.as_deref()
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// Handles one inbound text frame.
    pub fn handle_text(&mut self, text: &str) -> Result<Option<StreamEvent>, StreamError> {
        let Some(msg) = parse_inbound(text)? else {
            return Ok(None);
        };
        if let Some(sid) = msg_stream_sid(&msg) {
            match (&self.stream_sid, &msg) {
                (None, Inbound::Start { .. }) => {}
                (None, m) => return Err(StreamError::NotStarted(m.name())),
                (Some(expected), _) if expected != sid => {
                    return Err(StreamError::WrongStream {
                        got: sid.to_string(),
                        expected: expected.clone(),
                    })
                }
                _ => {}
            }
        }
        match msg {
            Inbound::Connected { .. } => Ok(None),
            Inbound::Start { start, .. } => {
                if self.stream_sid.is_some() {
                    return Err(StreamError::DuplicateStart);
                }
                let f = &start.media_format;
                if f.encoding != "audio/x-mulaw" || f.sample_rate != 8000 || f.channels != 1 {
                    return Err(StreamError::Format {
                        encoding: f.encoding.clone(),
                        rate: f.sample_rate,
                        channels: f.channels,
                    });
                }
                self.stream_sid = Some(start.stream_sid.clone());
                Ok(Some(StreamEvent::Started(start)))
            }
            Inbound::Media { media, .. } => {
                if media.track.as_deref() == Some("outbound") {
                    return Ok(None); // our own audio echoed back on a both_tracks stream
                }
                let ulaw = base64::engine::general_purpose::STANDARD
                    .decode(media.payload.as_bytes())
                    .map_err(|_| StreamError::Payload)?;
                let timestamp_ms = media.timestamp.as_deref().and_then(|t| t.parse().ok());
                Ok(Some(StreamEvent::Audio { ulaw, timestamp_ms }))
            }
            Inbound::Dtmf { dtmf, .. } => {
                let mut chars = dtmf.digit.chars();
                match (chars.next(), chars.next()) {
                    (Some(c), None) if c.is_ascii_digit() || "*#ABCD".contains(c) => {
                        Ok(Some(StreamEvent::Dtmf(c)))
                    }
                    _ => Err(StreamError::Digit(dtmf.digit)),
                }
            }
            Inbound::Mark { mark, .. } => {
                self.marks_in_flight.retain(|m| m != &mark.name);
                Ok(Some(StreamEvent::MarkPlayed(mark.name)))
            }
            Inbound::Stop { .. } => {
                self.stopped = true;
                self.queue.clear();
                Ok(Some(StreamEvent::Stopped))
            }
        }
    }

    /// Queues μ-law audio for the caller, cut into 20 ms frames (the last one
    /// padded with silence).
    pub fn send_audio(&mut self, ulaw: &[u8]) {
        for chunk in ulaw.chunks(PHONE_FRAME) {
            let mut f = chunk.to_vec();
            f.resize(PHONE_FRAME, mulaw::SILENCE);
            self.queue.push_back(Queued::Frame(f));
        }
    }

    /// Queues a mark after the audio queued so far.
    pub fn send_mark(&mut self, name: impl Into<String>) {
        self.queue.push_back(Queued::Mark(name.into()));
    }

    /// Drops queued audio and tells Twilio to drop its buffer. Returns the
    /// marks that never reached the caller (queued here or in flight).
    pub fn clear(&mut self) -> Vec<String> {
        let mut dropped: Vec<String> = self
            .queue
            .drain(..)
            .filter_map(|q| match q {
                Queued::Mark(m) => Some(m),
                Queued::Frame(_) => None,
            })
            .collect();
        dropped.splice(0..0, self.marks_in_flight.drain(..));
        if let Some(sid) = &self.stream_sid {
            self.transmits.push_back(Outbound::Clear {
                stream_sid: sid.clone(),
            });
        }
        self.next_frame_at = None;
        self.burst_left = self.prebuffer_frames;
        dropped
    }

    /// Audio still queued here, not yet sent.
    pub fn queued(&self) -> Duration {
        let frames = self
            .queue
            .iter()
            .filter(|q| matches!(q, Queued::Frame(_)))
            .count();
        FRAME * frames as u32
    }

    pub fn frames_sent(&self) -> u64 {
        self.frames_sent
    }

    /// Next message to send now, if any. Call until it returns `None`.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<String> {
        let msg = self.next_outbound(now)?;
        Some(serde_json::to_string(&msg).expect("outbound messages always serialise"))
    }

    fn next_outbound(&mut self, now: Instant) -> Option<Outbound> {
        if let Some(t) = self.transmits.pop_front() {
            return Some(t);
        }
        if self.paused {
            return None;
        }
        let sid = self.stream_sid.clone()?;
        match self.queue.front()? {
            Queued::Mark(_) => {
                let Some(Queued::Mark(name)) = self.queue.pop_front() else {
                    unreachable!()
                };
                self.marks_in_flight.push(name.clone());
                Some(Outbound::Mark {
                    stream_sid: sid,
                    mark: MarkInfo { name },
                })
            }
            Queued::Frame(_) => {
                let due = *self.next_frame_at.get_or_insert(now);
                if due > now && self.burst_left == 0 {
                    return None;
                }
                let Some(Queued::Frame(f)) = self.queue.pop_front() else {
                    unreachable!()
                };
                // The clock advances for every frame, cushion included, so the
                // far end stays exactly `prebuffer` frames ahead.
                self.burst_left = self.burst_left.saturating_sub(1);
                let next = due + FRAME;
                self.next_frame_at = Some(if now > next + MAX_LAG { now } else { next });
                self.frames_sent += 1;
                if self.queue.is_empty() {
                    // Playback ended: the next reply starts a fresh clock and cushion.
                    self.next_frame_at = None;
                    self.burst_left = self.prebuffer_frames;
                }
                Some(Outbound::Media {
                    stream_sid: sid,
                    media: OutboundMedia {
                        payload: base64::engine::general_purpose::STANDARD.encode(f),
                    },
                })
            }
        }
    }

    /// When `poll_transmit` will next have something, if anything is queued.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if !self.transmits.is_empty() {
            return Some(Instant::now());
        }
        if self.paused {
            return None;
        }
        match self.queue.front()? {
            Queued::Mark(_) => Some(Instant::now()),
            Queued::Frame(_) => Some(self.next_frame_at.unwrap_or_else(Instant::now)),
        }
    }
}

/// Twilio plays what it is sent and echoes marks itself, so its pacer only
/// keeps a small cushion ahead (no silence between replies).
impl crate::transport::playout::Playout for StreamSession {
    fn send_audio(&mut self, _reply: u32, ulaw: &[u8]) {
        StreamSession::send_audio(self, ulaw);
    }
    fn send_mark(&mut self, name: String) {
        StreamSession::send_mark(self, name);
    }
    fn set_paused(&mut self, paused: bool) {
        StreamSession::set_paused(self, paused);
    }
    fn clear(&mut self) -> Vec<String> {
        StreamSession::clear(self)
    }
    fn queued(&self) -> Duration {
        StreamSession::queued(self)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        StreamSession::poll_timeout(self)
    }
}

fn msg_stream_sid(m: &Inbound) -> Option<&str> {
    match m {
        Inbound::Connected { .. } => None,
        Inbound::Start { stream_sid, .. }
        | Inbound::Media { stream_sid, .. }
        | Inbound::Dtmf { stream_sid, .. }
        | Inbound::Mark { stream_sid, .. }
        | Inbound::Stop { stream_sid, .. } => Some(stream_sid),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const START: &str = r#"{"event":"start","sequenceNumber":"1","start":{"accountSid":"AC","streamSid":"MZ1","callSid":"CA1","tracks":["inbound"],"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1},"customParameters":{}},"streamSid":"MZ1"}"#;

    fn started() -> StreamSession {
        let mut s = StreamSession::new(0);
        assert!(matches!(
            s.handle_text(START).unwrap(),
            Some(StreamEvent::Started(_))
        ));
        s
    }

    #[test]
    fn media_before_start_is_a_protocol_error() {
        let mut s = StreamSession::new(0);
        let e = s
            .handle_text(r#"{"event":"media","streamSid":"MZ1","media":{"payload":"//8="}}"#)
            .unwrap_err();
        assert_eq!(e.close_code(), 1002);
    }

    #[test]
    fn decodes_media_and_dtmf() {
        let mut s = started();
        let ev = s
            .handle_text(r#"{"event":"media","sequenceNumber":"2","streamSid":"MZ1","media":{"track":"inbound","chunk":"1","timestamp":"20","payload":"//8A"}}"#)
            .unwrap();
        assert_eq!(
            ev,
            Some(StreamEvent::Audio {
                ulaw: vec![0xff, 0xff, 0x00],
                timestamp_ms: Some(20)
            })
        );
        let ev = s
            .handle_text(r##"{"event":"dtmf","streamSid":"MZ1","dtmf":{"track":"inbound_track","digit":"#"}}"##)
            .unwrap();
        assert_eq!(ev, Some(StreamEvent::Dtmf('#')));
    }

    #[test]
    fn bad_payload_format_and_stream_are_rejected() {
        let mut s = started();
        let e = s
            .handle_text(
                r#"{"event":"media","streamSid":"MZ1","media":{"payload":"no+JhoaJjpz..."}}"#,
            )
            .unwrap_err();
        assert_eq!(e.close_code(), 1007);
        let e = s
            .handle_text(r#"{"event":"dtmf","streamSid":"MZ2","dtmf":{"digit":"1"}}"#)
            .unwrap_err();
        assert!(matches!(e, StreamError::WrongStream { .. }));
        let e = s.handle_text(START).unwrap_err();
        assert!(matches!(e, StreamError::DuplicateStart));
        let mut s = StreamSession::new(0);
        let e = s
            .handle_text(&START.replace("audio/x-mulaw", "audio/l16"))
            .unwrap_err();
        assert_eq!(e.close_code(), 1003);
        let e = started()
            .handle_text(r#"{"event":"dtmf","streamSid":"MZ1","dtmf":{"digit":"12"}}"#)
            .unwrap_err();
        assert_eq!(e.close_code(), 1007);
    }

    #[test]
    fn outbound_audio_is_paced_at_20ms_with_marks_in_order() {
        let mut s = started();
        let t0 = Instant::now();
        s.send_audio(&[0u8; 400]); // 3 frames, last padded
        s.send_mark("a");
        let first = s.poll_transmit(t0).unwrap();
        assert!(first.contains("\"media\""));
        assert!(
            s.poll_transmit(t0).is_none(),
            "second frame must wait 20 ms"
        );
        assert_eq!(s.poll_timeout(), Some(t0 + FRAME));
        assert!(s.poll_transmit(t0 + FRAME).unwrap().contains("media"));
        assert!(s.poll_transmit(t0 + FRAME * 2).unwrap().contains("media"));
        let mark = s.poll_transmit(t0 + FRAME * 2).unwrap();
        assert_eq!(
            mark,
            r#"{"event":"mark","streamSid":"MZ1","mark":{"name":"a"}}"#
        );
        assert_eq!(s.frames_sent(), 3);
        assert!(s.poll_transmit(t0 + FRAME * 10).is_none());
    }

    #[test]
    fn prebuffer_sends_a_cushion_at_once() {
        let mut s = StreamSession::new(3);
        s.handle_text(START).unwrap();
        s.send_audio(&[0u8; 160 * 5]);
        let t0 = Instant::now();
        let n = std::iter::from_fn(|| s.poll_transmit(t0)).count();
        assert_eq!(n, 3);
        // Then real-time pacing: the 4th frame is due 60 ms after the first.
        assert!(s.poll_transmit(t0 + FRAME * 2).is_none());
        assert!(s.poll_transmit(t0 + FRAME * 3).is_some());
    }

    #[test]
    fn clear_drops_queue_and_reports_unplayed_marks() {
        let mut s = started();
        let t0 = Instant::now();
        s.send_audio(&[0u8; 160]);
        s.send_mark("s0");
        s.send_audio(&[0u8; 1600]);
        s.send_mark("s1");
        while s.poll_transmit(t0).is_some() {}
        // s0 is in flight (sent, not yet echoed); s1 still queued.
        let dropped = s.clear();
        assert_eq!(dropped, vec!["s0".to_string(), "s1".to_string()]);
        assert_eq!(
            s.poll_transmit(t0).unwrap(),
            r#"{"event":"clear","streamSid":"MZ1"}"#
        );
        assert!(s.poll_transmit(t0 + FRAME * 100).is_none());
    }

    #[test]
    fn pause_holds_audio_and_resume_continues() {
        let mut s = started();
        let t0 = Instant::now();
        s.send_audio(&[0u8; 160 * 4]);
        assert!(s.poll_transmit(t0).is_some());
        s.set_paused(true);
        assert!(s.poll_transmit(t0 + FRAME * 5).is_none());
        assert_eq!(s.poll_timeout(), None);
        s.set_paused(false);
        let t1 = t0 + FRAME * 6;
        assert!(s.poll_transmit(t1).is_some());
        assert!(s.poll_transmit(t1).is_none(), "paced again after resume");
        assert_eq!(s.queued(), FRAME * 2);
    }

    #[test]
    fn echoed_mark_is_reported_and_no_longer_in_flight() {
        let mut s = started();
        s.send_mark("m");
        s.poll_transmit(Instant::now()).unwrap();
        let ev = s
            .handle_text(r#"{"event":"mark","streamSid":"MZ1","mark":{"name":"m"}}"#)
            .unwrap();
        assert_eq!(ev, Some(StreamEvent::MarkPlayed("m".into())));
        assert!(s.clear().is_empty());
    }
}
