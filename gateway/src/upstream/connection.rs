//! A logical connection to the server on top of a pipe: requests are correlated with their
//! responses and progress notifications (ids and progress tokens rewritten to the gateway's
//! own), notifications on a request's stream or naming its subscription are routed to it, and
//! everything else goes to the connection's listener.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::UpstreamError;
use super::credentials::Identity;
use super::pipe::{Arrival, Incoming, Pipe};
use crate::protocol::jsonrpc::{Message, is_final};
use crate::protocol::revision::Rev;

/// Where the messages for one forwarded request go.
type Sink = mpsc::Sender<Value>;

#[derive(Default)]
struct Routing {
    /// Upstream request id -> (client's id, sink).
    pending: HashMap<String, (Value, Sink)>,
    /// How many requests this connection sent (their ids are `pg-0` .. `pg-<issued - 1>`).
    issued: u64,
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
pub struct Connection {
    pipe: Pipe,
    routing: Arc<Mutex<Routing>>,
    next: AtomicU64,
    pub rev: Rev,
    /// Who the connection speaks for (`upstreamAuth`), when the gateway sends credentials.
    identity: Option<Arc<Identity>>,
    /// Counts this connection among its connector's live ones while it exists.
    _live: Live,
}

/// One live connection of a connector: counted up when made, down when dropped.
pub struct Live(Arc<AtomicUsize>);

impl Live {
    pub fn new(count: &Arc<AtomicUsize>) -> Live {
        count.fetch_add(1, Ordering::Relaxed);
        Live(count.clone())
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Messages belonging to one request: progress notifications, then the response (with the
/// client's id and token restored).
pub struct Exchange {
    pub rx: mpsc::Receiver<Value>,
    upstream_id: Value,
    connection: Arc<Connection>,
    /// The response arrived or the server was told to stop: nothing to cancel on drop.
    settled: bool,
}

impl Exchange {
    /// Tells the server the client gave up.
    pub async fn cancel(&mut self, reason: &str) {
        self.settled = true;
        let _ = self.connection.pipe.send(cancelled(&self.upstream_id, reason)).await;
        self.connection.forget(&self.upstream_id);
    }

    /// The request ran out of time. The server is told to stop; a stdio server, which may go
    /// on working regardless, is recycled: its connection (and so its process) is closed.
    /// Returns whether it was.
    pub async fn timed_out(&mut self) -> bool {
        self.cancel("the gateway's request timeout elapsed").await;
        self.connection.recycle()
    }

    /// The next message for this request; the final one settles the exchange.
    pub async fn next(&mut self) -> Option<Value> {
        let m = self.rx.recv().await;
        match &m {
            Some(v) if is_final(v) => self.settled = true,
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
        let (connection, id) = (self.connection.clone(), self.upstream_id.clone());
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = connection.pipe.send(cancelled(&id, "the client disconnected")).await;
                connection.forget(&id);
            });
        }
    }
}

impl Connection {
    /// Who this connection speaks for, when the gateway sends credentials to the server.
    pub fn identity(&self) -> Option<&Identity> {
        self.identity.as_deref()
    }

    pub fn new(
        pipe: Pipe,
        mut incoming: Incoming,
        rev: Rev,
        identity: Option<Arc<Identity>>,
        live: Live,
    ) -> Arc<Connection> {
        let routing = Arc::new(Mutex::new(Routing::default()));
        let connection = Arc::new(Connection {
            pipe,
            routing: routing.clone(),
            next: AtomicU64::new(1),
            rev,
            identity,
            _live: live,
        });
        tokio::spawn(async move {
            while let Some(item) = incoming.recv().await {
                match item {
                    Ok(a) => dispatch(&routing, a),
                    Err(e) => {
                        close_all(&routing, e);
                        return;
                    }
                }
            }
            close_all(&routing, UpstreamError::Closed);
        });
        connection
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
        // Nobody waits for the rest of the answer: stop receiving it.
        self.pipe.abandon(upstream_id);
        if let Ok(mut r) = self.routing.lock() {
            let k = key(upstream_id);
            r.pending.remove(&k);
            r.progress.retain(|_, (_, s)| !s.is_closed());
        }
    }

    /// Forwards a request; the client's id and progress token are restored on the way back.
    pub async fn request(
        self: &Arc<Connection>,
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
            r.issued = r.issued.max(n + 1);
        }
        let msg = Message::Request { id: upstream_id.clone(), method: method.to_string(), params }
            .to_value();
        if let Err(e) = self.pipe.send(msg).await {
            self.forget(&upstream_id);
            return Err(e);
        }
        Ok(Exchange { rx, upstream_id, connection: self.clone(), settled: false })
    }

    /// Sends a request and waits for its response (initialize, discover, probes).
    pub async fn call(
        self: &Arc<Connection>,
        method: &str,
        params: Option<Value>,
        timeout: Duration,
    ) -> Result<Value, UpstreamError> {
        let mut ex = self.request(Value::from(0), method, params).await?;
        let wait = async {
            while let Some(m) = ex.next().await {
                if is_final(&m) {
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

/// Whether `id` is one this connection gave a request it sent (`pg-N`, N below `issued`).
fn sent_earlier(id: &Value, issued: u64) -> bool {
    id.as_str()
        .and_then(|s| s.strip_prefix("pg-"))
        .and_then(|n| n.parse::<u64>().ok())
        .is_some_and(|n| n < issued)
}

fn dispatch(routing: &Mutex<Routing>, arrival: Arrival) {
    let Arrival { msg: mut v, on_stream_of } = arrival;
    let id = v.get("id").filter(|i| !i.is_null()).cloned();
    let is_response = is_final(&v);
    let target: Option<Sink> = {
        let Ok(mut r) = routing.lock() else { return };
        if is_response {
            match id.as_ref().and_then(|i| r.pending.remove(&key(i))) {
                Some((client_id, sink)) => {
                    v["id"] = client_id;
                    Some(sink)
                }
                None if id.as_ref().is_some_and(|i| sent_earlier(i, r.issued)) => {
                    // Its request timed out, was cancelled, or its client went away.
                    debug!("a late answer to a request the gateway no longer waits for; dropped");
                    None
                }
                None if id.is_none() => {
                    // Servers send `id: null` errors for messages they could not parse; there
                    // is no request to give them to.
                    debug!("an error from the server that names no request; dropped");
                    None
                }
                None => {
                    warn!("the server answered with an id the gateway never used; dropped");
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
        deliver(sink, v, is_response);
    }
}

/// Hands `v` to its sink without waiting: one client that does not read its stream must not
/// hold up the others sharing the connection. A full sink still gets the final answer (at
/// most one per request, so this is bounded); other messages for it (progress, logs) are
/// dropped, and the client only sees fewer of them.
fn deliver(sink: Sink, v: Value, is_response: bool) {
    match sink.try_send(v) {
        Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
        Err(mpsc::error::TrySendError::Full(v)) if is_response => {
            tokio::spawn(async move {
                let _ = sink.send(v).await;
            });
        }
        Err(mpsc::error::TrySendError::Full(_)) => {
            debug!(
                "a client does not keep up with its stream; a message from the server was dropped"
            );
        }
    }
}

fn close_all(routing: &Mutex<Routing>, e: UpstreamError) {
    if let Ok(mut r) = routing.lock() {
        for (_, (client_id, sink)) in r.pending.drain() {
            let _ = sink.try_send(json!({"jsonrpc": "2.0", "id": client_id, "error": {"code": crate::protocol::jsonrpc::UPSTREAM_UNAVAILABLE, "message": "the server closed the connection"}}));
        }
        r.progress.clear();
        r.closed = Some(e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_late_answer_is_told_apart_from_one_never_asked_for() {
        // Requests pg-0 .. pg-4 were sent.
        assert!(sent_earlier(&json!("pg-0"), 5));
        assert!(sent_earlier(&json!("pg-4"), 5));
        assert!(!sent_earlier(&json!("pg-5"), 5));
        assert!(!sent_earlier(&json!(3), 5));
        assert!(!sent_earlier(&json!("client-3"), 5));
        assert!(!sent_earlier(&json!("pg-x"), 5));
    }
}
