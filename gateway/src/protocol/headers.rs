//! Values of the stateless era's routing headers (`Mcp-Name`): plain printable ASCII as is,
//! anything else wrapped as `=?base64?...?=` so that it survives an HTTP header.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

fn plain(v: &str) -> bool {
    v.bytes().all(|b| (0x20..=0x7e).contains(&b))
        && v == v.trim()
        && !(v.starts_with("=?base64?") && v.ends_with("?="))
}

pub fn encode(v: &str) -> String {
    if plain(v) { v.to_string() } else { format!("=?base64?{}?=", STANDARD.encode(v.as_bytes())) }
}

/// The decoded value; `None` for a malformed (or non-canonical) base64 sentinel, which then
/// never matches a body value.
pub fn decode(v: &str) -> Option<String> {
    let Some(payload) = v.strip_prefix("=?base64?").and_then(|r| r.strip_suffix("?=")) else {
        return Some(v.to_string());
    };
    let bytes = STANDARD.decode(payload).ok()?;
    if STANDARD.encode(&bytes) != payload {
        return None;
    }
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_malformed_sentinels() {
        for v in ["get_weather", "file:///tmp/a b", "naïve", " padded ", "=?base64?x?="] {
            assert_eq!(decode(&encode(v)).as_deref(), Some(v), "{v}");
        }
        assert_eq!(encode("plain"), "plain");
        assert!(encode("naïve").starts_with("=?base64?"));
        assert_eq!(decode("=?base64?!!!?="), None);
        assert_eq!(decode("=?base64?YQ=?="), None, "non-canonical padding");
    }
}
