//! The auto-lock of box-mutating commands (locking.md B.2, B.4–B.7):
//! environment settings, `acquire` with the daemon's wait queue, the
//! heartbeat thread and its outage warnings, and the one process-wide
//! guard that releases the lock at most once on every way out.
//!
//! This module owns the guard (`GUARD`); nothing else releases an
//! auto-lock. Signal handlers never do HTTP: the signal thread of
//! [`crate::signals`] calls [`on_signal`], which releases and exits.

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::bounded::Range;
use common::holder::{format_lock_user, lock_scope, EnvLookup};
use serde_json::{json, Value};

use crate::client::Client;
use crate::error::CliError;
use crate::output;
use crate::transport::capped;

/// Spec B.4/B.5/B.6: pre-check, heartbeat and release requests get 5 s.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest `wait_seconds` lagerd accepts (locking.md A.8).
const WAIT_SECONDS_MAX: u64 = common::wire::WAIT_SECONDS_MAX;
/// Failures in a row before an eternal lock's heartbeat warns (B.5).
const ETERNAL_WARN_FAILURES: u32 = 5;

// ---------------------------------------------------------------------------
// B.2: settings from the environment

/// How auto-locks behave, from the environment (locking.md B.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockSettings {
    /// `LAGER_AUTO_LOCK_DISABLE`: run the passive check instead.
    pub disabled: bool,
    /// `LAGER_LOCK_WAIT`: how long to queue behind another holder.
    pub wait: Duration,
    /// `LAGER_LOCK_TTL`: `None` is eternal.
    pub ttl_secs: Option<u32>,
    /// `LAGER_LOCK_HEARTBEAT`.
    pub heartbeat: Duration,
    /// `ci` under CI, `ephemeral` on a dev host.
    pub holder_type: &'static str,
}

fn parse_int(value: &str) -> Option<i64> {
    value.trim().parse::<i64>().ok()
}

/// Longest `LAGER_LOCK_WAIT` (a week) and `LAGER_LOCK_HEARTBEAT` (a day):
/// B.2 clamps these variables rather than refusing them, and a larger
/// number would overflow the deadline it becomes (issue 12).
const WAIT_SECS: Range = Range::new(0.0, 604_800.0, "seconds");
const HEARTBEAT_SECS: Range = Range::new(1.0, 86_400.0, "seconds");

/// `LAGER_LOCK_WAIT`: unset ⇒ 0 on a dev host, 1800 under CI;
/// `max(0, int)`, at most a week; not an integer ⇒ 0.
pub fn parse_wait_secs(value: Option<&str>, ci: bool) -> u64 {
    match value {
        None if ci => 1800,
        None => 0,
        Some(v) => parse_int(v).map_or(0, |n| WAIT_SECS.clamp(n as f64) as u64),
    }
}

/// `LAGER_LOCK_TTL`: unset ⇒ 1800; empty, `none`, `null` ⇒ eternal;
/// integer ⇒ `max(1, n)`; anything else ⇒ 1800.
pub fn parse_ttl_secs(value: Option<&str>) -> Option<u32> {
    let Some(v) = value else {
        return Some(1800);
    };
    let trimmed = v.trim();
    if trimmed.is_empty()
        || trimmed.eq_ignore_ascii_case("none")
        || trimmed.eq_ignore_ascii_case("null")
    {
        return None;
    }
    Some(parse_int(trimmed).map_or(1800, |n| n.clamp(1, i64::from(u32::MAX)) as u32))
}

/// `LAGER_LOCK_HEARTBEAT`: unset or garbage ⇒ 60; integer ⇒ `max(1, n)`,
/// at most a day.
pub fn parse_heartbeat_secs(value: Option<&str>) -> u64 {
    value
        .and_then(parse_int)
        .map_or(60, |n| HEARTBEAT_SECS.clamp(n as f64) as u64)
}

impl LockSettings {
    /// Reads B.2's variables through `env`; `ci` = CI detected (B.1).
    pub fn from_env(env: EnvLookup<'_>, ci: bool) -> LockSettings {
        LockSettings {
            disabled: env("LAGER_AUTO_LOCK_DISABLE").is_some_and(|v| !v.is_empty()),
            wait: Duration::from_secs(parse_wait_secs(env("LAGER_LOCK_WAIT").as_deref(), ci)),
            ttl_secs: parse_ttl_secs(env("LAGER_LOCK_TTL").as_deref()),
            heartbeat: Duration::from_secs(parse_heartbeat_secs(
                env("LAGER_LOCK_HEARTBEAT").as_deref(),
            )),
            holder_type: if ci { "ci" } else { "ephemeral" },
        }
    }
}

// ---------------------------------------------------------------------------
// B.4: acquire

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcquireState {
    /// We took the lock; we release it.
    Acquired,
    /// Our scope already held it; it is kept, never released.
    AlreadyOurs,
    /// The box did not answer; no lock, the command goes on and fails on its own.
    Unreachable,
}

#[derive(Debug, Clone)]
pub struct Acquisition {
    pub state: AcquireState,
    /// The lock record (without `previous_user`), when known.
    pub record: Option<Value>,
}

fn user_of(record: &Value) -> Option<&str> {
    record.get("user").and_then(Value::as_str)
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// `acquire(box, holder, type, ttl, wait)` of locking.md B.4.
pub fn acquire(
    client: &Client,
    display: &str,
    holder: &str,
    holder_type: &str,
    ttl_secs: Option<u32>,
    wait: Duration,
) -> Result<Acquisition, CliError> {
    let start = Instant::now();
    let deadline = start + wait;
    let ours = |user: &str| lock_scope(user) == lock_scope(holder);

    let mut announced = false;
    let announce = |user: &str, remaining: Duration| {
        output::warn(&format!(
            "Box '{display}' is locked by {}; waiting up to {}s for release...",
            format_lock_user(user),
            ceil_secs(remaining)
        ));
    };

    // 1. Pre-check: adopt our own lock without writing to it.
    match client.get("/lock", capped(REQUEST_TIMEOUT)) {
        Ok(reply) if reply.status == 200 => {
            if let Some(record) = reply.json() {
                let locked = record.get("locked").and_then(Value::as_bool) == Some(true);
                if locked && user_of(&record).is_some_and(ours) {
                    return Ok(Acquisition {
                        state: AcquireState::AlreadyOurs,
                        record: Some(record),
                    });
                }
                // A queueing box answers the POST only once the lock is
                // granted, so name the holder we are waiting behind now.
                if let Some(user) = user_of(&record).filter(|_| locked && !wait.is_zero()) {
                    announced = true;
                    announce(user, deadline.saturating_duration_since(Instant::now()));
                }
            }
        }
        Ok(reply) => log::debug!("lock pre-check on {display}: HTTP {}", reply.status),
        Err(e) => log::debug!("lock pre-check on {display} failed: {e}"),
    }

    loop {
        // 2. Payload; ask lagerd to queue us while any wait remains.
        let remaining = deadline.saturating_duration_since(Instant::now());
        let mut payload =
            json!({"user": holder, "holder_type": holder_type, "ttl_seconds": ttl_secs});
        let wait_seconds = if remaining.is_zero() {
            0
        } else {
            ceil_secs(remaining).min(WAIT_SECONDS_MAX)
        };
        let timeout = if wait_seconds > 0 {
            payload["wait_seconds"] = json!(wait_seconds);
            Duration::from_secs(wait_seconds + 10)
        } else {
            capped(REQUEST_TIMEOUT)
        };
        // 3. POST /lock.
        let sent = Instant::now();
        let reply = match client.post_json("/lock", &payload, timeout) {
            Ok(reply) => reply,
            Err(e) => {
                output::warn(&format!(
                    "Warning: Could not reach box '{display}' to acquire lock: {e}"
                ));
                return Ok(Acquisition {
                    state: AcquireState::Unreachable,
                    record: None,
                });
            }
        };
        match reply.status {
            200 => {
                let mut record = reply.json().unwrap_or(Value::Null);
                let previous = record
                    .as_object_mut()
                    .and_then(|r| r.remove("previous_user"))
                    .and_then(|p| p.as_str().map(str::to_string));
                let state = match previous {
                    Some(previous) if ours(&previous) => AcquireState::AlreadyOurs,
                    _ => AcquireState::Acquired,
                };
                log::info!("lock on {display}: {state:?} as {holder}");
                return Ok(Acquisition {
                    state,
                    record: Some(record),
                });
            }
            409 => {
                let lock = reply.json().and_then(|b| b.get("lock").cloned());
                let user = lock
                    .as_ref()
                    .and_then(user_of)
                    .unwrap_or("unknown")
                    .to_string();
                if ours(&user) {
                    return Ok(Acquisition {
                        state: AcquireState::AlreadyOurs,
                        record: lock,
                    });
                }
                let now = Instant::now();
                if now >= deadline {
                    return Err(CliError::Locked {
                        display: display.to_string(),
                        user: format_lock_user(&user),
                        waited_secs: (!wait.is_zero()).then(|| ceil_secs(wait)),
                    });
                }
                let remaining = deadline - now;
                if !announced {
                    announced = true;
                    announce(&user, remaining);
                }
                // An old box ignores wait_seconds and answers at once: poll gently.
                let answered_after = now - sent;
                if answered_after + Duration::from_secs(1) < Duration::from_secs(wait_seconds) {
                    std::thread::sleep(remaining.min(Duration::from_secs(2)));
                }
            }
            401 => {
                return Err(CliError::TokenRequired {
                    display: display.to_string(),
                })
            }
            status => {
                return Err(CliError::UnexpectedAcquire {
                    display: display.to_string(),
                    status,
                })
            }
        }
    }
}

// ---------------------------------------------------------------------------
// B.5: heartbeat

/// `45s`, `1m`, `1m30s`, `15m`, `1h`, `1h30m`.
pub fn fmt_duration(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    match (h, m, s) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, 0, _) => format!("{h}h"),
        (h, m, _) => format!("{h}h{m}m"),
    }
}

/// Counts heartbeat failures and says when to warn: once per outage,
/// re-armed by a success (locking.md B.5).
#[derive(Debug)]
pub struct Outage {
    interval: Duration,
    ttl_secs: Option<u32>,
    label: String,
    failures: u32,
    warned: bool,
}

impl Outage {
    pub fn new(interval: Duration, ttl_secs: Option<u32>, label: &str) -> Outage {
        Outage {
            interval,
            ttl_secs,
            label: label.to_string(),
            failures: 0,
            warned: false,
        }
    }

    pub fn success(&mut self) {
        self.failures = 0;
        self.warned = false;
    }

    /// Records a failure; the warning text when one is due.
    pub fn failure(&mut self) -> Option<String> {
        self.failures += 1;
        if self.warned {
            return None;
        }
        let down = self.interval * self.failures;
        let due = match self.ttl_secs {
            Some(ttl) => down.as_millis() * 2 >= u128::from(ttl) * 1000,
            None => self.failures >= ETERNAL_WARN_FAILURES,
        };
        if !due {
            return None;
        }
        self.warned = true;
        let label = &self.label;
        let down = fmt_duration(down.as_secs());
        Some(match self.ttl_secs {
            Some(ttl) => format!(
                "Warning: {label} has not renewed for {down} of its {} TTL; the lock will expire if this continues.",
                fmt_duration(u64::from(ttl))
            ),
            None => format!(
                "Warning: {label} has failed {} times in a row ({down}); the box may be unreachable.",
                self.failures
            ),
        })
    }
}

#[derive(Debug, Default)]
struct BeatState {
    stop: bool,
    paused: bool,
    /// Bumped by `unpause` so the thread restarts its window.
    generation: u64,
}

/// Where heartbeat warnings go (stderr in the CLI, a list in tests).
pub type WarnSink = Arc<dyn Fn(&str) + Send + Sync>;

/// The background heartbeat of one held lock.
pub struct Heartbeat {
    control: Arc<(Mutex<BeatState>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Heartbeat {
    /// Sends `POST /lock/heartbeat {"user": holder}` every `interval`.
    pub fn start(
        client: Client,
        holder: &str,
        interval: Duration,
        ttl_secs: Option<u32>,
        label: &str,
        sink: WarnSink,
    ) -> Heartbeat {
        let control = Arc::new((Mutex::new(BeatState::default()), Condvar::new()));
        let shared = Arc::clone(&control);
        let body = json!({"user": holder});
        let mut outage = Outage::new(interval, ttl_secs, label);
        let thread = std::thread::Builder::new()
            .name("lager-heartbeat".into())
            .spawn(move || {
                let (state, wake) = &*shared;
                let mut generation = 0;
                loop {
                    let mut due = Instant::now() + interval;
                    {
                        let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
                        loop {
                            if st.stop {
                                return;
                            }
                            if st.paused {
                                st = wake.wait(st).unwrap_or_else(|e| e.into_inner());
                                continue;
                            }
                            if st.generation != generation {
                                generation = st.generation;
                                outage.success();
                                due = Instant::now() + interval;
                            }
                            let now = Instant::now();
                            if now >= due {
                                break;
                            }
                            st = wake
                                .wait_timeout(st, due - now)
                                .unwrap_or_else(|e| e.into_inner())
                                .0;
                        }
                    }
                    let result =
                        client.post_json("/lock/heartbeat", &body, capped(REQUEST_TIMEOUT));
                    let st = state.lock().unwrap_or_else(|e| e.into_inner());
                    if st.stop {
                        return;
                    }
                    if st.paused || st.generation != generation {
                        continue; // paused mid-request: it does not count
                    }
                    drop(st);
                    match result {
                        Ok(reply) if reply.status == 200 => outage.success(),
                        other => {
                            match &other {
                                Ok(reply) => log::debug!("heartbeat: HTTP {}", reply.status),
                                Err(e) => log::debug!("heartbeat: {e}"),
                            }
                            if let Some(text) = outage.failure() {
                                sink(&text);
                            }
                        }
                    }
                }
            });
        let thread = match thread {
            Ok(thread) => Some(thread),
            Err(e) => {
                log::warn!(
                    "cannot start the lock heartbeat: {e}; the lock may expire after its TTL"
                );
                None
            }
        };
        Heartbeat { control, thread }
    }

    fn update(&self, change: impl FnOnce(&mut BeatState)) {
        let (state, wake) = &*self.control;
        change(&mut state.lock().unwrap_or_else(|e| e.into_inner()));
        wake.notify_all();
    }

    /// No requests and no counting until [`Heartbeat::unpause`].
    pub fn pause(&self) {
        self.update(|st| st.paused = true);
    }

    /// Resumes with a fresh window (a full interval, no failures counted).
    pub fn unpause(&self) {
        self.update(|st| {
            st.paused = false;
            st.generation += 1;
        });
    }

    /// Stops the thread and waits for it (at most one request's timeout).
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.update(|st| st.stop = true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.halt();
    }
}

// ---------------------------------------------------------------------------
// B.6: the one process-wide guard

struct Held {
    client: Client,
    holder: String,
    heartbeat: Option<Heartbeat>,
    /// Only a lock we took (or may have been granted) is released.
    release: bool,
}

static GUARD: Mutex<Option<Held>> = Mutex::new(None);

fn guard() -> std::sync::MutexGuard<'static, Option<Held>> {
    GUARD.lock().unwrap_or_else(|e| e.into_inner())
}

/// Best-effort `POST /unlock {"user": holder}` (no force); true on 200.
pub fn send_release(client: &Client, holder: &str) -> bool {
    match client.post_json("/unlock", &json!({"user": holder}), capped(REQUEST_TIMEOUT)) {
        Ok(reply) if reply.status == 200 => true,
        Ok(reply) => {
            log::warn!(
                "releasing the lock on {} got HTTP {}",
                client.addr(),
                reply.status
            );
            false
        }
        Err(e) => {
            log::warn!("could not release the lock on {}: {e}", client.addr());
            false
        }
    }
}

/// Acquires per B.4 for this process and arms the guard: heartbeat for a
/// TTL lock we hold (or an adopted one with a TTL), release at exit for a
/// lock we took. A signal while waiting releases best-effort and exits.
pub fn engage(
    client: &Client,
    display: &str,
    holder: &str,
    settings: &LockSettings,
) -> Result<Acquisition, CliError> {
    crate::signals::install(on_signal);
    // Armed before the wait: a grant may race a signal (B.4 step 4).
    *guard() = Some(Held {
        client: client.clone(),
        holder: holder.to_string(),
        heartbeat: None,
        release: true,
    });
    let result = acquire(
        client,
        display,
        holder,
        settings.holder_type,
        settings.ttl_secs,
        settings.wait,
    );
    let mut slot = guard();
    let acquisition = match result {
        Ok(acquisition) => acquisition,
        Err(e) => {
            *slot = None;
            return Err(e);
        }
    };
    arm(&mut slot, client, holder, settings, &acquisition);
    Ok(acquisition)
}

/// Arms the guard for a lock taken by [`crate::pick`] (`--box any:…`),
/// exactly as if [`engage`] had acquired it: heartbeat, release at exit.
pub fn adopt(client: &Client, holder: &str, settings: &LockSettings, acquisition: &Acquisition) {
    crate::signals::install(on_signal);
    arm(&mut guard(), client, holder, settings, acquisition);
}

fn arm(
    slot: &mut Option<Held>,
    client: &Client,
    holder: &str,
    settings: &LockSettings,
    acquisition: &Acquisition,
) {
    let record_ttl = acquisition
        .record
        .as_ref()
        .and_then(|r| r.get("ttl_seconds"))
        .and_then(Value::as_u64)
        .map(|t| t.min(u64::from(u32::MAX)) as u32);
    let heartbeat_ttl = match acquisition.state {
        AcquireState::Acquired => settings.ttl_secs,
        AcquireState::AlreadyOurs => record_ttl,
        AcquireState::Unreachable => None,
    };
    if acquisition.state == AcquireState::Unreachable {
        *slot = None;
        return;
    }
    let sink: WarnSink = Arc::new(|text: &str| output::warn(text));
    let heartbeat = heartbeat_ttl.map(|ttl| {
        Heartbeat::start(
            client.clone(),
            holder,
            settings.heartbeat,
            Some(ttl),
            "lock heartbeat",
            sink,
        )
    });
    *slot = Some(Held {
        client: client.clone(),
        holder: holder.to_string(),
        heartbeat,
        release: acquisition.state == AcquireState::Acquired,
    });
}

/// Releases the process's lock, at most once: stops the heartbeat, then
/// `POST /unlock` if we took the lock. Safe to call on every exit path.
pub fn release() {
    let held = guard().take();
    finish(held);
}

fn finish(held: Option<Held>) {
    if let Some(mut held) = held {
        if let Some(heartbeat) = held.heartbeat.take() {
            heartbeat.stop();
        }
        if held.release {
            send_release(&held.client, &held.holder);
        }
    }
}

/// Keeps the lock past exit (a successful `--detach`, or `uninstall` after
/// the box's state is gone): stops the heartbeat, sends nothing.
pub fn keep() {
    if let Some(mut held) = guard().take() {
        if let Some(heartbeat) = held.heartbeat.take() {
            heartbeat.stop();
        }
    }
}

/// Pauses the guard's heartbeat (install/update around daemon restarts).
pub fn pause_heartbeat() {
    if let Some(heartbeat) = guard().as_ref().and_then(|h| h.heartbeat.as_ref()) {
        heartbeat.pause();
    }
}

pub fn unpause_heartbeat() {
    if let Some(heartbeat) = guard().as_ref().and_then(|h| h.heartbeat.as_ref()) {
        heartbeat.unpause();
    }
}

/// The signal thread's action: release, then exit `128 + signo`.
pub fn on_signal(signo: i32) {
    release();
    std::process::exit(128 + signo);
}

/// Releases the lock when the process panics, before the default hook.
pub fn install_panic_release() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        // try_lock: a panic while this thread holds the guard must not
        // deadlock; the box's TTL reap covers that case.
        let held = match GUARD.try_lock() {
            Ok(mut slot) => slot.take(),
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner().take(),
            Err(std::sync::TryLockError::WouldBlock) => None,
        };
        finish(held);
        previous(info);
    }));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn wait_parsing() {
        assert_eq!(parse_wait_secs(None, false), 0);
        assert_eq!(parse_wait_secs(None, true), 1800);
        assert_eq!(parse_wait_secs(Some("30"), false), 30);
        assert_eq!(parse_wait_secs(Some(" 30 "), true), 30);
        assert_eq!(parse_wait_secs(Some("-5"), true), 0);
        assert_eq!(parse_wait_secs(Some("abc"), true), 0);
        assert_eq!(parse_wait_secs(Some(""), true), 0);
    }

    #[test]
    fn ttl_parsing() {
        assert_eq!(parse_ttl_secs(None), Some(1800));
        assert_eq!(parse_ttl_secs(Some("")), None);
        assert_eq!(parse_ttl_secs(Some("none")), None);
        assert_eq!(parse_ttl_secs(Some("NULL")), None);
        assert_eq!(parse_ttl_secs(Some("45")), Some(45));
        assert_eq!(parse_ttl_secs(Some("0")), Some(1));
        assert_eq!(parse_ttl_secs(Some("-3")), Some(1));
        assert_eq!(parse_ttl_secs(Some("99999999999")), Some(u32::MAX));
        assert_eq!(parse_ttl_secs(Some("2.5")), Some(1800));
        assert_eq!(parse_ttl_secs(Some("soon")), Some(1800));
    }

    #[test]
    fn heartbeat_parsing() {
        assert_eq!(parse_heartbeat_secs(None), 60);
        assert_eq!(parse_heartbeat_secs(Some("5")), 5);
        assert_eq!(parse_heartbeat_secs(Some("0")), 1);
        assert_eq!(parse_heartbeat_secs(Some("x")), 60);
    }

    #[test]
    fn settings_from_env() {
        let map: HashMap<&str, &str> =
            [("LAGER_AUTO_LOCK_DISABLE", "0"), ("LAGER_LOCK_TTL", "none")].into();
        let env = move |k: &str| map.get(k).map(|v| v.to_string());
        let s = LockSettings::from_env(&env, true);
        assert!(s.disabled, "any non-empty value disables, even 0");
        assert_eq!(s.ttl_secs, None);
        assert_eq!(s.wait, Duration::from_secs(1800));
        assert_eq!(s.heartbeat, Duration::from_secs(60));
        assert_eq!(s.holder_type, "ci");
        let empty = |_: &str| None;
        let s = LockSettings::from_env(&empty, false);
        assert!(!s.disabled);
        assert_eq!(s.wait, Duration::ZERO);
        assert_eq!(s.ttl_secs, Some(1800));
        assert_eq!(s.holder_type, "ephemeral");
    }

    #[test]
    fn durations() {
        assert_eq!(fmt_duration(45), "45s");
        assert_eq!(fmt_duration(60), "1m");
        assert_eq!(fmt_duration(90), "1m30s");
        assert_eq!(fmt_duration(900), "15m");
        assert_eq!(fmt_duration(3600), "1h");
        assert_eq!(fmt_duration(5400), "1h30m");
        assert_eq!(fmt_duration(0), "0s");
    }

    #[test]
    fn ttl_outage_warns_once_at_half_the_ttl() {
        let mut outage = Outage::new(Duration::from_secs(60), Some(1800), "lock heartbeat");
        for _ in 0..14 {
            assert_eq!(outage.failure(), None);
        }
        assert_eq!(
            outage.failure().as_deref(),
            Some("Warning: lock heartbeat has not renewed for 15m of its 30m TTL; the lock will expire if this continues.")
        );
        assert_eq!(outage.failure(), None, "once per outage");
        outage.success();
        for _ in 0..14 {
            assert_eq!(outage.failure(), None);
        }
        assert!(outage.failure().is_some(), "re-armed by a success");
    }

    #[test]
    fn eternal_outage_warns_at_five_failures() {
        let mut outage = Outage::new(Duration::from_secs(60), None, "install lock heartbeat");
        for _ in 0..4 {
            assert_eq!(outage.failure(), None);
        }
        assert_eq!(
            outage.failure().as_deref(),
            Some("Warning: install lock heartbeat has failed 5 times in a row (5m); the box may be unreachable.")
        );
        assert_eq!(outage.failure(), None);
    }
}
