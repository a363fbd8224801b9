//! `MCPPolicy`: cluster-wide guardrails that the admission webhook enforces on every
//! `MCPServer` in the namespaces a policy selects. Several policies may select one namespace;
//! each is enforced on its own, so the strictest wins. No policy can loosen the built-in
//! baseline (metadata egress, privileged settings, mutable tags, missing limits).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::{CustomResource, KubeSchema};
use palisade_core::spec::ToolEffect;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::mcpserver::{KeylessIdentity, Transport};

/// Image provenance rules.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImagePolicy {
    /// Image reference prefixes that are allowed, e.g. `ghcr.io/acme/` or `registry.internal:5000/`.
    /// Empty: any registry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 512)))]
    pub allowed_registries: Vec<String>,
    /// Images must be pinned by digest in the spec (tags are otherwise resolved by the operator).
    #[serde(default)]
    pub require_digest: bool,
}

/// Signature requirements.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SignaturePolicy {
    /// Every MCPServer must declare `spec.signature`.
    #[serde(default)]
    pub required: bool,
    /// PEM public keys (cosign) that the operator verifies images with, in addition to (and,
    /// when `onlyTrusted`, instead of) the keys the MCPServer names. Public keys are not secret,
    /// so they are inline. They are also the trust root that lets a server that names only
    /// keyless identities run where signatures are required.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(max = 8192)))]
    pub trusted_keys: Vec<String>,
    /// Keyless identities that are trusted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub trusted_identities: Vec<KeylessIdentity>,
    /// Only the policy's trust counts: the operator verifies with `trustedKeys` and ignores the
    /// keys an MCPServer names, and keyless identities in MCPServers must be among
    /// `trustedIdentities` (same issuer, and a subject the trusted entry matches).
    #[serde(default)]
    pub only_trusted: bool,
}

/// Network guardrails.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EgressPolicy {
    /// CIDRs that no MCPServer may allow (in addition to metadata and link-local ranges, which
    /// are always denied). An allowed CIDR that overlaps one of these is refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128))]
    pub denied_cidrs: Vec<String>,
    /// Permit `0.0.0.0/0` and `::/0` (metadata and link-local stay excluded).
    #[serde(default)]
    pub allow_unrestricted: bool,
    /// Ports normally refused for tools (SMTP, FTP, Telnet, SMB, IRC, BitTorrent) that this
    /// policy permits.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(range(min = 1, max = 65535)))]
    pub allowed_risky_ports: Vec<u16>,
    /// Refuse DNS-name egress rules (for clusters whose CNI cannot enforce them).
    #[serde(default)]
    pub deny_host_rules: bool,
    /// DNS names that may resolve inside the cluster or to private addresses (internal zones,
    /// single-label names, wildcard-DNS services, names that spell an address) and that
    /// MCPServers may still name in `egress[].host`, exactly as written there (`*.corp.example`
    /// included). Every policy selecting the namespace must list the name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128), inner(length(min = 1, max = 253)))]
    pub allowed_internal_hosts: Vec<String>,
}

/// Audit guardrails.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuditPolicy {
    /// Every MCPServer must name `audit.signingKeySecretRef`, so that its checkpoints are signed
    /// and the hash chain cannot be recomputed by whoever can edit the log.
    #[serde(default)]
    pub require_signing_key: bool,
}

/// Authentication guardrails.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthenticationPolicy {
    /// OIDC issuers that MCPServers may trust. Empty: any `https` issuer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub allowed_issuers: Vec<String>,
    /// Every MCPServer must require client certificates (`mtls`, with `mode: AllOf` when OIDC is
    /// also configured).
    #[serde(default)]
    pub require_mtls: bool,
}

/// Resource ceilings.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourcePolicy {
    /// Largest `limits` an MCPServer may set, per resource name (`cpu`, `memory`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub max_limits: BTreeMap<String, Quantity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub max_replicas: Option<i32>,
}

/// Tool guardrails.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ToolGuardrails {
    /// Tool effects that must require approval (destructive always does).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 3))]
    pub require_approval_for: Vec<ToolEffect>,
    /// Forbid `toolDefaults.unlisted: AllowAsRead`.
    #[serde(default)]
    pub require_listed_tools: bool,
}

/// Software bills of materials and the vulnerability watch.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SupplyChainPolicy {
    /// Every MCPServer image must carry an SBOM attestation for its digest (CycloneDX or SPDX
    /// JSON, as `cosign attest --type cyclonedx|spdxjson` makes) signed by a key in its
    /// `spec.signature.keys`. Without one the server does not roll out.
    #[serde(default)]
    pub require_sbom: bool,
    /// Known-vulnerable components (from a CVE feed). A server whose SBOM lists an affected
    /// version is stopped (scaled to zero) until the image or the advisory changes. Servers
    /// without an SBOM are checked only when `requireSbom` is set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 2048))]
    pub advisories: Vec<Advisory>,
}

/// One advisory: a package and the versions of it that are affected.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("(has(self.versions) ? size(self.versions) : 0) + (has(self.ranges) ? size(self.ranges) : 0) > 0").message("list affected versions or ranges"))]
pub struct Advisory {
    /// The advisory's identifier, e.g. `CVE-2025-66414` or `GHSA-w48q-cv73-mx4w`.
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9._:-]*$"))]
    pub id: String,
    /// The package URL without a version, e.g. `pkg:npm/%40modelcontextprotocol/sdk` or
    /// `pkg:pypi/mcp`. Compared with the SBOM's purls, ignoring their version, qualifiers and
    /// subpath.
    #[schemars(length(min = 5, max = 512), regex(pattern = r"^pkg:[a-z0-9.+-]+/[^@?#]+$"))]
    pub package: String,
    /// Affected versions, exactly as the SBOM spells them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(min = 1, max = 128)))]
    pub versions: Vec<String>,
    /// Affected ranges, compared as dotted numeric versions (`1.10.0` > `1.9.2`; a
    /// pre-release such as `1.2.0-rc.1` sorts before `1.2.0`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub ranges: Vec<VersionRange>,
}

/// `introduced <= version < fixed` (or `<= lastAffected`), as OSV ranges; a missing bound is
/// open.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("!(has(self.fixed) && has(self.lastAffected))").message("set fixed or lastAffected, not both"))]
pub struct VersionRange {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub introduced: Option<String>,
    /// The first version without the flaw (exclusive bound).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub fixed: Option<String>,
    /// The last version with the flaw (inclusive bound), when no fix is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub last_affected: Option<String>,
}

/// Organisation guardrails for MCP servers.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "palisade.dev",
    version = "v1alpha1",
    kind = "MCPPolicy",
    doc = "Cluster-wide guardrails for MCP servers in the namespaces it selects.",
    plural = "mcppolicies",
    singular = "mcppolicy",
    shortname = "mcpp",
    category = "palisade",
    derive = "PartialEq",
    derive = "Default",
    cel,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MCPPolicySpec {
    /// Namespaces this policy applies to. Absent: every namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    #[serde(default)]
    pub images: ImagePolicy,
    #[serde(default)]
    pub signature: SignaturePolicy,
    /// Allowed transports. Empty: all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 3))]
    pub allowed_transports: Vec<Transport>,
    /// Allowed MCP revisions. Empty: every revision Palisade knows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub allowed_protocol_versions: Vec<String>,
    #[serde(default)]
    pub authentication: AuthenticationPolicy,
    #[serde(default)]
    pub resources: ResourcePolicy,
    #[serde(default)]
    pub egress: EgressPolicy,
    #[serde(default)]
    pub tools: ToolGuardrails,
    #[serde(default)]
    pub supply_chain: SupplyChainPolicy,
    #[serde(default)]
    pub audit: AuditPolicy,
    #[serde(default)]
    pub remote: RemotePolicy,
}

/// Remote MCP servers (`MCPServer.spec.remote`): Palisade proxies to them but runs, pins and
/// verifies no image of theirs.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RemotePolicy {
    /// Hosts remote servers may be at: exact (`mcp.example.com`) or one wildcard label
    /// (`*.example.com`). Empty: any host, except where the policy requires signed images
    /// (then no remote server, since there is no image to verify, until the host is listed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128), inner(length(min = 1, max = 253)))]
    pub allowed_hosts: Vec<String>,
}

impl RemotePolicy {
    /// Whether `host` (lower case) is among the allowed hosts.
    pub fn lists(&self, host: &str) -> bool {
        self.allowed_hosts.iter().any(|h| {
            let h = h.to_ascii_lowercase();
            match h.strip_prefix("*.") {
                Some(zone) => host
                    .strip_suffix(zone)
                    .and_then(|l| l.strip_suffix('.'))
                    .is_some_and(|label| !label.is_empty() && !label.contains('.')),
                None => h == host,
            }
        })
    }
}
