//! USB-TMC (USB Test and Measurement Class 1.0): the wire framing as pure
//! functions, shared by the host transport here and the simulator's gadget
//! (`sim/usbtmc.rs`), and the host transport itself over libusb (`rusb`).
//!
//! Every bulk message starts with a 12-byte header (USBTMC 1.0 §3.2):
//! `MsgID`, `bTag`, `bTagInverse`, a reserved byte, then four bytes that
//! depend on `MsgID` (for the messages here: `TransferSize`, little endian,
//! attributes, a term char, reserved). Payloads are padded to a multiple
//! of four bytes. A reply may come in several transfers: each ends with
//! `EOM` clear until the last.

use std::time::{Duration, Instant};

use log::{debug, warn};
use std::sync::{Mutex, PoisonError};

use rusb::{Context, Direction, TransferType, UsbContext};

use super::transport::{BusyCause, TransportError};

/// `MsgID` of a host command (bulk OUT).
pub const DEV_DEP_MSG_OUT: u8 = 1;
/// `MsgID` of a host's request for reply bytes (bulk OUT).
pub const REQUEST_DEV_DEP_MSG_IN: u8 = 2;
/// `MsgID` of the device's reply (bulk IN): the same number, other pipe.
pub const DEV_DEP_MSG_IN: u8 = 2;
pub const HEADER_LEN: usize = 12;
/// `bmTransferAttributes` bit 0: this transfer ends the message.
const ATTR_EOM: u8 = 0x01;

/// Interface class and subclass of a USB-TMC interface (§4.2.1).
pub const CLASS: u8 = 0xfe;
pub const SUBCLASS: u8 = 0x03;

/// Class-specific control requests (USBTMC 1.0 Table 15).
pub mod request {
    pub const INITIATE_ABORT_BULK_OUT: u8 = 1;
    pub const CHECK_ABORT_BULK_OUT_STATUS: u8 = 2;
    pub const INITIATE_ABORT_BULK_IN: u8 = 3;
    pub const CHECK_ABORT_BULK_IN_STATUS: u8 = 4;
    pub const INITIATE_CLEAR: u8 = 5;
    pub const CHECK_CLEAR_STATUS: u8 = 6;
    pub const GET_CAPABILITIES: u8 = 7;
}

/// `USBTMC_status` values (Table 16).
pub mod status {
    pub const SUCCESS: u8 = 0x01;
    pub const PENDING: u8 = 0x02;
    pub const FAILED: u8 = 0x80;
    pub const TRANSFER_NOT_IN_PROGRESS: u8 = 0x81;
}

/// Payload length rounded up to the 4-byte alignment of §3.2.
pub fn padded(len: usize) -> usize {
    len.div_ceil(4) * 4
}

/// The `bTag` after `tag`: 1..=255, never 0 (§3.2 Table 1).
pub fn next_tag(tag: u8) -> u8 {
    tag.checked_add(1).unwrap_or(1)
}

fn header(msg_id: u8, tag: u8, transfer_size: u32) -> [u8; HEADER_LEN] {
    let size = transfer_size.to_le_bytes();
    [
        msg_id, tag, !tag, 0, size[0], size[1], size[2], size[3], 0, 0, 0, 0,
    ]
}

/// A `DEV_DEP_MSG_OUT` transfer carrying `payload` (§3.2.1.1).
pub fn dev_dep_msg_out(tag: u8, payload: &[u8], eom: bool) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(HEADER_LEN + padded(payload.len()));
    let mut head = header(DEV_DEP_MSG_OUT, tag, payload.len() as u32);
    head[8] = if eom { ATTR_EOM } else { 0 };
    bytes.extend_from_slice(&head);
    bytes.extend_from_slice(payload);
    bytes.resize(HEADER_LEN + padded(payload.len()), 0);
    bytes
}

/// A `REQUEST_DEV_DEP_MSG_IN` transfer asking for at most `max_len` bytes,
/// without a term char (§3.2.1.2).
pub fn request_dev_dep_msg_in(tag: u8, max_len: u32) -> [u8; HEADER_LEN] {
    header(REQUEST_DEV_DEP_MSG_IN, tag, max_len)
}

/// A device's `DEV_DEP_MSG_IN` reply transfer (§3.3.1).
pub fn dev_dep_msg_in(tag: u8, payload: &[u8], eom: bool) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(HEADER_LEN + padded(payload.len()));
    let mut head = header(DEV_DEP_MSG_IN, tag, payload.len() as u32);
    head[8] = if eom { ATTR_EOM } else { 0 };
    bytes.extend_from_slice(&head);
    bytes.extend_from_slice(payload);
    bytes.resize(HEADER_LEN + padded(payload.len()), 0);
    bytes
}

/// Why a received transfer is not what the protocol allows.
#[derive(Debug, PartialEq, Eq)]
pub enum FrameError {
    /// Fewer than the 12 header bytes.
    Short(usize),
    /// `bTagInverse` is not the complement of `bTag`.
    TagInverse { tag: u8, inverse: u8 },
    /// A different `MsgID` than expected.
    MsgId(u8),
    /// The reply answers another request.
    Tag { expected: u8, got: u8 },
    /// `TransferSize` is larger than the transfer.
    Size { declared: u32, available: usize },
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Short(n) => write!(f, "a {n}-byte transfer, shorter than a USB-TMC header"),
            FrameError::TagInverse { tag, inverse } => {
                write!(
                    f,
                    "bTag {tag} with bTagInverse {inverse}, not its complement"
                )
            }
            FrameError::MsgId(id) => write!(f, "unexpected MsgID {id}"),
            FrameError::Tag { expected, got } => {
                write!(f, "a reply tagged {got} to request {expected}")
            }
            FrameError::Size {
                declared,
                available,
            } => write!(
                f,
                "TransferSize {declared} but only {available} payload bytes"
            ),
        }
    }
}

/// One parsed `DEV_DEP_MSG_IN` transfer.
#[derive(Debug, PartialEq, Eq)]
pub struct MsgIn<'a> {
    pub payload: &'a [u8],
    pub eom: bool,
}

/// The header's checks shared by both directions: length and tag pair.
fn checked_header(bytes: &[u8]) -> Result<(u8, u8, u32), FrameError> {
    if bytes.len() < HEADER_LEN {
        return Err(FrameError::Short(bytes.len()));
    }
    let (msg_id, tag, inverse) = (bytes[0], bytes[1], bytes[2]);
    if inverse != !tag {
        return Err(FrameError::TagInverse { tag, inverse });
    }
    let size = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    Ok((msg_id, tag, size))
}

/// Parses a reply transfer to the request tagged `expected_tag`. The
/// payload is `TransferSize` bytes; alignment padding is ignored.
pub fn parse_dev_dep_msg_in(expected_tag: u8, bytes: &[u8]) -> Result<MsgIn<'_>, FrameError> {
    let (msg_id, tag, size) = checked_header(bytes)?;
    if msg_id != DEV_DEP_MSG_IN {
        return Err(FrameError::MsgId(msg_id));
    }
    if tag != expected_tag {
        return Err(FrameError::Tag {
            expected: expected_tag,
            got: tag,
        });
    }
    let available = bytes.len() - HEADER_LEN;
    if size as usize > available {
        return Err(FrameError::Size {
            declared: size,
            available,
        });
    }
    Ok(MsgIn {
        payload: &bytes[HEADER_LEN..HEADER_LEN + size as usize],
        eom: bytes[8] & ATTR_EOM != 0,
    })
}

/// The largest command transfer the device side accepts.
const MAX_COMMAND: u32 = 64 * 1024;

/// A bulk-OUT message as the device sees it.
#[derive(Debug, PartialEq, Eq)]
pub enum BulkOut {
    Command {
        tag: u8,
        payload: Vec<u8>,
        eom: bool,
    },
    Request {
        tag: u8,
        max_len: u32,
    },
}

/// Takes the first whole bulk-OUT message off the front of `stream` (the
/// device reads packet by packet, so a message may arrive in pieces, or two
/// at once). `Ok(None)`: not all of it has arrived yet.
pub fn take_bulk_out(stream: &mut Vec<u8>) -> Result<Option<BulkOut>, FrameError> {
    if stream.len() < HEADER_LEN {
        return Ok(None);
    }
    let parsed = checked_header(stream);
    let (msg_id, tag, size) = match parsed {
        Ok(header) => header,
        Err(e) => {
            // Resynchronise: nothing after a broken header can be trusted.
            stream.clear();
            return Err(e);
        }
    };
    match msg_id {
        // A command larger than any SCPI line would only grow the buffer
        // while the device waits for the rest: refuse it at the header.
        DEV_DEP_MSG_OUT if size > MAX_COMMAND => {
            stream.clear();
            Err(FrameError::Size {
                declared: size,
                available: MAX_COMMAND as usize,
            })
        }
        DEV_DEP_MSG_OUT => {
            let whole = HEADER_LEN + padded(size as usize);
            if stream.len() < whole {
                return Ok(None);
            }
            let eom = stream[8] & ATTR_EOM != 0;
            let payload = stream[HEADER_LEN..HEADER_LEN + size as usize].to_vec();
            stream.drain(..whole);
            Ok(Some(BulkOut::Command { tag, payload, eom }))
        }
        REQUEST_DEV_DEP_MSG_IN => {
            stream.drain(..HEADER_LEN);
            Ok(Some(BulkOut::Request { tag, max_len: size }))
        }
        other => {
            stream.clear();
            Err(FrameError::MsgId(other))
        }
    }
}

/// The 24-byte `GET_CAPABILITIES` answer of a USB488 interface that does
/// nothing optional (Table 37, USB488 Table 8).
pub fn capabilities() -> [u8; 0x18] {
    let mut caps = [0u8; 0x18];
    caps[0] = status::SUCCESS;
    caps[2..4].copy_from_slice(&0x0100u16.to_le_bytes()); // bcdUSBTMC 1.00
    caps[12..14].copy_from_slice(&0x0100u16.to_le_bytes()); // bcdUSB488 1.00
    caps
}

/// Reply bytes asked for per `REQUEST_DEV_DEP_MSG_IN`; longer replies come
/// in several transfers.
const READ_CHUNK: u32 = 4096;
/// `bmRequestType`: device-to-host, class, to the interface / an endpoint.
const TO_INTERFACE: u8 = 0xa1;
const TO_ENDPOINT: u8 = 0xa2;
/// How long the abort/clear handshake may poll a device for.
const CLEAR_BUDGET: Duration = Duration::from_millis(1000);

/// An open, claimed USB-TMC interface (`USB<n>::vid::pid::serial::INSTR`).
pub struct UsbTmcTransport {
    address: String,
    handle: rusb::DeviceHandle<Context>,
    interface: u8,
    ep_out: u8,
    ep_in: u8,
    tag: u8,
    timeout: Duration,
}

/// The process's libusb context, made on first use. rusb's global context
/// panics when libusb cannot start (no `/dev/bus/usb`); a failed start is
/// an error here and is tried again on the next open.
fn context() -> rusb::Result<Context> {
    static CONTEXT: Mutex<Option<Context>> = Mutex::new(None);
    let mut slot = CONTEXT.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(context) = slot.as_ref() {
        return Ok(context.clone());
    }
    let context = Context::new()?;
    *slot = Some(context.clone());
    Ok(context)
}

/// The USB-TMC interface of a device and its bulk pipe pair.
struct Pipes {
    interface: u8,
    ep_out: u8,
    ep_in: u8,
}

fn find_pipes(device: &rusb::Device<Context>) -> Option<Pipes> {
    let config = device.active_config_descriptor().ok()?;
    for interface in config.interfaces() {
        for setting in interface.descriptors() {
            if setting.class_code() != CLASS || setting.sub_class_code() != SUBCLASS {
                continue;
            }
            let bulk = |direction| {
                setting
                    .endpoint_descriptors()
                    .find(|e| e.transfer_type() == TransferType::Bulk && e.direction() == direction)
                    .map(|e| e.address())
            };
            if let (Some(ep_out), Some(ep_in)) = (bulk(Direction::Out), bulk(Direction::In)) {
                return Some(Pipes {
                    interface: setting.interface_number(),
                    ep_out,
                    ep_in,
                });
            }
        }
    }
    None
}

/// `/dev/bus/usb/BBB/DDD`, the usbfs node libusb opened.
fn usbfs_node(device: &rusb::Device<Context>) -> String {
    format!(
        "/dev/bus/usb/{:03}/{:03}",
        device.bus_number(),
        device.address()
    )
}

impl UsbTmcTransport {
    /// Finds the device (a serial match, case-insensitive; any serial when
    /// the address has none) and claims its USB-TMC interface.
    pub fn open(
        address: &str,
        vid: u16,
        pid: u16,
        serial: &str,
        timeout: Duration,
    ) -> Result<UsbTmcTransport, TransportError> {
        let nodev = || TransportError::NoDevice {
            address: address.to_string(),
        };
        // No USB stack at all (no /dev/bus/usb, e.g. a container without
        // it): to the user the instrument is simply not there.
        let devices = context().and_then(|c| c.devices()).map_err(|e| {
            warn!("{address}: libusb cannot list USB devices ({e}); is /dev/bus/usb present?");
            nodev()
        })?;
        let mut last_error = None;
        for device in devices.iter() {
            let Ok(descriptor) = device.device_descriptor() else {
                continue;
            };
            if descriptor.vendor_id() != vid || descriptor.product_id() != pid {
                continue;
            }
            let handle = match device.open() {
                Ok(handle) => handle,
                Err(e) => {
                    last_error = Some(classify_open(address, timeout, &device, e));
                    continue;
                }
            };
            if !serial.is_empty() {
                let found = handle
                    .read_serial_number_string_ascii(&descriptor)
                    .unwrap_or_default();
                if !found.trim().eq_ignore_ascii_case(serial.trim()) {
                    continue;
                }
            }
            let Some(pipes) = find_pipes(&device) else {
                return Err(TransportError::Io {
                    address: address.to_string(),
                    error: std::io::Error::other(
                        "the device has no USB-TMC interface (class 0xFE/0x03 with bulk IN and OUT); check the address",
                    ),
                });
            };
            // A kernel driver (usbtmc) owns the interface: claiming would
            // fail with EBUSY, and detaching it behind the admin's back
            // would only last until the next replug. Say what fixes it.
            if handle.kernel_driver_active(pipes.interface) == Ok(true) {
                return Err(TransportError::Busy {
                    address: address.to_string(),
                    cause: BusyCause::KernelDriver,
                });
            }
            if let Err(e) = handle.claim_interface(pipes.interface) {
                return Err(classify_open(address, timeout, &device, e));
            }
            debug!(
                "{address}: claimed interface {} of {} (bulk out {:#04x}, in {:#04x})",
                pipes.interface,
                usbfs_node(&device),
                pipes.ep_out,
                pipes.ep_in
            );
            return Ok(UsbTmcTransport {
                address: address.to_string(),
                handle,
                interface: pipes.interface,
                ep_out: pipes.ep_out,
                ep_in: pipes.ep_in,
                tag: 0,
                timeout,
            });
        }
        Err(last_error.unwrap_or_else(nodev))
    }

    /// Sends a command that has no reply.
    pub fn write(&mut self, command: &str) -> Result<(), TransportError> {
        self.tag = next_tag(self.tag);
        let message = dev_dep_msg_out(self.tag, format!("{command}\n").as_bytes(), true);
        self.bulk_out(&message)
    }

    /// Sends `command` and reads its reply, without its terminator.
    pub fn query(&mut self, command: &str) -> Result<String, TransportError> {
        self.write(command)?;
        let deadline = Instant::now() + self.timeout;
        let mut reply = Vec::new();
        let mut buffer = vec![0u8; HEADER_LEN + READ_CHUNK as usize + 4];
        loop {
            self.tag = next_tag(self.tag);
            let tag = self.tag;
            self.bulk_out(&request_dev_dep_msg_in(tag, READ_CHUNK))?;
            let got = match self.bulk_in(&mut buffer, deadline) {
                Ok(got) => got,
                Err(e) => {
                    if matches!(e, TransportError::Timeout { .. }) {
                        self.abort_bulk_in(tag);
                    }
                    return Err(e);
                }
            };
            let part = parse_dev_dep_msg_in(tag, &buffer[..got]).map_err(|e| self.garbled(e))?;
            reply.extend_from_slice(part.payload);
            if part.eom {
                break;
            }
            if reply.len() > super::transport::REPLY_MAX {
                return Err(self.garbled("a reply over 1 MiB without EOM"));
            }
        }
        let text = String::from_utf8_lossy(&reply);
        Ok(text.trim_end_matches(['\r', '\n']).to_string())
    }

    fn garbled(&self, why: impl std::fmt::Display) -> TransportError {
        TransportError::Io {
            address: self.address.clone(),
            error: std::io::Error::other(format!("garbled USB-TMC reply: {why}")),
        }
    }

    fn bulk_out(&self, bytes: &[u8]) -> Result<(), TransportError> {
        match self.handle.write_bulk(self.ep_out, bytes, self.timeout) {
            Ok(n) if n == bytes.len() => Ok(()),
            Ok(n) => Err(self.garbled(format!("only {n} of {} bytes sent", bytes.len()))),
            Err(e) => {
                let error = classify(&self.address, self.timeout, e);
                if matches!(error, TransportError::Timeout { .. }) {
                    self.clear();
                }
                Err(error)
            }
        }
    }

    /// One whole `DEV_DEP_MSG_IN` transfer: a transfer whose length is a
    /// multiple of the packet size can arrive in several reads.
    fn bulk_in(&self, buffer: &mut [u8], deadline: Instant) -> Result<usize, TransportError> {
        let mut got = 0;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(TransportError::Timeout {
                    address: self.address.clone(),
                    after: self.timeout,
                });
            }
            let n = self
                .handle
                .read_bulk(self.ep_in, &mut buffer[got..], left)
                .map_err(|e| classify(&self.address, self.timeout, e))?;
            got += n;
            if got >= HEADER_LEN {
                let size = u32::from_le_bytes([buffer[4], buffer[5], buffer[6], buffer[7]]);
                if n == 0 || got >= HEADER_LEN + size as usize || got == buffer.len() {
                    return Ok(got);
                }
            } else if n == 0 {
                return Ok(got);
            }
        }
    }

    /// After a reply timed out: abort the pending bulk-IN transfer (§4.2.1.4)
    /// and clear the device (§4.2.1.6), so a late reply can never answer the
    /// next command. Best effort: the session closes either way.
    fn abort_bulk_in(&self, tag: u8) {
        let mut answer = [0u8; 2];
        let aborted = self.handle.read_control(
            TO_ENDPOINT,
            request::INITIATE_ABORT_BULK_IN,
            u16::from(tag),
            u16::from(self.ep_in),
            &mut answer,
            CLEAR_BUDGET,
        );
        if aborted.is_ok() && answer[0] == status::SUCCESS {
            let until = Instant::now() + CLEAR_BUDGET;
            let mut check = [0u8; 8];
            while Instant::now() < until {
                let ok = self.handle.read_control(
                    TO_ENDPOINT,
                    request::CHECK_ABORT_BULK_IN_STATUS,
                    0,
                    u16::from(self.ep_in),
                    &mut check,
                    CLEAR_BUDGET,
                );
                if ok.is_err() || check[0] != status::PENDING {
                    break;
                }
                // Pending with data queued: the host must read it away.
                let mut drain = [0u8; 512];
                let _ = self
                    .handle
                    .read_bulk(self.ep_in, &mut drain, Duration::from_millis(50));
            }
        }
        self.clear();
    }

    /// `INITIATE_CLEAR`, poll `CHECK_CLEAR_STATUS`, then clear the bulk-OUT
    /// halt as §4.2.1.6 requires of the host.
    fn clear(&self) {
        let mut answer = [0u8; 2];
        let started = self.handle.read_control(
            TO_INTERFACE,
            request::INITIATE_CLEAR,
            0,
            u16::from(self.interface),
            &mut answer[..1],
            CLEAR_BUDGET,
        );
        if started.is_err() || answer[0] != status::SUCCESS {
            warn!(
                "{}: the device refused INITIATE_CLEAR ({started:?}, status {:#04x})",
                self.address, answer[0]
            );
            return;
        }
        let until = Instant::now() + CLEAR_BUDGET;
        while Instant::now() < until {
            let checked = self.handle.read_control(
                TO_INTERFACE,
                request::CHECK_CLEAR_STATUS,
                0,
                u16::from(self.interface),
                &mut answer,
                CLEAR_BUDGET,
            );
            if checked.is_err() || answer[0] != status::PENDING {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.handle.clear_halt(self.ep_out);
    }
}

impl Drop for UsbTmcTransport {
    fn drop(&mut self) {
        // Closing the handle releases the claim too; say so explicitly so a
        // device that is still there sees the interface free at once.
        let _ = self.handle.release_interface(self.interface);
    }
}

/// An open or claim failure, with the usbfs node when someone holds it.
fn classify_open(
    address: &str,
    timeout: Duration,
    device: &rusb::Device<Context>,
    error: rusb::Error,
) -> TransportError {
    match error {
        rusb::Error::Busy => TransportError::Busy {
            address: address.to_string(),
            cause: BusyCause::Claimed {
                node: usbfs_node(device),
                holders: Vec::new(),
            },
        },
        rusb::Error::Access => TransportError::PermissionDenied {
            address: address.to_string(),
            node: usbfs_node(device),
        },
        other => classify(address, timeout, other),
    }
}

/// libusb's error codes as the errno classes of the transport boundary.
fn classify(address: &str, timeout: Duration, error: rusb::Error) -> TransportError {
    let address = address.to_string();
    match error {
        rusb::Error::Busy => TransportError::Busy {
            address,
            cause: BusyCause::Unknown,
        },
        rusb::Error::NoDevice | rusb::Error::NotFound => TransportError::NoDevice { address },
        rusb::Error::Timeout => TransportError::Timeout {
            address,
            after: timeout,
        },
        other => TransportError::Io {
            address,
            error: std::io::Error::other(format!("libusb: {other}")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_is_framed_as_the_spec_lays_it_out() {
        // USBTMC 1.0 Table 1 + Table 3: MsgID 1, bTag, ~bTag, 0,
        // TransferSize LE, bmTransferAttributes (EOM), 3 reserved, payload,
        // padded with zeros to a multiple of 4.
        assert_eq!(
            dev_dep_msg_out(1, b"*IDN?\n", true),
            [
                0x01, 0x01, 0xfe, 0x00, 0x06, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, b'*', b'I',
                b'D', b'N', b'?', b'\n', 0x00, 0x00
            ]
        );
        // Already aligned: no padding; EOM clear for a message continued later.
        assert_eq!(
            dev_dep_msg_out(0x80, b"VOLT", false),
            [
                0x01, 0x80, 0x7f, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, b'V', b'O',
                b'L', b'T'
            ]
        );
        // A 300-byte payload: TransferSize spans two bytes.
        let long = dev_dep_msg_out(7, &[b'x'; 300], true);
        assert_eq!(
            &long[..8],
            &[0x01, 0x07, 0xf8, 0x00, 0x2c, 0x01, 0x00, 0x00]
        );
        assert_eq!(long.len(), 12 + 300);
    }

    #[test]
    fn a_reply_request_is_framed_as_the_spec_lays_it_out() {
        // Table 4: MsgID 2, TransferSize = most bytes wanted, no TermChar.
        assert_eq!(
            request_dev_dep_msg_in(2, 4096),
            [0x02, 0x02, 0xfd, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00]
        );
    }

    #[test]
    fn tags_run_from_1_to_255_and_skip_0() {
        assert_eq!(next_tag(0), 1);
        assert_eq!(next_tag(1), 2);
        assert_eq!(next_tag(254), 255);
        assert_eq!(next_tag(255), 1);
    }

    #[test]
    fn replies_parse_with_padding_and_eom() {
        let reply = [
            0x02, 0x05, 0xfa, 0x00, 0x03, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, b'5', b'.',
            b'0', 0x00,
        ];
        assert_eq!(
            parse_dev_dep_msg_in(5, &reply),
            Ok(MsgIn {
                payload: b"5.0",
                eom: true
            })
        );
        assert_eq!(dev_dep_msg_in(5, b"5.0", true), reply);
    }

    #[test]
    fn a_reply_in_two_transfers_is_two_parts() {
        // The device splits a reply: EOM clear on the first transfer, the
        // host asks again with the next tag, EOM set on the last.
        let first = dev_dep_msg_in(9, b"KEITHLEY,", false);
        let second = dev_dep_msg_in(10, b"2281S\n", true);
        let a = parse_dev_dep_msg_in(9, &first).unwrap();
        let b = parse_dev_dep_msg_in(10, &second).unwrap();
        assert!(!a.eom && b.eom);
        assert_eq!([a.payload, b.payload].concat(), b"KEITHLEY,2281S\n");
    }

    #[test]
    fn bad_replies_are_refused_not_trusted() {
        let good = dev_dep_msg_in(3, b"1", true);
        assert_eq!(
            parse_dev_dep_msg_in(3, &good[..11]),
            Err(FrameError::Short(11))
        );
        assert_eq!(
            parse_dev_dep_msg_in(4, &good),
            Err(FrameError::Tag {
                expected: 4,
                got: 3
            })
        );
        let mut inverse = good.clone();
        inverse[2] = 0;
        assert_eq!(
            parse_dev_dep_msg_in(3, &inverse),
            Err(FrameError::TagInverse { tag: 3, inverse: 0 })
        );
        let mut oversize = good.clone();
        oversize[4] = 200;
        assert_eq!(
            parse_dev_dep_msg_in(3, &oversize),
            Err(FrameError::Size {
                declared: 200,
                available: 4
            })
        );
        let mut wrong_id = good;
        wrong_id[0] = 1;
        assert_eq!(
            parse_dev_dep_msg_in(3, &wrong_id),
            Err(FrameError::MsgId(1))
        );
    }

    #[test]
    fn the_device_side_reassembles_split_and_merged_messages() {
        let command = dev_dep_msg_out(1, b"VOLT 5\n", true);
        let request = request_dev_dep_msg_in(2, 64);
        let mut stream = Vec::new();
        // The first packet holds only part of the command.
        stream.extend_from_slice(&command[..10]);
        assert_eq!(take_bulk_out(&mut stream), Ok(None));
        // The rest and the request arrive in one read.
        stream.extend_from_slice(&command[10..]);
        stream.extend_from_slice(&request);
        assert_eq!(
            take_bulk_out(&mut stream),
            Ok(Some(BulkOut::Command {
                tag: 1,
                payload: b"VOLT 5\n".to_vec(),
                eom: true
            }))
        );
        assert_eq!(
            take_bulk_out(&mut stream),
            Ok(Some(BulkOut::Request {
                tag: 2,
                max_len: 64
            }))
        );
        assert!(stream.is_empty());
        // A header announcing more than a device would ever buffer.
        stream.extend_from_slice(&[0x01, 0x01, 0xfe, 0, 0xff, 0xff, 0xff, 0x7f, 1, 0, 0, 0]);
        assert!(matches!(
            take_bulk_out(&mut stream),
            Err(FrameError::Size { .. })
        ));
        assert!(stream.is_empty());
        // Garbage is reported once and dropped, so the next message parses.
        stream.extend_from_slice(&[0x01, 0x01, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert!(take_bulk_out(&mut stream).is_err());
        assert!(stream.is_empty());
    }

    #[test]
    fn capabilities_say_usbtmc_and_usb488_1_00() {
        let caps = capabilities();
        assert_eq!(&caps[..6], &[0x01, 0x00, 0x00, 0x01, 0x00, 0x00]);
        assert_eq!(&caps[12..14], &[0x00, 0x01]);
    }
}
