//! `palisade check`: the admission verdict for every object in YAML files, offline, with the
//! same rules the webhook applies. Malformed YAML, unknown kinds, unknown fields and wrong
//! types are refused with the file, the line and the field path, never a panic.

use palisade_crds::mcppolicy::MCPPolicy;
use palisade_crds::mcpserver::MCPServer;
use serde::Serialize;
use serde_json::Value;

use crate::object::{self, NOT_REVIEWED, TOP_LEVEL};
pub use crate::object::{LoadError, Object};
use crate::review::{Facts, Review, review};
use crate::rules::workload;
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

/// Locates a typing error of an object of `kind` in the YAML document it came from.
fn locate(mut e: LoadError, kind: &str, value: &Value, doc: &Document) -> LoadError {
    let top_level_ok =
        value.as_object().is_some_and(|m| m.keys().all(|k| TOP_LEVEL.contains(&k.as_str())));
    if e.line.is_none() && top_level_ok {
        let location = match kind {
            "MCPServer" => serde_saphyr::from_str::<MCPServer>(&doc.text).err(),
            "MCPPolicy" => serde_saphyr::from_str::<MCPPolicy>(&doc.text).err(),
            _ => None,
        }
        .and_then(|ye| ye.location());
        e.line = location.map(|l| doc.line + l.line() as usize - 1);
        e.column = location.map(|l| l.column() as usize);
    }
    e
}

/// Loads one document: YAML syntax, then the kind's group and version, then strict typing.
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
    let known = match (group, kind) {
        ("palisade.dev", _) if api_version != palisade_crds::API_VERSION => {
            return Err(at_doc(
                format!(
                    "unknown version {api_version}; this Palisade serves {}",
                    palisade_crds::API_VERSION
                ),
                Some("apiVersion"),
            ));
        }
        ("palisade.dev", "MCPServer" | "MCPPolicy" | "MCPVirtualServer") => true,
        ("palisade.dev", other) => {
            return Err(at_doc(
                format!(
                    "unknown kind {other}; palisade.dev has MCPServer, MCPVirtualServer and MCPPolicy"
                ),
                Some("kind"),
            ));
        }
        ("" | "apps" | "batch", k) if workload::is_workload_kind(k) => true,
        (_, k) => NOT_REVIEWED.contains(&k),
    };
    let obj = match known.then(|| object::of_kind(kind, &value)) {
        Some(Ok(Some(obj))) => obj,
        Some(Err(e)) => return Err(locate(e, kind, &value, doc)),
        Some(Ok(None)) | None => {
            return Err(at_doc(
                format!(
                    "unsupported kind {kind} ({api_version}); palisade check reviews MCPServer, MCPVirtualServer, MCPPolicy and workloads (Pod, Deployment, ReplicaSet, StatefulSet, DaemonSet, Job, CronJob)"
                ),
                Some("kind"),
            ));
        }
    };
    let unnamed = |name: &Option<String>| name.as_deref().unwrap_or_default().is_empty();
    match obj {
        Object::Server(mut s) => {
            if unnamed(&s.metadata.name) {
                return Err(at_doc("metadata.name is required".into(), Some("metadata.name")));
            }
            s.metadata.namespace.get_or_insert_with(|| "default".to_string());
            Ok(Some(Object::Server(s)))
        }
        Object::VirtualServer(mut v) => {
            if unnamed(&v.metadata.name) {
                return Err(at_doc("metadata.name is required".into(), Some("metadata.name")));
            }
            v.metadata.namespace.get_or_insert_with(|| "default".to_string());
            Ok(Some(Object::VirtualServer(v)))
        }
        Object::Policy(p) if unnamed(&p.metadata.name) => {
            Err(at_doc("metadata.name is required".into(), Some("metadata.name")))
        }
        other => Ok(Some(other)),
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
    // The schemas are generated from the types compiled into this binary; if they could not
    // be used, nothing is admitted (fail closed).
    check_with(files, policies, &CrdSchemas::new())
}

/// [`check`] with the CRD schemas already compiled (they take most of a small check's time).
pub fn check_with(
    files: &[(String, String)],
    policies: &[MCPPolicy],
    schemas: &Result<CrdSchemas, SchemaError>,
) -> Vec<Report> {
    let policy_refs: Vec<&MCPPolicy> = policies.iter().collect();
    // Offline, namespace labels are unknown (every given policy applies) and claimed servers
    // cannot be looked up.
    // The MCPServers among the files, for the virtual servers that select them.
    let mut servers: Vec<palisade_crds::MCPServer> = Vec::new();
    for (_, text) in files {
        for doc in split_documents(text) {
            if let Ok(Some(Object::Server(s))) = load(&doc) {
                servers.push(*s);
            }
        }
    }
    let in_namespace = |ns: &str| -> Vec<palisade_crds::MCPServer> {
        servers.iter().filter(|s| s.metadata.namespace.as_deref() == Some(ns)).cloned().collect()
    };
    let facts = Facts {
        policies: &policy_refs,
        schemas: Some(schemas),
        servers: Some(&in_namespace),
        ..Facts::default()
    };
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
                    match review(&obj, &facts) {
                        Review::Verdict(v) => report.verdict = v,
                        Review::NotReviewed(note) => report.note = Some(note),
                    }
                    report.admitted = report.verdict.allowed();
                }
            }
            reports.push(report);
        }
    }
    reports
}

/// Loads the MCPPolicy objects of a `--policy` file; any other content is an error.
pub fn load_policies(file: &str, text: &str) -> Result<Vec<MCPPolicy>, String> {
    load_policies_with(file, text, &CrdSchemas::new())
}

/// [`load_policies`] with the CRD schemas already compiled.
pub fn load_policies_with(
    file: &str,
    text: &str,
    schemas: &Result<CrdSchemas, SchemaError>,
) -> Result<Vec<MCPPolicy>, String> {
    let mut out = Vec::new();
    for doc in split_documents(text) {
        match load(&doc) {
            Ok(None) => {}
            Ok(Some(Object::Policy(p))) => {
                let facts = Facts { schemas: Some(schemas), ..Facts::default() };
                let v = match review(&Object::Policy(p.clone()), &facts) {
                    Review::Verdict(v) => v,
                    Review::NotReviewed(note) => return Err(note),
                };
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
