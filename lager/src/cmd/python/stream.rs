//! The two long-lived requests of `lager python` (`POST /python`,
//! `POST /python/attach`) on a plain `TcpStream` (runner.md §5.4).
//!
//! Not ureq: the renderer must know when the next read would block so it
//! can flush its coalesced output then and only then (≥ 200 MB/s of script
//! output arrives as ≤ 1 KiB frames), and a request whose body was sent
//! must never be retried. So this module connects (7 s, three attempts
//! 0.5 s apart, connect failures only), writes the whole request with
//! `Connection: close`, reads the response head, and hands out the body
//! (chunked, `Content-Length` or close-delimited) as borrowed slices of one
//! large buffer.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::time::Duration;

/// Connect timeout per attempt.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(7);
/// Connect attempts in all, and the pause between them.
const CONNECT_ATTEMPTS: u32 = 3;
const CONNECT_RETRY_PAUSE: Duration = Duration::from_millis(500);
/// Socket buffer: large, so a fast stream is read in few syscalls.
const BUFFER_BYTES: usize = 256 * 1024;
/// Requests up to this size are copied into one buffer and written once.
const SINGLE_WRITE_BYTES: usize = 1024 * 1024;
/// Largest response head accepted.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Why the request got no HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailKind {
    Timeout,
    Refused,
    NoRoute,
    Dns,
    /// Anything else; the detail goes to the debug log.
    Other(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestFailed {
    pub kind: FailKind,
    /// `host:port`.
    pub addr: String,
}

impl std::fmt::Display for RequestFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let addr = &self.addr;
        match self.kind {
            FailKind::Timeout => write!(f, "Error: Connection to box timed out ({addr})"),
            FailKind::Refused => write!(f, "Error: Connection refused by box ({addr})"),
            FailKind::NoRoute => write!(f, "Error: No route to host ({addr})"),
            FailKind::Dns => write!(f, "Error: Could not resolve hostname ({addr})"),
            FailKind::Other(_) => write!(f, "Error: Could not connect to box ({addr})"),
        }
    }
}

fn classify(e: &io::Error) -> FailKind {
    match e.kind() {
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => FailKind::Timeout,
        io::ErrorKind::ConnectionRefused => FailKind::Refused,
        io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => FailKind::NoRoute,
        _ => match e.raw_os_error() {
            Some(libc::EHOSTUNREACH) | Some(libc::ENETUNREACH) => FailKind::NoRoute,
            _ => FailKind::Other(e.to_string()),
        },
    }
}

/// One request to send.
pub struct Request<'a> {
    /// `POST` for the runner's routes, `GET` for the monitor streams.
    pub method: &'a str,
    /// Bare host (IPv6 without brackets).
    pub host: &'a str,
    pub port: u16,
    pub path: &'a str,
    pub headers: Vec<(&'a str, String)>,
    pub content_type: &'a str,
    pub body: &'a [u8],
    /// Between-bytes limit on reads after the body was sent; `None` waits forever.
    pub read_timeout: Option<Duration>,
}

impl Request<'_> {
    fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

fn connect_once(addrs: &[SocketAddr]) -> io::Result<TcpStream> {
    let mut last = io::Error::other("no address");
    for addr in addrs {
        match TcpStream::connect_timeout(addr, CONNECT_TIMEOUT) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Sends `request` and reads the response head.
pub fn send(request: &Request<'_>) -> Result<Response, RequestFailed> {
    let addr = request.addr();
    let failed = |kind| RequestFailed {
        kind,
        addr: addr.clone(),
    };
    let addrs: Vec<SocketAddr> = match (request.host, request.port).to_socket_addrs() {
        Ok(addrs) => addrs.collect(),
        Err(e) => {
            log::debug!("resolving {addr}: {e}");
            return Err(failed(FailKind::Dns));
        }
    };
    let mut attempt = 1;
    let mut stream = loop {
        match connect_once(&addrs) {
            Ok(stream) => break stream,
            Err(e) => {
                log::debug!("connect to {addr} (attempt {attempt}): {e}");
                if attempt >= CONNECT_ATTEMPTS {
                    return Err(failed(classify(&e)));
                }
                attempt += 1;
                std::thread::sleep(CONNECT_RETRY_PAUSE);
            }
        }
    };
    let io_failed = |e: io::Error| {
        log::debug!("request to {addr}: {e}");
        failed(classify(&e))
    };
    let _ = stream.set_nodelay(true);
    stream
        .set_write_timeout(request.read_timeout)
        .map_err(io_failed)?;
    stream
        .set_read_timeout(request.read_timeout)
        .map_err(io_failed)?;
    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: lager/{}\r\nConnection: close\r\nContent-Type: {}\r\nContent-Length: {}\r\n",
        request.method,
        request.path,
        env!("CARGO_PKG_VERSION"),
        request.content_type,
        request.body.len()
    );
    for (name, value) in &request.headers {
        head.push_str(name);
        head.push_str(": ");
        head.push_str(value);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    // From here on nothing is retried: the box may already run the job.
    // A small request goes out in one write (one segment on loopback).
    if request.body.len() <= SINGLE_WRITE_BYTES {
        let mut whole = head.into_bytes();
        whole.extend_from_slice(request.body);
        stream.write_all(&whole).map_err(io_failed)?;
    } else {
        stream.write_all(head.as_bytes()).map_err(io_failed)?;
        stream.write_all(request.body).map_err(io_failed)?;
    }
    Response::read_head(stream).map_err(io_failed)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Close,
    Length(u64),
    /// `remaining` bytes of the current chunk; `started` once a size line was read.
    Chunked {
        remaining: u64,
        started: bool,
    },
}

/// A response: status, headers, and the body still on the socket.
pub struct Response {
    pub status: u16,
    headers: Vec<(String, String)>,
    stream: TcpStream,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    framing: Framing,
    done: bool,
}

fn invalid(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

impl Response {
    fn read_head(stream: TcpStream) -> io::Result<Response> {
        let mut response = Response {
            status: 0,
            headers: Vec::new(),
            stream,
            buf: vec![0; BUFFER_BYTES].into_boxed_slice(),
            start: 0,
            end: 0,
            framing: Framing::Close,
            done: false,
        };
        let head_end = loop {
            if let Some(pos) = find(&response.buf[..response.end], b"\r\n\r\n") {
                break pos;
            }
            if response.end >= MAX_HEAD_BYTES {
                return Err(invalid("response head too large"));
            }
            if !response.fill()? {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the box closed the connection without answering",
                ));
            }
        };
        let head = String::from_utf8_lossy(&response.buf[..head_end]).into_owned();
        response.start = head_end + 4;
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or("");
        response.status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| invalid(format!("bad status line {status_line:?}")))?;
        response.headers = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        let chunked = response
            .header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        response.framing = if chunked {
            Framing::Chunked {
                remaining: 0,
                started: false,
            }
        } else if let Some(len) = response
            .header("content-length")
            .and_then(|v| v.parse::<u64>().ok())
        {
            Framing::Length(len)
        } else {
            Framing::Close
        };
        Ok(response)
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
    /// `idle` runs first: the caller's chance to flush before blocking.
    fn fill_after(&mut self, idle: &mut dyn FnMut()) -> io::Result<bool> {
        idle();
        self.fill()
    }

    fn fill(&mut self) -> io::Result<bool> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            return Err(invalid("response line too long"));
        }
        loop {
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

    fn eof() -> io::Error {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the connection closed in the middle of the response",
        )
    }

    /// Ensures `n` unread bytes are buffered.
    fn need(&mut self, n: usize, idle: &mut dyn FnMut()) -> io::Result<()> {
        while self.end - self.start < n {
            if !self.fill_after(idle)? {
                return Err(Self::eof());
            }
        }
        Ok(())
    }

    /// Reads the next chunk-size line; returns the size.
    fn chunk_size(&mut self, started: bool, idle: &mut dyn FnMut()) -> io::Result<u64> {
        if started {
            self.need(2, idle)?;
            if &self.buf[self.start..self.start + 2] != b"\r\n" {
                return Err(invalid("missing CRLF after a chunk"));
            }
            self.start += 2;
        }
        let line_end = loop {
            if let Some(pos) = find(&self.buf[self.start..self.end], b"\r\n") {
                break self.start + pos;
            }
            if !self.fill_after(idle)? {
                return Err(Self::eof());
            }
        };
        let line = String::from_utf8_lossy(&self.buf[self.start..line_end]).into_owned();
        self.start = line_end + 2;
        let size = line.split(';').next().unwrap_or("").trim();
        u64::from_str_radix(size, 16).map_err(|_| invalid(format!("bad chunk size {line:?}")))
    }

    /// The next piece of body; `None` at its proper end. A connection that
    /// closes before a chunked or sized body is complete is an error.
    /// `idle` runs before every read that may block on the socket.
    pub fn next(&mut self, idle: &mut dyn FnMut()) -> io::Result<Option<&[u8]>> {
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
                        // Trailers are not used; stop at the last chunk.
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
            return Err(Self::eof());
        }
        let take = limit.min((self.end - self.start) as u64) as usize;
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

    /// The whole body as text, up to `limit` bytes (error replies, JSON).
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

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// Serves one connection: reads the request head+body, answers `reply`.
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

    fn request(port: u16, body: &[u8]) -> Request<'_> {
        Request {
            method: "POST",
            host: "127.0.0.1",
            port,
            path: "/python",
            headers: vec![("Lager-Holder", "alice".to_string())],
            content_type: "multipart/form-data; boundary=b",
            body,
            read_timeout: Some(Duration::from_secs(5)),
        }
    }

    fn body_of(response: &mut Response) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(piece) = response.next(&mut || {})? {
            out.extend_from_slice(piece);
        }
        Ok(out)
    }

    #[test]
    fn chunked_body_is_decoded() {
        let (port, server) = serve(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nLager-Output-Version: 1\r\n\r\n\
              5\r\n1 1 a\r\n6;x=y\r\n- 1 0\n\r\n0\r\n\r\n"
                .to_vec(),
        );
        let mut response = send(&request(port, b"BODY")).expect("send");
        assert_eq!(response.status, 200);
        assert_eq!(response.header("lager-output-version"), Some("1"));
        assert_eq!(body_of(&mut response).expect("body"), b"1 1 a- 1 0\n");
        let sent = String::from_utf8(server.join().expect("server")).expect("utf8");
        assert!(sent.starts_with("POST /python HTTP/1.1\r\n"), "{sent}");
        assert!(sent.contains("Connection: close\r\n"), "{sent}");
        assert!(sent.contains("Lager-Holder: alice\r\n"), "{sent}");
        assert!(sent.ends_with("\r\n\r\nBODY"), "{sent}");
    }

    #[test]
    fn sized_and_close_delimited_bodies() {
        let (port, _server) =
            serve(b"HTTP/1.1 422 X\r\nContent-Length: 5\r\n\r\nabcdeEXTRA".to_vec());
        let mut response = send(&request(port, b"")).expect("send");
        assert_eq!(response.status, 422);
        assert_eq!(response.text(100).expect("text"), "abcde");
        let (port, _server) = serve(b"HTTP/1.0 200 OK\r\n\r\nto the end".to_vec());
        let mut response = send(&request(port, b"")).expect("send");
        assert_eq!(body_of(&mut response).expect("body"), b"to the end");
    }

    #[test]
    fn truncated_chunked_body_is_an_error() {
        let (port, _server) =
            serve(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n9\r\n1 5 ab".to_vec());
        let mut response = send(&request(port, b"")).expect("send");
        assert!(body_of(&mut response).is_err());
    }

    #[test]
    fn refused_is_retried_then_named() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        drop(listener);
        let start = std::time::Instant::now();
        let err = send(&request(port, b"")).err().expect("refused");
        assert_eq!(err.kind, FailKind::Refused);
        assert_eq!(
            err.to_string(),
            format!("Error: Connection refused by box (127.0.0.1:{port})")
        );
        let elapsed = start.elapsed();
        assert!(
            elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(3),
            "three attempts 0.5 s apart took {elapsed:?}"
        );
    }
}
