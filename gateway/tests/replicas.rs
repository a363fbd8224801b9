//! Gateway replicas that agree: three gateway processes sharing a real Redis, behind a real
//! HAProxy balancing round-robin, in front of one Python SDK server. Approvals made through
//! one replica are decided and redeemed through others, once; budgets hold across replicas
//! under concurrent load; a session-era client keeps its session when its replica dies; with
//! the store down, calls that change state are refused and reads go on, and everything that
//! was acknowledged is there again when it returns.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::idp::{AUDIENCE, Idp, SCOPE, idp};
use common::shared::{Haproxy, Redis};
use common::*;
use serde_json::{Value, json};

const STATELESS: &str = "2026-07-28";
const SESSION_ERA: &str = "2025-11-25";
/// The hourly tool-call budget of every principal in these tests.
const BUDGET: u64 = 24;

struct Replicas {
    idp: Idp,
    redis: Redis,
    _server: Proc,
    gws: Vec<Gw>,
    lb: Haproxy,
}

async fn replicas() -> Replicas {
    let idp = idp().await;
    let redis = Redis::start().await;
    let (server, url) = python_http().await;
    let mut gws = Vec::new();
    let mut backends = Vec::new();
    for _ in 0..3 {
        let mut cfg = config_allowing_unlisted(
            json!({"kind": "http", "url": url, "sse": false}),
            &[SESSION_ERA, STATELESS],
        );
        cfg["listen"]["resourceUri"] = json!(AUDIENCE);
        cfg["auth"] = json!({
            "oidc": {"issuer": idp.issuer, "audience": AUDIENCE, "requiredScopes": [SCOPE]},
            "oidcCaFile": idp.ca_file,
        });
        cfg["authorization"] = json!({"roles": [
            {"name": "users", "subjects": [{"claim": "sub", "values": ["alice", "erin", "frank"]}],
             "methods": ["**"], "tools": ["*"]},
            {"name": "approver", "subjects": [{"claim": "sub", "values": ["carol"]}],
             "methods": ["tools/list"], "approver": true}
        ]});
        cfg["tools"] = json!([
            {"name": "echo", "effect": "read"},
            {"name": "deleted", "effect": "read"},
            {"name": "delete_item", "effect": "destructive", "dryRun": {"argument": "dry_run"}},
            // A tool that changes state without approval (its budget is what guards it).
            {"name": "add", "effect": "write", "requireApproval": false},
        ]);
        cfg["limits"] = json!({"requestsPerMinute": 10000, "maxToolCallsPerPrincipalPerHour": BUDGET,
                               "maxToolCallsPerSession": 1000, "maxInFlight": 256});
        cfg["state"] = json!({"url": redis.url(), "passwordFile": redis.password_file,
                              "keyPrefix": "palisade:test/replicas:"});
        let port = |a: &Value| a.as_str().unwrap().rsplit_once(':').unwrap().1.parse().unwrap();
        backends.push((port(&cfg["listen"]["address"]), port(&cfg["listen"]["adminAddress"])));
        gws.push(gateway(cfg).await);
    }
    let lb = Haproxy::start(&backends).await;
    Replicas { idp, redis, _server: server, gws, lb }
}

/// A stateless `tools/call`: the HTTP status and the JSON-RPC answer.
async fn call(url: &str, token: &str, tool: &str, args: Value, meta: Value) -> (u16, Value) {
    let params = json!({"name": tool, "arguments": args, "_meta": meta});
    let bearer = format!("Bearer {token}");
    stateless_status(url, "tools/call", params, &[("authorization", &bearer)]).await
}

fn text(v: &Value) -> String {
    v.pointer("/result/content/0/text").and_then(Value::as_str).unwrap_or_default().to_string()
}

fn error(v: &Value) -> String {
    v.pointer("/error/message").and_then(Value::as_str).unwrap_or_default().to_string()
}

/// A plan for deleting `item`, asked through `gw_url`: (approval ID, plan hash).
async fn plan(r: &Replicas, gw_url: &str, item: &str) -> (String, String) {
    let alice = r.idp.token("alice");
    let (_, answer) = call(gw_url, &alice, "delete_item", json!({"name": item}), json!({})).await;
    let meta = answer
        .pointer("/result/_meta/palisade.dev~1approvalRequired")
        .unwrap_or_else(|| panic!("no plan: {answer}"));
    (meta["approvalId"].as_str().unwrap().into(), meta["planHash"].as_str().unwrap().into())
}

async fn decide(r: &Replicas, gw: &Gw, id: &str, hash: &str) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(format!("{}/approvals/{id}", gw.base))
        .bearer_auth(r.idp.token("carol"))
        .body(json!({"planHash": hash, "approve": true}).to_string())
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap_or(Value::Null))
}

async fn redeem(r: &Replicas, url: &str, item: &str, id: &str) -> (u16, Value) {
    let alice = r.idp.token("alice");
    call(url, &alice, "delete_item", json!({"name": item}), json!({"palisade.dev/approval": id}))
        .await
}

async fn deleted(r: &Replicas) -> String {
    text(&call(&r.lb.url, &r.idp.token("frank"), "deleted", json!({}), json!({})).await.1)
}

#[tokio::test]
async fn an_approval_made_on_one_replica_is_decided_and_used_once_on_others() {
    let r = replicas().await;
    let (id, hash) = plan(&r, &r.gws[0].url, "db-1").await;
    let (status, view) = decide(&r, &r.gws[1], &id, &hash).await;
    assert_eq!((status, view["state"].as_str()), (200, Some("approved")), "{view}");
    let (_, applied) = redeem(&r, &r.gws[2].url, "db-1", &id).await;
    assert_eq!(text(&applied), "deleted db-1", "{applied}");
    let (_, again) = redeem(&r, &r.gws[0].url, "db-1", &id).await;
    assert!(error(&again).contains("already used"), "{again}");

    // Fifty concurrent redemptions of one approval, spread over the replicas: one wins.
    let (id, hash) = plan(&r, &r.lb.url, "db-2").await;
    assert_eq!(decide(&r, &r.gws[2], &id, &hash).await.0, 200);
    let attempts: Vec<_> = (0..50).map(|_| redeem(&r, &r.lb.url, "db-2", &id)).collect();
    let answers = futures::future::join_all(attempts).await;
    let won = answers.iter().filter(|(_, a)| text(a) == "deleted db-2").count();
    let used = answers.iter().filter(|(_, a)| error(a).contains("already used")).count();
    assert_eq!((won, used), (1, 49), "{answers:?}");
    assert_eq!(deleted(&r).await, "db-1,db-2", "each item deleted once");

    // The approvals API and `palisade approvals` see the same plans from any replica.
    let (id, hash) = plan(&r, &r.gws[1].url, "db-3").await;
    let dir = scratch("cli");
    let token = dir.join("token");
    std::fs::write(&token, r.idp.token("carol")).unwrap();
    let cli = |args: &[&str]| {
        let mut c = std::process::Command::new(palisade_bin());
        c.args(args).arg("--token-file").arg(&token);
        c.output().unwrap()
    };
    let listed = cli(&["approvals", "list", "-o", "json", "--gateway", &r.gws[2].base]);
    assert!(listed.status.success(), "{}", String::from_utf8_lossy(&listed.stderr));
    let plans: Value = serde_json::from_slice(&listed.stdout).unwrap();
    let pending: Vec<&Value> =
        plans.as_array().unwrap().iter().filter(|p| p["state"] == "pending").collect();
    assert_eq!(pending.len(), 1, "{plans}");
    assert_eq!(pending[0]["approvalId"], id.as_str());
    let wrong = cli(&[
        "approvals",
        "approve",
        &id,
        "--plan-hash",
        &"0".repeat(64),
        "--gateway",
        &r.gws[0].base,
    ]);
    assert!(!wrong.status.success(), "a plan other than the reviewed one is not approved");
    let approved =
        cli(&["approvals", "approve", &id, "--plan-hash", &hash, "--gateway", &r.gws[0].base]);
    assert!(approved.status.success(), "{}", String::from_utf8_lossy(&approved.stderr));
    assert!(String::from_utf8_lossy(&approved.stdout).contains("approved"));
    let (_, applied) = redeem(&r, &r.gws[1].url, "db-3", &id).await;
    assert_eq!(text(&applied), "deleted db-3", "{applied}");
}

#[tokio::test]
async fn a_budget_holds_across_replicas_under_concurrent_load() {
    let r = replicas().await;
    let erin = r.idp.token("erin");
    let calls: Vec<_> = (0..40)
        .map(|i| call(&r.lb.url, &erin, "echo", json!({"message": format!("m{i}")}), json!({})))
        .collect();
    let answers = futures::future::join_all(calls).await;
    let ok = answers.iter().filter(|(_, a)| text(a).starts_with("Echo: m")).count();
    let refused: Vec<&(u16, Value)> = answers
        .iter()
        .filter(|(_, a)| error(a).contains("tool calls per principal per hour"))
        .collect();
    assert_eq!((ok, refused.len()), (BUDGET as usize, 40 - BUDGET as usize), "{answers:?}");
    for (status, a) in refused {
        assert_eq!(*status, 429, "{a}");
        assert!(
            a.pointer("/error/data/retryAfterSeconds").and_then(Value::as_u64).unwrap_or(0) > 0,
            "{a}"
        );
    }
}

/// A session-era client talking through the load balancer with raw HTTP.
struct SessionClient {
    http: reqwest::Client,
    url: String,
    token: String,
    id: String,
}

impl SessionClient {
    async fn open(url: &str, token: &str) -> SessionClient {
        let http = reqwest::Client::new();
        let r = http
            .post(url)
            .bearer_auth(token)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(
                json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                    "protocolVersion": SESSION_ERA, "capabilities": {},
                    "clientInfo": {"name": "replica-test", "version": "1"}}})
                .to_string(),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let id = r.headers()["mcp-session-id"].to_str().unwrap().to_string();
        let c = SessionClient { http, url: url.into(), token: token.into(), id };
        c.send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"})).await;
        c
    }

    async fn send(&self, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(&self.url)
            .bearer_auth(&self.token)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", SESSION_ERA)
            .header("mcp-session-id", &self.id)
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn echo(&self, i: u64) -> (u16, Value) {
        self.send(json!({"jsonrpc": "2.0", "id": i, "method": "tools/call",
                         "params": {"name": "echo", "arguments": {"message": format!("s{i}")}}}))
            .await
    }
}

#[tokio::test]
async fn a_session_lives_on_when_its_replica_dies() {
    let mut r = replicas().await;
    let alice = r.idp.token("alice");
    let client = SessionClient::open(&r.lb.url, &alice).await;
    // Round-robin: consecutive requests reach every replica, which resume the session.
    for i in 1..=6 {
        let (status, a) = client.echo(i).await;
        assert_eq!((status, text(&a)), (200, format!("Echo: s{i}")), "{a}");
    }
    // The store knows the session by a digest only.
    let keys = r.redis.keys();
    assert!(keys.iter().any(|k| k.contains(":session:")), "{keys:?}");
    assert!(keys.iter().all(|k| !k.contains(&client.id)), "the session ID is in a key: {keys:?}");
    // Another principal cannot use it, on any replica.
    for gw in &r.gws {
        let stranger = SessionClient {
            http: reqwest::Client::new(),
            url: gw.url.clone(),
            token: r.idp.token("erin"),
            id: client.id.clone(),
        };
        assert_eq!(stranger.echo(99).await.0, 404);
    }
    // One replica dies mid-session; the client goes on.
    r.gws[0].proc.0.kill().await.unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    for i in 7..=12 {
        let (status, a) = client.echo(i).await;
        assert_eq!((status, text(&a)), (200, format!("Echo: s{i}")), "{a}");
    }
    // Ending it ends it everywhere.
    let end = client
        .http
        .delete(&client.url)
        .bearer_auth(&client.token)
        .header("mcp-session-id", &client.id)
        .send()
        .await
        .unwrap();
    assert_eq!(end.status().as_u16(), 200);
    for gw in &r.gws[1..] {
        let gone = SessionClient {
            http: reqwest::Client::new(),
            url: gw.url.clone(),
            token: alice.clone(),
            id: client.id.clone(),
        };
        assert_eq!(gone.echo(100).await.0, 404);
    }
}

#[tokio::test]
async fn without_the_store_state_changes_are_refused_and_nothing_acknowledged_is_lost() {
    let mut r = replicas().await;
    let (id, hash) = plan(&r, &r.gws[0].url, "db-7").await;
    assert_eq!(decide(&r, &r.gws[1], &id, &hash).await.0, 200);
    let frank = r.idp.token("frank");
    let (_, added) = call(&r.gws[0].url, &frank, "add", json!({"a": 1, "b": 2}), json!({})).await;
    assert_eq!(text(&added), "3", "{added}");

    r.redis.kill().await;
    // Reads go on (counted on each replica meanwhile).
    let (status, read) =
        call(&r.lb.url, &frank, "echo", json!({"message": "still here"}), json!({})).await;
    assert_eq!((status, text(&read)), (200, "Echo: still here".to_string()), "{read}");
    // Calls that change state (one whose budget cannot be checked, one that needs an
    // approval) and the approval of one are refused: retryable, and clear.
    for (status, answer) in [
        call(&r.gws[0].url, &frank, "add", json!({"a": 1, "b": 2}), json!({})).await,
        call(
            &r.gws[2].url,
            &r.idp.token("alice"),
            "delete_item",
            json!({"name": "db-8"}),
            json!({}),
        )
        .await,
        redeem(&r, &r.gws[2].url, "db-7", &id).await,
    ] {
        assert_eq!(status, 503, "{answer}");
        assert_eq!(answer.pointer("/error/code"), Some(&json!(-32054)), "{answer}");
        assert!(error(&answer).contains("state store"), "{answer}");
        assert!(answer.pointer("/error/data/retryAfterSeconds").is_some(), "{answer}");
    }
    let listed = reqwest::Client::new()
        .get(format!("{}/approvals", r.gws[1].base))
        .bearer_auth(r.idp.token("carol"))
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status().as_u16(), 503);
    assert!(listed.headers().contains_key("retry-after"));
    // A session can still be opened; it lives on this replica only.
    let local = SessionClient::open(&r.gws[1].url, &r.idp.token("alice")).await;
    assert_eq!(text(&local.echo(1).await.1), "Echo: s1");

    // The store returns (from its append-only file): no gateway restart, nothing lost.
    r.redis.restart().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let applied = loop {
        let (_, a) = redeem(&r, &r.gws[2].url, "db-7", &id).await;
        if text(&a) == "deleted db-7" || Instant::now() > deadline {
            break a;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(text(&applied), "deleted db-7", "the approval made before the outage: {applied}");
    let (id, _) = plan(&r, &r.gws[0].url, "db-9").await;
    assert_eq!(id.len(), 64);
}

/// The `palisade` binary of this workspace (`cargo test --workspace` builds it).
fn palisade_bin() -> PathBuf {
    let path = std::env::var_os("PALISADE_BIN").map(PathBuf::from).unwrap_or_else(|| {
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo().join("target"));
        target.join("debug/palisade")
    });
    assert!(
        path.is_file(),
        "{} is missing: build it with `cargo build -p palisade-operator`",
        path.display()
    );
    path
}
