//! Client sessions of the session era (2025-03-26 .. 2025-11-25, and 2024-11-05 over SSE):
//! the session itself (its connection, owner, revision, budget and event log) and the
//! registry that finds it. Opening a session and dispatching its messages are requests, and
//! belong to `pipeline/`.

pub mod client;
pub mod registry;

pub use crate::observe::short;
pub use client::ClientSession;
pub use registry::{MemorySessions, SessionRegistry};
