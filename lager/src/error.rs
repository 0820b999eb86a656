//! `CliError`: every way a `lager` command fails, with the exact text the
//! specs prescribe (locking.md Part B, boxes.md) and the exit code.
//!
//! Variants carry data; `Display` renders the whole user-facing message,
//! which names what failed and what to do next. Messages quoted by the
//! specs keep their capitalisation and punctuation.

use std::fmt;
use std::path::PathBuf;

use crate::client::{fmt_timeout, TransportError, TransportKind};
use crate::cmd::diagnose::DiagnoseFailure;
use crate::cmd::python::stream::RequestFailed;

#[derive(Debug)]
pub enum CliError {
    /// Bad command line (exit 2).
    Usage(String),
    NoHome,
    ConfigInvalid {
        path: PathBuf,
        reason: String,
    },
    ConfigRead {
        path: PathBuf,
        reason: String,
    },
    ConfigWrite {
        path: PathBuf,
        reason: String,
    },
    EmptyBoxName,
    UnknownBox {
        name: String,
        saved: Vec<String>,
    },
    NoBoxSpecified {
        has_saved: bool,
    },
    NoIp {
        name: String,
    },
    BadEntryAddress {
        name: String,
        ip: String,
    },
    BadPort {
        name: String,
        port: String,
    },
    InvalidAddress(String),
    /// Someone else holds the lock (passive check, acquire give-up).
    Locked {
        display: String,
        user: String,
        /// Seconds waited before giving up, when a wait was requested.
        waited_secs: Option<u64>,
    },
    /// `--any` / `any:PATTERN` (fleet.md §3): no saved box matches the pool.
    NoCandidate {
        pool: String,
    },
    /// `--any` / `any:PATTERN`: every matching box was held, unfit or dead.
    NoFreeBox {
        pool: String,
        busy: usize,
        unfit: usize,
        unreachable: usize,
        /// Seconds waited in the queues, when a wait was asked for.
        waited_secs: Option<u64>,
    },
    /// `lager boxes lock` got 409 (locking.md B.9).
    AlreadyLocked {
        display: String,
        user: String,
        since: String,
    },
    /// `lager boxes unlock` got 403 (locking.md B.10).
    UnlockRefused {
        display: String,
        user: String,
    },
    TokenRequired {
        display: String,
    },
    UnexpectedStatus(u16),
    UnexpectedAcquire {
        display: String,
        status: u16,
    },
    Unreachable {
        display: String,
        error: TransportError,
    },
    NotConfirmed {
        retry_hint: String,
    },
    NoDefaultSetting,
    DefaultBoxNotFound(String),
    UnknownDefaultKey(String),
    DeleteUnknownBox(String),
    BoxInProjectFile {
        name: String,
        path: PathBuf,
    },
    /// A file to package could not be read (runner.md §5.3).
    PackageRead {
        path: PathBuf,
        reason: String,
    },
    NoMainPy {
        dir: PathBuf,
    },
    FolderTooLarge,
    ZipTooLarge,
    ZipFailed(String),
    /// A runner route answered with an error status (runner.md §5.4).
    RunnerHttp {
        status: u16,
        detail: Option<String>,
    },
    /// A runner request got no HTTP answer (runner.md §5.4).
    RunnerConnect(RequestFailed),
    /// A 200 stream without `Lager-Output-Version: 1`.
    FormatUnsupported,
    /// The box's own explanation, printed as is (e.g. a 422 on `--kill`).
    Rejected(String),
    NotPaused(String),
    NoConsole,
    Console {
        addr: String,
        reason: String,
    },
    Random(String),
    /// `lager diagnose` could not find the net's address (diagnose.md §4
    /// step 2); nothing was diagnosed.
    CannotDiagnose(DiagnoseFailure),
    /// A box command on an instrument failed with the box's error text
    /// (instruments.md §8). The last-resort path maps it through the errno
    /// table (diagnose.md §6, `errmap`); this is the unmapped form.
    Instrument {
        box_name: String,
        net: Option<String>,
        error: String,
    },
    /// No NET argument and no default net for the noun (exit 2).
    NoDefaultNet {
        noun: &'static str,
        option: &'static str,
    },
    /// A box command was sent but not answered in time (instruments.md §8,
    /// §10.7); it may still complete on the box.
    BoxNoAnswer {
        addr: String,
        timeout: std::time::Duration,
    },
    /// A box command could not be delivered (instruments.md §8).
    BoxUnreachable(TransportError),
    /// The box answered with something that is not JSON.
    NonJsonReply {
        status: u16,
    },
    /// A box refused a request and said why (`error` of its JSON body).
    BoxRefused(String),
    /// A monitor stream stopped before the user did (instruments.md §10).
    MonitorEnded {
        display: String,
        reason: String,
    },
    /// A supply value over the CLI's ceiling (instruments.md §8).
    OverLimit {
        what: &'static str,
        value: f64,
        max: f64,
        unit: &'static str,
    },
    /// A battery model file that cannot be read, parsed or written.
    ModelFile {
        path: PathBuf,
        reason: String,
    },
    /// `lager install|update|uninstall` failed at the ssh or box boundary.
    Deploy(crate::cmd::deploy::DeployError),
    /// `lager uart`: the console stream stopped before the user did.
    ConsoleEnded {
        display: String,
        net: String,
        reason: String,
    },
    /// `lager uart --log FILE` cannot open its file.
    ConsoleLog {
        path: PathBuf,
        reason: String,
    },
    /// A file given to `lager install-wheel` cannot be uploaded as a wheel.
    Wheel {
        path: PathBuf,
        reason: String,
    },
}

impl CliError {
    /// 2 for usage errors, 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) | CliError::UnknownDefaultKey(_) | CliError::NoDefaultNet { .. } => {
                2
            }
            _ => 1,
        }
    }
}

fn force_hint(display: &str) -> String {
    format!("To force unlock: lager boxes unlock --box {display} --force")
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Usage(text) => write!(f, "{text}"),
            CliError::NoHome => write!(
                f,
                "Error: cannot find your home directory for the config file; set HOME or LAGER_CONFIG_FILE_DIR"
            ),
            CliError::ConfigInvalid { path, reason } => write!(
                f,
                "Error: Config file {} is not valid JSON: {reason}",
                path.display()
            ),
            CliError::ConfigRead { path, reason } => write!(
                f,
                "Error: Could not read config file {}: {reason}; check its permissions",
                path.display()
            ),
            CliError::ConfigWrite { path, reason } => write!(
                f,
                "Error: Could not write config file {}: {reason}; check that its directory is writable",
                path.display()
            ),
            CliError::EmptyBoxName => write!(f, "Box name cannot be empty."),
            CliError::UnknownBox { name, saved } => {
                writeln!(f, "No box named '{name}'.")?;
                if saved.is_empty() {
                    writeln!(f, "You have no saved boxes yet.")?;
                } else {
                    writeln!(f, "Saved boxes: {}", saved.join(", "))?;
                }
                write!(f, "Add it: lager boxes add --name {name} --ip [IP_ADDRESS]")
            }
            CliError::NoBoxSpecified { has_saved } => {
                if *has_saved {
                    writeln!(f, "No box specified, and no default box is configured.")?;
                } else {
                    writeln!(f, "No box specified, and you have no saved boxes yet.")?;
                }
                write!(f, "Use --box NAME, or set one: lager defaults add --box NAME")
            }
            CliError::NoIp { name } => write!(
                f,
                "Box '{name}' has no IP address. Fix it: lager boxes add --name {name} --ip [IP_ADDRESS] --yes"
            ),
            CliError::BadEntryAddress { name, ip } => write!(
                f,
                "Box '{name}' has an invalid address '{ip}'. Fix it: lager boxes add --name {name} --ip [IP_ADDRESS] --yes"
            ),
            CliError::BadPort { name, port } => write!(
                f,
                "Box '{name}' has an invalid port {port} (must be 1-65535). Fix it: lager boxes add --name {name} --ip [IP_ADDRESS] --port [PORT] --yes"
            ),
            CliError::InvalidAddress(value) => write!(f, "Invalid IP address or hostname: {value}"),
            CliError::Locked {
                display,
                user,
                waited_secs,
            } => {
                writeln!(f, "Error: Box '{display}' is locked by {user}")?;
                if let Some(secs) = waited_secs {
                    writeln!(f, "Gave up after waiting {secs}s.")?;
                }
                write!(f, "{}", force_hint(display))
            }
            CliError::NoCandidate { pool } => write!(
                f,
                "Error: No saved box matches '{pool}'. See them with: lager boxes"
            ),
            CliError::NoFreeBox {
                pool,
                busy,
                unfit,
                unreachable,
                waited_secs,
            } => {
                write!(
                    f,
                    "Error: No free box matches '{pool}' ({busy} busy, {unfit} without the nets asked for, {unreachable} unreachable)"
                )?;
                match waited_secs {
                    Some(secs) => write!(f, "\nGave up after waiting {secs}s."),
                    None => write!(
                        f,
                        "\nWait for one with --wait SECONDS, or see who holds them: lager boxes"
                    ),
                }
            }
            CliError::AlreadyLocked {
                display,
                user,
                since,
            } => write!(f, "Box '{display}' is already locked by {user} (since {since})"),
            CliError::UnlockRefused { display, user } => {
                write!(f, "Box '{display}' is locked by {user}. {}", force_hint(display))
            }
            CliError::TokenRequired { display } => write!(
                f,
                "Error: Box '{display}' requires a token (HTTP 401). Set \"token\" in its ~/.lager entry or LAGER_BOX_TOKEN."
            ),
            CliError::UnexpectedStatus(status) => {
                write!(f, "Error: Unexpected response (HTTP {status})")
            }
            CliError::UnexpectedAcquire { display, status } => write!(
                f,
                "Error: Unexpected response acquiring lock on '{display}' (HTTP {status})"
            ),
            CliError::Unreachable { display, error } => {
                write!(f, "Error: Could not reach box '{display}': {error}")
            }
            CliError::NotConfirmed { retry_hint } => write!(
                f,
                "Aborted: nothing changed. To go ahead without a prompt, run: {retry_hint}"
            ),
            CliError::NoDefaultSetting => write!(f, "Error: You must specify at least one setting"),
            CliError::DefaultBoxNotFound(name) => {
                write!(f, "Error: Box '{name}' not found in saved boxes.")
            }
            CliError::UnknownDefaultKey(key) => write!(
                f,
                "Error: Unknown default '{key}'. Use one of: user, box, serial-port, <kind>-net (see: lager defaults)"
            ),
            CliError::DeleteUnknownBox(name) => write!(f, "No box named '{name}'."),
            CliError::BoxInProjectFile { name, path } => write!(
                f,
                "Box '{name}' is defined in {}; edit that file to remove it.",
                path.display()
            ),
            CliError::PackageRead { path, reason } => write!(
                f,
                "Error: Could not read {}: {reason}; check that it exists and is readable",
                path.display()
            ),
            CliError::NoMainPy { dir } => write!(
                f,
                "Error: {} has no main.py; a directory runs its main.py, so add one or run a single file",
                dir.display()
            ),
            CliError::FolderTooLarge => {
                write!(f, "Folder content exceeds max size of 40,000,000 bytes")
            }
            CliError::ZipTooLarge => write!(
                f,
                "Zipped module content exceeds max size of 20,000,000 bytes"
            ),
            CliError::ZipFailed(reason) => write!(
                f,
                "Error: Could not build the module zip: {reason}; check free memory and retry"
            ),
            CliError::RunnerHttp { status, detail } => {
                match status {
                    401 => write!(f, "Error: Authentication failed (HTTP 401)")?,
                    403 => write!(f, "Error: Access forbidden (HTTP 403)")?,
                    404 => write!(f, "Error: Resource not found (HTTP 404)")?,
                    500 => write!(f, "Error: Internal server error on box (HTTP 500)")?,
                    502 => write!(f, "Error: Bad gateway (HTTP 502)")?,
                    503 => write!(f, "Error: Service unavailable (HTTP 503)")?,
                    n => write!(f, "Error: Box returned HTTP {n}")?,
                }
                match detail {
                    Some(detail) => write!(f, "\nDetails: {detail}"),
                    None => Ok(()),
                }
            }
            CliError::RunnerConnect(failed) => write!(f, "{failed}"),
            CliError::FormatUnsupported => {
                write!(f, "Response format not supported. Please upgrade lager-cli")
            }
            CliError::Rejected(text) => write!(f, "{text}"),
            CliError::NotPaused(id) => {
                write!(f, "No script is paused at a breakpoint for {id}")
            }
            CliError::NoConsole => write!(
                f,
                "This breakpoint has no interactive console.\nCall pause(..., interactive=True) to enable it."
            ),
            CliError::Console { addr, reason } => write!(
                f,
                "Error: Could not connect to the breakpoint console at {addr}: {reason}; check that the script is still paused"
            ),
            CliError::CannotDiagnose(failure) => {
                write!(f, "{failure}\nCannot diagnose without a VISA address.")
            }
            CliError::Instrument { error, .. } => write!(f, "Error: {error}"),
            CliError::NoDefaultNet { noun, option } => write!(
                f,
                "Error: No {noun} net given and no default is set. Name one: lager {noun} NET <command> --box BOX, or set a default: lager defaults add {option} NET"
            ),
            CliError::BoxNoAnswer { addr, timeout } => write!(
                f,
                "Error: the box at {addr} accepted the request but did not answer within {}. The operation may just be slow and may still complete on the box; try again in a moment.",
                fmt_timeout(*timeout)
            ),
            CliError::BoxUnreachable(error) => {
                let reason = match &error.kind {
                    TransportKind::Refused => "connection refused".to_string(),
                    TransportKind::Timeout => "the connection timed out".to_string(),
                    TransportKind::Dns => "the host name does not resolve".to_string(),
                    TransportKind::Other(detail) => detail.clone(),
                };
                write!(
                    f,
                    "Error: cannot reach box at {} ({reason}). Check network/Tailscale and that the box is online and updated.",
                    error.addr
                )
            }
            CliError::NonJsonReply { status } => write!(
                f,
                "Error: box returned a non-JSON response (HTTP {status})."
            ),
            CliError::BoxRefused(error) => write!(f, "Error: {error}"),
            CliError::Wheel { path, reason } => {
                write!(f, "Error: {}: {reason}; nothing was uploaded", path.display())
            }
            CliError::Deploy(error) => write!(f, "{error}"),
            CliError::OverLimit { what, value, max, unit } => write!(
                f,
                "Error: {what} {value}{unit} exceeds maximum limit of {max:.1}{unit}"
            ),
            CliError::ModelFile { path, reason } => write!(
                f,
                "Error: battery model file {}: {reason}. Run `lager battery NET model-export SLOT --csv FILE` for an example of the format.",
                path.display()
            ),
            CliError::MonitorEnded { display, reason } => write!(
                f,
                "Error: the monitor stream from box {display} stopped ({reason}). Check the box with `lager hello --box {display}` and start the watch again."
            ),
            CliError::ConsoleEnded {
                display,
                net,
                reason,
            } => write!(
                f,
                "Error: the console stream of {net} from box {display} stopped ({reason}). Check the box with `lager hello --box {display}` and run lager uart again."
            ),
            CliError::ConsoleLog { path, reason } => write!(
                f,
                "Error: cannot open the log file {}: {reason}; choose a writable path for --log",
                path.display()
            ),
            CliError::Random(reason) => write!(
                f,
                "Error: Could not read /dev/urandom for a process ID: {reason}"
            ),
        }
    }
}

impl std::error::Error for CliError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locked_message_lines() {
        let err = CliError::Locked {
            display: "b".into(),
            user: "bob".into(),
            waited_secs: Some(30),
        };
        assert_eq!(
            err.to_string(),
            "Error: Box 'b' is locked by bob\nGave up after waiting 30s.\nTo force unlock: lager boxes unlock --box b --force"
        );
        let err = CliError::Locked {
            display: "b".into(),
            user: "bob".into(),
            waited_secs: None,
        };
        assert_eq!(
            err.to_string(),
            "Error: Box 'b' is locked by bob\nTo force unlock: lager boxes unlock --box b --force"
        );
    }

    #[test]
    fn runner_http_messages() {
        let err = CliError::RunnerHttp {
            status: 500,
            detail: Some("Internal server error: boom".into()),
        };
        assert_eq!(
            err.to_string(),
            "Error: Internal server error on box (HTTP 500)\nDetails: Internal server error: boom"
        );
        let err = CliError::RunnerHttp {
            status: 418,
            detail: None,
        };
        assert_eq!(err.to_string(), "Error: Box returned HTTP 418");
        assert_eq!(err.exit_code(), 1);
    }

    #[test]
    fn usage_errors_exit_2() {
        assert_eq!(CliError::Usage("x".into()).exit_code(), 2);
        assert_eq!(CliError::EmptyBoxName.exit_code(), 1);
    }
}
