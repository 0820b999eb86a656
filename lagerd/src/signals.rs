//! SIGTERM/SIGINT delivery through a self-pipe: the handler only writes the
//! signal number, and the main thread acts on it outside signal context.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};

static PIPE_WRITE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(signal: libc::c_int) {
    // The interrupted code may be between a failing call and its read of
    // errno; the write below must not change what it reads.
    let _errno = SavedErrno::save();
    let fd = PIPE_WRITE.load(Ordering::Relaxed);
    let byte = signal as u8;
    // SAFETY: write(2) is async-signal-safe and reads one byte from a local;
    // a full pipe or a not-yet-set fd (-1) just fails.
    unsafe { libc::write(fd, (&byte as *const u8).cast(), 1) };
}

/// The thread's `errno`, put back on drop: a signal handler must leave it
/// as it found it.
///
/// Written twice on purpose: `lager/src/signals.rs` has the same guard for its
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

pub struct Signals {
    read: OwnedFd,
    _write: OwnedFd,
}

impl Signals {
    /// Routes `signals` to this `Signals` until the process exits.
    pub fn install(signals: &[libc::c_int]) -> io::Result<Signals> {
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two descriptors into the two-element array.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both descriptors are open and ours alone.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        PIPE_WRITE.store(write.as_raw_fd(), Ordering::Relaxed);
        for &signal in signals {
            // SAFETY: sigaction is a plain C struct; all zeroes is a valid
            // value (no handler, empty flags) that is filled in below.
            let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            action.sa_flags = libc::SA_RESTART;
            // SAFETY: initialises the mask inside the local `action`.
            unsafe { libc::sigemptyset(&mut action.sa_mask) };
            // SAFETY: `action` is fully initialised and `on_signal` only does
            // async-signal-safe work; the old action is not asked for.
            if unsafe { libc::sigaction(signal, &action, std::ptr::null_mut()) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(Signals {
            read,
            _write: write,
        })
    }

    /// Blocks until one of the installed signals arrives; returns its number.
    pub fn wait(&self) -> libc::c_int {
        loop {
            let mut pfd = libc::pollfd {
                fd: self.read.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd on the stack, and the count says one.
            if unsafe { libc::poll(&mut pfd, 1, -1) } <= 0 {
                continue;
            }
            let mut byte = 0u8;
            // SAFETY: reads at most one byte into a local, from our own pipe.
            if unsafe { libc::read(self.read.as_raw_fd(), (&mut byte as *mut u8).cast(), 1) } == 1 {
                return libc::c_int::from(byte);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue12_the_signal_handler_leaves_errno_as_it_found_it() {
        // SAFETY: this thread's own errno slot.
        unsafe { *libc::__errno_location() = libc::EAGAIN };
        // With no pipe installed (fd -1) the handler's write fails with
        // EBADF, which must not leak into the interrupted code's errno.
        on_signal(libc::SIGTERM);
        assert_eq!(
            io::Error::last_os_error().raw_os_error(),
            Some(libc::EAGAIN)
        );
    }
}
