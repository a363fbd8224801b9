//! Where the live client sessions of this replica are found, behind a trait so that a
//! registry that also records sessions in a shared store can replace it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::client::ClientSession;

/// The most sessions a replica keeps at once; past it, `initialize` is refused.
pub const MAX_SESSIONS: usize = 1000;

/// Live sessions by ID.
pub trait SessionRegistry: Send + Sync {
    /// Registers a session; `false` when the registry holds the most sessions it may.
    fn insert(&self, s: Arc<ClientSession>) -> bool;
    fn get(&self, id: &str) -> Option<Arc<ClientSession>>;
    fn remove(&self, id: &str) -> Option<Arc<ClientSession>>;
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The IDs of sessions idle for longer than `idle`.
    fn idle(&self, idle: Duration) -> Vec<String>;
    /// The IDs of every session.
    fn ids(&self) -> Vec<String>;
}

/// Sessions in this replica's memory.
#[derive(Default)]
pub struct MemorySessions {
    sessions: Mutex<HashMap<String, Arc<ClientSession>>>,
}

impl SessionRegistry for MemorySessions {
    fn insert(&self, s: Arc<ClientSession>) -> bool {
        let Ok(mut sessions) = self.sessions.lock() else { return false };
        if sessions.len() >= MAX_SESSIONS {
            return false;
        }
        sessions.insert(s.id.clone(), s);
        true
    }

    fn get(&self, id: &str) -> Option<Arc<ClientSession>> {
        self.sessions.lock().ok().and_then(|s| s.get(id).cloned())
    }

    fn remove(&self, id: &str) -> Option<Arc<ClientSession>> {
        self.sessions.lock().ok().and_then(|mut s| s.remove(id))
    }

    fn len(&self) -> usize {
        self.sessions.lock().map(|s| s.len()).unwrap_or(0)
    }

    fn idle(&self, idle: Duration) -> Vec<String> {
        self.sessions
            .lock()
            .map(|s| s.values().filter(|x| x.idle_for() > idle).map(|x| x.id.clone()).collect())
            .unwrap_or_default()
    }

    fn ids(&self) -> Vec<String> {
        self.sessions.lock().map(|s| s.keys().cloned().collect()).unwrap_or_default()
    }
}
