//! Understanding a caller's turn, offline: intent (MiniLM embeddings + a
//! classifier trained at start-up), slots/entities from spoken-form text, and
//! sentiment.

mod bert;
pub mod classifier;
pub mod embed;
pub mod entities;
pub mod eval;
pub mod intent;
pub mod lang;
mod mpnet;
pub mod numbers;
pub mod scope;
pub mod sentiment;
pub mod tune;
mod unigram;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum NluError {
    #[error("embedding model: {0}")]
    Model(String),
    #[error("training: {0}")]
    Train(String),
    #[error("data: {0}")]
    Data(String),
}
