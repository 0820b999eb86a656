//! Module zips (`lagerd/src/runner/archive.rs`, runner.md §2): whatever
//! the archive (corrupt, lying about sizes, `..` or absolute names,
//! symlinks, a bomb), extraction writes nothing outside its dir, makes no
//! link, stays within its size cap, and a refused entry leaves nothing.
#![no_main]

use std::fs;
use std::io::{Cursor, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;

use lager_fuzz::scratch_dir;
use lagerd::runner::archive::{extract_within, ArchiveError};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use zip::write::SimpleFileOptions;

/// The cap here; the daemon's is 256 MiB.
const CAP: u64 = 64 * 1024;

#[derive(Arbitrary, Debug)]
enum Input {
    /// Any bytes, as an upload may carry.
    Raw(Vec<u8>),
    /// A well-formed zip of chosen entries.
    Built(Vec<Entry>),
}

#[derive(Arbitrary, Debug)]
struct Entry {
    name: String,
    kind: Kind,
    mode: u32,
    deflate: bool,
}

#[derive(Arbitrary, Debug)]
enum Kind {
    File(Vec<u8>),
    /// `count` zeros: a small zip that expands far (up to 1 MiB).
    Zeros(u16, u8),
    Dir,
    Symlink(String),
}

fn build(entries: &[Entry]) -> Option<Vec<u8>> {
    let mut buf = Cursor::new(Vec::new());
    let mut writer = zip::ZipWriter::new(&mut buf);
    for entry in entries {
        let method = if entry.deflate {
            zip::CompressionMethod::Deflated
        } else {
            zip::CompressionMethod::Stored
        };
        let options = SimpleFileOptions::default()
            .compression_method(method)
            .unix_permissions(entry.mode);
        match &entry.kind {
            Kind::File(data) => {
                writer.start_file(entry.name.as_str(), options).ok()?;
                writer.write_all(data).ok()?;
            }
            Kind::Zeros(count, blocks) => {
                writer.start_file(entry.name.as_str(), options).ok()?;
                let zeros = vec![0u8; usize::from(*count)];
                for _ in 0..=(*blocks % 16) {
                    writer.write_all(&zeros).ok()?;
                }
            }
            Kind::Dir => writer.add_directory(entry.name.as_str(), options).ok()?,
            Kind::Symlink(target) => writer
                .add_symlink(entry.name.as_str(), target.as_str(), options)
                .ok()?,
        }
    }
    writer.finish().ok()?;
    Some(buf.into_inner())
}

/// Everything under `dir`: (path, is a symlink, size).
fn walk(dir: &Path, out: &mut Vec<(PathBuf, bool, u64)>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let meta = fs::symlink_metadata(entry.path()).expect("stat an extracted entry");
        out.push((entry.path(), meta.file_type().is_symlink(), meta.len()));
        if meta.is_dir() {
            walk(&entry.path(), out);
        }
    }
}

/// A name the extractor may write: relative and without `..`.
fn is_safe(name: &str) -> bool {
    let path = Path::new(name);
    !(name.contains('\\') && name.contains(".."))
        && path
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
        && path.components().any(|c| matches!(c, Component::Normal(_)))
}

fuzz_target!(|input: Input| {
    let bytes = match &input {
        Input::Raw(bytes) => bytes.clone(),
        Input::Built(entries) => match build(entries) {
            Some(bytes) => bytes,
            None => return,
        },
    };
    // The run dir sits two levels down, so `..` escapes land in `root`.
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    let root = ROOT.get_or_init(|| scratch_dir("zip_extract"));
    let _ = fs::remove_dir_all(root);
    let run_dir = root.join("a").join("run");
    fs::create_dir_all(&run_dir).expect("the run dir");

    let outcome = extract_within(&bytes, &run_dir, CAP);

    let mut found = Vec::new();
    walk(root, &mut found);
    let mut written = 0u64;
    for (path, is_link, size) in &found {
        assert!(!is_link, "no symlink is ever made: {path:?}");
        if path == &root.join("a") || path == &run_dir {
            continue;
        }
        assert!(
            path.starts_with(&run_dir),
            "written outside the run dir: {path:?}"
        );
        if !fs::metadata(path).is_ok_and(|m| m.is_dir()) {
            written += size;
        }
    }
    assert!(
        written <= CAP,
        "{written} bytes written past the {CAP}-byte cap"
    );

    match outcome {
        Ok(()) => {
            if let Input::Built(entries) = &input {
                for entry in entries {
                    assert!(is_safe(&entry.name), "accepted {:?}", entry.name);
                    assert!(!matches!(entry.kind, Kind::Symlink(_)), "accepted a link");
                }
            }
        }
        Err(ArchiveError::Unsafe(_) | ArchiveError::TooManyEntries(_)) => {
            assert_eq!(
                found.len(),
                2,
                "a refused archive leaves nothing: {found:?}"
            );
        }
        Err(_) => {}
    }
});
