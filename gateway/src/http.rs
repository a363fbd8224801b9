//! The client-facing HTTP transports: Streamable HTTP for both eras (POST, GET, DELETE on the
//! MCP path) and the legacy HTTP+SSE transport (`/sse` and `/messages`) for 2024-11-05 clients.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Extension, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc};
use tracing::{Instrument, info, info_span};

use crate::events::{self, Kind};
use crate::forward::{self, Call, Reply};
use crate::jsonrpc::{
    self, HEADER_MISMATCH, INVALID_PARAMS, INVALID_REQUEST, Message, PARSE_ERROR,
    UNSUPPORTED_PROTOCOL_VERSION,
};
use crate::policy::Principal;
use crate::sse;
use crate::state::{DownSession, Gateway, new_session_id, short};
use crate::trace::TraceContext;
use crate::validate::{self, Direction, R2025_03, Rev};

/// Pending legacy SSE connections waiting for their `initialize`.
#[derive(Default)]
pub struct SseWaiting(Mutex<HashMap<String, mpsc::Sender<(u64, String)>>>);

#[derive(Clone)]
struct App {
    gw: Arc<Gateway>,
    waiting: Arc<SseWaiting>,
}

pub fn router(gw: Arc<Gateway>) -> Router {
    let path = gw.config().listen.path.clone();
    let app = App { gw, waiting: Arc::new(SseWaiting::default()) };
    let metadata = axum::Router::new()
        .route(crate::auth::PRM_PATH, get(protected_resource))
        .route(&format!("{}{path}", crate::auth::PRM_PATH), get(protected_resource))
        .with_state(app.gw.clone());
    Router::new()
        .route(&path, post(post_mcp).get(get_mcp).delete(delete_mcp))
        .route("/sse", get(get_sse))
        .route("/messages", post(post_messages))
        .route("/approvals/{id}", get(get_approval).post(decide_approval))
        // Inside authentication: every refusal of an authenticated request is audited.
        .route_layer(axum::middleware::from_fn_with_state(app.clone(), audit_refusals))
        .route_layer(axum::middleware::from_fn_with_state(app.clone(), authn))
        .with_state(app)
        .merge(metadata)
}

/// Authenticates every request to the MCP and approval endpoints; the principal travels in
/// the request's extensions. Nothing past this runs for an unauthenticated request.
async fn authn(
    State(app): State<App>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let cfg = app.gw.config();
    let certs: &[_] =
        req.extensions().get::<palisade_https::Peer>().map_or(&[], |p| &p.certificates);
    match app.gw.auth.authenticate(&cfg, req.headers(), req.uri().query(), certs).await {
        Ok(p) => {
            req.extensions_mut().insert(p);
            next.run(req).await
        }
        Err(e) => {
            let trace = trace_of(req.headers());
            events::emit(&app.gw, Kind::AuthFailure, &trace.request_id(), "-", &e.to_string());
            let mut r = json_response(
                e.status().as_u16(),
                &json!({"error": match e.status() {
                    StatusCode::FORBIDDEN => "insufficient_scope",
                    StatusCode::BAD_REQUEST => "invalid_request",
                    StatusCode::SERVICE_UNAVAILABLE => "temporarily_unavailable",
                    _ => "unauthorized",
                }}),
                &[],
            );
            if let Some(v) = crate::auth::challenge(&cfg, &e) {
                r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
            r
        }
    }
}

/// Marks a response that refuses the request, with the reason, for [`audit_refusals`].
#[derive(Clone)]
struct Refused {
    code: i64,
    reason: String,
}

/// Writes one audit record for every refused request (malformed, mismatched headers, unknown
/// session, wrong revision, ...), whichever handler refused it; the calls that reach the
/// pipeline are audited there.
async fn audit_refusals(
    State(app): State<App>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let principal =
        req.extensions().get::<Principal>().map(|p| p.subject.clone()).unwrap_or_default();
    let trace = trace_of(req.headers());
    let method = header_str(req.headers(), "mcp-method")
        .map(str::to_string)
        .unwrap_or_else(|| format!("{} {}", req.method(), req.uri().path()));
    let session = header_str(req.headers(), "mcp-session-id").map(short);
    let resp = next.run(req).await;
    if let Some(r) = resp.extensions().get::<Refused>()
        && app.gw.audit.enabled()
    {
        app.gw.audit.record(
            "call",
            json!({
                "request_id": trace.request_id(),
                "principal": principal,
                "session": session,
                "method": method,
                "decision": "deny",
                "reason": r.reason,
                "status": resp.status().as_u16(),
                "code": r.code,
            }),
        );
    }
    resp
}

/// RFC 9728 protected resource metadata (404 when no authorization server is configured).
async fn protected_resource(State(gw): State<Arc<Gateway>>) -> Response {
    match crate::auth::protected_resource_metadata(&gw.config()) {
        Some(m) => json_response(200, &m, &[]),
        None => plain(StatusCode::NOT_FOUND, "no authorization server configured"),
    }
}

/// A plan, for approvers (and for the principal who asked).
async fn get_approval(
    State(app): State<App>,
    Extension(principal): Extension<Principal>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    match app.gw.approvals.get(&id) {
        Some(p) if p.requester == principal.subject || app.gw.policy.is_approver(&principal) => {
            json_response(200, &p.view(), &[])
        }
        _ => plain(StatusCode::NOT_FOUND, "no such approval"),
    }
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Decision {
    plan_hash: String,
    approve: bool,
}

/// An approver approves (or denies) one exact plan, named by ID and hash.
async fn decide_approval(
    State(app): State<App>,
    Extension(principal): Extension<Principal>,
    h: HeaderMap,
    axum::extract::Path(id): axum::extract::Path<String>,
    body: Bytes,
) -> Response {
    let trace = trace_of(&h);
    if let Some(r) = precheck(&app.gw, &h, &trace) {
        return r;
    }
    if !app.gw.policy.is_approver(&principal) {
        events::emit(
            &app.gw,
            Kind::PolicyBlock,
            &trace.request_id(),
            &principal.subject,
            "approval decision by a principal without the approver role",
        );
        return plain(StatusCode::FORBIDDEN, "approver role required");
    }
    let Ok(d) = serde_json::from_slice::<Decision>(&body) else {
        return plain(
            StatusCode::BAD_REQUEST,
            "body must be {\"planHash\": \"...\", \"approve\": true|false}",
        );
    };
    match app.gw.approvals.decide(&id, &d.plan_hash, &principal.subject, d.approve) {
        Ok(plan) => {
            app.gw.audit.record(
                "approval",
                json!({
                    "request_id": trace.request_id(),
                    "approval_id": plan.id,
                    "plan_hash": plan.hash,
                    "tool": plan.tool,
                    "requester": plan.requester,
                    "approver": principal.subject,
                    "decision": if d.approve { "approved" } else { "denied" },
                    // What was approved, as the approver saw it (credentials redacted).
                    "arguments": crate::mediate::redacted(&Value::Object(plan.arguments.clone())),
                    "preview": plan.preview.as_ref().map(crate::mediate::redacted),
                }),
            );
            info!(approval = %short(&plan.id), tool = %plan.tool, approver = %principal.subject, approve = d.approve, "approval decided");
            json_response(200, &plan.view(), &[])
        }
        Err(e) => {
            let status = match e {
                crate::approvals::ApprovalError::Unknown(_) => StatusCode::NOT_FOUND,
                crate::approvals::ApprovalError::SelfApproval => StatusCode::FORBIDDEN,
                _ => StatusCode::CONFLICT,
            };
            refusal(status, e.to_string())
        }
    }
}

fn json_response(status: u16, body: &Value, extra: &[(&str, String)]) -> Response {
    let mut r = Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::OK))
        .header(header::CONTENT_TYPE, "application/json");
    for (k, v) in extra {
        r = r.header(*k, v.as_str());
    }
    r.body(Body::from(body.to_string()))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    let mut r = (status, text).into_response();
    if status.is_client_error() {
        r.extensions_mut().insert(Refused { code: 0, reason: text.to_string() });
    }
    r
}

fn error_response(
    status: u16,
    id: Option<Value>,
    code: i64,
    message: impl Into<String>,
    data: Option<Value>,
) -> Response {
    let message = message.into();
    let mut r = json_response(status, &jsonrpc::error(id, code, message.clone(), data), &[]);
    r.extensions_mut().insert(Refused { code, reason: message });
    r
}

/// A JSON refusal that is not JSON-RPC (the approvals API).
fn refusal(status: StatusCode, reason: String) -> Response {
    let mut r = json_response(status.as_u16(), &json!({"error": reason}), &[]);
    r.extensions_mut().insert(Refused { code: 0, reason });
    r
}

fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

fn accepts(h: &HeaderMap, what: &str) -> bool {
    h.get_all(header::ACCEPT).iter().filter_map(|v| v.to_str().ok()).any(|v| {
        v.split(',').any(|p| {
            let p = p.split(';').next().unwrap_or_default().trim();
            p == what || p == "*/*"
        })
    })
}

fn trace_of(h: &HeaderMap) -> TraceContext {
    header_str(h, "traceparent").and_then(TraceContext::parse).unwrap_or_default()
}

/// Browsers send `Origin`; a page from another origin must not drive the gateway (DNS
/// rebinding, CSRF). Non-browser clients send none.
fn origin_allowed(gw: &Gateway, h: &HeaderMap) -> bool {
    match header_str(h, "origin") {
        None => true,
        Some(o) => gw.config().listen.allowed_origins.iter().any(|a| a.eq_ignore_ascii_case(o)),
    }
}

/// Checks the common preconditions of a client request; returns the response to send instead.
fn precheck(gw: &Gateway, h: &HeaderMap, trace: &TraceContext) -> Option<Response> {
    if !origin_allowed(gw, h) {
        events::emit(
            gw,
            Kind::OriginRejected,
            &trace.request_id(),
            "-",
            "request from a browser origin that is not allowed",
        );
        return Some(plain(StatusCode::FORBIDDEN, "origin not allowed"));
    }
    None
}

fn body_limited(gw: &Gateway, body: &Bytes) -> bool {
    body.len() > gw.config().limits.max_message_bytes as usize
}

/// Turns a reply into an HTTP response: JSON when the final message comes first, SSE when
/// the server streams (progress, logs) and the client accepts it.
async fn respond(
    reply: Reply,
    h: &HeaderMap,
    stateless: bool,
    extra: Vec<(&'static str, String)>,
) -> Response {
    let mut rx = match reply {
        Reply::Final(v) => {
            let status = status_for(&v, stateless);
            return json_response(status, &v, &extra);
        }
        Reply::Stream(rx) => rx,
    };
    let Some(first) = rx.recv().await else {
        return error_response(
            200,
            None,
            jsonrpc::UPSTREAM_UNAVAILABLE,
            "The MCP server did not answer",
            None,
        );
    };
    let is_final = first.get("result").is_some() || first.get("error").is_some();
    if is_final {
        return json_response(status_for(&first, stateless), &first, &extra);
    }
    if !accepts(h, "text/event-stream") {
        // JSON-only client: notifications are dropped, the final response is returned.
        while let Some(m) = rx.recv().await {
            if m.get("result").is_some() || m.get("error").is_some() {
                return json_response(status_for(&m, stateless), &m, &extra);
            }
        }
        return error_response(
            200,
            None,
            jsonrpc::UPSTREAM_UNAVAILABLE,
            "The MCP server did not answer",
            None,
        );
    }
    let stream = futures::stream::once(async move { first })
        .chain(futures::stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|m| (m, rx)) },
        ))
        .scan(false, |done, m| {
            if *done {
                return futures::future::ready(None);
            }
            *done = m.get("result").is_some() || m.get("error").is_some();
            futures::future::ready(Some(Ok::<_, Infallible>(Bytes::from(sse::encode(
                None,
                None,
                &m.to_string(),
            )))))
        });
    let mut r = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache");
    for (k, v) in &extra {
        r = r.header(*k, v.as_str());
    }
    r.body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn status_for(v: &Value, stateless: bool) -> u16 {
    match v.pointer("/error/code").and_then(Value::as_i64) {
        Some(code) if stateless || code == jsonrpc::LIMIT_EXCEEDED => jsonrpc::http_status(code),
        _ => 200,
    }
}

// --- POST -------------------------------------------------------------------------------------

async fn post_mcp(
    State(app): State<App>,
    Extension(principal): Extension<Principal>,
    h: HeaderMap,
    body: Bytes,
) -> Response {
    let trace = trace_of(&h);
    let span = info_span!("mcp", request_id = %trace.request_id());
    async move {
        if let Some(r) = precheck(&app.gw, &h, &trace) {
            return r;
        }
        let ctype = header_str(&h, "content-type").unwrap_or_default().to_ascii_lowercase();
        if !ctype.starts_with("application/json") {
            return plain(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Content-Type must be application/json",
            );
        }
        if !accepts(&h, "application/json") && !accepts(&h, "text/event-stream") {
            return plain(
                StatusCode::NOT_ACCEPTABLE,
                "Accept must include application/json and text/event-stream",
            );
        }
        if body_limited(&app.gw, &body) {
            events::emit(
                &app.gw,
                Kind::ValidationFailure,
                &trace.request_id(),
                "-",
                "message larger than the limit",
            );
            return error_response(413, None, INVALID_REQUEST, "Message too large", None);
        }
        let value: Value = match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(_) => {
                events::emit(
                    &app.gw,
                    Kind::ValidationFailure,
                    &trace.request_id(),
                    &principal.subject,
                    "malformed JSON",
                );
                return error_response(400, None, PARSE_ERROR, "Parse error", None);
            }
        };
        match header_str(&h, "mcp-protocol-version") {
            Some(v) => match Rev::parse(v) {
                Some(r) if r.stateless() => {
                    stateless_post(&app.gw, &h, value, principal, trace).await
                }
                Some(_) => legacy_post(&app, &h, value, principal, trace).await,
                None => {
                    let id = value.get("id").cloned();
                    // Without a session this is the stateless wire.
                    let stateless = header_str(&h, "mcp-session-id").is_none();
                    let supported = app.gw.supported_on(stateless);
                    error_response(
                        400,
                        id,
                        UNSUPPORTED_PROTOCOL_VERSION,
                        "Unsupported protocol version",
                        Some(json!({"supported": supported, "requested": v})),
                    )
                }
            },
            None => legacy_post(&app, &h, value, principal, trace).await,
        }
    }
    .instrument(span)
    .await
}

/// The stateless revision: every request stands alone and carries its revision in `_meta`.
async fn stateless_post(
    gw: &Arc<Gateway>,
    h: &HeaderMap,
    value: Value,
    principal: Principal,
    trace: TraceContext,
) -> Response {
    let header_version = header_str(h, "mcp-protocol-version").unwrap_or_default().to_string();
    let Some(rev) = Rev::parse(&header_version) else {
        return error_response(
            400,
            None,
            UNSUPPORTED_PROTOCOL_VERSION,
            "Unsupported protocol version",
            None,
        );
    };
    let msg = match Message::parse(&value) {
        Ok(m) => m,
        Err(e) => {
            return error_response(
                400,
                e.id,
                INVALID_REQUEST,
                format!("Invalid request: {}", e.message),
                None,
            );
        }
    };
    let (id, method, params) = match msg {
        Message::Request { id, method, params } => (id, method, params),
        // No client notifications are defined on this wire; acknowledge and drop.
        Message::Notification { .. } => return StatusCode::ACCEPTED.into_response(),
        _ => {
            return error_response(
                400,
                msg.id().cloned(),
                INVALID_REQUEST,
                "Invalid request: clients send requests",
                None,
            );
        }
    };
    // Routing headers: each at most once, and equal to the body.
    for name in ["mcp-protocol-version", "mcp-method", "mcp-name"] {
        if h.get_all(name).iter().count() > 1 {
            return error_response(
                400,
                Some(id),
                HEADER_MISMATCH,
                format!("{name} header appears more than once"),
                None,
            );
        }
    }
    let meta = params.as_ref().and_then(|p| p.get("_meta")).and_then(Value::as_object);
    let Some(meta) = meta else {
        return error_response(
            400,
            Some(id),
            INVALID_PARAMS,
            "params._meta must be an object carrying io.modelcontextprotocol/protocolVersion and io.modelcontextprotocol/clientCapabilities",
            None,
        );
    };
    let missing: Vec<&str> =
        ["io.modelcontextprotocol/protocolVersion", "io.modelcontextprotocol/clientCapabilities"]
            .into_iter()
            .filter(|k| !meta.contains_key(*k))
            .collect();
    if !missing.is_empty() {
        return error_response(
            400,
            Some(id),
            INVALID_PARAMS,
            format!("params._meta is missing {}", missing.join(", ")),
            None,
        );
    }
    let body_version =
        meta.get("io.modelcontextprotocol/protocolVersion").cloned().unwrap_or(Value::Null);
    if body_version.as_str() != Some(header_version.as_str()) {
        events::emit(
            gw,
            Kind::ValidationFailure,
            &trace.request_id(),
            &principal.subject,
            "MCP-Protocol-Version header differs from _meta",
        );
        return error_response(
            400,
            Some(id),
            HEADER_MISMATCH,
            "MCP-Protocol-Version header does not match the request's protocol version",
            None,
        );
    }
    if header_str(h, "mcp-method") != Some(method.as_str()) {
        return error_response(
            400,
            Some(id),
            HEADER_MISMATCH,
            "Mcp-Method header does not match the request's method",
            None,
        );
    }
    let name_key = match method.as_str() {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" => Some("uri"),
        _ => None,
    };
    if let Some(k) = name_key {
        let body_value = params.as_ref().and_then(|p| p.get(k)).and_then(Value::as_str);
        let header_value = header_str(h, "mcp-name").and_then(crate::headers::decode);
        if body_value.is_some() && header_value.as_deref() != body_value {
            return error_response(
                400,
                Some(id),
                HEADER_MISMATCH,
                format!("Mcp-Name header does not match the request's {k}"),
                None,
            );
        }
    }
    if !gw.allowed().contains(&rev) {
        let supported = gw.supported_on(true);
        return error_response(
            400,
            Some(id),
            UNSUPPORTED_PROTOCOL_VERSION,
            "Unsupported protocol version",
            Some(json!({"supported": supported, "requested": header_version})),
        );
    }
    let call = Arc::new(Call {
        gw: gw.clone(),
        cfg: gw.config(),
        rev,
        principal,
        trace: trace.clone(),
        session: None,
    });
    let reply = forward::request(call, id, method, params).await;
    respond(reply, h, true, vec![("x-request-id", trace.request_id())]).await
}

/// The session era over Streamable HTTP.
async fn legacy_post(
    app: &App,
    h: &HeaderMap,
    value: Value,
    principal: Principal,
    trace: TraceContext,
) -> Response {
    let gw = &app.gw;
    let Some(sid) = header_str(h, "mcp-session-id").map(str::to_string) else {
        // Only an initialize request may come without a session.
        let msg = match Message::parse(&value) {
            Ok(m) => m,
            Err(e) => {
                return error_response(
                    400,
                    e.id,
                    INVALID_REQUEST,
                    format!("Invalid request: {}", e.message),
                    None,
                );
            }
        };
        return match msg {
            Message::Request { id, method, params } if method == "initialize" => {
                match initialize(gw, id, params, principal, trace.clone(), None).await {
                    Ok((session, result)) => {
                        let mut extra = vec![("x-request-id", trace.request_id())];
                        if session.rev >= R2025_03 {
                            extra.push(("mcp-session-id", session.id.clone()));
                        }
                        json_response(200, &result, &extra)
                    }
                    Err(r) => r,
                }
            }
            other => error_response(
                400,
                other.id().cloned(),
                INVALID_REQUEST,
                "Bad Request: no session; send initialize first (or the stateless MCP-Protocol-Version header)",
                None,
            ),
        };
    };
    let Some(session) = gw.session(&sid) else {
        return error_response(404, None, INVALID_REQUEST, "Session not found", None);
    };
    if let Some(r) = session_guard(gw, &session, &principal, &trace) {
        return r;
    }
    if let Some(v) = header_str(h, "mcp-protocol-version")
        && Rev::parse(v) != Some(session.rev)
    {
        return error_response(
            400,
            None,
            INVALID_REQUEST,
            format!(
                "MCP-Protocol-Version {v} does not match the session's {}",
                session.rev.as_str()
            ),
            None,
        );
    }
    session.touch();
    // Batches: only the revision that defines them.
    if let Value::Array(items) = value {
        if !palisade_core::revisions::allows_batches(session.rev.as_str()) {
            return error_response(
                400,
                None,
                INVALID_REQUEST,
                format!("JSON-RPC batches are not part of {}", session.rev.as_str()),
                None,
            );
        }
        if items.is_empty() {
            return error_response(400, None, INVALID_REQUEST, "empty batch", None);
        }
        let mut answers = Vec::new();
        for item in items {
            if let Some(answer) = session_message(gw, &session, item, &principal, &trace).await {
                match answer {
                    Reply::Final(v) => answers.push(v),
                    Reply::Stream(mut rx) => {
                        while let Some(m) = rx.recv().await {
                            if m.get("result").is_some() || m.get("error").is_some() {
                                answers.push(m);
                                break;
                            }
                        }
                    }
                }
            }
        }
        if answers.is_empty() {
            return StatusCode::ACCEPTED.into_response();
        }
        return json_response(200, &Value::Array(answers), &[("x-request-id", trace.request_id())]);
    }
    match session_message(gw, &session, value, &principal, &trace).await {
        None => StatusCode::ACCEPTED.into_response(),
        Some(reply) => respond(reply, h, false, vec![("x-request-id", trace.request_id())]).await,
    }
}

/// GET and DELETE on the MCP path exist only in the session era: the stateless revision
/// answers 405 (after the common prechecks).
fn session_era_only(gw: &Gateway, h: &HeaderMap, trace: &TraceContext) -> Option<Response> {
    if let Some(r) = precheck(gw, h, trace) {
        return Some(r);
    }
    if header_str(h, "mcp-protocol-version").and_then(Rev::parse).is_some_and(|r| r.stateless()) {
        return Some(
            Response::builder()
                .status(StatusCode::METHOD_NOT_ALLOWED)
                .header(header::ALLOW, "POST")
                .body(Body::empty())
                .unwrap_or_default(),
        );
    }
    None
}

/// The session named by `Mcp-Session-Id`, if it exists and belongs to `principal`. Without
/// the header the answer is `missing_status` (400 for GET, 404 for DELETE).
fn owned_session(
    gw: &Gateway,
    h: &HeaderMap,
    principal: &Principal,
    trace: &TraceContext,
    missing_status: u16,
) -> Result<Arc<DownSession>, Box<Response>> {
    let Some(id) = header_str(h, "mcp-session-id") else {
        let message = if missing_status == 400 {
            "Bad Request: Mcp-Session-Id required"
        } else {
            "Session not found"
        };
        return Err(Box::new(error_response(missing_status, None, INVALID_REQUEST, message, None)));
    };
    let Some(session) = gw.session(id) else {
        return Err(Box::new(error_response(
            404,
            None,
            INVALID_REQUEST,
            "Session not found",
            None,
        )));
    };
    match session_guard(gw, &session, principal, trace) {
        Some(r) => Err(Box::new(r)),
        None => Ok(session),
    }
}

/// A session may only be used by the principal that created it.
fn session_guard(
    gw: &Gateway,
    session: &DownSession,
    principal: &Principal,
    trace: &TraceContext,
) -> Option<Response> {
    if session.principal.subject != principal.subject {
        events::emit(
            gw,
            Kind::SessionHijack,
            &trace.request_id(),
            &principal.subject,
            &format!("session {} belongs to another principal", short(&session.id)),
        );
        // Indistinguishable from an unknown session.
        return Some(error_response(404, None, INVALID_REQUEST, "Session not found", None));
    }
    None
}

/// One message of a session: requests are forwarded, notifications and responses to server
/// requests are passed on (`None`: nothing to answer).
async fn session_message(
    gw: &Arc<Gateway>,
    session: &Arc<DownSession>,
    value: Value,
    principal: &Principal,
    trace: &TraceContext,
) -> Option<Reply> {
    let msg = match Message::parse(&value) {
        Ok(m) => m,
        Err(e) => {
            events::emit(
                gw,
                Kind::ValidationFailure,
                &trace.request_id(),
                &principal.subject,
                &e.message,
            );
            return Some(Reply::Final(jsonrpc::error(
                e.id,
                INVALID_REQUEST,
                format!("Invalid request: {}", e.message),
                None,
            )));
        }
    };
    match msg {
        Message::Request { id, method, params } => {
            if method == "initialize" {
                return Some(Reply::Final(jsonrpc::error(
                    Some(id),
                    INVALID_REQUEST,
                    "the session is already initialized",
                    None,
                )));
            }
            let call = Arc::new(Call {
                gw: gw.clone(),
                cfg: gw.config(),
                rev: session.rev,
                principal: principal.clone(),
                trace: trace.clone(),
                session: Some(session.clone()),
            });
            Some(forward::request(call, id, method, params).await)
        }
        Message::Notification { method, params } => {
            match validate::method(&method, Direction::ClientToServer, session.rev) {
                Some(def)
                    if validate::check_params(def, params.as_ref(), session.rev, true).is_ok() =>
                {
                    let _ = session.upstream.notify(&method, params).await;
                }
                _ => events::emit(
                    gw,
                    Kind::ValidationFailure,
                    &trace.request_id(),
                    &principal.subject,
                    &format!("notification {method} dropped"),
                ),
            }
            None
        }
        Message::Result { ref id, .. } | Message::Error { id: Some(ref id), .. } => {
            let known = session
                .server_requests
                .lock()
                .map(|mut p| p.remove(&id.to_string()).is_some())
                .unwrap_or(false);
            if known {
                let _ = session.upstream.respond(msg.to_value()).await;
            } else {
                events::emit(
                    gw,
                    Kind::ValidationFailure,
                    &trace.request_id(),
                    &principal.subject,
                    "a response to a request the server never sent",
                );
            }
            None
        }
        Message::Error { id: None, .. } => None,
    }
}

/// Opens a session: the client's `initialize` goes to a fresh connection to the server.
async fn initialize(
    gw: &Arc<Gateway>,
    id: Value,
    params: Option<Value>,
    principal: Principal,
    trace: TraceContext,
    sse: Option<(String, mpsc::Sender<(u64, String)>)>,
) -> Result<(Arc<DownSession>, Value), Response> {
    let (session_id, stream) = match sse {
        Some((sid, tx)) => (sid, Some(tx)),
        None => (new_session_id(), None),
    };
    let requested = params
        .as_ref()
        .and_then(|p| p.get("protocolVersion"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let allowed: Vec<Rev> = gw.allowed().into_iter().filter(|r| !r.stateless()).collect();
    let Some(rev) = Rev::parse(&requested).filter(|r| allowed.contains(r)) else {
        let supported = gw.supported_on(false);
        return Err(error_response(
            400,
            Some(id),
            INVALID_PARAMS,
            "Unsupported protocol version",
            Some(json!({"supported": supported, "requested": requested})),
        ));
    };
    let Some(def) = validate::method("initialize", Direction::ClientToServer, rev) else {
        return Err(error_response(
            400,
            Some(id),
            INVALID_REQUEST,
            "initialize is not part of this revision",
            None,
        ));
    };
    if let Err(e) = validate::check_params(def, params.as_ref(), rev, true) {
        events::emit(
            gw,
            Kind::ValidationFailure,
            &trace.request_id(),
            &principal.subject,
            &format!("initialize: {e}"),
        );
        return Err(error_response(
            400,
            Some(id),
            INVALID_PARAMS,
            format!("Invalid params: {e}"),
            None,
        ));
    }
    let mut params = params;
    if let Some(p) = params.as_mut() {
        forward::without_tasks(p);
    }
    let upstream = gw.open_upstream(rev).await.map_err(|_| {
        error_response(
            200,
            Some(id.clone()),
            jsonrpc::UPSTREAM_UNAVAILABLE,
            "The MCP server is unavailable",
            None,
        )
    })?;
    let timeout = Duration::from_secs(gw.config().limits.request_timeout_seconds as u64);
    let answer = upstream.call("initialize", params, timeout).await.map_err(|_| {
        error_response(
            200,
            Some(id.clone()),
            jsonrpc::UPSTREAM_UNAVAILABLE,
            "The MCP server is unavailable",
            None,
        )
    })?;
    let Some(result) = answer.get("result") else {
        upstream.close().await;
        let mut e = answer.clone();
        e["id"] = id;
        crate::mediate::error(&mut e);
        return Err(json_response(200, &e, &[]));
    };
    if let Err(e) = validate::check_result(def, result, rev, true) {
        events::emit(
            gw,
            Kind::UpstreamValidationFailure,
            &trace.request_id(),
            &principal.subject,
            &format!("initialize: {e}"),
        );
        upstream.close().await;
        return Err(error_response(
            200,
            Some(id),
            jsonrpc::UPSTREAM_INVALID,
            "The MCP server sent an invalid response",
            None,
        ));
    }
    // The server must agree to a pinned revision; anything else fails closed.
    let agreed = result.get("protocolVersion").and_then(Value::as_str).and_then(Rev::parse);
    let session_rev = match agreed {
        Some(a) if allowed.contains(&a) && a <= rev => a,
        _ => {
            upstream.close().await;
            return Err(error_response(
                200,
                Some(id),
                jsonrpc::UPSTREAM_INVALID,
                format!(
                    "The MCP server does not speak {requested}; no pinned revision is available"
                ),
                None,
            ));
        }
    };
    upstream.pipe().set_protocol_version(session_rev.as_str());
    let limits = gw.config().limits.clone();
    let session = Arc::new(DownSession {
        id: session_id,
        rev: session_rev,
        upstream: upstream.clone(),
        principal: principal.clone(),
        created: Instant::now(),
        last_seen: Mutex::new(Instant::now()),
        in_flight: Arc::new(Semaphore::new(limits.max_in_flight_per_session as usize)),
        events: Mutex::new(Default::default()),
        stream: Mutex::new(stream),
        server_requests: Mutex::new(HashMap::new()),
        tool_calls: AtomicU64::new(0),
        mutations: AtomicU64::new(0),
        ended: AtomicBool::new(false),
    });
    if !gw.insert_session(session.clone()) {
        upstream.close().await;
        return Err(error_response(
            503,
            Some(id),
            jsonrpc::LIMIT_EXCEEDED,
            "Too many sessions",
            Some(json!({"retryAfterSeconds": 30})),
        ));
    }
    // Messages the server starts (notifications, sampling, elicitation) go to the session's
    // stream after validation.
    let (tx, mut rx) = mpsc::channel::<Value>(64);
    upstream.set_unsolicited(tx);
    let (g, s) = (gw.clone(), session.clone());
    tokio::spawn(async move {
        while let Some(mut m) = rx.recv().await {
            if s.ended.load(Ordering::Relaxed) {
                break;
            }
            match server_message_ok(&s, &m) {
                Ok(()) => {
                    // Log lines, progress, sampling and elicitation requests: server text.
                    crate::mediate::server_message(&mut m);
                    s.deliver(&m)
                }
                Err(why) => events::emit(
                    &g,
                    Kind::UpstreamValidationFailure,
                    "-",
                    &s.principal.subject,
                    &why,
                ),
            }
        }
    });
    info!(session = %short(&session.id), revision = session_rev.as_str(), principal = %principal.subject, "session opened");
    let mut result = result.clone();
    forward::without_tasks(&mut result);
    crate::mediate::listing(&mut result);
    if let Some(obj) = result.as_object_mut() {
        obj.insert("protocolVersion".into(), Value::String(session_rev.as_str().into()));
    }
    Ok((session, json!({"jsonrpc": "2.0", "id": id, "result": result})))
}

/// Validates a message the server sends on its own.
fn server_message_ok(s: &DownSession, m: &Value) -> Result<(), String> {
    let msg = Message::parse(m).map_err(|e| format!("malformed server message: {}", e.message))?;
    let method = msg.method().ok_or("a stray response from the server")?.to_string();
    let def = validate::method(&method, Direction::ServerToClient, s.rev)
        .ok_or_else(|| format!("the server sent {method}, undefined in {}", s.rev.as_str()))?;
    validate::check_params(def, m.get("params"), s.rev, true).map_err(|e| format!("{method}: {e}"))
}

// --- GET / DELETE -----------------------------------------------------------------------------

fn event_stream(
    rx: mpsc::Receiver<(u64, String)>,
    backlog: Vec<(u64, String)>,
    legacy_sse: bool,
    prefix: Option<String>,
) -> Response {
    let prefix = futures::stream::iter(prefix.map(|p| Ok::<_, Infallible>(Bytes::from(p))));
    let backlog = futures::stream::iter(backlog);
    let live =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
    let events = backlog.chain(live).map(move |(seq, data)| {
        let event = if legacy_sse { Some("message") } else { None };
        Ok::<_, Infallible>(Bytes::from(sse::encode(event, Some(&seq.to_string()), &data)))
    });
    // Keep-alive comments so proxies do not close an idle stream.
    let pings = futures::stream::unfold((), |_| async {
        tokio::time::sleep(Duration::from_secs(15)).await;
        Some((Ok::<_, Infallible>(Bytes::from_static(b": keep-alive\n\n")), ()))
    });
    let merged = prefix.chain(futures::stream::select(events, pings));
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(merged))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

async fn get_mcp(
    State(app): State<App>,
    Extension(principal): Extension<Principal>,
    h: HeaderMap,
) -> Response {
    let trace = trace_of(&h);
    if let Some(r) = session_era_only(&app.gw, &h, &trace) {
        return r;
    }
    if !accepts(&h, "text/event-stream") {
        return plain(StatusCode::NOT_ACCEPTABLE, "Accept must include text/event-stream");
    }
    let session = match owned_session(&app.gw, &h, &principal, &trace, 400) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    session.touch();
    let backlog = match header_str(&h, "last-event-id").and_then(|v| v.parse::<u64>().ok()) {
        Some(last) => match session.events.lock().ok().and_then(|log| log.after(last)) {
            Some(events) => events,
            None => {
                return error_response(
                    400,
                    None,
                    INVALID_REQUEST,
                    "the events after Last-Event-ID are no longer available",
                    None,
                );
            }
        },
        None => vec![],
    };
    let (tx, rx) = mpsc::channel(64);
    if let Ok(mut s) = session.stream.lock() {
        *s = Some(tx);
    }
    event_stream(rx, backlog, false, None)
}

async fn delete_mcp(
    State(app): State<App>,
    Extension(principal): Extension<Principal>,
    h: HeaderMap,
) -> Response {
    let trace = trace_of(&h);
    if let Some(r) = session_era_only(&app.gw, &h, &trace) {
        return r;
    }
    let session = match owned_session(&app.gw, &h, &principal, &trace, 404) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    app.gw.end_session(&session.id).await;
    info!(session = %short(&session.id), "session ended by the client");
    StatusCode::OK.into_response()
}

// --- legacy HTTP+SSE transport (2024-11-05) -----------------------------------------------------

async fn get_sse(State(app): State<App>, h: HeaderMap) -> Response {
    let trace = trace_of(&h);
    if let Some(r) = precheck(&app.gw, &h, &trace) {
        return r;
    }
    if !app.gw.allowed().iter().any(|r| !r.stateless()) {
        return plain(StatusCode::NOT_FOUND, "the session-era transports are not enabled");
    }
    let id = new_session_id();
    let (tx, rx) = mpsc::channel(64);
    if let Ok(mut w) = app.waiting.0.lock() {
        w.insert(id.clone(), tx);
    }
    // The first event tells the client where to POST; the session exists after initialize.
    let endpoint = sse::encode(Some("endpoint"), None, &format!("/messages?sessionId={id}"));
    event_stream(rx, vec![], true, Some(endpoint))
}

#[derive(serde::Deserialize)]
struct SessionQuery {
    #[serde(rename = "sessionId")]
    session_id: String,
}

async fn post_messages(
    State(app): State<App>,
    Extension(principal): Extension<Principal>,
    h: HeaderMap,
    Query(q): Query<SessionQuery>,
    body: Bytes,
) -> Response {
    let trace = trace_of(&h);
    if let Some(r) = precheck(&app.gw, &h, &trace) {
        return r;
    }
    if body_limited(&app.gw, &body) {
        return plain(StatusCode::PAYLOAD_TOO_LARGE, "message too large");
    }
    let Ok(value) = serde_json::from_slice::<Value>(&body) else {
        return plain(StatusCode::BAD_REQUEST, "malformed JSON");
    };
    let gw = &app.gw;
    let session = match gw.session(&q.session_id) {
        Some(s) => s,
        None => {
            // The first message of a waiting SSE connection must be initialize.
            let Some(tx) = app.waiting.0.lock().ok().and_then(|mut w| w.remove(&q.session_id))
            else {
                return plain(StatusCode::NOT_FOUND, "session not found");
            };
            let Ok(Message::Request { id, method, params }) = Message::parse(&value) else {
                return plain(StatusCode::BAD_REQUEST, "send initialize first");
            };
            if method != "initialize" {
                return plain(StatusCode::BAD_REQUEST, "send initialize first");
            }
            let deliver = tx.clone();
            match initialize(gw, id, params, principal, trace, Some((q.session_id.clone(), tx)))
                .await
            {
                Ok((_, result)) => {
                    let _ = deliver.send((0, result.to_string())).await;
                }
                Err(r) => {
                    let body =
                        axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap_or_default();
                    let _ = deliver.send((0, String::from_utf8_lossy(&body).into_owned())).await;
                }
            }
            return StatusCode::ACCEPTED.into_response();
        }
    };
    if let Some(r) = session_guard(gw, &session, &principal, &trace) {
        return r;
    }
    session.touch();
    if let Some(reply) = session_message(gw, &session, value, &principal, &trace).await {
        // Answers travel on the SSE stream.
        let s = session.clone();
        tokio::spawn(async move {
            match reply {
                Reply::Final(v) => s.deliver(&v),
                Reply::Stream(mut rx) => {
                    while let Some(m) = rx.recv().await {
                        s.deliver(&m);
                    }
                }
            }
        });
    }
    StatusCode::ACCEPTED.into_response()
}
