//! Names on the wire that both sides spell the same way (spec: locking.md,
//! boxes.md, runner.md).

/// Default port of the lock, status and download routes (boxes.md §3).
pub const LOCK_PORT: u16 = 9000;
/// Default port of the `/python*` runner routes (boxes.md §3).
pub const RUNNER_PORT: u16 = 5000;
/// Request header naming the lock holder for `--enforce-locks` (locking.md A.10).
pub const HOLDER_HEADER: &str = "Lager-Holder";
/// Response header that marks the runner's framed stream (runner.md §3.1).
pub const OUTPUT_VERSION_HEADER: &str = "Lager-Output-Version";
/// Largest request body any lock route accepts (locking.md A.2).
pub const LOCK_BODY_LIMIT: usize = 64 * 1024;
/// Longest `user` a lock accepts, in bytes (locking.md A.5).
pub const USER_MAX_BYTES: usize = 1024;
/// Largest `wait_seconds` a lock request may ask for (locking.md A.8).
pub const WAIT_SECONDS_MAX: u64 = 300;
/// A monitor's `interval` (instruments.md §7.1: at least 0.1 s). The upper
/// end is lagerd's: an hour between readings, so no deadline overflows.
pub const MONITOR_INTERVAL: crate::bounded::Range =
    crate::bounded::Range::new(0.1, 3600.0, "seconds");
