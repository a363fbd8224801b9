//! Connections to the MCP server: a message pipe per transport (stdio bridge socket,
//! Streamable HTTP, legacy HTTP+SSE) and, on top of it, a session that correlates requests
//! with their responses and progress.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::jsonrpc::Message;
use crate::sse;
use crate::validate::Rev;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum UpstreamError {
    #[error("the server could not be reached")]
    Unreachable(String),
    #[error("the server closed the connection")]
    Closed,
    #[error("the server did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the server sent a malformed message")]
    Malformed(String),
    #[error("the server's message exceeded {0} bytes")]
    TooLarge(usize),
}

/// How to reach the server.
#[derive(Debug, Clone)]
pub enum Target {
    Stdio { socket: String },
    Http { url: String },
    Sse { url: String },
}

/// Size bounds for what the server sends.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub max_message: usize,
    pub max_event: usize,
}

/// A message from the server and, for Streamable HTTP, the (upstream) id of the request whose
/// response stream carried it: the transport says which request such messages belong to.
#[derive(Debug)]
pub struct Arrival {
    pub msg: Value,
    pub on_stream_of: Option<Value>,
}

impl Arrival {
    fn unrelated(msg: Value) -> Arrival {
        Arrival { msg, on_stream_of: None }
    }
}

type Incoming = mpsc::Receiver<Result<Arrival, UpstreamError>>;

/// Headers the gateway sets on HTTP requests to the server.
#[derive(Debug, Clone, Default)]
struct HttpState {
    session_id: Option<String>,
    protocol_version: Option<String>,
}

/// A Streamable HTTP connection: every message is its own POST.
struct HttpPipe {
    client: reqwest::Client,
    url: reqwest::Url,
    state: Arc<Mutex<HttpState>>,
    incoming: mpsc::Sender<Result<Arrival, UpstreamError>>,
    bounds: Bounds,
}

/// A bidirectional stream of JSON-RPC messages to one server connection.
#[derive(Clone)]
pub struct Pipe {
    /// Message-oriented transports (stdio socket, legacy SSE) write through this.
    out: Option<mpsc::Sender<Value>>,
    http: Option<Arc<HttpPipe>>,
    /// The stdio bridge connection's reader and writer: aborting them closes the socket, and
    /// the bridge then stops the server process (its whole group).
    process: Option<Arc<Vec<tokio::task::AbortHandle>>>,
}

/// One client (and connection pool) for every connection to the server: sessions share it.
fn http_client() -> reqwest::Client {
    static CLIENT: std::sync::LazyLock<reqwest::Client> = std::sync::LazyLock::new(|| {
        // Loopback only: the server runs in the same pod. The provider must exist before any
        // rustls-backed client is built, whichever binary or test builds it first.
        palisade_https::install_crypto_provider();
        // Idle connections are dropped before common servers' keep-alive timeouts (Node and
        // uvicorn close them after 5 s), so a request is never sent on a connection the server
        // is closing ("the server could not be reached" under light load).
        reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(64)
            .pool_idle_timeout(std::time::Duration::from_secs(3))
            .build()
            .unwrap_or_default()
    });
    CLIENT.clone()
}

impl Pipe {
    pub async fn connect(
        target: &Target,
        bounds: Bounds,
    ) -> Result<(Pipe, Incoming), UpstreamError> {
        match target {
            Target::Stdio { socket } => Self::stdio(socket, bounds).await,
            Target::Http { url } => Self::streamable_http(url, bounds),
            Target::Sse { url } => Self::legacy_sse(url, bounds).await,
        }
    }

    async fn stdio(socket: &str, bounds: Bounds) -> Result<(Pipe, Incoming), UpstreamError> {
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
        let process = Arc::new(vec![writer.abort_handle(), reader.abort_handle()]);
        Ok((Pipe { out: Some(out_tx), http: None, process: Some(process) }, in_rx))
    }

    /// Whether this connection is a server process of its own (the stdio bridge), which can
    /// be recycled.
    pub fn is_process(&self) -> bool {
        self.process.is_some()
    }

    /// Closes a stdio connection at once: the bridge stops the server process and its group.
    pub fn kill(&self) {
        if let Some(tasks) = &self.process {
            tasks.iter().for_each(tokio::task::AbortHandle::abort);
        }
    }

    fn streamable_http(url: &str, bounds: Bounds) -> Result<(Pipe, Incoming), UpstreamError> {
        let url =
            reqwest::Url::parse(url).map_err(|e| UpstreamError::Unreachable(e.to_string()))?;
        let (incoming, in_rx) = mpsc::channel(256);
        let http = HttpPipe {
            client: http_client(),
            url,
            state: Arc::new(Mutex::new(HttpState::default())),
            incoming,
            bounds,
        };
        Ok((Pipe { out: None, http: Some(Arc::new(http)), process: None }, in_rx))
    }

    async fn legacy_sse(url: &str, bounds: Bounds) -> Result<(Pipe, Incoming), UpstreamError> {
        let client = http_client();
        let resp = client
            .get(url)
            .header("accept", "text/event-stream")
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
                        if let (Some(tx), Ok(u)) = (endpoint_tx.take(), base.join(ev.data.trim())) {
                            let _ = tx.send(u.to_string());
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
                let _ = c.post(&endpoint).json(&msg).send().await;
            }
        });
        Ok((Pipe { out: Some(out_tx), http: None, process: None }, in_rx))
    }

    pub async fn send(&self, msg: Value) -> Result<(), UpstreamError> {
        if let Some(h) = &self.http {
            // Requests run concurrently; each POST's answer flows into the same stream.
            let h = h.clone();
            tokio::spawn(async move { post(&h, msg).await });
            return Ok(());
        }
        match &self.out {
            Some(out) => out.send(msg).await.map_err(|_| UpstreamError::Closed),
            None => Err(UpstreamError::Closed),
        }
    }

    /// Sets the revision the Streamable HTTP transport announces in `MCP-Protocol-Version`.
    pub fn set_protocol_version(&self, rev: &str) {
        if let Some(h) = &self.http
            && let Ok(mut s) = h.state.lock()
        {
            s.protocol_version = Some(rev.to_string());
        }
    }

    /// Ends an HTTP session (DELETE with its id); other transports end when dropped.
    pub async fn close(&self) {
        if let Some(h) = &self.http {
            let (id, version) = match h.state.lock() {
                Ok(g) => (g.session_id.clone(), g.protocol_version.clone()),
                Err(_) => (None, None),
            };
            if let Some(id) = id {
                let mut req = h.client.delete(h.url.clone()).header("mcp-session-id", id);
                if let Some(v) = version {
                    req = req.header("mcp-protocol-version", v);
                }
                let _ = req.send().await;
            }
        }
    }

    /// Opens the server-initiated message stream of a Streamable HTTP session (GET).
    pub fn listen(&self, tx: mpsc::Sender<Result<Arrival, UpstreamError>>, bounds: Bounds) {
        let Some(h) = self.http.clone() else { return };
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
        h.push(("mcp-name", crate::headers::encode(n)));
    }
    h
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
                    let _ = tx.send(Ok(Arrival::unrelated(json!({"jsonrpc": "2.0", "id": id, "error": {"code": crate::jsonrpc::UPSTREAM_UNAVAILABLE, "message": e.to_string()}})))).await;
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
    let resp = match req.json(&msg).send().await {
        Ok(r) => r,
        Err(e) => return fail(UpstreamError::Unreachable(e.to_string())).await,
    };
    if let Some(sid) = resp.headers().get("mcp-session-id").and_then(|v| v.to_str().ok())
        && let Ok(mut s) = state.lock()
    {
        s.session_id = Some(sid.to_string());
    }
    let status = resp.status();
    let ctype = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if status.as_u16() == 202 {
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
            // Servers answer transport-level refusals with `id: null`; it belongs to this request.
            if v.get("error").is_some()
                && v.get("id").is_none_or(Value::is_null)
                && let Some(id) = id.clone()
            {
                v["id"] = id;
            }
            let _ = tx.send(Ok(Arrival { msg: v, on_stream_of: id.clone() })).await;
        }
        _ if !status.is_success() => {
            fail(UpstreamError::Unreachable(format!("the server answered HTTP {status}"))).await
        }
        _ => fail(UpstreamError::Malformed("the body is not JSON-RPC".into())).await,
    }
}

use tokio::io::AsyncReadExt;

/// Where the messages for one forwarded request go.
type Sink = mpsc::Sender<Value>;

#[derive(Default)]
struct Routing {
    /// Upstream request id -> (client's id, sink).
    pending: HashMap<String, (Value, Sink)>,
    /// Upstream progress token -> (client's token, sink).
    progress: HashMap<String, (Value, Sink)>,
    /// Where server-initiated messages go (notifications without a token, server requests).
    unsolicited: Option<mpsc::Sender<Value>>,
    closed: Option<UpstreamError>,
}

fn key(v: &Value) -> String {
    v.to_string()
}

/// A logical connection to the server with request/response correlation. Ids and progress
/// tokens are rewritten to the gateway's own, so clients can neither collide nor guess.
pub struct Session {
    pipe: Pipe,
    routing: Arc<Mutex<Routing>>,
    next: AtomicU64,
    pub rev: Rev,
}

/// Messages belonging to one request: progress notifications, then the response (with the
/// client's id and token restored).
pub struct Exchange {
    pub rx: mpsc::Receiver<Value>,
    upstream_id: Value,
    session: Arc<Session>,
    /// The response arrived or the server was told to stop: nothing to cancel on drop.
    settled: bool,
}

impl Exchange {
    /// Tells the server the client gave up.
    pub async fn cancel(&mut self, reason: &str) {
        self.settled = true;
        let _ = self.session.pipe.send(cancelled(&self.upstream_id, reason)).await;
        self.session.forget(&self.upstream_id);
    }

    /// The request ran out of time. The server is told to stop; a stdio server, which may go
    /// on working regardless, is recycled: its connection (and so its process) is closed.
    /// Returns whether it was.
    pub async fn timed_out(&mut self) -> bool {
        self.cancel("the gateway's request timeout elapsed").await;
        self.session.recycle()
    }

    /// The next message for this request; the final one settles the exchange.
    pub async fn next(&mut self) -> Option<Value> {
        let m = self.rx.recv().await;
        match &m {
            Some(v) if v.get("result").is_some() || v.get("error").is_some() => self.settled = true,
            None => self.settled = true,
            _ => {}
        }
        m
    }
}

fn cancelled(upstream_id: &Value, reason: &str) -> Value {
    json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": upstream_id, "reason": reason}})
}

impl Drop for Exchange {
    /// Whoever waited for the answer is gone (the client disconnected): the server stops too.
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let (session, id) = (self.session.clone(), self.upstream_id.clone());
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = session.pipe.send(cancelled(&id, "the client disconnected")).await;
                session.forget(&id);
            });
        }
    }
}

impl Session {
    pub fn new(pipe: Pipe, mut incoming: Incoming, rev: Rev) -> Arc<Session> {
        let routing = Arc::new(Mutex::new(Routing::default()));
        let session =
            Arc::new(Session { pipe, routing: routing.clone(), next: AtomicU64::new(1), rev });
        tokio::spawn(async move {
            while let Some(item) = incoming.recv().await {
                match item {
                    Ok(a) => dispatch(&routing, a).await,
                    Err(e) => {
                        close_all(&routing, e);
                        return;
                    }
                }
            }
            close_all(&routing, UpstreamError::Closed);
        });
        session
    }

    pub fn pipe(&self) -> &Pipe {
        &self.pipe
    }

    /// Server-initiated messages go to `tx` from now on.
    pub fn set_unsolicited(&self, tx: mpsc::Sender<Value>) {
        if let Ok(mut r) = self.routing.lock() {
            r.unsolicited = Some(tx);
        }
    }

    pub fn closed(&self) -> Option<UpstreamError> {
        self.routing.lock().ok().and_then(|r| r.closed.clone())
    }

    fn forget(&self, upstream_id: &Value) {
        if let Ok(mut r) = self.routing.lock() {
            let k = key(upstream_id);
            r.pending.remove(&k);
            r.progress.retain(|_, (_, s)| !s.is_closed());
        }
    }

    /// Forwards a request; the client's id and progress token are restored on the way back.
    pub async fn request(
        self: &Arc<Session>,
        client_id: Value,
        method: &str,
        mut params: Option<Value>,
    ) -> Result<Exchange, UpstreamError> {
        if let Some(e) = self.closed() {
            return Err(e);
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let upstream_id = Value::String(format!("pg-{n}"));
        let (tx, rx) = mpsc::channel(64);
        {
            let mut r = self.routing.lock().map_err(|_| UpstreamError::Closed)?;
            if let Some(token) = params.as_mut().and_then(|p| p.pointer_mut("/_meta/progressToken"))
            {
                let ours = Value::String(format!("pg-p-{n}"));
                let theirs = std::mem::replace(token, ours.clone());
                r.progress.insert(key(&ours), (theirs, tx.clone()));
            }
            r.pending.insert(key(&upstream_id), (client_id, tx));
        }
        let msg = Message::Request { id: upstream_id.clone(), method: method.to_string(), params }
            .to_value();
        if let Err(e) = self.pipe.send(msg).await {
            self.forget(&upstream_id);
            return Err(e);
        }
        Ok(Exchange { rx, upstream_id, session: self.clone(), settled: false })
    }

    /// Sends a request and waits for its response (initialize, discover, probes).
    pub async fn call(
        self: &Arc<Session>,
        method: &str,
        params: Option<Value>,
        timeout: Duration,
    ) -> Result<Value, UpstreamError> {
        let mut ex = self.request(Value::from(0), method, params).await?;
        let wait = async {
            while let Some(m) = ex.next().await {
                if m.get("result").is_some() || m.get("error").is_some() {
                    return Ok(m);
                }
            }
            Err(self.closed().unwrap_or(UpstreamError::Closed))
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(r) => r,
            Err(_) => {
                ex.timed_out().await;
                Err(UpstreamError::Timeout(timeout))
            }
        }
    }

    pub async fn notify(&self, method: &str, params: Option<Value>) -> Result<(), UpstreamError> {
        self.pipe
            .send(Message::Notification { method: method.to_string(), params }.to_value())
            .await
    }

    /// Sends the client's response to a server-initiated request.
    pub async fn respond(&self, msg: Value) -> Result<(), UpstreamError> {
        self.pipe.send(msg).await
    }

    pub async fn close(&self) {
        self.pipe.close().await;
    }

    /// Ends a stdio server process (see [`Pipe::kill`]); every request still waiting on it is
    /// answered with an error. `false` for other transports, which are left alone.
    pub fn recycle(&self) -> bool {
        if !self.pipe.is_process() {
            return false;
        }
        self.pipe.kill();
        close_all(&self.routing, UpstreamError::Closed);
        warn!("a request timed out: the stdio server process was stopped and will be restarted");
        true
    }
}

/// The stateless revision's subscription notifications name the request that opened them.
const SUBSCRIPTION_ID: &str = "io.modelcontextprotocol/subscriptionId";

async fn dispatch(routing: &Mutex<Routing>, arrival: Arrival) {
    let Arrival { msg: mut v, on_stream_of } = arrival;
    let id = v.get("id").filter(|i| !i.is_null()).cloned();
    let is_response = v.get("result").is_some() || v.get("error").is_some();
    let target: Option<Sink> = {
        let Ok(mut r) = routing.lock() else { return };
        if is_response {
            match id.as_ref().and_then(|i| r.pending.remove(&key(i))) {
                Some((client_id, sink)) => {
                    v["id"] = client_id;
                    Some(sink)
                }
                None => {
                    warn!("the server answered a request the gateway never sent; dropped");
                    None
                }
            }
        } else if v.get("method").and_then(Value::as_str) == Some("notifications/progress") {
            let token = v.pointer("/params/progressToken").map(key);
            match token.and_then(|t| r.progress.get(&t).cloned()) {
                Some((theirs, sink)) => {
                    v["params"]["progressToken"] = theirs;
                    Some(sink)
                }
                None => r.unsolicited.clone(),
            }
        } else {
            // A message on a request's own stream, or one naming its subscription, belongs to
            // that request; ids are the gateway's, so the client's is put back.
            let subscription =
                v.pointer("/params/_meta").and_then(|m| m.get(SUBSCRIPTION_ID)).cloned();
            // Server requests keep going to the session's stream, where answers are tracked.
            let owner = on_stream_of
                .as_ref()
                .filter(|_| id.is_none())
                .or(subscription.as_ref())
                .and_then(|uid| r.pending.get(&key(uid)).cloned());
            match owner {
                Some((client_id, sink)) => {
                    if subscription.is_some()
                        && let Some(meta) =
                            v.pointer_mut("/params/_meta").and_then(Value::as_object_mut)
                    {
                        meta.insert(SUBSCRIPTION_ID.into(), client_id);
                    }
                    Some(sink)
                }
                None => r.unsolicited.clone(),
            }
        }
    };
    if let Some(sink) = target {
        let _ = sink.send(v).await;
    }
}

fn close_all(routing: &Mutex<Routing>, e: UpstreamError) {
    if let Ok(mut r) = routing.lock() {
        for (_, (client_id, sink)) in r.pending.drain() {
            let _ = sink.try_send(json!({"jsonrpc": "2.0", "id": client_id, "error": {"code": crate::jsonrpc::UPSTREAM_UNAVAILABLE, "message": "the server closed the connection"}}));
        }
        r.progress.clear();
        r.closed = Some(e);
    }
}
