//! Rules for `MCPServer`: the built-in baseline that no policy can loosen, then the rules of
//! every `MCPPolicy` that selects the namespace, each enforced on its own.

use std::collections::BTreeSet;

use ipnet::IpNet;
use palisade_api::mcppolicy::MCPPolicy;
use palisade_api::mcpserver::{EgressPort, KeylessIdentity, MCPServer, PortProtocol};
use palisade_api::quantity;
use palisade_core::image::ImageRef;
use palisade_core::net::{self, DeniedOverlap};
use palisade_core::policy::{ArgumentRule, FreeText, ToolEffect, UnlistedTools};
use palisade_core::{revisions, secrets};
use regex::Regex;

use crate::verdict::Verdict;

/// Well-known ports of protocols that tool contexts should not speak (exfiltration and
/// lateral movement): SMTP, FTP, Telnet, SMB/NetBIOS, RDP, IRC, BitTorrent.
pub const RISKY_PORTS: &[(u16, u16, &str)] = &[
    (20, 21, "FTP"),
    (23, 23, "Telnet"),
    (25, 25, "SMTP"),
    (137, 139, "NetBIOS"),
    (445, 445, "SMB"),
    (465, 465, "SMTPS"),
    (587, 587, "SMTP submission"),
    (2525, 2525, "SMTP"),
    (3389, 3389, "RDP"),
    (6660, 6669, "IRC"),
    (6697, 6697, "IRC"),
    (6881, 6889, "BitTorrent"),
];

/// Environment variables that inject code into every process (loader and runtime hooks).
const INJECTION_ENV: &[&str] = &[
    "LD_PRELOAD",
    "LD_AUDIT",
    "LD_LIBRARY_PATH",
    "DYLD_INSERT_LIBRARIES",
    "NODE_OPTIONS",
    "PYTHONSTARTUP",
    "PYTHONINSPECT",
    "JAVA_TOOL_OPTIONS",
    "PERL5OPT",
    "RUBYOPT",
    "BASH_ENV",
    "ENV",
];

/// Mount points that would expose or shadow the kernel, devices or Palisade's own files.
const FORBIDDEN_MOUNT_ROOTS: &[&str] =
    &["/proc", "/sys", "/dev", "/palisade", "/etc/palisade", "/var/run/secrets/kubernetes.io"];

fn risky_ports_in(p: &EgressPort) -> Vec<(u16, &'static str)> {
    let end = p.end_port.unwrap_or(p.port);
    RISKY_PORTS
        .iter()
        .filter(|(lo, hi, _)| p.port <= *hi && *lo <= end)
        .map(|(lo, hi, name)| (p.port.max(*lo).min(*hi), *name))
        .collect()
}

/// Fields that people try to set on an MCPServer to get host access; the strict parser refuses
/// any unknown field, and these get an explanation instead of "unknown field".
pub const SMUGGLED_FIELDS: &[&str] = &[
    "privileged",
    "hostNetwork",
    "hostPID",
    "hostIPC",
    "hostPath",
    "hostPort",
    "hostPorts",
    "securityContext",
    "podSecurityContext",
    "capabilities",
    "allowPrivilegeEscalation",
    "runAsRoot",
    "volumes",
    "volumeMounts",
    "podSpec",
    "podTemplate",
    "nodeName",
    "serviceAccountName",
    "automountServiceAccountToken",
    "sidecars",
    "initContainers",
];

pub fn normalize_abs_path(path: &str) -> Option<String> {
    if !path.starts_with('/') || path.contains('\0') || path.contains('\\') {
        return None;
    }
    let mut parts: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => return None,
            s => parts.push(s),
        }
    }
    Some(format!("/{}", parts.join("/")))
}

fn under(path: &str, root: &str) -> bool {
    path == root || path.starts_with(&format!("{root}/"))
}

/// The baseline every MCPServer must meet. `unrestricted_egress_allowed` and
/// `risky_port_allowed` say whether the selecting policies permit those exceptions.
pub fn baseline(
    server: &MCPServer,
    unrestricted_egress_allowed: bool,
    risky_port_allowed: &dyn Fn(u16) -> bool,
) -> Verdict {
    let mut v = Verdict::default();
    let spec = &server.spec;

    // Image: pinned by digest or an immutable-looking tag; never latest or untagged.
    match ImageRef::parse(&spec.image) {
        Err(e) => v.deny("baseline.image", "spec.image", format!("{e}")),
        Ok(r) => match (&r.tag, &r.digest) {
            (_, Some(_)) => {}
            (Some(t), None) if t == "latest" => v.deny(
                "baseline.image",
                "spec.image",
                "the latest tag is mutable; pin the image by digest (repo@sha256:...) or a version tag",
            ),
            (None, None) => v.deny(
                "baseline.image",
                "spec.image",
                "an untagged image means latest; pin it by digest (repo@sha256:...) or a version tag",
            ),
            (Some(_), None) => v.warn(format!(
                "spec.image {} is a tag: the operator resolves it to a digest once per spec change; pin the digest to make it reviewable",
                spec.image
            )),
        },
    }

    // Transport shape (also CEL rules; repeated so `palisade check` gives the same verdict offline).
    if spec.transport.is_http() && spec.port.is_none() {
        v.deny(
            "baseline.transport",
            "spec.port",
            "HTTP transports need spec.port, the port the server listens on inside the pod",
        );
    }
    if !spec.transport.is_http() {
        if spec.command.is_empty() {
            v.deny("baseline.transport", "spec.command", "stdio servers need spec.command: the bridge runs the server by argv, never via a shell or image entrypoint");
        }
        if spec.port.is_some() || spec.path.is_some() {
            v.deny(
                "baseline.transport",
                "spec.port",
                "stdio servers have no port or path; remove them",
            );
        }
    }
    if let Some(first) = spec.command.first()
        && ["sh", "bash", "/bin/sh", "/bin/bash", "/usr/bin/env", "ash", "zsh", "dash"]
            .contains(&first.as_str())
        && spec.command.iter().chain(&spec.args).any(|a| a == "-c")
    {
        v.deny(
            "baseline.noShell",
            "spec.command",
            "commands run without a shell; give the server's argv directly instead of sh -c",
        );
    }

    // Resources: CPU and memory limits are required; requests may not exceed limits.
    for res in ["cpu", "memory"] {
        if !spec.resources.limits.contains_key(res) {
            v.deny("baseline.resources", format!("spec.resources.limits.{res}"), format!("set a {res} limit (for example cpu: 500m, memory: 256Mi); unbounded servers can starve the node"));
        }
    }
    for (kind, map) in [("limits", &spec.resources.limits), ("requests", &spec.resources.requests)]
    {
        for (res, q) in map {
            if let Err(e) = quantity::parse_quantity(q) {
                v.deny("baseline.resources", format!("spec.resources.{kind}.{res}"), e.to_string());
            }
        }
    }
    for (res, req) in &spec.resources.requests {
        if let (Some(lim), Ok(r)) = (spec.resources.limits.get(res), quantity::parse_quantity(req))
            && quantity::parse_quantity(lim).is_ok_and(|l| r > l)
        {
            v.deny(
                "baseline.resources",
                format!("spec.resources.requests.{res}"),
                format!("request {} exceeds limit {}", req.0, lim.0),
            );
        }
    }
    for (i, s) in spec.scratch.iter().enumerate() {
        if let Err(e) = quantity::parse_quantity(&s.size_limit) {
            v.deny("baseline.resources", format!("spec.scratch[{i}].sizeLimit"), e.to_string());
        }
    }
    if spec.replicas == 0 {
        v.warn("spec.replicas is 0: the server is declared but not running");
    }
    if spec.run_as_user == Some(0) {
        v.deny(
            "baseline.nonRoot",
            "spec.runAsUser",
            "UID 0 is root; use a non-zero UID such as 65532",
        );
    }

    // Env: no credentials in plaintext, no code-injection hooks.
    for (i, e) in spec.env.iter().enumerate() {
        let field = format!("spec.env[{i}]");
        if INJECTION_ENV.contains(&e.name.as_str()) || e.name.starts_with("DYLD_") {
            v.deny(
                "baseline.envInjection",
                format!("{field}.name"),
                format!("{} injects code into the server process; remove it", e.name),
            );
        }
        if let Some(value) = &e.value {
            let by_name = secrets::name_looks_secret(&e.name) && !value.trim().is_empty();
            let by_value = secrets::value_looks_secret(value);
            if by_name || by_value.is_some() {
                let what = by_value.map(|k| format!(" ({})", k.as_str())).unwrap_or_default();
                v.deny("baseline.plaintextSecret", format!("{field}.value"), format!("{} holds what looks like a credential{what} in plaintext; store it in a Secret and use valueFrom.secretKeyRef or secretMounts", e.name));
            }
        }
    }
    let mut names = BTreeSet::new();
    for (i, e) in spec.env.iter().enumerate() {
        if !names.insert(e.name.as_str()) {
            v.deny(
                "baseline.duplicate",
                format!("spec.env[{i}].name"),
                format!("{} is set twice", e.name),
            );
        }
    }

    // Mounts: only declared scratch directories are writable; nothing shadows the kernel or Palisade.
    let mut mounts: Vec<(String, String)> = Vec::new();
    for (i, s) in spec.scratch.iter().enumerate() {
        mounts.push((format!("spec.scratch[{i}].path"), s.path.clone()));
    }
    for (i, s) in spec.secret_mounts.iter().enumerate() {
        mounts.push((format!("spec.secretMounts[{i}].mountPath"), s.mount_path.clone()));
    }
    let mut seen = BTreeSet::new();
    for (field, path) in &mounts {
        match normalize_abs_path(path) {
            None => v.deny("baseline.mountPath", field.clone(), format!("{path:?} must be an absolute path without .., backslashes or NUL")),
            Some(p) if p == "/" => v.deny("baseline.mountPath", field.clone(), "mounting over / would replace the read-only root filesystem; name a subdirectory such as /tmp"),
            Some(p) if FORBIDDEN_MOUNT_ROOTS.iter().any(|r| under(&p, r)) => v.deny("baseline.mountPath", field.clone(), format!("{p} is reserved for the kernel or for Palisade; choose another directory")),
            Some(p) => {
                if !seen.insert(p.clone()) {
                    v.deny("baseline.mountPath", field.clone(), format!("{p} is mounted twice"));
                }
            }
        }
    }

    // Protocol revisions.
    for (i, rev) in spec.protocol.versions.iter().enumerate() {
        if !revisions::is_known(rev) {
            v.deny(
                "baseline.protocolVersion",
                format!("spec.protocol.versions[{i}]"),
                format!("unknown MCP revision {rev:?}; supported: {}", revisions::KNOWN.join(", ")),
            );
        }
    }
    if spec.protocol.versions.is_empty() {
        v.deny(
            "baseline.protocolVersion",
            "spec.protocol.versions",
            format!("name at least one MCP revision, e.g. {}", revisions::LATEST),
        );
    }
    if let Some(up) = &spec.protocol.upstream_version
        && !revisions::is_known(up)
    {
        v.deny(
            "baseline.protocolVersion",
            "spec.protocol.upstreamVersion",
            format!("unknown MCP revision {up:?}; supported: {}", revisions::KNOWN.join(", ")),
        );
    }

    // Authentication.
    if let Some(oidc) = &spec.auth.oidc {
        if !oidc.issuer.starts_with("https://") {
            v.deny("baseline.auth", "spec.auth.oidc.issuer", "the issuer must be an https URL");
        }
        if let Some(j) = &oidc.jwks_uri
            && !j.starts_with("https://")
        {
            v.deny("baseline.auth", "spec.auth.oidc.jwksUri", "the JWKS URI must be https");
        }
        if oidc.audience.trim().is_empty() {
            v.deny("baseline.auth", "spec.auth.oidc.audience", "set the gateway's resource URI as audience; tokens for other audiences are refused");
        }
        if spec.egress.is_empty() {
            v.warn(format!("the gateway fetches signing keys from {}: allow it in spec.egress (host or CIDR, port 443), or every token will be refused", oidc.issuer));
        }
    }
    if spec.auth.oidc.is_none() && spec.auth.mtls.is_none() {
        v.deny(
            "baseline.auth",
            "spec.auth",
            "the gateway is reachable over the network: configure spec.auth.oidc or spec.auth.mtls",
        );
    }
    if spec.auth.mode == palisade_core::policy::AuthMode::AllOf
        && (spec.auth.oidc.is_none() || spec.auth.mtls.is_none())
    {
        v.deny("baseline.auth", "spec.auth.mode", "AllOf needs both oidc and mtls configured");
    }

    // Authorization and tools.
    let mut role_names = BTreeSet::new();
    for (i, r) in spec.authorization.roles.iter().enumerate() {
        if !role_names.insert(r.name.as_str()) {
            v.deny(
                "baseline.duplicate",
                format!("spec.authorization.roles[{i}].name"),
                format!("role {} is defined twice", r.name),
            );
        }
        for (j, s) in r.subjects.iter().enumerate() {
            if s.values.iter().any(|x| x.trim().is_empty()) {
                v.deny(
                    "baseline.authorization",
                    format!("spec.authorization.roles[{i}].subjects[{j}].values"),
                    "empty subject values would match missing claims; remove them",
                );
            }
        }
    }
    if spec.authorization.roles.is_empty() {
        v.warn(
            "spec.authorization.roles is empty: every request will be refused (deny by default)",
        );
    }
    let mut tool_names = BTreeSet::new();
    let mut needs_approver = false;
    for (i, t) in spec.tools.iter().enumerate() {
        let field = format!("spec.tools[{i}]");
        if !tool_names.insert(t.name.as_str()) {
            v.deny(
                "baseline.duplicate",
                format!("{field}.name"),
                format!("tool {} is listed twice", t.name),
            );
        }
        if t.effect == ToolEffect::Destructive && t.require_approval == Some(false) {
            v.deny(
                "baseline.destructiveApproval",
                format!("{field}.requireApproval"),
                format!(
                    "{} is destructive and must require approval; remove requireApproval: false",
                    t.name
                ),
            );
        }
        needs_approver |= t.approval_required();
        for (j, a) in t.arguments.iter().enumerate() {
            argument_rule(&mut v, a, &format!("{field}.arguments[{j}]"));
        }
    }
    if spec.tool_defaults.unlisted == UnlistedTools::RequireApproval {
        needs_approver = true;
    }
    if needs_approver && !spec.authorization.roles.iter().any(|r| r.approver) {
        v.warn("some tools require approval but no role has approver: true, so no call of them can ever run");
    }

    // Limits that contradict each other.
    let l = &spec.limits;
    if l.max_in_flight_per_session > l.max_in_flight {
        v.deny(
            "baseline.limits",
            "spec.limits.maxInFlightPerSession",
            "cannot exceed spec.limits.maxInFlight",
        );
    }

    // Audit cannot be switched off.
    if !spec.audit.enabled {
        v.deny(
            "baseline.audit",
            "spec.audit.enabled",
            "audit records of every call are mandatory; remove enabled: false",
        );
    }

    // Signature identities must be usable.
    if let Some(sig) = &spec.signature {
        for (i, k) in sig.keyless.iter().enumerate() {
            if let Some(re) = &k.subject_reg_exp
                && let Err(e) = Regex::new(re)
            {
                v.deny(
                    "baseline.signature",
                    format!("spec.signature.keyless[{i}].subjectRegExp"),
                    format!("not a valid regular expression: {e}"),
                );
            }
        }
    }

    // Network: egress allowlist and ingress peers.
    let denied = net::always_denied();
    for (i, rule) in spec.egress.iter().enumerate() {
        let field = format!("spec.egress[{i}]");
        if rule.cidr.is_some() == rule.host.is_some() {
            v.deny("baseline.egress", field.clone(), "set exactly one of cidr or host");
        }
        if let Some(cidr) = &rule.cidr {
            egress_cidr(
                &mut v,
                cidr,
                &format!("{field}.cidr"),
                &denied,
                unrestricted_egress_allowed,
            );
        }
        if let Some(host) = &rule.host {
            egress_host(&mut v, host, &format!("{field}.host"));
        }
        if rule.ports.is_empty() {
            v.deny(
                "baseline.egress",
                format!("{field}.ports"),
                "list the destination ports; any-port egress is refused",
            );
        }
        for (j, p) in rule.ports.iter().enumerate() {
            if p.end_port.is_some_and(|e| e < p.port) {
                v.deny(
                    "baseline.egress",
                    format!("{field}.ports[{j}].endPort"),
                    "endPort must not be below port",
                );
            }
            for (port, proto) in risky_ports_in(p) {
                if !risky_port_allowed(port) {
                    v.deny("baseline.riskyPort", format!("{field}.ports[{j}]"), format!("port {port} ({proto}) is blocked for MCP servers; an MCPPolicy must list it in egress.allowedRiskyPorts"));
                }
            }
            if p.protocol == PortProtocol::Udp && p.port == 53 {
                v.warn(format!("{field}: DNS to the cluster resolver is always allowed; direct DNS egress bypasses it"));
            }
        }
    }
    for (i, peer) in spec.ingress.iter().enumerate() {
        if let Some(cidr) = &peer.cidr {
            match net::parse_canonical_cidr(cidr) {
                Err(e) => v.deny("baseline.ingress", format!("spec.ingress[{i}].cidr"), e),
                Ok(n) => {
                    if net::denied_overlaps(&n, &denied)
                        .iter()
                        .any(|o| matches!(o, DeniedOverlap::Inside(_)))
                    {
                        v.deny(
                            "baseline.ingress",
                            format!("spec.ingress[{i}].cidr"),
                            "link-local and metadata addresses cannot be clients",
                        );
                    }
                }
            }
        }
    }
    if spec.ingress.is_empty() {
        v.warn("spec.ingress is empty: no client can reach the gateway until you allow peers");
    }
    v
}

fn egress_cidr(v: &mut Verdict, cidr: &str, field: &str, denied: &[IpNet], unrestricted_ok: bool) {
    let net = match net::parse_canonical_cidr(cidr) {
        Ok(n) => n,
        Err(e) => return v.deny("baseline.egress", field, e),
    };
    for overlap in net::denied_overlaps(&net, denied) {
        if let DeniedOverlap::Inside(d) = overlap {
            v.deny("baseline.metadataEgress", field, format!("{cidr} lies within {d} (cloud metadata / link-local), which is always denied; remove it"));
        }
    }
    if net::is_unrestricted(&net) {
        if !unrestricted_ok {
            v.deny("baseline.unrestrictedEgress", field, format!("{cidr} allows the whole internet; list the destinations the server needs, or have an MCPPolicy set egress.allowUnrestricted"));
        } else {
            v.warn(format!(
                "{field}: {cidr} is allowed by policy; metadata and link-local ranges stay excluded"
            ));
        }
    }
}

fn egress_host(v: &mut Verdict, host: &str, field: &str) {
    if host.parse::<std::net::IpAddr>().is_ok() {
        v.deny(
            "baseline.egress",
            field,
            "use cidr (with /32 or /128) for addresses; host is for DNS names",
        );
        return;
    }
    let bare = host.trim_start_matches("*.");
    if bare == "metadata.google.internal"
        || bare == "metadata"
        || bare.ends_with(".internal") && bare.starts_with("metadata")
    {
        v.deny("baseline.metadataEgress", field, "cloud metadata hosts are always denied");
    }
    if bare.ends_with(".svc") || bare.contains(".svc.") {
        v.warn(format!("{field}: in-cluster service names resolve to cluster IPs; use a cidr or ingress rules of the target"));
    }
}

fn argument_rule(v: &mut Verdict, a: &ArgumentRule, field: &str) {
    if a.name.starts_with('/') && a.name.contains("//") {
        v.deny(
            "baseline.toolArguments",
            format!("{field}.name"),
            "JSON pointer has an empty segment",
        );
    }
    if let Some(p) = &a.pattern
        && let Err(e) = Regex::new(p)
    {
        v.deny(
            "baseline.toolArguments",
            format!("{field}.pattern"),
            format!("not a valid regular expression: {e}"),
        );
    }
    for (i, root) in a.path_roots.iter().enumerate() {
        match normalize_abs_path(root) {
            Some(n) if n == *root || format!("{n}/") == *root => {}
            Some(n) => v.deny(
                "baseline.toolArguments",
                format!("{field}.pathRoots[{i}]"),
                format!("write the root in normal form: {n}"),
            ),
            None => v.deny(
                "baseline.toolArguments",
                format!("{field}.pathRoots[{i}]"),
                "roots must be absolute paths without .., backslashes or NUL",
            ),
        }
        if root == "/" {
            v.warn(format!("{field}.pathRoots[{i}]: / allows every path"));
        }
    }
    if let Some(url) = &a.url {
        for (i, s) in url.schemes.iter().enumerate() {
            match s.as_str() {
                "https" => {}
                "http" => {
                    v.warn(format!("{field}.url.schemes[{i}]: http sends data in clear text"))
                }
                other => v.deny(
                    "baseline.toolArguments",
                    format!("{field}.url.schemes[{i}]"),
                    format!("scheme {other} is not supported; use https or http"),
                ),
            }
        }
    }
    if let (Some(lo), Some(hi)) = (a.min_length, a.max_length)
        && lo > hi
    {
        v.deny(
            "baseline.toolArguments",
            format!("{field}.minLength"),
            "minLength exceeds maxLength",
        );
    }
    if let (Some(lo), Some(hi)) = (a.minimum, a.maximum)
        && lo > hi
    {
        v.deny("baseline.toolArguments", format!("{field}.minimum"), "minimum exceeds maximum");
    }
    if a.free_text == FreeText::Refuse
        && a.pattern.is_none()
        && a.one_of.is_empty()
        && a.path_roots.is_empty()
        && a.url.is_none()
    {
        v.deny(
            "baseline.toolArguments",
            format!("{field}.freeText"),
            "freeText: Refuse needs enum, pattern, pathRoots or url to say what is allowed",
        );
    }
}

/// Whether a keyless identity of the server is covered by a trusted one of the policy.
fn identity_trusted(id: &KeylessIdentity, trusted: &[KeylessIdentity]) -> bool {
    trusted.iter().any(|t| {
        t.issuer == id.issuer
            && match (&t.subject, &t.subject_reg_exp, &id.subject, &id.subject_reg_exp) {
                (Some(ts), _, Some(s), _) => ts == s,
                (_, Some(tre), Some(s), _) => {
                    Regex::new(&format!("^(?:{tre})$")).is_ok_and(|re| re.is_match(s))
                }
                (_, Some(tre), _, Some(re)) => tre == re,
                _ => false,
            }
    })
}

/// The rules of one policy (already known to select the server's namespace).
pub fn policy_rules(server: &MCPServer, policy: &MCPPolicy) -> Verdict {
    let mut v = Verdict::default();
    let spec = &server.spec;
    let p = &policy.spec;

    let image = ImageRef::parse(&spec.image).ok();
    if !p.images.allowed_registries.is_empty()
        && let Some(img) = &image
        && !p.images.allowed_registries.iter().any(|prefix| img.matches_prefix(prefix))
    {
        v.deny(
            "policy.registry",
            "spec.image",
            format!(
                "{} is not from an allowed registry; allowed: {}",
                img.name(),
                p.images.allowed_registries.join(", ")
            ),
        );
    }
    if p.images.require_digest && image.as_ref().is_some_and(|i| i.digest.is_none()) {
        v.deny("policy.digest", "spec.image", "this namespace requires images pinned by digest: use repo@sha256:<digest> (crane digest <image> prints it)");
    }

    match &spec.signature {
        None if p.signature.required => v.deny("policy.signature", "spec.signature", "images must be signed: name the cosign public key (keys[].secretRef) or keyless identity that signed it"),
        Some(sig) if p.signature.only_trusted => {
            for (i, id) in sig.keyless.iter().enumerate() {
                if !identity_trusted(id, &p.signature.trusted_identities) {
                    v.deny("policy.signature", format!("spec.signature.keyless[{i}]"), format!("identity {} / {} is not among the policy's trustedIdentities", id.issuer, id.subject.as_deref().or(id.subject_reg_exp.as_deref()).unwrap_or("?")));
                }
            }
        }
        _ => {}
    }
    // SBOM attestations are verified with the server's own keys; keyless cannot be checked.
    if p.supply_chain.require_sbom && spec.signature.as_ref().is_none_or(|s| s.keys.is_empty()) {
        v.deny("policy.sbom", "spec.signature.keys", "this namespace requires a signed SBOM: name the cosign public key (keys[].secretRef) that signed the image's SBOM attestation (cosign attest --type cyclonedx --key ...)");
    }

    if !p.allowed_transports.is_empty() && !p.allowed_transports.contains(&spec.transport) {
        let allowed: Vec<_> = p.allowed_transports.iter().map(|t| t.as_str()).collect();
        v.deny(
            "policy.transport",
            "spec.transport",
            format!(
                "{} is not allowed here; allowed: {}",
                spec.transport.as_str(),
                allowed.join(", ")
            ),
        );
    }
    if !p.allowed_protocol_versions.is_empty() {
        for (i, rev) in spec.protocol.versions.iter().enumerate() {
            if !p.allowed_protocol_versions.contains(rev) {
                v.deny(
                    "policy.protocolVersion",
                    format!("spec.protocol.versions[{i}]"),
                    format!(
                        "revision {rev} is not allowed here; allowed: {}",
                        p.allowed_protocol_versions.join(", ")
                    ),
                );
            }
        }
    }

    if let Some(oidc) = &spec.auth.oidc
        && !p.authentication.allowed_issuers.is_empty()
        && !p.authentication.allowed_issuers.contains(&oidc.issuer)
    {
        v.deny(
            "policy.issuer",
            "spec.auth.oidc.issuer",
            format!(
                "issuer {} is not trusted here; allowed: {}",
                oidc.issuer,
                p.authentication.allowed_issuers.join(", ")
            ),
        );
    }
    if p.authentication.require_mtls {
        if spec.auth.mtls.is_none() {
            v.deny(
                "policy.mtls",
                "spec.auth.mtls",
                "client certificates are required here: configure spec.auth.mtls",
            );
        } else if spec.auth.oidc.is_some()
            && spec.auth.mode != palisade_core::policy::AuthMode::AllOf
        {
            v.deny("policy.mtls", "spec.auth.mode", "client certificates are required here: set mode: AllOf so that a token alone is not enough");
        }
    }

    for (res, max) in &p.resources.max_limits {
        let Ok(max_v) = quantity::parse_quantity(max) else { continue };
        match spec.resources.limits.get(res) {
            None => v.deny(
                "policy.resources",
                format!("spec.resources.limits.{res}"),
                format!("set a {res} limit of at most {}", max.0),
            ),
            Some(q) => {
                if quantity::parse_quantity(q).is_ok_and(|x| x > max_v) {
                    v.deny(
                        "policy.resources",
                        format!("spec.resources.limits.{res}"),
                        format!("{} exceeds the maximum {} allowed here", q.0, max.0),
                    );
                }
            }
        }
    }
    if let Some(max) = p.resources.max_replicas
        && spec.replicas > max
    {
        v.deny(
            "policy.resources",
            "spec.replicas",
            format!("at most {max} replicas are allowed here"),
        );
    }

    let denied: Vec<IpNet> = p.egress.denied_cidrs.iter().filter_map(|c| c.parse().ok()).collect();
    for (i, rule) in spec.egress.iter().enumerate() {
        if let Some(Ok(net)) = rule.cidr.as_deref().map(net::parse_canonical_cidr) {
            for d in &denied {
                if d.contains(&net) || net.contains(d) {
                    v.deny("policy.deniedCidr", format!("spec.egress[{i}].cidr"), format!("overlaps {d}, which this cluster denies; allow a range that excludes it"));
                }
            }
        }
        if rule.host.is_some() && p.egress.deny_host_rules {
            v.deny(
                "policy.hostEgress",
                format!("spec.egress[{i}].host"),
                "this cluster's CNI cannot enforce DNS-name egress; use cidr rules",
            );
        }
    }

    for (i, t) in spec.tools.iter().enumerate() {
        if p.tools.require_approval_for.contains(&t.effect) && !t.approval_required() {
            v.deny(
                "policy.approval",
                format!("spec.tools[{i}].requireApproval"),
                format!(
                    "{} tools need approval here; remove requireApproval: false",
                    format!("{:?}", t.effect).to_lowercase()
                ),
            );
        }
    }
    if p.tools.require_listed_tools && spec.tool_defaults.unlisted == UnlistedTools::AllowAsRead {
        v.deny(
            "policy.listedTools",
            "spec.toolDefaults.unlisted",
            "every tool must be listed here: use Deny or RequireApproval",
        );
    }
    v
}

/// Whether every selecting policy (and at least one) permits an exception.
pub fn all_permit(policies: &[&MCPPolicy], permits: impl Fn(&MCPPolicy) -> bool) -> bool {
    !policies.is_empty() && policies.iter().all(|p| permits(p))
}

/// The full review: baseline plus every selecting policy.
pub fn review(server: &MCPServer, policies: &[&MCPPolicy]) -> Verdict {
    let unrestricted = all_permit(policies, |p| p.spec.egress.allow_unrestricted);
    let risky =
        |port: u16| all_permit(policies, |p| p.spec.egress.allowed_risky_ports.contains(&port));
    let mut v = baseline(server, unrestricted, &risky);
    for p in policies {
        let name = p.metadata.name.clone().unwrap_or_default();
        v.merge_from_policy(policy_rules(server, p), &name);
    }
    v
}
