//! What the server receives as credentials, in front of the official Python SDK server (its
//! `show_auth` tool answers the Authorization header it got): with a token exchange (RFC 8693)
//! against the test IdP's real token endpoint, a token issued for the calling user (the
//! client's own never), in both protocol eras, one per user, cached, and refreshed; with a
//! header from a Secret file, that header; and when no credential can be obtained, nothing is
//! forwarded and the client is told.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;

use common::idp::{AUDIENCE, EXCHANGE_CLIENT, EXCHANGE_SECRET, Idp, SCOPE, idp};
use common::*;
use serde_json::{Value, json};

const UPSTREAM_AUDIENCE: &str = "https://api.test.example";

/// The config of a gateway with OIDC in front of the Python SDK server, sending
/// `upstream_auth`.
fn config_with(idp: &Idp, server_url: &str, upstream_auth: Value) -> Value {
    let mut cfg = config_allowing_unlisted(
        json!({"kind": "http", "url": server_url, "sse": false}),
        &["2025-11-25", "2026-07-28"],
    );
    cfg["auth"] = json!({
        "oidc": {"issuer": idp.issuer, "audience": AUDIENCE, "requiredScopes": [SCOPE]},
        "oidcCaFile": idp.ca_file,
    });
    cfg["authorization"] = json!({"roles": [{"name": "users",
        "subjects": [{"claim": "sub", "values": ["alice", "bob"]}],
        "methods": ["**"], "tools": ["*"], "resources": ["**"], "prompts": ["*"]}]});
    cfg["upstreamAuth"] = upstream_auth;
    cfg
}

/// That gateway, once ready.
async fn gateway_with(idp: &Idp, server_url: &str, upstream_auth: Value) -> Gw {
    gateway(config_with(idp, server_url, upstream_auth)).await
}

fn secret_file(name: &str, content: &str) -> PathBuf {
    let path = scratch("upstream-secret").join(name);
    std::fs::write(&path, content).unwrap();
    path
}

fn exchange(idp: &Idp, secret: &PathBuf) -> Value {
    json!({"tokenExchange": {"tokenEndpoint": format!("{}/token", idp.issuer),
        "clientId": EXCHANGE_CLIENT, "clientSecretFile": secret, "audience": UPSTREAM_AUDIENCE,
        "scopes": ["api:read"], "caFile": idp.ca_file}})
}

/// A tool of the server through the gateway, stateless, as the holder of `token`.
async fn call(gw: &Gw, token: &str, tool: &str) -> Value {
    let auth = format!("Bearer {token}");
    stateless_with(
        &gw.url,
        "tools/call",
        json!({"name": tool, "arguments": {}}),
        &[("authorization", auth.as_str())],
    )
    .await
}

/// What the server says of the bearer token it received: `{"sha256", "claims"}` (the token
/// itself would be redacted in a result).
async fn received(gw: &Gw, token: &str) -> Value {
    let r = call(gw, token, "show_auth_claims").await;
    serde_json::from_str(text(&r)).unwrap_or_else(|_| panic!("{r}"))
}

fn sha256(token: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}

fn text(v: &Value) -> &str {
    v.pointer("/result/content/0/text").and_then(Value::as_str).unwrap_or_default()
}

#[tokio::test]
async fn the_server_gets_a_token_exchanged_for_the_caller_never_the_callers_own() {
    let idp = idp().await;
    let (_server, url) = python_http().await;
    let secret = secret_file("client-secret", &format!("{EXCHANGE_SECRET}\n"));
    let gw = gateway_with(&idp, &url, exchange(&idp, &secret)).await;
    // The handshake already ran with the gateway's own client-credentials token.
    assert!(
        idp.issued
            .lock()
            .unwrap()
            .iter()
            .any(|(g, s)| g == "client_credentials" && s == EXCHANGE_CLIENT),
        "{:?}",
        idp.issued.lock().unwrap()
    );

    let alice = idp.token("alice");
    let seen = received(&gw, &alice).await;
    assert_ne!(seen["sha256"], sha256(&alice), "the caller's own token reached the server");
    let c = &seen["claims"];
    assert_eq!(c["sub"], "alice", "{seen}");
    assert_eq!(c["aud"], UPSTREAM_AUDIENCE);
    assert_eq!(c["act"]["sub"], EXCHANGE_CLIENT);
    assert_eq!(c["scope"], "api:read");
    // The token the server got is one the token endpoint issued for alice.
    assert_eq!(exchanges(&idp, "alice"), 1);

    // Bob gets his own; alice's second call reuses hers (cached until shortly before expiry).
    let bob = received(&gw, &idp.token("bob")).await;
    assert_eq!(bob["claims"]["sub"], "bob");
    assert_ne!(bob["sha256"], seen["sha256"]);
    let again = received(&gw, &alice).await;
    assert_eq!(again["sha256"], seen["sha256"], "a cached exchanged token is reused");
    assert_eq!(exchanges(&idp, "alice"), 1);
    // A new token of alice's (a refresh) is exchanged anew.
    let refreshed = received(&gw, &idp.token("alice")).await;
    assert_eq!(refreshed["claims"]["sub"], "alice");
    assert_eq!(exchanges(&idp, "alice"), 2);
    // The plain `show_auth` result never carries a usable token back to the client.
    let plain = call(&gw, &alice, "show_auth").await;
    assert!(!text(&plain).contains(&alice) && text(&plain).starts_with("Bearer "), "{plain}");

    // The session era: the official Python SDK client, through its own upstream session.
    let out = tokio::process::Command::new(python())
        .arg(repo().join("gateway/tests/peers/py_auth_client.py"))
        .args([gw.url.as_str(), &idp.token("bob"), "legacy", "show_auth_claims:{}"])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let text = report["calls"]["show_auth_claims"]["text"].as_str().unwrap_or_default();
    let seen: Value = serde_json::from_str(text).unwrap_or_else(|_| panic!("{report}"));
    let c = &seen["claims"];
    assert_eq!(
        (c["sub"].as_str(), c["act"]["sub"].as_str()),
        (Some("bob"), Some(EXCHANGE_CLIENT)),
        "{report}"
    );
}

fn exchanges(idp: &Idp, sub: &str) -> usize {
    idp.issued
        .lock()
        .unwrap()
        .iter()
        .filter(|(g, s)| g.ends_with("token-exchange") && s == sub)
        .count()
}

#[tokio::test]
async fn without_a_credential_nothing_is_forwarded() {
    let idp = idp().await;
    let (_server, url) = python_http().await;
    // A gateway whose client secret the token endpoint does not accept: even its handshake
    // gets no token, so it never becomes ready (fail closed); its admin status says why.
    let wrong = secret_file("wrong-secret", "not-the-secret");
    let cfg = config_with(&idp, &url, exchange(&idp, &wrong));
    let (_gw, status) = unready_gateway(&cfg).await;
    assert_eq!(status["ready"], false, "{status}");
    let error = status["lastError"].as_str().unwrap_or_default();
    assert!(error.contains("could not obtain a credential"), "{status}");
    assert!(!error.contains(EXCHANGE_SECRET) && !error.contains("not-the-secret"), "{status}");
    assert!(idp.refused.load(std::sync::atomic::Ordering::SeqCst) > 0);

    // A ready gateway whose secret then goes away: calls are refused with a clear error and
    // the server is not called without a credential.
    let secret = secret_file("client-secret-2", EXCHANGE_SECRET);
    let gw = gateway_with(&idp, &url, exchange(&idp, &secret)).await;
    std::fs::remove_file(&secret).unwrap();
    let r = call(&gw, &idp.token("alice"), "show_auth").await;
    let msg = r.pointer("/error/message").and_then(Value::as_str).unwrap_or_default();
    assert!(msg.contains("could not obtain a credential"), "{r}");
}

#[tokio::test]
async fn a_header_from_a_secret_file_is_what_the_server_gets() {
    let idp = idp().await;
    let (_server, url) = python_http().await;
    let key = secret_file("api-key", "k-123\n");
    let gw = gateway_with(
        &idp,
        &url,
        json!({"header": {"name": "Authorization", "prefix": "Bearer ", "valueFile": key}}),
    )
    .await;
    let alice = idp.token("alice");
    let r = call(&gw, &alice, "show_auth").await;
    assert_eq!(text(&r), "Bearer k-123", "{r}");
    // A rotated Secret is read on the next request.
    std::fs::write(&key, "k-456").unwrap();
    assert_eq!(text(&call(&gw, &alice, "show_auth").await), "Bearer k-456");
}
