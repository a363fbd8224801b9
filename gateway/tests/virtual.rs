//! A virtual server: one gateway in front of two real gateways, each in front of a real
//! server (the official Python SDK server, the official "everything" server). The virtual
//! gateway trades the caller's token (RFC 8693, at the test IdP's real token endpoint) for one
//! per member gateway, so each member applies its own roles to the same user; the virtual
//! gateway's roles filter the combined listing again. Names are prefixed per mode, conflicts
//! withheld and reported, long names shortened deterministically; calls reach the server that
//! owns the name; one audit chain records them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::idp::{AUDIENCE, EXCHANGE_CLIENT, EXCHANGE_SECRET, Idp, SCOPE, idp};
use common::*;
use serde_json::{Value, json};

const VERSIONS: &[&str] = &["2025-11-25", "2026-07-28"];

fn role(name: &str, subjects: &[&str], tools: &[&str]) -> Value {
    json!({"name": name, "subjects": [{"claim": "sub", "values": subjects}],
           "methods": ["**"], "tools": tools, "resources": ["**"], "prompts": ["*"]})
}

/// A member: a gateway with OIDC for `audience` in front of `server_url`, with `roles`, its
/// audit chain in `audit`.
async fn member(
    idp: &Idp,
    server_url: &str,
    audience: &str,
    roles: Vec<Value>,
    audit: &std::path::Path,
) -> Gw {
    let mut cfg = config_allowing_unlisted(
        json!({"kind": "http", "url": server_url, "sse": false}),
        VERSIONS,
    );
    cfg["auth"] = json!({
        "oidc": {"issuer": idp.issuer, "audience": audience, "requiredScopes": [SCOPE]},
        "oidcCaFile": idp.ca_file,
    });
    cfg["authorization"] = json!({"roles": roles});
    cfg["audit"] = json!({"enabled": true, "checkpointEvery": 50, "file": audit});
    gateway(cfg).await
}

fn records(audit: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(audit)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

struct Members {
    _servers: Vec<Proc>,
    a: Gw,
    b: Gw,
    a_audit: std::path::PathBuf,
    b_audit: std::path::PathBuf,
}

/// Member `a` (the Python SDK server): alice and bob may use every tool. Member `b` (the
/// everything server): alice may use echo only, bob nothing. The gateway's own exchanged
/// identity may list both.
async fn members(idp: &Idp) -> Members {
    let (py, py_url) = python_http().await;
    let (every, every_url) = everything_http().await;
    let dir = scratch("virtual-members");
    let a_audit = dir.join("a.jsonl");
    let a = member(
        idp,
        &py_url,
        "https://a.test",
        vec![role("users", &["alice", "bob"], &["*"]), role("gateway", &[EXCHANGE_CLIENT], &["*"])],
        &a_audit,
    )
    .await;
    let b = member(
        idp,
        &every_url,
        "https://b.test",
        vec![role("alice", &["alice"], &["echo"]), role("gateway", &[EXCHANGE_CLIENT], &["*"])],
        &dir.join("b.jsonl"),
    )
    .await;
    Members { _servers: vec![py, every], a, b, a_audit, b_audit: dir.join("b.jsonl") }
}

/// A virtual gateway over the members with `naming`; alice may use every combined tool, bob
/// the two echoes only.
fn virtual_config(idp: &Idp, m: &Members, naming: Value, secret: &std::path::Path) -> Value {
    let exchange = |audience: &str| {
        json!({"tokenExchange": {"tokenEndpoint": format!("{}/token", idp.issuer),
            "clientId": EXCHANGE_CLIENT, "clientSecretFile": secret, "audience": audience,
            "scopes": [SCOPE], "caFile": idp.ca_file}})
    };
    let members = json!([
        {"name": "a", "prefix": "a", "url": m.a.url, "upstreamAuth": exchange("https://a.test")},
        {"name": "b", "prefix": "b", "url": m.b.url, "upstreamAuth": exchange("https://b.test")},
    ]);
    let mut cfg = config_allowing_unlisted(
        json!({"kind": "virtual", "members": members, "naming": naming}),
        VERSIONS,
    );
    cfg["auth"] = json!({
        "oidc": {"issuer": idp.issuer, "audience": AUDIENCE, "requiredScopes": [SCOPE]},
        "oidcCaFile": idp.ca_file,
    });
    cfg["authorization"] = json!({"roles": [
        role("alice", &["alice"], &["*"]),
        role("bob", &["bob"], &["a_echo", "b_echo", "echo"]),
    ]});
    cfg
}

fn secret() -> std::path::PathBuf {
    let path = scratch("virtual-secret").join("client-secret");
    std::fs::write(&path, EXCHANGE_SECRET).unwrap();
    path
}

async fn request(gw: &Gw, token: &str, method: &str, params: Value) -> Value {
    let auth = format!("Bearer {token}");
    stateless_with(&gw.url, method, params, &[("authorization", auth.as_str())]).await
}

async fn tool_names(gw: &Gw, token: &str) -> Vec<String> {
    let r = request(gw, token, "tools/list", json!({})).await;
    let mut names: Vec<String> = r
        .pointer("/result/tools")
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("{r}"))
        .iter()
        .filter_map(|t| t["name"].as_str().map(str::to_string))
        .collect();
    names.sort();
    names
}

fn text(r: &Value) -> String {
    r.pointer("/result/content/0/text").and_then(Value::as_str).unwrap_or_default().to_string()
}

#[tokio::test]
async fn one_endpoint_for_two_servers_with_prefixes_roles_and_one_audit_chain() {
    let idp = idp().await;
    let m = members(&idp).await;
    let audit = scratch("virtual-audit").join("audit.jsonl");
    let mut cfg = virtual_config(&idp, &m, json!({"prefix": "Always"}), &secret());
    cfg["audit"] = json!({"enabled": true, "checkpointEvery": 50, "file": audit});
    let gw = gateway(cfg).await;
    let (alice, bob) = (idp.token("alice"), idp.token("bob"));

    // alice: every tool of a, prefixed; of b only echo (b's own roles, for alice's own token).
    let names = tool_names(&gw, &alice).await;
    assert!(
        names.contains(&"a_echo".to_string()) && names.contains(&"a_add".to_string()),
        "{names:?}"
    );
    assert!(names.contains(&"b_echo".to_string()), "{names:?}");
    assert!(names.iter().all(|n| n.starts_with("a_") || n == "b_echo"), "{names:?}");
    // bob: the virtual server's role allows both echoes; b gives him nothing.
    assert_eq!(tool_names(&gw, &bob).await, vec!["a_echo"]);

    // Calls reach the server that owns the name.
    let sum =
        request(&gw, &alice, "tools/call", json!({"name": "a_add", "arguments": {"a": 2, "b": 3}}))
            .await;
    assert_eq!(text(&sum), "5", "{sum}");
    let echo = request(
        &gw,
        &alice,
        "tools/call",
        json!({"name": "b_echo", "arguments": {"message": "via b"}}),
    )
    .await;
    assert!(text(&echo).contains("via b"), "{echo}");
    // Member a applied its own policy to alice (the exchanged token for its audience names
    // her), under its own names.
    let at_a = records(&m.a_audit);
    assert!(
        at_a.iter().any(|r| r["type"] == "call"
            && r["name"] == "add"
            && r["principal"] == "alice"
            && r["decision"] == "allow"),
        "{at_a:?}"
    );
    // Refusals: a tool of b that b does not list for bob; an unprefixed name.
    let r =
        request(&gw, &bob, "tools/call", json!({"name": "b_echo", "arguments": {"message": "x"}}))
            .await;
    assert!(r.get("error").is_some() && text(&r).is_empty(), "{r}");
    let r =
        request(&gw, &alice, "tools/call", json!({"name": "echo", "arguments": {"message": "x"}}))
            .await;
    assert!(r.get("error").is_some(), "{r}");

    // The official Python SDK client, session era and stateless, sees the prefixed names.
    for mode in ["legacy", "2026-07-28"] {
        let seen =
            py_auth_client(&gw.url, &alice, mode, &[r#"a_echo:{"message":"hi from the SDK"}"#])
                .await;
        let tools: Vec<String> = serde_json::from_value(seen["tools"].clone()).unwrap();
        assert!(
            tools.contains(&"b_echo".to_string()) && tools.contains(&"a_echo".to_string()),
            "{mode}: {seen}"
        );
        assert_eq!(seen["calls"]["a_echo"]["error"], false, "{mode}: {seen}");
        assert!(
            seen["calls"]["a_echo"]["text"].as_str().unwrap().contains("hi from the SDK"),
            "{seen}"
        );
    }

    // One chain: the calls under the names clients used, and it verifies.
    let here = records(&audit);
    let allowed = |name: &str, who: &str| {
        here.iter()
            .filter(|r| {
                r["type"] == "call"
                    && r["name"] == name
                    && r["principal"] == who
                    && r["decision"] == "allow"
            })
            .count()
    };
    assert_eq!((allowed("a_add", "alice"), allowed("b_echo", "alice")), (1, 1));
    assert_eq!(allowed("a_echo", "alice"), 2, "one per era");
    // bob's b_echo passed the virtual server's role; b's own policy gives bob nothing (b
    // refused him its listing), so no call of his reached b's server.
    let at_b = records(&m.b_audit);
    let at_a = records(&m.a_audit);
    let calls_at = |recs: &[Value], name: &str| {
        recs.iter()
            .filter(|r| r["type"] == "call" && r["name"] == name && r["principal"] == "alice")
            .count()
    };
    assert_eq!(calls_at(&at_b, "echo"), 1, "b_echo went to b");
    assert_eq!(calls_at(&at_a, "echo"), 2, "a_echo went to a, once per era");
    assert_eq!(calls_at(&at_b, "add") + calls_at(&at_a, "get-sum"), 0);
    assert!(
        at_b.iter().any(|r| r["principal"] == "bob" && r["kind"] == "policy_block"),
        "b refused bob: {at_b:?}"
    );
    assert!(!at_b.iter().any(|r| r["principal"] == "bob" && r["decision"] == "allow"));
    assert_audit_verifies(&audit);
}

#[tokio::test]
async fn conflicts_are_withheld_and_long_names_shortened() {
    let idp = idp().await;
    let m = members(&idp).await;
    let alice = idp.token("alice");

    // Never: both servers list echo; it is withheld (and said so), the rest keep their names.
    let gw = gateway(virtual_config(&idp, &m, json!({"prefix": "Never"}), &secret())).await;
    let names = tool_names(&gw, &alice).await;
    assert!(!names.contains(&"echo".to_string()), "{names:?}");
    assert!(names.contains(&"add".to_string()), "{names:?}");
    let status: Value =
        reqwest::get(format!("{}/status", gw.admin)).await.unwrap().json().await.unwrap();
    let withheld = status["namesWithheld"].to_string();
    assert!(withheld.contains("echo is listed by a/echo and b/echo"), "{status}");
    let r =
        request(&gw, &alice, "tools/call", json!({"name": "echo", "arguments": {"message": "x"}}))
            .await;
    assert!(r.get("error").is_some(), "{r}");

    // OnConflict: only the shared name is prefixed.
    let gw = gateway(virtual_config(&idp, &m, json!({"prefix": "OnConflict"}), &secret())).await;
    let names = tool_names(&gw, &alice).await;
    assert!(names.contains(&"a_echo".to_string()) && names.contains(&"b_echo".to_string()));
    assert!(
        names.contains(&"add".to_string()) && !names.contains(&"a_add".to_string()),
        "{names:?}"
    );
    let sum =
        request(&gw, &alice, "tools/call", json!({"name": "add", "arguments": {"a": 1, "b": 1}}))
            .await;
    assert_eq!(text(&sum), "2", "{sum}");

    // A 16-character limit: a_show_auth_claims is cut, the same way each time, and callable.
    let naming = json!({"prefix": "Always", "maxLength": 16, "longNames": "Shorten"});
    let gw = gateway(virtual_config(&idp, &m, naming, &secret())).await;
    let names = tool_names(&gw, &alice).await;
    assert!(names.iter().all(|n| n.len() <= 16), "{names:?}");
    let cut = palisade_core::naming::shorten("a_show_auth_claims", 16);
    assert!(names.contains(&cut), "{cut} not in {names:?}");
    assert!(names.contains(&"a_show_auth".to_string()), "short names stay: {names:?}");
    let r = request(&gw, &alice, "tools/call", json!({"name": cut, "arguments": {}})).await;
    assert!(text(&r).contains("scheme"), "the shortened name reaches show_auth_claims: {r}");
    // Refuse: the long names are withheld instead.
    let naming = json!({"prefix": "Always", "maxLength": 16, "longNames": "Refuse"});
    let gw = gateway(virtual_config(&idp, &m, naming, &secret())).await;
    let names = tool_names(&gw, &alice).await;
    assert!(!names.contains(&cut) && names.contains(&"a_show_auth".to_string()), "{names:?}");
    assert!(names.contains(&"a_echo".to_string()));
}
