//! Streamable HTTP on the MCP path, for both eras. POST carries a stateless request (its
//! revision in `MCP-Protocol-Version`, with routing headers that must equal the body) or a
//! message of a session (`Mcp-Session-Id`; `initialize` opens one); GET opens a session's
//! event stream (resumable with `Last-Event-ID`) and DELETE ends a session. The stateless
//! revision has no GET or DELETE.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tracing::{Instrument, info, info_span};

use super::encode::{self, error_response, event_stream, json_response, plain, refused};
use super::layers::bounded_body;
use super::{App, accepts, header_str, trace_of};
use crate::controls::authz::Principal;
use crate::gateway::Gateway;
use crate::observe::events::{self, Kind};
use crate::observe::trace::TraceContext;
use crate::pipeline::open::{self, Opening};
use crate::pipeline::{self, Call, dispatch};
use crate::protocol::headers;
use crate::protocol::jsonrpc::{
    HEADER_MISMATCH, INVALID_PARAMS, INVALID_REQUEST, Message, PARSE_ERROR,
    UNSUPPORTED_PROTOCOL_VERSION,
};
use crate::protocol::revision::{R2025_03, Rev};
use crate::session::{ClientSession, short};
use crate::state::new_id;

/// A JSON-RPC message, or the refusal of a malformed one.
fn parse(value: &Value) -> Result<Message, Box<Response>> {
    Message::parse(value).map_err(|e| {
        Box::new(error_response(
            400,
            e.id,
            INVALID_REQUEST,
            format!("Invalid request: {}", e.message),
            None,
        ))
    })
}

fn unknown_session() -> Response {
    error_response(404, None, INVALID_REQUEST, "Session not found", None)
}

pub(super) async fn post(
    State(app): State<App>,
    Extension(principal): Extension<Principal>,
    h: HeaderMap,
    body: Body,
) -> Response {
    let trace = trace_of(&h);
    let span = info_span!("mcp", request_id = %trace.request_id());
    async move {
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
        let Some(body) = bounded_body(&app.gw, body).await else {
            events::emit(
                &app.gw.observe,
                Kind::ValidationFailure,
                &trace.request_id(),
                "-",
                "message larger than the limit",
            );
            // The rest of the body is never read: the connection cannot carry another request.
            let mut r = error_response(413, None, INVALID_REQUEST, "Message too large", None);
            r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            return r;
        };
        let value: Value = match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(_) => {
                events::emit(
                    &app.gw.observe,
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
                Some(_) => session_post(&app, &h, value, principal, trace).await,
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
            None => session_post(&app, &h, value, principal, trace).await,
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
    let msg = match parse(&value) {
        Ok(m) => m,
        Err(r) => return *r,
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
            &gw.observe,
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
        let header_value = header_str(h, "mcp-name").and_then(headers::decode);
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
    let call = Arc::new(Call::new(gw.clone(), rev, principal, &trace, None, &method));
    let request_id = call.request_id();
    let reply = pipeline::request(call, id, method, params).await;
    encode::reply(reply, h, true, vec![("x-request-id", request_id)]).await
}

/// The session era over Streamable HTTP: `initialize` opens a session, everything else
/// names one.
async fn session_post(
    app: &App,
    h: &HeaderMap,
    value: Value,
    principal: Principal,
    trace: TraceContext,
) -> Response {
    let gw = &app.gw;
    let Some(sid) = header_str(h, "mcp-session-id").map(str::to_string) else {
        // Only an initialize request may come without a session.
        let msg = match parse(&value) {
            Ok(m) => m,
            Err(r) => return *r,
        };
        return match msg {
            Message::Request { id, method, params } if method == "initialize" => {
                let opening = Opening {
                    id,
                    params,
                    principal,
                    trace: trace.clone(),
                    session_id: new_id(),
                    stream: None,
                };
                match open::open(gw, opening).await {
                    Ok((session, result)) => {
                        let mut extra = vec![("x-request-id", trace.request_id())];
                        if session.rev >= R2025_03 {
                            extra.push(("mcp-session-id", session.id.clone()));
                        }
                        json_response(200, &result, &extra)
                    }
                    Err(r) => refused(r),
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
    let Some(session) = owned(gw, &sid, &principal, &trace).await else {
        return unknown_session();
    };
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
            if let Some(answer) = dispatch::message(gw, &session, item, &principal, &trace).await
                && let Some(m) = encode::final_of(answer).await
            {
                answers.push(m);
            }
        }
        if answers.is_empty() {
            return StatusCode::ACCEPTED.into_response();
        }
        return json_response(200, &Value::Array(answers), &[("x-request-id", trace.request_id())]);
    }
    match dispatch::message(gw, &session, value, &principal, &trace).await {
        None => StatusCode::ACCEPTED.into_response(),
        Some(reply) => {
            encode::reply(reply, h, false, vec![("x-request-id", trace.request_id())]).await
        }
    }
}

/// GET and DELETE on the MCP path exist only in the session era: the stateless revision
/// answers 405.
fn session_era_only(h: &HeaderMap) -> Option<Response> {
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

/// Session `id`, if it exists (here, or on another replica that shares a store) and belongs to
/// `principal`; a stranger's session is indistinguishable from an unknown one.
async fn owned(
    gw: &Arc<Gateway>,
    id: &str,
    principal: &Principal,
    trace: &TraceContext,
) -> Option<Arc<ClientSession>> {
    let session = open::find(gw, id, principal, trace).await?;
    dispatch::owns(gw, &session, principal, trace).then_some(session)
}

/// The session named by `Mcp-Session-Id`, if it exists and belongs to `principal`. Without
/// the header the answer is `missing_status` (400 for GET, 404 for DELETE).
async fn owned_session(
    gw: &Arc<Gateway>,
    h: &HeaderMap,
    principal: &Principal,
    trace: &TraceContext,
    missing_status: u16,
) -> Result<Arc<ClientSession>, Box<Response>> {
    let Some(id) = header_str(h, "mcp-session-id") else {
        let message = if missing_status == 400 {
            "Bad Request: Mcp-Session-Id required"
        } else {
            "Session not found"
        };
        return Err(Box::new(error_response(missing_status, None, INVALID_REQUEST, message, None)));
    };
    owned(gw, id, principal, trace).await.ok_or_else(|| Box::new(unknown_session()))
}

pub(super) async fn get(
    State(app): State<App>,
    Extension(principal): Extension<Principal>,
    h: HeaderMap,
) -> Response {
    let trace = trace_of(&h);
    if let Some(r) = session_era_only(&h) {
        return r;
    }
    if !accepts(&h, "text/event-stream") {
        return plain(StatusCode::NOT_ACCEPTABLE, "Accept must include text/event-stream");
    }
    let session = match owned_session(&app.gw, &h, &principal, &trace, 400).await {
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

pub(super) async fn delete(
    State(app): State<App>,
    Extension(principal): Extension<Principal>,
    h: HeaderMap,
) -> Response {
    let trace = trace_of(&h);
    if let Some(r) = session_era_only(&h) {
        return r;
    }
    let session = match owned_session(&app.gw, &h, &principal, &trace, 404).await {
        Ok(s) => s,
        Err(r) => return *r,
    };
    app.gw.end_session(&session.id).await;
    info!(session = %short(&session.id), "session ended by the client");
    StatusCode::OK.into_response()
}
