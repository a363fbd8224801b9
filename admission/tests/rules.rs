#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Rule semantics that the example table does not pin down: how several policies combine,
//! namespace selection, and agreement between rendering and workload admission.

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use palisade_admission::rules::{mcppolicy, mcpserver, workload};
use palisade_crds::mcpserver::{EgressPort, EgressRule, MCPServer, PortProtocol};
use palisade_crds::{MCPPolicy, MCPPolicySpec};

fn example(file: &str) -> MCPServer {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples").join(file);
    serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The HTTP example signed only by a keyless identity, which the operator cannot verify.
fn keyless() -> MCPServer {
    let mut s = example("everything-http.yaml");
    s.spec.signature = Some(palisade_crds::mcpserver::SignatureSpec {
        keys: vec![],
        keyless: vec![palisade_crds::mcpserver::KeylessIdentity {
            issuer: "https://token.actions.githubusercontent.com".into(),
            subject: None,
            subject_reg_exp: Some("https://github.com/modelcontextprotocol/servers/.*".into()),
        }],
    });
    s
}

fn policy_named(name: &str, spec: MCPPolicySpec) -> MCPPolicy {
    let mut p = MCPPolicy::new(name, spec);
    p.metadata.name = Some(name.into());
    p
}

fn with_egress(cidr: &str, port: u16) -> MCPServer {
    let mut s = example("everything-http.yaml");
    s.spec.egress = vec![EgressRule {
        cidr: Some(cidr.into()),
        host: None,
        ports: vec![EgressPort { port, end_port: None, protocol: PortProtocol::Tcp }],
    }];
    s
}

#[test]
fn unrestricted_egress_needs_every_selecting_policy_to_allow_it() {
    let s = with_egress("0.0.0.0/0", 443);
    let mut open = MCPPolicySpec::default();
    open.egress.allow_unrestricted = true;
    let open = policy_named("open", open);
    let strict = policy_named("strict", MCPPolicySpec::default());

    let rule = "baseline.unrestrictedEgress";
    let field = "spec.egress[0].cidr";
    assert!(mcpserver::review(&s, &[]).has(rule, field), "no policy: refused");
    assert!(!mcpserver::review(&s, &[&open]).has(rule, field), "allowed by the only policy");
    assert!(mcpserver::review(&s, &[&open, &strict]).has(rule, field), "a stricter policy wins");
    // Metadata stays excluded whatever the policy says.
    let imds = with_egress("169.254.169.254/32", 80);
    assert!(mcpserver::review(&imds, &[&open]).has("baseline.metadataEgress", field));
}

#[test]
fn risky_ports_and_ranges_need_an_allowance() {
    let mut smtp_ok = MCPPolicySpec::default();
    smtp_ok.egress.allowed_risky_ports = vec![587];
    let smtp_ok = policy_named("smtp", smtp_ok);
    let field = "spec.egress[0].ports[0]";
    assert!(
        mcpserver::review(&with_egress("203.0.113.0/24", 587), &[])
            .has("baseline.riskyPort", field)
    );
    assert!(
        !mcpserver::review(&with_egress("203.0.113.0/24", 587), &[&smtp_ok])
            .has("baseline.riskyPort", field)
    );
    assert!(
        mcpserver::review(&with_egress("203.0.113.0/24", 25), &[&smtp_ok])
            .has("baseline.riskyPort", field)
    );
    let mut range = with_egress("203.0.113.0/24", 1);
    range.spec.egress[0].ports[0].end_port = Some(1024);
    let v = mcpserver::review(&range, &[&smtp_ok]);
    assert!(v.has("baseline.riskyPort", field), "a range that spans SMTP is refused");
}

#[test]
fn policies_select_namespaces_by_label() {
    let spec = MCPPolicySpec {
        namespace_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([("team".to_string(), "platform".to_string())])),
            match_expressions: None,
        }),
        ..MCPPolicySpec::default()
    };
    let p = policy_named("p", spec);
    let labels = |k: &str, v: &str| BTreeMap::from([(k.to_string(), v.to_string())]);
    assert!(mcppolicy::selects(&p, Some(&labels("team", "platform"))));
    assert!(!mcppolicy::selects(&p, Some(&labels("team", "data"))));
    assert!(mcppolicy::selects(&p, None), "offline, every policy applies");
    let all = policy_named("all", MCPPolicySpec::default());
    assert!(mcppolicy::selects(&all, Some(&labels("x", "y"))));
}

#[test]
fn keyless_identities_must_be_trusted_when_the_policy_says_so() {
    let s = keyless();
    let mut spec = MCPPolicySpec::default();
    // The policy's own key is the trust root the operator verifies with.
    spec.signature.trusted_keys = vec![TRUSTED_KEY.into()];
    spec.signature.only_trusted = true;
    spec.signature.trusted_identities = vec![palisade_crds::mcpserver::KeylessIdentity {
        issuer: "https://token.actions.githubusercontent.com".into(),
        subject: None,
        subject_reg_exp: Some("https://github.com/modelcontextprotocol/servers/.*".into()),
    }];
    let p = policy_named("sig", spec.clone());
    assert!(mcpserver::review(&s, &[&p]).allowed(), "{}", mcpserver::review(&s, &[&p]).message());
    spec.signature.trusted_identities[0].issuer = "https://accounts.google.com".into();
    let p = policy_named("sig", spec);
    assert!(mcpserver::review(&s, &[&p]).has("policy.signature", "spec.signature.keyless[0]"));
}

const TRUSTED_KEY: &str =
    "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----";

/// Hole 1 of the audit: a keyless identity no longer satisfies a required signature unless a
/// policy supplies a key the operator can verify with, and `onlyTrusted` ignores the keys a
/// namespace names for itself.
#[test]
fn required_signatures_need_a_key_the_operator_can_verify_with() {
    let mut required = MCPPolicySpec::default();
    required.signature.required = true;
    let p = policy_named("required", required.clone());
    let field = "spec.signature";
    // Keyless only, no trust root: refused by the baseline (the policy adds its own refusal).
    let v = mcpserver::review(&keyless(), &[&p]);
    assert!(v.has("baseline.signature", field), "{}", v.message());
    assert!(v.has("policy.signature", field), "{}", v.message());
    assert!(mcpserver::review(&keyless(), &[]).has("baseline.signature", field));
    // The policy's trusted key is a trust root for a keyless-only server.
    required.signature.trusted_keys = vec![TRUSTED_KEY.into()];
    let with_root = policy_named("required", required);
    let v = mcpserver::review(&keyless(), &[&with_root]);
    assert!(v.allowed(), "{}", v.message());
    // The server's own key satisfies a policy that does not insist on its own keys...
    let keyed = example("everything-http.yaml");
    assert!(
        mcpserver::review(&keyed, &[&p]).allowed(),
        "{}",
        mcpserver::review(&keyed, &[&p]).message()
    );
    // ...but not one that trusts only its own (and lists none usable: only identities).
    let mut only = MCPPolicySpec::default();
    only.signature.only_trusted = true;
    only.signature.trusted_identities = keyless().spec.signature.unwrap().keyless;
    let only = policy_named("only", only);
    let v = mcpserver::review(&keyed, &[&only]);
    assert!(v.has("policy.signature", field), "{}", v.message());
    // Unsigned and not required: runs by digest.
    let mut unsigned = keyed.clone();
    unsigned.spec.signature = None;
    assert!(mcpserver::review(&unsigned, &[]).allowed());
    assert!(mcpserver::review(&unsigned, &[&p]).has("policy.signature", field));
}

#[test]
fn a_required_sbom_needs_a_key_to_verify_it() {
    let mut spec = MCPPolicySpec::default();
    spec.supply_chain.require_sbom = true;
    let p = policy_named("sbom", spec);
    // Keyed: the operator checks the attestation at rollout.
    let keyed = example("weather-sse.yaml");
    assert!(keyed.spec.signature.as_ref().is_some_and(|s| !s.keys.is_empty()));
    assert!(
        mcpserver::review(&keyed, &[&p]).allowed(),
        "{}",
        mcpserver::review(&keyed, &[&p]).message()
    );
    // Keyless only, or unsigned: nothing could verify an attestation.
    let keyless = keyless();
    assert!(keyless.spec.signature.as_ref().is_some_and(|s| s.keys.is_empty()));
    assert!(mcpserver::review(&keyless, &[&p]).has("policy.sbom", "spec.signature.keys"));
    let mut unsigned = keyed.clone();
    unsigned.spec.signature = None;
    assert!(mcpserver::review(&unsigned, &[&p]).has("policy.sbom", "spec.signature.keys"));
    assert!(mcpserver::review(&unsigned, &[]).allowed(), "the rule comes from the policy alone");
}

/// What the operator renders is what admission accepts: a rendered Deployment passes the
/// workload review with the digest it runs, and fails it with any other digest.
#[test]
fn rendered_workloads_pass_workload_admission() {
    for file in ["filesystem-stdio.yaml", "everything-http.yaml", "weather-sse.yaml"] {
        let mut s = example(file);
        s.metadata.uid = Some("uid".into());
        let opts = palisade_render::RenderOptions::default();
        let r = palisade_render::render(&s, &opts).unwrap();
        let mut value = serde_json::to_value(&r.deployment).unwrap();
        let digest = r.image.as_deref().unwrap_or_default().split('@').nth(1).unwrap().to_string();
        let expect = workload::Expectations {
            verified_digest: Some(digest),
            gateway_image: Some(opts.gateway_image.clone()),
            gateway_only: false,
        };
        let v = workload::review_workload(&value, "Deployment", &expect).expect("labelled");
        assert!(v.allowed(), "{file}: {}", v.message());

        let other = workload::Expectations {
            verified_digest: Some(format!("sha256:{}", "f".repeat(64))),
            ..expect.clone()
        };
        let v = workload::review_workload(&value, "Deployment", &other).unwrap();
        assert!(v.violations.iter().any(|x| x.rule == "workload.verifiedDigest"), "{file}");

        // Removing the label makes it none of Palisade's business.
        value["metadata"]["labels"]
            .as_object_mut()
            .unwrap()
            .remove(palisade_crds::MCP_SERVER_LABEL);
        value["spec"]["template"]["metadata"]["labels"]
            .as_object_mut()
            .unwrap()
            .remove(palisade_crds::MCP_SERVER_LABEL);
        assert!(workload::review_workload(&value, "Deployment", &expect).is_none());
    }
}

#[test]
fn a_remote_servers_workload_runs_the_gateway_alone() {
    let mut s = example("remote-https.yaml");
    s.metadata.uid = Some("uid".into());
    let opts = palisade_render::RenderOptions::default();
    let r = palisade_render::render(&s, &opts).unwrap();
    let mut value = serde_json::to_value(&r.deployment).unwrap();
    let expect = workload::Expectations {
        verified_digest: None,
        gateway_image: Some(opts.gateway_image.clone()),
        gateway_only: true,
    };
    let v = workload::review_workload(&value, "Deployment", &expect).expect("labelled");
    assert!(v.allowed(), "{}", v.message());
    // A container beside the gateway, even pinned by digest, is refused.
    let mut extra = value["spec"]["template"]["spec"]["containers"][0].clone();
    extra["name"] = "sidekick".into();
    value["spec"]["template"]["spec"]["containers"].as_array_mut().unwrap().push(extra);
    let v = workload::review_workload(&value, "Deployment", &expect).unwrap();
    assert!(v.violations.iter().any(|x| x.rule == "workload.remoteServer"), "{}", v.message());
}

/// Hole 6: a policy can require signed audit checkpoints.
#[test]
fn a_policy_can_require_a_signing_key_for_the_audit_chain() {
    let mut spec = MCPPolicySpec::default();
    spec.audit.require_signing_key = true;
    let p = policy_named("audit", spec);
    let mut s = example("everything-http.yaml");
    let field = "spec.audit.signingKeySecretRef";
    assert!(mcpserver::review(&s, &[&p]).has("policy.auditSigning", field));
    assert!(!mcpserver::review(&s, &[]).has("policy.auditSigning", field), "the policy's rule");
    s.spec.audit.signing_key_secret_ref =
        Some(palisade_crds::mcpserver::KeyRef { name: "audit".into(), key: "ed25519.pem".into() });
    let v = mcpserver::review(&s, &[&p]);
    assert!(v.allowed(), "{}", v.message());
}

/// Hole 8: a name that resolves inside needs every selecting policy to allow it by name.
#[test]
fn internal_host_names_need_every_policy_to_allow_them() {
    let mut s = example("everything-http.yaml");
    s.spec.egress.push(EgressRule {
        cidr: None,
        host: Some("vault.internal".into()),
        ports: vec![EgressPort { port: 8200, end_port: None, protocol: PortProtocol::Tcp }],
    });
    let field = "spec.egress[2].host";
    assert!(mcpserver::review(&s, &[]).has("baseline.internalHost", field));
    let mut allow = MCPPolicySpec::default();
    allow.egress.allowed_internal_hosts = vec!["vault.internal".into()];
    let allow = policy_named("allow", allow);
    let strict = policy_named("strict", MCPPolicySpec::default());
    assert!(!mcpserver::review(&s, &[&allow]).has("baseline.internalHost", field));
    assert!(mcpserver::review(&s, &[&allow, &strict]).has("baseline.internalHost", field));
    let mut other = MCPPolicySpec::default();
    other.egress.allowed_internal_hosts = vec!["*.internal".into()];
    let other = policy_named("other", other);
    assert!(
        mcpserver::review(&s, &[&other]).has("baseline.internalHost", field),
        "an allowance names the exact host rule"
    );
}

/// Replicas and their shared store: approvals across replicas need one; without one the
/// limits are per replica (a warning); a store is named exactly and reached with a password.
#[test]
fn replicas_with_approvals_share_a_store_named_exactly() {
    let field = "spec.gateway.state";
    let read_only = example("everything-http.yaml");
    assert_eq!(read_only.spec.replicas, 2);
    let v = mcpserver::review(&read_only, &[]);
    assert!(v.allowed(), "{}", v.message());
    assert!(v.warnings.iter().any(|w| w.contains(field) && w.contains("per replica")), "{v:?}");

    let mut gated = read_only.clone();
    gated.spec.tools.push(
        serde_json::from_value(serde_json::json!(
        {"name": "delete_item", "effect": "destructive"}))
        .unwrap(),
    );
    assert!(mcpserver::review(&gated, &[]).has("baseline.sharedState", field));
    let mut single = gated.clone();
    single.spec.replicas = 1;
    assert!(!mcpserver::review(&single, &[]).has("baseline.sharedState", field));

    let store = |url: &str, peer: serde_json::Value| {
        let mut s = gated.clone();
        s.spec.gateway.state = Some(
            serde_json::from_value(serde_json::json!({
            "url": url, "passwordSecretRef": {"name": "redis-auth", "key": "password"},
            "peer": peer}))
            .unwrap(),
        );
        mcpserver::review(&s, &[])
    };
    let in_cluster = serde_json::json!({"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "store"}}});
    let ok = store("rediss://redis.store.svc:6380", in_cluster.clone());
    assert!(ok.allowed(), "{}", ok.message());
    assert!(!ok.warnings.iter().any(|w| w.contains("per replica")), "{ok:?}");
    assert!(
        store("redis://redis.store.svc:6379", in_cluster.clone())
            .warnings
            .iter()
            .any(|w| w.contains("plain text"))
    );
    let url = "spec.gateway.state.url";
    assert!(store("redis://redis.store.svc", in_cluster.clone()).has("baseline.sharedState", url));
    assert!(
        store("redis://u:pw@redis.store.svc:6379", in_cluster).has("baseline.sharedState", url)
    );
    let cidr = "spec.gateway.state.peer.cidr";
    assert!(
        store("rediss://10.0.5.7:6380", serde_json::json!({"cidr": "10.0.0.0/8"}))
            .has("baseline.sharedState", cidr)
    );
    assert!(store("rediss://10.0.5.7:6380", serde_json::json!({"cidr": "10.0.5.7/32"})).allowed());
    assert!(
        store("rediss://169.254.169.254:6380", serde_json::json!({"cidr": "169.254.169.254/32"}))
            .has("baseline.metadataEgress", cidr)
    );
}

#[test]
fn remote_servers_meet_the_policies_that_cannot_check_an_image() {
    let s = example("remote-https.yaml");
    let host = "mcp.tickets.example.com";
    assert!(mcpserver::review(&s, &[]).allowed(), "{}", mcpserver::review(&s, &[]).message());

    // Signed images required: no image to verify, so only a listed host is accepted.
    let mut signed = MCPPolicySpec::default();
    signed.signature.required = true;
    let v = mcpserver::review(&s, &[&policy_named("signed", signed.clone())]);
    assert!(v.has("policy.remote", "spec.remote.url"), "{}", v.message());
    assert!(!v.has("policy.signature", "spec.signature"), "no image, no signature finding");
    signed.remote.allowed_hosts = vec!["*.tickets.example.com".into()];
    let v = mcpserver::review(&s, &[&policy_named("signed", signed.clone())]);
    assert!(v.allowed(), "{}", v.message());
    // A wildcard covers one label, not deeper names nor the zone itself.
    signed.remote.allowed_hosts = vec!["*.example.com".into()];
    let v = mcpserver::review(&s, &[&policy_named("signed", signed.clone())]);
    assert!(v.has("policy.remote", "spec.remote.url"), "{}", v.message());
    // An SBOM requirement is the same.
    let mut sbom = MCPPolicySpec::default();
    sbom.supply_chain.require_sbom = true;
    let v = mcpserver::review(&s, &[&policy_named("sbom", sbom)]);
    assert!(v.has("policy.remote", "spec.remote.url"), "{}", v.message());

    // A host list binds even without signature requirements; every policy must list the host.
    let mut listed = MCPPolicySpec::default();
    listed.remote.allowed_hosts = vec![host.into()];
    let mut other = MCPPolicySpec::default();
    other.remote.allowed_hosts = vec!["mcp.other.example.com".into()];
    let (listed, other) = (policy_named("listed", listed), policy_named("other", other));
    assert!(mcpserver::review(&s, &[&listed]).allowed());
    assert!(mcpserver::review(&s, &[&listed, &other]).has("policy.remote", "spec.remote.url"));

    // A DNS name without a peer where the CNI cannot enforce names.
    let mut no_names = MCPPolicySpec::default();
    no_names.egress.deny_host_rules = true;
    let no_names = policy_named("no-names", no_names);
    let v = mcpserver::review(&s, &[&no_names]);
    assert!(!v.has("policy.hostEgress", "spec.remote.peer"), "the peer is a CIDR");
    let mut by_name = s.clone();
    by_name.spec.remote.as_mut().unwrap().peer = None;
    let v = mcpserver::review(&by_name, &[]);
    assert!(
        v.allowed() && v.warnings.iter().any(|w| w.contains("NetworkPolicy cannot name hosts"))
    );
    assert!(mcpserver::review(&by_name, &[&no_names]).has("policy.hostEgress", "spec.remote.peer"));

    // Internal names need a peer (then NetworkPolicy bounds where they lead) or an allowance.
    let mut internal = by_name.clone();
    internal.spec.remote.as_mut().unwrap().url =
        "https://tickets.tools.svc.cluster.local/mcp".into();
    assert!(mcpserver::review(&internal, &[]).has("baseline.internalHost", "spec.remote.url"));
    internal.spec.remote.as_mut().unwrap().peer = s.spec.remote.as_ref().unwrap().peer.clone();
    assert!(mcpserver::review(&internal, &[]).allowed());

    // Addresses the gateway's pod must never be sent to, and URLs that carry credentials.
    for (url, rule) in [
        ("https://169.254.169.254/mcp", "baseline.metadataEgress"),
        ("https://[fd00:ec2::254]/mcp", "baseline.metadataEgress"),
        ("https://127.0.0.1:9090/mcp", "baseline.remote"),
        ("https://[fe80::1]/mcp", "baseline.remote"),
        ("https://user:secret@mcp.tickets.example.com/mcp", "baseline.remote"),
        ("http://mcp.tickets.example.com/mcp", "baseline.remote"),
    ] {
        let mut bad = s.clone();
        bad.spec.remote.as_mut().unwrap().url = url.into();
        let v = mcpserver::review(&bad, &[]);
        assert!(v.has(rule, "spec.remote.url"), "{url}: {}", v.message());
    }
    let mut metadata_peer = s.clone();
    metadata_peer.spec.remote.as_mut().unwrap().peer.as_mut().unwrap().cidr =
        Some("169.254.169.254/32".into());
    assert!(!mcpserver::review(&metadata_peer, &[]).allowed());
}

#[test]
fn a_virtual_server_refuses_names_its_servers_would_share() {
    use palisade_admission::rules::mcpvirtualserver;
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/virtual.yaml");
    let vs: palisade_crds::MCPVirtualServer =
        serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let servers = vec![example("everything-http.yaml"), example("remote-https.yaml")];
    let v = mcpvirtualserver::review(&vs, Some(&servers), &[]);
    assert!(v.allowed(), "{}", v.message());
    // Both list a tool named echo: without prefixes, refused, naming both.
    let mut tickets = example("remote-https.yaml");
    tickets.spec.tools.push(palisade_core::spec::ToolPolicy {
        name: "echo".into(),
        ..serde_json::from_value(serde_json::json!({"name": "echo", "effect": "read"})).unwrap()
    });
    let servers = vec![example("everything-http.yaml"), tickets];
    let mut never = vs.clone();
    never.spec.naming.prefix = palisade_core::spec::PrefixMode::Never;
    never.spec.tools.clear();
    let v = mcpvirtualserver::review(&never, Some(&servers), &[]);
    assert!(v.has("virtual.nameConflict", "spec.naming.prefix"), "{}", v.message());
    assert!(
        v.message().contains("echo is listed by everything/echo and tickets/echo"),
        "{}",
        v.message()
    );
    let mut on_conflict = never.clone();
    on_conflict.spec.naming.prefix = palisade_core::spec::PrefixMode::OnConflict;
    assert!(mcpvirtualserver::review(&on_conflict, Some(&servers), &[]).allowed());
    // Too long with Refuse; announced with Shorten.
    let mut short = vs.clone();
    short.spec.naming.max_length = 16;
    short.spec.naming.long_names = palisade_core::spec::LongNames::Refuse;
    let v = mcpvirtualserver::review(&short, Some(&servers), &[]);
    assert!(v.has("virtual.nameLength", "spec.naming.maxLength"), "{}", v.message());
    short.spec.naming.long_names = palisade_core::spec::LongNames::Shorten;
    let v = mcpvirtualserver::review(&short, Some(&servers), &[]);
    assert!(!v.has("virtual.nameLength", "spec.naming.maxLength"));
    assert!(v.warnings.iter().any(|w| w.contains("cut to 16 characters")), "{:?}", v.warnings);
    // Two servers under one prefix; a server without OIDC.
    let mut same = vs.clone();
    same.spec.servers[1].prefix = Some("everything".into());
    assert!(mcpvirtualserver::review(&same, None, &[]).has("virtual.prefix", "spec.servers"));
    let mut no_oidc = example("everything-http.yaml");
    no_oidc.spec.auth.oidc = None;
    let v = mcpvirtualserver::review(&vs, Some(&[no_oidc]), &[]);
    assert!(v.has("virtual.members", "spec.servers"), "{}", v.message());
    // The gateway baseline holds for the virtual server's own settings too.
    let mut open = vs.clone();
    open.spec.auth.oidc.as_mut().unwrap().issuer = "http://login.example.com".into();
    assert!(!mcpvirtualserver::review(&open, None, &[]).allowed());
}
