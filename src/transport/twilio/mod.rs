//! Twilio Programmable Voice: the `<Connect><Stream>` webhook and the
//! bidirectional Media Streams WebSocket protocol.

pub mod messages;
pub mod signature;
pub mod stream;
pub mod twiml;

pub use messages::{Inbound, Outbound};
pub use stream::{StreamEvent, StreamSession};
