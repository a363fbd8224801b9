#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The `palisade` binary's offline subcommands, run as a user runs them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn palisade(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_palisade")).args(args).current_dir(repo()).output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn check_admits_the_examples() {
    let o = palisade(&[
        "check",
        "--policy",
        "examples/policy.yaml",
        "examples/everything-http.yaml",
        "examples/filesystem-stdio.yaml",
        "examples/weather-sse.yaml",
        "examples/namespace.yaml",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(stdout(&o).contains("4 admitted, 0 rejected"));
}

#[test]
fn check_rejects_with_field_paths_and_exit_1() {
    let o = palisade(&[
        "check",
        "examples/rejected/egress-metadata.yaml",
        "examples/everything-http.yaml",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    assert!(out.contains("REJECTED examples/rejected/egress-metadata.yaml"), "{out}");
    assert!(out.contains("spec.egress[0].cidr"), "{out}");
    assert!(out.contains("ADMITTED examples/everything-http.yaml"), "{out}");
}

#[test]
fn check_json_is_machine_readable() {
    let o = palisade(&["check", "-o", "json", "examples/rejected/plaintext-secret.yaml"]);
    assert_eq!(o.status.code(), Some(1));
    let reports: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let first = &reports[0];
    assert_eq!(first["admitted"], false);
    assert_eq!(first["violations"][0]["field"], "spec.env[0].value");
    assert_eq!(first["violations"][0]["rule"], "baseline.plaintextSecret");
    // The secret itself never appears in the output.
    assert!(!stdout(&o).contains("ghp_0123456789"));
}

#[test]
fn unreadable_input_exits_2_with_the_path() {
    let o = palisade(&["check", "examples/does-not-exist.yaml"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("examples/does-not-exist.yaml"));
    let o = palisade(&[
        "check",
        "--policy",
        "examples/everything-http.yaml",
        "examples/everything-http.yaml",
    ]);
    assert_eq!(o.status.code(), Some(2), "a non-policy passed as --policy is a usage error");
}

#[test]
fn render_prints_hardened_objects_for_every_example() {
    let o = palisade(&[
        "render",
        "examples/everything-http.yaml",
        "examples/filesystem-stdio.yaml",
        "examples/weather-sse.yaml",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let text = stdout(&o);
    let docs: Vec<serde_json::Value> = text
        .split("---\n")
        .filter(|d| !d.trim().is_empty())
        .map(|d| serde_saphyr::from_str(d).unwrap())
        .collect();
    let count = |kind: &str| docs.iter().filter(|d| d["kind"] == kind).count();
    assert_eq!(count("Deployment"), 3);
    assert_eq!(count("NetworkPolicy"), 9);
    assert_eq!(count("ServiceAccount"), 3);
    assert_eq!(count("PodDisruptionBudget"), 1);
    for d in docs.iter().filter(|d| d["kind"] == "Deployment") {
        let pod = &d["spec"]["template"]["spec"];
        assert_eq!(pod["automountServiceAccountToken"], false);
        for c in pod["containers"].as_array().unwrap() {
            assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
        }
    }
}

#[test]
fn render_refuses_an_unpinned_image_unless_given_a_digest() {
    let dir = tempdir();
    let file = dir.join("tagged.yaml");
    let text = std::fs::read_to_string(repo().join("examples/weather-sse.yaml")).unwrap().replace(
        "weather-sse:1.4.2@sha256:4938574f54c03c1cc526e24d412d1e628e1f863004c7ce0ee0a61f3d96da2d45",
        "weather-sse:1.4.2",
    );
    std::fs::write(&file, text).unwrap();
    let path = file.to_str().unwrap();
    let o = palisade(&["render", path]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not pinned by digest"));
    let digest = format!("sha256:{}", "ab".repeat(32));
    let o = palisade(&["render", "--digest", &digest, path]);
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout(&o).contains(&format!("ghcr.io/acme/weather-sse:1.4.2@{digest}")));
}

#[test]
fn crds_subcommand_prints_the_committed_crds() {
    let o = palisade(&["crds"]);
    assert_eq!(o.status.code(), Some(0));
    let printed = stdout(&o);
    for file in ["palisade.dev_mcpservers.yaml", "palisade.dev_mcppolicies.yaml"] {
        let committed = std::fs::read_to_string(repo().join("crds").join(file)).unwrap();
        assert!(printed.contains(&committed), "{file} differs from `palisade crds`");
    }
}

fn tempdir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("palisade-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// An OSV feed becomes a policy that admission accepts, and that policy then refuses a server
/// whose SBOM could not be verified (no signing key named).
#[test]
fn advisories_from_osv_make_an_admissible_policy() {
    let dir = std::env::temp_dir().join(format!("palisade-osv-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let osv = dir.join("osv.json");
    std::fs::write(
        &osv,
        r#"{"id": "GHSA-w48q-cv73-mx4w", "affected": [{
            "package": {"ecosystem": "npm", "name": "@modelcontextprotocol/sdk"},
            "ranges": [{"type": "SEMVER", "events": [{"introduced": "0"}, {"fixed": "1.24.0"}]}]}]}"#,
    )
    .unwrap();
    let o = palisade(&["advisories", "--name", "feed", "--require-sbom", osv.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let policy = dir.join("policy.yaml");
    std::fs::write(&policy, o.stdout).unwrap();
    let p = policy.to_str().unwrap();
    let o = palisade(&["check", p]);
    assert_eq!(o.status.code(), Some(0), "the policy itself is admitted: {}", stdout(&o));
    let signed = std::fs::read_to_string(repo().join("examples/everything-http.yaml")).unwrap();
    let keys = "  signature:\n    keys:\n      - secretRef: { name: cosign-public-key, key: cosign.pub }\n";
    assert!(signed.contains(keys));
    let unsigned = dir.join("unsigned.yaml");
    std::fs::write(&unsigned, signed.replace(keys, "")).unwrap();
    let o = palisade(&["check", unsigned.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "admitted without the policy: {}", stdout(&o));
    let o = palisade(&["check", "--policy", p, unsigned.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(stdout(&o).contains("policy.sbom"), "{}", stdout(&o));
    let o = palisade(&["advisories", dir.join("missing.json").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let _ = std::fs::remove_dir_all(dir);
}
