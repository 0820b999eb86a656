//! `lagerd sim-usbtmc <functionfs-dir>`: the simulated Keithley 2281S
//! (`sim/mod.rs`'s `Model`, the same state machine the TCP simulator serves)
//! presented as a USB-TMC/USB488 device through Linux FunctionFS, so the
//! real kernel, `usbtmc` driver and libusb path can be tested without an
//! instrument (issue 8; `../shared/usb-vm/README.md` is the contract).
//!
//! The main thread owns `ep0`: it writes the descriptors and strings, then
//! handles BIND/ENABLE/SETUP/DISABLE/UNBIND and the class control requests
//! (GET_CAPABILITIES, the aborts, INITIATE_CLEAR). It always `poll()`s
//! `ep0` before reading it: a `read()` blocked on `ep0` holds the FunctionFS
//! mutex, and unbinding the gadget then deadlocks. A bulk thread, started
//! at the first ENABLE, reads `ep1` packet by packet, reassembles messages
//! (`usbtmc::take_bulk_out`), runs complete (EOM) commands through the
//! model and answers each `REQUEST_DEV_DEP_MSG_IN` on `ep2` with its tag.
//!
//! Fault injection, as the TCP simulator's `mute`: with `--mute-file PATH`,
//! while that file exists, replies are held back (the host times out and
//! must abort and clear, or the held reply would answer its next query).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::Duration;

use crate::instruments::usbtmc::{self, request, status, BulkOut, HEADER_LEN};
use crate::sim::{self, Model};

/// FunctionFS magic numbers and event types (`linux/usb/functionfs.h`).
const DESCRIPTORS_MAGIC_V2: u32 = 3;
const STRINGS_MAGIC: u32 = 2;
const HAS_FS_DESC: u32 = 1;
const HAS_HS_DESC: u32 = 2;
const EVENT_LEN: usize = 12;
const EVENT_BIND: u8 = 0;
const EVENT_UNBIND: u8 = 1;
const EVENT_ENABLE: u8 = 2;
const EVENT_DISABLE: u8 = 3;
const EVENT_SETUP: u8 = 4;
/// Read one high-speed packet at a time: a bigger read waits for a short
/// packet, so a message whose length is a multiple of 512 would stall.
const PACKET: usize = 512;
/// The smallest bulk packet (full speed). A reply transfer whose length is
/// a multiple of it would need a zero-length packet to end, so none is.
const MIN_PACKET: usize = 64;
const INTERFACE_NAME: &str = "Keithley 2281S simulator (lager)";

/// Why the gadget could not start or stopped.
#[derive(Debug)]
pub enum GadgetError {
    Usage,
    Io { what: String, error: io::Error },
}

impl std::fmt::Display for GadgetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GadgetError::Usage => f.write_str(
                "usage: lagerd sim-usbtmc <functionfs-dir> [--mute-file PATH] (a mounted FunctionFS instance, e.g. /dev/ffs-tmc)",
            ),
            GadgetError::Io { what, error } => write!(
                f,
                "{what}: {error}; is a FunctionFS instance mounted there and its gadget configured?"
            ),
        }
    }
}

/// What the control and bulk sides share.
struct Device {
    model: Box<dyn Model>,
    /// Bulk-OUT bytes not yet a whole message.
    stream: Vec<u8>,
    /// Command bytes of a message whose EOM has not arrived.
    partial: Vec<u8>,
    /// Reply bytes not yet requested by the host.
    reply: Vec<u8>,
}

impl Device {
    /// INITIATE_CLEAR and DISABLE: forget everything in flight.
    fn clear(&mut self) {
        self.stream.clear();
        self.partial.clear();
        self.reply.clear();
    }
}

fn lock(device: &Mutex<Device>) -> std::sync::MutexGuard<'_, Device> {
    device.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs the gadget until its `ep0` goes away; never returns `Ok`.
pub fn run(args: &[std::ffi::OsString]) -> Result<(), GadgetError> {
    // Flags may come before the directory: usb-vm's run.sh appends it.
    let (mut dir, mut mute_file) = (None, None);
    let mut words = args.iter();
    while let Some(word) = words.next() {
        if word == "--mute-file" {
            mute_file = Some(PathBuf::from(words.next().ok_or(GadgetError::Usage)?));
        } else if dir.is_none() {
            dir = Some(PathBuf::from(word));
        } else {
            return Err(GadgetError::Usage);
        }
    }
    let dir = dir.ok_or(GadgetError::Usage)?;
    let ep0_path = dir.join("ep0");
    let io_error = |what: &str, path: &Path| {
        let what = format!("{what} {}", path.display());
        move |error| GadgetError::Io { what, error }
    };
    let mut ep0 = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&ep0_path)
        .map_err(io_error("cannot open", &ep0_path))?;
    ep0.write_all(&descriptors())
        .map_err(io_error("cannot write descriptors to", &ep0_path))?;
    ep0.write_all(&strings())
        .map_err(io_error("cannot write strings to", &ep0_path))?;
    eprintln!("sim-usbtmc: descriptors written to {}", ep0_path.display());

    let device = Arc::new(Mutex::new(Device {
        model: sim::keithley_2281s(),
        stream: Vec::new(),
        partial: Vec::new(),
        reply: Vec::new(),
    }));
    let mut bulk_started = false;
    let mut events = [0u8; EVENT_LEN * 4];
    loop {
        if !readable(&ep0).map_err(io_error("cannot poll", &ep0_path))? {
            continue;
        }
        let n = match ep0.read(&mut events) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
                ) =>
            {
                continue
            }
            Err(e) => return Err(io_error("cannot read events from", &ep0_path)(e)),
        };
        for event in events[..n].chunks_exact(EVENT_LEN) {
            match event[8] {
                EVENT_BIND => eprintln!("sim-usbtmc: bound"),
                EVENT_UNBIND => eprintln!("sim-usbtmc: unbound"),
                EVENT_ENABLE => {
                    eprintln!("sim-usbtmc: enabled");
                    if !bulk_started {
                        bulk_started = true;
                        let (shared, bulk_dir) = (device.clone(), dir.clone());
                        let mute = mute_file.clone();
                        thread::Builder::new()
                            .name("sim-usbtmc-bulk".into())
                            .spawn(move || bulk(&bulk_dir, &shared, mute.as_deref()))
                            .map_err(io_error("cannot start the bulk thread for", &dir))?;
                    }
                }
                EVENT_DISABLE => {
                    eprintln!("sim-usbtmc: disabled");
                    lock(&device).clear();
                }
                EVENT_SETUP => setup(&mut ep0, &event[..8], &device),
                _ => {}
            }
        }
    }
}

/// `poll()` before every `read()` of ep0 (see the module comment).
fn readable(ep0: &File) -> io::Result<bool> {
    let mut fds = libc::pollfd {
        fd: ep0.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    let n = unsafe { libc::poll(&mut fds, 1, 1000) };
    if n < 0 {
        let error = io::Error::last_os_error();
        return match error.kind() {
            io::ErrorKind::Interrupted => Ok(false),
            _ => Err(error),
        };
    }
    Ok(n > 0 && fds.revents & libc::POLLIN != 0)
}

/// One control request (USBTMC 1.0 §4.2.1).
fn setup(ep0: &mut File, request: &[u8], device: &Mutex<Device>) {
    let request_type = request[0];
    let code = request[1];
    let value = u16::from_le_bytes([request[2], request[3]]);
    let length = usize::from(u16::from_le_bytes([request[6], request[7]]));
    if request_type & 0x80 == 0 {
        // Host-to-device: take the data stage (or the empty status stage)
        // so the request completes; USB-TMC defines none of these.
        let mut sink = [0u8; 64];
        let take = length.min(sink.len());
        // SAFETY: `take` bytes fit in `sink`; a zero-length read acks.
        unsafe { libc::read(ep0.as_raw_fd(), sink.as_mut_ptr().cast(), take) };
        return;
    }
    let is_class = request_type & 0x60 == 0x20;
    let answer: Option<Vec<u8>> = if !is_class {
        None
    } else {
        let mut device = lock(device);
        match code {
            request::GET_CAPABILITIES => Some(usbtmc::capabilities().to_vec()),
            request::INITIATE_ABORT_BULK_OUT => {
                let in_progress = !device.stream.is_empty() || !device.partial.is_empty();
                device.stream.clear();
                device.partial.clear();
                Some(abort(in_progress, status::TRANSFER_NOT_IN_PROGRESS, value))
            }
            request::INITIATE_ABORT_BULK_IN => {
                let pending = !device.reply.is_empty();
                device.reply.clear();
                Some(abort(pending, status::FAILED, value))
            }
            request::CHECK_ABORT_BULK_OUT_STATUS | request::CHECK_ABORT_BULK_IN_STATUS => {
                Some(vec![status::SUCCESS, 0, 0, 0, 0, 0, 0, 0])
            }
            request::INITIATE_CLEAR => {
                device.clear();
                Some(vec![status::SUCCESS])
            }
            request::CHECK_CLEAR_STATUS => Some(vec![status::SUCCESS, 0]),
            _ => None,
        }
    };
    match answer {
        Some(bytes) => {
            let send = bytes.len().min(length);
            if let Err(e) = ep0.write_all(&bytes[..send]) {
                eprintln!("sim-usbtmc: control request {code} not answered: {e}");
            }
        }
        None => {
            // Reading in the wrong direction is how FunctionFS stalls ep0.
            let mut none = [0u8; 1];
            // SAFETY: a zero-length read into a valid buffer.
            unsafe { libc::read(ep0.as_raw_fd(), none.as_mut_ptr().cast(), 0) };
        }
    }
}

/// An INITIATE_ABORT_* answer (USBTMC 1.0 §4.2.1.2, §4.2.1.4): SUCCESS
/// and the bTag when there was a transfer to abort, else `nothing`.
fn abort(had_transfer: bool, nothing: u8, value: u16) -> Vec<u8> {
    let state = if had_transfer {
        status::SUCCESS
    } else {
        nothing
    };
    vec![state, value as u8]
}

/// The bulk pipes: commands in on ep1, replies out on ep2. While the
/// gadget is unbound, reads fail (ESHUTDOWN); wait for the next ENABLE.
fn bulk(dir: &Path, device: &Mutex<Device>, mute_file: Option<&Path>) {
    let open = |name: &str| {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(dir.join(name))
    };
    let (mut out, mut inp) = match (open("ep1"), open("ep2")) {
        (Ok(out), Ok(inp)) => (out, inp),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("sim-usbtmc: cannot open the bulk endpoints: {e}");
            std::process::exit(1);
        }
    };
    let mut packet = [0u8; PACKET];
    loop {
        let n = match out.read(&mut packet) {
            Ok(n) => n,
            Err(_) => {
                lock(device).stream.clear();
                thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let mut replies = Vec::new();
        {
            let mut device = lock(device);
            device.stream.extend_from_slice(&packet[..n]);
            loop {
                let message = {
                    let Device { stream, .. } = &mut *device;
                    usbtmc::take_bulk_out(stream)
                };
                match message {
                    Ok(None) => break,
                    Err(e) => eprintln!("sim-usbtmc: bad bulk-OUT message dropped: {e}"),
                    Ok(Some(BulkOut::Command { payload, eom, .. })) => {
                        device.partial.extend_from_slice(&payload);
                        if eom {
                            execute(&mut device);
                        }
                    }
                    Ok(Some(BulkOut::Request { .. })) if mute_file.is_some_and(Path::exists) => {
                        eprintln!("sim-usbtmc: muted, reply held back");
                    }
                    Ok(Some(BulkOut::Request { tag, max_len })) => {
                        // Nothing to say: a real instrument stays silent and
                        // the host times out and aborts (§4.2.1.4).
                        if let Some(transfer) = next_transfer(&mut device.reply, tag, max_len) {
                            replies.push(transfer);
                        }
                    }
                }
            }
        }
        for transfer in replies {
            if let Err(e) = inp.write_all(&transfer) {
                eprintln!("sim-usbtmc: reply not sent: {e}");
            }
        }
    }
}

/// Runs every line of a complete message; replies queue up for the host.
fn execute(device: &mut Device) {
    let message = std::mem::take(&mut device.partial);
    let text = String::from_utf8_lossy(&message);
    for line in text.split('\n').map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(reply) = device.model.execute(line) {
            device.reply.extend_from_slice(reply.as_bytes());
            device.reply.push(b'\n');
        }
    }
}

/// The next `DEV_DEP_MSG_IN` transfer: at most `max_len` payload bytes,
/// EOM on the last; never a multiple of the packet size long.
fn next_transfer(reply: &mut Vec<u8>, tag: u8, max_len: u32) -> Option<Vec<u8>> {
    if reply.is_empty() {
        return None;
    }
    let mut take = reply.len().min(max_len.max(1) as usize);
    if (HEADER_LEN + usbtmc::padded(take)).is_multiple_of(MIN_PACKET) {
        take -= 4;
    }
    let payload: Vec<u8> = reply.drain(..take).collect();
    Some(usbtmc::dev_dep_msg_in(tag, &payload, reply.is_empty()))
}

/// FunctionFS v2 descriptors: one USB-TMC/USB488 interface (class 0xFE,
/// subclass 3, protocol 1) with a bulk OUT and a bulk IN endpoint, at full
/// and high speed.
fn descriptors() -> Vec<u8> {
    let set = |max_packet: u16| {
        let mps = max_packet.to_le_bytes();
        let mut bytes = vec![9, 4, 0, 0, 2, usbtmc::CLASS, usbtmc::SUBCLASS, 1, 1];
        bytes.extend_from_slice(&[7, 5, 0x01, 2, mps[0], mps[1], 0]);
        bytes.extend_from_slice(&[7, 5, 0x82, 2, mps[0], mps[1], 0]);
        bytes
    };
    let mut body = Vec::new();
    body.extend_from_slice(&3u32.to_le_bytes());
    body.extend_from_slice(&3u32.to_le_bytes());
    body.extend(set(64));
    body.extend(set(512));
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&DESCRIPTORS_MAGIC_V2.to_le_bytes());
    bytes.extend_from_slice(&((12 + body.len()) as u32).to_le_bytes());
    bytes.extend_from_slice(&(HAS_FS_DESC | HAS_HS_DESC).to_le_bytes());
    bytes.extend(body);
    bytes
}

/// One string (the interface's name) in US English.
fn strings() -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&1u32.to_le_bytes()); // strings per language
    body.extend_from_slice(&1u32.to_le_bytes()); // languages
    body.extend_from_slice(&0x0409u16.to_le_bytes());
    body.extend_from_slice(INTERFACE_NAME.as_bytes());
    body.push(0);
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&STRINGS_MAGIC.to_le_bytes());
    bytes.extend_from_slice(&((8 + body.len()) as u32).to_le_bytes());
    bytes.extend(body);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_declare_one_usbtmc_interface_at_two_speeds() {
        let bytes = descriptors();
        assert_eq!(&bytes[..4], &3u32.to_le_bytes());
        assert_eq!(
            u32::from_le_bytes(bytes[4..8].try_into().unwrap()) as usize,
            bytes.len()
        );
        // Interface: class fe/03/01, two endpoints; then bulk OUT 0x01 and
        // bulk IN 0x82 at 64 bytes (full speed) ...
        assert_eq!(&bytes[20..29], &[9, 4, 0, 0, 2, 0xfe, 0x03, 0x01, 1]);
        assert_eq!(&bytes[29..36], &[7, 5, 0x01, 2, 64, 0, 0]);
        assert_eq!(&bytes[36..43], &[7, 5, 0x82, 2, 64, 0, 0]);
        // ... and 512 bytes (high speed).
        assert_eq!(&bytes[52..59], &[7, 5, 0x01, 2, 0, 2, 0]);
        let strings = strings();
        assert_eq!(
            u32::from_le_bytes(strings[4..8].try_into().unwrap()) as usize,
            strings.len()
        );
    }

    #[test]
    fn commands_run_on_eom_and_replies_answer_each_request_tag() {
        let mut device = Device {
            model: sim::keithley_2281s(),
            stream: Vec::new(),
            partial: Vec::new(),
            reply: Vec::new(),
        };
        device.partial.extend_from_slice(b"*IDN?\n");
        execute(&mut device);
        let idn = String::from_utf8(device.reply.clone()).unwrap();
        assert!(idn.starts_with("KEITHLEY INSTRUMENTS"), "{idn}");
        // Asked for 8 bytes at a time: the reply comes in tagged parts,
        // EOM only on the last.
        let mut received = Vec::new();
        let mut tag = 1;
        loop {
            let transfer = next_transfer(&mut device.reply, tag, 8).unwrap();
            let part = usbtmc::parse_dev_dep_msg_in(tag, &transfer).unwrap();
            received.extend_from_slice(part.payload);
            if part.eom {
                break;
            }
            tag = usbtmc::next_tag(tag);
        }
        assert_eq!(String::from_utf8(received).unwrap(), idn);
        assert_eq!(next_transfer(&mut device.reply, 9, 8), None);
    }

    #[test]
    fn no_reply_transfer_is_a_multiple_of_the_packet_size() {
        // 52 payload bytes make a 64-byte transfer, which would need a
        // zero-length packet to end: send 48, then the rest.
        let mut reply = vec![b'x'; 52];
        let first = next_transfer(&mut reply, 1, 4096).unwrap();
        assert_eq!(first.len(), 60);
        assert_eq!(first[8], 0, "EOM waits for the last part");
        let last = next_transfer(&mut reply, 2, 4096).unwrap();
        assert_eq!(&last[4..9], &[4, 0, 0, 0, 1]);
    }
}
