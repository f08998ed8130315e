//! The bot's side of the RTP stream: replies queued as 20 ms frames and sent
//! on a steady 20 ms clock with continuous timestamps and sequence numbers.
//! Between replies the stream carries silence, so NAT bindings stay open and
//! the far end's jitter buffer never starves; the marker bit flags the first
//! packet of each talkspurt (RFC 3551 §4.1).

use std::time::{Duration, Instant};

use crate::transport::playout::{Paced, PacedOutput, Pacer};

pub use crate::transport::playout::FRAME;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    /// A packet to transmit.
    Packet(Vec<u8>),
    /// A mark queued after audio was reached: that audio has been sent.
    Mark(String),
    /// The first frame of reply `reply` went out now.
    ReplyStarted(u32),
}

/// The shared frame clock ([`Pacer`]) with an RTP header on each frame.
pub struct Outbound {
    pacer: Pacer,
    ssrc: u32,
    seq: u16,
    ts: u32,
    pt: u8,
    /// The stream is A-law: frames (queued as μ-law) are converted as sent.
    alaw: bool,
    pub packets_sent: u64,
    pub audio_frames_sent: u64,
}

impl Outbound {
    /// Audio is queued as 8 kHz μ-law whatever the stream's codec; `alaw`
    /// converts each frame as it is sent.
    pub fn new(ssrc: u32, first_seq: u16, first_ts: u32, pt: u8, alaw: bool) -> Self {
        Self {
            pacer: Pacer::new(crate::media::mulaw::SILENCE),
            ssrc,
            seq: first_seq,
            ts: first_ts,
            pt,
            alaw,
            packets_sent: 0,
            audio_frames_sent: 0,
        }
    }

    pub fn set_muted(&mut self, muted: bool) {
        self.pacer.set_muted(muted);
    }

    /// Our stream's RTP timestamp at `now` (for an RTCP sender report): the
    /// next packet's, less the time until it is due.
    pub fn rtp_timestamp(&self, now: Instant) -> u32 {
        let ahead = self
            .pacer
            .due()
            .map_or(Duration::ZERO, |due| due.saturating_duration_since(now));
        self.ts
            .wrapping_sub((ahead.as_micros() as u64 * 8 / 1000) as u32)
    }

    /// Starts the clock; the first packet goes out now.
    pub fn start(&mut self, now: Instant) {
        self.pacer.start(now);
    }

    pub fn poll(&mut self, now: Instant) -> Option<Sent> {
        loop {
            let was_talking = self.pacer.talking();
            return Some(match self.pacer.poll(now)? {
                Paced::Mark(m) => Sent::Mark(m),
                Paced::ReplyStarted(r) => Sent::ReplyStarted(r),
                Paced::Frame { reply, ulaw, muted } => {
                    let marker = reply.is_some() && was_talking.is_none();
                    if reply.is_some() {
                        self.audio_frames_sent += 1;
                    }
                    let payload = if self.alaw {
                        crate::media::alaw::from_ulaw(&ulaw)
                    } else {
                        ulaw
                    };
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
                    if muted {
                        // Timestamps keep running while on hold, so resuming is seamless.
                        continue;
                    }
                    self.packets_sent += 1;
                    Sent::Packet(pkt)
                }
            });
        }
    }
}

impl PacedOutput for Outbound {
    fn pacer(&self) -> &Pacer {
        &self.pacer
    }
    fn pacer_mut(&mut self) -> &mut Pacer {
        &mut self.pacer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::playout::Playout;
    use crate::transport::playout::PTIME;

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
        let mut o = Outbound::new(42, 65534, 1000, 0, false);
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
        let mut o = Outbound::new(1, 0, 0, 8, true);
        o.start(t0);
        o.send_audio(1, &[0x7fu8; 320]);
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
