//! Validation of `MCPPolicy` objects themselves: malformed values and contradictions.

use std::collections::BTreeMap;

use kube::core::Selector;
use palisade_core::spec::ToolEffect;
use palisade_core::{net, revisions};
use palisade_crds::mcppolicy::MCPPolicy;
use palisade_crds::quantity;
use regex::Regex;

use crate::verdict::Verdict;

/// Whether `policy` selects a namespace with `labels`. `None` labels (offline checks, where
/// namespaces are unknown) select every policy.
pub fn selects(policy: &MCPPolicy, labels: Option<&BTreeMap<String, String>>) -> bool {
    use kube::core::SelectorExt;
    let (Some(sel), Some(labels)) = (&policy.spec.namespace_selector, labels) else {
        return true;
    };
    match Selector::try_from(sel.clone()) {
        Ok(s) => s.matches(labels),
        // An invalid selector is refused at admission; if one exists anyway, fail closed.
        Err(_) => true,
    }
}

pub fn review_policy(policy: &MCPPolicy) -> Verdict {
    let mut v = Verdict::default();
    let p = &policy.spec;

    if let Some(sel) = &p.namespace_selector
        && let Err(e) = Selector::try_from(sel.clone())
    {
        v.deny("policy.selector", "spec.namespaceSelector", format!("invalid selector: {e}"));
    }

    for (i, r) in p.images.allowed_registries.iter().enumerate() {
        if r.contains("://") || r.contains(char::is_whitespace) || r.is_empty() {
            v.deny(
                "policy.valid",
                format!("spec.images.allowedRegistries[{i}]"),
                "write a reference prefix such as ghcr.io/acme/, without a scheme",
            );
        }
    }

    for (i, key) in p.signature.trusted_keys.iter().enumerate() {
        let k = key.trim();
        if !(k.starts_with("-----BEGIN PUBLIC KEY-----") && k.ends_with("-----END PUBLIC KEY-----"))
        {
            v.deny("policy.valid", format!("spec.signature.trustedKeys[{i}]"), "expected a PEM public key (-----BEGIN PUBLIC KEY----- ... -----END PUBLIC KEY-----), as `cosign public-key` prints it");
        }
    }
    for (i, id) in p.signature.trusted_identities.iter().enumerate() {
        if id.subject.is_some() == id.subject_reg_exp.is_some() {
            v.deny(
                "policy.valid",
                format!("spec.signature.trustedIdentities[{i}]"),
                "set exactly one of subject or subjectRegExp",
            );
        }
        if let Some(re) = &id.subject_reg_exp
            && let Err(e) = Regex::new(re)
        {
            v.deny(
                "policy.valid",
                format!("spec.signature.trustedIdentities[{i}].subjectRegExp"),
                format!("not a valid regular expression: {e}"),
            );
        }
    }
    if p.signature.only_trusted
        && p.signature.trusted_identities.is_empty()
        && p.signature.trusted_keys.is_empty()
    {
        v.deny(
            "policy.contradiction",
            "spec.signature.onlyTrusted",
            "onlyTrusted without trustedKeys or trustedIdentities would refuse every signed server",
        );
    }

    for (i, rev) in p.allowed_protocol_versions.iter().enumerate() {
        if !revisions::is_known(rev) {
            v.deny(
                "policy.valid",
                format!("spec.allowedProtocolVersions[{i}]"),
                format!("unknown MCP revision {rev:?}; supported: {}", revisions::KNOWN.join(", ")),
            );
        }
    }

    for (i, iss) in p.authentication.allowed_issuers.iter().enumerate() {
        if !iss.starts_with("https://") {
            v.deny(
                "policy.valid",
                format!("spec.authentication.allowedIssuers[{i}]"),
                "issuers are https URLs",
            );
        }
    }

    for (res, q) in &p.resources.max_limits {
        if let Err(e) = quantity::parse_quantity(q) {
            v.deny("policy.valid", format!("spec.resources.maxLimits.{res}"), e.to_string());
        }
    }

    for (i, c) in p.egress.denied_cidrs.iter().enumerate() {
        match net::parse_canonical_cidr(c) {
            Err(e) => v.deny("policy.valid", format!("spec.egress.deniedCidrs[{i}]"), e),
            Ok(n) => {
                if n.prefix_len() == 0 && p.egress.allow_unrestricted {
                    v.deny("policy.contradiction", format!("spec.egress.deniedCidrs[{i}]"), "denies everything while allowUnrestricted permits everything; drop one of them");
                }
            }
        }
    }
    for (i, host) in p.egress.allowed_internal_hosts.iter().enumerate() {
        if net::internal_name_reason(&host.to_ascii_lowercase()).is_none() {
            v.warn(format!("spec.egress.allowedInternalHosts[{i}]: {host} is an ordinary public name; listing it has no effect"));
        }
    }
    for (i, port) in p.egress.allowed_risky_ports.iter().enumerate() {
        if !crate::rules::mcpserver::RISKY_PORTS.iter().any(|(lo, hi, _)| lo <= port && port <= hi)
        {
            v.warn(format!("spec.egress.allowedRiskyPorts[{i}]: port {port} is not blocked by default; listing it has no effect"));
        }
    }
    if p.tools.require_approval_for.contains(&ToolEffect::Read) {
        v.warn("spec.tools.requireApprovalFor contains read: every tool call will need approval");
    }
    v
}
