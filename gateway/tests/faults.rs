//! Faults on both sides of the gateway binary. The server: it crashes mid-call and comes back
//! (the official Python SDK server, killed and restarted on its port), answers a byte at a
//! time (slow-loris), or floods a call's stream with notifications (an in-process server made
//! to misbehave). The client: HTTP/2 rapid reset (CVE-2023-44487) and request headers sent a
//! byte at a time. Each time the gateway answers with a clear error, holds nobody else up,
//! bounds what it keeps, lets go of the server's connection, and serves again afterwards.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use common::*;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const STATELESS: &str = "2026-07-28";
const SESSION: &str = "2025-11-25";

fn text(v: &Value) -> String {
    v.pointer("/result/content/0/text").and_then(Value::as_str).unwrap_or_default().to_string()
}

fn error(v: &Value) -> String {
    v.pointer("/error/message").and_then(Value::as_str).unwrap_or_default().to_string()
}

async fn call(url: &str, tool: &str, args: Value) -> Value {
    stateless_with(url, "tools/call", json!({"name": tool, "arguments": args}), &[]).await
}

/// What the misbehaving server saw and did.
#[derive(Default)]
struct Counters {
    /// Answer streams the server is still writing (the gateway has not let go of them).
    live: AtomicUsize,
    /// Bytes of notifications the flood produced.
    flooded: AtomicU64,
}

/// Decrements `live` when the server's answer stream is dropped (its connection closed).
struct Live(Arc<Counters>);

impl Live {
    fn new(c: &Arc<Counters>) -> Live {
        c.live.fetch_add(1, Ordering::SeqCst);
        Live(c.clone())
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A Streamable HTTP server of the session era with three tools: `ok` answers, `trickle`
/// starts an event and then sends one byte every 100 ms forever, `flood` sends progress
/// notifications as fast as it can, forever.
struct Misbehaving {
    url: String,
    counters: Arc<Counters>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Misbehaving {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn sse(
    stream: impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
) -> Response {
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(stream))
        .unwrap()
}

async fn misbehave(State(c): State<Arc<Counters>>, body: Bytes) -> Response {
    let msg: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let id = msg["id"].clone();
    if id.is_null() {
        return StatusCode::ACCEPTED.into_response();
    }
    let answer = |result: Value| {
        axum::Json(json!({"jsonrpc": "2.0", "id": id, "result": result})).into_response()
    };
    match msg["method"].as_str().unwrap_or_default() {
        "initialize" => {
            let mut r = answer(json!({
                "protocolVersion": msg.pointer("/params/protocolVersion").cloned().unwrap_or(json!(SESSION)),
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "misbehaving", "version": "1"}}));
            r.headers_mut().insert("mcp-session-id", "misbehaving-1".parse().unwrap());
            r
        }
        "tools/list" => {
            let tools: Vec<Value> = ["ok", "trickle", "flood"]
                .iter()
                .map(|n| json!({"name": n, "description": n, "inputSchema": {"type": "object"}}))
                .collect();
            answer(json!({ "tools": tools }))
        }
        "tools/call" => match msg.pointer("/params/name").and_then(Value::as_str) {
            Some("ok") => answer(json!({"content": [{"type": "text", "text": "fine"}]})),
            Some("trickle") => {
                let live = Live::new(&c);
                let start = futures::stream::once(async {
                    Ok::<_, std::io::Error>(Bytes::from_static(b"data: {\"jsonrpc\": \"2.0\", \"id\": "))
                });
                let drip = futures::stream::unfold(live, |live| async move {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Some((Ok(Bytes::from_static(b" ")), live))
                });
                sse(futures::StreamExt::chain(start, drip))
            }
            Some("flood") => {
                let token = msg.pointer("/params/_meta/progressToken").cloned().unwrap_or(json!(0));
                let live = Live::new(&c);
                sse(futures::stream::unfold((live, 0u64), move |(live, n)| {
                    let event = format!(
                        "data: {}\n\n",
                        json!({"jsonrpc": "2.0", "method": "notifications/progress",
                            "params": {"progressToken": token, "progress": n, "message": "x".repeat(200)}})
                    );
                    async move {
                        live.0.flooded.fetch_add(event.len() as u64, Ordering::SeqCst);
                        // Yield now and then: "as fast as it can", not "only this task".
                        if n % 64 == 0 {
                            tokio::task::yield_now().await;
                        }
                        Some((Ok(Bytes::from(event)), (live, n + 1)))
                    }
                }))
            }
            _ => answer(json!({"content": [{"type": "text", "text": "?"}], "isError": true})),
        },
        _ => axum::Json(json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": "Method not found"}}))
            .into_response(),
    }
}

async fn misbehaving() -> Misbehaving {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let counters = Arc::new(Counters::default());
    let app = axum::Router::new()
        .route(
            "/mcp",
            axum::routing::post(misbehave)
                .get(|| async { StatusCode::METHOD_NOT_ALLOWED })
                .delete(|| async { StatusCode::OK }),
        )
        .with_state(counters.clone());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Misbehaving { url: format!("http://127.0.0.1:{port}/mcp"), counters, task }
}

async fn gateway_for(url: &str, limits: Value) -> Gw {
    let mut cfg = config_allowing_unlisted(
        json!({"kind": "http", "url": url, "sse": false}),
        &[SESSION, STATELESS],
    );
    cfg["limits"] = limits;
    gateway(cfg).await
}

/// The resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

async fn until(what: &str, within: Duration, check: impl Fn() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "{what} (waited {within:?})");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_flooding_server_holds_up_no_other_client_and_is_let_go_when_its_client_leaves() {
    let server = misbehaving().await;
    let gw = gateway_for(&server.url, json!({"requestTimeoutSeconds": 60})).await;
    let pid = gw.proc.0.id().unwrap();
    let before = rss_kib(pid);
    // A asks for the flood on the stateless wire (which shares one connection to the server)
    // and then reads nothing.
    let url = gw.url.clone();
    let a = tokio::spawn(async move {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
            "name": "flood", "arguments": {}, "_meta": {"progressToken": "a",
            "io.modelcontextprotocol/protocolVersion": STATELESS,
            "io.modelcontextprotocol/clientCapabilities": {}}}});
        let resp = reqwest::Client::new()
            .post(&url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", STATELESS)
            .header("mcp-method", "tools/call")
            .header("mcp-name", "flood")
            .body(body.to_string())
            .send()
            .await;
        tokio::time::sleep(Duration::from_secs(3600)).await;
        drop(resp);
    });
    let c = server.counters.clone();
    until("the flood never started", Duration::from_secs(15), || {
        c.flooded.load(Ordering::SeqCst) > 64 << 10
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    // B's call on the same connection to the server is answered while A's stream floods.
    let started = Instant::now();
    let b = tokio::time::timeout(Duration::from_secs(10), call(&gw.url, "ok", json!({})))
        .await
        .expect("a call was held up by another client's flooded stream");
    assert_eq!(text(&b), "fine", "{b}");
    let waited = started.elapsed();
    let during = rss_kib(pid);
    let flooded = c.flooded.load(Ordering::SeqCst);
    eprintln!(
        "flood: {} KiB sent by the server; B answered in {waited:?}; gateway RSS {before} -> {during} KiB",
        flooded >> 10
    );
    assert!(
        during < before + 32 * 1024,
        "the gateway kept what its client did not read: RSS {before} -> {during} KiB"
    );
    // A leaves: the gateway closes the server's stream for A.
    a.abort();
    until(
        "the gateway kept reading the flood after its client left",
        Duration::from_secs(10),
        || c.live.load(Ordering::SeqCst) == 0,
    )
    .await;
    assert_eq!(text(&call(&gw.url, "ok", json!({})).await), "fine");
}

#[tokio::test]
async fn a_server_that_answers_a_byte_at_a_time_is_cut_off_at_the_timeout_and_let_go() {
    let server = misbehaving().await;
    let gw = gateway_for(&server.url, json!({"requestTimeoutSeconds": 2})).await;
    let started = Instant::now();
    let answer = call(&gw.url, "trickle", json!({})).await;
    assert!(error(&answer).contains("did not answer within 2s"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(8), "{:?}", started.elapsed());
    let c = server.counters.clone();
    until(
        "the server's stream for a call that timed out stayed open",
        Duration::from_secs(5),
        || c.live.load(Ordering::SeqCst) == 0,
    )
    .await;
    assert_eq!(text(&call(&gw.url, "ok", json!({})).await), "fine");
}

/// A session-era client over raw HTTP: the status and body of each answer.
struct Session {
    url: String,
    id: String,
    http: reqwest::Client,
}

impl Session {
    async fn open(url: &str) -> Session {
        let http = reqwest::Client::new();
        let r = http
            .post(url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(
                json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                    "protocolVersion": SESSION, "capabilities": {},
                    "clientInfo": {"name": "faults", "version": "1"}}})
                .to_string(),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let id = r.headers()["mcp-session-id"].to_str().unwrap().to_string();
        let s = Session { url: url.to_string(), id, http };
        s.post(json!({"jsonrpc": "2.0", "method": "notifications/initialized"})).await;
        s
    }

    async fn post(&self, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .header("accept", "application/json")
            .header("mcp-session-id", &self.id)
            .header("mcp-protocol-version", SESSION)
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        // JSON, or the last `data:` line of an event stream.
        let body = serde_json::from_str(&text).unwrap_or_else(|_| {
            text.lines()
                .rev()
                .filter_map(|l| l.strip_prefix("data:"))
                .find_map(|d| serde_json::from_str(d.trim()).ok())
                .unwrap_or(Value::Null)
        });
        (status, body)
    }

    async fn call(&self, n: u64, tool: &str, args: Value) -> (u16, Value) {
        self.post(json!({"jsonrpc": "2.0", "id": n, "method": "tools/call",
            "params": {"name": tool, "arguments": args}}))
            .await
    }
}

#[tokio::test]
async fn a_server_that_crashes_mid_call_is_reported_and_served_again_when_it_returns() {
    let port = free_port();
    let (mut server, url) = python_http_on(port).await;
    let gw = gateway_for(&url, json!({"requestTimeoutSeconds": 60})).await;
    assert_eq!(text(&call(&gw.url, "echo", json!({"message": "x"})).await), "Echo: x");
    let session = Session::open(&gw.url).await;
    assert_eq!(text(&session.call(1, "echo", json!({"message": "s"})).await.1), "Echo: s");

    // A call in flight when the server dies is answered at once, not at the timeout.
    let u = gw.url.clone();
    let in_flight =
        tokio::spawn(async move { call(&u, "wait", json!({"seconds": 30, "tag": "c"})).await });
    tokio::time::sleep(Duration::from_millis(800)).await;
    server.0.start_kill().unwrap();
    server.0.wait().await.unwrap();
    let killed = Instant::now();
    let answer = tokio::time::timeout(Duration::from_secs(10), in_flight)
        .await
        .expect("the call in flight was not answered when the server died")
        .unwrap();
    let message = error(&answer);
    assert!(
        ["unavailable", "closed", "could not be reached"].iter().any(|m| message.contains(m)),
        "{answer}"
    );
    assert!(
        !answer.to_string().contains(&port.to_string()),
        "the server's address leaked: {answer}"
    );
    eprintln!("crash: the call in flight was answered {:?} after the kill", killed.elapsed());

    // While it is down, calls are refused promptly.
    let started = Instant::now();
    let down = call(&gw.url, "echo", json!({"message": "y"})).await;
    assert!(down.get("error").is_some(), "{down}");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());

    // Back on its port (a new process, which knows none of the old sessions): served again.
    let (_server, _) = python_http_on(port).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let back = call(&gw.url, "echo", json!({"message": "back"})).await;
        if text(&back) == "Echo: back" {
            break;
        }
        assert!(Instant::now() < deadline, "stateless calls were not served again: {back}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // The session-era client's session died with the server: it is told so (404) and a new
    // session is served.
    let mut statuses = vec![];
    for n in 2..6 {
        let (status, _) = session.call(n, "echo", json!({"message": "s"})).await;
        statuses.push(status);
        if status == 404 {
            break;
        }
    }
    assert_eq!(statuses.last(), Some(&404), "answers to the dead session: {statuses:?}");
    let again = Session::open(&gw.url).await;
    assert_eq!(text(&again.call(1, "echo", json!({"message": "t"})).await.1), "Echo: t");
}

/// Opens and resets `n` streams on one HTTP/2 connection (cleartext, prior knowledge), then
/// asks once more: whether the connection still serves a request.
async fn serves_after_resets(addr: &str, n: usize) -> bool {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = h2::client::handshake(tcp).await.unwrap();
    let conn = tokio::spawn(conn);
    let request = || http::Request::builder().uri(format!("http://{addr}/mcp")).body(()).unwrap();
    for _ in 0..n {
        send = match send.ready().await {
            Ok(s) => s,
            Err(_) => return false,
        };
        match send.send_request(request(), false) {
            Ok((_, mut stream)) => stream.send_reset(h2::Reason::CANCEL),
            Err(_) => return false,
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let served = async {
        let send = send.ready().await.ok()?;
        let (resp, _) = send.clone().send_request(request(), true).ok()?;
        resp.await.ok().map(|r| r.status().as_u16())
    };
    let status = tokio::time::timeout(Duration::from_secs(10), served).await.ok().flatten();
    conn.abort();
    // GET without a session: refused by the gateway, but served.
    status.is_some()
}

#[tokio::test]
async fn http2_rapid_reset_ends_the_connection_and_spares_the_others() {
    let server = misbehaving().await;
    let gw = gateway_for(&server.url, json!({})).await;
    let addr = gw.base.trim_start_matches("http://").to_string();
    // Control: the same kind of connection, without the resets, is served.
    assert!(serves_after_resets(&addr, 0).await, "the gateway does not serve HTTP/2");
    // 2000 streams opened and reset at once: the connection is ended.
    assert!(!serves_after_resets(&addr, 2000).await, "a rapid-reset flood was served on");
    // Everyone else is served.
    assert_eq!(text(&call(&gw.url, "ok", json!({})).await), "fine");
}

#[tokio::test]
async fn a_client_that_sends_its_headers_a_byte_at_a_time_is_cut_off() {
    let server = misbehaving().await;
    let gw = gateway_for(&server.url, json!({})).await;
    let addr = gw.base.trim_start_matches("http://").to_string();
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"POST /mcp HTTP/1.1\r\nhost: x\r\n").await.unwrap();
    let started = Instant::now();
    let mut closed = false;
    let mut buf = [0u8; 512];
    while started.elapsed() < Duration::from_secs(25) {
        if slow.write_all(b"x").await.is_err() {
            closed = true;
            break;
        }
        match tokio::time::timeout(Duration::from_millis(500), slow.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            // An answer (408) before the close also ends it.
            Ok(Ok(_)) => {}
            Err(_) => {}
        }
    }
    assert!(closed, "a client sending its headers a byte at a time was kept for 25 s");
    eprintln!("slow headers: cut off after {:?}", started.elapsed());
    // Everyone else is served.
    assert_eq!(text(&call(&gw.url, "ok", json!({})).await), "fine");
}

/// The gateway's `/status` figure `field`.
async fn status(gw: &Gw, field: &str) -> u64 {
    let s: Value =
        reqwest::get(format!("{}/status", gw.admin)).await.unwrap().json().await.unwrap();
    s[field].as_u64().unwrap_or_else(|| panic!("/status has no {field}: {s}"))
}

/// A session's connection to the server (and the tasks that serve it) goes when the session
/// is ended: sessions opened and closed all day must not add up.
#[tokio::test]
async fn ended_sessions_leave_no_connection_behind() {
    let (_server, url) = python_http().await;
    let gw = gateway_for(&url, json!({})).await;
    assert_eq!(text(&call(&gw.url, "echo", json!({"message": "x"})).await), "Echo: x");
    let before = status(&gw, "upstreamConnections").await;
    let http = reqwest::Client::new();
    for i in 0..10 {
        let s = Session::open(&gw.url).await;
        assert_eq!(text(&s.call(1, "echo", json!({"message": "s"})).await.1), "Echo: s");
        let ended = http
            .delete(&gw.url)
            .header("mcp-session-id", &s.id)
            .header("mcp-protocol-version", SESSION)
            .send()
            .await
            .unwrap();
        assert!(ended.status().is_success(), "ending session {i}: {}", ended.status());
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = status(&gw, "upstreamConnections").await;
        if now <= before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{now} connections to the server after 10 sessions were ended ({before} before)"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
