//! Serial consoles (console.md): every `uart` net's port is owned by
//! lagerd for as long as it runs, so nothing the device prints is lost,
//! any number of readers watch it and one writer at a time types.
//!
//! `Consoles` keeps one `Console` per uart net of the nets store, started
//! when lagerd starts or a net is added and stopped when it is deleted.
//! Each `Console` owns its state behind one mutex: the ring of captured
//! bytes (`ring.rs`), the port's state and the open port itself, written
//! by its capture thread (`capture.rs`) and read by reader streams
//! (`stream.rs`). The writer claim lives beside it: at most one per
//! console, held by a stream for as long as that stream's client stays.

mod capture;
pub mod params;
pub mod port;
mod ring;
mod stream;

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log::{info, warn};
use serde::Serialize;
use serde_json::{json, Value};

use crate::nets::Nets;
use crate::procscan::Holder;

pub use params::{PortSpec, SerialParams};
pub use port::Roots;
pub use stream::{Position, Reader};

use ring::Ring;

/// Default ring per console (console.md §2; `--uart-ring`).
pub const DEFAULT_RING_BYTES: usize = 1024 * 1024;
/// Each of the two on-disk log files (console.md §2: 2 × 8 MiB).
pub const LOG_FILE_BYTES: u64 = 8 * 1024 * 1024;
/// A write the port does not take within this long fails (flow control
/// held off, a wedged adapter).
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the nets store is re-read for added or deleted uart nets
/// (besides at once after `POST /nets`).
const RESYNC_EVERY: Duration = Duration::from_secs(1);

/// What a console request can fail with; `http.rs` maps it to a status.
#[derive(Debug)]
pub enum ConsoleError {
    UnknownNet(String),
    NotUart {
        net: String,
        role: String,
    },
    BadRequest(String),
    /// Someone else types on this console (console.md §3).
    WriterBusy {
        net: String,
        holder: String,
        since: String,
    },
    /// The session's claim ended (taken over, or it never had one).
    NotWriter {
        net: String,
        now: Option<String>,
    },
    /// The port is not open: unplugged, held by another process, failing.
    NotOpen {
        net: String,
        why: String,
    },
    WriteTimeout {
        net: String,
    },
    Port {
        net: String,
        error: io::Error,
    },
}

impl std::fmt::Display for ConsoleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConsoleError::UnknownNet(net) => write!(
                f,
                "Net '{net}' not found. Create it with 'lager nets add'."
            ),
            ConsoleError::NotUart { net, role } => {
                write!(f, "Net '{net}' is a '{role}' net, not 'uart'.")
            }
            ConsoleError::BadRequest(why) => f.write_str(why),
            ConsoleError::WriterBusy { net, holder, since } => write!(
                f,
                "console {net} is being typed on by {} since {since}; watch without -i, or take it over with --takeover",
                common::holder::format_lock_user(holder)
            ),
            ConsoleError::NotWriter { net, now: Some(holder) } => write!(
                f,
                "this session no longer types on console {net}: {} took it over",
                common::holder::format_lock_user(holder)
            ),
            ConsoleError::NotWriter { net, now: None } => write!(
                f,
                "this session does not type on console {net}; open it for writing first (lager uart {net} -i)"
            ),
            ConsoleError::NotOpen { net, why } => write!(
                f,
                "console {net} is not connected ({why}); nothing was sent. lager diagnose {net} says why"
            ),
            ConsoleError::WriteTimeout { net } => write!(
                f,
                "console {net} did not take the bytes within {}s (flow control holding it off?); lager diagnose {net}",
                WRITE_TIMEOUT.as_secs()
            ),
            ConsoleError::Port { net, error } => write!(f, "console {net}: writing failed: {error}"),
        }
    }
}

/// Where the consoles keep their files and find their ports.
#[derive(Clone, Debug)]
pub struct Config {
    pub ring_bytes: usize,
    pub log_file_bytes: u64,
    /// `<state-dir>/uart/<net>/console.log` (+ `.1`).
    pub log_root: PathBuf,
    pub roots: Roots,
}

/// Per-console counters for `/status` and `/metrics`.
#[derive(Clone, Debug, Serialize)]
pub struct ConsoleStats {
    pub net: String,
    /// `starting`, `open`, `gone`, `held` or `error`.
    pub state: &'static str,
    pub path: Option<String>,
    /// Bytes captured since lagerd started (the next byte's offset).
    pub bytes: u64,
    /// Times the port was opened, and times it went away.
    pub opens: u64,
    pub gone: u64,
    pub readers: usize,
    pub writer: Option<String>,
}

/// Every uart net's console.
pub struct Consoles {
    config: Config,
    nets: Arc<Nets>,
    running: Mutex<BTreeMap<String, Running>>,
    /// Serializes `sync` so a console is never started twice.
    syncing: Mutex<()>,
}

struct Running {
    console: Arc<Console>,
    /// The net as it was when started: any change restarts the console.
    net: Value,
    thread: Option<thread::JoinHandle<()>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Consoles {
    /// Starts a console for every uart net now, and keeps following the
    /// nets store until `stop`.
    pub fn start(config: Config, nets: Arc<Nets>, stop: Arc<AtomicBool>) -> Arc<Consoles> {
        let consoles = Arc::new(Consoles {
            config,
            nets,
            running: Mutex::new(BTreeMap::new()),
            syncing: Mutex::new(()),
        });
        consoles.sync();
        let follower = consoles.clone();
        let spawned = thread::Builder::new()
            .name("uart-nets".into())
            .spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    thread::sleep(RESYNC_EVERY);
                    follower.sync();
                }
            });
        if let Err(e) = spawned {
            warn!("cannot follow the nets store for uart nets: {e}");
        }
        consoles
    }

    /// Starts consoles for new uart nets, stops those of deleted or
    /// changed ones.
    pub fn sync(&self) {
        let _syncing = lock(&self.syncing);
        let mut wanted: BTreeMap<String, Value> = BTreeMap::new();
        for net in self.nets.list() {
            if net.get("role").and_then(Value::as_str) != Some("uart") {
                continue;
            }
            if let Some(name) = net.get("name").and_then(Value::as_str) {
                wanted.entry(name.to_string()).or_insert(net.clone());
            }
        }
        let stale: Vec<Running> = {
            let mut running = lock(&self.running);
            let changed: Vec<String> = running
                .iter()
                .filter(|(name, r)| wanted.get(*name) != Some(&r.net))
                .map(|(name, _)| name.clone())
                .collect();
            changed
                .iter()
                .filter_map(|name| running.remove(name))
                .collect()
        };
        for mut old in stale {
            info!(
                "console {}: stopping (net deleted or changed)",
                old.console.name
            );
            old.console.stop();
            if let Some(thread) = old.thread.take() {
                let _ = thread.join();
            }
        }
        let mut running = lock(&self.running);
        for (name, net) in wanted {
            if running.contains_key(&name) {
                continue;
            }
            match self.launch(&name, &net) {
                Ok(started) => {
                    running.insert(name, started);
                }
                // Saved by hand or by an older lagerd: say so once per
                // change, not every second.
                Err(why) => {
                    warn!("uart net '{name}' is not captured: {why}");
                    running.insert(
                        name.clone(),
                        Running {
                            console: Console::invalid(&name, why),
                            net,
                            thread: None,
                        },
                    );
                }
            }
        }
    }

    fn launch(&self, name: &str, net: &Value) -> Result<Running, String> {
        let address = net.get("address").and_then(Value::as_str).unwrap_or("");
        let spec = PortSpec::parse(address)?;
        let params = SerialParams::from_json(net.get("params"))?;
        let console = Arc::new(Console::new(
            name,
            address,
            spec,
            params,
            self.config.ring_bytes,
        ));
        let log_dir = self.config.log_root.join(crate::devlock::safe_name(name));
        let capture = capture::Capture {
            console: console.clone(),
            roots: self.config.roots.clone(),
            log_dir,
            log_file_bytes: self.config.log_file_bytes,
        };
        let thread = thread::Builder::new()
            .name(format!("uart-{name}"))
            .stack_size(256 * 1024)
            .spawn(move || capture.run())
            .map_err(|e| format!("cannot start its capture thread: {e}"))?;
        Ok(Running {
            console,
            net: net.clone(),
            thread: Some(thread),
        })
    }

    /// The console of net `name`, or why there is none.
    pub fn console(&self, name: &str) -> Result<Arc<Console>, ConsoleError> {
        if let Some(running) = lock(&self.running).get(name) {
            return Ok(running.console.clone());
        }
        let net = self
            .nets
            .list()
            .into_iter()
            .find(|n| n.get("name").and_then(Value::as_str) == Some(name));
        match net {
            Some(net) if net.get("role").and_then(Value::as_str) != Some("uart") => {
                Err(ConsoleError::NotUart {
                    net: name.to_string(),
                    role: net
                        .get("role")
                        .and_then(Value::as_str)
                        .unwrap_or("unknown")
                        .to_string(),
                })
            }
            Some(_) => {
                // Saved a moment ago by hand: start it now.
                self.sync();
                lock(&self.running)
                    .get(name)
                    .map(|r| r.console.clone())
                    .ok_or_else(|| ConsoleError::UnknownNet(name.to_string()))
            }
            None => Err(ConsoleError::UnknownNet(name.to_string())),
        }
    }

    /// `GET /diagnose/uart?net=N`: the console's state and a fresh look at
    /// its port (see `Console::diagnose`).
    pub fn diagnose(&self, name: &str) -> Result<Value, ConsoleError> {
        Ok(self.console(name)?.diagnose(&self.config.roots))
    }

    /// Counters of every console, in net name order.
    pub fn stats(&self) -> Vec<ConsoleStats> {
        let consoles: Vec<Arc<Console>> = lock(&self.running)
            .values()
            .map(|r| r.console.clone())
            .collect();
        consoles.iter().map(|c| c.stats()).collect()
    }

    /// Stops every console and waits for the capture threads.
    pub fn shutdown(&self) {
        let running = std::mem::take(&mut *lock(&self.running));
        for (_, mut old) in running {
            old.console.stop();
            if let Some(thread) = old.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

/// Microseconds since the Unix epoch.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn timestamp(us: u64) -> String {
    crate::clock::format_timestamp(us as f64 / 1e6)
}

/// The port as the capture thread last saw it.
#[derive(Clone, Debug)]
enum State {
    Starting,
    Open {
        path: PathBuf,
        since_us: u64,
    },
    /// Not there (never plugged in, unplugged, re-enumerating).
    Gone {
        since_us: u64,
        reason: String,
    },
    /// Another process has it open; lagerd does not fight over it.
    Held {
        path: PathBuf,
        holders: Vec<Holder>,
        since_us: u64,
    },
    Failed {
        path: Option<PathBuf>,
        error: String,
        since_us: u64,
    },
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Open { .. } => "open",
            State::Gone { .. } => "gone",
            State::Held { .. } => "held",
            State::Failed { .. } => "error",
        }
    }

    fn path(&self) -> Option<&PathBuf> {
        match self {
            State::Open { path, .. } | State::Held { path, .. } => Some(path),
            State::Failed { path, .. } => path.as_ref(),
            State::Starting | State::Gone { .. } => None,
        }
    }

    /// Why it is not open, in a few words.
    fn why(&self) -> String {
        match self {
            State::Starting => "starting".into(),
            State::Open { .. } => "open".into(),
            State::Gone { reason, .. } => reason.clone(),
            State::Held { holders, .. } => held_by(holders),
            State::Failed { error, .. } => error.clone(),
        }
    }
}

/// `held by minicom (pid 42, alice)`, or a general phrase.
fn held_by(holders: &[Holder]) -> String {
    if holders.is_empty() {
        return "held by another process".into();
    }
    let names: Vec<String> = holders
        .iter()
        .take(4)
        .map(|h| {
            let user = if h.user.is_empty() {
                String::new()
            } else {
                format!(", {}", h.user)
            };
            format!("{} (pid {}{user})", h.command, h.pid)
        })
        .collect();
    format!("held by {}", names.join(", "))
}

struct Inner {
    ring: Ring,
    state: State,
    /// The open port, shared with writers; `None` unless `Open`.
    port: Option<Arc<port::Port>>,
}

/// The one writer of a console.
#[derive(Clone, Debug)]
struct Writer {
    session: String,
    holder: String,
    since_us: u64,
}

/// One uart net's console.
pub struct Console {
    pub name: String,
    address: String,
    spec: Option<PortSpec>,
    params: SerialParams,
    inner: Mutex<Inner>,
    changed: Condvar,
    writer: Mutex<Option<Writer>>,
    /// Writes reach the port one at a time, whole.
    writing: Mutex<()>,
    readers: AtomicUsize,
    stopping: AtomicBool,
    opens: AtomicU64,
    gone: AtomicU64,
}

impl Console {
    fn new(
        name: &str,
        address: &str,
        spec: PortSpec,
        params: SerialParams,
        ring_bytes: usize,
    ) -> Console {
        Console {
            name: name.to_string(),
            address: address.to_string(),
            spec: Some(spec),
            params,
            inner: Mutex::new(Inner {
                ring: Ring::new(ring_bytes),
                state: State::Starting,
                port: None,
            }),
            changed: Condvar::new(),
            writer: Mutex::new(None),
            writing: Mutex::new(()),
            readers: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
            opens: AtomicU64::new(0),
            gone: AtomicU64::new(0),
        }
    }

    /// A net that cannot be captured (a bad address or params in the
    /// file): it answers with its error instead of disappearing.
    fn invalid(name: &str, error: String) -> Arc<Console> {
        let mut console = Console::new(
            name,
            "",
            PortSpec::Path(PathBuf::new()),
            SerialParams::default(),
            1,
        );
        console.spec = None;
        lock(&console.inner).state = State::Failed {
            path: None,
            error,
            since_us: now_us(),
        };
        Arc::new(console)
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        let _inner = self.inner();
        self.changed.notify_all();
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    pub fn stats(&self) -> ConsoleStats {
        let (state, path, bytes) = {
            let inner = self.inner();
            (
                inner.state.name(),
                inner.state.path().map(|p| p.display().to_string()),
                inner.ring.end(),
            )
        };
        ConsoleStats {
            net: self.name.clone(),
            state,
            path,
            bytes,
            opens: self.opens.load(Ordering::Relaxed),
            gone: self.gone.load(Ordering::Relaxed),
            readers: self.readers.load(Ordering::Relaxed),
            writer: lock(&self.writer).as_ref().map(|w| w.holder.clone()),
        }
    }

    /// The last `bytes` bytes the device printed, as text (the status
    /// page's tail; invalid UTF-8 shows as U+FFFD).
    pub fn tail_text(&self, bytes: usize) -> String {
        String::from_utf8_lossy(&self.inner().ring.last_bytes(bytes)).into_owned()
    }

    /// `GET /uart/status`: the console's state, where it is, what it kept.
    pub fn status(&self) -> Value {
        let (state, start, end) = {
            let inner = self.inner();
            (inner.state.clone(), inner.ring.start(), inner.ring.end())
        };
        let writer = lock(&self.writer).clone();
        let (since_us, reason, holders) = match &state {
            State::Starting => (None, None, Vec::new()),
            State::Open { since_us, .. } => (Some(*since_us), None, Vec::new()),
            State::Gone { since_us, reason } => (Some(*since_us), Some(reason.clone()), Vec::new()),
            State::Held {
                since_us, holders, ..
            } => (Some(*since_us), Some(state.why()), holders.clone()),
            State::Failed {
                since_us, error, ..
            } => (Some(*since_us), Some(error.clone()), Vec::new()),
        };
        json!({
            "net": self.name,
            "address": self.address,
            "port": self.spec.as_ref().map(ToString::to_string),
            "state": state.name(),
            "path": state.path().map(|p| p.display().to_string()),
            // Where a link or an adapter's serial number leads right now.
            "device": match &state {
                State::Open { path, .. } => std::fs::canonicalize(path)
                    .ok()
                    .map(|real| real.display().to_string()),
                _ => None,
            },
            "since": since_us.map(timestamp),
            "reason": reason,
            "holders": holders,
            "bytes": end,
            "start": start,
            "end": end,
            "opens": self.opens.load(Ordering::Relaxed),
            "gone": self.gone.load(Ordering::Relaxed),
            "readers": self.readers.load(Ordering::Relaxed),
            "writer": writer.as_ref().map(|w| w.holder.clone()),
            "writer_since": writer.as_ref().map(|w| timestamp(w.since_us)),
            "params": self.params.to_json(),
            "line_ending": self.params.line_ending.name(),
        })
    }

    /// `GET /diagnose/uart`: the status plus a fresh look at the port: the
    /// node the address names now, the adapter's USB facts, and the other
    /// processes holding it.
    pub fn diagnose(&self, roots: &Roots) -> Value {
        let mut answer = self.status();
        let found = self.spec.as_ref().and_then(|spec| port::find(spec, roots));
        let holders = found
            .as_ref()
            .map(|f| port::holders(&f.node, roots))
            .unwrap_or_default();
        answer["present"] = json!(found.is_some());
        answer["node"] = json!(found.as_ref().map(|f| f.node.display().to_string()));
        answer["usb"] = json!(found.as_ref().and_then(|f| f.usb.clone()));
        let (bucket, ok, headline) = classify(&answer, &self.name, &holders);
        answer["holders"] = json!(holders);
        answer["bucket"] = json!(bucket);
        answer["ok"] = json!(ok);
        answer["headline"] = json!(headline);
        answer["sections"] = sections(&answer, &holders);
        answer
    }

    /// Claims the writer for `holder`; with `takeover`, from whoever has it.
    pub fn claim(self: &Arc<Self>, holder: &str, takeover: bool) -> Result<Claim, ConsoleError> {
        let mut slot = lock(&self.writer);
        if let (Some(current), false) = (slot.as_ref(), takeover) {
            return Err(ConsoleError::WriterBusy {
                net: self.name.clone(),
                holder: current.holder.clone(),
                since: timestamp(current.since_us),
            });
        }
        if let Some(previous) = slot.as_ref() {
            info!(
                "console {}: {holder} took over typing from {}",
                self.name, previous.holder
            );
        } else {
            info!("console {}: {holder} types", self.name);
        }
        let session = session_id();
        *slot = Some(Writer {
            session: session.clone(),
            holder: holder.to_string(),
            since_us: now_us(),
        });
        drop(slot);
        self.changed.notify_all();
        Ok(Claim {
            console: self.clone(),
            session,
        })
    }

    /// Ends `session`'s claim at once (a client saying goodbye; a client
    /// that vanishes loses it when its stream notices). False if `session`
    /// does not hold the writer.
    pub fn release(&self, session: &str) -> bool {
        let mut slot = lock(&self.writer);
        match slot.as_ref() {
            Some(w) if w.session == session => {
                info!("console {}: {} stopped typing", self.name, w.holder);
                *slot = None;
                drop(slot);
                self.changed.notify_all();
                true
            }
            _ => false,
        }
    }

    /// The holder typing now, if `session` is no longer theirs.
    fn taken_from(&self, session: &str) -> Option<Option<String>> {
        match lock(&self.writer).as_ref() {
            Some(w) if w.session == session => None,
            Some(w) => Some(Some(w.holder.clone())),
            None => Some(None),
        }
    }

    /// `POST /uart/write`: sends `bytes` to the port for the session that
    /// holds the writer.
    pub fn write(&self, session: &str, bytes: &[u8]) -> Result<usize, ConsoleError> {
        if let Some(now) = self.taken_from(session) {
            return Err(ConsoleError::NotWriter {
                net: self.name.clone(),
                now,
            });
        }
        let port = {
            let inner = self.inner();
            match &inner.port {
                Some(port) => port.clone(),
                None => {
                    return Err(ConsoleError::NotOpen {
                        net: self.name.clone(),
                        why: inner.state.why(),
                    })
                }
            }
        };
        let _writing = lock(&self.writing);
        let deadline = Instant::now() + WRITE_TIMEOUT;
        let mut sent = 0;
        while sent < bytes.len() {
            // SAFETY: writes from a live slice to our own open descriptor.
            let n = unsafe {
                libc::write(port.fd(), bytes[sent..].as_ptr().cast(), bytes.len() - sent)
            };
            if n >= 0 {
                sent += n as usize;
                continue;
            }
            let error = io::Error::last_os_error();
            match error.raw_os_error() {
                Some(libc::EINTR) => {}
                Some(libc::EAGAIN) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(ConsoleError::WriteTimeout {
                            net: self.name.clone(),
                        });
                    }
                    let mut pfd = libc::pollfd {
                        fd: port.fd(),
                        events: libc::POLLOUT,
                        revents: 0,
                    };
                    // SAFETY: one valid pollfd for the duration of the call.
                    unsafe { libc::poll(&mut pfd, 1, left.as_millis().max(1) as i32) };
                }
                Some(libc::EIO | libc::ENODEV | libc::ENXIO) => {
                    return Err(ConsoleError::NotOpen {
                        net: self.name.clone(),
                        why: "unplugged".into(),
                    })
                }
                _ => {
                    return Err(ConsoleError::Port {
                        net: self.name.clone(),
                        error,
                    })
                }
            }
        }
        Ok(sent)
    }
}

/// The writer claim of one stream; dropping it (the stream ended: its
/// client left or was cut off) frees the console for the next writer.
pub struct Claim {
    console: Arc<Console>,
    session: String,
}

impl Claim {
    pub fn session(&self) -> &str {
        &self.session
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut slot = lock(&self.console.writer);
        if slot.as_ref().is_some_and(|w| w.session == self.session) {
            info!(
                "console {}: {} stopped typing",
                self.console.name,
                slot.as_ref().map_or("", |w| w.holder.as_str())
            );
            *slot = None;
        }
    }
}

/// `lager diagnose`'s sections for a console, laid out here so the CLI
/// stays small: `[[title, [[label, value], …]], …]`.
fn sections(facts: &Value, holders: &[Holder]) -> Value {
    let shown = |object: &Value, key: &str| match &object[key] {
        Value::Null => "—".to_string(),
        Value::String(s) if s.is_empty() => "—".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let rows = |object: &Value, keys: &[(&str, &str)]| -> Vec<Value> {
        keys.iter()
            .map(|(label, key)| json!([label, shown(object, key)]))
            .collect()
    };
    let console = rows(
        facts,
        &[
            ("state", "state"),
            ("since", "since"),
            ("reason", "reason"),
            ("port", "port"),
            ("path", "path"),
            ("bytes", "bytes"),
            ("opens", "opens"),
            ("gone", "gone"),
            ("readers", "readers"),
            ("writer", "writer"),
        ],
    );
    let mut port = rows(facts, &[("present", "present"), ("node", "node")]);
    let usb = &facts["usb"];
    if usb.is_object() {
        port.extend(rows(
            usb,
            &[
                ("sysfs", "sysfs_path"),
                ("vid", "vid"),
                ("pid", "pid"),
                ("serial", "serial"),
                ("manufacturer", "manufacturer"),
                ("product", "product"),
                ("interface", "interface"),
                ("number", "interface_number"),
                ("driver", "driver"),
            ],
        ));
    } else {
        port.push(json!([
            "usb",
            "— (not a USB serial adapter, or not present)"
        ]));
    }
    let named: Vec<String> = holders
        .iter()
        .map(|h| format!("{}({}, {})", h.command, h.pid, h.user))
        .collect();
    let named = if named.is_empty() {
        "no other process".to_string()
    } else {
        named.join(", ")
    };
    port.push(json!(["holders", named]));
    json!([["Console (lagerd)", console], ["Port (host-side)", port]])
}

/// The bucket of a console's diagnose facts (`lager diagnose` prints it):
/// its name, whether all is well, and the headline with the next step.
fn classify(facts: &Value, net: &str, holders: &[Holder]) -> (&'static str, bool, String) {
    let field = |key: &str| facts[key].as_str().unwrap_or("—").to_string();
    let path = field("path");
    let named: Vec<String> = holders
        .iter()
        .take(4)
        .map(|h| format!("{}({})", h.command, h.pid))
        .collect();
    let named = if named.is_empty() {
        "another process".to_string()
    } else {
        named.join(", ")
    };
    match facts["state"].as_str().unwrap_or("") {
        "open" if holders.is_empty() => ("capturing", true, format!(
            "CAPTURING — lagerd reads {net} from {path}; watch it with `lager uart {net}`."
        )),
        "open" => ("shared", false, format!(
            "SHARED — {path} is also open in {named}; whatever they read is missing from the console. Stop them."
        )),
        "held" => ("held", false, format!(
            "HELD BY ANOTHER PROCESS — {path} is open in {named}; lagerd does not fight over it. Stop that process and lagerd takes the port within a second."
        )),
        "gone" if facts["present"] == true => ("transient", false, format!(
            "TRANSIENT — {} just appeared; lagerd opens it within a second. Run lager diagnose again.",
            field("node")
        )),
        "gone" => ("not-present", false, format!(
            "NOT PRESENT — nothing matches {} since {}. Check the adapter's USB cable and power; lagerd re-opens it within a second of it appearing.",
            field("port"), field("since")
        )),
        "error" => ("cannot-open", false, format!("CANNOT OPEN — {}", field("reason"))),
        other => ("unclear", false, format!(
            "UNCLEAR — the console is {other}; run lager diagnose again in a moment."
        )),
    }
}

/// 128 random bits as hex: a write must come from the stream that claimed
/// the writer, not from whoever guesses its name.
fn session_id() -> String {
    let mut bytes = [0u8; 16];
    // SAFETY: getrandom fills the buffer it is given, up to its length.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n != bytes.len() as isize {
        // No entropy syscall: time and address still differ per claim.
        let seed = now_us() ^ (&bytes as *const _ as u64);
        bytes[..8].copy_from_slice(&seed.to_le_bytes());
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
