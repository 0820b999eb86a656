//! Management of runs that already exist (runner.md §4): kill by
//! `LAGER_PROCESS_ID`, attach to a detached run's log, continue and
//! breakpoint files, and downloads from the allowed output dirs. None of
//! these is lock-enforced: they must work against someone else's lock.

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use log::{info, warn};
use serde_json::{json, Map, Value};

use common::runid::is_uuid;

use super::{Recorded, RunError, Runner};
use crate::fsutil;

/// Shared wait for killed jobs before SIGKILL (§4).
const KILL_WAIT: Duration = Duration::from_secs(5);
/// After the kill, how long a detached run's thread may take to reap it and
/// write its record (it polls every 200 ms; its pipes close with it).
const RECORD_WAIT: Duration = Duration::from_secs(5);
const KEEPALIVE_EVERY: Duration = Duration::from_secs(20);
/// Where `--download` may read from, checked on the resolved path.
pub const DOWNLOAD_ROOTS: [&str; 3] = [
    "/tmp/lager-output",
    "/tmp/lager-results",
    "/tmp/lager-job-output",
];

/// Largest run record read (`meta.json`, `breakpoint.json`): a script
/// writes the latter, and may write anything there.
const RECORD_MAX: usize = 1 << 20;

fn read_record(path: &Path) -> io::Result<Vec<u8>> {
    fsutil::read_limited(path, RECORD_MAX)
}

/// `lager_process_id` of a management body: `Some(id)` or `None` (`null`).
fn process_id(body: &Map<String, Value>, required: bool) -> Result<Option<String>, RunError> {
    match body.get("lager_process_id") {
        None if required => Err(RunError::NoProcessId),
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(id)) if is_uuid(id) => Ok(Some(id.clone())),
        Some(Value::String(id)) => Err(RunError::BadProcessId(id.clone())),
        Some(other) => Err(RunError::BadProcessId(other.to_string())),
    }
}

fn required_id(body: &Map<String, Value>) -> Result<String, RunError> {
    process_id(body, true)?.ok_or(RunError::NoProcessId)
}

impl Runner {
    /// `POST /python/kill`: signal every process of the job (or of all jobs),
    /// wait one shared window, SIGKILL survivors, delete the run dir(s).
    pub fn kill(&self, body: &Map<String, Value>) -> Result<Value, RunError> {
        let id = process_id(body, false)?;
        let signal = match body.get("signal") {
            None => libc::SIGTERM,
            Some(value) => value
                .as_i64()
                // [0, NSIG), and NSIG is SIGRTMAX + 1.
                .filter(|n| (0..=i64::from(libc::SIGRTMAX())).contains(n))
                .map(|n| n as i32)
                .ok_or_else(|| RunError::BadSignal(value.clone()))?,
        };
        let _reaping = self.quiesce.enter();
        self.board.mark_killed(id.as_deref());
        // This lagerd's own detached runs among them: their records are
        // finished before their dirs go.
        let records: Vec<Arc<Recorded>> = {
            let detached = self.detached.lock().unwrap_or_else(PoisonError::into_inner);
            match &id {
                Some(id) => detached.get(id).cloned().into_iter().collect(),
                None => detached.values().cloned().collect(),
            }
        };
        let pids = job_pids(&self.config.proc_root, id.as_deref());
        let what = id.as_deref().unwrap_or("every job");
        if pids.is_empty() {
            info!("kill {what}: no matching processes");
        } else {
            info!("kill {what}: signal {signal} to {} process(es)", pids.len());
        }
        // One signal per process group: a SIGINT reaches the script once.
        let mut signalled_groups = BTreeSet::new();
        for &pid in &pids {
            // SAFETY: getpgid takes a plain pid; an exited pid just fails.
            let pgid = unsafe { libc::getpgid(pid) };
            if pgid > 1 && pids.contains(&pgid) {
                if signalled_groups.insert(pgid) {
                    // SAFETY: killpg takes plain integers; `pgid > 1` was checked above.
                    unsafe { libc::killpg(pgid, signal) };
                }
            } else {
                // SAFETY: kill takes plain integers; `pid` came from /proc and is not ours.
                unsafe { libc::kill(pid, signal) };
            }
        }
        if signal != libc::SIGKILL && signal != 0 {
            let deadline = Instant::now() + KILL_WAIT;
            while Instant::now() < deadline
                && pids.iter().any(|&pid| alive(&self.config.proc_root, pid))
            {
                std::thread::sleep(Duration::from_millis(100));
            }
            for &pid in pids
                .iter()
                .filter(|&&pid| alive(&self.config.proc_root, pid))
            {
                warn!(
                    "kill {what}: pid {pid} survived {}s; sending SIGKILL",
                    KILL_WAIT.as_secs()
                );
                // SAFETY: kill takes plain integers; `pid` came from /proc and is not ours.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        // Issue 12 defect 10: a killed run is reaped and its record written
        // (meta.json finished, the exit marker, the log line) before its
        // dir is removed, so `--kill` returns with the process gone and the
        // record never races the removal.
        if signal != 0 {
            let deadline = Instant::now() + RECORD_WAIT;
            for record in &records {
                if !record.wait(deadline.saturating_duration_since(Instant::now())) {
                    warn!(
                        "kill {what}: a detached run did not finish within {}s of its kill",
                        RECORD_WAIT.as_secs()
                    );
                }
            }
        }
        match &id {
            Some(id) => self.remove_run_dir(&self.config.run_dir.join(id)),
            None => {
                if let Ok(entries) = fs::read_dir(&self.config.run_dir) {
                    for entry in entries.flatten() {
                        self.remove_run_dir(&entry.path());
                    }
                }
            }
        }
        Ok(json!({"status": "killed"}))
    }

    /// Removes a detached run's dir and the work dir its meta.json names.
    fn remove_run_dir(&self, run_dir: &Path) {
        let work_dir = read_record(&run_dir.join("meta.json"))
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
            .and_then(|meta| meta.get("work_dir")?.as_str().map(PathBuf::from));
        if let Some(work_dir) = work_dir.filter(|dir| dir.starts_with(&self.config.work_root)) {
            let _ = fs::remove_dir_all(work_dir);
        }
        let _ = fs::remove_dir_all(run_dir);
    }

    /// `POST /python/attach`: checks the run exists (`NoSuchRun` otherwise).
    pub fn attach_target(&self, body: &Map<String, Value>) -> Result<PathBuf, RunError> {
        let id = required_id(body)?;
        let dir = self.config.run_dir.join(&id);
        if !dir.is_dir() {
            return Err(RunError::NoSuchRun(id));
        }
        Ok(dir)
    }

    /// `POST /python/continue`: resume a run paused at a breakpoint.
    pub fn resume(&self, body: &Map<String, Value>) -> Result<Value, RunError> {
        let dir = self.config.run_dir.join(required_id(body)?);
        let paused = dir.join("breakpoint.json").is_file();
        if paused {
            fs::write(dir.join("resume"), b"")?;
        }
        Ok(json!({"resumed": paused}))
    }

    /// `POST /python/breakpoint`: where a run is paused, if it is.
    pub fn breakpoint(&self, body: &Map<String, Value>) -> Result<Value, RunError> {
        let dir = self.config.run_dir.join(required_id(body)?);
        // Written by the script: read with a bound.
        Ok(read_record(&dir.join("breakpoint.json"))
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_else(|| json!({"paused": false})))
    }
}

/// Replays a detached run's `output.log` from the start, then follows it
/// until `meta.json` says finished and every byte is sent. A run dir that
/// disappears (the job was killed) ends the stream with `- 2 -1`.
pub fn follow(run_dir: &Path, out: &mut dyn Write, gone: &dyn Fn() -> bool) -> io::Result<()> {
    let log_path = run_dir.join("output.log");
    let mut offset = 0u64;
    let mut last_write = Instant::now();
    let mut block = vec![0u8; 64 * 1024];
    loop {
        // Read "finished" before the bytes, so none written after it is missed.
        let finished = read_record(&run_dir.join("meta.json"))
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
            .is_some_and(|meta| meta["status"] == "finished");
        let mut sent = false;
        if let Ok(mut log) = fs::File::open(&log_path) {
            log.seek(SeekFrom::Start(offset))?;
            loop {
                let n = log.read(&mut block)?;
                if n == 0 {
                    break;
                }
                out.write_all(&block[..n])?;
                offset += n as u64;
                sent = true;
            }
        }
        if sent {
            last_write = Instant::now();
        }
        if finished {
            return out.flush();
        }
        if !run_dir.is_dir() {
            return out.write_all(b"- 2 -1");
        }
        if gone() {
            return Err(io::ErrorKind::ConnectionAborted.into());
        }
        if last_write.elapsed() >= KEEPALIVE_EVERY {
            out.write_all(b"0 0 ")?;
            last_write = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[derive(Debug, PartialEq)]
pub enum DownloadError {
    Forbidden,
    NotFound(String),
    NotAFile,
}

impl std::fmt::Display for DownloadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DownloadError::Forbidden => f.write_str("Access to this path is not permitted"),
            DownloadError::NotFound(path) => write!(f, "File not found: {path}"),
            DownloadError::NotAFile => f.write_str("Path is not a file"),
        }
    }
}

/// `GET /download-file`: the file opened for streaming, if its resolved
/// path is under an allowed dir (symlinks resolved first, so a link cannot
/// point outside). It is sent from disk, never read into memory whole.
pub fn download(requested: &str, roots: &[PathBuf]) -> Result<fs::File, DownloadError> {
    let roots: Vec<PathBuf> = roots
        .iter()
        .filter_map(|root| fs::canonicalize(root).ok())
        .collect();
    let inside = |path: &Path| roots.iter().any(|root| path.starts_with(root));
    let path = Path::new(requested);
    if !path.is_absolute() {
        return Err(DownloadError::Forbidden);
    }
    let Ok(resolved) = fs::canonicalize(path) else {
        // Nothing there: "not found" only where a file would be allowed.
        let parent_inside = path
            .parent()
            .and_then(|parent| fs::canonicalize(parent).ok())
            .is_some_and(|parent| inside(&parent));
        return Err(if parent_inside {
            DownloadError::NotFound(requested.into())
        } else {
            DownloadError::Forbidden
        });
    };
    if !inside(&resolved) {
        return Err(DownloadError::Forbidden);
    }
    if !resolved.is_file() {
        return Err(DownloadError::NotAFile);
    }
    fs::File::open(&resolved).map_err(|_| DownloadError::NotFound(requested.into()))
}

/// Copies a download to the client in blocks (one 64 KiB buffer, whatever
/// the file's size), stopping if the client leaves.
pub fn send_file(
    mut file: fs::File,
    out: &mut dyn Write,
    gone: &dyn Fn() -> bool,
) -> io::Result<()> {
    let mut block = vec![0u8; 64 * 1024];
    loop {
        let n = match file.read(&mut block) {
            Ok(0) => return out.flush(),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if gone() {
            return Err(io::ErrorKind::ConnectionAborted.into());
        }
        out.write_all(&block[..n])?;
    }
}

/// PIDs (other than ours) whose environment has `LAGER_PROCESS_ID=<id>`, or
/// any `LAGER_PROCESS_ID` when `id` is `None`. Unreadable entries and
/// processes that exit mid-scan are skipped.
fn job_pids(proc_root: &Path, id: Option<&str>) -> BTreeSet<i32> {
    let own = std::process::id() as i32;
    let wanted = id.map(|id| format!("LAGER_PROCESS_ID={id}").into_bytes());
    let Ok(entries) = fs::read_dir(proc_root) else {
        return BTreeSet::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != own)
        .filter(|&pid| {
            // The kernel caps a process's environment with its arguments (ARG_MAX).
            let environ =
                fsutil::read_head(&proc_root.join(pid.to_string()).join("environ"), 4 << 20);
            let Ok(environ) = environ else {
                return false;
            };
            environ.split(|b| *b == 0).any(|var| match &wanted {
                Some(wanted) => var == wanted.as_slice(),
                None => var.starts_with(b"LAGER_PROCESS_ID="),
            })
        })
        .collect()
}

/// Alive and not a zombie (a zombie has exited; its parent just hasn't reaped it).
fn alive(proc_root: &Path, pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists; no memory is passed.
    if unsafe { libc::kill(pid, 0) } != 0
        && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
    {
        return false;
    }
    let stat = fsutil::read_head(&proc_root.join(pid.to_string()).join("stat"), 4096)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default();
    // Field 3, after the parenthesised command (which may contain spaces).
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    !matches!(state, Some("Z" | "X") | None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn management_ids_are_validated() {
        let body = |v: Value| v.as_object().unwrap().clone();
        let id = "6f1c7f3a-1b2c-4d5e-8f90-0123456789ab";
        assert_eq!(
            process_id(&body(json!({"lager_process_id": id})), true).unwrap(),
            Some(id.into())
        );
        assert_eq!(
            process_id(&body(json!({"lager_process_id": null})), false).unwrap(),
            None
        );
        let err = process_id(&body(json!({})), true).unwrap_err();
        assert!(matches!(err, RunError::NoProcessId), "{err}");
        assert_eq!(err.to_string(), "lager_process_id is required");
        let err = process_id(&body(json!({"lager_process_id": "../etc"})), true).unwrap_err();
        assert!(matches!(err, RunError::BadProcessId(_)), "{err}");
        assert_eq!(err.to_string(), "Invalid process UUID: ../etc");
    }

    #[test]
    fn downloads_only_from_the_allowlist_after_resolving_links() {
        let base = std::env::temp_dir().join(format!("download-test-{}", std::process::id()));
        let root = base.join("allowed");
        fs::create_dir_all(&root).unwrap();
        fs::write(root.join("result.txt"), b"42").unwrap();
        fs::write(base.join("secret"), b"no").unwrap();
        std::os::unix::fs::symlink(base.join("secret"), root.join("escape")).unwrap();
        let roots = [root.clone()];
        let path = |p: &Path| p.display().to_string();
        let mut opened = download(&path(&root.join("result.txt")), &roots).unwrap();
        let mut text = String::new();
        opened.read_to_string(&mut text).unwrap();
        assert_eq!(text, "42");
        let download = |requested: &str, roots: &[PathBuf]| download(requested, roots).map(drop);
        assert_eq!(
            download(&path(&root.join("escape")), &roots),
            Err(DownloadError::Forbidden)
        );
        assert_eq!(
            download(&path(&base.join("secret")), &roots),
            Err(DownloadError::Forbidden)
        );
        assert_eq!(download(&path(&root), &roots), Err(DownloadError::NotAFile));
        let missing = path(&root.join("missing.txt"));
        assert_eq!(
            download(&missing, &roots),
            Err(DownloadError::NotFound(missing.clone()))
        );
        assert_eq!(
            download(&path(&root.join("../secret2")), &roots),
            Err(DownloadError::Forbidden)
        );
        assert_eq!(
            download("relative.txt", &roots),
            Err(DownloadError::Forbidden)
        );
        fs::remove_dir_all(base).unwrap();
    }

    #[test]
    fn finds_processes_by_their_lager_process_id() {
        let id = "0c2fa7a4-5b1a-4c8e-9d0e-aaaaaaaaaaaa";
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .env("LAGER_PROCESS_ID", id)
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let proc_root = Path::new("/proc");
        // Until exec, /proc shows the parent's environment: poll.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !job_pids(proc_root, Some(id)).contains(&pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(job_pids(proc_root, Some(id)).contains(&pid));
        assert!(job_pids(proc_root, None).contains(&pid));
        assert!(!job_pids(proc_root, Some("0c2fa7a4-5b1a-4c8e-9d0e-bbbbbbbbbbbb")).contains(&pid));
        assert!(alive(proc_root, pid));
        child.kill().unwrap();
        // Killed but not yet reaped: a zombie, which counts as dead.
        let deadline = Instant::now() + Duration::from_secs(5);
        while alive(proc_root, pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!alive(proc_root, pid));
        child.wait().unwrap();
    }
}
