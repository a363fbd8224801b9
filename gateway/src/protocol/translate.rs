//! Exact translation between the protocol eras, in one place: what a stateless request loses
//! on its way to a session-era server (the envelope in `_meta`), what a session-era result
//! gains on its way back (`resultType`, caching fields), `server/discover` answered from the
//! handshake, and the negotiation of tasks away (so every result passes result policy
//! synchronously). Pure.

use serde_json::{Value, json};

/// Keys of `_meta` that belong to the stateless envelope and mean nothing to a session-era server.
pub const ENVELOPE_KEYS: &[&str] = &[
    "io.modelcontextprotocol/protocolVersion",
    "io.modelcontextprotocol/clientCapabilities",
    "io.modelcontextprotocol/clientInfo",
    "io.modelcontextprotocol/logLevel",
];

/// Results of these methods are cacheable in the stateless era and carry ttlMs/cacheScope.
pub const CACHEABLE: &[&str] = &[
    "tools/list",
    "resources/list",
    "resources/templates/list",
    "prompts/list",
    "resources/read",
    "server/discover",
];

/// Removes the stateless envelope from a request's params (for a session-era server).
pub fn strip_envelope(params: &mut Option<Value>) {
    if let Some(meta) =
        params.as_mut().and_then(|p| p.get_mut("_meta")).and_then(Value::as_object_mut)
    {
        meta.retain(|k, _| !ENVELOPE_KEYS.contains(&k.as_str()));
    }
}

/// Completes a session-era result for a stateless client: the stateless revision requires
/// `resultType`, and caching fields on cacheable results (no caching is the exact meaning).
pub fn stateless_result(method: &str, result: &mut Value) {
    if let Some(r) = result.as_object_mut() {
        r.entry("resultType").or_insert_with(|| json!("complete"));
        if CACHEABLE.contains(&method) {
            r.entry("ttlMs").or_insert_with(|| json!(0));
            r.entry("cacheScope").or_insert_with(|| json!("private"));
        }
    }
}

/// Removes task support (2025-11-25) from the capabilities in `initialize` params or result.
/// A task-augmented request is answered later through `tasks/result`, which would carry a tool
/// result past result policy; without the capability on either side, peers run every request
/// synchronously, as the revision prescribes for receivers without task support.
pub fn without_tasks(init: &mut Value) {
    if let Some(caps) = init.get_mut("capabilities").and_then(Value::as_object_mut) {
        caps.remove("tasks");
    }
}

/// `server/discover` answered from what a session-era handshake said.
pub fn discover_result(
    id: &Value,
    versions: &[&str],
    capabilities: Option<Value>,
    instructions: Option<String>,
    server_info: Option<Value>,
) -> Value {
    let mut result = json!({
        "resultType": "complete",
        "supportedVersions": versions,
        "capabilities": capabilities.unwrap_or(json!({})),
        "ttlMs": 0,
        "cacheScope": "private",
    });
    if let Some(i) = instructions {
        result["instructions"] = Value::String(i);
    }
    if let Some(s) = server_info {
        result["_meta"] = json!({"io.modelcontextprotocol/serverInfo": s});
    }
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_envelope_is_stripped_and_results_completed() {
        let mut p = Some(json!({"_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "traceparent": "00-x"}}));
        strip_envelope(&mut p);
        assert_eq!(p, Some(json!({"_meta": {"traceparent": "00-x"}})));
        let mut r = json!({"tools": []});
        stateless_result("tools/list", &mut r);
        assert_eq!(
            r,
            json!({"tools": [], "resultType": "complete", "ttlMs": 0, "cacheScope": "private"})
        );
        let mut r = json!({"content": []});
        stateless_result("tools/call", &mut r);
        assert_eq!(r, json!({"content": [], "resultType": "complete"}));
    }
}
