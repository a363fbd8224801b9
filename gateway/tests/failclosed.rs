//! Holes 2, 3, 5 and 7 of the audit, against a misbehaving server (a raw JSON-RPC stdio server
//! behind the real bridge, `peers/hostile_server.py`) that records every tool call it receives:
//! tools listed on a later page are checked against their schema, unknown tools never reach
//! the server, everything the server says is redacted and sanitised, a request that times out
//! recycles the stdio process, and a tool without a dry-run flag never gets a "preview" call.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

const STATELESS: &str = "2026-07-28";
const SESSION: &str = "2025-11-25";
const KEY: &str = "IOSFODNN7EXAMPLE";
/// What the hostile server puts in everything it says; none of it may reach the client.
const LEAKS: &[&str] = &[KEY, "/srv/app", "10.1.2.3"];

struct Hostile {
    gw: Gw,
    calls: PathBuf,
    audit: PathBuf,
    _bridge: Proc,
}

async fn hostile(tools: Value, limits: Value) -> Hostile {
    let dir = scratch("hostile");
    let calls = dir.join("calls.jsonl");
    std::fs::write(&calls, "").unwrap();
    let argv = vec![
        python().display().to_string(),
        repo().join("gateway/tests/peers/hostile_server.py").display().to_string(),
        calls.display().to_string(),
    ];
    let (bridge, socket) = bridge(&argv, &[]).await;
    let mut cfg = config_allowing_unlisted(
        json!({"kind": "stdio", "socket": socket, "sandbox": {}}),
        &[SESSION, STATELESS],
    );
    cfg["tools"] = tools;
    cfg["limits"] = limits;
    let audit = dir.join("audit.jsonl");
    cfg["audit"] = json!({"enabled": true, "checkpointEvery": 50, "file": audit});
    Hostile { gw: gateway(cfg).await, calls, audit, _bridge: bridge }
}

impl Hostile {
    /// The tool calls the server received.
    fn received(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.calls)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn received_names(&self) -> Vec<String> {
        self.received().iter().map(|c| c["name"].as_str().unwrap().to_string()).collect()
    }

    fn audit(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.audit)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

fn assert_clean(what: &str, text: &str) {
    for leak in LEAKS {
        assert!(!text.contains(leak), "{what} leaks {leak:?}: {text}");
    }
}

async fn call(url: &str, tool: &str, args: Value) -> Value {
    stateless_with(url, "tools/call", json!({"name": tool, "arguments": args}), &[]).await
}

struct Session {
    url: String,
    id: String,
    http: reqwest::Client,
}

impl Session {
    async fn open(url: &str, client: &str) -> Result<Session, Value> {
        let http = reqwest::Client::new();
        let r = http
            .post(url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(
                json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                    "protocolVersion": SESSION, "capabilities": {"elicitation": {}},
                    "clientInfo": {"name": client, "version": "1"}}})
                .to_string(),
            )
            .send()
            .await
            .unwrap();
        let sid = r.headers().get("mcp-session-id").map(|v| v.to_str().unwrap().to_string());
        let body: Value = r.json().await.unwrap();
        let Some(id) = sid else { return Err(body) };
        let s = Session { url: url.to_string(), id, http };
        s.post(json!({"jsonrpc": "2.0", "method": "notifications/initialized"})).await;
        s.initialized(body);
        Ok(s)
    }

    fn initialized(&self, body: Value) {
        assert_clean("initialize", &body.to_string());
        assert!(body.pointer("/result/instructions").is_some(), "{body}");
    }

    async fn post(&self, body: Value) -> reqwest::Response {
        self.http
            .post(&self.url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-session-id", &self.id)
            .header("mcp-protocol-version", SESSION)
            .body(body.to_string())
            .send()
            .await
            .unwrap()
    }

    async fn stream(&self) -> reqwest::Response {
        self.http
            .get(&self.url)
            .header("accept", "text/event-stream")
            .header("mcp-session-id", &self.id)
            .header("mcp-protocol-version", SESSION)
            .send()
            .await
            .unwrap()
    }
}

/// SSE `data:` messages of a response until `n` arrived (or the deadline).
async fn events(resp: reqwest::Response, n: usize) -> Vec<Value> {
    use futures::StreamExt;
    let mut body = resp.bytes_stream();
    let (mut buf, mut out) = (String::new(), Vec::new());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while out.len() < n {
        let Ok(Some(Ok(chunk))) = tokio::time::timeout_at(deadline, body.next()).await else {
            break;
        };
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(i) = buf.find('\n') {
            let line: String = buf.drain(..=i).collect();
            if let Some(data) = line.trim().strip_prefix("data:") {
                out.push(serde_json::from_str(data.trim()).unwrap());
            }
        }
    }
    out
}

#[tokio::test]
async fn everything_the_server_says_is_redacted_and_sanitised() {
    let h = hostile(json!([]), json!({"maxResultBytes": 65536})).await;
    let s = Session::open(&h.gw.url, "client").await.expect("a session");
    let listen = s.stream().await;
    assert_eq!(listen.status().as_u16(), 200);

    // Descriptions in listings.
    let list: Value = s
        .post(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}))
        .await
        .json()
        .await
        .unwrap();
    assert!(list.pointer("/result/tools/0/description").is_some(), "{list}");
    assert_clean("tools/list", &list.to_string());

    // A JSON-RPC error, its message and its data.
    let boom: Value = s
        .post(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "boom", "arguments": {}}}))
        .await
        .json()
        .await
        .unwrap();
    assert!(boom.get("error").is_some(), "{boom}");
    assert_clean("error", &boom.to_string());
    assert!(boom.to_string().contains("REDACTED"), "{boom}");

    // A failed tool result.
    let fail: Value = s
        .post(json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "fail", "arguments": {}}}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(fail.pointer("/result/isError"), Some(&json!(true)), "{fail}");
    assert_clean("isError result", &fail.to_string());

    // Progress on the request's stream, the log line on the session's stream.
    let chatty = s
        .post(json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {
            "name": "chatty", "arguments": {}, "_meta": {"progressToken": "p-1"}}}))
        .await;
    let on_request = events(chatty, 2).await;
    assert!(on_request.iter().any(|m| m["method"] == "notifications/progress"), "{on_request:?}");
    assert_clean("progress", &serde_json::to_string(&on_request).unwrap());

    // An elicitation request from the server.
    let asked: Value = s
        .post(json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"name": "ask", "arguments": {}}}))
        .await
        .json()
        .await
        .unwrap();
    assert!(asked.get("result").is_some(), "{asked}");
    let session_stream = events(listen, 2).await;
    let methods: Vec<&str> = session_stream.iter().filter_map(|m| m["method"].as_str()).collect();
    assert!(methods.contains(&"notifications/message"), "{session_stream:?}");
    assert!(methods.contains(&"elicitation/create"), "{session_stream:?}");
    assert_clean("session stream", &serde_json::to_string(&session_stream).unwrap());

    // Structured content beyond the result limit is withheld.
    let big: Value = s
        .post(json!({"jsonrpc": "2.0", "id": 6, "method": "tools/call", "params": {"name": "big", "arguments": {}}}))
        .await
        .json()
        .await
        .unwrap();
    assert!(big.pointer("/result/structuredContent").is_none(), "{}", &big.to_string()[..200]);
    assert_eq!(big.pointer("/result/isError"), Some(&json!(true)));
    assert!(big.to_string().len() < 65536);

    // The raw error of a refused initialize.
    let refused = Session::open(&h.gw.url, "reject-me").await.err().expect("refused");
    assert!(refused.get("error").is_some(), "{refused}");
    assert_clean("initialize error", &refused.to_string());
}

#[tokio::test]
async fn tools_on_every_page_are_checked_and_unknown_tools_never_reach_the_server() {
    let h = hostile(json!([]), json!({})).await;
    // `late` is on the second page of tools/list: its schema is known and enforced.
    for bad in [json!({"n": "one"}), json!({"n": 1, "extra": true}), json!({})] {
        let a = call(&h.gw.url, "late", bad.clone()).await;
        let m = a.pointer("/error/message").and_then(Value::as_str).unwrap_or_default();
        assert!(m.contains("inputSchema"), "late {bad}: {a}");
    }
    let ok = call(&h.gw.url, "late", json!({"n": 1})).await;
    assert_eq!(ok.pointer("/result/content/0/text"), Some(&json!("late 1")), "{ok}");
    // A tool the server does not list is refused by the gateway, not forwarded.
    let ghost = call(&h.gw.url, "ghost", json!({})).await;
    assert!(ghost.pointer("/error/message").unwrap().as_str().unwrap().contains("Unknown tool"));
    assert_eq!(h.received_names(), vec!["late"], "only the valid call reached the server");

    // A configuration reload forgets the definitions; the next call lists them again (every
    // page) instead of passing unchecked arguments.
    let mut cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(&h.gw.config_path).unwrap()).unwrap();
    cfg["limits"]["requestsPerMinute"] = json!(599);
    std::fs::write(&h.gw.config_path, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
    // The gateway polls its config file every 2 s.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let a = call(&h.gw.url, "late", json!({"n": "one"})).await;
    assert!(a.pointer("/error/message").unwrap().as_str().unwrap().contains("inputSchema"), "{a}");
    assert_eq!(h.received_names(), vec!["late"]);
    let refused = h
        .audit()
        .into_iter()
        .filter(|r| r["type"] == "call" && r["decision"] == "deny" && r["name"] == "late")
        .count();
    assert!(refused >= 4, "every refusal is audited: {refused}");
}

fn alive(pid: u64) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[tokio::test]
async fn a_request_that_times_out_recycles_the_stdio_server() {
    let h = hostile(json!([]), json!({"requestTimeoutSeconds": 2})).await;
    let pid = |v: Value| -> u64 {
        v.pointer("/result/content/0/text").and_then(Value::as_str).unwrap().parse().unwrap()
    };
    let first = pid(call(&h.gw.url, "pid", json!({})).await);
    assert!(alive(first));
    let started = Instant::now();
    let hung = call(&h.gw.url, "hang", json!({})).await;
    assert!(hung.get("error").is_some(), "{hung}");
    assert!(started.elapsed() < Duration::from_secs(10));
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(first) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!alive(first), "the server that was still working on the request is stopped");
    let second = pid(call(&h.gw.url, "pid", json!({})).await);
    assert_ne!(first, second, "a fresh server process answers");

    // In the session era the session that lost its server ends; the client re-initializes.
    let s = Session::open(&h.gw.url, "client").await.expect("a session");
    let hung = s
        .post(json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": "hang", "arguments": {}}}))
        .await;
    let hung: Value = hung.json().await.unwrap();
    assert!(hung.get("error").is_some(), "{hung}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = s.post(json!({"jsonrpc": "2.0", "id": 10, "method": "tools/list"})).await;
    assert_eq!(after.status().as_u16(), 404, "the session ended with its server");
}

#[tokio::test]
async fn a_tool_without_a_dry_run_flag_never_gets_a_preview_call() {
    let tools = json!([
        {"name": "remove", "effect": "destructive", "dryRun": {"argument": "dry_run"}}
    ]);
    let h = hostile(tools, json!({})).await;
    let plan = call(&h.gw.url, "remove", json!({"item": "db-1"})).await;
    let meta = plan.pointer("/result/_meta/palisade.dev~1approvalRequired").cloned();
    assert!(meta.is_some(), "a plan: {plan}");
    assert_eq!(meta.unwrap()["preview"], Value::Null, "no preview");
    // The tool does not know `dry_run`: a "preview" would have removed db-1 before approval.
    assert!(h.received_names().is_empty(), "nothing reached the server: {:?}", h.received());
}

/// Hole 2: in `Strip` mode a smuggled safety flag is removed and still reported.
#[tokio::test]
async fn stripped_safety_flags_are_reported() {
    let h = hostile(json!([]), json!({})).await;
    let mut cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(&h.gw.config_path).unwrap()).unwrap();
    cfg["toolDefaults"]["safetyFlagAction"] = json!("Strip");
    // The same addresses again: the first gateway must be gone, not just told to go.
    let mut first = h.gw;
    first.proc.0.kill().await.unwrap();
    let gw = gateway(cfg).await;
    let a = call(&gw.url, "late", json!({"n": 1, "Skip-Approval": true})).await;
    assert_eq!(a.pointer("/result/content/0/text"), Some(&json!("late 1")), "{a}");
    let received = std::fs::read_to_string(&h.calls).unwrap();
    assert!(received.contains(r#""arguments": {"n": 1}"#), "forwarded without it: {received}");
    let events: Vec<Value> = std::fs::read_to_string(&h.audit)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|r: &Value| r["type"] == "security_event" && r["kind"] == "safety_flag_override")
        .collect();
    assert_eq!(events.len(), 1, "the strip is a security event");
}

/// Hole 11: every refusal is audited, including those decided from the headers alone.
#[tokio::test]
async fn refusals_decided_from_headers_are_audited() {
    let h = hostile(json!([]), json!({"maxMessageBytes": 65536})).await;
    let http = reqwest::Client::new();
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": {
        "io.modelcontextprotocol/protocolVersion": STATELESS,
        "io.modelcontextprotocol/clientCapabilities": {}}}});
    let send = |method: &'static str, version: &'static str| {
        http.post(&h.gw.url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", version)
            .header("mcp-method", method)
            .header("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
            .body(body.to_string())
            .send()
    };
    assert_eq!(send("tools/call", STATELESS).await.unwrap().status().as_u16(), 400);
    assert_eq!(send("tools/list", "2099-01-01").await.unwrap().status().as_u16(), 400);
    // A body past the message limit, and params that fail validation, are refusals too.
    let oversized = http
        .post(&h.gw.url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", STATELESS)
        .header("mcp-method", "tools/list")
        .header("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        .body(format!("{{\"pad\": \"{}\"}}", "a".repeat(100_000)))
        .send()
        .await
        .unwrap();
    assert_eq!(oversized.status().as_u16(), 413);
    let invalid = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"arguments": {},
        "_meta": {"io.modelcontextprotocol/protocolVersion": STATELESS,
                  "io.modelcontextprotocol/clientCapabilities": {}}}});
    let answer = http
        .post(&h.gw.url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", STATELESS)
        .header("mcp-method", "tools/call")
        .header("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        .body(invalid.to_string())
        .send()
        .await
        .unwrap();
    let answer: Value = answer.json().await.unwrap();
    assert!(answer.pointer("/error/message").is_some(), "{answer}");
    let refusals: Vec<Value> = h
        .audit()
        .into_iter()
        .filter(|r| r["type"] == "call" && r["decision"] == "deny")
        .filter(|r| r["request_id"].as_str().is_some_and(|id| id.starts_with("0af76519")))
        .collect();
    assert_eq!(refusals.len(), 4, "{refusals:?}");
    assert!(refusals[0]["reason"].as_str().unwrap().contains("Mcp-Method"), "{refusals:?}");
    assert!(refusals[1]["reason"].as_str().unwrap().contains("protocol version"), "{refusals:?}");
    assert_eq!(refusals[2]["status"], 413, "{refusals:?}");
    assert!(refusals[3]["reason"].as_str().unwrap().contains("Invalid params"), "{refusals:?}");
}
