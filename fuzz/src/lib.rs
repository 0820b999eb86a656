//! What the fuzz targets share: scratch dirs on tmpfs (the lock and zip
//! targets write files on every run; tmpfs makes fsync cheap and keeps
//! the disk out of it) and cutting a byte stream at fuzzer-chosen points
//! (every incremental parser must give the same answer however its input
//! arrives).

use std::fs;
use std::path::PathBuf;

/// A fresh, empty dir for this process's runs of `target`: under
/// `LAGER_FUZZ_SCRATCH` when set (`scripts/fuzz.sh` sets it to a dir of
/// its own and removes that, so two runs never clean up each other's
/// state), else under `/dev/shm` when it is there.
pub fn scratch_dir(target: &str) -> PathBuf {
    let shm = PathBuf::from("/dev/shm");
    let base = match std::env::var_os("LAGER_FUZZ_SCRATCH") {
        Some(dir) => PathBuf::from(dir),
        None if shm.is_dir() => shm,
        None => std::env::temp_dir(),
    };
    let dir = base.join(format!("lager-fuzz-{target}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("a scratch dir for the fuzz target");
    dir
}

/// Splits `bytes` into pieces whose lengths cycle through `cuts` (a zero
/// cut is a one-byte piece), so a parser can be fed the same stream in
/// pieces as a socket might deliver it.
pub fn pieces<'a>(bytes: &'a [u8], cuts: &[u8]) -> Vec<&'a [u8]> {
    if cuts.is_empty() {
        return vec![bytes];
    }
    let mut out = Vec::new();
    let mut rest = bytes;
    for cut in cuts.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let n = usize::from(*cut).clamp(1, rest.len());
        let (piece, tail) = rest.split_at(n);
        out.push(piece);
        rest = tail;
    }
    out
}
