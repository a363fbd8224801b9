//! The security settings of a server that appear both in the `MCPServer` spec and in the
//! gateway's configuration file (roles, tool policies, limits, validation). They carry no
//! Kubernetes references, so the gateway links them without any Kubernetes code, and the
//! operator copies them from spec to config unchanged.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::revisions;

/// Glob syntax used in role grants: `*` matches any run of characters except `/`,
/// `**` matches anything, `?` one character.
pub fn glob_matches(pattern: &str, text: &str) -> bool {
    fn go(p: &[u8], t: &[u8]) -> bool {
        match p.split_first() {
            None => t.is_empty(),
            Some((b'*', rest)) if rest.first() == Some(&b'*') => {
                let rest = &rest[1..];
                (0..=t.len()).any(|i| go(rest, &t[i..]))
            }
            Some((b'*', rest)) => {
                let mut i = 0;
                loop {
                    if go(rest, &t[i..]) {
                        return true;
                    }
                    if i == t.len() || t[i] == b'/' {
                        return false;
                    }
                    i += 1;
                }
            }
            Some((b'?', rest)) => !t.is_empty() && t[0] != b'/' && go(rest, &t[1..]),
            Some((c, rest)) => t.first() == Some(c) && go(rest, &t[1..]),
        }
    }
    go(pattern.as_bytes(), text.as_bytes())
}

// ---------------------------------------------------------------------------------------------
// Protocol

/// How strictly messages are checked beyond what the MCP schema requires.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ValidationMode {
    /// Unknown fields are refused where Palisade closes an object, and a malformed message
    /// ends the session (fail closed).
    #[default]
    Strict,
    /// Unknown fields are dropped with a security event; malformed messages are still refused.
    Lenient,
}

fn default_versions() -> Vec<String> {
    vec![revisions::LATEST.to_string()]
}

fn revision_list_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let _ = generator;
    schemars::json_schema!({
        "type": "array",
        "minItems": 1,
        "maxItems": 8,
        "items": { "type": "string", "enum": revisions::KNOWN },
        "default": [revisions::LATEST],
        "description": "MCP revisions the gateway accepts from clients. Anything else is refused at \
                        `initialize` or on the first request with the supported list. Default: the \
                        newest stable revision only.",
    })
}

fn optional_revision_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let _ = generator;
    schemars::json_schema!({
        "type": "string",
        "enum": revisions::KNOWN,
        "description": "The revision the gateway speaks to the server when it differs from the \
                        client's. Only exact translations are performed; otherwise the request is \
                        refused. Default: the client's revision.",
    })
}

/// Protocol revision pinning and validation strictness.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProtocolSpec {
    #[serde(default = "default_versions")]
    #[schemars(schema_with = "revision_list_schema")]
    pub versions: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "optional_revision_schema")]
    pub upstream_version: Option<String>,
    /// Strict (default) refuses unknown fields and closes the session on malformed input.
    #[serde(default)]
    pub validation: ValidationMode,
}

impl Default for ProtocolSpec {
    fn default() -> Self {
        ProtocolSpec {
            versions: default_versions(),
            upstream_version: None,
            validation: ValidationMode::Strict,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Authentication

/// How the configured authentication methods combine.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AuthMode {
    /// A request must pass any one configured method.
    #[default]
    AnyOf,
    /// A request must pass every configured method (mTLS as a second factor to OIDC).
    AllOf,
}

/// OAuth 2.1 / OIDC bearer-token authentication (the gateway is a resource server).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OidcAuth {
    /// Issuer URL; must be `https`. Discovery is read from `<issuer>/.well-known/openid-configuration`.
    #[schemars(length(min = 9, max = 2048), pattern(r"^https://[^\s]+$"))]
    pub issuer: String,
    /// The gateway's own resource URI: tokens whose `aud` does not contain it are refused.
    #[schemars(length(min = 1, max = 2048))]
    pub audience: String,
    /// JWKS location when it differs from the discovery document's `jwks_uri`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048), pattern(r"^https://[^\s]+$"))]
    pub jwks_uri: Option<String>,
    /// Scopes every token must carry (space-separated `scope` claim or `scp` array).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub required_scopes: Vec<String>,
    /// Allowed clock skew for `exp`/`nbf`, in seconds.
    #[serde(default = "default_clock_skew")]
    #[schemars(range(min = 0, max = 300))]
    pub clock_skew_seconds: u32,
    /// The claim that names the principal.
    #[serde(default = "default_principal_claim")]
    pub principal_claim: String,
}

fn default_clock_skew() -> u32 {
    30
}

fn default_principal_claim() -> String {
    "sub".to_string()
}

/// Which part of a client certificate names the principal.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CertPrincipal {
    /// The first URI SAN (SPIFFE IDs, for example).
    #[default]
    UriSan,
    /// The first DNS SAN.
    DnsSan,
    /// The subject Common Name.
    CommonName,
}

// ---------------------------------------------------------------------------------------------
// Authorization

/// Matches principals by a claim of their token (or `sub` for mTLS principals).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SubjectMatch {
    /// Claim name, e.g. `sub`, `groups`, `email`, `client_id`.
    #[serde(default = "default_principal_claim")]
    #[schemars(length(min = 1, max = 128))]
    pub claim: String,
    /// The claim (or any element of an array claim) must equal one of these.
    #[schemars(length(min = 1, max = 256))]
    pub values: Vec<String>,
}

/// A role grants MCP methods and named tools, resources and prompts to matching principals.
/// Nothing is allowed unless some role allows it.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Role {
    #[schemars(length(min = 1, max = 63), pattern(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$"))]
    pub name: String,
    /// A principal has the role when any entry matches.
    #[schemars(length(min = 1, max = 64))]
    pub subjects: Vec<SubjectMatch>,
    /// MCP methods, exact or glob (`tools/*`). Lifecycle methods (`initialize`, `ping`,
    /// notifications) are always allowed to authenticated principals.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub methods: Vec<String>,
    /// Tool names or globs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub tools: Vec<String>,
    /// Resource URIs or globs (`file:///docs/**`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub resources: Vec<String>,
    /// Prompt names or globs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub prompts: Vec<String>,
    /// Principals with this role may approve plans of mutating tools.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub approver: bool,
}

impl Role {
    pub fn allows_method(&self, method: &str) -> bool {
        self.methods.iter().any(|m| glob_matches(m, method))
    }
}

// ---------------------------------------------------------------------------------------------
// Tools

/// What calling a tool can do. Server annotations can only make a tool stricter than this.
#[derive(
    Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord,
)]
#[serde(rename_all = "camelCase")]
pub enum ToolEffect {
    Read,
    Write,
    Destructive,
}

/// JSON type an argument must have.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum ArgumentType {
    String,
    Integer,
    Number,
    Boolean,
    Array,
    Object,
}

/// URL constraints for an argument that names something the server will fetch.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UrlRule {
    /// Allowed schemes; default `https` only.
    #[serde(default = "default_schemes")]
    #[schemars(length(min = 1, max = 8))]
    pub schemes: Vec<String>,
    /// Allowed hosts: exact names or `*.example.com`. Empty: any public host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128))]
    pub hosts: Vec<String>,
    /// Allowed ports; empty: the scheme's default port only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(range(min = 1, max = 65535)))]
    pub ports: Vec<u16>,
}

fn default_schemes() -> Vec<String> {
    vec!["https".to_string()]
}

/// Whether a string argument may hold arbitrary text.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FreeText {
    /// Any text within the other constraints.
    #[default]
    Allow,
    /// The value must be pinned by `enum`, `pattern`, `pathRoots` or `url`, and may not
    /// contain control characters or shell metacharacters.
    Refuse,
}

/// Constraints on one argument of a tool call, checked by the gateway before forwarding.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ArgumentRule {
    /// Argument name, or a JSON pointer such as `/options/path` for nested values. A `*`
    /// segment matches every element of an array or every member of an object, so `/files/*`
    /// reaches each path of a list and `/targets/*/url` each target's URL; the rule applies to
    /// every value it reaches.
    #[schemars(length(min = 1, max = 256))]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r#type: Option<ArgumentType>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub required: bool,
    /// The value is a filesystem path that must normalise to a location under one of these
    /// absolute roots. `..`, encoded traversal, NUL, backslashes and device paths are refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(pattern(r"^/[^\x00]*$")))]
    pub path_roots: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<UrlRule>,
    /// An RE2-style regular expression the whole value must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub pattern: Option<String>,
    /// The value must be one of these strings.
    #[serde(default, rename = "enum", skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub one_of: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 67108864))]
    pub min_length: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 67108864))]
    pub max_length: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maximum: Option<f64>,
    #[serde(default)]
    pub free_text: FreeText,
}

impl ArgumentRule {
    /// Whether the rule says which values are allowed (enum, pattern, path roots or a URL
    /// rule), as opposed to only bounding them; `freeText: Refuse` needs one of these.
    pub fn pins_values(&self) -> bool {
        !self.one_of.is_empty()
            || self.pattern.is_some()
            || !self.path_roots.is_empty()
            || self.url.is_some()
    }
}

/// How the plan step of an approval obtains a preview of the change.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DryRun {
    /// Boolean argument that makes the tool report what it would do without doing it.
    #[schemars(length(min = 1, max = 256))]
    pub argument: String,
}

/// Policy for one tool of the server.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ToolPolicy {
    #[schemars(length(min = 1, max = 256))]
    pub name: String,
    pub effect: ToolEffect,
    /// Calls run only after an approver approved their exact plan. Default: `true` for
    /// `write` and `destructive` tools. A `destructive` tool without approval is refused at
    /// admission.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_approval: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<DryRun>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub arguments: Vec<ArgumentRule>,
    /// Refuse arguments that no rule names and the tool's `inputSchema` does not declare
    /// (default). `false` passes undeclared arguments to the server.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub deny_unlisted_arguments: bool,
    /// Calls per minute per principal for this tool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000000))]
    pub rate_per_minute: Option<u32>,
    /// The reviewed definition of the tool (`palisade pin` writes it). A live definition
    /// that differs is hidden from `tools/list` and its calls are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin: Option<ToolPin>,
}

/// Digests of a tool's reviewed definition: the whole definition (`definition`: SHA-256 of
/// the canonical JSON of its name, title, description, inputSchema, outputSchema and
/// annotations), and, so that a change can be named, each of those fields (the first 16 hex
/// digits of the SHA-256 of its canonical JSON, `null` when absent).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ToolPin {
    #[schemars(regex(pattern = r"^[0-9a-f]{64}$"))]
    pub definition: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9a-f]{16}$"))]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9a-f]{16}$"))]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9a-f]{16}$"))]
    pub input_schema: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9a-f]{16}$"))]
    pub output_schema: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9a-f]{16}$"))]
    pub annotations: Option<String>,
}

impl ToolPin {
    /// The pinned fields by their names in a tool definition.
    pub fn fields(&self) -> [(&'static str, Option<&str>); 5] {
        [
            ("title", self.title.as_deref()),
            ("description", self.description.as_deref()),
            ("inputSchema", self.input_schema.as_deref()),
            ("outputSchema", self.output_schema.as_deref()),
            ("annotations", self.annotations.as_deref()),
        ]
    }
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

impl ToolPolicy {
    pub fn approval_required(&self) -> bool {
        self.require_approval.unwrap_or(self.effect != ToolEffect::Read)
    }
}

/// What happens to a tool the spec does not list.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum UnlistedTools {
    /// Hidden from `tools/list` and refused (fail closed).
    #[default]
    Deny,
    /// Treated as `read`, unless the server's own annotations say it is destructive.
    AllowAsRead,
    /// Treated as `write`: every call needs approval.
    RequireApproval,
}

/// What the gateway does when arguments try to switch off a safety mechanism.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SafetyFlagAction {
    /// The call is refused and a security event is emitted.
    #[default]
    Refuse,
    /// The argument is removed before forwarding and a security event is emitted.
    Strip,
}

fn default_safety_flags() -> Vec<String> {
    [
        "dangerouslySkipApproval",
        "dangerously_skip_approval",
        "skipApproval",
        "skip_approval",
        "noConfirm",
        "no_confirm",
        "skipConfirmation",
        "bypassPolicy",
        "force",
        "yolo",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Defaults for tools that the spec does not list, and instruction-smuggling defence.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ToolDefaults {
    #[serde(default)]
    pub unlisted: UnlistedTools,
    /// Argument names (at any depth) that model output may not set.
    #[serde(default = "default_safety_flags")]
    #[schemars(length(max = 64))]
    pub safety_flags: Vec<String>,
    #[serde(default)]
    pub safety_flag_action: SafetyFlagAction,
    /// What the gateway does with tool definitions whose text is aimed at the model rather
    /// than the user (tool poisoning).
    #[serde(default)]
    pub screening: Screening,
}

impl Default for ToolDefaults {
    fn default() -> Self {
        ToolDefaults {
            unlisted: UnlistedTools::Deny,
            safety_flags: default_safety_flags(),
            safety_flag_action: SafetyFlagAction::Refuse,
            screening: Screening::default(),
        }
    }
}

/// What happens to a tool whose definition the screening flags.
#[derive(
    Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord,
)]
pub enum ScreeningAction {
    /// A security event; the tool stays available.
    Warn,
    /// A security event; the tool is hidden from `tools/list` and its calls are refused.
    Hide,
    /// A security event; every tool of the server is withheld (listings are empty and calls
    /// refused) while any definition is flagged.
    Refuse,
}

/// Screening of the text in tool definitions (descriptions and titles, the tool's and those
/// inside its schemas), by kind of finding.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Screening {
    /// Invisible, bidirectional-control and Unicode tag characters (text the user does not
    /// see but the model reads). Default: `Hide`.
    #[serde(default = "screen_hide")]
    pub hidden_text: ScreeningAction,
    /// Markup and phrases that address the model (`<IMPORTANT>`, "ignore previous
    /// instructions", "do not tell the user", read a file and pass its content...).
    /// Default: `Hide`.
    #[serde(default = "screen_hide")]
    pub instructions: ScreeningAction,
    /// URLs and absolute file paths in the text. Default: `Warn`.
    #[serde(default = "screen_warn")]
    pub links: ScreeningAction,
}

fn screen_hide() -> ScreeningAction {
    ScreeningAction::Hide
}

fn screen_warn() -> ScreeningAction {
    ScreeningAction::Warn
}

impl Default for Screening {
    fn default() -> Self {
        Screening {
            hidden_text: ScreeningAction::Hide,
            instructions: ScreeningAction::Hide,
            links: ScreeningAction::Warn,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Limits

macro_rules! defaults {
    ($($name:ident: $ty:ty = $value:expr;)*) => {
        $(fn $name() -> $ty { $value })*
    };
}

defaults! {
    d_max_message_bytes: u32 = 1024 * 1024;
    d_max_sse_event_bytes: u32 = 1024 * 1024;
    d_request_timeout: u32 = 30;
    d_idle_timeout: u32 = 300;
    d_in_flight_session: u32 = 16;
    d_in_flight_total: u32 = 256;
    d_requests_per_minute: u32 = 600;
    d_tool_calls_session: u32 = 1000;
    d_mutations_session: u32 = 20;
    d_tool_calls_principal_hour: u32 = 5000;
    d_mutations_principal_hour: u32 = 100;
    d_chain_depth: u32 = 16;
    d_result_bytes: u32 = 256 * 1024;
    d_result_lines: u32 = 5000;
}

/// Size, time, concurrency and budget bounds enforced by the gateway.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Limits {
    /// Largest JSON-RPC message accepted in either direction, in bytes.
    #[serde(default = "d_max_message_bytes")]
    #[schemars(range(min = 1024, max = 67108864))]
    pub max_message_bytes: u32,
    /// Largest single SSE event, in bytes.
    #[serde(default = "d_max_sse_event_bytes")]
    #[schemars(range(min = 1024, max = 67108864))]
    pub max_sse_event_bytes: u32,
    #[serde(default = "d_request_timeout")]
    #[schemars(range(min = 1, max = 3600))]
    pub request_timeout_seconds: u32,
    /// Sessions and connections idle for this long are closed.
    #[serde(default = "d_idle_timeout")]
    #[schemars(range(min = 1, max = 86400))]
    pub idle_timeout_seconds: u32,
    #[serde(default = "d_in_flight_session")]
    #[schemars(range(min = 1, max = 1024))]
    pub max_in_flight_per_session: u32,
    #[serde(default = "d_in_flight_total")]
    #[schemars(range(min = 1, max = 65536))]
    pub max_in_flight: u32,
    /// Requests per minute per principal.
    #[serde(default = "d_requests_per_minute")]
    #[schemars(range(min = 1, max = 1000000))]
    pub requests_per_minute: u32,
    #[serde(default = "d_tool_calls_session")]
    #[schemars(range(min = 1, max = 1000000))]
    pub max_tool_calls_per_session: u32,
    /// Calls of `write`/`destructive` tools per session.
    #[serde(default = "d_mutations_session")]
    #[schemars(range(min = 0, max = 1000000))]
    pub max_mutations_per_session: u32,
    #[serde(default = "d_tool_calls_principal_hour")]
    #[schemars(range(min = 1, max = 100000000))]
    pub max_tool_calls_per_principal_per_hour: u32,
    #[serde(default = "d_mutations_principal_hour")]
    #[schemars(range(min = 0, max = 100000000))]
    pub max_mutations_per_principal_per_hour: u32,
    /// Longest chain of tool calls linked through `_meta` (a call made while handling another).
    #[serde(default = "d_chain_depth")]
    #[schemars(range(min = 1, max = 256))]
    pub max_chain_depth: u32,
    /// Tool results and resource contents are cut to this many bytes (with pagination).
    #[serde(default = "d_result_bytes")]
    #[schemars(range(min = 1024, max = 67108864))]
    pub max_result_bytes: u32,
    #[serde(default = "d_result_lines")]
    #[schemars(range(min = 1, max = 100000000))]
    pub max_result_lines: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: d_max_message_bytes(),
            max_sse_event_bytes: d_max_sse_event_bytes(),
            request_timeout_seconds: d_request_timeout(),
            idle_timeout_seconds: d_idle_timeout(),
            max_in_flight_per_session: d_in_flight_session(),
            max_in_flight: d_in_flight_total(),
            requests_per_minute: d_requests_per_minute(),
            max_tool_calls_per_session: d_tool_calls_session(),
            max_mutations_per_session: d_mutations_session(),
            max_tool_calls_per_principal_per_hour: d_tool_calls_principal_hour(),
            max_mutations_per_principal_per_hour: d_mutations_principal_hour(),
            max_chain_depth: d_chain_depth(),
            max_result_bytes: d_result_bytes(),
            max_result_lines: d_result_lines(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// stdio sandbox

defaults! {
    d_cpu_seconds: u64 = 3600;
    d_address_space: u64 = 4 * 1024 * 1024 * 1024;
    d_open_files: u64 = 1024;
    d_processes: u64 = 256;
}

/// Process limits the stdio bridge applies to the server it launches (`setrlimit`).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Sandbox {
    /// RLIMIT_CPU: CPU seconds before the server is killed.
    #[serde(default = "d_cpu_seconds")]
    #[schemars(range(min = 1, max = 31536000))]
    pub cpu_seconds: u64,
    /// RLIMIT_AS: address-space bytes (Node and the JVM reserve a lot; keep it generous).
    #[serde(default = "d_address_space")]
    #[schemars(range(min = 16777216, max = 1099511627776i64))]
    pub address_space_bytes: u64,
    /// RLIMIT_NOFILE.
    #[serde(default = "d_open_files")]
    #[schemars(range(min = 16, max = 1048576))]
    pub open_files: u64,
    /// RLIMIT_NPROC: processes and threads of the server's user.
    #[serde(default = "d_processes")]
    #[schemars(range(min = 1, max = 65536))]
    pub processes: u64,
    /// Environment variables passed through to the server besides those the spec declares.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 64),
        inner(length(min = 1, max = 256), pattern(r"^[A-Za-z_][A-Za-z0-9_]*$"))
    )]
    pub env_allow: Vec<String>,
    /// A server process is stopped (its whole process group) after this many seconds, and the
    /// session it served ends; the client opens a new one. Unset: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 10, max = 31536000))]
    pub max_lifetime_seconds: Option<u64>,
}

impl Default for Sandbox {
    fn default() -> Self {
        Sandbox {
            cpu_seconds: d_cpu_seconds(),
            address_space_bytes: d_address_space(),
            open_files: d_open_files(),
            processes: d_processes(),
            env_allow: Vec::new(),
            max_lifetime_seconds: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_matches("tools/*", "tools/list"));
        assert!(!glob_matches("tools/*", "tools/list/x"));
        assert!(glob_matches("file:///docs/**", "file:///docs/a/b.md"));
        assert!(!glob_matches("file:///docs/*", "file:///docs/a/b.md"));
        assert!(glob_matches("read_*", "read_file"));
        assert!(!glob_matches("read_*", "write_file"));
        assert!(glob_matches("*", "anything"));
        assert!(glob_matches("get_?", "get_x"));
        assert!(!glob_matches("get_?", "get_xy"));
        assert!(glob_matches("exact", "exact"));
        assert!(!glob_matches("exact", "exactly"));
    }

    #[test]
    fn approval_defaults_follow_effect() {
        let tool = |effect, require_approval| ToolPolicy {
            name: "t".into(),
            effect,
            require_approval,
            dry_run: None,
            arguments: vec![],
            deny_unlisted_arguments: true,
            rate_per_minute: None,
            pin: None,
        };
        assert!(!tool(ToolEffect::Read, None).approval_required());
        assert!(tool(ToolEffect::Write, None).approval_required());
        assert!(tool(ToolEffect::Destructive, None).approval_required());
        assert!(!tool(ToolEffect::Destructive, Some(false)).approval_required());
    }

    #[test]
    fn defaults_apply_when_fields_are_missing() {
        let limits: Limits = serde_json::from_str("{}").unwrap();
        assert_eq!(limits, Limits::default());
        assert_eq!(limits.max_message_bytes, 1024 * 1024);
        let protocol: ProtocolSpec = serde_json::from_str("{}").unwrap();
        assert_eq!(protocol.versions, vec![crate::revisions::LATEST.to_string()]);
        assert!(serde_json::from_str::<Limits>(r#"{"maxMessageByte": 5}"#).is_err());
    }
}

/// When a virtual server's names carry their server's prefix (`<prefix><separator><name>`).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PrefixMode {
    /// Every tool, prompt and resource name: stable whatever the other servers list.
    #[default]
    Always,
    /// Only names that more than one server lists; the others keep their own.
    OnConflict,
    /// Never: a name two servers list is refused at admission (when the servers' specs list
    /// it) and withheld by the gateway (when only their live listings show it).
    Never,
}

/// What happens to a name longer than the clients' limit once prefixed.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LongNames {
    /// Cut to the limit with a hash of the whole name at its end
    /// (`<head>-<8 hex of SHA-256>`): the same name always gives the same result.
    #[default]
    Shorten,
    /// Withheld, and reported.
    Refuse,
}

/// How a virtual server names the tools, prompts and resources of its servers.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Naming {
    #[serde(default)]
    pub prefix: PrefixMode,
    /// Between prefix and name (tool names allow letters, digits, `_`, `-` and `.`).
    #[serde(default = "default_separator")]
    #[schemars(length(min = 1, max = 4), regex(pattern = r"^[A-Za-z0-9_.-]+$"))]
    pub separator: String,
    /// Longest name handed to clients (many clients and model APIs stop at 64).
    #[serde(default = "default_max_name_length")]
    #[schemars(range(min = 16, max = 128))]
    pub max_length: u32,
    #[serde(default)]
    pub long_names: LongNames,
}

fn default_separator() -> String {
    "_".to_string()
}

fn default_max_name_length() -> u32 {
    64
}

impl Default for Naming {
    fn default() -> Self {
        Naming {
            prefix: PrefixMode::Always,
            separator: default_separator(),
            max_length: default_max_name_length(),
            long_names: LongNames::Shorten,
        }
    }
}
