//! Picking a free box (fleet.md §3): `lager boxes lock --any` and
//! `lager python --box any:PATTERN`.
//!
//! 1. Every saved box whose name matches the pool glob is probed at once
//!    on a bounded pool (`GET /status` when nets are named, then
//!    `GET /lock`), each within one per-box budget, so a dead box costs
//!    one timeout and never delays the others.
//! 2. As answers arrive, the first free box is locked with a plain
//!    `POST /lock`; a box that was taken meanwhile (409) just makes way
//!    for the next free answer. One lock request at a time: we never hold
//!    two boxes, not even for a moment.
//! 3. With a wait and no free box, a queued `POST /lock` (`wait_seconds`)
//!    goes to every held candidate, each on its own thread and socket.
//!    The first grant wins; every other request is cancelled by shutting
//!    its socket (lagerd drops a waiter whose client left, and rolls back
//!    a grant it could not deliver) and then released with a plain
//!    `POST /unlock`, which also frees a grant that was delivered in the
//!    instant before the cancel. A grant that arrives after the winner is
//!    released at once.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use common::holder::{format_lock_user, lock_scope};
use serde_json::{json, Value};

use crate::boxsel::{target_of_entry, Target};
use crate::client::{capped, Client};
use crate::config::{natural_cmp, BoxEntry, Config};
use crate::error::CliError;
use crate::output;

/// Probe threads at once; a hung box holds one for its whole budget, so
/// this many hung boxes are needed to slow the rest down.
pub const MAX_PROBE_THREADS: usize = 64;
/// Boxes queued on at once with a wait (one thread and socket each).
const MAX_QUEUED: usize = 64;
/// One box's probe (status, then lock) must fit in this.
const BOX_BUDGET: Duration = Duration::from_secs(5);
/// A plain lock or unlock request.
const LOCK_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest `wait_seconds` lagerd accepts (locking.md A.8).
const WAIT_SECONDS_MAX: u64 = common::wire::WAIT_SECONDS_MAX;

/// Which boxes may be picked.
#[derive(Debug, Clone, Default)]
pub struct Want {
    /// Name glob (`*`, `?`); every saved box when `None`.
    pub pool: Option<String>,
    /// Nets that must exist on the box and not be reported unhealthy.
    pub nets: Vec<String>,
}

/// The lock to take (locking.md B.1/B.4 payload).
#[derive(Debug, Clone)]
pub struct Holder {
    pub user: String,
    pub holder_type: String,
    pub ttl_secs: Option<u32>,
}

impl Holder {
    fn body(&self, wait_secs: u64) -> Value {
        let mut body = json!({
            "user": self.user,
            "holder_type": self.holder_type,
            "ttl_seconds": self.ttl_secs,
        });
        if wait_secs > 0 {
            body["wait_seconds"] = json!(wait_secs);
        }
        body
    }

    fn ours(&self, user: &str) -> bool {
        lock_scope(user) == lock_scope(&self.user)
    }
}

/// The box that was picked, and its lock record.
#[derive(Debug, Clone)]
pub struct Picked {
    pub name: String,
    pub target: Target,
    pub record: Value,
    /// Our scope held it already: nothing was taken, nothing to release.
    pub already_ours: bool,
}

/// Glob match of a box name: `*` any run, `?` any one character.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni) = (0, 0);
    let mut back: Option<(usize, usize)> = None;
    while ni < n.len() {
        match p.get(pi) {
            Some('*') => {
                back = Some((pi, ni));
                pi += 1;
            }
            Some(c) if *c == '?' || *c == n[ni] => {
                pi += 1;
                ni += 1;
            }
            _ => match back {
                Some((star, matched)) => {
                    pi = star + 1;
                    ni = matched + 1;
                    back = Some((star, matched + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// Results from worker threads, in arrival order: a mutex and a condvar
/// rather than `mpsc`, whose code per item type costs the size-budgeted
/// `lager` binary several KiB.
struct Inbox<T> {
    state: Mutex<(VecDeque<T>, usize)>,
    ready: Condvar,
}

impl<T> Inbox<T> {
    /// An inbox fed by `senders` threads, each calling [`Inbox::done`] last.
    fn new(senders: usize) -> Inbox<T> {
        Inbox {
            state: Mutex::new((VecDeque::new(), senders)),
            ready: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (VecDeque<T>, usize)> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn put(&self, item: T) {
        self.lock().0.push_back(item);
        self.ready.notify_all();
    }

    fn done(&self) {
        self.lock().1 -= 1;
        self.ready.notify_all();
    }

    /// The next item; `None` once every sender is done and all is taken.
    fn next(&self) -> Option<T> {
        let mut state = self.lock();
        loop {
            if let Some(item) = state.0.pop_front() {
                return Some(item);
            }
            if state.1 == 0 {
                return None;
            }
            state = self.ready.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// What probing one box found.
#[derive(Debug)]
enum Probe {
    Free,
    /// Held by our own scope already.
    Ours(Value),
    /// Held by someone else (the holder, formatted).
    Held(String),
    /// Reachable, but a named net is missing or unhealthy.
    Unfit(String),
    Unreachable(String),
}

struct Candidate {
    name: String,
    target: Target,
}

/// Picks and locks a free box per the module comment. `wait` zero: fail
/// at once when none is free. The caller's signal handler should call
/// [`release_queued`] (or be [`on_signal`]).
pub fn pick(
    config: &Config,
    want: &Want,
    holder: &Holder,
    wait: Duration,
) -> Result<Picked, CliError> {
    let mut boxes: Vec<(&String, &BoxEntry)> = config
        .boxes
        .iter()
        .filter(|(name, _)| want.pool.as_deref().is_none_or(|p| glob_match(p, name)))
        .collect();
    boxes.sort_by(|a, b| natural_cmp(a.0, b.0));
    let pool_text = want.pool.clone().unwrap_or_else(|| "*".into());
    let candidates: Vec<Candidate> = boxes
        .into_iter()
        .filter_map(|(name, entry)| match target_of_entry(name, entry) {
            Ok(target) => Some(Candidate {
                name: name.clone(),
                target,
            }),
            Err(e) => {
                log::debug!("{name} cannot be picked: {e}");
                None
            }
        })
        .collect();
    if candidates.is_empty() {
        return Err(CliError::NoCandidate { pool: pool_text });
    }
    let started = Instant::now();
    let candidates = Arc::new(candidates);
    let inbox = spawn_probes(&candidates, want, holder);

    // Step 2: lock the first free answer, one request at a time.
    let mut held = Vec::new();
    let (mut busy, mut unfit, mut dead) = (0, 0, 0);
    while let Some((index, probe)) = inbox.next() {
        let candidate = &candidates[index];
        match &probe {
            Probe::Held(who) => log::info!("{}: locked by {who}", candidate.name),
            Probe::Unfit(why) | Probe::Unreachable(why) => {
                log::info!("{}: skipped, {why}", candidate.name)
            }
            Probe::Free | Probe::Ours(_) => log::info!("{}: free", candidate.name),
        }
        match probe {
            Probe::Ours(record) => {
                return Ok(picked(candidate, record, true));
            }
            Probe::Free => match try_lock(candidate, holder)? {
                Some(picked) => return Ok(picked),
                None => {
                    busy += 1;
                    held.push(index);
                }
            },
            Probe::Held(_) => {
                busy += 1;
                held.push(index);
            }
            Probe::Unfit(_) => unfit += 1,
            Probe::Unreachable(_) => dead += 1,
        }
    }
    let remaining = wait.saturating_sub(started.elapsed());
    if held.is_empty() || remaining.is_zero() {
        return Err(CliError::NoFreeBox {
            pool: pool_text,
            busy,
            unfit,
            unreachable: dead,
            waited_secs: (!wait.is_zero()).then_some(wait.as_secs()),
        });
    }
    // Step 3: queue on every held candidate; the first grant wins.
    held.truncate(MAX_QUEUED);
    output::warn(&format!(
        "No free box among {} (pool '{pool_text}'); waiting up to {}s in the queues of {} busy {}...",
        candidates.len(),
        remaining.as_secs().max(1),
        held.len(),
        if held.len() == 1 { "box" } else { "boxes" }
    ));
    match queue_on(&candidates, &held, holder, remaining) {
        Some((index, record)) => Ok(picked(&candidates[index], record, false)),
        None => Err(CliError::NoFreeBox {
            pool: pool_text,
            busy,
            unfit,
            unreachable: dead,
            waited_secs: Some(wait.as_secs()),
        }),
    }
}

fn picked(candidate: &Candidate, mut record: Value, already_ours: bool) -> Picked {
    if let Some(map) = record.as_object_mut() {
        map.remove("previous_user");
    }
    Picked {
        name: candidate.name.clone(),
        target: candidate.target.clone(),
        record,
        already_ours,
    }
}

fn spawn_probes(
    candidates: &Arc<Vec<Candidate>>,
    want: &Want,
    holder: &Holder,
) -> Arc<Inbox<(usize, Probe)>> {
    let threads = candidates.len().min(MAX_PROBE_THREADS);
    let inbox = Arc::new(Inbox::new(threads));
    let next = Arc::new(AtomicUsize::new(0));
    for _ in 0..threads {
        let (candidates, next, events) = (candidates.clone(), next.clone(), inbox.clone());
        let (want, holder) = (want.clone(), holder.clone());
        let spawned = std::thread::Builder::new()
            .name("lager-pick".into())
            .stack_size(256 * 1024)
            .spawn(move || {
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let Some(candidate) = candidates.get(index) else {
                        break;
                    };
                    events.put((index, probe(candidate, &want, &holder)));
                }
                events.done();
            });
        if let Err(e) = spawned {
            log::warn!("cannot start a probe thread: {e}");
            inbox.done();
        }
    }
    inbox
}

fn probe(candidate: &Candidate, want: &Want, holder: &Holder) -> Probe {
    let client = candidate.target.lock_client();
    let deadline = Instant::now() + capped(BOX_BUDGET);
    let left = || deadline.saturating_duration_since(Instant::now());
    if !want.nets.is_empty() {
        let status = match client.get("/status", left()) {
            Ok(reply) if reply.status == 200 => reply.json().unwrap_or(Value::Null),
            Ok(reply) => {
                return Probe::Unreachable(format!("/status answered HTTP {}", reply.status))
            }
            Err(e) => return Probe::Unreachable(e.to_string()),
        };
        if let Some(why) = unfit(&status, &want.nets) {
            return Probe::Unfit(why);
        }
    }
    let headers = [("Cache-Control", "no-cache")];
    let reply = match client.get_with("/lock", &headers, left()) {
        Ok(reply) if reply.status == 200 => reply,
        Ok(reply) => return Probe::Unreachable(format!("/lock answered HTTP {}", reply.status)),
        Err(e) => return Probe::Unreachable(e.to_string()),
    };
    let record = reply.json().unwrap_or(Value::Null);
    if record.get("locked").and_then(Value::as_bool) != Some(true) {
        return Probe::Free;
    }
    let user = record.get("user").and_then(Value::as_str).unwrap_or("");
    if holder.ours(user) {
        return Probe::Ours(record);
    }
    Probe::Held(format_lock_user(user))
}

/// Why a box's `/status` rules it out: a named net missing, or reported
/// unhealthy by its background check (a net not checked yet passes).
fn unfit(status: &Value, nets: &[String]) -> Option<String> {
    let present = status["nets"].as_array().cloned().unwrap_or_default();
    let checked = status["health"]["nets"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for net in nets {
        if !present.iter().any(|n| n["name"] == net.as_str()) {
            return Some(format!("no net '{net}'"));
        }
        if let Some(bad) = checked
            .iter()
            .find(|n| n["name"] == net.as_str() && n["ok"] == false)
        {
            return Some(format!(
                "net '{net}' is {}",
                bad["bucket"].as_str().unwrap_or("unhealthy")
            ));
        }
    }
    None
}

/// A plain `POST /lock`: `Some` when we got the box, `None` when it was
/// taken meanwhile or stopped answering.
fn try_lock(candidate: &Candidate, holder: &Holder) -> Result<Option<Picked>, CliError> {
    let client = candidate.target.lock_client();
    let reply = match client.post_json("/lock", &holder.body(0), capped(LOCK_TIMEOUT)) {
        Ok(reply) => reply,
        Err(e) => {
            log::debug!("{}: lock request failed: {e}", candidate.name);
            return Ok(None);
        }
    };
    match reply.status {
        200 => {
            let record = reply.json().unwrap_or(Value::Null);
            let previous = record.get("previous_user").and_then(Value::as_str);
            let ours = previous.is_some_and(|p| holder.ours(p));
            Ok(Some(picked(candidate, record, ours)))
        }
        409 => Ok(None),
        401 => Err(CliError::TokenRequired {
            display: candidate.name.clone(),
        }),
        status => {
            log::debug!("{}: lock request answered HTTP {status}", candidate.name);
            Ok(None)
        }
    }
}

/// Requests queued now, for the signal handler's best-effort release.
static QUEUED: Mutex<Vec<(Client, String)>> = Mutex::new(Vec::new());

/// SIGINT/SIGTERM/SIGHUP while queued (locking.md B.4 step 4): release
/// whatever a queue may have granted, then exit `128 + signo`.
pub fn on_signal(signo: i32) {
    release_queued();
    std::process::exit(128 + signo);
}

/// Best-effort release of every box a running [`pick`] is queued on (the
/// signal path of commands that pick; nothing when none is queued).
pub fn release_queued() {
    let queued = std::mem::take(&mut *QUEUED.lock().unwrap_or_else(|e| e.into_inner()));
    release_all(queued);
}

/// Best-effort `POST /unlock` (no force) to each box, concurrently.
fn release_all(boxes: Vec<(Client, String)>) {
    let threads: Vec<_> = boxes
        .into_iter()
        .map(|(client, user)| std::thread::spawn(move || release(&client, &user)))
        .collect();
    for thread in threads {
        let _ = thread.join();
    }
}

fn release(client: &Client, user: &str) {
    let body = json!({"user": user});
    match client.post_json("/unlock", &body, capped(LOCK_TIMEOUT)) {
        Ok(reply) => log::debug!("release on {}: HTTP {}", client.addr(), reply.status),
        Err(e) => log::debug!("release on {} failed: {e}", client.addr()),
    }
}

/// Queues on each of `held` at once; the index and record of the first
/// grant, or `None` when every wait ran out.
fn queue_on(
    candidates: &Arc<Vec<Candidate>>,
    held: &[usize],
    holder: &Holder,
    wait: Duration,
) -> Option<(usize, Value)> {
    *QUEUED.lock().unwrap_or_else(|e| e.into_inner()) = held
        .iter()
        .map(|i| (candidates[*i].target.lock_client(), holder.user.clone()))
        .collect();
    let deadline = Instant::now() + wait;
    let shared = Arc::new(Queueing {
        winner: AtomicUsize::new(usize::MAX),
        cancelled: AtomicBool::new(false),
        sockets: Mutex::new(Vec::new()),
    });
    let grants = Arc::new(Inbox::new(held.len()));
    let mut threads = Vec::new();
    for &index in held {
        let (all, shared, inbox) = (candidates.clone(), shared.clone(), grants.clone());
        let holder = holder.clone();
        let spawned = std::thread::Builder::new()
            .name("lager-queue".into())
            .stack_size(256 * 1024)
            .spawn(move || {
                wait_in_queue(&all[index], index, &holder, deadline, &shared, &inbox);
                inbox.done();
            });
        match spawned {
            Ok(thread) => threads.push(thread),
            Err(e) => {
                log::warn!("cannot queue on {}: {e}", candidates[index].name);
                grants.done();
            }
        }
    }
    let won = grants.next();
    // Cancel every other queued request: lagerd drops a waiter whose
    // socket closed, and each thread releases what it may have been given.
    shared.cancelled.store(true, Ordering::SeqCst);
    for (index, socket) in shared
        .sockets
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
    {
        if Some(*index) != won.as_ref().map(|(i, _)| *i) {
            let _ = socket.shutdown(Shutdown::Both);
        }
    }
    for thread in threads {
        let _ = thread.join();
    }
    QUEUED.lock().unwrap_or_else(|e| e.into_inner()).clear();
    won
}

struct Queueing {
    /// Index of the first granted box; `usize::MAX` until one is.
    winner: AtomicUsize,
    /// Set once a winner is known or the wait ended.
    cancelled: AtomicBool,
    /// Each queued request's socket, so it can be cut.
    sockets: Mutex<Vec<(usize, TcpStream)>>,
}

/// One box's queue: `POST /lock` with `wait_seconds` until granted, the
/// deadline passes, or another box won (then release what we may hold).
fn wait_in_queue(
    candidate: &Candidate,
    index: usize,
    holder: &Holder,
    deadline: Instant,
    shared: &Queueing,
    grants: &Inbox<(usize, Value)>,
) {
    let client = candidate.target.lock_client();
    loop {
        if shared.cancelled.load(Ordering::SeqCst) {
            break;
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return;
        }
        let wait_secs = remaining.as_secs().clamp(1, WAIT_SECONDS_MAX);
        let body = holder.body(wait_secs).to_string();
        let outcome = queued_post(candidate, index, &body, wait_secs, shared);
        match outcome {
            Some((200, record)) => {
                let first = shared
                    .winner
                    .compare_exchange(usize::MAX, index, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok();
                if first {
                    grants.put((index, record));
                    return;
                }
                log::info!(
                    "{}: granted after another box was taken; releasing it",
                    candidate.name
                );
                break;
            }
            Some((409, _)) => {
                // The wait ended at the box; queue again while time is left
                // (an old box that ignores wait_seconds answers at once).
                std::thread::sleep(Duration::from_millis(200).min(remaining));
            }
            Some((status, _)) => {
                log::debug!("{}: queued lock answered HTTP {status}", candidate.name);
                return;
            }
            None if shared.cancelled.load(Ordering::SeqCst) => break,
            None => return,
        }
    }
    // Cancelled or granted too late: free anything lagerd may have handed us.
    release(&client, &holder.user);
}

/// A queued `POST /lock` on a socket of our own (so it can be cut):
/// `(status, body)`, or `None` when it failed or was cancelled.
fn queued_post(
    candidate: &Candidate,
    index: usize,
    body: &str,
    wait_secs: u64,
    shared: &Queueing,
) -> Option<(u16, Value)> {
    let target = &candidate.target;
    let port = target.port.unwrap_or(common::wire::LOCK_PORT);
    let addr = (target.host.as_str(), port)
        .to_socket_addrs()
        .ok()?
        .next()?;
    let mut stream = TcpStream::connect_timeout(&addr, capped(LOCK_TIMEOUT)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(wait_secs + 10)))
        .ok()?;
    {
        let mut sockets = shared.sockets.lock().unwrap_or_else(|e| e.into_inner());
        if shared.cancelled.load(Ordering::SeqCst) {
            return None;
        }
        sockets.push((index, stream.try_clone().ok()?));
    }
    let host = crate::client::Client::new(&target.host, port, None)
        .addr()
        .to_string();
    let mut request = format!(
        "POST /lock HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if let Some(token) = &target.token {
        request.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).ok()?;
    let mut reply = Vec::new();
    let _ = stream.take(256 * 1024).read_to_end(&mut reply);
    let text = String::from_utf8_lossy(&reply);
    let status = text.split(' ').nth(1)?.parse::<u16>().ok()?;
    let (_, json_text) = text.split_once("\r\n\r\n")?;
    let value = serde_json::from_str(json_text).unwrap_or(Value::Null);
    Some((status, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("bench-*", "bench-12"));
        assert!(glob_match("*", "anything"));
        assert!(glob_match("b?nch-*-x", "bench-1-x"));
        assert!(glob_match("*-1", "a-b-1"));
        assert!(!glob_match("bench-*", "lab-1"));
        assert!(!glob_match("bench-?", "bench-12"));
        assert!(glob_match("", ""));
        assert!(!glob_match("", "a"));
    }

    #[test]
    fn nets_must_exist_and_not_be_unhealthy() {
        let status = json!({
            "nets": [{"name": "vbat"}, {"name": "uart0"}, {"name": "vusb"}],
            "health": {"nets": [{"name": "vbat", "ok": true, "bucket": "reachable"},
                                 {"name": "vusb", "ok": false, "bucket": "wedged"}]},
        });
        assert_eq!(unfit(&status, &["vbat".into(), "uart0".into()]), None);
        assert_eq!(
            unfit(&status, &["gpio".into()]).as_deref(),
            Some("no net 'gpio'")
        );
        assert_eq!(
            unfit(&status, &["vusb".into()]).as_deref(),
            Some("net 'vusb' is wedged")
        );
    }
}
