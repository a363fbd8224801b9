//! The stdio bridge's sandbox, observed from inside the server it launches: argv without a
//! shell, a scrubbed environment, rlimits, its own process group, and the whole group gone when
//! the connection ends or the lifetime limit passes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::process::Command;

/// Starts the bridge around the probe with `flags`; returns the bridge and its socket.
async fn bridge_with(flags: &[&str], probe_args: &[&str]) -> (Proc, std::path::PathBuf) {
    let dir = scratch("sandbox");
    let socket = dir.join("mcp.sock");
    let mut cmd = Command::new(gateway_bin());
    cmd.arg("bridge")
        .arg(format!("--socket={}", socket.display()))
        .args(flags)
        .arg("--")
        .arg(python())
        .arg(repo().join("gateway/tests/peers/sandbox_probe.py"))
        .args(probe_args)
        // Present in the bridge's environment; only the allowlisted ones may reach the server.
        .env("PALISADE_TEST_SECRET", "do-not-leak")
        .env("PALISADE_TEST_ALLOWED", "visible");
    let p = spawn(&mut cmd);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "the bridge did not create its socket");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (p, socket)
}

async fn probe(socket: &std::path::Path) -> (UnixStream, Value) {
    let mut s = UnixStream::connect(socket).await.unwrap();
    s.write_all(b"{}\n").await.unwrap();
    let (rd, wr) = s.into_split();
    let mut line = String::new();
    let mut rd = BufReader::new(rd);
    tokio::time::timeout(Duration::from_secs(20), rd.read_line(&mut line)).await.unwrap().unwrap();
    let v: Value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("probe said {line:?}"));
    (rd.into_inner().reunite(wr).unwrap(), v)
}

/// A process that is gone or a zombie (killed, not yet reaped by whoever inherited it).
fn dead(pid: u64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/status")) {
        Err(_) => true,
        Ok(s) => s.lines().any(|l| l.starts_with("State:") && l.contains('Z')),
    }
}

async fn eventually_dead(pid: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if dead(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test]
async fn the_server_runs_in_the_sandbox_and_its_whole_group_ends_with_the_connection() {
    let (_bridge, socket) = bridge_with(
        &[
            "--env-allow=PATH,PALISADE_TEST_ALLOWED",
            "--rlimit-nofile=64",
            "--rlimit-cpu=120",
            "--rlimit-as=4294967296",
        ],
        &["a; touch /tmp/palisade-shell-was-here", "$(id)"],
    )
    .await;
    let (conn, v) = probe(&socket).await;

    // argv reaches the program verbatim: no shell interpreted it.
    assert_eq!(v["argv"], serde_json::json!(["a; touch /tmp/palisade-shell-was-here", "$(id)"]));
    assert!(!std::path::Path::new("/tmp/palisade-shell-was-here").exists());
    // Only allowlisted variables (python may add LC_CTYPE on its own).
    let env = v["env"].as_object().unwrap();
    assert_eq!(env.get("PALISADE_TEST_ALLOWED"), Some(&Value::from("visible")));
    assert!(env.get("PALISADE_TEST_SECRET").is_none(), "{env:?}");
    let unexpected: Vec<&String> = env
        .keys()
        .filter(|k| !["PATH", "PALISADE_TEST_ALLOWED", "LC_CTYPE"].contains(&k.as_str()))
        .collect();
    assert!(unexpected.is_empty(), "variables outside the allowlist: {unexpected:?}");
    // rlimits, soft and hard.
    assert_eq!(v["nofile"], serde_json::json!([64, 64]));
    assert_eq!(v["cpu"], serde_json::json!([120, 120]));
    assert_eq!(v["as"], serde_json::json!([4294967296u64, 4294967296u64]));
    // Its own process group, which the grandchild shares.
    let (pid, grandchild) = (v["pid"].as_u64().unwrap(), v["grandchild"].as_u64().unwrap());
    assert_eq!(v["pgid"].as_u64(), Some(pid));
    assert!(!dead(grandchild), "the grandchild runs while the connection is open");

    // The connection ends: the server and everything it started are stopped.
    drop(conn);
    assert!(eventually_dead(pid).await, "the server outlived its connection");
    assert!(eventually_dead(grandchild).await, "the server's child outlived the server's group");
}

#[tokio::test]
async fn a_server_past_its_lifetime_is_stopped_with_its_group() {
    let (_bridge, socket) = bridge_with(&["--env-allow=PATH", "--max-lifetime=2"], &[]).await;
    let (mut conn, v) = probe(&socket).await;
    let (pid, grandchild) = (v["pid"].as_u64().unwrap(), v["grandchild"].as_u64().unwrap());
    assert!(eventually_dead(pid).await, "the server outlived --max-lifetime");
    assert!(eventually_dead(grandchild).await);
    // The gateway sees the connection end.
    let mut rest = String::new();
    let n = tokio::time::timeout(Duration::from_secs(5), async {
        let mut r = BufReader::new(&mut conn);
        r.read_line(&mut rest).await
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(n, 0, "the socket closes: {rest:?}");
}
