//! Approval plans as stored: what a plan is, and the rules of its transitions (decide,
//! redeem), which every store applies atomically with the change it makes.

use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use crate::protocol::digest::digest;

/// How long a plan may wait for approval, and an approval for its call.
pub const TTL: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, PartialEq)]
pub enum PlanState {
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
    pub state: PlanState,
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
                PlanState::Pending => "pending",
                PlanState::Approved { .. } => "approved",
                PlanState::Denied { .. } => "denied",
                PlanState::Used => "used",
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
    #[error("approvals are unavailable right now; retry")]
    Unavailable,
}

impl Plan {
    /// Whether `approver` may decide this plan (named by `hash`); `Ok(true)` when it is already
    /// approved (deciding again changes nothing).
    pub fn check_decision(&self, hash: &str, approver: &str) -> Result<bool, ApprovalError> {
        if self.hash != hash {
            return Err(ApprovalError::WrongHash(self.id.clone()));
        }
        if self.requester == approver {
            return Err(ApprovalError::SelfApproval);
        }
        match self.state {
            PlanState::Pending => Ok(false),
            PlanState::Used => Err(ApprovalError::Used(self.id.clone())),
            PlanState::Denied { .. } => Err(ApprovalError::Denied(self.id.clone())),
            PlanState::Approved { .. } => Ok(true),
        }
    }

    /// Whether this plan may be redeemed by `principal` for exactly `tool` and `args`.
    pub fn check_redemption(
        &self,
        tool: &str,
        args: &Map<String, Value>,
        principal: &str,
    ) -> Result<(), ApprovalError> {
        if self.requester != principal {
            return Err(ApprovalError::OtherPrincipal(self.id.clone()));
        }
        match &self.state {
            PlanState::Pending => return Err(ApprovalError::Pending(self.id.clone())),
            PlanState::Denied { .. } => return Err(ApprovalError::Denied(self.id.clone())),
            PlanState::Used => return Err(ApprovalError::Used(self.id.clone())),
            PlanState::Approved { .. } => {}
        }
        if self.tool != tool || self.hash != plan_hash(tool, args) {
            return Err(ApprovalError::Mismatch(self.id.clone()));
        }
        Ok(())
    }
}
