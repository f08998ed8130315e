//! RTCP (RFC 3550 §6.4) for one call's audio, sans-IO: arrival instants and
//! the wall clock (as NTP time) are passed in. It keeps the receiver
//! statistics of the stream we hear (extended highest sequence, cumulative
//! and interval loss, interarrival jitter, appendix A.1/A.3/A.8), writes
//! sender reports with a real NTP/RTP timestamp pair and a report block
//! carrying LSR/DLSR, and reads the peer's reports on our stream (their loss
//! and jitter, and the round-trip time from LSR/DLSR, §6.4.1).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A 64-bit NTP timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ntp {
    pub secs: u32,
    pub frac: u32,
}

impl Ntp {
    /// The wall clock now (the driver's business; the session takes it in).
    pub fn now() -> Ntp {
        Ntp::from_system(SystemTime::now())
    }

    pub fn from_system(t: SystemTime) -> Ntp {
        let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = d.as_secs() + 2_208_988_800;
        let frac = ((d.subsec_nanos() as u64) << 32) / 1_000_000_000;
        Ntp {
            secs: secs as u32,
            frac: frac as u32,
        }
    }

    /// The middle 32 bits (the "compact" form LSR and RTT use).
    pub fn middle(self) -> u32 {
        (self.secs << 16) | (self.frac >> 16)
    }
}

/// Receiver statistics of the source we hear.
#[derive(Debug, Clone)]
struct Source {
    ssrc: u32,
    base_seq: u16,
    max_seq: u16,
    cycles: u32,
    received: u32,
    expected_prior: u32,
    received_prior: u32,
    /// Last relative transit time, in timestamp units.
    transit: Option<i64>,
    /// Interarrival jitter, timestamp units (the estimator of §6.4.1).
    jitter: f64,
    fraction_lost: u8,
}

impl Source {
    fn new(ssrc: u32, seq: u16) -> Source {
        Source {
            ssrc,
            base_seq: seq,
            max_seq: seq,
            cycles: 0,
            received: 0,
            expected_prior: 0,
            received_prior: 0,
            transit: None,
            jitter: 0.0,
            fraction_lost: 0,
        }
    }

    fn extended_max(&self) -> u32 {
        self.cycles.wrapping_add(self.max_seq as u32)
    }

    fn expected(&self) -> u32 {
        self.extended_max()
            .wrapping_sub(self.base_seq as u32)
            .wrapping_add(1)
    }

    fn lost(&self) -> u32 {
        // May be negative with duplicates; the report field cannot say so.
        self.expected().saturating_sub(self.received).min(0x7f_ffff)
    }
}

/// The peer's report on the stream we send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteReport {
    pub fraction_lost: u8,
    pub cumulative_lost: u32,
    pub jitter: u32,
    pub lsr: u32,
    pub dlsr: u32,
}

/// What a call's record and metrics show of its media.
#[derive(Debug, Default, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Quality {
    /// Packets of the caller's stream that never arrived.
    pub lost: u32,
    /// Fraction lost over the last report interval, 0–1.
    pub fraction_lost: f32,
    pub jitter_ms: f32,
    /// The caller's side: our packets they lost, the jitter they measure.
    pub remote_lost: Option<u32>,
    pub remote_jitter_ms: Option<f32>,
    pub rtt_ms: Option<f32>,
}

/// One call's RTCP state.
#[derive(Debug)]
pub struct Session {
    ssrc: u32,
    clock_rate: u32,
    epoch: Instant,
    rx: Option<Source>,
    /// The peer's last SR: its compact NTP time and when it arrived.
    last_sr: Option<(u32, Instant)>,
    remote: Option<RemoteReport>,
    rtt: Option<Duration>,
}

impl Session {
    /// `ssrc` is ours; `epoch` any instant before the first packet.
    pub fn new(ssrc: u32, clock_rate: u32, epoch: Instant) -> Session {
        Session {
            ssrc,
            clock_rate,
            epoch,
            rx: None,
            last_sr: None,
            remote: None,
            rtt: None,
        }
    }

    /// One RTP packet from the peer. `ts` is its timestamp when it counts
    /// for jitter (audio; not RFC 4733 events, whose timestamps stand still).
    pub fn on_rtp(&mut self, ssrc: u32, seq: u16, ts: Option<u32>, arrival: Instant) {
        let s = match &mut self.rx {
            Some(s) if s.ssrc == ssrc => s,
            // A new source (or the first): statistics start again.
            _ => self.rx.insert(Source::new(ssrc, seq)),
        };
        let delta = seq.wrapping_sub(s.max_seq);
        if delta != 0 && delta < 0x8000 {
            if seq < s.max_seq {
                s.cycles = s.cycles.wrapping_add(1 << 16);
            }
            s.max_seq = seq;
        }
        s.received = s.received.wrapping_add(1);
        if let Some(ts) = ts {
            let units = arrival.saturating_duration_since(self.epoch).as_secs_f64()
                * self.clock_rate as f64;
            let transit = (units as u64 as u32).wrapping_sub(ts) as i32 as i64;
            if let Some(prev) = s.transit {
                let d = (transit - prev).abs() as f64;
                s.jitter += (d - s.jitter) / 16.0;
            }
            s.transit = Some(transit);
        }
    }

    /// An RTCP compound packet from the peer.
    pub fn on_rtcp(&mut self, mut buf: &[u8], arrival: Instant, ntp_now: Ntp) {
        while buf.len() >= 8 {
            let count = (buf[0] & 0x1f) as usize;
            let pt = buf[1];
            let len = (u16::from_be_bytes([buf[2], buf[3]]) as usize + 1) * 4;
            if buf[0] >> 6 != 2 || len > buf.len() {
                return;
            }
            let blocks_at = match pt {
                200 if len >= 28 => {
                    let secs = u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]);
                    let frac = u32::from_be_bytes([buf[12], buf[13], buf[14], buf[15]]);
                    self.last_sr = Some((Ntp { secs, frac }.middle(), arrival));
                    Some(28)
                }
                201 => Some(8),
                _ => None,
            };
            if let Some(at) = blocks_at {
                for i in 0..count {
                    let from = at + i * 24;
                    let Some(b) = buf.get(from..from + 24).filter(|_| from + 24 <= len) else {
                        break;
                    };
                    if u32::from_be_bytes([b[0], b[1], b[2], b[3]]) != self.ssrc {
                        continue;
                    }
                    let word = |k: usize| u32::from_be_bytes([b[k], b[k + 1], b[k + 2], b[k + 3]]);
                    let r = RemoteReport {
                        fraction_lost: b[4],
                        cumulative_lost: u32::from_be_bytes([0, b[5], b[6], b[7]]),
                        jitter: word(12),
                        lsr: word(16),
                        dlsr: word(20),
                    };
                    if r.lsr != 0 {
                        // §6.4.1: A - LSR - DLSR, in 1/65536 s.
                        let units = ntp_now.middle().wrapping_sub(r.lsr).wrapping_sub(r.dlsr);
                        let rtt = Duration::from_secs_f64(units as f64 / 65536.0);
                        if rtt < Duration::from_secs(60) {
                            self.rtt = Some(rtt);
                        }
                    }
                    self.remote = Some(r);
                }
            }
            buf = &buf[len..];
        }
    }

    /// A sender report: `rtp_ts` is our stream's timestamp at `ntp_now`;
    /// one report block on the stream we hear, when there is one.
    pub fn sender_report(
        &mut self,
        now: Instant,
        ntp_now: Ntp,
        rtp_ts: u32,
        packets: u32,
        octets: u32,
    ) -> Vec<u8> {
        let lsr = self.last_sr;
        let block = self.rx.as_mut().map(|s| {
            let expected = s.expected();
            let expected_interval = expected.wrapping_sub(s.expected_prior);
            let received_interval = s.received.wrapping_sub(s.received_prior);
            s.expected_prior = expected;
            s.received_prior = s.received;
            let lost_interval = expected_interval as i64 - received_interval as i64;
            s.fraction_lost = if expected_interval == 0 || lost_interval <= 0 {
                0
            } else {
                ((lost_interval << 8) / expected_interval as i64).min(255) as u8
            };
            let (lsr, dlsr) = match lsr {
                Some((mid, at)) => {
                    let delay = now.saturating_duration_since(at).as_secs_f64() * 65536.0;
                    (mid, delay as u32)
                }
                None => (0, 0),
            };
            (
                s.ssrc,
                s.fraction_lost,
                s.lost(),
                s.extended_max(),
                s.jitter as u32,
                lsr,
                dlsr,
            )
        });
        let blocks = u8::from(block.is_some());
        let words = 6 + 6 * blocks as u16;
        let mut b = vec![0x80 | blocks, 200];
        b.extend_from_slice(&words.to_be_bytes());
        b.extend_from_slice(&self.ssrc.to_be_bytes());
        b.extend_from_slice(&ntp_now.secs.to_be_bytes());
        b.extend_from_slice(&ntp_now.frac.to_be_bytes());
        b.extend_from_slice(&rtp_ts.to_be_bytes());
        b.extend_from_slice(&packets.to_be_bytes());
        b.extend_from_slice(&octets.to_be_bytes());
        if let Some((ssrc, fraction, lost, highest, jitter, lsr, dlsr)) = block {
            b.extend_from_slice(&ssrc.to_be_bytes());
            b.push(fraction);
            b.extend_from_slice(&lost.to_be_bytes()[1..]);
            b.extend_from_slice(&highest.to_be_bytes());
            b.extend_from_slice(&jitter.to_be_bytes());
            b.extend_from_slice(&lsr.to_be_bytes());
            b.extend_from_slice(&dlsr.to_be_bytes());
        }
        b
    }

    /// The figures so far, for the call's record and metrics.
    pub fn quality(&self) -> Quality {
        let ms = |units: f64| (units * 1000.0 / self.clock_rate as f64) as f32;
        let mut q = Quality::default();
        if let Some(s) = &self.rx {
            q.lost = s.lost();
            q.fraction_lost = s.fraction_lost as f32 / 256.0;
            q.jitter_ms = ms(s.jitter);
        }
        if let Some(r) = &self.remote {
            q.remote_lost = Some(r.cumulative_lost);
            q.remote_jitter_ms = Some(ms(r.jitter as f64));
        }
        q.rtt_ms = self.rtt.map(|d| d.as_secs_f32() * 1000.0);
        q
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS20: Duration = Duration::from_millis(20);

    fn ntp_at(base: Ntp, after: Duration) -> Ntp {
        let units = ((base.secs as u64) << 32 | base.frac as u64)
            + ((after.as_nanos() as u64) << 32) / 1_000_000_000;
        Ntp {
            secs: (units >> 32) as u32,
            frac: units as u32,
        }
    }

    /// Two sessions on simulated time: a caller sending 100 packets with
    /// losses, a 30 ms path each way and uneven spacing, then reports both
    /// ways.
    #[test]
    fn loss_jitter_and_round_trip_as_rfc_3550_counts_them() {
        let t0 = Instant::now();
        let wall = Ntp::from_system(UNIX_EPOCH + Duration::from_secs(1_800_000_000));
        let one_way = Duration::from_millis(30);
        let mut bot = Session::new(0xB07, 8000, t0);
        let mut caller = Session::new(0xCA11, 8000, t0);
        // Sequence numbers wrap during the call; packets 10, 11 and 50 are
        // lost; every 7th arrives 8 ms late.
        let first_seq = 65_500u16;
        for i in 0..100u32 {
            if [10, 11, 50].contains(&i) {
                continue;
            }
            let late = if i % 7 == 0 {
                Duration::from_millis(8)
            } else {
                Duration::ZERO
            };
            let arrival = t0 + MS20 * i + one_way + late;
            bot.on_rtp(
                0xCA11,
                first_seq.wrapping_add(i as u16),
                Some(1000 + 160 * i),
                arrival,
            );
        }
        let q = bot.quality();
        assert_eq!(q.lost, 3);
        assert!(q.jitter_ms > 1.0 && q.jitter_ms < 8.0, "{q:?}");

        // The caller sends an SR at 2 s; it reaches the bot 30 ms later.
        let sent = t0 + Duration::from_secs(2);
        let sr = caller.sender_report(
            sent,
            ntp_at(wall, Duration::from_secs(2)),
            17_000,
            100,
            16_000,
        );
        bot.on_rtcp(
            &sr,
            sent + one_way,
            ntp_at(wall, Duration::from_secs(2) + one_way),
        );
        // The bot reports 0.5 s later; the caller gets it 30 ms after that.
        let at = sent + one_way + Duration::from_millis(500);
        let ours = bot.sender_report(at, ntp_at(wall, at - t0), 4_000, 80, 12_800);
        assert_eq!(ours.len(), 52);
        // Our block: the caller's SSRC, 3 lost, highest = one wrap + seq.
        assert_eq!(&ours[28..32], &0xCA11u32.to_be_bytes());
        assert_eq!(u32::from_be_bytes([0, ours[33], ours[34], ours[35]]), 3);
        let highest = u32::from_be_bytes([ours[36], ours[37], ours[38], ours[39]]);
        assert_eq!(highest, (1 << 16) + first_seq.wrapping_add(99) as u32);
        assert_eq!(
            ours[32],
            (3 * 256 / 100) as u8,
            "fraction lost over the interval"
        );
        caller.on_rtcp(&ours, at + one_way, ntp_at(wall, at + one_way - t0));
        let rtt = caller.quality().rtt_ms.expect("a round-trip time");
        assert!((rtt - 60.0).abs() < 1.0, "rtt {rtt} ms");
        let seen = caller.quality();
        assert_eq!(seen.remote_lost, Some(3));
        assert!(seen.remote_jitter_ms.unwrap() > 1.0);
        // A second report with nothing new: the interval fraction drops to 0.
        let again = bot.sender_report(
            at + Duration::from_secs(5),
            ntp_at(wall, Duration::from_secs(8)),
            5_000,
            90,
            14_400,
        );
        assert_eq!(again[32], 0);
    }

    #[test]
    fn reports_for_other_sources_and_garbage_are_ignored() {
        let t0 = Instant::now();
        let mut s = Session::new(1, 8000, t0);
        let mut other = Session::new(2, 8000, t0);
        other.on_rtp(99, 1, Some(0), t0);
        let sr = other.sender_report(t0, Ntp::now(), 0, 0, 0);
        s.on_rtcp(&sr, t0, Ntp::now());
        assert_eq!(s.quality().remote_lost, None, "the block was about SSRC 99");
        s.on_rtcp(&[0x81, 201, 0xff, 0xff], t0, Ntp::now());
        s.on_rtcp(&[0x81, 200, 0x00, 0x01, 0, 0, 0, 0], t0, Ntp::now());
        assert_eq!(s.quality(), Quality::default());
    }
}
