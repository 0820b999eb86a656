//! The HTTP/1.1 transport: listeners, connections, request framing, limits.
//!
//! One poller thread (`poll(2)`) accepts connections and holds every
//! connection that waits for bytes: idle keep-alive clients, half-sent heads
//! and half-sent bodies alike. A bounded pool of worker threads serves the
//! connections that have bytes: it reads what is there, frames it with
//! `framing` (pure functions, fuzzed) and keeps bodies with `body` (one
//! budget, large ones spooled to disk), and when a request is still
//! incomplete it parks the connection again instead of waiting on it. So a
//! worker is held by handlers (lock waits, streams), never by a client's
//! pace. Every request has a total deadline, answered 408 by a worker once
//! the poller sees it pass: the head `head_timeout` from its first byte, the
//! body and its trailers `body_timeout` from the end of the head plus one
//! second per `BODY_MIN_RATE` bytes received. Connections are capped (one
//! more is answered 503) and a body over its route's limit is refused with
//! 413 before it is read.
//!
//! Written on std + libc rather than tiny_http: tiny_http 0.12 spawns an
//! unbounded thread per connection, sets no read timeout on accepted sockets
//! (a silent client pins a thread forever) and hides the socket, so neither a
//! connection cap nor the "has the client gone?" probe that queued lock
//! requests and script streams need can be built on it.

mod body;
pub mod framing;
mod slice;

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use log::{debug, warn};

use body::Receiving;
pub use body::{Budget, RequestBody};
use framing::{Bad, BodyDecoder, Framing, Head};

/// Tunables; `Limits::default()` is what `lagerd` runs with (plus the
/// spool dir, which `config` sets to the state dir).
#[derive(Clone, Debug)]
pub struct Limits {
    /// Open connections beyond this are answered 503 and closed.
    pub max_connections: usize,
    /// Threads serving requests at once; further ready connections wait.
    pub max_workers: usize,
    /// The request line and headers must arrive within this of their first byte.
    pub head_timeout: Duration,
    /// A body and its trailers must arrive within this of the end of the
    /// head, plus a second per `BODY_MIN_RATE` bytes received.
    pub body_timeout: Duration,
    /// Longest a reply write may block on a client that does not read.
    pub write_timeout: Duration,
    /// A parked keep-alive connection idle this long is closed.
    pub idle_timeout: Duration,
    /// How long a worker waits for more bytes before parking a connection
    /// (after a reply, after a head that announced a body, and while a body
    /// arrives in bulk): saves two thread hand-offs for busy clients.
    pub linger: Duration,
    /// Bytes that request bodies in flight may hold in memory, all together.
    pub body_memory_budget: usize,
    /// Bytes that spooled upload bodies in flight may hold on disk.
    pub body_spool_budget: usize,
    /// Where bodies over 256 KiB are spooled (as unnamed files); `None`
    /// keeps every body in memory, within `body_memory_budget`.
    pub spool_dir: Option<PathBuf>,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: 4096,
            // Lock waiters (≤ 64 queued) and script streams hold a worker
            // for their whole life, so leave plenty for everyone else.
            max_workers: 256,
            head_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(120),
            // Back-to-back keep-alive clients send their next request within
            // microseconds on a LAN; longer only pins a thread per connection.
            linger: Duration::from_millis(2),
            // 128 lock-sized bodies (64 KiB) at once, or 128 small uploads;
            // bigger ones go to disk.
            body_memory_budget: 8 << 20,
            // Four 64 MiB uploads (runner.md §1's limit) at once.
            body_spool_budget: 256 << 20,
            spool_dir: None,
        }
    }
}

/// Workers kept alive while idle; the rest exit after `WORKER_IDLE_EXIT`.
const WORKERS_KEPT: usize = 4;
const WORKER_IDLE_EXIT: Duration = Duration::from_secs(10);
/// Bytes read from a socket at once.
const READ_CHUNK: usize = 16 * 1024;
/// A read at least this large means the client is sending in bulk: a worker
/// lingers for more instead of parking the connection after each read.
const BULK_READ: usize = 4 * 1024;
/// After `body_timeout`, a body must keep arriving at this many bytes per
/// second: a trickle of trailer lines cannot stretch its deadline.
const BODY_MIN_RATE: u64 = 16 * 1024;
/// Refused requests: read and discard at most this much, for at most this
/// long after the refusal, so the client sees our answer instead of a reset.
const DRAIN_MAX: usize = 16 * 1024 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(2);
/// Connections refused over the connection cap that are drained at once
/// (they are not counted as open, so they need a bound of their own).
const OVER_CAP_DRAINING_MAX: usize = 64;
/// A refusal is a few hundred bytes; a client that cannot take them this
/// fast is not waited for.
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

pub struct Request {
    pub method: String,
    /// The path without the query string, as sent.
    pub path: String,
    /// The text after `?`, undecoded.
    pub query: String,
    pub headers: Vec<(String, String)>,
    /// Read as a byte slice (`&request.body`); large bodies are mapped from
    /// an unnamed spool file, small ones live in memory.
    pub body: RequestBody,
    pub peer: SocketAddr,
    /// False for an HTTP/1.0 request line (no chunked replies, close by default).
    pub http11: bool,
}

impl Request {
    /// The first `name=value` of the query string, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key) == name).then(|| percent_decode(value))
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// Produces a streamed body; the `Client` lets it notice a vanished peer
/// while it has nothing to write.
pub type StreamBody = Box<dyn FnOnce(&mut dyn Write, &Client) -> io::Result<()> + Send>;

pub enum Body {
    Full(Vec<u8>),
    /// Written as it is produced (chunked for HTTP/1.1, close-delimited for
    /// HTTP/1.0); the connection closes afterwards.
    Stream(StreamBody),
}

pub struct Response {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Body,
}

/// What the routes behind the transport provide.
pub trait Service: Send + Sync + 'static {
    /// Largest body accepted for a request to `path`.
    fn body_limit(&self, method: &str, path: &str) -> usize;
    fn handle(&self, request: Request, client: &Client) -> Response;
    /// A transport-level refusal (400, 408, 413, 431, 503) in the API's
    /// shape; `path` is known once the request head was parsed.
    fn refusal(&self, status: u16, message: &str, path: Option<&str>) -> Response;
}

/// Whether the peer of one connection is still there. Handlers get it by
/// reference; code that must ask from elsewhere (the monitor registry) may
/// keep a clone: once its connection is closed it answers "gone" for good
/// and never touches the descriptor again, whose number the kernel may by
/// then have given to another connection.
///
/// "Gone" means what the peer's kernel told us, not a guess: a reset or an
/// error on the socket (POLLERR, POLLHUP) or a failed write (EPIPE,
/// ECONNRESET). A FIN alone is not gone: a client may half-close after
/// sending (`shutdown(SHUT_WR)`) and still read its answer. Whether it still
/// reads cannot be seen without writing, so before the response has begun
/// on an HTTP/1.1 request a FIN is probed once with an interim `100
/// Continue` (RFC 9110 §15.2: every HTTP/1.1 client must accept one): a
/// closed socket answers it with a reset within a round trip, a half-closed
/// one takes it and keeps waiting for the real answer. Once a streamed
/// response has begun, the stream's own writes (data or keepalive frames)
/// are the probe.
#[derive(Clone)]
pub struct Client(Arc<Peer>);

struct Peer {
    state: Mutex<PeerState>,
    stopping: Arc<AtomicBool>,
}

struct PeerState {
    socket: Socket,
    /// An interim response may be sent: HTTP/1.1, final response not begun.
    may_probe: bool,
    probed: bool,
    /// The part of a probe the socket did not take; sent before the response.
    unsent: &'static [u8],
}

#[derive(Clone, Copy)]
enum Socket {
    Open(RawFd),
    Closed,
    /// No socket at all (a `Service` driven in-process): never gone.
    Detached,
}

const PROBE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
/// How long a probe waits for the reset of a closed peer (a LAN round trip
/// is well under a millisecond).
const PROBE_VERDICT: Duration = Duration::from_millis(50);

impl Client {
    fn open(fd: RawFd, stopping: Arc<AtomicBool>) -> Client {
        Client(Arc::new(Peer {
            state: Mutex::new(PeerState {
                socket: Socket::Open(fd),
                may_probe: false,
                probed: false,
                unsent: &[],
            }),
            stopping,
        }))
    }

    /// A client without a socket, which never leaves: for driving a
    /// `Service` in-process (tests, fuzz targets).
    pub fn detached() -> Client {
        let client = Client::open(-1, Arc::new(AtomicBool::new(false)));
        client.state().socket = Socket::Detached;
        client
    }

    /// A client whose peer has already left, for driving a `Service` in
    /// process (the `router` fuzz target): a queued request gives up at
    /// once and a stream ends after its first write, as for a real client
    /// that disconnected.
    pub fn gone_already() -> Client {
        let client = Client::open(-1, Arc::new(AtomicBool::new(false)));
        client.state().socket = Socket::Closed;
        client
    }

    fn state(&self) -> MutexGuard<'_, PeerState> {
        self.0.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// True once the peer reset or closed the connection (see the type's
    /// doc for what can be known), or the daemon is stopping. Pipelined
    /// bytes waiting to be read do not count as gone.
    pub fn gone(&self) -> bool {
        if self.0.stopping.load(Ordering::SeqCst) {
            return true;
        }
        // The lock is held throughout, so `close` cannot slip in between
        // reading the descriptor and using it.
        let mut state = self.state();
        let fd = match state.socket {
            Socket::Open(fd) => fd,
            Socket::Closed => return true,
            Socket::Detached => return false,
        };
        let events = poll_now(fd);
        if events & (libc::POLLHUP | libc::POLLERR) != 0 {
            return true;
        }
        if events & libc::POLLRDHUP == 0 || !state.may_probe || state.probed {
            return false;
        }
        state.probed = true;
        // SAFETY: `fd` is open (the state says so under its lock, and the
        // connection closes it only after `close` took that lock); PROBE is
        // a valid buffer of PROBE.len() bytes. MSG_NOSIGNAL: a closed peer
        // is an EPIPE here, not a SIGPIPE.
        let sent = unsafe {
            libc::send(
                fd,
                PROBE.as_ptr().cast(),
                PROBE.len(),
                libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
            )
        };
        let Ok(sent) = usize::try_from(sent) else {
            let e = io::Error::last_os_error();
            return !matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            );
        };
        state.unsent = &PROBE[sent..];
        let verdict_by = Instant::now() + PROBE_VERDICT;
        while Instant::now() < verdict_by {
            thread::sleep(Duration::from_millis(5));
            if poll_now(fd) & (libc::POLLHUP | libc::POLLERR) != 0 {
                return true;
            }
        }
        false
    }

    /// A request is about to be handled.
    fn start_exchange(&self, http11: bool) {
        let mut state = self.state();
        state.may_probe = http11;
        state.probed = false;
        state.unsent = &[];
    }

    /// The response is about to be written: no probe may start from now
    /// on; returns what an earlier probe left unsent, to go first.
    fn begin_response(&self) -> &'static [u8] {
        let mut state = self.state();
        state.may_probe = false;
        std::mem::take(&mut state.unsent)
    }

    /// The connection is closing: every clone answers "gone" from now on.
    fn close(&self) {
        self.state().socket = Socket::Closed;
    }
}

/// `poll(2)` revents of `fd` right now (0 when nothing is pending).
fn poll_now(fd: RawFd) -> libc::c_short {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN | libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: one valid pollfd, count 1, no wait.
    if unsafe { libc::poll(&mut pfd, 1, 0) } <= 0 {
        return 0;
    }
    pfd.revents
}

struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    /// Bytes read but not yet consumed (pipelined requests).
    buf: Vec<u8>,
    phase: Phase,
    parked_at: Instant,
    client: Client,
    /// Counts open connections; `None` for one refused over the cap.
    counted: Option<Arc<AtomicUsize>>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        // Before the descriptor closes (fields drop after this).
        self.client.close();
        if let Some(open) = &self.counted {
            open.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Where a connection is in its current request.
enum Phase {
    /// Between requests.
    Idle,
    /// Part of a head has arrived.
    Head { started: Instant },
    /// The head is parsed; the body is arriving.
    Body(Box<Pending>),
}

struct Pending {
    head: Head,
    decoder: BodyDecoder,
    body: Receiving,
    started: Instant,
    /// Bytes read since the head ended (framing included).
    received: u64,
}

impl Conn {
    /// When the connection's wait ends: closed if idle, else 408.
    fn deadline(&self, limits: &Limits) -> Instant {
        match &self.phase {
            Phase::Idle => self.parked_at + limits.idle_timeout,
            Phase::Head { started } => *started + limits.head_timeout,
            Phase::Body(pending) => {
                let allowance = Duration::from_secs(pending.received / BODY_MIN_RATE);
                pending.started + limits.body_timeout + allowance
            }
        }
    }
}

#[derive(Default)]
struct Pool {
    ready: VecDeque<Conn>,
    idle: usize,
    total: usize,
}

/// What a worker hands back to the poller.
enum Returned {
    /// Waiting for bytes (or its deadline).
    Park(Conn),
    /// Refused and answered: read and drop what it still sends, briefly.
    Drain(Conn),
}

struct Shared {
    service: Arc<dyn Service>,
    limits: Limits,
    budget: Arc<Budget>,
    stopping: Arc<AtomicBool>,
    /// Set with `stopping`: requests in flight may finish until then.
    stop_by: Mutex<Option<Instant>>,
    open: Arc<AtomicUsize>,
    pool: Mutex<Pool>,
    pool_changed: Condvar,
    /// Connections handed back by workers, collected by the poller.
    returned: Mutex<Vec<Returned>>,
    wake_write: OwnedFd,
}

pub struct Server {
    shared: Arc<Shared>,
    poller: Option<thread::JoinHandle<()>>,
}

impl Server {
    /// Starts serving on already-bound listeners.
    pub fn start(
        listeners: Vec<TcpListener>,
        service: Arc<dyn Service>,
        limits: Limits,
    ) -> io::Result<Server> {
        let (wake_read, wake_write) = pipe()?;
        for listener in &listeners {
            listener.set_nonblocking(true)?;
        }
        let budget = Arc::new(Budget::new(
            limits.body_memory_budget,
            limits.body_spool_budget,
            limits.spool_dir.clone(),
        ));
        let shared = Arc::new(Shared {
            service,
            limits,
            budget,
            stopping: Arc::new(AtomicBool::new(false)),
            stop_by: Mutex::new(None),
            open: Arc::new(AtomicUsize::new(0)),
            pool: Mutex::new(Pool::default()),
            pool_changed: Condvar::new(),
            returned: Mutex::new(Vec::new()),
            wake_write,
        });
        let poller_shared = shared.clone();
        let poller = thread::Builder::new()
            .name("http-poller".into())
            .spawn(move || {
                slice::request_short();
                Poller::new(poller_shared, listeners, wake_read).run()
            })?;
        Ok(Server {
            shared,
            poller: Some(poller),
        })
    }

    /// The count of open connections (`lagerd_http_connections`).
    pub fn connections(&self) -> Arc<AtomicUsize> {
        self.shared.open.clone()
    }

    /// Stops accepting, closes idle connections, lets requests in flight
    /// finish (up to `grace`), then returns. A request in flight is one a
    /// worker serves, or one whose head or body is still arriving.
    pub fn stop(mut self, grace: Duration) {
        *self
            .shared
            .stop_by
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now() + grace);
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.shared.pool_changed.notify_all();
        self.shared.wake();
        if let Some(poller) = self.poller.take() {
            let _ = poller.join();
        }
        if !self.shared.workers_idle() {
            warn!("stopping with requests still in flight after {grace:?}");
        }
    }
}

/// How a worker's turn on a connection ends, or goes on.
enum Next {
    Request(Request),
    /// More bytes are needed and none are here: park the connection.
    Wait,
    /// The client left, or the connection is unusable: just close.
    Closed,
    /// Answer with this, then drain and close.
    Refuse(Refusal),
}

/// Why `frame` stopped short of a request.
enum Stop {
    Closed,
    Refuse(Refusal),
}

struct Refusal {
    status: u16,
    message: String,
    /// The request's path, once its head was parsed.
    path: Option<String>,
}

impl Refusal {
    fn new(status: u16, message: impl Into<String>, path: Option<&str>) -> Refusal {
        Refusal {
            status,
            message: message.into(),
            path: path.map(str::to_string),
        }
    }

    fn bad(bad: Bad, path: Option<&str>) -> Refusal {
        let message = if bad.status == 400 {
            format!("Bad request: {}", bad.why)
        } else {
            bad.why.to_string()
        };
        Refusal::new(bad.status, message, path)
    }
}

impl Shared {
    fn lock_pool(&self) -> MutexGuard<'_, Pool> {
        self.pool.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn workers_idle(&self) -> bool {
        let pool = self.lock_pool();
        pool.total == pool.idle && pool.ready.is_empty()
    }

    fn wake(&self) {
        let byte = 1u8;
        // SAFETY: writes one byte from a live local to a pipe we own; a full
        // pipe (EAGAIN) already means the poller will wake.
        unsafe { libc::write(self.wake_write.as_raw_fd(), (&byte as *const u8).cast(), 1) };
    }

    /// Queues a ready connection for a worker, starting one if none is free.
    fn dispatch(self: &Arc<Self>, conn: Conn) {
        let mut pool = self.lock_pool();
        pool.ready.push_back(conn);
        if pool.ready.len() > pool.idle && pool.total < self.limits.max_workers {
            pool.total += 1;
            let shared = self.clone();
            let spawned = thread::Builder::new()
                .name("http-worker".into())
                .stack_size(512 * 1024)
                .spawn(move || shared.work());
            if let Err(e) = spawned {
                pool.total -= 1;
                warn!("cannot start a worker thread: {e}");
            }
        }
        self.pool_changed.notify_one();
    }

    fn work(self: Arc<Self>) {
        loop {
            let conn = {
                let mut pool = self.lock_pool();
                loop {
                    if let Some(conn) = pool.ready.pop_front() {
                        break conn;
                    }
                    if self.stopping.load(Ordering::SeqCst) {
                        pool.total -= 1;
                        return;
                    }
                    pool.idle += 1;
                    let (guard, waited) = self
                        .pool_changed
                        .wait_timeout(pool, WORKER_IDLE_EXIT)
                        .unwrap_or_else(PoisonError::into_inner);
                    pool = guard;
                    pool.idle -= 1;
                    if waited.timed_out() && pool.ready.is_empty() && pool.total > WORKERS_KEPT {
                        pool.total -= 1;
                        return;
                    }
                }
            };
            self.serve(conn);
            if self.stopping.load(Ordering::SeqCst) {
                // The poller waits for the last request in flight.
                self.wake();
            }
        }
    }

    /// Serves requests on `conn` until it closes, waits for bytes (then it
    /// is parked), or a response ends it.
    fn serve(&self, mut conn: Conn) {
        let mut linger = Duration::ZERO;
        loop {
            let request = match self.advance(&mut conn, linger) {
                Next::Request(request) => request,
                Next::Wait => return self.hand_back(Returned::Park(conn)),
                Next::Closed => return,
                Next::Refuse(refusal) => return self.refuse(conn, refusal),
            };
            let keep_alive = wants_keep_alive(&request) && !self.stopping.load(Ordering::SeqCst);
            let head_only = request.method == "HEAD";
            let http11 = request.http11;
            conn.client.start_exchange(http11);
            let response = self.service.handle(request, &conn.client);
            let keep_alive = keep_alive && !matches!(response.body, Body::Stream(_));
            let framing = Reply {
                keep_alive,
                head_only,
                http11,
            };
            let probe_rest = conn.client.begin_response();
            if let Err(e) = write_response(
                &mut conn.stream,
                probe_rest,
                response,
                framing,
                Some(&conn.client),
            ) {
                debug!("reply to {} not delivered: {e}", conn.peer);
                return;
            }
            if !keep_alive {
                let _ = conn.stream.shutdown(Shutdown::Write);
                return;
            }
            let busy = !self.lock_pool().ready.is_empty();
            linger = if busy {
                Duration::ZERO
            } else {
                self.limits.linger
            };
        }
    }

    /// Reads and frames until a request is complete, more bytes are needed
    /// and none came within `linger`, or the request must be refused.
    fn advance(&self, conn: &mut Conn, mut linger: Duration) -> Next {
        loop {
            match self.frame(conn) {
                Ok(Some(request)) => return Next::Request(request),
                Ok(None) => {}
                Err(Stop::Closed) => return Next::Closed,
                Err(Stop::Refuse(refusal)) => return Next::Refuse(refusal),
            }
            // A head that announced a body: the body follows at once.
            if matches!(&conn.phase, Phase::Body(p) if p.received == 0) {
                linger = linger.max(self.limits.linger);
            }
            if Instant::now() >= conn.deadline(&self.limits) {
                return match &conn.phase {
                    Phase::Idle => Next::Closed,
                    Phase::Head { .. } => Next::Refuse(Refusal::new(
                        408,
                        "Request headers not received in time",
                        None,
                    )),
                    Phase::Body(pending) => Next::Refuse(Refusal::new(
                        408,
                        "Request body not received in time",
                        Some(&pending.head.path),
                    )),
                };
            }
            if !poll_readable(conn.stream.as_raw_fd(), linger) {
                return Next::Wait;
            }
            match fill(conn) {
                Ok(0) => {
                    if !matches!(conn.phase, Phase::Idle) {
                        debug!("{} closed the connection mid-request", conn.peer);
                    }
                    return Next::Closed;
                }
                Ok(read) => {
                    linger = if read >= BULK_READ {
                        self.limits.linger
                    } else {
                        Duration::ZERO
                    };
                    if let Phase::Body(pending) = &mut conn.phase {
                        pending.received += read as u64;
                    }
                }
                Err(e) => {
                    debug!("connection from {} dropped: {e}", conn.peer);
                    return Next::Closed;
                }
            }
        }
    }

    /// Frames what `conn.buf` holds: a whole request, or `None` when more
    /// bytes are needed.
    fn frame(&self, conn: &mut Conn) -> Result<Option<Request>, Stop> {
        loop {
            match &mut conn.phase {
                Phase::Idle => {
                    // RFC 9112 §2.2: empty lines before a request line are
                    // ignored (old clients send a CRLF after a POST body).
                    let blank = conn
                        .buf
                        .chunks(2)
                        .take_while(|pair| *pair == b"\r\n")
                        .count();
                    conn.buf.drain(..blank * 2);
                    if conn.buf.is_empty() {
                        return Ok(None);
                    }
                    // Issue 12: bytes of a pipelined request left after the
                    // previous one start its head's clock now.
                    conn.phase = Phase::Head {
                        started: Instant::now(),
                    };
                }
                Phase::Head { .. } => {
                    let parsed = framing::parse_head(&conn.buf)
                        .map_err(|bad| Stop::Refuse(Refusal::bad(bad, None)))?;
                    let Some((head, end)) = parsed else {
                        return Ok(None);
                    };
                    conn.buf.drain(..end);
                    let limit = self.service.body_limit(&head.method, &head.path) as u64;
                    let decoder = BodyDecoder::new(head.framing, limit)
                        .map_err(|bad| Stop::Refuse(Refusal::bad(bad, Some(&head.path))))?;
                    if decoder.is_done() {
                        conn.phase = Phase::Idle;
                        return Ok(Some(request(head, RequestBody::default(), conn.peer)));
                    }
                    let length = match head.framing {
                        Framing::Length(length) => Some(length),
                        _ => None,
                    };
                    let body = Receiving::start(&self.budget, length).map_err(|e| {
                        Stop::Refuse(Refusal::new(503, e.to_string(), Some(&head.path)))
                    })?;
                    if head.expects_continue {
                        if let Err(e) = conn.stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n") {
                            debug!("connection from {} dropped: {e}", conn.peer);
                            return Err(Stop::Closed);
                        }
                    }
                    conn.phase = Phase::Body(Box::new(Pending {
                        head,
                        decoder,
                        body,
                        started: Instant::now(),
                        received: conn.buf.len() as u64,
                    }));
                }
                Phase::Body(pending) => {
                    let mut used = 0;
                    while !pending.decoder.is_done() {
                        let path = Some(pending.head.path.as_str());
                        let step = pending
                            .decoder
                            .step(&conn.buf[used..])
                            .map_err(|bad| Stop::Refuse(Refusal::bad(bad, path)))?;
                        if step.consumed == 0 {
                            break;
                        }
                        let data = &conn.buf[used..][step.data];
                        if !data.is_empty() {
                            pending.body.append(data).map_err(|e| {
                                Stop::Refuse(Refusal::new(503, e.to_string(), path))
                            })?;
                        }
                        used += step.consumed;
                    }
                    conn.buf.drain(..used);
                    if !pending.decoder.is_done() {
                        return Ok(None);
                    }
                    let Phase::Body(pending) = std::mem::replace(&mut conn.phase, Phase::Idle)
                    else {
                        unreachable!("matched Phase::Body above");
                    };
                    let Pending { head, body, .. } = *pending;
                    let body = body.finish().map_err(|e| {
                        Stop::Refuse(Refusal::new(503, e.to_string(), Some(&head.path)))
                    })?;
                    return Ok(Some(request(head, body, conn.peer)));
                }
            }
        }
    }

    /// Sends a refusal, then hands the connection to the poller, which
    /// drains it briefly so the client reads the answer.
    fn refuse(&self, mut conn: Conn, refusal: Refusal) {
        let Refusal {
            status,
            message,
            path,
        } = refusal;
        debug!("refusing a request from {}: {status} {message}", conn.peer);
        let mut response = self.service.refusal(status, &message, path.as_deref());
        response.headers.push(("Connection", "close".into()));
        if status == 503 {
            response.headers.push(("Retry-After", "1".into()));
        }
        let _ = conn.stream.set_write_timeout(Some(REFUSAL_WRITE_TIMEOUT));
        let probe_rest = conn.client.begin_response();
        let sent = write_response(&mut conn.stream, probe_rest, response, Reply::CLOSING, None);
        if sent.is_ok() && conn.stream.shutdown(Shutdown::Write).is_ok() {
            self.hand_back(Returned::Drain(conn));
        }
    }

    /// Hands a connection back to the poller.
    fn hand_back(&self, returned: Returned) {
        let returned = match returned {
            Returned::Park(mut conn) => {
                conn.parked_at = Instant::now();
                // An idle connection keeps no buffer.
                if conn.buf.is_empty() {
                    conn.buf = Vec::new();
                }
                Returned::Park(conn)
            }
            drain => drain,
        };
        self.returned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(returned);
        self.wake();
    }
}

fn request(head: Head, body: RequestBody, peer: SocketAddr) -> Request {
    Request {
        method: head.method,
        path: head.path,
        query: head.query,
        headers: head.headers,
        body,
        peer,
        http11: head.http11,
    }
}

/// A refused connection being drained.
struct Drain {
    conn: Conn,
    /// Absolute: reading does not extend it (issue 12).
    until: Instant,
    left: usize,
}

/// The one thread that accepts connections and watches waiting ones.
struct Poller {
    shared: Arc<Shared>,
    listeners: Vec<TcpListener>,
    wake_read: OwnedFd,
    parked: Vec<Conn>,
    /// Refused connections being drained briefly so they read our answer.
    draining: Vec<Drain>,
}

impl Poller {
    fn new(shared: Arc<Shared>, listeners: Vec<TcpListener>, wake_read: OwnedFd) -> Poller {
        Poller {
            shared,
            listeners,
            wake_read,
            parked: Vec::new(),
            draining: Vec::new(),
        }
    }

    fn run(mut self) {
        let mut fds: Vec<libc::pollfd> = Vec::new();
        while !self.stopped() {
            let watch = |fd: RawFd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            fds.clear();
            fds.push(watch(self.wake_read.as_raw_fd()));
            fds.extend(self.listeners.iter().map(|l| watch(l.as_raw_fd())));
            fds.extend(self.parked.iter().map(|c| watch(c.stream.as_raw_fd())));
            fds.extend(
                self.draining
                    .iter()
                    .map(|d| watch(d.conn.stream.as_raw_fd())),
            );
            let timeout_ms = self.next_deadline_ms();
            // SAFETY: `fds` is a live, initialised array of `fds.len()`
            // pollfds, untouched by anyone else during the call.
            let ready =
                unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
            if ready < 0 {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    warn!("poll failed: {e}");
                    thread::sleep(Duration::from_millis(10));
                }
                continue;
            }
            let listeners_end = 1 + self.listeners.len();
            let parked_end = listeners_end + self.parked.len();
            // Drain first, from the back, so indices of earlier ranges hold.
            for index in (parked_end..fds.len()).rev() {
                if fds[index].revents != 0 {
                    let drain = &mut self.draining[index - parked_end];
                    if !discard_available(drain) {
                        self.draining.swap_remove(index - parked_end);
                    }
                }
            }
            for index in (listeners_end..parked_end).rev() {
                if fds[index].revents != 0 {
                    let conn = self.parked.swap_remove(index - listeners_end);
                    self.shared.dispatch(conn);
                }
            }
            for (index, pfd) in fds[1..listeners_end].iter().enumerate() {
                if pfd.revents != 0 {
                    self.accept_all(index);
                }
            }
            if fds[0].revents != 0 {
                let mut sink = [0u8; 64];
                // SAFETY: reads into a live local buffer of its own length
                // from our non-blocking pipe.
                while unsafe {
                    libc::read(
                        self.wake_read.as_raw_fd(),
                        sink.as_mut_ptr().cast(),
                        sink.len(),
                    )
                } > 0
                {}
            }
            let returned = std::mem::take(
                &mut *self
                    .shared
                    .returned
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner),
            );
            for back in returned {
                match back {
                    Returned::Park(conn) => self.parked.push(conn),
                    Returned::Drain(conn) => self.drain(conn),
                }
            }
            self.expire();
        }
    }

    /// While stopping: closes the listeners and every connection between
    /// requests, and says when nothing is in flight any more (or the grace
    /// is over).
    fn stopped(&mut self) -> bool {
        if !self.shared.stopping.load(Ordering::SeqCst) {
            return false;
        }
        self.listeners.clear();
        self.draining.clear();
        self.parked
            .retain(|conn| !matches!(conn.phase, Phase::Idle));
        let stop_by = *self
            .shared
            .stop_by
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let past_grace = match stop_by {
            Some(by) => Instant::now() >= by,
            None => true,
        };
        let returning = !self
            .shared
            .returned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty();
        past_grace || (self.parked.is_empty() && !returning && self.shared.workers_idle())
    }

    /// Milliseconds until the next deadline of a parked or draining
    /// connection (at most a second), so a 408 goes out on time.
    fn next_deadline_ms(&self) -> i32 {
        let limits = &self.shared.limits;
        let now = Instant::now();
        let soonest = self
            .parked
            .iter()
            .map(|conn| conn.deadline(limits))
            .chain(self.draining.iter().map(|d| d.until))
            .min()
            .map_or(Duration::from_secs(1), |at| {
                at.saturating_duration_since(now)
            });
        // Round up: waking a hair early would only poll again.
        soonest.min(Duration::from_secs(1)).as_millis() as i32 + 1
    }

    fn accept_all(&mut self, index: usize) {
        loop {
            match self.listeners[index].accept() {
                Ok((stream, peer)) => self.admit(stream, peer),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and friends: the listener stays readable, so
                    // back off instead of spinning.
                    warn!("accept failed: {e}");
                    thread::sleep(Duration::from_millis(20));
                    return;
                }
            }
        }
    }

    fn admit(&mut self, stream: TcpStream, peer: SocketAddr) {
        let limits = &self.shared.limits;
        let configured = stream.set_nonblocking(false).and_then(|()| {
            stream.set_nodelay(true)?;
            // Workers read only what poll says is there; this is a backstop.
            stream.set_read_timeout(Some(limits.head_timeout))?;
            stream.set_write_timeout(Some(limits.write_timeout))
        });
        if let Err(e) = configured {
            debug!("dropping connection from {peer}: {e}");
            return;
        }
        let client = Client::open(stream.as_raw_fd(), self.shared.stopping.clone());
        let mut conn = Conn {
            stream,
            peer,
            buf: Vec::new(),
            phase: Phase::Idle,
            parked_at: Instant::now(),
            client,
            counted: None,
        };
        let open = self.shared.open.fetch_add(1, Ordering::SeqCst) + 1;
        if open > limits.max_connections {
            self.shared.open.fetch_sub(1, Ordering::SeqCst);
            self.refuse_over_cap(conn);
            return;
        }
        conn.counted = Some(self.shared.open.clone());
        // A connection that has not sent anything yet costs no thread.
        if poll_readable(conn.stream.as_raw_fd(), Duration::ZERO) {
            self.shared.dispatch(conn);
        } else {
            self.parked.push(conn);
        }
    }

    /// Over the connection cap: a clear 503, then a short drain so the
    /// client reads it rather than a reset.
    fn refuse_over_cap(&mut self, mut conn: Conn) {
        let limit = self.shared.limits.max_connections;
        warn!(
            "refusing connection from {}: {limit} connections already open",
            conn.peer
        );
        let message =
            format!("Too many open connections to this box (limit {limit}); retry shortly");
        let mut response = self.shared.service.refusal(503, &message, None);
        response.headers.push(("Connection", "close".into()));
        response.headers.push(("Retry-After", "1".into()));
        let _ = conn
            .stream
            .set_write_timeout(Some(Duration::from_millis(100)));
        if write_response(&mut conn.stream, &[], response, Reply::CLOSING, None).is_ok()
            && conn.stream.shutdown(Shutdown::Write).is_ok()
        {
            let over_cap = self.draining.iter().filter(|d| d.conn.counted.is_none());
            if over_cap.count() < OVER_CAP_DRAINING_MAX {
                self.drain(conn);
            }
        }
    }

    fn drain(&mut self, conn: Conn) {
        if conn.stream.set_nonblocking(true).is_ok() {
            self.draining.push(Drain {
                conn,
                until: Instant::now() + DRAIN_TIME,
                left: DRAIN_MAX,
            });
        }
    }

    /// Closes long-idle connections and drains past their time; sends
    /// overdue requests to a worker, which answers 408.
    fn expire(&mut self) {
        let limits = &self.shared.limits;
        let now = Instant::now();
        let (mut overdue, mut kept) = (Vec::new(), Vec::new());
        for conn in self.parked.drain(..) {
            if now < conn.deadline(limits) {
                kept.push(conn);
            } else if !matches!(conn.phase, Phase::Idle) {
                overdue.push(conn);
            }
        }
        self.parked = kept;
        for conn in overdue {
            self.shared.dispatch(conn);
        }
        self.draining.retain(|d| now < d.until);
    }
}

/// Appends what the socket has (up to `READ_CHUNK`). Reads into the stack
/// and copies only what arrived: growing the buffer first zeroed the whole
/// chunk per read for requests of a few hundred bytes.
fn fill(conn: &mut Conn) -> io::Result<usize> {
    let mut chunk = [0u8; READ_CHUNK];
    loop {
        match conn.stream.read(&mut chunk) {
            Ok(n) => {
                conn.buf.extend_from_slice(&chunk[..n]);
                return Ok(n);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Reads what a refused connection sent; false once it is done (closed,
/// failed, or over its allowance).
fn discard_available(drain: &mut Drain) -> bool {
    let mut sink = [0u8; READ_CHUNK];
    match drain.conn.stream.read(&mut sink) {
        Ok(n) if n > 0 && n < drain.left => {
            drain.left -= n;
            true
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => true,
        _ => false,
    }
}

fn poll_readable(fd: RawFd, wait: Duration) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let millis = wait.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: one valid pollfd, count 1.
    unsafe { libc::poll(&mut pfd, 1, millis) > 0 }
}

fn wants_keep_alive(request: &Request) -> bool {
    let connection = request.header("connection").map(str::to_ascii_lowercase);
    match connection.as_deref() {
        Some(value) if value.split(',').any(|t| t.trim() == "close") => false,
        Some(value) if value.split(',').any(|t| t.trim() == "keep-alive") => true,
        _ => request.http11,
    }
}

/// How a response is framed for the request it answers.
#[derive(Clone, Copy)]
struct Reply {
    keep_alive: bool,
    head_only: bool,
    /// False for an HTTP/1.0 peer, which cannot parse chunked bodies.
    http11: bool,
}

impl Reply {
    /// A refusal: full body, then the connection closes.
    const CLOSING: Reply = Reply {
        keep_alive: false,
        head_only: false,
        http11: true,
    };
}

/// Writes `response`, after `preamble` (the rest of an interim response a
/// liveness probe could not send whole).
fn write_response(
    stream: &mut TcpStream,
    preamble: &[u8],
    response: Response,
    reply: Reply,
    client: Option<&Client>,
) -> io::Result<()> {
    let mut head = Vec::with_capacity(256);
    head.extend_from_slice(preamble);
    write!(
        head,
        "HTTP/1.1 {} {}\r\n",
        response.status,
        reason(response.status)
    )?;
    let mut has_connection = false;
    for (name, value) in &response.headers {
        has_connection |= name.eq_ignore_ascii_case("connection");
        write!(head, "{name}: {value}\r\n")?;
    }
    if !has_connection {
        head.extend_from_slice(if reply.keep_alive {
            b"Connection: keep-alive\r\n"
        } else {
            b"Connection: close\r\n"
        });
    }
    match response.body {
        Body::Full(body) => {
            write!(head, "Content-Length: {}\r\n\r\n", body.len())?;
            if !reply.head_only {
                head.extend_from_slice(&body);
            }
            stream.write_all(&head)
        }
        Body::Stream(produce) => {
            if reply.http11 {
                head.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
            }
            head.extend_from_slice(b"\r\n");
            stream.write_all(&head)?;
            let (Some(client), false) = (client, reply.head_only) else {
                return Ok(());
            };
            if reply.http11 {
                let mut chunked = Chunked {
                    stream,
                    frame: Vec::new(),
                };
                produce(&mut chunked, client)?;
                chunked.stream.write_all(b"0\r\n\r\n")
            } else {
                produce(stream, client)
            }
        }
    }
}

/// `Transfer-Encoding: chunked`: each write is one chunk, sent at once,
/// framed in one buffer reused for the whole response.
struct Chunked<'a> {
    stream: &'a mut TcpStream,
    frame: Vec<u8>,
}

impl Write for Chunked<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        self.frame.clear();
        write!(self.frame, "{:x}\r\n", data.len())?;
        self.frame.extend_from_slice(data);
        self.frame.extend_from_slice(b"\r\n");
        self.stream.write_all(&self.frame)?;
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Payload Too Large",
        422 => "Unprocessable Entity",
        423 => "Locked",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(hi), Some(lo)) => {
                    out.push((hi * 16 + lo) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both are fresh descriptors that nothing
    // else owns; each OwnedFd closes its own once.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

#[cfg(test)]
mod tests;
