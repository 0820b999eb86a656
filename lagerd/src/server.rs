//! The HTTP/1.1 transport: listeners, connections, request framing, limits.
//!
//! A thread serves a connection while it is active; a connection that goes
//! quiet after a response is parked in one poller thread (`poll(2)`), so idle
//! keep-alive clients hold no thread. Worker threads are bounded, connections
//! are capped (one more is answered 503), every read has a timeout, and a
//! body over the route's limit is refused with 413 before it is read.
//!
//! Written on std + libc rather than tiny_http: tiny_http 0.12 spawns an
//! unbounded thread per connection, sets no read timeout on accepted sockets
//! (a silent client pins a thread forever) and hides the socket, so neither a
//! connection cap nor the "has the client gone?" probe that queued lock
//! requests and script streams need can be built on it.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use log::{debug, warn};

/// Tunables; `Limits::default()` is what `lagerd` runs with.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Open connections beyond this are answered 503 and closed.
    pub max_connections: usize,
    /// Threads serving requests at once; further ready connections wait.
    pub max_workers: usize,
    /// The request line and headers must arrive within this.
    pub head_timeout: Duration,
    /// Longest silence while a body is being received.
    pub read_timeout: Duration,
    /// Longest a reply write may block on a client that does not read.
    pub write_timeout: Duration,
    /// A parked keep-alive connection idle this long is closed.
    pub idle_timeout: Duration,
    /// How long a worker waits for the next request on its connection
    /// before parking it (saves two thread hand-offs for busy clients).
    pub linger: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: 4096,
            // Lock waiters (≤ 64 queued) and script streams hold a worker
            // for their whole life, so leave plenty for everyone else.
            max_workers: 256,
            head_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(120),
            // Back-to-back keep-alive clients send their next request within
            // microseconds on a LAN; longer only pins a thread per connection.
            linger: Duration::from_millis(2),
        }
    }
}

/// Largest request line plus headers.
const HEAD_MAX: usize = 16 * 1024;
/// At most this many headers.
const HEADERS_MAX: usize = 100;
/// Workers kept alive while idle; the rest exit after `WORKER_IDLE_EXIT`.
const WORKERS_KEPT: usize = 4;
const WORKER_IDLE_EXIT: Duration = Duration::from_secs(10);
/// 8 KiB of read buffer per active connection.
const READ_CHUNK: usize = 8 * 1024;
/// Bodies this large (uploads) take over the buffer instead of a copy.
const LARGE_BODY: usize = 256 * 1024;
/// Refused or oversized requests: read and discard at most this much
/// so the client sees our answer instead of a connection reset.
const DRAIN_MAX: usize = 16 * 1024 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(2);

pub struct Request {
    pub method: String,
    /// The path without the query string, as sent.
    pub path: String,
    /// The text after `?`, undecoded.
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
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

/// Lets a long-running handler ask whether its client is still there.
/// A clone is only meaningful while the handler that got it runs: the
/// descriptor is closed (and may be reused) once the handler returns.
#[derive(Clone)]
pub struct Client {
    fd: RawFd,
    stopping: Arc<AtomicBool>,
}

impl Client {
    /// A client whose peer has already left, for driving a `Service` in
    /// process (the `router` fuzz target): a queued request gives up at
    /// once and a stream ends after its first write, as for a real client
    /// that disconnected.
    pub fn gone_already() -> Client {
        Client {
            fd: -1,
            stopping: Arc::new(AtomicBool::new(true)),
        }
    }

    /// True once the peer closed or reset the connection (or the daemon is
    /// stopping). Pipelined bytes waiting to be read do not count as gone.
    pub fn gone(&self) -> bool {
        if self.stopping.load(Ordering::SeqCst) {
            return true;
        }
        let mut pfd = libc::pollfd {
            fd: self.fd,
            events: libc::POLLIN | libc::POLLRDHUP,
            revents: 0,
        };
        if unsafe { libc::poll(&mut pfd, 1, 0) } <= 0 {
            return false;
        }
        if pfd.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLRDHUP) != 0 {
            return true;
        }
        let mut byte = 0u8;
        let peeked = unsafe {
            libc::recv(
                self.fd,
                (&mut byte as *mut u8).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        peeked == 0
    }
}

struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    /// Bytes read but not yet consumed (pipelined requests).
    buf: Vec<u8>,
    parked_at: Instant,
    /// When the first byte of a still-incomplete request head arrived.
    head_started: Option<Instant>,
    /// Counts open connections; decremented when this one is dropped.
    open: Arc<AtomicUsize>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::SeqCst);
    }
}

#[derive(Default)]
struct Pool {
    ready: VecDeque<Conn>,
    idle: usize,
    total: usize,
}

struct Shared {
    service: Arc<dyn Service>,
    limits: Limits,
    stopping: Arc<AtomicBool>,
    open: Arc<AtomicUsize>,
    pool: Mutex<Pool>,
    pool_changed: Condvar,
    /// Connections handed back by workers, collected by the poller.
    returned: Mutex<Vec<Conn>>,
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
        let shared = Arc::new(Shared {
            service,
            limits,
            stopping: Arc::new(AtomicBool::new(false)),
            open: Arc::new(AtomicUsize::new(0)),
            pool: Mutex::new(Pool::default()),
            pool_changed: Condvar::new(),
            returned: Mutex::new(Vec::new()),
            wake_write,
        });
        let poller_shared = shared.clone();
        let poller = thread::Builder::new()
            .name("http-poller".into())
            .spawn(move || Poller::new(poller_shared, listeners, wake_read).run())?;
        Ok(Server {
            shared,
            poller: Some(poller),
        })
    }

    /// Stops accepting, closes idle connections, lets requests in flight
    /// finish (up to `grace`), then returns.
    pub fn stop(mut self, grace: Duration) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.shared.wake();
        if let Some(poller) = self.poller.take() {
            let _ = poller.join();
        }
        self.shared.pool_changed.notify_all();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            let pool = self.shared.lock_pool();
            if pool.total == pool.idle && pool.ready.is_empty() {
                return;
            }
            drop(pool);
            thread::sleep(Duration::from_millis(10));
        }
        warn!("stopping with requests still in flight after {grace:?}");
    }
}

impl Shared {
    fn lock_pool(&self) -> MutexGuard<'_, Pool> {
        self.pool.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wake(&self) {
        let byte = 1u8;
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
        }
    }

    /// Serves requests on `conn` until it closes, goes quiet (then it is
    /// parked), or a response ends it.
    fn serve(&self, mut conn: Conn) {
        let client = Client {
            fd: conn.stream.as_raw_fd(),
            stopping: self.stopping.clone(),
        };
        loop {
            let request = match read_request(&mut conn, &self.limits, self.service.as_ref()) {
                Ok(Some(request)) => request,
                Ok(None) => return,
                Err(Refusal::Status(status, message)) => {
                    self.refuse(conn, self.service.refusal(status, &message, None));
                    return;
                }
                Err(Refusal::TooLarge(path)) => {
                    let response = self
                        .service
                        .refusal(413, "Request body too large", Some(&path));
                    self.refuse(conn, response);
                    return;
                }
                Err(Refusal::Io(e)) => {
                    debug!("connection from {} dropped: {e}", conn.peer);
                    return;
                }
                Err(Refusal::NotReady) => {
                    self.park(conn);
                    return;
                }
            };
            let keep_alive = wants_keep_alive(&request) && !self.stopping.load(Ordering::SeqCst);
            let head_only = request.method == "HEAD";
            let http11 = request.http11;
            let response = self.service.handle(request, &client);
            let keep_alive = keep_alive && !matches!(response.body, Body::Stream(_));
            let framing = Reply {
                keep_alive,
                head_only,
                http11,
            };
            if let Err(e) = write_response(&mut conn.stream, response, framing, Some(&client)) {
                debug!("reply to {} not delivered: {e}", conn.peer);
                return;
            }
            if !keep_alive {
                let _ = conn.stream.shutdown(Shutdown::Write);
                return;
            }
            if !conn.buf.is_empty() {
                continue;
            }
            let busy = !self.lock_pool().ready.is_empty();
            let linger = if busy {
                Duration::ZERO
            } else {
                self.limits.linger
            };
            if !poll_readable(conn.stream.as_raw_fd(), linger) {
                self.park(conn);
                return;
            }
        }
    }

    /// Sends a refusal, then drains briefly so the client reads it.
    fn refuse(&self, mut conn: Conn, mut response: Response) {
        response.headers.push(("Connection", "close".into()));
        let _ = write_response(&mut conn.stream, response, Reply::CLOSING, None);
        drain_and_close(&mut conn);
    }

    /// Hands a quiet connection back to the poller.
    fn park(&self, mut conn: Conn) {
        conn.parked_at = Instant::now();
        self.returned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(conn);
        self.wake();
    }
}

/// The one thread that accepts connections and watches idle ones.
struct Poller {
    shared: Arc<Shared>,
    listeners: Vec<TcpListener>,
    wake_read: OwnedFd,
    parked: Vec<Conn>,
    /// Refused connections being drained briefly so they read our 503.
    draining: Vec<(TcpStream, Instant)>,
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
        while !self.shared.stopping.load(Ordering::SeqCst) {
            let watch = |fd: RawFd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            fds.clear();
            fds.push(watch(self.wake_read.as_raw_fd()));
            fds.extend(self.listeners.iter().map(|l| watch(l.as_raw_fd())));
            fds.extend(self.parked.iter().map(|c| watch(c.stream.as_raw_fd())));
            fds.extend(self.draining.iter().map(|(s, _)| watch(s.as_raw_fd())));
            // Half-sent request heads must hear their 408 close to on time.
            let partial = self.parked.iter().any(|c| c.head_started.is_some());
            let timeout_ms = if partial { 50 } else { 1000 };
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
                    let (mut stream, _) = self.draining.swap_remove(index - parked_end);
                    if discard_available(&mut stream) {
                        self.draining.push((stream, Instant::now()));
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
            self.parked.extend(returned);
            self.expire();
        }
        // Stopping: listeners close with `self`; idle connections close now.
        self.parked.clear();
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
            stream.set_read_timeout(Some(limits.read_timeout))?;
            stream.set_write_timeout(Some(limits.write_timeout))
        });
        if let Err(e) = configured {
            debug!("dropping connection from {peer}: {e}");
            return;
        }
        let open = self.shared.open.fetch_add(1, Ordering::SeqCst) + 1;
        if open > limits.max_connections {
            self.shared.open.fetch_sub(1, Ordering::SeqCst);
            self.refuse(stream, peer);
            return;
        }
        let conn = Conn {
            stream,
            peer,
            buf: Vec::new(),
            parked_at: Instant::now(),
            head_started: None,
            open: self.shared.open.clone(),
        };
        // A connection that has not sent anything yet costs no thread.
        if poll_readable(conn.stream.as_raw_fd(), Duration::ZERO) {
            self.shared.dispatch(conn);
        } else {
            self.parked.push(conn);
        }
    }

    /// Over the connection cap: a clear 503, then a short drain so the
    /// client reads it rather than a reset.
    fn refuse(&mut self, mut stream: TcpStream, peer: SocketAddr) {
        let limit = self.shared.limits.max_connections;
        warn!("refusing connection from {peer}: {limit} connections already open");
        let message =
            format!("Too many open connections to this box (limit {limit}); retry shortly");
        let mut response = self.shared.service.refusal(503, &message, None);
        response.headers.push(("Connection", "close".into()));
        response.headers.push(("Retry-After", "1".into()));
        let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
        if write_response(&mut stream, response, Reply::CLOSING, None).is_ok() {
            let _ = stream.shutdown(Shutdown::Write);
            if self.draining.len() < 64 && stream.set_nonblocking(true).is_ok() {
                self.draining.push((stream, Instant::now()));
            }
        }
    }

    /// Closes long-idle connections; sends overdue half-sent heads to a
    /// worker, which answers 408.
    fn expire(&mut self) {
        let limits = &self.shared.limits;
        let (mut overdue, mut kept) = (Vec::new(), Vec::new());
        for conn in self.parked.drain(..) {
            match conn.head_started {
                Some(started) if started.elapsed() > limits.head_timeout => overdue.push(conn),
                None if conn.parked_at.elapsed() >= limits.idle_timeout => {}
                _ => kept.push(conn),
            }
        }
        self.parked = kept;
        for conn in overdue {
            self.shared.dispatch(conn);
        }
        self.draining
            .retain(|(_, since)| since.elapsed() < DRAIN_TIME);
    }
}

enum Refusal {
    /// Answer with this status and message, then close.
    Status(u16, String),
    /// The connection is unusable (reset, timeout mid-request): just close.
    Io(io::Error),
    /// No complete request head and nothing to read now: park the connection.
    NotReady,
    /// The body exceeds the limit of the route at `path`.
    TooLarge(String),
}

impl From<io::Error> for Refusal {
    fn from(e: io::Error) -> Refusal {
        Refusal::Io(e)
    }
}

/// Reads one request. `Ok(None)`: the client closed between requests.
fn read_request(
    conn: &mut Conn,
    limits: &Limits,
    service: &dyn Service,
) -> Result<Option<Request>, Refusal> {
    // Workers never block waiting for a head: a client that sends nothing,
    // or half a head, goes back to the poller until more bytes arrive.
    let head_end = loop {
        if let Some(end) = find_head_end(&conn.buf) {
            if end > HEAD_MAX {
                return Err(Refusal::Status(
                    431,
                    "Request header fields too large".into(),
                ));
            }
            break end;
        }
        if conn.buf.len() > HEAD_MAX {
            return Err(Refusal::Status(
                431,
                "Request header fields too large".into(),
            ));
        }
        if conn
            .head_started
            .is_some_and(|started| started.elapsed() > limits.head_timeout)
        {
            return Err(Refusal::Status(
                408,
                "Request headers not received in time".into(),
            ));
        }
        if !poll_readable(conn.stream.as_raw_fd(), Duration::ZERO) {
            return Err(Refusal::NotReady);
        }
        match fill(conn) {
            Ok(0) if conn.buf.iter().all(|b| b.is_ascii_whitespace()) => return Ok(None),
            Ok(0) => return Err(Refusal::Io(io::ErrorKind::UnexpectedEof.into())),
            Ok(_) => {
                conn.head_started.get_or_insert_with(Instant::now);
            }
            Err(e) => return Err(Refusal::Io(e)),
        }
    };
    conn.head_started = None;
    let head = parse_head(&conn.buf[..head_end])
        .map_err(|why| Refusal::Status(400, format!("Bad request: {why}")))?;
    conn.buf.drain(..head_end);
    let limit = service.body_limit(&head.method, &head.path);
    let body = match head.framing {
        Framing::None => Vec::new(),
        Framing::Length(length) => {
            if length > limit as u64 {
                return Err(Refusal::TooLarge(head.path));
            }
            send_continue(conn, &head)?;
            read_exact_body(conn, length as usize)?
        }
        Framing::Chunked => {
            send_continue(conn, &head)?;
            read_chunked_body(conn, limit).map_err(|e| match e {
                Refusal::Status(413, _) => Refusal::TooLarge(head.path.clone()),
                other => other,
            })?
        }
    };
    Ok(Some(Request {
        method: head.method,
        path: head.path,
        query: head.query,
        headers: head.headers,
        body,
        peer: conn.peer,
        http11: head.http11,
    }))
}

fn send_continue(conn: &mut Conn, head: &Head) -> Result<(), Refusal> {
    let expects = head
        .headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("expect") && v.eq_ignore_ascii_case("100-continue"));
    if expects && head.http11 {
        conn.stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    Ok(())
}

/// Appends what the socket has (up to 8 KiB). Reads into the stack and
/// copies only what arrived: growing the buffer first zeroed 8 KiB per
/// read for requests of a few hundred bytes.
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

fn read_exact_body(conn: &mut Conn, length: usize) -> Result<Vec<u8>, Refusal> {
    while conn.buf.len() < length {
        if fill(conn)? == 0 {
            return Err(Refusal::Io(io::ErrorKind::UnexpectedEof.into()));
        }
    }
    // Copy the body out and keep the connection's buffer: handing the
    // buffer over as the body made every POST allocate a fresh one, which
    // musl's malloc maps and unmaps each time (a 409 cost 2.4x a GET).
    if length >= LARGE_BODY {
        let rest = conn.buf.split_off(length);
        return Ok(std::mem::replace(&mut conn.buf, rest));
    }
    let body = conn.buf[..length].to_vec();
    conn.buf.drain(..length);
    Ok(body)
}

fn read_chunked_body(conn: &mut Conn, limit: usize) -> Result<Vec<u8>, Refusal> {
    let bad = |why: &str| Refusal::Status(400, format!("Bad request: {why}"));
    let mut body = Vec::new();
    loop {
        let line = read_line(conn)?;
        let size_text = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| bad("invalid chunk size"))?;
        if size == 0 {
            // Trailers, if any, end with an empty line.
            while !read_line(conn)?.is_empty() {}
            return Ok(body);
        }
        if body.len().saturating_add(size) > limit {
            return Err(Refusal::Status(413, "Request body too large".into()));
        }
        let chunk = read_exact_body(conn, size + 2)?;
        if &chunk[size..] != b"\r\n" {
            return Err(bad("chunk not followed by CRLF"));
        }
        body.extend_from_slice(&chunk[..size]);
    }
}

fn read_line(conn: &mut Conn) -> Result<String, Refusal> {
    loop {
        if let Some(pos) = conn.buf.windows(2).position(|w| w == b"\r\n") {
            let line = String::from_utf8_lossy(&conn.buf[..pos]).into_owned();
            conn.buf.drain(..pos + 2);
            return Ok(line);
        }
        if conn.buf.len() > HEAD_MAX {
            return Err(Refusal::Status(
                400,
                "Bad request: chunk header too long".into(),
            ));
        }
        if fill(conn)? == 0 {
            return Err(Refusal::Io(io::ErrorKind::UnexpectedEof.into()));
        }
    }
}

/// After refusing a request, read (and drop) what the client is still
/// sending for a moment, so it sees the answer instead of a reset.
fn drain_and_close(conn: &mut Conn) {
    let _ = conn.stream.shutdown(Shutdown::Write);
    let _ = conn
        .stream
        .set_read_timeout(Some(Duration::from_millis(200)));
    let started = Instant::now();
    let mut drained = 0;
    let mut sink = [0u8; READ_CHUNK];
    while drained < DRAIN_MAX && started.elapsed() < DRAIN_TIME {
        match conn.stream.read(&mut sink) {
            Ok(0) | Err(_) => return,
            Ok(n) => drained += n,
        }
    }
}

/// Reads what a refused connection sent; false once it is done.
fn discard_available(stream: &mut TcpStream) -> bool {
    let mut sink = [0u8; READ_CHUNK];
    matches!(stream.read(&mut sink), Ok(n) if n > 0)
}

fn poll_readable(fd: RawFd, wait: Duration) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let millis = wait.as_millis().min(i32::MAX as u128) as i32;
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

#[derive(Debug, PartialEq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
}

#[derive(Debug)]
struct Head {
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    http11: bool,
    framing: Framing,
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|pos| pos + 4)
}

/// Parses the request line and headers (everything up to the blank line).
fn parse_head(bytes: &[u8]) -> Result<Head, &'static str> {
    let text = std::str::from_utf8(bytes).map_err(|_| "headers are not UTF-8")?;
    // RFC 9112 §2.2: ignore empty lines before the request line.
    let mut lines = text.trim_start_matches("\r\n").split("\r\n");
    let request_line = lines.next().ok_or("empty request")?;
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("malformed request line");
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err("malformed method");
    }
    let http11 = match version {
        "HTTP/1.1" => true,
        "HTTP/1.0" => false,
        _ => return Err("unsupported HTTP version"),
    };
    if !target.starts_with('/') {
        return Err("request target must be a path");
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut headers = Vec::new();
    for line in lines.filter(|line| !line.is_empty()) {
        let (name, value) = line.split_once(':').ok_or("header without colon")?;
        if name.is_empty()
            || name
                .bytes()
                .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return Err("malformed header name");
        }
        headers.push((name.to_string(), value.trim().to_string()));
        if headers.len() > HEADERS_MAX {
            return Err("too many headers");
        }
    }
    let mut framing = Framing::None;
    for (name, value) in &headers {
        if name.eq_ignore_ascii_case("content-length") {
            let length: u64 = value.parse().map_err(|_| "invalid Content-Length")?;
            match framing {
                Framing::Length(seen) if seen != length => {
                    return Err("conflicting Content-Length")
                }
                Framing::Chunked => return Err("both Content-Length and Transfer-Encoding"),
                _ => framing = Framing::Length(length),
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if !value.eq_ignore_ascii_case("chunked") {
                return Err("unsupported Transfer-Encoding");
            }
            if framing != Framing::None {
                return Err("both Content-Length and Transfer-Encoding");
            }
            framing = Framing::Chunked;
        }
    }
    Ok(Head {
        method: method.to_string(),
        path: path.to_string(),
        query: query.to_string(),
        headers,
        http11,
        framing,
    })
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

fn write_response(
    stream: &mut TcpStream,
    response: Response,
    reply: Reply,
    client: Option<&Client>,
) -> io::Result<()> {
    let mut head = Vec::with_capacity(256);
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
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Result<Head, &'static str> {
        parse_head(text.as_bytes())
    }

    #[test]
    fn parses_a_request_head() {
        let h = head(
            "POST /lock?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\nX-Odd:  spaced  \r\n\r\n",
        )
        .unwrap();
        assert_eq!((h.method.as_str(), h.path.as_str()), ("POST", "/lock"));
        assert_eq!(h.framing, Framing::Length(12));
        assert!(h.http11);
        assert!(h
            .headers
            .contains(&("X-Odd".to_string(), "spaced".to_string())));
        assert_eq!(
            head("\r\nGET / HTTP/1.0\r\n\r\n").unwrap().framing,
            Framing::None
        );
        assert_eq!(
            head("POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n")
                .unwrap()
                .framing,
            Framing::Chunked
        );
    }

    #[test]
    fn decodes_query_parameters() {
        let h =
            head("GET /download-file?filename=%2Ftmp%2Flager-output%2Fa+b.txt&x HTTP/1.1\r\n\r\n")
                .unwrap();
        assert_eq!(h.query, "filename=%2Ftmp%2Flager-output%2Fa+b.txt&x");
        assert_eq!(percent_decode("%2Ftmp%2Fa+b"), "/tmp/a b");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%41"), "A");
    }

    #[test]
    fn rejects_malformed_heads() {
        for bad in [
            "GET\r\n\r\n",
            "GET / HTTP/2.0\r\n\r\n",
            "GET / HTTP/1.1 extra\r\n\r\n",
            "get / HTTP/1.1\r\n\r\n",
            "GET http://x/ HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nNoColon\r\n\r\n",
            "GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
        ] {
            assert!(head(bad).is_err(), "{bad:?}");
        }
        assert!(parse_head(b"GET /\xff HTTP/1.1\r\n\r\n").is_err());
    }
}
