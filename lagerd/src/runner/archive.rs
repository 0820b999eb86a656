//! Unpacks an uploaded `module` zip into a run's private dir (runner.md §2),
//! refusing what could escape or exhaust the box: absolute paths, `..`,
//! symlinks, more than 10,000 entries, more than 256 MiB expanded (counted
//! as bytes are written, since a zip can lie about its sizes).

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

pub const ENTRIES_MAX: usize = 10_000;
pub const EXPANDED_MAX: u64 = 256 * 1024 * 1024;

#[derive(Debug)]
pub enum ArchiveError {
    /// Not a readable zip (the reason from the zip reader).
    Corrupt(String),
    /// An entry that would land outside the run dir, or a link.
    Unsafe(String),
    TooManyEntries(usize),
    TooLarge,
    Io(io::Error),
}

impl std::fmt::Display for ArchiveError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ArchiveError::Corrupt(why) => write!(f, "Invalid module archive: {why}"),
            ArchiveError::Unsafe(entry) => write!(f, "Invalid module archive: {entry}"),
            ArchiveError::TooManyEntries(n) => {
                write!(
                    f,
                    "Invalid module archive: {n} entries (at most {ENTRIES_MAX})"
                )
            }
            ArchiveError::TooLarge => write!(
                f,
                "Invalid module archive: expands to more than {} MiB",
                EXPANDED_MAX / 1024 / 1024
            ),
            ArchiveError::Io(e) => write!(f, "Could not unpack module: {e}"),
        }
    }
}

impl From<io::Error> for ArchiveError {
    fn from(e: io::Error) -> ArchiveError {
        ArchiveError::Io(e)
    }
}

/// Extracts `zip_bytes` under `dir`, keeping Unix mode bits.
pub fn extract(zip_bytes: &[u8], dir: &Path) -> Result<(), ArchiveError> {
    extract_within(zip_bytes, dir, EXPANDED_MAX)
}

/// `extract` with another size cap: the tests and the `zip_extract` fuzz
/// target use a small one, so a bomb costs them kilobytes, not 256 MiB.
pub fn extract_within(zip_bytes: &[u8], dir: &Path, expanded_max: u64) -> Result<(), ArchiveError> {
    let corrupt = |e: zip::result::ZipError| ArchiveError::Corrupt(e.to_string());
    let mut archive = zip::ZipArchive::new(io::Cursor::new(zip_bytes)).map_err(corrupt)?;
    if archive.len() > ENTRIES_MAX {
        return Err(ArchiveError::TooManyEntries(archive.len()));
    }
    // Check every entry before writing anything, so a refused upload leaves
    // nothing behind and the declared size is bounded up front.
    let mut declared = 0u64;
    for index in 0..archive.len() {
        let entry = archive.by_index_raw(index).map_err(corrupt)?;
        let name = String::from_utf8_lossy(entry.name_raw()).into_owned();
        if entry.is_symlink() {
            return Err(ArchiveError::Unsafe(name));
        }
        safe_relative(&name).ok_or(ArchiveError::Unsafe(name))?;
        declared = declared.saturating_add(entry.size());
    }
    if declared > expanded_max {
        return Err(ArchiveError::TooLarge);
    }
    let mut written = 0u64;
    for index in 0..archive.len() {
        let mut entry = archive.by_index(index).map_err(corrupt)?;
        let name = String::from_utf8_lossy(entry.name_raw()).into_owned();
        let relative = safe_relative(&name).ok_or_else(|| ArchiveError::Unsafe(name.clone()))?;
        let target = dir.join(relative);
        if entry.is_dir() {
            fs::create_dir_all(&target)?;
            continue;
        }
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent)?;
        }
        let mut file = fs::File::create(&target)?;
        let budget = expanded_max - written;
        let copied = io::copy(&mut (&mut entry).take(budget + 1), &mut file)?;
        written += copied;
        if copied > budget {
            return Err(ArchiveError::TooLarge);
        }
        if let Some(mode) = entry.unix_mode() {
            // Keep the execute bits; never setuid/setgid/sticky from an upload.
            fs::set_permissions(&target, fs::Permissions::from_mode(mode & 0o777))?;
        }
    }
    Ok(())
}

/// The entry's path if it stays inside the dir: relative, no `..`.
fn safe_relative(name: &str) -> Option<PathBuf> {
    if name.contains('\\') && name.contains("..") {
        return None;
    }
    let path = Path::new(name);
    let mut clean = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => clean.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    (!clean.as_os_str().is_empty()).then_some(clean)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use zip::write::SimpleFileOptions;

    fn zip_of(entries: &[(&str, &[u8], u32)]) -> Vec<u8> {
        let mut buf = io::Cursor::new(Vec::new());
        let mut writer = zip::ZipWriter::new(&mut buf);
        for (name, data, mode) in entries {
            let options = SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated)
                .unix_permissions(*mode);
            writer.start_file(*name, options).unwrap();
            writer.write_all(data).unwrap();
        }
        writer.finish().unwrap();
        buf.into_inner()
    }

    fn temp(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("archive-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn extracts_files_with_their_modes() {
        let dir = temp("ok");
        let zip = zip_of(&[
            ("main.py", b"print(1)\n", 0o644),
            ("pkg/tool.sh", b"#!/bin/sh\n", 0o4755),
        ]);
        extract(&zip, &dir).unwrap();
        assert_eq!(fs::read(dir.join("main.py")).unwrap(), b"print(1)\n");
        let mode = fs::metadata(dir.join("pkg/tool.sh"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o755, "execute kept, setuid dropped");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn refuses_entries_that_escape() {
        for name in ["../evil.py", "/etc/evil", "a/../../evil", "./../x"] {
            let dir = temp("escape");
            let err = extract(
                &zip_of(&[("main.py", b"", 0o644), (name, b"x", 0o644)]),
                &dir,
            )
            .unwrap_err();
            assert_eq!(err.to_string(), format!("Invalid module archive: {name}"));
            assert!(
                !dir.join("main.py").exists(),
                "nothing is written when any entry is refused"
            );
            fs::remove_dir_all(dir).unwrap();
        }
    }

    #[test]
    fn refuses_symlinks() {
        let mut buf = io::Cursor::new(Vec::new());
        let mut writer = zip::ZipWriter::new(&mut buf);
        writer
            .add_symlink("link", "/etc/passwd", SimpleFileOptions::default())
            .unwrap();
        writer.finish().unwrap();
        let dir = temp("symlink");
        let err = extract(&buf.into_inner(), &dir).unwrap_err();
        assert_eq!(err.to_string(), "Invalid module archive: link");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn refuses_bombs_and_garbage() {
        let dir = temp("bomb");
        // 8 MiB of zeros deflates to about 8 KiB; the cap here is 4 MiB.
        let bomb = zip_of(&[("zeros", &vec![0u8; 8 << 20], 0o644)]);
        assert!(bomb.len() < 64 << 10);
        assert!(matches!(
            extract_within(&bomb, &dir, 4 << 20),
            Err(ArchiveError::TooLarge)
        ));
        assert!(
            extract_within(&bomb, &dir, 8 << 20).is_ok(),
            "exactly at the cap is fine"
        );
        assert!(matches!(
            extract(b"PK\x03\x04 not really", &dir),
            Err(ArchiveError::Corrupt(_))
        ));
        assert!(matches!(extract(b"", &dir), Err(ArchiveError::Corrupt(_))));
        fs::remove_dir_all(dir).unwrap();
    }
}
