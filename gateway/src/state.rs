//! The gateway's shared state: configuration (reloadable), the server connection(s), client
//! sessions of the legacy era, and what the startup handshake learned about the server.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use palisade_core::config::{GatewayConfig, Upstream as UpstreamConfig};
use rand::RngCore;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc};
use tracing::{info, warn};

use crate::metrics::Metrics;
use crate::upstream::{Bounds, Pipe, Session, Target, UpstreamError};
use crate::validate::{R2025_11, R2026, Rev};

/// The most sessions the gateway keeps at once; past it, `initialize` is refused.
pub const MAX_SESSIONS: usize = 1000;
/// Events kept per session for `Last-Event-ID` resumption.
const REPLAY_EVENTS: usize = 256;

/// What the handshake with the server established.
#[derive(Debug, Clone, Default)]
pub struct ServerInfo {
    pub ready: bool,
    /// The server speaks the stateless revision itself.
    pub stateless: bool,
    /// The newest session-era revision the server accepted.
    pub legacy: Option<Rev>,
    pub server_info: Option<Value>,
    pub capabilities: Option<Value>,
    pub instructions: Option<String>,
    pub protocol_version: Option<String>,
    pub tool_count: Option<usize>,
    pub checked_at: Option<SystemTime>,
    pub last_error: Option<String>,
}

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
pub struct DownSession {
    pub id: String,
    pub rev: Rev,
    pub upstream: Arc<Session>,
    pub principal: crate::policy::Principal,
    pub created: Instant,
    pub last_seen: Mutex<Instant>,
    pub in_flight: Arc<Semaphore>,
    pub events: Mutex<EventLog>,
    /// The open GET stream (or the legacy SSE stream), if any.
    pub stream: Mutex<Option<mpsc::Sender<(u64, String)>>>,
    /// Ids of requests the server sent the client that are not answered yet.
    pub server_requests: Mutex<HashMap<String, Instant>>,
    pub tool_calls: AtomicU64,
    pub mutations: AtomicU64,
    pub ended: std::sync::atomic::AtomicBool,
}

impl DownSession {
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

pub struct Gateway {
    config: RwLock<Arc<GatewayConfig>>,
    pub config_path: Option<PathBuf>,
    pub target: Target,
    pub sessions: Mutex<HashMap<String, Arc<DownSession>>>,
    /// The connection that carries stateless-era requests (one per gateway).
    shared: tokio::sync::Mutex<Option<Arc<Session>>>,
    pub server: RwLock<ServerInfo>,
    pub in_flight: Arc<Semaphore>,
    pub metrics: Metrics,
    pub policy: crate::policy::Engine,
    pub auth: crate::auth::Authenticator,
    pub audit: crate::audit::Audit,
    pub approvals: crate::approvals::Approvals,
    pub quotas: crate::quota::Counters,
    pub resolver: Box<dyn crate::guard::Resolve>,
    /// The server's tool definitions (every page of `tools/list`).
    pub tools: crate::tools::ToolCache,
}

/// What can keep a gateway from starting.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Auth(#[from] crate::auth::AuthError),
    #[error("{0}")]
    Audit(#[from] crate::audit::AuditError),
}

pub fn target_of(cfg: &GatewayConfig) -> Target {
    match &cfg.upstream {
        UpstreamConfig::Stdio { socket, .. } => Target::Stdio { socket: socket.clone() },
        UpstreamConfig::Http { url, sse: false } => Target::Http { url: url.clone() },
        UpstreamConfig::Http { url, sse: true } => Target::Sse { url: url.clone() },
    }
}

pub fn new_session_id() -> String {
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

impl Gateway {
    pub fn new(
        config: GatewayConfig,
        config_path: Option<PathBuf>,
    ) -> Result<Arc<Gateway>, StartError> {
        let target = target_of(&config);
        let in_flight = Arc::new(Semaphore::new(config.limits.max_in_flight as usize));
        let policy = crate::policy::Engine::new(&config);
        let auth = crate::auth::Authenticator::new(&config)?;
        let audit = crate::audit::Audit::new(&config.audit)?;
        Ok(Arc::new(Gateway {
            config: RwLock::new(Arc::new(config)),
            config_path,
            target,
            sessions: Mutex::new(HashMap::new()),
            shared: tokio::sync::Mutex::new(None),
            server: RwLock::new(ServerInfo::default()),
            in_flight,
            metrics: Metrics::new(),
            policy,
            auth,
            audit,
            approvals: Default::default(),
            quotas: Default::default(),
            resolver: Box::new(crate::guard::SystemResolver),
            tools: Default::default(),
        }))
    }

    pub fn config(&self) -> Arc<GatewayConfig> {
        self.config.read().map(|c| c.clone()).unwrap_or_else(|p| p.into_inner().clone())
    }

    pub fn set_config(&self, cfg: GatewayConfig) {
        self.policy.reload(&cfg);
        self.auth.forget_verified();
        // Tools are judged afresh under the new policy: definitions are listed again.
        self.tools.clear();
        if let Ok(mut c) = self.config.write() {
            *c = Arc::new(cfg);
        }
    }

    pub fn bounds(&self) -> Bounds {
        let l = &self.config().limits;
        Bounds {
            max_message: l.max_message_bytes as usize,
            max_event: l.max_sse_event_bytes as usize,
        }
    }

    pub fn server_info(&self) -> ServerInfo {
        self.server.read().map(|s| s.clone()).unwrap_or_default()
    }

    /// Revisions the gateway accepts from clients.
    pub fn allowed(&self) -> Vec<Rev> {
        self.config().protocol.versions.iter().filter_map(|v| Rev::parse(v)).collect()
    }

    /// The allowed revisions a client can use on one wire (stateless or session era): what
    /// `server/discover` and UnsupportedProtocolVersion errors offer, newest first.
    pub fn supported_on(&self, stateless: bool) -> Vec<&'static str> {
        let mut revs: Vec<Rev> =
            self.allowed().into_iter().filter(|r| r.stateless() == stateless).collect();
        revs.sort_unstable_by(|a, b| b.cmp(a));
        revs.into_iter().map(Rev::as_str).collect()
    }

    pub fn session(&self, id: &str) -> Option<Arc<DownSession>> {
        self.sessions.lock().ok().and_then(|s| s.get(id).cloned())
    }

    pub fn session_count(&self) -> usize {
        self.sessions.lock().map(|s| s.len()).unwrap_or(0)
    }

    /// A new connection to the server that speaks `rev` (and that is initialized for it).
    pub async fn open_upstream(&self, rev: Rev) -> Result<Arc<Session>, UpstreamError> {
        let (pipe, incoming) = Pipe::connect(&self.target, self.bounds()).await?;
        Ok(Session::new(pipe, incoming, rev))
    }

    /// The connection for stateless traffic: native stateless if the server speaks it, else a
    /// session-era connection the gateway initialized itself (translation).
    pub async fn shared_upstream(&self) -> Result<Arc<Session>, UpstreamError> {
        let mut guard = self.shared.lock().await;
        if let Some(s) = guard.as_ref()
            && s.closed().is_none()
        {
            return Ok(s.clone());
        }
        let info = self.server_info();
        let rev = if info.stateless { R2026 } else { info.legacy.unwrap_or(R2025_11) };
        let session = self.open_upstream(rev).await?;
        if rev.stateless() {
            session.pipe().set_protocol_version(rev.as_str());
        } else {
            let timeout = Duration::from_secs(self.config().limits.request_timeout_seconds as u64);
            let init = session.call("initialize", Some(gateway_initialize(rev)), timeout).await?;
            let agreed = init
                .pointer("/result/protocolVersion")
                .and_then(Value::as_str)
                .and_then(Rev::parse);
            if agreed != Some(rev) {
                return Err(UpstreamError::Malformed(format!(
                    "the server did not accept {}",
                    rev.as_str()
                )));
            }
            session.pipe().set_protocol_version(rev.as_str());
            session.notify("notifications/initialized", None).await?;
        }
        *guard = Some(session.clone());
        Ok(session)
    }

    /// Registers a session; `false` when the gateway holds the most sessions it may.
    pub fn insert_session(&self, s: Arc<DownSession>) -> bool {
        let Ok(mut sessions) = self.sessions.lock() else { return false };
        if sessions.len() >= MAX_SESSIONS {
            return false;
        }
        sessions.insert(s.id.clone(), s);
        self.metrics.sessions.set(sessions.len() as i64);
        true
    }

    pub async fn end_session(&self, id: &str) -> bool {
        let removed = self.sessions.lock().ok().and_then(|mut s| {
            let r = s.remove(id);
            self.metrics.sessions.set(s.len() as i64);
            r
        });
        match removed {
            Some(s) => {
                s.ended.store(true, Ordering::Relaxed);
                if let Ok(mut st) = s.stream.lock() {
                    *st = None;
                }
                s.upstream.close().await;
                true
            }
            None => false,
        }
    }

    /// Closes sessions idle for longer than the configured timeout.
    pub async fn reap_idle(&self) {
        let idle = Duration::from_secs(self.config().limits.idle_timeout_seconds as u64);
        let expired: Vec<String> = self
            .sessions
            .lock()
            .map(|s| s.values().filter(|x| x.idle_for() > idle).map(|x| x.id.clone()).collect())
            .unwrap_or_default();
        for id in expired {
            info!(session = %short(&id), "session idle; closed");
            self.end_session(&id).await;
        }
    }

    /// Handshake with the server: which eras it speaks, who it is, how many tools it has.
    pub async fn probe(&self) -> ServerInfo {
        let timeout =
            Duration::from_secs(self.config().limits.request_timeout_seconds.min(15) as u64);
        let mut info = ServerInfo { checked_at: Some(SystemTime::now()), ..ServerInfo::default() };
        let allowed = self.allowed();
        // Stateless first (Streamable HTTP and stdio can both carry it).
        if !matches!(self.target, Target::Sse { .. }) && allowed.iter().any(|r| r.stateless()) {
            match self.probe_stateless(timeout).await {
                Ok(Some((caps, server, instructions, tools))) => {
                    info.stateless = true;
                    info.capabilities = Some(caps);
                    info.server_info = server;
                    info.instructions = instructions;
                    info.tool_count = tools;
                    info.protocol_version = Some(R2026.as_str().to_string());
                }
                Ok(None) => {}
                Err(e) => info.last_error = Some(e.to_string()),
            }
        }
        // The newest session-era revision the server accepts, needed by session-era clients
        // and for translating stateless requests when the server does not speak them.
        let wanted: Vec<Rev> = if info.stateless {
            allowed.iter().copied().filter(|r| !r.stateless()).collect()
        } else {
            vec![R2025_11]
        };
        if let Some(top) = wanted.iter().max().copied() {
            match self.probe_legacy(top, timeout).await {
                Ok((rev, init, tools)) => {
                    info.legacy = Some(rev);
                    if info.capabilities.is_none() {
                        info.capabilities = init.get("capabilities").cloned();
                        info.server_info = init.get("serverInfo").cloned();
                        info.instructions =
                            init.get("instructions").and_then(Value::as_str).map(str::to_string);
                        info.tool_count = tools;
                        info.protocol_version = Some(rev.as_str().to_string());
                    }
                }
                Err(e) => {
                    if !info.stateless {
                        info.last_error = Some(e.to_string());
                    }
                }
            }
        }
        // Fail closed: ready only if every configured revision can be served.
        info.ready = info.capabilities.is_some()
            && allowed.iter().all(|r| {
                if r.stateless() {
                    info.stateless || info.legacy.is_some()
                } else {
                    info.legacy.is_some()
                }
            });
        if !info.ready && info.last_error.is_none() {
            info.last_error =
                Some("the server does not serve the pinned protocol revisions".into());
        }
        if let Ok(mut s) = self.server.write() {
            *s = info.clone();
        }
        self.metrics.ready.set(i64::from(info.ready));
        info
    }

    async fn probe_stateless(
        &self,
        timeout: Duration,
    ) -> Result<Option<(Value, Option<Value>, Option<String>, Option<usize>)>, UpstreamError> {
        let session = self.open_upstream(R2026).await?;
        session.pipe().set_protocol_version(R2026.as_str());
        let meta = json!({"io.modelcontextprotocol/protocolVersion": R2026.as_str(), "io.modelcontextprotocol/clientCapabilities": {}, "io.modelcontextprotocol/clientInfo": {"name": "palisade-gateway", "version": env!("CARGO_PKG_VERSION")}});
        let resp = session.call("server/discover", Some(json!({"_meta": meta})), timeout).await?;
        let Some(result) = resp.get("result") else {
            session.close().await;
            return Ok(None);
        };
        let versions =
            result.get("supportedVersions").and_then(Value::as_array).cloned().unwrap_or_default();
        if !versions.iter().any(|v| v == R2026.as_str()) {
            session.close().await;
            return Ok(None);
        }
        // Argument policy needs the tools' input schemas before the first call: every page.
        let tools = crate::tools::list_all(&session, R2026, timeout).await.ok().map(|tools| {
            self.tools.learn(&tools);
            tools.len()
        });
        session.close().await;
        Ok(Some((
            result.get("capabilities").cloned().unwrap_or(json!({})),
            result.pointer("/_meta/io.modelcontextprotocol~1serverInfo").cloned(),
            result.get("instructions").and_then(Value::as_str).map(str::to_string),
            tools,
        )))
    }

    async fn probe_legacy(
        &self,
        rev: Rev,
        timeout: Duration,
    ) -> Result<(Rev, Value, Option<usize>), UpstreamError> {
        let session = self.open_upstream(rev).await?;
        let init = session.call("initialize", Some(gateway_initialize(rev)), timeout).await?;
        let result = init
            .get("result")
            .cloned()
            .ok_or_else(|| UpstreamError::Malformed("initialize failed".into()))?;
        let agreed = result
            .get("protocolVersion")
            .and_then(Value::as_str)
            .and_then(Rev::parse)
            .ok_or_else(|| UpstreamError::Malformed("no protocolVersion".into()))?;
        session.pipe().set_protocol_version(agreed.as_str());
        session.notify("notifications/initialized", None).await?;
        // Argument policy needs the tools' input schemas before the first call: every page.
        let tools = crate::tools::list_all(&session, agreed, timeout).await.ok().map(|tools| {
            self.tools.learn(&tools);
            tools.len()
        });
        session.close().await;
        Ok((agreed, result, tools))
    }

    /// Reloads the config file when it changes; a bad file is reported and ignored.
    pub fn watch_config(self: &Arc<Self>) {
        let Some(path) = self.config_path.clone() else { return };
        let gw = Arc::downgrade(self);
        tokio::spawn(async move {
            let mtime = |p: &PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
            let mut seen = mtime(&path);
            let mut content = std::fs::read(&path).unwrap_or_default();
            loop {
                tokio::time::sleep(Duration::from_secs(2)).await;
                let Some(gw) = gw.upgrade() else { return };
                let now = mtime(&path);
                if now == seen {
                    continue;
                }
                seen = now;
                let Ok(bytes) = std::fs::read(&path) else { continue };
                if bytes == content {
                    continue;
                }
                match GatewayConfig::from_json(&String::from_utf8_lossy(&bytes)) {
                    Ok(cfg) => {
                        let old = gw.config();
                        if cfg.listen != old.listen || cfg.upstream != old.upstream {
                            warn!(
                                "listen or upstream changed: restart the gateway to apply them; policy changes applied now"
                            );
                        }
                        gw.set_config(cfg);
                        content = bytes;
                        info!("configuration reloaded");
                    }
                    Err(e) => {
                        warn!(error = %e, "new configuration is invalid; keeping the current one")
                    }
                }
            }
        });
    }
}

/// The gateway's own `initialize` (probes and translation): no client capabilities, so the
/// server never sends it requests it could not route.
pub fn gateway_initialize(rev: Rev) -> Value {
    json!({"protocolVersion": rev.as_str(), "capabilities": {}, "clientInfo": {"name": "palisade-gateway", "version": env!("CARGO_PKG_VERSION")}})
}

/// A session id as it may appear in logs (never the whole secret).
pub fn short(id: &str) -> String {
    id.chars().take(8).collect()
}
