//! SCPI over a serial port (`ASRL/dev/ttyUSB0::INSTR`; instruments.md §1):
//! a Rigol DP800's RS-232 port or a USB-serial adapter. Raw 8N1 at
//! 9600 baud (the instruments' factory setting), one `\n`-terminated line
//! per command and reply, as over TCP.
//!
//! A tty has no claim like a USB interface: the port is opened
//! exclusively (`TIOCEXCL`, so a second open fails with EBUSY for anyone
//! but root) and `flock`ed, so a cooperating process that holds it is
//! reported as EBUSY too. A port that goes away mid-session (adapter
//! unplugged, the far end of a pty closed) answers EIO: ENODEV here.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::time::{Duration, Instant};

use super::transport::{BusyCause, TransportError, REPLY_MAX};

pub struct SerialTransport {
    address: String,
    port: File,
    timeout: Duration,
    /// Bytes read past the last reply's terminator.
    pending: Vec<u8>,
}

impl SerialTransport {
    pub fn open(
        address: &str,
        device: &str,
        timeout: Duration,
    ) -> Result<SerialTransport, TransportError> {
        let path = std::ffi::CString::new(device).map_err(|_| TransportError::NoDevice {
            address: address.to_string(),
        })?;
        // SAFETY: a NUL-terminated path; the fd is owned by `port` below.
        let fd = unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC | libc::O_NONBLOCK,
            )
        };
        if fd < 0 {
            return Err(open_error(address, device, io::Error::last_os_error()));
        }
        // SAFETY: `fd` was just opened and is owned by nothing else.
        let port = unsafe { File::from_raw_fd(fd) };
        // SAFETY: plain ioctl/flock on our own descriptor.
        let locked = unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) } == 0;
        if !locked {
            return Err(TransportError::Busy {
                address: address.to_string(),
                cause: BusyCause::Unknown,
            });
        }
        // SAFETY: TIOCEXCL takes no argument; `fd` is the port this function owns.
        unsafe { libc::ioctl(fd, libc::TIOCEXCL) };
        raw_9600(fd).map_err(|error| TransportError::Io {
            address: address.to_string(),
            error,
        })?;
        // Flush whatever an earlier user left in the buffers.
        // SAFETY: tcflush on the descriptor owned by `port`; no memory is passed.
        unsafe { libc::tcflush(fd, libc::TCIOFLUSH) };
        Ok(SerialTransport {
            address: address.to_string(),
            port,
            timeout,
            pending: Vec::new(),
        })
    }

    /// Sends a command that has no reply.
    pub fn write(&mut self, command: &str) -> Result<(), TransportError> {
        let mut bytes = command.as_bytes().to_vec();
        bytes.push(b'\n');
        let deadline = Instant::now() + self.timeout;
        let mut sent = 0;
        while sent < bytes.len() {
            match self.port.write(&bytes[sent..]) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.wait(libc::POLLOUT, deadline)?
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io_error(e)),
            }
        }
        Ok(())
    }

    /// Sends `command` and reads one reply line, without its terminator.
    pub fn query(&mut self, command: &str) -> Result<String, TransportError> {
        self.write(command)?;
        let deadline = Instant::now() + self.timeout;
        loop {
            if let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=end).collect();
                let text = String::from_utf8_lossy(&line);
                return Ok(text.trim_end_matches(['\r', '\n']).to_string());
            }
            let mut buffer = [0u8; 512];
            match self.port.read(&mut buffer) {
                // A pty whose far end closed reads as EOF or EIO: gone.
                Ok(0) => return Err(self.gone()),
                Ok(n) if self.pending.len() + n > REPLY_MAX => {
                    self.pending.clear();
                    return Err(TransportError::Io {
                        address: self.address.clone(),
                        error: io::Error::other(format!(
                            "a reply to {command} longer than {REPLY_MAX} bytes without a line end"
                        )),
                    });
                }
                Ok(n) => self.pending.extend_from_slice(&buffer[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.wait(libc::POLLIN, deadline)?
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io_error(e)),
            }
        }
    }

    /// Waits until the port is ready for `events`, or the deadline.
    fn wait(&self, events: libc::c_short, deadline: Instant) -> Result<(), TransportError> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(TransportError::Timeout {
                address: self.address.clone(),
                after: self.timeout,
            });
        }
        let mut poll = libc::pollfd {
            fd: self.port.as_raw_fd(),
            events,
            revents: 0,
        };
        let millis = left.as_millis().clamp(1, i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd for the duration of the call.
        let ready = unsafe { libc::poll(&mut poll, 1, millis) };
        if ready > 0
            && poll.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0
            && poll.revents & events == 0
        {
            return Err(self.gone());
        }
        Ok(())
    }

    fn gone(&self) -> TransportError {
        TransportError::NoDevice {
            address: self.address.clone(),
        }
    }

    fn io_error(&self, error: io::Error) -> TransportError {
        match error.raw_os_error() {
            Some(libc::EIO | libc::ENODEV | libc::ENXIO) => self.gone(),
            _ => TransportError::Io {
                address: self.address.clone(),
                error,
            },
        }
    }
}

impl Drop for SerialTransport {
    /// Ends the exclusive mode, so the port opens again for a non-root
    /// lagerd even while another descriptor (a getty, a pty's owner)
    /// keeps the tty alive.
    fn drop(&mut self) {
        // SAFETY: an ioctl on our own, still open descriptor.
        unsafe { libc::ioctl(self.port.as_raw_fd(), libc::TIOCNXCL) };
    }
}

fn open_error(address: &str, device: &str, error: io::Error) -> TransportError {
    let address = address.to_string();
    match error.raw_os_error() {
        Some(libc::ENOENT | libc::ENODEV | libc::ENXIO | libc::EIO) => {
            TransportError::NoDevice { address }
        }
        Some(libc::EBUSY) => TransportError::Busy {
            address,
            cause: BusyCause::Unknown,
        },
        Some(libc::EACCES | libc::EPERM) => TransportError::PermissionDenied {
            address,
            node: device.to_string(),
        },
        _ => TransportError::Io { address, error },
    }
}

/// Raw mode, 8N1, 9600 baud, no flow control: bytes pass untouched.
pub fn raw_9600(fd: i32) -> io::Result<()> {
    // SAFETY: termios is plain data, filled by tcgetattr before use.
    unsafe {
        let mut tio: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(fd, &mut tio) != 0 {
            return Err(io::Error::last_os_error());
        }
        libc::cfmakeraw(&mut tio);
        tio.c_cflag |= libc::CLOCAL | libc::CREAD;
        tio.c_cflag &= !(libc::CRTSCTS | libc::CSTOPB | libc::PARENB);
        libc::cfsetispeed(&mut tio, libc::B9600);
        libc::cfsetospeed(&mut tio, libc::B9600);
        if libc::tcsetattr(fd, libc::TCSANOW, &tio) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::serial::open_pty;
    use std::io::{BufRead, BufReader};

    const ADDR: &str = "ASRL/dev/pts/x::INSTR";

    /// The far end: answers `*IDN?` and echoes nothing else.
    fn instrument(master: File) -> std::thread::JoinHandle<Vec<String>> {
        std::thread::spawn(move || {
            let mut writer = master.try_clone().unwrap();
            let mut seen = Vec::new();
            for line in BufReader::new(master).lines() {
                let Ok(line) = line else { break };
                if line == "*IDN?" {
                    writer
                        .write_all(b"RIGOL TECHNOLOGIES,DP832,DP8A0000,00.01\r\n")
                        .unwrap();
                }
                let done = line == "BYE";
                seen.push(line);
                if done {
                    break;
                }
            }
            seen
        })
    }

    #[test]
    fn commands_and_replies_are_lines_over_a_real_tty() {
        let (master, slave) = open_pty().unwrap();
        let far = instrument(master);
        let mut port = SerialTransport::open(ADDR, &slave, Duration::from_secs(2)).unwrap();
        port.write(":OUTP CH1,ON").unwrap();
        assert_eq!(
            port.query("*IDN?").unwrap(),
            "RIGOL TECHNOLOGIES,DP832,DP8A0000,00.01"
        );
        port.write("BYE").unwrap();
        assert_eq!(far.join().unwrap(), [":OUTP CH1,ON", "*IDN?", "BYE"]);
    }

    #[test]
    fn a_held_port_is_busy_and_a_missing_one_is_gone() {
        let (_master, slave) = open_pty().unwrap();
        let first = SerialTransport::open(ADDR, &slave, Duration::from_secs(1)).unwrap();
        let second = SerialTransport::open(ADDR, &slave, Duration::from_secs(1))
            .err()
            .unwrap();
        assert_eq!(second.class(), "busy", "{second}");
        drop(first);
        assert!(SerialTransport::open(ADDR, &slave, Duration::from_secs(1)).is_ok());
        let missing = SerialTransport::open(ADDR, "/dev/ttyNOSUCH9", Duration::from_secs(1))
            .err()
            .unwrap();
        assert_eq!(missing.class(), "nodev", "{missing}");
    }

    #[test]
    fn silence_times_out_and_a_closed_far_end_is_enodev() {
        let (master, slave) = open_pty().unwrap();
        let mut port = SerialTransport::open(ADDR, &slave, Duration::from_millis(200)).unwrap();
        let err = port.query("*IDN?").unwrap_err();
        assert_eq!(err.class(), "timeout", "{err}");
        drop(master);
        let err = port.query("*IDN?").unwrap_err();
        assert_eq!(err.class(), "nodev", "{err}");
        assert!(
            err.to_string().starts_with("[Errno 19] No such device"),
            "{err}"
        );
    }
}
