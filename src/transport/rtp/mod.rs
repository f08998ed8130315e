//! RTP media (RFC 3550) as sans-IO cores: packet syntax, a receive jitter
//! buffer, RFC 4733 DTMF events, a paced sender, and basic RTCP. The tokio
//! driver in `server/sip.rs` only moves datagrams and wakes them on time.

pub mod dtmf;
pub mod jitter;
pub mod outbound;
pub mod rtcp;
pub mod session;
pub mod source;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RtpError {
    #[error("packet shorter than its header")]
    Short,
    #[error("RTP version {0}, expected 2")]
    Version(u8),
    #[error("padding longer than the payload")]
    Padding,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<'a> {
    pub marker: bool,
    pub payload_type: u8,
    pub seq: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    pub payload: &'a [u8],
}

/// Parses an RTP packet; CSRCs and header extensions are skipped.
pub fn parse(buf: &[u8]) -> Result<Packet<'_>, RtpError> {
    if buf.len() < 12 {
        return Err(RtpError::Short);
    }
    let version = buf[0] >> 6;
    if version != 2 {
        return Err(RtpError::Version(version));
    }
    let padding = buf[0] & 0x20 != 0;
    let extension = buf[0] & 0x10 != 0;
    let cc = (buf[0] & 0x0f) as usize;
    let mut off = 12 + 4 * cc;
    if extension {
        if buf.len() < off + 4 {
            return Err(RtpError::Short);
        }
        let words = u16::from_be_bytes([buf[off + 2], buf[off + 3]]) as usize;
        off += 4 + 4 * words;
    }
    if buf.len() < off {
        return Err(RtpError::Short);
    }
    let mut end = buf.len();
    if padding {
        let pad = buf[end - 1] as usize;
        if pad == 0 || off + pad > end {
            return Err(RtpError::Padding);
        }
        end -= pad;
    }
    Ok(Packet {
        marker: buf[1] & 0x80 != 0,
        payload_type: buf[1] & 0x7f,
        seq: u16::from_be_bytes([buf[2], buf[3]]),
        timestamp: u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]),
        ssrc: u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]),
        payload: &buf[off..end],
    })
}

pub fn write(p: &Packet<'_>) -> Vec<u8> {
    let mut b = Vec::with_capacity(12 + p.payload.len());
    b.push(0x80);
    b.push((p.payload_type & 0x7f) | if p.marker { 0x80 } else { 0 });
    b.extend_from_slice(&p.seq.to_be_bytes());
    b.extend_from_slice(&p.timestamp.to_be_bytes());
    b.extend_from_slice(&p.ssrc.to_be_bytes());
    b.extend_from_slice(p.payload);
    b
}

/// Looks like RTCP rather than RTP (RFC 5761 §4: PT 72–76 in the second byte).
pub fn is_rtcp(buf: &[u8]) -> bool {
    buf.len() >= 2 && (200..=206).contains(&buf[1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_bad_input() {
        let p = Packet {
            marker: true,
            payload_type: 8,
            seq: 65535,
            timestamp: 0xdead_beef,
            ssrc: 7,
            payload: &[1, 2, 3],
        };
        let b = write(&p);
        assert_eq!(parse(&b).unwrap(), p);
        assert_eq!(parse(&b[..5]), Err(RtpError::Short));
        let mut v1 = b.clone();
        v1[0] = 0x40;
        assert_eq!(parse(&v1), Err(RtpError::Version(1)));
        // CSRC count pointing past the end.
        let mut cc = b.clone();
        cc[0] |= 0x0f;
        assert_eq!(parse(&cc), Err(RtpError::Short));
        // Padding bigger than the packet.
        let mut pad = b.clone();
        pad[0] |= 0x20;
        *pad.last_mut().unwrap() = 200;
        assert_eq!(parse(&pad), Err(RtpError::Padding));
        // A header extension is skipped.
        let mut ext = vec![
            0x90, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0xbe, 0xde, 0, 1, 9, 9, 9, 9,
        ];
        ext.extend_from_slice(&[5, 6]);
        assert_eq!(parse(&ext).unwrap().payload, &[5, 6]);
    }
}
