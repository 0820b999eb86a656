//! The box reservation lock (locking.md Part A): one record in
//! `<state-dir>/lock.json`, the only writer of that file.
//!
//! The file is the source of truth (A.4). Every change takes the
//! in-process mutex and an exclusive `flock` on `lock.json.flock`, re-reads
//! the file, reaps an expired lock, hands a free lock to the head of the
//! wait queue, then applies its change. Reads that the file answers alone
//! (`GET /lock`, an acquire refused at once, `/metrics`) take neither: they
//! stat the file and reuse the last parse unless the stat changed (`peek`,
//! `snapshot`); an expired or corrupt record, or a queue, sends them through
//! the critical section too. A change is on disk (temp file, fsync, rename,
//! fsync of the directory) before the caller gets its reply, so a crash
//! after a reply loses nothing and a crash before one leaves the previous
//! file intact.

use std::collections::{HashMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use common::wire::{USER_MAX_BYTES, WAIT_SECONDS_MAX};
use log::{error, info, warn};
use serde_json::{Map, Value};

use crate::clock::{format_timestamp, parse_timestamp, Clock};
use crate::fsutil::{self, Durability};

/// A lock record as stored: unknown keys are kept verbatim (A.3).
pub type Record = Map<String, Value>;

/// The record's file in the state dir (A.4).
const LOCK_FILE: &str = "lock.json";
/// Most waiters a box queues; one more is refused at once (A.8).
const QUEUE_MAX: usize = 64;
/// TTL given to an auto-lock whose request names no usable TTL (A.6).
const DEFAULT_TTL_SECS: u32 = 1800;
/// How many `lock.json.corrupt-*` copies to keep (A.4).
const CORRUPT_COPIES_KEPT: usize = 5;
/// How often a waiting request checks whether its client went away.
const WAITER_POLL: Duration = Duration::from_millis(200);

/// Why a lock operation did not succeed (http.rs gives each its status).
#[derive(Debug)]
pub enum LockError {
    /// A malformed request, with the spec's exact message (A.5, A.8).
    Invalid(&'static str),
    /// A heartbeat on a free box.
    NotLocked,
    /// An acquire while someone else holds the box: their record.
    Taken { record: Record },
    /// A heartbeat or unlock by someone who does not hold the box.
    NotHolder { record: Record },
    /// The state could not be read or written.
    Persist(io::Error),
    /// The daemon is stopping while the request waited in the queue.
    ShuttingDown,
    /// The client left while queued; nobody reads this answer.
    Abandoned,
}

impl std::fmt::Display for LockError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LockError::Invalid(msg) => f.write_str(msg),
            LockError::NotLocked => f.write_str("Box is not locked"),
            LockError::Taken { record } | LockError::NotHolder { record } => {
                write!(f, "Box is locked by {}", user_text(record))
            }
            LockError::Persist(e) => write!(f, "Could not persist lock state: {e}"),
            LockError::ShuttingDown => {
                f.write_str("lagerd is shutting down; retry once it is back (lager hello)")
            }
            LockError::Abandoned => f.write_str("client went away while waiting for the lock"),
        }
    }
}

/// What an acquire asks for, after A.5/A.6 parsing.
#[derive(Clone, Debug, PartialEq)]
struct Grant {
    user: String,
    holder_type: String,
    ttl_secs: Option<u32>,
}

struct Waiter {
    id: u64,
    grant: Grant,
}

#[derive(Default)]
struct Queue {
    waiters: VecDeque<Waiter>,
    /// Outcomes handed to waiting requests, keyed by waiter id.
    granted: HashMap<u64, Result<Record, String>>,
    next_id: u64,
    /// Hash of the corrupt content last reported, so it is logged and
    /// copied aside once, not on every read.
    last_corrupt: Option<u64>,
}

pub struct LockBox {
    dir: PathBuf,
    lock_path: PathBuf,
    /// The state dir, through which `lock.json` is replaced.
    state_dir: fsutil::Dir,
    flock_handle: File,
    clock: Arc<dyn Clock>,
    queue: Mutex<Queue>,
    queue_changed: Condvar,
    /// Waiters in the queue, readable without the queue's mutex.
    waiting: AtomicUsize,
    /// The last parse of `lock.json`, keyed by its stat (see `on_disk`).
    parsed: Mutex<Option<Parsed>>,
    /// Orders critical sections by arrival: a plain mutex lets later
    /// requests overtake a waiting one again and again (measured: 42 ms
    /// waits behind 0.6 ms writes with 8 contending clients).
    turnstile: Turnstile,
    stopping: AtomicBool,
}

/// What identifies one version of `lock.json` without reading it. Our own
/// writes rename a new inode into place, so they always change it; an
/// in-place edit changes size, mtime or ctime.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileStamp {
    fn of(meta: &fs::Metadata) -> FileStamp {
        use std::os::unix::fs::MetadataExt;
        FileStamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// `lock.json` as last read: `stamp` is `None` for a missing file.
#[derive(Clone)]
struct Parsed {
    stamp: Option<FileStamp>,
    disk: Disk,
}

#[derive(Clone)]
enum Disk {
    /// Missing, or a record whose `locked` is absent or false.
    Free,
    Held(Record),
    /// Not a lock record (`parse_record`): the bytes, to report and copy
    /// aside, and what was wrong with them.
    Corrupt(Arc<Vec<u8>>, &'static str),
}

impl LockBox {
    /// Opens the lock state in `dir` (created 0755 if missing). Reads
    /// `lock.json` and reports it, but never modifies it (A.4, startup).
    pub fn open(dir: &Path, clock: Arc<dyn Clock>) -> io::Result<LockBox> {
        if !dir.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(dir)?;
        }
        let flock_handle = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(dir.join("lock.json.flock"))?;
        let lock_box = LockBox {
            dir: dir.to_path_buf(),
            lock_path: dir.join(LOCK_FILE),
            state_dir: fsutil::Dir::open(dir)?,
            flock_handle,
            clock,
            queue: Mutex::new(Queue::default()),
            queue_changed: Condvar::new(),
            waiting: AtomicUsize::new(0),
            parsed: Mutex::new(None),
            turnstile: Turnstile::default(),
            stopping: AtomicBool::new(false),
        };
        {
            let mut queue = lock_box.lock_queue();
            let _flock = Flock::exclusive(&lock_box.flock_handle)?;
            lock_box.remove_stale_temp_files();
            match lock_box.load(&mut queue) {
                Some(record) => info!(
                    "lock state: locked by {} ({})",
                    user_text(&record),
                    describe(&record)
                ),
                None => info!("lock state: box unlocked"),
            }
        }
        Ok(lock_box)
    }

    /// `GET /lock` (A.8): the record, or `{"locked": false}`.
    pub fn status(&self) -> Result<Value, LockError> {
        if let Some(current) = self.peek() {
            return Ok(current.map_or_else(|| unlocked_body(None), Value::Object));
        }
        self.transact(|txn| {
            Ok(match &txn.current {
                Some(record) => Value::Object(record.clone()),
                None => unlocked_body(None),
            })
        })
    }

    /// `POST /lock` (A.6, A.8). With `wait_seconds` the request queues until
    /// granted, the wait ends, or `client_gone` reports the client left.
    pub fn acquire(
        &self,
        body: &Record,
        client_gone: &dyn Fn() -> bool,
    ) -> Result<Value, LockError> {
        let grant = parse_grant(body)?;
        let wait = parse_wait(body)?;
        if wait.is_zero() {
            if let Some(Some(record)) = self.peek() {
                if !user_is(&record, &grant.user) {
                    crate::metrics::lock_refused();
                    return Err(LockError::Taken { record });
                }
            }
        }
        let queued = self.transact(|txn| match &txn.current {
            None => {
                let record = txn.write_new(&grant)?;
                info!("lock acquired by {} ({})", grant.user, describe(&record));
                Ok(Ok(with_previous(record, Value::Null)))
            }
            Some(record) if user_is(record, &grant.user) => {
                let record = txn.refresh(&grant)?;
                info!("lock refreshed by {} ({})", grant.user, describe(&record));
                Ok(Ok(with_previous(record, Value::String(grant.user.clone()))))
            }
            Some(record) if wait.is_zero() || txn.queue.waiters.len() >= QUEUE_MAX => {
                crate::metrics::lock_refused();
                Err(LockError::Taken {
                    record: record.clone(),
                })
            }
            Some(record) => {
                let id = txn.queue.next_id;
                txn.queue.next_id += 1;
                txn.queue.waiters.push_back(Waiter {
                    id,
                    grant: grant.clone(),
                });
                info!(
                    "{} waits up to {}s for the lock held by {} (position {})",
                    grant.user,
                    wait.as_secs(),
                    user_text(record),
                    txn.queue.waiters.len()
                );
                Ok(Err(id))
            }
        })?;
        match queued {
            Ok(reply) => Ok(reply),
            Err(id) => self.wait_for_grant(id, &grant, Instant::now() + wait, client_gone),
        }
    }

    /// `POST /lock/heartbeat` (A.8): refreshes `last_heartbeat` only.
    pub fn heartbeat(&self, body: &Record) -> Result<Value, LockError> {
        let user = parse_user(body)?;
        self.transact(|txn| match &mut txn.current {
            None => Err(LockError::NotLocked),
            Some(record) if user_is(record, &user) => {
                record.insert(
                    "last_heartbeat".into(),
                    Value::String(format_timestamp(txn.now)),
                );
                let record = record.clone();
                txn.store(&record)?;
                Ok(Value::Object(record))
            }
            Some(record) => Err(LockError::NotHolder {
                record: record.clone(),
            }),
        })
    }

    /// `POST /unlock` (A.8): the holder, or anyone with `force: true`.
    pub fn release(&self, body: &Record) -> Result<Value, LockError> {
        let user = parse_user(body)?;
        let force = match body.get("force") {
            None => false,
            Some(Value::Bool(force)) => *force,
            Some(_) => {
                return Err(LockError::Invalid(
                    "force must be a JSON boolean (true or false)",
                ))
            }
        };
        self.transact(|txn| {
            let Some(record) = txn.current.clone() else {
                return Ok(unlocked_body(Some("Box is already unlocked")));
            };
            if user_is(&record, &user) {
                info!("lock released by {user} ({})", describe(&record));
            } else if force {
                info!("lock of {} force-released by {user}", user_text(&record));
            } else {
                return Err(LockError::NotHolder { record });
            }
            txn.clear()?;
            Ok(unlocked_body(Some("Box unlocked")))
        })
    }

    /// Reaps an expired lock even when nobody asks; the reaper thread calls
    /// this once a second, which also wakes the queue on a TTL expiry (A.7).
    pub fn reap(&self) -> Result<(), LockError> {
        self.transact(|_| Ok(()))
    }

    /// The lock for `/metrics` and the status page, without the critical
    /// section: the cached parse of `lock.json` (a stat), never its flock.
    /// An expired lock the reaper has not freed yet reads as free.
    pub fn snapshot(&self) -> Option<Record> {
        match self.on_disk() {
            Disk::Held(record) if !is_expired(&record, self.clock.now()) => Some(record),
            _ => None,
        }
    }

    /// Requests in the wait queue, without its mutex.
    pub fn queue_length(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    /// Who waits for the lock, in queue order (the status page).
    pub fn waiters(&self) -> Vec<String> {
        self.lock_queue()
            .waiters
            .iter()
            .map(|w| w.grant.user.clone())
            .collect()
    }

    /// Seconds since `record` was locked, by the lock's clock.
    pub fn held_secs(&self, record: &Record) -> f64 {
        record
            .get("locked_at")
            .and_then(Value::as_str)
            .and_then(parse_timestamp)
            .map_or(0.0, |since| (self.clock.now() - since).max(0.0))
    }

    /// Wakes every queued request so it can answer `ShuttingDown` and let
    /// the daemon stop.
    pub fn shut_down(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.queue_changed.notify_all();
    }

    fn wait_for_grant(
        &self,
        id: u64,
        grant: &Grant,
        deadline: Instant,
        client_gone: &dyn Fn() -> bool,
    ) -> Result<Value, LockError> {
        let mut queue = self.lock_queue();
        loop {
            if let Some(outcome) = queue.granted.remove(&id) {
                drop(queue);
                let record = outcome.map_err(|e| LockError::Persist(io::Error::other(e)))?;
                if client_gone() {
                    // A.8: a grant that cannot be delivered is rolled back
                    // and passed on to the next waiter.
                    self.roll_back(grant, &record)?;
                    return Err(LockError::Abandoned);
                }
                return Ok(with_previous(record, Value::Null));
            }
            let now = Instant::now();
            let stopping = self.stopping.load(Ordering::SeqCst);
            let gone = !stopping && client_gone();
            if stopping || gone || now >= deadline {
                queue.waiters.retain(|w| w.id != id);
                self.waiting.store(queue.waiters.len(), Ordering::SeqCst);
                drop(queue);
                if stopping {
                    return Err(LockError::ShuttingDown);
                }
                if gone {
                    info!("{} left the queue: its client disconnected", grant.user);
                    return Err(LockError::Abandoned);
                }
                info!("{} stopped waiting for the lock", grant.user);
                // The wait is over: answer with the then-current record, or
                // take the lock if it happens to be free right now.
                return self.acquire(&grant_body(grant), &|| false);
            }
            let nap = WAITER_POLL.min(deadline - now);
            queue = self
                .queue_changed
                .wait_timeout(queue, nap)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    fn roll_back(&self, grant: &Grant, record: &Record) -> Result<(), LockError> {
        self.transact(|txn| {
            let ours = txn.current.as_ref().is_some_and(|current| {
                user_is(current, &grant.user) && current.get("locked_at") == record.get("locked_at")
            });
            if ours {
                warn!(
                    "{} left before its queued grant was delivered; passing it on",
                    grant.user
                );
                txn.clear()?;
            }
            Ok(())
        })
    }

    fn lock_queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `change` inside the critical section of A.4, in arrival order.
    fn transact<R>(
        &self,
        change: impl FnOnce(&mut Txn) -> Result<R, LockError>,
    ) -> Result<R, LockError> {
        let _turn = self.turnstile.enter();
        let mut queue = self.lock_queue();
        let _flock = Flock::exclusive(&self.flock_handle).map_err(LockError::Persist)?;
        let current = self.load(&mut queue);
        let mut txn = Txn {
            lock_box: self,
            queue: &mut queue,
            current,
            now: self.clock.now(),
        };
        let outcome = txn.settle().and_then(|()| change(&mut txn));
        self.waiting.store(queue.waiters.len(), Ordering::SeqCst);
        outcome
    }

    /// Reads `lock.json`: `None` for a missing, unlocked or corrupt file.
    fn load(&self, queue: &mut Queue) -> Option<Record> {
        match self.on_disk() {
            Disk::Free => None,
            Disk::Held(record) => Some(record),
            Disk::Corrupt(bytes, why) => {
                self.keep_corrupt(queue, &bytes, why);
                None
            }
        }
    }

    /// The state on disk when answering needs no write, without waiting for
    /// the critical section: `lock.json` only ever changes by an atomic
    /// rename, so this sees a whole record, never a torn one. It may see a
    /// change whose directory fsync is still running, a few hundred µs
    /// before its writer is answered; the writer is still answered only
    /// once the change is durable. `None`: take the critical section (an
    /// expired lock to reap, a free lock owed to a waiter, a corrupt file).
    fn peek(&self) -> Option<Option<Record>> {
        match self.on_disk() {
            Disk::Corrupt(..) => None,
            Disk::Free if self.waiting.load(Ordering::SeqCst) > 0 => None,
            Disk::Free => Some(None),
            Disk::Held(record) if is_expired(&record, self.clock.now()) => None,
            Disk::Held(record) => Some(Some(record)),
        }
    }

    /// `lock.json` now, parsed again only when its stat changed.
    fn on_disk(&self) -> Disk {
        let stamp = match fs::metadata(&self.lock_path) {
            Ok(meta) => Some(FileStamp::of(&meta)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => {
                error!(
                    "cannot stat {}: {e}; treating the box as unlocked",
                    self.lock_path.display()
                );
                return Disk::Free;
            }
        };
        if let Some(parsed) = self
            .parsed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
        {
            if parsed.stamp == stamp {
                return parsed.disk.clone();
            }
        }
        let disk = match stamp.map(|_| fs::read(&self.lock_path)) {
            None => Disk::Free,
            Some(Ok(bytes)) => match parse_record(&bytes) {
                Ok(Some(record)) => Disk::Held(record),
                Ok(None) => Disk::Free,
                Err(why) => Disk::Corrupt(Arc::new(bytes), why),
            },
            Some(Err(e)) if e.kind() == io::ErrorKind::NotFound => Disk::Free,
            Some(Err(e)) => {
                error!(
                    "cannot read {}: {e}; treating the box as unlocked",
                    self.lock_path.display()
                );
                return Disk::Free;
            }
        };
        // Stamped before reading: if the file changed in between, the next
        // stat differs and it is parsed again.
        self.remember(stamp, disk.clone());
        disk
    }

    /// Logs a corrupt state file and copies it aside, once per content (A.4).
    fn keep_corrupt(&self, queue: &mut Queue, bytes: &[u8], why: &str) {
        let hash = fnv1a(bytes);
        if queue.last_corrupt == Some(hash) {
            return;
        }
        queue.last_corrupt = Some(hash);
        let secs = self.clock.now().floor() as i64;
        let aside = self.dir.join(format!("lock.json.corrupt-{secs}"));
        let kept = if aside.exists() {
            Ok(())
        } else {
            fs::write(&aside, bytes)
        };
        match kept {
            Ok(()) => warn!(
                "{} is not a valid lock record ({why}; {} bytes); treating the box as unlocked, copy kept as {}",
                self.lock_path.display(),
                bytes.len(),
                aside.display()
            ),
            Err(e) => error!(
                "{} is not a valid lock record ({why}) and could not be copied aside: {e}",
                self.lock_path.display()
            ),
        }
        self.prune_corrupt_copies();
    }

    fn prune_corrupt_copies(&self) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        let mut copies: Vec<(i64, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter_map(|entry| {
                let name = entry.file_name();
                let secs = name
                    .to_str()?
                    .strip_prefix("lock.json.corrupt-")?
                    .parse()
                    .ok()?;
                Some((secs, entry.path()))
            })
            .collect();
        copies.sort();
        let excess = copies.len().saturating_sub(CORRUPT_COPIES_KEPT);
        for (_, path) in copies.into_iter().take(excess) {
            let _ = fs::remove_file(path);
        }
    }

    /// A crash between creating and renaming a temp file leaves it behind;
    /// under the flock no other writer can own one, so they all go (also
    /// `.lock-<pid>-<n>.json`, the name lagerd 0.61.0 gave them).
    fn remove_stale_temp_files(&self) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let legacy = name.starts_with(".lock-") && name.ends_with(".json");
            if legacy || fsutil::is_temp_of(LOCK_FILE, &name) {
                warn!("removing {name}, left by an interrupted write");
                let _ = fs::remove_file(entry.path());
            }
        }
    }

    /// Writes `record` atomically and durably (A.4).
    fn write_file(&self, record: &Record) -> io::Result<()> {
        let mut bytes = serde_json::to_vec_pretty(record).map_err(io::Error::other)?;
        bytes.push(b'\n');
        self.state_dir
            .replace(LOCK_FILE, &bytes, Durability::Durable)?;
        // What we just wrote needs no parsing; its stamp is the new inode's.
        if let Ok(meta) = fs::metadata(&self.lock_path) {
            self.remember(Some(FileStamp::of(&meta)), Disk::Held(record.clone()));
        }
        Ok(())
    }

    fn remove_file(&self) -> io::Result<()> {
        match fs::remove_file(&self.lock_path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        self.remember(None, Disk::Free);
        self.state_dir.sync()
    }

    fn remember(&self, stamp: Option<FileStamp>, disk: Disk) {
        *self.parsed.lock().unwrap_or_else(PoisonError::into_inner) = Some(Parsed { stamp, disk });
    }
}

/// One critical section: the queue, the record as read, and "now".
struct Txn<'a> {
    lock_box: &'a LockBox,
    queue: &'a mut Queue,
    current: Option<Record>,
    now: f64,
}

impl Txn<'_> {
    /// Reaps an expired lock, then hands a free lock to the queue head (A.7).
    fn settle(&mut self) -> Result<(), LockError> {
        if let Some(record) = &self.current {
            if is_expired(record, self.now) {
                info!(
                    "lock of {} reaped: TTL expired ({})",
                    user_text(record),
                    describe(record)
                );
                self.lock_box.remove_file().map_err(LockError::Persist)?;
                self.current = None;
                crate::metrics::lock_reaped();
            }
        }
        self.grant_to_head()
    }

    fn grant_to_head(&mut self) -> Result<(), LockError> {
        if self.current.is_some() {
            return Ok(());
        }
        let Some(waiter) = self.queue.waiters.pop_front() else {
            return Ok(());
        };
        let outcome = self.write_new(&waiter.grant);
        match &outcome {
            Ok(record) => info!(
                "lock granted from the queue to {} ({})",
                waiter.grant.user,
                describe(record)
            ),
            Err(e) => error!("could not grant the lock to {}: {e}", waiter.grant.user),
        }
        self.queue
            .granted
            .insert(waiter.id, outcome.map_err(|e| e.to_string()));
        self.lock_box.queue_changed.notify_all();
        Ok(())
    }

    fn write_new(&mut self, grant: &Grant) -> Result<Record, LockError> {
        let stamp = Value::String(format_timestamp(self.now));
        let mut record = Record::new();
        record.insert("locked".into(), Value::Bool(true));
        record.insert("user".into(), Value::String(grant.user.clone()));
        record.insert(
            "holder_type".into(),
            Value::String(grant.holder_type.clone()),
        );
        record.insert("locked_at".into(), stamp.clone());
        record.insert("last_heartbeat".into(), stamp);
        record.insert(
            "ttl_seconds".into(),
            grant.ttl_secs.map_or(Value::Null, Value::from),
        );
        self.store(&record)?;
        crate::metrics::lock_granted();
        Ok(record)
    }

    /// Same-user re-acquire (A.8): an auto-lock takes the request's type and
    /// TTL; a reservation (or legacy record) keeps its own.
    fn refresh(&mut self, grant: &Grant) -> Result<Record, LockError> {
        let mut record = self.current.clone().unwrap_or_default();
        record.insert(
            "last_heartbeat".into(),
            Value::String(format_timestamp(self.now)),
        );
        let auto_lock = matches!(
            record.get("holder_type").and_then(Value::as_str),
            Some("ephemeral" | "ci")
        );
        if auto_lock {
            record.insert(
                "holder_type".into(),
                Value::String(grant.holder_type.clone()),
            );
            record.insert(
                "ttl_seconds".into(),
                grant.ttl_secs.map_or(Value::Null, Value::from),
            );
        }
        self.store(&record)?;
        Ok(record)
    }

    fn store(&mut self, record: &Record) -> Result<(), LockError> {
        self.lock_box
            .write_file(record)
            .map_err(LockError::Persist)?;
        self.current = Some(record.clone());
        Ok(())
    }

    fn clear(&mut self) -> Result<(), LockError> {
        self.lock_box.remove_file().map_err(LockError::Persist)?;
        self.current = None;
        self.grant_to_head()
    }
}

/// A ticket lock: whoever asked first goes first.
#[derive(Default)]
struct Turnstile {
    /// (next ticket to hand out, ticket being served)
    tickets: Mutex<(u64, u64)>,
    turned: Condvar,
}

impl Turnstile {
    fn enter(&self) -> Turn<'_> {
        let mut tickets = self.tickets.lock().unwrap_or_else(PoisonError::into_inner);
        let mine = tickets.0;
        tickets.0 += 1;
        while tickets.1 != mine {
            tickets = self
                .turned
                .wait(tickets)
                .unwrap_or_else(PoisonError::into_inner);
        }
        Turn(self)
    }
}

/// The current turn; the next ticket is served when it drops.
struct Turn<'a>(&'a Turnstile);

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.0
            .tickets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .1 += 1;
        self.0.turned.notify_all();
    }
}

/// An exclusive `flock` held until drop: the cross-process guard of A.4.
struct Flock<'a>(&'a File);

impl<'a> Flock<'a> {
    fn exclusive(file: &'a File) -> Result<Flock<'a>, io::Error> {
        loop {
            // SAFETY: flock on the descriptor `file` owns; no memory is passed.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return Ok(Flock(file));
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

impl Drop for Flock<'_> {
    fn drop(&mut self) {
        // SAFETY: unlocks the descriptor the guard borrowed, which outlives the guard.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

/// A.5: `user` must be a non-empty string of at most 1024 bytes.
fn parse_user(body: &Record) -> Result<String, LockError> {
    match body.get("user") {
        None | Some(Value::Null | Value::Bool(false)) => {
            Err(LockError::Invalid("user is required"))
        }
        Some(Value::String(user)) if user.is_empty() => Err(LockError::Invalid("user is required")),
        Some(Value::String(user)) if user.len() > USER_MAX_BYTES => {
            Err(LockError::Invalid("user is too long (max 1024 bytes)"))
        }
        Some(Value::String(user)) => Ok(user.clone()),
        Some(_) => Err(LockError::Invalid("user must be a string")),
    }
}

/// A.6: holder type and TTL from which fields the request carries.
fn parse_grant(body: &Record) -> Result<Grant, LockError> {
    let user = parse_user(body)?;
    let holder_type = body.get("holder_type").map(normalise_holder_type);
    let ttl = body.get("ttl_seconds").map(normalise_ttl);
    let (holder_type, ttl_secs) = match (holder_type, ttl) {
        (None, None) => ("user".to_string(), None),
        (Some(kind), None) => {
            let ttl = if kind == "user" {
                None
            } else {
                Some(DEFAULT_TTL_SECS)
            };
            (kind, ttl)
        }
        (None, Some(ttl)) => ("ephemeral".to_string(), ttl),
        (Some(kind), Some(ttl)) => (kind, ttl),
    };
    Ok(Grant {
        user,
        holder_type,
        ttl_secs,
    })
}

fn normalise_holder_type(value: &Value) -> String {
    match value {
        Value::String(kind) if !kind.is_empty() => kind.clone(),
        _ => "ephemeral".to_string(),
    }
}

fn normalise_ttl(value: &Value) -> Option<u32> {
    let at_least_one = |n: i128| Some(n.clamp(1, i128::from(u32::MAX)) as u32);
    match value {
        Value::Null => None,
        Value::Bool(_) => Some(1),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => at_least_one(i.into()),
            (_, Some(u), _) => at_least_one(u.into()),
            (_, _, Some(f)) => at_least_one(f.trunc().clamp(-1e30, 1e30) as i128),
            _ => Some(DEFAULT_TTL_SECS),
        },
        Value::String(text) => {
            let lower = text.to_lowercase();
            if matches!(lower.as_str(), "null" | "none" | "") {
                None
            } else {
                match text.trim().parse::<i128>() {
                    Ok(n) => at_least_one(n),
                    Err(_) => Some(DEFAULT_TTL_SECS),
                }
            }
        }
        Value::Array(_) | Value::Object(_) => Some(DEFAULT_TTL_SECS),
    }
}

/// A.8: absent, null or 0 means no wait; else an integer 1..=300.
fn parse_wait(body: &Record) -> Result<Duration, LockError> {
    const BAD: &str = "wait_seconds must be an integer between 0 and 300";
    match body.get("wait_seconds") {
        None | Some(Value::Null) => Ok(Duration::ZERO),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(secs) if secs <= WAIT_SECONDS_MAX => Ok(Duration::from_secs(secs)),
            _ => Err(LockError::Invalid(BAD)),
        },
        Some(_) => Err(LockError::Invalid(BAD)),
    }
}

/// The body a waiter would have sent, to retry once after its wait ends.
fn grant_body(grant: &Grant) -> Record {
    let mut body = Record::new();
    body.insert("user".into(), Value::String(grant.user.clone()));
    body.insert(
        "holder_type".into(),
        Value::String(grant.holder_type.clone()),
    );
    body.insert(
        "ttl_seconds".into(),
        grant.ttl_secs.map_or(Value::Null, Value::from),
    );
    body
}

/// A.7: expired iff the TTL is a number and now − ref > TTL (strictly).
fn is_expired(record: &Record, now: f64) -> bool {
    let Some(ttl) = record.get("ttl_seconds").and_then(Value::as_f64) else {
        return false;
    };
    let reference = match record.get("last_heartbeat") {
        Some(stamp) => stamp,
        None => match record.get("locked_at") {
            Some(stamp) => stamp,
            None => return false,
        },
    };
    match reference.as_str().and_then(parse_timestamp) {
        Some(since) => now - since > ttl,
        None => false,
    }
}

/// Reads the bytes of `lock.json` (A.3, A.4): `Ok(Some)` a lock,
/// `Ok(None)` no lock (`locked` absent or `false`), `Err` a corrupt file
/// with what is wrong. The fields A.3 defines must have its types whenever
/// present: a file that says `"locked": "yes"` or `"user": 5` was not
/// written by a lock server and must not be served as one. Unknown keys
/// and unparseable timestamps are kept (A.3: such a lock never expires).
pub fn parse_record(bytes: &[u8]) -> Result<Option<Record>, &'static str> {
    let record = match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(record)) => record,
        Ok(_) => return Err("not a JSON object"),
        Err(_) => return Err("not JSON"),
    };
    let locked = match record.get("locked") {
        None => false,
        Some(Value::Bool(locked)) => *locked,
        Some(_) => return Err("locked is not true or false"),
    };
    for key in ["user", "holder_type", "locked_at", "last_heartbeat"] {
        if record.get(key).is_some_and(|value| !value.is_string()) {
            return Err(match key {
                "user" => "user is not a string",
                "holder_type" => "holder_type is not a string",
                "locked_at" => "locked_at is not a string",
                _ => "last_heartbeat is not a string",
            });
        }
    }
    match record.get("ttl_seconds") {
        None | Some(Value::Null) => {}
        Some(ttl) if ttl.as_u64().is_some_and(|secs| secs >= 1) => {}
        Some(_) => return Err("ttl_seconds is not null or an integer of at least 1"),
    }
    Ok(locked.then_some(record))
}

fn user_is(record: &Record, user: &str) -> bool {
    record.get("user").and_then(Value::as_str) == Some(user)
}

/// The holder for messages; `parse_record` let only strings through.
fn user_text(record: &Record) -> String {
    record
        .get("user")
        .and_then(Value::as_str)
        .unwrap_or("unknown")
        .to_string()
}

fn describe(record: &Record) -> String {
    let kind = record
        .get("holder_type")
        .and_then(Value::as_str)
        .unwrap_or("legacy");
    match record.get("ttl_seconds") {
        Some(Value::Number(ttl)) => format!("type {kind}, ttl {ttl}s"),
        _ => format!("type {kind}, no ttl"),
    }
}

fn with_previous(mut record: Record, previous: Value) -> Value {
    record.insert("previous_user".into(), previous);
    Value::Object(record)
}

fn unlocked_body(message: Option<&str>) -> Value {
    let mut body = Record::new();
    body.insert("locked".into(), Value::Bool(false));
    if let Some(message) = message {
        body.insert("message".into(), Value::String(message.into()));
    }
    Value::Object(body)
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use serde_json::json;

    struct Fixture {
        dir: PathBuf,
        clock: Arc<ManualClock>,
        lock_box: LockBox,
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }

    fn fixture(tag: &str) -> Fixture {
        let dir = std::env::temp_dir().join(format!("lockbox-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let clock = Arc::new(ManualClock::at("2026-03-20T13:00:00Z"));
        let lock_box = LockBox::open(&dir, clock.clone()).unwrap();
        Fixture {
            dir,
            clock,
            lock_box,
        }
    }

    fn body(value: Value) -> Record {
        match value {
            Value::Object(map) => map,
            _ => panic!("test body must be an object"),
        }
    }

    fn never() -> impl Fn() -> bool {
        || false
    }

    fn on_disk(f: &Fixture) -> Value {
        serde_json::from_slice(&fs::read(f.dir.join("lock.json")).unwrap()).unwrap()
    }

    #[test]
    fn user_is_validated_per_a5() {
        let f = fixture("user");
        let cases = [
            (json!({}), "user is required"),
            (json!({"user": null}), "user is required"),
            (json!({"user": ""}), "user is required"),
            (json!({"user": false}), "user is required"),
            (json!({"user": 7}), "user must be a string"),
            (json!({"user": {"a": 1}}), "user must be a string"),
            (
                json!({"user": "x".repeat(1025)}),
                "user is too long (max 1024 bytes)",
            ),
        ];
        for (request, message) in cases {
            let err = f
                .lock_box
                .acquire(&body(request.clone()), &never())
                .unwrap_err();
            assert_eq!(err.to_string(), message, "{request}");
        }
        assert!(f
            .lock_box
            .acquire(&body(json!({"user": "x".repeat(1024)})), &never())
            .is_ok());
    }

    #[test]
    fn ttl_normalisation_follows_a6_table() {
        let cases = [
            (json!(null), None),
            (json!("null"), None),
            (json!("None"), None),
            (json!(""), None),
            (json!(0), Some(1)),
            (json!(-5), Some(1)),
            (json!(45), Some(45)),
            (json!(99_999_999_999_u64), Some(u32::MAX)),
            (json!(2.7), Some(2)),
            (json!(0.3), Some(1)),
            (json!(true), Some(1)),
            (json!(false), Some(1)),
            (json!(" 45 "), Some(45)),
            (json!("abc"), Some(1800)),
            (json!("2.7"), Some(1800)),
            (json!([1]), Some(1800)),
            (json!({}), Some(1800)),
        ];
        for (value, expected) in cases {
            assert_eq!(normalise_ttl(&value), expected, "{value}");
        }
    }

    #[test]
    fn defaults_depend_on_which_fields_are_present() {
        let grant = |v: Value| {
            let g = parse_grant(&body(v)).unwrap();
            (g.holder_type, g.ttl_secs)
        };
        assert_eq!(grant(json!({"user": "a"})), ("user".into(), None));
        assert_eq!(
            grant(json!({"user": "a", "holder_type": "ci"})),
            ("ci".into(), Some(1800))
        );
        assert_eq!(
            grant(json!({"user": "a", "holder_type": "user"})),
            ("user".into(), None)
        );
        assert_eq!(
            grant(json!({"user": "a", "holder_type": 3})),
            ("ephemeral".into(), Some(1800))
        );
        assert_eq!(
            grant(json!({"user": "a", "ttl_seconds": 60})),
            ("ephemeral".into(), Some(60))
        );
        assert_eq!(
            grant(json!({"user": "a", "ttl_seconds": null})),
            ("ephemeral".into(), None)
        );
        assert_eq!(
            grant(json!({"user": "a", "holder_type": "user", "ttl_seconds": 30})),
            ("user".into(), Some(30))
        );
        assert_eq!(
            grant(json!({"user": "a", "holder_type": "dashboard:1:a@b", "ttl_seconds": "x"})),
            ("dashboard:1:a@b".into(), Some(1800))
        );
    }

    #[test]
    fn acquire_conflict_and_release() {
        let f = fixture("basic");
        let got = f
            .lock_box
            .acquire(&body(json!({"user": "alice"})), &never())
            .unwrap();
        assert_eq!(got["previous_user"], Value::Null);
        assert_eq!(got["locked_at"], "2026-03-20T13:00:00Z");
        assert_eq!(on_disk(&f)["user"], "alice");
        assert!(
            on_disk(&f).get("previous_user").is_none(),
            "previous_user is reply-only"
        );

        let err = f
            .lock_box
            .acquire(&body(json!({"user": "bob"})), &never())
            .unwrap_err();
        assert!(matches!(&err, LockError::Taken { .. }));
        assert_eq!(err.to_string(), "Box is locked by alice");

        let err = f
            .lock_box
            .release(&body(json!({"user": "bob"})))
            .unwrap_err();
        assert!(matches!(err, LockError::NotHolder { .. }));
        assert_eq!(f.lock_box.status().unwrap()["user"], "alice");

        let err = f
            .lock_box
            .release(&body(json!({"user": "bob", "force": "false"})))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "force must be a JSON boolean (true or false)"
        );

        let released = f
            .lock_box
            .release(&body(json!({"user": "bob", "force": true})))
            .unwrap();
        assert_eq!(
            released,
            json!({"locked": false, "message": "Box unlocked"})
        );
        assert!(!f.dir.join("lock.json").exists());
        assert_eq!(
            f.lock_box.release(&body(json!({"user": "bob"}))).unwrap(),
            json!({"locked": false, "message": "Box is already unlocked"})
        );
        assert_eq!(f.lock_box.status().unwrap(), json!({"locked": false}));
    }

    #[test]
    fn refresh_keeps_reservations_and_updates_auto_locks() {
        let f = fixture("refresh");
        let acquire = |v: Value| f.lock_box.acquire(&body(v), &never()).unwrap();
        acquire(json!({"user": "a", "holder_type": "user", "ttl_seconds": null}));
        f.clock.advance(10.0);
        let got = acquire(json!({"user": "a", "holder_type": "ci", "ttl_seconds": 1800}));
        assert_eq!(
            (got["holder_type"].as_str(), got["ttl_seconds"].as_u64()),
            (Some("user"), None)
        );
        assert_eq!(got["previous_user"], "a");
        assert_eq!(got["locked_at"], "2026-03-20T13:00:00Z");
        assert_eq!(got["last_heartbeat"], "2026-03-20T13:00:10Z");

        f.lock_box.release(&body(json!({"user": "a"}))).unwrap();
        acquire(json!({"user": "a", "holder_type": "ephemeral", "ttl_seconds": 60}));
        let got = acquire(json!({"user": "a", "holder_type": "ci", "ttl_seconds": 1800}));
        assert_eq!(
            (got["holder_type"].as_str(), got["ttl_seconds"].as_u64()),
            (Some("ci"), Some(1800))
        );
        let got = acquire(json!({"user": "a"}));
        assert_eq!(
            (got["holder_type"].as_str(), got["ttl_seconds"].as_u64()),
            (Some("user"), None)
        );
    }

    #[test]
    fn legacy_record_keeps_missing_fields_and_unknown_keys() {
        let f = fixture("legacy");
        fs::write(
            f.dir.join("lock.json"),
            r#"{"locked": true, "user": "old", "locked_at": "2020-01-01T00:00:00Z", "origin": "dash"}"#,
        )
        .unwrap();
        f.clock.advance(1e6);
        let got = f
            .lock_box
            .acquire(&body(json!({"user": "old", "holder_type": "ci"})), &never())
            .unwrap();
        assert!(got.get("holder_type").is_none() && got.get("ttl_seconds").is_none());
        assert_eq!(got["origin"], "dash");
        assert_eq!(on_disk(&f)["origin"], "dash");
        f.lock_box.reap().unwrap();
        assert_eq!(
            f.lock_box.status().unwrap()["user"],
            "old",
            "legacy locks never expire"
        );
    }

    #[test]
    fn edits_by_hand_are_seen_by_reads_and_refusals() {
        let f = fixture("hand-edit");
        f.lock_box
            .acquire(&body(json!({"user": "alice"})), &never())
            .unwrap();
        assert_eq!(f.lock_box.status().unwrap()["user"], "alice");
        // In place (same inode, as an editor may write), then replaced.
        fs::write(
            f.dir.join("lock.json"),
            r#"{"locked": true, "user": "operator"}"#,
        )
        .unwrap();
        assert_eq!(f.lock_box.status().unwrap()["user"], "operator");
        let err = f
            .lock_box
            .acquire(&body(json!({"user": "alice"})), &never())
            .unwrap_err();
        assert_eq!(err.to_string(), "Box is locked by operator");
        fs::remove_file(f.dir.join("lock.json")).unwrap();
        assert_eq!(f.lock_box.status().unwrap(), json!({"locked": false}));
        assert!(f
            .lock_box
            .acquire(&body(json!({"user": "alice"})), &never())
            .is_ok());
    }

    #[test]
    fn the_turnstile_serves_in_arrival_order() {
        for _ in 0..20 {
            let turnstile = Arc::new(Turnstile::default());
            let order = Arc::new(Mutex::new(Vec::new()));
            let first = turnstile.enter();
            let mut waiters = Vec::new();
            for name in ["b", "c", "d"] {
                let (shared, order) = (turnstile.clone(), order.clone());
                waiters.push(std::thread::spawn(move || {
                    let _turn = shared.enter();
                    order.lock().unwrap().push(name);
                }));
                // Wait until this one holds its ticket before the next arrives.
                let arrived = waiters.len() as u64 + 1;
                while turnstile.tickets.lock().unwrap().0 < arrived {
                    std::thread::yield_now();
                }
            }
            drop(first);
            for waiter in waiters {
                waiter.join().unwrap();
            }
            assert_eq!(*order.lock().unwrap(), ["b", "c", "d"]);
        }
    }

    #[test]
    fn heartbeat_rules() {
        let f = fixture("heartbeat");
        let hb = |u: &str| f.lock_box.heartbeat(&body(json!({"user": u})));
        assert!(matches!(hb("a"), Err(LockError::NotLocked)));
        f.lock_box
            .acquire(&body(json!({"user": "a", "ttl_seconds": 30})), &never())
            .unwrap();
        f.clock.advance(20.0);
        let got = hb("a").unwrap();
        assert_eq!(got["last_heartbeat"], "2026-03-20T13:00:20Z");
        assert!(got.get("previous_user").is_none());
        assert!(matches!(hb("b"), Err(LockError::NotHolder { .. })));
        // 20 s + 30 s: only a heartbeat kept it alive past the first TTL.
        f.clock.advance(30.0);
        assert_eq!(f.lock_box.status().unwrap()["user"], "a");
        f.clock.advance(0.5);
        assert!(
            matches!(hb("a"), Err(LockError::NotLocked)),
            "reaped before the heartbeat"
        );
    }

    #[test]
    fn expiry_is_strict_and_unparseable_times_never_expire() {
        let f = fixture("expiry");
        f.lock_box
            .acquire(&body(json!({"user": "a", "ttl_seconds": 5})), &never())
            .unwrap();
        f.clock.advance(5.0);
        assert_eq!(
            f.lock_box.status().unwrap()["locked"],
            true,
            "exactly TTL is not expired"
        );
        f.clock.advance(0.001);
        assert_eq!(f.lock_box.status().unwrap(), json!({"locked": false}));
        let got = f
            .lock_box
            .acquire(&body(json!({"user": "b"})), &never())
            .unwrap();
        assert_eq!(got["previous_user"], Value::Null);

        fs::write(
            f.dir.join("lock.json"),
            r#"{"locked": true, "user": "c", "ttl_seconds": 1, "last_heartbeat": "soon"}"#,
        )
        .unwrap();
        f.clock.advance(1e6);
        assert_eq!(f.lock_box.status().unwrap()["user"], "c");
    }

    #[test]
    fn corrupt_file_is_unlocked_and_kept_aside_once() {
        let f = fixture("corrupt");
        for garbage in ["", "{\"locked\": tr", "[1,2]", "\u{0}\u{1}binary"] {
            fs::write(f.dir.join("lock.json"), garbage).unwrap();
            assert_eq!(f.lock_box.status().unwrap(), json!({"locked": false}));
            assert_eq!(f.lock_box.status().unwrap(), json!({"locked": false}));
            f.clock.advance(1.0);
        }
        let copies: Vec<_> = fs::read_dir(&f.dir)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with("lock.json.corrupt-"))
            .collect();
        assert_eq!(copies.len(), 4, "{copies:?}");
        f.lock_box
            .acquire(&body(json!({"user": "a"})), &never())
            .unwrap();
        assert_eq!(on_disk(&f)["user"], "a");
        let aside = fs::read_to_string(f.dir.join("lock.json.corrupt-1774011601")).unwrap();
        assert_eq!(aside, "{\"locked\": tr");
    }

    /// Issue 12 defect 5: valid JSON with the wrong types was served
    /// verbatim by `GET /lock` as if it were a lock.
    #[test]
    fn a_record_with_wrong_types_is_corrupt() {
        let f = fixture("wrong-types");
        let wrong = r#"{"locked":"yes","locked_at":7,"ttl_seconds":"x","user":5}"#;
        fs::write(f.dir.join("lock.json"), wrong).unwrap();
        assert_eq!(f.lock_box.status().unwrap(), json!({"locked": false}));
        assert_eq!(f.lock_box.status().unwrap(), json!({"locked": false}));
        let aside = fs::read_to_string(f.dir.join("lock.json.corrupt-1774011600")).unwrap();
        assert_eq!(aside, wrong, "kept aside once, byte for byte");
        let got = f
            .lock_box
            .acquire(&body(json!({"user": "a"})), &never())
            .unwrap();
        assert_eq!(got["previous_user"], Value::Null);
        assert_eq!(on_disk(&f)["user"], "a");
    }

    #[test]
    fn records_are_checked_field_by_field() {
        let held = |text: &str| parse_record(text.as_bytes()).map(|r| r.is_some());
        for valid in [
            r#"{"locked": true}"#,
            r#"{"locked": true, "user": "old", "locked_at": "2020-01-01T00:00:00Z"}"#,
            r#"{"locked": true, "user": "a", "holder_type": "dashboard:1", "ttl_seconds": null}"#,
            r#"{"locked": true, "user": "a", "ttl_seconds": 1, "last_heartbeat": "soon"}"#,
            r#"{"locked": true, "user": "a", "origin": [1, {"x": null}]}"#,
        ] {
            assert_eq!(held(valid), Ok(true), "{valid}");
        }
        for free in ["{}", r#"{"locked": false}"#, r#"{"user": "a"}"#] {
            assert_eq!(held(free), Ok(false), "{free}");
        }
        let cases = [
            ("", "not JSON"),
            ("[]", "not a JSON object"),
            (r#"{"locked": 1}"#, "locked is not true or false"),
            (r#"{"locked": null}"#, "locked is not true or false"),
            (r#"{"locked": true, "user": 5}"#, "user is not a string"),
            (r#"{"locked": false, "user": null}"#, "user is not a string"),
            (
                r#"{"locked": true, "holder_type": 1}"#,
                "holder_type is not a string",
            ),
            (
                r#"{"locked": true, "locked_at": 7}"#,
                "locked_at is not a string",
            ),
            (
                r#"{"locked": true, "last_heartbeat": []}"#,
                "last_heartbeat is not a string",
            ),
        ];
        for (text, why) in cases {
            assert_eq!(held(text), Err(why), "{text}");
        }
        for ttl in [r#""x""#, "0", "-5", "2.5", "true", "[]"] {
            let text = format!(r#"{{"locked": true, "user": "a", "ttl_seconds": {ttl}}}"#);
            assert_eq!(
                held(&text),
                Err("ttl_seconds is not null or an integer of at least 1"),
                "{text}"
            );
        }
    }

    #[test]
    fn only_five_corrupt_copies_are_kept() {
        let f = fixture("prune");
        for i in 0..8 {
            fs::write(f.dir.join("lock.json"), format!("garbage {i}")).unwrap();
            f.lock_box.status().unwrap();
            f.clock.advance(1.0);
        }
        let count = fs::read_dir(&f.dir)
            .unwrap()
            .filter(|e| {
                let name = e.as_ref().unwrap().file_name();
                name.to_string_lossy().starts_with("lock.json.corrupt-")
            })
            .count();
        assert_eq!(count, 5);
    }

    #[test]
    fn failed_write_answers_500_and_keeps_the_old_file() {
        let f = fixture("write-fails");
        f.lock_box
            .acquire(&body(json!({"user": "a", "holder_type": "ci"})), &never())
            .unwrap();
        let before = fs::read(f.dir.join("lock.json")).unwrap();
        // A directory squatting on the next temp name makes the write fail
        // even for root, which permission bits would not stop.
        let squatter = f.lock_box.state_dir.peek_temp(LOCK_FILE);
        fs::create_dir(&squatter).unwrap();
        let err = f
            .lock_box
            .acquire(&body(json!({"user": "a", "holder_type": "ci"})), &never())
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("Could not persist lock state: "),
            "{err}"
        );
        assert_eq!(
            fs::read(f.dir.join("lock.json")).unwrap(),
            before,
            "the previous record is intact"
        );
        fs::remove_dir(&squatter).unwrap();
        let leftovers = fs::read_dir(&f.dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".tmp")
            })
            .count();
        assert_eq!(leftovers, 0, "no temp files are left behind");
        assert_eq!(f.lock_box.status().unwrap()["user"], "a");
    }

    #[test]
    fn temp_files_of_a_crashed_write_are_removed_at_open() {
        let f = fixture("stale-temp");
        f.lock_box
            .acquire(&body(json!({"user": "a"})), &never())
            .unwrap();
        // What a crash between write and rename leaves, named as this
        // lagerd and as 0.61.0 named it; other files stay.
        let stale = f.lock_box.state_dir.peek_temp(LOCK_FILE);
        fs::write(&stale, b"{\"locked\": tr").unwrap();
        fs::write(f.dir.join(".lock-77-3.json"), b"{").unwrap();
        fs::write(f.dir.join("saved_nets.json"), b"[]").unwrap();
        let reopened = LockBox::open(&f.dir, f.clock.clone()).unwrap();
        let mut left: Vec<String> = fs::read_dir(&f.dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["lock.json", "lock.json.flock", "saved_nets.json"]);
        assert_eq!(reopened.status().unwrap()["user"], "a");
    }

    #[test]
    fn wait_seconds_is_validated() {
        let f = fixture("wait-validate");
        for bad in [json!(-1), json!(301), json!(1.5), json!("5"), json!(true)] {
            let err = f
                .lock_box
                .acquire(&body(json!({"user": "a", "wait_seconds": bad})), &never())
                .unwrap_err();
            assert_eq!(
                err.to_string(),
                "wait_seconds must be an integer between 0 and 300"
            );
        }
        for ok in [json!(0), json!(null), json!(300)] {
            f.lock_box
                .acquire(&body(json!({"user": "a", "wait_seconds": ok})), &never())
                .unwrap();
        }
    }

    #[test]
    fn queued_waiters_are_granted_in_arrival_order() {
        let f = Arc::new(fixture("fifo"));
        f.lock_box
            .acquire(&body(json!({"user": "holder"})), &never())
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let mut threads = Vec::new();
        for name in ["first", "second", "third"] {
            let (fx, tx) = (f.clone(), tx.clone());
            threads.push(std::thread::spawn(move || {
                let got = fx
                    .lock_box
                    .acquire(&body(json!({"user": name, "wait_seconds": 30})), &|| false);
                tx.send((
                    name,
                    got.map(|v| v["previous_user"].clone())
                        .map_err(|e| e.to_string()),
                ))
                .unwrap();
            }));
            // Arrival order is what FIFO means: wait until this one queued.
            while f.lock_box.lock_queue().waiters.len() < threads.len() {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        let release = |user: &str| f.lock_box.release(&body(json!({"user": user}))).unwrap();
        release("holder");
        let (name, outcome) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!((name, outcome), ("first", Ok(Value::Null)));
        assert_eq!(
            f.lock_box.status().unwrap()["user"],
            "first",
            "granted in the same critical section"
        );
        release("first");
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap().0, "second");
        release("second");
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap().0, "third");
        for t in threads {
            t.join().unwrap();
        }
    }

    #[test]
    fn waiter_times_out_with_409_and_a_gone_client_leaves_the_queue() {
        let f = fixture("wait-timeout");
        f.lock_box
            .acquire(&body(json!({"user": "holder"})), &never())
            .unwrap();
        let started = Instant::now();
        let err = f
            .lock_box
            .acquire(&body(json!({"user": "w", "wait_seconds": 1})), &never())
            .unwrap_err();
        assert!(matches!(&err, LockError::Taken { .. }), "{err}");
        assert!(started.elapsed() >= Duration::from_secs(1));
        assert!(f.lock_box.lock_queue().waiters.is_empty());

        let err = f
            .lock_box
            .acquire(&body(json!({"user": "w", "wait_seconds": 60})), &|| true)
            .unwrap_err();
        assert!(matches!(err, LockError::Abandoned));
        assert!(f.lock_box.lock_queue().waiters.is_empty());
    }

    #[test]
    fn ttl_expiry_wakes_the_queue() {
        let f = Arc::new(fixture("wait-reap"));
        f.lock_box
            .acquire(
                &body(json!({"user": "crashed", "ttl_seconds": 10})),
                &never(),
            )
            .unwrap();
        let waiter = {
            let f = f.clone();
            std::thread::spawn(move || {
                f.lock_box
                    .acquire(&body(json!({"user": "w", "wait_seconds": 30})), &|| false)
            })
        };
        while f.lock_box.lock_queue().waiters.is_empty() {
            std::thread::sleep(Duration::from_millis(1));
        }
        f.clock.advance(11.0);
        f.lock_box.reap().unwrap();
        let got = waiter.join().unwrap().unwrap();
        assert_eq!(got["user"], "w");
        assert_eq!(on_disk(&f)["user"], "w");
    }

    #[test]
    fn queue_is_capped() {
        let f = Arc::new(fixture("cap"));
        f.lock_box
            .acquire(&body(json!({"user": "holder"})), &never())
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let threads: Vec<_> = (0..QUEUE_MAX)
            .map(|i| {
                let (f, stop) = (f.clone(), stop.clone());
                std::thread::spawn(move || {
                    let gone = || stop.load(Ordering::SeqCst);
                    let _ = f.lock_box.acquire(
                        &body(json!({"user": format!("w{i}"), "wait_seconds": 60})),
                        &gone,
                    );
                })
            })
            .collect();
        while f.lock_box.lock_queue().waiters.len() < QUEUE_MAX {
            std::thread::sleep(Duration::from_millis(1));
        }
        let started = Instant::now();
        let err = f
            .lock_box
            .acquire(&body(json!({"user": "late", "wait_seconds": 60})), &never())
            .unwrap_err();
        assert!(matches!(err, LockError::Taken { .. }));
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "refused at once"
        );
        stop.store(true, Ordering::SeqCst);
        for t in threads {
            t.join().unwrap();
        }
    }
}
