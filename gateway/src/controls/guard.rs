//! Tool-argument policy: the arguments of a `tools/call` are checked against the tool's
//! declared `inputSchema` and the spec's per-argument rules before the server sees them.
//! Paths must stay under their roots, URLs must name allowed, public destinations (SSRF), and
//! model output may not switch safety mechanisms off.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use palisade_core::net::classify;
use palisade_core::paths;
use palisade_core::spec::{
    ArgumentRule, ArgumentType, FreeText, SafetyFlagAction, ToolDefaults, ToolPolicy, UrlRule,
};

use crate::protocol::tool::Tool;
use regex::Regex;
use serde_json::{Map, Value};

use crate::observe::events::Kind;

const MAX_URL_BYTES: usize = 8192;
const DNS_TIMEOUT: Duration = Duration::from_secs(2);

/// Why arguments were refused. The message is safe to return to the client: it names the
/// argument and the rule, never a resolved address.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub kind: Kind,
    pub message: String,
}

fn refuse(kind: Kind, message: impl Into<String>) -> Refusal {
    Refusal { kind, message: message.into() }
}

fn invalid(message: impl Into<String>) -> Refusal {
    refuse(Kind::ValidationFailure, message)
}

/// Name resolution for URL checks; the system resolver in the gateway, a table in tests.
pub trait Resolve: Send + Sync {
    fn resolve<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> futures::future::BoxFuture<'a, std::io::Result<Vec<IpAddr>>>;
}

pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> futures::future::BoxFuture<'a, std::io::Result<Vec<IpAddr>>> {
        Box::pin(async move {
            let found = tokio::time::timeout(DNS_TIMEOUT, tokio::net::lookup_host((host, port)))
                .await
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "DNS timeout"))??;
            Ok(found.map(|a| a.ip()).collect())
        })
    }
}

/// Something the guard did to arguments that is worth a security event although the call goes
/// on (a stripped safety flag).
#[derive(Debug, Clone, PartialEq)]
pub struct Note {
    pub kind: Kind,
    pub detail: String,
}

/// What the guard needs to know about the call besides its arguments.
pub struct Context<'a> {
    pub tool: &'a str,
    pub policy: Option<&'a ToolPolicy>,
    pub defaults: &'a ToolDefaults,
    /// The tool's definition from the server; `None` only where the caller already refused
    /// an unknown tool.
    pub definition: Option<&'a Tool>,
    /// Directories no argument may name (the server's Secret mounts).
    pub protected: &'a [String],
    pub resolver: &'a dyn Resolve,
}

/// Checks the arguments of one call in place: safety flags (refused, or stripped with a
/// note), the tool's `inputSchema`, undeclared arguments, and the spec's per-argument rules at
/// every value their pointers reach. URL arguments are replaced by the canonical form that was
/// judged, so the server receives exactly what passed.
pub async fn check_arguments(
    ctx: &Context<'_>,
    arguments: &mut Value,
) -> Result<Vec<Note>, Refusal> {
    let tool = ctx.tool;
    let Value::Object(args) = arguments else {
        return Err(invalid("arguments must be an object"));
    };
    let mut notes = safety_flags(ctx.defaults, args)?;
    match ctx.definition.and_then(Tool::input_validator) {
        None => {}
        Some(Err(_)) => {
            return Err(invalid(format!("tool {tool} declares an unusable inputSchema")));
        }
        Some(Ok(validator)) => {
            let value: &Value = arguments;
            if let Some(e) = validator.iter_errors(value).next() {
                let at = e.instance_path().to_string();
                return Err(invalid(format!(
                    "arguments do not match the tool's inputSchema at '{}': {}",
                    if at.is_empty() { "/" } else { &at },
                    e
                )));
            }
        }
    }
    let Some(policy) = ctx.policy else { return Ok(notes) };
    if policy.deny_unlisted_arguments
        && let Value::Object(args) = &*arguments
    {
        let declared = ctx.definition.map(Tool::declared_arguments).unwrap_or_default();
        for name in args.keys() {
            let by_rule = policy.arguments.iter().any(|r| top_level(&r.name) == name);
            if !by_rule && !declared.contains(&name.as_str()) {
                return Err(invalid(format!(
                    "argument '{name}' is neither declared by {tool}'s inputSchema nor named by a rule"
                )));
            }
        }
    }
    for rule in &policy.arguments {
        let pointers = matching_pointers(arguments, &rule.name);
        if pointers.is_empty() {
            if rule.required {
                return Err(invalid(format!("argument '{}' is required", rule.name)));
            }
            continue;
        }
        for pointer in pointers {
            let Some(v) = arguments.pointer_mut(&pointer) else { continue };
            let shown = if pointer == format!("/{}", rule.name) {
                rule.name.clone()
            } else {
                pointer.clone()
            };
            check_value(rule, &shown, v, ctx).await?;
        }
    }
    notes.retain(|n| !n.detail.is_empty());
    Ok(notes)
}

fn escape(seg: &str) -> String {
    seg.replace('~', "~0").replace('/', "~1")
}

/// The concrete JSON pointers (into the arguments object) that a rule's name reaches: a plain
/// name, or a pointer whose `*` segments match every array element or object member.
pub fn matching_pointers(arguments: &Value, name: &str) -> Vec<String> {
    let Some(pointer) = name.strip_prefix('/') else {
        return if arguments.get(name).is_some() {
            vec![format!("/{}", escape(name))]
        } else {
            vec![]
        };
    };
    let mut found = vec![(String::new(), arguments)];
    for raw in pointer.split('/') {
        let seg = raw.replace("~1", "/").replace("~0", "~");
        let mut next = Vec::new();
        for (at, v) in found {
            match (raw, v) {
                ("*", Value::Array(items)) => {
                    next.extend(items.iter().enumerate().map(|(i, x)| (format!("{at}/{i}"), x)))
                }
                ("*", Value::Object(m)) => {
                    next.extend(m.iter().map(|(k, x)| (format!("{at}/{}", escape(k)), x)))
                }
                (_, Value::Object(m)) => {
                    if let Some(x) = m.get(&seg) {
                        next.push((format!("{at}/{}", escape(&seg)), x));
                    }
                }
                (_, Value::Array(items)) => {
                    if let Some(x) = seg.parse::<usize>().ok().and_then(|i| items.get(i)) {
                        next.push((format!("{at}/{seg}"), x));
                    }
                }
                _ => {}
            }
        }
        found = next;
    }
    found.into_iter().map(|(p, _)| p).collect()
}

/// Compiled argument patterns, anchored to the whole value. Compiled per call: the patterns
/// are short, and a cache would be state that outlives the configuration it came from.
fn compiled_pattern(pattern: &str) -> Option<Regex> {
    Regex::new(&format!("^(?:{pattern})$")).ok()
}

fn top_level(name: &str) -> &str {
    match name.strip_prefix('/') {
        Some(p) => p.split('/').next().unwrap_or(p),
        None => name,
    }
}

/// A flag name as a comparison key: lower case, without separators (`Skip-Approval`,
/// `skip_approval` and `SKIPAPPROVAL` are one flag).
fn flag_key(name: &str) -> String {
    name.chars().filter(|c| c.is_alphanumeric()).flat_map(char::to_lowercase).collect()
}

/// Arguments that try to switch a safety mechanism off, at any depth, in any casing and word
/// separation.
fn safety_flags(
    defaults: &ToolDefaults,
    args: &mut Map<String, Value>,
) -> Result<Vec<Note>, Refusal> {
    fn walk(
        flags: &[String],
        action: SafetyFlagAction,
        m: &mut Map<String, Value>,
        found: &mut Vec<String>,
    ) {
        let hits: Vec<String> =
            m.keys().filter(|k| flags.contains(&flag_key(k))).cloned().collect();
        for k in hits {
            if action == SafetyFlagAction::Strip {
                m.remove(&k);
            }
            found.push(k);
        }
        for v in m.values_mut() {
            walk_value(flags, action, v, found);
        }
    }
    fn walk_value(
        flags: &[String],
        action: SafetyFlagAction,
        v: &mut Value,
        found: &mut Vec<String>,
    ) {
        match v {
            Value::Object(inner) => walk(flags, action, inner, found),
            Value::Array(items) => {
                items.iter_mut().for_each(|i| walk_value(flags, action, i, found))
            }
            _ => {}
        }
    }
    let keys: Vec<String> = defaults.safety_flags.iter().map(|f| flag_key(f)).collect();
    let mut found = vec![];
    walk(&keys, defaults.safety_flag_action, args, &mut found);
    match (found.is_empty(), defaults.safety_flag_action) {
        (true, _) => Ok(vec![]),
        (false, SafetyFlagAction::Refuse) => Err(refuse(
            Kind::SafetyFlagOverride,
            format!("argument '{}' may not be set by a client", found.join("', '")),
        )),
        // Stripped: forwarded without them, and reported as a security event.
        (false, SafetyFlagAction::Strip) => Ok(vec![Note {
            kind: Kind::SafetyFlagOverride,
            detail: format!("safety flags stripped from the arguments: {}", found.join(", ")),
        }]),
    }
}

async fn check_value(
    rule: &ArgumentRule,
    name: &str,
    v: &mut Value,
    ctx: &Context<'_>,
) -> Result<(), Refusal> {
    if let Some(t) = rule.r#type {
        let ok = match t {
            ArgumentType::String => v.is_string(),
            ArgumentType::Integer => v.is_i64() || v.is_u64(),
            ArgumentType::Number => v.is_number(),
            ArgumentType::Boolean => v.is_boolean(),
            ArgumentType::Array => v.is_array(),
            ArgumentType::Object => v.is_object(),
        };
        if !ok {
            return Err(invalid(format!("argument '{name}' must be of type {t:?}")));
        }
    }
    if let Some(n) = v.as_f64()
        && (rule.minimum.is_some_and(|m| n < m) || rule.maximum.is_some_and(|m| n > m))
    {
        return Err(invalid(format!("argument '{name}' is out of range")));
    }
    let Some(s) = v.as_str() else {
        if rule.pins_values() || rule.free_text == FreeText::Refuse {
            return Err(invalid(format!("argument '{name}' must be a string")));
        }
        return Ok(());
    };
    let chars = s.chars().count();
    if rule.min_length.is_some_and(|m| chars < m as usize)
        || rule.max_length.is_some_and(|m| chars > m as usize)
    {
        return Err(invalid(format!("argument '{name}' has a length outside the allowed range")));
    }
    if !rule.one_of.is_empty() && !rule.one_of.iter().any(|o| o == s) {
        return Err(invalid(format!(
            "argument '{name}' must be one of: {}",
            rule.one_of.join(", ")
        )));
    }
    if let Some(p) = &rule.pattern {
        let re = compiled_pattern(p).ok_or_else(|| {
            invalid(format!("the pattern for '{name}' is not a valid expression"))
        })?;
        if !re.is_match(s) {
            return Err(invalid(format!("argument '{name}' does not match the allowed pattern")));
        }
    }
    if !rule.path_roots.is_empty() {
        check_path_outside(s, &rule.path_roots, ctx.protected)
            .map_err(|m| refuse(Kind::PathTraversal, format!("argument '{name}': {m}")))?;
    }
    if rule.free_text == FreeText::Refuse {
        if !rule.pins_values() {
            return Err(invalid(format!(
                "argument '{name}' is free text, which the policy refuses (pin it with enum, pattern, pathRoots or url)"
            )));
        }
        if s.chars().any(|c| c.is_control() || "`$;|&<>\\".contains(c)) || s.contains("$(") {
            return Err(invalid(format!("argument '{name}' contains control or shell characters")));
        }
    }
    if let Some(u) = &rule.url {
        let canonical = check_url(s, u, ctx.resolver)
            .await
            .map_err(|(kind, m)| refuse(kind, format!("argument '{name}': {m}")))?;
        // Forward exactly what was judged.
        *v = Value::String(canonical);
    }
    Ok(())
}

/// Device, kernel and runtime trees no tool argument may name, whatever the roots say.
const DEVICE_TREES: &[&str] = &["/dev", "/proc", "/sys", "/run/secrets", "/var/run/secrets"];

/// Palisade's own directories in the pod, never a tool's input.
const PALISADE_TREES: &[&str] = &["/etc/palisade", "/palisade", "/var/lib/palisade"];

/// A path must be absolute, plain (no encodings, traversal or lookalikes) and under a root.
pub fn check_path(p: &str, roots: &[String]) -> Result<(), String> {
    check_path_outside(p, roots, &[])
}

/// [`check_path`], and outside every `protected` directory (the server's Secret mounts)
/// whatever the roots say.
pub fn check_path_outside(p: &str, roots: &[String], protected: &[String]) -> Result<(), String> {
    let normal = paths::normal_form(p).map_err(|e| e.to_string())?;
    let inside = |d: &&str| paths::is_under(&normal, d);
    if DEVICE_TREES.iter().any(inside) {
        return Err("device or kernel path".into());
    }
    if PALISADE_TREES.iter().any(inside) || protected.iter().map(String::as_str).any(|d| inside(&d))
    {
        return Err("the path names credentials or Palisade's own files".into());
    }
    if !roots.iter().map(String::as_str).any(|r| inside(&r)) {
        return Err("path is outside the allowed roots".into());
    }
    Ok(())
}

fn special_use_name(host: &str) -> bool {
    palisade_core::net::internal_name_reason(host).is_some()
}

/// IPv4 in any spelling `inet_aton` accepts: 1 to 4 parts, each decimal, octal (`0` prefix)
/// or hex (`0x`), the last part filling the remaining bytes. `None` for ordinary names.
pub fn loose_ipv4(host: &str) -> Option<Ipv4Addr> {
    let host = host.strip_suffix('.').unwrap_or(host);
    let parts: Vec<&str> = host.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let mut nums = vec![];
    for p in &parts {
        let n = if let Some(h) = p.strip_prefix("0x").or_else(|| p.strip_prefix("0X")) {
            if h.is_empty() { 0 } else { u64::from_str_radix(h, 16).ok()? }
        } else if p.len() > 1 && p.starts_with('0') {
            u64::from_str_radix(&p[1..], 8).ok()?
        } else {
            p.parse::<u64>().ok()?
        };
        nums.push(n);
    }
    let last = *nums.last()?;
    let head = &nums[..nums.len() - 1];
    if head.iter().any(|&n| n > 255) || last >= 1u64 << (8 * (5 - nums.len())) {
        return None;
    }
    let mut v: u64 = last;
    for (i, &n) in head.iter().enumerate() {
        v |= n << (8 * (3 - i));
    }
    Some(Ipv4Addr::from(u32::try_from(v).ok()?))
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        "ftp" => Some(21),
        _ => None,
    }
}

fn host_allowed(host: &str, allowed: &[String]) -> bool {
    allowed.is_empty()
        || allowed.iter().any(|a| {
            let a = a.to_ascii_lowercase();
            match a.strip_prefix("*.") {
                Some(zone) => host.ends_with(&format!(".{zone}")),
                None => host == a,
            }
        })
}

fn public_or(ip: IpAddr, what: &str) -> Result<(), (Kind, String)> {
    let class = classify(ip);
    if class.is_public() {
        Ok(())
    } else {
        Err((Kind::Ssrf, format!("{what} is a {} address", class.as_str())))
    }
}

/// A URL must use an allowed scheme, host and port, and reach only public addresses. Returns
/// the canonical form (WHATWG serialisation) that was judged, which is what is forwarded.
pub async fn check_url(
    raw: &str,
    rule: &UrlRule,
    resolver: &dyn Resolve,
) -> Result<String, (Kind, String)> {
    let bad = |m: &str| Err((Kind::Ssrf, m.to_string()));
    if raw.len() > MAX_URL_BYTES {
        return bad("URL too long");
    }
    if raw.chars().any(|c| c.is_control() || c.is_whitespace()) {
        // The URL parser drops tabs and newlines silently; the server's parser may not.
        return bad("whitespace or control characters in URL");
    }
    if raw.contains('\\') {
        return bad("backslash in URL");
    }
    let url =
        url::Url::parse(raw).map_err(|_| (Kind::Ssrf, "not a valid absolute URL".to_string()))?;
    let scheme = url.scheme().to_ascii_lowercase();
    if !rule.schemes.iter().any(|s| s.eq_ignore_ascii_case(&scheme)) {
        return bad(&format!("scheme '{scheme}' is not allowed"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return bad("credentials in URL");
    }
    let port = url.port_or_known_default().or_else(|| default_port(&scheme));
    let Some(port) = port else { return bad("no port for this scheme") };
    let allowed_port = if rule.ports.is_empty() {
        Some(port) == default_port(&scheme)
    } else {
        rule.ports.contains(&port)
    };
    if !allowed_port {
        return bad(&format!("port {port} is not allowed"));
    }
    let canonical = url.as_str().to_string();
    // An address, however the URL spells it: the allowlist and the address class decide.
    let address = |ip: IpAddr| -> Result<String, (Kind, String)> {
        let shown = match ip {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("[{v6}]"),
        };
        if !rule.hosts.is_empty() && !host_allowed(&shown, &rule.hosts) {
            return Err((Kind::Ssrf, "host is not allowed".to_string()));
        }
        public_or(ip, "host")?;
        Ok(canonical.clone())
    };
    match url.host() {
        None => bad("URL has no host"),
        Some(url::Host::Ipv4(ip)) => address(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => address(IpAddr::V6(ip)),
        Some(url::Host::Domain(d)) => {
            let host = d.to_ascii_lowercase();
            let host = host.strip_suffix('.').unwrap_or(&host).to_string();
            // Non-special schemes keep hosts opaque: numeric spellings still mean an address,
            // and face the allowlist as that address.
            if let Some(ip) = loose_ipv4(&host) {
                return address(IpAddr::V4(ip));
            }
            if let Ok(ip) = host.trim_matches(['[', ']']).parse::<IpAddr>() {
                return address(ip);
            }
            if !host_allowed(&host, &rule.hosts) {
                return bad("host is not allowed");
            }
            if special_use_name(&host) {
                return bad("host names a local or internal zone");
            }
            let addrs = resolver
                .resolve(&host, port)
                .await
                .map_err(|_| (Kind::Ssrf, "host does not resolve".to_string()))?;
            if addrs.is_empty() {
                return bad("host does not resolve");
            }
            for ip in addrs {
                public_or(ip, "host resolves to an address that")?;
            }
            Ok(canonical)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_ipv4_spelling_is_understood() {
        let lo = Some(Ipv4Addr::new(127, 0, 0, 1));
        for s in [
            "127.0.0.1",
            "2130706433",
            "0x7f000001",
            "017700000001",
            "0x7f.1",
            "127.1",
            "0177.0.0.01",
            "127.0.0.1.",
        ] {
            assert_eq!(loose_ipv4(s), lo, "{s}");
        }
        assert_eq!(loose_ipv4("169.254.43518"), Some(Ipv4Addr::new(169, 254, 169, 254)));
        assert_eq!(loose_ipv4("example.com"), None);
        assert_eq!(loose_ipv4("256.1.1.1"), None);
        assert_eq!(loose_ipv4("1.2.3.4.5"), None);
    }

    /// Names resolving the way an attacker's DNS would answer.
    struct Table;

    impl Resolve for Table {
        fn resolve<'a>(
            &'a self,
            host: &'a str,
            _port: u16,
        ) -> futures::future::BoxFuture<'a, std::io::Result<Vec<IpAddr>>> {
            let ips: Vec<IpAddr> = match host {
                "rebind.example" => {
                    vec!["169.254.169.254".parse().unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))]
                }
                "mixed.example" => vec![
                    IpAddr::V4(Ipv4Addr::new(93, 184, 216, 34)),
                    IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)),
                ],
                "v6.example" => {
                    vec!["::ffff:127.0.0.1".parse().unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))]
                }
                "public.example" => vec![IpAddr::V4(Ipv4Addr::new(93, 184, 216, 34))],
                _ => vec![],
            };
            Box::pin(async move { Ok(ips) })
        }
    }

    #[tokio::test]
    async fn names_are_judged_by_every_address_they_resolve_to() {
        let rule = UrlRule { schemes: vec!["https".into()], hosts: vec![], ports: vec![] };
        for host in ["rebind.example", "mixed.example", "v6.example", "unknown.example"] {
            let r = check_url(&format!("https://{host}/x"), &rule, &Table).await;
            assert!(matches!(r, Err((Kind::Ssrf, _))), "{host}: {r:?}");
        }
        assert_eq!(
            check_url("https://public.example/x", &rule, &Table).await,
            Ok("https://public.example/x".to_string())
        );
        let only = UrlRule { hosts: vec!["*.example.org".into()], ..rule };
        assert!(check_url("https://public.example/x", &only, &Table).await.is_err());
    }

    #[tokio::test]
    async fn numeric_hosts_face_the_allowlist_in_every_scheme() {
        let rule = UrlRule {
            schemes: vec!["https".into(), "git".into()],
            hosts: vec!["example.org".into()],
            ports: vec![443, 9418],
        };
        // A non-special scheme keeps its host opaque; its numeric spelling is still an address,
        // and an address that the allowlist does not name is refused, public or not.
        for url in ["git://8.8.8.8:9418/x", "git://0x08080808:9418/x", "https://8.8.8.8/"] {
            let r = check_url(url, &rule, &Table).await;
            assert_eq!(r, Err((Kind::Ssrf, "host is not allowed".to_string())), "{url}");
        }
        let open = UrlRule { hosts: vec![], ..rule };
        assert!(check_url("git://8.8.8.8:9418/x", &open, &Table).await.is_ok());
        assert!(check_url("git://127.1:9418/x", &open, &Table).await.is_err());
    }
}
