//! Shared pieces of the benchmark tools behind BENCHMARKS.md: a loopback
//! guard, a `lagerd` started and stopped per measurement, a raw keep-alive
//! HTTP/1.1 client, latency percentiles and the `METRIC` lines that
//! `scripts/bench.sh` collects into its summary table.
//!
//! Nothing here is shipped; the tools exist so that every figure in
//! BENCHMARKS.md can be reproduced with one command.

pub mod benchbox;
pub mod daemon;
pub mod frames;
pub mod http;
pub mod net;
pub mod pyclient;
pub mod stats;
pub mod timing;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// A failure that stops one benchmark: what went wrong and what to do.
#[derive(Debug)]
pub struct BenchError(pub String);

impl fmt::Display for BenchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BenchError {}

impl From<std::io::Error> for BenchError {
    fn from(e: std::io::Error) -> BenchError {
        BenchError(e.to_string())
    }
}

/// Shorthand for building a [`BenchError`] with `format!` arguments.
#[macro_export]
macro_rules! fail {
    ($($arg:tt)*) => {
        $crate::BenchError(format!($($arg)*))
    };
}

/// Prints one machine-readable result line on stdout. `scripts/bench.sh`
/// keeps these (`METRIC key value`); everything for humans goes to stderr.
pub fn metric(key: &str, value: impl fmt::Display) {
    println!("METRIC {key} {value}");
}

/// Runs a tool's body and turns an error into `<tool>: <message>` and exit 1.
pub fn main_with(
    tool: &str,
    run: impl FnOnce() -> Result<(), BenchError>,
) -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{tool}: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// CPU time (user + system, all threads) that process `pid` has used so
/// far, from fields 14 and 15 of `/proc/<pid>/stat`.
pub fn proc_cpu_secs(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; fields after it don't.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks = if ticks > 0 { ticks as f64 } else { 100.0 };
    Some((utime + stime) / ticks)
}

/// CPU time (user + system) of this process's waited-for children so far.
pub fn children_cpu_secs() -> f64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the zeroed struct only.
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) } != 0 {
        return f64::NAN;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// A binary the benchmark needs, checked up front so a missing build says
/// how to make it rather than failing later with "No such file".
pub fn require_binary(path: &Path) -> Result<PathBuf, BenchError> {
    if !path.is_file() {
        return Err(fail!(
            "{} does not exist; build it first: cargo build --release \
             --target x86_64-unknown-linux-musl -p lagerd -p lager -p lager-bench \
             (or run scripts/bench.sh, which does)",
            path.display()
        ));
    }
    path.canonicalize()
        .map_err(|e| fail!("cannot resolve {}: {e}", path.display()))
}

/// A fresh directory `<parent>/<tag>-<pid>-<nanos>`, removed on drop.
pub struct WorkDir {
    path: PathBuf,
}

impl WorkDir {
    pub fn new(parent: Option<&Path>, tag: &str) -> Result<WorkDir, BenchError> {
        let parent = parent.map_or_else(std::env::temp_dir, Path::to_path_buf);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = parent.join(format!("{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path)
            .map_err(|e| fail!("cannot create work dir {}: {e}", path.display()))?;
        Ok(WorkDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
