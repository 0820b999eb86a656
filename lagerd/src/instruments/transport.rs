//! The transport boundary (STYLE.md §4): bytes to and from one instrument,
//! with typed failures. Faults are classified here, where they happen, and
//! rendered in the errno form every lager client maps to a user message
//! (diagnose.md §6–§7: `[Errno 16] Resource busy`, `[Errno 19] No such
//! device`, `[Errno 110] Operation timed out`). `Transport` opens whichever
//! kind an address names: raw SCPI over TCP here, USB-TMC in `usbtmc.rs`.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use common::addr::Address;

use super::usbtmc::UsbTmcTransport;

/// Longest reply accepted from an instrument: a 101-point battery model
/// is a few KiB, so this only stops one that streams bytes without end.
pub const REPLY_MAX: usize = 1 << 20;

/// Why an instrument exchange failed.
#[derive(Debug)]
pub enum TransportError {
    /// Someone else has the instrument (EBUSY; for a socket instrument, a
    /// connection accepted and reset at once, as instruments.md §10.8 maps it).
    Busy { address: String, cause: BusyCause },
    /// The instrument is gone: unplugged, re-enumerated, connection reset.
    NoDevice { address: String },
    /// Nothing accepts connections at a socket instrument's address: it is
    /// off, rebooting or gone (ENODEV, §10.8; nobody holds it).
    Refused { address: String },
    /// Opened, but no answer within the I/O timeout.
    Timeout { address: String, after: Duration },
    /// The OS refused us the device node (EACCES: udev rules missing).
    PermissionDenied { address: String, node: String },
    /// Anything else, with the OS error.
    Io { address: String, error: io::Error },
}

/// Who has a busy instrument, as far as the transport can tell.
#[derive(Debug)]
pub enum BusyCause {
    /// Nothing more is known.
    Unknown,
    /// A socket instrument accepted the connection and reset it before
    /// answering anything: it serves one client, and has one.
    ResetOnOpen,
    /// A kernel driver (`usbtmc`) is bound to the USB-TMC interface.
    KernelDriver,
    /// Another process claimed the interface through its usbfs node; the
    /// session fills in the holders it finds in `/proc`.
    Claimed { node: String, holders: Vec<String> },
}

impl TransportError {
    /// The diagnose `error_class` of this failure (diagnose.md §3).
    pub fn class(&self) -> &'static str {
        match self {
            TransportError::Busy { .. } => "busy",
            TransportError::NoDevice { .. } | TransportError::Refused { .. } => "nodev",
            TransportError::Timeout { .. } => "timeout",
            TransportError::PermissionDenied { .. } | TransportError::Io { .. } => "other",
        }
    }
}

impl std::fmt::Display for TransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TransportError::Busy {
                address,
                cause: BusyCause::Unknown,
            } => {
                write!(f, "[Errno 16] Resource busy: {address} is held by another client; retry when it is released")
            }
            TransportError::Busy {
                address,
                cause: BusyCause::ResetOnOpen,
            } => write!(
                f,
                "[Errno 16] Resource busy: {address} accepted the connection and reset it at once, as an instrument that serves one client does while another has it; retry when it is released"
            ),
            TransportError::Busy {
                address,
                cause: BusyCause::KernelDriver,
            } => write!(
                f,
                "[Errno 16] Resource busy: {address} is bound to the kernel's usbtmc driver; install the usbtmc blacklist (lager box update) or run 'sudo rmmod usbtmc', then replug the instrument"
            ),
            TransportError::Busy {
                address,
                cause: BusyCause::Claimed { node, holders },
            } if holders.is_empty() => write!(
                f,
                "[Errno 16] Resource busy: {address} ({node}) is claimed by another process; run 'lager diagnose <net>' to name it, stop it, then retry"
            ),
            TransportError::Busy {
                address,
                cause: BusyCause::Claimed { node, holders },
            } => write!(
                f,
                "[Errno 16] Resource busy: {address} ({node}) is claimed by {}; stop it or retry when it exits",
                holders.join(", ")
            ),
TransportError::PermissionDenied { address, node } => write!(
                f,
                "[Errno 13] Permission denied: lagerd may not open {node} for {address}; install the udev rules for instruments (lager box update)"
            ),
            TransportError::NoDevice { address } => {
                write!(f, "[Errno 19] No such device: {address} is not there (unplugged or re-enumerating); check power and cabling")
            }
            TransportError::Refused { address } => write!(
                f,
                "[Errno 19] No such device: {address} refused the connection: nothing listens there (the instrument is off, rebooting or gone); check its power and network"
            ),
            TransportError::Timeout { address, after } => write!(
                f,
                "[Errno 110] Operation timed out: {address} did not answer within {:.1}s",
                after.as_secs_f64()
            ),
            TransportError::Io { address, error } => write!(f, "{address}: {error}"),
        }
    }
}

/// An open instrument connection of whichever kind its address names.
pub enum Transport {
    Tcp(TcpTransport),
    Usb(UsbTmcTransport),
    Serial(super::serial::SerialTransport),
}

impl Transport {
    pub fn open(address: &Address, timeout: Duration) -> Result<Transport, TransportError> {
        let key = address.canonical();
        match address {
            Address::Socket { host, port, .. } => {
                TcpTransport::open(&key, host, *port, timeout).map(Transport::Tcp)
            }
            Address::Usb {
                vid, pid, serial, ..
            } => UsbTmcTransport::open(&key, *vid, *pid, serial, timeout).map(Transport::Usb),
            Address::Serial { device } => {
                super::serial::SerialTransport::open(&key, device, timeout).map(Transport::Serial)
            }
        }
    }

    /// Sends a command that has no reply.
    pub fn write(&mut self, command: &str) -> Result<(), TransportError> {
        match self {
            Transport::Tcp(t) => t.write(command),
            Transport::Usb(t) => t.write(command),
            Transport::Serial(t) => t.write(command),
        }
    }

    /// Sends `command` and returns its reply, without its terminator.
    pub fn query(&mut self, command: &str) -> Result<String, TransportError> {
        match self {
            Transport::Tcp(t) => t.query(command),
            Transport::Usb(t) => t.query(command),
            Transport::Serial(t) => t.query(command),
        }
    }
}

/// Raw SCPI over TCP (`TCPIP0::host::port::SOCKET`): one command per `\n`
/// terminated line, one reply line per query.
pub struct TcpTransport {
    address: String,
    reader: BufReader<TcpStream>,
    timeout: Duration,
    /// Whether the instrument has answered anything on this connection. A
    /// reset before that is its refusal of the open (busy), not a device
    /// that went away mid-session (§10.8).
    answered: bool,
}

impl TcpTransport {
    pub fn open(
        address: &str,
        host: &str,
        port: u16,
        timeout: Duration,
    ) -> Result<TcpTransport, TransportError> {
        let io_error = |error| TransportError::Io {
            address: address.to_string(),
            error,
        };
        let target = (host, port)
            .to_socket_addrs()
            .map_err(io_error)?
            .next()
            .ok_or_else(|| io_error(io::Error::other(format!("{host} has no address"))))?;
        let stream = TcpStream::connect_timeout(&target, timeout)
            .map_err(|e| connect_failed(address, timeout, e))?;
        stream.set_read_timeout(Some(timeout)).map_err(io_error)?;
        stream.set_write_timeout(Some(timeout)).map_err(io_error)?;
        stream.set_nodelay(true).map_err(io_error)?;
        Ok(TcpTransport {
            address: address.to_string(),
            reader: BufReader::new(stream),
            timeout,
            answered: false,
        })
    }

    /// Sends a command that has no reply.
    pub fn write(&mut self, command: &str) -> Result<(), TransportError> {
        let stream = self.reader.get_mut();
        stream
            .write_all(format!("{command}\n").as_bytes())
            .map_err(|e| classify(&self.address, self.timeout, !self.answered, e))
    }

    /// Sends `command` and reads one reply line, without its terminator.
    pub fn query(&mut self, command: &str) -> Result<String, TransportError> {
        self.write(command)?;
        let mut line = String::new();
        let read = (&mut self.reader)
            .take(REPLY_MAX as u64 + 1)
            .read_line(&mut line);
        if line.len() > REPLY_MAX {
            return Err(TransportError::Io {
                address: self.address.clone(),
                error: io::Error::other(format!(
                    "a reply to {command} longer than {REPLY_MAX} bytes without a line end"
                )),
            });
        }
        match read {
            Ok(0) => Err(classify(
                &self.address,
                self.timeout,
                !self.answered,
                io::ErrorKind::UnexpectedEof.into(),
            )),
            Ok(_) => {
                self.answered = true;
                Ok(line.trim_end_matches(['\r', '\n']).to_string())
            }
            Err(e) => Err(classify(&self.address, self.timeout, !self.answered, e)),
        }
    }
}

/// Socket errors as the USB stack would report them (instruments.md §10.8):
/// refused is ENODEV (nothing listens), a reset or hang-up before the first
/// answer (`opening`) is EBUSY, one after it ENODEV.
/// Why a connect failed. A refusal is nothing listening (ENODEV). A reset
/// is an instrument that accepted the connection and reset it at once
/// (EBUSY, §10.8), which is also how it shows when the reset lands before
/// `connect` returns: seen under load, where it was reported as a device
/// that went away and never retried.
fn connect_failed(address: &str, timeout: Duration, error: io::Error) -> TransportError {
    classify(address, timeout, true, error)
}

fn classify(address: &str, timeout: Duration, opening: bool, error: io::Error) -> TransportError {
    let address = address.to_string();
    match error.kind() {
        io::ErrorKind::ConnectionRefused => TransportError::Refused { address },
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe
        | io::ErrorKind::UnexpectedEof
            if opening =>
        {
            TransportError::Busy {
                address,
                cause: BusyCause::ResetOnOpen,
            }
        }
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe
        | io::ErrorKind::UnexpectedEof => TransportError::NoDevice { address },
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => TransportError::Timeout {
            address,
            after: timeout,
        },
        _ => TransportError::Io { address, error },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpListener;

    const ADDR: &str = "TCPIP0::127.0.0.1::1::SOCKET";

    #[test]
    fn a_reset_during_connect_is_a_busy_instrument_not_a_gone_one() {
        let t = Duration::from_secs(1);
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        assert!(matches!(
            connect_failed(ADDR, t, reset),
            TransportError::Busy {
                cause: BusyCause::ResetOnOpen,
                ..
            }
        ));
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert!(matches!(
            connect_failed(ADDR, t, refused),
            TransportError::Refused { .. }
        ));
    }

    #[test]
    fn queries_a_socket_instrument() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            assert_eq!(line, "*IDN?\n");
            reader
                .get_mut()
                .write_all(b"KEITHLEY INSTRUMENTS,MODEL 2281S-20-6,4587429,1.0\r\n")
                .unwrap();
        });
        let mut transport =
            TcpTransport::open(ADDR, "127.0.0.1", port, Duration::from_secs(2)).unwrap();
        assert_eq!(
            transport.query("*IDN?").unwrap(),
            "KEITHLEY INSTRUMENTS,MODEL 2281S-20-6,4587429,1.0"
        );
        server.join().unwrap();
    }

    #[test]
    fn a_reply_without_end_is_refused_at_the_bound() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let block = vec![b'x'; 64 * 1024];
            // Far more than the bound, never a line end.
            for _ in 0..64 {
                if stream.write_all(&block).is_err() {
                    break;
                }
            }
            // Open until the client is done: closing with its command
            // unread would reset the connection under the test.
            let mut sink = [0u8; 64];
            while stream.read(&mut sink).is_ok_and(|n| n > 0) {}
        });
        let mut transport =
            TcpTransport::open(ADDR, "127.0.0.1", port, Duration::from_secs(5)).unwrap();
        let err = transport.query("*IDN?").unwrap_err();
        assert!(
            err.to_string().contains("longer than 1048576 bytes"),
            "{err}"
        );
        drop(transport);
        server.join().unwrap();
    }

    #[test]
    fn busy_usb_instruments_say_who_holds_them_and_what_to_do() {
        let busy = |cause| TransportError::Busy {
            address: "USB0::0x05e6::0x2281::1::INSTR".into(),
            cause,
        };
        let driver = busy(BusyCause::KernelDriver).to_string();
        assert!(
            driver.starts_with("[Errno 16] Resource busy: USB0::"),
            "{driver}"
        );
        assert!(
            driver.contains("usbtmc blacklist (lager box update)"),
            "{driver}"
        );
        let claimed = busy(BusyCause::Claimed {
            node: "/dev/bus/usb/001/004".into(),
            holders: vec!["pid 41 (python3)".into(), "pid 7 (lagerd)".into()],
        })
        .to_string();
        assert!(
            claimed.contains(
                "(/dev/bus/usb/001/004) is claimed by pid 41 (python3), pid 7 (lagerd); stop it"
            ),
            "{claimed}"
        );
        let unnamed = busy(BusyCause::Claimed {
            node: "/dev/bus/usb/001/004".into(),
            holders: Vec::new(),
        })
        .to_string();
        assert!(
            unnamed.contains("run 'lager diagnose <net>' to name it"),
            "{unnamed}"
        );
        assert_eq!(busy(BusyCause::KernelDriver).class(), "busy");
    }

    #[test]
    fn faults_become_errno_classes() {
        // Refused (§10.8): nothing listens there, so ENODEV; never worded
        // as held by someone. A freshly closed listener's port refuses.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = TcpTransport::open(ADDR, "127.0.0.1", port, Duration::from_secs(1))
            .err()
            .unwrap();
        assert_eq!(err.class(), "nodev");
        assert!(
            err.to_string().starts_with("[Errno 19] No such device"),
            "{err}"
        );
        assert!(!err.to_string().contains("held"), "{err}");

        // Accepted, then reset before any answer: the instrument serves
        // another client (EBUSY).
        let busy = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = busy.local_addr().unwrap().port();
        let server = std::thread::spawn(move || drop(busy.accept().unwrap()));
        let mut transport =
            TcpTransport::open(ADDR, "127.0.0.1", port, Duration::from_secs(2)).unwrap();
        server.join().unwrap();
        let err = transport.query("*IDN?").unwrap_err();
        assert_eq!(err.class(), "busy");
        assert!(
            err.to_string().starts_with("[Errno 16] Resource busy"),
            "{err}"
        );

        // Silent: accepts, never answers.
        let silent = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = silent.local_addr().unwrap().port();
        let mut transport =
            TcpTransport::open(ADDR, "127.0.0.1", port, Duration::from_millis(200)).unwrap();
        let err = transport.query("*IDN?").unwrap_err();
        assert_eq!(err.class(), "timeout");
        assert!(
            err.to_string()
                .starts_with("[Errno 110] Operation timed out"),
            "{err}"
        );

        // Hangs up mid-session, after answering once.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            reader.get_mut().write_all(b"KEITHLEY\n").unwrap();
            let mut byte = [0u8; 1];
            let _ = reader.get_mut().read(&mut byte);
        });
        let mut transport =
            TcpTransport::open(ADDR, "127.0.0.1", port, Duration::from_secs(2)).unwrap();
        assert_eq!(transport.query("*IDN?").unwrap(), "KEITHLEY");
        let err = transport.query("*IDN?").unwrap_err();
        server.join().unwrap();
        assert_eq!(err.class(), "nodev");
        assert!(
            err.to_string().starts_with("[Errno 19] No such device"),
            "{err}"
        );
    }
}
