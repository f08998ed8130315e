//! The end-to-end tests against real servers and real models, in one test
//! binary: one build and link instead of one per file (each links the whole
//! model stack), and one default server shared by the modules that use it.
//! `tests/node.rs` stays a binary of its own: its tests need the machine to
//! themselves.
//!
//! Run one module with `cargo test --release --test e2e sip::`.

#[path = "../common/mod.rs"]
mod common;

mod agents;
mod asr;
mod desk;
mod fuzz;
mod loadtest;
mod scenarios;
mod security;
mod sip;
mod twilio_protocol;
mod voice_loop;
mod webrtc;
