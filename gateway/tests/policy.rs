//! The gateway's security policy against real peers: JWTs signed by keys this test generates
//! and publishes as a JWKS on a loopback HTTPS identity provider, the official Python SDK as
//! client and server, the argument attack suite, approvals, and `audit verify` on the log the
//! gateway wrote.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::idp::{AUDIENCE, Idp, SCOPE, idp, now};

use std::path::PathBuf;

use base64::Engine;
use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

const STATELESS: &str = "2026-07-28";

// --- the gateway under test ------------------------------------------------------------------

struct Setup {
    gw: Gw,
    idp: Idp,
    audit: PathBuf,
    public_key: PathBuf,
    /// The server's own URL (for the positive control: what it sees when reached directly).
    server_url: String,
    _server: Proc,
}

async fn setup() -> Setup {
    let idp = idp().await;
    let (server, url) = python_http().await;
    let server_url = url.clone();
    let dir = scratch("policy");
    // The audit signing key, as a Secret would carry it (PKCS#8 PEM).
    let signing = {
        use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey};
        let mut seed = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut seed);
        let k = ed25519_dalek::SigningKey::from_bytes(&seed);
        let key_file = dir.join("audit.key");
        std::fs::write(&key_file, k.to_pkcs8_pem(Default::default()).unwrap().as_bytes()).unwrap();
        let pub_file = dir.join("audit.pub");
        std::fs::write(&pub_file, k.verifying_key().to_public_key_pem(Default::default()).unwrap())
            .unwrap();
        (key_file, pub_file)
    };
    let audit = dir.join("audit.jsonl");
    let mut cfg = config_allowing_unlisted(
        json!({"kind": "http", "url": url, "sse": false}),
        &["2025-11-25", STATELESS],
    );
    cfg["listen"]["resourceUri"] = json!(AUDIENCE);
    cfg["auth"] = json!({
        "oidc": {"issuer": idp.issuer, "audience": AUDIENCE, "requiredScopes": [SCOPE]},
        "oidcCaFile": idp.ca_file,
    });
    cfg["authorization"] = json!({"roles": [
        {"name": "admin", "subjects": [{"claim": "sub", "values": ["alice"]}],
         "methods": ["**"], "tools": ["*"], "resources": ["**"], "prompts": ["*"]},
        {"name": "reader", "subjects": [{"claim": "sub", "values": ["bob"]}],
         "methods": ["tools/list", "tools/call"], "tools": ["echo", "show_auth"]},
        {"name": "approver", "subjects": [{"claim": "sub", "values": ["carol"]}],
         "methods": ["tools/list"], "approver": true}
    ]});
    cfg["tools"] = json!([
        {"name": "read_file", "effect": "read",
         "arguments": [{"name": "path", "required": true, "pathRoots": ["/data", "/srv/shared"]}]},
        {"name": "fetch", "effect": "read",
         "arguments": [{"name": "url", "required": true, "url": {"schemes": ["https", "http"]}}]},
        {"name": "read_many", "effect": "read",
         "arguments": [{"name": "/paths/*", "pathRoots": ["/data", "/srv/shared"]}]},
        {"name": "fetch_all", "effect": "read",
         "arguments": [{"name": "/targets/*/url", "url": {"schemes": ["https", "http"]}}]},
        {"name": "delete_item", "effect": "destructive", "dryRun": {"argument": "dry_run"}}
    ]);
    // Where the server's Secrets would be mounted: never a tool's input.
    cfg["protectedPaths"] = json!(["/data/credentials"]);
    cfg["audit"] = json!({"enabled": true, "checkpointEvery": 10,
                          "signingKeyFile": signing.0, "file": audit,
                          "headFile": dir.join("audit-head.json")});
    let gw = gateway(cfg).await;
    Setup { gw, idp, audit, public_key: signing.1, server_url, _server: server }
}

/// One stateless request with a bearer token (and a traceparent to find it in the audit log).
async fn stateless(
    url: &str,
    token: Option<&str>,
    method: &str,
    name: Option<&str>,
    params: Value,
    trace_id: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut params = params;
    params["_meta"] = json!({"io.modelcontextprotocol/protocolVersion": STATELESS,
                             "io.modelcontextprotocol/clientCapabilities": {}});
    let mut req = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", STATELESS)
        .header("mcp-method", method)
        .body(json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string());
    if let Some(n) = name {
        req = req.header("mcp-name", n);
    }
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(t) = trace_id {
        req = req.header("traceparent", format!("00-{t}-00f067aa0ba902b7-01"));
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body = r.text().await.unwrap();
    (status, headers, serde_json::from_str(&body).unwrap_or(Value::String(body)))
}

async fn call_tool(s: &Setup, token: &str, tool: &str, args: Value, trace: Option<&str>) -> Value {
    stateless(
        &s.gw.url,
        Some(token),
        "tools/call",
        Some(tool),
        json!({"name": tool, "arguments": args}),
        trace,
    )
    .await
    .2
}

fn audit_records(s: &Setup) -> Vec<Value> {
    std::fs::read_to_string(&s.audit)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn text_of(v: &Value) -> String {
    v.pointer("/result/content/0/text").and_then(Value::as_str).unwrap_or_default().to_string()
}

// --- authentication --------------------------------------------------------------------------

#[tokio::test]
async fn tokens_are_verified_and_never_reach_the_server() {
    let s = setup().await;
    let list = |token: Option<String>| {
        let url = s.gw.url.clone();
        async move { stateless(&url, token.as_deref(), "tools/list", None, json!({}), None).await }
    };
    // A valid token works and the server never sees it.
    let (status, _, body) = list(Some(s.idp.token("alice"))).await;
    assert_eq!(status, 200, "{body}");
    let shown = call_tool(&s, &s.idp.token("alice"), "show_auth", json!({}), None).await;
    assert_eq!(text_of(&shown), "none", "the upstream saw an Authorization header: {shown}");
    // Positive control: the probe does see a header sent to the server directly.
    let direct = show_auth_directly(&s.server_url, "Bearer probe-credential").await;
    assert_eq!(direct, "Bearer probe-credential", "the probe cannot see headers at all");

    // No token: 401 with the RFC 9728 pointer.
    let (status, h, _) = list(None).await;
    assert_eq!(status, 401);
    let challenge = h["www-authenticate"].to_str().unwrap().to_string();
    assert!(
        challenge.contains("resource_metadata=\"https://mcp.test.example/.well-known/oauth-protected-resource/mcp\""),
        "{challenge}"
    );
    let prm: Value =
        reqwest::get(format!("{}/.well-known/oauth-protected-resource/mcp", s.gw.base))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(prm["resource"], AUDIENCE);
    assert_eq!(prm["authorization_servers"][0], s.idp.issuer);

    let refused = |claims: Value| s.idp.sign(&claims);
    let mut c = s.idp.claims("alice");
    c["aud"] = json!("https://someone-else.example/mcp");
    let wrong_audience = refused(c);
    let mut c = s.idp.claims("alice");
    c["exp"] = json!(now() - 3600);
    let expired = refused(c);
    let mut c = s.idp.claims("alice");
    c["nbf"] = json!(now() + 3600);
    let not_yet = refused(c);
    let mut c = s.idp.claims("alice");
    c["iss"] = json!("https://evil.example");
    let wrong_issuer = refused(c);
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let alg_none =
        format!("{}.{}.", b64(&json!({"alg": "none", "typ": "JWT"})), b64(&s.idp.claims("alice")));
    let mut h = Header::new(Algorithm::ES256);
    h.kid = Some("k1".into());
    let wrong_key = jsonwebtoken::encode(&h, &s.idp.claims("alice"), &s.idp.rogue).unwrap();
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some("k1".into());
    let hmac =
        jsonwebtoken::encode(&h, &s.idp.claims("alice"), &EncodingKey::from_secret(b"k1")).unwrap();
    let mut tampered = s.idp.token("alice");
    tampered.insert_str(tampered.find('.').unwrap() + 1, "eyJzdWIiOiJyb290In0");
    for (what, token) in [
        ("wrong audience", wrong_audience),
        ("expired", expired),
        ("not yet valid", not_yet),
        ("wrong issuer", wrong_issuer),
        ("alg none", alg_none),
        ("signed by another key", wrong_key),
        ("HMAC with a guessable secret", hmac),
        ("tampered payload", tampered),
        ("garbage", "not-a-jwt".to_string()),
    ] {
        let (status, h, body) = list(Some(token)).await;
        assert_eq!(status, 401, "{what}: {body}");
        assert!(
            h["www-authenticate"].to_str().unwrap().contains("error=\"invalid_token\""),
            "{what}"
        );
    }
    // Missing scope: 403 insufficient_scope naming the scope.
    let mut c = s.idp.claims("alice");
    c["scope"] = json!("other");
    let (status, h, _) = list(Some(s.idp.sign(&c))).await;
    assert_eq!(status, 403);
    let challenge = h["www-authenticate"].to_str().unwrap();
    assert!(challenge.contains("insufficient_scope") && challenge.contains(SCOPE), "{challenge}");
    // A token in the query string is refused even with a valid header.
    let r = reqwest::Client::new()
        .post(format!("{}?access_token={}", s.gw.url, s.idp.token("alice")))
        .bearer_auth(s.idp.token("alice"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let failures = audit_records(&s)
        .into_iter()
        .filter(|r| r["type"] == "security_event" && r["kind"] == "auth_failure")
        .count();
    assert!(failures >= 12, "auth failures are audited: {failures}");
}

/// `show_auth` called on the server itself (session era, raw HTTP), with `authorization`.
async fn show_auth_directly(url: &str, authorization: &str) -> String {
    let http = reqwest::Client::new();
    let post = |sid: Option<String>, body: Value| {
        let mut r = http
            .post(url)
            .header("authorization", authorization)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(body.to_string());
        if let Some(sid) = sid {
            r = r.header("mcp-session-id", sid).header("mcp-protocol-version", "2025-11-25");
        }
        r.send()
    };
    let init = post(None, json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "probe", "version": "1"}}}))
    .await
    .unwrap();
    let sid = init.headers()["mcp-session-id"].to_str().unwrap().to_string();
    let _ = init.text().await;
    let _ =
        post(Some(sid.clone()), json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await
            .unwrap();
    let r = post(
        Some(sid),
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "show_auth", "arguments": {}}}),
    )
    .await
    .unwrap();
    let body = r.text().await.unwrap();
    // JSON, or one SSE event.
    let json =
        body.lines().find_map(|l| l.strip_prefix("data:")).unwrap_or(&body).trim().to_string();
    let v: Value = serde_json::from_str(&json).unwrap();
    text_of(&v)
}

// --- authorization with a real SDK client, and session binding ------------------------------

#[tokio::test]
async fn a_reader_sees_only_its_tools_and_a_replayed_session_is_refused() {
    let s = setup().await;
    let script = repo().join("gateway/tests/peers/py_auth_client.py").display().to_string();
    for mode in ["legacy", STATELESS] {
        let out =
            client(&python(), &[script.clone(), s.gw.url.clone(), s.idp.token("bob"), mode.into()])
                .await;
        assert_eq!(out["tools"], json!(["echo", "show_auth"]), "{mode}: {out}");
        assert_eq!(out["calls"]["echo"]["error"], false, "{mode}: {out}");
        assert_eq!(out["calls"]["add"]["error"], true, "{mode}: {out}");
        assert!(
            out["calls"]["add"]["text"].as_str().unwrap().contains("Unknown tool"),
            "{mode}: {out}"
        );
        assert_eq!(out["calls"]["show_auth"]["text"], "none", "{mode}: {out}");
        let admin = client(
            &python(),
            &[script.clone(), s.gw.url.clone(), s.idp.token("alice"), mode.into()],
        )
        .await;
        assert!(admin["tools"].as_array().unwrap().len() > 5, "{mode}: {admin}");
        assert_eq!(admin["calls"]["add"]["error"], false, "{mode}: {admin}");
    }

    // A session opened by alice, presented by bob.
    let http = reqwest::Client::new();
    let post = |token: String, sid: Option<String>, body: Value| {
        let mut r = http
            .post(&s.gw.url)
            .bearer_auth(token)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(body.to_string());
        if let Some(sid) = sid {
            r = r.header("mcp-session-id", sid).header("mcp-protocol-version", "2025-11-25");
        }
        r.send()
    };
    let init = post(
        s.idp.token("alice"),
        None,
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}),
    )
    .await
    .unwrap();
    assert_eq!(init.status().as_u16(), 200);
    let sid = init.headers()["mcp-session-id"].to_str().unwrap().to_string();
    let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"});
    let hijack = post(s.idp.token("bob"), Some(sid.clone()), list.clone()).await.unwrap();
    assert_eq!(hijack.status().as_u16(), 404, "another principal may not use the session");
    let owner = post(s.idp.token("alice"), Some(sid), list).await.unwrap();
    assert_eq!(owner.status().as_u16(), 200, "the owner still can");
    assert!(
        audit_records(&s)
            .iter()
            .any(|r| r["kind"] == "session_hijack_attempt" && r["principal"] == "bob"),
        "the hijack attempt is in the audit log"
    );
}

// --- the argument attack suite ---------------------------------------------------------------

const PATH_ATTACKS: &[&str] = &[
    "../etc/passwd",
    "etc/passwd",
    "/data/../etc/passwd",
    "/data/./../etc/passwd",
    "/data/a/../../etc/passwd",
    "/srv/shared/../../etc/shadow",
    "/data/%2e%2e/etc/passwd",
    "/data/%2E%2E%2Fetc%2Fpasswd",
    "/data/%252e%252e/etc/passwd",
    "/data/..%2fetc/passwd",
    "/data/%c0%ae%c0%ae/etc/passwd",
    "/data/..\\etc\\passwd",
    "/data\\..\\..\\etc",
    "C:\\Windows\\System32\\config\\SAM",
    "/etc/passwd",
    "/datab/secret",
    "/data/x\u{0}.txt",
    "/data/%00",
    "/data/a\nb",
    "/data/\u{FF0E}\u{FF0E}/etc",
    "/data/\u{2025}/etc",
    "/data/..\u{FF0F}etc",
    "/data/...",
    "/data/.. /etc",
    "//server/share/file",
    "file:///etc/passwd",
    "~/.ssh/id_rsa",
    "/data/CON",
    "/data/nul.txt",
    "/proc/self/environ",
    "/dev/zero",
    "/var/run/secrets/kubernetes.io/serviceaccount/token",
];

fn url_attacks() -> Vec<String> {
    let mut v: Vec<String> = [
        "http://127.0.0.1/",
        "http://localhost/",
        "http://LOCALHOST./",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/",
        "http://[::]/",
        "http://2130706433/",
        "http://0x7f000001/",
        "http://017700000001/",
        "http://0177.0.0.1/",
        "http://127.1/",
        "http://0/",
        "http://0.0.0.0/",
        "http://10.0.0.1/",
        "http://172.16.5.4/",
        "http://192.168.1.1/",
        "http://100.64.0.1/",
        "http://[fd00::1]/",
        "http://[fe80::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:a9fe:a9fe]/",
        "http://[::127.0.0.1]/",
        "http://169.254.43518/",
        "http://0xa9.0xfe.0xa9.0xfe/",
        "http://0251.0376.0251.0376/",
        "http://2852039166/",
        "http://100.100.100.200/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://foo.localhost/",
        "http://printer.local/",
        "http://kubernetes.default.svc/",
        "http://kubernetes.default.svc.cluster.local/api",
        "http://user@127.0.0.1/",
        "http://example.com@127.0.0.1/",
        "http://127.0.0.1:8080/",
        "https://example.com:8443/",
        "ftp://example.com/",
        "file:///etc/passwd",
        "gopher://127.0.0.1:70/",
        "dict://127.0.0.1:11211/",
        "http://127.0.0.1\t/",
        "http://evil.example\\@127.0.0.1/",
        "http://this-name-does-not-resolve.invalid/",
        "not a url",
        // Tunnelling IPv6 prefixes are not public (Teredo, NAT64 local use, ORCHID).
        "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/",
        "http://[64:ff9b:1::a9fe:a9fe]/",
        "http://[2001:20::1]/",
        "http://[2002:a9fe:a9fe::1]/",
        // Names that spell internal addresses (wildcard DNS).
        "http://169.254.169.254.nip.io/",
        "http://10-0-0-1.sslip.io/",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // A real DNS name of this machine: resolves to one of its own (never public) addresses.
    let host = std::process::Command::new("hostname").output().unwrap();
    v.push(format!("http://{}/", String::from_utf8_lossy(&host.stdout).trim()));
    v
}

#[tokio::test]
async fn the_argument_attack_suite_is_refused_and_audited() {
    let s = setup().await;
    let token = s.idp.token("alice");
    let mut cases: Vec<(&str, Value)> =
        PATH_ATTACKS.iter().map(|p| ("read_file", json!({"path": p}))).collect();
    let urls = url_attacks();
    cases.extend(urls.iter().map(|u| ("fetch", json!({"url": u}))));
    // Safety flags smuggled into arguments, in any casing and word separation, at any depth.
    cases.push(("read_file", json!({"path": "/data/a.txt", "dangerouslySkipApproval": true})));
    cases.push(("read_file", json!({"path": "/data/a.txt", "options": {"force": true}})));
    cases.push(("read_file", json!({"path": "/data/a.txt", "Dangerously-Skip-Approval": true})));
    cases.push(("read_file", json!({"path": "/data/a.txt", "SKIP_APPROVAL": true})));
    cases.push(("read_file", json!({"path": "/data/a.txt", "x": [{"no-confirm": 1}]})));
    // Paths and URLs inside arrays and nested objects are reached by wildcard pointers.
    cases.push(("read_many", json!({"paths": ["/data/ok.txt", "/etc/passwd"]})));
    cases.push(("read_many", json!({"paths": ["/data/../etc/shadow"]})));
    cases.push((
        "fetch_all",
        json!({"targets": [{"url": "https://93.184.216.34/"}, {"url": "http://169.254.169.254/"}]}),
    ));
    cases.push(("fetch_all", json!({"targets": [{"url": "http://[::1]/"}]})));
    // The server's Secret mounts are never a tool's input, even under an allowed root.
    cases.push(("read_file", json!({"path": "/data/credentials/token"})));
    cases.push(("read_many", json!({"paths": ["/data/credentials"]})));
    assert!(cases.len() >= 60, "{} cases", cases.len());
    let mut missing = vec![];
    for (i, (tool, args)) in cases.iter().enumerate() {
        let trace = format!("{:032x}", 0xa77ac000_u128 + i as u128);
        let answer = call_tool(&s, &token, tool, args.clone(), Some(&trace)).await;
        assert_eq!(
            answer.pointer("/error/code"),
            Some(&json!(-32602)),
            "{tool} {args} was not refused: {answer}"
        );
        missing.push((trace, format!("{tool} {args}")));
    }
    // Benign calls pass: the suite can tell the difference.
    for (tool, args, expect) in [
        ("read_file", json!({"path": "/data/notes.txt"}), "contents of /data/notes.txt"),
        (
            "read_file",
            json!({"path": "/srv/shared/a/b..c.txt"}),
            "contents of /srv/shared/a/b..c.txt",
        ),
        (
            "fetch",
            json!({"url": "https://93.184.216.34/index.html"}),
            "fetched https://93.184.216.34/index.html",
        ),
        (
            "fetch",
            json!({"url": "http://[2606:4700:4700::1111]/"}),
            "fetched http://[2606:4700:4700::1111]/",
        ),
    ] {
        let answer = call_tool(&s, &token, tool, args.clone(), None).await;
        assert_eq!(text_of(&answer), expect, "{tool} {args}: {answer}");
    }
    // The canonical form of a URL is what was judged, and what the server receives.
    for (given, forwarded) in [
        ("https://93.184.216.34:443/a/./b/../c", "https://93.184.216.34/a/c"),
        ("http://0x5db8d822/x", "http://93.184.216.34/x"),
        ("HTTP://93.184.216.34/%7Euser", "http://93.184.216.34/%7Euser"),
    ] {
        let answer = call_tool(&s, &token, "fetch", json!({"url": given}), None).await;
        assert_eq!(text_of(&answer), format!("fetched {forwarded}"), "{given}: {answer}");
    }
    let answer = call_tool(
        &s,
        &token,
        "fetch_all",
        json!({"targets": [{"url": "https://0x5db8d822/"}, {"url": "https://93.184.216.34/b"}]}),
        None,
    )
    .await;
    assert_eq!(
        text_of(&answer),
        "fetched https://93.184.216.34/,https://93.184.216.34/b",
        "{answer}"
    );
    let answer =
        call_tool(&s, &token, "read_many", json!({"paths": ["/data/a", "/srv/shared/b"]}), None)
            .await;
    assert_eq!(text_of(&answer), "read /data/a,/srv/shared/b", "{answer}");
    // Arguments a listed tool neither declares nor has a rule for are refused by default.
    let answer =
        call_tool(&s, &token, "read_file", json!({"path": "/data/a", "mode": "raw"}), None).await;
    let message = answer.pointer("/error/message").and_then(Value::as_str).unwrap_or_default();
    assert!(message.contains("'mode'"), "undeclared argument: {answer}");
    // Arguments that contradict the tool's declared inputSchema never reach the server.
    for args in [json!({"a": "one", "b": 2}), json!({"a": 1}), json!({"a": 1.5, "b": 2})] {
        let answer = call_tool(&s, &token, "add", args.clone(), None).await;
        let message = answer.pointer("/error/message").and_then(Value::as_str).unwrap_or_default();
        assert!(message.contains("inputSchema"), "add {args}: {answer}");
    }
    // Every refused case is a security event in the audit log.
    let records = audit_records(&s);
    missing.retain(|(trace, _)| {
        !records.iter().any(|r| {
            r["type"] == "security_event"
                && r["request_id"].as_str().is_some_and(|id| id.starts_with(trace.as_str()))
                && ["path_traversal_attempt", "ssrf_attempt", "safety_flag_override"]
                    .contains(&r["kind"].as_str().unwrap_or_default())
        })
    });
    assert!(missing.is_empty(), "refused without a security event: {missing:?}");
}

// --- approvals -------------------------------------------------------------------------------

async fn decide(s: &Setup, who: &str, id: &str, hash: &str, approve: bool) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{}/approvals/{id}", s.gw.base))
        .bearer_auth(s.idp.token(who))
        .body(json!({"planHash": hash, "approve": approve}).to_string())
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_destructive_call_runs_only_after_its_exact_plan_is_approved() {
    let s = setup().await;
    let alice = s.idp.token("alice");
    let deleted = |s: &Setup| {
        let t = s.idp.token("alice");
        let url = s.gw.url.clone();
        async move {
            let v = stateless(
                &url,
                Some(&t),
                "tools/call",
                Some("deleted"),
                json!({"name": "deleted", "arguments": {}}),
                None,
            )
            .await
            .2;
            text_of(&v)
        }
    };
    // The first call is a plan with the dry-run preview; nothing is deleted.
    let plan = call_tool(&s, &alice, "delete_item", json!({"name": "db-1"}), None).await;
    assert_eq!(plan.pointer("/result/isError"), Some(&json!(true)), "{plan}");
    let meta = plan.pointer("/result/_meta/palisade.dev~1approvalRequired").unwrap().clone();
    let (id, hash) = (
        meta["approvalId"].as_str().unwrap().to_string(),
        meta["planHash"].as_str().unwrap().to_string(),
    );
    assert_eq!(meta["arguments"], json!({"name": "db-1"}));
    assert_eq!(meta["preview"]["content"][0]["text"], "would delete db-1", "{meta}");
    assert_eq!(deleted(&s).await, "");
    let send = |args: Value, approval: &str| {
        let params = json!({"name": "delete_item", "arguments": args,
                            "_meta": {"palisade.dev/approval": approval}});
        let (url, t) = (s.gw.url.clone(), alice.clone());
        async move { stateless_with_meta(&url, &t, params).await }
    };
    // Not approved yet.
    let early = send(json!({"name": "db-1"}), &id).await;
    assert!(
        early.pointer("/error/message").unwrap().as_str().unwrap().contains("waiting"),
        "{early}"
    );
    // Only an approver, not the requester, and only for the right hash.
    assert_eq!(decide(&s, "bob", &id, &hash, true).await.0, 403);
    assert_eq!(decide(&s, "alice", &id, &hash, true).await.0, 403);
    assert_eq!(decide(&s, "carol", &id, "0".repeat(64).as_str(), true).await.0, 409);
    let (status, view) = decide(&s, "carol", &id, &hash, true).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["state"], "approved");
    // Changed arguments are refused; the approval survives for the exact call.
    let changed = send(json!({"name": "db-2"}), &id).await;
    assert!(
        changed.pointer("/error/message").unwrap().as_str().unwrap().contains("other arguments"),
        "{changed}"
    );
    assert_eq!(deleted(&s).await, "");
    let applied = send(json!({"name": "db-1"}), &id).await;
    assert_eq!(text_of(&applied), "deleted db-1", "{applied}");
    // Single use.
    let reused = send(json!({"name": "db-1"}), &id).await;
    assert!(
        reused.pointer("/error/message").unwrap().as_str().unwrap().contains("already used"),
        "{reused}"
    );
    assert_eq!(deleted(&s).await, "db-1");
    let records = audit_records(&s);
    let approval = records
        .iter()
        .find(|r| {
            r["type"] == "approval" && r["approver"] == "carol" && r["plan_hash"] == hash.as_str()
        })
        .expect("the approval is audited");
    // What was approved is in the record: the arguments and the preview the approver saw.
    assert_eq!(approval["arguments"], json!({"name": "db-1"}), "{approval}");
    assert_eq!(approval["preview"]["content"][0]["text"], "would delete db-1", "{approval}");
    // The preview was a call of the server: audited as one.
    assert!(
        records.iter().any(|r| r["type"] == "call"
            && r["decision"] == "preview"
            && r["name"] == "delete_item"),
        "the dry run is audited"
    );
    assert!(records.iter().any(|r| r["type"] == "call"
        && r["approval_id"] == id.as_str()
        && r["decision"] == "allow"));
}

async fn stateless_with_meta(url: &str, token: &str, params: Value) -> Value {
    let bearer = format!("Bearer {token}");
    stateless_with(url, "tools/call", params, &[("authorization", &bearer)]).await
}

// --- results and the audit chain -------------------------------------------------------------

#[tokio::test]
async fn secrets_are_redacted_and_the_audit_chain_detects_tampering() {
    let s = setup().await;
    let alice = s.idp.token("alice");
    let leaked = call_tool(&s, &alice, "leak", json!({}), None).await;
    let text = text_of(&leaked);
    assert!(!text.contains("IOSFODNN7EXAMPLE") && !text.contains("ghp_aaaa"), "{text}");
    assert!(text.contains("[REDACTED:aws-access-key]"), "{text}");
    for i in 0..25 {
        call_tool(&s, &alice, "echo", json!({"message": format!("m{i}")}), None).await;
    }
    let records = audit_records(&s);
    let leak = records.iter().find(|r| r["type"] == "call" && r["name"] == "leak").unwrap();
    // The SDK returns the text twice (content and structuredContent): both are redacted.
    assert!(!leaked.to_string().contains("IOSFODNN7EXAMPLE"), "{leaked}");
    assert!(leak["redactions"]["aws-access-key"].as_u64().is_some_and(|n| n >= 1), "{leak}");
    assert!(leak["redactions"]["github-token"].as_u64().is_some_and(|n| n >= 1), "{leak}");
    assert!(leak["params_sha256"].as_str().is_some_and(|h| h.len() == 64));

    let bin = gateway_bin();
    let verify = |path: &PathBuf| {
        let out = std::process::Command::new(bin)
            .args(["audit", "verify"])
            .arg(path)
            .arg("--public-key")
            .arg(&s.public_key)
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let (code, out) = verify(&s.audit);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("intact") && !out.contains(" 0 checkpoints (0 signature"), "{out}");

    let lines: Vec<String> =
        std::fs::read_to_string(&s.audit).unwrap().lines().map(str::to_string).collect();
    assert!(lines.len() > 20);
    let dir = scratch("tamper");
    let write = |name: &str, lines: &[String]| {
        let p = dir.join(name);
        std::fs::write(&p, lines.join("\n") + "\n").unwrap();
        p
    };
    // An edit of line 5 (a decision flipped), a removal of line 8, lines 11 and 12 swapped.
    let mut edited = lines.clone();
    edited[4] = edited[4].replacen("\"decision\":\"allow\"", "\"decision\":\"deny\"", 1).replacen(
        "\"type\":\"call\"",
        "\"type\":\"calls\"",
        1,
    );
    assert_ne!(edited[4], lines[4]);
    let mut removed = lines.clone();
    removed.remove(7);
    let mut swapped = lines.clone();
    swapped.swap(10, 11);
    for (name, tampered, line) in
        [("edited", edited, 5), ("removed", removed, 8), ("swapped", swapped, 11)]
    {
        let (code, out) = verify(&write(name, &tampered));
        assert_eq!(code, Some(1), "{name}: {out}");
        assert!(out.contains(&format!("line {line}:")), "{name}: {out}");
    }
    // Without the signing key, anyone can rewrite a record and recompute the chain after it:
    // the hashes then agree, and only the signatures tell. A flipped decision, re-chained.
    let mut forged = lines.clone();
    let target = forged.iter().position(|l| l.contains("\"decision\":\"allow\"")).unwrap();
    let mut prev: Option<String> = None;
    for line in forged.iter_mut().skip(target) {
        let mut rec: Value = serde_json::from_str(line).unwrap();
        if prev.is_none() {
            rec["decision"] = json!("deny");
        }
        if let Some(p) = &prev {
            rec["prev"] = json!(p);
            if rec["type"] == "checkpoint" || rec["type"] == "boot" {
                rec["signed"] = json!(p);
            }
        }
        rec.as_object_mut().unwrap().remove("hash");
        let hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(rec.to_string().as_bytes()));
        rec["hash"] = json!(hash);
        prev = Some(hash);
        *line = rec.to_string();
    }
    let path = write("forged", &forged);
    let unkeyed =
        std::process::Command::new(bin).args(["audit", "verify"]).arg(&path).output().unwrap();
    assert_eq!(unkeyed.status.code(), Some(0), "the re-chained log is consistent without the key");
    let (code, out) = verify(&path);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("signature does not verify"), "{out}");
}

/// Hole 6 of the audit: after a restart the chain continues from the kept head with a signed
/// boot record; removing records before the restart breaks the chain at that record.
#[tokio::test]
async fn the_audit_chain_survives_a_restart_and_shows_a_removed_tail() {
    let mut s = setup().await;
    let alice = s.idp.token("alice");
    for i in 0..4 {
        call_tool(&s, &alice, "echo", json!({"message": format!("before {i}")}), None).await;
    }
    // Killed, not stopped: no final checkpoint is written.
    s.gw.proc.0.kill().await.unwrap();
    let before = std::fs::read_to_string(&s.audit).unwrap().lines().count();
    let cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(&s.gw.config_path).unwrap()).unwrap();
    s.gw = gateway(cfg).await;
    call_tool(&s, &alice, "echo", json!({"message": "after"}), None).await;
    let lines: Vec<String> =
        std::fs::read_to_string(&s.audit).unwrap().lines().map(str::to_string).collect();
    let boot = lines.iter().rposition(|l| l.contains("\"type\":\"boot\"")).unwrap();
    assert_eq!(boot, before, "the restarted gateway begins with a boot record");
    let verify = |lines: &[String]| {
        let p = scratch("restart").join("audit.jsonl");
        std::fs::write(&p, lines.join("\n") + "\n").unwrap();
        let out = std::process::Command::new(gateway_bin())
            .args(["audit", "verify"])
            .arg(&p)
            .arg("--public-key")
            .arg(&s.public_key)
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let (code, out) = verify(&lines);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("1 restarts"), "{out}");
    // The restarted container's own output verifies by itself.
    let (code, out) = verify(&lines[boot..]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("after a restart"), "{out}");
    // The last records before the restart removed: broken at the boot record.
    let mut cut = lines.clone();
    cut.drain(boot - 2..boot);
    let (code, out) = verify(&cut);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains(&format!("line {}:", boot - 1)), "{out}");
}

// --- every endpoint needs a token, and roles grant methods, resources and prompts -------------

#[tokio::test]
async fn streams_deletes_and_resumption_need_a_token_and_the_owner() {
    let s = setup().await;
    let http = reqwest::Client::new();
    let init = http
        .post(&s.gw.url)
        .bearer_auth(s.idp.token("alice"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(
            json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"}}})
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    let sid = init.headers()["mcp-session-id"].to_str().unwrap().to_string();
    let request = |method: reqwest::Method, token: Option<String>, resume: bool| {
        let mut r = http
            .request(method, &s.gw.url)
            .header("accept", "text/event-stream")
            .header("mcp-session-id", &sid)
            .header("mcp-protocol-version", "2025-11-25");
        if resume {
            r = r.header("last-event-id", "0");
        }
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    for (method, resume) in [
        (reqwest::Method::GET, false),
        (reqwest::Method::GET, true),
        (reqwest::Method::DELETE, false),
    ] {
        let anonymous = request(method.clone(), None, resume).await.unwrap();
        assert_eq!(anonymous.status().as_u16(), 401, "{method} (resume {resume}) without a token");
        let other = request(method.clone(), Some(s.idp.token("bob")), resume).await.unwrap();
        assert_eq!(other.status().as_u16(), 404, "{method} (resume {resume}) by another principal");
    }
    // Control: the owner may open the stream and end the session.
    let stream = request(reqwest::Method::GET, Some(s.idp.token("alice")), false).await.unwrap();
    assert_eq!(stream.status().as_u16(), 200);
    drop(stream);
    let end = request(reqwest::Method::DELETE, Some(s.idp.token("alice")), false).await.unwrap();
    assert_eq!(end.status().as_u16(), 200);
}

#[tokio::test]
async fn roles_grant_methods_resources_and_prompts() {
    let s = setup().await;
    let mut cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(&s.gw.config_path).unwrap()).unwrap();
    cfg["authorization"]["roles"].as_array_mut().unwrap().push(json!(
        {"name": "notes", "subjects": [{"claim": "sub", "values": ["dave"]}],
         "methods": ["resources/list", "resources/read", "prompts/list", "prompts/get"],
         "resources": ["note://hello"], "prompts": ["greet"]}));
    cfg["listen"]["address"] = json!(format!("127.0.0.1:{}", free_port()));
    cfg["listen"]["adminAddress"] = json!(format!("127.0.0.1:{}", free_port()));
    let mut s = s;
    s.gw = gateway(cfg).await;
    let gw = &s.gw;
    let ask = |who: &str, method: &'static str, params: Value| {
        let (url, token) = (gw.url.clone(), s.idp.token(who));
        let name =
            params.get("name").or(params.get("uri")).and_then(Value::as_str).map(str::to_string);
        async move { stateless(&url, Some(&token), method, name.as_deref(), params, None).await.2 }
    };
    let listed = ask("dave", "resources/list", json!({})).await;
    let uris: Vec<&str> = listed
        .pointer("/result/resources")
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["uri"].as_str().unwrap())
        .collect();
    assert_eq!(uris, vec!["note://hello"], "{listed}");
    let ok = ask("dave", "resources/read", json!({"uri": "note://hello"})).await;
    assert_eq!(ok.pointer("/result/contents/0/text"), Some(&json!("hello from python")), "{ok}");
    let hidden = ask("dave", "resources/read", json!({"uri": "note://secret"})).await;
    assert_eq!(
        hidden.pointer("/error/code"),
        Some(&json!(-32002)),
        "answered as unknown: {hidden}"
    );
    let prompts = ask("dave", "prompts/list", json!({})).await;
    let names: Vec<&str> = prompts
        .pointer("/result/prompts")
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["greet"], "{prompts}");
    let refused = ask("dave", "prompts/get", json!({"name": "internal_prompt"})).await;
    assert!(
        refused.pointer("/error/message").unwrap().as_str().unwrap().contains("Unknown prompt"),
        "{refused}"
    );
    // A method no role of the principal grants: as if it did not exist, and audited.
    let denied = ask("dave", "tools/list", json!({})).await;
    assert_eq!(denied.pointer("/error/code"), Some(&json!(-32601)), "{denied}");
    // Control: the admin sees everything.
    let all = ask("alice", "resources/list", json!({})).await;
    assert!(all.pointer("/result/resources").unwrap().as_array().unwrap().len() >= 2, "{all}");
    let events = audit_records(&s);
    assert!(
        events.iter().any(|r| r["kind"] == "policy_block"
            && r["principal"] == "dave"
            && r["detail"].as_str().unwrap_or_default().contains("tools/list")),
        "the denial is audited"
    );
}

// --- mTLS as a second factor, and certificate-bound tokens ------------------------------------

struct ClientPki {
    ca_pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl ClientPki {
    fn new() -> ClientPki {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().unwrap();
        let ca = p.self_signed(&key).unwrap();
        ClientPki { ca_pem: ca.pem(), issuer: rcgen::Issuer::new(p, key) }
    }

    /// A client certificate naming `spiffe://test/<name>`: (PEM of cert and key, DER of cert).
    fn client(&self, name: &str) -> (String, Vec<u8>) {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.subject_alt_names = vec![rcgen::SanType::URI(
            rcgen::string::Ia5String::try_from(format!("spiffe://test/{name}")).unwrap(),
        )];
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        (format!("{}{}", cert.pem(), key.serialize_pem()), cert.der().to_vec())
    }
}

#[tokio::test]
async fn mtls_is_a_second_factor_and_bound_tokens_need_their_certificate() {
    let idp = idp().await;
    let (_server, url) = python_http().await;
    let dir = scratch("mtls");
    let server_ca =
        palisade_https::ca::Authority::generate("gateway CA", std::time::Duration::from_secs(3600))
            .unwrap();
    let leaf = server_ca
        .issue_server(&["localhost".to_string()], std::time::Duration::from_secs(3600))
        .unwrap();
    std::fs::write(dir.join("tls.crt"), &leaf.cert_pem).unwrap();
    std::fs::write(dir.join("tls.key"), &leaf.key_pem).unwrap();
    let clients = ClientPki::new();
    std::fs::write(dir.join("client-ca.pem"), &clients.ca_pem).unwrap();
    let mut cfg =
        config_allowing_unlisted(json!({"kind": "http", "url": url, "sse": false}), &[STATELESS]);
    cfg["listen"]["tls"] = json!({"certFile": dir.join("tls.crt"), "keyFile": dir.join("tls.key")});
    cfg["listen"]["resourceUri"] = json!(AUDIENCE);
    cfg["auth"] = json!({
        "oidc": {"issuer": idp.issuer, "audience": AUDIENCE, "requiredScopes": [SCOPE]},
        "oidcCaFile": idp.ca_file,
        "mtls": {"clientCaFile": dir.join("client-ca.pem"), "principalFrom": "UriSan"},
        "mode": "AllOf",
    });
    cfg["authorization"] = json!({"roles": [{"name": "all", "subjects": [{"claim": "sub", "values": ["alice"]}],
        "methods": ["**"], "tools": ["*"]}]});
    let gw = gateway(cfg).await;
    let url = gw.url.replace("127.0.0.1", "localhost");
    let client = |identity: Option<&str>| {
        let mut b = reqwest::Client::builder().add_root_certificate(
            reqwest::Certificate::from_pem(server_ca.cert_pem.as_bytes()).unwrap(),
        );
        if let Some(pem) = identity {
            b = b.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
        }
        b.build().unwrap()
    };
    let list = |http: reqwest::Client, token: Option<String>| {
        let url = url.clone();
        async move {
            let mut r = http
                .post(&url)
                .header("content-type", "application/json")
                .header("accept", "application/json, text/event-stream")
                .header("mcp-protocol-version", STATELESS)
                .header("mcp-method", "tools/list")
                .body(
                    json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": {
                    "io.modelcontextprotocol/protocolVersion": STATELESS,
                    "io.modelcontextprotocol/clientCapabilities": {}}}})
                    .to_string(),
                );
            if let Some(t) = token {
                r = r.bearer_auth(t);
            }
            r.send().await.map(|r| r.status().as_u16()).unwrap_or(0)
        }
    };
    let (alice_cert, alice_der) = clients.client("alice");
    let (other_cert, _) = clients.client("mallory");
    // AllOf: the token alone, or the certificate alone, is not enough.
    assert_eq!(
        list(client(None), Some(idp.token("alice"))).await,
        401,
        "token without a certificate"
    );
    assert_eq!(list(client(Some(&alice_cert)), None).await, 401, "certificate without a token");
    assert_eq!(list(client(Some(&alice_cert)), Some(idp.token("alice"))).await, 200, "both");
    // RFC 8705: a token bound to alice's certificate works with it and with no other.
    let thumbprint = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(<sha2::Sha256 as sha2::Digest>::digest(&alice_der));
    let mut claims = idp.claims("alice");
    claims["cnf"] = json!({"x5t#S256": thumbprint});
    let bound = idp.sign(&claims);
    assert_eq!(
        list(client(Some(&alice_cert)), Some(bound.clone())).await,
        200,
        "bound, right certificate"
    );
    assert_eq!(
        list(client(Some(&other_cert)), Some(bound)).await,
        401,
        "bound, another certificate"
    );
}
