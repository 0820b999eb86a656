//! `lagerd`'s flags as typed (`Args`) and as validated (`Config`), and the
//! errors that stop it from starting (locking.md A.1, A.9a).

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use argh::FromArgs;

use crate::server::Limits;

/// lagerd: the lager box daemon. Serves box locks, status and (later) the
/// script runner and instruments on every --listen address.
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
    /// every request that is not a GET
    #[argh(option)]
    pub token_file: Option<PathBuf>,
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
    /// 0 turns them off)
    #[argh(option)]
    pub health_interval_secs: Option<u64>,
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
    pub instrument_timeout: std::time::Duration,
    pub sim: bool,
    pub token: Option<String>,
    pub enforce_locks: bool,
    pub limits: Limits,
    pub uart_ring_bytes: usize,
}

#[derive(Debug)]
pub enum StartError {
    BadListen(String),
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
            StartError::BadUartRing(text) => write!(
                f,
                "invalid --uart-ring {text:?}: give bytes from 4K to 1G, e.g. 1M, 256K or 65536"
            ),
            StartError::TokenFile { path, why } => write!(
                f,
                "token file {}: {why}; put the bearer token in it or drop --token-file",
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
        if let Some(max) = args.max_connections {
            limits.max_connections = max.max(1);
        }
        if let Some(millis) = args.head_timeout_ms {
            limits.head_timeout = std::time::Duration::from_millis(millis.max(1));
            limits.body_timeout = limits.body_timeout.min(limits.head_timeout);
        }
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
            health_interval: std::time::Duration::from_secs(
                args.health_interval_secs.unwrap_or(60),
            ),
            instrument_timeout: std::time::Duration::from_millis(
                args.instrument_timeout_ms.unwrap_or(10_000).max(1),
            ),
            sim: args.sim,
            token,
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

fn read_token(path: PathBuf) -> Result<String, StartError> {
    match std::fs::read_to_string(&path) {
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
