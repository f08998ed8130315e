//! The bot's side of the RTP stream: replies queued as 20 ms frames and sent
//! on a steady 20 ms clock with continuous timestamps and sequence numbers.
//! Between replies the stream carries silence, so NAT bindings stay open and
//! the far end's jitter buffer never starves; the marker bit flags the first
//! packet of each talkspurt (RFC 3551 §4.1).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

pub const FRAME: usize = 160;
const PTIME: Duration = Duration::from_millis(20);
/// Falling further behind than this skips ahead instead of bursting.
const MAX_LAG: Duration = Duration::from_millis(200);

enum Item {
    Frame { reply: u32, bytes: Vec<u8> },
    Mark(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    /// A packet to transmit.
    Packet(Vec<u8>),
    /// A mark queued after audio was reached: that audio has been sent.
    Mark(String),
    /// The first frame of reply `reply` went out now.
    ReplyStarted(u32),
}

pub struct Outbound {
    ssrc: u32,
    seq: u16,
    ts: u32,
    pt: u8,
    silence: u8,
    queue: VecDeque<Item>,
    partial: Option<(u32, Vec<u8>)>,
    paused: bool,
    /// The far end asked us not to send (hold).
    muted: bool,
    next: Option<Instant>,
    talking: Option<u32>,
    events: VecDeque<Sent>,
    pub packets_sent: u64,
    pub audio_frames_sent: u64,
}

impl Outbound {
    pub fn new(ssrc: u32, first_seq: u16, first_ts: u32, pt: u8, silence: u8) -> Self {
        Self {
            ssrc,
            seq: first_seq,
            ts: first_ts,
            pt,
            silence,
            queue: VecDeque::new(),
            partial: None,
            paused: false,
            muted: false,
            next: None,
            talking: None,
            events: VecDeque::new(),
            packets_sent: 0,
            audio_frames_sent: 0,
        }
    }

    /// Queues reply audio (already in the stream's codec).
    pub fn send_audio(&mut self, reply: u32, bytes: &[u8]) {
        let mut buf = match self.partial.take() {
            Some((r, b)) if r == reply => b,
            Some((r, mut b)) => {
                // A new reply: pad the old one's last frame.
                b.resize(FRAME, self.silence);
                self.queue.push_back(Item::Frame { reply: r, bytes: b });
                Vec::new()
            }
            None => Vec::new(),
        };
        buf.extend_from_slice(bytes);
        let mut chunks = buf.chunks_exact(FRAME);
        for c in &mut chunks {
            self.queue.push_back(Item::Frame {
                reply,
                bytes: c.to_vec(),
            });
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            self.partial = Some((reply, rest.to_vec()));
        }
    }

    pub fn send_mark(&mut self, name: String) {
        self.flush_partial();
        self.queue.push_back(Item::Mark(name));
    }

    fn flush_partial(&mut self) {
        if let Some((r, mut b)) = self.partial.take() {
            b.resize(FRAME, self.silence);
            self.queue.push_back(Item::Frame { reply: r, bytes: b });
        }
    }

    pub fn set_paused(&mut self, paused: bool) {
        self.paused = paused;
    }

    pub fn set_muted(&mut self, muted: bool) {
        self.muted = muted;
    }

    /// Drops queued audio; the marks dropped with it are returned.
    pub fn clear(&mut self) -> Vec<String> {
        self.partial = None;
        self.paused = false;
        self.queue
            .drain(..)
            .filter_map(|i| match i {
                Item::Mark(m) => Some(m),
                Item::Frame { .. } => None,
            })
            .collect()
    }

    /// Audio still queued.
    pub fn queued(&self) -> Duration {
        let frames = self
            .queue
            .iter()
            .filter(|i| matches!(i, Item::Frame { .. }))
            .count()
            + usize::from(self.partial.is_some());
        PTIME * frames as u32
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        if !self.events.is_empty() {
            return Some(Instant::now());
        }
        self.next
    }

    /// Our stream's RTP timestamp at `now` (for an RTCP sender report): the
    /// next packet's, less the time until it is due.
    pub fn rtp_timestamp(&self, now: Instant) -> u32 {
        let ahead = self
            .next
            .map_or(Duration::ZERO, |due| due.saturating_duration_since(now));
        self.ts
            .wrapping_sub((ahead.as_micros() as u64 * 8 / 1000) as u32)
    }

    /// Starts the clock; the first packet goes out now.
    pub fn start(&mut self, now: Instant) {
        if self.next.is_none() {
            self.next = Some(now);
        }
    }

    pub fn poll(&mut self, now: Instant) -> Option<Sent> {
        if let Some(e) = self.events.pop_front() {
            return Some(e);
        }
        let due = self.next?;
        if now < due {
            return None;
        }
        self.next = Some(if now.duration_since(due) > MAX_LAG {
            now + PTIME
        } else {
            due + PTIME
        });
        // Marks at the head of the queue are reached without sending audio.
        while !self.paused {
            match self.queue.front() {
                Some(Item::Mark(_)) => {
                    if let Some(Item::Mark(m)) = self.queue.pop_front() {
                        self.events.push_back(Sent::Mark(m));
                    }
                }
                _ => break,
            }
        }
        if self.queue.is_empty() && self.partial.is_some() && !self.paused {
            self.flush_partial();
        }
        let (payload, reply) = match (self.paused, self.queue.front()) {
            (false, Some(Item::Frame { .. })) => match self.queue.pop_front() {
                Some(Item::Frame { reply, bytes }) => (bytes, Some(reply)),
                _ => unreachable!("front was a frame"),
            },
            _ => (vec![self.silence; FRAME], None),
        };
        let marker = reply.is_some() && self.talking.is_none();
        if let Some(r) = reply {
            if self.talking != Some(r) {
                self.events.push_back(Sent::ReplyStarted(r));
            }
            self.audio_frames_sent += 1;
        }
        self.talking = reply;
        let pkt = super::write(&super::Packet {
            marker,
            payload_type: self.pt,
            seq: self.seq,
            timestamp: self.ts,
            ssrc: self.ssrc,
            payload: &payload,
        });
        self.seq = self.seq.wrapping_add(1);
        self.ts = self.ts.wrapping_add(FRAME as u32);
        if self.muted {
            // Timestamps keep running while on hold, so resuming is seamless.
            return self.events.pop_front();
        }
        self.packets_sent += 1;
        self.events.push_front(Sent::Packet(pkt));
        self.events.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(o: &mut Outbound, t: Instant) -> Vec<Sent> {
        std::iter::from_fn(|| o.poll(t)).collect()
    }

    fn packets(v: &[Sent]) -> Vec<super::super::Packet<'_>> {
        v.iter()
            .filter_map(|s| match s {
                Sent::Packet(p) => Some(super::super::parse(p).unwrap()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn paced_with_continuous_clock_and_marker_per_talkspurt() {
        let t0 = Instant::now();
        let mut o = Outbound::new(42, 65534, 1000, 0, 0xff);
        o.start(t0);
        o.send_audio(1, &[1u8; 400]);
        o.send_mark("m1".into());
        let mut all = Vec::new();
        for i in 0..6 {
            all.extend(drain(&mut o, t0 + PTIME * i));
        }
        let p = packets(&all);
        assert_eq!(p.len(), 6, "one packet per 20 ms");
        assert_eq!(
            p.iter().map(|p| p.seq).collect::<Vec<_>>(),
            vec![65534, 65535, 0, 1, 2, 3]
        );
        assert!(p.windows(2).all(|w| w[1].timestamp == w[0].timestamp + 160));
        assert_eq!(
            p.iter().map(|p| p.marker).collect::<Vec<_>>(),
            vec![true, false, false, false, false, false]
        );
        assert_eq!(p[2].payload[..80], [1u8; 80]);
        assert_eq!(p[2].payload[80..], [0xffu8; 80], "last frame padded");
        assert!(all.contains(&Sent::ReplyStarted(1)));
        let mark_at = all
            .iter()
            .position(|s| *s == Sent::Mark("m1".into()))
            .unwrap();
        assert!(
            mark_at
                > all
                    .iter()
                    .position(|s| matches!(s, Sent::Packet(_)))
                    .unwrap()
        );
        // Nothing more before the next tick.
        assert!(o.poll(t0 + PTIME * 5).is_none());
    }

    #[test]
    fn pause_clear_and_hold() {
        let t0 = Instant::now();
        let mut o = Outbound::new(1, 0, 0, 8, 0xd5);
        o.start(t0);
        o.send_audio(1, &[7u8; 320]);
        o.set_paused(true);
        let p = drain(&mut o, t0);
        assert_eq!(
            packets(&p)[0].payload,
            &[0xd5; 160][..],
            "silence while paused"
        );
        assert_eq!(o.queued(), PTIME * 2);
        o.send_mark("x".into());
        assert_eq!(o.clear(), vec!["x".to_string()]);
        o.set_muted(true);
        assert!(packets(&drain(&mut o, t0 + PTIME)).is_empty());
        o.set_muted(false);
        let p = drain(&mut o, t0 + PTIME * 2);
        assert_eq!(packets(&p)[0].timestamp, 320, "clock ran on hold");
    }
}
