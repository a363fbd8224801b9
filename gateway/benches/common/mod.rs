//! What the gateway benchmarks share: a minimal MCP server in the process (both eras, one
//! `echo` tool), starting a gateway process with a config overlay, and a closed-loop load of
//! stateless `tools/call` requests that reports throughput and latency percentiles.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

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

pub const STATELESS: &str = "2026-07-28";

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

pub fn start_server() -> String {
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

pub struct Gateway {
    pub child: std::process::Child,
    pub url: String,
    pub ca_pem: String,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn start_gateway(upstream: &str, policy: Option<&Value>) -> Gateway {
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

// --- peers and processes --------------------------------------------------------------------

/// The official Python SDK server of the gateway tests (installed by `e2e/peers/install`), on a
/// free port.
pub fn start_python_server() -> (std::process::Child, String) {
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

/// The resident memory of process `pid`, in KiB (0 once it is gone).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

// --- the load ----------------------------------------------------------------------------------

pub struct Figures {
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub errors: u64,
}

fn call_body(i: u64) -> String {
    json!({"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": {
        "name": "echo", "arguments": {"message": "hello"},
        "_meta": {"io.modelcontextprotocol/protocolVersion": STATELESS,
                  "io.modelcontextprotocol/clientCapabilities": {}}}})
    .to_string()
}

pub async fn load(
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

/// A client for a gateway's TLS certificate: HTTP/1.1, one connection per client, as MCP SDK
/// clients do.
pub fn tls_client(ca_pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .http1_only()
        .pool_max_idle_per_host(256)
        .tls_certs_only([reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap()])
        .build()
        .unwrap()
}

/// The median and the spread (lowest, highest) of repeated measurements.
pub fn median_spread(mut xs: Vec<f64>) -> (f64, f64, f64) {
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let n = xs.len();
    if n == 0 {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    let median = if n % 2 == 1 { xs[n / 2] } else { (xs[n / 2 - 1] + xs[n / 2]) / 2.0 };
    (median, xs[0], xs[n - 1])
}
