//! The transport boundary (STYLE.md §4): bytes to and from one instrument,
//! with typed failures. Faults are classified here, where they happen, and
//! rendered in the errno form every lager client maps to a user message
//! (diagnose.md §6–§7: `[Errno 16] Resource busy`, `[Errno 19] No such
//! device`, `[Errno 110] Operation timed out`).

use std::io::{self, BufRead, BufReader, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Why an instrument exchange failed.
#[derive(Debug)]
pub enum TransportError {
    /// Someone else has the instrument (EBUSY; a refused connection for a
    /// socket instrument, as instruments.md §10.8 maps it).
    Busy { address: String },
    /// The instrument is gone: unplugged, re-enumerated, connection reset.
    NoDevice { address: String },
    /// Opened, but no answer within the I/O timeout.
    Timeout { address: String, after: Duration },
    /// Anything else, with the OS error.
    Io { address: String, error: io::Error },
}

impl TransportError {
    /// The diagnose `error_class` of this failure (diagnose.md §3).
    pub fn class(&self) -> &'static str {
        match self {
            TransportError::Busy { .. } => "busy",
            TransportError::NoDevice { .. } => "nodev",
            TransportError::Timeout { .. } => "timeout",
            TransportError::Io { .. } => "other",
        }
    }
}

impl std::fmt::Display for TransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TransportError::Busy { address } => {
                write!(f, "[Errno 16] Resource busy: {address} is held by another client; retry when it is released")
            }
            TransportError::NoDevice { address } => {
                write!(f, "[Errno 19] No such device: {address} is not there (unplugged or re-enumerating); check power and cabling")
            }
            TransportError::Timeout { address, after } => write!(
                f,
                "[Errno 110] Operation timed out: {address} did not answer within {:.1}s",
                after.as_secs_f64()
            ),
            TransportError::Io { address, error } => write!(f, "{address}: {error}"),
        }
    }
}

/// Raw SCPI over TCP (`TCPIP0::host::port::SOCKET`): one command per `\n`
/// terminated line, one reply line per query.
pub struct TcpTransport {
    address: String,
    reader: BufReader<TcpStream>,
    timeout: Duration,
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
            .map_err(|e| classify(address, timeout, e))?;
        stream.set_read_timeout(Some(timeout)).map_err(io_error)?;
        stream.set_write_timeout(Some(timeout)).map_err(io_error)?;
        stream.set_nodelay(true).map_err(io_error)?;
        Ok(TcpTransport {
            address: address.to_string(),
            reader: BufReader::new(stream),
            timeout,
        })
    }

    /// Sends a command that has no reply.
    pub fn write(&mut self, command: &str) -> Result<(), TransportError> {
        let stream = self.reader.get_mut();
        stream
            .write_all(format!("{command}\n").as_bytes())
            .map_err(|e| classify(&self.address, self.timeout, e))
    }

    /// Sends `command` and reads one reply line, without its terminator.
    pub fn query(&mut self, command: &str) -> Result<String, TransportError> {
        self.write(command)?;
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => Err(TransportError::NoDevice {
                address: self.address.clone(),
            }),
            Ok(_) => Ok(line.trim_end_matches(['\r', '\n']).to_string()),
            Err(e) => Err(classify(&self.address, self.timeout, e)),
        }
    }
}

/// Socket errors as the USB stack would report them (instruments.md §10.8).
fn classify(address: &str, timeout: Duration, error: io::Error) -> TransportError {
    let address = address.to_string();
    match error.kind() {
        io::ErrorKind::ConnectionRefused => TransportError::Busy { address },
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
    fn faults_become_errno_classes() {
        // Refused: nothing listens on a port we hold bound but never accept on?
        // A freshly closed listener's port refuses.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = TcpTransport::open(ADDR, "127.0.0.1", port, Duration::from_secs(1))
            .err()
            .unwrap();
        assert_eq!(err.class(), "busy");
        assert!(err.to_string().starts_with("[Errno 16] Resource busy"));

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

        // Hangs up mid-exchange.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut byte = [0u8; 1];
            let _ = stream.read(&mut byte);
        });
        let mut transport =
            TcpTransport::open(ADDR, "127.0.0.1", port, Duration::from_secs(2)).unwrap();
        let err = transport.query("*IDN?").unwrap_err();
        server.join().unwrap();
        assert_eq!(err.class(), "nodev");
        assert!(
            err.to_string().starts_with("[Errno 19] No such device"),
            "{err}"
        );
    }
}
