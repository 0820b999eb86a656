//! SIGTERM/SIGINT delivery through a self-pipe: the handler only writes the
//! signal number, and the main thread acts on it outside signal context.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};

static PIPE_WRITE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(signal: libc::c_int) {
    let fd = PIPE_WRITE.load(Ordering::Relaxed);
    let byte = signal as u8;
    // write(2) is async-signal-safe; a full pipe just drops the byte.
    unsafe { libc::write(fd, (&byte as *const u8).cast(), 1) };
}

pub struct Signals {
    read: OwnedFd,
    _write: OwnedFd,
}

impl Signals {
    /// Routes `signals` to this `Signals` until the process exits.
    pub fn install(signals: &[libc::c_int]) -> io::Result<Signals> {
        let mut fds = [0; 2];
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        PIPE_WRITE.store(write.as_raw_fd(), Ordering::Relaxed);
        for &signal in signals {
            let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            action.sa_flags = libc::SA_RESTART;
            unsafe { libc::sigemptyset(&mut action.sa_mask) };
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
            if unsafe { libc::poll(&mut pfd, 1, -1) } <= 0 {
                continue;
            }
            let mut byte = 0u8;
            if unsafe { libc::read(self.read.as_raw_fd(), (&mut byte as *mut u8).cast(), 1) } == 1 {
                return libc::c_int::from(byte);
            }
        }
    }
}
