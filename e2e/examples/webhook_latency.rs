//! Sends N MCPServer creates (server-side dry run) through the API server, which calls the
//! webhook for each, and prints latency figures from three places: the client, the API
//! server's admission metrics, and the webhook's own histogram. Run by e2e/bench/webhook-latency.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use kube::Client;

fn quantile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

/// Quantile of a Prometheus histogram from its cumulative buckets (upper bound of the bucket
/// the quantile falls into, linearly interpolated like histogram_quantile()).
fn histogram_quantile(buckets: &[(f64, f64)], q: f64) -> f64 {
    let total = buckets.last().map(|b| b.1).unwrap_or(0.0);
    let rank = q * total;
    let mut prev = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return prev.0;
            }
            let width = le - prev.0;
            let inside = count - prev.1;
            return if inside > 0.0 { prev.0 + width * (rank - prev.1) / inside } else { le };
        }
        prev = (le, count);
    }
    prev.0
}

/// Cumulative buckets of `family` lines matching all `filters`, summed over other labels.
fn buckets(text: &str, family: &str, filters: &[&str]) -> Vec<(f64, f64)> {
    let mut by_le: std::collections::BTreeMap<String, f64> = Default::default();
    for line in text.lines().filter(|l| l.starts_with(&format!("{family}_bucket{{"))) {
        if !filters.iter().all(|f| line.contains(f)) {
            continue;
        }
        let Some(le) = line.split("le=\"").nth(1).and_then(|r| r.split('"').next()) else {
            continue;
        };
        let value: f64 = line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
        *by_le.entry(le.to_string()).or_default() += value;
    }
    let mut out: Vec<(f64, f64)> = by_le
        .into_iter()
        .map(|(le, c)| (if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap() }, c))
        .collect();
    out.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
    out
}

fn delta(after: &[(f64, f64)], before: &[(f64, f64)]) -> Vec<(f64, f64)> {
    after
        .iter()
        .map(|(le, c)| (*le, c - before.iter().find(|b| b.0 == *le).map(|b| b.1).unwrap_or(0.0)))
        .collect()
}

async fn metrics(client: &Client) -> String {
    let req = http::Request::get("/metrics").body(vec![]).unwrap();
    client.request_text(req).await.unwrap()
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(1000);
    let namespace = args.get(2).cloned().unwrap_or_else(|| "bench".into());
    let webhook_metrics_port: u16 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(0);
    let client = Client::try_default().await.unwrap();

    let text = std::fs::read_to_string(palisade_e2e::repo_root().join("examples/weather-sse.yaml"))
        .unwrap();
    let mut server: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
    server["metadata"]["namespace"] = namespace.clone().into();

    let api_before = metrics(&client).await;
    let wh_before =
        palisade_e2e::http_get_local(webhook_metrics_port, "/metrics").await.unwrap_or_default();
    let path = format!(
        "/apis/palisade.dev/v1alpha1/namespaces/{namespace}/mcpservers?dryRun=All&fieldValidation=Strict"
    );
    let mut client_ms = Vec::with_capacity(n);
    let started = Instant::now();
    for i in 0..n {
        server["metadata"]["name"] = format!("bench-{i:05}").into();
        let req = http::Request::post(&path)
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&server).unwrap())
            .unwrap();
        let t = Instant::now();
        let resp: serde_json::Value = client.request(req).await.unwrap();
        client_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(resp["metadata"]["name"], format!("bench-{i:05}"));
    }
    let wall = started.elapsed().as_secs_f64();
    let api_after = metrics(&client).await;
    let wh_after =
        palisade_e2e::http_get_local(webhook_metrics_port, "/metrics").await.unwrap_or_default();

    client_ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let api = delta(
        &buckets(
            &api_after,
            "apiserver_admission_webhook_admission_duration_seconds",
            &["name=\"mcpservers.palisade.dev\""],
        ),
        &buckets(
            &api_before,
            "apiserver_admission_webhook_admission_duration_seconds",
            &["name=\"mcpservers.palisade.dev\""],
        ),
    );
    let wh = delta(
        &buckets(&wh_after, "palisade_webhook_admission_duration_seconds", &["kind=\"MCPServer\""]),
        &buckets(
            &wh_before,
            "palisade_webhook_admission_duration_seconds",
            &["kind=\"MCPServer\""],
        ),
    );
    println!(
        "admissions:                      {n} MCPServer creates (dry run), sequential, {:.1}/s",
        n as f64 / wall
    );
    println!(
        "client round trip (kube-rs):     p50 {:.2} ms  p99 {:.2} ms",
        quantile(&client_ms, 0.5),
        quantile(&client_ms, 0.99)
    );
    println!(
        "API server -> webhook (apiserver_admission_webhook_admission_duration_seconds, {} calls): p50 {:.2} ms  p99 {:.2} ms",
        api.last().map(|b| b.1).unwrap_or(0.0),
        histogram_quantile(&api, 0.5) * 1000.0,
        histogram_quantile(&api, 0.99) * 1000.0
    );
    println!(
        "in the webhook (palisade_webhook_admission_duration_seconds, {} reviews): p50 {:.3} ms  p99 {:.3} ms",
        wh.last().map(|b| b.1).unwrap_or(0.0),
        histogram_quantile(&wh, 0.5) * 1000.0,
        histogram_quantile(&wh, 0.99) * 1000.0
    );
}
