//! Request correlation: a W3C `traceparent` (accepted when valid, created otherwise) gives every
//! request an ID that appears in logs, in audit records and upstream.

use rand::RngCore;

/// A parsed or freshly created trace context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: String,
    pub parent_id: String,
    pub flags: String,
    /// Whether the client sent it (its `parent_id` is the client's span), or it was created here.
    pub from_client: bool,
}

fn hex_of(len: usize, s: &str) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl TraceContext {
    /// Parses `00-<32 hex>-<16 hex>-<2 hex>`; all-zero ids are invalid per the spec.
    pub fn parse(header: &str) -> Option<TraceContext> {
        let parts: Vec<&str> = header.trim().split('-').collect();
        if parts.len() != 4
            || parts[0] != "00"
            || !hex_of(32, parts[1])
            || !hex_of(16, parts[2])
            || !hex_of(2, parts[3])
        {
            return None;
        }
        if parts[1].bytes().all(|b| b == b'0') || parts[2].bytes().all(|b| b == b'0') {
            return None;
        }
        Some(TraceContext {
            trace_id: parts[1].into(),
            parent_id: parts[2].into(),
            flags: parts[3].into(),
            from_client: true,
        })
    }

    pub fn new() -> TraceContext {
        let mut rng = rand::rng();
        let mut t = [0u8; 16];
        let mut p = [0u8; 8];
        rng.fill_bytes(&mut t);
        rng.fill_bytes(&mut p);
        TraceContext {
            trace_id: hex::encode(t),
            parent_id: hex::encode(p),
            flags: "01".into(),
            from_client: false,
        }
    }

    /// This hop as the parent of the next: same trace, new span id.
    pub fn child(&self) -> TraceContext {
        let mut p = [0u8; 8];
        rand::rng().fill_bytes(&mut p);
        TraceContext {
            trace_id: self.trace_id.clone(),
            parent_id: hex::encode(p),
            flags: self.flags.clone(),
            from_client: self.from_client,
        }
    }

    pub fn header(&self) -> String {
        format!("00-{}-{}-{}", self.trace_id, self.parent_id, self.flags)
    }

    /// The request ID used in logs and audit records.
    pub fn request_id(&self) -> String {
        format!("{}-{}", self.trace_id, self.parent_id)
    }
}

impl Default for TraceContext {
    fn default() -> Self {
        TraceContext::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_and_refuses_invalid_traceparents() {
        let t =
            TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.child().trace_id, t.trace_id);
        assert_ne!(t.child().parent_id, t.parent_id);
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-abc-def-01",
        ] {
            assert!(TraceContext::parse(bad).is_none(), "{bad}");
        }
        let fresh = TraceContext::new();
        assert!(TraceContext::parse(&fresh.header()).is_some());
    }
}
