//! How answers go on the wire: JSON bodies, JSON-RPC errors and plain refusals (each marked
//! [`Refused`] for the refusal audit), a pipeline reply as JSON or as an SSE stream, and the
//! event streams of GET and legacy SSE.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::accepts;
use crate::pipeline::{Refusal, Reply};
use crate::protocol::jsonrpc::{
    self, LIMIT_EXCEEDED, STATE_UNAVAILABLE, UPSTREAM_UNAVAILABLE, is_final,
};
use crate::protocol::sse;

/// Marks a response that refuses the request, with the reason, for the refusal audit.
#[derive(Clone)]
pub(super) struct Refused {
    pub code: i64,
    pub reason: String,
}

pub(super) fn json_response(status: u16, body: &Value, extra: &[(&str, String)]) -> Response {
    let mut r = Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::OK))
        .header(header::CONTENT_TYPE, "application/json");
    for (k, v) in extra {
        r = r.header(*k, v.as_str());
    }
    r.body(Body::from(body.to_string()))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// A plain-text answer; a client error is a refusal.
pub(super) fn plain(status: StatusCode, text: &'static str) -> Response {
    let mut r = (status, text).into_response();
    if status.is_client_error() {
        r.extensions_mut().insert(Refused { code: 0, reason: text.to_string() });
    }
    r
}

/// A JSON-RPC error refusing the request.
pub(super) fn error_response(
    status: u16,
    id: Option<Value>,
    code: i64,
    message: impl Into<String>,
    data: Option<Value>,
) -> Response {
    refused(Refusal::new(status, id, code, message, data))
}

/// The pipeline's refusal, as it goes to the client.
pub(super) fn refused(r: Refusal) -> Response {
    let code = r.message.pointer("/error/code").and_then(Value::as_i64).unwrap_or_default();
    let reason =
        r.message.pointer("/error/message").and_then(Value::as_str).unwrap_or_default().to_string();
    let mut resp = json_response(r.status, &r.message, &[]);
    resp.extensions_mut().insert(Refused { code, reason });
    resp
}

/// A JSON refusal that is not JSON-RPC (the approvals API).
pub(super) fn api_refusal(status: StatusCode, reason: String) -> Response {
    let mut r = json_response(status.as_u16(), &json!({"error": reason}), &[]);
    r.extensions_mut().insert(Refused { code: 0, reason });
    r
}

fn no_answer() -> Response {
    error_response(200, None, UPSTREAM_UNAVAILABLE, "The MCP server did not answer", None)
}

/// The HTTP status of a final message: errors map to statuses on the stateless wire (and, for
/// limits and an unreachable state store, which clients should retry, on any wire); the
/// session era answers other errors with 200.
fn status_for(v: &Value, stateless: bool) -> u16 {
    match v.pointer("/error/code").and_then(Value::as_i64) {
        Some(code) if stateless || code == LIMIT_EXCEEDED || code == STATE_UNAVAILABLE => {
            jsonrpc::http_status(code)
        }
        _ => 200,
    }
}

/// A reply as an HTTP response: JSON when the final message comes first (or the client
/// takes only JSON), SSE when the server streams (progress, logs) and the client accepts it.
pub(super) async fn reply(
    reply: Reply,
    h: &HeaderMap,
    stateless: bool,
    extra: Vec<(&'static str, String)>,
) -> Response {
    let mut rx = match reply {
        Reply::Final(v) => return json_response(status_for(&v, stateless), &v, &extra),
        Reply::Stream(rx) => rx,
    };
    let Some(first) = rx.recv().await else { return no_answer() };
    if is_final(&first) {
        return json_response(status_for(&first, stateless), &first, &extra);
    }
    if !accepts(h, "text/event-stream") {
        // JSON-only client: notifications are dropped, the final response is returned.
        while let Some(m) = rx.recv().await {
            if is_final(&m) {
                return json_response(status_for(&m, stateless), &m, &extra);
            }
        }
        return no_answer();
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
            *done = is_final(&m);
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

/// The final message of a reply (for batches, where nothing streams).
pub(super) async fn final_of(reply: Reply) -> Option<Value> {
    match reply {
        Reply::Final(v) => Some(v),
        Reply::Stream(mut rx) => {
            while let Some(m) = rx.recv().await {
                if is_final(&m) {
                    return Some(m);
                }
            }
            None
        }
    }
}

/// A session's event stream: an optional first frame, the backlog, then live events, with
/// keep-alive comments so proxies do not close an idle stream. Legacy SSE names its events.
pub(super) fn event_stream(
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
