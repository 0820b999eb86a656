//! `CliError`: every way a `lager` command fails, with the exact text the
//! specs prescribe (locking.md Part B, boxes.md) and the exit code.
//!
//! Variants carry data; `Display` renders the whole user-facing message,
//! which names what failed and what to do next. Messages quoted by the
//! specs keep their capitalisation and punctuation.

use std::fmt;
use std::path::PathBuf;

use crate::client::TransportError;

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
}

impl CliError {
    /// 2 for usage errors, 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) | CliError::UnknownDefaultKey(_) => 2,
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
    fn usage_errors_exit_2() {
        assert_eq!(CliError::Usage("x".into()).exit_code(), 2);
        assert_eq!(CliError::EmptyBoxName.exit_code(), 1);
    }
}
