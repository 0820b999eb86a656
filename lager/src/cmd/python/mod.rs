//! `lager python` (runner.md §5): run a script or module on a box with its
//! output streamed back, the box auto-locked for exactly the run, and the
//! script's exit code as the CLI's own.
//!
//! This file is the order of operations (§5.2) and the exit handling
//! (§5.5); `package` builds the upload, `multipart` encodes it,
//! [`crate::transport`] sends it, `frames`/`render` show the answer, `manage` holds kill,
//! reattach, continue, console and downloads.
//!
//! Signals (§5.6): the signal thread of [`crate::signals`] calls
//! [`on_signal`]. Before a run is streaming it releases and exits like any
//! locked command; while one streams, it prints the stop notice and sends
//! exactly one kill request, and the main thread keeps rendering until the
//! box's exit marker. The handler restores the default dispositions on the
//! first delivery, so a second signal kills the CLI.

pub mod frames;
mod manage;
pub mod multipart;
pub mod package;
mod render;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use common::holder::format_lock_user;
use common::wire::{HOLDER_HEADER, OUTPUT_VERSION_HEADER, RUNNER_PORT};
use serde_json::{json, Value};

use crate::args::PythonOpts;
use crate::autolock::{self, AcquireState, LockSettings};
use crate::boxsel::{passive_check, resolve, Target};
use crate::client::Client;
use crate::config::Config;
use crate::error::CliError;
use crate::identity::{self, Identity};
use crate::output::{self, Color};
use crate::signals;
use crate::transport::{Connect, Request, Wait};

use multipart::Multipart;
use package::Payload;
use render::{Outcome, Terminal};

/// Between-bytes read limit of a run's stream: keepalives come every 20 s
/// and the box's timeout is at most 300 s plus its 5 s grace (§5.4).
const STREAM_READ_TIMEOUT: Duration = Duration::from_secs(320);
/// The stop request of §5.6: connect 7 s, read 15 s.
const STOP_CONNECT: Duration = Duration::from_secs(7);
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest error or detach body read.
const SMALL_BODY: usize = 64 * 1024;

/// The run a signal should stop.
#[derive(Clone)]
struct ActiveRun {
    runner: Client,
    process_id: String,
}

static ACTIVE: Mutex<Option<ActiveRun>> = Mutex::new(None);
/// Set once the stop request of this process was sent (at most one).
static STOP_SENT: AtomicBool = AtomicBool::new(false);

fn active() -> std::sync::MutexGuard<'static, Option<ActiveRun>> {
    ACTIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Marks `run` as the one signals stop; `None` when its stream is over.
fn set_active(run: Option<ActiveRun>) {
    let streaming = run.is_some();
    *active() = run;
    signals::reset_on_delivery(streaming);
}

/// The signal thread's action for `lager python`.
pub fn on_signal(signo: i32) {
    let run = active().clone();
    match run {
        None => {
            crate::pick::release_queued();
            autolock::on_signal(signo)
        }
        Some(run) => {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, " Attempting to stop Lager Python job");
            let _ = out.flush();
            drop(out);
            stop(&run);
        }
    }
}

/// `POST /python/kill` with SIGTERM for `run`, at most once per process;
/// a failure is reported, never fatal.
fn stop(run: &ActiveRun) {
    if STOP_SENT.swap(true, Ordering::SeqCst) {
        return;
    }
    let body = json!({"lager_process_id": run.process_id, "signal": 15});
    let result = run
        .runner
        .post_json_timeouts("/python/kill", &body, STOP_CONNECT, STOP_TIMEOUT);
    let failure = match result {
        Ok(reply) if reply.status == 200 => return,
        Ok(reply) => format!(
            "HTTP {}{}",
            reply.status,
            error_text(&reply.body)
                .map(|e| format!(" - {e}"))
                .unwrap_or_default()
        ),
        Err(e) => e.to_string(),
    };
    output::tell(
        Color::Red,
        &format!("Failed to stop job on {}: {failure}", run.runner.addr()),
    );
}

/// The `error` field of a JSON error body.
fn error_text(body: &str) -> Option<String> {
    serde_json::from_str::<Value>(body)
        .ok()?
        .get("error")?
        .as_str()
        .map(str::to_string)
}

/// An error status of a runner route as the CLI error of §5.4 (423:
/// locking.md A.10).
fn http_error(status: u16, body: &str, display: &str) -> CliError {
    if status == 423 {
        let user = serde_json::from_str::<Value>(body)
            .ok()
            .and_then(|b| b.get("lock")?.get("user")?.as_str().map(str::to_string))
            .unwrap_or_else(|| "unknown".to_string());
        return CliError::Locked {
            display: display.to_string(),
            user: format_lock_user(&user),
            waited_secs: None,
        };
    }
    CliError::RunnerHttp {
        status,
        detail: error_text(body),
    }
}

/// The normalised exit code of §5.5: `raw < −1` ⇒ `128 + |raw|`.
pub fn normalize(raw: i64) -> i64 {
    if raw < -1 {
        128i64.saturating_add(raw.saturating_abs())
    } else {
        raw
    }
}

/// What the process exits with for a normalised code (−1 ⇒ 255).
pub fn process_exit(code: i64) -> u8 {
    code.rem_euclid(256) as u8
}

/// 16 bytes from `/dev/urandom`.
pub(crate) fn random_bytes() -> Result<[u8; 16], CliError> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| CliError::Random(e.to_string()))?;
    Ok(bytes)
}

/// Whether fd 1 and fd 2 are the same open file.
fn stdout_is_stderr() -> bool {
    // SAFETY: fstat writes into the zeroed structs only.
    unsafe {
        let mut out: libc::stat = std::mem::zeroed();
        let mut err: libc::stat = std::mem::zeroed();
        libc::fstat(1, &mut out) == 0
            && libc::fstat(2, &mut err) == 0
            && out.st_dev == err.st_dev
            && out.st_ino == err.st_ino
    }
}

pub fn is_tty(fd: i32) -> bool {
    // SAFETY: isatty only inspects the descriptor number.
    unsafe { libc::isatty(fd) == 1 }
}

/// Click's wording for a path argument that does not exist (exit 2).
fn must_exist(what: &str, path: &str) -> Result<PathBuf, CliError> {
    let p = PathBuf::from(path);
    if p.exists() {
        Ok(p)
    } else {
        Err(CliError::Usage(format!(
            "Error: Invalid value for '{what}': Path '{path}' does not exist."
        )))
    }
}

/// `<label>` of locking.md B.7 and the hints: `--box` text, else the address.
fn label(opts: &PythonOpts, target: &Target) -> String {
    match opts.box_name.as_deref() {
        // A picked box (`any:PATTERN`) is named by what was picked.
        Some(text) if text.starts_with("any:") => target.display.clone(),
        Some(text) => text.to_string(),
        None => target.address(),
    }
}

/// `--box any:PATTERN` (fleet.md §3): the first free box of the pool,
/// locked with this run's auto-lock holder and armed like any auto-lock.
fn pick_box(
    config: &Config,
    pool: &str,
    opts: &PythonOpts,
    identity: &Identity,
    settings: &LockSettings,
) -> Result<(Target, autolock::Acquisition), CliError> {
    if opts.manage.is_some() {
        return Err(CliError::Usage(
            "--box any:PATTERN picks a box for a new run; --kill, --reattach, --continue and --console need the box's name".into(),
        ));
    }
    if settings.disabled {
        return Err(CliError::Usage(
            "--box any:PATTERN locks the box it picks; unset LAGER_AUTO_LOCK_DISABLE or name a box"
                .into(),
        ));
    }
    let ttl_secs = if opts.detach { None } else { settings.ttl_secs };
    let holder = crate::pick::Holder {
        user: identity.holder.clone(),
        holder_type: settings.holder_type.to_string(),
        ttl_secs,
    };
    signals::install(on_signal);
    let want = crate::pick::Want {
        pool: Some(pool.to_string()),
        nets: Vec::new(),
    };
    let picked = crate::pick::pick(config, &want, &holder, settings.wait)?;
    output::tell(
        Color::Green,
        &format!("Picked box '{}' (pool '{pool}')", picked.name),
    );
    let acquisition = autolock::Acquisition {
        state: if picked.already_ours {
            AcquireState::AlreadyOurs
        } else {
            AcquireState::Acquired
        },
        record: Some(picked.record),
    };
    let mut lock_settings = settings.clone();
    lock_settings.ttl_secs = ttl_secs;
    autolock::adopt(
        &picked.target.lock_client(),
        &identity.holder,
        &lock_settings,
        &acquisition,
    );
    Ok((picked.target, acquisition))
}

/// `lager python ...`.
pub fn run(opts: PythonOpts) -> Result<ExitCode, CliError> {
    // Path checks first, as a usage error (click validates at parse time).
    let runnable = match (&opts.manage, &opts.runnable) {
        (None, Some(path)) => Some(must_exist("RUNNABLE", path)?),
        _ => None,
    };
    let add_files = opts
        .add_files
        .iter()
        .map(|f| must_exist("--add-file", f))
        .collect::<Result<Vec<_>, _>>()?;

    // §5.2 steps 1–2.
    let config = Config::load()?;
    let identity = Identity::current(config.default_str("user").as_deref());
    let settings = LockSettings::from_env(&identity::env_lookup, identity::under_ci());
    let skip_lock = opts.manage.is_some();
    let auto_lock = !skip_lock && runnable.is_some() && !settings.disabled;
    let pool = opts
        .box_name
        .as_deref()
        .and_then(|b| b.strip_prefix("any:"));
    let (target, picked) = match pool {
        Some(pool) => {
            let (target, acquisition) = pick_box(&config, pool, &opts, &identity, &settings)?;
            (target, Some(acquisition))
        }
        None => (resolve(&config, opts.box_name.as_deref())?, None),
    };
    if !skip_lock && !auto_lock {
        passive_check(&target, &target.lock_client(), &identity)?;
    }
    let runner = target.client(RUNNER_PORT);

    // Step 3: management operations, without lock traffic.
    if let Some(op) = &opts.manage {
        signals::install(on_signal);
        return manage::run(op, &target, &runner, &label(&opts, &target));
    }
    let Some(runnable) = runnable else {
        return Err(CliError::Usage(
            "Please supply a RUNNABLE, --kill, --kill-all, --reattach, --continue, or --console option"
                .to_string(),
        ));
    };

    // Step 4.
    for path in &opts.downloads {
        let name = manage::download_name(path);
        if !opts.allow_overwrite && Path::new(&name).exists() {
            return Err(CliError::Usage(format!(
                "File {name} exists; please rename it or use the --allow-overwrite flag"
            )));
        }
    }
    let process_id = common::runid::uuid4(random_bytes()?);
    let mut env = opts.env.clone();
    if picked.is_some() {
        env.push(format!("LAGER_BOX={}", target.display));
    } else if let Some(box_text) = &opts.box_name {
        env.push(format!("LAGER_BOX={box_text}"));
    }
    env.push(format!("LAGER_PROCESS_ID={process_id}"));
    env.push(format!(
        "LAGER_RUNNABLE={}",
        opts.runnable.as_deref().unwrap_or_default()
    ));
    for name in &opts.passenv {
        match std::env::var(name) {
            Ok(value) => env.push(format!("{name}={value}")),
            Err(_) => output::warn(&format!(
                "Warning: --passenv {name}: {name} is not set here; not passed to the script"
            )),
        }
    }

    // Step 5: auto-lock. Signals before the stream starts release and exit.
    signals::install(on_signal);
    let held_user = if auto_lock {
        let mut lock_settings = settings.clone();
        if opts.detach {
            lock_settings.ttl_secs = None;
        }
        let acquisition = match picked {
            Some(acquisition) => acquisition,
            None => autolock::engage(
                &target.lock_client(),
                &target.display,
                &identity.holder,
                &lock_settings,
            )?,
        };
        if opts.detach && acquisition.state == AcquireState::Acquired {
            let label = label(&opts, &target);
            output::warn(&format!(
                "Box '{label}' locked for detached run; release with: lager boxes unlock --box {label}"
            ));
        }
        match acquisition.state {
            AcquireState::Acquired | AcquireState::AlreadyOurs => Some(
                acquisition
                    .record
                    .as_ref()
                    .and_then(|r| r.get("user"))
                    .and_then(Value::as_str)
                    .unwrap_or(&identity.holder)
                    .to_string(),
            ),
            AcquireState::Unreachable => None,
        }
    } else {
        None
    };

    // Step 6: package, upload, render.
    let payload = package::package(&runnable, &add_files)?;
    let mut form = Multipart::new(common::runid::uuid4(random_bytes()?).replace('-', ""));
    form.text(
        "stdout_is_stderr",
        if stdout_is_stderr() { "True" } else { "False" },
    );
    form.text("detach", if opts.detach { "1" } else { "0" });
    if let Some(org) = &opts.org {
        form.text("org", org);
    }
    for arg in &opts.args {
        form.text("args", arg);
    }
    for pair in &env {
        form.text("env", pair);
    }
    for port in &opts.ports {
        form.text("portforwards", port);
    }
    form.text("timeout", &opts.timeout_secs.to_string());
    if let Some(user) = &held_user {
        form.text("holder", user);
    }
    match &payload {
        Payload::Script { filename, bytes } => form.file("script", filename, bytes),
        Payload::Module(bytes) => form.file("module", "module.zip", bytes),
    }
    drop(payload);
    let content_type = form.content_type();
    let body = form.finish();
    let headers = [(
        HOLDER_HEADER,
        held_user.as_deref().unwrap_or(&identity.holder),
    )];
    let request = Request::post(
        "/python",
        &content_type,
        &body,
        Wait::Idle(STREAM_READ_TIMEOUT),
    )
    .headers(&headers)
    .connect(Connect::RUNNER);
    let mut response = runner.open(&request).map_err(CliError::RunnerConnect)?;
    drop(body);
    if response.status != 200 {
        let text = response.text(SMALL_BODY).unwrap_or_default();
        return Err(http_error(response.status, &text, &target.display));
    }
    if opts.detach {
        let text = response.text(SMALL_BODY).unwrap_or_default();
        return detached(&text, &process_id, &label(&opts, &target));
    }
    if response.header(OUTPUT_VERSION_HEADER) != Some("1") {
        return Err(CliError::FormatUnsupported);
    }
    let run = ActiveRun { runner, process_id };
    set_active(Some(run.clone()));
    if is_tty(0) {
        manage::spawn_stdin_continue(run.runner.clone(), run.process_id.clone(), None);
    }
    let _ = std::io::stdout().flush();
    let mut terminal = Terminal::new();
    let outcome = render::follow(&mut response, &mut terminal);
    drop(response);
    set_active(None);
    finish_run(outcome, &run, &target.display, || {
        manage::downloads(&target, &opts.downloads)
    })
}

/// The success output of `--detach` (§5.7); an error body fails it, and
/// the caller's lock guard then releases the lock (locking.md B.7).
fn detached(text: &str, process_id: &str, label: &str) -> Result<ExitCode, CliError> {
    let reply: Option<Value> = serde_json::from_str(text).ok();
    if let Some(error) = reply.as_ref().and_then(|r| r.get("error")) {
        return Err(CliError::Rejected(format!(
            "Error: {}",
            error
                .as_str()
                .map(str::to_string)
                .unwrap_or(error.to_string())
        )));
    }
    // Only a successful detach keeps its lock past exit.
    autolock::keep();
    match reply {
        Some(reply) => {
            let id = reply
                .get("lager_process_id")
                .and_then(Value::as_str)
                .unwrap_or(process_id);
            println!("Process detached (Process ID: {id})");
            println!("To reattach: lager python --reattach {id} --box {label}");
            println!("To kill: lager python --kill {id} --box {label}");
        }
        None => println!("Process detached."),
    }
    Ok(ExitCode::SUCCESS)
}

/// §5.5: messages, release, downloads, exit code.
fn finish_run(
    outcome: Outcome,
    run: &ActiveRun,
    display: &str,
    downloads: impl FnOnce(),
) -> Result<ExitCode, CliError> {
    match outcome {
        Outcome::Exit(raw) => {
            let code = normalize(raw);
            match code {
                -1 => output::tell(Color::Red, "Failed to retrieve script exit code."),
                124 => output::tell(Color::Red, "Script terminated due to timeout."),
                137 => output::tell(Color::Red, "Script forcibly killed due to timeout."),
                _ => {}
            }
            autolock::release();
            downloads();
            Ok(ExitCode::from(process_exit(code)))
        }
        Outcome::Lost(detail) => {
            log::info!("stream from {display} ended: {detail}");
            output::tell(
                Color::Red,
                &format!(
                    "Error: Lost connection to box '{display}' before the script finished; its exit status is unknown."
                ),
            );
            autolock::release();
            Ok(ExitCode::from(255))
        }
        Outcome::BrokenPipe => {
            stop(run);
            autolock::release();
            Ok(ExitCode::SUCCESS)
        }
        Outcome::Detached => {
            autolock::release();
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_normalisation() {
        for (raw, code, exit) in [
            (0, 0, 0),
            (42, 42, 42),
            (124, 124, 124),
            (-9, 137, 137),
            (-15, 143, 143),
            (-2, 130, 130),
            (-1, -1, 255),
        ] {
            assert_eq!(normalize(raw), code, "{raw}");
            assert_eq!(process_exit(normalize(raw)), exit, "{raw}");
        }
    }

    #[test]
    fn run_ids_are_random_v4_uuids() {
        let id = common::runid::uuid4(random_bytes().expect("urandom"));
        assert!(common::runid::is_uuid(&id));
        assert_eq!(&id[14..15], "4");
    }

    #[test]
    fn http_errors_name_the_status_and_holder() {
        let err = http_error(
            423,
            r#"{"error":"Box is locked by bob","lock":{"user":"ci:generic:box-9:3"}}"#,
            "b1",
        );
        assert_eq!(
            err.to_string(),
            "Error: Box 'b1' is locked by ci on box-9\nTo force unlock: lager boxes unlock --box b1 --force"
        );
        let err = http_error(
            422,
            r#"{"error":"Could not find main.py in module","status":"error"}"#,
            "b1",
        );
        assert_eq!(
            err.to_string(),
            "Error: Box returned HTTP 422\nDetails: Could not find main.py in module"
        );
        assert_eq!(
            http_error(503, "down", "b1").to_string(),
            "Error: Service unavailable (HTTP 503)"
        );
    }
}
