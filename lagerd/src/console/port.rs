//! Finding and opening a console's port (console.md §1, §2).
//!
//! A USB address is resolved through sysfs every time it is opened, so an
//! adapter that re-enumerates as another `/dev/ttyUSBn` is found again; a
//! path is opened as given (a `/dev/serial/by-id` link follows its device
//! the same way). The port is opened exclusively (`flock` plus `TIOCEXCL`),
//! raw, with the net's settings; a port another process has open is left
//! alone and its holders named instead.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::path::{Path, PathBuf};

use crate::procscan::{self, Holder, Target};
use crate::sysfs::{self, UsbTty};

use super::params::{Flow, Parity, PortSpec, SerialParams, StopBits};

/// Where the OS facts come from; tests point these at fixture trees.
#[derive(Clone, Debug)]
pub struct Roots {
    pub sys: PathBuf,
    pub dev: PathBuf,
    pub proc: PathBuf,
}

/// A port found for a spec: the node to open and, for a USB adapter, its
/// facts.
#[derive(Clone, Debug)]
pub struct Found {
    pub node: PathBuf,
    pub usb: Option<UsbTty>,
}

/// The node a spec names right now, if any.
pub fn find(spec: &PortSpec, roots: &Roots) -> Option<Found> {
    match spec {
        PortSpec::Path(path) => {
            std::fs::metadata(path).ok()?;
            // The USB facts of whatever the path leads to, if it is a USB tty.
            let usb = std::fs::canonicalize(path)
                .ok()
                .and_then(|real| Some(real.file_name()?.to_str()?.to_string()))
                .and_then(|name| sysfs::usb_tty(&roots.sys, &name));
            Some(Found {
                node: path.clone(),
                usb,
            })
        }
        PortSpec::Usb { serial, interface } => {
            let usb = sysfs::usb_ttys(&roots.sys).into_iter().find(|tty| {
                tty.serial.trim().eq_ignore_ascii_case(serial)
                    && interface.is_none_or(|i| tty.interface_number == Some(i))
            })?;
            Some(Found {
                node: roots.dev.join(&usb.tty),
                usb: Some(usb),
            })
        }
    }
}

/// Other processes that have `node` open (this one excluded: under `--sim`
/// the simulated device keeps its own end of the pty open).
pub fn holders(node: &Path, roots: &Roots) -> Vec<Holder> {
    let real = std::fs::canonicalize(node).unwrap_or_else(|_| node.to_path_buf());
    let own = std::process::id().to_string();
    procscan::holders(&roots.proc, &Target::new(&real, Path::new("/dev")))
        .into_iter()
        .filter(|h| h.pid != own)
        .collect()
}

/// Why a port did not open.
#[derive(Debug)]
pub enum OpenError {
    /// No such node (unplugged, or between re-enumerations).
    Missing,
    /// Another process has it (`TIOCEXCL` or `flock`).
    Busy,
    Denied(io::Error),
    Other(io::Error),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::Missing => f.write_str("not present"),
            OpenError::Busy => f.write_str("held by another process"),
            OpenError::Denied(e) => write!(
                f,
                "permission denied ({e}); run lagerd as a user in the tty's group (dialout)"
            ),
            OpenError::Other(e) => write!(f, "{e}"),
        }
    }
}

/// An open, configured port. Non-blocking: the capture thread polls it,
/// writers wait for POLLOUT with a deadline.
pub struct Port {
    file: File,
}

impl Port {
    pub fn open(node: &Path, params: &SerialParams) -> Result<Port, OpenError> {
        let path = std::ffi::CString::new(node.as_os_str().as_encoded_bytes())
            .map_err(|_| OpenError::Missing)?;
        // SAFETY: a NUL-terminated path; the fd is owned by `file` below.
        let fd = unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC | libc::O_NONBLOCK,
            )
        };
        if fd < 0 {
            let error = io::Error::last_os_error();
            return Err(match error.raw_os_error() {
                Some(libc::ENOENT | libc::ENODEV | libc::ENXIO | libc::EIO) => OpenError::Missing,
                Some(libc::EBUSY) => OpenError::Busy,
                Some(libc::EACCES | libc::EPERM) => OpenError::Denied(error),
                _ => OpenError::Other(error),
            });
        }
        let port = Port {
            // SAFETY: `fd` was just opened and nothing else owns it.
            file: unsafe { File::from_raw_fd(fd) },
        };
        // Raw first, before anything else: a new tty opens cooked with echo
        // on, and bytes the device had queued (a USB adapter starts reading
        // during open()) are echoed back to it until raw mode applies. The
        // kernel can echo some even before open() returns (seen with
        // cdc_acm in the VM test); every serial tool shares that window, so
        // keep it as short as possible. The holder scan has just found the
        // port free, so this rarely touches a port that a cooperating
        // process flock()s in the same instant.
        configure(fd, params).map_err(OpenError::Other)?;
        // SAFETY: flock and ioctl on our own descriptor.
        if unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(OpenError::Busy);
        }
        // SAFETY: TIOCEXCL takes no argument; `fd` is our open tty.
        unsafe { libc::ioctl(fd, libc::TIOCEXCL) };
        if params.flow == Flow::DsrDtr {
            log::warn!(
                "{}: Linux termios has no DSR/DTR flow control; the port runs without it",
                node.display()
            );
        }
        // Nothing is flushed: bytes the device printed before we opened
        // are part of the console.
        Ok(port)
    }

    pub fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

impl Drop for Port {
    /// Ends the exclusive mode, so the next open (ours after a replug, or
    /// a person's once lagerd lets go) is not refused by a stale flag.
    fn drop(&mut self) {
        // SAFETY: an ioctl on our own, still open descriptor.
        unsafe { libc::ioctl(self.file.as_raw_fd(), libc::TIOCNXCL) };
    }
}

/// Applies `settings` to the port.
fn configure(fd: RawFd, params: &SerialParams) -> io::Result<()> {
    // SAFETY: termios is plain data, filled by tcgetattr before use.
    unsafe {
        let mut tio: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(fd, &mut tio) != 0 {
            return Err(io::Error::last_os_error());
        }
        let tio = settings(tio, params);
        if libc::tcsetattr(fd, libc::TCSANOW, &tio) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Raw mode with the net's settings. HUPCL is cleared so that closing the
/// port (lagerd stopping, a replug) does not drop DTR, which resets many
/// boards.
fn settings(mut tio: libc::termios, params: &SerialParams) -> libc::termios {
    // SAFETY: cfmakeraw and cfset*speed only edit the struct given.
    unsafe {
        libc::cfmakeraw(&mut tio);
        libc::cfsetispeed(&mut tio, params.speed());
        libc::cfsetospeed(&mut tio, params.speed());
    }
    tio.c_cflag |= libc::CLOCAL | libc::CREAD;
    tio.c_cflag &= !(libc::CSIZE
        | libc::PARENB
        | libc::PARODD
        | libc::CMSPAR
        | libc::CSTOPB
        | libc::CRTSCTS
        | libc::HUPCL);
    tio.c_cflag |= match params.bytesize {
        5 => libc::CS5,
        6 => libc::CS6,
        7 => libc::CS7,
        _ => libc::CS8,
    };
    tio.c_cflag |= match params.parity {
        Parity::None => 0,
        Parity::Even => libc::PARENB,
        Parity::Odd => libc::PARENB | libc::PARODD,
        Parity::Mark => libc::PARENB | libc::CMSPAR | libc::PARODD,
        Parity::Space => libc::PARENB | libc::CMSPAR,
    };
    if params.stopbits != StopBits::One {
        tio.c_cflag |= libc::CSTOPB;
    }
    tio.c_iflag &= !(libc::IXON | libc::IXOFF | libc::IXANY);
    match params.flow {
        Flow::RtsCts => tio.c_cflag |= libc::CRTSCTS,
        Flow::XonXoff => tio.c_iflag |= libc::IXON | libc::IXOFF,
        Flow::None | Flow::DsrDtr => {}
    }
    tio.c_cc[libc::VMIN] = 1;
    tio.c_cc[libc::VTIME] = 0;
    tio
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::serial::open_pty;

    fn roots() -> Roots {
        Roots {
            sys: PathBuf::from("/nonexistent-sys"),
            dev: PathBuf::from("/dev"),
            proc: PathBuf::from("/proc"),
        }
    }

    #[test]
    fn settings_carry_every_parameter() {
        // SAFETY: a zeroed termios is a valid (if useless) value.
        let base: libc::termios = unsafe { std::mem::zeroed() };
        let mut params = SerialParams {
            baudrate: 921_600,
            bytesize: 7,
            parity: Parity::Mark,
            stopbits: StopBits::Two,
            flow: Flow::XonXoff,
            ..SerialParams::default()
        };
        let tio = settings(base, &params);
        assert_eq!(tio.c_cflag & libc::CSIZE, libc::CS7);
        let mark = libc::PARENB | libc::CMSPAR | libc::PARODD;
        assert_eq!(tio.c_cflag & mark, mark);
        assert_ne!(tio.c_cflag & libc::CSTOPB, 0);
        assert_eq!(
            tio.c_iflag & (libc::IXON | libc::IXOFF),
            libc::IXON | libc::IXOFF
        );
        // SAFETY: cfgetospeed reads the termios we own.
        assert_eq!(unsafe { libc::cfgetospeed(&tio) }, libc::B921600);
        params.parity = Parity::Odd;
        params.flow = Flow::RtsCts;
        let tio = settings(tio, &params);
        assert_eq!(tio.c_cflag & mark, libc::PARENB | libc::PARODD);
        assert_ne!(tio.c_cflag & libc::CRTSCTS, 0);
        assert_eq!(tio.c_iflag & libc::IXON, 0, "one flow control at a time");
        assert_eq!(tio.c_cflag & libc::HUPCL, 0, "closing must not drop DTR");
        assert_eq!(tio.c_lflag & (libc::ICANON | libc::ECHO), 0, "raw");
    }

    #[test]
    fn opens_exclusively_and_raw() {
        let (_master, slave) = open_pty().unwrap();
        let params = SerialParams {
            stopbits: StopBits::Two,
            ..SerialParams::default()
        };
        let port = Port::open(Path::new(&slave), &params).unwrap();
        // SAFETY: termios is plain data (all zeroes is valid) and
        // tcgetattr fills it from our open descriptor.
        let tio = unsafe {
            let mut tio: libc::termios = std::mem::zeroed();
            assert_eq!(libc::tcgetattr(port.fd(), &mut tio), 0);
            tio
        };
        // A pty keeps CS8 without parity whatever is asked; the rest sticks.
        assert_ne!(tio.c_cflag & libc::CSTOPB, 0);
        assert_eq!(tio.c_cflag & libc::HUPCL, 0);
        assert_eq!(tio.c_lflag & (libc::ICANON | libc::ECHO), 0, "raw");
        assert!(matches!(
            Port::open(Path::new(&slave), &params),
            Err(OpenError::Busy)
        ));
        drop(port);
        assert!(Port::open(Path::new(&slave), &params).is_ok());
        assert!(matches!(
            Port::open(Path::new("/dev/ttyNOSUCH7"), &params),
            Err(OpenError::Missing)
        ));
    }

    #[test]
    fn a_path_is_found_while_it_exists_and_its_holders_named() {
        let (_master, slave) = open_pty().unwrap();
        let spec = PortSpec::Path(PathBuf::from(&slave));
        assert_eq!(find(&spec, &roots()).unwrap().node, PathBuf::from(&slave));
        assert!(find(&PortSpec::Path("/dev/ttyNOSUCH7".into()), &roots()).is_none());
        // Our own descriptors are never holders.
        let _mine = File::open(&slave).unwrap();
        assert!(holders(Path::new(&slave), &roots()).is_empty());
        let usb = PortSpec::Usb {
            serial: "X".into(),
            interface: None,
        };
        assert!(find(&usb, &roots()).is_none());
    }
}
