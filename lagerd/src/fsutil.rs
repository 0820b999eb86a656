//! Replacing a small file whole: a temp file beside it, then a rename, so
//! a reader sees the old content or the new, never half of either (`Dir`,
//! the one way lagerd writes a state file). And
//! reading one with a bound: a state file, a script's breakpoint file or a
//! `/proc` entry never becomes a buffer as large as whatever is there.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// How hard to try to make the new content survive a crash.
#[derive(Clone, Copy, PartialEq)]
pub enum Durability {
    /// Rename only: fine for files that are rewritten as state changes.
    Atomic,
    /// Also fsync the file before, and the directory after, the rename.
    Durable,
}

/// The whole of `path` if it has at most `max` bytes; a longer file is an
/// `InvalidData` error that says so.
pub fn read_limited(path: &Path, max: usize) -> io::Result<Vec<u8>> {
    read_all_limited(File::open(path)?, max).map_err(|e| {
        if e.kind() == io::ErrorKind::InvalidData {
            io::Error::new(e.kind(), format!("{}: {e}", path.display()))
        } else {
            e
        }
    })
}

/// Everything `reader` gives if it is at most `max` bytes, else an
/// `InvalidData` error; never more than `max + 1` bytes are read.
pub fn read_all_limited(reader: impl Read, max: usize) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    reader.take(max as u64 + 1).read_to_end(&mut bytes)?;
    if bytes.len() > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("longer than {max} bytes"),
        ));
    }
    Ok(bytes)
}

/// The first `max` bytes of `path` (for text shown to people, such as a
/// `/proc` command line, where the start is enough).
pub fn read_head(path: &Path, max: usize) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    File::open(path)?.take(max as u64).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// An open directory whose files are replaced whole: a temp file beside
/// the target, then a rename, so a reader sees the old content or the new,
/// never half of either. The handle is what a durable change syncs after
/// the rename, so a caller that changes files often (`lockbox`) opens it
/// once.
pub struct Dir {
    path: PathBuf,
    handle: File,
    /// Which `Dir` of this process this is: with `temp_seq` it makes temp
    /// names unique, so two `Dir`s on one directory never share one.
    instance: u64,
    temp_seq: AtomicU64,
}

impl Dir {
    pub fn open(path: &Path) -> io::Result<Dir> {
        static INSTANCES: AtomicU64 = AtomicU64::new(0);
        Ok(Dir {
            path: path.to_path_buf(),
            handle: File::open(path)?,
            instance: INSTANCES.fetch_add(1, Ordering::Relaxed),
            temp_seq: AtomicU64::new(0),
        })
    }

    /// Replaces the file `name` here with `bytes` (mode 0644); on failure
    /// the old file stays and no temp file is left behind.
    pub fn replace(&self, name: &str, bytes: &[u8], durability: Durability) -> io::Result<()> {
        let temp = self.next_temp(name);
        let written = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(&temp)?;
            // fchmod: the umask must not make the file unreadable to tools.
            file.set_permissions(fs::Permissions::from_mode(0o644))?;
            file.write_all(bytes)?;
            if durability == Durability::Durable {
                file.sync_all()?;
            }
            fs::rename(&temp, self.path.join(name))?;
            if durability == Durability::Durable {
                self.sync()?;
            }
            Ok(())
        })();
        if written.is_err() {
            let _ = fs::remove_file(&temp);
        }
        written
    }

    /// Makes the directory's entries durable (after a rename or a removal).
    pub fn sync(&self) -> io::Result<()> {
        self.handle.sync_all()
    }

    fn next_temp(&self, name: &str) -> PathBuf {
        self.temp(name, self.temp_seq.fetch_add(1, Ordering::Relaxed))
    }

    /// The temp file the next `replace` of `name` will write first.
    #[cfg(test)]
    pub(crate) fn peek_temp(&self, name: &str) -> PathBuf {
        self.temp(name, self.temp_seq.load(Ordering::Relaxed))
    }

    fn temp(&self, name: &str, seq: u64) -> PathBuf {
        let pid = std::process::id();
        self.path
            .join(format!(".{name}.{pid}-{}-{seq}.tmp", self.instance))
    }
}

/// Whether `file` is a temp file that a `replace` of `name` left behind
/// when the process died between writing and renaming it.
pub fn is_temp_of(name: &str, file: &str) -> bool {
    file.strip_prefix('.')
        .and_then(|rest| rest.strip_prefix(name))
        .is_some_and(|rest| rest.starts_with('.') && rest.ends_with(".tmp"))
}

/// Replaces `path` with `bytes` through a [`Dir`] opened for this one
/// change (for files that change rarely).
pub fn replace(path: &Path, bytes: &[u8], durability: Durability) -> io::Result<()> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: not a file in a directory", path.display()),
        ));
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    Dir::open(dir)?.replace(name, bytes, durability)
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
        // What a crash between write and rename leaves is recognised.
        let temp = Dir::open(&dir).unwrap().peek_temp("nets.json");
        let temp = temp.file_name().unwrap().to_str().unwrap();
        assert!(is_temp_of("nets.json", temp), "{temp}");
        assert!(!is_temp_of("lock.json", temp), "{temp}");
        assert!(!is_temp_of("nets.json", "nets.json"));
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn reads_are_bounded() {
        assert_eq!(read_all_limited(&b"12345"[..], 5).unwrap(), b"12345");
        let err = read_all_limited(&b"123456"[..], 5).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        // An endless source is not read to its end.
        let err = read_all_limited(io::repeat(b'x'), 1 << 20).unwrap_err();
        assert_eq!(err.to_string(), "longer than 1048576 bytes");
        let err = read_limited(Path::new("/dev/zero"), 4096).unwrap_err();
        assert!(
            err.to_string().starts_with("/dev/zero: longer than"),
            "{err}"
        );
        assert_eq!(read_head(Path::new("/dev/zero"), 3).unwrap(), [0, 0, 0]);
    }
}
