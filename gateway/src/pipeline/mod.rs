//! One client request, from validation to the server and back. The stages run in order and
//! each may answer instead of going on (`stages.rs`): validate -> authorize -> rate -> tool
//! gate -> permits -> route. What the server sends back is checked and mediated before the
//! client sees it (`relay.rs`, `response.rs`). In the session era, `open.rs` opens a session
//! (`initialize`) and `dispatch.rs` takes the messages of an open one.

pub mod dispatch;
pub mod open;
mod relay;
mod response;
mod stages;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use palisade_core::config::GatewayConfig;
use palisade_core::spec::ValidationMode;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::controls::authz::Principal;
use crate::controls::toolgate::ToolServer;
use crate::gateway::Gateway;
use crate::observe::audit::CallRecord;
use crate::observe::events::{self, Kind};
use crate::observe::metrics::RequestLabel;
use crate::observe::telemetry::RequestSpan;
use crate::observe::trace::TraceContext;
use crate::protocol::revision::Rev;
use crate::session::{ClientSession, short};
use crate::upstream::Connection;
use crate::upstream::probe::list_tools;

/// A request refused before it reached the stages: the JSON-RPC error for the client and the
/// HTTP status the transport answers with.
#[derive(Debug)]
pub struct Refusal {
    pub status: u16,
    pub message: Value,
}

impl Refusal {
    pub fn new(
        status: u16,
        id: Option<Value>,
        code: i64,
        message: impl Into<String>,
        data: Option<Value>,
    ) -> Refusal {
        Refusal { status, message: crate::protocol::jsonrpc::error(id, code, message, data) }
    }
}

/// Everything known about the request being served.
pub struct Call {
    pub gw: Arc<Gateway>,
    pub cfg: Arc<GatewayConfig>,
    pub rev: Rev,
    pub principal: Principal,
    pub trace: TraceContext,
    pub session: Option<Arc<ClientSession>>,
    /// The request's server span (ends when the call is dropped, after its final answer).
    pub span: RequestSpan,
}

/// The answer to a request: a final message now, or a stream of messages ending with it.
pub enum Reply {
    Final(Value),
    Stream(mpsc::Receiver<Value>),
}

impl Call {
    /// A call of `method` from `principal`, with its server span.
    pub fn new(
        gw: Arc<Gateway>,
        rev: Rev,
        principal: Principal,
        trace: &TraceContext,
        session: Option<Arc<ClientSession>>,
        method: &str,
    ) -> Call {
        let (span, trace) = match &gw.observe.telemetry {
            // Span names never carry a client's string: unknown methods are "unknown".
            Some(_) => {
                let known = crate::protocol::schema::method(
                    method,
                    crate::protocol::schema::Direction::ClientToServer,
                    rev,
                )
                .map_or("unknown", |m| m.name);
                gw.observe.request_span(trace, known)
            }
            None => (RequestSpan::none(), trace.clone()),
        };
        if span.enabled() {
            span.set("mcp.protocol.version", rev.as_str().to_string());
            span.set("palisade.principal_class", gw.authz.class_of(&principal));
        }
        let cfg = gw.config();
        Call { gw, cfg, rev, principal, trace, session, span }
    }

    pub fn request_id(&self) -> String {
        self.trace.request_id()
    }

    /// A tool name fit for a metric label: one the server listed, else `other` (label values
    /// stay bounded whatever clients send).
    pub fn listed<'a>(&self, tool: Option<&'a str>) -> Option<&'a str> {
        tool.map(|t| if self.gw.state.tools.get(t).is_some() { t } else { "other" })
    }

    /// Counts this request in the metrics: `tool` must be a name the server listed (a call
    /// that passed the tool gate, or [`Call::listed`]), the principal by class.
    pub fn count(&self, method: &str, tool: Option<&str>, outcome: &str, took: Option<Duration>) {
        let label = RequestLabel {
            method: method.to_string(),
            tool: tool.unwrap_or_default().to_string(),
            principal_class: self.gw.authz.class_of(&self.principal),
            outcome: outcome.to_string(),
        };
        if self.span.enabled() {
            self.span.set("palisade.outcome", label.outcome.clone());
            if !label.tool.is_empty() {
                self.span.set("gen_ai.tool.name", label.tool.clone());
            }
            if label.outcome != "ok" {
                self.span.fail(&label.outcome);
            }
        }
        self.gw.observe.metrics.count(label, took);
    }

    pub fn event(&self, kind: Kind, detail: &str) {
        events::emit(&self.gw.observe, kind, &self.request_id(), &self.principal.subject, detail);
    }

    fn strict(&self) -> bool {
        self.cfg.protocol.validation == ValidationMode::Strict
    }

    /// An audit record of this call, to be completed and written.
    fn record<'a>(&'a self, request_id: &'a str, method: &'a str) -> CallRecord<'a> {
        CallRecord {
            request_id,
            principal: &self.principal.subject,
            session: self.session.as_ref().map(|s| short(&s.id)),
            revision: self.rev.as_str(),
            method,
            ..CallRecord::default()
        }
    }

    /// The connection this call goes to: its session's, or the gateway's shared one.
    async fn upstream(&self) -> Result<Arc<Connection>, crate::upstream::UpstreamError> {
        match &self.session {
            Some(s) => {
                // A session outlives the token it was opened with: the newest one is exchanged.
                if let Some(identity) = s.upstream.identity() {
                    identity.update(self.principal.token.as_ref());
                }
                Ok(s.upstream.clone())
            }
            None => self.gw.stateless_upstream(&self.principal).await,
        }
    }
}

/// Serves one request from a client.
pub async fn request(call: Arc<Call>, id: Value, method: String, params: Option<Value>) -> Reply {
    match stages::run(call, id, method, params).await {
        Ok(reply) | Err(reply) => reply,
    }
}

/// The server as the tool gate reaches it, through this call's connection.
struct CallServer<'a> {
    call: &'a Call,
}

impl ToolServer for CallServer<'_> {
    fn list_tools(&self) -> BoxFuture<'_, Result<Vec<Value>, String>> {
        Box::pin(async move {
            let upstream = self.call.upstream().await.map_err(|e| e.to_string())?;
            let timeout =
                Duration::from_secs(u64::from(self.call.cfg.limits.request_timeout_seconds));
            list_tools(&upstream, timeout).await.map_err(|e| e.to_string())
        })
    }

    fn call_tool(&self, params: Value) -> BoxFuture<'_, Option<Value>> {
        Box::pin(async move {
            let upstream = self.call.upstream().await.ok()?;
            let timeout =
                Duration::from_secs(u64::from(self.call.cfg.limits.request_timeout_seconds));
            let answer = upstream.call("tools/call", Some(params), timeout).await.ok()?;
            answer.get("result").cloned()
        })
    }

    fn stateless(&self) -> bool {
        self.call.rev.stateless()
            && self.call.session.is_none()
            && self.call.gw.server_info().stateless
    }
}
