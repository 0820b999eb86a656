//! A real `lagerd` per measurement: started on loopback ephemeral ports with
//! its own state dir, its bound addresses read from the `listening on` lines
//! of its stdout, stopped with SIGTERM (then SIGKILL) when dropped.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::net::loopback_addr;
use crate::{fail, BenchError};

/// How long lagerd gets to print all of its `listening on` lines.
const START_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Daemon {
    child: Child,
    addrs: Vec<SocketAddr>,
    log_path: PathBuf,
}

impl Daemon {
    /// Starts `lagerd` with `listeners` × `--listen 127.0.0.1:0` and
    /// `--state-dir <state_dir>`. Its log (info level, as on a box) goes to
    /// `<state_dir>/../<name of state_dir>.log`, out of the state dir.
    pub fn start(lagerd: &Path, state_dir: &Path, listeners: usize) -> Result<Daemon, BenchError> {
        Daemon::start_with_env(lagerd, state_dir, listeners, &[])
    }

    /// [`Daemon::start`] with extra environment variables for lagerd (the
    /// runner reads `LAGERD_RUN_DIR`, `LAGERD_PYTHON` and `TMPDIR`).
    pub fn start_with_env(
        lagerd: &Path,
        state_dir: &Path,
        listeners: usize,
        env: &[(&str, &OsStr)],
    ) -> Result<Daemon, BenchError> {
        Daemon::start_with_args(lagerd, state_dir, listeners, &[], env)
    }

    /// [`Daemon::start_with_env`] with extra flags (`--sim`, ...).
    pub fn start_with_args(
        lagerd: &Path,
        state_dir: &Path,
        listeners: usize,
        args: &[&str],
        env: &[(&str, &OsStr)],
    ) -> Result<Daemon, BenchError> {
        let log_path = state_dir.with_extension("log");
        let log = File::create(&log_path)
            .map_err(|e| fail!("cannot create {}: {e}", log_path.display()))?;
        let mut command = Command::new(lagerd);
        for _ in 0..listeners {
            command.args(["--listen", "127.0.0.1:0"]);
        }
        command
            .arg("--state-dir")
            .arg(state_dir)
            .args(args)
            .env_remove("RUST_LOG")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        let mut child = command
            .spawn()
            .map_err(|e| fail!("cannot start {}: {e}", lagerd.display()))?;
        let Some(stdout) = child.stdout.take() else {
            let _ = child.kill();
            return Err(fail!("lagerd started without a stdout pipe"));
        };
        // Read the lines on a thread so a daemon that hangs before printing
        // them cannot hang the benchmark.
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let mut daemon = Daemon {
            child,
            addrs: Vec::new(),
            log_path,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        while daemon.addrs.len() < listeners {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match receiver.recv_timeout(left) {
                Ok(line) => line,
                Err(_) => {
                    return Err(fail!(
                        "lagerd did not start: {} of {listeners} `listening on` lines within {:?}; \
                         exit status {:?}; its log: {}",
                        daemon.addrs.len(),
                        START_TIMEOUT,
                        daemon.child.try_wait().ok().flatten(),
                        daemon.log_tail()
                    ))
                }
            };
            if let Some(addr) = line.strip_prefix("listening on ") {
                daemon.addrs.push(loopback_addr(addr.trim())?);
            }
        }
        Ok(daemon)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// True while the process runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The last lines of the daemon's log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(5)..].join(" | ");
        if tail.is_empty() {
            format!("{} is empty", self.log_path.display())
        } else {
            tail
        }
    }

    /// lagerd's whole log so far (empty if it cannot be read).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// CPU time lagerd has used so far (user + system, all threads), from
    /// `/proc/<pid>/stat`.
    pub fn cpu_secs(&self) -> Option<f64> {
        crate::proc_cpu_secs(self.pid())
    }

    /// `VmRSS` and `VmHWM` of the daemon, in KiB, from `/proc/<pid>/status`.
    pub fn memory_kib(&self) -> Result<(u64, u64), BenchError> {
        let path = format!("/proc/{}/status", self.pid());
        let text = std::fs::read_to_string(&path).map_err(|e| fail!("cannot read {path}: {e}"))?;
        let field = |name: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
                .ok_or_else(|| fail!("{path} has no {name} line"))
        };
        Ok((field("VmRSS:")?, field("VmHWM:")?))
    }

    /// Number of threads, from `/proc/<pid>/status`.
    pub fn threads(&self) -> Option<u64> {
        let text = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        text.lines()
            .find_map(|line| line.strip_prefix("Threads:"))
            .and_then(|n| n.trim().parse().ok())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
