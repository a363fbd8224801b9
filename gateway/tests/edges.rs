//! The gateway's answers to malformed, oversized, mismatched and out-of-revision traffic, on
//! the wire (raw HTTP), in front of a real server (the official Python SDK, both eras).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

const STATELESS: &str = "2026-07-28";

struct Wire {
    http: reqwest::Client,
    url: String,
}

struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Value,
    text: String,
}

impl Wire {
    fn new(url: &str) -> Wire {
        Wire { http: reqwest::Client::new(), url: url.to_string() }
    }

    async fn post(&self, headers: &[(&str, &str)], body: impl Into<reqwest::Body>) -> Answer {
        let mut r = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream");
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        let resp = r.body(body).send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Answer { status, headers, body, text }
    }

    /// A stateless request with matching routing headers.
    async fn stateless(&self, method: &str, params: Value) -> Answer {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let name = params.get("name").or(params.get("uri")).and_then(Value::as_str);
        let mut headers = vec![("mcp-protocol-version", STATELESS), ("mcp-method", method)];
        if let Some(n) = name {
            headers.push(("mcp-name", n));
        }
        self.post(&headers, body.to_string()).await
    }

    async fn initialize(&self, version: &str, capabilities: Value) -> (String, Value) {
        let a = self
            .post(
                &[],
                json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                    "protocolVersion": version, "capabilities": capabilities,
                    "clientInfo": {"name": "edges", "version": "1"}}})
                .to_string(),
            )
            .await;
        assert_eq!(a.status, 200, "initialize {version}: {}", a.text);
        let sid = a.headers.get("mcp-session-id").unwrap().to_str().unwrap().to_string();
        let init = self
            .post(
                &[("mcp-session-id", &sid), ("mcp-protocol-version", version)],
                json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string(),
            )
            .await;
        assert_eq!(init.status, 202);
        (sid, a.body)
    }

    async fn in_session(&self, sid: &str, version: &str, body: Value) -> Answer {
        self.post(&[("mcp-session-id", sid), ("mcp-protocol-version", version)], body.to_string())
            .await
    }
}

fn meta() -> Value {
    json!({"io.modelcontextprotocol/protocolVersion": STATELESS,
           "io.modelcontextprotocol/clientCapabilities": {}})
}

fn code(a: &Answer) -> i64 {
    a.body.pointer("/error/code").and_then(Value::as_i64).unwrap_or_else(|| {
        panic!("expected a JSON-RPC error, got {} {}", a.status, a.text);
    })
}

async fn setup() -> (Proc, Gw) {
    let (server, url) = python_http().await;
    let mut cfg =
        config_allowing_unlisted(json!({"kind": "http", "url": url, "sse": false}), ALL_VERSIONS);
    cfg["limits"] = json!({"maxMessageBytes": 4096});
    (server, gateway(cfg).await)
}

#[tokio::test]
async fn stateless_requests_are_checked_before_they_reach_the_server() {
    let (_server, gw) = setup().await;
    let w = Wire::new(&gw.url);

    // The happy path, so that every refusal below is a refusal of the one thing changed.
    let ok = w
        .stateless(
            "tools/call",
            json!({"name": "add", "arguments": {"a": 2, "b": 3}, "_meta": meta()}),
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    assert_eq!(ok.body["result"]["structuredContent"]["result"], 5, "{}", ok.text);

    let h = [("mcp-protocol-version", STATELESS), ("mcp-method", "tools/list")];
    let bad_json = w.post(&h, "{\"jsonrpc\": \"2.0\", \"id\": 1,").await;
    assert_eq!((bad_json.status, code(&bad_json)), (400, -32700));

    let huge = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list",
        "params": {"_meta": meta(), "cursor": "x".repeat(5000)}});
    let too_big = w.post(&h, huge.to_string()).await;
    assert_eq!(too_big.status, 413, "{}", too_big.text);

    let unknown_version = w
        .post(
            &[("mcp-protocol-version", "1900-01-01"), ("mcp-method", "tools/list")],
            json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": meta()}})
                .to_string(),
        )
        .await;
    assert_eq!((unknown_version.status, code(&unknown_version)), (400, -32022));
    assert_eq!(unknown_version.body["error"]["data"]["requested"], "1900-01-01");
    let supported = unknown_version.body["error"]["data"]["supported"].as_array().unwrap();
    assert!(supported.contains(&json!(STATELESS)), "{supported:?}");

    // Routing headers must agree with the body.
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "add", "arguments": {"a": 1, "b": 1}, "_meta": meta()}})
    .to_string();
    let wrong_method = w
        .post(
            &[
                ("mcp-protocol-version", STATELESS),
                ("mcp-method", "tools/list"),
                ("mcp-name", "add"),
            ],
            body.clone(),
        )
        .await;
    assert_eq!((wrong_method.status, code(&wrong_method)), (400, -32020));
    let wrong_name = w
        .post(
            &[
                ("mcp-protocol-version", STATELESS),
                ("mcp-method", "tools/call"),
                ("mcp-name", "echo"),
            ],
            body.clone(),
        )
        .await;
    assert_eq!((wrong_name.status, code(&wrong_name)), (400, -32020));
    let twice = w
        .post(
            &[
                ("mcp-protocol-version", STATELESS),
                ("mcp-method", "tools/call"),
                ("mcp-method", "tools/call"),
                ("mcp-name", "add"),
            ],
            body,
        )
        .await;
    assert_eq!((twice.status, code(&twice)), (400, -32020));
    let mut other_meta = meta();
    other_meta["io.modelcontextprotocol/protocolVersion"] = json!("2025-11-25");
    let version_in_body = w.stateless("tools/list", json!({"_meta": other_meta})).await;
    assert_eq!((version_in_body.status, code(&version_in_body)), (400, -32020));

    let no_meta = w.stateless("tools/list", json!({})).await;
    assert_eq!((no_meta.status, code(&no_meta)), (400, -32602));
    assert!(no_meta.text.contains("clientCapabilities"), "{}", no_meta.text);

    let unknown_method = w.stateless("tools/destroy", json!({"_meta": meta()})).await;
    assert_eq!((unknown_method.status, code(&unknown_method)), (404, -32601));
    // A method of the other era is unknown in this one.
    let legacy_only = w.stateless("ping", json!({"_meta": meta()})).await;
    assert_eq!(code(&legacy_only), -32601, "{}", legacy_only.text);

    let unknown_field = w.stateless("tools/list", json!({"_meta": meta(), "bogus": 1})).await;
    assert_eq!((unknown_field.status, code(&unknown_field)), (400, -32602));
    assert!(unknown_field.text.contains("bogus"), "{}", unknown_field.text);
    let wrong_type = w.stateless("tools/call", json!({"name": 7, "_meta": meta()})).await;
    assert_eq!(code(&wrong_type), -32602, "{}", wrong_type.text);

    let batch = w
        .post(&h, json!([{"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": meta()}}]).to_string())
        .await;
    assert_eq!((batch.status, code(&batch)), (400, -32600));

    let get = w
        .http
        .get(&gw.url)
        .header("mcp-protocol-version", STATELESS)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(get.status().as_u16(), 405);
    assert_eq!(get.headers().get("allow").unwrap(), "POST");

    let wrong_type_header = w
        .http
        .post(&gw.url)
        .header("content-type", "text/plain")
        .header("accept", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_type_header.status().as_u16(), 415);

    let foreign_page = w
        .post(
            &[
                ("origin", "https://evil.example"),
                ("mcp-protocol-version", STATELESS),
                ("mcp-method", "tools/list"),
            ],
            json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": meta()}})
                .to_string(),
        )
        .await;
    assert_eq!(foreign_page.status, 403);
    let allowed_page = w
        .post(
            &[
                ("origin", "https://allowed.example"),
                ("mcp-protocol-version", STATELESS),
                ("mcp-method", "tools/list"),
            ],
            json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": meta()}})
                .to_string(),
        )
        .await;
    assert_eq!(allowed_page.status, 200, "{}", allowed_page.text);
    // Every route checks the origin, the legacy stream and the approvals API included.
    for path in ["/sse", "/approvals/0123", "/mcp"] {
        let r = w
            .http
            .get(format!("{}{path}", gw.base))
            .header("origin", "https://evil.example")
            .header("accept", "text/event-stream")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 403, "GET {path} from a foreign page");
    }
}

#[tokio::test]
async fn sessions_are_bound_to_their_revision_and_fail_closed() {
    let (_server, gw) = setup().await;
    let w = Wire::new(&gw.url);
    let list = |id: u64| json!({"jsonrpc": "2.0", "id": id, "method": "tools/list"});

    let no_session = w.post(&[], list(1).to_string()).await;
    assert_eq!((no_session.status, code(&no_session)), (400, -32600));
    let unknown_session = w.post(&[("mcp-session-id", "not-a-session")], list(1).to_string()).await;
    assert_eq!(unknown_session.status, 404);

    let unsupported = w
        .post(&[], json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2023-01-01", "capabilities": {}, "clientInfo": {"name": "x", "version": "1"}}}).to_string())
        .await;
    assert_eq!(unsupported.status, 400, "{}", unsupported.text);
    assert!(
        unsupported.body["error"]["data"]["supported"]
            .as_array()
            .unwrap()
            .contains(&json!("2025-06-18"))
    );

    // Batches exist in 2025-03-26 only.
    let (old, _) = w.initialize("2025-03-26", json!({})).await;
    let batch = w.in_session(&old, "2025-03-26", json!([list(1), list(2)])).await;
    assert_eq!(batch.status, 200, "{}", batch.text);
    let answers = batch.body.as_array().unwrap();
    assert_eq!(answers.len(), 2);
    assert!(answers.iter().all(|a| a["result"]["tools"].is_array()), "{}", batch.text);
    let (newer, _) = w.initialize("2025-06-18", json!({})).await;
    let refused = w.in_session(&newer, "2025-06-18", json!([list(1), list(2)])).await;
    assert_eq!(refused.status, 400, "{}", refused.text);
    assert!(refused.text.contains("batches"), "{}", refused.text);

    // The session's revision is pinned: another header is refused, initialize is not repeated.
    let other_rev = w.in_session(&newer, "2025-11-25", list(3)).await;
    assert_eq!(other_rev.status, 400, "{}", other_rev.text);
    let again = w
        .in_session(&newer, "2025-06-18", json!({"jsonrpc": "2.0", "id": 4, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "x", "version": "1"}}}))
        .await;
    assert_eq!(code(&again), -32600, "{}", again.text);

    // Strict mode: a malformed request ends the session; the session is then unknown.
    let still = w.in_session(&newer, "2025-06-18", list(5)).await;
    assert_eq!(still.status, 200, "{}", still.text);
    let malformed = w
        .in_session(&newer, "2025-06-18", json!({"jsonrpc": "2.0", "id": 6, "method": "tools/call", "params": {"name": "add", "smuggled": true}}))
        .await;
    assert_eq!(code(&malformed), -32602, "{}", malformed.text);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let after = w.in_session(&newer, "2025-06-18", list(7)).await;
    assert_eq!(after.status, 404, "{}", after.text);

    // DELETE ends a session.
    let del = w.http.delete(&gw.url).header("mcp-session-id", &old).send().await.unwrap();
    assert!(del.status().is_success(), "{}", del.status());
    assert_eq!(w.in_session(&old, "2025-03-26", list(8)).await.status, 404);
}

#[tokio::test]
async fn tasks_are_negotiated_away_and_requests_run_directly() {
    // The reference server supports task-augmented tools/call (2025-11-25).
    let (_server, url) = everything_http().await;
    let gw = gateway(config_allowing_unlisted(
        json!({"kind": "http", "url": url, "sse": false}),
        ALL_VERSIONS,
    ))
    .await;
    let w = Wire::new(&gw.url);
    let (sid, init) = w
        .initialize(
            "2025-11-25",
            json!({"tasks": {"requests": {"sampling": {"createMessage": {}}}}}),
        )
        .await;
    assert!(init["result"]["capabilities"]["tools"].is_object(), "{init}");
    assert!(init["result"]["capabilities"].get("tasks").is_none(), "{init}");
    let call = w
        .in_session(&sid, "2025-11-25", json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "echo", "arguments": {"message": "direct"}, "task": {"ttl": 60000}}}))
        .await;
    assert_eq!(call.status, 200, "{}", call.text);
    assert!(call.text.contains("direct"), "{}", call.text);
    assert!(call.body["result"]["content"].is_array(), "not a direct result: {}", call.text);
    let tasks = w
        .in_session(&sid, "2025-11-25", json!({"jsonrpc": "2.0", "id": 2, "method": "tasks/list"}))
        .await;
    assert_eq!(code(&tasks), -32601, "{}", tasks.text);
}

#[tokio::test]
async fn an_unavailable_server_is_reported_without_internal_addresses() {
    let (mut server, gw) = setup().await;
    let upstream = std::fs::read_to_string(&gw.config_path).unwrap();
    let upstream: Value = serde_json::from_str(&upstream).unwrap();
    let upstream_url = upstream["upstream"]["url"].as_str().unwrap().to_string();
    let port = upstream_url.rsplit(':').next().unwrap().split('/').next().unwrap().to_string();
    server.0.kill().await.unwrap();
    let w = Wire::new(&gw.url);
    let a = w.stateless("tools/list", json!({"_meta": meta()})).await;
    assert!(a.body.get("error").is_some(), "{}", a.text);
    for secret in ["127.0.0.1", port.as_str(), "/mcp", "Connection refused", "tcp"] {
        assert!(!a.text.contains(secret), "the error reveals {secret:?}: {}", a.text);
    }
}

/// Reads SSE `data:` lines of a streaming response until `n` messages arrived.
async fn first_events(resp: reqwest::Response, n: usize) -> Vec<Value> {
    use futures::StreamExt;
    let mut body = resp.bytes_stream();
    let mut buf = String::new();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while out.len() < n {
        let chunk = tokio::time::timeout_at(deadline, body.next()).await.expect("events in time");
        let Some(Ok(chunk)) = chunk else { break };
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

/// A subscription stream stays open past the request timeout and carries the client's id.
async fn subscription_through(gw: &Gw) {
    let body = json!({"jsonrpc": "2.0", "id": "sub-1", "method": "subscriptions/listen",
        "params": {"notifications": {"toolsListChanged": true}, "_meta": meta()}});
    let resp = reqwest::Client::new()
        .post(&gw.url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", STATELESS)
        .header("mcp-method", "subscriptions/listen")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let events = first_events(resp, 1).await;
    let ack = events.first().expect("an acknowledgement");
    assert_eq!(ack["method"], "notifications/subscriptions/acknowledged", "{ack}");
    assert_eq!(ack["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"], "sub-1", "{ack}");
    assert_eq!(ack["params"]["notifications"]["toolsListChanged"], true, "{ack}");
}

#[tokio::test]
async fn subscriptions_reach_their_client_over_http_and_stdio() {
    let (_server, gw) = setup().await;
    subscription_through(&gw).await;
    let argv = vec![
        python().display().to_string(),
        repo().join("gateway/tests/peers/py_server.py").display().to_string(),
        "stdio".to_string(),
    ];
    let (_bridge, socket) = bridge(&argv, &[]).await;
    let gw = gateway(config_allowing_unlisted(
        json!({"kind": "stdio", "socket": socket, "sandbox": {}}),
        ALL_VERSIONS,
    ))
    .await;
    subscription_through(&gw).await;
}
