//! Which job a request comes from. Every job gets a token of its own, in a
//! file only it is told about (`LAGER_JOB_TOKEN_FILE`, mode 0600 in its
//! private work dir): never on a command line, never in the environment. A
//! request bearing a live job's token is that job's: it passes the box's
//! token check (`--token-file`), and with `--enforce-locks` it acts as the
//! holder its run was started with (locking.md A.10). The token dies with
//! the job.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// What lagerd knows about the job behind a token.
#[derive(Clone, Debug, PartialEq)]
pub struct Caller {
    pub run_id: String,
    /// The run's lock holder (`holder` field or `Lager-Holder` header of its
    /// `POST /python`), if it named one.
    pub holder: Option<String>,
}

#[derive(Default)]
pub struct Callers {
    live: Mutex<HashMap<u64, (String, Caller)>>,
    next: AtomicU64,
}

/// Keeps a job's token valid; dropping it (with the job) revokes it.
pub struct CallerGuard {
    callers: Arc<Callers>,
    key: u64,
}

impl Drop for CallerGuard {
    fn drop(&mut self) {
        self.callers
            .live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.key);
    }
}

impl Callers {
    /// A fresh token for a job, valid while the guard lives.
    pub fn register(self: &Arc<Self>, caller: Caller, token: String) -> CallerGuard {
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        self.live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, (token, caller));
        CallerGuard {
            callers: self.clone(),
            key,
        }
    }

    /// The live job whose token is `token`. Compared in constant time, like
    /// the box's own token.
    pub fn find(&self, token: &str) -> Option<Caller> {
        let live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        live.values()
            .find(|(known, _)| constant_time_eq(known.as_bytes(), token.as_bytes()))
            .map(|(_, caller)| caller.clone())
    }
}

pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_valid_while_its_job_lives() {
        let callers = Arc::new(Callers::default());
        let caller = Caller {
            run_id: "r1".into(),
            holder: Some("alice".into()),
        };
        let guard = callers.register(caller.clone(), "t0ken".into());
        assert_eq!(callers.find("t0ken"), Some(caller));
        assert_eq!(callers.find("t0ke"), None);
        assert_eq!(callers.find(""), None);
        drop(guard);
        assert_eq!(callers.find("t0ken"), None);
    }
}
