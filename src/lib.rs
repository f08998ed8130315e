//! Attendant: a self-hosted voice-bot server for contact centers.
//!
//! The modules follow a call's journey: `transport` (how the caller's audio
//! arrives) → `media` (codecs, resampling) → `turn` (VAD, end of turn,
//! barge-in) → `asr` (speech to text) → `dialogue` (what to answer) →
//! `speech` (text to speech) → back out through the transport. `pipeline`
//! wires one call's journey together; `server` hosts it; `client` plays the
//! caller's side for tests and load tests.

pub mod agent;
pub mod asr;
pub mod client;
pub mod config;
pub mod derived;
pub mod desk;
pub mod dialogue;
pub mod eval;
pub mod faults;
pub mod followup;
pub mod handoff;
pub mod kpi;
pub mod learn;
pub mod loadtest;
pub mod media;
pub mod nlu;
pub mod pipeline;
pub mod review;
pub mod routing;
pub mod rules;
pub mod server;
pub mod speech;
pub mod store;
pub mod transport;
pub mod turn;
