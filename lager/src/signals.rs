//! SIGINT, SIGTERM and SIGHUP while the CLI holds or waits for a lock
//! (locking.md B.4 step 4, B.6). The handlers only write the signal number
//! into a pipe, which is async-signal-safe; one watch thread reads it and
//! runs the action, where HTTP is allowed.
//!
//! During a `lager python` run the first signal must also restore the
//! default dispositions (runner.md §5.6), so that a second Ctrl+C kills
//! the CLI even while the kill request hangs: [`reset_on_delivery`] makes
//! the handler itself do that (sigaction is async-signal-safe).

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Once;

/// Write end of the self-pipe; -1 until installed.
static PIPE_WRITE: AtomicI32 = AtomicI32::new(-1);
/// Whether a delivered signal puts back the default dispositions.
static RESET_ON_DELIVERY: AtomicBool = AtomicBool::new(false);

const HANDLED: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

/// While `on`, the first SIGINT/SIGTERM/SIGHUP restores the default
/// dispositions of all three before it is passed on, so the next one
/// terminates the process.
pub fn reset_on_delivery(on: bool) {
    RESET_ON_DELIVERY.store(on, Ordering::SeqCst);
}

extern "C" fn on_signal(signo: libc::c_int) {
    // The interrupted code may be between a failing call and its read of
    // errno; nothing below may change what it reads.
    let _errno = SavedErrno::save();
    if RESET_ON_DELIVERY.load(Ordering::SeqCst) {
        for signo in HANDLED {
            // SAFETY: sigaction is async-signal-safe; a zeroed struct with
            // SIG_DFL is a valid argument.
            unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = libc::SIG_DFL;
                libc::sigemptyset(&mut sa.sa_mask);
                libc::sigaction(signo, &sa, std::ptr::null_mut());
            }
        }
    }
    let fd = PIPE_WRITE.load(Ordering::Relaxed);
    if fd >= 0 {
        let byte = signo as u8;
        // SAFETY: write(2) is async-signal-safe; the buffer is one local byte.
        unsafe { libc::write(fd, (&byte as *const u8).cast(), 1) };
    }
}

/// The thread's `errno`, put back on drop: a signal handler must leave it
/// as it found it.
///
/// Written twice on purpose: `lagerd/src/signals.rs` has the same guard for its
/// own handler. `common` is what the two binaries must agree on and links
/// no libc; a crate for fifteen lines of handler code would cost more to
/// follow than the copy, which a handler's reader wants beside it anyway.
struct SavedErrno(libc::c_int);

impl SavedErrno {
    fn save() -> SavedErrno {
        // SAFETY: __errno_location returns the calling thread's errno slot,
        // valid for the thread's lifetime; reading it is async-signal-safe.
        SavedErrno(unsafe { *libc::__errno_location() })
    }
}

impl Drop for SavedErrno {
    fn drop(&mut self) {
        // SAFETY: as in `save`: the same thread's own errno slot.
        unsafe { *libc::__errno_location() = self.0 };
    }
}

/// Routes SIGINT, SIGTERM and SIGHUP to `action(signo)` on a dedicated
/// thread. Idempotent: the first caller's action wins.
pub fn install(action: fn(i32)) {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: pipe2 fills the two-element array on success.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            log::warn!(
                "cannot install signal handlers: {}; Ctrl+C will not release the box lock",
                std::io::Error::last_os_error()
            );
            return;
        }
        let [read_fd, write_fd] = fds;
        PIPE_WRITE.store(write_fd, Ordering::Relaxed);
        let spawned = std::thread::Builder::new()
            .name("lager-signals".into())
            .spawn(move || loop {
                let mut byte = 0u8;
                // SAFETY: reads one byte into a local.
                let n = unsafe { libc::read(read_fd, (&mut byte as *mut u8).cast(), 1) };
                if n == 1 {
                    action(i32::from(byte));
                } else if n < 0
                    && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
                {
                    continue;
                } else {
                    return;
                }
            });
        if spawned.is_err() {
            log::warn!("cannot start the signal thread; Ctrl+C will not release the box lock");
            return;
        }
        for signo in HANDLED {
            // SAFETY: a zeroed sigaction with a plain handler and SA_RESTART is valid.
            unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
                sa.sa_flags = libc::SA_RESTART;
                libc::sigemptyset(&mut sa.sa_mask);
                libc::sigaction(signo, &sa, std::ptr::null_mut());
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue12_the_signal_handler_leaves_errno_as_it_found_it() {
        // SAFETY: this thread's own errno slot.
        unsafe { *libc::__errno_location() = libc::EAGAIN };
        // A descriptor that is not open: the handler's write fails with
        // EBADF, which must not leak into the interrupted code's errno.
        let installed = PIPE_WRITE.swap(1 << 20, Ordering::SeqCst);
        on_signal(libc::SIGUSR2);
        PIPE_WRITE.store(installed, Ordering::SeqCst);
        assert_eq!(
            std::io::Error::last_os_error().raw_os_error(),
            Some(libc::EAGAIN)
        );
    }
}
