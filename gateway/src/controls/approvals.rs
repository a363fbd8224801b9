//! Plan -> approve -> apply for mutating tools. The first call of a tool that needs approval
//! is not forwarded: it becomes a plan (the exact arguments, and a preview where the tool has a
//! dry-run mode) with an approval ID. An approver approves that plan by its hash; the client
//! repeats the call with the approval ID, and only a call whose tool and arguments hash to the
//! approved plan, from the principal who asked, before expiry, and only once, is forwarded.
//! The plans and their transitions are kept by the [`crate::state::ApprovalStore`]; this
//! module says how a plan reaches the client.

use serde_json::{Value, json};

use crate::state::Plan;
use crate::state::approvals::TTL;

/// Where a client puts the approval ID when it repeats the call.
pub const META_KEY: &str = "palisade.dev/approval";

/// The result returned instead of running a call that needs approval: a tool error the model
/// can read, with the plan in `_meta` for programs.
pub fn plan_result(id: &Value, plan: &Plan, stateless: bool) -> Value {
    let text = format!(
        "Approval required: this call of '{}' changes state and was not run. An approver must \
         approve plan {} (approval ID {}) at POST /approvals/{}; then repeat the identical call \
         with _meta {{\"{META_KEY}\": \"{}\"}}. The approval is single-use and expires in {} s.",
        plan.tool,
        plan.hash,
        plan.id,
        plan.id,
        plan.id,
        TTL.as_secs()
    );
    let mut result = json!({
        "content": [{"type": "text", "text": text}],
        "isError": true,
        "_meta": {"palisade.dev/approvalRequired": plan.view()},
    });
    if stateless {
        result["resultType"] = json!("complete");
    }
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}
