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

use std::time::Duration;

use serde_json::json;

#[path = "../tests/common/idp.rs"]
mod idp;

mod common;

use common::{
    Gateway, load, rss_kib, start_gateway, start_python_server, start_server, tls_client,
};

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
