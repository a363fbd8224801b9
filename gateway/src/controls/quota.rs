//! Which rate limits and budgets a request counts against; the counting itself is the
//! [`CounterStore`]'s (per replica in memory, or shared). Requests per minute per principal;
//! for tool calls that reach the server (previews included): calls of the tool per minute,
//! tool calls and mutations per principal per hour, and tool calls and mutations per session.
//!
//! When a shared store cannot be reached, read-only traffic counts against this replica's own
//! counters (the limits then hold per replica), and a call that changes state is refused: a
//! budget that cannot be checked is not spent.

use std::time::Duration;

use palisade_core::config::GatewayConfig;
use palisade_core::spec::ToolEffect;

use crate::state::{CounterStore, Exceeded, State, TakeError, stored_name};

pub const HOUR: Duration = Duration::from_secs(3600);
pub const MINUTE: Duration = Duration::from_secs(60);
/// A session's budgets last as long as a session can (it is closed when idle long before).
pub const SESSION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Why a tool call may not go on.
#[derive(Debug, Clone, PartialEq)]
pub enum QuotaError {
    Exceeded(Exceeded),
    /// The shared store is unreachable and the call changes state.
    Unavailable,
}

/// Counts one use, falling back to this replica's counters when the shared store is down and
/// `fallback` allows it.
async fn take(
    state: &State,
    who: &str,
    what: &str,
    max: u64,
    per: Duration,
    fallback: bool,
) -> Result<(), QuotaError> {
    match state.counters.take(who, what, max, per).await {
        Ok(()) => Ok(()),
        Err(TakeError::Exceeded(e)) => Err(QuotaError::Exceeded(e)),
        Err(TakeError::Unavailable) if fallback => {
            tracing::debug!(limit = what, "state store unavailable; counting on this replica");
            let local: &dyn CounterStore = &state.local_counters;
            match local.take(who, what, max, per).await {
                Ok(()) => Ok(()),
                Err(TakeError::Exceeded(e)) => Err(QuotaError::Exceeded(e)),
                Err(TakeError::Unavailable) => Err(QuotaError::Unavailable),
            }
        }
        Err(TakeError::Unavailable) => Err(QuotaError::Unavailable),
    }
}

/// Every request counts against the principal's requests per minute (on this replica while
/// the shared store is down).
pub async fn request(state: &State, cfg: &GatewayConfig, who: &str) -> Result<(), QuotaError> {
    let max = u64::from(cfg.limits.requests_per_minute);
    take(state, who, "requests per minute", max, MINUTE, true).await
}

/// A tool call that reaches the server counts against the tool's rate, the principal's hourly
/// budgets and its session's budgets (`session`: the session ID).
pub async fn tool_call(
    state: &State,
    cfg: &GatewayConfig,
    who: &str,
    tool: &str,
    effect: ToolEffect,
    session: Option<&str>,
) -> Result<(), QuotaError> {
    let limits = &cfg.limits;
    let mutating = effect > ToolEffect::Read;
    let reads = !mutating;
    if let Some(rate) = cfg.tools.iter().find(|t| t.name == tool).and_then(|p| p.rate_per_minute) {
        let what = format!("calls of {tool} per minute");
        take(state, who, &what, u64::from(rate), MINUTE, reads).await?;
    }
    let hourly = u64::from(limits.max_tool_calls_per_principal_per_hour);
    take(state, who, "tool calls per principal per hour", hourly, HOUR, reads).await?;
    if mutating {
        let max = u64::from(limits.max_mutations_per_principal_per_hour);
        take(state, who, "mutations per principal per hour", max, HOUR, false).await?;
    }
    if let Some(id) = session {
        let session = format!("session:{}", stored_name(id));
        let calls = u64::from(limits.max_tool_calls_per_session);
        take(state, &session, "tool calls per session", calls, SESSION, reads).await?;
        if mutating {
            let max = u64::from(limits.max_mutations_per_session);
            take(state, &session, "mutations per session", max, SESSION, false).await?;
        }
    }
    Ok(())
}
