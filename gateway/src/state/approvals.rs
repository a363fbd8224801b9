//! Approval plans as stored: what a plan is, and the rules of its transitions (decide,
//! redeem), which every store applies atomically with the change it makes.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::protocol::digest::digest;

/// How long a plan may wait for approval, and an approval for its call.
pub const TTL: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "camelCase")]
pub enum PlanState {
    Pending,
    Approved { by: String },
    Denied { by: String },
    Used,
}

/// A plan as every replica sees it: its times are wall-clock times.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub id: String,
    pub tool: String,
    pub arguments: Map<String, Value>,
    pub hash: String,
    pub requester: String,
    pub preview: Option<Value>,
    pub created: SystemTime,
    #[serde(flatten)]
    pub state: PlanState,
}

impl Plan {
    /// A new pending plan for calling `tool` with exactly `arguments`.
    pub fn new(
        tool: &str,
        arguments: Map<String, Value>,
        requester: &str,
        preview: Option<Value>,
    ) -> Plan {
        Plan {
            id: super::new_id(),
            tool: tool.to_string(),
            hash: plan_hash(tool, &arguments),
            arguments,
            requester: requester.to_string(),
            preview,
            created: SystemTime::now(),
            state: PlanState::Pending,
        }
    }

    /// How long the plan has existed (zero if the clock went back).
    fn age(&self) -> Duration {
        self.created.elapsed().unwrap_or_default()
    }

    pub fn expired(&self) -> bool {
        self.age() > TTL
    }

    /// What is left of the plan's life.
    pub fn remaining(&self) -> Duration {
        TTL.saturating_sub(self.age())
    }

    pub fn view(&self) -> Value {
        json!({
            "approvalId": self.id,
            "planHash": self.hash,
            "tool": self.tool,
            "arguments": self.arguments,
            "requester": self.requester,
            "preview": self.preview,
            "expiresInSeconds": self.remaining().as_secs(),
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

    /// The plan after `approver` decided it (named by `hash`); `None` when it was already
    /// approved (deciding again changes nothing).
    pub fn decided(
        &self,
        hash: &str,
        approver: &str,
        approve: bool,
    ) -> Result<Option<Plan>, ApprovalError> {
        if self.check_decision(hash, approver)? {
            return Ok(None);
        }
        let mut next = self.clone();
        next.state = if approve {
            PlanState::Approved { by: approver.into() }
        } else {
            PlanState::Denied { by: approver.into() }
        };
        Ok(Some(next))
    }

    /// The plan once used by `principal` for exactly `tool` and `args`.
    pub fn redeemed(
        &self,
        tool: &str,
        args: &Map<String, Value>,
        principal: &str,
    ) -> Result<Plan, ApprovalError> {
        self.check_redemption(tool, args, principal)?;
        let mut used = self.clone();
        used.state = PlanState::Used;
        Ok(used)
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
