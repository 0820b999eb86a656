//! What a job's Python sees besides its own files (scripts.md §1, §3): the
//! `lager` package, embedded in this binary and written under the state dir
//! at start, and the site directory that `lager install-wheel` fills
//! (`wheels.rs`). Both are put first on every job's `PYTHONPATH`, with the
//! address of this lagerd (`LAGER_DAEMON_URL`).
//!
//! Layout under `<state-dir>/python/`: `lager-<version>-<hash>/lager/*.py`
//! (the package; the name changes with its content, so a directory of that
//! name is written once, whole, by a rename) and `site-<n>/` (generations of
//! the wheels' site directory: a change builds `site-<n+1>` beside the
//! current one and switches to it only when it is complete).

pub mod wheels;

use std::fs;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use log::{info, warn};

/// The package's files, in the binary. Tests are not embedded (size
/// budget); `package_files_are_all_embedded` checks none is missing here.
pub const PACKAGE: &[(&str, &str)] = &[
    (
        "__init__.py",
        include_str!("../../python/lager/__init__.py"),
    ),
    ("actions.py", include_str!("../../python/lager/actions.py")),
    ("battery.py", include_str!("../../python/lager/battery.py")),
    ("daemon.py", include_str!("../../python/lager/daemon.py")),
    ("errors.py", include_str!("../../python/lager/errors.py")),
    ("net.py", include_str!("../../python/lager/net.py")),
    ("nettype.py", include_str!("../../python/lager/nettype.py")),
    ("supply.py", include_str!("../../python/lager/supply.py")),
    ("uart.py", include_str!("../../python/lager/uart.py")),
];

/// The script environment of one state dir.
pub struct ScriptEnv {
    root: PathBuf,
    package: PathBuf,
    /// The current `site-<n>` generation.
    site: Mutex<Site>,
    /// Serializes changes to the site dir (installs, uninstalls,
    /// requirements): each builds on the generation current when it starts.
    changing: Mutex<()>,
    /// The interpreter jobs run, which also runs pip.
    pub python: String,
    daemon_url: Option<String>,
}

#[derive(Clone)]
struct Site {
    generation: u64,
    dir: PathBuf,
}

impl ScriptEnv {
    /// Writes the package if this version's is not there (or not intact),
    /// removes other versions', and finds the current site generation.
    pub fn open(state_dir: &Path, python: &str, listeners: &[SocketAddr]) -> io::Result<ScriptEnv> {
        let root = state_dir.join("python");
        fs::create_dir_all(&root)?;
        readable(&root, 0o755)?;
        let package = install_package(&root)?;
        let site = wheels::open_site(&root)?;
        Ok(ScriptEnv {
            root,
            package,
            site: Mutex::new(site),
            changing: Mutex::new(()),
            python: python.to_string(),
            daemon_url: daemon_url(listeners),
        })
    }

    /// The directory that holds `lager/`.
    pub fn package_dir(&self) -> &Path {
        &self.package
    }

    pub fn site_dir(&self) -> PathBuf {
        self.site
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .dir
            .clone()
    }

    /// `PYTHONPATH` for a job: the package, the site dir, then whatever the
    /// job would have had (`inherited`).
    pub fn python_path(&self, inherited: Option<&str>) -> String {
        let mut path = format!("{}:{}", self.package.display(), self.site_dir().display());
        if let Some(rest) = inherited.filter(|p| !p.is_empty()) {
            path.push(':');
            path.push_str(rest);
        }
        path
    }

    /// Where jobs reach this lagerd, when it listens anywhere they can.
    pub fn daemon_url(&self) -> Option<&str> {
        self.daemon_url.as_deref()
    }
}

/// `lagerd python-path`: the `PYTHONPATH` a box shell needs for the package
/// and the installed wheels (without starting lagerd).
pub fn shell_python_path(state_dir: &Path) -> String {
    let root = state_dir.join("python");
    let site = wheels::newest_site(&root).map_or_else(|| root.join("site-0"), |s| s.dir);
    format!(
        "{}:{}",
        root.join(package_dir_name()).display(),
        site.display()
    )
}

/// `lager-<version>-<hash of the files>`: a new build with changed files
/// gets a new directory even when the version did not change.
fn package_dir_name() -> String {
    // FNV-1a: stable across builds and platforms, unlike std's hasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for (name, text) in PACKAGE {
        for byte in name.bytes().chain([0]).chain(text.bytes()).chain([0]) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("lager-{}-{:016x}", common::VERSION, hash)
}

/// Makes `<root>/lager-<version>-<hash>/lager/` hold exactly the embedded
/// files, written whole and stamped (`VERSION`), and removes older ones.
fn install_package(root: &Path) -> io::Result<PathBuf> {
    let name = package_dir_name();
    let dir = root.join(&name);
    let intact = PACKAGE.iter().all(|(file, text)| {
        fs::read(dir.join("lager").join(file)).is_ok_and(|on_disk| on_disk == text.as_bytes())
    });
    if !intact {
        let temp = root.join(format!(".tmp-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&temp);
        fs::create_dir_all(temp.join("lager"))?;
        for (file, text) in PACKAGE {
            let path = temp.join("lager").join(file);
            fs::write(&path, text)?;
            readable(&path, 0o644)?;
        }
        let stamp = temp.join("VERSION");
        fs::write(&stamp, format!("lagerd {}\n", common::VERSION))?;
        readable(&stamp, 0o644)?;
        readable(&temp.join("lager"), 0o755)?;
        readable(&temp, 0o755)?;
        if dir.exists() {
            fs::remove_dir_all(&dir)?;
        }
        fs::rename(&temp, &dir)?;
        info!("wrote the lager Python package to {}", dir.display());
    }
    // Other versions' packages: a job of this lagerd never uses them.
    for entry in fs::read_dir(root)?.flatten() {
        let other = entry.file_name().to_string_lossy().into_owned();
        let stale =
            (other.starts_with("lager-") || other.starts_with(".tmp-lager-")) && other != name;
        if stale {
            if let Err(e) = fs::remove_dir_all(entry.path()) {
                warn!(
                    "could not remove the old package {}: {e}",
                    entry.path().display()
                );
            }
        }
    }
    Ok(dir)
}

/// The package is no secret: a box shell's user reads it too (`lagerd
/// python-path`), whatever lagerd's umask (the systemd unit's is 0027).
fn readable(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

/// A URL jobs can reach: a loopback listener if there is one, else a
/// wildcard one through loopback, else the first address as bound.
fn daemon_url(listeners: &[SocketAddr]) -> Option<String> {
    let pick = listeners
        .iter()
        .find(|a| a.ip().is_loopback())
        .or_else(|| listeners.iter().find(|a| a.ip().is_unspecified()))
        .or_else(|| listeners.first())?;
    let ip = match pick.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => "127.0.0.1".to_string(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => "[::1]".to_string(),
        std::net::IpAddr::V4(ip) => ip.to_string(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
    };
    Some(format!("http://{ip}:{}", pick.port()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("scriptenv-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn package_files_are_all_embedded() {
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/lager");
        let mut on_disk: Vec<String> = fs::read_dir(&source)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".py"))
            .collect();
        on_disk.sort();
        let embedded: Vec<String> = PACKAGE.iter().map(|(n, _)| n.to_string()).collect();
        assert_eq!(
            embedded, on_disk,
            "lagerd/python/lager and scriptenv::PACKAGE differ: list every .py file there"
        );
    }

    /// The package sends only actions lagerd knows (its `actions.py` is
    /// the one place it names them).
    #[test]
    fn the_packages_actions_are_lagerds() {
        use crate::instruments::actions::{parse, ActionError, LIMITS_2281S};
        let source = PACKAGE.iter().find(|(n, _)| *n == "actions.py").unwrap().1;
        let mut checked = 0;
        for (kind, battery) in [("supply", false), ("battery", true)] {
            let start = source.find(&format!("\"{kind}\": frozenset({{")).unwrap();
            let block = &source[start..start + source[start..].find("})").unwrap()];
            let names = block.split('"').skip(3).step_by(2);
            for name in names {
                let parsed = parse(battery, name, &serde_json::Map::new(), &LIMITS_2281S);
                assert!(
                    !matches!(parsed, Err(ActionError::Unknown(_))),
                    "{kind} action {name:?} of lager/actions.py is unknown to lagerd"
                );
                checked += 1;
            }
        }
        assert!(checked >= 28, "only {checked} actions found in actions.py");
    }

    #[test]
    fn the_package_is_written_once_whole_and_old_ones_go() {
        let state = temp("package");
        let root = state.join("python");
        fs::create_dir_all(root.join("lager-0.0.1-old/lager")).unwrap();
        // As a restrictive umask would have left it.
        readable(&root, 0o700).unwrap();
        let env = ScriptEnv::open(&state, "python3", &[]).unwrap();
        let dir = env.package_dir().to_path_buf();
        assert!(dir.starts_with(&root));
        assert_eq!(
            fs::read_to_string(dir.join("lager/net.py")).unwrap(),
            PACKAGE.iter().find(|(n, _)| *n == "net.py").unwrap().1
        );
        assert!(fs::read_to_string(dir.join("VERSION"))
            .unwrap()
            .contains(common::VERSION));
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(
            (mode(&root), mode(&dir), mode(&dir.join("lager/net.py"))),
            (0o755, 0o755, 0o644),
            "readable from a box shell"
        );
        assert!(!root.join("lager-0.0.1-old").exists());
        // A damaged file is put right at the next start.
        fs::write(dir.join("lager/net.py"), "broken").unwrap();
        ScriptEnv::open(&state, "python3", &[]).unwrap();
        assert_ne!(
            fs::read_to_string(dir.join("lager/net.py")).unwrap(),
            "broken"
        );
        assert_eq!(shell_python_path(&state), env.python_path(None));
        assert_eq!(
            env.python_path(Some("/mine")),
            format!("{}:{}:/mine", dir.display(), env.site_dir().display())
        );
        fs::remove_dir_all(state).unwrap();
    }

    #[test]
    fn jobs_reach_lagerd_through_loopback() {
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(daemon_url(&[]), None);
        assert_eq!(
            daemon_url(&[addr("0.0.0.0:9000"), addr("0.0.0.0:5000")]).as_deref(),
            Some("http://127.0.0.1:9000")
        );
        assert_eq!(
            daemon_url(&[addr("10.0.0.5:9000"), addr("127.0.0.1:4000")]).as_deref(),
            Some("http://127.0.0.1:4000")
        );
        assert_eq!(
            daemon_url(&[addr("10.0.0.5:9000")]).as_deref(),
            Some("http://10.0.0.5:9000")
        );
        assert_eq!(
            daemon_url(&[addr("[::]:9000")]).as_deref(),
            Some("http://[::1]:9000")
        );
    }
}
