//! A client session of the session era: the connection to the server it owns, the principal
//! it belongs to, its revision, in-flight slots, and the events of its GET stream
//! (numbered, kept for `Last-Event-ID` resumption).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::{Semaphore, mpsc};

use crate::controls::authz::Principal;
use crate::protocol::revision::Rev;
use crate::upstream::Connection;

/// Events kept per session for `Last-Event-ID` resumption.
const REPLAY_EVENTS: usize = 256;

/// Events of a session's GET stream, numbered for resumption.
#[derive(Default)]
pub struct EventLog {
    next: u64,
    events: VecDeque<(u64, String)>,
}

impl EventLog {
    pub fn push(&mut self, data: String) -> u64 {
        self.next += 1;
        self.events.push_back((self.next, data));
        if self.events.len() > REPLAY_EVENTS {
            self.events.pop_front();
        }
        self.next
    }

    /// Events after `last` (a `Last-Event-ID`), or `None` when they are no longer kept.
    pub fn after(&self, last: u64) -> Option<Vec<(u64, String)>> {
        if let Some((first, _)) = self.events.front()
            && last + 1 < *first
        {
            return None;
        }
        Some(self.events.iter().filter(|(n, _)| *n > last).cloned().collect())
    }
}

/// A client session of the session era (2025-03-26 .. 2025-11-25, and 2024-11-05 over SSE).
pub struct ClientSession {
    pub id: String,
    pub rev: Rev,
    pub upstream: Arc<Connection>,
    pub principal: Principal,
    pub last_seen: Mutex<Instant>,
    pub in_flight: Arc<Semaphore>,
    pub events: Mutex<EventLog>,
    /// The open GET stream (or the legacy SSE stream), if any.
    pub stream: Mutex<Option<mpsc::Sender<(u64, String)>>>,
    /// Ids of requests the server sent the client that are not answered yet.
    pub server_requests: Mutex<HashMap<String, Instant>>,
    pub ended: AtomicBool,
}

impl ClientSession {
    /// A session over `upstream` (already initialized at `rev`), owned by `principal`.
    pub fn new(
        id: String,
        rev: Rev,
        upstream: Arc<Connection>,
        principal: Principal,
        max_in_flight: usize,
        stream: Option<mpsc::Sender<(u64, String)>>,
    ) -> ClientSession {
        ClientSession {
            id,
            rev,
            upstream,
            principal,
            last_seen: Mutex::new(Instant::now()),
            in_flight: Arc::new(Semaphore::new(max_in_flight)),
            events: Mutex::new(EventLog::default()),
            stream: Mutex::new(stream),
            server_requests: Mutex::new(HashMap::new()),
            ended: AtomicBool::new(false),
        }
    }

    pub fn touch(&self) {
        if let Ok(mut t) = self.last_seen.lock() {
            *t = Instant::now();
        }
    }

    pub fn idle_for(&self) -> Duration {
        self.last_seen.lock().map(|t| t.elapsed()).unwrap_or_default()
    }

    /// Delivers a server-initiated message to the client's stream (kept for resumption).
    pub fn deliver(&self, msg: &Value) {
        let data = msg.to_string();
        if let Some(id) = msg.get("id").filter(|_| msg.get("method").is_some())
            && let Ok(mut pending) = self.server_requests.lock()
        {
            pending.insert(id.to_string(), Instant::now());
        }
        let seq = match self.events.lock() {
            Ok(mut log) => log.push(data.clone()),
            Err(_) => return,
        };
        let tx = self.stream.lock().ok().and_then(|s| s.clone());
        if let Some(tx) = tx
            && tx.try_send((seq, data)).is_err()
        {
            // A client that does not read loses its stream (it can resume with Last-Event-ID).
            if let Ok(mut s) = self.stream.lock() {
                *s = None;
            }
        }
    }
}
