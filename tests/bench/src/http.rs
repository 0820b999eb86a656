//! A minimal HTTP/1.1 client for one persistent keep-alive connection:
//! requests are pre-rendered bytes, responses are framed by
//! `Content-Length` (all lagerd sends). The hot path reuses one buffer and
//! allocates nothing, so the load generator measures the server, not itself.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::net::check_loopback;
use crate::BenchError;

/// A request rendered once and sent many times.
pub fn render(method: &str, path: &str, body: Option<&str>) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    match body {
        Some(body) => {
            out.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ));
        }
        None => out.push_str("\r\n"),
    }
    out.into_bytes()
}

pub struct Connection {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Bytes of `buf` that hold data.
    filled: usize,
}

/// One parsed response; `body` indexes the connection's buffer.
pub struct Response {
    pub status: u16,
    body_start: usize,
    body_end: usize,
}

impl Connection {
    /// Connects (loopback only) with `TCP_NODELAY`, as any latency-minded
    /// client would, and a read timeout so a stalled server ends the run.
    pub fn open(addr: SocketAddr, timeout: Duration) -> Result<Connection, BenchError> {
        check_loopback(addr)?;
        let stream = TcpStream::connect_timeout(&addr, timeout)
            .map_err(|e| crate::fail!("cannot connect to {addr}: {e}; is lagerd running there?"))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        Ok(Connection {
            stream,
            buf: vec![0; 16 * 1024],
            filled: 0,
        })
    }

    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Sends `request` and reads one whole response.
    pub fn call(&mut self, request: &[u8]) -> io::Result<Response> {
        self.stream.write_all(request)?;
        self.read_response()
    }

    /// The body of `response` (valid until the next call).
    pub fn body(&self, response: &Response) -> &[u8] {
        &self.buf[response.body_start..response.body_end]
    }

    fn read_response(&mut self) -> io::Result<Response> {
        // Whatever followed the previous response is not expected: lagerd
        // answers one request at a time and we never pipeline.
        self.filled = 0;
        let head_end = loop {
            if let Some(pos) = find(&self.buf[..self.filled], b"\r\n\r\n") {
                break pos + 4;
            }
            self.fill()?;
        };
        let head = &self.buf[..head_end];
        let status = parse_status(head)?;
        let length = content_length(head)?;
        let closing = find(head, b"\r\nConnection: close\r\n").is_some();
        let body_end = head_end + length;
        if body_end > self.buf.len() {
            self.buf.resize(body_end, 0);
        }
        while self.filled < body_end {
            self.fill()?;
        }
        if closing {
            return Err(io::Error::other(
                "server closed the keep-alive connection (Connection: close)",
            ));
        }
        Ok(Response {
            status,
            body_start: head_end,
            body_end,
        })
    }

    fn fill(&mut self) -> io::Result<()> {
        if self.filled == self.buf.len() {
            if self.buf.len() >= 1024 * 1024 {
                return Err(io::Error::other("response head larger than 1 MiB"));
            }
            self.buf.resize(self.buf.len() * 2, 0);
        }
        let n = loop {
            match self.stream.read(&mut self.buf[self.filled..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other?,
            }
        };
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.filled += n;
        Ok(())
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn parse_status(head: &[u8]) -> io::Result<u16> {
    // "HTTP/1.1 200 OK"
    head.get(9..12)
        .filter(|_| head.starts_with(b"HTTP/1."))
        .and_then(|digits| std::str::from_utf8(digits).ok())
        .and_then(|digits| digits.parse().ok())
        .ok_or_else(|| io::Error::other("malformed status line"))
}

fn content_length(head: &[u8]) -> io::Result<usize> {
    for line in head.split(|b| *b == b'\n') {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        if line[..colon].eq_ignore_ascii_case(b"content-length") {
            let value = std::str::from_utf8(&line[colon + 1..])
                .map_err(|_| io::Error::other("Content-Length is not ASCII"))?;
            return value
                .trim()
                .parse()
                .map_err(|_| io::Error::other("invalid Content-Length"));
        }
    }
    Err(io::Error::other(
        "response without Content-Length (chunked replies are not expected from lock routes)",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_and_length() {
        let head = b"HTTP/1.1 409 Conflict\r\ncontent-length: 12\r\n\r\n";
        assert_eq!(parse_status(head).unwrap(), 409);
        assert_eq!(content_length(head).unwrap(), 12);
        assert!(parse_status(b"SSH-2.0\r\n\r\n").is_err());
        assert!(content_length(b"HTTP/1.1 200 OK\r\n\r\n").is_err());
    }

    #[test]
    fn renders_requests() {
        let post = render("POST", "/lock", Some("{\"user\":\"a\"}"));
        assert!(post.ends_with(b"Content-Length: 12\r\n\r\n{\"user\":\"a\"}"));
        assert!(render("GET", "/lock", None).ends_with(b"\r\n\r\n"));
    }
}
