//! Which rate limits and budgets a request counts against; the counting itself is the
//! [`CounterStore`]'s (per replica in memory, or shared). Requests per minute per principal;
//! for tool calls that reach the server (previews included): calls of the tool per minute,
//! tool calls and mutations per principal per hour, and tool calls and mutations per session.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use palisade_core::config::GatewayConfig;
use palisade_core::spec::ToolEffect;

use crate::state::{CounterStore, Exceeded};

pub const HOUR: Duration = Duration::from_secs(3600);
pub const MINUTE: Duration = Duration::from_secs(60);

/// The tool calls and mutations of one session so far.
#[derive(Debug, Default)]
pub struct SessionBudget {
    tool_calls: AtomicU64,
    mutations: AtomicU64,
}

impl SessionBudget {
    /// Counts one tool call of `effect`; the name of the budget it exceeds, if any.
    pub fn take(&self, cfg: &GatewayConfig, effect: ToolEffect) -> Result<(), &'static str> {
        let limits = &cfg.limits;
        if self.tool_calls.fetch_add(1, Ordering::Relaxed)
            >= u64::from(limits.max_tool_calls_per_session)
        {
            return Err("tool calls per session");
        }
        if effect > ToolEffect::Read
            && self.mutations.fetch_add(1, Ordering::Relaxed)
                >= u64::from(limits.max_mutations_per_session)
        {
            return Err("mutations per session");
        }
        Ok(())
    }
}

/// Every request counts against the principal's requests per minute.
pub async fn request(
    counters: &dyn CounterStore,
    cfg: &GatewayConfig,
    who: &str,
) -> Result<(), Exceeded> {
    counters
        .take(who, "requests per minute", u64::from(cfg.limits.requests_per_minute), MINUTE)
        .await
}

/// A tool call that reaches the server counts against the tool's rate and the principal's
/// hourly budgets.
pub async fn tool_call(
    counters: &dyn CounterStore,
    cfg: &GatewayConfig,
    who: &str,
    tool: &str,
    effect: ToolEffect,
) -> Result<(), Exceeded> {
    let limits = &cfg.limits;
    if let Some(rate) = cfg.tools.iter().find(|t| t.name == tool).and_then(|p| p.rate_per_minute) {
        counters.take(who, &format!("calls of {tool} per minute"), u64::from(rate), MINUTE).await?;
    }
    counters
        .take(
            who,
            "tool calls per principal per hour",
            u64::from(limits.max_tool_calls_per_principal_per_hour),
            HOUR,
        )
        .await?;
    if effect > ToolEffect::Read {
        counters
            .take(
                who,
                "mutations per principal per hour",
                u64::from(limits.max_mutations_per_principal_per_hour),
                HOUR,
            )
            .await?;
    }
    Ok(())
}
