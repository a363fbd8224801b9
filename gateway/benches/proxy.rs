//! What the gateway costs: `tools/call` with a small payload at 1, 16 and 64 concurrent
//! clients, straight to an MCP server and through the gateway with TLS, in one run; then the
//! gateway's memory per idle session. Prints figures; asserts nothing about time.
//!
//! `cargo bench -p palisade-gateway --bench proxy` (PALISADE_BENCH_SECONDS per level, default 5;
//! PALISADE_BENCH_SESSIONS idle sessions, default 500).
//!
//! Two servers: a minimal MCP server in this process (both eras, one `echo` tool), so that the
//! figures are the gateway's own cost at its worst relative to a server that does nothing; and
//! the official Python SDK server of the gateway tests (installed by `e2e/peers/install`), for
//! what a deployment of a real server sees. Idle-session memory is read from a fresh gateway so
//! that heap freed by the load runs does not hide it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use palisade_https::ca::Authority;
use serde_json::{Value, json};

const STATELESS: &str = "2026-07-28";

#[path = "../tests/common/idp.rs"]
mod idp;

// --- the server ------------------------------------------------------------------------------

#[derive(Default)]
struct Server {
    sessions: AtomicU64,
}

async fn mcp(State(s): State<Arc<Server>>, h: HeaderMap, body: axum::body::Bytes) -> Response {
    let Ok(msg) = serde_json::from_slice::<Value>(&body) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let Some(id) = msg.get("id").cloned() else {
        return StatusCode::ACCEPTED.into_response();
    };
    let stateless = h.get("mcp-protocol-version").and_then(|v| v.to_str().ok()) == Some(STATELESS);
    let complete = |mut r: Value| {
        if stateless {
            r["resultType"] = json!("complete");
        }
        r
    };
    let mut session = None;
    let result = match msg["method"].as_str().unwrap_or_default() {
        "initialize" => {
            session = Some(format!("s{}", s.sessions.fetch_add(1, Ordering::Relaxed)));
            json!({"protocolVersion": msg["params"]["protocolVersion"], "capabilities": {"tools": {}},
                   "serverInfo": {"name": "bench", "version": "1"}})
        }
        "server/discover" => {
            json!({"supportedVersions": [STATELESS], "capabilities": {"tools": {}},
            "ttlMs": 0, "cacheScope": "private", "resultType": "complete",
            "_meta": {"io.modelcontextprotocol/serverInfo": {"name": "bench", "version": "1"}}})
        }
        "tools/list" => {
            let mut r = complete(json!({"tools": [{"name": "echo", "description": "echo",
                "inputSchema": {"type": "object", "properties": {"message": {"type": "string"}}}}]}));
            if stateless {
                r["ttlMs"] = json!(0);
                r["cacheScope"] = json!("private");
            }
            r
        }
        "tools/call" => {
            let text = msg["params"]["arguments"]["message"].as_str().unwrap_or_default();
            complete(json!({"content": [{"type": "text", "text": text}]}))
        }
        "ping" => json!({}),
        _ => {
            return axum::Json(json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": "Method not found"}}))
                .into_response();
        }
    };
    let mut resp =
        axum::Json(json!({"jsonrpc": "2.0", "id": id, "result": result})).into_response();
    if let Some(sid) = session {
        resp.headers_mut().insert("mcp-session-id", sid.parse().unwrap());
    }
    resp
}

fn start_server() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let app =
                Router::new().route("/mcp", post(mcp)).with_state(Arc::new(Server::default()));
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    format!("http://{addr}/mcp")
}

// --- the gateway -----------------------------------------------------------------------------

struct Gateway {
    child: std::process::Child,
    url: String,
    ca_pem: String,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn start_gateway(upstream: &str, policy: Option<&Value>) -> Gateway {
    let dir = tempfile::tempdir().unwrap().keep();
    let ca = Authority::generate("bench CA", Duration::from_secs(86400)).unwrap();
    let leaf = ca.issue_server(&["localhost".to_string()], Duration::from_secs(86400)).unwrap();
    std::fs::write(dir.join("tls.crt"), &leaf.cert_pem).unwrap();
    std::fs::write(dir.join("tls.key"), &leaf.key_pem).unwrap();
    let (port, admin) = (free_port(), free_port());
    let cfg = json!({
        "server": {"name": "bench", "namespace": "bench"},
        "listen": {"address": format!("127.0.0.1:{port}"), "adminAddress": format!("127.0.0.1:{admin}"), "path": "/mcp",
                   "tls": {"certFile": dir.join("tls.crt"), "keyFile": dir.join("tls.key")}},
        "upstream": {"kind": "http", "url": upstream, "sse": false},
        "protocol": {"versions": ["2025-11-25", STATELESS]},
        "auth": {},
        "authorization": {"roles": [{"name": "all", "subjects": [{"claim": "sub", "values": ["anonymous"]}],
            "methods": ["**"], "tools": ["*"], "resources": ["**"], "prompts": ["*"]}]},
        "toolDefaults": {"unlisted": "AllowAsRead"},
        "limits": {"maxInFlight": 4096, "maxInFlightPerSession": 64, "requestsPerMinute": 1000000,
                   "maxToolCallsPerSession": 1000000, "maxToolCallsPerPrincipalPerHour": 100000000}
    });
    let mut cfg = cfg;
    if let Some(Value::Object(p)) = policy {
        for (k, v) in p {
            match (cfg.get_mut(k), v) {
                (Some(Value::Object(base)), Value::Object(over)) if k == "listen" => {
                    base.extend(over.clone());
                }
                _ => cfg[k] = v.clone(),
            }
        }
        if cfg["audit"]["file"].is_null() && cfg["audit"].is_object() {
            cfg["audit"]["file"] = json!(dir.join("audit.jsonl"));
        }
    }
    std::fs::write(dir.join("gateway.json"), cfg.to_string()).unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_palisade-gateway"))
        .arg("serve")
        .arg(format!("--config={}", dir.join("gateway.json").display()))
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = std::net::TcpStream::connect(("127.0.0.1", admin)).is_ok()
            && std::process::Command::new("curl")
                .args(["-sf", &format!("http://127.0.0.1:{admin}/readyz")])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false);
        if ready {
            break;
        }
        assert!(Instant::now() < deadline, "the gateway did not become ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    Gateway { child, url: format!("https://localhost:{port}/mcp"), ca_pem: ca.cert_pem.clone() }
}

/// The official Python SDK server of the gateway tests, on a free port.
fn start_python_server() -> (std::process::Child, String) {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
    let out = std::process::Command::new(repo.join("e2e/peers/install"))
        .stderr(std::process::Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), "installing the MCP peers failed");
    let peers = std::path::PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let port = free_port();
    let child = std::process::Command::new(peers.join("venv/bin/python"))
        .arg(repo.join("gateway/tests/peers/py_server.py"))
        .args(["http", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the Python server did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    (child, format!("http://127.0.0.1:{port}/mcp"))
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

// --- the load ----------------------------------------------------------------------------------

struct Figures {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
}

fn call_body(i: u64) -> String {
    json!({"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": {
        "name": "echo", "arguments": {"message": "hello"},
        "_meta": {"io.modelcontextprotocol/protocolVersion": STATELESS,
                  "io.modelcontextprotocol/clientCapabilities": {}}}})
    .to_string()
}

async fn load(
    client: &reqwest::Client,
    url: &str,
    clients: usize,
    seconds: f64,
    bearer: Option<&str>,
) -> Figures {
    let stop = Instant::now() + Duration::from_secs_f64(seconds);
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (client, url) = (client.clone(), url.to_string());
        let bearer = bearer.map(|b| format!("Bearer {b}"));
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0u64;
            let mut i = (c as u64) << 32;
            while Instant::now() < stop {
                i += 1;
                let t = Instant::now();
                let mut req = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("accept", "application/json, text/event-stream")
                    .header("mcp-protocol-version", STATELESS)
                    .header("mcp-method", "tools/call")
                    .header("mcp-name", "echo")
                    .body(call_body(i));
                if let Some(b) = &bearer {
                    req = req.header("authorization", b);
                }
                let r = req.send().await;
                let ok = match r {
                    Ok(r) => {
                        r.status().is_success()
                            && r.bytes().await.is_ok_and(|b| b.windows(5).any(|w| w == b"hello"))
                    }
                    Err(_) => false,
                };
                if ok {
                    lat.push(t.elapsed());
                } else {
                    errors += 1;
                }
            }
            (lat, errors)
        }));
    }
    let started = Instant::now();
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.unwrap();
        all.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64().max(seconds);
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .map(|d| d.as_secs_f64() * 1000.0)
            .unwrap_or(f64::NAN)
    };
    Figures { rps: all.len() as f64 / elapsed, p50_ms: pct(0.50), p99_ms: pct(0.99), errors }
}

async fn idle_sessions(gw: &Gateway, client: &reqwest::Client, n: usize) -> (u64, u64) {
    let before = rss_kib(gw.child.id());
    let mut ids = Vec::new();
    for i in 0..n {
        let r = client
            .post(&gw.url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(
                json!({"jsonrpc": "2.0", "id": i, "method": "initialize", "params": {
                "protocolVersion": "2025-11-25", "capabilities": {},
                "clientInfo": {"name": "bench", "version": "1"}}})
                .to_string(),
            )
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "initialize: {}", r.status());
        let sid = r.headers()["mcp-session-id"].to_str().unwrap().to_string();
        client
            .post(&gw.url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-session-id", &sid)
            .header("mcp-protocol-version", "2025-11-25")
            .body(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string())
            .send()
            .await
            .unwrap();
        ids.push(sid);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    (before, rss_kib(gw.child.id()))
}

#[allow(clippy::too_many_arguments)]
async fn compare(
    title: &str,
    plain: &reqwest::Client,
    tls: &reqwest::Client,
    upstream: &str,
    gateway: &str,
    levels: &[usize],
    seconds: f64,
    bearer: Option<&str>,
) {
    // Warm both paths (connections, the gateway's upstream pool, the issuer's keys).
    load(plain, upstream, 4, 0.5, None).await;
    load(tls, gateway, 4, 0.5, bearer).await;
    println!(
        "tools/call, small payload, {seconds:.0} s per level; server: {title}; gateway: TLS 1.3, strict validation"
    );
    println!(
        "{:>8} | {:>10} {:>9} {:>9} | {:>10} {:>9} {:>9} | {:>9} {:>11}",
        "clients",
        "direct/s",
        "p50 ms",
        "p99 ms",
        "gateway/s",
        "p50 ms",
        "p99 ms",
        "loss",
        "added p50"
    );
    for &clients in levels {
        let d = load(plain, upstream, clients, seconds, None).await;
        let g = load(tls, gateway, clients, seconds, bearer).await;
        println!(
            "{clients:>8} | {:>10.0} {:>9.3} {:>9.3} | {:>10.0} {:>9.3} {:>9.3} | {:>8.1}% {:>8.3} ms{}",
            d.rps,
            d.p50_ms,
            d.p99_ms,
            g.rps,
            g.p50_ms,
            g.p99_ms,
            (1.0 - g.rps / d.rps) * 100.0,
            g.p50_ms - d.p50_ms,
            if d.errors + g.errors > 0 {
                format!("  (errors: direct {}, gateway {})", d.errors, g.errors)
            } else {
                String::new()
            }
        );
    }
}

fn main() {
    let seconds: f64 =
        std::env::var("PALISADE_BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(5.0);
    let sessions: usize =
        std::env::var("PALISADE_BENCH_SESSIONS").ok().and_then(|s| s.parse().ok()).unwrap_or(500);
    let minimal = start_server();
    let (mut python, python_url) = start_python_server();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let plain = reqwest::Client::builder().pool_max_idle_per_host(256).build().unwrap();
        // HTTP/1.1 on both paths, one connection per client, as MCP SDK clients do.
        let tls_client = |ca_pem: &str| {
            reqwest::Client::builder()
                .http1_only()
                .pool_max_idle_per_host(256)
                .tls_certs_only([reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap()])
                .build()
                .unwrap()
        };
        {
            let gw = start_gateway(&minimal, None);
            let tls = tls_client(&gw.ca_pem);
            compare("minimal in-process MCP server", &plain, &tls, &minimal, &gw.url, &[1, 16, 64], seconds, None)
                .await;
        }
        {
            // Authentication and policy on: ES256 bearer JWT checked against a JWKS, a role
            // match, an argument rule on `echo`, the audit chain written to a file.
            let issuer = idp::idp().await;
            let policy = json!({
                "listen": {"resourceUri": idp::AUDIENCE},
                "auth": {"oidc": {"issuer": issuer.issuer, "audience": idp::AUDIENCE,
                                  "requiredScopes": [idp::SCOPE]},
                         "oidcCaFile": issuer.ca_file},
                "authorization": {"roles": [{"name": "callers", "subjects": [{"claim": "sub", "values": ["bench"]}],
                    "methods": ["tools/*"], "tools": ["echo"]}]},
                "tools": [{"name": "echo", "effect": "read", "arguments": [
                    {"name": "message", "type": "string", "maxLength": 1024, "pattern": "[a-z ]+"}]}],
                "audit": {"enabled": true, "checkpointEvery": 1000},
            });
            let gw = start_gateway(&minimal, Some(&policy));
            let tls = tls_client(&gw.ca_pem);
            let token = issuer.token("bench");
            compare(
                "minimal in-process MCP server; gateway with OIDC, roles, argument rules, audit",
                &plain, &tls, &minimal, &gw.url, &[1, 16, 64], seconds, Some(&token),
            )
            .await;
        }
        {
            let gw = start_gateway(&python_url, None);
            let tls = tls_client(&gw.ca_pem);
            compare("official Python SDK server (mcp)", &plain, &tls, &python_url, &gw.url, &[1, 16], seconds, None)
                .await;
        }
        let gw = start_gateway(&minimal, None);
        let tls = tls_client(&gw.ca_pem);
        let (before, after) = idle_sessions(&gw, &tls, sessions).await;
        println!(
            "idle sessions (fresh gateway): {sessions} opened; RSS {before} KiB -> {after} KiB: {:.1} KiB per idle session",
            (after.saturating_sub(before)) as f64 / sessions as f64
        );
    });
    let _ = python.kill();
}
