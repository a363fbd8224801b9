//! Rules for `MCPServer`: the built-in baseline that no policy can loosen, then the rules of
//! every `MCPPolicy` that selects the namespace, each enforced on its own.

use std::collections::BTreeSet;

use ipnet::IpNet;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use palisade_core::config::{parse_remote_url, parse_store_url};
use palisade_core::image::ImageRef;
use palisade_core::net::{self, DeniedOverlap};
use palisade_core::spec::{ArgumentRule, FreeText, ToolEffect, UnlistedTools};
use palisade_core::{paths, revisions, secrets};
use palisade_crds::mcppolicy::{MCPPolicy, MCPPolicySpec};
use palisade_crds::mcpserver::{
    EgressPort, KeylessIdentity, MCPServer, MCPServerSpec, PortProtocol, Resources, Transport,
};
use palisade_crds::quantity;
use regex::Regex;

use crate::rules::{argv, trust};
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

/// Environment variables that inject code into a process or change what it loads: dynamic
/// loader hooks, runtime start-up hooks (Node, Python, Java, .NET, Perl, Ruby, PHP, Lua, R,
/// Tcl), shell start-up files, glibc module and locale paths. Checked by word-insensitive
/// exact name, plus the prefixes in [`INJECTION_PREFIXES`].
pub const INJECTION_ENV: &[&str] = &[
    "LD_PRELOAD",
    "LD_AUDIT",
    "LD_LIBRARY_PATH",
    "LD_ORIGIN_PATH",
    "LD_PROFILE",
    "LD_DEBUG_OUTPUT",
    "GCONV_PATH",
    "GLIBC_TUNABLES",
    "LOCPATH",
    "NLSPATH",
    "HOSTALIASES",
    "RESOLV_HOST_CONF",
    "MALLOC_CHECK_",
    "NODE_OPTIONS",
    "NODE_PATH",
    "NODE_REPL_EXTERNAL_MODULE",
    "NPM_CONFIG_NODE_OPTIONS",
    "PYTHONSTARTUP",
    "PYTHONINSPECT",
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONUSERBASE",
    "PYTHONWARNINGS",
    "PYTHONBREAKPOINT",
    "PYTHONEXECUTABLE",
    "JAVA_TOOL_OPTIONS",
    "_JAVA_OPTIONS",
    "JDK_JAVA_OPTIONS",
    "JAVA_OPTIONS",
    "CLASSPATH",
    "DOTNET_STARTUP_HOOKS",
    "DOTNET_ADDITIONAL_DEPS",
    "DOTNET_SHARED_STORE",
    "CORECLR_ENABLE_PROFILING",
    "CORECLR_PROFILER",
    "CORECLR_PROFILER_PATH",
    "COR_ENABLE_PROFILING",
    "COR_PROFILER",
    "COR_PROFILER_PATH",
    "PERL5OPT",
    "PERL5LIB",
    "PERLLIB",
    "PERL5DB",
    "RUBYOPT",
    "RUBYLIB",
    "PHPRC",
    "PHP_INI_SCAN_DIR",
    "LUA_INIT",
    "LUA_PATH",
    "LUA_CPATH",
    "R_PROFILE",
    "R_PROFILE_USER",
    "TCLLIBPATH",
    "BASH_ENV",
    "ENV",
    "ZDOTDIR",
    "PROMPT_COMMAND",
    "PS4",
    "SHELLOPTS",
    "BASHOPTS",
    "IFS",
    "GIT_SSH_COMMAND",
    "GIT_EXTERNAL_DIFF",
    "GIT_EXEC_PATH",
    "GIT_CONFIG_GLOBAL",
    "GIT_CONFIG_PARAMETERS",
    "GIT_ASKPASS",
    "SSH_ASKPASS",
    "EDITOR",
    "VISUAL",
    "PAGER",
    "LESSOPEN",
    "LESSCLOSE",
];

/// Name prefixes of injection variables (`LD_*`, `DYLD_*` on macOS images, `BASH_FUNC_*`
/// exported shell functions).
pub const INJECTION_PREFIXES: &[&str] = &["LD_", "DYLD_", "BASH_FUNC_"];

/// Whether an environment variable name injects code or changes what a process loads.
pub fn injects_code(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    INJECTION_ENV.contains(&upper.as_str())
        || INJECTION_PREFIXES.iter().any(|p| upper.starts_with(p))
}

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

/// What the selecting policies permit beyond the baseline. An exception holds only when every
/// selecting policy (and at least one) grants it, so the strictest policy wins.
pub struct Allowances<'a> {
    policies: &'a [&'a MCPPolicy],
}

impl<'a> Allowances<'a> {
    pub fn new(policies: &'a [&'a MCPPolicy]) -> Self {
        Allowances { policies }
    }

    fn all(&self, permits: impl Fn(&MCPPolicy) -> bool) -> bool {
        all_permit(self.policies, permits)
    }

    pub fn unrestricted_egress(&self) -> bool {
        self.all(|p| p.spec.egress.allow_unrestricted)
    }

    pub fn risky_port(&self, port: u16) -> bool {
        self.all(|p| p.spec.egress.allowed_risky_ports.contains(&port))
    }

    pub fn internal_host(&self, host: &str) -> bool {
        self.all(|p| p.spec.egress.allowed_internal_hosts.iter().any(|h| h == host))
    }

    pub fn policies(&self) -> &[&MCPPolicy] {
        self.policies
    }
}

/// The baseline every MCPServer must meet, whatever the policies say (they can only grant the
/// exceptions in [`Allowances`]).
pub fn baseline(server: &MCPServer, allow: &Allowances) -> Verdict {
    let mut v = Verdict::default();
    let spec = &server.spec;
    image(&mut v, spec);
    remote(&mut v, spec, allow);
    transport(&mut v, spec);
    command(&mut v, spec);
    resources(&mut v, spec);
    identity(&mut v, spec);
    env(&mut v, spec);
    mounts(&mut v, spec);
    upstream_auth(&mut v, spec);
    signature(&mut v, server, allow);
    v.merge(gateway_baseline(spec, allow));
    v
}

/// The baseline of what a gateway enforces, whatever is behind it (a server, or the servers of
/// a virtual server, whose settings are checked in the shape of a server's).
pub fn gateway_baseline(spec: &MCPServerSpec, allow: &Allowances) -> Verdict {
    let mut v = Verdict::default();
    protocol(&mut v, spec);
    authentication(&mut v, spec);
    authorization(&mut v, spec);
    tools(&mut v, spec);
    limits(&mut v, spec);
    audit(&mut v, spec);
    egress(&mut v, spec, allow);
    ingress(&mut v, spec);
    shared_state(&mut v, spec);
    if let Some(gw) = &spec.gateway.resources {
        container_resources(&mut v, gw, "spec.gateway.resources", "the gateway");
    }
    v
}

/// Replicas and the state they share: an approval given through one replica must be known to
/// the replica that redeems it, so approval-gated tools with more than one replica need a
/// shared store; the store must be reachable only with a password and named exactly.
fn shared_state(v: &mut Verdict, spec: &MCPServerSpec) {
    let gated = spec.tools.iter().any(|t| t.approval_required())
        || spec.tool_defaults.unlisted == UnlistedTools::RequireApproval;
    let Some(store) = &spec.gateway.state else {
        if spec.replicas > 1 && gated {
            v.deny(
                "baseline.sharedState",
                "spec.gateway.state",
                format!(
                    "{} replicas with approval-gated tools: an approval made through one replica is unknown to the others; set spec.gateway.state (a Redis-protocol store the replicas share) or use replicas: 1",
                    spec.replicas
                ),
            );
        } else if spec.replicas > 1 {
            v.warn(format!(
                "{} replicas without spec.gateway.state: rate limits and budgets hold per replica (so up to {}x the configured values) and a session-era client must keep reaching the same replica",
                spec.replicas, spec.replicas
            ));
        }
        return;
    };
    match parse_store_url(&store.url) {
        Err(e) => v.deny("baseline.sharedState", "spec.gateway.state.url", e),
        Ok(u) if u.has_password => v.deny(
            "baseline.sharedState",
            "spec.gateway.state.url",
            "the URL carries a password; move it to a Secret named by passwordSecretRef",
        ),
        Ok(u) if !u.tls => v.warn(
            "spec.gateway.state.url is redis:// (plain text): approvals and session records cross the network unencrypted; prefer rediss://",
        ),
        Ok(_) => {}
    }
    if let Some(cidr) = &store.peer.cidr {
        let field = "spec.gateway.state.peer.cidr";
        let denied = net::always_denied_everywhere();
        if let Some(n) = egress_cidr(v, cidr, field, &denied) {
            let narrow = if n.addr().is_ipv4() { 24 } else { 64 };
            if n.prefix_len() < narrow {
                v.deny(
                    "baseline.sharedState",
                    field,
                    format!("{cidr} is wider than a store needs; name its addresses (/{narrow} or narrower)"),
                );
            }
        }
    }
}

/// Image: pinned by digest or an immutable-looking tag; never latest or untagged. Exactly one
/// of an image (a server Palisade runs) or a remote server.
fn image(v: &mut Verdict, spec: &MCPServerSpec) {
    let image = match (&spec.image, &spec.remote) {
        (Some(image), None) => image,
        (None, Some(_)) => return,
        (Some(_), Some(_)) => {
            return v.deny("baseline.image", "spec.image", "set exactly one of spec.image (a server Palisade runs) or spec.remote (a server elsewhere that the gateway proxies to)");
        }
        (None, None) => {
            return v.deny(
                "baseline.image",
                "spec.image",
                "name the server's image (or spec.remote for a server Palisade does not run)",
            );
        }
    };
    match ImageRef::parse(image) {
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
                "spec.image {image} is a tag: the operator resolves it to a digest once per spec change; pin the digest to make it reviewable",
            )),
        },
    }
}

/// A remote server: an `https` URL without credentials, at an address the gateway may reach,
/// no workload settings (there is no container), and an egress rule NetworkPolicy can state.
fn remote(v: &mut Verdict, spec: &MCPServerSpec, allow: &Allowances) {
    let Some(r) = &spec.remote else { return };
    if !spec.transport.is_http() {
        v.deny(
            "baseline.remote",
            "spec.transport",
            "a remote server speaks streamable-http or sse",
        );
    }
    let workload: [(&str, bool); 8] = [
        ("command", !spec.command.is_empty()),
        ("args", !spec.args.is_empty()),
        ("port", spec.port.is_some()),
        ("path", spec.path.is_some()),
        ("env", !spec.env.is_empty()),
        ("secretMounts", !spec.secret_mounts.is_empty()),
        ("runAsUser", spec.run_as_user.is_some()),
        ("signature", spec.signature.is_some()),
    ];
    for (field, set) in workload {
        if set {
            v.deny("baseline.remote", format!("spec.{field}"), format!("a remote server runs no container here: remove spec.{field} (the URL in spec.remote says where the server is)"));
        }
    }
    if !spec.resources.limits.is_empty() || !spec.resources.requests.is_empty() {
        v.deny("baseline.remote", "spec.resources", "a remote server runs no container here: remove spec.resources (the gateway's are spec.gateway.resources)");
    }
    let field = "spec.remote.url";
    let url = match parse_remote_url(&r.url) {
        Ok(u) => u,
        Err(e) => return v.deny("baseline.remote", field, format!("the URL {e}")),
    };
    match url.address {
        Some(ip) => {
            let class = net::classify(ip);
            if matches!(
                class,
                net::AddressClass::Metadata
                    | net::AddressClass::LinkLocal
                    | net::AddressClass::Loopback
                    | net::AddressClass::Unspecified
                    | net::AddressClass::Multicast
                    | net::AddressClass::Broadcast
            ) {
                let rule = if class == net::AddressClass::Metadata {
                    "baseline.metadataEgress"
                } else {
                    "baseline.remote"
                };
                v.deny(rule, field, format!("{ip} is a {} address; a remote server is a host the gateway's pod reaches over the network", class.as_str()));
            }
        }
        // With a peer, NetworkPolicy bounds where the name may lead, so an internal name
        // (a Service in another namespace) is fine; without one it is judged as egress[].host.
        None if r.peer.is_some() => {
            let bare = url.host.as_str();
            if bare == "metadata.google.internal" || bare == "metadata" {
                v.deny("baseline.metadataEgress", field, "cloud metadata hosts are always denied");
            }
        }
        None => {
            egress_host(v, &url.host, field, allow);
            v.warn(format!("spec.remote.url names {}: NetworkPolicy cannot name hosts, so only a CNI with FQDN policies (the operator's --fqdn-policy cilium) lets the gateway reach it; elsewhere set spec.remote.peer (the server's CIDR, or its pods and namespace)", url.host));
        }
    }
    if let Some(cidr) = r.peer.as_ref().and_then(|p| p.cidr.as_ref()) {
        egress_cidr(v, cidr, "spec.remote.peer.cidr", &net::always_denied_everywhere());
    }
}

/// Transport shape (also CEL rules; repeated so `palisade check` gives the same verdict offline).
fn transport(v: &mut Verdict, spec: &MCPServerSpec) {
    if spec.is_remote() {
        return;
    }
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
}

/// The argv: no shell (however it is wrapped), no credentials in plaintext.
fn command(v: &mut Verdict, spec: &MCPServerSpec) {
    let argv: Vec<String> = spec.command.iter().chain(&spec.args).cloned().collect();
    argv_rules(v, &argv, spec.command.len(), "spec.command", "spec.args");
}

/// Shell use and plaintext credentials in an argv made of `command` then `args` (the first
/// `split` entries are the command). Shared with workload admission.
pub fn argv_rules(v: &mut Verdict, argv: &[String], split: usize, cmd: &str, args: &str) {
    let at = |i: usize| {
        if i < split { format!("{cmd}[{i}]") } else { format!("{args}[{}]", i - split) }
    };
    if let Some(why) = argv::shell_use(argv) {
        let field = if split > 0 { cmd.to_string() } else { args.to_string() };
        v.deny(
            "baseline.noShell",
            field,
            format!("commands run without a shell: {why}; give the server's own argv"),
        );
    }
    for i in 0..argv.len() {
        if let Some(why) = secrets::argument_credential(argv, i) {
            v.deny("baseline.plaintextSecret", at(i), format!("{why} is a credential in plaintext (visible in the pod spec and process list); pass it in a Secret through valueFrom.secretKeyRef or secretMounts"));
        }
    }
}

/// A quantity that is a usable limit: parseable and above zero (zero means "no limit" to
/// Kubernetes).
fn positive_limit(v: &mut Verdict, field: String, q: &Quantity) {
    match quantity::parse_quantity(q) {
        Err(e) => v.deny("baseline.resources", field, e.to_string()),
        Ok(x) if x <= 0.0 => v.deny(
            "baseline.resources",
            field,
            format!("{} is not a limit (zero or less means unlimited); set a positive value", q.0),
        ),
        Ok(_) => {}
    }
}

/// CPU and memory limits of one container's resources, requests not above limits.
fn container_resources(v: &mut Verdict, r: &Resources, prefix: &str, what: &str) {
    for res in ["cpu", "memory"] {
        if !r.limits.contains_key(res) {
            v.deny("baseline.resources", format!("{prefix}.limits.{res}"), format!("set a {res} limit for {what} (for example cpu: 500m, memory: 256Mi); unbounded containers can starve the node"));
        }
    }
    for (res, q) in &r.limits {
        positive_limit(v, format!("{prefix}.limits.{res}"), q);
    }
    for (res, q) in &r.requests {
        match quantity::parse_quantity(q) {
            Err(e) => {
                v.deny("baseline.resources", format!("{prefix}.requests.{res}"), e.to_string())
            }
            Ok(x) if x < 0.0 => v.deny(
                "baseline.resources",
                format!("{prefix}.requests.{res}"),
                "requests cannot be negative",
            ),
            Ok(req) => {
                if let Some(lim) = r.limits.get(res)
                    && quantity::parse_quantity(lim).is_ok_and(|l| req > l)
                {
                    v.deny(
                        "baseline.resources",
                        format!("{prefix}.requests.{res}"),
                        format!("request {} exceeds limit {}", q.0, lim.0),
                    );
                }
            }
        }
    }
}

/// Resources: CPU and memory limits are required for the server (and for the gateway when the
/// spec sets them); scratch sizes are quantities.
fn resources(v: &mut Verdict, spec: &MCPServerSpec) {
    if !spec.is_remote() {
        container_resources(v, &spec.resources, "spec.resources", "the server");
    }
    for (i, s) in spec.scratch.iter().enumerate() {
        positive_limit(v, format!("spec.scratch[{i}].sizeLimit"), &s.size_limit);
    }
    if spec.replicas == 0 {
        v.warn("spec.replicas is 0: the server is declared but not running");
    }
}

/// The server's UID: not root, and not the gateway's (so the server cannot read the gateway's
/// files or signal it).
fn identity(v: &mut Verdict, spec: &MCPServerSpec) {
    match spec.run_as_user {
        Some(0) => v.deny(
            "baseline.nonRoot",
            "spec.runAsUser",
            "UID 0 is root; use a non-zero UID such as 65532",
        ),
        Some(uid) if uid == palisade_crds::GATEWAY_UID => v.deny(
            "baseline.nonRoot",
            "spec.runAsUser",
            format!("UID {uid} is the gateway's; the server runs under another UID so that it cannot touch the gateway's files or processes"),
        ),
        _ => {}
    }
}

/// Env: no credentials in plaintext (values, URLs, ConfigMaps), no code-injection hooks.
fn env(v: &mut Verdict, spec: &MCPServerSpec) {
    let mut names = BTreeSet::new();
    for (i, e) in spec.env.iter().enumerate() {
        let field = format!("spec.env[{i}]");
        if injects_code(&e.name) {
            v.deny(
                "baseline.envInjection",
                format!("{field}.name"),
                format!("{} injects code into the server process (a loader or runtime start-up hook); remove it", e.name),
            );
        }
        if let Some(value) = &e.value
            && let Some(why) = plaintext_env(&e.name, value)
        {
            v.deny("baseline.plaintextSecret", format!("{field}.value"), format!("{} holds {why} in plaintext; store it in a Secret and use valueFrom.secretKeyRef or secretMounts", e.name));
        }
        if e.value_from.as_ref().is_some_and(|f| f.config_map_key_ref.is_some())
            && secrets::name_looks_secret(&e.name)
        {
            v.deny("baseline.plaintextSecret", format!("{field}.valueFrom.configMapKeyRef"), format!("{} is a credential, and ConfigMaps are plaintext and readable by anyone who can read the namespace's configuration; use valueFrom.secretKeyRef", e.name));
        }
        if !names.insert(e.name.as_str()) {
            v.deny(
                "baseline.duplicate",
                format!("{field}.name"),
                format!("{} is set twice", e.name),
            );
        }
    }
    for (i, name) in spec.sandbox.env_allow.iter().enumerate() {
        if injects_code(name) {
            v.deny(
                "baseline.envInjection",
                format!("spec.sandbox.envAllow[{i}]"),
                format!("{name} injects code into the server process; it may not pass the bridge"),
            );
        }
    }
}

/// Why an environment variable's literal value is a credential, if it is.
pub fn plaintext_env(name: &str, value: &str) -> Option<String> {
    if let Some(kind) = secrets::value_looks_secret(value) {
        return Some(format!("what looks like a credential ({})", kind.as_str()));
    }
    if secrets::url_has_credentials(value) {
        return Some("a URL with a password in it".into());
    }
    (secrets::name_looks_secret(name) && !value.trim().is_empty())
        .then(|| "a value its name says is a credential".into())
}

/// Mounts: only declared scratch directories are writable; nothing shadows the kernel or Palisade.
fn mounts(v: &mut Verdict, spec: &MCPServerSpec) {
    let mut mounts: Vec<(String, String)> = Vec::new();
    for (i, s) in spec.scratch.iter().enumerate() {
        mounts.push((format!("spec.scratch[{i}].path"), s.path.clone()));
    }
    for (i, s) in spec.secret_mounts.iter().enumerate() {
        mounts.push((format!("spec.secretMounts[{i}].mountPath"), s.mount_path.clone()));
    }
    let mut seen = BTreeSet::new();
    for (field, path) in &mounts {
        match paths::normal_form(path) {
            Err(e) => v.deny("baseline.mountPath", field.clone(), format!("{path:?} must be a plain absolute path: {e}")),
            Ok(p) if p == "/" => v.deny("baseline.mountPath", field.clone(), "mounting over / would replace the read-only root filesystem; name a subdirectory such as /tmp"),
            Ok(p) if FORBIDDEN_MOUNT_ROOTS.iter().any(|r| paths::is_under(&p, r)) => v.deny("baseline.mountPath", field.clone(), format!("{p} is reserved for the kernel or for Palisade; choose another directory")),
            Ok(p) => {
                if !seen.insert(p.clone()) {
                    v.deny("baseline.mountPath", field.clone(), format!("{p} is mounted twice"));
                }
            }
        }
    }
}

/// Protocol revisions.
fn protocol(v: &mut Verdict, spec: &MCPServerSpec) {
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
}

/// The host of an `https://` URL, lower case, without port or credentials.
fn https_host(url: &str) -> Option<String> {
    let rest = url.strip_prefix("https://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host = authority.rsplit('@').next()?;
    let host = if host.starts_with('[') {
        host.split(']').next().map(|h| format!("{h}]"))?
    } else {
        host.split(':').next()?.to_string()
    };
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

/// Headers the gateway sets itself or that belong to the transport: an upstream credential
/// may not name them.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "upgrade",
    "accept",
    "mcp-session-id",
    "mcp-protocol-version",
    "mcp-method",
    "mcp-name",
    "traceparent",
    "tracestate",
];

/// Credentials the gateway presents to the server.
fn upstream_auth(v: &mut Verdict, spec: &MCPServerSpec) {
    let Some(u) = &spec.upstream_auth else { return };
    if spec.transport == Transport::Stdio {
        v.deny("baseline.upstreamAuth", "spec.upstreamAuth", "a stdio server receives no HTTP headers: remove spec.upstreamAuth (give a stdio server its credential with spec.secretMounts)");
    }
    if u.header.is_some() == u.token_exchange.is_some() {
        v.deny(
            "baseline.upstreamAuth",
            "spec.upstreamAuth",
            "set exactly one of header or tokenExchange",
        );
    }
    if let Some(h) = &u.header
        && RESERVED_HEADERS.contains(&h.name.to_ascii_lowercase().as_str())
    {
        v.deny("baseline.upstreamAuth", "spec.upstreamAuth.header.name", format!("{} is set by the gateway or the transport; name the header the server reads its credential from (Authorization, X-API-Key, ...)", h.name));
    }
    if let Some(t) = &u.token_exchange {
        if spec.auth.oidc.is_none() {
            v.deny("baseline.upstreamAuth", "spec.upstreamAuth.tokenExchange", "a token exchange trades the caller's bearer token for one for the server: configure spec.auth.oidc (certificate principals have no token to exchange)");
        }
        if !t.token_endpoint.starts_with("https://") {
            v.deny("baseline.upstreamAuth", "spec.upstreamAuth.tokenExchange.tokenEndpoint", "the token endpoint must be an https URL (the client secret and users' tokens travel to it)");
        }
        if spec.egress.is_empty() {
            v.warn(format!("the gateway exchanges tokens at {}: allow it in spec.egress (host or CIDR, port 443), or every call will fail", t.token_endpoint));
        }
    }
}

/// Authentication.
fn authentication(v: &mut Verdict, spec: &MCPServerSpec) {
    if let Some(oidc) = &spec.auth.oidc {
        if !oidc.issuer.starts_with("https://") {
            v.deny("baseline.auth", "spec.auth.oidc.issuer", "the issuer must be an https URL");
        }
        if let Some(j) = &oidc.jwks_uri {
            if !j.starts_with("https://") {
                v.deny("baseline.auth", "spec.auth.oidc.jwksUri", "the JWKS URI must be https");
            } else if https_host(j) != https_host(&oidc.issuer) {
                v.deny("baseline.auth", "spec.auth.oidc.jwksUri", format!("the JWKS URI is on {}, not on the issuer's host {}: whoever holds that host could mint tokens the gateway accepts; remove jwksUri (the gateway reads jwks_uri from the issuer's discovery document) or name a location on the issuer's host", https_host(j).unwrap_or_default(), https_host(&oidc.issuer).unwrap_or_default()));
            }
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
    if spec.auth.mode == palisade_core::spec::AuthMode::AllOf
        && (spec.auth.oidc.is_none() || spec.auth.mtls.is_none())
    {
        v.deny("baseline.auth", "spec.auth.mode", "AllOf needs both oidc and mtls configured");
    }
}

/// Roles.
fn authorization(v: &mut Verdict, spec: &MCPServerSpec) {
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
}

/// Tools: unique, destructive ones approved, argument rules well-formed.
fn tools(v: &mut Verdict, spec: &MCPServerSpec) {
    let mut tool_names = BTreeSet::new();
    let mut needs_approver = false;
    let secret_dirs: Vec<String> =
        spec.secret_mounts.iter().filter_map(|m| paths::normal_form(&m.mount_path).ok()).collect();
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
            argument_rule(v, a, &format!("{field}.arguments[{j}]"), &secret_dirs);
        }
    }
    if spec.tool_defaults.unlisted == UnlistedTools::RequireApproval {
        needs_approver = true;
    }
    if needs_approver && !spec.authorization.roles.iter().any(|r| r.approver) {
        v.warn("some tools require approval but no role has approver: true, so no call of them can ever run");
    }
}

/// Limits that contradict each other.
fn limits(v: &mut Verdict, spec: &MCPServerSpec) {
    let l = &spec.limits;
    if l.max_in_flight_per_session > l.max_in_flight {
        v.deny(
            "baseline.limits",
            "spec.limits.maxInFlightPerSession",
            "cannot exceed spec.limits.maxInFlight",
        );
    }
}

/// Audit cannot be switched off.
fn audit(v: &mut Verdict, spec: &MCPServerSpec) {
    if !spec.audit.enabled {
        v.deny(
            "baseline.audit",
            "spec.audit.enabled",
            "audit records of every call are mandatory; remove enabled: false",
        );
    }
}

/// Signature identities must be usable, and a requested signature must be verifiable.
fn signature(v: &mut Verdict, server: &MCPServer, allow: &Allowances) {
    let Some(sig) = &server.spec.signature else { return };
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
    if trust::server_set(server, allow.policies()).is_some_and(|set| set.keys.is_empty()) {
        v.deny("baseline.signature", "spec.signature", "only keyless identities are named, and the operator cannot verify them (it has no Sigstore trust root, Fulcio and Rekor); an image it cannot verify never runs: add the cosign public key to spec.signature.keys, or have an MCPPolicy list trustedKeys");
    }
}

/// Network: egress allowlist.
fn egress(v: &mut Verdict, spec: &MCPServerSpec, allow: &Allowances) {
    let denied = net::always_denied_everywhere();
    let mut allowed = Vec::new();
    for (i, rule) in spec.egress.iter().enumerate() {
        let field = format!("spec.egress[{i}]");
        if rule.cidr.is_some() == rule.host.is_some() {
            v.deny("baseline.egress", field.clone(), "set exactly one of cidr or host");
        }
        if let Some(cidr) = &rule.cidr
            && let Some(n) = egress_cidr(v, cidr, &format!("{field}.cidr"), &denied)
        {
            allowed.push((format!("{field}.cidr"), n));
        }
        if let Some(host) = &rule.host {
            egress_host(v, host, &format!("{field}.host"), allow);
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
                if !allow.risky_port(port) {
                    v.deny("baseline.riskyPort", format!("{field}.ports[{j}]"), format!("port {port} ({proto}) is blocked for MCP servers; an MCPPolicy must list it in egress.allowedRiskyPorts"));
                }
            }
            if p.protocol == PortProtocol::Udp && p.port == 53 {
                v.warn(format!("{field}: DNS to the cluster resolver is always allowed; direct DNS egress bypasses it"));
            }
        }
    }
    // "The whole internet" is what the rules reach together, not one prefix length.
    let nets: Vec<IpNet> = allowed.iter().map(|(_, n)| *n).collect();
    let reach = net::coverage(&nets);
    if reach.is_broad() {
        // Name the rule that is broad by itself, else the last one that made the set broad.
        let field = allowed
            .iter()
            .find(|(_, n)| net::coverage(std::slice::from_ref(n)).is_broad())
            .or(allowed.last())
            .map(|(f, _)| f.clone())
            .unwrap_or_else(|| "spec.egress".into());
        let cidrs: Vec<String> = nets.iter().map(|n| n.to_string()).collect();
        if !allow.unrestricted_egress() {
            v.deny("baseline.unrestrictedEgress", field, format!("the egress CIDRs together ({}) reach more than a /8 of IPv4 or a /16 of IPv6, which is the internet; list the destinations the server needs, or have an MCPPolicy set egress.allowUnrestricted", cidrs.join(", ")));
        } else {
            v.warn(format!(
                "{field}: broad egress ({}) is allowed by policy; metadata and link-local ranges stay excluded",
                cidrs.join(", ")
            ));
        }
    }
}

fn ingress(v: &mut Verdict, spec: &MCPServerSpec) {
    let denied = net::always_denied_everywhere();
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
}

fn egress_cidr(v: &mut Verdict, cidr: &str, field: &str, denied: &[IpNet]) -> Option<IpNet> {
    let net = match net::parse_canonical_cidr(cidr) {
        Ok(n) => n,
        Err(e) => {
            v.deny("baseline.egress", field, e);
            return None;
        }
    };
    let mut inside = false;
    for overlap in net::denied_overlaps(&net, denied) {
        if let DeniedOverlap::Inside(d) = overlap {
            inside = true;
            v.deny("baseline.metadataEgress", field, format!("{cidr} lies within {d} (cloud metadata / link-local, in one of its IPv4 or IPv6 spellings), which is always denied; remove it"));
        }
    }
    (!inside).then_some(net)
}

fn egress_host(v: &mut Verdict, host: &str, field: &str, allow: &Allowances) {
    let lower = host.to_ascii_lowercase();
    if lower.trim_start_matches("*.").parse::<std::net::IpAddr>().is_ok()
        || spells_ipv4(lower.trim_start_matches("*."))
    {
        v.deny(
            "baseline.egress",
            field,
            "use cidr (with /32 or /128) for addresses; host is for DNS names",
        );
        return;
    }
    let bare = lower.trim_start_matches("*.");
    if bare == "metadata.google.internal"
        || bare == "metadata"
        || bare.ends_with(".internal") && bare.starts_with("metadata")
    {
        v.deny("baseline.metadataEgress", field, "cloud metadata hosts are always denied");
        return;
    }
    if let Some(why) = net::internal_name_reason(&lower)
        && !allow.internal_host(host)
    {
        v.deny("baseline.internalHost", field, format!("{host} is {why}, so it can resolve inside the cluster or to private and metadata addresses; name a public DNS name, or have every MCPPolicy selecting the namespace list it in egress.allowedInternalHosts"));
    }
}

/// Whether a host name is an IPv4 address in one of the spellings resolvers accept
/// (`2852039166`, `0xa9fea9fe`, `0251.0376.0251.0376`, `169.254.43518`).
fn spells_ipv4(host: &str) -> bool {
    let parts: Vec<&str> = host.trim_end_matches('.').split('.').collect();
    !parts.is_empty()
        && parts.len() <= 4
        && parts.iter().all(|p| {
            let hex = p.strip_prefix("0x").or_else(|| p.strip_prefix("0X"));
            match hex {
                Some(h) => h.bytes().all(|b| b.is_ascii_hexdigit()),
                None => !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()),
            }
        })
}

/// Whether an argument rule's name is a plain name or a well-formed JSON pointer (segments may
/// be `*`).
fn argument_name_ok(name: &str) -> Result<(), &'static str> {
    let Some(pointer) = name.strip_prefix('/') else { return Ok(()) };
    if pointer.split('/').any(str::is_empty) {
        return Err("JSON pointer has an empty segment");
    }
    let mut chars = pointer.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
            return Err("JSON pointer has a ~ that is not ~0 or ~1");
        }
    }
    if pointer.split('/').next() == Some("*") {
        return Err("the first segment names the argument; it cannot be *");
    }
    Ok(())
}

fn argument_rule(v: &mut Verdict, a: &ArgumentRule, field: &str, secret_dirs: &[String]) {
    if let Err(why) = argument_name_ok(&a.name) {
        v.deny("baseline.toolArguments", format!("{field}.name"), why);
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
        match paths::normal_form(root) {
            Ok(n) if n == *root || format!("{n}/") == *root => {
                if let Some(d) = secret_dirs.iter().find(|d| paths::is_under(&n, d)) {
                    v.deny("baseline.toolArguments", format!("{field}.pathRoots[{i}]"), format!("{n} lies inside the Secret mounted at {d}; a tool may never be pointed at credentials"));
                }
            }
            Ok(n) => v.deny(
                "baseline.toolArguments",
                format!("{field}.pathRoots[{i}]"),
                format!("write the root in normal form: {n}"),
            ),
            Err(e) => v.deny(
                "baseline.toolArguments",
                format!("{field}.pathRoots[{i}]"),
                format!("roots must be plain absolute paths: {e}"),
            ),
        }
        if root == "/" {
            v.warn(format!("{field}.pathRoots[{i}]: / allows every path (Secrets and Palisade's own files stay refused)"));
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
    if a.free_text == FreeText::Refuse && !a.pins_values() {
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

    let image = spec.image.as_deref().and_then(|i| ImageRef::parse(i).ok());
    remote_policy(&mut v, spec, p);
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

    if spec.signature.is_none() && p.signature.required && !spec.is_remote() {
        v.deny(
            "policy.signature",
            "spec.signature",
            "images must be signed: name the cosign public key (keys[].secretRef) that signed it",
        );
    }
    if let Some(sig) = &spec.signature
        && p.signature.only_trusted
    {
        for (i, id) in sig.keyless.iter().enumerate() {
            if !identity_trusted(id, &p.signature.trusted_identities) {
                v.deny(
                    "policy.signature",
                    format!("spec.signature.keyless[{i}]"),
                    format!(
                        "identity {} / {} is not among the policy's trustedIdentities",
                        id.issuer,
                        id.subject.as_deref().or(id.subject_reg_exp.as_deref()).unwrap_or("?")
                    ),
                );
            }
        }
    }
    if spec.signature.is_some()
        && let Some(set) = trust::policy_set(server, policy)
        && set.keys.is_empty()
    {
        let why = if p.signature.only_trusted {
            "this namespace trusts only the policy's own keys (onlyTrusted), and the policy lists no trustedKeys the operator could verify with"
        } else {
            "this namespace requires verified signatures, and the server names no cosign key (keyless identities cannot be verified by the operator) while the policy lists no trustedKeys"
        };
        v.deny("policy.signature", "spec.signature", format!("{why}; an image that cannot be verified never runs: add spec.signature.keys, or trustedKeys to the policy"));
    }
    // SBOM attestations are verified with the server's own keys; keyless cannot be checked.
    if p.supply_chain.require_sbom
        && !spec.is_remote()
        && spec.signature.as_ref().is_none_or(|s| s.keys.is_empty())
    {
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
    v.merge(gateway_policy_rules(spec, p));
    v
}

/// What a policy requires of any gateway (a server's, or a virtual server's in the shape of a
/// server's): revisions, issuers, client certificates, limits, egress, tools, audit signing.
pub fn gateway_policy_rules(spec: &MCPServerSpec, p: &MCPPolicySpec) -> Verdict {
    let mut v = Verdict::default();
    if p.audit.require_signing_key && spec.audit.signing_key_secret_ref.is_none() {
        v.deny("policy.auditSigning", "spec.audit.signingKeySecretRef", "this namespace requires signed audit checkpoints: name an Ed25519 private key (PKCS#8 PEM) in a Secret; without it anyone who can edit the log can recompute the hash chain");
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
        } else if spec.auth.oidc.is_some() && spec.auth.mode != palisade_core::spec::AuthMode::AllOf
        {
            v.deny("policy.mtls", "spec.auth.mode", "client certificates are required here: set mode: AllOf so that a token alone is not enough");
        }
    }

    for (res, max) in &p.resources.max_limits {
        let Ok(max_v) = quantity::parse_quantity(max) else { continue };
        let server = spec.image.is_some().then_some(&spec.resources);
        let mut containers = vec![("spec.resources", server, "the server")];
        containers.push(("spec.gateway.resources", spec.gateway.resources.as_ref(), "the gateway"));
        for (prefix, r, what) in containers {
            match r.and_then(|r| r.limits.get(res)) {
                // The gateway's defaults (500m / 128Mi) are checked by the operator's render.
                None if r.is_none() => {}
                None => v.deny(
                    "policy.resources",
                    format!("{prefix}.limits.{res}"),
                    format!("set a {res} limit of at most {} for {what}", max.0),
                ),
                Some(q) => {
                    if quantity::parse_quantity(q).is_ok_and(|x| x > max_v) {
                        v.deny(
                            "policy.resources",
                            format!("{prefix}.limits.{res}"),
                            format!("{} exceeds the maximum {} allowed here", q.0, max.0),
                        );
                    }
                }
            }
        }
        if spec.gateway.resources.is_none()
            && let Some(default) = default_gateway_limit(res)
            && default > max_v
        {
            v.deny("policy.resources", "spec.gateway.resources", format!("the gateway's default {res} limit exceeds the maximum {} allowed here; set spec.gateway.resources", max.0));
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

    let denied_nets: Vec<IpNet> =
        p.egress.denied_cidrs.iter().filter_map(|c| c.parse().ok()).collect();
    let denied = net::in_every_family(&denied_nets);
    for (i, rule) in spec.egress.iter().enumerate() {
        if let Some(Ok(n)) = rule.cidr.as_deref().map(net::parse_canonical_cidr) {
            let mut hit: Vec<String> = denied
                .iter()
                .filter(|d| d.contains(&n) || n.contains(*d))
                .map(|d| d.to_string())
                .collect();
            hit.dedup();
            if !hit.is_empty() {
                v.deny("policy.deniedCidr", format!("spec.egress[{i}].cidr"), format!("overlaps {}, which this cluster denies (in one of its IPv4 or IPv6 spellings); allow a range that excludes it", hit.join(", ")));
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

/// A remote server under a policy: its host among `remote.allowedHosts` when the policy lists
/// hosts, or when it requires what a remote server cannot show (a signed image, an SBOM); a
/// DNS-name host without a peer where the CNI cannot enforce host rules.
fn remote_policy(v: &mut Verdict, spec: &MCPServerSpec, p: &MCPPolicySpec) {
    let Some(r) = &spec.remote else { return };
    let Ok(url) = parse_remote_url(&r.url) else { return };
    let listed = p.remote.lists(&url.host);
    if !listed && (p.signature.required || p.supply_chain.require_sbom) {
        v.deny("policy.remote", "spec.remote.url", format!("this namespace requires signed images, and a remote server runs none Palisade can verify: list {} in the policy's remote.allowedHosts to accept it", url.host));
    } else if !listed && !p.remote.allowed_hosts.is_empty() {
        v.deny(
            "policy.remote",
            "spec.remote.url",
            format!(
                "{} is not among the remote hosts allowed here: {}",
                url.host,
                p.remote.allowed_hosts.join(", ")
            ),
        );
    }
    if url.address.is_none() && r.peer.is_none() && p.egress.deny_host_rules {
        v.deny("policy.hostEgress", "spec.remote.peer", "this cluster's CNI cannot enforce DNS-name egress: set spec.remote.peer (the server's CIDR, or its pods and namespace)");
    }
}

/// The gateway container's default limits (rendered when `spec.gateway.resources` is unset).
pub const GATEWAY_DEFAULT_LIMITS: &[(&str, &str)] = &[("cpu", "500m"), ("memory", "128Mi")];

fn default_gateway_limit(res: &str) -> Option<f64> {
    GATEWAY_DEFAULT_LIMITS
        .iter()
        .find(|(r, _)| *r == res)
        .and_then(|(_, q)| quantity::parse(q).ok())
}

/// Whether every selecting policy (and at least one) permits an exception.
pub fn all_permit(policies: &[&MCPPolicy], permits: impl Fn(&MCPPolicy) -> bool) -> bool {
    !policies.is_empty() && policies.iter().all(|p| permits(p))
}

/// The full review: baseline plus every selecting policy.
pub fn review(server: &MCPServer, policies: &[&MCPPolicy]) -> Verdict {
    let mut v = baseline(server, &Allowances::new(policies));
    for p in policies {
        let name = p.metadata.name.clone().unwrap_or_default();
        v.merge_from_policy(policy_rules(server, p), &name);
    }
    v
}
