//! The server's messages for one request, until its final one: notifications on the request's
//! stream are checked and mediated before they reach the client; the final message is
//! checked (`response.rs`); the deadline ends the request (and the server is told, or
//! recycled); the client leaving tells the server to stop.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tracing::debug;

use super::{Call, response};
use crate::controls::mediate::{self, Mediation};
use crate::observe::events::Kind;
use crate::observe::telemetry::StageSpan;
use crate::protocol::digest::digest;
use crate::protocol::jsonrpc::{self, UPSTREAM_UNAVAILABLE, is_final};
use crate::protocol::schema::{self, Direction, Method};
use crate::upstream::Exchange;

pub(super) enum Step {
    Message(Option<Value>),
    TimedOut,
}

/// What the relay needs to know about the request it relays.
pub(super) struct Relay {
    /// The call to the server, as a span: held, so that it ends when the relay drops it.
    pub _upstream_span: StageSpan,
    pub def: &'static Method,
    pub method: String,
    pub id: Value,
    pub translate: bool,
    /// The tool called, for `outputSchema` checks.
    pub tool: Option<String>,
    /// The resource or prompt the request is about, for the audit record.
    pub item: Option<String>,
    pub started: Instant,
    pub deadline: tokio::time::Instant,
    pub timeout: Duration,
    pub params_hash: Option<String>,
    /// The approval (ID, plan hash) this call redeemed.
    pub approval: Option<(String, String)>,
}

impl Relay {
    pub(super) fn done(&self, call: &Call, outcome: &str, answer: Option<(&Value, &Mediation)>) {
        let metrics = &call.gw.observe.metrics;
        metrics.in_flight.dec();
        call.count(&self.method, self.tool.as_deref(), outcome, Some(self.started.elapsed()));
        if !call.gw.observe.audit.enabled() {
            return;
        }
        let result_hash = answer.and_then(|(m, _)| m.get("result")).map(digest);
        let mut extra = json!({"outcome": outcome, "latency_ms": self.started.elapsed().as_secs_f64() * 1000.0});
        if let Some((_, med)) = answer {
            extra["redactions"] = med.redaction_counts();
            extra["truncated_bytes"] = json!(med.truncated_bytes);
        }
        if let Some((id, hash)) = &self.approval {
            extra["approval_id"] = json!(id);
            extra["plan_hash"] = json!(hash);
        }
        let request_id = call.request_id();
        let mut r = call.record(&request_id, &self.method);
        r.name = self.tool.as_deref().or(self.item.as_deref());
        r.params_sha256 = self.params_hash.as_deref();
        r.result_sha256 = result_hash.as_deref();
        r.decision = "allow";
        r.extra = Some(extra);
        r.write(&call.gw.observe.audit);
    }

    /// The final message, checked, with the client's id; and the outcome for metrics.
    pub(super) fn finish(&self, call: &Call, mut msg: Value) -> (Value, &'static str, Mediation) {
        msg["id"] = self.id.clone();
        let mut final_msg = response::checked_final(
            call,
            self.def,
            &self.method,
            msg,
            self.translate,
            self.tool.as_deref(),
        );
        let ok = final_msg.get("result").is_some();
        let med = match final_msg.get_mut("result") {
            Some(result) => mediate::result(&self.method, result, &call.cfg.limits),
            None => Mediation::default(),
        };
        if med.total_redactions() > 0 {
            debug!(method = %self.method, redactions = med.total_redactions(), "secrets redacted from a result");
        }
        (final_msg, if ok { "ok" } else { "error" }, med)
    }
}

/// Streams what the server sends for one request (progress, logs, subscription
/// notifications) until its final message, the deadline, or the client leaving.
pub(super) async fn relay(
    call: Arc<Call>,
    mut exchange: Exchange,
    r: Relay,
    first: Step,
    tx: mpsc::Sender<Value>,
    _global: OwnedSemaphorePermit,
    _local: Option<OwnedSemaphorePermit>,
) {
    let mut pending = Some(first);
    let outcome = loop {
        let next = match pending.take() {
            Some(step) => step,
            None => tokio::select! {
                m = exchange.next() => Step::Message(m),
                _ = tokio::time::sleep_until(r.deadline) => Step::TimedOut,
                _ = tx.closed() => {
                    exchange.cancel("the client disconnected").await;
                    break "cancelled";
                }
            },
        };
        let msg = match next {
            Step::TimedOut => {
                if exchange.timed_out().await
                    && let Some(s) = &call.session
                {
                    // The session's server process is gone: its connection here is closed (the
                    // client opens a new session, or, with a shared store, it is resumed).
                    let (gw, sid) = (call.gw.clone(), s.id.clone());
                    tokio::spawn(async move { gw.close_here(&sid).await });
                }
                let _ = tx
                    .send(jsonrpc::error(
                        Some(r.id.clone()),
                        UPSTREAM_UNAVAILABLE,
                        format!("The MCP server did not answer within {}s", r.timeout.as_secs()),
                        None,
                    ))
                    .await;
                break "timeout";
            }
            Step::Message(None) => {
                let _ = tx
                    .send(jsonrpc::error(
                        Some(r.id.clone()),
                        UPSTREAM_UNAVAILABLE,
                        "The MCP server closed the connection",
                        None,
                    ))
                    .await;
                break "upstream_closed";
            }
            Step::Message(Some(m)) => m,
        };
        if !is_final(&msg) {
            if let Some(m) = checked_notification(&call, msg, r.translate)
                && tx.send(m).await.is_err()
            {
                exchange.cancel("the client disconnected").await;
                break "cancelled";
            }
            continue;
        }
        let (final_msg, outcome, med) = r.finish(&call, msg);
        r.done(&call, outcome, Some((&final_msg, &med)));
        let _ = tx.send(final_msg).await;
        return;
    };
    r.done(&call, outcome, None);
}

/// A notification from the server on a request's stream, if it may reach the client.
fn checked_notification(call: &Call, msg: Value, translate: bool) -> Option<Value> {
    let parsed = match jsonrpc::Message::parse(&msg) {
        Ok(m @ jsonrpc::Message::Notification { .. }) => m,
        _ => {
            call.event(
                Kind::UpstreamValidationFailure,
                "the server sent a malformed message on a request stream",
            );
            return None;
        }
    };
    let method = parsed.method().unwrap_or_default().to_string();
    // Without a per-request log level the stateless client asked for no log messages, and a
    // translated session-era server cannot be told the level exactly.
    if translate && method == "notifications/message" {
        return None;
    }
    let Some(def) = schema::method(&method, Direction::ServerToClient, call.rev) else {
        call.event(
            Kind::UpstreamValidationFailure,
            &format!("the server sent {method}, which {} does not define", call.rev.as_str()),
        );
        return None;
    };
    let params = msg.get("params");
    if let Err(e) = schema::check_params(def, params, call.rev, call.strict()) {
        call.event(Kind::UpstreamValidationFailure, &format!("{method}: {e}"));
        return None;
    }
    let mut msg = msg;
    crate::controls::mediate::server_message(&mut msg);
    Some(msg)
}
