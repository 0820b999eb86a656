//! The script runner behind `lager python` (runner.md): turns a `POST
//! /python` upload into a job (a `python3 -u` child in its own process group
//! with the box's environment), and owns the run dir of detached jobs.
//! `job.rs` streams a job's output; `manage.rs` kills, attaches, resumes;
//! `archive.rs` unpacks modules.

pub mod archive;
pub mod board;
pub mod callers;
pub mod job;
pub mod manage;

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use log::{info, warn};
use serde_json::Value;

use common::runid::is_uuid;
use common::truthy;

use crate::multipart::Part;
use crate::scriptenv::ScriptEnv;
use callers::{Caller, Callers};
use job::Job;

/// Attached runs are capped at five minutes (runner.md §2.1).
const TIMEOUT_MAX_SECS: u64 = 300;
/// `timeout` when the request has none.
const TIMEOUT_DEFAULT_SECS: u64 = 300;
/// New runs wait this long for an earlier job's reaping to finish (§2).
const QUIESCE_WAIT: Duration = Duration::from_secs(69);
/// A reaping entry older than this no longer holds new runs back.
const QUIESCE_STALE: Duration = Duration::from_secs(90);

/// Where the runner finds things; production defaults from the environment.
pub struct RunnerConfig {
    /// `<run-dir>`: detached jobs' output and metadata.
    pub run_dir: PathBuf,
    /// Parent of each job's private working dir.
    pub work_root: PathBuf,
    pub python: String,
    pub state_dir: PathBuf,
    pub proc_root: PathBuf,
    /// Most jobs at once: attached runs plus detached ones still running
    /// (`--max-jobs`).
    pub max_jobs: usize,
}

impl RunnerConfig {
    pub fn from_env(state_dir: &Path, proc_root: &Path) -> RunnerConfig {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        RunnerConfig {
            run_dir: var("LAGERD_RUN_DIR")
                .map_or_else(|| PathBuf::from("/tmp/lager_processes"), PathBuf::from),
            work_root: std::env::temp_dir(),
            python: var("LAGERD_PYTHON")
                .map_or_else(|| "python3".into(), |v| v.to_string_lossy().into_owned()),
            state_dir: state_dir.to_path_buf(),
            proc_root: proc_root.to_path_buf(),
            max_jobs: crate::config::DEFAULT_MAX_JOBS,
        }
    }
}

/// Why a runner request failed. `Display` is runner.md §3.4 and §4's
/// message, which the Python client prints after `Details:`.
#[derive(Debug)]
pub enum RunError {
    /// The upload is not the multipart form runner.md §1 describes.
    Upload(crate::multipart::MultipartError),
    /// A management body that is not a JSON object (§4).
    InvalidJson,
    /// `timeout` that is not a whole number of seconds.
    BadTimeout,
    /// A management request without `lager_process_id`.
    NoProcessId,
    /// A `lager_process_id` that is no UUID, as given.
    BadProcessId(String),
    /// A kill `signal` outside [0, NSIG), as given.
    BadSignal(Value),
    /// No run dir for this id: never run, or already killed.
    NoSuchRun(String),
    /// Neither a script nor a module was uploaded.
    NoPayload,
    /// A module without `main.py` at its top.
    NoMain,
    /// A module zip that cannot be unpacked safely.
    Archive(archive::ArchiveError),
    /// pip failed on the module's `requirements.txt`.
    Requirements(crate::scriptenv::wheels::WheelError),
    /// `--max-jobs` jobs are running already.
    Full { max: usize },
    /// The box's python could not be started (`LAGERD_PYTHON`).
    NoPython { python: String, error: io::Error },
    /// The box could not prepare or start the job.
    Io(io::Error),
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunError::Upload(why) => write!(f, "Failed to parse request: {why}"),
            RunError::InvalidJson => f.write_str("Invalid JSON"),
            RunError::BadTimeout => f.write_str("timeout must be an integer"),
            RunError::NoProcessId => f.write_str("lager_process_id is required"),
            RunError::BadProcessId(id) => write!(f, "Invalid process UUID: {id}"),
            RunError::BadSignal(value) => write!(f, "Invalid signal: {value}"),
            RunError::NoSuchRun(id) => write!(f, "Process not found: {id}"),
            RunError::NoPayload => f.write_str("Could not find module folder"),
            RunError::NoMain => f.write_str("Could not find main.py in module"),
            RunError::Archive(archive::ArchiveError::Io(e)) | RunError::Io(e) => {
                write!(f, "Internal server error: {e}")
            }
            RunError::Archive(e) => e.fmt(f),
            RunError::Requirements(e) => write!(f, "Pip install failed: {e}"),
            RunError::NoPython { python, error } => write!(
                f,
                "Internal server error: lagerd could not start the box's python {python}: {error}; install python3 on the box, or set LAGERD_PYTHON to it in /etc/lager/lagerd.conf and restart lagerd"
            ),
            RunError::Full { max } => write!(
                f,
                "lagerd is already running {max} jobs, its limit (--max-jobs {max}, attached and detached runs together): wait for one to finish, stop a detached one with lager python --kill ID (or --kill-all), or raise --max-jobs in /etc/lager/lagerd.conf"
            ),
        }
    }
}

impl From<io::Error> for RunError {
    fn from(e: io::Error) -> RunError {
        RunError::Io(e)
    }
}

enum Payload<'a> {
    Script(&'a [u8]),
    Module(&'a [u8]),
}

/// A `POST /python` request after parsing (runner.md §1).
pub struct RunRequest<'a> {
    stdout_is_stderr: bool,
    pub detach: bool,
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// `None` when the request names no timeout (attached runs then get 300 s).
    timeout_secs: Option<u64>,
    payload: Option<Payload<'a>>,
    /// `holder` field, for `--enforce-locks` (the header wins over it).
    pub holder: Option<String>,
    exported: Vec<(&'static str, String)>,
}

impl<'a> RunRequest<'a> {
    pub fn from_parts(parts: &[Part<'a>]) -> Result<RunRequest<'a>, RunError> {
        let text = |data: &[u8]| String::from_utf8_lossy(data).into_owned();
        let mut request = RunRequest {
            stdout_is_stderr: true,
            detach: false,
            args: Vec::new(),
            env: Vec::new(),
            timeout_secs: None,
            payload: None,
            holder: None,
            exported: Vec::new(),
        };
        for part in parts {
            match part.name.as_str() {
                "stdout_is_stderr" => request.stdout_is_stderr = truthy::form(part.data),
                "detach" => request.detach = truthy::form(part.data),
                "args" => request.args.push(text(part.data)),
                "env" => {
                    let pair = text(part.data);
                    if let Some((key, value)) = pair.split_once('=') {
                        request.env.push((key.to_string(), value.to_string()));
                    }
                }
                "timeout" => {
                    let secs = text(part.data)
                        .trim()
                        .parse()
                        .map_err(|_| RunError::BadTimeout)?;
                    request.timeout_secs = Some(secs);
                }
                "script" => request.payload = Some(Payload::Script(part.data)),
                "module" => request.payload = Some(Payload::Module(part.data)),
                "holder" => request.holder = Some(text(part.data)),
                "muxes" => request.exported.push(("LAGER_MUXES", text(part.data))),
                "usb_mapping" => request
                    .exported
                    .push(("LAGER_USB_MAPPINGS", text(part.data))),
                "dut_commands" => request
                    .exported
                    .push(("LAGER_DUT_COMMANDS", text(part.data))),
                _ => {} // org, portforwards and unknown fields are accepted and ignored.
            }
        }
        Ok(request)
    }
}

/// Jobs being reaped hold new runs back (runner.md §2, the quiesce gate).
#[derive(Default)]
pub struct Quiesce {
    reaping: Mutex<HashMap<u64, Instant>>,
    changed: Condvar,
    next: AtomicU64,
}

impl Quiesce {
    /// Marks a reaping in progress until the guard drops.
    pub fn enter(&self) -> QuiesceGuard<'_> {
        let token = self.next.fetch_add(1, Ordering::Relaxed);
        self.reaping
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(token, Instant::now());
        QuiesceGuard {
            quiesce: self,
            token,
        }
    }

    fn wait(&self) {
        let deadline = Instant::now() + QUIESCE_WAIT;
        let mut reaping = self.reaping.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            reaping.retain(|_, since| since.elapsed() < QUIESCE_STALE);
            if reaping.is_empty() {
                return;
            }
            let now = Instant::now();
            if now >= deadline {
                warn!(
                    "starting a run while {} earlier job(s) are still being reaped",
                    reaping.len()
                );
                return;
            }
            reaping = self
                .changed
                .wait_timeout(reaping, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

pub struct QuiesceGuard<'a> {
    quiesce: &'a Quiesce,
    token: u64,
}

impl Drop for QuiesceGuard<'_> {
    fn drop(&mut self) {
        self.quiesce
            .reaping
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.token);
        self.quiesce.changed.notify_all();
    }
}

/// Jobs that hold a slot: attached runs until their stream ends, detached
/// ones until they exit. Each costs a python3 and 2-4 threads, so a Pi
/// must be able to say no (issue 12).
struct Slots {
    running: Mutex<usize>,
    max: usize,
}

/// One job's place under `--max-jobs`, given back on drop (by whichever
/// path drops the `Job` that holds it).
pub struct Slot(Arc<Slots>);

impl Slots {
    fn take(self: &Arc<Self>) -> Result<Slot, RunError> {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        if *running >= self.max {
            return Err(RunError::Full { max: self.max });
        }
        *running += 1;
        Ok(Slot(self.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        *self
            .0
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner) -= 1;
    }
}

/// Set by a detached job's thread once its record (`meta.json` finished,
/// the exit marker) is written and the process reaped; `--kill` waits for
/// it before it deletes the run dir.
#[derive(Default)]
pub struct Recorded {
    done: Mutex<bool>,
    changed: Condvar,
}

impl Recorded {
    pub fn set(&self) {
        *self.done.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.changed.notify_all();
    }

    /// Waits until set or `timeout` passed; true if set.
    pub fn wait(&self, timeout: Duration) -> bool {
        let done = self.done.lock().unwrap_or_else(PoisonError::into_inner);
        let (done, _) = self
            .changed
            .wait_timeout_while(done, timeout, |done| !*done)
            .unwrap_or_else(PoisonError::into_inner);
        *done
    }
}

/// What `start` made of a request.
pub enum Started {
    /// Stream its output to the client (`job::stream`).
    Attached(Job),
    /// Runs on without a client: `{"status":"detached",...}`.
    Detached { pid: u32, id: String },
}

/// A job's token file, in its private work dir (`callers.rs`).
const JOB_TOKEN_FILE: &str = ".lager_job_token";

pub struct Runner {
    pub config: RunnerConfig,
    pub quiesce: Quiesce,
    /// The live jobs' tokens: which job a request comes from.
    pub callers: Arc<Callers>,
    /// The `lager` package and the wheels' site dir on every job's path.
    pub script_env: Arc<ScriptEnv>,
    /// Jobs for the status page.
    pub board: board::Board,
    work_seq: AtomicU64,
    slots: Arc<Slots>,
    /// Detached runs still running, by id, until their record is written.
    detached: Arc<Mutex<HashMap<String, Arc<Recorded>>>>,
}

impl Runner {
    pub fn new(config: RunnerConfig, script_env: Arc<ScriptEnv>) -> Runner {
        let slots = Arc::new(Slots {
            running: Mutex::new(0),
            max: config.max_jobs.max(1),
        });
        Runner {
            config,
            quiesce: Quiesce::default(),
            callers: Arc::new(Callers::default()),
            script_env,
            board: board::Board::default(),
            work_seq: AtomicU64::new(0),
            slots,
            detached: Arc::default(),
        }
    }

    /// Prepares the job's dir and spawns it (runner.md §2).
    pub fn start(&self, request: RunRequest<'_>, client_ip: &str) -> Result<Started, RunError> {
        let payload = request.payload.as_ref().ok_or(RunError::NoPayload)?;
        // Before anything is unpacked or installed: a full box says so at once.
        let slot = self.slots.take()?;
        let (id, env) = with_process_id(&request.env);
        let work_dir = self.make_work_dir(&id)?;
        let prepared = self.prepare(payload, &work_dir);
        let entry = match prepared {
            Ok(entry) => entry,
            Err(e) => {
                let _ = fs::remove_dir_all(&work_dir);
                return Err(e);
            }
        };
        let mut command = Command::new(&self.config.python);
        command
            .arg("-u")
            .arg(&entry)
            .args(&request.args)
            .current_dir(&work_dir)
            .stdin(Stdio::null());
        command.envs(env.iter().map(|(k, v)| (k, v)));
        command.envs(self.box_env(&request, &work_dir, client_ip));
        let inherited = env
            .iter()
            .rev()
            .find(|(k, _)| k == "PYTHONPATH")
            .map(|(_, v)| v.clone())
            .or_else(|| std::env::var("PYTHONPATH").ok());
        command.env(
            "PYTHONPATH",
            self.script_env.python_path(inherited.as_deref()),
        );
        let caller = Caller {
            run_id: id.clone(),
            holder: request.holder.clone(),
        };
        let caller = match self.job_token(&work_dir, &mut command, caller) {
            Ok(guard) => guard,
            Err(e) => {
                let _ = fs::remove_dir_all(&work_dir);
                return Err(e.into());
            }
        };
        self.quiesce.wait();
        if request.detach {
            if let Some(secs @ 1..) = request.timeout_secs {
                warn!("run {id}: timeout {secs}s ignored for a detached run");
            }
            let run_dir = self.config.run_dir.join(&id);
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(&run_dir)?;
            // A detached job gets its own session: it must outlive lagerd's
            // connection and never receive the terminal's signals.
            // SAFETY: the hook runs in the forked child before exec and calls only setsid(2), which is async-signal-safe and touches no memory of the parent.
            unsafe {
                command.pre_exec(|| {
                    if libc::setsid() < 0 {
                        return Err(io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            let job = Job::spawn(
                command,
                request.stdout_is_stderr,
                &id,
                work_dir.clone(),
                None,
            );
            let mut job = match job {
                Ok(job) => job.holding(slot),
                Err(e) => {
                    // Nothing ran: no run dir for --reattach to follow.
                    let _ = fs::remove_dir_all(&run_dir);
                    return Err(self.not_started(e, &work_dir));
                }
            };
            job.hold(caller);
            let pid = job.pid();
            job.track(self.board.add(&id, pid, true));
            info!("run {id}: detached as pid {pid}");
            let recorded = Arc::new(Recorded::default());
            self.detached
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(id.clone(), recorded.clone());
            let registry = self.detached.clone();
            job::run_detached(job, run_dir, move || {
                recorded.set();
                registry
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .retain(|_, r| !Arc::ptr_eq(r, &recorded));
            });
            return Ok(Started::Detached { pid, id });
        }
        command.process_group(0);
        let timeout = match request.timeout_secs.unwrap_or(TIMEOUT_DEFAULT_SECS) {
            0 => None,
            secs if secs > TIMEOUT_MAX_SECS => {
                warn!("run {id}: timeout {secs}s capped to {TIMEOUT_MAX_SECS}s");
                Some(Duration::from_secs(TIMEOUT_MAX_SECS))
            }
            secs => Some(Duration::from_secs(secs)),
        };
        let job = Job::spawn(
            command,
            request.stdout_is_stderr,
            &id,
            work_dir.clone(),
            timeout,
        );
        let mut job = match job {
            Ok(job) => job.holding(slot),
            Err(e) => return Err(self.not_started(e, &work_dir)),
        };
        job.hold(caller);
        info!("run {id}: started as pid {}", job.pid());
        job.track(self.board.add(&id, job.pid(), false));
        Ok(Started::Attached(job))
    }

    /// A job that could not be spawned leaves nothing behind, and says
    /// which python was missing rather than only the OS's words.
    fn not_started(&self, error: io::Error, work_dir: &Path) -> RunError {
        let _ = fs::remove_dir_all(work_dir);
        match error.kind() {
            io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied => RunError::NoPython {
                python: self.config.python.clone(),
                error,
            },
            _ => RunError::Io(error),
        }
    }

    fn make_work_dir(&self, id: &str) -> Result<PathBuf, RunError> {
        let seq = self.work_seq.fetch_add(1, Ordering::Relaxed);
        let dir = self
            .config
            .work_root
            .join(format!("lager-job-{}-{seq}-{id}", std::process::id()));
        fs::DirBuilder::new().mode(0o700).create(&dir)?;
        Ok(dir)
    }

    /// Writes the script or unpacks the module; returns the file to run.
    fn prepare(&self, payload: &Payload<'_>, work_dir: &Path) -> Result<PathBuf, RunError> {
        match payload {
            Payload::Script(bytes) => {
                let path = work_dir.join(format!("tmp{}.py", &random_hex(4)));
                fs::write(&path, bytes)?;
                Ok(path)
            }
            Payload::Module(bytes) => {
                archive::extract(bytes, work_dir).map_err(RunError::Archive)?;
                let main = work_dir.join("main.py");
                if !main.is_file() {
                    return Err(RunError::NoMain);
                }
                if work_dir.join("requirements.txt").is_file() {
                    self.pip_install(work_dir)?;
                }
                Ok(main)
            }
        }
    }

    /// A module's `requirements.txt` goes into the site dir every job sees
    /// (scripts.md §3), not into the interpreter's own site-packages.
    fn pip_install(&self, work_dir: &Path) -> Result<(), RunError> {
        self.script_env
            .install_requirements(work_dir)
            .map_err(RunError::Requirements)
    }

    /// Gives the job its token (`callers.rs`) and where lagerd is: a file
    /// only the job can read, named in its environment.
    fn job_token(
        &self,
        work_dir: &Path,
        command: &mut Command,
        caller: Caller,
    ) -> io::Result<callers::CallerGuard> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let token = format!("{}{}", random_hex(16), random_hex(16));
        let path = work_dir.join(JOB_TOKEN_FILE);
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)?;
        file.write_all(token.as_bytes())?;
        command.env("LAGER_JOB_TOKEN_FILE", &path);
        if let Some(url) = self.script_env.daemon_url() {
            command.env("LAGER_DAEMON_URL", url);
        }
        Ok(self.callers.register(caller, token))
    }

    /// The box's own variables, which win over the client's (runner.md §2).
    fn box_env(
        &self,
        request: &RunRequest<'_>,
        work_dir: &Path,
        client_ip: &str,
    ) -> Vec<(String, String)> {
        let state = &self.config.state_dir;
        let box_id = crate::fsutil::read_limited(&state.join("box_id"), 4096)
            .map(|t| String::from_utf8_lossy(&t).trim().to_string())
            .ok();
        let mut env = vec![
            ("LAGER_HOST".to_string(), hostname()),
            (
                "LAGER_HOST_MODULE_FOLDER".to_string(),
                work_dir.display().to_string(),
            ),
            (
                "LAGER_STDOUT_IS_STDERR".to_string(),
                if request.stdout_is_stderr {
                    "True"
                } else {
                    "False"
                }
                .to_string(),
            ),
            (
                "LAGER_OUTPUT_CHANNEL".to_string(),
                work_dir.join(job::OUTPUT_CHANNEL).display().to_string(),
            ),
            (
                "LAGER_BOX_ID".to_string(),
                box_id
                    .filter(|id| !id.is_empty())
                    .unwrap_or_else(|| "unknown".into()),
            ),
            ("LAGER_CLIENT_IP".to_string(), client_ip.to_string()),
        ];
        let secrets = crate::fsutil::read_limited(&state.join("org_secrets.json"), 1 << 20)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<serde_json::Map<String, Value>>(&bytes).ok())
            .unwrap_or_default();
        for (key, value) in secrets {
            let value = value
                .as_str()
                .map_or_else(|| value.to_string(), str::to_string);
            env.push((format!("LAGER_SECRET_{key}"), value));
        }
        env.extend(
            request
                .exported
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone())),
        );
        env
    }
}

/// The run's id: the first `LAGER_PROCESS_ID` the client sent if it is a
/// UUID, else a fresh one, so every job is killable (runner.md §2).
fn with_process_id(env: &[(String, String)]) -> (String, Vec<(String, String)>) {
    let given = env
        .iter()
        .find(|(k, _)| k == "LAGER_PROCESS_ID")
        .map(|(_, v)| v.as_str());
    let id = match given {
        Some(id) if is_uuid(id) => id.to_string(),
        _ => new_uuid(),
    };
    let mut env: Vec<_> = env
        .iter()
        .filter(|(k, _)| k != "LAGER_PROCESS_ID")
        .cloned()
        .collect();
    env.push(("LAGER_PROCESS_ID".into(), id.clone()));
    (id, env)
}

/// A random (version 4) UUID from the kernel's generator.
pub fn new_uuid() -> String {
    common::runid::uuid4(random_bytes::<16>())
}

fn random_hex(len: usize) -> String {
    random_bytes::<16>()[..len]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    if fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .is_err()
    {
        // No /dev/urandom (an odd chroot): time and pid still make ids unique.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let mixed = (nanos ^ (u128::from(std::process::id()) << 64)).to_le_bytes();
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = mixed[i % mixed.len()];
        }
    }
    bytes
}

pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into `buf`.
    if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part<'a>(name: &str, data: &'a [u8]) -> Part<'a> {
        Part {
            name: name.into(),
            filename: None,
            data,
        }
    }

    #[test]
    fn parses_fields_per_runner_spec() {
        let parts = [
            part("stdout_is_stderr", b"False"),
            part("detach", b"0"),
            part("args", b"--flag"),
            part("args", b""),
            part("env", b"A=1=2"),
            part("env", b"no-equals"),
            part("timeout", b"12"),
            part("muxes", b"[]"),
            part("script", b"print(1)"),
        ];
        let request = RunRequest::from_parts(&parts).unwrap();
        assert!(!request.stdout_is_stderr && !request.detach);
        assert_eq!(request.args, ["--flag", ""]);
        assert_eq!(request.env, [("A".to_string(), "1=2".to_string())]);
        assert_eq!(request.timeout_secs, Some(12));
        assert_eq!(request.exported, [("LAGER_MUXES", "[]".to_string())]);
        assert!(matches!(
            request.payload,
            Some(Payload::Script(b"print(1)"))
        ));

        let defaults = RunRequest::from_parts(&[]).unwrap();
        assert!(defaults.stdout_is_stderr && !defaults.detach);
        assert_eq!(defaults.timeout_secs, None);
        let err = RunRequest::from_parts(&[part("timeout", b"soon")])
            .err()
            .unwrap();
        assert!(matches!(err, RunError::BadTimeout), "{err}");
        assert_eq!(err.to_string(), "timeout must be an integer");
    }

    #[test]
    fn process_ids_are_kept_or_made() {
        let given = "6f1c7f3a-1b2c-4d5e-8f90-0123456789ab";
        let (id, env) = with_process_id(&[
            ("LAGER_PROCESS_ID".into(), given.into()),
            ("X".into(), "1".into()),
        ]);
        assert_eq!(id, given);
        assert_eq!(
            env.iter().filter(|(k, _)| k == "LAGER_PROCESS_ID").count(),
            1
        );
        let (id, env) = with_process_id(&[("LAGER_PROCESS_ID".into(), "not-a-uuid".into())]);
        assert!(is_uuid(&id) && id != "not-a-uuid");
        assert_eq!(env, [("LAGER_PROCESS_ID".to_string(), id)]);
        assert!(!is_uuid("6f1c7f3a-1b2c-4d5e-8f90-0123456789az"));
        assert_ne!(new_uuid(), new_uuid());
        assert_eq!(&new_uuid()[14..15], "4");
    }
}
