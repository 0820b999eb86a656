//! HTTP to one box: blocking ureq with a timeout on every request (connect
//! included), the bearer token of locking.md A.9a, and transport failures
//! mapped to a few classes the messages can name.
//!
//! Every HTTP status, including 4xx/5xx, is a [`Reply`]; only "no answer"
//! is a [`TransportError`].

use std::fmt;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;

/// Default connect timeout: an unreachable box must fail within it.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// `LAGER_BOX_TIMEOUT_MS`, read once: caps every fixed request timeout and
/// the connect timeout, so benchmarks and tests need not wait 5 s per dead
/// box. A queued lock request's long wait (locking.md B.4) is not capped.
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

/// A response with any status.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: String,
}

impl Reply {
    /// The body as a JSON value, if it is JSON.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_str(&self.body).ok()
    }
}

/// A response whose body is read as a stream.
pub struct StreamReply {
    pub status: u16,
    pub content_encoding: Option<String>,
    pub reader: Box<dyn std::io::Read + Send + Sync + 'static>,
}

/// Why a request got no HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransportKind {
    /// Nothing listens there (connection refused, host or network unreachable).
    Refused,
    /// No connection or no answer within the timeout.
    Timeout,
    /// The host name does not resolve.
    Dns,
    /// Anything else (connection reset, malformed response, ...).
    Other(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportError {
    pub kind: TransportKind,
    /// `host:port` the request went to.
    pub addr: String,
    pub timeout: Duration,
    /// The connection was made and the request sent before it failed, so
    /// the box may still act on it (instruments.md §8's read timeout).
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
            TransportKind::Timeout => write!(
                f,
                "no answer from {addr} within {}; check that the box is powered on and reachable (ping it), then retry",
                fmt_timeout(self.timeout)
            ),
            TransportKind::Dns => write!(
                f,
                "cannot resolve the host of {addr}; check the name or save the box by IP address"
            ),
            TransportKind::Other(detail) => write!(f, "{detail} (talking to {addr}); retry, or check the box with: lager hello"),
        }
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

/// How to reach one box over HTTP.
#[derive(Debug, Clone)]
pub struct Client {
    /// `host:port`, IPv6 hosts in brackets.
    addr: String,
    token: Option<String>,
}

impl Client {
    /// `host` is a bare host (IPv6 without brackets).
    pub fn new(host: &str, port: u16, token: Option<String>) -> Client {
        let addr = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        Client { addr, token }
    }

    /// `host:port` as used in URLs and messages.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub fn get(&self, path: &str, timeout: Duration) -> Result<Reply, TransportError> {
        self.send(
            "GET",
            path,
            &[],
            None,
            self.connect_within(timeout),
            timeout,
        )
    }

    /// The usual connect budget, never longer than the whole request's.
    fn connect_within(&self, timeout: Duration) -> Duration {
        capped(CONNECT_TIMEOUT).min(timeout)
    }

    /// GET with extra request headers.
    pub fn get_with(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        timeout: Duration,
    ) -> Result<Reply, TransportError> {
        self.send(
            "GET",
            path,
            headers,
            None,
            self.connect_within(timeout),
            timeout,
        )
    }

    pub fn post_json(
        &self,
        path: &str,
        body: &Value,
        timeout: Duration,
    ) -> Result<Reply, TransportError> {
        let connect = self.connect_within(timeout);
        self.send("POST", path, &[], Some(body.to_string()), connect, timeout)
    }

    /// POST JSON with extra request headers (`Lager-Holder`, locking.md A.10).
    pub fn post_json_with(
        &self,
        path: &str,
        body: &Value,
        headers: &[(&str, &str)],
        timeout: Duration,
    ) -> Result<Reply, TransportError> {
        let connect = self.connect_within(timeout);
        self.send(
            "POST",
            path,
            headers,
            Some(body.to_string()),
            connect,
            timeout,
        )
    }

    /// POST JSON with its own connect timeout (the runner's management
    /// requests connect within 7 s, runner.md §5.6).
    pub fn post_json_timeouts(
        &self,
        path: &str,
        body: &Value,
        connect: Duration,
        timeout: Duration,
    ) -> Result<Reply, TransportError> {
        let connect = capped(connect).min(timeout);
        self.send("POST", path, &[], Some(body.to_string()), connect, timeout)
    }

    /// POST a binary body (`lager install-wheel`'s multipart upload).
    pub fn post_bytes(
        &self,
        path: &str,
        content_type: &str,
        body: &[u8],
        headers: &[(&str, &str)],
        timeout: Duration,
    ) -> Result<Reply, TransportError> {
        let connect = self.connect_within(timeout);
        self.send_body(
            "POST",
            path,
            headers,
            Some((content_type, body)),
            connect,
            timeout,
        )
    }

    /// GET whose body is streamed by the caller (downloads): `connect`
    /// bounds the connection, `read` every wait for bytes, not the total.
    pub fn get_stream(
        &self,
        path: &str,
        connect: Duration,
        read: Duration,
    ) -> Result<StreamReply, TransportError> {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(capped(connect))
            .timeout_read(read)
            .user_agent(concat!("lager/", env!("CARGO_PKG_VERSION")))
            .build();
        let url = format!("http://{}{path}", self.addr);
        let mut request = agent.get(&url);
        if let Some(token) = &self.token {
            request = request.set("Authorization", &format!("Bearer {token}"));
        }
        log::debug!("GET {url} (streamed)");
        let response = match request.call() {
            Ok(response) => response,
            Err(ureq::Error::Status(_, response)) => response,
            Err(ureq::Error::Transport(transport)) => {
                return Err(self.transport_error(&transport, read))
            }
        };
        Ok(StreamReply {
            status: response.status(),
            content_encoding: response.header("Content-Encoding").map(str::to_string),
            reader: response.into_reader(),
        })
    }

    fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<String>,
        connect: Duration,
        timeout: Duration,
    ) -> Result<Reply, TransportError> {
        let body = body.as_ref().map(|b| ("application/json", b.as_bytes()));
        self.send_body(method, path, headers, body, connect, timeout)
    }

    fn send_body(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<(&str, &[u8])>,
        connect: Duration,
        timeout: Duration,
    ) -> Result<Reply, TransportError> {
        // A fresh agent per request: its connect timeout must not exceed
        // this request's budget (ureq's default connect timeout is 30 s).
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(connect)
            .timeout(timeout)
            .user_agent(concat!("lager/", env!("CARGO_PKG_VERSION")))
            .build();
        let url = format!("http://{}{path}", self.addr);
        let mut request = agent.request(method, &url);
        if let Some(token) = &self.token {
            request = request.set("Authorization", &format!("Bearer {token}"));
        }
        for (name, value) in headers {
            request = request.set(name, value);
        }
        log::debug!("{method} {url} (timeout {timeout:?})");
        let result = match body {
            Some((content_type, body)) => {
                request.set("Content-Type", content_type).send_bytes(body)
            }
            None => request.call(),
        };
        let response = match result {
            Ok(response) => response,
            Err(ureq::Error::Status(_, response)) => response,
            Err(ureq::Error::Transport(transport)) => {
                return Err(self.transport_error(&transport, timeout))
            }
        };
        let status = response.status();
        let body = response.into_string().map_err(|e| TransportError {
            kind: io_kind(&e).unwrap_or_else(|| TransportKind::Other(e.to_string())),
            addr: self.addr.clone(),
            timeout,
            connected: true,
        })?;
        log::trace!("{method} {url} -> {status} {body}");
        Ok(Reply { status, body })
    }

    fn transport_error(&self, error: &ureq::Transport, timeout: Duration) -> TransportError {
        log::debug!("transport error talking to {}: {error}", self.addr);
        let io = std::error::Error::source(error)
            .and_then(|source| source.downcast_ref::<std::io::Error>())
            .and_then(io_kind);
        let kind = match (error.kind(), io) {
            (_, Some(kind)) => kind,
            (ureq::ErrorKind::Dns, None) => TransportKind::Dns,
            (ureq::ErrorKind::ConnectionFailed, None) => TransportKind::Refused,
            (_, None) => TransportKind::Other(
                error
                    .message()
                    .map(str::to_string)
                    .unwrap_or_else(|| error.kind().to_string()),
            ),
        };
        let kind = match (kind, error.kind()) {
            // ureq reports a failed lookup as an io error too; the kind says more.
            (TransportKind::Other(_), ureq::ErrorKind::Dns) => TransportKind::Dns,
            (kind, _) => kind,
        };
        TransportError {
            kind,
            addr: self.addr.clone(),
            timeout,
            // ureq reports everything before the connection stands (DNS,
            // connect, connect timeout) with its own kinds; Io comes later.
            connected: error.kind() == ureq::ErrorKind::Io,
        }
    }
}

fn io_kind(error: &std::io::Error) -> Option<TransportKind> {
    use std::io::ErrorKind as K;
    match error.kind() {
        K::TimedOut | K::WouldBlock => Some(TransportKind::Timeout),
        K::ConnectionRefused | K::HostUnreachable | K::NetworkUnreachable => {
            Some(TransportKind::Refused)
        }
        K::ConnectionReset | K::ConnectionAborted | K::UnexpectedEof | K::BrokenPipe => Some(
            TransportKind::Other("the box closed the connection without answering".to_string()),
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::time::Instant;

    #[test]
    fn refused_is_classified_and_fast() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        drop(listener);
        let client = Client::new("127.0.0.1", port, None);
        let err = client.get("/status", Duration::from_secs(5)).unwrap_err();
        assert_eq!(err.kind, TransportKind::Refused);
        assert!(
            err.to_string().contains(&format!("127.0.0.1:{port}")),
            "{err}"
        );
    }

    #[test]
    fn a_silent_server_times_out_within_the_budget() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let start = Instant::now();
        let client = Client::new("127.0.0.1", port, None);
        let err = client
            .get("/status", Duration::from_millis(300))
            .unwrap_err();
        assert_eq!(err.kind, TransportKind::Timeout, "{err}");
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
        drop(listener);
    }

    #[test]
    fn error_statuses_are_replies_and_token_is_sent() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().expect("accept");
            let mut buf = [0u8; 4096];
            let n = stream.read(&mut buf).expect("read");
            let request = String::from_utf8_lossy(&buf[..n]).to_string();
            let body = r#"{"error":"Box is locked by bob"}"#;
            let _ = write!(
                stream,
                "HTTP/1.1 409 Conflict\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            request
        });
        let client = Client::new("127.0.0.1", port, Some("s3cret".into()));
        let reply = client
            .post_json(
                "/lock",
                &serde_json::json!({"user": "a"}),
                Duration::from_secs(5),
            )
            .expect("reply");
        assert_eq!(reply.status, 409);
        assert_eq!(reply.json().expect("json")["error"], "Box is locked by bob");
        let request = server.join().expect("server");
        assert!(
            request.contains("Authorization: Bearer s3cret"),
            "{request}"
        );
    }

    #[test]
    fn ipv6_hosts_get_brackets() {
        assert_eq!(Client::new("::1", 9000, None).addr(), "[::1]:9000");
        assert_eq!(Client::new("10.0.0.5", 9100, None).addr(), "10.0.0.5:9100");
    }
}
