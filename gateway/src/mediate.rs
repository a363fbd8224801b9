//! Result mediation: what a tool or resource returns is bounded in bytes and lines and has
//! credentials redacted before the client (and so the model) sees it.

use std::collections::BTreeMap;

use palisade_core::policy::Limits;
use palisade_core::secrets::{self, SecretKind};
use serde_json::{Value, json};

/// What mediation did to one result, for the audit record.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Mediation {
    pub redactions: BTreeMap<SecretKind, usize>,
    pub truncated_bytes: usize,
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

/// Every string inside a value, redacted (structured content, resource text).
fn redact_strings(v: &mut Value, m: &mut Mediation) {
    match v {
        Value::String(s) => redact(s, m),
        Value::Array(a) => a.iter_mut().for_each(|x| redact_strings(x, m)),
        Value::Object(o) => o.values_mut().for_each(|x| redact_strings(x, m)),
        _ => {}
    }
}

/// Mediates a `tools/call`, `resources/read` or `prompts/get` result in place.
pub fn result(method: &str, result: &mut Value, limits: &Limits) -> Mediation {
    let mut m = Mediation::default();
    let mut budget =
        Budget { bytes: limits.max_result_bytes as usize, lines: limits.max_result_lines as usize };
    let texts: Vec<&mut Value> = match method {
        "tools/call" => {
            if let Some(s) = result.get_mut("structuredContent") {
                redact_strings(s, &mut m);
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
            redact(s, &mut m);
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
}
