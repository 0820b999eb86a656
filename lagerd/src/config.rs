//! `lagerd`'s flags as typed (`Args`) and as validated (`Config`), and the
//! errors that stop it from starting (locking.md A.1, A.9a).

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use argh::FromArgs;
use common::bounded::{OutOfRange, Range};

use crate::server::Limits;

/// lagerd: the lager box daemon. Serves box locks, status, the script
/// runner, instruments, serial consoles, diagnose, /metrics and a status
/// page (/) on every --listen address.
#[derive(FromArgs)]
#[argh(
    note = "`lagerd python-path [--state-dir DIR]` prints the PYTHONPATH that gives a box\n\
            shell the lager package test scripts import, and the installed wheels."
)]
pub struct Args {
    /// address to serve, host:port, repeatable; port 0 picks a free one
    /// (default: 0.0.0.0:9000 and 0.0.0.0:5000)
    #[argh(option)]
    pub listen: Vec<String>,
    /// state directory for lock.json and friends (default: $LAGERD_STATE_DIR,
    /// else /etc/lager)
    #[argh(option)]
    pub state_dir: Option<PathBuf>,
    /// serve simulated instruments instead of USB hardware
    #[argh(switch)]
    pub sim: bool,
    /// require "Authorization: Bearer <token>" (token read from this file) on
    /// every request that changes state or touches an instrument: all but
    /// GET, the supply/battery monitors, and /diagnose/visa of an address
    /// that is no saved net's
    #[argh(option)]
    pub token_file: Option<PathBuf>,
    /// require "Authorization: Bearer <token>" on GET /metrics, the token
    /// read from this file (kept out of the process list, like --token-file)
    #[argh(option)]
    pub metrics_token: Option<PathBuf>,
    /// refuse runner and instrument requests from anyone but the lock holder
    #[argh(switch)]
    pub enforce_locks: bool,
    /// most connections open at once; one more is answered 503 (default 4096)
    #[argh(option)]
    pub max_connections: Option<usize>,
    /// close a connection whose request line and headers take longer than
    /// this, in milliseconds (default 10000)
    #[argh(option)]
    pub head_timeout_ms: Option<u64>,
    /// where /proc is (default /proc); tests point it at fixture trees
    #[argh(option)]
    pub proc_root: Option<PathBuf>,
    /// where /sys is (default /sys), for USB enumeration
    #[argh(option)]
    pub sys_root: Option<PathBuf>,
    /// where /dev is (default /dev), for device nodes
    #[argh(option)]
    pub dev_root: Option<PathBuf>,
    /// seconds between background health checks of every net (default 60;
    /// 0 turns them off). A check is passive: sysfs, drivers, holders and
    /// open sessions; it opens no instrument unless --health-probe
    #[argh(option)]
    pub health_interval_secs: Option<u64>,
    /// let the health check open each net's instrument for a fresh *IDN?
    /// when lagerd has no session open on it (off by default: the probe
    /// collides with a user's own program holding the instrument)
    #[argh(switch)]
    pub health_probe: bool,
    /// most script jobs at once, attached runs plus detached ones still
    /// running; one more is answered 503 (default 8, sized for a Pi: each
    /// job costs 2-4 threads and a python3)
    #[argh(option)]
    pub max_jobs: Option<u64>,
    /// milliseconds an instrument may take to answer (default 10000)
    #[argh(option)]
    pub instrument_timeout_ms: Option<u64>,
    /// bytes of console output kept in memory per uart net, e.g. 1M or
    /// 65536 (default 1M)
    #[argh(option)]
    pub uart_ring: Option<String>,
    /// log debug detail (RUST_LOG overrides)
    #[argh(switch, short = 'v')]
    pub verbose: bool,
    /// print the version and exit
    #[argh(switch)]
    pub version: bool,
}

pub struct Config {
    pub listen: Vec<SocketAddr>,
    pub state_dir: PathBuf,
    pub proc_root: PathBuf,
    pub sys_root: PathBuf,
    pub dev_root: PathBuf,
    pub health_interval: std::time::Duration,
    pub health_probe: bool,
    pub max_jobs: usize,
    pub instrument_timeout: std::time::Duration,
    pub sim: bool,
    pub token: Option<String>,
    pub metrics_token: Option<String>,
    pub enforce_locks: bool,
    pub limits: Limits,
    pub uart_ring_bytes: usize,
}

#[derive(Debug)]
pub enum StartError {
    BadListen(String),
    /// A numeric flag outside the range lagerd can work with.
    BadNumber {
        flag: &'static str,
        value: u64,
        range: OutOfRange,
    },
    BadUartRing(String),
    TokenFile {
        path: PathBuf,
        why: String,
    },
    StateDir {
        path: PathBuf,
        err: std::io::Error,
    },
    Bind {
        addr: SocketAddr,
        err: std::io::Error,
    },
    Io(std::io::Error),
}

impl StartError {
    /// Exit status: 2 for configuration mistakes (A.9a), 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            StartError::BadListen(_)
            | StartError::BadNumber { .. }
            | StartError::BadUartRing(_)
            | StartError::TokenFile { .. } => 2,
            _ => 1,
        }
    }
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::BadListen(text) => {
                write!(f, "invalid --listen {text:?}: expected host:port, e.g. 0.0.0.0:9000 or 127.0.0.1:0")
            }
            StartError::BadNumber { flag, value, range } => {
                write!(f, "invalid --{flag} {value}: {range}")
            }
            StartError::BadUartRing(text) => write!(
                f,
                "invalid --uart-ring {text:?}: give bytes from 4K to 1G, e.g. 1M, 256K or 65536"
            ),
            StartError::TokenFile { path, why } => write!(
                f,
                "token file {}: {why}; put the bearer token in it, or drop the option that names it",
                path.display()
            ),
            StartError::StateDir { path, err } => write!(
                f,
                "state dir {}: {err}; pick a writable one with --state-dir or LAGERD_STATE_DIR",
                path.display()
            ),
            StartError::Bind { addr, err } => write!(
                f,
                "cannot listen on {addr}: {err}; is another lagerd running? choose another --listen"
            ),
            StartError::Io(err) => write!(f, "{err}"),
        }
    }
}

impl Config {
    pub fn from_args(args: Args) -> Result<Config, StartError> {
        let listen_text = if args.listen.is_empty() {
            vec!["0.0.0.0:9000".to_string(), "0.0.0.0:5000".to_string()]
        } else {
            args.listen
        };
        let listen = listen_text
            .iter()
            .map(|text| {
                text.to_socket_addrs()
                    .ok()
                    .and_then(|mut addrs| addrs.next())
                    .ok_or_else(|| StartError::BadListen(text.clone()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let state_dir = args.state_dir.unwrap_or_else(default_state_dir);
        let token = args.token_file.map(read_token).transpose()?;
        let mut limits = Limits {
            // Large uploads are spooled next to the state, on disk (not
            // /tmp, which is RAM on many boxes).
            spool_dir: Some(state_dir.clone()),
            ..Limits::default()
        };
        let metrics_token = args.metrics_token.map(read_token).transpose()?;
        if let Some(max) = args.max_connections {
            limits.max_connections = checked("max-connections", max as u64, CONNECTIONS)? as usize;
        }
        if let Some(millis) = args.head_timeout_ms {
            limits.head_timeout = checked_millis("head-timeout-ms", millis, TIMEOUT_MS)?;
            limits.body_timeout = limits.body_timeout.min(limits.head_timeout);
        }
        let health_interval = match args.health_interval_secs {
            None => std::time::Duration::from_secs(60),
            Some(secs) => std::time::Duration::from_secs(checked(
                "health-interval-secs",
                secs,
                HEALTH_INTERVAL_SECS,
            )?),
        };
        let instrument_timeout = match args.instrument_timeout_ms {
            None => std::time::Duration::from_secs(10),
            Some(millis) => checked_millis("instrument-timeout-ms", millis, TIMEOUT_MS)?,
        };
        let max_jobs = match args.max_jobs {
            None => DEFAULT_MAX_JOBS,
            Some(jobs) => checked("max-jobs", jobs, JOBS)? as usize,
        };
        let uart_ring_bytes = match &args.uart_ring {
            None => crate::console::DEFAULT_RING_BYTES,
            Some(text) => parse_size(text)
                .filter(|n| (4096..=1 << 30).contains(n))
                .ok_or_else(|| StartError::BadUartRing(text.clone()))?,
        };
        Ok(Config {
            listen,
            state_dir,
            proc_root: args.proc_root.unwrap_or_else(|| PathBuf::from("/proc")),
            sys_root: args.sys_root.unwrap_or_else(|| PathBuf::from("/sys")),
            dev_root: args.dev_root.unwrap_or_else(|| PathBuf::from("/dev")),
            health_interval,
            health_probe: args.health_probe,
            max_jobs,
            instrument_timeout,
            sim: args.sim,
            token,
            metrics_token,
            enforce_locks: args.enforce_locks,
            limits,
            uart_ring_bytes,
        })
    }
}

/// `65536`, `64K`, `1M`, `1G` (binary units, any case).
fn parse_size(text: &str) -> Option<usize> {
    let text = text.trim();
    let (digits, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((at, _)) => text.split_at(at),
        None => (text, ""),
    };
    let shift = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        _ => return None,
    };
    digits.parse::<usize>().ok()?.checked_mul(1 << shift)
}

/// `$LAGERD_STATE_DIR`, else `/etc/lager` (locking.md A.1).
pub fn default_state_dir() -> PathBuf {
    std::env::var_os("LAGERD_STATE_DIR")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from("/etc/lager"), PathBuf::from)
}

/// Flag ranges (issue 12): every number a flag (or `lagerd.conf`, which
/// only holds flags) gives is checked before it becomes a count or a
/// deadline, so no setting can overflow one later.
const CONNECTIONS: Range = Range::new(1.0, 65_536.0, "connections");
const TIMEOUT_MS: Range = Range::new(1.0, 600_000.0, "milliseconds");
const HEALTH_INTERVAL_SECS: Range = Range::new(0.0, 86_400.0, "seconds");
const JOBS: Range = Range::new(1.0, 1024.0, "jobs");
/// Running plus detached jobs on a Pi: each is a python3 and 2-4 threads.
pub const DEFAULT_MAX_JOBS: usize = 8;

fn checked(flag: &'static str, value: u64, range: Range) -> Result<u64, StartError> {
    range
        .count(value as f64)
        .map_err(|range| StartError::BadNumber { flag, value, range })
}

fn checked_millis(
    flag: &'static str,
    value: u64,
    range: Range,
) -> Result<std::time::Duration, StartError> {
    range
        .millis(value as f64)
        .map_err(|range| StartError::BadNumber { flag, value, range })
}

fn read_token(path: PathBuf) -> Result<String, StartError> {
    // A token is a line of text; /dev/zero or a log file by mistake must
    // not fill memory before the error.
    let read = crate::fsutil::read_limited(&path, 4096).and_then(|bytes| {
        String::from_utf8(bytes).map_err(|_| std::io::Error::other("it is not text"))
    });
    match read {
        Ok(text) if !text.trim().is_empty() => Ok(text.trim().to_string()),
        Ok(_) => Err(StartError::TokenFile {
            path,
            why: "it is empty".into(),
        }),
        Err(e) => Err(StartError::TokenFile {
            path,
            why: format!("cannot read it ({e})"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("65536"), Some(65536));
        assert_eq!(parse_size("64k"), Some(65536));
        assert_eq!(parse_size("1M"), Some(1 << 20));
        assert_eq!(parse_size("2GiB"), Some(2 << 30));
        for bad in ["", "M", "1.5M", "1T", "-1", "1 M"] {
            assert_eq!(parse_size(bad), None, "{bad:?}");
        }
    }
}
