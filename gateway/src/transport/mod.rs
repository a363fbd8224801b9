//! The client-facing HTTP transports: Streamable HTTP for both eras (POST, GET and DELETE on
//! the MCP path), the legacy HTTP+SSE transport (`/sse` and `/messages`) for 2024-11-05
//! clients, the approvals API, and RFC 9728 metadata. Handlers parse HTTP, call the pipeline,
//! and encode what it answers; the request layers (`layers.rs`) authenticate every request
//! and audit every refusal.

mod approvals;
mod encode;
mod layers;
mod legacy_sse;
mod streamable;

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post};

use crate::controls::authn::{PRM_PATH, protected_resource_metadata};
use crate::gateway::Gateway;
use crate::observe::trace::TraceContext;
use encode::{json_response, plain};

/// What every handler shares: the gateway, and legacy SSE connections waiting for their
/// `initialize`.
#[derive(Clone)]
struct App {
    gw: Arc<Gateway>,
    waiting: Arc<legacy_sse::Waiting>,
}

pub fn router(gw: Arc<Gateway>) -> Router {
    let path = gw.config().listen.path.clone();
    let app = App { gw, waiting: Arc::default() };
    let metadata = Router::new()
        .route(PRM_PATH, get(protected_resource))
        .route(&format!("{PRM_PATH}{path}"), get(protected_resource))
        .with_state(app.gw.clone());
    Router::new()
        .route(&path, post(streamable::post).get(streamable::get).delete(streamable::delete))
        .route("/sse", get(legacy_sse::get))
        .route("/messages", post(legacy_sse::post))
        .route("/approvals", get(approvals::list))
        .route("/approvals/{id}", get(approvals::get).post(approvals::decide))
        // Innermost first: the origin check, then (inside authentication) the audit of every
        // refusal of an authenticated request.
        .route_layer(axum::middleware::from_fn_with_state(app.clone(), layers::check_origin))
        .route_layer(axum::middleware::from_fn_with_state(app.clone(), layers::audit_refusals))
        .route_layer(axum::middleware::from_fn_with_state(app.clone(), layers::authenticate))
        .with_state(app)
        .merge(metadata)
}

/// RFC 9728 protected resource metadata (404 when no authorization server is configured).
async fn protected_resource(State(gw): State<Arc<Gateway>>) -> Response {
    match protected_resource_metadata(&gw.config()) {
        Some(m) => json_response(200, &m, &[]),
        None => plain(StatusCode::NOT_FOUND, "no authorization server configured"),
    }
}

fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// Whether the client's `Accept` takes `what`.
fn accepts(h: &HeaderMap, what: &str) -> bool {
    h.get_all(header::ACCEPT).iter().filter_map(|v| v.to_str().ok()).any(|v| {
        v.split(',').any(|p| {
            let p = p.split(';').next().unwrap_or_default().trim();
            p == what || p == "*/*"
        })
    })
}

/// The request's trace context (a new one when it brings none, or a malformed one).
fn trace_of(h: &HeaderMap) -> TraceContext {
    header_str(h, "traceparent").and_then(TraceContext::parse).unwrap_or_default()
}
