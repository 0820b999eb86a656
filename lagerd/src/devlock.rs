//! Cross-process device locks (diagnose.md §1): an exclusive `flock` on
//! `<state-dir>/lager_device_locks/device_<address>.lock`, held around an
//! instrument open so two processes never claim one instrument at once.
//!
//! Contention waits (polling every 50 ms) and then fails naming the holder.
//! Any other failure of the lock machinery itself (unwritable dir, IO error)
//! fails open with a warning: a filesystem hiccup must not take a working
//! instrument offline.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use log::warn;

pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
const POLL: Duration = Duration::from_millis(50);

/// Who holds a contended device lock, from the PID in its file.
#[derive(Debug, PartialEq)]
pub enum Holder {
    /// The file has no PID we can read.
    Unknown,
    /// The PID that took the lock is still running.
    Running(i32),
    /// That PID exited; a descendant inherited the fd and still holds it.
    Orphaned(i32),
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Holder::Unknown => f.write_str("another process"),
            Holder::Running(pid) => write!(f, "pid {pid}, which is still running"),
            Holder::Orphaned(pid) => write!(
                f,
                "an orphaned child of pid {pid} -- that process has exited but left the lock fd open in a descendant"
            ),
        }
    }
}

/// A device lock that stayed contended for the whole timeout.
#[derive(Debug)]
pub struct LockError {
    pub address: String,
    pub holder: Holder,
    pub waited: Duration,
}

impl std::fmt::Display for LockError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Device at {} is locked by {} (waited {:.1}s). Another lager-box process likely has this USB instrument open. Inspect with: lager diagnose <net>",
            self.address,
            self.holder,
            self.waited.as_secs_f64()
        )
    }
}

/// The device locks of one process (one "manager" in the spec).
pub struct DeviceLocks {
    dir: PathBuf,
    timeout: Duration,
    /// Open lock files by address; present means we hold the flock.
    held: Mutex<HashMap<String, File>>,
}

impl DeviceLocks {
    /// Locks under `<state-dir>/<namespace>` (`lager_device_locks`, or
    /// `lager_ea_locks` for EA supplies). The dir is created on first use.
    pub fn new(state_dir: &Path, namespace: &str, timeout: Duration) -> DeviceLocks {
        DeviceLocks {
            dir: state_dir.join(namespace),
            timeout,
            held: Mutex::new(HashMap::new()),
        }
    }

    pub fn lock_path(&self, address: &str) -> PathBuf {
        self.dir.join(format!("device_{}.lock", safe_name(address)))
    }

    /// Takes the lock for `address`, waiting up to the timeout. Re-entrant:
    /// an address this manager already holds succeeds at once.
    pub fn acquire(&self, address: &str) -> Result<(), LockError> {
        if self
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(address)
        {
            return Ok(());
        }
        let file = match self.open(address) {
            Ok(file) => file,
            Err(e) => {
                warn!("Device locking failed for {address}: {e}");
                return Ok(());
            }
        };
        let started = Instant::now();
        loop {
            // SAFETY: flock on a descriptor `file` owns; no memory is passed.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return self.record(address, file);
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EWOULDBLOCK) => {}
                Some(libc::EINTR) => continue,
                _ => {
                    warn!("Device locking failed for {address}: {e}");
                    return Ok(());
                }
            }
            if started.elapsed() >= self.timeout {
                return Err(LockError {
                    address: address.to_string(),
                    holder: holder_of(file),
                    waited: self.timeout,
                });
            }
            std::thread::sleep(
                POLL.min(self.timeout.saturating_sub(started.elapsed()))
                    .max(Duration::from_millis(1)),
            );
        }
    }

    /// Releases `address` if held; errors are only logged.
    pub fn release(&self, address: &str) {
        let file = self
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(address);
        if let Some(file) = file {
            // SAFETY: flock on a descriptor `file` owns; no memory is passed.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_UN) } != 0 {
                warn!(
                    "releasing the device lock of {address}: {}",
                    io::Error::last_os_error()
                );
            }
        }
    }

    /// Runs `f` with the lock held, releasing it on success and on error.
    pub fn with<T>(&self, address: &str, f: impl FnOnce() -> T) -> Result<T, LockError> {
        self.acquire(address)?;
        let guard = Release {
            locks: self,
            address,
        };
        let outcome = f();
        drop(guard);
        Ok(outcome)
    }

    fn open(&self, address: &str) -> io::Result<File> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&self.dir)?;
        // Never truncate at open: that would erase the current holder's PID.
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(self.lock_path(address))
    }

    /// After the flock: our PID goes into the file for whoever waits next.
    fn record(&self, address: &str, mut file: File) -> Result<(), LockError> {
        let written = file.seek(SeekFrom::Start(0)).and_then(|_| {
            file.set_len(0)?;
            writeln!(file, "{}", std::process::id())?;
            file.flush()
        });
        if let Err(e) = written {
            warn!("could not record our PID in the device lock of {address}: {e}");
        }
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(address.to_string(), file);
        Ok(())
    }
}

/// Releases on drop, so a panic or early return cannot leak the lock.
struct Release<'a> {
    locks: &'a DeviceLocks,
    address: &'a str,
}

impl Drop for Release<'_> {
    fn drop(&mut self) {
        self.locks.release(self.address);
    }
}

/// `[A-Za-z0-9_-]` kept, every other character replaced by `_`.
pub fn safe_name(address: &str) -> String {
    address
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Reads the PID (≤ 32 bytes) the holder wrote, and whether it still runs.
fn holder_of(mut file: File) -> Holder {
    let mut text = [0u8; 32];
    let read = file
        .seek(SeekFrom::Start(0))
        .and_then(|_| file.read(&mut text))
        .unwrap_or(0);
    let pid = std::str::from_utf8(&text[..read])
        .ok()
        .and_then(|t| t.trim().parse::<i32>().ok());
    match pid {
        None => Holder::Unknown,
        Some(pid) if alive(pid) => Holder::Running(pid),
        Some(pid) => Holder::Orphaned(pid),
    }
}

/// `kill(pid, 0)`: ESRCH is dead; success, EPERM or anything else is alive.
fn alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill with signal 0 only checks for existence; no memory is passed.
    let signalled = unsafe { libc::kill(pid, 0) } == 0;
    signalled || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;
    use std::process::{Child, Command, Stdio};

    const ADDR: &str = "USB0::0x05E6::0x2281::4587429::INSTR";

    fn temp(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("devlock-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Another real process holding the lock, via Python's fcntl.flock;
    /// with `orphan`, the locker forks, writes its own PID and exits, and
    /// its child keeps the inherited fd (and so the lock).
    fn holder_process(path: &Path, orphan: bool) -> (Child, i32) {
        let script = format!(
            r#"
import fcntl, os, sys, time
fd = os.open({path:?}, os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX)
os.ftruncate(fd, 0); os.write(fd, f"{{os.getpid()}}\n".encode())
if {orphan} and os.fork() != 0:
    os._exit(0)
print(os.getpid(), flush=True)
time.sleep(60)
"#,
            path = path.to_str().unwrap(),
            orphan = if orphan { "True" } else { "False" },
        );
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(script)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        (child, line.trim().parse().unwrap())
    }

    #[test]
    fn lock_files_are_named_after_the_sanitised_address() {
        assert_eq!(safe_name(ADDR), "USB0__0x05E6__0x2281__4587429__INSTR");
        assert_eq!(
            safe_name("ASRL/dev/ttyUSB0::INSTR"),
            "ASRL_dev_ttyUSB0__INSTR"
        );
        let dir = temp("name");
        let locks = DeviceLocks::new(&dir, "lager_device_locks", DEFAULT_TIMEOUT);
        locks.acquire(ADDR).unwrap();
        let path = dir.join("lager_device_locks/device_USB0__0x05E6__0x2281__4587429__INSTR.lock");
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            format!("{}\n", std::process::id())
        );
        locks.acquire(ADDR).unwrap(); // re-entrant
        locks.release(ADDR);
        locks.release(ADDR); // no-op when not held
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_second_process_waits_then_learns_who_holds_it() {
        let dir = temp("contended");
        let locks = DeviceLocks::new(&dir, "lager_device_locks", Duration::from_millis(300));
        fs::create_dir_all(dir.join("lager_device_locks")).unwrap();
        let (mut child, pid) = holder_process(&locks.lock_path(ADDR), false);
        let started = Instant::now();
        let err = locks.acquire(ADDR).unwrap_err();
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert_eq!(err.holder, Holder::Running(pid));
        assert_eq!(
            err.to_string(),
            format!("Device at {ADDR} is locked by pid {pid}, which is still running (waited 0.3s). Another lager-box process likely has this USB instrument open. Inspect with: lager diagnose <net>")
        );
        // The holder's PID survived our attempt (no truncate at open).
        assert_eq!(
            fs::read_to_string(locks.lock_path(ADDR)).unwrap(),
            format!("{pid}\n")
        );
        // kill -9 of the holder frees the lock at once.
        child.kill().unwrap();
        child.wait().unwrap();
        locks.acquire(ADDR).unwrap();
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn an_orphaned_descendant_is_named_as_such() {
        let dir = temp("orphan");
        let locks = DeviceLocks::new(&dir, "lager_device_locks", Duration::from_millis(200));
        fs::create_dir_all(dir.join("lager_device_locks")).unwrap();
        // The locker writes its PID, forks and exits; its child keeps the fd.
        let (mut locker, orphan_pid) = holder_process(&locks.lock_path(ADDR), true);
        let locker_pid = locker.id() as i32;
        locker.wait().unwrap();
        let err = locks.acquire(ADDR).unwrap_err();
        assert_eq!(err.holder, Holder::Orphaned(locker_pid));
        assert!(err.to_string().contains(&format!(
            "an orphaned child of pid {locker_pid} -- that process has exited but left the lock fd open in a descendant"
        )));
        // SAFETY: kill takes plain integers; the orphan is our test child.
        unsafe { libc::kill(orphan_pid, libc::SIGKILL) };
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn with_releases_on_success_and_on_error() {
        let dir = temp("with");
        let locks = DeviceLocks::new(&dir, "lager_device_locks", DEFAULT_TIMEOUT);
        let failed: Result<Result<(), &str>, _> = locks.with(ADDR, || Err("open failed"));
        assert_eq!(failed.unwrap(), Err("open failed"));
        assert!(
            locks.held.lock().unwrap().is_empty(),
            "released after an error"
        );
        assert_eq!(locks.with(ADDR, || 7).unwrap(), 7);
        assert!(
            locks.held.lock().unwrap().is_empty(),
            "released after success"
        );
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_broken_lock_dir_fails_open() {
        let dir = temp("broken");
        // A file where the lock dir should be: mkdir fails for root too.
        fs::write(dir.join("lager_device_locks"), b"not a dir").unwrap();
        let locks = DeviceLocks::new(&dir, "lager_device_locks", DEFAULT_TIMEOUT);
        assert!(
            locks.acquire(ADDR).is_ok(),
            "infrastructure errors never block an instrument"
        );
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn liveness_follows_kill_zero() {
        assert!(alive(std::process::id() as i32));
        assert!(!alive(0) && !alive(-5));
        assert!(alive(1), "EPERM or success: pid 1 is alive");
    }
}
