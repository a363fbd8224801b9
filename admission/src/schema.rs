//! What the API server checks before admission runs, offline: the generated CRDs' OpenAPI
//! schema (types, ranges, lengths, patterns, list sizes) and their CEL rules. `palisade check`
//! applies both so that it refuses exactly what the API server refuses; in the cluster the API
//! server has already applied them when the webhook sees an object.

use jsonschema::Validator;
use palisade_crds::mcppolicy::MCPPolicy;
use palisade_crds::mcpserver::MCPServer;
use palisade_crds::mcpvirtualserver::MCPVirtualServer;
use serde::Serialize;
use serde_json::Value;

use crate::verdict::Verdict;

/// OpenAPI v3 (as CRDs use it) to JSON Schema: `nullable: true` becomes a `null` type, and
/// the Kubernetes extensions are dropped (CEL is evaluated on its own).
fn to_json_schema(v: &mut Value) {
    match v {
        Value::Object(m) => {
            if m.remove("nullable") == Some(Value::Bool(true))
                && let Some(t) = m.get("type").cloned()
            {
                m.insert("type".into(), Value::Array(vec![t, Value::String("null".into())]));
            }
            m.retain(|k, _| !k.starts_with("x-kubernetes-"));
            // `format: int32` and kin are not JSON Schema formats; ranges carry the bounds.
            if m.get("format").and_then(Value::as_str).is_some_and(|f| f != "date-time") {
                m.remove("format");
            }
            m.values_mut().for_each(to_json_schema);
        }
        Value::Array(a) => a.iter_mut().for_each(to_json_schema),
        _ => {}
    }
}

/// The CRD schema of one kind, ready to validate objects.
pub struct CrdSchema {
    validator: Validator,
}

#[derive(Debug, thiserror::Error)]
#[error("the generated CRD schema of {kind} cannot be used: {reason}")]
pub struct SchemaError {
    kind: String,
    reason: String,
}

impl CrdSchema {
    fn for_kind(kind: &str) -> Result<CrdSchema, SchemaError> {
        let err = |reason: String| SchemaError { kind: kind.to_string(), reason };
        let crd = palisade_crds::crds()
            .into_iter()
            .map(|(_, crd)| crd)
            .find(|crd| crd.spec.names.kind == kind)
            .ok_or_else(|| err("no such CRD".into()))?;
        let schema = crd
            .spec
            .versions
            .first()
            .and_then(|v| v.schema.as_ref())
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .ok_or_else(|| err("no openAPIV3Schema".into()))?;
        let mut schema = serde_json::to_value(schema).map_err(|e| err(e.to_string()))?;
        to_json_schema(&mut schema);
        let validator = jsonschema::validator_for(&schema).map_err(|e| err(e.to_string()))?;
        Ok(CrdSchema { validator })
    }

    /// Every place where `object` breaks the schema, as violations of `crd.schema`.
    fn check(&self, object: &Value, v: &mut Verdict) {
        for e in self.validator.iter_errors(object) {
            let field = dotted(&e.instance_path().to_string());
            v.deny("crd.schema", field, format!("{e} (the API server refuses this)"));
        }
    }
}

/// `/spec/egress/0/cidr` -> `spec.egress[0].cidr`.
fn dotted(pointer: &str) -> String {
    let mut out = String::new();
    for seg in pointer.split('/').filter(|s| !s.is_empty()) {
        let seg = seg.replace("~1", "/").replace("~0", "~");
        if seg.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(&format!("[{seg}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&seg);
        }
    }
    if out.is_empty() { "<object>".into() } else { out }
}

/// Both CRDs' schemas.
pub struct CrdSchemas {
    server: CrdSchema,
    policy: CrdSchema,
    virtual_server: CrdSchema,
}

impl CrdSchemas {
    pub fn new() -> Result<CrdSchemas, SchemaError> {
        Ok(CrdSchemas {
            server: CrdSchema::for_kind("MCPServer")?,
            policy: CrdSchema::for_kind("MCPPolicy")?,
            virtual_server: CrdSchema::for_kind("MCPVirtualServer")?,
        })
    }

    /// The API server's verdict on an MCPServer's structure: schema then CEL rules, on the
    /// object with its defaults applied (as the API server applies them before validating).
    pub fn server(&self, s: &MCPServer) -> Verdict {
        let mut v = Verdict::default();
        self.server.check(&typed(s), &mut v);
        if let Err(errors) = s.validate_cel() {
            cel_violations(
                &mut v,
                errors.into_vec().into_iter().map(|e| (e.field_path, e.message)),
            );
        }
        v
    }

    pub fn virtual_server(&self, s: &MCPVirtualServer) -> Verdict {
        let mut v = Verdict::default();
        self.virtual_server.check(&typed(s), &mut v);
        if let Err(errors) = s.validate_cel() {
            cel_violations(
                &mut v,
                errors.into_vec().into_iter().map(|e| (e.field_path, e.message)),
            );
        }
        v
    }

    pub fn policy(&self, p: &MCPPolicy) -> Verdict {
        let mut v = Verdict::default();
        self.policy.check(&typed(p), &mut v);
        if let Err(errors) = p.validate_cel() {
            cel_violations(
                &mut v,
                errors.into_vec().into_iter().map(|e| (e.field_path, e.message)),
            );
        }
        v
    }
}

fn typed<T: Serialize>(t: &T) -> Value {
    serde_json::to_value(t).unwrap_or(Value::Null)
}

fn cel_violations(v: &mut Verdict, errors: impl Iterator<Item = (String, String)>) {
    for (path, message) in errors {
        let field = if path.is_empty() { "<object>".to_string() } else { path };
        v.deny(
            "crd.cel",
            field,
            format!("{message} (a CEL rule of the CRD; the API server refuses this)"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointers_become_field_paths() {
        assert_eq!(dotted("/spec/egress/0/cidr"), "spec.egress[0].cidr");
        assert_eq!(dotted("/spec/resources/limits/cpu"), "spec.resources.limits.cpu");
        assert_eq!(dotted(""), "<object>");
    }
}
