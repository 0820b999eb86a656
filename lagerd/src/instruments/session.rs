//! One session per instrument address (instruments.md §2), shared by every
//! net and role on it and owned by one thread per address, so SCPI traffic
//! is serialized: no interleaving across roles or clients.
//!
//! The session opens lazily under the cross-process device lock, retries a
//! busy open with backoff (§4), and closes its transport on a vanished
//! device, a timeout or a garbled reply, so the next command reopens
//! cleanly and stale bytes never answer a later command (§10.8).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::Duration;

use common::addr::Address;
use log::{info, warn};

use super::transport::{BusyCause, Transport, TransportError};
use crate::devlock::DeviceLocks;
use crate::procscan::{self, Target};

/// Busy opens are retried after these waits (≈ 3.7 s in all, §4).
const BUSY_BACKOFF: [Duration; 4] = [
    Duration::from_millis(200),
    Duration::from_millis(500),
    Duration::from_millis(1000),
    Duration::from_millis(2000),
];
/// A command's whole budget, queueing included (§2: 30 s).
const CALL_DEADLINE: Duration = Duration::from_secs(30);

/// The instrument's entry function, remembered once known (§10.9).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Function {
    PowerSupply,
    Battery,
}

/// Why a command could not run on its instrument.
#[derive(Debug)]
pub enum SessionError {
    /// The transport failed (busy after retries, gone, timed out).
    Transport(TransportError),
    /// Another process holds the device lock.
    Locked(crate::devlock::LockError),
    /// The session's thread could not be started.
    NoThread {
        address: String,
        error: std::io::Error,
    },
    /// Queued behind other commands past the deadline.
    Deadline { address: String },
}

impl std::fmt::Display for SessionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SessionError::Transport(e) => e.fmt(f),
            SessionError::Locked(e) => write!(f, "[Errno 16] Resource busy: {e}"),
            SessionError::NoThread { address, error } => write!(
                f,
                "lagerd cannot serve {address}: its session thread did not start ({error}); the box is short of memory or threads, restart lagerd"
            ),
            SessionError::Deadline { address } => write!(
                f,
                "invoke-timeout: {address} did not finish earlier commands within {}s; it may be wedged (lager diagnose)",
                CALL_DEADLINE.as_secs()
            ),
        }
    }
}

impl From<TransportError> for SessionError {
    fn from(e: TransportError) -> SessionError {
        SessionError::Transport(e)
    }
}

/// Where the holder scan looks when another process has claimed a USB
/// instrument (`--proc-root`, `--dev-root`).
#[derive(Clone)]
pub struct ScanRoots {
    pub proc: PathBuf,
    pub dev: PathBuf,
}

/// The state of one instrument's connection, used only on its own thread.
pub struct Session {
    key: String,
    address: Address,
    io_timeout: Duration,
    locks: Arc<DeviceLocks>,
    roots: ScanRoots,
    transport: Option<Transport>,
    /// Known entry function; forgotten whenever the transport is closed.
    pub function: Option<Function>,
    /// The device went away (ENODEV) during the current call.
    lost: bool,
}

impl Session {
    /// Sends a command without a reply.
    pub fn write(&mut self, command: &str) -> Result<(), SessionError> {
        self.exchange(|transport| transport.write(command))
    }

    /// Sends a query and returns its reply line.
    pub fn query(&mut self, command: &str) -> Result<String, SessionError> {
        let reply = self.exchange(|transport| transport.query(command))?;
        // A reply that is not text is garbage from a confused instrument:
        // close, so nothing stale answers the next command.
        if reply.chars().any(|c| c.is_control() && c != '\t') {
            self.close("garbled reply");
            return Err(SessionError::Transport(TransportError::Io {
                address: self.key.clone(),
                error: std::io::Error::other(format!("garbled reply to {command}: {reply:?}")),
            }));
        }
        Ok(reply)
    }

    fn settle<T>(&mut self, outcome: Result<T, TransportError>) -> Result<T, SessionError> {
        if let Err(e) = &outcome {
            self.lost |= matches!(e, TransportError::NoDevice { .. });
            self.close(&e.to_string());
        }
        outcome.map_err(SessionError::from)
    }

    fn close(&mut self, why: &str) {
        if self.transport.take().is_some() {
            warn!(
                "{}: session closed ({why}); the next command reopens it",
                self.key
            );
        }
        self.function = None;
    }

    fn is_open(&self) -> bool {
        self.transport.is_some()
    }

    /// Runs `op` on the open transport, opening it first if needed (§2
    /// open sequence). A busy open is retried after the §4 backoff: a
    /// refused claim, or a socket instrument that accepts the connection
    /// and resets it before answering (§10.8), which shows only in the
    /// first exchange on it.
    fn exchange<T>(
        &mut self,
        op: impl Fn(&mut Transport) -> Result<T, TransportError>,
    ) -> Result<T, SessionError> {
        let mut waits = BUSY_BACKOFF.iter();
        loop {
            let fresh = self.transport.is_none();
            let outcome = match self.transport.as_mut() {
                Some(transport) => op(transport),
                None => self
                    .open()
                    .map_err(SessionError::Locked)?
                    .and_then(|transport| {
                        info!("{}: session opened", self.key);
                        op(self.transport.insert(transport))
                    }),
            };
            match (outcome, waits.next()) {
                (Err(e @ TransportError::Busy { .. }), Some(wait)) if fresh => {
                    // Never a session yet: dropped quietly, the retry says why.
                    self.transport = None;
                    self.function = None;
                    info!("{e}; retrying the open in {} ms", wait.as_millis());
                    thread::sleep(*wait);
                }
                (outcome, _) => return self.settle(outcome),
            }
        }
    }

    /// One open under the device lock. Contention (the outer error) is not
    /// retried here: the lock itself waited for its 2 s.
    fn open(&self) -> Result<Result<Transport, TransportError>, crate::devlock::LockError> {
        self.locks
            .with(&self.key, || {
                Transport::open(&self.address, self.io_timeout)
            })
            .map(|opened| opened.map_err(|e| name_holders(e, &self.roots)))
    }
}

/// A claimed USB device's error names the processes holding its usbfs node
/// (diagnose.md §2.4), so the user learns whom to stop.
pub fn name_holders(error: TransportError, roots: &ScanRoots) -> TransportError {
    match error {
        TransportError::Busy {
            address,
            cause: BusyCause::Claimed { node, .. },
        } => {
            let target = Target::new(Path::new(&node), &roots.dev);
            let holders = procscan::holders(&roots.proc, &target)
                .into_iter()
                .map(|h| format!("pid {} ({})", h.pid, h.command))
                .collect();
            TransportError::Busy {
                address,
                cause: BusyCause::Claimed { node, holders },
            }
        }
        other => other,
    }
}

type Job = Box<dyn FnOnce(&mut Session) + Send>;

struct Worker {
    jobs: Sender<(Job, Arc<AtomicBool>)>,
    open: Arc<AtomicBool>,
}

/// Every instrument session of this lagerd.
pub struct Sessions {
    locks: Arc<DeviceLocks>,
    io_timeout: Duration,
    roots: ScanRoots,
    workers: Mutex<HashMap<String, Worker>>,
}

impl Sessions {
    pub fn new(locks: Arc<DeviceLocks>, io_timeout: Duration, roots: ScanRoots) -> Sessions {
        Sessions {
            locks,
            io_timeout,
            roots,
            workers: Mutex::new(HashMap::new()),
        }
    }

    /// Runs `job` on the address's session thread, after every command
    /// queued before it; gives up (and the job is skipped) at the deadline.
    ///
    /// A session that was open when the job started and lost its device
    /// during it was stale (the instrument re-enumerated, the link was
    /// reset): the job runs once more on a fresh session (§4). A device
    /// that is really gone fails that reopen, and the job's error stands.
    pub fn run<T, E>(
        &self,
        address: &Address,
        job: impl Fn(&mut Session) -> Result<T, E> + Send + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<SessionError> + Send + 'static,
    {
        let key = address.canonical();
        let jobs = self.worker(address)?;
        let (reply, answer) = mpsc::channel();
        let abandoned = Arc::new(AtomicBool::new(false));
        let job: Job = Box::new(move |session| {
            let was_open = session.is_open();
            session.lost = false;
            let mut outcome = job(session);
            if outcome.is_err() && was_open && session.lost {
                info!("{}: retrying once on a fresh session", session.key);
                session.lost = false;
                outcome = job(session);
            }
            let _ = reply.send(outcome);
        });
        if jobs.send((job, abandoned.clone())).is_err() {
            return Err(SessionError::Deadline { address: key }.into());
        }
        match answer.recv_timeout(CALL_DEADLINE) {
            Ok(outcome) => outcome,
            Err(_) => {
                abandoned.store(true, Ordering::SeqCst);
                Err(SessionError::Deadline { address: key }.into())
            }
        }
    }

    /// Whether `address` has an open shared session (the dispatcher view).
    pub fn is_open(&self, address: &str) -> bool {
        let Ok(parsed) = Address::parse(address) else {
            return false;
        };
        let workers = self.workers.lock().unwrap_or_else(PoisonError::into_inner);
        workers
            .get(&parsed.canonical())
            .is_some_and(|w| w.open.load(Ordering::SeqCst))
    }

    /// `/cache/clear` (keep transports) and `/cache/clear_all` (close them),
    /// run on each session's own thread after its queued commands; returns
    /// (sessions touched, transports closed or kept open).
    pub fn clear(&self, close: bool) -> (usize, usize) {
        let senders: Vec<_> = {
            let workers = self.workers.lock().unwrap_or_else(PoisonError::into_inner);
            workers.values().map(|w| w.jobs.clone()).collect()
        };
        let (done, results) = mpsc::channel();
        let mut touched = 0;
        for jobs in senders {
            let done = done.clone();
            let job: Job = Box::new(move |session| {
                let was_open = session.is_open();
                session.function = None;
                if close {
                    session.close("cache cleared");
                }
                let _ = done.send(was_open);
            });
            if jobs.send((job, Arc::new(AtomicBool::new(false)))).is_ok() {
                touched += 1;
            }
        }
        drop(done);
        let open = results
            .iter()
            .take(touched)
            .filter(|was_open| *was_open)
            .count();
        (touched, open)
    }

    /// Addresses with a session thread (open or not), for `/cache/stats`.
    pub fn addresses(&self) -> Vec<String> {
        let workers = self.workers.lock().unwrap_or_else(PoisonError::into_inner);
        let mut addresses: Vec<String> = workers.keys().cloned().collect();
        addresses.sort();
        addresses
    }

    pub fn open_count(&self) -> usize {
        let workers = self.workers.lock().unwrap_or_else(PoisonError::into_inner);
        workers
            .values()
            .filter(|w| w.open.load(Ordering::SeqCst))
            .count()
    }

    fn worker(&self, address: &Address) -> Result<Sender<(Job, Arc<AtomicBool>)>, SessionError> {
        let key = address.canonical();
        let mut workers = self.workers.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(worker) = workers.get(&key) {
            return Ok(worker.jobs.clone());
        }
        let session = Session {
            key: key.clone(),
            address: address.clone(),
            io_timeout: self.io_timeout,
            locks: self.locks.clone(),
            roots: self.roots.clone(),
            transport: None,
            function: None,
            lost: false,
        };
        let (jobs, inbox) = mpsc::channel();
        let open = Arc::new(AtomicBool::new(false));
        let flag = open.clone();
        thread::Builder::new()
            .name(format!("session-{}", workers.len()))
            .spawn(move || serve(session, inbox, flag))
            .map_err(|error| SessionError::NoThread {
                address: key.clone(),
                error,
            })?;
        workers.insert(
            key,
            Worker {
                jobs: jobs.clone(),
                open,
            },
        );
        Ok(jobs)
    }
}

fn serve(mut session: Session, inbox: Receiver<(Job, Arc<AtomicBool>)>, open: Arc<AtomicBool>) {
    for (job, abandoned) in inbox {
        if abandoned.load(Ordering::SeqCst) {
            continue;
        }
        job(&mut session);
        open.store(session.is_open(), Ordering::SeqCst);
    }
}
