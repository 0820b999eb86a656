//! `usbvm-tool`: what the usb-vm guest needs besides lagerd and lager
//! (its busybox has no `flock` and no clock finer than a second):
//!
//! - `hold-lock FILE`: take the exclusive `flock` lagerd's device locks use
//!   (diagnose.md §1), write our pid into it, print `held`, then keep it
//!   until killed: another lager-side process holding an instrument.
//! - `idn-rtt DEVNODE N`: the raw USB-TMC `*IDN?` round trip, N times,
//!   over usbfs ioctls (claim, bulk OUT, bulk IN: what libusb does), with
//!   no lagerd in the way: the baseline next to lagerd's figures.
//! - `tcp-rtt HOST:PORT LINE N`: the same for a raw SCPI socket (the
//!   loopback simulator), one connection, N query lines.
//! - `http-rtt HOST:PORT PATH BODY N`: N POSTs of BODY, one connection
//!   each, as `lager` sends them: the daemon's round trip.
//! - `cmd-rtt N CMD ARGS...`: N runs of a command, start to exit.
//!
//! Each `*-rtt` prints `p50_us=… p90_us=… n=…` and fails on any error.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

/// `_IOWR('U', 2, struct usbdevfs_bulktransfer)` and `_IOR('U', 15/16,
/// unsigned int)` on 64-bit Linux (`linux/usbdevice_fs.h`).
const USBDEVFS_BULK: libc::Ioctl = 0xc018_5502_u32 as libc::Ioctl;
const USBDEVFS_CLAIMINTERFACE: libc::Ioctl = 0x8004_550f_u32 as libc::Ioctl;
const USBDEVFS_RELEASEINTERFACE: libc::Ioctl = 0x8004_5510_u32 as libc::Ioctl;

#[repr(C)]
struct BulkTransfer {
    ep: libc::c_uint,
    len: libc::c_uint,
    timeout_ms: libc::c_uint,
    data: *mut libc::c_void,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let outcome = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["hold-lock", file] => hold_lock(file),
        ["idn-rtt", node, n] => count(n).and_then(|n| idn_rtt(node, n)),
        ["tcp-rtt", addr, line, n] => count(n).and_then(|n| tcp_rtt(addr, line, n)),
        ["http-rtt", addr, path, body, n] => count(n).and_then(|n| http_rtt(addr, path, body, n)),
        ["cmd-rtt", n, ref command @ ..] if !command.is_empty() => {
            count(n).and_then(|n| cmd_rtt(n, command))
        }
        _ => Err("usage: usbvm-tool hold-lock FILE | idn-rtt DEVNODE N | tcp-rtt HOST:PORT LINE N | http-rtt HOST:PORT PATH BODY N | cmd-rtt N CMD [ARGS...]".into()),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("usbvm-tool: {e}");
            ExitCode::FAILURE
        }
    }
}

fn count(text: &str) -> Result<usize, String> {
    text.parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("not a positive count: {text}"))
}

fn report(mut samples: Vec<Duration>) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    println!(
        "p50_us={} p90_us={} n={}",
        at(0.5).as_micros(),
        at(0.9).as_micros(),
        samples.len()
    );
}

fn hold_lock(path: &str) -> Result<(), String> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| format!("{path}: {e}"))?;
    // SAFETY: flock on an fd we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(format!("flock {path}: {}", std::io::Error::last_os_error()));
    }
    file.set_len(0).map_err(|e| e.to_string())?;
    writeln!(file, "{}", std::process::id()).map_err(|e| e.to_string())?;
    println!("held");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn idn_rtt(node: &str, n: usize) -> Result<(), String> {
    let mut dev = OpenOptions::new()
        .read(true)
        .write(true)
        .open(node)
        .map_err(|e| format!("{node}: {e}"))?;
    // Reading the node gives the device's descriptors: find the bulk pair.
    let mut descriptors = vec![0u8; 4096];
    let len = dev.read(&mut descriptors).map_err(|e| e.to_string())?;
    let (mut ep_in, mut ep_out) = (0u8, 0u8);
    let mut i = 0;
    while i + 4 <= len && descriptors[i] != 0 {
        if descriptors[i + 1] == 5 && descriptors[i + 3] & 3 == 2 {
            let address = descriptors[i + 2];
            if address & 0x80 != 0 {
                ep_in = address;
            } else {
                ep_out = address;
            }
        }
        i += usize::from(descriptors[i]);
    }
    if ep_in == 0 || ep_out == 0 {
        return Err(format!("{node}: no bulk endpoint pair"));
    }
    let fd = dev.as_raw_fd();
    let interface: libc::c_uint = 0;
    // SAFETY: ioctls on our fd with the argument types the kernel expects.
    if unsafe { libc::ioctl(fd, USBDEVFS_CLAIMINTERFACE, &interface) } != 0 {
        return Err(format!("claim: {}", std::io::Error::last_os_error()));
    }
    let bulk = |ep: u8, data: &mut [u8]| -> Result<usize, String> {
        let mut transfer = BulkTransfer {
            ep: ep.into(),
            len: data.len() as libc::c_uint,
            timeout_ms: 2000,
            data: data.as_mut_ptr().cast(),
        };
        // SAFETY: `transfer` points at `data`, alive for the call.
        let got = unsafe { libc::ioctl(fd, USBDEVFS_BULK, &mut transfer) };
        if got < 0 {
            return Err(format!(
                "bulk {ep:#04x}: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(got as usize)
    };
    let mut samples = Vec::with_capacity(n);
    let mut reply = vec![0u8; 4096 + 16];
    for round in 0..n {
        let tag = (round % 127) as u8 * 2 + 1;
        let started = Instant::now();
        // DEV_DEP_MSG_OUT "*IDN?\n" with EOM, then REQUEST_DEV_DEP_MSG_IN.
        let mut message = [
            1, tag, !tag, 0, 6, 0, 0, 0, 1, 0, 0, 0, b'*', b'I', b'D', b'N', b'?', b'\n', 0, 0,
        ];
        bulk(ep_out, &mut message)?;
        let next = tag + 1;
        let mut request = [2, next, !next, 0, 0, 16, 0, 0, 0, 0, 0, 0];
        bulk(ep_out, &mut request)?;
        let got = bulk(ep_in, &mut reply)?;
        if got < 12 || reply[0] != 2 || reply[1] != next {
            return Err(format!("bad reply header {:?}", &reply[..got.min(12)]));
        }
        samples.push(started.elapsed());
        if round == 0 {
            let size = u32::from_le_bytes([reply[4], reply[5], reply[6], reply[7]]) as usize;
            let text = String::from_utf8_lossy(&reply[12..(12 + size).min(got)]);
            println!("idn={}", text.trim());
        }
    }
    // SAFETY: as above.
    unsafe { libc::ioctl(fd, USBDEVFS_RELEASEINTERFACE, &interface) };
    report(samples);
    Ok(())
}

fn tcp_rtt(addr: &str, line: &str, n: usize) -> Result<(), String> {
    let stream = TcpStream::connect(addr).map_err(|e| format!("{addr}: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
    let mut reader = std::io::BufReader::new(stream);
    let mut samples = Vec::with_capacity(n);
    let mut reply = String::new();
    for round in 0..n {
        let started = Instant::now();
        writer
            .write_all(format!("{line}\n").as_bytes())
            .map_err(|e| e.to_string())?;
        reply.clear();
        std::io::BufRead::read_line(&mut reader, &mut reply).map_err(|e| e.to_string())?;
        samples.push(started.elapsed());
        if reply.is_empty() {
            return Err(format!("{addr} closed the connection"));
        }
        if round == 0 {
            println!("reply={}", reply.trim());
        }
    }
    report(samples);
    Ok(())
}

fn http_rtt(addr: &str, path: &str, body: &str, n: usize) -> Result<(), String> {
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let mut stream = TcpStream::connect(addr).map_err(|e| format!("{addr}: {e}"))?;
        stream
            .write_all(request.as_bytes())
            .map_err(|e| e.to_string())?;
        let mut answer = String::new();
        stream
            .read_to_string(&mut answer)
            .map_err(|e| e.to_string())?;
        samples.push(started.elapsed());
        if !answer.starts_with("HTTP/1.1 200") {
            return Err(format!("{path}: {}", answer.lines().last().unwrap_or("")));
        }
    }
    report(samples);
    Ok(())
}

fn cmd_rtt(n: usize, command: &[&str]) -> Result<(), String> {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let status = Command::new(command[0])
            .args(&command[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .map_err(|e| format!("{}: {e}", command[0]))?;
        samples.push(started.elapsed());
        if !status.success() {
            return Err(format!("{} exited with {status}", command.join(" ")));
        }
    }
    report(samples);
    Ok(())
}
