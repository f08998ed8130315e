//! RFC 4733 telephone-events: one digit per event, however many packets
//! (and end-bit retransmissions) carry it.

#[derive(Debug, Default)]
pub struct DtmfDecoder {
    /// The event in progress: (RTP timestamp, digit, reported).
    current: Option<(u32, char, bool)>,
}

/// The key an RFC 4733 event code stands for (§3.2).
pub fn digit(event: u8) -> Option<char> {
    match event {
        0..=9 => Some((b'0' + event) as char),
        10 => Some('*'),
        11 => Some('#'),
        12..=15 => Some((b'A' + event - 12) as char),
        _ => None,
    }
}

/// The RFC 4733 event code of a key.
pub fn event_code(key: char) -> Option<u8> {
    match key {
        '0'..='9' => Some(key as u8 - b'0'),
        '*' => Some(10),
        '#' => Some(11),
        'A'..='D' => Some(key as u8 - b'A' + 12),
        _ => None,
    }
}

/// The RFC 4733 payloads of one key press lasting `ms`, in sending order:
/// three updates 20 ms apart, then the end packet three times (§2.5.1.4).
/// All carry the event's start timestamp; the first gets the marker bit.
pub fn event_payloads(key: char, ms: u32) -> Option<Vec<[u8; 4]>> {
    let code = event_code(key)?;
    // Volume 10 (−10 dBm0), as phones send.
    let packet = |end: bool, samples: u32| {
        let d = samples.min(u16::MAX as u32) as u16;
        [
            code,
            if end { 0x80 | 10 } else { 10 },
            (d >> 8) as u8,
            d as u8,
        ]
    };
    let mut out: Vec<[u8; 4]> = (1..=3).map(|i| packet(false, i * 160)).collect();
    out.extend(std::iter::repeat_n(packet(true, ms * 8), 3));
    Some(out)
}

impl DtmfDecoder {
    /// Feeds one telephone-event payload; returns a digit once per event:
    /// at its first end packet, or when a new event starts before the old
    /// one's end arrived (all three end packets lost).
    pub fn push(&mut self, timestamp: u32, payload: &[u8]) -> Option<char> {
        if payload.len() < 4 {
            return None;
        }
        let d = digit(payload[0])?;
        let end = payload[1] & 0x80 != 0;
        let mut out = None;
        match self.current {
            Some((ts, _, _)) if ts == timestamp => {}
            Some((_, old, reported)) => {
                if !reported {
                    out = Some(old);
                }
                self.current = Some((timestamp, d, false));
            }
            None => self.current = Some((timestamp, d, false)),
        }
        if end {
            if let Some((_, dd, reported)) = &mut self.current {
                if !*reported {
                    *reported = true;
                    // A digit finishing while an older one is flushed: the
                    // older one goes first, this one next time.
                    if out.is_none() {
                        out = Some(*dd);
                    } else {
                        *reported = false;
                    }
                }
            }
        }
        out
    }

    /// A digit whose end never came, at the end of the call.
    pub fn flush(&mut self) -> Option<char> {
        match self.current.take() {
            Some((_, d, false)) => Some(d),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(d: u8, end: bool, dur: u16) -> Vec<u8> {
        let mut p = vec![d, if end { 0x80 } else { 0 } | 10];
        p.extend_from_slice(&dur.to_be_bytes());
        p
    }

    #[test]
    fn one_digit_per_event_despite_end_retransmissions() {
        let mut dec = DtmfDecoder::default();
        let mut got = Vec::new();
        for (ts, d) in [(1000u32, 5u8), (5000, 11)] {
            for dur in [160, 320, 480] {
                got.extend(dec.push(ts, &ev(d, false, dur)));
            }
            for _ in 0..3 {
                got.extend(dec.push(ts, &ev(d, true, 640)));
            }
        }
        assert_eq!(got, vec!['5', '#']);
        assert_eq!(dec.flush(), None);
    }

    #[test]
    fn lost_end_packets_still_give_the_digit() {
        let mut dec = DtmfDecoder::default();
        assert_eq!(dec.push(100, &ev(1, false, 160)), None);
        assert_eq!(dec.push(900, &ev(2, false, 160)), Some('1'));
        assert_eq!(dec.push(900, &ev(2, true, 320)), Some('2'));
        assert_eq!(dec.push(1700, &ev(10, false, 160)), None);
        assert_eq!(dec.flush(), Some('*'));
        assert_eq!(dec.push(1, &[1, 2]), None);
        assert_eq!(dec.push(1, &[99, 0x80, 0, 1]), None);
    }

    #[test]
    fn a_key_press_we_send_is_decoded_once() {
        let mut d = DtmfDecoder::default();
        let got: Vec<char> = event_payloads('#', 100)
            .unwrap()
            .iter()
            .filter_map(|p| d.push(4000, p))
            .collect();
        assert_eq!(got, ['#']);
        assert_eq!(event_payloads('#', 100).unwrap()[5], [11, 0x80 | 10, 3, 32]);
        assert!(event_payloads('x', 100).is_none());
    }
}
