//! A simulated instrument behind a pseudo-terminal: the serial front end of
//! the simulators (`ASRL/dev/pts/N::INSTR`), as a USB-serial adapter would
//! present a Rigol DP800's RS-232 port. The same `Model` as over TCP; the
//! serial transport cannot tell a pty from a real port.
//!
//! One fault, through a control port (one line in, one line out): `drop`
//! closes the far end, so lagerd's session sees EIO (ENODEV), as when an
//! adapter is pulled. A dropped simulator stays gone.

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use super::Model;
use crate::instruments::serial::raw_9600;

pub struct SerialSimulator {
    /// The pty's slave path, e.g. `/dev/pts/3`.
    pub device: String,
    pub control: SocketAddr,
}

impl SerialSimulator {
    pub fn start(mut model: Box<dyn Model>) -> io::Result<SerialSimulator> {
        let (master, device) = open_pty()?;
        // Hold the slave open in raw mode: nothing is echoed back before
        // lagerd opens it, and the master never reads EIO between sessions.
        let slave = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&device)?;
        raw_9600(slave.as_raw_fd())?;
        let control = TcpListener::bind("127.0.0.1:0")?;
        let simulator = SerialSimulator {
            device,
            control: control.local_addr()?,
        };
        let dropped = Arc::new(AtomicBool::new(false));
        let serving = dropped.clone();
        thread::Builder::new()
            .name("sim-serial".into())
            .spawn(move || {
                serve(master, model.as_mut(), &serving);
                drop(slave);
            })?;
        thread::Builder::new()
            .name("sim-serial-control".into())
            .spawn(move || {
                for stream in control.incoming().flatten() {
                    let Ok(mut writer) = stream.try_clone() else {
                        continue;
                    };
                    let mut reader = BufReader::new(stream);
                    while let Ok(Some(line)) = super::next_line(&mut reader) {
                        let line = String::from_utf8_lossy(&line);
                        let reply = match line.trim() {
                            "drop" => {
                                dropped.store(true, Ordering::SeqCst);
                                "ok".to_string()
                            }
                            other => format!("error: unknown command '{other}' (drop)"),
                        };
                        let _ = writeln!(writer, "{reply}");
                    }
                }
            })?;
        Ok(simulator)
    }

    /// The address nets use for it.
    pub fn visa_address(&self) -> String {
        format!("ASRL{}::INSTR", self.device)
    }
}

/// Reads command lines from the master and writes the model's replies,
/// until `drop` closes it.
fn serve(mut master: File, model: &mut dyn Model, dropped: &AtomicBool) {
    let mut pending = Vec::new();
    let mut buffer = [0u8; 512];
    while !dropped.load(Ordering::SeqCst) {
        let mut poll = libc::pollfd {
            fd: master.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd; a short timeout to notice `drop`.
        if unsafe { libc::poll(&mut poll, 1, 50) } <= 0 {
            continue;
        }
        let n = match master.read(&mut buffer) {
            Ok(n) if n > 0 => n,
            _ => continue,
        };
        pending.extend_from_slice(&buffer[..n]);
        if pending.len() > super::LINE_MAX && !pending.contains(&b'\n') {
            // No line end in sight: what a real instrument would drop too.
            pending.clear();
        }
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line).trim().to_string();
            if line.is_empty() {
                continue;
            }
            if let Some(reply) = model.execute(&line) {
                let _ = master.write_all(format!("{reply}\n").as_bytes());
            }
        }
    }
}
/// A pseudo-terminal pair: the master for the far end, the slave's path.
/// The simulator's serial front end and the tests use it as the other end
/// of a serial cable.
pub fn open_pty() -> io::Result<(File, String)> {
    // SAFETY: posix_openpt/grantpt/unlockpt/ptsname_r on our own fd, with
    // a buffer of the size given.
    unsafe {
        let master = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        if master < 0 {
            return Err(io::Error::last_os_error());
        }
        let file = File::from_raw_fd(master);
        if libc::grantpt(master) != 0 || libc::unlockpt(master) != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut name = [0 as libc::c_char; 128];
        if libc::ptsname_r(master, name.as_mut_ptr(), name.len()) != 0 {
            return Err(io::Error::last_os_error());
        }
        let path = std::ffi::CStr::from_ptr(name.as_ptr())
            .to_string_lossy()
            .into_owned();
        Ok((file, path))
    }
}
