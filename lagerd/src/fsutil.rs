//! Replacing a small file whole: a temp file beside it, then a rename, so
//! a reader sees the old content or the new, never half of either.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// How hard to try to make the new content survive a crash.
#[derive(Clone, Copy, PartialEq)]
pub enum Durability {
    /// Rename only: fine for files that are rewritten as state changes.
    Atomic,
    /// Also fsync the file before, and the directory after, the rename.
    Durable,
}

/// Replaces `path` with `bytes` (mode 0644); on failure the old file stays
/// and no temp file is left behind.
pub fn replace(path: &Path, bytes: &[u8], durability: Durability) -> io::Result<()> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let temp = path.with_file_name(format!(
        ".{name}.{}-{}.tmp",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&temp)?;
        // The umask must not make the file unreadable to tools.
        file.set_permissions(fs::Permissions::from_mode(0o644))?;
        file.write_all(bytes)?;
        if durability == Durability::Durable {
            file.sync_all()?;
        }
        fs::rename(&temp, path)?;
        if durability == Durability::Durable {
            if let Some(dir) = path.parent() {
                File::open(dir)?.sync_all()?;
            }
        }
        Ok(())
    })();
    if written.is_err() {
        let _ = fs::remove_file(&temp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_and_cleans_up_on_failure() {
        let dir = std::env::temp_dir().join(format!("fsutil-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("nets.json");
        replace(&path, b"[1]", Durability::Durable).unwrap();
        replace(&path, b"[1, 2]", Durability::Atomic).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"[1, 2]");
        // A directory in the way of the rename: the write fails, the temp goes.
        let blocked = dir.join("blocked");
        fs::create_dir_all(blocked.join("inside")).unwrap();
        assert!(replace(&blocked, b"x", Durability::Durable).is_err());
        let names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
        fs::remove_dir_all(dir).unwrap();
    }
}
