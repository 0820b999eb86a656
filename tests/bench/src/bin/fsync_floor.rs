//! fsync_floor: the raw cost of one durable small-file replace on a file
//! system, the floor under every lagerd lock write (issue 3, target 3).
//!
//! lagerd answers a lock write only once the new `lock.json` is on disk:
//! temp file, write, fsync, rename over the target, fsync the directory
//! (locking.md A.4). No server can reply faster than that sequence, so its
//! latency here, measured in the same run and on the same file system as
//! the state dir, is the baseline lagerd's write latency is judged against.
//! Each iteration does exactly that sequence with a ~200-byte record; the
//! tool reports p50/p90/p99/max.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use argh::FromArgs;
use lager_bench::stats::Latencies;
use lager_bench::{fail, main_with, metric, BenchError, WorkDir};

/// Time temp file + write + fsync + rename + directory fsync, repeatedly.
#[derive(FromArgs)]
struct Args {
    /// directory on the file system to measure (use the parent of the
    /// lagerd state dir); a scratch subdirectory is made and removed
    #[argh(option)]
    dir: PathBuf,
    /// how many replaces to time (default 500)
    #[argh(option, default = "500")]
    iterations: usize,
    /// prefix of the METRIC keys (default floor)
    #[argh(option, default = "String::from(\"floor\")")]
    label: String,
}

fn main() -> std::process::ExitCode {
    let args: Args = argh::from_env();
    main_with("fsync_floor", || run(args))
}

fn run(args: Args) -> Result<(), BenchError> {
    if args.iterations == 0 {
        return Err(fail!("--iterations must be above zero"));
    }
    let work = WorkDir::new(Some(&args.dir), "fsync-floor")?;
    let dir =
        File::open(work.path()).map_err(|e| fail!("cannot open {}: {e}", work.path().display()))?;
    let target = work.path().join("lock.json");
    // A record of the size lagerd writes (~180-200 bytes, 2-space indent).
    let record = format!(
        "{{\n  \"holder_type\": \"user\",\n  \"last_heartbeat\": \"2026-01-01T00:00:00Z\",\n  \
         \"locked\": true,\n  \"locked_at\": \"2026-01-01T00:00:00Z\",\n  \
         \"ttl_seconds\": null,\n  \"user\": \"bench-client-0\",\n  \"pad\": \"{}\"\n}}\n",
        "x".repeat(8)
    );
    eprintln!(
        "fsync_floor: {} replaces of a {}-byte file in {} ({})",
        args.iterations,
        record.len(),
        work.path().display(),
        fs_name(work.path())
    );
    // A few unmeasured rounds settle the directory and the journal.
    for i in 0..10 {
        replace(work.path(), &dir, &target, &record, i)?;
    }
    let mut samples = Vec::with_capacity(args.iterations);
    for i in 0..args.iterations {
        let started = Instant::now();
        replace(work.path(), &dir, &target, &record, i + 10)?;
        samples.push(started.elapsed().as_nanos() as u64);
    }
    let latencies = Latencies::new(samples);
    eprintln!("  {}", latencies.summary());
    latencies.emit(&args.label);
    metric(&format!("{}.bytes", args.label), record.len());
    Ok(())
}

/// The A.4 write sequence, nothing more.
fn replace(
    dir_path: &Path,
    dir: &File,
    target: &Path,
    record: &str,
    seq: usize,
) -> Result<(), BenchError> {
    let temp = dir_path.join(format!(".lock-{seq}.json"));
    let attempt = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&temp)?;
        file.write_all(record.as_bytes())?;
        file.sync_all()?;
        fs::rename(&temp, target)?;
        dir.sync_all()
    })();
    attempt.map_err(|e| fail!("durable replace in {} failed: {e}", dir_path.display()))
}

/// The file system type of `path`, for the report.
fn fs_name(path: &Path) -> String {
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return "unknown fs".into();
    };
    let mut info: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c_path.as_ptr(), &mut info) } != 0 {
        return "unknown fs".into();
    }
    let name = match info.f_type as u64 {
        0xEF53 => "ext4",
        0x0102_1994 => "tmpfs",
        0x5846_5342 => "xfs",
        0x9123_683E => "btrfs",
        0x794C_7630 => "overlayfs",
        0xF2F5_2010 => "f2fs",
        other => return format!("fs magic {other:#x}"),
    };
    name.into()
}
