//! The HTTP+SSE transport of 2024-11-05: GET `/sse` opens a stream whose first event names
//! where to POST; POST `/messages?sessionId=` carries the client's messages, the first of which
//! must be `initialize`; every answer travels on the stream.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::extract::{Extension, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tokio::sync::mpsc;

use super::encode::{event_stream, plain};
use super::layers::bounded_body;
use super::{App, trace_of};
use crate::controls::authz::Principal;
use crate::pipeline::open::{Opening, open};
use crate::pipeline::{Reply, dispatch};
use crate::protocol::jsonrpc::Message;
use crate::protocol::sse;
use crate::state::new_id;

/// Streams waiting for their `initialize`, by the session ID their endpoint event named.
pub(super) type Waiting = Mutex<HashMap<String, mpsc::Sender<(u64, String)>>>;

pub(super) async fn get(State(app): State<App>) -> Response {
    if !app.gw.allowed().iter().any(|r| !r.stateless()) {
        return plain(StatusCode::NOT_FOUND, "the session-era transports are not enabled");
    }
    let id = new_id();
    let (tx, rx) = mpsc::channel(64);
    if let Ok(mut w) = app.waiting.lock() {
        w.insert(id.clone(), tx);
    }
    // The first event tells the client where to POST; the session exists after initialize.
    let endpoint = sse::encode(Some("endpoint"), None, &format!("/messages?sessionId={id}"));
    event_stream(rx, vec![], true, Some(endpoint))
}

#[derive(serde::Deserialize)]
pub(super) struct SessionQuery {
    #[serde(rename = "sessionId")]
    session_id: String,
}

pub(super) async fn post(
    State(app): State<App>,
    Extension(principal): Extension<Principal>,
    h: HeaderMap,
    Query(q): Query<SessionQuery>,
    body: axum::body::Body,
) -> Response {
    let trace = trace_of(&h);
    let Some(body) = bounded_body(&app.gw, body).await else {
        return plain(StatusCode::PAYLOAD_TOO_LARGE, "message too large");
    };
    let Ok(value) = serde_json::from_slice::<Value>(&body) else {
        return plain(StatusCode::BAD_REQUEST, "malformed JSON");
    };
    let gw = &app.gw;
    let session = match gw.session(&q.session_id) {
        Some(s) => s,
        None => {
            // The first message of a waiting SSE connection must be initialize.
            let Some(tx) = app.waiting.lock().ok().and_then(|mut w| w.remove(&q.session_id)) else {
                return plain(StatusCode::NOT_FOUND, "session not found");
            };
            let Ok(Message::Request { id, method, params }) = Message::parse(&value) else {
                return plain(StatusCode::BAD_REQUEST, "send initialize first");
            };
            if method != "initialize" {
                return plain(StatusCode::BAD_REQUEST, "send initialize first");
            }
            let deliver = tx.clone();
            let opening = Opening {
                id,
                params,
                principal,
                trace,
                session_id: q.session_id.clone(),
                stream: Some(tx),
            };
            // The answer to initialize travels on the stream, like every answer here.
            let answer = match open(gw, opening).await {
                Ok((_, result)) => result,
                Err(r) => r.message,
            };
            let _ = deliver.send((0, answer.to_string())).await;
            return StatusCode::ACCEPTED.into_response();
        }
    };
    if !dispatch::owns(gw, &session, &principal, &trace) {
        return plain(StatusCode::NOT_FOUND, "session not found");
    }
    session.touch();
    if let Some(reply) = dispatch::message(gw, &session, value, &principal, &trace).await {
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
