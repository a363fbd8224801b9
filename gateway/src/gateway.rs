//! The gateway of one MCP server: the composition root that the pipeline and the transports
//! use. It holds the configuration (reloaded from its file), the connector to the server and
//! what the handshake learned, the state stores and the session registry, the authentication
//! and authorization controls, and where everything is reported.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use palisade_core::config::{GatewayConfig, Upstream as UpstreamConfig};
use serde_json::Value;
use tokio::sync::Semaphore;
use tracing::{info, warn};

use crate::controls::authn::{AuthError, Authenticator};
use crate::controls::authz::{Authorizer, Principal};
use crate::controls::definitions;
use crate::controls::guard::{Resolve, SystemResolver};
use crate::observe::Observer;
use crate::observe::audit::{Audit, AuditError};
use crate::observe::metrics::Metrics;
use crate::observe::telemetry::{Telemetry, TelemetryError};
use crate::protocol::revision::{R2025_11, R2026, Rev};
use crate::session::{ClientSession, MemorySessions, SessionRegistry, short};
use crate::state::State;
use crate::state::redis::{Redis, StoreError};
use crate::upstream::aggregate::Members;
use crate::upstream::credentials::{CredentialError, Credentials};
use crate::upstream::probe::{self, Probe, ServerInfo, gateway_initialize};
use crate::upstream::{Bounds, Connection, Connector, Target, UpstreamError};

/// Stateless connections kept for per-user credentials at most (one per principal).
const PER_USER_CONNECTIONS: usize = 1024;

pub struct Gateway {
    config: RwLock<Arc<GatewayConfig>>,
    pub config_path: Option<PathBuf>,
    pub connector: Connector,
    pub sessions: Box<dyn SessionRegistry>,
    /// The connection that carries stateless-era requests (one per gateway).
    shared: tokio::sync::Mutex<Option<Arc<Connection>>>,
    /// With a per-user upstream credential (token exchange): one stateless connection per
    /// principal, each speaking for its user.
    per_user: tokio::sync::Mutex<HashMap<String, Arc<Connection>>>,
    server: RwLock<ServerInfo>,
    pub in_flight: Arc<Semaphore>,
    pub observe: Observer,
    pub authz: Authorizer,
    pub authn: Authenticator,
    pub state: State,
    pub resolver: Box<dyn Resolve>,
    /// Held while a session opened elsewhere is resumed here (one at a time).
    pub resuming: tokio::sync::Mutex<()>,
}

/// What can keep a gateway from starting.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Auth(#[from] AuthError),
    #[error("{0}")]
    Audit(#[from] AuditError),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Credentials(#[from] CredentialError),
    #[error("{0}")]
    Telemetry(#[from] TelemetryError),
    #[error("{0}")]
    Upstream(#[from] crate::upstream::reach::ReachError),
}

fn http_target(url: &str, sse: bool) -> Target {
    if sse { Target::Sse { url: url.to_string() } } else { Target::Http { url: url.to_string() } }
}

/// The connector to the server (or, for a virtual server, to each of its servers).
fn connector_of(cfg: &GatewayConfig) -> Result<Connector, StartError> {
    let credentials = cfg.upstream_auth.as_ref().map(Credentials::new).transpose()?;
    Ok(match &cfg.upstream {
        UpstreamConfig::Stdio { socket, .. } => {
            Connector::new(Target::Stdio { socket: socket.clone() }, credentials, None)?
        }
        UpstreamConfig::Http { url, sse, ca_file } => {
            Connector::new(http_target(url, *sse), credentials, ca_file.as_deref())?
        }
        UpstreamConfig::Virtual { members, naming } => {
            let mut connectors = Vec::with_capacity(members.len());
            for m in members {
                let own = m.upstream_auth.as_ref().map(Credentials::new).transpose()?;
                connectors.push(Connector::new(
                    http_target(&m.url, m.sse),
                    own,
                    m.ca_file.as_deref(),
                )?);
            }
            let members = Members {
                names: members.iter().map(|m| m.name.clone()).collect(),
                prefixes: members.iter().map(|m| m.prefix.clone()).collect(),
                connectors,
                naming: naming.clone(),
                timeout: Duration::from_secs(u64::from(cfg.limits.request_timeout_seconds)),
            };
            Connector::new(Target::Virtual(Arc::new(members)), None, None)?
        }
    })
}

impl Gateway {
    pub fn new(
        config: GatewayConfig,
        config_path: Option<PathBuf>,
    ) -> Result<Arc<Gateway>, StartError> {
        let server_label = format!("{}/{}", config.server.namespace, config.server.name);
        let telemetry =
            config.tracing.as_ref().map(|t| Telemetry::new(t, &server_label)).transpose()?;
        let connector = connector_of(&config)?;
        let in_flight = Arc::new(Semaphore::new(config.limits.max_in_flight as usize));
        let authz = Authorizer::new(&config);
        let authn = Authenticator::new(&config)?;
        let audit = Audit::new(&config.audit)?;
        let state = match &config.state {
            Some(store) => State::shared(Redis::connect(store)?),
            None => State::in_memory(),
        };
        Ok(Arc::new(Gateway {
            config: RwLock::new(Arc::new(config)),
            config_path,
            connector,
            sessions: Box::new(MemorySessions::default()),
            shared: tokio::sync::Mutex::new(None),
            per_user: tokio::sync::Mutex::new(HashMap::new()),
            server: RwLock::new(ServerInfo::default()),
            in_flight,
            observe: Observer { metrics: Metrics::new(&server_label), audit, telemetry },
            authz,
            authn,
            state,
            resolver: Box::new(SystemResolver),
            resuming: tokio::sync::Mutex::new(()),
        }))
    }

    pub fn config(&self) -> Arc<GatewayConfig> {
        self.config.read().map(|c| c.clone()).unwrap_or_else(|p| p.into_inner().clone())
    }

    pub fn set_config(&self, cfg: GatewayConfig) {
        self.authz.reload(&cfg);
        self.authn.forget_verified();
        // Tools are judged afresh under the new policy: definitions are listed again.
        self.state.tools.clear();
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
        probe::allowed(&self.config())
    }

    /// The allowed revisions a client can use on one wire (stateless or session era): what
    /// `server/discover` and UnsupportedProtocolVersion errors offer, newest first.
    pub fn supported_on(&self, stateless: bool) -> Vec<&'static str> {
        let mut revs: Vec<Rev> =
            self.allowed().into_iter().filter(|r| r.stateless() == stateless).collect();
        revs.sort_unstable_by(|a, b| b.cmp(a));
        revs.into_iter().map(Rev::as_str).collect()
    }

    pub fn session(&self, id: &str) -> Option<Arc<ClientSession>> {
        self.sessions.get(id)
    }

    /// A new connection to the server that speaks `rev` (not yet initialized), for `principal`
    /// (their credential, when the gateway sends one per user).
    pub async fn open_upstream(
        &self,
        rev: Rev,
        principal: &Principal,
    ) -> Result<Arc<Connection>, UpstreamError> {
        let identity = self.connector.identity(principal.token.clone());
        self.connector.open(self.bounds(), rev, identity).await
    }

    /// The connection for `principal`'s stateless traffic: the gateway's shared one, or, with
    /// a per-user credential, the principal's own (kept with their newest token).
    pub async fn stateless_upstream(
        &self,
        principal: &Principal,
    ) -> Result<Arc<Connection>, UpstreamError> {
        if !self.connector.per_user() {
            return self.shared_upstream().await;
        }
        let mut conns = self.per_user.lock().await;
        if let Some(c) = conns.get(&principal.subject)
            && c.closed().is_none()
        {
            if let Some(identity) = c.identity() {
                identity.update(principal.token.as_ref());
            }
            return Ok(c.clone());
        }
        conns.retain(|_, c| c.closed().is_none());
        if conns.len() >= PER_USER_CONNECTIONS
            && let Some(any) = conns.keys().next().cloned()
        {
            conns.remove(&any);
        }
        let c = self.new_stateless_upstream(Some(principal)).await?;
        conns.insert(principal.subject.clone(), c.clone());
        Ok(c)
    }

    /// The connection for stateless traffic: native stateless if the server speaks it, else a
    /// session-era connection the gateway initialized itself (translation).
    pub async fn shared_upstream(&self) -> Result<Arc<Connection>, UpstreamError> {
        let mut guard = self.shared.lock().await;
        if let Some(s) = guard.as_ref()
            && s.closed().is_none()
        {
            return Ok(s.clone());
        }
        let connection = self.new_stateless_upstream(None).await?;
        *guard = Some(connection.clone());
        Ok(connection)
    }

    /// A connection ready for stateless traffic, speaking for `principal` (or the gateway).
    async fn new_stateless_upstream(
        &self,
        principal: Option<&Principal>,
    ) -> Result<Arc<Connection>, UpstreamError> {
        let info = self.server_info();
        let rev = if info.stateless { R2026 } else { info.legacy.unwrap_or(R2025_11) };
        let identity = self.connector.identity(principal.and_then(|p| p.token.clone()));
        let connection = self.connector.open(self.bounds(), rev, identity).await?;
        if rev.stateless() {
            connection.pipe().set_protocol_version(rev.as_str());
        } else {
            let timeout = Duration::from_secs(self.config().limits.request_timeout_seconds as u64);
            let init =
                connection.call("initialize", Some(gateway_initialize(rev)), timeout).await?;
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
            connection.pipe().set_protocol_version(rev.as_str());
            connection.notify("notifications/initialized", None).await?;
        }
        Ok(connection)
    }

    /// Registers a session; `false` when the gateway holds the most sessions it may.
    pub fn insert_session(&self, s: Arc<ClientSession>) -> bool {
        let ok = self.sessions.insert(s);
        self.observe.metrics.sessions.set(self.sessions.len() as i64);
        ok
    }

    /// How long a session may stay unused.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(u64::from(self.config().limits.idle_timeout_seconds))
    }

    /// Marks a session used: here, and in the shared record that lets other replicas resume
    /// it. `false` when the record is gone: the session was ended through another replica (or
    /// expired there), and it is closed here too. While the store cannot be reached, the
    /// session goes on here.
    pub async fn keep(&self, s: &ClientSession) -> bool {
        if s.upstream.closed().is_some() {
            // The server closed the connection under the session (it restarted, or its stdio
            // process was recycled): the client is told the session is gone and opens another.
            info!(session = %short(&s.id), "the server closed the session's connection; session ended");
            self.end_session(&s.id).await;
            return false;
        }
        s.touch();
        let Some(store) = self.state.sessions.as_ref() else { return true };
        match store.touch(&s.id, self.idle_timeout()).await {
            Ok(true) => true,
            Ok(false) => {
                info!(session = %short(&s.id), "session ended on another replica; closed here");
                self.close_here(&s.id).await;
                false
            }
            Err(_) => {
                warn!(session = %short(&s.id), "state store unavailable: the session's record was not refreshed");
                true
            }
        }
    }

    /// Ends a session everywhere: here, and its record (the client ended it, or it failed
    /// closed).
    pub async fn end_session(&self, id: &str) -> bool {
        if let Some(store) = self.state.sessions.as_ref()
            && store.remove(id).await.is_err()
        {
            warn!(session = %short(id), "state store unavailable: the session's record stays until it expires");
        }
        self.close_here(id).await
    }

    /// Closes this replica's copy of a session (idle here, its server recycled, or the
    /// gateway stopping); another replica may still resume it from its record.
    pub async fn close_here(&self, id: &str) -> bool {
        let removed = self.sessions.remove(id);
        self.observe.metrics.sessions.set(self.sessions.len() as i64);
        match removed {
            Some(s) => {
                s.ended.store(true, std::sync::atomic::Ordering::Relaxed);
                if let Ok(mut st) = s.stream.lock() {
                    *st = None;
                }
                s.upstream.close().await;
                true
            }
            None => false,
        }
    }

    /// Closes every session here (the gateway is stopping; with a shared store, clients
    /// resume them on other replicas).
    pub async fn close_all_here(&self) {
        for id in self.sessions.ids() {
            self.close_here(&id).await;
        }
    }

    /// Closes sessions idle for longer than the configured timeout.
    pub async fn reap_idle(&self) {
        let idle = Duration::from_secs(self.config().limits.idle_timeout_seconds as u64);
        for id in self.sessions.idle(idle) {
            info!(session = %short(&id), "session idle; closed");
            self.close_here(&id).await;
        }
    }

    /// Handshake with the server: which eras it speaks, who it is, how many tools it has.
    pub async fn probe(&self) -> ServerInfo {
        let cfg = self.config();
        let info = Probe {
            connector: &self.connector,
            bounds: self.bounds(),
            cfg: &cfg,
            tools: self.state.tools.as_ref(),
        }
        .run()
        .await;
        if let Ok(mut s) = self.server.write() {
            *s = info.clone();
        }
        self.observe.metrics.ready.set(i64::from(info.ready));
        self.review_definitions(&cfg);
        info
    }

    /// Judges every known tool definition (after each handshake, so that a changed or
    /// poisoned definition is reported even before a client lists it); returns each one's
    /// state for the admin endpoints.
    pub fn review_definitions(&self, cfg: &GatewayConfig) -> Vec<Value> {
        let tools = self.state.tools.all();
        let server = definitions::server_withheld(cfg, self.state.tools.as_ref());
        let mut withheld = 0;
        let described = tools
            .iter()
            .map(|t| {
                let j = definitions::judge(cfg, t);
                definitions::report(&self.observe, "review", "-", t, &j);
                let mut d = definitions::describe(cfg, t);
                if server.is_some() {
                    d["withheld"] = Value::Bool(true);
                }
                if d["withheld"] == Value::Bool(true) {
                    withheld += 1;
                }
                d
            })
            .collect();
        self.observe.metrics.tools_withheld.set(withheld);
        described
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
                        if cfg.listen != old.listen
                            || cfg.upstream != old.upstream
                            || cfg.state != old.state
                            || cfg.upstream_auth != old.upstream_auth
                        {
                            warn!(
                                "listen, upstream, upstream credentials or state store changed: restart the gateway to apply them; policy changes applied now"
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
