//! A remote MCP server (`spec.remote`): the official Python SDK server behind HAProxy (from
//! Debian) terminating TLS with a certificate from a CA of the test's own, as a server
//! elsewhere looks to the gateway. The gateway reaches it over https, trusting that CA only
//! through `caFile`, and applies the same policy as to a server beside it: listings, calls in
//! both eras through the official Python SDK client, the credential from a Secret file (never
//! the client's), unlisted tools refused, argument guards, one audit record per call. It never
//! follows a redirect, trusts no certificate its CA file does not vouch for, and refuses a URL
//! naming an address it must never connect to.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::ErrorKind;
use std::net::TcpListener;

use common::shared::TlsFront;
use common::*;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const VERSIONS: &[&str] = &["2025-11-25", "2026-07-28"];

fn remote(url: String, ca_file: Option<&std::path::Path>) -> Value {
    let mut upstream = json!({"kind": "http", "url": url, "sse": false});
    if let Some(ca) = ca_file {
        upstream["caFile"] = json!(ca);
    }
    upstream
}

fn port_of(url: &str) -> u16 {
    url.rsplit(':').next().unwrap().split('/').next().unwrap().parse().unwrap()
}

fn text(r: &Value) -> String {
    r.pointer("/result/content/0/text").and_then(Value::as_str).unwrap_or_default().to_string()
}

fn error(r: &Value) -> String {
    r.pointer("/error/message").and_then(Value::as_str).unwrap_or_default().to_string()
}

/// A listener that counts the connections made to it (the target of the front's redirect).
struct Trap(TcpListener);

impl Trap {
    fn new() -> Trap {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        Trap(l)
    }
    fn url(&self) -> String {
        format!("https://127.0.0.1:{}/mcp", self.0.local_addr().unwrap().port())
    }
    fn connections(&self) -> usize {
        let mut n = 0;
        loop {
            match self.0.accept() {
                Ok(_) => n += 1,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return n,
                Err(e) => panic!("{e}"),
            }
        }
    }
}

#[tokio::test]
async fn a_remote_server_is_proxied_over_tls_under_the_same_policy() {
    let (_server, server_url) = python_http().await;
    let trap = Trap::new();
    let front = TlsFront::start(port_of(&server_url), &trap.url()).await;
    let dir = scratch("remote");
    let key = format!("remote-key-{}", rand::random::<u64>());
    let key_file = dir.join("key");
    std::fs::write(&key_file, &key).unwrap();
    let audit = dir.join("audit.jsonl");

    let url = format!("https://localhost:{}/mcp", front.port);
    let mut cfg = config(remote(url, Some(&front.ca_file)), VERSIONS);
    cfg["tools"] = json!([
        {"name": "echo", "effect": "read"},
        {"name": "show_auth_claims", "effect": "read"},
        {"name": "read_file", "effect": "read",
         "arguments": [{"name": "path", "pathRoots": ["/srv/data"]}]},
    ]);
    cfg["upstreamAuth"] =
        json!({"header": {"name": "Authorization", "prefix": "Bearer ", "valueFile": key_file}});
    cfg["audit"] = json!({"enabled": true, "checkpointEvery": 50, "file": audit});
    let gw = gateway(cfg).await;

    // Both eras through the official Python SDK client: the remote server's tools, filtered
    // by the policy (unlisted ones are gone), and a call.
    for mode in ["legacy", "2026-07-28"] {
        let seen = py_client(&gw.url, mode, None).await;
        let mut tools: Vec<String> =
            serde_json::from_value(seen["tools"].clone()).unwrap_or_default();
        tools.sort();
        assert_eq!(tools, vec!["echo", "read_file", "show_auth_claims"], "{mode}: {seen}");
        assert_eq!(seen["echo"], "Echo: hello through palisade", "{mode}: {seen}");
    }

    // The server receives the gateway's credential for it, and nothing of the client's.
    let r = stateless_with(
        &gw.url,
        "tools/call",
        json!({"name": "show_auth_claims", "arguments": {}}),
        &[],
    )
    .await;
    let got: Value = serde_json::from_str(&text(&r)).unwrap_or_else(|_| panic!("{r}"));
    assert_eq!(got["sha256"], hex::encode(Sha256::digest(key.as_bytes())), "{r}");

    // Policy: an unlisted tool is refused before it reaches the server; an argument outside
    // its roots too.
    let r =
        stateless_with(&gw.url, "tools/call", json!({"name": "leak", "arguments": {}}), &[]).await;
    assert!(r.get("error").is_some() && text(&r).is_empty(), "{r}");
    let r = stateless_with(
        &gw.url,
        "tools/call",
        json!({"name": "read_file", "arguments": {"path": "/etc/passwd"}}),
        &[],
    )
    .await;
    assert!(error(&r).contains("path"), "{r}");

    // One audit record per call, refusals included, and the chain verifies.
    let records: Vec<Value> = std::fs::read_to_string(&audit)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let calls_of = |name: &str, decision: &str| {
        records
            .iter()
            .filter(|r| {
                r["type"] == "call"
                    && r["method"] == "tools/call"
                    && r["name"] == name
                    && r["decision"] == decision
            })
            .count()
    };
    assert_eq!(calls_of("echo", "allow"), 2, "one per era");
    assert_eq!(calls_of("show_auth_claims", "allow"), 1);
    assert_eq!((calls_of("leak", "deny"), calls_of("read_file", "deny")), (1, 1));
    assert_eq!(calls_of("read_file", "allow") + calls_of("leak", "allow"), 0);
    assert_audit_verifies(&audit);
    assert_eq!(trap.connections(), 0);
}

#[tokio::test]
async fn a_remote_server_is_trusted_only_through_its_ca_and_never_followed_elsewhere() {
    let (_server, server_url) = python_http().await;
    let trap = Trap::new();
    let front = TlsFront::start(port_of(&server_url), &trap.url()).await;

    // Without its CA file the server's certificate is not trusted: no handshake, not ready.
    let untrusted = config(remote(format!("https://localhost:{}/mcp", front.port), None), VERSIONS);
    let (_gw, status) = unready_gateway(&untrusted).await;
    assert_eq!(status["ready"], false, "{status}");
    assert!(status["lastError"].as_str().unwrap().contains("could not be reached"), "{status}");

    // A server that answers with a redirect does not send the gateway (and the credential it
    // would carry) elsewhere.
    let moved = config(
        remote(format!("https://localhost:{}/moved/mcp", front.port), Some(&front.ca_file)),
        VERSIONS,
    );
    let (_gw, status) = unready_gateway(&moved).await;
    assert_eq!(status["ready"], false, "{status}");
    assert_eq!(trap.connections(), 0, "the redirect was followed");

    // A URL naming an address no connection may go to: the gateway does not start.
    let path = scratch("remote-forbidden").join("gateway.json");
    let forbidden = config(remote("https://0.0.0.0:1/mcp".into(), None), VERSIONS);
    std::fs::write(&path, forbidden.to_string()).unwrap();
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        tokio::process::Command::new(gateway_bin())
            .arg("serve")
            .arg(format!("--config={}", path.display()))
            .output(),
    )
    .await
    .expect("the gateway exits")
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("unspecified address"), "{stderr}");
}

/// A legacy HTTP+SSE server names the URL messages are posted to in its `endpoint` event; one
/// on another origin (where the gateway's credential for the server would follow) is refused.
#[tokio::test]
async fn a_legacy_sse_server_cannot_send_the_gateways_messages_to_another_origin() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let trap = Trap::new();
    let elsewhere = trap.url().replace("https://", "http://").replace("/mcp", "/messages");
    let sse = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = sse.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((mut conn, _)) = sse.accept().await {
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf).await;
            let event = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n\r\nevent: endpoint\ndata: {elsewhere}\n\n"
            );
            let _ = conn.write_all(event.as_bytes()).await;
            open.push(conn);
        }
    });
    let cfg = config(
        json!({"kind": "http", "url": format!("http://127.0.0.1:{port}/sse"), "sse": true}),
        &["2024-11-05", "2025-11-25"],
    );
    let (_gw, status) = unready_gateway(&cfg).await;
    assert_eq!(status["ready"], false, "{status}");
    assert_eq!(trap.connections(), 0, "a message went to the other origin");
    server.abort();
}
