//! The capture thread of one console (console.md §2): open the port, read
//! everything it says into the ring and the on-disk log, and when it goes
//! away record `gone`, look for it again every 200 ms (sysfs or the path,
//! no udev), and record `back` once it is open again.
//!
//! Readers never slow this loop: it only copies bytes into the ring under
//! the console's mutex and wakes them. The log is written here too, with
//! plain `write(2)` calls into the page cache.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use log::{info, warn};
use serde_json::json;

use super::params::PortSpec;
use super::port::{self, OpenError, Port, Roots};
use super::{held_by, now_us, timestamp, Console, State};

/// How often a missing port is looked for: within 1 s of it appearing.
const LOOK_EVERY: Duration = Duration::from_millis(200);
/// How often a held or failing port is retried (each try scans /proc).
const RETRY_EVERY: Duration = Duration::from_secs(1);
/// How long a read waits before checking whether to stop.
const POLL_MS: i32 = 200;
/// Largest read: a pty hands over at most a few KiB, a USB adapter less.
const READ_BYTES: usize = 64 * 1024;

pub(super) struct Capture {
    pub console: Arc<Console>,
    pub roots: Roots,
    pub log_dir: PathBuf,
    pub log_file_bytes: u64,
}

/// Why reading stopped.
enum Ended {
    Stopping,
    Gone(String),
}

impl Capture {
    pub fn run(self) {
        let Some(spec) = self.console.spec.clone() else {
            return;
        };
        let mut log = Log::open(self.log_dir.clone(), self.log_file_bytes);
        log.note(&format!(
            "lagerd {} capturing {} ({spec}) from offset {}",
            common::VERSION,
            self.console.name,
            self.console.inner().ring.end()
        ));
        // Whether readers were told it is gone; the next open says `back`.
        let mut announced_gone = false;
        while !self.console.stopping() {
            let (node, opened) = match self.open(&spec) {
                Ok(open) => open,
                Err((state, wait)) => {
                    self.not_open(&mut log, &mut announced_gone, state);
                    self.pause(wait);
                    continue;
                }
            };
            let port = Arc::new(opened);
            self.opened(&mut log, &mut announced_gone, &node, port.clone());
            let ended = self.read(&port, &mut log);
            drop(port);
            match ended {
                Ended::Stopping => break,
                Ended::Gone(reason) => {
                    self.console.gone.fetch_add(1, Ordering::Relaxed);
                    info!(
                        "console {}: {} gone ({reason})",
                        self.console.name,
                        node.display()
                    );
                    self.not_open(
                        &mut log,
                        &mut announced_gone,
                        State::Gone {
                            since_us: now_us(),
                            reason,
                        },
                    );
                }
            }
        }
        let mut inner = self.console.inner();
        inner.port = None;
        drop(inner);
        self.console.changed.notify_all();
    }

    /// The port, found and opened; or, when it cannot be, the state to
    /// record and how long to wait before looking again: missing ports are
    /// looked for often, held or failing ones (a /proc scan each) less.
    fn open(&self, spec: &PortSpec) -> Result<(PathBuf, Port), (State, Duration)> {
        let gone = || {
            let reason = "not present".into();
            (
                State::Gone {
                    since_us: now_us(),
                    reason,
                },
                LOOK_EVERY,
            )
        };
        let held = |path: &Path, holders| {
            let path = path.to_path_buf();
            (
                State::Held {
                    path,
                    holders,
                    since_us: now_us(),
                },
                RETRY_EVERY,
            )
        };
        let node = port::find(spec, &self.roots).ok_or_else(gone)?.node;
        let holders = port::holders(&node, &self.roots);
        if !holders.is_empty() {
            return Err(held(&node, holders));
        }
        match Port::open(&node, &self.console.params) {
            Ok(port) => Ok((node, port)),
            Err(OpenError::Missing) => Err(gone()),
            Err(OpenError::Busy) => Err(held(&node, port::holders(&node, &self.roots))),
            Err(error) => {
                let error = error.to_string();
                let path = Some(node);
                Err((
                    State::Failed {
                        path,
                        error,
                        since_us: now_us(),
                    },
                    RETRY_EVERY,
                ))
            }
        }
    }

    /// Sleeps up to `wait`, waking at once when the console is stopped.
    fn pause(&self, wait: Duration) {
        let inner = self.console.inner();
        if !self.console.stopping() {
            let _ = self.console.changed.wait_timeout(inner, wait);
        }
    }

    fn opened(
        &self,
        log: &mut Log,
        announced_gone: &mut bool,
        node: &std::path::Path,
        port: Arc<Port>,
    ) {
        let time = now_us();
        let path = node.display().to_string();
        info!("console {}: capturing {path}", self.console.name);
        self.console.opens.fetch_add(1, Ordering::Relaxed);
        let mut inner = self.console.inner();
        if *announced_gone {
            // The node a link or a re-enumerated adapter leads to now.
            let device = std::fs::canonicalize(node)
                .map_or_else(|_| path.clone(), |real| real.display().to_string());
            inner.ring.push_event(
                json!({"event": "back", "path": path, "device": device, "text": format!("back on {device}")}),
                time,
            );
            log.note(&format!(
                "back at {} on {path} (offset {})",
                timestamp(time),
                inner.ring.end()
            ));
            *announced_gone = false;
        }
        inner.state = State::Open {
            path: node.to_path_buf(),
            since_us: time,
        };
        inner.port = Some(port);
        drop(inner);
        self.console.changed.notify_all();
    }

    /// Records a state other than open; the first one after open (or at
    /// start) is a `gone` event for readers and the log.
    fn not_open(&self, log: &mut Log, announced_gone: &mut bool, state: State) {
        let mut inner = self.console.inner();
        // Gone stays gone with its first reason and time ("unplugged" at
        // 12:00, not "not present" a moment later).
        let unchanged = matches!(
            (&inner.state, &state),
            (State::Gone { .. }, State::Gone { .. })
        ) || matches!(
            (&inner.state, &state),
            (State::Held { holders: a, .. }, State::Held { holders: b, .. }) if a == b
        ) || matches!(
            (&inner.state, &state),
            (State::Failed { error: a, .. }, State::Failed { error: b, .. }) if a == b
        );
        if unchanged {
            return;
        }
        let reason = match &state {
            State::Held { holders, .. } => held_by(holders),
            other => other.why(),
        };
        warn!("console {}: not captured: {reason}", self.console.name);
        if !*announced_gone {
            let time = now_us();
            inner.ring.push_event(
                json!({"event": "gone", "reason": reason, "text": format!("gone ({reason})")}),
                time,
            );
            log.note(&format!(
                "gone at {} ({reason}) (offset {})",
                timestamp(time),
                inner.ring.end()
            ));
            *announced_gone = true;
        }
        inner.state = state;
        inner.port = None;
        drop(inner);
        self.console.changed.notify_all();
    }

    /// Reads until the port goes away or the console stops.
    fn read(&self, port: &Port, log: &mut Log) -> Ended {
        let mut buffer = vec![0u8; READ_BYTES];
        loop {
            if self.console.stopping() {
                return Ended::Stopping;
            }
            let mut pfd = libc::pollfd {
                fd: port.fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd for the duration of the call.
            let ready = unsafe { libc::poll(&mut pfd, 1, POLL_MS) };
            if ready == 0 {
                continue;
            }
            if ready < 0 {
                if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Ended::Gone(io::Error::last_os_error().to_string());
            }
            // SAFETY: reads into our own buffer, at most its length.
            let n = unsafe { libc::read(port.fd(), buffer.as_mut_ptr().cast(), buffer.len()) };
            if n > 0 {
                let bytes = &buffer[..n as usize];
                let time = now_us();
                self.console.inner().ring.push(bytes, time);
                self.console.changed.notify_all();
                log.append(bytes);
                continue;
            }
            if n == 0 {
                // A hung-up tty (USB adapter unplugged) reads as end of file.
                return Ended::Gone("unplugged".into());
            }
            let error = io::Error::last_os_error();
            match error.raw_os_error() {
                Some(libc::EAGAIN | libc::EINTR) => {
                    if pfd.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
                        return Ended::Gone("unplugged".into());
                    }
                }
                // The far end of a pty closed, or the device was removed.
                Some(libc::EIO | libc::ENODEV | libc::ENXIO) => {
                    return Ended::Gone("unplugged".into())
                }
                _ => return Ended::Gone(error.to_string()),
            }
        }
    }
}

/// The on-disk log of one console: `console.log`, rotated to
/// `console.log.1` when it reaches its size, so at most two files. Raw
/// bytes as captured, with `-- lager: … --` lines where lagerd started and
/// where the port went and came back. A log that cannot be written is
/// reported once; capture goes on.
struct Log {
    dir: PathBuf,
    file: Option<File>,
    written: u64,
    max: u64,
    failed: bool,
}

impl Log {
    fn open(dir: PathBuf, max: u64) -> Log {
        let mut log = Log {
            dir,
            file: None,
            written: 0,
            max: max.max(1),
            failed: false,
        };
        log.reopen();
        log
    }

    fn path(&self) -> PathBuf {
        self.dir.join("console.log")
    }

    fn reopen(&mut self) {
        let opened = std::fs::create_dir_all(&self.dir).and_then(|()| {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.path())
        });
        match opened {
            Ok(file) => {
                self.written = file.metadata().map_or(0, |m| m.len());
                self.file = Some(file);
            }
            Err(e) => self.fail(&e),
        }
    }

    fn fail(&mut self, error: &io::Error) {
        if !self.failed {
            warn!(
                "console log {}: {error}; capture goes on without it",
                self.path().display()
            );
            self.failed = true;
        }
        self.file = None;
    }

    fn append(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.written >= self.max {
                self.rotate();
            }
            let Some(file) = self.file.as_mut() else {
                return;
            };
            let room = (self.max - self.written).min(bytes.len() as u64) as usize;
            if let Err(e) = file.write_all(&bytes[..room]) {
                self.fail(&e);
                return;
            }
            self.written += room as u64;
            bytes = &bytes[room..];
        }
    }

    fn note(&mut self, text: &str) {
        self.append(format!("\n-- lager: {text} --\n").as_bytes());
    }

    fn rotate(&mut self) {
        self.file = None;
        let old = self.dir.join("console.log.1");
        if let Err(e) = std::fs::rename(self.path(), old) {
            self.fail(&e);
            return;
        }
        self.reopen();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_rotates_and_stays_bounded() {
        let dir = std::env::temp_dir().join(format!("uart-log-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut log = Log::open(dir.clone(), 100);
        for _ in 0..25 {
            log.append(&[b'x'; 30]);
        }
        let current = std::fs::metadata(dir.join("console.log")).unwrap().len();
        let older = std::fs::metadata(dir.join("console.log.1")).unwrap().len();
        assert_eq!(older, 100);
        assert_eq!(current, 50, "750 bytes in files of at most 100");
        log.note("gone");
        let text = std::fs::read_to_string(dir.join("console.log")).unwrap();
        assert!(text.ends_with("\n-- lager: gone --\n"), "{text:?}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
