//! `palisade-gateway serve`: TLS listener, admin endpoints, handshake, housekeeping.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::routing::get;
use palisade_core::config::GatewayConfig;
use palisade_https::{ClientAuth, Limits};
use serde_json::{Value, json};
use tracing::{info, warn};

use crate::gateway::Gateway;
use crate::upstream::Target;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{0}")]
    Config(#[from] palisade_core::config::ConfigError),
    #[error("invalid listen address {0:?}")]
    Address(String),
    #[error("{0}")]
    Tls(#[from] palisade_https::HttpsError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Start(#[from] crate::gateway::StartError),
}

pub fn load(path: &PathBuf) -> Result<GatewayConfig, ServeError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| ServeError::Read { path: path.display().to_string(), source })?;
    Ok(GatewayConfig::from_json(&text)?)
}

/// Every known tool definition: its fingerprint as a pin (what `palisade pin` writes into
/// the spec), whether it is withheld and why.
async fn tools(State(gw): State<Arc<Gateway>>) -> Json<Value> {
    Json(json!({"tools": gw.review_definitions(&gw.config())}))
}

async fn status(State(gw): State<Arc<Gateway>>) -> Json<Value> {
    let s = gw.server_info();
    let withheld: Vec<Value> = gw
        .review_definitions(&gw.config())
        .into_iter()
        .filter(|t| t["withheld"] == Value::Bool(true) || !t["reason"].is_null())
        .map(|t| json!({"name": t["name"], "withheld": t["withheld"], "reason": t["reason"]}))
        .collect();
    Json(json!({
        "tools": withheld,
        "ready": s.ready,
        "server": s.server_info,
        "protocolVersion": s.protocol_version,
        "stateless": s.stateless,
        "sessionRevision": s.legacy.map(|r| r.as_str()),
        "toolCount": s.tool_count,
        "namesWithheld": s.withheld_names,
        "sessions": gw.sessions.len(),
        "upstreamConnections": gw.connector.live_connections(),
        "lastError": s.last_error,
    }))
}

/// The handshake, repeated: stdio servers are probed rarely (each probe starts a process).
fn probe_loop(gw: Arc<Gateway>) {
    tokio::spawn(async move {
        loop {
            let info = gw.probe().await;
            if info.ready {
                let name = info
                    .server_info
                    .as_ref()
                    .and_then(|s| s.get("name"))
                    .and_then(|n| n.as_str())
                    .unwrap_or("?")
                    .to_string();
                info!(server = %name, revision = info.protocol_version.as_deref().unwrap_or("?"), tools = info.tool_count.unwrap_or(0), "handshake with the server succeeded");
            } else {
                warn!(
                    error = info.last_error.as_deref().unwrap_or("unknown"),
                    "handshake with the server failed; not ready"
                );
            }
            let every = match (gw.connector.target(), info.ready) {
                (_, false) => Duration::from_secs(3),
                (Target::Stdio { .. }, true) => Duration::from_secs(300),
                (_, true) => Duration::from_secs(30),
            };
            tokio::time::sleep(every).await;
        }
    });
}

pub async fn run(config_path: PathBuf) -> Result<(), ServeError> {
    palisade_https::install_crypto_provider();
    let cfg = load(&config_path)?;
    let addr: SocketAddr =
        cfg.listen.address.parse().map_err(|_| ServeError::Address(cfg.listen.address.clone()))?;
    let admin_addr: SocketAddr = cfg
        .listen
        .admin_address
        .parse()
        .map_err(|_| ServeError::Address(cfg.listen.admin_address.clone()))?;
    let tls = match &cfg.listen.tls {
        Some(t) => {
            let certs = palisade_https::watch_files(
                t.cert_file.clone().into(),
                t.key_file.clone().into(),
                Duration::from_secs(10),
            )?;
            let client_auth = match &cfg.auth.mtls {
                Some(m) => {
                    let pem = std::fs::read(&m.client_ca_file).map_err(|source| {
                        ServeError::Read { path: m.client_ca_file.clone(), source }
                    })?;
                    ClientAuth::Optional(pem)
                }
                None => ClientAuth::None,
            };
            Some(palisade_https::server_config(certs, client_auth)?)
        }
        None => {
            warn!("no TLS configured: serving plain HTTP (development only)");
            None
        }
    };
    let gw = Gateway::new(cfg, Some(config_path))?;
    gw.watch_config();
    probe_loop(gw.clone());
    {
        let gw = gw.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(15)).await;
                gw.reap_idle().await;
            }
        });
    }

    let encode: palisade_https::admin::Encoder = {
        let gw = gw.clone();
        Arc::new(move || gw.observe.metrics.encode())
    };
    let ready: palisade_https::admin::Readiness = {
        let gw = gw.clone();
        Arc::new(move || gw.server_info().ready)
    };
    let admin = palisade_https::admin::router(encode, ready).merge(
        axum::Router::new()
            .route("/status", get(status))
            .route("/tools", get(tools))
            .with_state(gw.clone()),
    );
    let admin_listener = palisade_https::admin::bind(admin_addr).await?;
    info!(addr = %admin_listener.local_addr()?, "admin endpoints: /healthz /readyz /metrics /status /tools");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let admin_task = tokio::spawn(palisade_https::admin::serve(admin_listener, admin, {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    }));

    let listener = tokio::net::TcpListener::bind(addr).await?;
    info!(addr = %listener.local_addr()?, tls = tls.is_some(), path = %gw.config().listen.path, "serving MCP");
    let limits = Limits::default();
    let drain = Duration::from_secs(gw.config().limits.request_timeout_seconds as u64 + 5);
    palisade_https::serve(
        listener,
        tls,
        crate::transport::router(gw.clone()),
        limits,
        palisade_https::shutdown_signal(),
        drain,
    )
    .await;
    gw.close_all_here().await;
    gw.observe.audit.flush();
    // Spans still buffered go out before the process ends (the exporter blocks: its own thread).
    let flushing = gw.clone();
    let _ = tokio::task::spawn_blocking(move || {
        if let Some(t) = &flushing.observe.telemetry {
            t.shutdown();
        }
    })
    .await;
    let _ = stop_tx.send(true);
    let _ = admin_task.await;
    info!("gateway stopped");
    Ok(())
}
