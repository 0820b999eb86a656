//! Which processes hold a device node open (diagnose.md §2.4), found by
//! walking `<proc-root>/*/fd` instead of shelling out to `lsof` (which the
//! box image lacks).
//!
//! A holder is matched on what its fd *is*: the same character device
//! (`st_rdev`) or the same file (`st_dev`, `st_ino`). Path text alone misses
//! processes that opened the node through another node or from inside a
//! container; text equal to the logical path still counts, which is what
//! lets tests describe holders with a fixture tree of symlinks. Processes
//! that vanish or cannot be read mid-scan are skipped, never an error.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::Serialize;

use crate::fsutil;

/// Scanning splits across this many threads once there are enough PIDs.
const SCAN_THREADS: usize = 2;
const PIDS_PER_THREAD_MIN: usize = 64;

/// One process holding the target open.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Holder {
    /// `<proc>/<pid>/comm`, or `?`.
    pub command: String,
    /// A string on the wire, as the older system sent it.
    pub pid: String,
    pub user: String,
    /// The full command line, NULs as spaces.
    pub cmdline: String,
    /// Set when the process lives in another mount namespace: its container
    /// id from the cgroup path, else the namespace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
}

/// What a holder's fd must be.
pub struct Target {
    /// The unprefixed path (`/dev/bus/usb/001/004`) fd link text is compared with.
    logical: PathBuf,
    rdev: Option<u64>,
    file: Option<(u64, u64)>,
}

impl Target {
    /// `logical` is a path under `/dev`; it is stat'ed at its place under
    /// `dev_root`, so a fixture tree can stand in for `/dev`.
    pub fn new(logical: &Path, dev_root: &Path) -> Target {
        let real = match logical.strip_prefix("/dev") {
            Ok(rest) => dev_root.join(rest),
            Err(_) => logical.to_path_buf(),
        };
        let meta = fs::metadata(real).ok();
        Target {
            logical: logical.to_path_buf(),
            rdev: meta
                .as_ref()
                .filter(|m| m.file_type().is_char_device())
                .map(MetadataExt::rdev),
            file: meta.as_ref().map(|m| (m.dev(), m.ino())),
        }
    }

    /// One `stat` per fd; the link text only when there is nothing to
    /// stat (a fixture tree's dangling links, an fd closed mid-scan).
    fn matches(&self, fd: &Path) -> bool {
        if self.rdev.is_some() || self.file.is_some() {
            if let Ok(meta) = fs::metadata(fd) {
                return match self.rdev {
                    Some(rdev) => meta.file_type().is_char_device() && meta.rdev() == rdev,
                    None => self.file == Some((meta.dev(), meta.ino())),
                };
            }
        }
        fs::read_link(fd).is_ok_and(|text| text == self.logical)
    }
}

/// Every process under `proc_root` with an fd that is `target`; one entry
/// per process, in PID order.
pub fn holders(proc_root: &Path, target: &Target) -> Vec<Holder> {
    let mut pids: Vec<u32> = match fs::read_dir(proc_root) {
        Ok(entries) => entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect(),
        Err(_) => return Vec::new(),
    };
    pids.sort_unstable();
    let threads = if pids.len() >= SCAN_THREADS * PIDS_PER_THREAD_MIN {
        SCAN_THREADS
    } else {
        1
    };
    let chunk = pids.len().div_ceil(threads).max(1);
    // Read once, and only if some process matches.
    let users = OnceLock::new();
    let own_ns = fs::read_link("/proc/self/ns/mnt").ok();
    std::thread::scope(|scope| {
        let workers: Vec<_> = pids
            .chunks(chunk)
            .map(|pids| {
                let (users, own_ns) = (&users, own_ns.as_deref());
                scope.spawn(move || {
                    pids.iter()
                        .filter(|&&pid| holds(proc_root, pid, target))
                        .map(|&pid| {
                            let users =
                                users.get_or_init(|| passwd_names(Path::new("/etc/passwd")));
                            describe(proc_root, pid, users, own_ns)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_default())
            .collect()
    })
}

/// Whether any fd of `pid` is the target (stops at the first).
fn holds(proc_root: &Path, pid: u32, target: &Target) -> bool {
    let Ok(fds) = fs::read_dir(proc_root.join(pid.to_string()).join("fd")) else {
        return false;
    };
    fds.flatten().any(|fd| target.matches(&fd.path()))
}

fn describe(
    proc_root: &Path,
    pid: u32,
    users: &HashMap<u32, String>,
    own_ns: Option<&Path>,
) -> Holder {
    let dir = proc_root.join(pid.to_string());
    // Shown to people: the start is enough (a command line can be 2 MiB).
    let read = |name: &str| fsutil::read_head(&dir.join(name), 64 * 1024).unwrap_or_default();
    let comm = String::from_utf8_lossy(&read("comm")).trim().to_string();
    let cmdline = String::from_utf8_lossy(&read("cmdline"))
        .replace('\0', " ")
        .trim()
        .to_string();
    let uid = String::from_utf8_lossy(&read("status"))
        .lines()
        .find_map(|line| {
            line.strip_prefix("Uid:")?
                .split_whitespace()
                .next()?
                .parse::<u32>()
                .ok()
        });
    let user = uid
        .map(|uid| users.get(&uid).cloned().unwrap_or_else(|| uid.to_string()))
        .unwrap_or_default();
    let ns = fs::read_link(dir.join("ns/mnt")).ok();
    let foreign = matches!((ns.as_deref(), own_ns), (Some(ns), Some(own)) if ns != own);
    let container = foreign.then(|| {
        container_id(&String::from_utf8_lossy(&read("cgroup")))
            .unwrap_or_else(|| ns.map(|ns| ns.display().to_string()).unwrap_or_default())
    });
    Holder {
        command: if comm.is_empty() {
            "?".to_string()
        } else {
            comm
        },
        pid: pid.to_string(),
        user,
        cmdline,
        container,
    }
}

/// A container id (first 12 hex chars) from a cgroup path such as
/// `0::/system.slice/docker-<64 hex>.scope` or `.../docker/<64 hex>`.
fn container_id(cgroup: &str) -> Option<String> {
    cgroup.lines().find_map(|line| {
        let path = line.rsplit(':').next()?;
        path.split(['/', '-', '.'])
            .find(|part| part.len() == 64 && part.bytes().all(|b| b.is_ascii_hexdigit()))
            .map(|id| id[..12].to_string())
    })
}

/// uid → name from a passwd file; an unreadable file gives no names.
fn passwd_names(path: &Path) -> HashMap<u32, String> {
    let bytes = fsutil::read_limited(path, 16 << 20).unwrap_or_default();
    String::from_utf8_lossy(&bytes)
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            let uid = fields.nth(1)?.parse().ok()?;
            Some((uid, name.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    fn temp(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("procscan-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn finds_a_real_process_holding_a_real_file() {
        let dir = temp("real");
        let file = dir.join("instrument.node");
        fs::write(&file, b"").unwrap();
        // The holder opens the file through a hard link: different path text,
        // same inode, so only matching on what the fd is can find it.
        let alias = dir.join("alias.node");
        fs::hard_link(&file, &alias).unwrap();
        let mut child = Command::new("sleep")
            .arg("30")
            .stdin(Stdio::from(fs::File::open(&alias).unwrap()))
            .spawn()
            .unwrap();
        let target = Target::new(&file, Path::new("/dev"));
        let found = holders(Path::new("/proc"), &target);
        child.kill().unwrap();
        child.wait().unwrap();
        let me = found
            .iter()
            .find(|h| h.pid == child.id().to_string())
            .expect("the sleep is found");
        assert_eq!(me.command, "sleep");
        assert_eq!(me.cmdline, "sleep 30");
        assert!(!me.user.is_empty());
        assert_eq!(me.container, None, "same mount namespace");
        assert_eq!(
            found.iter().filter(|h| h.pid == me.pid).count(),
            1,
            "one entry per process"
        );
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn finds_holders_of_a_character_device_by_device_number() {
        let target = Target::new(Path::new("/dev/null"), Path::new("/dev"));
        assert!(target.rdev.is_some());
        let mut child = Command::new("sleep")
            .arg("30")
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let found = holders(Path::new("/proc"), &target);
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(found.iter().any(|h| h.pid == child.id().to_string()));
    }

    /// A fixture proc tree as the spec describes it: fd symlinks whose text
    /// is the logical path, a process without fds, junk entries.
    #[test]
    fn reads_fixture_trees_and_skips_what_it_cannot_read() {
        let proc = temp("fixture");
        let make = |pid: &str, comm: &str, links: &[&str]| {
            let dir = proc.join(pid);
            fs::create_dir_all(dir.join("fd")).unwrap();
            fs::write(dir.join("comm"), format!("{comm}\n")).unwrap();
            fs::write(dir.join("cmdline"), format!("{comm}\0--flag\0")).unwrap();
            fs::write(dir.join("status"), "Name:\tx\nUid:\t0\t0\t0\t0\n").unwrap();
            for (n, link) in links.iter().enumerate() {
                std::os::unix::fs::symlink(link, dir.join("fd").join(n.to_string())).unwrap();
            }
        };
        make(
            "101",
            "python3",
            &["/dev/null", "socket:[123]", "/dev/bus/usb/001/004"],
        );
        make("102", "bash", &["/dev/pts/0"]);
        make(
            "103",
            "hw_service",
            &["/dev/bus/usb/001/004", "/dev/bus/usb/001/004"],
        );
        fs::create_dir_all(proc.join("104")).unwrap(); // vanished: no fd dir
        fs::create_dir_all(proc.join("self")).unwrap();
        fs::write(proc.join("uptime"), "1 2").unwrap();
        let target = Target::new(Path::new("/dev/bus/usb/001/004"), &proc.join("no-dev"));
        let found = holders(&proc, &target);
        let names: Vec<(&str, &str)> = found
            .iter()
            .map(|h| (h.pid.as_str(), h.command.as_str()))
            .collect();
        assert_eq!(names, [("101", "python3"), ("103", "hw_service")]);
        assert_eq!(found[0].cmdline, "python3 --flag");
        assert_eq!(
            found[0].user,
            passwd_names(Path::new("/etc/passwd"))
                .get(&0)
                .cloned()
                .unwrap_or("0".into())
        );
        fs::remove_dir_all(proc).unwrap();
        assert!(holders(&std::env::temp_dir().join("no-such-proc-root"), &target).is_empty());
    }

    #[test]
    fn container_ids_come_from_cgroup_paths() {
        let id = "a".repeat(64);
        assert_eq!(
            container_id(&format!("0::/system.slice/docker-{id}.scope\n")),
            Some("a".repeat(12))
        );
        assert_eq!(
            container_id(&format!("12:memory:/docker/{id}\n")),
            Some("a".repeat(12))
        );
        assert_eq!(container_id("0::/user.slice/session-2.scope\n"), None);
    }

    #[test]
    fn the_wire_form_keeps_the_older_systems_keys() {
        let holder = Holder {
            command: "python3".into(),
            pid: "4121".into(),
            user: "lager".into(),
            cmdline: "python3 x.py".into(),
            container: None,
        };
        assert_eq!(
            serde_json::to_value(&holder).unwrap(),
            serde_json::json!({"command": "python3", "pid": "4121", "user": "lager", "cmdline": "python3 x.py"})
        );
    }
}
