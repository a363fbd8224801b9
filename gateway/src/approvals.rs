//! Plan -> approve -> apply for mutating tools. The first call of a tool that needs approval
//! is not forwarded: it becomes a plan (the exact arguments, and a preview where the tool has a
//! dry-run mode) with an approval ID. An approver approves that plan by its hash; the client
//! repeats the call with the approval ID, and only a call whose tool and arguments hash to the
//! approved plan, from the principal who asked, before expiry, and only once, is forwarded.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use crate::audit::digest;

/// How long a plan may wait for approval, and an approval for its call.
pub const TTL: Duration = Duration::from_secs(600);
/// Most plans waiting at once (per gateway); older ones are dropped first.
const MAX_PENDING: usize = 1000;
/// Where a client puts the approval ID when it repeats the call.
pub const META_KEY: &str = "palisade.dev/approval";

#[derive(Debug, Clone, PartialEq)]
pub enum State {
    Pending,
    Approved { by: String },
    Denied { by: String },
    Used,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub id: String,
    pub tool: String,
    pub arguments: Map<String, Value>,
    pub hash: String,
    pub requester: String,
    pub preview: Option<Value>,
    pub created: Instant,
    pub state: State,
}

impl Plan {
    pub fn expired(&self) -> bool {
        self.created.elapsed() > TTL
    }

    pub fn view(&self) -> Value {
        json!({
            "approvalId": self.id,
            "planHash": self.hash,
            "tool": self.tool,
            "arguments": self.arguments,
            "requester": self.requester,
            "preview": self.preview,
            "expiresInSeconds": TTL.saturating_sub(self.created.elapsed()).as_secs(),
            "state": match &self.state {
                State::Pending => "pending",
                State::Approved { .. } => "approved",
                State::Denied { .. } => "denied",
                State::Used => "used",
            },
        })
    }
}

/// The hash that binds an approval to one tool and its exact arguments.
pub fn plan_hash(tool: &str, args: &Map<String, Value>) -> String {
    digest(&json!({"tool": tool, "arguments": args}))
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ApprovalError {
    #[error("approval {0} does not exist or expired")]
    Unknown(String),
    #[error("approval {0} is waiting for an approver")]
    Pending(String),
    #[error("approval {0} was denied")]
    Denied(String),
    #[error("approval {0} was already used")]
    Used(String),
    #[error("approval {0} is for other arguments or another tool")]
    Mismatch(String),
    #[error("approval {0} was requested by another principal")]
    OtherPrincipal(String),
    #[error("an approver may not approve their own plan")]
    SelfApproval,
    #[error("the plan hash does not match approval {0}")]
    WrongHash(String),
}

/// A plan that exists and has not expired.
fn live<'a>(plans: &'a mut HashMap<String, Plan>, id: &str) -> Result<&'a mut Plan, ApprovalError> {
    plans.get_mut(id).filter(|p| !p.expired()).ok_or_else(|| ApprovalError::Unknown(id.into()))
}

#[derive(Default)]
pub struct Approvals {
    plans: Mutex<HashMap<String, Plan>>,
}

impl Approvals {
    pub fn propose(
        &self,
        tool: &str,
        arguments: Map<String, Value>,
        requester: &str,
        preview: Option<Value>,
    ) -> Plan {
        let plan = Plan {
            id: crate::state::new_session_id(),
            tool: tool.to_string(),
            hash: plan_hash(tool, &arguments),
            arguments,
            requester: requester.to_string(),
            preview,
            created: Instant::now(),
            state: State::Pending,
        };
        if let Ok(mut plans) = self.plans.lock() {
            plans.retain(|_, p| !p.expired());
            if plans.len() >= MAX_PENDING
                && let Some(oldest) = plans.values().min_by_key(|p| p.created).map(|p| p.id.clone())
            {
                plans.remove(&oldest);
            }
            plans.insert(plan.id.clone(), plan.clone());
        }
        plan
    }

    pub fn get(&self, id: &str) -> Option<Plan> {
        self.plans.lock().ok()?.get(id).filter(|p| !p.expired()).cloned()
    }

    /// An approver decides on a plan they name by ID and hash.
    pub fn decide(
        &self,
        id: &str,
        hash: &str,
        approver: &str,
        approve: bool,
    ) -> Result<Plan, ApprovalError> {
        let mut plans = self.plans.lock().map_err(|_| ApprovalError::Unknown(id.into()))?;
        let plan = live(&mut plans, id)?;
        if plan.hash != hash {
            return Err(ApprovalError::WrongHash(id.into()));
        }
        if plan.requester == approver {
            return Err(ApprovalError::SelfApproval);
        }
        match plan.state {
            State::Pending => {}
            State::Used => return Err(ApprovalError::Used(id.into())),
            State::Denied { .. } => return Err(ApprovalError::Denied(id.into())),
            State::Approved { .. } => return Ok(plan.clone()),
        }
        plan.state = if approve {
            State::Approved { by: approver.into() }
        } else {
            State::Denied { by: approver.into() }
        };
        Ok(plan.clone())
    }

    /// Consumes an approval for a call: single use, same principal, same tool and arguments.
    pub fn redeem(
        &self,
        id: &str,
        tool: &str,
        args: &Map<String, Value>,
        principal: &str,
    ) -> Result<Plan, ApprovalError> {
        let mut plans = self.plans.lock().map_err(|_| ApprovalError::Unknown(id.into()))?;
        let plan = live(&mut plans, id)?;
        if plan.requester != principal {
            return Err(ApprovalError::OtherPrincipal(id.into()));
        }
        match &plan.state {
            State::Pending => return Err(ApprovalError::Pending(id.into())),
            State::Denied { .. } => return Err(ApprovalError::Denied(id.into())),
            State::Used => return Err(ApprovalError::Used(id.into())),
            State::Approved { .. } => {}
        }
        if plan.tool != tool || plan.hash != plan_hash(tool, args) {
            return Err(ApprovalError::Mismatch(id.into()));
        }
        let approved = plan.clone();
        plan.state = State::Used;
        Ok(approved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn an_approval_binds_the_exact_call_once() {
        let a = Approvals::default();
        let p = a.propose("delete", args(json!({"path": "/data/x"})), "alice", None);
        assert_eq!(
            a.redeem(&p.id, "delete", &p.arguments, "alice").err(),
            Some(ApprovalError::Pending(p.id.clone()))
        );
        assert_eq!(
            a.decide(&p.id, &p.hash, "alice", true).err(),
            Some(ApprovalError::SelfApproval)
        );
        assert_eq!(
            a.decide(&p.id, "00", "bob", true).err(),
            Some(ApprovalError::WrongHash(p.id.clone()))
        );
        assert!(a.decide(&p.id, &p.hash, "bob", true).is_ok());
        assert_eq!(
            a.redeem(&p.id, "delete", &args(json!({"path": "/data/y"})), "alice").err(),
            Some(ApprovalError::Mismatch(p.id.clone()))
        );
        assert_eq!(
            a.redeem(&p.id, "delete", &p.arguments, "mallory").err(),
            Some(ApprovalError::OtherPrincipal(p.id.clone()))
        );
        assert!(a.redeem(&p.id, "delete", &p.arguments, "alice").is_ok());
        assert_eq!(
            a.redeem(&p.id, "delete", &p.arguments, "alice").err(),
            Some(ApprovalError::Used(p.id.clone()))
        );
    }
}
