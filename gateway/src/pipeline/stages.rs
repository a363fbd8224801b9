//! The stages of a request, in order. Each returns what the next needs, or the reply that
//! ends the request (`Err`): validate -> authorize -> rate -> tool gate -> permits -> route.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tracing::debug;

use super::relay::{Relay, Step, relay};
use super::{Call, CallServer, Reply, response};
use crate::controls::authz::ItemKind;
use crate::controls::quota::{self, QuotaError};
use crate::controls::toolgate::state_unavailable;
use crate::controls::toolgate::{self, Gate};
use crate::observe::events::Kind;
use crate::observe::telemetry::StageSpan;
use crate::protocol::digest::digest;
use crate::protocol::jsonrpc::{
    self, INVALID_PARAMS, LIMIT_EXCEEDED, METHOD_NOT_FOUND, UPSTREAM_UNAVAILABLE, is_final,
};
use crate::protocol::revision::{R2025_06, Rev};
use crate::protocol::schema::{self, Direction, Method};
use crate::protocol::translate;
use crate::state::Plan;

type Stage<T> = Result<T, Reply>;

fn err(id: &Value, code: i64, message: impl Into<String>) -> Reply {
    Reply::Final(jsonrpc::error(Some(id.clone()), code, message, None))
}

/// The request, as the stages pass it on.
struct Request {
    id: Value,
    method: String,
    params: Option<Value>,
    /// The tool, resource or prompt the request is about.
    item: Option<String>,
    params_hash: Option<String>,
}

pub(super) async fn run(
    call: Arc<Call>,
    id: Value,
    method: String,
    params: Option<Value>,
) -> Stage<Reply> {
    let mut req = Request { id, method, params, item: None, params_hash: None };
    // Each stage is a child span of the request's (ended when it returns). A refusal before
    // the tool gate is audited here; the tool gate and the route write their own records.
    let def = staged(call.span.stage("validate"), validate(&call, &mut req))
        .map_err(|r| denied(&call, &req, r))?;
    staged(call.span.stage("authorize"), authorize(&call, &mut req))
        .map_err(|r| denied(&call, &req, r))?;
    staged(call.span.stage("rate"), rate(&call, &req).await).map_err(|r| denied(&call, &req, r))?;
    req.params_hash = req.params.as_ref().filter(|_| call.gw.observe.audit.enabled()).map(digest);
    let approval = if req.method == "tools/call" {
        staged(call.span.stage("tool_gate"), tool_gate(&call, &mut req).await)?
    } else {
        None
    };
    let permits = staged(call.span.stage("permits"), permits(&call, &req.id))
        .map_err(|r| denied(&call, &req, r))?;
    route(call, req, def, approval, permits).await
}

/// Writes the audit record of a request a stage refused, with the refusal's message as the
/// reason; returns the refusal.
fn denied(call: &Call, req: &Request, reply: Reply) -> Reply {
    let reason = match &reply {
        Reply::Final(v) => v.pointer("/error/message").and_then(Value::as_str).unwrap_or_default(),
        Reply::Stream(_) => "",
    };
    let request_id = call.request_id();
    let mut r = call.record(&request_id, &req.method);
    r.name = req.item.as_deref();
    r.params_sha256 = req.params_hash.as_deref();
    r.decision = "deny";
    r.reason = reason;
    r.write(&call.gw.observe.audit);
    reply
}

/// A stage's result, its span marked when the stage refused.
fn staged<T>(mut span: StageSpan, r: Stage<T>) -> Stage<T> {
    if r.is_err() {
        span.fail("refused");
    }
    r
}

/// Drops top-level members a revision does not define (lenient mode).
fn strip_unknown(params: &mut Value, m: &Method, rev: Rev) {
    if let Some(obj) = params.as_object_mut() {
        obj.retain(|k, _| {
            m.params.fields.iter().any(|f| f.name == k && f.since <= rev && rev <= f.until)
        });
    }
}

/// The method exists in the client's revision and its params are what it defines.
fn validate(call: &Call, req: &mut Request) -> Stage<&'static Method> {
    let (rev, method) = (call.rev, req.method.as_str());
    let Some(def) = schema::method(method, Direction::ClientToServer, rev) else {
        // Not the client's string: label values stay bounded.
        call.count("unknown", None, "unknown_method", None);
        call.event(Kind::ValidationFailure, &format!("{method}: not a method of {}", rev.as_str()));
        return Err(err(&req.id, METHOD_NOT_FOUND, format!("Method not found: {method}")));
    };
    // Tasks are negotiated away (`translate::without_tasks`): a receiver without task support
    // ignores the augmentation and answers directly.
    if let Some(p) = req.params.as_mut().and_then(Value::as_object_mut)
        && p.remove("task").is_some()
    {
        debug!(method, "task augmentation dropped");
    }
    if let Err(e) = schema::check_params(def, req.params.as_ref(), rev, call.strict()) {
        if !call.strict() && e.unknown_fields_only {
            if let Some(p) = req.params.as_mut() {
                strip_unknown(p, def, rev);
            }
            call.event(Kind::ValidationFailure, &format!("{method}: unknown fields dropped: {e}"));
        } else {
            call.event(Kind::ValidationFailure, &format!("{method}: {e}"));
            call.count(def.name, None, "invalid", None);
            if call.strict()
                && let Some(s) = &call.session
            {
                // Fail closed: a client that sends malformed messages loses its session.
                let gw = call.gw.clone();
                let sid = s.id.clone();
                tokio::spawn(async move { gw.end_session(&sid).await });
            }
            return Err(err(&req.id, INVALID_PARAMS, format!("Invalid params: {e}")));
        }
    }
    Ok(def)
}

/// The item a request is about, for authorization that answers "no such item".
fn item_of(method: &str, params: Option<&Value>) -> Option<(ItemKind, String)> {
    let p = params?;
    match method {
        "tools/call" => Some((ItemKind::Tool, p.get("name")?.as_str()?.to_string())),
        "prompts/get" => Some((ItemKind::Prompt, p.get("name")?.as_str()?.to_string())),
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
            Some((ItemKind::Resource, p.get("uri")?.as_str()?.to_string()))
        }
        _ => None,
    }
}

fn not_found(id: &Value, kind: ItemKind, name: &str) -> Reply {
    // Exactly what servers answer for an item they do not have.
    match kind {
        ItemKind::Tool => err(id, INVALID_PARAMS, format!("Unknown tool: {name}")),
        ItemKind::Prompt => err(id, INVALID_PARAMS, format!("Unknown prompt: {name}")),
        ItemKind::Resource => Reply::Final(jsonrpc::error(
            Some(id.clone()),
            -32002,
            "Resource not found",
            Some(json!({"uri": name})),
        )),
    }
}

/// A role of the principal grants the method and the item; otherwise they do not exist.
fn authorize(call: &Call, req: &mut Request) -> Stage<()> {
    let method = req.method.as_str();
    if !call.gw.authz.method_allowed(&call.principal, method) {
        call.event(Kind::PolicyBlock, &format!("method {method} not granted"));
        call.count(method, None, "denied", None);
        return Err(err(&req.id, METHOD_NOT_FOUND, format!("Method not found: {method}")));
    }
    let item = item_of(method, req.params.as_ref());
    req.item = item.as_ref().map(|(_, n)| n.clone());
    if let Some((kind, name)) = item
        && !call.gw.authz.item_allowed(&call.principal, kind, &name)
    {
        call.event(Kind::PolicyBlock, &format!("{method} {name} not granted"));
        let tool = call.listed((kind == ItemKind::Tool).then_some(name.as_str()));
        call.count(method, tool, "denied", None);
        return Err(not_found(&req.id, kind, &name));
    }
    Ok(())
}

/// Requests per minute per principal.
async fn rate(call: &Call, req: &Request) -> Stage<()> {
    match quota::request(&call.gw.state, &call.cfg, &call.principal.subject).await {
        Ok(()) => Ok(()),
        Err(QuotaError::Exceeded(e)) => {
            call.event(Kind::RateLimit, &format!("{}: requests per minute exceeded", req.method));
            Err(Reply::Final(jsonrpc::error(
                Some(req.id.clone()),
                LIMIT_EXCEEDED,
                format!("Rate limit reached; retry after {} s", e.retry_after_seconds),
                Some(json!({"retryAfterSeconds": e.retry_after_seconds})),
            )))
        }
        Err(QuotaError::Unavailable) => Err(Reply::Final(state_unavailable(&req.id))),
    }
}

/// A tool call passes the tool gate (controls/toolgate.rs); its answer may be a plan.
async fn tool_gate(call: &Call, req: &mut Request) -> Stage<Option<Plan>> {
    if req.method != "tools/call" {
        return Ok(None);
    }
    let Some(p) = req.params.as_mut() else { return Ok(None) };
    let request_id = call.request_id();
    let server = CallServer { call };
    let gate = Gate {
        cfg: &call.cfg,
        principal: &call.principal,
        request_id: &request_id,
        rev: call.rev,
        session: call.session.as_ref().map(|s| s.id.as_str()),
        state: &call.gw.state,
        resolver: call.gw.resolver.as_ref(),
        observe: &call.gw.observe,
        server: &server,
    };
    let record = |decision: &'static str, reason: &str| {
        let mut r = call.record(&request_id, &req.method);
        r.name = req.item.as_deref();
        r.params_sha256 = req.params_hash.as_deref();
        r.decision = decision;
        r.reason = reason;
        r.write(&call.gw.observe.audit);
    };
    match toolgate::check(&gate, &req.id, p).await {
        Ok(Ok(passed)) => Ok(passed.approval),
        Ok(Err(plan)) => {
            record("plan", "approval required");
            Err(Reply::Final(plan))
        }
        Err(r) => {
            call.event(r.kind, &r.reason);
            let tool = call
                .listed(req.params.as_ref().and_then(|p| p.get("name")).and_then(Value::as_str));
            call.count(&req.method, tool, "denied", None);
            record("deny", &r.reason);
            Err(Reply::Final(r.response))
        }
    }
}

/// In-flight slots: in total and per session.
fn permits(call: &Call, id: &Value) -> Stage<(OwnedSemaphorePermit, Option<OwnedSemaphorePermit>)> {
    let busy = |message: &str| {
        Reply::Final(jsonrpc::error(
            Some(id.clone()),
            LIMIT_EXCEEDED,
            message,
            Some(json!({"retryAfterSeconds": 1})),
        ))
    };
    let Ok(global) = call.gw.in_flight.clone().try_acquire_owned() else {
        call.event(Kind::RateLimit, "too many requests in flight");
        return Err(busy("Too many requests in flight"));
    };
    let local = match &call.session {
        Some(s) => match s.in_flight.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) => {
                call.event(Kind::RateLimit, "too many requests in flight in this session");
                return Err(busy("Too many requests in flight in this session"));
            }
        },
        None => None,
    };
    Ok((global, local))
}

/// To the server (translated between eras where needed, with the trace context), and back.
async fn route(
    call: Arc<Call>,
    mut req: Request,
    def: &'static Method,
    approval: Option<Plan>,
    (global, local): (OwnedSemaphorePermit, Option<OwnedSemaphorePermit>),
) -> Stage<Reply> {
    let (rev, id) = (call.rev, req.id.clone());
    let upstream = call.upstream().await.map_err(|e| {
        debug!(error = %e, "server unreachable");
        err(&id, UPSTREAM_UNAVAILABLE, "The MCP server is unavailable")
    })?;
    let translate = rev.stateless() && !upstream.rev.stateless();
    if translate {
        if req.method == "server/discover" {
            return Ok(Reply::Final(response::discover_from_handshake(&call, &id)));
        }
        if schema::method(&req.method, Direction::ClientToServer, upstream.rev).is_none() {
            let request_id = call.request_id();
            let mut r = call.record(&request_id, &req.method);
            r.name = req.item.as_deref();
            r.params_sha256 = req.params_hash.as_deref();
            r.decision = "deny";
            r.reason = "no exact equivalent in the server's revision";
            r.write(&call.gw.observe.audit);
            return Err(err(
                &id,
                METHOD_NOT_FOUND,
                format!(
                    "{} has no exact equivalent in {}, the revision the server speaks",
                    req.method,
                    upstream.rev.as_str()
                ),
            ));
        }
        translate::strip_envelope(&mut req.params);
    }
    // W3C trace context travels in _meta (an extension point) to the server: the upstream
    // span's, when spans are exported.
    let upstream_span = call.span.upstream();
    let traceparent = upstream_span.traceparent().unwrap_or_else(|| call.trace.child().header());
    if let Some(p) = req.params.as_mut().and_then(Value::as_object_mut) {
        let meta = p.entry("_meta").or_insert_with(|| json!({}));
        if let Some(m) = meta.as_object_mut() {
            m.entry("traceparent").or_insert_with(|| Value::String(traceparent));
        }
    } else if !translate && rev >= R2025_06 {
        req.params = Some(json!({"_meta": {"traceparent": traceparent}}));
    }

    let mut exchange =
        upstream.request(id.clone(), &req.method, req.params).await.map_err(|e| {
            debug!(error = %e, "forwarding failed");
            err(&id, UPSTREAM_UNAVAILABLE, "The MCP server is unavailable")
        })?;
    let timeout = Duration::from_secs(call.cfg.limits.request_timeout_seconds as u64);
    // A subscription stream lives until either side ends it; it holds its in-flight slot.
    let timeout = if req.method == "subscriptions/listen" {
        Duration::from_secs(365 * 86_400)
    } else {
        timeout
    };
    let r = Relay {
        _upstream_span: upstream_span,
        def,
        tool: (req.method == "tools/call").then(|| req.item.clone()).flatten(),
        method: req.method,
        id,
        translate,
        item: req.item,
        started: Instant::now(),
        deadline: tokio::time::Instant::now() + timeout,
        timeout,
        params_hash: req.params_hash,
        approval: approval.map(|p| (p.id, p.hash)),
    };
    call.gw.observe.metrics.in_flight.inc();
    // Most answers are a single message: reply without a relay task. If the client goes away
    // meanwhile, dropping the exchange tells the server to stop.
    let first = tokio::select! {
        m = exchange.next() => Step::Message(m),
        _ = tokio::time::sleep_until(r.deadline) => Step::TimedOut,
    };
    Ok(match first {
        Step::Message(Some(m)) if is_final(&m) => {
            let (reply, outcome, med) = r.finish(&call, m);
            r.done(&call, outcome, Some((&reply, &med)));
            Reply::Final(reply)
        }
        first => {
            let (tx, rx) = mpsc::channel(64);
            tokio::spawn(relay(call, exchange, r, first, tx, global, local));
            Reply::Stream(rx)
        }
    })
}
