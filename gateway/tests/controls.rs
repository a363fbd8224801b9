//! The gateway's limits and argument rules, each proven on the wire in front of the official
//! Python SDK server: request timeouts that answer the client and cancel the request on the
//! server, in-flight limits, every rate limit and budget and the chain depth, enum / pattern /
//! range / length / type / free-text rules, and the W3C trace context reaching the server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

const STATELESS: &str = "2026-07-28";
const SESSION: &str = "2025-11-25";

async fn gateway_with(server_url: &str, tools: Value, limits: Value) -> Gw {
    let mut cfg = config_allowing_unlisted(
        json!({"kind": "http", "url": server_url, "sse": false}),
        &[SESSION, STATELESS],
    );
    cfg["tools"] = tools;
    cfg["limits"] = limits;
    gateway(cfg).await
}

async fn call(url: &str, tool: &str, args: Value) -> Value {
    stateless_with(url, "tools/call", json!({"name": tool, "arguments": args}), &[]).await
}

fn text(v: &Value) -> String {
    v.pointer("/result/content/0/text").and_then(Value::as_str).unwrap_or_default().to_string()
}

fn error(v: &Value) -> String {
    v.pointer("/error/message").and_then(Value::as_str).unwrap_or_default().to_string()
}

/// A session-era client over raw HTTP.
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
                "clientInfo": {"name": "controls", "version": "1"}}})
                .to_string(),
            )
            .send()
            .await
            .unwrap();
        let id = r.headers()["mcp-session-id"].to_str().unwrap().to_string();
        let s = Session { url: url.to_string(), id, http };
        s.send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"})).await;
        s
    }

    async fn send(&self, body: Value) -> Value {
        let text = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-session-id", &self.id)
            .header("mcp-protocol-version", SESSION)
            .body(body.to_string())
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let json = text.lines().rev().find_map(|l| l.strip_prefix("data:")).unwrap_or(&text);
        serde_json::from_str(json.trim()).unwrap_or(Value::Null)
    }

    async fn call(&self, id: u64, tool: &str, args: Value) -> Value {
        self.send(json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": tool, "arguments": args}}))
            .await
    }
}

#[tokio::test]
async fn a_request_past_its_timeout_is_answered_and_cancelled_on_the_server() {
    let (_server, url) = python_http().await;
    let gw = gateway_with(&url, json!([]), json!({"requestTimeoutSeconds": 1})).await;
    let s = Session::open(&gw.url).await;
    let started = Instant::now();
    let answer = s.call(1, "wait", json!({"seconds": 20, "tag": "slow-1"})).await;
    assert!(error(&answer).contains("did not answer within 1s"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(8), "{:?}", started.elapsed());
    // The server was told to stop: its handler was cancelled, not left running.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = text(&s.call(2, "cancelled", json!({})).await);
        if got.contains("slow-1") {
            break;
        }
        assert!(Instant::now() < deadline, "the server never saw the cancellation: {got:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Control: a call within the timeout completes.
    let ok = s.call(3, "wait", json!({"seconds": 0.1, "tag": "fast"})).await;
    assert_eq!(text(&ok), "waited fast", "{ok}");
}

#[tokio::test]
async fn in_flight_limits_refuse_the_excess() {
    let (_server, url) = python_http().await;
    // Per session.
    let gw = gateway_with(&url, json!([]), json!({"maxInFlightPerSession": 1})).await;
    let s = std::sync::Arc::new(Session::open(&gw.url).await);
    let busy = {
        let s = s.clone();
        tokio::spawn(async move { s.call(1, "wait", json!({"seconds": 1.5, "tag": "a"})).await })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    let refused = s.call(2, "echo", json!({"message": "x"})).await;
    assert!(error(&refused).contains("in flight in this session"), "{refused}");
    assert_eq!(text(&busy.await.unwrap()), "waited a");
    let after = s.call(3, "echo", json!({"message": "x"})).await;
    assert_eq!(text(&after), "Echo: x", "the slot is free again: {after}");
    // In total.
    let gw =
        gateway_with(&url, json!([]), json!({"maxInFlight": 1, "maxInFlightPerSession": 1})).await;
    let u = gw.url.clone();
    let busy =
        tokio::spawn(async move { call(&u, "wait", json!({"seconds": 1.5, "tag": "b"})).await });
    tokio::time::sleep(Duration::from_millis(400)).await;
    let refused = call(&gw.url, "echo", json!({"message": "y"})).await;
    assert!(error(&refused).contains("Too many requests in flight"), "{refused}");
    assert_eq!(refused.pointer("/error/data/retryAfterSeconds"), Some(&json!(1)), "{refused}");
    assert_eq!(text(&busy.await.unwrap()), "waited b");
}

/// Calls `n` times; returns the answers.
async fn calls(url: &str, tool: &str, args: Value, n: usize) -> Vec<Value> {
    let mut out = vec![];
    for _ in 0..n {
        out.push(call(url, tool, args.clone()).await);
    }
    out
}

#[tokio::test]
async fn every_rate_limit_budget_and_the_chain_depth_hold() {
    let (_server, url) = python_http().await;
    let echo = json!({"message": "b"});

    // Requests per minute per principal (any method).
    let gw = gateway_with(&url, json!([]), json!({"requestsPerMinute": 3})).await;
    let answers = calls(&gw.url, "echo", echo.clone(), 4).await;
    assert!(answers[..3].iter().all(|a| text(a) == "Echo: b"), "{answers:?}");
    assert!(error(&answers[3]).contains("Rate limit"), "{}", answers[3]);
    assert!(answers[3].pointer("/error/data/retryAfterSeconds").is_some());

    // Calls of one tool per minute.
    let tools = json!([{"name": "echo", "effect": "read", "ratePerMinute": 2}]);
    let gw = gateway_with(&url, tools, json!({})).await;
    let answers = calls(&gw.url, "echo", echo.clone(), 3).await;
    assert!(error(&answers[2]).contains("calls of echo per minute"), "{}", answers[2]);
    assert_eq!(
        text(&call(&gw.url, "add", json!({"a": 1, "b": 2})).await),
        "3",
        "other tools go on"
    );

    // Tool calls per principal per hour.
    let gw = gateway_with(&url, json!([]), json!({"maxToolCallsPerPrincipalPerHour": 2})).await;
    let answers = calls(&gw.url, "echo", echo.clone(), 3).await;
    assert!(error(&answers[2]).contains("tool calls per principal per hour"), "{}", answers[2]);
    assert!(answers[2].pointer("/error/data/retryAfterSeconds").is_some());

    // Mutations per principal per hour (a write tool that needs no approval).
    let write = json!([{"name": "add", "effect": "write", "requireApproval": false}]);
    let gw = gateway_with(&url, write.clone(), json!({"maxMutationsPerPrincipalPerHour": 1})).await;
    let answers = calls(&gw.url, "add", json!({"a": 1, "b": 1}), 2).await;
    assert_eq!(text(&answers[0]), "2");
    assert!(error(&answers[1]).contains("mutations per principal per hour"), "{}", answers[1]);
    assert_eq!(text(&call(&gw.url, "echo", echo.clone()).await), "Echo: b", "reads go on");

    // Tool calls and mutations per session.
    let gw = gateway_with(
        &url,
        write,
        json!({"maxToolCallsPerSession": 3, "maxMutationsPerSession": 1}),
    )
    .await;
    let s = Session::open(&gw.url).await;
    assert_eq!(text(&s.call(1, "add", json!({"a": 1, "b": 1})).await), "2");
    let second = s.call(2, "add", json!({"a": 1, "b": 1})).await;
    assert!(error(&second).contains("mutations per session"), "{second}");
    assert_eq!(text(&s.call(3, "echo", echo.clone()).await), "Echo: b");
    let over = s.call(4, "echo", echo.clone()).await;
    assert!(error(&over).contains("tool calls per session"), "{over}");
    let fresh = Session::open(&gw.url).await;
    assert_eq!(text(&fresh.call(1, "echo", echo.clone()).await), "Echo: b", "a new session");

    // Chain depth, as the client (an agent framework) reports it.
    let gw = gateway_with(&url, json!([]), json!({"maxChainDepth": 2})).await;
    let at = |depth: u64| {
        let u = gw.url.clone();
        let echo = echo.clone();
        async move {
            stateless_with(
                &u,
                "tools/call",
                json!({"name": "echo", "arguments": echo,
                "_meta": {"palisade.dev/chainDepth": depth}}),
                &[],
            )
            .await
        }
    };
    assert_eq!(text(&at(2).await), "Echo: b");
    assert!(error(&at(3).await).contains("chain deeper than 2"));
}

#[tokio::test]
async fn enum_pattern_range_length_type_and_free_text_rules_hold() {
    let (_server, url) = python_http().await;
    let tools = json!([
        {"name": "echo", "effect": "read", "arguments": [
            {"name": "message", "enum": ["hi", "ho"]}]},
        {"name": "add", "effect": "read", "arguments": [
            {"name": "a", "type": "integer", "minimum": 0, "maximum": 10},
            {"name": "b", "type": "integer"}]},
        {"name": "read_file", "effect": "read", "arguments": [
            {"name": "path", "pattern": "/data/[a-z]+[.]txt", "freeText": "Refuse", "maxLength": 20}]},
        {"name": "fetch", "effect": "read", "arguments": [
            {"name": "url", "minLength": 20, "url": {"schemes": ["https"]}}]}
    ]);
    let gw = gateway_with(&url, tools, json!({})).await;
    let cases = [
        ("echo", json!({"message": "hi"}), Ok("Echo: hi")),
        ("echo", json!({"message": "bye"}), Err("must be one of")),
        ("add", json!({"a": 3, "b": 4}), Ok("7")),
        ("add", json!({"a": 11, "b": 4}), Err("out of range")),
        ("add", json!({"a": -1, "b": 4}), Err("out of range")),
        ("read_file", json!({"path": "/data/notes.txt"}), Ok("contents of /data/notes.txt")),
        (
            "read_file",
            json!({"path": "/data/Notes.txt"}),
            Err("does not match the allowed pattern"),
        ),
        ("read_file", json!({"path": "/data/averyveryverylongname.txt"}), Err("length outside")),
        ("fetch", json!({"url": "https://a.b/"}), Err("length outside")),
    ];
    for (tool, args, want) in cases {
        let a = call(&gw.url, tool, args.clone()).await;
        match want {
            Ok(t) => assert_eq!(text(&a), t, "{tool} {args}: {a}"),
            Err(e) => assert!(error(&a).contains(e), "{tool} {args}: expected {e:?}: {a}"),
        }
    }
    // Free text refused: shell characters in a value the pattern would otherwise allow.
    let tools = json!([{"name": "read_file", "effect": "read", "arguments": [
        {"name": "path", "pattern": ".*", "freeText": "Refuse"}]}]);
    let gw = gateway_with(&url, tools, json!({})).await;
    let a = call(&gw.url, "read_file", json!({"path": "/data/a;rm -rf /"})).await;
    assert!(error(&a).contains("control or shell characters"), "{a}");
    let a = call(&gw.url, "read_file", json!({"path": "/data/plain.txt"})).await;
    assert_eq!(text(&a), "contents of /data/plain.txt", "{a}");
}

#[tokio::test]
async fn the_trace_context_reaches_the_server_as_a_child_span() {
    let (_server, url) = python_http().await;
    let gw = gateway_with(&url, json!([]), json!({})).await;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = format!("00-{trace}-00f067aa0ba902b7-01");
    for headers in [vec![("traceparent", parent.as_str())], vec![]] {
        let a = stateless_with(
            &gw.url,
            "tools/call",
            json!({"name": "show_trace", "arguments": {}}),
            &headers,
        )
        .await;
        let seen = text(&a);
        let parts: Vec<&str> = seen.split('-').collect();
        assert_eq!(parts.len(), 4, "the server got no traceparent: {a}");
        if headers.is_empty() {
            assert_eq!(parts[1].len(), 32, "a trace is started: {seen}");
        } else {
            assert_eq!(parts[1], trace, "the client's trace continues: {seen}");
            assert_ne!(parts[2], "00f067aa0ba902b7", "as a child span: {seen}");
        }
    }
    // In the session era too.
    let s = Session::open(&gw.url).await;
    let a = s.call(1, "show_trace", json!({})).await;
    assert_eq!(text(&a).split('-').count(), 4, "{a}");
}
