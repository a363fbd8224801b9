#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The webhook's decision function: the same rules as `palisade check`, plus what only the
//! cluster knows (namespace labels, the claimed MCPServer's verified digest).

use std::collections::BTreeMap;
use std::path::Path;

use palisade_admission::decide::{Claimed, Inputs, decide, server_digest};
use serde_json::{Value, json};

fn example(file: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples").join(file);
    serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn inputs<'a>(
    claimed: &'a dyn Fn(&str) -> Claimed,
    labels: Option<&'a BTreeMap<String, String>>,
) -> Inputs<'a> {
    Inputs { namespace_labels: labels, policies: &[], claimed, gateway_image: None, servers: None }
}

#[test]
fn servers_are_decided_with_messages_naming_fields() {
    let none = |_: &str| Claimed::Missing;
    let ok = decide("MCPServer", &example("everything-http.yaml"), &inputs(&none, None));
    assert!(ok.allowed, "{}", ok.message);
    let bad = decide("MCPServer", &example("rejected/egress-metadata.yaml"), &inputs(&none, None));
    assert!(!bad.allowed);
    assert!(
        bad.message.starts_with("MCPServer egress-metadata is not admitted: spec.egress[0].cidr"),
        "{}",
        bad.message
    );
    let mut smuggled = example("everything-http.yaml");
    smuggled["spec"]["hostPID"] = json!(true);
    let d = decide("MCPServer", &smuggled, &inputs(&none, None));
    assert!(!d.allowed && d.message.contains("spec.hostPID"), "{}", d.message);
    let tag = {
        let mut v = example("everything-http.yaml");
        v["spec"]["image"] = json!("docker.io/mcp/everything:1.2.3");
        v
    };
    let d = decide("MCPServer", &tag, &inputs(&none, None));
    assert!(d.allowed && d.warnings.iter().any(|w| w.contains("is a tag")), "{d:?}");
}

#[test]
fn workloads_are_checked_against_the_claimed_servers_verified_digest() {
    let pod = example("rejected/hand-made-pod-tag.yaml");
    let missing = |_: &str| Claimed::Missing;
    let d = decide("Pod", &pod, &inputs(&missing, None));
    assert!(
        !d.allowed && d.message.contains("claims MCPServer everything, which does not exist"),
        "{}",
        d.message
    );
    assert!(
        d.message.contains("must be pinned by digest"),
        "every problem is listed: {}",
        d.message
    );
    let unresolved = |_: &str| Claimed::Digest(None);
    assert!(
        decide("Pod", &pod, &inputs(&unresolved, None))
            .message
            .contains("no verified image digest yet")
    );

    let mut unlabelled = pod.clone();
    unlabelled["metadata"]["labels"] = json!({});
    let d = decide("Pod", &unlabelled, &inputs(&missing, None));
    assert!(d.allowed, "unlabelled workloads are not Palisade's business");
}

#[test]
fn the_verified_digest_is_the_specs_or_the_recorded_one_for_the_same_reference() {
    let pinned = json!({"spec": {"image": "r.io/a/b@sha256:1111111111111111111111111111111111111111111111111111111111111111"}});
    assert_eq!(
        server_digest(&pinned).unwrap(),
        "sha256:1111111111111111111111111111111111111111111111111111111111111111"
    );
    let tagged = json!({"spec": {"image": "r.io/a/b:1"}, "status": {"image": {"reference": "r.io/a/b:1", "digest": "sha256:2222"}}});
    assert_eq!(server_digest(&tagged).as_deref(), Some("sha256:2222"));
    let stale = json!({"spec": {"image": "r.io/a/b:2"}, "status": {"image": {"reference": "r.io/a/b:1", "digest": "sha256:2222"}}});
    assert_eq!(
        server_digest(&stale),
        None,
        "a digest recorded for another reference does not count"
    );
}
