//! Whose RTP a call takes. The first acceptable packet fixes the peer's
//! source address and nothing from anywhere else is played to the bot, so a
//! third party cannot inject audio into a call or take its stream over. The
//! address the SDP named always wins: a packet from it moves the lock there,
//! which undoes a stranger who raced the real peer to the first packet.

use std::net::SocketAddr;

use crate::transport::sip::config::Symmetric;

/// What to do with one received packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Take it; `send_to` is Some when our own audio should now go there.
    Accept { send_to: Option<SocketAddr> },
    /// From an address that is not this call's peer: drop it.
    Foreign,
}

/// The receive-side lock for one call's RTP.
#[derive(Debug, Clone)]
pub struct SourceLock {
    policy: Symmetric,
    sdp: SocketAddr,
    locked: Option<SocketAddr>,
}

/// Where to send once packets arrive from `src` (symmetric RTP, RFC 4961):
/// behind NAT the SDP's address is private, so `Auto` answers the packets'
/// source when its address differs.
pub fn latch(policy: Symmetric, sdp: SocketAddr, src: SocketAddr) -> SocketAddr {
    match policy {
        Symmetric::Always => src,
        Symmetric::Auto if src.ip() != sdp.ip() => src,
        _ => sdp,
    }
}

impl SourceLock {
    pub fn new(policy: Symmetric, sdp: SocketAddr) -> Self {
        Self {
            policy,
            sdp,
            locked: None,
        }
    }

    /// The peer's source address once a packet has been accepted.
    pub fn locked(&self) -> Option<SocketAddr> {
        self.locked
    }

    pub fn admit(&mut self, src: SocketAddr) -> Admit {
        if self.locked == Some(src) {
            return Admit::Accept { send_to: None };
        }
        let acceptable = src == self.sdp
            || (self.locked.is_none()
                && (self.policy != Symmetric::Never || src.ip() == self.sdp.ip()));
        if !acceptable {
            return Admit::Foreign;
        }
        self.locked = Some(src);
        Admit::Accept {
            send_to: Some(latch(self.policy, self.sdp, src)),
        }
    }

    /// A re-INVITE named a new address: the next packet locks afresh.
    pub fn renegotiated(&mut self, sdp: SocketAddr) {
        if sdp != self.sdp {
            self.sdp = sdp;
            self.locked = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn symmetric_rtp_policy() {
        let sdp = a("10.0.0.5:4000");
        let nat = a("203.0.113.7:61000");
        let same_ip = a("10.0.0.5:4002");
        assert_eq!(latch(Symmetric::Auto, sdp, nat), nat, "NAT rewrote it");
        assert_eq!(latch(Symmetric::Auto, sdp, same_ip), sdp);
        assert_eq!(latch(Symmetric::Always, sdp, same_ip), same_ip);
        assert_eq!(latch(Symmetric::Never, sdp, nat), sdp);
    }

    #[test]
    fn the_first_source_is_locked_and_a_third_address_is_dropped() {
        let sdp = a("10.0.0.5:4000");
        let nat = a("203.0.113.7:61000");
        let mut l = SourceLock::new(Symmetric::Auto, sdp);
        assert_eq!(l.admit(nat), Admit::Accept { send_to: Some(nat) });
        assert_eq!(l.admit(nat), Admit::Accept { send_to: None });
        assert_eq!(l.admit(a("198.51.100.9:5000")), Admit::Foreign);
        assert_eq!(l.admit(a("203.0.113.7:61002")), Admit::Foreign);
        assert_eq!(l.locked(), Some(nat));
    }

    #[test]
    fn the_sdp_address_wins_over_a_stranger_who_sent_first() {
        let sdp = a("10.0.0.5:4000");
        let stranger = a("198.51.100.9:5000");
        let mut l = SourceLock::new(Symmetric::Auto, sdp);
        assert!(matches!(l.admit(stranger), Admit::Accept { .. }));
        assert_eq!(l.admit(sdp), Admit::Accept { send_to: Some(sdp) });
        assert_eq!(l.admit(stranger), Admit::Foreign);
    }

    #[test]
    fn never_takes_only_the_sdp_host() {
        let sdp = a("10.0.0.5:4000");
        let mut l = SourceLock::new(Symmetric::Never, sdp);
        assert_eq!(l.admit(a("203.0.113.7:61000")), Admit::Foreign);
        assert_eq!(
            l.admit(a("10.0.0.5:4010")),
            Admit::Accept { send_to: Some(sdp) }
        );
    }

    #[test]
    fn a_reinvite_to_a_new_address_relocks() {
        let old = a("10.0.0.5:4000");
        let new = a("10.0.0.6:4100");
        let mut l = SourceLock::new(Symmetric::Auto, old);
        assert!(matches!(l.admit(old), Admit::Accept { .. }));
        l.renegotiated(new);
        assert_eq!(l.admit(new), Admit::Accept { send_to: Some(new) });
        assert_eq!(l.admit(old), Admit::Foreign);
    }
}
