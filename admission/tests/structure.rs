#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Hole 10 of the audit: `palisade check` applies the CRDs' own schema and CEL rules, so it
//! refuses what the API server refuses (ranges, lengths, patterns, list sizes, cross-field
//! rules) instead of admitting it offline.

use std::path::Path;

use palisade_admission::check;

fn example_text(file: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples").join(file))
        .unwrap()
}

fn verdict(text: &str) -> check::Report {
    let reports = check::check(&[("t.yaml".into(), text.to_string())], &[]);
    assert_eq!(reports.len(), 1);
    reports.into_iter().next().unwrap()
}

#[test]
fn what_the_schema_refuses_is_refused_offline() {
    let base = example_text("everything-http.yaml");
    assert!(verdict(&base).admitted, "{}", verdict(&base).verdict.message());
    let cases: &[(&str, &str, &str, &str)] = &[
        ("replicas: 2", "replicas: 500", "crd.schema", "spec.replicas"),
        ("port: 3001", "port: 80", "crd.schema", "spec.port"),
        ("path: /mcp", "path: /m cp", "crd.schema", "spec.path"),
        (
            "  toolDefaults:\n",
            "  limits: { maxMessageBytes: 10 }\n  toolDefaults:\n",
            "crd.schema",
            "spec.limits.maxMessageBytes",
        ),
        (
            "    - { name: LOG_LEVEL, value: info }",
            "    - { name: LOG_LEVEL, value: info, valueFrom: { secretKeyRef: { name: a, key: b } } }",
            "crd.cel",
            "spec.env[0]",
        ),
        (
            "      ports: [{ port: 443 }]\n    - host",
            "      ports: [{ port: 443, endPort: 80 }]\n    - host",
            "crd.cel",
            "spec.egress[0].ports[0]",
        ),
    ];
    for (from, to, rule, field) in cases {
        assert!(base.contains(from), "{from:?} not in the example");
        let r = verdict(&base.replacen(from, to, 1));
        assert!(!r.admitted, "{to}: admitted offline");
        assert!(
            r.verdict.violations.iter().any(|v| v.rule == *rule && v.field.starts_with(field)),
            "{to}: expected {rule} at {field}: {:?}",
            r.verdict.violations
        );
    }
}
