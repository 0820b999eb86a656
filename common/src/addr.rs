//! VISA instrument addresses (instruments.md §1): parsed once at the edge,
//! then used by their canonical text everywhere (session pool, per-address
//! lock, device lock file), so `0x05E6` and `0x05e6` are one instrument.

/// A parsed instrument address.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Address {
    /// `USB<n>::<vid>::<pid>::<serial>::INSTR`: USB-TMC.
    Usb {
        board: u32,
        vid: u16,
        pid: u16,
        serial: String,
    },
    /// `TCPIP<n>::<host>::<port>::SOCKET`: raw SCPI over TCP.
    Socket { board: u32, host: String, port: u16 },
    /// `ASRL<device>::INSTR` (a bare `/dev/tty…` is wrapped to this).
    Serial { device: String },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AddressError {
    Empty,
    /// Not one of the supported forms; the text as given.
    Unrecognised(String),
    /// `TCPIP::host::INSTR` (VXI-11), which lager does not speak.
    Vxi11(String),
    BadUsbId(String),
    BadPort(String),
}

impl std::fmt::Display for AddressError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AddressError::Empty => f.write_str("instrument address is empty"),
            AddressError::Unrecognised(text) => write!(
                f,
                "not an instrument address: {text:?}; expected USB0::0xVID::0xPID::SERIAL::INSTR, TCPIP0::HOST::PORT::SOCKET or ASRL/dev/ttyX::INSTR"
            ),
            AddressError::Vxi11(text) => write!(
                f,
                "{text:?} is a VXI-11 (LAN INSTR) address, which lager does not support; use the instrument's raw socket: TCPIP0::HOST::PORT::SOCKET (often port 5025)"
            ),
            AddressError::BadUsbId(text) => write!(
                f,
                "bad USB vendor/product id in {text:?}: each must be four hex digits with a leading 0 or 0x, e.g. 0x05E6"
            ),
            AddressError::BadPort(text) => write!(f, "bad TCP port in {text:?}: expected 1-65535"),
        }
    }
}

impl Address {
    pub fn parse(text: &str) -> Result<Address, AddressError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(AddressError::Empty);
        }
        if text.starts_with("/dev/") {
            // `::` separates VISA fields, so a path holding one (or ending
            // in `:`, which would run into the `::INSTR` suffix) has no
            // canonical form that reads back as itself: `/dev/tty0::INSTR`
            // is a typo for `ASRL/dev/tty0::INSTR`, not a device. Single
            // colons stay legal (`/dev/serial/by-path/pci-0000:00:14.0-…`).
            if text.contains("::") || text.ends_with(':') {
                return Err(AddressError::Unrecognised(text.to_string()));
            }
            return Ok(Address::Serial {
                device: text.to_string(),
            });
        }
        let parts: Vec<&str> = text.split("::").collect();
        let keyword = parts[0].to_ascii_uppercase();
        let board = |prefix: &str| -> Option<u32> {
            let digits = &keyword[prefix.len()..];
            if digits.is_empty() {
                Some(0)
            } else {
                digits.parse().ok()
            }
        };
        let last = parts
            .last()
            .map(|p| p.to_ascii_uppercase())
            .unwrap_or_default();
        let unrecognised = || AddressError::Unrecognised(text.to_string());
        if keyword.starts_with("USB") && parts.len() == 5 && last == "INSTR" {
            let board = board("USB").ok_or_else(unrecognised)?;
            let id =
                |part: &str| usb_id(part).ok_or_else(|| AddressError::BadUsbId(text.to_string()));
            return Ok(Address::Usb {
                board,
                vid: id(parts[1])?,
                pid: id(parts[2])?,
                serial: parts[3].to_string(),
            });
        }
        if keyword.starts_with("TCPIP") {
            let board = board("TCPIP").ok_or_else(unrecognised)?;
            return match (parts.len(), last.as_str()) {
                (4, "SOCKET") if !parts[1].is_empty() => {
                    let port = parts[2].parse().ok().filter(|p| *p > 0);
                    let port = port.ok_or_else(|| AddressError::BadPort(text.to_string()))?;
                    Ok(Address::Socket {
                        board,
                        host: parts[1].to_string(),
                        port,
                    })
                }
                (3 | 4, "INSTR") => Err(AddressError::Vxi11(text.to_string())),
                _ => Err(unrecognised()),
            };
        }
        if keyword.starts_with("ASRL") && parts.len() == 2 && last == "INSTR" && parts[0].len() > 4
        {
            return Ok(Address::Serial {
                device: parts[0][4..].to_string(),
            });
        }
        Err(unrecognised())
    }

    /// The identity key: keywords upper-case, USB ids lower-case `0x` hex,
    /// serial and host as given.
    pub fn canonical(&self) -> String {
        match self {
            Address::Usb {
                board,
                vid,
                pid,
                serial,
            } => format!("USB{board}::0x{vid:04x}::0x{pid:04x}::{serial}::INSTR"),
            Address::Socket { board, host, port } => {
                format!("TCPIP{board}::{host}::{port}::SOCKET")
            }
            Address::Serial { device } => format!("ASRL{device}::INSTR"),
        }
    }
}

/// Four hex digits after a required `0` and optional `x` (diagnose.md §2.1):
/// `0x05E6`, `005E6`.
fn usb_id(text: &str) -> Option<u16> {
    let rest = text.strip_prefix('0')?;
    let hex = rest.strip_prefix(['x', 'X']).unwrap_or(rest);
    if hex.len() != 4 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u16::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_supported_form() {
        let keithley = Address::parse("USB0::0x05E6::0x2281::4587429::INSTR").unwrap();
        assert_eq!(
            keithley,
            Address::Usb {
                board: 0,
                vid: 0x05e6,
                pid: 0x2281,
                serial: "4587429".into()
            }
        );
        assert_eq!(keithley.canonical(), "USB0::0x05e6::0x2281::4587429::INSTR");
        assert_eq!(
            Address::parse("usb::005e6::02281::::instr")
                .unwrap()
                .canonical(),
            "USB0::0x05e6::0x2281::::INSTR"
        );
        assert_eq!(
            Address::parse("USB1::0x24FF::0x0013::port-1-1.4::INSTR")
                .unwrap()
                .canonical(),
            "USB1::0x24ff::0x0013::port-1-1.4::INSTR"
        );
        assert_eq!(
            Address::parse("TCPIP0::127.0.0.1::5025::SOCKET").unwrap(),
            Address::Socket {
                board: 0,
                host: "127.0.0.1".into(),
                port: 5025
            }
        );
        assert_eq!(
            Address::parse("tcpip::bench.local::5025::socket")
                .unwrap()
                .canonical(),
            "TCPIP0::bench.local::5025::SOCKET"
        );
        assert_eq!(
            Address::parse("ASRL/dev/ttyUSB0::INSTR").unwrap(),
            Address::Serial {
                device: "/dev/ttyUSB0".into()
            }
        );
        assert_eq!(
            Address::parse("/dev/ttyUSB0").unwrap().canonical(),
            "ASRL/dev/ttyUSB0::INSTR"
        );
    }

    #[test]
    fn refuses_what_it_cannot_reach_with_a_reason() {
        let err = |text: &str| Address::parse(text).unwrap_err();
        assert_eq!(err(""), AddressError::Empty);
        assert!(matches!(
            err("TCPIP::10.0.0.5::INSTR"),
            AddressError::Vxi11(_)
        ));
        assert!(err("TCPIP::10.0.0.5::INSTR")
            .to_string()
            .contains("TCPIP0::HOST::PORT::SOCKET"));
        assert!(matches!(
            err("USB0::0x5E6::0x2281::1::INSTR"),
            AddressError::BadUsbId(_)
        ));
        assert!(
            matches!(
                err("USB0::05E6::0x2281::1::INSTR"),
                AddressError::BadUsbId(_)
            ),
            "leading 0 required"
        );
        assert!(matches!(
            err("USB0::0xZZZZ::0x2281::1::INSTR"),
            AddressError::BadUsbId(_)
        ));
        assert!(matches!(
            err("TCPIP0::h::0::SOCKET"),
            AddressError::BadPort(_)
        ));
        assert!(matches!(
            err("TCPIP0::h::99999::SOCKET"),
            AddressError::BadPort(_)
        ));
        for junk in [
            "GPIB0::5::INSTR",
            "USB0::0x05E6::0x2281::INSTR",
            "hello",
            "USBx::0x05E6::0x2281::1::INSTR",
            "ASRL::INSTR",
        ] {
            assert!(matches!(err(junk), AddressError::Unrecognised(_)), "{junk}");
        }
    }

    /// Found by the `visa_address` fuzz target: `/dev/a::b` was taken as
    /// the device `/dev/a::b`, whose canonical `ASRL/dev/a::b::INSTR` did
    /// not parse again, so one address had no stable identity.
    #[test]
    fn a_device_path_with_a_visa_separator_is_refused() {
        for text in ["/dev/ttyUSB0::INSTR", "/dev/a::b", "/dev/ttyS0:"] {
            assert!(
                matches!(Address::parse(text), Err(AddressError::Unrecognised(_))),
                "{text}"
            );
        }
        let by_path = "/dev/serial/by-path/pci-0000:00:14.0-usb-0:1:1.0-port0";
        let address = Address::parse(by_path).unwrap();
        assert_eq!(
            Address::parse(&address.canonical()).unwrap(),
            address,
            "single colons are part of real device names"
        );
    }
}
