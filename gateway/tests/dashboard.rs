//! The Grafana dashboard shipped in the chart, checked against a real Prometheus (Debian's,
//! `e2e/tools path prometheus`) scraping a gateway under traffic: allowed and refused calls
//! by two principal classes in front of the official Python SDK server. Every panel's query
//! and the dashboard's `server` variable must return data, with the labels the panels group by.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::idp::{AUDIENCE, SCOPE, idp};
use common::*;
use serde_json::{Value, json};

async fn query(prom: &str, q: &str) -> Value {
    let url = url::Url::parse_with_params(&format!("{prom}/api/v1/query"), [("query", q)]).unwrap();
    let r: Value = reqwest::Client::new().get(url).send().await.unwrap().json().await.unwrap();
    assert_eq!(r["status"], "success", "{q}: {r}");
    r["data"]["result"].clone()
}

#[tokio::test]
async fn every_dashboard_query_returns_data_from_a_real_prometheus() {
    let idp = idp().await;
    let (_server, url) = python_http().await;
    let mut cfg = config_allowing_unlisted(
        json!({"kind": "http", "url": url, "sse": false}),
        &["2025-11-25", "2026-07-28"],
    );
    cfg["server"] = json!({"name": "weather", "namespace": "team-a"});
    cfg["auth"] = json!({
        "oidc": {"issuer": idp.issuer, "audience": AUDIENCE, "requiredScopes": [SCOPE]},
        "oidcCaFile": idp.ca_file,
    });
    cfg["authorization"] = json!({"roles": [
        {"name": "operators", "subjects": [{"claim": "sub", "values": ["alice"]}],
         "methods": ["**"], "tools": ["*"]},
        {"name": "readers", "subjects": [{"claim": "sub", "values": ["bob"]}],
         "methods": ["tools/list", "tools/call"], "tools": ["echo"]}]});
    let gw = gateway(cfg).await;

    let dir = scratch("prometheus");
    let admin = gw.admin.trim_start_matches("http://").to_string();
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global: {{ scrape_interval: 1s, evaluation_interval: 1s }}\nscrape_configs:\n  - job_name: gateway\n    static_configs: [{{ targets: ['{admin}'] }}]\n"
        ),
    )
    .unwrap();
    let port = free_port();
    let _prom = spawn(
        tokio::process::Command::new(shared::debian_tool("prometheus"))
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn"),
    );
    let prom = format!("http://127.0.0.1:{port}");
    wait_port(port).await;

    // Traffic in bursts, so that rates have increases between scrapes: allowed calls and
    // listings (operators), a granted call and refused ones (readers).
    let (alice, bob) = (idp.token("alice"), idp.token("bob"));
    let call = |token: String, tool: &'static str, args: Value| {
        let url = gw.url.clone();
        async move {
            let auth = format!("Bearer {token}");
            stateless_with(
                &url,
                "tools/call",
                json!({"name": tool, "arguments": args}),
                &[("authorization", auth.as_str())],
            )
            .await
        }
    };
    for burst in 0..4 {
        for i in 0..10 {
            let ok = call(alice.clone(), "echo", json!({"message": format!("m{burst}-{i}")})).await;
            assert!(ok.get("result").is_some(), "{ok}");
            call(alice.clone(), "add", json!({"a": i, "b": burst})).await;
            let refused = call(bob.clone(), "add", json!({"a": 1, "b": 2})).await;
            assert!(refused.get("error").is_some(), "{refused}");
            call(bob.clone(), "echo", json!({"message": "hi"})).await;
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }

    // The dashboard's variable finds the server; then every panel's queries have data.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let url = url::Url::parse_with_params(
            &format!("{prom}/api/v1/label/server/values"),
            [("match[]", "palisade_gateway_ready")],
        )
        .unwrap();
        let r: Value = reqwest::Client::new().get(url).send().await.unwrap().json().await.unwrap();
        if r["data"].as_array().is_some_and(|v| v.contains(&json!("team-a/weather"))) {
            break;
        }
        assert!(Instant::now() < deadline, "no `server` label values: {r}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("charts/palisade/dashboards/palisade-gateways.json"))
            .unwrap(),
    )
    .unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 8);
    let mut checked = 0;
    for panel in panels {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let q = expr.replace("$server", "team-a/weather").replace("$__rate_interval", "1m");
            let result = query(&prom, &q).await;
            assert!(
                result.as_array().is_some_and(|r| !r.is_empty()),
                "panel {:?}: no data for {q}",
                panel["title"]
            );
            checked += 1;
        }
    }
    // The breakdowns the panels promise are there.
    let by = |q: &'static str, label: &'static str| {
        let prom = prom.clone();
        async move {
            let r = query(&prom, q).await;
            r.as_array()
                .unwrap()
                .iter()
                .filter_map(|s| s["metric"][label].as_str().map(str::to_string))
                .collect::<Vec<_>>()
        }
    };
    let tools =
        by(r#"sum by (tool) (palisade_gateway_requests_total{method="tools/call"})"#, "tool").await;
    assert!(tools.contains(&"echo".to_string()) && tools.contains(&"add".to_string()), "{tools:?}");
    let classes = by(
        r#"sum by (principal_class) (palisade_gateway_requests_total{outcome="denied"})"#,
        "principal_class",
    )
    .await;
    assert_eq!(classes, ["readers"]);
    let outcomes = by("sum by (outcome) (palisade_gateway_requests_total)", "outcome").await;
    assert!(outcomes.len() >= 2, "{outcomes:?}");
    let kinds = by("sum by (kind) (palisade_gateway_security_events_total)", "kind").await;
    assert!(kinds.contains(&"policy_block".to_string()), "{kinds:?}");
    println!("{checked} dashboard queries returned data");
}
