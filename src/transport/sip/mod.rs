//! SIP trunks: message syntax, SDP offer/answer, who may call, and the
//! user-agent core that turns INVITEs into calls — all sans-IO; the tokio
//! driver is `server/sip.rs`.

pub mod auth;
pub mod config;
pub mod core;
pub mod flood;
pub mod message;
pub mod sdp;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod torture;

pub use self::config::SipConfig;
pub use self::core::{EndReason, Event, IncomingCall, Peer, SipCore, Transmit, Transport};
