//! The gateway between the official MCP SDKs and real servers, in both protocol eras and over
//! every transport: Streamable HTTP, stdio through the bridge, and legacy HTTP+SSE. The gateway
//! runs with the default tool policy (`unlisted: Deny`): only the tools the clients use are
//! listed, and the others are hidden from them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::{Value, json};

fn assert_flow(out: &Value, what: &str) {
    let tools = out["tools"].as_array().unwrap_or_else(|| panic!("{what}: {out}"));
    assert!(tools.len() >= 3, "{what}: {out}");
    // Default deny: the server's other tools (get-env among them) are hidden.
    for t in tools {
        assert!(PEER_TOOLS.contains(&t.as_str().unwrap()), "{what}: unlisted {t} is visible");
    }
    assert_eq!(out["echo"], "Echo: hello through palisade", "{what}");
    assert!(!out["resources"].as_array().unwrap().is_empty(), "{what}");
    assert!(out["read"].as_str().is_some_and(|r| !r.is_empty()), "{what}: {out}");
    assert!(!out["prompts"].as_array().unwrap().is_empty(), "{what}");
}

fn assert_progress(out: &Value, what: &str) {
    let p = out["progress"].as_array().unwrap_or_else(|| panic!("{what}: {out}"));
    assert!(p.len() >= 2, "{what}: progress notifications did not arrive: {out}");
}

#[tokio::test]
async fn everything_over_streamable_http_with_every_sdk_in_both_eras() {
    let (_server, upstream) = everything_http().await;
    let gw =
        gateway(config(json!({"kind": "http", "url": upstream, "sse": false}), ALL_VERSIONS)).await;
    for mode in ["legacy", "2026-07-28"] {
        let out = py_client(&gw.url, mode, None).await;
        assert_flow(&out, &format!("python {mode}"));
        assert_progress(&out, &format!("python {mode}"));
        assert!(out["unknown_tool"].as_str().is_some_and(|e| e.starts_with("error:")), "{out}");
    }
    let v1 = ts_client("ts_client.mjs", &gw.url, None).await;
    assert_flow(&v1, "ts v1");
    assert_progress(&v1, "ts v1");
    assert_eq!(v1["protocolVersion"], "2025-11-25");
    let v2 = ts_client("ts_v2_client.mjs", &gw.url, None).await;
    assert_flow(&v2, "ts v2");
}

#[tokio::test]
async fn everything_over_stdio_through_the_bridge() {
    let (_bridge, socket) =
        bridge(&[node().display().to_string(), everything(), "stdio".into()], &[]).await;
    let gw =
        gateway(config(json!({"kind": "stdio", "socket": socket, "sandbox": {}}), ALL_VERSIONS))
            .await;
    for mode in ["legacy", "2026-07-28"] {
        let out = py_client(&gw.url, mode, None).await;
        assert_flow(&out, &format!("stdio {mode}"));
        assert_progress(&out, &format!("stdio {mode}"));
    }
    let v1 = ts_client("ts_client.mjs", &gw.url, None).await;
    assert_flow(&v1, "ts v1 over stdio");
}

#[tokio::test]
async fn the_reference_filesystem_server_over_stdio() {
    let root = scratch("fs-root");
    let (_bridge, socket) =
        bridge(&[node().display().to_string(), filesystem(), root.display().to_string()], &[])
            .await;
    let mut cfg =
        config(json!({"kind": "stdio", "socket": socket, "sandbox": {}}), &["2025-11-25"]);
    // The server annotates write_file as destructive; without this entry the gateway would
    // hold the call for approval (tests/policy.rs covers that flow).
    cfg["tools"].as_array_mut().unwrap().push(
        json!({"name": "write_file", "effect": "destructive",
        "requireApproval": false,
        "arguments": [{"name": "path", "pathRoots": [root.display().to_string()]}]}),
    );
    let gw = gateway(cfg).await;
    let out = client(
        &python(),
        &[
            repo().join("gateway/tests/peers/py_special.py").display().to_string(),
            "fs".into(),
            gw.url.clone(),
            root.display().to_string(),
        ],
    )
    .await;
    assert!(out["tools"].as_array().unwrap().iter().any(|t| t == "read_text_file"), "{out}");
    assert_eq!(out["write_error"], false);
    assert_eq!(out["read"], "written through the gateway");
    assert_eq!(out["outside_error"], true, "the server refuses paths outside its root");
    assert_eq!(
        std::fs::read_to_string(root.join("palisade.txt")).unwrap(),
        "written through the gateway"
    );
}

#[tokio::test]
async fn a_python_sdk_server_in_each_era() {
    let (_server, upstream) = python_http().await;
    let gw =
        gateway(config(json!({"kind": "http", "url": upstream, "sse": false}), ALL_VERSIONS)).await;
    let status: Value =
        reqwest::get(format!("{}/status", gw.admin)).await.unwrap().json().await.unwrap();
    assert_eq!(status["stateless"], true, "the Python server speaks 2026-07-28 natively: {status}");
    for mode in ["legacy", "2026-07-28"] {
        let out = py_client(&gw.url, mode, None).await;
        assert_eq!(out["echo"], "Echo: hello through palisade", "{mode}: {out}");
        assert_progress(&out, &format!("python server {mode}"));
        assert_eq!(out["read"], "hello from python", "{mode}");
        assert!(out["prompts"].as_array().unwrap().contains(&json!("greet")), "{mode}: {out}");
    }
    let v2 = ts_client("ts_v2_client.mjs", &gw.url, None).await;
    assert_eq!(v2["echo"], "Echo: hello through palisade", "{v2}");
    // And over stdio, through the bridge.
    let (_bridge, socket) = bridge(
        &[
            python().display().to_string(),
            repo().join("gateway/tests/peers/py_server.py").display().to_string(),
            "stdio".into(),
        ],
        &[],
    )
    .await;
    let gw2 =
        gateway(config(json!({"kind": "stdio", "socket": socket, "sandbox": {}}), ALL_VERSIONS))
            .await;
    for mode in ["legacy", "2026-07-28"] {
        let out = py_client(&gw2.url, mode, None).await;
        assert_eq!(out["echo"], "Echo: hello through palisade", "stdio {mode}: {out}");
    }
}

#[tokio::test]
async fn legacy_sse_on_both_sides() {
    // An old server that speaks only HTTP+SSE upstream...
    let (_server, upstream) = everything_sse().await;
    let gw =
        gateway(config(json!({"kind": "http", "url": upstream, "sse": true}), ALL_VERSIONS)).await;
    // ...serves Streamable HTTP clients of both eras...
    for mode in ["legacy", "2026-07-28"] {
        let out = py_client(&gw.url, mode, None).await;
        assert_flow(&out, &format!("sse upstream, {mode} client"));
    }
    // ...and old HTTP+SSE clients.
    let out = client(
        &python(),
        &[
            repo().join("gateway/tests/peers/py_special.py").display().to_string(),
            "sse".into(),
            format!("{}/sse", gw.base),
        ],
    )
    .await;
    assert_eq!(out["echo"], "Echo: hello over sse", "{out}");
}
