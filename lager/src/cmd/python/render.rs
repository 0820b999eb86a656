//! Rendering a run's framed stream on the CLI's own stdout and stderr
//! (runner.md §5.4): payloads are written raw, coalesced per stream and
//! flushed whenever the socket has nothing more buffered, so a fast script
//! costs few syscalls and a slow one is still shown live.

use std::io;
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};

use super::frames::{FeedError, FrameParser, Sink};
use crate::transport::Response;

/// Flush early if this much output is pending on one stream.
const MAX_PENDING: usize = 1024 * 1024;

/// How a followed stream ended.
#[derive(Debug)]
pub enum Outcome {
    /// The exit marker's raw code.
    Exit(i64),
    /// No exit marker: EOF, reset, timeout or a malformed stream.
    Lost(String),
    /// The CLI's stdout is a closed pipe.
    BrokenPipe,
    /// The user detached (Ctrl+D while reattached on a TTY).
    Detached,
}

/// Set by the stdin thread on Ctrl+D before it shuts the socket down.
pub static DETACHING: AtomicBool = AtomicBool::new(false);

/// Writes all of `bytes` to file descriptor `fd`.
fn write_fd(fd: i32, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        // SAFETY: writes from a valid slice to a descriptor we do not own.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        bytes = &bytes[n as usize..];
    }
    Ok(())
}

/// The CLI's stdout (fd 1) and stderr (fd 2), written directly (not via
/// `std::io::Stdout`, whose line buffering would split large writes).
#[derive(Debug, Default)]
pub struct Terminal {
    pending: Vec<u8>,
    pending_fd: i32,
    /// Set once stdout refused a write (EPIPE etc.).
    stdout_failed: bool,
}

impl Terminal {
    pub fn new() -> Terminal {
        Terminal {
            pending: Vec::with_capacity(256 * 1024),
            pending_fd: 1,
            stdout_failed: false,
        }
    }

    pub fn stdout_failed(&self) -> bool {
        self.stdout_failed
    }

    /// Writes out what is pending. A failing stderr is ignored (nothing
    /// could report it); a failing stdout marks the terminal as broken.
    pub fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let result = write_fd(self.pending_fd, &self.pending);
        if let Err(e) = result {
            log::debug!("writing to fd {}: {e}", self.pending_fd);
            if self.pending_fd == 1 {
                self.stdout_failed = true;
            }
        }
        self.pending.clear();
    }

    fn push(&mut self, fd: i32, bytes: &[u8]) -> io::Result<()> {
        if self.stdout_failed {
            return Err(io::Error::from(io::ErrorKind::BrokenPipe));
        }
        if fd != self.pending_fd {
            // Keeps the interleaving of stdout and stderr when both are
            // one terminal.
            self.flush();
            self.pending_fd = fd;
        }
        self.pending.extend_from_slice(bytes);
        if self.pending.len() >= MAX_PENDING {
            self.flush();
        }
        if self.stdout_failed {
            return Err(io::Error::from(io::ErrorKind::BrokenPipe));
        }
        Ok(())
    }
}

impl Sink for Terminal {
    fn stdout(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.push(1, bytes)
    }

    fn stderr(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.push(2, bytes)
    }

    fn channel(&mut self, text: &str) -> io::Result<()> {
        self.push(1, text.as_bytes())?;
        self.push(1, b"\n")
    }
}

/// Reads `response`'s frames to the exit marker, writing them to `sink`.
pub fn follow(response: &mut Response, terminal: &mut Terminal) -> Outcome {
    let socket: Option<TcpStream> = response.socket().ok();
    let mut parser = FrameParser::new();
    loop {
        let mut idle = || {
            terminal.flush();
            if terminal.stdout_failed() {
                // Stop waiting for the box: nobody reads our output.
                if let Some(socket) = &socket {
                    let _ = socket.shutdown(Shutdown::Read);
                }
            }
        };
        let next = response.next(&mut idle);
        let result = match next {
            Ok(Some(data)) => parser.feed(data, terminal),
            Ok(None) => {
                terminal.flush();
                return ended(terminal, "the stream ended without an exit marker".into());
            }
            Err(e) => {
                terminal.flush();
                return ended(terminal, e.to_string());
            }
        };
        match result {
            Ok(Some(code)) => {
                terminal.flush();
                return Outcome::Exit(code);
            }
            Ok(None) => {}
            Err(FeedError::Sink(_)) => return Outcome::BrokenPipe,
            Err(FeedError::Protocol(what)) => {
                terminal.flush();
                return Outcome::Lost(format!("malformed output stream: {what}"));
            }
        }
    }
}

fn ended(terminal: &Terminal, detail: String) -> Outcome {
    if terminal.stdout_failed() {
        Outcome::BrokenPipe
    } else if DETACHING.load(Ordering::SeqCst) {
        Outcome::Detached
    } else {
        Outcome::Lost(detail)
    }
}
