//! The site directory behind `lager install-wheel` (scripts.md §3) and the
//! `requirements.txt` of zip modules (runner.md §2): packages installed
//! with the box's own `python3 -m pip` into `<state-dir>/python/site-<n>`,
//! offline for wheels (`--no-index --no-deps`).
//!
//! A change never touches the current generation: it links `site-<n>` into
//! a staging directory (hard links, so nothing is copied), removes the
//! previous version of a package there by its `RECORD`, runs pip against
//! the staging directory, and only when every step worked renames it to
//! `site-<n+1>` and switches new jobs to it. A failing pip leaves the box as
//! it was. The generation before the current one is kept for jobs that are
//! still running from it; older ones are removed.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::symlink;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::PoisonError;
use std::time::{Duration, Instant};

use log::{info, warn};
use serde_json::{json, Value};

use super::{ScriptEnv, Site};

/// pip installing one local wheel takes seconds; past this it is stuck.
const WHEEL_PIP_LIMIT: Duration = Duration::from_secs(120);
/// `requirements.txt` may download from an index.
const REQUIREMENTS_PIP_LIMIT: Duration = Duration::from_secs(300);
/// Lines of pip's output shown when it fails.
const PIP_TAIL_LINES: usize = 15;

/// A package in the site directory.
#[derive(Debug, Clone, PartialEq)]
pub struct Installed {
    pub name: String,
    pub version: String,
    /// An earlier version was removed first.
    pub replaced: bool,
}

impl Installed {
    pub fn json(&self) -> Value {
        json!({"name": self.name, "version": self.version, "replaced": self.replaced})
    }
}

/// Why a change to the site directory did not happen.
#[derive(Debug)]
pub enum WheelError {
    /// The upload is not a set of wheels.
    BadUpload(String),
    /// `--uninstall` of a package that is not there.
    NotInstalled(String),
    /// pip failed: the wheel it failed on, and its last lines.
    Pip { what: String, output: String },
    /// The state dir could not be written.
    Io(io::Error),
}

impl std::fmt::Display for WheelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WheelError::BadUpload(why) => f.write_str(why),
            WheelError::NotInstalled(name) => write!(
                f,
                "{name} is not installed in the box's script environment (lager install-wheel --list shows what is)"
            ),
            WheelError::Pip { what, output } => {
                write!(f, "pip could not install {what}; nothing was changed")?;
                if output.contains("No module named pip") {
                    f.write_str(" (the box's python3 has no pip: install python3-pip there)")?;
                }
                write!(f, ". pip said:\n{output}")
            }
            WheelError::Io(e) => write!(f, "cannot change the box's site directory: {e}"),
        }
    }
}

impl From<io::Error> for WheelError {
    fn from(e: io::Error) -> WheelError {
        WheelError::Io(e)
    }
}

/// The newest complete `site-<n>` under `root`.
pub(super) fn newest_site(root: &Path) -> Option<Site> {
    fs::read_dir(root)
        .ok()?
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let generation = name.strip_prefix("site-")?.parse().ok()?;
            Some(Site {
                generation,
                dir: entry.path(),
            })
        })
        .max_by_key(|site| site.generation)
}

/// The current generation (made empty if there is none), with leftovers of
/// interrupted changes and generations older than the previous removed.
pub(super) fn open_site(root: &Path) -> io::Result<Site> {
    let site = match newest_site(root) {
        Some(site) => site,
        None => {
            let dir = root.join("site-0");
            fs::create_dir_all(&dir)?;
            Site { generation: 0, dir }
        }
    };
    prune(root, site.generation, true);
    Ok(site)
}

/// Removes generations before `current - 1` and, at start, staging dirs.
fn prune(root: &Path, current: u64, staging_too: bool) {
    let Ok(entries) = fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let old = name
            .strip_prefix("site-")
            .and_then(|n| n.parse::<u64>().ok())
            .is_some_and(|n| n + 1 < current);
        let leftover = staging_too && (name.starts_with(".site-") || name.starts_with(".wheels-"));
        if old || leftover {
            if let Err(e) = fs::remove_dir_all(entry.path()) {
                warn!("could not remove {}: {e}", entry.path().display());
            }
        }
    }
}

impl ScriptEnv {
    /// The packages installed now, by name.
    pub fn list_wheels(&self) -> Vec<Installed> {
        let mut installed: Vec<Installed> = dists(&self.site_dir())
            .into_iter()
            .map(|(name, version, _)| Installed {
                name,
                version,
                replaced: false,
            })
            .collect();
        installed.sort_by(|a, b| a.name.cmp(&b.name));
        installed
    }

    /// Installs uploaded wheels (`(file name, bytes)`), all or none.
    pub fn install_wheels(&self, wheels: &[(String, &[u8])]) -> Result<Vec<Installed>, WheelError> {
        if wheels.is_empty() {
            return Err(WheelError::BadUpload(
                "no wheel in the upload: send each as a multipart part named \"wheel\" with its file name".into(),
            ));
        }
        let mut named = Vec::new();
        for (file, bytes) in wheels {
            let (name, version) = common::wheel::parse(file).map_err(WheelError::BadUpload)?;
            if !bytes.starts_with(b"PK") {
                return Err(WheelError::BadUpload(format!(
                    "{file} is not a wheel: it is not a zip file"
                )));
            }
            named.push((file, *bytes, name, version));
        }
        let upload = TempDir::new(&self.root, ".wheels")?;
        self.change(|staging| {
            let mut done = Vec::new();
            for (file, bytes, name, version) in &named {
                let path = upload.0.join(file);
                fs::write(&path, bytes)?;
                let replaced = remove_dists(staging, name)? > 0;
                let mut pip = self.pip();
                pip.args(["--no-index", "--no-deps", "--force-reinstall"])
                    .arg("--target")
                    .arg(staging)
                    .arg(&path);
                run_pip(pip, WHEEL_PIP_LIMIT).map_err(|output| WheelError::Pip {
                    what: (*file).clone(),
                    output,
                })?;
                keep_newest_dists(staging)?;
                if replaced {
                    info!("replaced {name} with {version} from {file}");
                } else {
                    info!("installed {name} {version} from {file}");
                }
                done.push(Installed {
                    name: name.clone(),
                    version: version.clone(),
                    replaced,
                });
            }
            Ok(done)
        })
    }

    /// Removes one package, by (normalized) name.
    pub fn uninstall_wheel(&self, name: &str) -> Result<Installed, WheelError> {
        let name = common::wheel::normalize(name.trim());
        if name.is_empty() {
            return Err(WheelError::BadUpload(
                "name is required: the package to uninstall".into(),
            ));
        }
        let Some((_, version, _)) = dists(&self.site_dir())
            .into_iter()
            .find(|(n, _, _)| *n == name)
        else {
            return Err(WheelError::NotInstalled(name));
        };
        self.change(|staging| {
            remove_dists(staging, &name)?;
            info!("uninstalled {name} {version}");
            Ok(Installed {
                name: name.clone(),
                version: version.clone(),
                replaced: false,
            })
        })
    }

    /// A zip module's `requirements.txt`, installed into the same site
    /// directory (with the module's own directory as a source of wheels, so
    /// an air-gapped box can ship them in the module). The same file is
    /// installed once: later runs find its marker and skip pip.
    pub fn install_requirements(&self, module_dir: &Path) -> Result<(), WheelError> {
        let requirements = module_dir.join("requirements.txt");
        let text = fs::read(&requirements)?;
        let marker = format!(".requirements-{:016x}", fnv(&text));
        if self.site_dir().join(&marker).exists() {
            return Ok(());
        }
        self.change(|staging| {
            let mut pip = self.pip();
            pip.arg("--target")
                .arg(staging)
                .arg("--find-links")
                .arg(module_dir)
                .arg("-r")
                .arg(&requirements)
                .current_dir(module_dir);
            run_pip(pip, REQUIREMENTS_PIP_LIMIT).map_err(|output| WheelError::Pip {
                what: "requirements.txt".into(),
                output,
            })?;
            keep_newest_dists(staging)?;
            fs::write(staging.join(&marker), &text)?;
            Ok(())
        })
    }

    /// `python3 -m pip install` with what every use shares.
    fn pip(&self) -> Command {
        let mut pip = Command::new(&self.python);
        pip.args([
            "-m",
            "pip",
            "install",
            "--upgrade",
            "--no-cache-dir",
            "--disable-pip-version-check",
            "--no-warn-script-location",
        ])
        .env("PIP_NO_INPUT", "1")
        .env_remove("PYTHONPATH");
        pip
    }

    /// Runs `apply` on a staging copy of the current generation and makes
    /// the result current, or discards it on any error.
    fn change<T>(
        &self,
        apply: impl FnOnce(&Path) -> Result<T, WheelError>,
    ) -> Result<T, WheelError> {
        let _changing = self.changing.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self
            .site
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let staging = TempDir::new(&self.root, ".site")?;
        link_tree(&current.dir, &staging.0)?;
        let outcome = apply(&staging.0)?;
        let next = Site {
            generation: current.generation + 1,
            dir: self.root.join(format!("site-{}", current.generation + 1)),
        };
        if next.dir.exists() {
            fs::remove_dir_all(&next.dir)?;
        }
        fs::rename(&staging.0, &next.dir)?;
        prune(&self.root, next.generation, false);
        *self.site.lock().unwrap_or_else(PoisonError::into_inner) = next;
        Ok(outcome)
    }
}

/// A directory under the state dir's `python/`, removed when dropped
/// (after a successful change it was renamed away already).
struct TempDir(PathBuf);

impl TempDir {
    fn new(root: &Path, prefix: &str) -> io::Result<TempDir> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let dir = root.join(format!(
            "{prefix}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Mirrors `from` into `to` with hard links (files are never changed in
/// place: pip and Python replace them by rename), copying where linking
/// fails.
fn link_tree(from: &Path, to: &Path) -> io::Result<()> {
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let (source, target) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type()?;
        if kind.is_dir() {
            fs::create_dir_all(&target)?;
            link_tree(&source, &target)?;
        } else if kind.is_symlink() {
            symlink(fs::read_link(&source)?, &target)?;
        } else if fs::hard_link(&source, &target).is_err() {
            fs::copy(&source, &target)?;
        }
    }
    Ok(())
}

/// `(normalized name, version, dir)` of every `*.dist-info` in `site`.
fn dists(site: &Path) -> Vec<(String, String, PathBuf)> {
    let Ok(entries) = fs::read_dir(site) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let file = entry.file_name().to_string_lossy().into_owned();
            let stem = file.strip_suffix(".dist-info")?;
            let (name, version) = stem.rsplit_once('-')?;
            Some((
                common::wheel::normalize(name),
                version.to_string(),
                entry.path(),
            ))
        })
        .collect()
}

/// Removes every installed version of `name` from `site` by its `RECORD`
/// (and what Python compiled beside those files); returns how many.
fn remove_dists(site: &Path, name: &str) -> io::Result<usize> {
    let found: Vec<PathBuf> = dists(site)
        .into_iter()
        .filter(|(n, _, _)| n == name)
        .map(|(_, _, dir)| dir)
        .collect();
    for dist in &found {
        remove_recorded(site, dist)?;
    }
    Ok(found.len())
}

fn remove_recorded(site: &Path, dist: &Path) -> io::Result<()> {
    let mut record = String::new();
    if let Ok(mut file) = File::open(dist.join("RECORD")) {
        file.read_to_string(&mut record)?;
    }
    let mut parents = Vec::new();
    for line in record.lines() {
        let relative = record_path(line);
        // Never outside the site dir, whatever the RECORD says.
        let Some(path) = inside(site, relative) else {
            continue;
        };
        remove_file(&path)?;
        if let (Some(dir), Some(stem)) = (path.parent(), path.file_stem()) {
            if path.extension().is_some_and(|e| e == "py") {
                let prefix = format!("{}.", stem.to_string_lossy());
                if let Ok(cached) = fs::read_dir(dir.join("__pycache__")) {
                    for pyc in cached.flatten() {
                        if pyc.file_name().to_string_lossy().starts_with(&prefix) {
                            remove_file(&pyc.path())?;
                        }
                    }
                }
                parents.push(dir.join("__pycache__"));
            }
            parents.push(dir.to_path_buf());
        }
    }
    if dist.exists() {
        fs::remove_dir_all(dist)?;
    }
    // Directories the package emptied, deepest first.
    parents.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    parents.dedup();
    for dir in parents {
        let mut dir = dir.as_path();
        while dir != site && dir.starts_with(site) && fs::remove_dir(dir).is_ok() {
            match dir.parent() {
                Some(parent) => dir = parent,
                None => break,
            }
        }
    }
    Ok(())
}

fn remove_file(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The path field of a `RECORD` line (CSV; quoted when it has a comma).
fn record_path(line: &str) -> &str {
    if let Some(rest) = line.strip_prefix('"') {
        return rest.split('"').next().unwrap_or("");
    }
    line.split(',').next().unwrap_or("")
}

/// `site/relative` when it stays inside `site` (no absolute path, no `..`
/// climbing out).
fn inside(site: &Path, relative: &str) -> Option<PathBuf> {
    let mut path = site.to_path_buf();
    let mut depth = 0usize;
    for component in Path::new(relative).components() {
        match component {
            Component::Normal(part) => {
                path.push(part);
                depth += 1;
            }
            Component::ParentDir if depth > 0 => {
                path.pop();
                depth -= 1;
            }
            Component::CurDir => {}
            _ => return None,
        }
    }
    (depth > 0).then_some(path)
}

/// pip with `--target --upgrade` leaves an older version's `.dist-info`
/// beside the new one: keep only the newest of each name.
fn keep_newest_dists(site: &Path) -> io::Result<()> {
    let mut all = dists(site);
    let modified = |dir: &Path| fs::metadata(dir).and_then(|m| m.modified()).ok();
    all.sort_by(|a, b| a.0.cmp(&b.0).then(modified(&b.2).cmp(&modified(&a.2))));
    for pair in all.windows(2) {
        if pair[0].0 == pair[1].0 {
            fs::remove_dir_all(&pair[1].2)?;
        }
    }
    Ok(())
}

/// Runs pip with its output in a file (no pipe to fill), bounded by
/// `limit`; on failure the last lines of what it said.
fn run_pip(mut pip: Command, limit: Duration) -> Result<(), String> {
    let log = tempfile_for_output().map_err(|e| e.to_string())?;
    let (out, err) = match (log.0.try_clone(), log.0.try_clone()) {
        (Ok(out), Ok(err)) => (out, err),
        _ => return Err("cannot capture pip's output".into()),
    };
    pip.stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err));
    let mut child = pip
        .spawn()
        .map_err(|e| format!("cannot run {:?}: {e}", pip.get_program()))?;
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if started.elapsed() < limit => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let mut output = String::new();
    let _ = File::open(&log.1).and_then(|mut f| f.read_to_string(&mut output));
    let _ = fs::remove_file(&log.1);
    let tail = |text: &str| {
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(PIP_TAIL_LINES)..].join("\n")
    };
    match status {
        Some(status) if status.success() => Ok(()),
        Some(status) => Err(format!("{}\n(pip exited with {status})", tail(&output))),
        None => Err(format!(
            "{}\n(pip was stopped after {} s)",
            tail(&output),
            limit.as_secs()
        )),
    }
}

fn tempfile_for_output() -> io::Result<(File, PathBuf)> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let path = std::env::temp_dir().join(format!(
        "lagerd-pip-{}-{}.log",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)?;
    Ok((file, path))
}

/// FNV-1a over bytes (a requirements file's marker).
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_paths_never_leave_the_site() {
        let site = Path::new("/s/site-1");
        assert_eq!(
            inside(site, "pkg/mod.py"),
            Some(PathBuf::from("/s/site-1/pkg/mod.py"))
        );
        assert_eq!(
            inside(site, "pkg/../other.py"),
            Some(PathBuf::from("/s/site-1/other.py"))
        );
        for outside in ["../x", "/etc/passwd", "pkg/../../x", "", "."] {
            assert_eq!(inside(site, outside), None, "{outside}");
        }
        assert_eq!(record_path("pkg/a.py,sha256=x,12"), "pkg/a.py");
        assert_eq!(record_path("\"pkg/a,b.py\",sha256=x,12"), "pkg/a,b.py");
    }

    #[test]
    fn a_recorded_package_is_removed_whole() {
        let site = std::env::temp_dir().join(format!("wheels-record-{}", std::process::id()));
        let _ = fs::remove_dir_all(&site);
        for dir in ["pkg/__pycache__", "pkg/sub", "keep", "pkg-1.0.dist-info"] {
            fs::create_dir_all(site.join(dir)).unwrap();
        }
        for file in [
            "pkg/__init__.py",
            "pkg/sub/x.py",
            "pkg/__pycache__/__init__.cpython-311.pyc",
            "keep/other.py",
        ] {
            fs::write(site.join(file), "x").unwrap();
        }
        fs::write(
            site.join("pkg-1.0.dist-info/RECORD"),
            "pkg/__init__.py,sha256=a,1\npkg/sub/x.py,,\npkg-1.0.dist-info/RECORD,,\n../../outside,,\n",
        )
        .unwrap();
        assert_eq!(
            dists(&site),
            vec![("pkg".into(), "1.0".into(), site.join("pkg-1.0.dist-info"))]
        );
        assert_eq!(remove_dists(&site, "pkg").unwrap(), 1);
        assert!(!site.join("pkg").exists(), "emptied directories go too");
        assert!(site.join("keep/other.py").exists());
        assert!(dists(&site).is_empty());
        fs::remove_dir_all(site).unwrap();
    }
}
