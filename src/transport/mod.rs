//! Transports: how a caller's audio reaches Attendant. Each protocol is a
//! sans-IO core (messages + `Instant` in, transmits/events/timeouts out) with
//! a thin tokio driver in `server/`.

pub mod budget;
pub mod playout;
pub mod rtp;
pub mod sip;
pub mod twilio;
pub mod webrtc;
