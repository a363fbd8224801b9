//! What spans requests, behind traits, so that a store shared by several gateway replicas
//! (`redis.rs`) can replace the in-memory one (`memory.rs`) without touching the pipeline:
//! approval plans (single use, redeemed atomically), rate and budget counters (windowed), and
//! the records that let any replica resume a client session. The server's tool definitions
//! stay with each replica, which fronts a server process of its own. Client sessions, which
//! hold a live connection, have their registry in `session/`. Every store method is a future,
//! so that a networked store fits; a shared store that cannot be reached says so
//! ([`Unavailable`]) and the caller decides how to fail closed.

pub mod approvals;
pub mod memory;
pub mod redis;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::protocol::digest::digest;
use crate::protocol::tool::Tool;
pub use approvals::{ApprovalError, Plan, PlanState};

/// A shared store that cannot be reached (or answered something it should not have).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the gateway's state store is unavailable")]
pub struct Unavailable;

/// How a secret identifier (a session ID) appears in a store: its digest, never itself.
pub fn stored_name(secret_id: &str) -> String {
    digest(&Value::String(secret_id.to_string())).chars().take(32).collect()
}

/// A new random identifier (256 bits, hex): session IDs and approval IDs.
pub fn new_id() -> String {
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

/// Approval plans. A store applies each transition atomically: a plan is redeemed once.
pub trait ApprovalStore: Send + Sync {
    /// Records a new pending plan.
    fn propose<'a>(
        &'a self,
        tool: &'a str,
        arguments: Map<String, Value>,
        requester: &'a str,
        preview: Option<Value>,
    ) -> BoxFuture<'a, Result<Plan, ApprovalError>>;

    /// A plan that exists and has not expired.
    fn get<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Plan>, ApprovalError>>;

    /// Plans that have not expired (those of `requester` only, when given), oldest first.
    fn list<'a>(
        &'a self,
        requester: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<Plan>, ApprovalError>>;

    /// An approver decides on a plan they name by ID and hash.
    fn decide<'a>(
        &'a self,
        id: &'a str,
        hash: &'a str,
        approver: &'a str,
        approve: bool,
    ) -> BoxFuture<'a, Result<Plan, ApprovalError>>;

    /// Consumes an approval for a call: single use, same principal, same tool and arguments.
    fn redeem<'a>(
        &'a self,
        id: &'a str,
        tool: &'a str,
        args: &'a Map<String, Value>,
        principal: &'a str,
    ) -> BoxFuture<'a, Result<Plan, ApprovalError>>;
}

/// A refused use: which limit, and seconds until its window resets.
#[derive(Debug, Clone, PartialEq)]
pub struct Exceeded {
    pub limit: String,
    pub retry_after_seconds: u64,
}

/// Why a use was not counted.
#[derive(Debug, Clone, PartialEq)]
pub enum TakeError {
    Exceeded(Exceeded),
    Unavailable,
}

/// Fixed-window counters by limit and principal.
pub trait CounterStore: Send + Sync {
    /// Counts one use of `what` by `who` in windows of `per`; refuses past `max`.
    fn take<'a>(
        &'a self,
        who: &'a str,
        what: &'a str,
        max: u64,
        per: Duration,
    ) -> BoxFuture<'a, Result<(), TakeError>>;
}

/// What another replica needs to resume a client session: whose it is, the revision agreed,
/// and the client's `initialize` (replayed to that replica's server).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub principal: String,
    pub revision: String,
    pub initialize: Option<Value>,
}

/// Records of the session-era sessions open on any replica, kept while they are used.
pub trait SessionStore: Send + Sync {
    /// Records a session for `ttl` (its idle timeout).
    fn put<'a>(
        &'a self,
        id: &'a str,
        record: &'a SessionRecord,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), Unavailable>>;
    fn get<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<SessionRecord>, Unavailable>>;
    /// Keeps a session for another `ttl`; `false` when it no longer exists (it was ended,
    /// through any replica, or expired).
    fn touch<'a>(&'a self, id: &'a str, ttl: Duration) -> BoxFuture<'a, Result<bool, Unavailable>>;
    fn remove<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), Unavailable>>;
}

/// The server's tool definitions as last listed (every page of `tools/list`).
pub trait ToolStore: Send + Sync {
    fn learn(&self, tools: &[Value]);
    fn get(&self, name: &str) -> Option<Arc<Tool>>;
    /// Every definition known, by name.
    fn all(&self) -> Vec<Arc<Tool>>;
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Forgets every definition (a new configuration judges tools afresh).
    fn clear(&self);
    /// Whether a refresh caused by an unknown tool may run now; records it when so.
    fn refresh_allowed(&self) -> bool;
}

/// The stores of one gateway.
pub struct State {
    pub approvals: Box<dyn ApprovalStore>,
    pub counters: Box<dyn CounterStore>,
    /// This replica's own counters: what read-only traffic counts against while a shared
    /// store is unreachable.
    pub local_counters: memory::Counters,
    pub tools: Box<dyn ToolStore>,
    /// Session records for other replicas (`None`: one replica, whose registry is the truth).
    pub sessions: Option<Box<dyn SessionStore>>,
}

impl State {
    /// Everything in this replica's memory (the default for one replica).
    pub fn in_memory() -> State {
        State {
            approvals: Box::new(memory::Approvals::default()),
            counters: Box::new(memory::Counters::default()),
            local_counters: memory::Counters::default(),
            tools: Box::new(memory::Tools::default()),
            sessions: None,
        }
    }

    /// Approvals, counters and session records in a shared store; tool definitions here.
    pub fn shared(store: redis::Redis) -> State {
        let store = std::sync::Arc::new(store);
        State {
            approvals: Box::new(redis::Approvals(store.clone())),
            counters: Box::new(redis::Counters(store.clone())),
            local_counters: memory::Counters::default(),
            tools: Box::new(memory::Tools::default()),
            sessions: Some(Box::new(redis::Sessions(store))),
        }
    }
}
