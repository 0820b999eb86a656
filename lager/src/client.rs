//! One box as requests see it: its address and its bearer token
//! (locking.md A.9a). Every request goes through [`crate::transport`];
//! the methods here are the common shapes of it (a short GET or JSON POST
//! under a total timeout, a stream under an idle one).

use std::time::Duration;

use serde_json::Value;

use crate::transport::{Conn, Connect, Reply, Request, Response, TransportError, Wait};

/// How to reach one box over HTTP.
#[derive(Debug, Clone)]
pub struct Client {
    /// Bare host (IPv6 without brackets).
    host: String,
    port: u16,
    /// `host:port`, IPv6 hosts in brackets.
    addr: String,
    token: Option<String>,
}

impl Client {
    /// `host` is a bare host (IPv6 without brackets).
    pub fn new(host: &str, port: u16, token: Option<String>) -> Client {
        Client {
            host: host.to_string(),
            port,
            addr: crate::transport::host_port(host, port),
            token,
        }
    }

    /// `host:port` as used in messages.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// A connection for `request`, not yet sent: a caller that must be
    /// able to cut the exchange takes its socket first.
    pub fn connect(&self, request: &Request<'_>) -> Result<Conn, TransportError> {
        Conn::open(&self.host, self.port, self.token.as_deref(), request)
    }

    /// Sends `request`; the body stays on the socket for the caller.
    pub fn open(&self, request: &Request<'_>) -> Result<Response, TransportError> {
        self.connect(request)?.send(request)
    }

    /// Sends `request` and reads the whole answer.
    pub fn call(&self, request: &Request<'_>) -> Result<Reply, TransportError> {
        self.connect(request)?.call(request)
    }

    pub fn get(&self, path: &str, timeout: Duration) -> Result<Reply, TransportError> {
        self.call(&Request::get(path, Wait::Total(timeout)))
    }

    /// GET with extra request headers.
    pub fn get_with(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        timeout: Duration,
    ) -> Result<Reply, TransportError> {
        self.call(&Request::get(path, Wait::Total(timeout)).headers(headers))
    }

    pub fn post_json(
        &self,
        path: &str,
        body: &Value,
        timeout: Duration,
    ) -> Result<Reply, TransportError> {
        self.post_json_with(path, body, &[], timeout)
    }

    /// POST JSON with extra request headers (`Lager-Holder`, locking.md A.10).
    pub fn post_json_with(
        &self,
        path: &str,
        body: &Value,
        headers: &[(&str, &str)],
        timeout: Duration,
    ) -> Result<Reply, TransportError> {
        self.post_json_as(path, body, headers, Connect::BOX, timeout)
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
        self.post_json_as(path, body, &[], Connect::within(connect), timeout)
    }

    fn post_json_as(
        &self,
        path: &str,
        body: &Value,
        headers: &[(&str, &str)],
        connect: Connect,
        timeout: Duration,
    ) -> Result<Reply, TransportError> {
        let body = body.to_string();
        let request = Request::post(
            path,
            "application/json",
            body.as_bytes(),
            Wait::Total(timeout),
        );
        self.call(&request.headers(headers).connect(connect))
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
        self.call(&Request::post(path, content_type, body, Wait::Total(timeout)).headers(headers))
    }

    /// GET whose body the caller streams (downloads): `connect` bounds the
    /// connection, `read` every wait for bytes, not the total.
    pub fn get_stream(
        &self,
        path: &str,
        connect: Duration,
        read: Duration,
    ) -> Result<Response, TransportError> {
        self.open(&Request::get(path, Wait::Idle(read)).connect(Connect::within(connect)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::TransportKind;
    use std::io::{Read, Write};
    use std::net::TcpListener;

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
        assert!(
            request.contains("Content-Type: application/json"),
            "{request}"
        );
    }

    #[test]
    fn ipv6_hosts_get_brackets() {
        assert_eq!(Client::new("::1", 9000, None).addr(), "[::1]:9000");
        assert_eq!(Client::new("10.0.0.5", 9100, None).addr(), "10.0.0.5:9100");
    }
}
