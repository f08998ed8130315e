//! Receive jitter buffer: packets in (any order, any lateness), one frame
//! out per playout slot. Playout time follows the sender's RTP clock from
//! the first packet plus a fixed delay, so network jitter up to that delay
//! is absorbed; reordered packets are put back in order; a missing packet
//! is concealed (the previous frame once, then silence); a packet arriving
//! after its slot was played is dropped and counted.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Samples per millisecond at the G.711 clock.
const PER_MS: u64 = 8;
/// Frame size assumed for concealment when nothing has arrived yet.
const DEFAULT_FRAME: u32 = 160;
/// A timestamp jump beyond this (or an SSRC change) restarts the clock.
const RESYNC_SAMPLES: u32 = 8000 * 2;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Playout {
    Audio(Vec<u8>),
    /// Nothing arrived for this slot in time; the bytes are the concealment.
    Concealed(Vec<u8>),
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct JitterStats {
    pub received: u64,
    pub played: u64,
    pub concealed: u64,
    pub late: u64,
    pub duplicate: u64,
    pub reordered: u64,
}

pub struct JitterBuffer {
    delay: Duration,
    silence: u8,
    ssrc: Option<u32>,
    /// Playout position (RTP timestamp) and when it is due.
    next_ts: u32,
    base: Option<(u32, Instant)>,
    packets: BTreeMap<u32, Vec<u8>>,
    frame: u32,
    last: Option<Vec<u8>>,
    concealed_run: u32,
    highest_seq: Option<u16>,
    pub stats: JitterStats,
}

/// Distance from `from` to `to` on the wrapping 32-bit RTP clock.
fn ahead(from: u32, to: u32) -> i64 {
    to.wrapping_sub(from) as i32 as i64
}

impl JitterBuffer {
    pub fn new(delay: Duration, silence: u8) -> Self {
        Self {
            delay,
            silence,
            ssrc: None,
            next_ts: 0,
            base: None,
            packets: BTreeMap::new(),
            frame: DEFAULT_FRAME,
            last: None,
            concealed_run: 0,
            highest_seq: None,
            stats: JitterStats::default(),
        }
    }

    fn due(&self, ts: u32) -> Option<Instant> {
        let (bts, at) = self.base?;
        let d = ahead(bts, ts).max(0) as u64;
        Some(at + Duration::from_millis(d / PER_MS))
    }

    pub fn push(&mut self, ssrc: u32, seq: u16, ts: u32, payload: &[u8], now: Instant) {
        self.stats.received += 1;
        let jump = ahead(self.next_ts, ts);
        let restart = self.base.is_none()
            || self.ssrc != Some(ssrc)
            || jump > RESYNC_SAMPLES as i64
            || jump < -(RESYNC_SAMPLES as i64);
        if restart {
            self.ssrc = Some(ssrc);
            self.packets.clear();
            self.next_ts = ts;
            self.base = Some((ts, now + self.delay));
            self.highest_seq = None;
        }
        if let Some(h) = self.highest_seq {
            if (seq.wrapping_sub(h) as i16) < 0 {
                self.stats.reordered += 1;
            } else {
                self.highest_seq = Some(seq);
            }
        } else {
            self.highest_seq = Some(seq);
        }
        if ahead(self.next_ts, ts) < 0 {
            self.stats.late += 1;
            return;
        }
        if !payload.is_empty() {
            self.frame = payload.len() as u32;
        }
        if self.packets.insert(ts, payload.to_vec()).is_some() {
            self.stats.duplicate += 1;
        }
    }

    /// When the next slot is due (None before the first packet).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.due(self.next_ts)
    }

    /// The next frame, if its slot has come.
    pub fn pop(&mut self, now: Instant) -> Option<Playout> {
        let due = self.due(self.next_ts)?;
        if now < due {
            return None;
        }
        // Keys are ordered numerically; with wrap-around the first key may
        // not be the next one, so look the slot up directly.
        if let Some(p) = self.packets.remove(&self.next_ts) {
            self.next_ts = self.next_ts.wrapping_add(p.len().max(1) as u32);
            self.stats.played += 1;
            self.concealed_run = 0;
            self.last = Some(p.clone());
            return Some(Playout::Audio(p));
        }
        // A packet that starts inside this slot (odd packetization) plays now.
        let frame = self.frame;
        if let Some(&ts) = self
            .packets
            .keys()
            .find(|&&k| ahead(self.next_ts, k) > 0 && ahead(self.next_ts, k) < frame as i64)
        {
            let p = self.packets.remove(&ts).unwrap_or_default();
            self.next_ts = ts.wrapping_add(p.len().max(1) as u32);
            self.stats.played += 1;
            return Some(Playout::Audio(p));
        }
        self.next_ts = self.next_ts.wrapping_add(frame);
        self.stats.concealed += 1;
        self.concealed_run += 1;
        let fill = match (&self.last, self.concealed_run) {
            (Some(prev), 1) => prev.clone(),
            _ => vec![self.silence; frame as usize],
        };
        Some(Playout::Concealed(fill))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: u8) -> Vec<u8> {
        vec![n; 160]
    }

    /// Pops everything due at `t`.
    fn drain(jb: &mut JitterBuffer, t: Instant) -> Vec<Playout> {
        std::iter::from_fn(|| jb.pop(t)).collect()
    }

    #[test]
    fn reorders_conceals_and_drops_late() {
        let t0 = Instant::now();
        let ms = |m: u64| t0 + Duration::from_millis(m);
        let mut jb = JitterBuffer::new(Duration::from_millis(60), 0xff);
        // Packets 0..5 sent every 20 ms; 2 and 1 swapped, 3 lost, 4 late.
        jb.push(9, 100, 1000, &frame(0), ms(0));
        jb.push(9, 102, 1320, &frame(2), ms(35));
        jb.push(9, 101, 1160, &frame(1), ms(45));
        assert_eq!(jb.pop(ms(59)), None, "nothing before the delay");
        let out = drain(&mut jb, ms(100));
        assert_eq!(
            out,
            vec![
                Playout::Audio(frame(0)),
                Playout::Audio(frame(1)),
                Playout::Audio(frame(2))
            ]
        );
        // Slot for ts 1480 (seq 103) is due at 120 ms: lost → previous frame.
        assert_eq!(jb.pop(ms(120)), Some(Playout::Concealed(frame(2))));
        // Seq 104 arrives after its slot (due 140 ms) → silence, then late.
        assert_eq!(jb.pop(ms(141)), Some(Playout::Concealed(vec![0xff; 160])));
        jb.push(9, 104, 1640, &frame(4), ms(150));
        assert_eq!(jb.stats.late, 1);
        assert_eq!(jb.stats.reordered, 1);
        jb.push(9, 105, 1800, &frame(5), ms(150));
        jb.push(9, 105, 1800, &frame(5), ms(151));
        assert_eq!(jb.stats.duplicate, 1);
        assert_eq!(jb.pop(ms(160)), Some(Playout::Audio(frame(5))));
    }

    #[test]
    fn new_stream_restarts_the_clock() {
        let t0 = Instant::now();
        let mut jb = JitterBuffer::new(Duration::from_millis(40), 0xff);
        jb.push(1, 1, 4_000_000_000, &frame(1), t0);
        assert_eq!(
            jb.pop(t0 + Duration::from_millis(40)),
            Some(Playout::Audio(frame(1)))
        );
        // Timestamp wraps around 2^32 without a restart.
        jb.push(
            1,
            2,
            4_000_000_160,
            &frame(2),
            t0 + Duration::from_millis(20),
        );
        assert_eq!(
            jb.pop(t0 + Duration::from_millis(60)),
            Some(Playout::Audio(frame(2)))
        );
        // Another SSRC (e.g. a second pcap): played after the delay again.
        let t1 = t0 + Duration::from_secs(5);
        jb.push(2, 500, 77, &frame(3), t1);
        assert_eq!(jb.pop(t1), None);
        assert_eq!(
            jb.pop(t1 + Duration::from_millis(40)),
            Some(Playout::Audio(frame(3)))
        );
    }
}
