//! What runs around every handler, outermost first: authentication (the principal travels in
//! the request's extensions; nothing past it runs for an unauthenticated request), the audit
//! record of every refusal, and the browser-origin check; and the body-size check handlers
//! share.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use serde_json::json;

use super::encode::{Refused, json_response, plain};
use super::{App, header_str, trace_of};
use crate::controls::authn::challenge;
use crate::controls::authz::Principal;
use crate::gateway::Gateway;
use crate::observe::events::{self, Kind};
use crate::session::short;

/// Authenticates every request to the MCP and approval endpoints.
pub(super) async fn authenticate(
    State(app): State<App>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let cfg = app.gw.config();
    let certs: &[_] =
        req.extensions().get::<palisade_https::Peer>().map_or(&[], |p| &p.certificates);
    match app.gw.authn.authenticate(&cfg, req.headers(), req.uri().query(), certs).await {
        Ok(p) => {
            req.extensions_mut().insert(p);
            next.run(req).await
        }
        Err(e) => {
            let trace = trace_of(req.headers());
            let why = e.to_string();
            events::emit(&app.gw.observe, Kind::AuthFailure, &trace.request_id(), "-", &why);
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
            if let Some(v) = challenge(&cfg, &e) {
                r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
            r
        }
    }
}

/// Writes one audit record for every refused request (malformed, mismatched headers, unknown
/// session, wrong revision, ...), whichever handler refused it; the calls that reach the
/// pipeline's stages are audited there.
pub(super) async fn audit_refusals(
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
    let audit = &app.gw.observe.audit;
    if let Some(r) = resp.extensions().get::<Refused>()
        && audit.enabled()
    {
        audit.record(
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

/// Browsers send `Origin`; a page from another origin must not drive the gateway (DNS
/// rebinding, CSRF). Non-browser clients send none.
fn origin_allowed(gw: &Gateway, h: &HeaderMap) -> bool {
    match header_str(h, "origin") {
        None => true,
        Some(o) => gw.config().listen.allowed_origins.iter().any(|a| a.eq_ignore_ascii_case(o)),
    }
}

/// Refuses a request from a browser page of another origin, before any handler runs.
pub(super) async fn check_origin(
    State(app): State<App>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if origin_allowed(&app.gw, req.headers()) {
        return next.run(req).await;
    }
    let trace = trace_of(req.headers());
    events::emit(
        &app.gw.observe,
        Kind::OriginRejected,
        &trace.request_id(),
        "-",
        "request from a browser origin that is not allowed",
    );
    plain(StatusCode::FORBIDDEN, "origin not allowed")
}

/// Whether a body is larger than one message may be.
/// The request body, read up to the configured message limit: `None` past it (or when the
/// client stopped sending), and the rest is never read.
pub(super) async fn bounded_body(gw: &Gateway, body: axum::body::Body) -> Option<Bytes> {
    axum::body::to_bytes(body, gw.config().limits.max_message_bytes as usize).await.ok()
}
