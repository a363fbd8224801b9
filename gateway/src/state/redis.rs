//! The stores shared by a server's gateway replicas, in a Redis-protocol store (Redis, Valkey,
//! a managed Redis). Every key starts with the configured prefix. Transitions are atomic in the
//! store: a plan changes only from the exact value a replica read (compare-and-set in a Lua
//! script), so of many concurrent redemptions one wins and the others read `used`; a counter
//! is checked and incremented in one script. The rules of each transition are the same Rust
//! code as in memory (`approvals.rs`). A store that cannot be reached, or holds something
//! unreadable, is [`Unavailable`]: callers fail closed.
//!
//! Keys: `plan:<id>` (the plan, expiring with it), `plans` (IDs by creation time, for
//! listing), `count:<limit>:<who>` (a window, expiring with it), `session:<digest of the
//! session ID>` (a session's record, expiring when idle).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use palisade_core::config::StateStore;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, IntoConnectionInfo, Script};
use serde_json::{Map, Value};

use super::approvals::TTL;
use super::{
    ApprovalError, ApprovalStore, CounterStore, Exceeded, Plan, SessionRecord, SessionStore,
    TakeError, Unavailable, stored_name,
};

/// How long one store operation may take before the store counts as unreachable.
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(500);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Attempts of a compare-and-set that keeps losing to other replicas.
const CAS_ATTEMPTS: usize = 8;

/// Replaces a key's value only if it is still exactly what the caller read; keeps its TTL.
/// 1: replaced; 0: the key is gone; -1: it changed meanwhile.
const CAS: &str = r"
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
if v ~= ARGV[1] then return -1 end
redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
return 1
";

/// Counts one use in a fixed window unless it is full: {1 or 0 (refused), ms left}.
const TAKE: &str = r"
local c = tonumber(redis.call('GET', KEYS[1]) or '0')
if c >= tonumber(ARGV[1]) then return {0, redis.call('PTTL', KEYS[1])} end
c = redis.call('INCR', KEYS[1])
if c == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return {1, redis.call('PTTL', KEYS[1])}
";

/// Why a store could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state store URL: {0}")]
    Url(String),
    #[error("state store URL must not carry a password; give passwordFile instead")]
    PasswordInUrl,
    #[error("{path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("state store: {0}")]
    Client(String),
}

/// A connection (re-established on its own when the store comes back) and the key prefix.
pub struct Redis {
    conn: ConnectionManager,
    prefix: String,
    cas: Script,
    take: Script,
}

fn read(path: &str) -> Result<String, StoreError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
        .map_err(|source| StoreError::Read { path: path.to_string(), source })
}

impl Redis {
    /// Connects lazily: a gateway starts, and serves what needs no shared state, while the
    /// store is down.
    pub fn connect(cfg: &StateStore) -> Result<Redis, StoreError> {
        palisade_https::install_crypto_provider();
        let info =
            cfg.url.as_str().into_connection_info().map_err(|e| StoreError::Url(e.to_string()))?;
        if info.redis_settings().password().is_some() {
            return Err(StoreError::PasswordInUrl);
        }
        let info = match &cfg.password_file {
            Some(f) => {
                let settings = info.redis_settings().clone().set_password(read(f)?);
                info.set_redis_settings(settings)
            }
            None => info,
        };
        let client = match &cfg.ca_file {
            Some(f) => redis::Client::build_with_tls(
                info,
                redis::TlsCertificates { client_tls: None, root_cert: Some(read(f)?.into_bytes()) },
            ),
            None => redis::Client::open(info),
        }
        .map_err(|e| StoreError::Client(e.to_string()))?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(2));
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| StoreError::Client(e.to_string()))?;
        Ok(Redis {
            conn,
            prefix: cfg.key_prefix.clone(),
            cas: Script::new(CAS),
            take: Script::new(TAKE),
        })
    }

    fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.prefix)
    }

    fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// Whether the store answers (for readiness and the failure tests).
    pub async fn ping(&self) -> bool {
        redis::cmd("PING").query_async::<String>(&mut self.conn()).await.is_ok()
    }
}

fn unavailable(e: redis::RedisError) -> Unavailable {
    tracing::debug!(error = %e, "state store operation failed");
    Unavailable
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Approval plans in the store.
pub struct Approvals(pub Arc<Redis>);

impl Approvals {
    /// The plan and the exact stored text it was read from.
    async fn read(&self, id: &str) -> Result<Option<(String, Plan)>, ApprovalError> {
        let raw: Option<String> = self
            .0
            .conn()
            .get(self.0.key(&format!("plan:{id}")))
            .await
            .map_err(|e| ApprovalError::from(unavailable(e)))?;
        let Some(raw) = raw else { return Ok(None) };
        let plan: Plan = serde_json::from_str(&raw).map_err(|_| ApprovalError::Unavailable)?;
        Ok((!plan.expired()).then_some((raw, plan)))
    }

    /// Applies `change` to plan `id` atomically: re-read and retried while other replicas
    /// change it first. `change` returns the plan to store (`None`: nothing to store) and the
    /// plan to answer with.
    async fn transition(
        &self,
        id: &str,
        change: impl Fn(&Plan) -> Result<(Option<Plan>, Plan), ApprovalError>,
    ) -> Result<Plan, ApprovalError> {
        let key = self.0.key(&format!("plan:{id}"));
        for _ in 0..CAS_ATTEMPTS {
            let Some((raw, plan)) = self.read(id).await? else {
                return Err(ApprovalError::Unknown(id.into()));
            };
            let (store, answer) = change(&plan)?;
            let Some(next) = store else { return Ok(answer) };
            let next = serde_json::to_string(&next).map_err(|_| ApprovalError::Unavailable)?;
            let swapped: i64 = self
                .0
                .cas
                .key(&key)
                .arg(&raw)
                .arg(&next)
                .invoke_async(&mut self.0.conn())
                .await
                .map_err(|e| ApprovalError::from(unavailable(e)))?;
            match swapped {
                1 => return Ok(answer),
                0 => return Err(ApprovalError::Unknown(id.into())),
                _ => continue,
            }
        }
        Err(ApprovalError::Unavailable)
    }
}

impl From<Unavailable> for ApprovalError {
    fn from(_: Unavailable) -> Self {
        ApprovalError::Unavailable
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
        Box::pin(async move {
            let plan = Plan::new(tool, arguments, requester, preview);
            let text = serde_json::to_string(&plan).map_err(|_| ApprovalError::Unavailable)?;
            let now = millis(plan.created);
            redis::pipe()
                .atomic()
                .set_ex(self.0.key(&format!("plan:{}", plan.id)), text, TTL.as_secs())
                .zadd(self.0.key("plans"), &plan.id, now)
                .zrembyscore(self.0.key("plans"), 0, now.saturating_sub(TTL.as_millis() as u64))
                .exec_async(&mut self.0.conn())
                .await
                .map_err(|e| ApprovalError::from(unavailable(e)))?;
            Ok(plan)
        })
    }

    fn get<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Plan>, ApprovalError>> {
        Box::pin(async move { Ok(self.read(id).await?.map(|(_, p)| p)) })
    }

    fn list<'a>(
        &'a self,
        requester: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<Plan>, ApprovalError>> {
        Box::pin(async move {
            let mut conn = self.0.conn();
            let ids: Vec<String> = conn
                .zrange(self.0.key("plans"), 0, -1)
                .await
                .map_err(|e| ApprovalError::from(unavailable(e)))?;
            if ids.is_empty() {
                return Ok(vec![]);
            }
            let keys: Vec<String> =
                ids.iter().map(|id| self.0.key(&format!("plan:{id}"))).collect();
            let raws: Vec<Option<String>> = redis::cmd("MGET")
                .arg(&keys)
                .query_async(&mut conn)
                .await
                .map_err(|e| ApprovalError::from(unavailable(e)))?;
            let mut plans = Vec::new();
            for raw in raws.into_iter().flatten() {
                let plan: Plan =
                    serde_json::from_str(&raw).map_err(|_| ApprovalError::Unavailable)?;
                if !plan.expired() && requester.is_none_or(|r| plan.requester == r) {
                    plans.push(plan);
                }
            }
            plans.sort_by_key(|p| p.created);
            Ok(plans)
        })
    }

    fn decide<'a>(
        &'a self,
        id: &'a str,
        hash: &'a str,
        approver: &'a str,
        approve: bool,
    ) -> BoxFuture<'a, Result<Plan, ApprovalError>> {
        Box::pin(self.transition(id, move |plan| {
            Ok(match plan.decided(hash, approver, approve)? {
                Some(next) => (Some(next.clone()), next),
                None => (None, plan.clone()),
            })
        }))
    }

    fn redeem<'a>(
        &'a self,
        id: &'a str,
        tool: &'a str,
        args: &'a Map<String, Value>,
        principal: &'a str,
    ) -> BoxFuture<'a, Result<Plan, ApprovalError>> {
        Box::pin(self.transition(id, move |plan| {
            Ok((Some(plan.redeemed(tool, args, principal)?), plan.clone()))
        }))
    }
}

/// Rate and budget windows in the store.
pub struct Counters(pub Arc<Redis>);

impl CounterStore for Counters {
    fn take<'a>(
        &'a self,
        who: &'a str,
        what: &'a str,
        max: u64,
        per: Duration,
    ) -> BoxFuture<'a, Result<(), TakeError>> {
        Box::pin(async move {
            let key = self.0.key(&format!("count:{what}:{who}"));
            let (taken, left_ms): (i64, i64) = self
                .0
                .take
                .key(key)
                .arg(max)
                .arg(per.as_millis() as u64)
                .invoke_async(&mut self.0.conn())
                .await
                .map_err(|e| {
                    unavailable(e);
                    TakeError::Unavailable
                })?;
            if taken == 1 {
                return Ok(());
            }
            let left = Duration::from_millis(u64::try_from(left_ms).unwrap_or(1000));
            Err(TakeError::Exceeded(Exceeded {
                limit: what.to_string(),
                retry_after_seconds: left.as_secs().max(1),
            }))
        })
    }
}

/// Session records in the store, keyed by a digest of the session ID.
pub struct Sessions(pub Arc<Redis>);

impl Sessions {
    fn key(&self, id: &str) -> String {
        self.0.key(&format!("session:{}", stored_name(id)))
    }
}

impl SessionStore for Sessions {
    fn put<'a>(
        &'a self,
        id: &'a str,
        record: &'a SessionRecord,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), Unavailable>> {
        Box::pin(async move {
            let text = serde_json::to_string(record).map_err(|_| Unavailable)?;
            self.0
                .conn()
                .set_ex::<_, _, ()>(self.key(id), text, ttl.as_secs().max(1))
                .await
                .map_err(unavailable)
        })
    }

    fn get<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<SessionRecord>, Unavailable>> {
        Box::pin(async move {
            let raw: Option<String> = self.0.conn().get(self.key(id)).await.map_err(unavailable)?;
            raw.map(|r| serde_json::from_str(&r).map_err(|_| Unavailable)).transpose()
        })
    }

    fn touch<'a>(&'a self, id: &'a str, ttl: Duration) -> BoxFuture<'a, Result<bool, Unavailable>> {
        Box::pin(async move {
            self.0
                .conn()
                .expire::<_, bool>(self.key(id), ttl.as_secs().max(1) as i64)
                .await
                .map_err(unavailable)
        })
    }

    fn remove<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), Unavailable>> {
        Box::pin(async move { self.0.conn().del::<_, ()>(self.key(id)).await.map_err(unavailable) })
    }
}
