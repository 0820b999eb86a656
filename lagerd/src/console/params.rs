//! What a `uart` net says (console.md §1): which port (a USB adapter's
//! serial number, with the interface for multi-port adapters, or a device
//! path) and how to talk to it (baud rate, framing, flow control, the line
//! ending a typist sends). Parsed once at the edge; a bad value is refused
//! with the allowed ones named, before anything is saved.

use std::path::PathBuf;

use serde_json::{json, Map, Value};

/// The rates Linux termios names (`B50` … `B4000000`).
const BAUD_RATES: &[(u32, libc::speed_t)] = &[
    (50, libc::B50),
    (75, libc::B75),
    (110, libc::B110),
    (134, libc::B134),
    (150, libc::B150),
    (200, libc::B200),
    (300, libc::B300),
    (600, libc::B600),
    (1200, libc::B1200),
    (1800, libc::B1800),
    (2400, libc::B2400),
    (4800, libc::B4800),
    (9600, libc::B9600),
    (19200, libc::B19200),
    (38400, libc::B38400),
    (57600, libc::B57600),
    (115200, libc::B115200),
    (230400, libc::B230400),
    (460800, libc::B460800),
    (500000, libc::B500000),
    (576000, libc::B576000),
    (921600, libc::B921600),
    (1000000, libc::B1000000),
    (1152000, libc::B1152000),
    (1500000, libc::B1500000),
    (2000000, libc::B2000000),
    (2500000, libc::B2500000),
    (3000000, libc::B3000000),
    (3500000, libc::B3500000),
    (4000000, libc::B4000000),
];

const KEYS: &str =
    "baudrate, bytesize, parity, stopbits, flow (or one of xonxoff, rtscts, dsrdtr), line_ending";

/// Where a console's port is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortSpec {
    /// The USB adapter with this serial number (any case), and on a
    /// multi-port adapter the interface number (`bInterfaceNumber`).
    Usb {
        serial: String,
        interface: Option<u8>,
    },
    /// A device path, or a stable link to one (`/dev/serial/by-id/…`).
    Path(PathBuf),
}

impl PortSpec {
    pub fn parse(address: &str) -> Result<PortSpec, String> {
        let address = address.trim();
        if address.is_empty() {
            return Err("a uart net needs --address: the USB adapter's serial number (SERIAL or SERIAL:INTERFACE) or a device path such as /dev/ttyUSB0".into());
        }
        if address.contains(['\0', '\n']) || address.chars().any(char::is_whitespace) {
            return Err(format!(
                "uart address {address:?} may not contain spaces or control characters"
            ));
        }
        if address.starts_with('/') {
            return Ok(PortSpec::Path(PathBuf::from(address)));
        }
        if let Some((serial, interface)) = address.rsplit_once(':') {
            let number = interface
                .parse::<u8>()
                .ok()
                .filter(|_| interface.bytes().all(|b| b.is_ascii_digit()));
            return match number {
                Some(interface) if !serial.is_empty() => Ok(PortSpec::Usb {
                    serial: serial.to_string(),
                    interface: Some(interface),
                }),
                _ => Err(format!(
                    "uart address {address:?}: after the serial number, ':' must be followed by an interface number 0-255 (e.g. FT4232H01:2)"
                )),
            };
        }
        Ok(PortSpec::Usb {
            serial: address.to_string(),
            interface: None,
        })
    }
}

impl std::fmt::Display for PortSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PortSpec::Usb {
                serial,
                interface: None,
            } => write!(f, "the USB serial adapter with serial number {serial}"),
            PortSpec::Usb {
                serial,
                interface: Some(i),
            } => write!(
                f,
                "interface {i} of the USB serial adapter with serial number {serial}"
            ),
            PortSpec::Path(path) => write!(f, "{}", path.display()),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parity {
    None,
    Even,
    Odd,
    Mark,
    Space,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopBits {
    One,
    /// Only meaningful with 5 data bits; termios has one "more than one"
    /// setting (CSTOPB), which a UART sends as 1.5 bits at bytesize 5.
    OneAndHalf,
    Two,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    None,
    XonXoff,
    RtsCts,
    DsrDtr,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineEnding {
    Lf,
    CrLf,
    Cr,
}

impl LineEnding {
    pub fn name(self) -> &'static str {
        match self {
            LineEnding::Lf => "lf",
            LineEnding::CrLf => "crlf",
            LineEnding::Cr => "cr",
        }
    }
}

/// A console's serial settings, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SerialParams {
    pub baudrate: u32,
    pub bytesize: u8,
    pub parity: Parity,
    pub stopbits: StopBits,
    pub flow: Flow,
    pub line_ending: LineEnding,
}

impl Default for SerialParams {
    fn default() -> SerialParams {
        SerialParams {
            baudrate: 115_200,
            bytesize: 8,
            parity: Parity::None,
            stopbits: StopBits::One,
            flow: Flow::None,
            line_ending: LineEnding::Lf,
        }
    }
}

impl SerialParams {
    /// Reads a net's `params` object; missing keys take the defaults
    /// (115200 8N1, no flow control, LF).
    pub fn from_json(params: Option<&Value>) -> Result<SerialParams, String> {
        let mut out = SerialParams::default();
        let map = match params {
            None | Some(Value::Null) => return Ok(out),
            Some(Value::Object(map)) => map,
            Some(other) => {
                return Err(format!(
                    "params must be an object with any of {KEYS}, not {other}"
                ))
            }
        };
        let mut flows = Vec::new();
        for (key, value) in map {
            match key.as_str() {
                "baudrate" => out.baudrate = baudrate(value)?,
                "bytesize" => {
                    out.bytesize = match number(value) {
                        Some(n @ 5..=8) => n as u8,
                        _ => {
                            return Err(format!(
                                "bytesize {value} is not allowed; one of 5, 6, 7, 8"
                            ))
                        }
                    }
                }
                "parity" => out.parity = parity(value)?,
                "stopbits" => out.stopbits = stopbits(value)?,
                "flow" => flows.push(flow(value)?),
                "xonxoff" | "rtscts" | "dsrdtr" => match value {
                    Value::Bool(false) | Value::Null => {}
                    Value::Bool(true) => flows.push(flow(&Value::String(key.clone()))?),
                    other => return Err(format!("{key} must be true or false, not {other}")),
                },
                "line_ending" => out.line_ending = line_ending(value)?,
                other => {
                    return Err(format!(
                        "unknown serial parameter '{other}'; the parameters are {KEYS}"
                    ))
                }
            }
        }
        flows.retain(|f| *f != Flow::None);
        flows.dedup();
        match flows.as_slice() {
            [] => {}
            [one] => out.flow = *one,
            _ => {
                return Err("at most one flow control may be set: xonxoff, rtscts or dsrdtr".into())
            }
        }
        Ok(out)
    }

    /// The normalized object stored with the net (and shown to scripts).
    pub fn to_json(&self) -> Value {
        let parity = match self.parity {
            Parity::None => "none",
            Parity::Even => "even",
            Parity::Odd => "odd",
            Parity::Mark => "mark",
            Parity::Space => "space",
        };
        let stopbits = match self.stopbits {
            StopBits::One => json!(1),
            StopBits::OneAndHalf => json!(1.5),
            StopBits::Two => json!(2),
        };
        let flow = match self.flow {
            Flow::None => "none",
            Flow::XonXoff => "xonxoff",
            Flow::RtsCts => "rtscts",
            Flow::DsrDtr => "dsrdtr",
        };
        json!({
            "baudrate": self.baudrate,
            "bytesize": self.bytesize,
            "parity": parity,
            "stopbits": stopbits,
            "flow": flow,
            "line_ending": self.line_ending.name(),
        })
    }

    /// The termios speed constant of `baudrate` (validated on parse).
    pub fn speed(&self) -> libc::speed_t {
        BAUD_RATES
            .iter()
            .find(|(rate, _)| *rate == self.baudrate)
            .map_or(libc::B115200, |(_, speed)| *speed)
    }
}

fn number(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn baudrate(value: &Value) -> Result<u32, String> {
    number(value)
        .and_then(|n| BAUD_RATES.iter().find(|(rate, _)| u64::from(*rate) == n))
        .map(|(rate, _)| *rate)
        .ok_or_else(|| {
            let allowed: Vec<String> = BAUD_RATES.iter().map(|(r, _)| r.to_string()).collect();
            format!(
                "baudrate {value} is not allowed; one of {}",
                allowed.join(", ")
            )
        })
}

fn text(value: &Value) -> Option<String> {
    value.as_str().map(|s| s.trim().to_ascii_lowercase())
}

fn parity(value: &Value) -> Result<Parity, String> {
    // pyserial spells them N, E, O, M, S.
    Ok(match text(value).as_deref() {
        Some("none" | "n") => Parity::None,
        Some("even" | "e") => Parity::Even,
        Some("odd" | "o") => Parity::Odd,
        Some("mark" | "m") => Parity::Mark,
        Some("space" | "s") => Parity::Space,
        _ => {
            return Err(format!(
                "parity {value} is not allowed; one of none, even, odd, mark, space"
            ))
        }
    })
}

fn stopbits(value: &Value) -> Result<StopBits, String> {
    let given = match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    Ok(match given {
        Some(1.0) => StopBits::One,
        Some(1.5) => StopBits::OneAndHalf,
        Some(2.0) => StopBits::Two,
        _ => return Err(format!("stopbits {value} is not allowed; one of 1, 1.5, 2")),
    })
}

fn flow(value: &Value) -> Result<Flow, String> {
    Ok(match text(value).as_deref() {
        Some("none") => Flow::None,
        Some("xonxoff") => Flow::XonXoff,
        Some("rtscts") => Flow::RtsCts,
        Some("dsrdtr") => Flow::DsrDtr,
        _ => {
            return Err(format!(
                "flow {value} is not allowed; one of none, xonxoff, rtscts, dsrdtr"
            ))
        }
    })
}

fn line_ending(value: &Value) -> Result<LineEnding, String> {
    Ok(match text(value).as_deref() {
        Some("lf") => LineEnding::Lf,
        Some("crlf") => LineEnding::CrLf,
        Some("cr") => LineEnding::Cr,
        _ => {
            return Err(format!(
                "line_ending {value} is not allowed; one of lf, crlf, cr"
            ))
        }
    })
}

/// A `uart` net to save (`POST /nets`): its port address parses, its
/// params are valid; returns the object as stored, params normalized.
pub fn validate_net(name: &str, net: &Map<String, Value>) -> Result<Value, String> {
    let address = net.get("address").and_then(Value::as_str).unwrap_or("");
    PortSpec::parse(address)?;
    let params = SerialParams::from_json(net.get("params"))?;
    let instrument = net
        .get("instrument")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|i| !i.is_empty())
        .unwrap_or("uart");
    Ok(json!({
        "name": name,
        "role": "uart",
        "instrument": instrument,
        "address": address.trim(),
        "params": params.to_json(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(
            PortSpec::parse(" FT4232H01:2 "),
            Ok(PortSpec::Usb {
                serial: "FT4232H01".into(),
                interface: Some(2)
            })
        );
        assert_eq!(
            PortSpec::parse("A50285BI"),
            Ok(PortSpec::Usb {
                serial: "A50285BI".into(),
                interface: None
            })
        );
        assert_eq!(
            PortSpec::parse("/dev/serial/by-id/usb-FTDI-if00"),
            Ok(PortSpec::Path("/dev/serial/by-id/usb-FTDI-if00".into()))
        );
        for bad in ["", "  ", "A:", ":2", "A:x", "A:256", "a b", "A:+1"] {
            assert!(PortSpec::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn params_default_normalize_and_refuse_naming_the_allowed() {
        assert_eq!(
            SerialParams::from_json(None).unwrap(),
            SerialParams::default()
        );
        let given = json!({"baudrate": "921600", "bytesize": 7, "parity": "E", "stopbits": 1.5, "rtscts": true, "line_ending": "CRLF"});
        let params = SerialParams::from_json(Some(&given)).unwrap();
        assert_eq!(
            params.to_json(),
            json!({"baudrate": 921600, "bytesize": 7, "parity": "even", "stopbits": 1.5, "flow": "rtscts", "line_ending": "crlf"})
        );
        assert_eq!(params.speed(), libc::B921600);
        let refused = |params: Value| SerialParams::from_json(Some(&params)).unwrap_err();
        assert!(refused(json!({"baudrate": 12345})).contains("one of 50, 75,"));
        assert!(refused(json!({"baudrate": 12345})).contains("115200"));
        assert!(refused(json!({"bytesize": 9})).ends_with("one of 5, 6, 7, 8"));
        assert!(refused(json!({"parity": "x"})).ends_with("none, even, odd, mark, space"));
        assert!(refused(json!({"stopbits": 3})).ends_with("one of 1, 1.5, 2"));
        assert!(refused(json!({"flow": "hw"})).ends_with("none, xonxoff, rtscts, dsrdtr"));
        assert!(refused(json!({"line_ending": "lfcr"})).ends_with("lf, crlf, cr"));
        assert!(refused(json!({"xonxoff": true, "flow": "rtscts"})).starts_with("at most one"));
        assert!(refused(json!({"speed": 1})).contains("the parameters are baudrate"));
        assert!(refused(json!([1])).starts_with("params must be an object"));
        // The same flow twice is one flow.
        let params = json!({"rtscts": true, "flow": "rtscts"});
        assert_eq!(
            SerialParams::from_json(Some(&params)).unwrap().flow,
            Flow::RtsCts
        );
    }
}
