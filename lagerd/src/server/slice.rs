//! A short scheduler slice for the poller thread.
//!
//! The poller runs a few microseconds per wake-up and blocks again, but a
//! parked connection's request waits for it: on a box whose cores are busy
//! (workers serving keep-alive clients, a script, a compiler) its wake-up
//! otherwise waits for the running task's slice to end, which is most of a
//! `/metrics` scrape's time under load (BENCHMARKS.md, issue 16). Linux
//! 6.12's EEVDF scheduler lets a task ask for a shorter slice
//! (`sched_attr.sched_runtime` under `SCHED_OTHER`, no privilege needed),
//! and a task with a shorter slice preempts on wake-up. Workers keep the
//! default: giving them short slices too cost the lock path about a fifth
//! of its throughput in `scrapebench`. Older kernels ignore the field; any
//! failure leaves the thread as it was.

/// The slice asked for: the kernel's smallest is 100 µs.
const SLICE_NS: u64 = 100_000;

/// `struct sched_attr` (`include/uapi/linux/sched/types.h`), its first
/// version plus the utilization clamps (`SCHED_ATTR_SIZE_VER1`).
#[repr(C)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
    util_min: u32,
    util_max: u32,
}

/// Asks for a short slice for the calling thread, keeping its policy
/// (only `SCHED_OTHER` is touched) and its nice value.
pub fn request_short() {
    let Some(nice) = own_nice() else { return };
    // SAFETY: takes a plain integer; 0 names the calling thread.
    if unsafe { libc::sched_getscheduler(0) } != libc::SCHED_OTHER {
        return;
    }
    let attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        policy: libc::SCHED_OTHER as u32,
        flags: 0,
        nice,
        priority: 0,
        runtime: SLICE_NS,
        deadline: 0,
        period: 0,
        util_min: 0,
        util_max: 0,
    };
    // SAFETY: sched_setattr reads `attr.size` bytes from a live, properly
    // laid out local; 0 names the calling thread; flags 0.
    unsafe {
        libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0);
    }
}

/// The calling thread's nice value (sched_setattr sets it too, so it must
/// be passed on unchanged); `None` if it cannot be told.
fn own_nice() -> Option<i32> {
    // getpriority may return -1 as a value: only errno tells a failure.
    // SAFETY: errno is this thread's; getpriority takes plain integers, and
    // 0 names the calling thread (Linux keeps nice per thread).
    unsafe {
        *libc::__errno_location() = 0;
        let nice = libc::getpriority(libc::PRIO_PROCESS, 0);
        (nice != -1 || *libc::__errno_location() == 0).then_some(nice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own_sched(field: &str) -> Option<String> {
        // SAFETY: gettid takes nothing and cannot fail.
        let tid = unsafe { libc::syscall(libc::SYS_gettid) };
        let text = std::fs::read_to_string(format!("/proc/self/task/{tid}/sched")).ok()?;
        text.lines()
            .find(|l| l.split(':').next().map(str::trim) == Some(field))
            .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
    }

    fn kernel_at_least(major: u32, minor: u32) -> bool {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let mut parts = release.split(|c: char| !c.is_ascii_digit());
        let mut next = || {
            parts
                .next()
                .and_then(|p| p.parse::<u32>().ok())
                .unwrap_or(0)
        };
        (next(), next()) >= (major, minor)
    }

    #[test]
    fn a_thread_keeps_its_nice_value_and_gets_the_short_slice_where_the_kernel_has_one() {
        std::thread::spawn(|| {
            // SAFETY: plain integers; 0 is this thread.
            unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 5) };
            request_short();
            assert_eq!(own_nice(), Some(5), "the nice value survives");
            // Kernels before 6.12 ignore the field.
            if kernel_at_least(6, 12) {
                assert_eq!(own_sched("se.slice"), Some(SLICE_NS.to_string()));
            }
        })
        .join()
        .unwrap();
    }
}
