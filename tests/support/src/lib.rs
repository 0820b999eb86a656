//! Test harness shared by `lagerd/tests/it` and `lager/tests/it`: a private
//! temp dir per test and a real `lagerd` process on an ephemeral loopback
//! port, killed when the test drops it. No mocks: every test drives the real
//! binaries over real sockets.

mod sshd;

pub use sshd::Sshd;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A directory removed (with its contents) on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "lager-test-{tag}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let path = std::env::temp_dir().join(name);
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Path of a workspace binary built next to the test's own binary.
///
/// `cargo test --workspace` builds every member's binaries before running any
/// test, so `lager` and `lagerd` sit side by side in the target dir.
pub fn bin_path(sibling_of: &str, name: &str) -> PathBuf {
    let path = Path::new(sibling_of).with_file_name(name);
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo test --workspace` so every binary is built",
        path.display()
    );
    path
}

/// A running `lagerd`, killed (SIGKILL) and reaped on drop.
pub struct Daemon {
    pub child: Child,
    /// Bound addresses, in the order of the `--listen` flags.
    pub addrs: Vec<SocketAddr>,
    pub state_dir: PathBuf,
    stdout: Option<BufReader<ChildStdout>>,
}

impl Daemon {
    /// Starts `lagerd` on one ephemeral loopback port with `state_dir`.
    pub fn start(lagerd: &Path, state_dir: &Path, extra_args: &[&str]) -> Daemon {
        Daemon::start_listening(lagerd, state_dir, &["127.0.0.1:0"], extra_args)
    }

    pub fn start_listening(
        lagerd: &Path,
        state_dir: &Path,
        listen: &[&str],
        extra_args: &[&str],
    ) -> Daemon {
        Daemon::start_with_env(lagerd, state_dir, listen, extra_args, &[])
    }

    /// As `start_listening`, with extra environment for the daemon.
    pub fn start_with_env(
        lagerd: &Path,
        state_dir: &Path,
        listen: &[&str],
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> Daemon {
        let mut cmd = Command::new(lagerd);
        cmd.envs(env.iter().copied());
        for addr in listen {
            cmd.args(["--listen", addr]);
        }
        cmd.arg("--state-dir")
            .arg(state_dir)
            .args(extra_args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("spawn lagerd");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut addrs = Vec::new();
        for _ in listen {
            let mut line = String::new();
            stdout.read_line(&mut line).expect("read lagerd stdout");
            // Contract: one line per listener, `listening on <ip:port>`.
            let addr = line
                .trim()
                .strip_prefix("listening on ")
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| panic!("lagerd did not report its address, said {line:?}"));
            addrs.push(addr);
        }
        Daemon {
            child,
            addrs,
            state_dir: state_dir.to_path_buf(),
            stdout: Some(stdout),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends `signal` and waits (bounded) for the exit status.
    pub fn signal_and_wait(
        &mut self,
        signal: i32,
        within: Duration,
    ) -> Option<std::process::ExitStatus> {
        unsafe { libc::kill(self.pid(), signal) };
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// Rest of the daemon's stdout after the address lines (drains to EOF).
    pub fn take_stdout(&mut self) -> String {
        let mut rest = String::new();
        if let Some(mut out) = self.stdout.take() {
            let _ = out.read_to_string(&mut rest);
        }
        rest
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 response as a test sees it.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends raw request bytes on a fresh connection and reads one response.
///
/// Deliberately hand-rolled: tests must be able to send what no HTTP client
/// library would (bad framing, huge headers, early close).
pub fn raw_request(addr: SocketAddr, request: &[u8]) -> std::io::Result<Reply> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.write_all(request)?;
    read_reply(&mut stream)
}

/// `method path` with an optional JSON body, `Connection: close`.
pub fn request(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> Reply {
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    raw_request(addr, req.as_bytes()).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// Parses a JSON body or panics with the text that was not JSON.
pub fn json_of(reply: &Reply) -> serde_json_lite::Value {
    serde_json_lite::parse(&reply.text())
}

/// Reads one response (Content-Length, chunked or close-delimited).
pub fn read_reply(stream: &mut impl Read) -> std::io::Result<Reply> {
    read_reply_buffered(&mut BufReader::new(stream))
}

/// `read_reply` on a reader kept across calls, for pipelined responses.
/// Interim 1xx responses are skipped, as RFC 9110 §15.2 asks of every client.
pub fn read_reply_buffered(reader: &mut impl BufRead) -> std::io::Result<Reply> {
    let (status, headers) = loop {
        let (status, headers) = read_head(reader)?;
        if !(100..200).contains(&status) {
            break (status, headers);
        }
    };
    let find = |name: &str| {
        headers
            .iter()
            .find(|(k, _): &&(String, String)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let mut body = Vec::new();
    if let Some(len) = find("content-length").and_then(|v| v.parse::<usize>().ok()) {
        body.resize(len, 0);
        reader.read_exact(&mut body)?;
    } else if find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut size_line = String::new();
            reader.read_line(&mut size_line)?;
            let size = usize::from_str_radix(size_line.trim(), 16)
                .map_err(|_| std::io::Error::other(format!("bad chunk size {size_line:?}")))?;
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk)?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else {
        reader.read_to_end(&mut body)?;
    }
    Ok(Reply {
        status,
        headers,
        body,
    })
}

fn read_head(reader: &mut impl BufRead) -> std::io::Result<(u16, Vec<(String, String)>)> {
    let mut status_line = String::new();
    reader.read_line(&mut status_line)?;
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {status_line:?}")))?;
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    Ok((status, headers))
}

/// Polls `cond` every 10 ms until it holds or `within` passes.
pub fn wait_until(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub mod serde_json_lite {
    //! Re-export so test crates need not name serde_json themselves.
    pub use serde_json::Value;
    pub fn parse(text: &str) -> Value {
        serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"))
    }
}

/// A loopback port that refuses connections for the rest of the test run:
/// a socket bound to it but never listening. A port merely bound and
/// released can be taken by a parallel test, or a client can connect to
/// itself through it, and the "dead" box comes alive (seen in CI).
pub fn refused_port() -> u16 {
    // SAFETY: plain socket calls on a local sockaddr_in of the size passed;
    // the descriptor is ours and deliberately never closed.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let mut addr: libc::sockaddr_in = std::mem::zeroed();
        addr.sin_family = libc::AF_INET as libc::sa_family_t;
        addr.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        assert_eq!(
            libc::bind(fd, (&addr as *const libc::sockaddr_in).cast(), len),
            0,
            "bind"
        );
        let mut bound: libc::sockaddr_in = std::mem::zeroed();
        let mut bound_len = len;
        libc::getsockname(
            fd,
            (&mut bound as *mut libc::sockaddr_in).cast(),
            &mut bound_len,
        );
        // The fd stays open (deliberately leaked) until the test binary exits.
        u16::from_be(bound.sin_port)
    }
}
