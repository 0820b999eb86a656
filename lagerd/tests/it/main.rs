//! Integration tests: the real `lagerd` binary on ephemeral loopback ports,
//! each with its own state dir, driven over real sockets.

mod api;
mod bad_input;
mod concurrency;
mod console;
mod crash;
mod diagnose;
mod http_framing;
mod instruments;
mod lifecycle;
mod metrics;
mod runner;
mod tokens;

use std::net::SocketAddr;
use std::path::PathBuf;

use lager_testsupport::{json_of, request, Daemon, TempDir};
use serde_json::Value;

pub fn lagerd() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_lagerd"))
}

/// A daemon with its own temp state dir (kept alive as long as the daemon).
pub struct Box_ {
    pub daemon: Daemon,
    pub dir: TempDir,
}

pub fn start(tag: &str, args: &[&str]) -> Box_ {
    let dir = TempDir::new(tag);
    let daemon = Daemon::start(&lagerd(), dir.path(), args);
    Box_ { daemon, dir }
}

impl Box_ {
    pub fn addr(&self) -> SocketAddr {
        self.daemon.addr()
    }

    pub fn daemon_alive(&mut self) -> bool {
        matches!(self.daemon.child.try_wait(), Ok(None))
    }

    /// `(status, body as JSON)` of one request.
    pub fn call(&self, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        let reply = request(self.addr(), method, path, body);
        let json = json_of(&reply);
        (reply.status, json)
    }
}
