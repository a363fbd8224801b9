//! Mediation of everything the server says to the client (and so to the model). Results of
//! tools, resources and prompts are bounded in bytes and lines and have credentials redacted;
//! server-authored text (errors and their data, failed tool results, log and progress
//! messages, sampling and elicitation requests, descriptions in listings, instructions) is
//! also sanitised: internal paths, addresses and stack traces are masked.

use std::collections::BTreeMap;

use palisade_core::secrets::{self, SecretKind};
use palisade_core::spec::Limits;
use serde_json::{Value, json};

/// What mediation did to one result, for the audit record.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Mediation {
    pub redactions: BTreeMap<SecretKind, usize>,
    pub truncated_bytes: usize,
    /// Strings in which internal paths, addresses or stack traces were masked.
    pub sanitized: usize,
}

impl Mediation {
    pub fn redaction_counts(&self) -> Value {
        Value::Object(
            self.redactions.iter().map(|(k, n)| (k.as_str().to_string(), json!(n))).collect(),
        )
    }

    pub fn total_redactions(&self) -> usize {
        self.redactions.values().sum()
    }
}

struct Budget {
    bytes: usize,
    lines: usize,
}

/// Cuts `s` to what remains of the budget, at a character boundary.
fn bound(s: &mut String, budget: &mut Budget, m: &mut Mediation) {
    let mut cut = s.len().min(budget.bytes);
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    if budget.lines == 0 {
        cut = 0;
    } else if let Some((i, _)) = s[..cut].match_indices('\n').nth(budget.lines - 1) {
        cut = i;
    }
    let lines = s[..cut].matches('\n').count() + usize::from(cut > 0);
    if cut < s.len() {
        m.truncated_bytes += s.len() - cut;
        let omitted = s.len() - cut;
        s.truncate(cut);
        s.push_str(&format!(
            "\n[truncated by the gateway: {omitted} more bytes; ask for a narrower range]"
        ));
        budget.bytes = 0;
        budget.lines = 0;
    } else {
        budget.bytes -= cut;
        budget.lines = budget.lines.saturating_sub(lines);
    }
}

fn redact(s: &mut String, m: &mut Mediation) {
    let (clean, counts) = secrets::redact(s);
    if !counts.is_empty() {
        *s = clean;
        for (k, n) in counts {
            *m.redactions.entry(k).or_insert(0) += n;
        }
    }
}

/// Server-authored text: credentials redacted, then internal detail masked.
fn clean(s: &mut String, m: &mut Mediation) {
    redact(s, m);
    let masked = crate::controls::sanitize::text(s);
    if masked != *s {
        *s = masked;
        m.sanitized += 1;
    }
}

/// Members that identify or route rather than say something (left exactly as sent).
const IDENTIFIERS: &[&str] = &[
    "name",
    "uri",
    "uriTemplate",
    "mimeType",
    "progressToken",
    "requestId",
    "type",
    "role",
    "level",
    "_meta",
    "cursor",
    "nextCursor",
    "protocolVersion",
    "inputSchema",
    "outputSchema",
    "icons",
];

/// Every string of server-authored content, cleaned; identifiers are kept as they are.
pub fn server_strings(v: &mut Value, m: &mut Mediation) {
    match v {
        Value::String(s) => clean(s, m),
        Value::Array(a) => a.iter_mut().for_each(|x| server_strings(x, m)),
        Value::Object(o) => {
            for (k, x) in o.iter_mut() {
                if !IDENTIFIERS.contains(&k.as_str()) {
                    server_strings(x, m);
                }
            }
        }
        _ => {}
    }
}

/// A JSON-RPC error from the server: its message and every string of its data cleaned, and
/// data that is a stack trace dropped.
pub fn error(msg: &mut Value) -> Mediation {
    let mut m = Mediation::default();
    let Some(e) = msg.get_mut("error").and_then(Value::as_object_mut) else { return m };
    if e.get("data").and_then(Value::as_str).is_some_and(|s| {
        s.contains("\n    at ") || s.contains("Traceback") || s.contains("\n\tat ")
    }) {
        e.remove("data");
    }
    if let Some(Value::String(s)) = e.get_mut("message") {
        clean(s, &mut m);
    }
    if let Some(d) = e.get_mut("data") {
        server_strings(d, &mut m);
    }
    m
}

/// A message the server starts (a notification, or a request such as sampling or
/// elicitation): every string of its params cleaned.
pub fn server_message(msg: &mut Value) -> Mediation {
    let mut m = Mediation::default();
    if let Some(p) = msg.get_mut("params") {
        server_strings(p, &mut m);
    }
    m
}

/// A listing (`tools/list`, `resources/list`, `resources/templates/list`, `prompts/list`) or
/// a result with `instructions`: descriptions and titles cleaned, names kept.
pub fn listing(result: &mut Value) -> Mediation {
    let mut m = Mediation::default();
    for key in ["tools", "resources", "resourceTemplates", "prompts"] {
        if let Some(items) = result.get_mut(key).and_then(Value::as_array_mut) {
            items.iter_mut().for_each(|i| server_strings(i, &mut m));
        }
    }
    if let Some(Value::String(s)) = result.get_mut("instructions") {
        clean(s, &mut m);
    }
    m
}

/// Every string inside a value, redacted (structured content, resource text).
fn redact_strings(v: &mut Value, m: &mut Mediation) {
    match v {
        Value::String(s) => redact(s, m),
        Value::Array(a) => a.iter_mut().for_each(|x| redact_strings(x, m)),
        Value::Object(o) => o.values_mut().for_each(|x| redact_strings(x, m)),
        _ => {}
    }
}

/// A copy of `v` with every credential in its strings redacted (for audit records, which
/// must never hold secrets).
pub fn redacted(v: &Value) -> Value {
    let mut copy = v.clone();
    redact_strings(&mut copy, &mut Mediation::default());
    copy
}

/// Mediates a `tools/call`, `resources/read` or `prompts/get` result in place.
pub fn result(method: &str, result: &mut Value, limits: &Limits) -> Mediation {
    let mut m = Mediation::default();
    let mut budget =
        Budget { bytes: limits.max_result_bytes as usize, lines: limits.max_result_lines as usize };
    // A failed tool call's text is the server talking about itself: sanitised too.
    let failed = method == "tools/call" && result.get("isError") == Some(&Value::Bool(true));
    let texts: Vec<&mut Value> = match method {
        "tools/call" => {
            if let Some(s) = result.get_mut("structuredContent") {
                redact_strings(s, &mut m);
                let size = s.to_string().len();
                if size > budget.bytes {
                    bound_structured(result, size, &mut m);
                }
            }
            result
                .get_mut("content")
                .and_then(Value::as_array_mut)
                .map(|c| c.iter_mut().collect())
                .unwrap_or_default()
        }
        "resources/read" => result
            .get_mut("contents")
            .and_then(Value::as_array_mut)
            .map(|c| c.iter_mut().collect())
            .unwrap_or_default(),
        "prompts/get" => result
            .get_mut("messages")
            .and_then(Value::as_array_mut)
            .map(|c| c.iter_mut().filter_map(|msg| msg.get_mut("content")).collect())
            .unwrap_or_default(),
        _ => return m,
    };
    for item in texts {
        // Text content blocks and text resource contents; embedded resources one level down.
        let item = match item.get_mut("resource") {
            Some(r) if r.is_object() => r,
            _ => item,
        };
        if let Some(Value::String(s)) = item.get_mut("text") {
            if failed {
                clean(s, &mut m);
            } else {
                redact(s, &mut m);
            }
            bound(s, &mut budget, &mut m);
        }
        if let Some(Value::String(b)) = item.get_mut("blob") {
            // Binary content counts against the byte budget but cannot be cut meaningfully.
            if b.len() > budget.bytes {
                m.truncated_bytes += b.len();
                b.clear();
                item["_meta"] =
                    json!({"palisade.dev/omitted": "blob larger than the gateway's result limit"});
            } else {
                budget.bytes -= b.len();
            }
        }
    }
    m
}

/// Structured content larger than the result limit cannot be cut without breaking its schema:
/// it is withheld, and the call reports that as a tool error the model can act on.
fn bound_structured(result: &mut Value, size: usize, m: &mut Mediation) {
    m.truncated_bytes += size;
    if let Some(r) = result.as_object_mut() {
        r.remove("structuredContent");
        r.insert(
            "content".into(),
            json!([{"type": "text", "text": format!("[the gateway withheld a structured result of {size} bytes, more than its result limit; ask for a narrower range]")}]),
        );
        r.insert("isError".into(), Value::Bool(true));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_are_redacted_and_bounded() {
        let limits = Limits { max_result_bytes: 1024, max_result_lines: 3, ..Limits::default() };
        let key = "AKIA".to_string() + "IOSFODNN7EXAMPLE";
        let mut r = json!({"content": [
            {"type": "text", "text": format!("id={key}\nb\nc\nd\ne")},
            {"type": "text", "text": "more"}
        ]});
        let m = result("tools/call", &mut r, &limits);
        let first = r["content"][0]["text"].as_str().unwrap_or_default();
        assert!(!first.contains(&key), "{first}");
        assert!(first.contains("[REDACTED:aws-access-key]"), "{first}");
        assert!(first.contains("truncated by the gateway"), "{first}");
        assert!(!first.contains("\nd"), "{first}");
        assert_eq!(m.total_redactions(), 1);
        assert!(m.truncated_bytes > 0);
        // The budget is spent: later blocks are cut to nothing but the marker.
        assert!(r["content"][1]["text"].as_str().unwrap_or_default().starts_with("\n[truncated"));
    }

    #[test]
    fn server_text_is_redacted_and_sanitised_everywhere() {
        let key = "AKIA".to_string() + "IOSFODNN7EXAMPLE";
        let said = format!("failed at /srv/app/handlers/db.py talking to 10.1.2.3:5432 with {key}");
        let mut e = json!({"error": {"code": -32603, "message": said, "data": {"detail": said, "hosts": [said]}}});
        let m = error(&mut e);
        let text = e.to_string();
        assert!(
            !text.contains(&key) && !text.contains("/srv/app") && !text.contains("10.1.2.3"),
            "{text}"
        );
        assert!(m.total_redactions() >= 3 && m.sanitized >= 3, "{m:?}");
        let mut log = json!({"method": "notifications/message", "params": {"level": "error", "data": {"msg": said}}});
        server_message(&mut log);
        assert!(!log.to_string().contains(&key), "{log}");
        let mut list = json!({"tools": [{"name": "t", "description": said, "inputSchema": {"type": "object", "description": "/srv/app/x/y"}}]});
        listing(&mut list);
        assert!(!list["tools"][0]["description"].as_str().unwrap_or_default().contains("10.1.2.3"));
        assert_eq!(
            list["tools"][0]["inputSchema"]["description"], "/srv/app/x/y",
            "schemas are kept"
        );
        assert_eq!(list["tools"][0]["name"], "t");
        let mut failed = json!({"content": [{"type": "text", "text": said}], "isError": true});
        result("tools/call", &mut failed, &Limits::default());
        assert!(!failed.to_string().contains("/srv/app"), "{failed}");
        // A successful result keeps its paths (a file listing is data), only secrets go.
        let mut ok = json!({"content": [{"type": "text", "text": said}]});
        result("tools/call", &mut ok, &Limits::default());
        assert!(ok.to_string().contains("/srv/app") && !ok.to_string().contains(&key), "{ok}");
    }

    #[test]
    fn resources_and_prompts_are_redacted_and_bounded_like_tool_results() {
        let key = "AKIA".to_string() + "IOSFODNN7EXAMPLE";
        let limits = Limits { max_result_bytes: 1024, ..Limits::default() };
        let mut prompt = json!({"messages": [
            {"role": "user", "content": {"type": "text", "text": format!("use {key}")}},
            {"role": "assistant", "content": {"type": "resource", "resource": {
                "uri": "note://a", "text": format!("{key} {}", "x".repeat(4000))}}}
        ]});
        let m = result("prompts/get", &mut prompt, &limits);
        assert!(!prompt.to_string().contains(&key), "{prompt}");
        assert!(m.total_redactions() == 2 && m.truncated_bytes > 0, "{m:?}");
        let mut read = json!({"contents": [{"uri": "note://a", "text": format!("k={key}")}]});
        result("resources/read", &mut read, &limits);
        assert!(!read.to_string().contains(&key), "{read}");
    }

    #[test]
    fn structured_content_is_bounded() {
        let limits = Limits { max_result_bytes: 1024, ..Limits::default() };
        let mut r = json!({"content": [{"type": "text", "text": "x"}], "structuredContent": {"rows": vec!["y".repeat(100); 50]}});
        let m = result("tools/call", &mut r, &limits);
        assert!(r.get("structuredContent").is_none(), "{r}");
        assert_eq!(r["isError"], true);
        assert!(m.truncated_bytes > 1024);
        let mut small = json!({"content": [], "structuredContent": {"rows": ["y"]}});
        result("tools/call", &mut small, &limits);
        assert!(small.get("structuredContent").is_some());
    }
}
