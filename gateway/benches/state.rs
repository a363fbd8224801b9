//! What sharing state costs: `tools/call` through a gateway whose counters live in its memory
//! and through one whose counters live in Redis (every call takes the requests-per-minute and
//! hourly budget windows there), at 1, 16 and 64 concurrent clients. The two gateways run
//! against the same minimal in-process server and are measured in interleaved rounds; each
//! figure is the median of the rounds with their spread (lowest..highest). Prints figures;
//! asserts nothing about time.
//!
//! `cargo bench -p palisade-gateway --bench state` (PALISADE_BENCH_SECONDS per run, default 3;
//! PALISADE_BENCH_ROUNDS, default 5). Redis comes from `e2e/tools build debs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{Figures, free_port, load, median_spread, start_gateway, start_server, tls_client};
use serde_json::json;

struct Redis(std::process::Child);

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn redis_server() -> PathBuf {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
    let out = std::process::Command::new(repo.join("e2e/tools"))
        .args(["path", "redis-server"])
        .output()
        .unwrap();
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(path.is_file(), "redis-server is missing: run `e2e/tools build debs`");
    path
}

/// Redis as a deployment would run it for approvals: a password, an append-only file
/// fsynced every second (the default), on loopback.
fn start_redis(dir: &std::path::Path) -> (Redis, u16, PathBuf) {
    let port = free_port();
    let password = format!("pw-{}", std::process::id());
    let password_file = dir.join("redis-password");
    std::fs::write(&password_file, &password).unwrap();
    let child = std::process::Command::new(redis_server())
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--requirepass", &password])
        .args(["--appendonly", "yes", "--save", ""])
        .arg("--dir")
        .arg(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (Redis(child), port, password_file)
}

fn row(label: &str, runs: &[Figures]) -> String {
    let (rps, rps_lo, rps_hi) = median_spread(runs.iter().map(|f| f.rps).collect());
    let (p50, p50_lo, p50_hi) = median_spread(runs.iter().map(|f| f.p50_ms).collect());
    let (p99, p99_lo, p99_hi) = median_spread(runs.iter().map(|f| f.p99_ms).collect());
    let errors: u64 = runs.iter().map(|f| f.errors).sum();
    format!(
        "{label:>9} | {rps:>7.0} ({rps_lo:>6.0}..{rps_hi:<6.0}) | {p50:>6.3} ({p50_lo:.3}..{p50_hi:.3}) | {p99:>6.3} ({p99_lo:.3}..{p99_hi:.3}){}",
        if errors > 0 { format!(" | errors {errors}") } else { String::new() }
    )
}

fn main() {
    let seconds: f64 =
        std::env::var("PALISADE_BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(3.0);
    let rounds: usize =
        std::env::var("PALISADE_BENCH_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
    let dir = tempfile::tempdir().unwrap();
    let (_redis, port, password_file) = start_redis(dir.path());
    let server = start_server();
    let memory = start_gateway(&server, None);
    let shared = start_gateway(
        &server,
        Some(&json!({"state": {"url": format!("redis://127.0.0.1:{port}"),
                               "passwordFile": password_file, "keyPrefix": "palisade:bench/state:"}})),
    );
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let (m, s) = (tls_client(&memory.ca_pem), tls_client(&shared.ca_pem));
        load(&m, &memory.url, 4, 0.5, None).await;
        load(&s, &shared.url, 4, 0.5, None).await;
        println!(
            "tools/call through the gateway (TLS, minimal server), state in memory vs in Redis 7 \
             (password, AOF); {rounds} interleaved rounds of {seconds:.0} s per level; median (lowest..highest)"
        );
        for clients in [1usize, 16, 64] {
            let (mut in_memory, mut in_redis) = (Vec::new(), Vec::new());
            for _ in 0..rounds {
                in_memory.push(load(&m, &memory.url, clients, seconds, None).await);
                in_redis.push(load(&s, &shared.url, clients, seconds, None).await);
            }
            println!("{clients} clients: {:>9} | {:>24} | {:>26} | {:>26}", "state", "calls/s", "p50 ms", "p99 ms");
            println!("{}", row("memory", &in_memory));
            println!("{}", row("redis", &in_redis));
        }
    });
}
