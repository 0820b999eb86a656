//! Integration tests of `lager`: the real binary against a real `lagerd`
//! on an ephemeral loopback port. Every run gets its own HOME, config dir
//! and working directory and a cleared environment, so the developer's
//! `~/.lager` and the CI runner's own `CI=true` never leak in.
//!
//! Needs `lagerd` built next to `lager`: run `cargo test --workspace`.

mod autolock;
mod boxes;
mod defaults;
mod deploy;
mod diagnose;
mod fleet;
mod hello;
mod instruments;
mod lock;
mod page;
mod python;
mod scripts;
mod uart;

use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lager_testsupport::{bin_path, request, Daemon, TempDir};
use serde_json::Value;

/// One isolated CLI environment: HOME, config dir, cwd, extra env.
pub struct Cli {
    pub dir: TempDir,
    env: Vec<(String, String)>,
}

/// What one `lager` run produced.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Cli {
    pub fn new(tag: &str) -> Cli {
        let dir = TempDir::new(tag);
        for sub in ["home", "config", "work"] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("mkdir");
        }
        Cli {
            dir,
            env: vec![("LOGNAME".into(), "tester".into())],
        }
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config").join(".lager")
    }

    pub fn work_dir(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    /// Sets a variable for every later run.
    pub fn set(&mut self, key: &str, value: &str) -> &mut Cli {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn write_config(&self, config: &Value) {
        std::fs::write(self.config_path(), config.to_string()).expect("write config");
        // A hand-made file with the usual mode, whatever the umask.
        std::fs::set_permissions(self.config_path(), std::fs::Permissions::from_mode(0o644))
            .expect("chmod config");
    }

    pub fn read_config(&self) -> Value {
        let text = std::fs::read_to_string(self.config_path()).expect("read config");
        serde_json::from_str(&text).expect("config is JSON")
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lager"));
        cmd.args(args)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", self.dir.path().join("home"))
            .env("LAGER_CONFIG_FILE_DIR", self.dir.path().join("config"))
            .current_dir(self.work_dir())
            .stdin(Stdio::null());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Runs `lager args...` with `extra` env on top, to completion.
    pub fn run_with(&self, args: &[&str], extra: &[(&str, &str)]) -> Run {
        let mut cmd = self.command(args);
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let start = Instant::now();
        let out = cmd.output().expect("run lager");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            elapsed: start.elapsed(),
        }
    }

    pub fn run(&self, args: &[&str]) -> Run {
        self.run_with(args, &[])
    }
}

impl Run {
    /// Asserts the exit code, showing both streams when it differs.
    pub fn expect_code(&self, code: i32) -> &Run {
        assert_eq!(
            self.code, code,
            "exit code; stdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

pub fn lagerd_path() -> PathBuf {
    bin_path(env!("CARGO_BIN_EXE_lager"), "lagerd")
}

/// A real lagerd with its own state dir (dropped with it).
pub struct Box_ {
    pub daemon: Daemon,
    _state: TempDir,
}

impl Box_ {
    pub fn start() -> Box_ {
        Box_::start_with(&[])
    }

    pub fn start_with(args: &[&str]) -> Box_ {
        let state = TempDir::new("lagerd-state");
        let daemon = Daemon::start(&lagerd_path(), state.path(), args);
        Box_ {
            daemon,
            _state: state,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.daemon.addr()
    }

    pub fn port(&self) -> u16 {
        self.addr().port()
    }

    pub fn state_dir(&self) -> &Path {
        &self.daemon.state_dir
    }

    /// `GET /lock` as seen by a bystander.
    pub fn lock(&self) -> Value {
        let reply = request(self.addr(), "GET", "/lock", None);
        assert_eq!(reply.status, 200);
        serde_json::from_str(&reply.text()).expect("lock JSON")
    }

    /// Takes the lock for `user` directly over HTTP.
    pub fn lock_as(&self, user: &str) {
        let body = serde_json::json!({"user": user}).to_string();
        let reply = request(self.addr(), "POST", "/lock", Some(&body));
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
}

/// A saved-box entry pointing at `port` on loopback.
pub fn entry(port: u16) -> Value {
    serde_json::json!({"ip": "127.0.0.1", "port": port, "user": "pi"})
}

pub use lager_testsupport::refused_port;

/// A listener that accepts TCP connections (via the kernel backlog) but
/// never answers; keep it alive for the test's duration.
pub fn silent_listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").expect("bind")
}

/// This machine's hostname, as lager reads it.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .expect("hostname")
        .trim()
        .to_string()
}

/// A stand-in box for answers lagerd never gives: each request whose first
/// bytes start with a route prefix (`"GET /status "`) gets that status and
/// JSON body; any other request is held open and never answered.
pub fn fake_box(routes: &[(&str, u16, &str)]) -> u16 {
    use std::io::{Read, Write};
    let routes: Vec<(String, u16, String)> = routes
        .iter()
        .map(|(prefix, status, body)| (prefix.to_string(), *status, body.to_string()))
        .collect();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        let mut parked = Vec::new();
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 4096];
            let n = stream.read(&mut buf).unwrap_or(0);
            let route = routes
                .iter()
                .find(|(prefix, _, _)| buf[..n].starts_with(prefix.as_bytes()));
            match route {
                Some((_, status, body)) => {
                    let reply = format!(
                        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(reply.as_bytes());
                }
                None => parked.push(stream),
            }
        }
    });
    port
}
