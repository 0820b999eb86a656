//! `DiagnoseFailure`: why `lager diagnose` could not get as far as an
//! instrument address (diagnose.md §4 step 2), each message naming the next
//! step. `CliError::CannotDiagnose` carries it.

use std::fmt;
use std::time::Duration;

use crate::transport::{fmt_timeout, TransportError};

/// Step 2: at most this many names follow `Available:`.
const AVAILABLE_SHOWN: usize = 10;

/// Why `lager diagnose` could not get as far as an address (step 2).
#[derive(Debug)]
pub enum DiagnoseFailure {
    Refused {
        display: String,
        addr: String,
    },
    Timeout {
        display: String,
        addr: String,
        timeout: Duration,
    },
    /// No answer for another reason (DNS, reset, ...).
    Unreachable {
        display: String,
        error: TransportError,
    },
    /// `/nets/list` answered with an error status.
    NetsStatus {
        display: String,
        addr: String,
        status: u16,
    },
    /// `/nets/list` answered 200 with something that is not a list of nets.
    NetsMalformed {
        display: String,
        addr: String,
    },
    NetMissing {
        net: String,
        available: Vec<String>,
    },
    NoAddress {
        net: String,
    },
}

impl fmt::Display for DiagnoseFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DiagnoseFailure::Refused { display, addr } => write!(
                f,
                "Box '{display}' unreachable at {addr} (connection refused). The lager container may be stopped. Check with:\n  lager ssh --box {display} -- \"sudo docker ps\""
            ),
            DiagnoseFailure::Timeout {
                display,
                addr,
                timeout,
            } => write!(
                f,
                "Box '{display}' did not respond within {} at {addr}. Check network/Tailscale connectivity, then `lager hello --box {display}`.",
                fmt_timeout(*timeout)
            ),
            DiagnoseFailure::Unreachable { display, error } => {
                write!(f, "Box '{display}' could not be asked for its nets: {error}")
            }
            DiagnoseFailure::NetsStatus {
                display,
                addr,
                status: 401,
            } => write!(
                f,
                "Box '{display}' at {addr} requires a token (HTTP 401). Set \"token\" in its ~/.lager entry or LAGER_BOX_TOKEN."
            ),
            DiagnoseFailure::NetsStatus {
                display,
                addr,
                status: 404,
            } => write!(
                f,
                "Box '{display}' at {addr} does not serve /nets/list (HTTP 404); it is likely running an image too old for this CLI. Update it: lager box update --box {display}"
            ),
            DiagnoseFailure::NetsStatus {
                display,
                addr,
                status,
            } => write!(
                f,
                "Box '{display}' at {addr} answered HTTP {status} to /nets/list; check the box with: lager hello --box {display}"
            ),
            DiagnoseFailure::NetsMalformed { display, addr } => write!(
                f,
                "Box '{display}' at {addr} sent a saved-nets list that is not a JSON list of nets; check saved_nets.json in the box's state dir"
            ),
            DiagnoseFailure::NetMissing { net, available } => {
                write!(f, "Net '{net}' not found on box. Available: ")?;
                if available.is_empty() {
                    return write!(f, "(none)");
                }
                let shown: Vec<&str> = available
                    .iter()
                    .take(AVAILABLE_SHOWN)
                    .map(String::as_str)
                    .collect();
                write!(f, "{}", shown.join(", "))?;
                if available.len() > AVAILABLE_SHOWN {
                    write!(f, "...")?;
                }
                Ok(())
            }
            DiagnoseFailure::NoAddress { net } => write!(
                f,
                "Net '{net}' has no instrument address in the box's saved nets; give it one (e.g. USB0::0xVID::0xPID::SERIAL::INSTR) and retry"
            ),
        }
    }
}
