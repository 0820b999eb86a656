//! A real OpenSSH server on 127.0.0.1 for the install/update tests and the
//! deploy benchmark: run as the current user (no system config, its own
//! host key and authorized_keys in a temp dir), on a free port.
//!
//! Each client key gets its own `ssh_config`; a key may put a directory in
//! front of the session's PATH (authorized_keys `environment=`), which is
//! how a test gives the "box" another `uname -m` or a full disk.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Sshd {
    child: Child,
    pub port: u16,
    dir: PathBuf,
    /// The login: whoever runs the tests.
    pub user: String,
}

fn run(command: &mut Command) -> Result<String, String> {
    let out = command
        .output()
        .map_err(|e| format!("cannot run {command:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{command:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn keygen(path: &Path) -> Result<(), String> {
    let _ = std::fs::remove_file(path);
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "lager-test", "-f"])
        .arg(path))
    .map(|_| ())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

impl Sshd {
    /// Starts sshd with its files in `dir`; `Err` says why it cannot run.
    pub fn start(dir: &Path) -> Result<Sshd, String> {
        let sshd = std::env::var("LAGER_SSHD").unwrap_or_else(|_| "/usr/sbin/sshd".into());
        if !Path::new(&sshd).exists() {
            return Err(format!(
                "{sshd} is missing (Debian: apt-get install openssh-server)"
            ));
        }
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let user = run(Command::new("id").arg("-un"))?;
        let host_key = dir.join("host_ed25519");
        keygen(&host_key)?;
        std::fs::write(dir.join("authorized_keys"), "").map_err(|e| e.to_string())?;
        // sshd refuses to start as root without its privilege-separation dir.
        // SAFETY: geteuid only reads the process's credentials.
        if unsafe { libc::geteuid() } == 0 {
            let _ = std::fs::create_dir_all("/run/sshd");
        }
        let mut last_error = String::new();
        for _ in 0..3 {
            let port = free_port();
            let config = dir.join("sshd_config");
            std::fs::write(
                &config,
                format!(
                    "Port {port}\nListenAddress 127.0.0.1\nHostKey {host}\nPidFile {dir}/sshd.pid\n\
                     AuthorizedKeysFile {dir}/authorized_keys\nStrictModes no\nUsePAM no\n\
                     PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                     PubkeyAuthentication yes\nPermitRootLogin prohibit-password\n\
                     PermitUserEnvironment PATH\nLogLevel ERROR\n",
                    host = host_key.display(),
                    dir = dir.display()
                ),
            )
            .map_err(|e| e.to_string())?;
            let mut child = Command::new(&sshd)
                .args(["-D", "-e", "-f"])
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| format!("cannot start {sshd}: {e}"))?;
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    let sshd = Sshd {
                        child,
                        port,
                        dir: dir.to_path_buf(),
                        user,
                    };
                    sshd.write_known_hosts()?;
                    return Ok(sshd);
                }
                if let Ok(Some(status)) = child.try_wait() {
                    let mut stderr = String::new();
                    if let Some(mut err) = child.stderr.take() {
                        let _ = err.read_to_string(&mut stderr);
                    }
                    last_error = format!("sshd exited with {status}: {}", stderr.trim());
                    break;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    last_error = "sshd did not listen within 10 s".into();
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        Err(last_error)
    }

    /// Starts sshd, or says loudly why not: a failure when
    /// `LAGER_REQUIRE_SSHD` is set (as `scripts/test.sh` and CI do), else a
    /// skip that the caller must not count as a pass.
    pub fn start_or_skip(dir: &Path, test: &str) -> Option<Sshd> {
        match Sshd::start(dir) {
            Ok(sshd) => Some(sshd),
            Err(why) if std::env::var_os("LAGER_REQUIRE_SSHD").is_some() => {
                panic!("{test}: sshd cannot start and LAGER_REQUIRE_SSHD is set: {why}")
            }
            Err(why) => {
                eprintln!(
                    "\n*** SKIPPED {test}: no sshd to test against: {why}\n*** this is NOT a pass; scripts/test.sh requires sshd\n"
                );
                None
            }
        }
    }

    fn write_known_hosts(&self) -> Result<(), String> {
        let public = std::fs::read_to_string(self.dir.join("host_ed25519.pub"))
            .map_err(|e| e.to_string())?;
        let key: Vec<&str> = public.split_whitespace().take(2).collect();
        std::fs::write(
            self.dir.join("known_hosts"),
            format!("[127.0.0.1]:{} {}\n", self.port, key.join(" ")),
        )
        .map_err(|e| e.to_string())
    }

    /// A fresh key and the `ssh_config` that logs in with it (pass it as
    /// `ssh -F <file>`). `authorized`: whether sshd accepts the key;
    /// `path_first`: a directory put in front of the session's PATH.
    pub fn client(&self, name: &str, authorized: bool, path_first: Option<&Path>) -> PathBuf {
        let key = self.dir.join(format!("id_{name}"));
        keygen(&key).expect("ssh-keygen");
        if authorized {
            let public = std::fs::read_to_string(key.with_extension("pub")).expect("public key");
            let options = path_first
                .map(|p| {
                    format!(
                        "environment=\"PATH={}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin\" ",
                        p.display()
                    )
                })
                .unwrap_or_default();
            let mut keys = std::fs::read_to_string(self.dir.join("authorized_keys")).unwrap();
            keys.push_str(&format!("{options}{public}"));
            std::fs::write(self.dir.join("authorized_keys"), keys).unwrap();
        }
        self.config_for(name, self.port, &key)
    }

    /// An `ssh_config` pointing at `port` (say, one nobody listens on).
    pub fn config_for(&self, name: &str, port: u16, key: &Path) -> PathBuf {
        let path = self.dir.join(format!("ssh_config_{name}"));
        std::fs::write(
            &path,
            format!(
                "Host *\n  HostName 127.0.0.1\n  Port {port}\n  User {user}\n  IdentityFile {key}\n  \
                 IdentitiesOnly yes\n  IdentityAgent none\n  UserKnownHostsFile {dir}/known_hosts\n  \
                 GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking yes\n  LogLevel ERROR\n",
                user = self.user,
                key = key.display(),
                dir = self.dir.display()
            ),
        )
        .unwrap();
        path
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
