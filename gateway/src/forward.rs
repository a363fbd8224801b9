//! One client request, from validation to the server and back: method and params checked
//! against the revision, authorization, limits, forwarding (with exact translation between
//! eras where needed), and every message from the server validated before the client sees it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use palisade_core::config::GatewayConfig;
use palisade_core::policy::ValidationMode;
use serde_json::{Value, json};
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tracing::debug;

use crate::events::{self, Kind};
use crate::jsonrpc::{
    self, INVALID_PARAMS, LIMIT_EXCEEDED, METHOD_NOT_FOUND, UPSTREAM_INVALID, UPSTREAM_UNAVAILABLE,
};
use crate::mediate::Mediation;
use crate::policy::{ItemKind, Principal};
use crate::state::{DownSession, Gateway};
use crate::trace::TraceContext;
use crate::upstream::Session;
use crate::validate::{self, Direction, Method, Rev};

/// Everything known about the request being served.
pub struct Call {
    pub gw: Arc<Gateway>,
    pub cfg: Arc<GatewayConfig>,
    pub rev: Rev,
    pub principal: Principal,
    pub trace: TraceContext,
    pub session: Option<Arc<DownSession>>,
}

/// The answer to a request: a final message now, or a stream of messages ending with it.
pub enum Reply {
    Final(Value),
    Stream(mpsc::Receiver<Value>),
}

impl Call {
    pub fn request_id(&self) -> String {
        self.trace.request_id()
    }

    fn event(&self, kind: Kind, detail: &str) {
        events::emit(&self.gw, kind, &self.request_id(), &self.principal.subject, detail);
    }

    /// A security event about this call (for the stages outside this module).
    pub fn event_for(&self, kind: Kind, detail: &str) {
        self.event(kind, detail);
    }

    fn strict(&self) -> bool {
        self.cfg.protocol.validation == ValidationMode::Strict
    }
}

/// Keys of `_meta` that belong to the stateless envelope and mean nothing to a session-era server.
const ENVELOPE_KEYS: &[&str] = &[
    "io.modelcontextprotocol/protocolVersion",
    "io.modelcontextprotocol/clientCapabilities",
    "io.modelcontextprotocol/clientInfo",
    "io.modelcontextprotocol/logLevel",
];

/// Results of these methods are cacheable in the stateless era and carry ttlMs/cacheScope.
const CACHEABLE: &[&str] = &[
    "tools/list",
    "resources/list",
    "resources/templates/list",
    "prompts/list",
    "resources/read",
    "server/discover",
];

fn err(id: &Value, code: i64, message: impl Into<String>) -> Reply {
    Reply::Final(jsonrpc::error(Some(id.clone()), code, message, None))
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

/// Removes task support (2025-11-25) from the capabilities in `initialize` params or result.
/// A task-augmented request is answered later through `tasks/result`, which would carry a tool
/// result past result policy; without the capability on either side, peers run every request
/// synchronously, as the revision prescribes for receivers without task support.
pub fn without_tasks(init: &mut Value) {
    if let Some(caps) = init.get_mut("capabilities").and_then(Value::as_object_mut) {
        caps.remove("tasks");
    }
}

/// Drops top-level members a revision does not define (lenient mode).
fn strip_unknown(params: &mut Value, m: &Method, rev: Rev) {
    if let Some(obj) = params.as_object_mut() {
        obj.retain(|k, _| {
            m.params.fields.iter().any(|f| f.name == k && f.since <= rev && rev <= f.until)
        });
    }
}

/// Serves one request from a client.
pub async fn request(
    call: Arc<Call>,
    id: Value,
    method: String,
    mut params: Option<Value>,
) -> Reply {
    let rev = call.rev;
    let Some(def) = validate::method(&method, Direction::ClientToServer, rev) else {
        call.gw.metrics.count(&method, "unknown_method");
        call.event(Kind::ValidationFailure, &format!("{method}: not a method of {}", rev.as_str()));
        return err(&id, METHOD_NOT_FOUND, format!("Method not found: {method}"));
    };
    // Tasks are negotiated away (see `without_tasks`): a receiver without task support
    // ignores the augmentation and answers directly.
    if let Some(p) = params.as_mut().and_then(Value::as_object_mut)
        && p.remove("task").is_some()
    {
        debug!(method, "task augmentation dropped");
    }
    if let Err(e) = validate::check_params(def, params.as_ref(), rev, call.strict()) {
        if !call.strict() && e.unknown_fields_only {
            if let Some(p) = params.as_mut() {
                strip_unknown(p, def, rev);
            }
            call.event(Kind::ValidationFailure, &format!("{method}: unknown fields dropped: {e}"));
        } else {
            call.event(Kind::ValidationFailure, &format!("{method}: {e}"));
            call.gw.metrics.count(&method, "invalid");
            if call.strict()
                && let Some(s) = &call.session
            {
                // Fail closed: a client that sends malformed messages loses its session.
                let gw = call.gw.clone();
                let sid = s.id.clone();
                tokio::spawn(async move { gw.end_session(&sid).await });
            }
            return err(&id, INVALID_PARAMS, format!("Invalid params: {e}"));
        }
    }
    if !call.gw.policy.method_allowed(&call.principal, &method) {
        call.event(Kind::PolicyBlock, &format!("method {method} not granted"));
        call.gw.metrics.count(&method, "denied");
        return err(&id, METHOD_NOT_FOUND, format!("Method not found: {method}"));
    }
    let item = item_of(&method, params.as_ref());
    let item_name = item.as_ref().map(|(_, n)| n.clone());
    if let Some((kind, name)) = item
        && !call.gw.policy.item_allowed(&call.principal, kind, &name)
    {
        call.event(Kind::PolicyBlock, &format!("{method} {name} not granted"));
        call.gw.metrics.count(&method, "denied");
        return not_found(&id, kind, &name);
    }
    if let Err(e) = call.gw.quotas.take(
        &call.principal.subject,
        "requests per minute",
        u64::from(call.cfg.limits.requests_per_minute),
        Duration::from_secs(60),
    ) {
        call.event(Kind::RateLimit, &format!("{method}: requests per minute exceeded"));
        return Reply::Final(jsonrpc::error(
            Some(id),
            LIMIT_EXCEEDED,
            format!("Rate limit reached; retry after {} s", e.retry_after_seconds),
            Some(json!({"retryAfterSeconds": e.retry_after_seconds})),
        ));
    }
    let params_hash = params.as_ref().filter(|_| call.gw.audit.enabled()).map(crate::audit::digest);
    let mut approval = None;
    if method == "tools/call"
        && let Some(p) = params.as_mut()
    {
        match crate::toolgate::check(&call, &id, p).await {
            Ok(Ok(passed)) => approval = passed.approval,
            Ok(Err(plan)) => {
                audit_call(
                    &call,
                    &method,
                    item_name.as_deref(),
                    params_hash.as_deref(),
                    "plan",
                    "approval required",
                    None,
                    None,
                );
                return Reply::Final(plan);
            }
            Err(r) => {
                call.event(r.kind, &r.reason);
                call.gw.metrics.count(&method, "denied");
                audit_call(
                    &call,
                    &method,
                    item_name.as_deref(),
                    params_hash.as_deref(),
                    "deny",
                    &r.reason,
                    None,
                    None,
                );
                return Reply::Final(r.response);
            }
        }
    }

    // Limits: in flight in total and per session.
    let Ok(global) = call.gw.in_flight.clone().try_acquire_owned() else {
        call.event(Kind::RateLimit, "too many requests in flight");
        return Reply::Final(jsonrpc::error(
            Some(id),
            LIMIT_EXCEEDED,
            "Too many requests in flight",
            Some(json!({"retryAfterSeconds": 1})),
        ));
    };
    let local = match &call.session {
        Some(s) => match s.in_flight.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) => {
                call.event(Kind::RateLimit, "too many requests in flight in this session");
                return Reply::Final(jsonrpc::error(
                    Some(id),
                    LIMIT_EXCEEDED,
                    "Too many requests in flight in this session",
                    Some(json!({"retryAfterSeconds": 1})),
                ));
            }
        },
        None => None,
    };

    // Which connection, and whether the request must be translated between eras.
    let upstream: Arc<Session> = match &call.session {
        Some(s) => s.upstream.clone(),
        None => match call.gw.shared_upstream().await {
            Ok(u) => u,
            Err(e) => {
                debug!(error = %e, "server unreachable");
                return err(&id, UPSTREAM_UNAVAILABLE, "The MCP server is unavailable");
            }
        },
    };
    let translate = rev.stateless() && !upstream.rev.stateless();
    if translate {
        if method == "server/discover" {
            return Reply::Final(discover_from_handshake(&call, &id));
        }
        if validate::method(&method, Direction::ClientToServer, upstream.rev).is_none() {
            audit_call(
                &call,
                &method,
                item_name.as_deref(),
                params_hash.as_deref(),
                "deny",
                "no exact equivalent in the server's revision",
                None,
                None,
            );
            return err(
                &id,
                METHOD_NOT_FOUND,
                format!(
                    "{method} has no exact equivalent in {}, the revision the server speaks",
                    upstream.rev.as_str()
                ),
            );
        }
        if let Some(meta) =
            params.as_mut().and_then(|p| p.get_mut("_meta")).and_then(Value::as_object_mut)
        {
            meta.retain(|k, _| !ENVELOPE_KEYS.contains(&k.as_str()));
        }
    }
    // W3C trace context travels in _meta (an extension point) to the server.
    if let Some(p) = params.as_mut().and_then(Value::as_object_mut) {
        let meta = p.entry("_meta").or_insert_with(|| json!({}));
        if let Some(m) = meta.as_object_mut() {
            m.entry("traceparent").or_insert_with(|| Value::String(call.trace.child().header()));
        }
    } else if !translate && rev >= validate::R2025_06 {
        params = Some(json!({"_meta": {"traceparent": call.trace.child().header()}}));
    }

    let mut exchange = match upstream.request(id.clone(), &method, params).await {
        Ok(x) => x,
        Err(e) => {
            debug!(error = %e, "forwarding failed");
            return err(&id, UPSTREAM_UNAVAILABLE, "The MCP server is unavailable");
        }
    };
    let started = Instant::now();
    let tool = (method == "tools/call").then(|| item_name.clone()).flatten();
    let timeout = Duration::from_secs(call.cfg.limits.request_timeout_seconds as u64);
    // A subscription stream lives until either side ends it; it holds its in-flight slot.
    let timeout =
        if method == "subscriptions/listen" { Duration::from_secs(365 * 86_400) } else { timeout };
    let deadline = tokio::time::Instant::now() + timeout;
    let approval = approval.map(|p| (p.id, p.hash));
    let item = item_name.clone();
    let r = Relay {
        def,
        method,
        id,
        translate,
        tool,
        item,
        started,
        deadline,
        timeout,
        params_hash,
        approval,
    };
    call.gw.metrics.in_flight.inc();
    // Most answers are a single message: reply without a relay task. If the client goes away
    // meanwhile, dropping the exchange tells the server to stop.
    let first = tokio::select! {
        m = exchange.next() => Step::Message(m),
        _ = tokio::time::sleep_until(deadline) => Step::TimedOut,
    };
    match first {
        Step::Message(Some(m)) if is_final(&m) => {
            let (reply, outcome, med) = finish(&call, &r, m);
            r.done(&call, outcome, Some((&reply, &med)));
            Reply::Final(reply)
        }
        first => {
            let (tx, rx) = mpsc::channel(64);
            tokio::spawn(relay(call, exchange, r, first, tx, global, local));
            Reply::Stream(rx)
        }
    }
}

fn is_final(m: &Value) -> bool {
    m.get("result").is_some() || m.get("error").is_some()
}

enum Step {
    Message(Option<Value>),
    TimedOut,
}

/// What the relay needs to know about the request it relays.
struct Relay {
    def: &'static Method,
    method: String,
    id: Value,
    translate: bool,
    /// The tool called, for `outputSchema` checks.
    tool: Option<String>,
    /// The resource or prompt the request is about, for the audit record.
    item: Option<String>,
    started: Instant,
    deadline: tokio::time::Instant,
    timeout: Duration,
    params_hash: Option<String>,
    /// The approval (ID, plan hash) this call redeemed.
    approval: Option<(String, String)>,
}

impl Relay {
    fn done(&self, call: &Call, outcome: &str, answer: Option<(&Value, &Mediation)>) {
        call.gw.metrics.in_flight.dec();
        call.gw.metrics.count(&self.method, outcome);
        call.gw.metrics.duration.observe(self.started.elapsed().as_secs_f64());
        if !call.gw.audit.enabled() {
            return;
        }
        let result_hash = answer.and_then(|(m, _)| m.get("result")).map(crate::audit::digest);
        let mut extra = json!({"outcome": outcome, "latency_ms": self.started.elapsed().as_secs_f64() * 1000.0});
        if let Some((_, med)) = answer {
            extra["redactions"] = med.redaction_counts();
            extra["truncated_bytes"] = json!(med.truncated_bytes);
        }
        if let Some((id, hash)) = &self.approval {
            extra["approval_id"] = json!(id);
            extra["plan_hash"] = json!(hash);
        }
        audit_call(
            call,
            &self.method,
            self.tool.as_deref().or(self.item.as_deref()),
            self.params_hash.as_deref(),
            "allow",
            "",
            result_hash.as_deref(),
            Some(extra),
        );
    }
}

/// The final message, checked, with the client's id; and the outcome for metrics.
fn finish(call: &Call, r: &Relay, mut msg: Value) -> (Value, &'static str, Mediation) {
    msg["id"] = r.id.clone();
    let mut final_msg = checked_final(call, r.def, &r.method, msg, r.translate, r.tool.as_deref());
    let ok = final_msg.get("result").is_some();
    let med = match final_msg.get_mut("result") {
        Some(result) => crate::mediate::result(&r.method, result, &call.cfg.limits),
        None => Mediation::default(),
    };
    if med.total_redactions() > 0 {
        debug!(method = %r.method, redactions = med.total_redactions(), "secrets redacted from a result");
    }
    (final_msg, if ok { "ok" } else { "error" }, med)
}

/// One audit record per call (allowed, refused, or answered with a plan).
#[allow(clippy::too_many_arguments)]
pub fn audit_call(
    call: &Call,
    method: &str,
    name: Option<&str>,
    params_hash: Option<&str>,
    decision: &str,
    reason: &str,
    result_hash: Option<&str>,
    extra: Option<Value>,
) {
    let mut rec = json!({
        "request_id": call.request_id(),
        "principal": call.principal.subject,
        "session": call.session.as_ref().map(|s| crate::state::short(&s.id)),
        "revision": call.rev.as_str(),
        "method": method,
        "name": name,
        "params_sha256": params_hash,
        "result_sha256": result_hash,
        "decision": decision,
        "reason": reason,
    });
    if let (Some(Value::Object(e)), Some(r)) = (extra, rec.as_object_mut()) {
        r.extend(e);
    }
    call.gw.audit.record("call", rec);
}

/// Streams what the server sends for one request (progress, logs, subscription
/// notifications) until its final message, the deadline, or the client leaving.
async fn relay(
    call: Arc<Call>,
    mut exchange: crate::upstream::Exchange,
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
                    // The session's server process is gone: the client opens a new session.
                    let (gw, sid) = (call.gw.clone(), s.id.clone());
                    tokio::spawn(async move { gw.end_session(&sid).await });
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
        let (final_msg, outcome, med) = finish(&call, &r, msg);
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
    let Some(def) = validate::method(&method, Direction::ServerToClient, call.rev) else {
        call.event(
            Kind::UpstreamValidationFailure,
            &format!("the server sent {method}, which {} does not define", call.rev.as_str()),
        );
        return None;
    };
    let params = msg.get("params");
    if let Err(e) = validate::check_params(def, params, call.rev, call.strict()) {
        call.event(Kind::UpstreamValidationFailure, &format!("{method}: {e}"));
        return None;
    }
    let mut msg = msg;
    crate::mediate::server_message(&mut msg);
    Some(msg)
}

/// Completes a session-era result for a stateless client: the stateless revision requires
/// `resultType`, and caching fields on cacheable results (no caching is the exact meaning).
fn translate_result(method: &str, result: &mut Value) {
    if let Some(r) = result.as_object_mut() {
        r.entry("resultType").or_insert_with(|| json!("complete"));
        if CACHEABLE.contains(&method) {
            r.entry("ttlMs").or_insert_with(|| json!(0));
            r.entry("cacheScope").or_insert_with(|| json!("private"));
        }
    }
}

/// The final response from the server, validated and filtered for this principal.
fn checked_final(
    call: &Call,
    def: &Method,
    method: &str,
    mut msg: Value,
    translate: bool,
    tool: Option<&str>,
) -> Value {
    let id = msg.get("id").cloned();
    if let Err(e) = jsonrpc::Message::parse(&msg) {
        call.event(
            Kind::UpstreamValidationFailure,
            &format!("{method}: malformed response: {}", e.message),
        );
        return jsonrpc::error(
            id,
            UPSTREAM_INVALID,
            "The MCP server sent an invalid response",
            None,
        );
    }
    let Some(result) = msg.get_mut("result") else {
        return sanitize_error(msg);
    };
    if translate {
        translate_result(method, result);
    }
    if let Err(e) = validate::check_result(def, result, call.rev, call.strict())
        && (call.strict() || !e.unknown_fields_only)
    {
        call.event(Kind::UpstreamValidationFailure, &format!("{method}: {e}"));
        return jsonrpc::error(
            id,
            UPSTREAM_INVALID,
            "The MCP server sent an invalid response",
            None,
        );
    }
    filter_result(call, method, result);
    // Descriptions, titles and instructions are server-authored text the model reads.
    crate::mediate::listing(result);
    if method == "server/discover" {
        pin_discovered_versions(call, result);
    }
    if let Some(problem) = tool.and_then(|t| output_schema_violation(call, t, &msg)) {
        call.event(
            Kind::UpstreamValidationFailure,
            &format!("tools/call: structuredContent violates the tool's outputSchema: {problem}"),
        );
        return jsonrpc::error(
            id,
            UPSTREAM_INVALID,
            "The tool's result does not match its declared output schema",
            None,
        );
    }
    msg
}

/// The client may only choose revisions the gateway is pinned to (and the server speaks).
fn pin_discovered_versions(call: &Call, result: &mut Value) {
    let pinned = call.gw.supported_on(true);
    let server: Vec<&str> = result
        .get("supportedVersions")
        .and_then(Value::as_array)
        .map(|v| v.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let both: Vec<&str> = pinned.iter().copied().filter(|v| server.contains(v)).collect();
    result["supportedVersions"] = json!(if both.is_empty() { pinned } else { both });
}

/// Lists show only what the principal may use.
fn filter_result(call: &Call, method: &str, result: &mut Value) {
    let (key, kind, name_key) = match method {
        "tools/list" => ("tools", ItemKind::Tool, "name"),
        "prompts/list" => ("prompts", ItemKind::Prompt, "name"),
        "resources/list" => ("resources", ItemKind::Resource, "uri"),
        "resources/templates/list" => ("resourceTemplates", ItemKind::Resource, "uriTemplate"),
        _ => return,
    };
    if let Some(items) = result.get_mut(key).and_then(Value::as_array_mut) {
        if method == "tools/list" {
            call.gw.tools.learn(items);
        }
        items.retain(|item| {
            let name = item.get(name_key).and_then(Value::as_str).unwrap_or_default();
            call.gw.policy.item_allowed(&call.principal, kind, name)
                && (kind != ItemKind::Tool || crate::toolgate::visible(&call.cfg, name))
        });
    }
}

fn output_schema_violation(call: &Call, tool: &str, msg: &Value) -> Option<String> {
    let structured = msg.pointer("/result/structuredContent")?;
    let tool = call.gw.tools.get(tool)?;
    tool.output_validator()?.iter_errors(structured).next().map(|e| e.to_string())
}

/// Errors from the server reach the client without internal detail or credentials: no stack
/// traces, absolute paths, internal addresses or keys, in the message or the data.
fn sanitize_error(mut msg: Value) -> Value {
    crate::mediate::error(&mut msg);
    msg
}

/// `server/discover` answered from the handshake, for a server that speaks only the session era.
fn discover_from_handshake(call: &Call, id: &Value) -> Value {
    let info = call.gw.server_info();
    let versions = call.gw.supported_on(true);
    let mut result = json!({
        "resultType": "complete",
        "supportedVersions": versions,
        "capabilities": info.capabilities.unwrap_or(json!({})),
        "ttlMs": 0,
        "cacheScope": "private",
    });
    if let Some(i) = info.instructions {
        result["instructions"] = Value::String(i);
    }
    if let Some(s) = info.server_info {
        result["_meta"] = json!({"io.modelcontextprotocol/serverInfo": s});
    }
    crate::mediate::listing(&mut result);
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}
