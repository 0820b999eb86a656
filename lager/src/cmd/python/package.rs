//! What `lager python` uploads (runner.md §5.3): a single script as is, or
//! a deflate zip with `main.py` at its root built from a directory, the
//! `--add-file` files and the nearest project `.lager`'s `includes`.

use std::collections::HashMap;
use std::fs;
use std::io::{Cursor, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde_json::Value;
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

use crate::config::FILE_NAME;
use crate::error::CliError;
use crate::output;

/// Largest total of uncompressed file sizes in a module.
pub const MAX_FOLDER_BYTES: u64 = 40_000_000;
/// Largest zip uploaded.
pub const MAX_ZIP_BYTES: usize = 20_000_000;
/// Deepest directory nesting followed (guards symlink loops).
const MAX_DEPTH: usize = 64;

/// The `script` or `module` part.
#[derive(Debug)]
pub enum Payload {
    Script { filename: String, bytes: Vec<u8> },
    Module(Vec<u8>),
}

/// One file to put into the zip.
#[derive(Debug, Clone)]
struct Entry {
    name: String,
    source: PathBuf,
    mode: u32,
    size: u64,
}

fn read_error(path: &Path, e: impl std::fmt::Display) -> CliError {
    CliError::PackageRead {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// Builds the upload for `runnable` (a file or directory).
pub fn package(runnable: &Path, add_files: &[PathBuf]) -> Result<Payload, CliError> {
    let meta = fs::metadata(runnable).map_err(|e| read_error(runnable, e))?;
    let start_dir = if meta.is_dir() {
        runnable.to_path_buf()
    } else {
        runnable
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf()
    };
    let includes = find_includes(&start_dir)?;
    if !meta.is_dir() && add_files.is_empty() && includes.is_empty() {
        // A box takes at most 64 MiB (runner.md §1): no point reading more.
        let bytes =
            crate::readcap::read_file(runnable, 64 << 20).map_err(|e| read_error(runnable, e))?;
        let filename = runnable
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "script.py".to_string());
        return Ok(Payload::Script { filename, bytes });
    }

    let mut entries = Entries::default();
    if meta.is_dir() {
        if !runnable.join("main.py").is_file() {
            return Err(CliError::NoMainPy {
                dir: runnable.to_path_buf(),
            });
        }
        walk(runnable, "", &mut entries, &mut Vec::new())?;
    } else {
        entries.add(file_entry("main.py", runnable, &meta));
    }
    for file in add_files {
        let meta = fs::metadata(file).map_err(|e| read_error(file, e))?;
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| file.to_string_lossy().into_owned());
        if meta.is_dir() {
            walk(file, &format!("{name}/"), &mut entries, &mut Vec::new())?;
        } else {
            entries.add(file_entry(&name, file, &meta));
        }
    }
    for (dest, source) in &includes {
        let dest = dest.trim_matches('/');
        let prefix = if dest.is_empty() {
            String::new()
        } else {
            format!("{dest}/")
        };
        walk(source, &prefix, &mut entries, &mut Vec::new())?;
    }
    let total: u64 = entries.list.iter().map(|e| e.size).sum();
    if total > MAX_FOLDER_BYTES {
        return Err(CliError::FolderTooLarge);
    }
    let zip = write_zip(&entries.list)?;
    if zip.len() > MAX_ZIP_BYTES {
        return Err(CliError::ZipTooLarge);
    }
    Ok(Payload::Module(zip))
}

/// Zip entries by name; a later source for the same name replaces an
/// earlier one (an `--add-file` overrides a directory's file).
#[derive(Default)]
struct Entries {
    list: Vec<Entry>,
    index: HashMap<String, usize>,
}

impl Entries {
    fn add(&mut self, entry: Entry) {
        match self.index.get(&entry.name) {
            Some(&i) => self.list[i] = entry,
            None => {
                self.index.insert(entry.name.clone(), self.list.len());
                self.list.push(entry);
            }
        }
    }
}

fn file_entry(name: &str, source: &Path, meta: &fs::Metadata) -> Entry {
    Entry {
        name: name.to_string(),
        source: source.to_path_buf(),
        mode: meta.permissions().mode() & 0o7777,
        size: meta.len(),
    }
}

/// Adds every file under `dir` as `<prefix><relative path>`, following
/// symlinks, skipping `.git`, virtualenvs (dirs with `pyvenv.cfg`) and
/// `*.pyc`. `ancestors` holds (dev, ino) of the dirs above, so a symlink
/// loop is cut instead of followed forever.
fn walk(
    dir: &Path,
    prefix: &str,
    entries: &mut Entries,
    ancestors: &mut Vec<(u64, u64)>,
) -> Result<(), CliError> {
    let meta = fs::metadata(dir).map_err(|e| read_error(dir, e))?;
    let id = (meta.dev(), meta.ino());
    if ancestors.contains(&id) || ancestors.len() >= MAX_DEPTH {
        log::warn!("skipping {}: directory loop", dir.display());
        return Ok(());
    }
    if dir.join("pyvenv.cfg").exists() {
        return Ok(());
    }
    let mut children: Vec<(String, PathBuf)> = fs::read_dir(dir)
        .map_err(|e| read_error(dir, e))?
        .filter_map(|entry| entry.ok())
        .map(|entry| {
            (
                entry.file_name().to_string_lossy().into_owned(),
                entry.path(),
            )
        })
        .collect();
    children.sort();
    ancestors.push(id);
    for (name, path) in children {
        let meta = match fs::metadata(&path) {
            Ok(meta) => meta,
            Err(e) => {
                // A dangling symlink: nothing to ship.
                log::warn!("skipping {}: {e}", path.display());
                continue;
            }
        };
        if meta.is_dir() {
            if name == ".git" {
                continue;
            }
            walk(&path, &format!("{prefix}{name}/"), entries, ancestors)?;
        } else if meta.is_file() && !name.ends_with(".pyc") {
            entries.add(file_entry(&format!("{prefix}{name}"), &path, &meta));
        }
    }
    ancestors.pop();
    Ok(())
}

fn write_zip(entries: &[Entry]) -> Result<Vec<u8>, CliError> {
    let zip_error = |e: &dyn std::fmt::Display| CliError::ZipFailed(e.to_string());
    let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
    for entry in entries {
        let options = SimpleFileOptions::default()
            .compression_method(CompressionMethod::Deflated)
            .unix_permissions(entry.mode)
            .large_file(entry.size >= u64::from(u32::MAX));
        zip.start_file(entry.name.as_str(), options)
            .map_err(|e| zip_error(&e))?;
        let mut file = fs::File::open(&entry.source).map_err(|e| read_error(&entry.source, e))?;
        std::io::copy(&mut file, &mut zip).map_err(|e| read_error(&entry.source, e))?;
    }
    let mut cursor = zip.finish().map_err(|e| zip_error(&e))?;
    cursor.flush().map_err(|e| zip_error(&e))?;
    Ok(cursor.into_inner())
}

/// `includes` of the first `.lager` found walking up from `start`:
/// `(dest dir in zip, source dir)`, sources resolved against that file's
/// directory; a source that is missing or not a directory is skipped with
/// a warning.
fn find_includes(start: &Path) -> Result<Vec<(String, PathBuf)>, CliError> {
    let start = fs::canonicalize(start).unwrap_or_else(|_| start.to_path_buf());
    let Some(file) = start
        .ancestors()
        .map(|dir| dir.join(FILE_NAME))
        .find(|path| path.is_file())
    else {
        return Ok(Vec::new());
    };
    let text = crate::readcap::read_file(&file, 4 << 20)
        .and_then(|bytes| {
            String::from_utf8(bytes).map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, "it is not UTF-8 text")
            })
        })
        .map_err(|e| CliError::ConfigRead {
            path: file.clone(),
            reason: e.to_string(),
        })?;
    let json: Value = serde_json::from_str(&text).map_err(|e| CliError::ConfigInvalid {
        path: file.clone(),
        reason: e.to_string(),
    })?;
    let Some(map) = json
        .get("includes")
        .or_else(|| json.get("INCLUDES"))
        .and_then(Value::as_object)
    else {
        return Ok(Vec::new());
    };
    let base = file.parent().unwrap_or(Path::new("/"));
    let mut includes = Vec::new();
    for (dest, source) in map {
        let Some(source) = source.as_str() else {
            output::warn(&format!(
                "Warning: include '{dest}' in {} is not a path; skipped",
                file.display()
            ));
            continue;
        };
        let path = base.join(source);
        if path.is_dir() {
            includes.push((dest.clone(), path));
        } else {
            output::warn(&format!(
                "Warning: include '{dest}' source {} is missing or not a directory; skipped",
                path.display()
            ));
        }
    }
    Ok(includes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    struct Tmp(PathBuf);
    impl Tmp {
        fn new(tag: &str) -> Tmp {
            let path = std::env::temp_dir().join(format!(
                "lager-package-{tag}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = fs::remove_dir_all(&path);
            fs::create_dir_all(&path).expect("mkdir");
            Tmp(path)
        }
        fn write(&self, rel: &str, text: &str) -> PathBuf {
            let path = self.0.join(rel);
            fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            fs::write(&path, text).expect("write");
            path
        }
    }
    impl Drop for Tmp {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn unzip(bytes: &[u8]) -> Vec<(String, String, Option<u32>)> {
        let mut archive = zip::ZipArchive::new(Cursor::new(bytes)).expect("zip");
        let mut out = Vec::new();
        for i in 0..archive.len() {
            let mut file = archive.by_index(i).expect("entry");
            assert_eq!(file.compression(), CompressionMethod::Deflated);
            let mut text = String::new();
            file.read_to_string(&mut text).expect("read");
            out.push((
                file.name().expect("name").to_string(),
                text,
                file.unix_mode(),
            ));
        }
        out.sort();
        out
    }

    #[test]
    fn single_file_is_a_script() {
        let tmp = Tmp::new("single");
        let script = tmp.write("proj/t.py", "print(1)\n");
        match package(&script, &[]).expect("package") {
            Payload::Script { filename, bytes } => {
                assert_eq!(filename, "t.py");
                assert_eq!(bytes, b"print(1)\n");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn directory_zip_skips_git_venvs_and_pyc() {
        let tmp = Tmp::new("dir");
        let dir = tmp.0.join("proj");
        tmp.write("proj/main.py", "import lib\n");
        let run = tmp.write("proj/run.sh", "#!/bin/sh\n");
        fs::set_permissions(&run, fs::Permissions::from_mode(0o755)).expect("chmod");
        tmp.write("proj/lib/__init__.py", "x = 1\n");
        tmp.write("proj/lib/x.pyc", "junk");
        tmp.write("proj/.git/HEAD", "ref");
        tmp.write("proj/venv/pyvenv.cfg", "home = /usr");
        tmp.write("proj/venv/lib/site.py", "");
        std::os::unix::fs::symlink(&dir, dir.join("loop")).expect("symlink");
        let extra = tmp.write("data.txt", "data");
        let Payload::Module(bytes) = package(&dir, &[extra]).expect("package") else {
            panic!("expected a module");
        };
        let files = unzip(&bytes);
        let names: Vec<&str> = files.iter().map(|f| f.0.as_str()).collect();
        assert_eq!(
            names,
            ["data.txt", "lib/__init__.py", "main.py", "run.sh"],
            "{files:?}"
        );
        let run = files.iter().find(|f| f.0 == "run.sh").expect("run.sh");
        assert_eq!(run.2.map(|m| m & 0o777), Some(0o755));
    }

    #[test]
    fn file_with_add_file_and_includes_becomes_main_py() {
        let tmp = Tmp::new("includes");
        tmp.write(
            "proj/.lager",
            r#"{"includes": {"libs/common": "../shared", "gone": "nowhere"}}"#,
        );
        tmp.write("shared/util.py", "def f(): pass\n");
        let script = tmp.write("proj/tests/t.py", "print(2)\n");
        let Payload::Module(bytes) = package(&script, &[]).expect("package") else {
            panic!("expected a module");
        };
        let files = unzip(&bytes);
        assert_eq!(files[0].0, "libs/common/util.py");
        assert_eq!(files[1].0, "main.py");
        assert_eq!(files[1].1, "print(2)\n");
    }

    #[test]
    fn directory_without_main_py_and_size_limits() {
        let tmp = Tmp::new("limits");
        tmp.write("proj/other.py", "");
        assert!(matches!(
            package(&tmp.0.join("proj"), &[]),
            Err(CliError::NoMainPy { .. })
        ));
        tmp.write("big/main.py", "");
        let big = fs::File::create(tmp.0.join("big/blob")).expect("create");
        big.set_len(MAX_FOLDER_BYTES + 1).expect("sparse");
        let err = package(&tmp.0.join("big"), &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Folder content exceeds max size of 40,000,000 bytes"
        );
    }
}
