//! One running job: its process group, the reader threads that drain its
//! stdout, stderr and output channel into a bounded queue, and the two ways
//! its output leaves: framed to an attached client (runner.md §3.1–3.2) or
//! into `<run-dir>/<id>/output.log` for a detached run (§3.3).
//!
//! The script is never blocked by a slow client: when the queue is full for
//! more than a second its output is dropped and counted.

use std::collections::VecDeque;
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use log::{info, warn};
use serde_json::json;

use super::board::Entry;
use super::Quiesce;
use crate::fsutil::{self, Durability};
use crate::metrics::{self, JobOutcome};

/// File name of the per-run FIFO behind `LAGER_OUTPUT_CHANNEL`.
pub const OUTPUT_CHANNEL: &str = "lager_output_channel";
/// Largest frame payload. The Python client parses frames a byte at a time
/// with quadratic buffering, so big frames would stall it.
const FRAME_MAX: usize = 1024;
/// Queue bound: 2048 chunks × 1024 B in the spec's terms.
const QUEUE_BYTES_MAX: usize = 2048 * 1024;
/// A full queue waits this long for the client before dropping output.
const STALL_BEFORE_DROP: Duration = Duration::from_secs(1);
const KEEPALIVE_EVERY: Duration = Duration::from_secs(20);
/// How often a silent stream checks that its client is still there.
const PROBE_EVERY: Duration = Duration::from_millis(500);
/// Timeout: SIGTERM, then SIGKILL if anything in the group lives this long.
const CLEANUP_GRACE: Duration = Duration::from_secs(5);
/// Disconnect reaping (§3.2): SIGINT, then SIGTERM after this much silence
/// or the hard cap, then SIGKILL after the term grace.
const REAP_IDLE: Duration = Duration::from_secs(5);
const REAP_CAP: Duration = Duration::from_secs(60);
const REAP_TERM_GRACE: Duration = Duration::from_secs(2);
/// A detached run's log stops growing here (§3.3).
const LOG_MAX: u64 = 10 * 1024 * 1024;
const READ_BLOCK: usize = 64 * 1024;
/// Longest wait for output before checking the job and the client.
const IDLE_WAIT: Duration = Duration::from_millis(100);
const EXIT_POLL: Duration = Duration::from_millis(1);

#[derive(Default)]
struct Queue {
    chunks: VecDeque<(u8, Vec<u8>)>,
    bytes: usize,
    /// stdout/stderr readers still running.
    pipes_open: usize,
    channel_open: bool,
    dropped: u64,
}

#[derive(Default)]
struct Output {
    queue: Mutex<Queue>,
    changed: Condvar,
    /// Emptied read buffers, reused by the readers: a fresh 64 KiB buffer
    /// per read was a map + unmap each in musl's malloc (4,113 mmaps per GiB).
    spare: Mutex<Vec<Vec<u8>>>,
}

impl Output {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn push(&self, fileno: u8, data: Vec<u8>) {
        let mut queue = self.lock();
        let deadline = Instant::now() + STALL_BEFORE_DROP;
        while queue.bytes + data.len() > QUEUE_BYTES_MAX {
            let now = Instant::now();
            if now >= deadline {
                queue.dropped += data.len() as u64;
                return;
            }
            queue = self
                .changed
                .wait_timeout(queue, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        queue.bytes += data.len();
        queue.chunks.push_back((fileno, data));
        self.changed.notify_all();
    }

    /// Up to `max_bytes` of queued output, waiting up to `wait` for some.
    /// The flag is true once every source has closed and the queue is empty.
    fn take(&self, wait: Duration, max_bytes: usize) -> (Vec<(u8, Vec<u8>)>, bool) {
        let mut queue = self.lock();
        if queue.chunks.is_empty() && (queue.pipes_open > 0 || queue.channel_open) {
            queue = self
                .changed
                .wait_timeout(queue, wait)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        let mut taken = Vec::new();
        let mut size = 0;
        while size < max_bytes {
            let Some(chunk) = queue.chunks.pop_front() else {
                break;
            };
            size += chunk.1.len();
            taken.push(chunk);
        }
        queue.bytes -= size;
        if size > 0 {
            self.changed.notify_all();
        }
        let finished = queue.chunks.is_empty() && queue.pipes_open == 0 && !queue.channel_open;
        (taken, finished)
    }

    fn pipes_closed(&self) -> bool {
        self.lock().pipes_open == 0
    }

    /// An empty buffer of `READ_BLOCK` capacity, reused when one is spare.
    fn buffer(&self) -> Vec<u8> {
        let spare = self
            .spare
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        spare.unwrap_or_else(|| Vec::with_capacity(READ_BLOCK))
    }

    /// Returns sent chunks' buffers for reuse (as many as the queue holds).
    fn recycle(&self, chunks: Vec<(u8, Vec<u8>)>) {
        let mut spare = self.spare.lock().unwrap_or_else(PoisonError::into_inner);
        for (_, mut buffer) in chunks {
            if spare.len() >= QUEUE_BYTES_MAX / READ_BLOCK || buffer.capacity() < READ_BLOCK {
                break;
            }
            buffer.clear();
            spare.push(buffer);
        }
    }
}

pub struct Job {
    pub id: String,
    child: Child,
    output: Arc<Output>,
    /// lagerd's own write end of the output channel FIFO: it keeps reads
    /// from seeing EOF before the script opens the FIFO; dropping it at the
    /// end gives the channel reader its EOF at once.
    channel_writer: Option<File>,
    work_dir: PathBuf,
    /// Attached runs clean their work dir at the end; detached ones keep it
    /// until `--kill` (§2).
    remove_work_dir: bool,
    timeout: Option<Duration>,
    started: Instant,
    term_sent: Option<Instant>,
    killed: bool,
    /// lagerd stopped the job because its client left (§3.2).
    reaped: bool,
    status: Option<ExitStatus>,
    /// The job's token stays valid as long as the job (`callers.rs`).
    caller: Option<super::callers::CallerGuard>,
    /// Its line on the status page.
    entry: Option<Arc<Entry>>,
    /// Its place under `--max-jobs`, given back when the job is dropped.
    slot: Option<super::Slot>,
}

impl Job {
    /// Spawns `command` (already in its own group or session) with its
    /// stdout and stderr on pipes and the output channel FIFO ready.
    pub fn spawn(
        mut command: Command,
        stdout_is_stderr: bool,
        id: &str,
        work_dir: PathBuf,
        timeout: Option<Duration>,
    ) -> io::Result<Job> {
        let (out_read, out_write) = io::pipe()?;
        let err_read = if stdout_is_stderr {
            command.stdout(out_write.try_clone()?).stderr(out_write);
            None
        } else {
            let (err_read, err_write) = io::pipe()?;
            command.stdout(out_write).stderr(err_write);
            Some(err_read)
        };
        let channel = open_channel(&work_dir.join(OUTPUT_CHANNEL));
        let child = command.spawn();
        // Our copies of the pipes' write ends must close, or EOF never comes.
        drop(command);
        let child = child?;
        // Best effort, from the parent (never a pre-exec hook): scripts get
        // the CPU ahead of housekeeping on a small box.
        // SAFETY: setpriority takes plain integers; a pid that already exited just fails.
        unsafe { libc::setpriority(libc::PRIO_PROCESS, child.id(), -10) };
        let output = Arc::new(Output::default());
        {
            let mut queue = output.lock();
            queue.pipes_open = 1 + usize::from(err_read.is_some());
            queue.channel_open = channel.is_some();
        }
        spawn_pipe_reader(out_read, 1, output.clone());
        if let Some(err_read) = err_read {
            spawn_pipe_reader(err_read, 2, output.clone());
        }
        let channel_writer = channel.map(|(reader, writer)| {
            spawn_channel_reader(reader, output.clone());
            writer
        });
        Ok(Job {
            id: id.to_string(),
            child,
            output,
            channel_writer,
            work_dir,
            remove_work_dir: true,
            timeout,
            started: Instant::now(),
            term_sent: None,
            killed: false,
            reaped: false,
            status: None,
            caller: None,
            entry: None,
            slot: None,
        })
        .inspect(|_| metrics::job_started())
    }

    /// Lists the job on the status page; its output tail goes there too.
    pub fn track(&mut self, entry: Arc<Entry>) {
        self.entry = Some(entry);
    }

    fn note(&self, chunks: &[(u8, Vec<u8>)]) {
        if let Some(entry) = &self.entry {
            entry.append(chunks);
        }
    }

    /// How the job ended, for `/metrics` and the status page.
    fn outcome(&self) -> JobOutcome {
        if self.reaped || self.entry.as_ref().is_some_and(|e| e.killed()) {
            return JobOutcome::Killed;
        }
        if self.term_sent.is_some() {
            return JobOutcome::Timeout;
        }
        match self.status.map(|status| status.code()) {
            Some(Some(0)) => JobOutcome::Exit0,
            Some(Some(_)) => JobOutcome::ExitNonzero,
            Some(None) => JobOutcome::Signal,
            // Dropped while still running: lagerd kills it below.
            None => JobOutcome::Killed,
        }
    }

    /// Keeps the job's token alive until the job is gone.
    pub fn hold(&mut self, caller: super::callers::CallerGuard) {
        self.caller = Some(caller);
    }

    /// The job keeps `slot` (`--max-jobs`) until it is dropped.
    pub fn holding(mut self, slot: super::Slot) -> Job {
        self.slot = Some(slot);
        self
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn pgid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Streams framed output to an attached client, then the exit marker.
    pub fn stream(
        mut self,
        out: &mut dyn Write,
        client_gone: &dyn Fn() -> bool,
        quiesce: &Quiesce,
    ) -> io::Result<()> {
        let mut frames = Vec::with_capacity(256 * 1024);
        let mut last_write = Instant::now();
        let mut last_probe = Instant::now();
        loop {
            // Once the pipes are closed only the exit status is awaited:
            // look often, so the exit marker is not held back.
            let wait = if self.output.pipes_closed() {
                EXIT_POLL
            } else {
                IDLE_WAIT
            };
            let (chunks, finished) = self.output.take(wait, 256 * 1024);
            self.note(&chunks);
            encode_frames(&chunks, &mut frames);
            self.output.recycle(chunks);
            if !frames.is_empty() {
                if let Err(e) = out.write_all(&frames) {
                    info!(
                        "run {}: client gone mid-stream ({e}); reaping the job",
                        self.id
                    );
                    self.reap_abandoned(quiesce);
                    return Err(e);
                }
                frames.clear();
                last_write = Instant::now();
            }
            self.poll_exit();
            self.enforce_timeout();
            if self.output.pipes_closed() && self.status.is_some() {
                self.channel_writer = None;
            }
            if finished && self.status.is_some() {
                break;
            }
            if last_write.elapsed() >= KEEPALIVE_EVERY {
                if let Err(e) = out.write_all(b"0 0 ") {
                    info!(
                        "run {}: client gone at a keepalive ({e}); reaping the job",
                        self.id
                    );
                    self.reap_abandoned(quiesce);
                    return Err(e);
                }
                last_write = Instant::now();
            }
            if last_probe.elapsed() >= PROBE_EVERY {
                last_probe = Instant::now();
                if client_gone() {
                    info!("run {}: client disconnected; reaping the job", self.id);
                    self.reap_abandoned(quiesce);
                    return Err(io::ErrorKind::ConnectionAborted.into());
                }
            }
        }
        let code = self.return_code().to_string();
        let dropped = self.output.lock().dropped;
        if dropped > 0 {
            warn!(
                "run {}: dropped {dropped} bytes of output while the client stalled",
                self.id
            );
        }
        info!("run {}: finished with {code}", self.id);
        out.write_all(format!("- {} {code}", code.len()).as_bytes())?;
        out.flush()
    }

    fn poll_exit(&mut self) {
        if self.status.is_none() {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.status = Some(status);
            }
        }
    }

    /// §2.1: SIGTERM at the deadline, SIGKILL if the group outlives the grace.
    fn enforce_timeout(&mut self) {
        let Some(timeout) = self.timeout else { return };
        match self.term_sent {
            None if self.started.elapsed() >= timeout => {
                warn!(
                    "run {}: timeout after {}s; sending SIGTERM",
                    self.id,
                    timeout.as_secs()
                );
                signal_group(self.pgid(), libc::SIGTERM);
                self.term_sent = Some(Instant::now());
            }
            Some(sent)
                if !self.killed && sent.elapsed() >= CLEANUP_GRACE && group_alive(self.pgid()) =>
            {
                warn!(
                    "run {}: still alive {}s after SIGTERM; sending SIGKILL",
                    self.id,
                    CLEANUP_GRACE.as_secs()
                );
                signal_group(self.pgid(), libc::SIGKILL);
                self.killed = true;
            }
            _ => {}
        }
    }

    /// §2.2: the code in the exit marker.
    fn return_code(&self) -> i32 {
        if self.killed {
            return -9;
        }
        if self.term_sent.is_some() {
            return 124;
        }
        self.status.map_or(-1, status_code)
    }

    /// §3.2: the client vanished. SIGINT lets `finally`/`atexit` run; give
    /// the tree time while it still makes progress, then SIGTERM, SIGKILL.
    fn reap_abandoned(&mut self, quiesce: &Quiesce) {
        let _reaping = quiesce.enter();
        self.reaped = true;
        let pgid = self.pgid();
        signal_group(pgid, libc::SIGINT);
        let started = Instant::now();
        let mut last_progress = Instant::now();
        while group_alive_after_reap(self)
            && last_progress.elapsed() < REAP_IDLE
            && started.elapsed() < REAP_CAP
        {
            let (chunks, _) = self.output.take(Duration::from_millis(50), usize::MAX);
            if !chunks.is_empty() {
                last_progress = Instant::now();
            }
        }
        if group_alive_after_reap(self) {
            signal_group(pgid, libc::SIGTERM);
            let term_sent = Instant::now();
            while group_alive_after_reap(self) && term_sent.elapsed() < REAP_TERM_GRACE {
                let _ = self.output.take(Duration::from_millis(50), usize::MAX);
            }
        }
        if group_alive_after_reap(self) {
            signal_group(pgid, libc::SIGKILL);
            self.killed = true;
        }
        let _ = self.child.wait();
        self.channel_writer = None;
        info!("run {}: reaped after its client left", self.id);
    }
}

impl Drop for Job {
    /// Never leak a process group: whatever path dropped the job, the group
    /// dies and the child is reaped. An attached job's work dir goes too.
    fn drop(&mut self) {
        self.poll_exit();
        let outcome = self.outcome();
        metrics::job_finished(outcome);
        if let Some(entry) = &self.entry {
            entry.finish(outcome, self.return_code());
        }
        if self.status.is_none() {
            if let Ok(None) = self.child.try_wait() {
                signal_group(self.pgid(), libc::SIGKILL);
            }
            let _ = self.child.wait();
        }
        self.channel_writer = None;
        if self.remove_work_dir {
            let _ = fs::remove_dir_all(&self.work_dir);
        }
    }
}

/// Runs a detached job to its end on its own thread: output into
/// `output.log` (frames, no keepalives, capped), then `meta.json` finished;
/// `recorded` runs once that record is written and the process reaped.
pub fn run_detached(mut job: Job, run_dir: PathBuf, recorded: impl FnOnce() + Send + 'static) {
    // Kept until `--kill`, which finds it through meta.json.
    job.remove_work_dir = false;
    let meta = DetachedMeta {
        pid: job.pid(),
        id: job.id.clone(),
        started: crate::clock::format_timestamp(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64(),
        ),
        work_dir: job.work_dir.display().to_string(),
        run_dir: run_dir.clone(),
    };
    meta.write("running", None);
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(run_dir.join("output.log"));
    let spawned = thread::Builder::new()
        .name(format!("detached-{}", meta.pid))
        .spawn(move || {
            let mut log = match log {
                Ok(log) => Some(log),
                Err(e) => {
                    warn!(
                        "run {}: cannot open output.log: {e}; output is discarded",
                        job.id
                    );
                    None
                }
            };
            let mut written = 0u64;
            let mut frames = Vec::new();
            loop {
                let (chunks, finished) = job.output.take(Duration::from_millis(200), 256 * 1024);
                job.note(&chunks);
                encode_frames(&chunks, &mut frames);
                job.output.recycle(chunks);
                if written + (frames.len() as u64) <= LOG_MAX {
                    if let Some(log) = log.as_mut() {
                        let _ = log.write_all(&frames);
                    }
                    written += frames.len() as u64;
                }
                frames.clear();
                job.poll_exit();
                if job.output.pipes_closed() && job.status.is_some() {
                    job.channel_writer = None;
                }
                if finished && job.status.is_some() {
                    break;
                }
            }
            let code = job.return_code();
            let text = code.to_string();
            if let Some(log) = log.as_mut() {
                // The exit marker is always written, even past the cap.
                let _ = write!(log, "- {} {text}", text.len());
            }
            info!("run {}: detached job finished with {code}", job.id);
            meta.write("finished", Some(code));
            // Reaped (its status is in), and its --max-jobs slot given back.
            drop(job);
            recorded();
        });
    if let Err(e) = spawned {
        warn!("cannot start the thread of a detached run: {e}");
    }
}

/// `<run-dir>/<id>/meta.json` of a detached run (§3.3), written atomically.
struct DetachedMeta {
    pid: u32,
    id: String,
    started: String,
    work_dir: String,
    run_dir: PathBuf,
}

impl DetachedMeta {
    fn write(&self, status: &str, returncode: Option<i32>) {
        let meta = json!({
            "pid": self.pid,
            "lager_process_id": self.id,
            "started": self.started,
            "status": status,
            "returncode": returncode,
            "work_dir": self.work_dir,
        });
        let bytes = serde_json::to_vec_pretty(&meta).unwrap_or_default();
        if !self.run_dir.is_dir() {
            // `--kill` removed the run (after waiting for this record, in
            // all but a job that outlived its bound): nothing to keep.
            info!(
                "run {}: {status} (code {returncode:?}); its run dir was removed by a kill",
                self.id
            );
            return;
        }
        if let Err(e) = fsutil::replace(&self.run_dir.join("meta.json"), &bytes, Durability::Atomic)
        {
            warn!("run {}: cannot write meta.json: {e}", self.id);
        }
    }
}

/// Splits chunks into `<fileno> <len> <payload>` frames of at most 1 KiB;
/// public for the `cli_frames` fuzz target, which parses them with `lager`.
pub fn encode_frames(chunks: &[(u8, Vec<u8>)], frames: &mut Vec<u8>) {
    for (fileno, data) in chunks {
        for piece in data.chunks(FRAME_MAX) {
            let _ = write!(frames, "{fileno} {} ", piece.len());
            frames.extend_from_slice(piece);
        }
    }
}

fn spawn_pipe_reader(mut pipe: io::PipeReader, fileno: u8, output: Arc<Output>) {
    // 1 MiB pipe buffers where allowed, so bursts never stall the script.
    // SAFETY: F_SETPIPE_SZ on the pipe `pipe` owns; an integer argument, no memory.
    unsafe { libc::fcntl(pipe.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20) };
    let spawned = thread::Builder::new()
        .name(format!("job-fd{fileno}"))
        .stack_size(128 * 1024)
        .spawn({
            let output = output.clone();
            move || {
                loop {
                    let mut buffer = output.buffer();
                    buffer.resize(READ_BLOCK, 0);
                    match pipe.read(&mut buffer) {
                        Ok(0) => break,
                        Ok(n) => {
                            buffer.truncate(n);
                            output.push(fileno, buffer);
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(_) => break,
                    }
                }
                output.lock().pipes_open -= 1;
                output.changed.notify_all();
            }
        });
    if spawned.is_err() {
        output.lock().pipes_open -= 1;
    }
}

/// Creates the FIFO and opens both ends without blocking: lagerd keeps a
/// write end so reads say "nothing yet" instead of EOF before the script
/// opens it.
fn open_channel(path: &Path) -> Option<(File, File)> {
    let c_path = CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: `c_path` is a NUL-terminated string that lives across the call.
    if unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) } != 0 {
        warn!(
            "cannot create the output channel {}: {}",
            path.display(),
            io::Error::last_os_error()
        );
        return None;
    }
    let open = |flags: i32| {
        // SAFETY: `c_path` is a NUL-terminated string that lives across the call.
        let fd = unsafe { libc::open(c_path.as_ptr(), flags | libc::O_NONBLOCK | libc::O_CLOEXEC) };
        // SAFETY: `fd` was just opened by us and is owned by nothing else.
        (fd >= 0).then(|| File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
    };
    Some((open(libc::O_RDONLY)?, open(libc::O_WRONLY)?))
}

fn spawn_channel_reader(mut reader: File, output: Arc<Output>) {
    let spawned = thread::Builder::new()
        .name("job-channel".into())
        .stack_size(128 * 1024)
        .spawn({
            let output = output.clone();
            move || {
                let mut block = vec![0u8; READ_BLOCK];
                loop {
                    match reader.read(&mut block) {
                        // EOF: the script's writers and lagerd's own end are closed.
                        Ok(0) => break,
                        Ok(n) => output.push(3, block[..n].to_vec()),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            let mut pfd = libc::pollfd {
                                fd: reader.as_raw_fd(),
                                events: libc::POLLIN,
                                revents: 0,
                            };
                            // SAFETY: `pfd` is one valid pollfd on the stack, and the count says one.
                            unsafe { libc::poll(&mut pfd, 1, -1) };
                        }
                        Err(_) => break,
                    }
                }
                output.lock().channel_open = false;
                output.changed.notify_all();
            }
        });
    if spawned.is_err() {
        output.lock().channel_open = false;
    }
}

/// Exit status as the spec reports it: the code, or −N for signal N.
pub fn status_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| -status.signal().unwrap_or(1))
}

fn signal_group(pgid: i32, signal: i32) {
    if pgid > 1 {
        // SAFETY: killpg takes plain integers; `pgid > 1` never signals init or everyone.
        unsafe { libc::killpg(pgid, signal) };
    }
}

fn group_alive(pgid: i32) -> bool {
    // SAFETY: signal 0 only checks that the group exists; `pgid > 1` was checked.
    pgid > 1 && unsafe { libc::killpg(pgid, 0) } == 0
}

/// Whether the job's group still has live members, reaping the leader
/// first (an unreaped zombie leader would otherwise count as alive).
fn group_alive_after_reap(job: &mut Job) -> bool {
    job.poll_exit();
    group_alive(job.pgid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_split_at_one_kib() {
        let mut frames = Vec::new();
        encode_frames(
            &[(1, b"hi".to_vec()), (2, vec![b'x'; 1500]), (3, Vec::new())],
            &mut frames,
        );
        let expected = [
            b"1 2 hi".to_vec(),
            b"2 1024 ".to_vec(),
            vec![b'x'; 1024],
            b"2 476 ".to_vec(),
            vec![b'x'; 476],
        ]
        .concat();
        assert_eq!(frames, expected);
    }

    #[test]
    fn a_full_queue_drops_instead_of_blocking_forever() {
        let output = Output::default();
        output.lock().pipes_open = 1;
        output.push(1, vec![0; QUEUE_BYTES_MAX]);
        let started = Instant::now();
        output.push(1, vec![0; 10]);
        assert!(started.elapsed() >= STALL_BEFORE_DROP);
        assert_eq!(output.lock().dropped, 10);
        let (chunks, finished) = output.take(Duration::ZERO, usize::MAX);
        assert_eq!((chunks.len(), finished), (1, false));
    }
}
