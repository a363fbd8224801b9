//! The SHA-256 of a JSON value's canonical text (serde_json orders object keys): what audit
//! records and approval plans use to name parameters, results and plans. Tool pins use
//! [`canonical`], which orders keys itself, so that a pin never depends on a serde_json
//! feature another crate may switch on.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// SHA-256 of a JSON value's canonical text (serde_json orders object keys).
pub fn digest(v: &Value) -> String {
    hex::encode(Sha256::digest(v.to_string().as_bytes()))
}

/// Canonical JSON text: object keys in byte order at every depth, no whitespace, strings and
/// numbers as serde_json writes them.
pub fn canonical(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                if let Some(v) = m.get(k) {
                    write_canonical(v, out);
                }
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, v) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(v, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// SHA-256 (hex) of [`canonical`] text.
pub fn canonical_digest(v: &Value) -> String {
    hex::encode(Sha256::digest(canonical(v).as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_text_orders_keys_at_every_depth() {
        let a = json!({"b": [{"z": 1, "a": "x"}], "a": {"d": null, "c": 1.5}});
        assert_eq!(canonical(&a), r#"{"a":{"c":1.5,"d":null},"b":[{"a":"x","z":1}]}"#);
        let b: Value = serde_json::from_str(r#"{"a":{"d":null,"c":1.5},"b":[{"a":"x","z":1}]}"#)
            .unwrap_or_default();
        assert_eq!(canonical_digest(&a), canonical_digest(&b));
        assert_ne!(canonical_digest(&a), canonical_digest(&json!({"a": 1})));
    }
}
