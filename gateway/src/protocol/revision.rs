//! MCP revisions as the gateway handles them: an ordered index into
//! `palisade_core::revisions::KNOWN`, with the era each belongs to.

use palisade_core::revisions::{self, Era};

/// A protocol revision, as an index into `revisions::KNOWN`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rev(pub u8);

pub const R2024: Rev = Rev(0);
pub const R2025_03: Rev = Rev(1);
pub const R2025_06: Rev = Rev(2);
pub const R2025_11: Rev = Rev(3);
pub const R2026: Rev = Rev(4);

impl Rev {
    pub fn parse(s: &str) -> Option<Rev> {
        revisions::KNOWN.iter().position(|k| *k == s).map(|i| Rev(i as u8))
    }

    pub fn as_str(self) -> &'static str {
        revisions::KNOWN[self.0 as usize]
    }

    /// Whether the revision is of the stateless era (every request stands alone).
    pub fn stateless(self) -> bool {
        self.era() == Era::Stateless
    }

    pub fn era(self) -> Era {
        revisions::era(self.as_str()).unwrap_or(Era::Stateless)
    }
}
