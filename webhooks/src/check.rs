//! `palisade check`: the admission verdict for every object in YAML files, offline, with the
//! same rules the webhook applies. Malformed YAML, unknown kinds, unknown fields and wrong
//! types are refused with the file, the line and the field path, never a panic.

use palisade_api::mcppolicy::MCPPolicy;
use palisade_api::mcpserver::MCPServer;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::rules::{policy, server, workload};
use crate::schema::{CrdSchemas, SchemaError};
use crate::verdict::Verdict;

/// One YAML document of a file, with the line it starts on.
#[derive(Debug, Clone)]
pub struct Document {
    pub index: usize,
    /// 1-based line of the document's first line in the file.
    pub line: usize,
    pub text: String,
}

/// Splits a YAML stream at `---` document markers, keeping line numbers.
pub fn split_documents(text: &str) -> Vec<Document> {
    let mut docs = Vec::new();
    let mut current = String::new();
    let mut start = 1;
    for (i, line) in text.lines().enumerate() {
        let marker = line == "---" || line.starts_with("--- ") || line == "...";
        if marker {
            if !current.trim().is_empty() {
                docs.push(Document {
                    index: docs.len(),
                    line: start,
                    text: std::mem::take(&mut current),
                });
            }
            current.clear();
            start = i + 2;
            // Content after `--- ` on the same line belongs to the next document.
            if let Some(rest) = line.strip_prefix("--- ") {
                current.push_str(rest);
                current.push('\n');
                start = i + 1;
            }
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    if !current.trim().is_empty() {
        docs.push(Document { index: docs.len(), line: start, text: current });
    }
    docs
}

/// Why a document could not be reviewed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoadError {
    /// 1-based line in the file, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
    /// Field path, when the problem is a field.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    pub message: String,
}

/// What a document holds.
#[derive(Debug, Clone)]
pub enum Object {
    Server(Box<MCPServer>),
    Policy(Box<MCPPolicy>),
    Workload {
        kind: String,
        value: Value,
    },
    /// A built-in kind that cannot run an MCP server.
    Other {
        kind: String,
        value: Value,
    },
}

impl Object {
    pub fn kind(&self) -> &str {
        match self {
            Object::Server(_) => "MCPServer",
            Object::Policy(_) => "MCPPolicy",
            Object::Workload { kind, .. } | Object::Other { kind, .. } => kind,
        }
    }

    pub fn name(&self) -> String {
        let meta = match self {
            Object::Server(s) => s.metadata.name.clone(),
            Object::Policy(p) => p.metadata.name.clone(),
            Object::Workload { value, .. } | Object::Other { value, .. } => {
                value.pointer("/metadata/name").and_then(Value::as_str).map(str::to_string)
            }
        };
        meta.unwrap_or_else(|| "<unnamed>".to_string())
    }
}

/// Built-in kinds that admission does not review (they cannot run an MCP server); a file
/// that mixes them with MCPServers checks cleanly.
const NOT_REVIEWED: &[&str] = &[
    "Namespace",
    "Secret",
    "ConfigMap",
    "Service",
    "ServiceAccount",
    "NetworkPolicy",
    "Role",
    "RoleBinding",
    "ClusterRole",
    "ClusterRoleBinding",
    "PodDisruptionBudget",
    "ResourceQuota",
    "LimitRange",
    "CustomResourceDefinition",
];

const TOP_LEVEL: &[&str] = &["apiVersion", "kind", "metadata", "spec", "status"];

fn explain_serde(message: &str) -> String {
    // serde: "unknown field `hostNetwork`, expected one of `image`, ..."
    if let Some(rest) = message.strip_prefix("unknown field `")
        && let Some((field, _)) = rest.split_once('`')
    {
        if server::SMUGGLED_FIELDS.contains(&field) {
            return format!(
                "{field} is not an MCPServer field: Palisade renders a hardened pod and never \
                 lets a spec set host, privileged or pod-level security settings; remove it"
            );
        }
        return format!("unknown field {field}; remove it or check its spelling (see docs/api.md)");
    }
    if let Some(rest) = message.strip_prefix("missing field `")
        && let Some((field, _)) = rest.split_once('`')
    {
        let why = match field {
            "auth" => "the gateway is reachable over the network: configure auth.oidc or auth.mtls",
            "resources" => "set resources.limits.cpu and resources.limits.memory",
            "image" => "name the server image, pinned by digest",
            "transport" => "one of stdio, streamable-http, sse",
            _ => "add it",
        };
        return format!("{field} is required: {why}");
    }
    message.to_string()
}

/// Parses a palisade.dev object strictly from JSON (an AdmissionReview's object): unknown
/// fields anywhere are refused with their path.
pub fn parse_object<T: DeserializeOwned>(value: &Value) -> Result<T, LoadError> {
    if let Some(map) = value.as_object() {
        for key in map.keys() {
            if !TOP_LEVEL.contains(&key.as_str()) {
                return Err(LoadError {
                    line: None,
                    column: None,
                    field: Some(key.clone()),
                    message: format!(
                        "unknown top-level field {key}; objects have apiVersion, kind, metadata, spec and status"
                    ),
                });
            }
        }
    }
    serde_path_to_error::deserialize::<_, T>(value.clone()).map_err(|e| {
        let mut path = e.path().to_string();
        let inner = e.into_inner().to_string();
        // A missing field is reported at the field itself, not at its parent.
        if let Some(rest) = inner.strip_prefix("missing field `")
            && let Some((field, _)) = rest.split_once('`')
        {
            path = if path.is_empty() || path == "." {
                field.to_string()
            } else {
                format!("{path}.{field}")
            };
        }
        LoadError { line: None, column: None, message: explain_serde(&inner), field: Some(path) }
    })
}

/// Like [`parse_object`], and locates an error in the YAML document it came from.
fn parse_typed<T: DeserializeOwned>(value: &Value, doc: &Document) -> Result<T, LoadError> {
    parse_object(value).map_err(|mut e| {
        if e.line.is_none()
            && value.as_object().is_some_and(|m| m.keys().all(|k| TOP_LEVEL.contains(&k.as_str())))
        {
            let location =
                serde_saphyr::from_str::<T>(&doc.text).err().and_then(|ye| ye.location());
            e.line = location.map(|l| doc.line + l.line() as usize - 1);
            e.column = location.map(|l| l.column() as usize);
        }
        e
    })
}

/// Loads one document: YAML syntax, then kind dispatch, then strict typing.
pub fn load(doc: &Document) -> Result<Option<Object>, LoadError> {
    let value: Value = serde_saphyr::from_str(&doc.text).map_err(|e| {
        let loc = e.location();
        LoadError {
            line: loc.map(|l| doc.line + l.line() as usize - 1),
            column: loc.map(|l| l.column() as usize),
            field: None,
            message: format!("malformed YAML: {}", first_line(&e.to_string())),
        }
    })?;
    if value.is_null() {
        return Ok(None);
    }
    let at_doc = |message: String, field: Option<&str>| LoadError {
        line: Some(doc.line),
        column: None,
        field: field.map(str::to_string),
        message,
    };
    let Some(map) = value.as_object() else {
        return Err(at_doc(
            "expected a Kubernetes object (a mapping with apiVersion and kind)".into(),
            None,
        ));
    };
    let api_version = map.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
    let kind = map.get("kind").and_then(Value::as_str).unwrap_or_default();
    if api_version.is_empty() || kind.is_empty() {
        return Err(at_doc("missing apiVersion or kind".into(), None));
    }
    let group = api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
    match (group, kind) {
        ("palisade.dev", _) if api_version != palisade_api::API_VERSION => Err(at_doc(
            format!(
                "unknown version {api_version}; this Palisade serves {}",
                palisade_api::API_VERSION
            ),
            Some("apiVersion"),
        )),
        ("palisade.dev", "MCPServer") => {
            let mut s: MCPServer = parse_typed(&value, doc)?;
            if s.metadata.name.as_deref().unwrap_or_default().is_empty() {
                return Err(at_doc("metadata.name is required".into(), Some("metadata.name")));
            }
            s.metadata.namespace.get_or_insert_with(|| "default".to_string());
            Ok(Some(Object::Server(Box::new(s))))
        }
        ("palisade.dev", "MCPPolicy") => {
            let p: MCPPolicy = parse_typed(&value, doc)?;
            if p.metadata.name.as_deref().unwrap_or_default().is_empty() {
                return Err(at_doc("metadata.name is required".into(), Some("metadata.name")));
            }
            Ok(Some(Object::Policy(Box::new(p))))
        }
        ("palisade.dev", other) => Err(at_doc(
            format!("unknown kind {other}; palisade.dev has MCPServer and MCPPolicy"),
            Some("kind"),
        )),
        ("" | "apps" | "batch", k) if workload::is_workload_kind(k) => {
            Ok(Some(Object::Workload { kind: k.to_string(), value }))
        }
        (_, k) if NOT_REVIEWED.contains(&k) => {
            Ok(Some(Object::Other { kind: k.to_string(), value }))
        }
        _ => Err(at_doc(
            format!(
                "unsupported kind {kind} ({api_version}); palisade check reviews MCPServer, MCPPolicy and workloads (Pod, Deployment, ReplicaSet, StatefulSet, DaemonSet, Job, CronJob)"
            ),
            Some("kind"),
        )),
    }
}

/// Kind and name of a document that failed to load, for the report, when they can be read.
fn peek(doc: &Document) -> (Option<String>, Option<String>) {
    let value: Option<Value> = serde_saphyr::from_str(&doc.text).ok();
    let get = |p: &str| {
        value.as_ref().and_then(|v| v.pointer(p)).and_then(Value::as_str).map(str::to_string)
    };
    (get("/kind"), get("/metadata/name"))
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().to_string()
}

/// The verdict for one document.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub file: String,
    pub line: usize,
    pub kind: String,
    pub name: String,
    pub admitted: bool,
    /// Set when the object does not claim to be an MCP workload and was not reviewed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<LoadError>,
    #[serde(flatten)]
    pub verdict: Verdict,
}

/// Reviews every document of `files` (name, content) against `policies`: the CRDs' own schema
/// and CEL rules (what the API server refuses before admission), then the admission rules.
pub fn check(files: &[(String, String)], policies: &[MCPPolicy]) -> Vec<Report> {
    let policy_refs: Vec<&MCPPolicy> = policies.iter().collect();
    // The schemas are generated from the types compiled into this binary; if they could not
    // be used, nothing is admitted (fail closed).
    let schemas = CrdSchemas::new();
    let mut reports = Vec::new();
    for (file, text) in files {
        for doc in split_documents(text) {
            let mut report = Report {
                file: file.clone(),
                line: doc.line,
                kind: String::new(),
                name: String::new(),
                admitted: false,
                note: None,
                error: None,
                verdict: Verdict::default(),
            };
            match load(&doc) {
                Ok(None) => continue,
                Err(e) => {
                    let (kind, name) = peek(&doc);
                    report.kind = kind.unwrap_or_else(|| "?".into());
                    report.name = name.unwrap_or_else(|| format!("document {}", doc.index + 1));
                    report.error = Some(e);
                }
                Ok(Some(obj)) => {
                    report.kind = obj.kind().to_string();
                    report.name = obj.name();
                    match &obj {
                        Object::Server(s) => {
                            // Offline, namespace labels are unknown: every given policy applies.
                            let selecting: Vec<&MCPPolicy> = policy_refs
                                .iter()
                                .copied()
                                .filter(|p| policy::selects(p, None))
                                .collect();
                            report.verdict = structure(&schemas, |c| c.server(s));
                            report.verdict.merge(server::review(s, &selecting));
                        }
                        Object::Policy(p) => {
                            report.verdict = structure(&schemas, |c| c.policy(p));
                            report.verdict.merge(policy::review_policy(p));
                        }
                        Object::Other { kind, .. } => {
                            report.note =
                                Some(format!("{kind} cannot run an MCP server: not reviewed"))
                        }
                        Object::Workload { kind, value } => {
                            match workload::review_workload(
                                value,
                                kind,
                                &workload::Expectations::default(),
                            ) {
                                Some(v) => report.verdict = v,
                                None => {
                                    report.note = Some(format!(
                                        "no {} label: not an MCP workload, not reviewed",
                                        palisade_api::MCP_SERVER_LABEL
                                    ))
                                }
                            }
                        }
                    }
                    report.admitted = report.verdict.allowed();
                }
            }
            reports.push(report);
        }
    }
    reports
}

/// The CRD's verdict on an object, or a refusal when the schemas cannot be used.
fn structure(
    schemas: &Result<CrdSchemas, SchemaError>,
    f: impl Fn(&CrdSchemas) -> Verdict,
) -> Verdict {
    match schemas {
        Ok(c) => f(c),
        Err(e) => {
            let mut v = Verdict::default();
            v.deny("crd.schema", "<object>", e.to_string());
            v
        }
    }
}

/// Loads the MCPPolicy objects of a `--policy` file; any other content is an error.
pub fn load_policies(file: &str, text: &str) -> Result<Vec<MCPPolicy>, String> {
    let mut out = Vec::new();
    for doc in split_documents(text) {
        match load(&doc) {
            Ok(None) => {}
            Ok(Some(Object::Policy(p))) => {
                let mut v = structure(&CrdSchemas::new(), |c| c.policy(&p));
                v.merge(policy::review_policy(&p));
                if !v.allowed() {
                    return Err(format!(
                        "{file}:{}: MCPPolicy {} is invalid: {}",
                        doc.line,
                        p.metadata.name.clone().unwrap_or_default(),
                        v.message()
                    ));
                }
                out.push(*p);
            }
            Ok(Some(other)) => {
                return Err(format!(
                    "{file}:{}: expected MCPPolicy objects, found {}",
                    doc.line,
                    other.kind()
                ));
            }
            Err(e) => {
                return Err(format!("{file}:{}: {}", e.line.unwrap_or(doc.line), e.message));
            }
        }
    }
    Ok(out)
}
