//! Rate limits and budgets per principal, per tool and per time window. A refusal says when
//! the client may retry. Counters live in this gateway replica; with several replicas each
//! enforces its own share (documented in docs/gateway.md).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most principals tracked; past it, the least recently seen are forgotten first.
const MAX_KEYS: usize = 100_000;

struct Window {
    started: Instant,
    count: u64,
    seen: Instant,
}

/// Fixed-window counters by limit, then principal (looked up without allocating).
#[derive(Default)]
pub struct Counters {
    windows: Mutex<HashMap<String, HashMap<String, Window>>>,
}

/// A refused request: which limit, and seconds until the window resets.
#[derive(Debug, Clone, PartialEq)]
pub struct Exceeded {
    pub limit: String,
    pub retry_after_seconds: u64,
}

impl Counters {
    /// Counts one use of `what` by `who` in windows of `per`; refuses past `max`.
    pub fn take(&self, who: &str, what: &str, max: u64, per: Duration) -> Result<(), Exceeded> {
        let now = Instant::now();
        let Ok(mut w) = self.windows.lock() else {
            return Err(Exceeded { limit: what.into(), retry_after_seconds: 1 });
        };
        let by_who = match w.get_mut(what) {
            Some(m) => m,
            None => w.entry(what.to_string()).or_default(),
        };
        if by_who.len() >= MAX_KEYS {
            let horizon = now.checked_sub(Duration::from_secs(3600)).unwrap_or(now);
            by_who.retain(|_, v| v.seen > horizon);
        }
        let e = match by_who.get_mut(who) {
            Some(e) => e,
            None => by_who.entry(who.to_string()).or_insert(Window {
                started: now,
                count: 0,
                seen: now,
            }),
        };
        if now.duration_since(e.started) >= per {
            e.started = now;
            e.count = 0;
        }
        e.seen = now;
        if e.count >= max {
            let left = per.saturating_sub(now.duration_since(e.started));
            return Err(Exceeded {
                limit: what.into(),
                retry_after_seconds: left.as_secs().max(1),
            });
        }
        e.count += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_refuses_past_its_maximum_and_says_when_to_retry() {
        let c = Counters::default();
        for _ in 0..3 {
            assert!(c.take("alice", "rpm", 3, Duration::from_secs(60)).is_ok());
        }
        let e = c.take("alice", "rpm", 3, Duration::from_secs(60)).err();
        assert!(
            e.as_ref().is_some_and(|e| e.retry_after_seconds > 0 && e.retry_after_seconds <= 60)
        );
        // Other principals and other limits are counted apart.
        assert!(c.take("bob", "rpm", 3, Duration::from_secs(60)).is_ok());
        assert!(c.take("alice", "tool:x", 3, Duration::from_secs(60)).is_ok());
        // A zero budget refuses at once.
        assert!(c.take("alice", "mutations", 0, Duration::from_secs(60)).is_err());
    }
}
