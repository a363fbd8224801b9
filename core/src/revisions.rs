//! MCP protocol revisions Palisade knows, and which era each belongs to.

use std::fmt;

/// The newest stable revision; the default when a spec names none.
pub const LATEST: &str = "2026-07-28";

/// Every revision Palisade can validate, oldest first.
pub const KNOWN: &[&str] = &["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25", LATEST];

/// How a revision carries state between requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Era {
    /// 2024-11-05: `initialize` handshake, HTTP+SSE transport only.
    LegacySse,
    /// 2025-03-26 .. 2025-11-25: `initialize` handshake and `Mcp-Session-Id` sessions.
    Session,
    /// 2026-07-28 and later: stateless, every request carries its revision in `_meta`.
    Stateless,
}

impl fmt::Display for Era {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Era::LegacySse => "legacy-sse",
            Era::Session => "session",
            Era::Stateless => "stateless",
        })
    }
}

pub fn is_known(revision: &str) -> bool {
    KNOWN.contains(&revision)
}

/// The era of a known revision; `None` for a revision Palisade does not know.
pub fn era(revision: &str) -> Option<Era> {
    match revision {
        "2024-11-05" => Some(Era::LegacySse),
        "2025-03-26" | "2025-06-18" | "2025-11-25" => Some(Era::Session),
        LATEST => Some(Era::Stateless),
        _ => None,
    }
}

/// JSON-RPC batches were allowed only in 2025-03-26.
pub fn allows_batches(revision: &str) -> bool {
    revision == "2025-03-26"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eras_cover_every_known_revision() {
        for rev in KNOWN {
            assert!(era(rev).is_some(), "{rev} has no era");
        }
        assert_eq!(era("2025-06-18"), Some(Era::Session));
        assert_eq!(era(LATEST), Some(Era::Stateless));
        assert_eq!(era("2099-01-01"), None);
        assert!(!is_known("2025-06-19"));
    }

    #[test]
    fn only_2025_03_26_allows_batches() {
        let with_batches: Vec<_> = KNOWN.iter().filter(|r| allows_batches(r)).collect();
        assert_eq!(with_batches, vec![&"2025-03-26"]);
    }
}
