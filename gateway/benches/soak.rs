//! A bounded soak of the gateway (`make soak`: `cargo bench -p palisade-gateway --bench soak`;
//! PALISADE_SOAK_SECONDS, default 600; PALISADE_SOAK_CLIENTS, default 8).
//!
//! Mixed traffic from several clients through the gateway (TLS, OIDC bearer tokens, roles,
//! argument rules, approvals, a signed audit chain) to the official Python SDK server: allowed
//! calls, calls refused by role, destructive calls held for approval (some approved by an
//! approver and applied), attacks (path traversal, a private address, a forged token, malformed,
//! oversized and mismatched requests), and session-era sessions opened, used and ended. Every
//! 10 s it samples the gateway's resident memory and open file descriptors.
//!
//! Prints the samples and figures. Fails (exit status 1) only on what must hold whatever the
//! machine: every answer of the kind its request calls for, one audit `call` record per
//! authenticated request (plus one per dry-run preview the gateway makes), one `approval`
//! record per decision, and `palisade-gateway audit verify` accepting the log with its key.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/idp.rs"]
mod idp;

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{STATELESS, rss_kib, start_gateway, start_python_server, tls_client};
use serde_json::{Value, json};

const SESSION: &str = "2025-11-25";

/// The audit record types the soak accounts for.
const RECORDS: [&str; 3] = ["call", "approval", "approval_requested"];

/// How many requests of one kind were sent, how many answers were not the kind the request
/// calls for (and the first of them), and the audit records of each type they should leave.
#[derive(Default, Clone)]
struct Tally {
    sent: u64,
    unexpected: u64,
    records: [u64; 3],
    example: Option<String>,
}

#[derive(Default)]
struct Ledger {
    kinds: Mutex<BTreeMap<&'static str, Tally>>,
}

impl Ledger {
    /// Counts one request of `kind`: `ok` is whether its answer was the expected one;
    /// `records` how many audit records of each of [`RECORDS`] it leaves.
    fn count(&self, kind: &'static str, ok: bool, records: [u64; 3], answer: &str) {
        let mut k = self.kinds.lock().unwrap();
        let t = k.entry(kind).or_default();
        t.sent += 1;
        for (sum, n) in t.records.iter_mut().zip(records) {
            *sum += n;
        }
        if !ok {
            t.unexpected += 1;
            t.example.get_or_insert_with(|| answer.chars().take(300).collect());
        }
    }
}

/// One `call` record.
const CALL: [u64; 3] = [1, 0, 0];
/// None: the request is refused before it is authenticated, or is a notification.
const NONE: [u64; 3] = [0, 0, 0];

struct Client {
    http: reqwest::Client,
    url: String,
    base: String,
    idp: Arc<idp::Idp>,
    ledger: Arc<Ledger>,
}

fn text(v: &Value) -> &str {
    v.pointer("/result/content/0/text").and_then(Value::as_str).unwrap_or_default()
}

fn refused(v: &Value) -> bool {
    v.get("error").is_some() || v.pointer("/result/isError") == Some(&json!(true))
}

impl Client {
    async fn post(
        &self,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: String,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let mut r = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream");
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        match r.body(body).send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let h = resp.headers().clone();
                let text = resp.text().await.unwrap_or_default();
                (status, h, serde_json::from_str(&text).unwrap_or(Value::String(text)))
            }
            Err(e) => (0, Default::default(), Value::String(e.to_string())),
        }
    }

    /// A stateless `tools/call`.
    async fn call(
        &self,
        token: Option<&str>,
        tool: &str,
        args: Value,
        meta: Value,
    ) -> (u16, Value) {
        let mut m = json!({"io.modelcontextprotocol/protocolVersion": STATELESS,
                           "io.modelcontextprotocol/clientCapabilities": {}});
        if let (Some(m), Some(extra)) = (m.as_object_mut(), meta.as_object()) {
            m.extend(extra.clone());
        }
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                          "params": {"name": tool, "arguments": args, "_meta": m}});
        let (status, _, v) = self
            .post(
                token,
                &[
                    ("mcp-protocol-version", STATELESS),
                    ("mcp-method", "tools/call"),
                    ("mcp-name", tool),
                ],
                body.to_string(),
            )
            .await;
        (status, v)
    }

    async fn round(&self, n: u64, tokens: &Tokens) {
        let l = &self.ledger;
        let (alice, bob) = (Some(tokens.alice.as_str()), Some(tokens.bob.as_str()));
        // Allowed.
        let (_, v) = self.call(bob, "echo", json!({"message": format!("m{n}")}), json!({})).await;
        l.count("allowed: echo (reader)", text(&v) == format!("Echo: m{n}"), CALL, &v.to_string());
        let (_, v) = self.call(alice, "read_file", json!({"path": "/data/a.txt"}), json!({})).await;
        l.count(
            "allowed: read_file (admin)",
            text(&v) == "contents of /data/a.txt",
            CALL,
            &v.to_string(),
        );
        // Refused by role.
        let (_, v) = self.call(bob, "delete_item", json!({"name": "x"}), json!({})).await;
        l.count("refused: tool outside the role", refused(&v), CALL, &v.to_string());
        // Attacks on arguments.
        let (_, v) =
            self.call(alice, "read_file", json!({"path": "/data/../etc/passwd"}), json!({})).await;
        l.count("attack: path traversal", refused(&v), CALL, &v.to_string());
        let (_, v) =
            self.call(alice, "fetch", json!({"url": "http://10.0.0.1/admin"}), json!({})).await;
        l.count("attack: private address", refused(&v), CALL, &v.to_string());
        // Attacks on the wire (authenticated: each refusal is audited).
        let (status, _, v) = self
            .post(
                alice,
                &[("mcp-protocol-version", STATELESS), ("mcp-method", "tools/call")],
                "{\"jsonrpc\": ".into(),
            )
            .await;
        l.count("attack: malformed JSON", status == 400, CALL, &format!("{status} {v}"));
        let big = format!(
            "{{\"jsonrpc\": \"2.0\", \"id\": 1, \"method\": \"tools/call\", \"params\": {{\"name\": \"echo\", \"arguments\": {{\"message\": \"{}\"}}}}}}",
            "a".repeat(2 << 20)
        );
        let (status, _, v) = self
            .post(
                alice,
                &[
                    ("mcp-protocol-version", STATELESS),
                    ("mcp-method", "tools/call"),
                    ("mcp-name", "echo"),
                ],
                big,
            )
            .await;
        // 413, or the connection closed under a client still sending the rest (the gateway
        // reads no further than the limit): refused and audited either way.
        let cut = status == 0 && v.as_str().is_some_and(|e| e.contains("error sending request"));
        l.count("attack: oversized body", status == 413 || cut, CALL, &format!("{status} {v}"));
        let (status, v) = {
            let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
                "name": "delete_item", "arguments": {"name": "y"},
                "_meta": {"io.modelcontextprotocol/protocolVersion": STATELESS,
                          "io.modelcontextprotocol/clientCapabilities": {}}}});
            let (s, _, v) = self
                .post(
                    alice,
                    &[
                        ("mcp-protocol-version", STATELESS),
                        ("mcp-method", "tools/call"),
                        ("mcp-name", "echo"),
                    ],
                    body.to_string(),
                )
                .await;
            (s, v)
        };
        l.count("attack: header names another tool", status == 400, CALL, &format!("{status} {v}"));
        // A forged token: refused before anything is decided (not an audited call).
        let (status, _) =
            self.call(Some(&tokens.forged), "echo", json!({"message": "f"}), json!({})).await;
        l.count("attack: forged token", status == 401, NONE, &status.to_string());
        // A destructive call: a plan with a dry-run preview (a second, audited call of the
        // server); every 10th is approved by the approver and applied.
        let item = format!("item-{n}");
        let (_, plan) = self.call(alice, "delete_item", json!({"name": item}), json!({})).await;
        let meta = plan.pointer("/result/_meta/palisade.dev~1approvalRequired").cloned();
        l.count("held: destructive call planned", meta.is_some(), [2, 0, 1], &plan.to_string());
        if n.is_multiple_of(10)
            && let Some(meta) = meta
        {
            let (id, hash) =
                (meta["approvalId"].as_str().unwrap_or_default(), meta["planHash"].clone());
            let decided = self
                .http
                .post(format!("{}/approvals/{id}", self.base))
                .bearer_auth(&tokens.carol)
                .body(json!({"planHash": hash, "approve": true}).to_string())
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0);
            l.count(
                "approval: decided by the approver",
                decided == 200,
                [0, 1, 0],
                &decided.to_string(),
            );
            let (_, v) = self
                .call(
                    alice,
                    "delete_item",
                    json!({"name": item}),
                    json!({"palisade.dev/approval": id}),
                )
                .await;
            l.count(
                "approved: destructive call applied",
                text(&v) == format!("deleted {item}"),
                CALL,
                &v.to_string(),
            );
        }
        // A session of the session era: opened, used, ended.
        if n.is_multiple_of(5) {
            self.session(alice).await;
        }
    }

    async fn session(&self, token: Option<&str>) {
        let l = &self.ledger;
        let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": SESSION, "capabilities": {}, "clientInfo": {"name": "soak", "version": "1"}}});
        let (status, h, v) = self.post(token, &[], init.to_string()).await;
        let Some(sid) = h.get("mcp-session-id").and_then(|v| v.to_str().ok()).map(str::to_string)
        else {
            l.count("session: opened", false, CALL, &format!("{status} {v}"));
            return;
        };
        l.count("session: opened", status == 200, CALL, "");
        let headers = [("mcp-session-id", sid.as_str()), ("mcp-protocol-version", SESSION)];
        let (status, _, v) = self
            .post(
                token,
                &headers,
                json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string(),
            )
            .await;
        l.count("session: initialized", status == 202, NONE, &format!("{status} {v}"));
        let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                          "params": {"name": "echo", "arguments": {"message": "in session"}}});
        let (_, _, v) = self.post(token, &headers, call.to_string()).await;
        l.count("session: call", text(&v) == "Echo: in session", CALL, &v.to_string());
        let mut del = self.http.delete(&self.url);
        for (k, v) in headers {
            del = del.header(k, v);
        }
        if let Some(t) = token {
            del = del.bearer_auth(t);
        }
        let status = del.send().await.map(|r| r.status().as_u16()).unwrap_or(0);
        l.count("session: ended", status == 200 || status == 204, NONE, &status.to_string());
    }
}

struct Tokens {
    alice: String,
    bob: String,
    carol: String,
    forged: String,
}

fn tokens(idp: &idp::Idp) -> Tokens {
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256),
        &idp.claims("alice"),
        &idp.rogue,
    )
    .unwrap();
    Tokens { alice: idp.token("alice"), bob: idp.token("bob"), carol: idp.token("carol"), forged }
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

fn audit_counts(path: &Path) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for line in std::fs::read_to_string(path).unwrap_or_default().lines() {
        let v: Value = serde_json::from_str(line).unwrap_or(Value::Null);
        let kind = v["type"].as_str().unwrap_or("unparsable").to_string();
        *out.entry(kind).or_default() += 1;
    }
    out
}

fn main() {
    let seconds: u64 =
        std::env::var("PALISADE_SOAK_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(600);
    let clients: usize =
        std::env::var("PALISADE_SOAK_CLIENTS").ok().and_then(|s| s.parse().ok()).unwrap_or(8);
    let (mut server, server_url) = start_python_server();
    let dir = tempfile::tempdir().unwrap().keep();
    let (key_file, pub_file) = {
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
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let failed = rt.block_on(async {
        let idp = Arc::new(idp::idp().await);
        let policy = json!({
            "listen": {"resourceUri": idp::AUDIENCE},
            "auth": {"oidc": {"issuer": idp.issuer, "audience": idp::AUDIENCE, "requiredScopes": [idp::SCOPE]},
                     "oidcCaFile": idp.ca_file},
            "authorization": {"roles": [
                {"name": "admin", "subjects": [{"claim": "sub", "values": ["alice"]}],
                 "methods": ["**"], "tools": ["*"], "resources": ["**"], "prompts": ["*"]},
                {"name": "reader", "subjects": [{"claim": "sub", "values": ["bob"]}],
                 "methods": ["tools/list", "tools/call"], "tools": ["echo"]},
                {"name": "approver", "subjects": [{"claim": "sub", "values": ["carol"]}],
                 "methods": ["tools/list"], "approver": true}]},
            "tools": [
                {"name": "echo", "effect": "read"},
                {"name": "read_file", "effect": "read",
                 "arguments": [{"name": "path", "required": true, "pathRoots": ["/data"]}]},
                {"name": "fetch", "effect": "read",
                 "arguments": [{"name": "url", "required": true, "url": {"schemes": ["https", "http"]}}]},
                {"name": "delete_item", "effect": "destructive", "dryRun": {"argument": "dry_run"}}],
            "toolDefaults": {"unlisted": "Deny"},
            "limits": {"maxInFlight": 4096, "maxInFlightPerSession": 64, "requestsPerMinute": 1000000,
                       "maxToolCallsPerSession": 1000000, "maxToolCallsPerPrincipalPerHour": 100000000,
                       "maxMutationsPerSession": 1000000, "maxMutationsPerPrincipalPerHour": 100000000},
            "audit": {"enabled": true, "checkpointEvery": 100, "signingKeyFile": key_file,
                      "file": audit, "headFile": dir.join("audit-head.json")},
        });
        let gw = start_gateway(&server_url, Some(&policy));
        let pid = gw.child.id();
        let http = tls_client(&gw.ca_pem);
        let base = gw.url.trim_end_matches("/mcp").to_string();
        let ledger = Arc::new(Ledger::default());
        let stop = Instant::now() + Duration::from_secs(seconds);
        println!(
            "soak: {clients} clients for {seconds} s through the gateway (TLS, OIDC, roles, argument rules, approvals, signed audit) to the official Python SDK server"
        );
        let mut tasks = Vec::new();
        for c in 0..clients {
            let client = Client {
                http: http.clone(),
                url: gw.url.clone(),
                base: base.clone(),
                idp: idp.clone(),
                ledger: ledger.clone(),
            };
            tasks.push(tokio::spawn(async move {
                let mut toks = tokens(&client.idp);
                let mut minted = Instant::now();
                let mut n = (c as u64) * 1_000_000;
                while Instant::now() < stop {
                    // Tokens live 300 s: renewed every minute.
                    if minted.elapsed() > Duration::from_secs(60) {
                        toks = tokens(&client.idp);
                        minted = Instant::now();
                    }
                    client.round(n, &toks).await;
                    n += 1;
                }
            }));
        }
        let started = Instant::now();
        let mut samples = Vec::new();
        println!("{:>6} | {:>10} | {:>4} | {:>9}", "t s", "RSS KiB", "fds", "requests");
        while Instant::now() < stop {
            let sent: u64 = ledger.kinds.lock().unwrap().values().map(|t| t.sent).sum();
            let s = (started.elapsed().as_secs(), rss_kib(pid), fds(pid), sent);
            println!("{:>6} | {:>10} | {:>4} | {:>9}", s.0, s.1, s.2, s.3);
            samples.push(s);
            tokio::time::sleep(Duration::from_secs(10).min(stop.saturating_duration_since(Instant::now()))).await;
        }
        for t in tasks {
            t.await.unwrap();
        }
        // Every record is on disk once the gateway stopped (SIGTERM: it drains and flushes).
        let _ = std::process::Command::new("kill").arg(pid.to_string()).status();
        let mut child = gw;
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        report(&ledger, &samples, &audit, &pub_file, started.elapsed())
    });
    let _ = server.kill();
    let _ = server.wait();
    if failed {
        std::process::exit(1);
    }
}

/// Prints the figures; whether an invariant failed.
fn report(
    ledger: &Ledger,
    samples: &[(u64, u64, usize, u64)],
    audit: &Path,
    public_key: &Path,
    elapsed: Duration,
) -> bool {
    let kinds = ledger.kinds.lock().unwrap().clone();
    let total: u64 = kinds.values().map(|t| t.sent).sum();
    println!(
        "\n{total} requests in {:.0} s ({:.0}/s):",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64()
    );
    let mut failed = false;
    for (kind, t) in &kinds {
        println!("  {kind:<40} {:>8}  unexpected answers: {}", t.sent, t.unexpected);
        if let Some(e) = &t.example {
            println!("    first unexpected answer: {e}");
            failed = true;
        }
    }
    // Memory and descriptors: the second minute against the last (the first warms up).
    let window = |from: u64, to: u64| -> Vec<&(u64, u64, usize, u64)> {
        samples.iter().filter(|s| s.0 >= from && s.0 < to).collect()
    };
    let end = samples.last().map(|s| s.0 + 1).unwrap_or(0);
    let (early, late) = (window(60, 120), window(end.saturating_sub(60), end));
    let max_rss = |w: &[&(u64, u64, usize, u64)]| w.iter().map(|s| s.1).max().unwrap_or(0);
    let max_fds = |w: &[&(u64, u64, usize, u64)]| w.iter().map(|s| s.2).max().unwrap_or(0);
    if !early.is_empty() && !late.is_empty() {
        let (r1, r2, f1, f2) = (max_rss(&early), max_rss(&late), max_fds(&early), max_fds(&late));
        println!(
            "RSS: highest {r1} KiB in the second minute, {r2} KiB in the last; open fds: {f1} and {f2}"
        );
        // Allocator noise and caches that fill once are not a leak; growth like this is.
        if r2 > r1 + r1 / 2 + 16 * 1024 || f2 > f1 + 32 {
            println!("FAILED: memory or descriptors grew with the traffic");
            failed = true;
        }
    }
    let counts = audit_counts(audit);
    let got = |k: &str| counts.get(k).copied().unwrap_or(0);
    for (i, kind) in RECORDS.iter().enumerate() {
        let expected: u64 = kinds.values().map(|t| t.records[i]).sum();
        println!("audit: {} {kind} records, expected {expected}", got(kind));
        if got(kind) != expected {
            println!(
                "FAILED: the audit log does not hold one {kind} record per request that leaves one"
            );
            failed = true;
        }
    }
    println!("audit: all record types: {counts:?}");
    let verify = std::process::Command::new(env!("CARGO_BIN_EXE_palisade-gateway"))
        .args(["audit", "verify", "--public-key"])
        .arg(public_key)
        .arg(audit)
        .output()
        .unwrap();
    println!(
        "audit verify: {} {}",
        if verify.status.success() { "passed" } else { "FAILED" },
        String::from_utf8_lossy(&verify.stdout).trim()
    );
    if !verify.status.success() {
        println!("{}", String::from_utf8_lossy(&verify.stderr));
        failed = true;
    }
    failed
}
