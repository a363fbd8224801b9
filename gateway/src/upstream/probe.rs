//! The start-up handshake with the server: which eras it speaks (stateless `server/discover`,
//! session-era `initialize`), who it is, its capabilities, and every page of its tools, which
//! the argument policy needs before the first call. Fail closed: the gateway is ready only if
//! every configured revision can be served.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use palisade_core::config::GatewayConfig;
use serde_json::{Value, json};
use tracing::warn;

use super::{Bounds, Connection, Connector, Target, UpstreamError};
use crate::protocol::revision::{R2025_11, R2026, Rev};
use crate::state::ToolStore;

/// Most pages of `tools/list` the gateway follows.
pub const MAX_PAGES: usize = 100;

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
    /// A virtual server's names withheld from the listing (conflicts, too long), described.
    pub withheld_names: Vec<String>,
    pub checked_at: Option<SystemTime>,
    pub last_error: Option<String>,
}

/// An answer the transport made up because the request never reached the server (TLS, DNS,
/// connection refused): the handshake fails as unreachable, and the log says why.
fn unreachable(session: &Connection, answer: &Value) -> Result<(), UpstreamError> {
    let code = answer.pointer("/error/code").and_then(Value::as_i64);
    if code != Some(crate::protocol::jsonrpc::UPSTREAM_UNAVAILABLE) {
        return Ok(());
    }
    let why = session.pipe().last_failure().unwrap_or_else(|| "no detail".into());
    warn!(error = %why, "the handshake did not reach the server");
    Err(UpstreamError::Unreachable(why))
}

/// How many tools the server lists, and what a virtual server withheld from the listing.
type Listing = (Option<usize>, Vec<String>);

fn withheld_names(session: &Connection) -> Vec<String> {
    match session.pipe() {
        super::Pipe::Virtual(a) => a.withheld(),
        _ => Vec::new(),
    }
}

/// Revisions the gateway accepts from clients.
pub fn allowed(cfg: &GatewayConfig) -> Vec<Rev> {
    cfg.protocol.versions.iter().filter_map(|v| Rev::parse(v)).collect()
}

/// One handshake.
pub struct Probe<'a> {
    pub connector: &'a Connector,
    pub bounds: Bounds,
    pub cfg: &'a GatewayConfig,
    pub tools: &'a dyn ToolStore,
}

impl Probe<'_> {
    /// Handshake with the server: which eras it speaks, who it is, how many tools it has.
    pub async fn run(&self) -> ServerInfo {
        let timeout =
            Duration::from_secs(u64::from(self.cfg.limits.request_timeout_seconds.min(15)));
        let mut info = ServerInfo { checked_at: Some(SystemTime::now()), ..ServerInfo::default() };
        // Without its credential the gateway sends the server nothing (and is not ready).
        if let Err(e) = self.connector.own_credentials().await {
            info.last_error = Some(UpstreamError::Credentials(e.to_string()).to_string());
            return info;
        }
        let allowed = allowed(self.cfg);
        // Stateless first (Streamable HTTP and stdio can both carry it).
        if !matches!(self.connector.target(), Target::Sse { .. })
            && allowed.iter().any(|r| r.stateless())
        {
            match self.probe_stateless(timeout).await {
                Ok(Some((caps, server, instructions, (tools, withheld)))) => {
                    info.stateless = true;
                    info.capabilities = Some(caps);
                    info.server_info = server;
                    info.instructions = instructions;
                    info.tool_count = tools;
                    info.withheld_names = withheld;
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
                Ok((rev, init, (tools, withheld))) => {
                    info.legacy = Some(rev);
                    if info.capabilities.is_none() {
                        info.capabilities = init.get("capabilities").cloned();
                        info.server_info = init.get("serverInfo").cloned();
                        info.instructions =
                            init.get("instructions").and_then(Value::as_str).map(str::to_string);
                        info.tool_count = tools;
                        info.withheld_names = withheld;
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
        info
    }

    async fn probe_stateless(
        &self,
        timeout: Duration,
    ) -> Result<Option<(Value, Option<Value>, Option<String>, Listing)>, UpstreamError> {
        let session =
            self.connector.open(self.bounds, R2026, self.connector.identity(None)).await?;
        session.pipe().set_protocol_version(R2026.as_str());
        let meta = json!({"io.modelcontextprotocol/protocolVersion": R2026.as_str(), "io.modelcontextprotocol/clientCapabilities": {}, "io.modelcontextprotocol/clientInfo": {"name": "palisade-gateway", "version": env!("CARGO_PKG_VERSION")}});
        let resp = session.call("server/discover", Some(json!({"_meta": meta})), timeout).await?;
        unreachable(&session, &resp)?;
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
        let tools = (
            list_tools(&session, timeout).await.ok().map(|tools| {
                self.tools.learn(&tools);
                tools.len()
            }),
            withheld_names(&session),
        );
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
    ) -> Result<(Rev, Value, Listing), UpstreamError> {
        let session = self.connector.open(self.bounds, rev, self.connector.identity(None)).await?;
        let init = session.call("initialize", Some(gateway_initialize(rev)), timeout).await?;
        unreachable(&session, &init)?;
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
        let tools = (
            list_tools(&session, timeout).await.ok().map(|tools| {
                self.tools.learn(&tools);
                tools.len()
            }),
            withheld_names(&session),
        );
        session.close().await;
        Ok((agreed, result, tools))
    }
}

/// The gateway's own `initialize` (probes and translation): no client capabilities, so the
/// server never sends it requests it could not route.
pub fn gateway_initialize(rev: Rev) -> Value {
    json!({"protocolVersion": rev.as_str(), "capabilities": {}, "clientInfo": {"name": "palisade-gateway", "version": env!("CARGO_PKG_VERSION")}})
}

/// Every tool the server lists, following `nextCursor` (at most [`MAX_PAGES`] pages), on a
/// connection already initialized (or stateless: each request then carries the envelope).
pub async fn list_tools(
    session: &Arc<Connection>,
    timeout: Duration,
) -> Result<Vec<Value>, UpstreamError> {
    let rev = session.rev;
    let mut tools = Vec::new();
    let mut cursor: Option<Value> = None;
    for _ in 0..MAX_PAGES {
        let mut params = json!({});
        if rev.stateless() {
            params["_meta"] = json!({
                "io.modelcontextprotocol/protocolVersion": rev.as_str(),
                "io.modelcontextprotocol/clientCapabilities": {},
            });
        }
        if let Some(c) = cursor.take() {
            params["cursor"] = c;
        }
        let params = (params.as_object().is_some_and(|p| !p.is_empty())).then_some(params);
        let answer = session.call("tools/list", params, timeout).await?;
        let Some(result) = answer.get("result") else {
            return Err(UpstreamError::Malformed("tools/list failed".into()));
        };
        tools.extend(result.get("tools").and_then(Value::as_array).cloned().unwrap_or_default());
        match result.get("nextCursor") {
            Some(c) if !c.is_null() => cursor = Some(c.clone()),
            _ => return Ok(tools),
        }
    }
    Ok(tools)
}
