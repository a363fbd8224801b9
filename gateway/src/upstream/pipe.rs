//! One message pipe per transport to the server: the stdio bridge's Unix socket
//! (newline-delimited JSON-RPC), Streamable HTTP (a POST per message, answers as JSON or SSE)
//! and the legacy HTTP+SSE transport (an event stream, POSTs to the endpoint it names).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::credentials::Identity;
use super::{Bounds, UpstreamError};
use crate::protocol::revision::Rev;
use crate::protocol::sse;

/// A message from the server and, for Streamable HTTP, the (upstream) id of the request whose
/// response stream carried it: the transport says which request such messages belong to.
#[derive(Debug)]
pub struct Arrival {
    pub msg: Value,
    pub on_stream_of: Option<Value>,
}

impl Arrival {
    pub(crate) fn unrelated(msg: Value) -> Arrival {
        Arrival { msg, on_stream_of: None }
    }
}

pub type Incoming = mpsc::Receiver<Result<Arrival, UpstreamError>>;

/// `req` with the credential of `identity`, if any; without it nothing is sent.
async fn authorized(
    req: reqwest::RequestBuilder,
    identity: Option<&Identity>,
) -> Result<reqwest::RequestBuilder, UpstreamError> {
    let Some(identity) = identity else { return Ok(req) };
    let (name, value) =
        identity.header().await.map_err(|e| UpstreamError::Credentials(e.to_string()))?;
    Ok(req.header(name, value))
}

/// Headers the gateway sets on HTTP requests to the server.
#[derive(Debug, Clone, Default)]
struct HttpState {
    session_id: Option<String>,
    protocol_version: Option<String>,
}

/// A Streamable HTTP connection: every message is its own POST.
pub struct HttpPipe {
    client: reqwest::Client,
    url: reqwest::Url,
    /// Who the requests speak for (`upstreamAuth`); `None`: no credential is sent.
    identity: Option<Arc<Identity>>,
    state: Arc<Mutex<HttpState>>,
    incoming: mpsc::Sender<Result<Arrival, UpstreamError>>,
    bounds: Bounds,
    /// Why the last request could not be sent (TLS, DNS, connection), for the gateway's log:
    /// clients are only told that the server could not be reached.
    failure: Mutex<Option<String>>,
    /// The POST of each request still being answered, by request id: a request nobody waits
    /// for any more is abandoned, and the server's connection for it closed.
    running: Mutex<HashMap<String, tokio::task::AbortHandle>>,
}

/// An error with its causes (`certificate: invalid peer certificate: UnknownIssuer`).
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// A bidirectional stream of JSON-RPC messages to one server connection, per transport.
#[derive(Clone)]
pub enum Pipe {
    /// The stdio bridge's socket. Its reader and writer tasks own the socket: aborting them
    /// closes it, and the bridge then stops the server process (its whole group).
    Stdio { out: mpsc::Sender<Value>, tasks: Arc<Vec<tokio::task::AbortHandle>> },
    /// Streamable HTTP: every message is its own POST.
    Http(Arc<HttpPipe>),
    /// Legacy HTTP+SSE: messages are POSTed to the endpoint the event stream named.
    Sse { out: mpsc::Sender<Value> },
    /// A virtual server: several servers' connections behind one.
    Virtual(Arc<super::aggregate::Aggregate>),
}

impl Pipe {
    pub(super) async fn stdio(
        socket: &str,
        bounds: Bounds,
    ) -> Result<(Pipe, Incoming), UpstreamError> {
        let stream = tokio::net::UnixStream::connect(socket)
            .await
            .map_err(|e| UpstreamError::Unreachable(e.to_string()))?;
        let (rd, mut wr) = stream.into_split();
        let (out_tx, mut out_rx) = mpsc::channel::<Value>(64);
        let (in_tx, in_rx) = mpsc::channel(256);
        let writer = tokio::spawn(async move {
            while let Some(v) = out_rx.recv().await {
                let mut line = v.to_string();
                line.push('\n');
                if wr.write_all(line.as_bytes()).await.is_err() {
                    break;
                }
            }
        });
        let reader = tokio::spawn(async move {
            let mut reader = BufReader::new(rd);
            let mut line = Vec::new();
            loop {
                line.clear();
                // Bounded read: a line longer than the limit ends the connection.
                let mut limited = (&mut reader).take(bounds.max_message as u64 + 1);
                match limited.read_until(b'\n', &mut line).await {
                    Ok(0) => {
                        let _ = in_tx.send(Err(UpstreamError::Closed)).await;
                        return;
                    }
                    Ok(_) if line.len() > bounds.max_message && !line.ends_with(b"\n") => {
                        let _ = in_tx.send(Err(UpstreamError::TooLarge(bounds.max_message))).await;
                        return;
                    }
                    Ok(_) => {
                        let text = String::from_utf8_lossy(&line);
                        if text.trim().is_empty() {
                            continue;
                        }
                        let msg = serde_json::from_str::<Value>(text.trim())
                            .map(Arrival::unrelated)
                            .map_err(|e| UpstreamError::Malformed(e.to_string()));
                        if in_tx.send(msg).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = in_tx.send(Err(UpstreamError::Unreachable(e.to_string()))).await;
                        return;
                    }
                }
            }
        });
        let tasks = Arc::new(vec![writer.abort_handle(), reader.abort_handle()]);
        Ok((Pipe::Stdio { out: out_tx, tasks }, in_rx))
    }

    /// Whether this connection is a server process of its own (the stdio bridge), which can
    /// be recycled.
    pub fn is_process(&self) -> bool {
        matches!(self, Pipe::Stdio { .. })
    }

    /// Closes a stdio connection at once: the bridge stops the server process and its group.
    pub fn kill(&self) {
        if let Pipe::Stdio { tasks, .. } = self {
            tasks.iter().for_each(tokio::task::AbortHandle::abort);
        }
    }

    pub(super) fn streamable_http(
        client: &reqwest::Client,
        url: &str,
        bounds: Bounds,
        identity: Option<Arc<Identity>>,
    ) -> Result<(Pipe, Incoming), UpstreamError> {
        let url =
            reqwest::Url::parse(url).map_err(|e| UpstreamError::Unreachable(e.to_string()))?;
        let (incoming, in_rx) = mpsc::channel(256);
        let http = HttpPipe {
            client: client.clone(),
            url,
            identity,
            state: Arc::new(Mutex::new(HttpState::default())),
            incoming,
            bounds,
            failure: Mutex::new(None),
            running: Mutex::new(HashMap::new()),
        };
        Ok((Pipe::Http(Arc::new(http)), in_rx))
    }

    pub(super) async fn legacy_sse(
        client: &reqwest::Client,
        url: &str,
        bounds: Bounds,
        identity: Option<Arc<Identity>>,
    ) -> Result<(Pipe, Incoming), UpstreamError> {
        let get = client.get(url).header("accept", "text/event-stream");
        let resp = authorized(get, identity.as_deref())
            .await?
            .send()
            .await
            .map_err(|e| UpstreamError::Unreachable(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(UpstreamError::Unreachable(format!(
                "GET {} answered {}",
                url,
                resp.status()
            )));
        }
        let (in_tx, in_rx) = mpsc::channel(256);
        let (endpoint_tx, endpoint_rx) = tokio::sync::oneshot::channel::<String>();
        let base =
            reqwest::Url::parse(url).map_err(|e| UpstreamError::Unreachable(e.to_string()))?;
        tokio::spawn(async move {
            let mut parser = sse::Parser::new(bounds.max_event);
            let mut body = resp.bytes_stream();
            let mut endpoint_tx = Some(endpoint_tx);
            while let Some(chunk) = body.next().await {
                let Ok(chunk) = chunk else { break };
                let events = match parser.feed(&chunk) {
                    Ok(e) => e,
                    Err(_) => {
                        let _ = in_tx.send(Err(UpstreamError::TooLarge(bounds.max_event))).await;
                        return;
                    }
                };
                for ev in events {
                    if ev.event.as_deref() == Some("endpoint") {
                        // The endpoint must be on the server's own origin: messages (and the
                        // credential they carry) never go where the server points them.
                        match (endpoint_tx.take(), base.join(ev.data.trim())) {
                            (Some(tx), Ok(u)) if u.origin() == base.origin() => {
                                let _ = tx.send(u.to_string());
                            }
                            (Some(_), _) => {
                                warn!("the server announced a message endpoint on another origin");
                                return;
                            }
                            (None, _) => {}
                        }
                        continue;
                    }
                    let msg = serde_json::from_str::<Value>(&ev.data)
                        .map(Arrival::unrelated)
                        .map_err(|e| UpstreamError::Malformed(e.to_string()));
                    if in_tx.send(msg).await.is_err() {
                        return;
                    }
                }
            }
            let _ = in_tx.send(Err(UpstreamError::Closed)).await;
        });
        let endpoint = tokio::time::timeout(Duration::from_secs(10), endpoint_rx)
            .await
            .map_err(|_| UpstreamError::Timeout(Duration::from_secs(10)))?
            .map_err(|_| UpstreamError::Closed)?;
        let (out_tx, mut out_rx) = mpsc::channel::<Value>(64);
        let c = client.clone();
        tokio::spawn(async move {
            while let Some(msg) = out_rx.recv().await {
                // Answers arrive on the event stream; the POST only acknowledges.
                match authorized(c.post(&endpoint).json(&msg), identity.as_deref()).await {
                    Ok(req) => {
                        let _ = req.send().await;
                    }
                    Err(e) => debug!(error = %e, "no credential for a message to the server"),
                }
            }
        });
        Ok((Pipe::Sse { out: out_tx }, in_rx))
    }

    pub async fn send(&self, msg: Value) -> Result<(), UpstreamError> {
        match self {
            Pipe::Http(h) => {
                // Requests run concurrently; each POST's answer flows into the same stream.
                let key = msg.get("id").filter(|_| expects_answer(&msg)).map(Value::to_string);
                let (task, own_key) = (h.clone(), key.clone());
                // Registered before the task can finish and remove itself.
                let mut running = h.running.lock().map_err(|_| UpstreamError::Closed)?;
                let handle = tokio::spawn(async move {
                    post(&task, msg).await;
                    if let (Some(k), Ok(mut running)) = (own_key.as_ref(), task.running.lock()) {
                        running.remove(k);
                    }
                });
                if let Some(k) = key {
                    running.insert(k, handle.abort_handle());
                }
                Ok(())
            }
            Pipe::Stdio { out, .. } | Pipe::Sse { out } => {
                out.send(msg).await.map_err(|_| UpstreamError::Closed)
            }
            Pipe::Virtual(a) => a.send(msg).await,
        }
    }

    /// Stops receiving the answer to request `id` (Streamable HTTP: its POST is dropped, which
    /// closes the server's stream for it). Other transports share one stream: nothing to do.
    pub fn abandon(&self, id: &Value) {
        if let Pipe::Http(h) = self
            && let Ok(mut running) = h.running.lock()
            && let Some(task) = running.remove(&id.to_string())
        {
            task.abort();
        }
    }

    /// Why the last request of a Streamable HTTP connection could not be sent, if it could not.
    pub fn last_failure(&self) -> Option<String> {
        match self {
            Pipe::Http(h) => h.failure.lock().ok().and_then(|f| f.clone()),
            Pipe::Virtual(a) => a.last_failure(),
            _ => None,
        }
    }

    /// Sets the revision the Streamable HTTP transport announces in `MCP-Protocol-Version`.
    pub fn set_protocol_version(&self, rev: &str) {
        if let Pipe::Virtual(a) = self {
            a.set_protocol_version(rev);
        }
        if let Pipe::Http(h) = self
            && let Ok(mut s) = h.state.lock()
        {
            s.protocol_version = Some(rev.to_string());
        }
    }

    /// Ends an HTTP session (DELETE with its id); other transports end when dropped.
    pub async fn close(&self) {
        if let Pipe::Virtual(a) = self {
            Box::pin(a.close()).await;
        }
        if let Pipe::Http(h) = self {
            let (id, version) = match h.state.lock() {
                Ok(g) => (g.session_id.clone(), g.protocol_version.clone()),
                Err(_) => (None, None),
            };
            if let Some(id) = id {
                let mut req = h.client.delete(h.url.clone()).header("mcp-session-id", id);
                if let Some(v) = version {
                    req = req.header("mcp-protocol-version", v);
                }
                if let Ok(req) = authorized(req, h.identity.as_deref()).await {
                    let _ = req.send().await;
                }
            }
        }
    }

    /// Opens the server-initiated message stream of a Streamable HTTP session (GET).
    pub fn listen(&self, tx: mpsc::Sender<Result<Arrival, UpstreamError>>, bounds: Bounds) {
        let Pipe::Http(h) = self else { return };
        let h = h.clone();
        tokio::spawn(async move {
            let (id, version) = match h.state.lock() {
                Ok(g) => (g.session_id.clone(), g.protocol_version.clone()),
                Err(_) => return,
            };
            let Some(id) = id else { return };
            let mut req = h
                .client
                .get(h.url.clone())
                .header("accept", "text/event-stream")
                .header("mcp-session-id", id);
            if let Some(v) = version {
                req = req.header("mcp-protocol-version", v);
            }
            let Ok(req) = authorized(req, h.identity.as_deref()).await else { return };
            let Ok(resp) = req.send().await else { return };
            if !resp.status().is_success() {
                return; // 405: the server has no such stream
            }
            let mut parser = sse::Parser::new(bounds.max_event);
            let mut body = resp.bytes_stream();
            while let Some(Ok(chunk)) = body.next().await {
                let Ok(events) = parser.feed(&chunk) else { return };
                for ev in events {
                    if ev.data.trim().is_empty() {
                        continue;
                    }
                    let msg = serde_json::from_str::<Value>(&ev.data)
                        .map(Arrival::unrelated)
                        .map_err(|e| UpstreamError::Malformed(e.to_string()));
                    if tx.send(msg).await.is_err() {
                        return;
                    }
                }
            }
        });
    }
}

/// Headers a stateless-era request carries, derived from its body.
fn routing_headers(msg: &Value) -> Vec<(&'static str, String)> {
    let mut h = Vec::new();
    let Some(method) = msg.get("method").and_then(Value::as_str) else { return h };
    h.push(("mcp-method", method.to_string()));
    let name = match method {
        "tools/call" | "prompts/get" => msg.pointer("/params/name"),
        "resources/read" => msg.pointer("/params/uri"),
        _ => None,
    };
    if let Some(n) = name.and_then(Value::as_str) {
        h.push(("mcp-name", crate::protocol::headers::encode(n)));
    }
    h
}

/// Whether `msg` is a request (a method and an id): only requests are answered.
fn expects_answer(msg: &Value) -> bool {
    msg.get("method").is_some() && msg.get("id").is_some_and(|i| !i.is_null())
}

async fn post(h: &HttpPipe, msg: Value) {
    let (client, state, tx, bounds) = (&h.client, &h.state, &h.incoming, h.bounds);
    let id = msg.get("id").cloned();
    let fail = |e: UpstreamError| {
        // A transport failure answers the request it was for.
        let tx = tx.clone();
        let id = id.clone();
        async move {
            match id {
                Some(id) if !id.is_null() => {
                    let _ = tx.send(Ok(Arrival::unrelated(json!({"jsonrpc": "2.0", "id": id, "error": {"code": crate::protocol::jsonrpc::UPSTREAM_UNAVAILABLE, "message": e.to_string()}})))).await;
                }
                _ => debug!(error = %e, "notification to the server failed"),
            }
        }
    };
    let (session, version) = match state.lock() {
        Ok(s) => (s.session_id.clone(), s.protocol_version.clone()),
        Err(_) => (None, None),
    };
    let mut req = client
        .post(h.url.clone())
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream");
    if let Some(s) = &session {
        req = req.header("mcp-session-id", s);
    }
    let stateless = version.as_deref().and_then(Rev::parse).is_some_and(|r| r.stateless());
    if let Some(v) = &version {
        req = req.header("mcp-protocol-version", v);
    }
    if stateless {
        for (k, v) in routing_headers(&msg) {
            req = req.header(k, v);
        }
    }
    let req = match authorized(req, h.identity.as_deref()).await {
        Ok(r) => r,
        Err(e) => return fail(e).await,
    };
    let resp = match req.json(&msg).send().await {
        Ok(r) => r,
        Err(e) => {
            let detail = with_causes(&e);
            if let Ok(mut f) = h.failure.lock() {
                *f = Some(detail.clone());
            }
            return fail(UpstreamError::Unreachable(detail)).await;
        }
    };
    if let Some(sid) = resp.headers().get("mcp-session-id").and_then(|v| v.to_str().ok())
        && let Ok(mut s) = state.lock()
    {
        s.session_id = Some(sid.to_string());
    }
    let status = resp.status();
    if status.as_u16() == 404 && session.is_some() {
        // The server no longer knows the session (it restarted, or ended it): this connection
        // is over. Every request waiting on it is answered, and the next one opens a new one.
        info!("the server no longer knows the gateway's session; the connection is closed");
        let _ = tx.send(Err(UpstreamError::Closed)).await;
        return;
    }
    let ctype = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if status.as_u16() == 202 {
        return;
    }
    if !expects_answer(&msg) {
        // A notification or a response to the server: nothing comes back for it. A refusal
        // (say, a cancellation for a request the server already finished) names no request of
        // the gateway's, so it is only logged.
        if !status.is_success() {
            debug!(%status, "the server refused a notification or response");
        }
        return;
    }
    if ctype.starts_with("text/event-stream") {
        let mut parser = sse::Parser::new(bounds.max_event);
        let mut body = resp.bytes_stream();
        while let Some(chunk) = body.next().await {
            let Ok(chunk) = chunk else { return fail(UpstreamError::Closed).await };
            match parser.feed(&chunk) {
                Ok(events) => {
                    for ev in events.into_iter().filter(|e| !e.data.trim().is_empty()) {
                        let m = serde_json::from_str::<Value>(&ev.data)
                            .map(|msg| Arrival { msg, on_stream_of: id.clone() })
                            .map_err(|e| UpstreamError::Malformed(e.to_string()));
                        if tx.send(m).await.is_err() {
                            return;
                        }
                    }
                }
                Err(_) => return fail(UpstreamError::TooLarge(bounds.max_event)).await,
            }
        }
        return;
    }
    // JSON (also for 4xx answers that carry a JSON-RPC error), bounded in size.
    let mut body = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else { return fail(UpstreamError::Closed).await };
        body.extend_from_slice(&chunk);
        if body.len() > bounds.max_message {
            return fail(UpstreamError::TooLarge(bounds.max_message)).await;
        }
    }
    match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Array(items)) => {
            for m in items {
                let _ = tx.send(Ok(Arrival { msg: m, on_stream_of: id.clone() })).await;
            }
        }
        Ok(mut v) if v.is_object() => {
            // Servers answer transport-level refusals with `id: null` (or an id of their own,
            // like "server-error"); the refusal belongs to this request.
            if v.get("error").is_some()
                && (!status.is_success() || v.get("id").is_none_or(Value::is_null))
                && let Some(id) = id.clone()
            {
                v["id"] = id;
            }
            let _ = tx.send(Ok(Arrival { msg: v, on_stream_of: id.clone() })).await;
        }
        _ if !status.is_success() => {
            let detail = format!("the server answered HTTP {status}");
            if let Ok(mut f) = h.failure.lock() {
                *f = Some(detail.clone());
            }
            fail(UpstreamError::Unreachable(detail)).await
        }
        _ => fail(UpstreamError::Malformed("the body is not JSON-RPC".into())).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_requests_wait_for_an_answer() {
        assert!(expects_answer(&json!({"jsonrpc": "2.0", "id": "pg-1", "method": "ping"})));
        assert!(!expects_answer(
            &json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": "pg-1"}})
        ));
        // The client's answer to a server request carries the server's id but no method.
        assert!(!expects_answer(&json!({"jsonrpc": "2.0", "id": 7, "result": {}})));
        assert!(!expects_answer(&json!({"jsonrpc": "2.0", "id": null, "method": "ping"})));
    }
}
