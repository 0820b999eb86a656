//! The bench box of the `lager python` benchmarks (issue 4): one real
//! `lagerd` on 127.0.0.1 whose run dir (`LAGERD_RUN_DIR`), job dirs
//! (`TMPDIR`) and state dir all live in one scratch dir, a pinned Python
//! interpreter (`LAGERD_PYTHON`), and an isolated `lager` config that names
//! it `bench`: `HOME` and `LAGER_CONFIG_FILE_DIR` point at the scratch dir,
//! whose `.lager` holds `{"BOXES": {"bench": {"ip": "127.0.0.1", "port": P}}}`.
//! `lager` runs as `LAGER_USER=bench` with every CI marker removed, so it
//! auto-locks as a developer would.
//!
//! The interpreter is pinned because `python3` on PATH may be a wrapper
//! (pyenv's shim is a bash script that costs 100+ ms per start), and the
//! baseline and the box must run the very same binary.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::json;

use crate::daemon::Daemon;
use crate::net::check_loopback;
use crate::{fail, BenchError};

/// What `lager` takes as "running under CI" (locking.md B.1); all removed.
const CI_MARKERS: [&str; 7] = [
    "CI",
    "GITHUB_RUN_ID",
    "CI_SERVER_NAME",
    "BUILD_TAG",
    "BITBUCKET_BUILD_NUMBER",
    "DRONE",
    "LAGER_CI_OVERRIDE",
];

/// `lager` variables that would change what the benchmark measures.
const LAGER_VARS: [&str; 9] = [
    "LAGER_BOX",
    "LAGER_CONFIG_FILE_NAME",
    "LAGER_AUTO_LOCK_DISABLE",
    "LAGER_LOCK_HOLDER",
    "LAGER_LOCK_TTL",
    "LAGER_LOCK_WAIT",
    "LAGER_LOCK_HEARTBEAT",
    "LAGER_BOX_TOKEN",
    "RUST_LOG",
];

pub const BOX_NAME: &str = "bench";
pub const USER: &str = "bench";

pub struct BenchBox {
    daemon: Daemon,
    /// `HOME`, `LAGER_CONFIG_FILE_DIR` and the cwd of every command; the
    /// scripts are written here.
    home: PathBuf,
    lager: PathBuf,
    python: PathBuf,
}

impl BenchBox {
    /// Starts lagerd in `<dir>/state` with its run dir and job dirs under
    /// `dir`, and writes the `bench` box config into `<dir>/home`.
    pub fn start(
        lagerd: &Path,
        lager: &Path,
        python: &Path,
        dir: &Path,
    ) -> Result<BenchBox, BenchError> {
        BenchBox::start_with_args(lagerd, lager, python, dir, &[])
    }

    /// [`BenchBox::start`] with extra lagerd flags.
    pub fn start_with_args(
        lagerd: &Path,
        lager: &Path,
        python: &Path,
        dir: &Path,
        args: &[&str],
    ) -> Result<BenchBox, BenchError> {
        let home = dir.join("home");
        let run_dir = dir.join("run");
        let jobs = dir.join("jobs");
        for path in [&home, &run_dir, &jobs] {
            std::fs::create_dir_all(path)
                .map_err(|e| fail!("cannot create {}: {e}", path.display()))?;
        }
        let daemon = Daemon::start_with_args(
            lagerd,
            &dir.join("state"),
            1,
            args,
            &[
                ("LAGERD_RUN_DIR", run_dir.as_os_str()),
                ("LAGERD_PYTHON", python.as_os_str()),
                ("TMPDIR", jobs.as_os_str()),
            ],
        )?;
        let addr = daemon.addr();
        check_loopback(addr)?;
        let config =
            json!({"BOXES": {BOX_NAME: {"ip": addr.ip().to_string(), "port": addr.port()}}});
        std::fs::write(home.join(".lager"), config.to_string())?;
        Ok(BenchBox {
            daemon,
            home,
            lager: lager.to_path_buf(),
            python: python.to_path_buf(),
        })
    }

    pub fn daemon(&self) -> &Daemon {
        &self.daemon
    }

    pub fn daemon_mut(&mut self) -> &mut Daemon {
        &mut self.daemon
    }

    pub fn home(&self) -> &Path {
        &self.home
    }

    pub fn python(&self) -> &Path {
        &self.python
    }

    /// Writes `<home>/<name>` and returns its path.
    pub fn write_script(&self, name: &str, text: &str) -> Result<PathBuf, BenchError> {
        let path = self.home.join(name);
        std::fs::write(&path, text).map_err(|e| fail!("cannot write {}: {e}", path.display()))?;
        Ok(path)
    }

    /// Puts the isolated `lager` environment on `command` (any program:
    /// hyperfine passes it on to what it times), cwd the home dir.
    pub fn isolate(&self, command: &mut Command) {
        command
            .current_dir(&self.home)
            .env("HOME", &self.home)
            .env("LAGER_CONFIG_FILE_DIR", &self.home)
            .env("LAGER_USER", USER)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        for name in CI_MARKERS.iter().chain(&LAGER_VARS) {
            command.env_remove(name);
        }
    }

    /// `lager python <script> --box bench`, isolated, stdin /dev/null.
    pub fn lager_python(&self, script: &str) -> Command {
        let mut command = Command::new(&self.lager);
        command.args(["python", script, "--box", BOX_NAME]);
        self.isolate(&mut command);
        command
    }

    /// Runs `lager python <script> --box bench` once and returns its stdout,
    /// or an error naming the exit status and stderr.
    pub fn lager_python_output(&self, script: &str) -> Result<Vec<u8>, BenchError> {
        let output = self
            .lager_python(script)
            .output()
            .map_err(|e| fail!("cannot run {}: {e}", self.lager.display()))?;
        if !output.status.success() {
            return Err(fail!(
                "`lager python {script} --box {BOX_NAME}` exited with {}; stderr: {}; lagerd log: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim(),
                self.daemon.log_tail()
            ));
        }
        Ok(output.stdout)
    }
}

/// The interpreter to pin: `--python` if given, else `/usr/bin/python3`
/// (a box's system Python), else the first `python3` on PATH; symlinks
/// resolved so the name in the report is the real binary.
pub fn resolve_python(requested: Option<&Path>) -> Result<PathBuf, BenchError> {
    let candidate = match requested {
        Some(path) => path.to_path_buf(),
        None if Path::new("/usr/bin/python3").is_file() => PathBuf::from("/usr/bin/python3"),
        None => std::env::var_os("PATH")
            .iter()
            .flat_map(std::env::split_paths)
            .map(|dir| dir.join("python3"))
            .find(|p| p.is_file())
            .ok_or_else(|| fail!("no python3 found; install python3 or pass --python PATH"))?,
    };
    let resolved = candidate
        .canonicalize()
        .map_err(|e| fail!("cannot resolve {}: {e}", candidate.display()))?;
    let mut head = [0u8; 2];
    let is_script = std::fs::File::open(&resolved)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok()
        && &head == b"#!";
    if is_script {
        return Err(fail!(
            "{} is a script, not an interpreter binary (a pyenv shim?); pass the real one with \
             --python (e.g. `pyenv which python3`)",
            resolved.display()
        ));
    }
    Ok(resolved)
}

/// `Python 3.x.y` of `python`, for the log.
pub fn python_version(python: &Path) -> String {
    Command::new(python)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .ok()
        .map(|o| {
            let text = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&text).trim().to_string()
        })
        .unwrap_or_else(|| "unknown version".into())
}

/// Everything `lager` needs, checked once up front.
pub fn check_lager_python(lager: &Path) -> Result<(), BenchError> {
    let output = Command::new(lager)
        .args(["python", "--help"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| fail!("cannot run {}: {e}", lager.display()))?;
    let help = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() || !help.contains("--box") {
        return Err(fail!(
            "{} has no usable `python` command (`lager python --help` exited {})",
            lager.display(),
            output.status
        ));
    }
    Ok(())
}
