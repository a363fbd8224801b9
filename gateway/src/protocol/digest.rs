//! The SHA-256 of a JSON value's canonical text (serde_json orders object keys): what audit
//! records and approval plans use to name parameters, results and plans.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// SHA-256 of a JSON value's canonical text (serde_json orders object keys).
pub fn digest(v: &Value) -> String {
    hex::encode(Sha256::digest(v.to_string().as_bytes()))
}
