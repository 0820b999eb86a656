//! HTTP/1.1 to a box on std's `TcpStream`: the one way `lager` talks to
//! lagerd, for short JSON calls and long streams alike.
//!
//! One connect policy ([`Connect`], [`dial`]): resolve, connect within a
//! budget that `LAGER_BOX_TIMEOUT_MS` may shorten, and retry only a failed
//! connect, never a request whose bytes went out. One request writer
//! ([`Conn::send`]): `Host`, `User-Agent`, the bearer token of locking.md
//! A.9a and `Connection: close` are written there and nowhere else. One
//! response reader ([`Response`]): a bounded head, strict framing (chunked,
//! `Content-Length` or close-delimited), and every wait for bytes under a
//! timeout ([`Wait`]). Every status, 4xx/5xx included, is a response; only
//! "no answer" is a [`TransportError`].
//!
//! Not ureq: `lager python` must know when the next read would block so it
//! can flush its coalesced output then and only then (1 GiB of script
//! output arrives as ≤ 1 KiB frames), which a `Read` adapter hides; and a
//! second client for the short calls cost 150 KB of the binary (ureq, url,
//! idna) plus a second error type with other words.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A stream's buffer: large, so a fast stream is read in few syscalls.
const STREAM_BUFFER: usize = 256 * 1024;
/// A short call's buffer; its body may be larger and is read in pieces.
const CALL_BUFFER: usize = 16 * 1024;
/// Largest response head accepted (lagerd's are a few hundred bytes).
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Most header lines in a head.
const MAX_HEADERS: usize = 48;
/// Requests up to this size go out in one write (one segment on loopback).
const SINGLE_WRITE_BYTES: usize = 1024 * 1024;
/// Pause between connect attempts of a retried connect.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// `LAGER_BOX_TIMEOUT_MS`, read once: caps every fixed request timeout and
/// every connect, so benchmarks and tests need not wait 5 s per dead box.
/// A queued lock request's long wait (locking.md B.4) and a stream's idle
/// limit are not capped.
pub fn timeout_cap() -> Option<Duration> {
    static CAP: OnceLock<Option<Duration>> = OnceLock::new();
    *CAP.get_or_init(|| {
        std::env::var("LAGER_BOX_TIMEOUT_MS")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|ms| *ms > 0)
            .map(Duration::from_millis)
    })
}

/// `wanted`, shortened to `LAGER_BOX_TIMEOUT_MS` when that is lower.
pub fn capped(wanted: Duration) -> Duration {
    match timeout_cap() {
        Some(cap) => wanted.min(cap),
        None => wanted,
    }
}

/// `5s`, or `400ms` when not whole seconds.
pub fn fmt_timeout(timeout: Duration) -> String {
    if timeout.subsec_millis() == 0 {
        format!("{}s", timeout.as_secs())
    } else {
        format!("{}ms", timeout.as_millis())
    }
}

/// How a connection to a box is made: within `within` (capped, and never
/// longer than the request's whole budget), `attempts` times at most,
/// 0.5 s apart, and only while no byte of the request was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connect {
    pub within: Duration,
    pub attempts: u32,
}

impl Connect {
    /// Lock, status, instrument and everything else: one attempt within
    /// 5 s (locking.md B.4–B.6).
    pub const BOX: Connect = Connect::within(Duration::from_secs(5));
    /// The runner's streams: 7 s, three attempts (runner.md §5.4).
    pub const RUNNER: Connect = Connect {
        within: Duration::from_secs(7),
        attempts: 3,
    };

    /// One attempt within `within`.
    pub const fn within(within: Duration) -> Connect {
        Connect {
            within,
            attempts: 1,
        }
    }
}

/// How long an answer may take once connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// The whole exchange, connect included, within this.
    Total(Duration),
    /// Every wait for bytes (and every write) within this; no total, for
    /// streams that last as long as their job or monitor does.
    Idle(Duration),
}

impl Wait {
    fn limit(self) -> Duration {
        match self {
            Wait::Total(limit) | Wait::Idle(limit) => limit,
        }
    }
}

/// One request.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a str,
    /// Origin form, query included: `/lock`, `/download-file?filename=…`.
    pub path: &'a str,
    /// Extra header lines (`Lager-Holder`); the transport writes the rest.
    pub headers: &'a [(&'a str, &'a str)],
    /// `(content type, bytes)`.
    pub body: Option<(&'a str, &'a [u8])>,
    pub connect: Connect,
    pub wait: Wait,
}

impl<'a> Request<'a> {
    pub fn get(path: &'a str, wait: Wait) -> Request<'a> {
        Request {
            method: "GET",
            path,
            headers: &[],
            body: None,
            connect: Connect::BOX,
            wait,
        }
    }

    pub fn post(path: &'a str, content_type: &'a str, body: &'a [u8], wait: Wait) -> Request<'a> {
        Request {
            method: "POST",
            body: Some((content_type, body)),
            ..Request::get(path, wait)
        }
    }

    pub fn headers(self, headers: &'a [(&'a str, &'a str)]) -> Request<'a> {
        Request { headers, ..self }
    }

    pub fn connect(self, connect: Connect) -> Request<'a> {
        Request { connect, ..self }
    }

    /// When the whole exchange must be over, for a `Total` wait.
    fn deadline(&self, start: Instant) -> Option<Instant> {
        match self.wait {
            Wait::Total(limit) => Some(start + limit),
            Wait::Idle(_) => None,
        }
    }
}

/// Why a request got no HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransportKind {
    /// Nothing listens there.
    Refused,
    /// The host or its network is unreachable.
    NoRoute,
    /// No connection or no answer within the timeout.
    Timeout,
    /// The host name does not resolve.
    Dns,
    /// Anything else: a reset, a malformed or oversized answer.
    Other(String),
}

/// The short reason: `connection refused`, `the connection timed out`.
impl fmt::Display for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransportKind::Refused => f.write_str("connection refused"),
            TransportKind::NoRoute => f.write_str("no route to host"),
            TransportKind::Timeout => f.write_str("the connection timed out"),
            TransportKind::Dns => f.write_str("the host name does not resolve"),
            TransportKind::Other(detail) => f.write_str(detail),
        }
    }
}

/// A request that got no HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportError {
    pub kind: TransportKind,
    /// `host:port` the request went to.
    pub addr: String,
    /// The budget that ran out or was running.
    pub timeout: Duration,
    /// The connection stood and the request was being sent or had been,
    /// so the box may act on it (instruments.md §8's read timeout).
    pub connected: bool,
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let addr = &self.addr;
        match &self.kind {
            TransportKind::Refused => write!(
                f,
                "connection refused at {addr}; check that the box is powered on, on the network, and running lagerd"
            ),
            TransportKind::NoRoute => write!(
                f,
                "no route to {addr}; check that the box is powered on and on the network (ping it), then retry"
            ),
            TransportKind::Timeout => write!(
                f,
                "no answer from {addr} within {}; check that the box is powered on and reachable (ping it), then retry",
                fmt_timeout(self.timeout)
            ),
            TransportKind::Dns => write!(
                f,
                "cannot resolve the host of {addr}; check the name or save the box by IP address"
            ),
            TransportKind::Other(detail) => write!(
                f,
                "{detail} (talking to {addr}); retry, or check the box with: lager hello"
            ),
        }
    }
}

impl std::error::Error for TransportError {}

/// What an IO failure says about the box.
pub fn kind_of(error: &io::Error) -> TransportKind {
    use io::ErrorKind as K;
    match error.kind() {
        K::TimedOut | K::WouldBlock => TransportKind::Timeout,
        K::ConnectionRefused => TransportKind::Refused,
        K::HostUnreachable | K::NetworkUnreachable => TransportKind::NoRoute,
        K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe => {
            TransportKind::Other("the box closed the connection without answering".into())
        }
        _ => match error.raw_os_error() {
            Some(libc::EHOSTUNREACH | libc::ENETUNREACH) => TransportKind::NoRoute,
            _ => TransportKind::Other(error.to_string()),
        },
    }
}

/// `host:port`, IPv6 hosts in brackets.
pub fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Connects to `host:port` under `connect`, by `deadline` at the latest:
/// the one connect policy, also for the raw console socket.
pub fn dial(
    host: &str,
    port: u16,
    connect: Connect,
    deadline: Option<Instant>,
) -> Result<TcpStream, TransportError> {
    let start = Instant::now();
    let mut budget = capped(connect.within);
    if let Some(deadline) = deadline {
        budget = budget.min(deadline.saturating_duration_since(start));
    }
    let failed = |kind, timeout| TransportError {
        kind,
        addr: host_port(host, port),
        timeout,
        connected: false,
    };
    let addrs: Vec<SocketAddr> = match (host, port).to_socket_addrs() {
        Ok(addrs) => addrs.collect(),
        Err(e) => {
            log::debug!("resolving {host}: {e}");
            return Err(failed(TransportKind::Dns, budget));
        }
    };
    let mut attempt = 1;
    loop {
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
        let attempt_ends = Instant::now() + budget;
        for addr in &addrs {
            let left = attempt_ends.saturating_duration_since(Instant::now());
            if left.is_zero() {
                last = io::ErrorKind::TimedOut.into();
                break;
            }
            match TcpStream::connect_timeout(addr, left) {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    return Ok(stream);
                }
                Err(e) => last = e,
            }
        }
        log::debug!(
            "connect to {} (attempt {attempt}): {last}",
            host_port(host, port)
        );
        let past_deadline = deadline.is_some_and(|d| Instant::now() + RETRY_PAUSE >= d);
        if attempt >= connect.attempts || past_deadline {
            let kind = match last.kind() {
                io::ErrorKind::NotFound => TransportKind::Dns,
                _ => kind_of(&last),
            };
            return Err(failed(kind, budget));
        }
        attempt += 1;
        std::thread::sleep(RETRY_PAUSE);
    }
}

/// Largest short answer read whole: lagerd's JSON replies are a few KiB
/// (a battery model export, the biggest, is under 8 KiB); downloads stream.
pub const MAX_REPLY_BYTES: usize = 10 * 1024 * 1024;

/// A short answer with any status, read whole.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: String,
}

impl Reply {
    /// The body as a JSON value, if it is JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_str(&self.body).ok()
    }
}

/// A connection to a box, before its one request goes out.
#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    /// `host:port`: the `Host` header and the messages.
    addr: String,
    token: Option<String>,
    deadline: Option<Instant>,
}

impl Conn {
    /// Connects for `request`, whose total budget (if any) starts now.
    pub fn open(
        host: &str,
        port: u16,
        token: Option<&str>,
        request: &Request<'_>,
    ) -> Result<Conn, TransportError> {
        let deadline = request.deadline(Instant::now());
        let stream = dial(host, port, request.connect, deadline)?;
        Ok(Conn {
            stream,
            addr: host_port(host, port),
            token: token.map(str::to_string),
            deadline,
        })
    }

    /// A handle on the socket, to cut the exchange from another thread.
    pub fn socket(&self) -> io::Result<TcpStream> {
        self.stream.try_clone()
    }

    /// Writes `request` and reads the response head. Nothing is retried
    /// from here on: the box may already act on the request.
    pub fn send(self, request: &Request<'_>) -> Result<Response, TransportError> {
        let mut head = format!(
            "{} {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: lager/{}\r\nConnection: close\r\n",
            request.method,
            request.path,
            self.addr,
            env!("CARGO_PKG_VERSION")
        );
        if let Some(token) = &self.token {
            head.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        if let Some((content_type, body)) = request.body {
            head.push_str(&format!(
                "Content-Type: {content_type}\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        for (name, value) in request.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        log::debug!(
            "{} http://{}{} ({:?})",
            request.method,
            self.addr,
            request.path,
            request.wait
        );
        let body = request.body.map_or(&[][..], |(_, body)| body);
        let buffer = match request.wait {
            Wait::Total(_) => CALL_BUFFER,
            Wait::Idle(_) => STREAM_BUFFER,
        };
        let mut response = Response {
            addr: self.addr,
            wait: request.wait,
            status: 0,
            headers: Vec::new(),
            stream: self.stream,
            buf: vec![0; buffer].into_boxed_slice(),
            start: 0,
            end: 0,
            framing: Framing::Close,
            done: false,
            deadline: self.deadline,
        };
        let sent = (|| {
            if let Wait::Idle(limit) = request.wait {
                response.stream.set_read_timeout(Some(limit))?;
                response.stream.set_write_timeout(Some(limit))?;
            }
            if body.len() <= SINGLE_WRITE_BYTES {
                let mut whole = head.into_bytes();
                whole.extend_from_slice(body);
                response.write_all(&whole)?;
            } else {
                response.write_all(head.as_bytes())?;
                response.write_all(body)?;
            }
            response.read_head()
        })();
        match sent {
            Ok(()) => Ok(response),
            Err(e) => Err(response.failed(&e)),
        }
    }

    /// Sends `request` and reads the whole answer (at most
    /// [`MAX_REPLY_BYTES`]) within its wait.
    pub fn call(self, request: &Request<'_>) -> Result<Reply, TransportError> {
        let mut response = self.send(request)?;
        let body = response
            .body(MAX_REPLY_BYTES)
            .map_err(|e| response.failed(&e))?;
        let body = String::from_utf8_lossy(&body).into_owned();
        log::trace!(
            "{} {} -> {} {body}",
            request.method,
            request.path,
            response.status
        );
        Ok(Reply {
            status: response.status,
            body,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// Until the box closes the connection.
    Close,
    Length(u64),
    /// `remaining` bytes of the current chunk; `started` once a size line was read.
    Chunked {
        remaining: u64,
        started: bool,
    },
}

/// A response: status, headers, and the body still on the socket.
#[derive(Debug)]
pub struct Response {
    /// `host:port`, for errors.
    addr: String,
    wait: Wait,
    pub status: u16,
    headers: Vec<(String, String)>,
    stream: TcpStream,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    framing: Framing,
    done: bool,
    /// A `Total` wait's end: every read is bounded by what is left of it.
    deadline: Option<Instant>,
}

fn invalid(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

fn closed_early() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the connection closed in the middle of the response",
    )
}

impl Response {
    /// A failure after the connection stood, as the box's transport error.
    pub fn failed(&self, error: &io::Error) -> TransportError {
        log::debug!("request to {}: {error}", self.addr);
        TransportError {
            kind: kind_of(error),
            addr: self.addr.clone(),
            timeout: self.wait.limit(),
            connected: true,
        }
    }

    /// What is left of the total budget; an error once it is spent.
    fn left(&self) -> io::Result<Option<Duration>> {
        match self.deadline {
            None => Ok(None),
            Some(deadline) => match deadline.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => Ok(Some(left)),
                _ => Err(io::ErrorKind::TimedOut.into()),
            },
        }
    }

    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        if let Some(left) = self.left()? {
            self.stream.set_write_timeout(Some(left))?;
        }
        self.stream.write_all(bytes)
    }

    fn read_head(&mut self) -> io::Result<()> {
        loop {
            let head_end = loop {
                if let Some(pos) = find(&self.buf[self.start..self.end], b"\r\n\r\n") {
                    break self.start + pos + 4;
                }
                if self.end - self.start >= MAX_HEAD_BYTES {
                    return Err(invalid("the box's response head is over 16 KiB"));
                }
                if !self.fill()? {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the box closed the connection without answering",
                    ));
                }
            };
            let mut lines = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut head = httparse::Response::new(&mut lines);
            match head.parse(&self.buf[self.start..head_end]) {
                Ok(httparse::Status::Complete(_)) => {}
                Ok(httparse::Status::Partial) => return Err(invalid("incomplete response head")),
                Err(e) => return Err(invalid(format!("malformed response head ({e})"))),
            }
            let status = head.code.unwrap_or(0);
            self.headers = head
                .headers
                .iter()
                .map(|h| {
                    let value = String::from_utf8_lossy(h.value).trim().to_string();
                    (h.name.to_string(), value)
                })
                .collect();
            self.start = head_end;
            // RFC 9112 §4: a client skips interim (1xx) responses.
            if (100..200).contains(&status) {
                continue;
            }
            self.status = status;
            break;
        }
        self.framing = self.framing()?;
        if matches!(self.status, 204 | 304) {
            self.framing = Framing::Length(0);
        }
        Ok(())
    }

    /// RFC 9112 §6.3: chunked wins over a length; lengths must agree.
    fn framing(&self) -> io::Result<Framing> {
        if let Some(coding) = self.header("transfer-encoding") {
            let last = coding.rsplit(',').next().unwrap_or("").trim();
            return Ok(if last.eq_ignore_ascii_case("chunked") {
                Framing::Chunked {
                    remaining: 0,
                    started: false,
                }
            } else {
                Framing::Close
            });
        }
        let mut length = None;
        for (_, value) in self
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        {
            let parsed = Some(value.as_str())
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| invalid(format!("bad Content-Length {value:?}")))?;
            if length.is_some_and(|l| l != parsed) {
                return Err(invalid("conflicting Content-Length headers"));
            }
            length = Some(parsed);
        }
        Ok(length.map_or(Framing::Close, Framing::Length))
    }

    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Ends a stream we stopped reading with a reset instead of a FIN, so
    /// the box knows at once that nobody reads it any more: a FIN alone only
    /// says we stopped sending (lagerd keeps serving a half-closed client).
    pub fn abort(self) {
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: a valid option value of its own size on a socket we own;
        // the descriptor is closed by `self.stream` right after.
        unsafe {
            libc::setsockopt(
                self.stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            )
        };
    }

    /// A handle on the socket, to shut it down from another thread.
    pub fn socket(&self) -> io::Result<TcpStream> {
        self.stream.try_clone()
    }

    /// Moves the unread bytes to the front and reads more; false on EOF.
    fn fill(&mut self) -> io::Result<bool> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            return Err(invalid("a line of the response is too long"));
        }
        loop {
            if let Some(left) = self.left()? {
                self.stream.set_read_timeout(Some(left))?;
            }
            match self.stream.read(&mut self.buf[self.end..]) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    self.end += n;
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// `idle` runs first: the caller's chance to flush before blocking.
    fn fill_after(&mut self, idle: &mut dyn FnMut()) -> io::Result<bool> {
        idle();
        self.fill()
    }

    /// The next CRLF-terminated line (without the CRLF) as a range of `buf`.
    fn line(&mut self, idle: &mut dyn FnMut()) -> io::Result<std::ops::Range<usize>> {
        loop {
            if let Some(pos) = find(&self.buf[self.start..self.end], b"\r\n") {
                let line = self.start..self.start + pos;
                self.start += pos + 2;
                return Ok(line);
            }
            if !self.fill_after(idle)? {
                return Err(closed_early());
            }
        }
    }

    /// Reads the next chunk-size line (after the previous chunk's CRLF);
    /// at the last chunk, also its trailer section.
    fn chunk_size(&mut self, started: bool, idle: &mut dyn FnMut()) -> io::Result<u64> {
        if started && !self.line(idle)?.is_empty() {
            return Err(invalid("missing CRLF after a chunk"));
        }
        let line = self.line(idle)?;
        let text = &self.buf[line];
        let digits = text.split(|b| *b == b';').next().unwrap_or_default();
        let size = std::str::from_utf8(digits)
            .ok()
            .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_hexdigit()))
            .and_then(|d| u64::from_str_radix(d, 16).ok())
            .ok_or_else(|| {
                invalid(format!(
                    "bad chunk size {:?}",
                    String::from_utf8_lossy(text)
                ))
            })?;
        if size == 0 {
            // Trailer fields, unused, up to the empty line.
            while !self.line(idle)?.is_empty() {}
        }
        Ok(size)
    }

    /// The next piece of body; `None` at its proper end. A connection that
    /// closes before a chunked or sized body is complete is an error.
    /// `idle` runs before every read that may block on the socket.
    pub fn next(&mut self, idle: &mut dyn FnMut()) -> io::Result<Option<&[u8]>> {
        self.next_up_to(usize::MAX, idle)
    }

    fn next_up_to(&mut self, max: usize, idle: &mut dyn FnMut()) -> io::Result<Option<&[u8]>> {
        if self.done {
            return Ok(None);
        }
        let limit = match self.framing {
            Framing::Close => u64::MAX,
            Framing::Length(0) => {
                self.done = true;
                return Ok(None);
            }
            Framing::Length(remaining) => remaining,
            Framing::Chunked { remaining, started } => {
                if remaining > 0 {
                    remaining
                } else {
                    let size = self.chunk_size(started, idle)?;
                    if size == 0 {
                        self.done = true;
                        return Ok(None);
                    }
                    self.framing = Framing::Chunked {
                        remaining: size,
                        started: true,
                    };
                    size
                }
            }
        };
        if self.start == self.end && !self.fill_after(idle)? {
            if self.framing == Framing::Close {
                self.done = true;
                return Ok(None);
            }
            return Err(closed_early());
        }
        let take = limit.min((self.end - self.start) as u64).min(max as u64) as usize;
        let piece = self.start..self.start + take;
        self.start += take;
        match &mut self.framing {
            Framing::Close => {}
            Framing::Length(remaining) | Framing::Chunked { remaining, .. } => {
                *remaining -= take as u64
            }
        }
        Ok(Some(&self.buf[piece]))
    }

    /// The whole body, refused (not cut) when it is over `limit` bytes.
    pub fn body(&mut self, limit: usize) -> io::Result<Vec<u8>> {
        let mut body = Vec::new();
        while let Some(piece) = self.next(&mut || {})? {
            if body.len() + piece.len() > limit {
                return Err(invalid(format!(
                    "the box's answer is over {} KiB",
                    limit / 1024
                )));
            }
            body.extend_from_slice(piece);
        }
        Ok(body)
    }

    /// The body as text, cut at `limit` bytes (error replies of streams).
    pub fn text(&mut self, limit: usize) -> io::Result<String> {
        let mut body = Vec::new();
        while let Some(piece) = self.next(&mut || {})? {
            body.extend_from_slice(piece);
            if body.len() > limit {
                break;
            }
        }
        body.truncate(limit);
        Ok(String::from_utf8_lossy(&body).into_owned())
    }
}

/// The body as a byte stream (downloads through a gzip decoder).
impl Read for Response {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        match self.next_up_to(out.len(), &mut || {})? {
            None => Ok(0),
            Some(piece) => {
                out[..piece.len()].copy_from_slice(piece);
                Ok(piece.len())
            }
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// Serves one connection: reads the request head and body, answers
    /// `reply`, hands back what was sent.
    fn serve(reply: Vec<u8>) -> (u16, std::thread::JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let handle = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().expect("accept");
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                let n = stream.read(&mut buf).expect("read");
                request.extend_from_slice(&buf[..n]);
                if let Some(pos) = find(&request, b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&request[..pos]).to_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length: "))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    if request.len() >= pos + 4 + len {
                        break;
                    }
                }
                if n == 0 {
                    break;
                }
            }
            stream.write_all(&reply).expect("reply");
            request
        });
        (port, handle)
    }

    fn post(body: &[u8]) -> Request<'_> {
        Request::post(
            "/python",
            "multipart/form-data; boundary=b",
            body,
            Wait::Idle(Duration::from_secs(5)),
        )
        .headers(&[("Lager-Holder", "alice")])
    }

    fn send(
        port: u16,
        token: Option<&str>,
        request: &Request<'_>,
    ) -> Result<Response, TransportError> {
        Conn::open("127.0.0.1", port, token, request)?.send(request)
    }

    fn body_of(response: &mut Response) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(piece) = response.next(&mut || {})? {
            out.extend_from_slice(piece);
        }
        Ok(out)
    }

    #[test]
    fn chunked_body_is_decoded_and_the_head_is_written_once() {
        let (port, server) = serve(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nLager-Output-Version: 1\r\n\r\n\
              5\r\n1 1 a\r\n6;x=y\r\n- 1 0\n\r\n0\r\nX-Trailer: 1\r\n\r\n"
                .to_vec(),
        );
        let mut response = send(port, Some("s3cret"), &post(b"BODY")).expect("send");
        assert_eq!(response.status, 200);
        assert_eq!(response.header("lager-output-version"), Some("1"));
        assert_eq!(body_of(&mut response).expect("body"), b"1 1 a- 1 0\n");
        let sent = String::from_utf8(server.join().expect("server")).expect("utf8");
        assert!(sent.starts_with("POST /python HTTP/1.1\r\n"), "{sent}");
        assert!(
            sent.contains(&format!("\r\nHost: 127.0.0.1:{port}\r\n")),
            "{sent}"
        );
        assert!(sent.contains("\r\nConnection: close\r\n"), "{sent}");
        assert!(
            sent.contains("\r\nAuthorization: Bearer s3cret\r\n"),
            "{sent}"
        );
        assert!(sent.contains("\r\nLager-Holder: alice\r\n"), "{sent}");
        assert!(sent.contains("\r\nContent-Length: 4\r\n"), "{sent}");
        assert!(sent.ends_with("\r\n\r\nBODY"), "{sent}");
    }

    #[test]
    fn sized_and_close_delimited_bodies() {
        let (port, _server) =
            serve(b"HTTP/1.1 422 X\r\nContent-Length: 5\r\n\r\nabcdeEXTRA".to_vec());
        let mut response = send(port, None, &post(b"")).expect("send");
        assert_eq!(response.status, 422);
        assert_eq!(response.text(100).expect("text"), "abcde");
        let (port, _server) = serve(b"HTTP/1.0 200 OK\r\n\r\nto the end".to_vec());
        let mut response = send(port, None, &post(b"")).expect("send");
        assert_eq!(body_of(&mut response).expect("body"), b"to the end");
    }

    #[test]
    fn interim_responses_are_skipped() {
        let (port, _server) = serve(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok"
                .to_vec(),
        );
        let mut response = send(port, None, &post(b"x")).expect("send");
        assert_eq!(response.status, 201);
        assert_eq!(response.body(10).expect("body"), b"ok");
    }

    #[test]
    fn broken_framing_is_an_error_not_a_short_body() {
        for reply in [
            &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n9\r\n1 5 ab"[..],
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabX\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
            b"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nab",
        ] {
            let (port, _server) = serve(reply.to_vec());
            let outcome = send(port, None, &post(b"")).map(|mut r| body_of(&mut r));
            assert!(
                !matches!(outcome, Ok(Ok(_))),
                "{:?}",
                String::from_utf8_lossy(reply)
            );
        }
        let (port, _server) = serve(b"garbage\r\n\r\n".to_vec());
        let err = send(port, None, &post(b"")).expect_err("not HTTP");
        assert!(err.connected);
        assert!(
            matches!(&err.kind, TransportKind::Other(d) if d.contains("malformed response head")),
            "{err}"
        );
    }

    #[test]
    fn bodies_over_the_limit_are_refused() {
        let (port, _server) = serve(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2048\r\n\r\n"
                .iter()
                .chain(&[b'x'; 2048])
                .copied()
                .collect(),
        );
        let mut response = send(port, None, &post(b"")).expect("send");
        assert!(response.body(1024).is_err());
    }

    #[test]
    fn refused_is_classified_and_retried_when_asked() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        drop(listener);
        let once = Request::get("/status", Wait::Total(Duration::from_secs(5)));
        let start = Instant::now();
        let err = send(port, None, &once).expect_err("refused");
        assert_eq!(err.kind, TransportKind::Refused);
        assert!(!err.connected);
        assert!(
            err.to_string().contains(&format!("127.0.0.1:{port}")),
            "{err}"
        );
        assert!(
            start.elapsed() < Duration::from_millis(400),
            "{:?}",
            start.elapsed()
        );
        let start = Instant::now();
        let err = send(port, None, &post(b"").connect(Connect::RUNNER)).expect_err("refused");
        assert_eq!(err.kind, TransportKind::Refused);
        let elapsed = start.elapsed();
        assert!(
            elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(3),
            "three attempts 0.5 s apart took {elapsed:?}"
        );
    }

    #[test]
    fn a_silent_box_times_out_within_the_total_budget() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let start = Instant::now();
        let request = Request::get("/status", Wait::Total(Duration::from_millis(300)));
        let err = send(port, None, &request).expect_err("silent");
        assert_eq!(err.kind, TransportKind::Timeout, "{err}");
        assert!(err.connected);
        assert_eq!(err.timeout, Duration::from_millis(300));
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
        drop(listener);
    }

    #[test]
    fn a_trickling_box_cannot_stretch_the_total_budget() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().expect("accept");
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n");
            for _ in 0..40 {
                std::thread::sleep(Duration::from_millis(50));
                if stream.write_all(b"x").is_err() {
                    return;
                }
            }
        });
        let start = Instant::now();
        let request = Request::get("/status", Wait::Total(Duration::from_millis(400)));
        let outcome = send(port, None, &request).map(|mut r| r.body(1024));
        assert!(
            matches!(&outcome, Ok(Err(e)) if kind_of(e) == TransportKind::Timeout),
            "{outcome:?}"
        );
        assert!(
            start.elapsed() < Duration::from_millis(1500),
            "{:?}",
            start.elapsed()
        );
        let _ = server.join();
    }

    #[test]
    fn reads_hand_out_the_body_in_pieces() {
        let (port, _server) = serve(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n"
                .to_vec(),
        );
        let mut response = send(port, None, &post(b"")).expect("send");
        let mut out = String::new();
        let mut small = [0u8; 2];
        loop {
            let n = response.read(&mut small).expect("read");
            if n == 0 {
                break;
            }
            out.push_str(std::str::from_utf8(&small[..n]).expect("utf8"));
        }
        assert_eq!(out, "abcdefg");
    }

    #[test]
    fn hosts_and_timeouts_print_plainly() {
        assert_eq!(host_port("::1", 9000), "[::1]:9000");
        assert_eq!(host_port("10.0.0.5", 9100), "10.0.0.5:9100");
        assert_eq!(fmt_timeout(Duration::from_secs(5)), "5s");
        assert_eq!(fmt_timeout(Duration::from_millis(400)), "400ms");
    }
}
