//! What spans requests, behind traits, so that a store shared by several gateway replicas can
//! replace the in-memory one without touching the pipeline: approval plans (single use,
//! redeemed atomically), rate and budget counters (windowed), and the server's tool
//! definitions. Client sessions, which hold a live connection, have their registry in
//! `session/`. Every store method is a future, so that a networked store fits.

pub mod approvals;
pub mod memory;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use rand::RngCore;
use serde_json::{Map, Value};

use crate::protocol::tool::Tool;
pub use approvals::{ApprovalError, Plan, PlanState};

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
    fn get<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Option<Plan>>;

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

/// Fixed-window counters by limit and principal.
pub trait CounterStore: Send + Sync {
    /// Counts one use of `what` by `who` in windows of `per`; refuses past `max`.
    fn take<'a>(
        &'a self,
        who: &'a str,
        what: &'a str,
        max: u64,
        per: Duration,
    ) -> BoxFuture<'a, Result<(), Exceeded>>;
}

/// The server's tool definitions as last listed (every page of `tools/list`).
pub trait ToolStore: Send + Sync {
    fn learn(&self, tools: &[Value]);
    fn get(&self, name: &str) -> Option<Arc<Tool>>;
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
    pub tools: Box<dyn ToolStore>,
}

impl State {
    /// Everything in this replica's memory (the default for one replica).
    pub fn in_memory() -> State {
        State {
            approvals: Box::new(memory::Approvals::default()),
            counters: Box::new(memory::Counters::default()),
            tools: Box::new(memory::Tools::default()),
        }
    }
}
