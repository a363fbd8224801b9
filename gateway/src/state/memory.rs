//! The stores in this replica's memory: the default for one replica. Each method takes one
//! lock for the whole transition, so a plan is redeemed once and a window never overshoots.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use serde_json::{Map, Value};

use super::{ApprovalError, ApprovalStore, CounterStore, Exceeded, Plan, TakeError, ToolStore};
use crate::protocol::tool::Tool;

/// Most plans waiting at once; older ones are dropped first.
const MAX_PENDING: usize = 1000;
/// Plans of one requester held at once (their oldest goes first).
const MAX_PENDING_PER_REQUESTER: usize = 100;
/// Most principals tracked per limit; past it, those not seen for an hour are forgotten.
const MAX_KEYS: usize = 100_000;
/// Least time between two refreshes caused by unknown tools (a client naming made-up tools
/// cannot make the gateway list the server's tools on every call).
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(5);

/// A plan that exists and has not expired.
fn live<'a>(plans: &'a mut HashMap<String, Plan>, id: &str) -> Result<&'a mut Plan, ApprovalError> {
    plans.get_mut(id).filter(|p| !p.expired()).ok_or_else(|| ApprovalError::Unknown(id.into()))
}

#[derive(Default)]
pub struct Approvals {
    plans: Mutex<HashMap<String, Plan>>,
}

impl Approvals {
    fn propose_now(
        &self,
        tool: &str,
        arguments: Map<String, Value>,
        requester: &str,
        preview: Option<Value>,
    ) -> Result<Plan, ApprovalError> {
        let plan = Plan::new(tool, arguments, requester, preview);
        let mut plans = self.plans.lock().map_err(|_| ApprovalError::Unavailable)?;
        plans.retain(|_, p| !p.expired());
        // One requester's flood of plans evicts their own oldest, not everyone else's.
        let own = plans.values().filter(|p| p.requester == requester).count();
        let evict = if own >= MAX_PENDING_PER_REQUESTER {
            plans.values().filter(|p| p.requester == requester).min_by_key(|p| p.created)
        } else if plans.len() >= MAX_PENDING {
            plans.values().min_by_key(|p| p.created)
        } else {
            None
        };
        if let Some(oldest) = evict.map(|p| p.id.clone()) {
            plans.remove(&oldest);
        }
        plans.insert(plan.id.clone(), plan.clone());
        Ok(plan)
    }

    fn decide_now(
        &self,
        id: &str,
        hash: &str,
        approver: &str,
        approve: bool,
    ) -> Result<Plan, ApprovalError> {
        let mut plans = self.plans.lock().map_err(|_| ApprovalError::Unavailable)?;
        let plan = live(&mut plans, id)?;
        if let Some(next) = plan.decided(hash, approver, approve)? {
            *plan = next;
        }
        Ok(plan.clone())
    }

    fn redeem_now(
        &self,
        id: &str,
        tool: &str,
        args: &Map<String, Value>,
        principal: &str,
    ) -> Result<Plan, ApprovalError> {
        let mut plans = self.plans.lock().map_err(|_| ApprovalError::Unavailable)?;
        let plan = live(&mut plans, id)?;
        let used = plan.redeemed(tool, args, principal)?;
        Ok(std::mem::replace(plan, used))
    }
}

impl ApprovalStore for Approvals {
    fn propose<'a>(
        &'a self,
        tool: &'a str,
        arguments: Map<String, Value>,
        requester: &'a str,
        preview: Option<Value>,
    ) -> BoxFuture<'a, Result<Plan, ApprovalError>> {
        let r = self.propose_now(tool, arguments, requester, preview);
        Box::pin(async move { r })
    }

    fn get<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Plan>, ApprovalError>> {
        let r = self
            .plans
            .lock()
            .map(|m| m.get(id).filter(|p| !p.expired()).cloned())
            .map_err(|_| ApprovalError::Unavailable);
        Box::pin(async move { r })
    }

    fn list<'a>(
        &'a self,
        requester: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<Plan>, ApprovalError>> {
        let r = self.plans.lock().map_err(|_| ApprovalError::Unavailable).map(|m| {
            let mut plans: Vec<Plan> = m
                .values()
                .filter(|p| !p.expired() && requester.is_none_or(|r| p.requester == r))
                .cloned()
                .collect();
            plans.sort_by_key(|p| p.created);
            plans
        });
        Box::pin(async move { r })
    }

    fn decide<'a>(
        &'a self,
        id: &'a str,
        hash: &'a str,
        approver: &'a str,
        approve: bool,
    ) -> BoxFuture<'a, Result<Plan, ApprovalError>> {
        let r = self.decide_now(id, hash, approver, approve);
        Box::pin(async move { r })
    }

    fn redeem<'a>(
        &'a self,
        id: &'a str,
        tool: &'a str,
        args: &'a Map<String, Value>,
        principal: &'a str,
    ) -> BoxFuture<'a, Result<Plan, ApprovalError>> {
        let r = self.redeem_now(id, tool, args, principal);
        Box::pin(async move { r })
    }
}

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

impl Counters {
    fn take_now(&self, who: &str, what: &str, max: u64, per: Duration) -> Result<(), Exceeded> {
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

impl CounterStore for Counters {
    fn take<'a>(
        &'a self,
        who: &'a str,
        what: &'a str,
        max: u64,
        per: Duration,
    ) -> BoxFuture<'a, Result<(), TakeError>> {
        let r = self.take_now(who, what, max, per).map_err(TakeError::Exceeded);
        Box::pin(async move { r })
    }
}

/// Tool definitions by name.
#[derive(Default)]
pub struct Tools {
    tools: Mutex<HashMap<String, Arc<Tool>>>,
    last_refresh: Mutex<Option<Instant>>,
}

impl ToolStore for Tools {
    fn learn(&self, tools: &[Value]) {
        if let Ok(mut m) = self.tools.lock() {
            for t in tools {
                let Some(name) = t.get("name").and_then(Value::as_str) else { continue };
                if m.get(name).is_some_and(|known| known.def == *t) {
                    continue; // keep the compiled schemas
                }
                m.insert(name.to_string(), Arc::new(Tool::new(t.clone())));
            }
        }
    }

    fn get(&self, name: &str) -> Option<Arc<Tool>> {
        self.tools.lock().ok().and_then(|m| m.get(name).cloned())
    }

    fn all(&self) -> Vec<Arc<Tool>> {
        let mut all: Vec<Arc<Tool>> =
            self.tools.lock().map(|m| m.values().cloned().collect()).unwrap_or_default();
        all.sort_by(|a, b| a.name().cmp(b.name()));
        all
    }

    fn len(&self) -> usize {
        self.tools.lock().map(|m| m.len()).unwrap_or(0)
    }

    fn clear(&self) {
        if let Ok(mut m) = self.tools.lock() {
            m.clear();
        }
        if let Ok(mut r) = self.last_refresh.lock() {
            *r = None;
        }
    }

    fn refresh_allowed(&self) -> bool {
        let Ok(mut last) = self.last_refresh.lock() else { return false };
        if last.is_some_and(|t| t.elapsed() < REFRESH_INTERVAL) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn args(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn an_approval_binds_the_exact_call_once() {
        let a = Approvals::default();
        let p = a.propose_now("delete", args(json!({"path": "/data/x"})), "alice", None);
        let p = p.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            a.redeem_now(&p.id, "delete", &p.arguments, "alice").err(),
            Some(ApprovalError::Pending(p.id.clone()))
        );
        assert_eq!(
            a.decide_now(&p.id, &p.hash, "alice", true).err(),
            Some(ApprovalError::SelfApproval)
        );
        assert_eq!(
            a.decide_now(&p.id, "00", "bob", true).err(),
            Some(ApprovalError::WrongHash(p.id.clone()))
        );
        assert!(a.decide_now(&p.id, &p.hash, "bob", true).is_ok());
        assert_eq!(
            a.redeem_now(&p.id, "delete", &args(json!({"path": "/data/y"})), "alice").err(),
            Some(ApprovalError::Mismatch(p.id.clone()))
        );
        assert_eq!(
            a.redeem_now(&p.id, "delete", &p.arguments, "mallory").err(),
            Some(ApprovalError::OtherPrincipal(p.id.clone()))
        );
        assert!(a.redeem_now(&p.id, "delete", &p.arguments, "alice").is_ok());
        assert_eq!(
            a.redeem_now(&p.id, "delete", &p.arguments, "alice").err(),
            Some(ApprovalError::Used(p.id.clone()))
        );
    }

    #[test]
    fn one_requesters_flood_of_plans_evicts_only_their_own() {
        let a = Approvals::default();
        let bobs = a.propose_now("delete", args(json!({"path": "/data/b"})), "bob", None).unwrap();
        let first = a.propose_now("delete", args(json!({"n": 0})), "alice", None).unwrap();
        for n in 1..250 {
            a.propose_now("delete", args(json!({"n": n})), "alice", None).unwrap();
        }
        let plans = a.plans.lock().unwrap();
        assert!(plans.contains_key(&bobs.id), "another requester's plan was evicted");
        assert!(!plans.contains_key(&first.id), "the flooder's oldest plan is kept");
        assert_eq!(plans.values().filter(|p| p.requester == "alice").count(), 100);
    }

    #[test]
    fn a_window_refuses_past_its_maximum_and_says_when_to_retry() {
        let c = Counters::default();
        for _ in 0..3 {
            assert!(c.take_now("alice", "rpm", 3, Duration::from_secs(60)).is_ok());
        }
        let e = c.take_now("alice", "rpm", 3, Duration::from_secs(60)).err();
        assert!(
            e.as_ref().is_some_and(|e| e.retry_after_seconds > 0 && e.retry_after_seconds <= 60)
        );
        // Other principals and other limits are counted apart.
        assert!(c.take_now("bob", "rpm", 3, Duration::from_secs(60)).is_ok());
        assert!(c.take_now("alice", "tool:x", 3, Duration::from_secs(60)).is_ok());
        // A zero budget refuses at once.
        assert!(c.take_now("alice", "mutations", 0, Duration::from_secs(60)).is_err());
    }
}
