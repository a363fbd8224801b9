//! Spans arrive at a real OpenTelemetry Collector (built from upstream components with the
//! collector builder, `e2e/tools build otelcol`; OTLP/HTTP receiver, debug exporter) from a
//! gateway in front of the official Python SDK server: one call's server span continues the
//! client's trace, every pipeline stage is its child, the call to the server is a client span
//! whose context is the `traceparent` the server received, and a refused call's span says so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// One span as the debug exporter prints it.
#[derive(Debug, Clone, Default)]
struct Span {
    trace: String,
    parent: String,
    id: String,
    name: String,
    kind: String,
    status: String,
}

/// The spans in the collector's log (the debug exporter's detailed output).
fn spans(log: &str) -> Vec<Span> {
    let mut out = Vec::new();
    let mut cur: Option<Span> = None;
    for line in log.lines() {
        let line = line.trim();
        if line.starts_with("Span #") {
            out.extend(cur.take());
            cur = Some(Span::default());
            continue;
        }
        let Some(s) = cur.as_mut() else { continue };
        let Some((k, v)) = line.split_once(':') else { continue };
        let v = v.trim().to_string();
        match k.trim() {
            "Trace ID" => s.trace = v,
            "Parent ID" => s.parent = v,
            "ID" => s.id = v,
            "Name" => s.name = v,
            "Kind" => s.kind = v,
            "Status code" => s.status = v,
            _ => {}
        }
    }
    out.extend(cur);
    out
}

struct Collector {
    _proc: Proc,
    log: PathBuf,
    endpoint: String,
}

async fn collector() -> Collector {
    let dir = scratch("otelcol");
    let port = free_port();
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "receivers:\n  otlp:\n    protocols:\n      http:\n        endpoint: 127.0.0.1:{port}\n\
             exporters:\n  debug:\n    verbosity: detailed\n\
             service:\n  telemetry:\n    metrics:\n      level: none\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [debug]\n"
        ),
    )
    .unwrap();
    let log = dir.join("collector.log");
    let file = std::fs::File::create(&log).unwrap();
    // Its log is the evidence: kept in a file (`spawn` would discard it).
    let proc = Proc(
        tokio::process::Command::new(shared::cached_tool("otelcol", "otelcol"))
            .arg(format!("--config=file:{}", config.display()))
            .kill_on_drop(true)
            .stdin(std::process::Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap(),
    );
    wait_port(port).await;
    Collector { _proc: proc, log, endpoint: format!("http://127.0.0.1:{port}") }
}

impl Collector {
    /// The spans of `trace`, once `count` of them arrived (batches come every second).
    async fn trace(&self, trace: &str, count: usize) -> Vec<Span> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let found: Vec<Span> = spans(&log).into_iter().filter(|s| s.trace == trace).collect();
            if found.len() >= count {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {count} spans of {trace}:\n{log}",
                found.len()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

#[tokio::test]
async fn a_calls_spans_reach_the_collector_with_the_stages_as_children() {
    let col = collector().await;
    let (_server, url) = python_http().await;
    let mut cfg = config_allowing_unlisted(
        json!({"kind": "http", "url": url, "sse": false}),
        &["2025-11-25", "2026-07-28"],
    );
    cfg["tracing"] = json!({"otlpEndpoint": col.endpoint});
    let gw = gateway(cfg).await;

    // A client in a trace of its own.
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = format!("00-{trace}-00f067aa0ba902b7-01");
    let r = stateless_with(
        &gw.url,
        "tools/call",
        json!({"name": "show_trace", "arguments": {}}),
        &[("traceparent", parent.as_str())],
    )
    .await;
    let seen = r.pointer("/result/content/0/text").and_then(|v| v.as_str()).unwrap_or_default();
    let spans = col.trace(trace, 7).await;
    let by_name: HashMap<&str, &Span> = spans.iter().map(|s| (s.name.as_str(), s)).collect();
    let server = by_name.get("mcp tools/call").unwrap_or_else(|| panic!("{spans:#?}"));
    assert_eq!(server.parent, "00f067aa0ba902b7", "the client's span is the parent");
    assert_eq!(server.kind, "Server");
    for stage in ["validate", "authorize", "rate", "tool_gate", "permits", "upstream"] {
        let s = by_name.get(stage).unwrap_or_else(|| panic!("no {stage} span: {spans:#?}"));
        assert_eq!(s.parent, server.id, "{stage} is a child of the request's span");
    }
    let upstream = by_name["upstream"];
    assert_eq!(upstream.kind, "Client");
    // The server was called with the upstream span as its parent.
    assert_eq!(seen, format!("00-{trace}-{}-01", upstream.id), "{r}");

    // A refused call (an unknown tool): its span and the stage that refused carry an error.
    let unknown = stateless_with(
        &gw.url,
        "tools/call",
        json!({"name": "no_such_tool", "arguments": {}}),
        &[("traceparent", "00-6bf92f3577b34da6a3ce929d0e0e4738-00f067aa0ba902b7-01")],
    )
    .await;
    assert!(unknown.get("error").is_some(), "{unknown}");
    let spans = col.trace("6bf92f3577b34da6a3ce929d0e0e4738", 5).await;
    let server = spans.iter().find(|s| s.name == "mcp tools/call").unwrap();
    assert_eq!(server.status, "Error", "{spans:#?}");
    let gate = spans.iter().find(|s| s.name == "tool_gate").unwrap();
    assert_eq!(gate.status, "Error");
    assert!(!spans.iter().any(|s| s.name == "upstream"), "a refused call never reaches the server");

    // Without a client trace, the gateway starts one; the request ID it answers names its span.
    let resp = reqwest::Client::new()
        .post(&gw.url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/list")
        .body(
            json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {}}}})
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    let request_id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let (started, span_id) = request_id.split_once('-').unwrap();
    let spans = col.trace(started, 3).await;
    let root = spans.iter().find(|s| s.name == "mcp tools/list").unwrap();
    assert_eq!((root.id.as_str(), root.parent.as_str()), (span_id, ""), "{spans:#?}");
}
