//! Basic RTCP (RFC 3550 §6.4): a sender report with one reception block
//! every few seconds, and the figures of the far end's reports.

use std::time::{SystemTime, UNIX_EPOCH};

/// What we know about the stream we receive, for our report block.
#[derive(Debug, Default, Clone, Copy)]
pub struct Reception {
    pub ssrc: u32,
    pub highest_seq: u32,
    pub lost: u32,
    pub fraction_lost: u8,
    pub jitter: u32,
}

fn ntp_now() -> (u32, u32) {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs() + 2_208_988_800;
    let frac = ((d.subsec_nanos() as u64) << 32) / 1_000_000_000;
    (secs as u32, frac as u32)
}

/// SR with our send counters and one report block when we have a source.
pub fn sender_report(
    ssrc: u32,
    rtp_ts: u32,
    packets: u32,
    octets: u32,
    rx: Option<Reception>,
) -> Vec<u8> {
    let blocks = u8::from(rx.is_some());
    let words = 6 + 6 * blocks as u16;
    let mut b = vec![0x80 | blocks, 200];
    b.extend_from_slice(&words.to_be_bytes());
    b.extend_from_slice(&ssrc.to_be_bytes());
    let (s, f) = ntp_now();
    b.extend_from_slice(&s.to_be_bytes());
    b.extend_from_slice(&f.to_be_bytes());
    b.extend_from_slice(&rtp_ts.to_be_bytes());
    b.extend_from_slice(&packets.to_be_bytes());
    b.extend_from_slice(&octets.to_be_bytes());
    if let Some(r) = rx {
        b.extend_from_slice(&r.ssrc.to_be_bytes());
        let lost = r.lost.min(0x7f_ffff);
        b.push(r.fraction_lost);
        b.extend_from_slice(&lost.to_be_bytes()[1..]);
        b.extend_from_slice(&r.highest_seq.to_be_bytes());
        b.extend_from_slice(&r.jitter.to_be_bytes());
        b.extend_from_slice(&[0u8; 8]); // LSR, DLSR: no SR timing kept
    }
    b
}

/// The far end's view of our stream, from its SR/RR report block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteReport {
    pub fraction_lost: u8,
    pub cumulative_lost: u32,
    pub jitter: u32,
}

/// Reads the first report block of each SR/RR in a compound packet.
pub fn parse_reports(mut buf: &[u8]) -> Vec<RemoteReport> {
    let mut out = Vec::new();
    while buf.len() >= 4 {
        let count = (buf[0] & 0x1f) as usize;
        let pt = buf[1];
        let len = (u16::from_be_bytes([buf[2], buf[3]]) as usize + 1) * 4;
        if buf[0] >> 6 != 2 || len > buf.len() {
            break;
        }
        let block_at = match pt {
            200 => Some(28),
            201 => Some(8),
            _ => None,
        };
        if let Some(at) = block_at {
            if count > 0 && len >= at + 24 {
                let b = &buf[at..at + 24];
                out.push(RemoteReport {
                    fraction_lost: b[4],
                    cumulative_lost: u32::from_be_bytes([0, b[5], b[6], b[7]]),
                    jitter: u32::from_be_bytes([b[12], b[13], b[14], b[15]]),
                });
            }
        }
        buf = &buf[len..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_report_reads_back() {
        let rx = Reception {
            ssrc: 5,
            highest_seq: 1000,
            lost: 3,
            fraction_lost: 12,
            jitter: 40,
        };
        let sr = sender_report(1, 160, 10, 1600, Some(rx));
        assert_eq!(sr.len(), 52);
        assert!(super::super::is_rtcp(&sr));
        assert_eq!(
            parse_reports(&sr),
            vec![RemoteReport {
                fraction_lost: 12,
                cumulative_lost: 3,
                jitter: 40
            }]
        );
        assert!(parse_reports(&[0x81, 201, 0xff, 0xff]).is_empty());
    }
}
