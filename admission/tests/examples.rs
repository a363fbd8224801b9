#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The committed examples are the test table: everything under examples/ is admitted, and
//! every file under examples/rejected/ is refused for the reasons its `# expect:` lines name.

use std::path::{Path, PathBuf};

use palisade_admission::check;

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

fn read(path: &Path) -> (String, String) {
    (path.display().to_string(), std::fs::read_to_string(path).unwrap())
}

fn platform_policy() -> Vec<palisade_crds::MCPPolicy> {
    let (name, text) = read(&examples_dir().join("policy.yaml"));
    check::load_policies(&name, &text).unwrap()
}

#[test]
fn examples_are_admitted_with_and_without_the_policy() {
    let files: Vec<_> = yaml_files(&examples_dir()).iter().map(|p| read(p)).collect();
    assert!(files.len() >= 4);
    for policies in [vec![], platform_policy()] {
        for r in check::check(&files, &policies) {
            assert!(
                r.admitted,
                "{}:{} {} {} rejected: {:?} {}",
                r.file,
                r.line,
                r.kind,
                r.name,
                r.error,
                r.verdict.message()
            );
        }
    }
}

#[test]
fn rejected_examples_are_refused_for_the_expected_reasons() {
    let policies = platform_policy();
    let files = yaml_files(&examples_dir().join("rejected"));
    assert!(files.len() >= 20, "the rejection table shrank to {}", files.len());
    for path in files {
        let (name, text) = read(&path);
        let expected: Vec<(String, String)> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# expect: "))
            .map(|l| {
                let (rule, field) = l.split_once(' ').unwrap();
                (rule.to_string(), field.to_string())
            })
            .collect();
        assert!(!expected.is_empty(), "{name} has no # expect: line");
        let reports = check::check(&[(name.clone(), text)], &policies);
        assert_eq!(reports.len(), 1, "{name}");
        let r = &reports[0];
        assert!(!r.admitted, "{name} was admitted");
        // What the CRD itself refuses is listed apart (`crd.*` lines): those objects never reach
        // admission control in a cluster, which the e2e tests of the admission policy rely on.
        let mut by_crd: Vec<(String, String)> = r
            .verdict
            .violations
            .iter()
            .filter(|v| v.rule.starts_with("crd."))
            .map(|v| (v.rule.to_string(), v.field.clone()))
            .collect();
        let mut listed: Vec<(String, String)> =
            expected.iter().filter(|(rule, _)| rule.starts_with("crd.")).cloned().collect();
        by_crd.sort();
        listed.sort();
        assert_eq!(by_crd, listed, "{name}: the CRD's own refusals must be the crd.* expect lines");
        for (rule, field) in expected {
            let found = if rule == "parse" {
                r.error
                    .as_ref()
                    .is_some_and(|e| e.field.as_deref() == Some(field.as_str()) && e.line.is_some())
            } else {
                r.verdict.has(&rule, &field)
            };
            assert!(
                found,
                "{name}: expected {rule} at {field}; got {:?} {}",
                r.error,
                r.verdict.message()
            );
        }
        // Every finding says what to do, not only what is wrong.
        for v in &r.verdict.violations {
            assert!(v.message.len() > 20, "{name}: terse message {v}");
        }
    }
}

#[test]
fn malformed_input_gets_located_errors_not_panics() {
    let cases = [
        (
            "bad.yaml",
            "apiVersion: palisade.dev/v1alpha1\nkind: MCPServer\nmetadata: {name: x\n",
            "malformed YAML",
            None,
        ),
        ("list.yaml", "- a\n- b\n", "expected a Kubernetes object", None),
        (
            "nokind.yaml",
            "apiVersion: v1\nmetadata: {name: x}\n",
            "missing apiVersion or kind",
            None,
        ),
        (
            "kind.yaml",
            "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: x}\n",
            "unsupported kind Widget",
            Some("kind"),
        ),
        (
            "version.yaml",
            "apiVersion: palisade.dev/v1\nkind: MCPServer\nmetadata: {name: x}\n",
            "unknown version",
            Some("apiVersion"),
        ),
        (
            "type.yaml",
            "apiVersion: palisade.dev/v1alpha1\nkind: MCPServer\nmetadata: {name: x}\nspec:\n  image: a@sha256:00\n  transport: stdio\n  replicas: many\n",
            "invalid type",
            Some("spec.replicas"),
        ),
        (
            "enum.yaml",
            "apiVersion: palisade.dev/v1alpha1\nkind: MCPServer\nmetadata: {name: x}\nspec:\n  image: a:1\n  transport: websocket\n",
            "unknown variant",
            Some("spec.transport"),
        ),
        (
            "unknown.yaml",
            "apiVersion: palisade.dev/v1alpha1\nkind: MCPServer\nmetadata: {name: x}\nspec:\n  imagePullPolicy: Always\n",
            "unknown field imagePullPolicy",
            Some("spec.imagePullPolicy"),
        ),
        (
            "top.yaml",
            "apiVersion: palisade.dev/v1alpha1\nkind: MCPPolicy\nmetadata: {name: x}\nextra: 1\n",
            "unknown top-level field",
            Some("extra"),
        ),
    ];
    for (file, text, want, field) in cases {
        let reports = check::check(&[(file.to_string(), text.to_string())], &[]);
        assert_eq!(reports.len(), 1, "{file}");
        let err = reports[0].error.as_ref().unwrap_or_else(|| panic!("{file}: no error"));
        assert!(err.message.contains(want), "{file}: {err:?}");
        assert_eq!(err.field.as_deref(), field, "{file}");
        assert!(!reports[0].admitted);
    }
}

#[test]
fn documents_keep_their_line_numbers() {
    let text = "# comment\napiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\napiVersion: palisade.dev/v1alpha1\nkind: MCPServer\nmetadata: {name: b}\nspec:\n  transport: stdio\n  bogus: 1\n";
    let reports = check::check(&[("multi.yaml".into(), text.into())], &[]);
    assert_eq!(reports.len(), 2);
    assert!(reports[0].admitted);
    assert_eq!(reports[1].line, 6);
    assert_eq!(reports[1].kind, "MCPServer");
    let err = reports[1].error.as_ref().unwrap();
    assert_eq!(err.field.as_deref(), Some("spec.bogus"));
    assert_eq!(err.line, Some(11));
}
