//! A raw `POST /python` client (runner.md §1, §3.1): sends a script as
//! `multipart/form-data`, reads the chunked framed stream to its exit
//! marker with large reads, and counts (or keeps) what arrived. It does no
//! rendering and writes nothing, so its throughput is the daemon's alone,
//! and comparing it with `lager python`'s tells a slow CLI from a slow
//! daemon.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::frames::{Dechunk, Frames};
use crate::net::check_loopback;
use crate::{fail, BenchError};

const BOUNDARY: &str = "lagerbench0b7c1d3e5f";
const READ_BYTES: usize = 256 * 1024;

/// The request for `script` as the CLI would send it (§1's part order),
/// attached, no timeout, stdout and stderr as separate streams.
pub fn render_request(addr: SocketAddr, filename: &str, script: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(script.len() + 1024);
    let mut text = |name: &str, value: &str| {
        body.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .as_bytes(),
        );
    };
    text("stdout_is_stderr", "False");
    text("detach", "0");
    text("timeout", "0");
    body.extend_from_slice(
        format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"script\"; filename=\"{filename}\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(script);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    let mut request = format!(
        "POST /python HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: lager-bench\r\nConnection: close\r\n\
         Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    request
}

/// What one run delivered.
pub struct RunResult {
    pub frames: Frames,
    /// Bytes read from the socket, HTTP head and chunk framing included.
    pub wire_bytes: u64,
    /// From connect to the exit marker.
    pub elapsed: Duration,
}

/// Sends `request` to `addr` and reads the stream to its exit marker.
/// `timeout` bounds every read and the whole run.
pub fn run(
    addr: SocketAddr,
    request: &[u8],
    keep_stdout: bool,
    timeout: Duration,
) -> Result<RunResult, BenchError> {
    check_loopback(addr)?;
    let started = Instant::now();
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| fail!("cannot connect to lagerd at {addr}: {e}"))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream
        .write_all(request)
        .map_err(|e| fail!("sending POST /python: {e}"))?;
    let mut buf = vec![0u8; READ_BYTES];
    let mut filled = 0;
    let mut wire_bytes = 0u64;
    let head_end = loop {
        if let Some(pos) = buf[..filled].windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
        if filled == buf.len() {
            return Err(fail!("response head larger than {READ_BYTES} bytes"));
        }
        let n = read_some(&mut stream, &mut buf[filled..])?;
        if n == 0 {
            return Err(fail!("lagerd closed the connection before answering"));
        }
        filled += n;
        wire_bytes += n as u64;
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    if !head.starts_with("http/1.1 200") {
        let first = head.lines().next().unwrap_or("").to_string();
        let body = String::from_utf8_lossy(&buf[head_end..filled]).into_owned();
        return Err(fail!("POST /python answered {first:?}: {body}"));
    }
    if !head.contains("\r\nlager-output-version: 1\r\n") {
        return Err(fail!(
            "POST /python answered without Lager-Output-Version: 1"
        ));
    }
    if !head.contains("\r\ntransfer-encoding: chunked\r\n") {
        return Err(fail!(
            "POST /python answered without chunked coding (HTTP/1.1 was sent)"
        ));
    }
    let mut dechunk = Dechunk::default();
    let mut frames = Frames::new(keep_stdout);
    dechunk
        .feed(&buf[head_end..filled], &mut frames)
        .map_err(|e| fail!("malformed stream: {e}"))?;
    while !frames.done() {
        if started.elapsed() > timeout {
            return Err(fail!("no exit marker within {timeout:?}"));
        }
        let n = read_some(&mut stream, &mut buf)?;
        if n == 0 {
            return Err(fail!(
                "the stream ended without an exit marker after {} stdout bytes",
                frames.bytes[1]
            ));
        }
        wire_bytes += n as u64;
        dechunk
            .feed(&buf[..n], &mut frames)
            .map_err(|e| fail!("malformed stream: {e}"))?;
    }
    Ok(RunResult {
        frames,
        wire_bytes,
        elapsed: started.elapsed(),
    })
}

fn read_some(stream: &mut TcpStream, buf: &mut [u8]) -> Result<usize, BenchError> {
    loop {
        match stream.read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(fail!("reading the stream: {e}")),
            Ok(n) => return Ok(n),
        }
    }
}
