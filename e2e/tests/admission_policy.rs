//! The chart's ValidatingAdmissionPolicies, evaluated locally with kube's CEL implementation of
//! the Kubernetes libraries (no cluster): they refuse every baseline case of the rejection
//! table that the webhook refuses (their own message naming the rule), admit the examples, and
//! their lists (always-denied ranges, injection variables) are the Rust ones. The e2e test in
//! webhook.rs proves the same on the real API server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use kube::core::cel::{AdmissionRequest, GroupVersionKind, VapEvaluator, VapExpression};
use palisade_crds::MCPServer;
use palisade_e2e::{
    CHART_TEST_IMAGES, VAP_RULES, refused_by_the_crd, rejection_table, repo_root, tool,
};
use serde_json::Value;

struct Policy {
    name: String,
    kinds: Vec<String>,
    validations: Vec<VapExpression>,
}

/// The chart's admission-policy template, rendered by the real helm.
fn policies() -> Vec<Policy> {
    let helm = tool("helm").unwrap();
    let out = std::process::Command::new(&helm)
        .args([
            "template",
            "palisade",
            "charts/palisade",
            "--namespace",
            "palisade-system",
            "--show-only",
            "templates/admission-policy.yaml",
            "--kube-version",
            "1.33.0",
        ])
        .args(CHART_TEST_IMAGES)
        .current_dir(repo_root())
        .output()
        .expect("helm runs (make tools builds it)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let mut found = vec![];
    for doc in text.split("\n---").filter(|d| d.contains("kind: ValidatingAdmissionPolicy\n")) {
        let v: Value = serde_saphyr::from_str(doc).unwrap();
        // Variables are pure expressions: substituted textually, in order.
        let mut vars: Vec<(String, String)> = vec![];
        for var in v["spec"]["variables"].as_array().cloned().unwrap_or_default() {
            let expr = substitute(var["expression"].as_str().unwrap(), &vars);
            vars.push((var["name"].as_str().unwrap().to_string(), expr));
        }
        let validations = v["spec"]["validations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| VapExpression {
                expression: substitute(x["expression"].as_str().unwrap(), &vars),
                message: x["message"].as_str().map(str::to_string),
                message_expression: None,
            })
            .collect();
        let kinds = v["spec"]["matchConstraints"]["resourceRules"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r["resources"].as_array().cloned().unwrap_or_default())
            .filter_map(|r| r.as_str().map(str::to_string))
            .collect();
        found.push(Policy {
            name: v["metadata"]["name"].as_str().unwrap().into(),
            kinds,
            validations,
        });
    }
    assert_eq!(found.len(), 2, "the chart has two admission policies");
    found
}

fn substitute(expr: &str, vars: &[(String, String)]) -> String {
    // Longest names first, so that `variables.pod` does not eat `variables.podX`.
    let mut sorted: Vec<&(String, String)> = vars.iter().collect();
    sorted.sort_by_key(|(n, _)| std::cmp::Reverse(n.len()));
    sorted
        .iter()
        .fold(expr.to_string(), |e, (n, x)| e.replace(&format!("variables.{n}"), &format!("({x})")))
}

/// The rule tags of the validations `object` fails.
fn refusals(policy: &Policy, object: &Value) -> Vec<String> {
    let kind = object["kind"].as_str().unwrap_or_default().to_string();
    let evaluator = VapEvaluator::builder()
        .object(object.clone())
        .request(AdmissionRequest {
            operation: "CREATE".into(),
            kind: GroupVersionKind { kind, ..Default::default() },
            ..Default::default()
        })
        .build();
    evaluator
        .evaluate(&policy.validations)
        .into_iter()
        .filter(|r| !r.passed)
        .map(|r| {
            let m = r.message.unwrap_or_default();
            assert!(
                !m.starts_with("evaluation error") && !m.contains("returned non-boolean"),
                "{}: {} fails to evaluate: {m}",
                policy.name,
                r.expression
            );
            m.rsplit_once('[').map(|(_, t)| t.trim_end_matches(']').to_string()).unwrap_or(m)
        })
        .collect()
}

/// The object as the API server evaluates it: MCPServers with their schema defaults applied.
fn as_admitted(yaml: &str) -> Value {
    let v: Value = serde_saphyr::from_str(yaml).unwrap();
    if v["kind"] == "MCPServer" {
        let typed: MCPServer = serde_json::from_value(v).unwrap();
        return serde_json::to_value(typed).unwrap();
    }
    v
}

fn policy_for<'a>(policies: &'a [Policy], object: &Value) -> &'a Policy {
    let resource = if object["kind"] == "MCPServer" { "mcpservers" } else { "pods" };
    let resource = match object["kind"].as_str() {
        Some("Deployment") => "deployments",
        _ => resource,
    };
    policies.iter().find(|p| p.kinds.iter().any(|k| k == resource)).unwrap()
}

#[test]
fn the_chart_policies_refuse_the_baseline_cases_and_admit_the_examples() {
    let policies = policies();
    let mut checked = 0;
    for case in rejection_table() {
        if !VAP_RULES.contains(&case.rule.as_str()) || refused_by_the_crd(&case.file) {
            continue;
        }
        let object = as_admitted(&std::fs::read_to_string(&case.file).unwrap());
        let got = refusals(policy_for(&policies, &object), &object);
        assert!(
            got.contains(&case.rule),
            "{}: {} not refused by the policy: {got:?}",
            case.file,
            case.rule
        );
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} baseline cases");
    for f in [
        "examples/everything-http.yaml",
        "examples/filesystem-stdio.yaml",
        "examples/weather-sse.yaml",
        "examples/remote-https.yaml",
    ] {
        let object = as_admitted(&std::fs::read_to_string(repo_root().join(f)).unwrap());
        let got = refusals(policy_for(&policies, &object), &object);
        assert!(got.is_empty(), "{f} refused by the policy: {got:?}");
    }
    // What the operator renders passes the workload policy.
    let mut server: MCPServer = serde_saphyr::from_str(
        &std::fs::read_to_string(repo_root().join("examples/filesystem-stdio.yaml")).unwrap(),
    )
    .unwrap();
    server.metadata.uid = Some("uid".into());
    let r = palisade_render::render(&server, &palisade_render::RenderOptions::default()).unwrap();
    let mut d = serde_json::to_value(&r.deployment).unwrap();
    d["kind"] = "Deployment".into();
    let got = refusals(policy_for(&policies, &d), &d);
    assert!(got.is_empty(), "the rendered Deployment is refused: {got:?}");
}

/// The CEL lists are the Rust ones: the always-denied ranges (every spelling the API server's
/// cidr() accepts) and the code-injection variables.
#[test]
fn the_chart_lists_match_the_rust_definitions() {
    let policies = policies();
    let server = policies.iter().find(|p| p.kinds.iter().any(|k| k == "mcpservers")).unwrap();
    // The CEL list literal that contains `first`.
    let list = |first: &str| -> Vec<String> {
        let quoted = format!("'{first}'");
        let e = server
            .validations
            .iter()
            .find(|v| v.expression.contains(&quoted))
            .unwrap_or_else(|| panic!("no list with {first}"));
        let at = e.expression.find(&quoted).unwrap();
        let open = e.expression[..at].rfind('[').unwrap();
        let close = at + e.expression[at..].find(']').unwrap();
        e.expression[open + 1..close]
            .split(',')
            .map(|s| s.trim().trim_matches('\'').to_string())
            .filter(|s| !s.is_empty())
            .collect()
    };
    let mut cel_cidrs = list("169.254.0.0/16");
    let mut rust: Vec<String> = palisade_core::net::always_denied_everywhere()
        .iter()
        .map(|n| n.to_string())
        .filter(|c| !c.starts_with("::ffff:"))
        .collect();
    cel_cidrs.sort();
    rust.sort();
    assert_eq!(cel_cidrs, rust);
    let mut cel_env = list("LD_PRELOAD");
    let mut rust_env: Vec<String> =
        palisade_admission::rules::mcpserver::INJECTION_ENV.iter().map(|s| s.to_string()).collect();
    cel_env.sort();
    rust_env.sort();
    assert_eq!(cel_env, rust_env);
}
