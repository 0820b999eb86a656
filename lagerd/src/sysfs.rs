//! USB devices as the kernel shows them (diagnose.md §2.2–§2.6): sysfs
//! enumeration under an injectable root, USB-TMC detection, the driver
//! bound to each interface, and the kernel checks (usbtmc loaded, its
//! blacklist installed, recent USB lines of the kernel log).
//!
//! Everything here reads; a malformed or unreadable attribute yields a
//! partial answer, never an error.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use serde::Serialize;

use crate::fsutil;

/// USB-TMC: interface class 0xFE (application specific), subclass 0x03.
const USBTMC_CLASS: u8 = 0xfe;
const USBTMC_SUBCLASS: u8 = 0x03;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Interface {
    /// The sysfs name, e.g. `1-1:1.0`.
    pub name: String,
    pub class: Option<u8>,
    pub subclass: Option<u8>,
    /// The kernel driver bound to it (`usbtmc` means the blacklist is missing).
    pub driver: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct UsbDevice {
    /// `<sys-root>/bus/usb/devices/<name>`, no trailing `/`.
    pub sysfs_path: PathBuf,
    pub name: String,
    /// Lower-case hex, as sysfs writes them.
    pub vid: String,
    pub pid: String,
    pub serial: String,
    pub manufacturer: Option<String>,
    pub product: Option<String>,
    pub busnum: Option<u32>,
    pub devnum: Option<u32>,
    pub interfaces: Vec<Interface>,
}

impl UsbDevice {
    /// The usbfs node holders are matched against: `/dev/bus/usb/BBB/DDD`.
    pub fn device_path(&self) -> Option<PathBuf> {
        Some(PathBuf::from(format!(
            "/dev/bus/usb/{:03}/{:03}",
            self.busnum?, self.devnum?
        )))
    }

    /// Some interface is class 0xFE subclass 0x03.
    pub fn is_usbtmc(&self) -> bool {
        self.interfaces
            .iter()
            .any(|i| i.class == Some(USBTMC_CLASS) && i.subclass == Some(USBTMC_SUBCLASS))
    }

    /// The kernel's `usbtmc` driver has claimed an interface.
    pub fn usbtmc_bound(&self) -> bool {
        self.interfaces
            .iter()
            .any(|i| i.driver.as_deref() == Some("usbtmc"))
    }
}

/// Every USB device (not interface) under `<sys-root>/bus/usb/devices`,
/// in name order (the older system walked in unstable glob order).
pub fn enumerate(sys_root: &Path) -> Vec<UsbDevice> {
    let base = sys_root.join("bus/usb/devices");
    let names = sorted_names(&base);
    names
        .iter()
        .filter(|name| !name.contains(':'))
        .filter_map(|name| device(&base, name, &names))
        .collect()
}

fn device(base: &Path, name: &str, all_names: &[String]) -> Option<UsbDevice> {
    let dir = base.join(name);
    let vid = attr(&dir, "idVendor")?.to_ascii_lowercase();
    let pid = attr(&dir, "idProduct")?.to_ascii_lowercase();
    let prefix = format!("{name}:");
    let interfaces = all_names
        .iter()
        .filter(|n| n.starts_with(&prefix))
        .map(|n| {
            let dir = base.join(n);
            Interface {
                name: n.clone(),
                class: attr(&dir, "bInterfaceClass").and_then(|v| u8::from_str_radix(&v, 16).ok()),
                subclass: attr(&dir, "bInterfaceSubClass")
                    .and_then(|v| u8::from_str_radix(&v, 16).ok()),
                driver: fs::read_link(dir.join("driver"))
                    .ok()
                    .and_then(|p| Some(p.file_name()?.to_str()?.to_string())),
            }
        })
        .collect();
    Some(UsbDevice {
        sysfs_path: dir.clone(),
        name: name.to_string(),
        vid,
        pid,
        serial: attr(&dir, "serial").unwrap_or_default(),
        manufacturer: attr(&dir, "manufacturer"),
        product: attr(&dir, "product"),
        busnum: attr(&dir, "busnum").and_then(|v| v.parse().ok()),
        devnum: attr(&dir, "devnum").and_then(|v| v.parse().ok()),
        interfaces,
    })
}

/// A sysfs attribute, trimmed; `None` when missing, unreadable or not text.
fn attr(dir: &Path, name: &str) -> Option<String> {
    // A sysfs attribute is at most a page; a fixture tree may hold anything.
    let bytes = fsutil::read_limited(&dir.join(name), 64 * 1024).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    Some(text.trim().to_string())
}

/// The device for a USB address (§2.2): a serial match (case-insensitive)
/// wins; else the first vid/pid match. `port-<topology>` names the device
/// by its sysfs name.
pub fn find(sys_root: &Path, vid: u16, pid: u16, serial: &str) -> Option<UsbDevice> {
    let devices = enumerate(sys_root);
    if let Some(topology) = serial.strip_prefix("port-") {
        return devices.into_iter().find(|d| d.name == topology);
    }
    let (vid, pid) = (format!("{vid:04x}"), format!("{pid:04x}"));
    let mut matching = devices
        .into_iter()
        .filter(|d| d.vid == vid && d.pid == pid)
        .peekable();
    let first = matching.peek().cloned();
    if serial.is_empty() {
        return first;
    }
    matching
        .find(|d| d.serial.eq_ignore_ascii_case(serial.trim()))
        .or(first)
}

/// A tty the kernel made for a USB serial adapter (`ttyUSB*`, `ttyACM*`),
/// with the USB facts that name it again after re-enumeration.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct UsbTty {
    /// The tty's name, e.g. `ttyUSB0`; its node is `<dev-root>/<tty>`.
    pub tty: String,
    /// The USB device's sysfs directory (resolved) and name, e.g. `1-1.2`.
    pub sysfs_path: PathBuf,
    pub device: String,
    /// The interface the tty hangs off (`1-1.2:1.0`), its number and driver.
    pub interface: Option<String>,
    pub interface_number: Option<u8>,
    pub driver: Option<String>,
    pub vid: String,
    pub pid: String,
    pub serial: String,
    pub manufacturer: Option<String>,
    pub product: Option<String>,
}

/// Every USB tty under `<sys-root>/class/tty`, in name order. A tty with
/// no `device` link (virtual consoles, ptys) or no USB ancestor (a SoC
/// UART) is not one.
pub fn usb_ttys(sys_root: &Path) -> Vec<UsbTty> {
    sorted_names(&sys_root.join("class/tty"))
        .iter()
        .filter_map(|name| usb_tty(sys_root, name))
        .collect()
}

/// The entries of `dir` in name order (none if it cannot be read), so
/// every listing is stable where the older system walked in glob order.
fn sorted_names(dir: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}

/// The USB facts of tty `name`, walking up from its sysfs directory to the
/// nearest interface (`bInterfaceNumber`) and device (`idVendor`).
pub fn usb_tty(sys_root: &Path, name: &str) -> Option<UsbTty> {
    let entry = sys_root.join("class/tty").join(name);
    fs::symlink_metadata(entry.join("device")).ok()?;
    let real = fs::canonicalize(&entry).ok()?;
    let top = fs::canonicalize(sys_root).unwrap_or_else(|_| sys_root.to_path_buf());
    let mut interface: Option<PathBuf> = None;
    let mut dir = real.parent();
    while let Some(current) = dir.filter(|d| d.starts_with(&top) && *d != top) {
        if interface.is_none() && current.join("bInterfaceNumber").exists() {
            interface = Some(current.to_path_buf());
        }
        if let (Some(vid), Some(pid)) = (attr(current, "idVendor"), attr(current, "idProduct")) {
            let file_name = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned());
            return Some(UsbTty {
                tty: name.to_string(),
                sysfs_path: current.to_path_buf(),
                device: file_name(current).unwrap_or_default(),
                interface_number: interface
                    .as_deref()
                    .and_then(|i| attr(i, "bInterfaceNumber"))
                    .and_then(|v| u8::from_str_radix(&v, 16).ok()),
                driver: interface.as_deref().and_then(|i| {
                    fs::read_link(i.join("driver"))
                        .ok()
                        .as_deref()
                        .and_then(file_name)
                }),
                interface: interface.as_deref().and_then(file_name),
                vid: vid.to_ascii_lowercase(),
                pid: pid.to_ascii_lowercase(),
                serial: attr(current, "serial").unwrap_or_default(),
                manufacturer: attr(current, "manufacturer"),
                product: attr(current, "product"),
            });
        }
        dir = current.parent();
    }
    None
}

/// `usbtmc` is in `<proc-root>/modules` (§2.5).
pub fn usbtmc_loaded(proc_root: &Path) -> bool {
    fsutil::read_limited(&proc_root.join("modules"), 4 << 20).is_ok_and(|text| {
        text.split(|b| *b == b'\n')
            .any(|l| l.starts_with(b"usbtmc "))
    })
}

/// `blacklist usbtmc` in `<etc>/modprobe.d/blacklist-usbtmc.conf`, ignoring
/// comments (§2.5; lagerd's addition).
pub fn blacklist_installed(etc: &Path) -> bool {
    let file = fsutil::read_limited(&etc.join("modprobe.d/blacklist-usbtmc.conf"), 1 << 20);
    file.is_ok_and(|bytes| {
        String::from_utf8_lossy(&bytes)
            .lines()
            .map(str::trim)
            .any(|line| line.split_whitespace().collect::<Vec<_>>() == ["blacklist", "usbtmc"])
    })
}

const DMESG_UNREADABLE: &str = "(kernel log not readable from the box container: the services run unprivileged and dmesg_restrict is set. Per-device enumeration history comes from the host journal instead -- see `lager diagnose`.)";
const DMESG_TIMEOUT: Duration = Duration::from_secs(3);
const DMESG_NO_USB: &str = "(no USB lines in the kernel ring buffer for this boot)";

/// The last 20 USB lines among the last 200 of `dmesg` (found on PATH, no
/// sudo, 3 s at most); a fixed explanation when it cannot be read (§2.6).
pub fn dmesg_tail() -> String {
    let Ok(mut child) = Command::new("dmesg")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
    else {
        return DMESG_UNREADABLE.to_string();
    };
    // Read while it runs: a kernel log larger than the pipe buffer would
    // otherwise block dmesg until the deadline (seen: 3 s for a 136 kB log).
    let stdout = child.stdout.take();
    let (sender, receiver) = mpsc::channel();
    let reader = thread::Builder::new().name("dmesg".into()).spawn(move || {
        // Only the tail is used; a huge ring buffer is read through, not kept.
        let out = stdout
            .map(|out| read_tail(out, DMESG_KEEP))
            .unwrap_or_default();
        let _ = sender.send(out);
    });
    let output = match reader {
        Ok(_) => receiver.recv_timeout(DMESG_TIMEOUT).ok(),
        Err(_) => None,
    };
    if output.is_none() {
        let _ = child.kill();
    }
    let status = child.wait().ok();
    match (status, output) {
        (Some(status), Some(out)) if status.success() => usb_lines(&String::from_utf8_lossy(&out)),
        _ => DMESG_UNREADABLE.to_string(),
    }
}

/// Most of `dmesg` kept: far more than its last 200 lines need.
const DMESG_KEEP: usize = 1 << 20;

/// The last `keep` bytes (at least) of everything `reader` gives, reading
/// it to its end without holding more than twice that.
fn read_tail(mut reader: impl std::io::Read, keep: usize) -> Vec<u8> {
    let mut tail = Vec::new();
    let mut block = [0u8; 16 * 1024];
    loop {
        match reader.read(&mut block) {
            Ok(0) => return tail,
            Ok(n) => {
                tail.extend_from_slice(&block[..n]);
                if tail.len() > 2 * keep {
                    tail.drain(..tail.len() - keep);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return tail,
        }
    }
}

fn usb_lines(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    let recent = &lines[lines.len().saturating_sub(200)..];
    let usb: Vec<&str> = recent
        .iter()
        .copied()
        .filter(|l| l.to_ascii_lowercase().contains("usb"))
        .collect();
    if usb.is_empty() {
        return DMESG_NO_USB.to_string();
    }
    usb[usb.len().saturating_sub(20)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sysfs-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn write(dir: &Path, attrs: &[(&str, &str)]) {
        fs::create_dir_all(dir).unwrap();
        for (name, value) in attrs {
            fs::write(dir.join(name), format!("{value}\n")).unwrap();
        }
    }

    /// Two Keithleys (one bound to usbtmc), a hub, a malformed entry.
    fn fixture(root: &Path) {
        let base = root.join("bus/usb/devices");
        write(
            &base.join("usb1"),
            &[
                ("idVendor", "1d6b"),
                ("idProduct", "0002"),
                ("busnum", "1"),
                ("devnum", "1"),
            ],
        );
        write(
            &base.join("1-1.2"),
            &[
                ("idVendor", "05e6"),
                ("idProduct", "2281"),
                ("serial", "4587429"),
                ("busnum", "1"),
                ("devnum", "4"),
                ("product", "2281S"),
            ],
        );
        write(
            &base.join("1-1.2:1.0"),
            &[("bInterfaceClass", "fe"), ("bInterfaceSubClass", "03")],
        );
        let drivers = root.join("bus/usb/drivers/usbtmc");
        fs::create_dir_all(&drivers).unwrap();
        std::os::unix::fs::symlink(&drivers, base.join("1-1.2:1.0/driver")).unwrap();
        write(
            &base.join("1-1.3"),
            &[
                ("idVendor", "05E6"),
                ("idProduct", "2281"),
                ("serial", "OTHER"),
                ("busnum", "1"),
                ("devnum", "x"),
            ],
        );
        write(
            &base.join("1-1.3:1.0"),
            &[("bInterfaceClass", "zz"), ("bInterfaceSubClass", "03")],
        );
        fs::create_dir_all(base.join("1-9")).unwrap(); // no idVendor: skipped
    }

    #[test]
    fn enumerates_devices_with_interfaces_and_drivers() {
        let root = temp("enumerate");
        fixture(&root);
        let devices = enumerate(&root);
        let names: Vec<&str> = devices.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["1-1.2", "1-1.3", "usb1"]);
        let keithley = &devices[0];
        assert_eq!(
            (
                keithley.vid.as_str(),
                keithley.pid.as_str(),
                keithley.serial.as_str()
            ),
            ("05e6", "2281", "4587429")
        );
        assert_eq!(
            keithley.device_path(),
            Some(PathBuf::from("/dev/bus/usb/001/004"))
        );
        assert!(keithley.is_usbtmc() && keithley.usbtmc_bound());
        assert_eq!(keithley.product.as_deref(), Some("2281S"));
        let other = &devices[1];
        assert_eq!(other.vid, "05e6", "sysfs hex is compared lower-case");
        assert_eq!(other.device_path(), None, "malformed devnum");
        assert!(!other.is_usbtmc(), "malformed class");
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn finds_by_serial_then_first_match_then_topology() {
        let root = temp("find");
        fixture(&root);
        assert_eq!(
            find(&root, 0x05e6, 0x2281, "other").unwrap().name,
            "1-1.3",
            "serial, any case"
        );
        assert_eq!(find(&root, 0x05e6, 0x2281, "").unwrap().name, "1-1.2");
        assert_eq!(
            find(&root, 0x05e6, 0x2281, "unknown").unwrap().name,
            "1-1.2",
            "first vid/pid match"
        );
        assert_eq!(
            find(&root, 0x05e6, 0x2281, "port-1-1.3").unwrap().name,
            "1-1.3"
        );
        assert!(find(&root, 0x1234, 0x5678, "").is_none());
        assert!(find(&root.join("nowhere"), 0x05e6, 0x2281, "").is_none());
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn usb_ttys_carry_their_adapters_facts() {
        let root = temp("tty");
        let usb = root.join("devices/pci0/usb1/1-1.4");
        write(
            &usb,
            &[
                ("idVendor", "0403"),
                ("idProduct", "6011"),
                ("serial", "FT4232H01"),
                ("product", "Quad RS232-HS"),
            ],
        );
        let class = root.join("class/tty");
        fs::create_dir_all(&class).unwrap();
        for (interface, tty) in [("1-1.4:1.0", "ttyUSB0"), ("1-1.4:1.2", "ttyUSB2")] {
            let number = &interface[interface.len() - 1..];
            write(
                &usb.join(interface),
                &[("bInterfaceNumber", &format!("0{number}"))],
            );
            let node = usb.join(interface).join(tty).join("tty").join(tty);
            fs::create_dir_all(&node).unwrap();
            std::os::unix::fs::symlink(usb.join(interface).join(tty), node.join("device")).unwrap();
            std::os::unix::fs::symlink(&node, class.join(tty)).unwrap();
        }
        let drivers = root.join("bus/usb/drivers/ftdi_sio");
        fs::create_dir_all(&drivers).unwrap();
        std::os::unix::fs::symlink(&drivers, usb.join("1-1.4:1.2/driver")).unwrap();
        // A virtual console: no device link.
        fs::create_dir_all(class.join("tty1")).unwrap();
        let ttys = usb_ttys(&root);
        let names: Vec<&str> = ttys.iter().map(|t| t.tty.as_str()).collect();
        assert_eq!(names, ["ttyUSB0", "ttyUSB2"]);
        let port = &ttys[1];
        assert_eq!(
            (
                port.serial.as_str(),
                port.interface_number,
                port.driver.as_deref()
            ),
            ("FT4232H01", Some(2), Some("ftdi_sio"))
        );
        assert_eq!((port.vid.as_str(), port.device.as_str()), ("0403", "1-1.4"));
        assert_eq!(port.interface.as_deref(), Some("1-1.4:1.2"));
        assert_eq!(usb_tty(&root, "tty1"), None);
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn kernel_checks() {
        let root = temp("kernel");
        fs::write(
            root.join("modules"),
            "usbtmcx 1 0 - Live\nusbtmc 36864 0 - Live 0x0\n",
        )
        .unwrap();
        assert!(usbtmc_loaded(&root));
        fs::write(root.join("modules"), "usbtmcx 1 0 - Live\n").unwrap();
        assert!(!usbtmc_loaded(&root));
        assert!(!usbtmc_loaded(&root.join("nowhere")));
        fs::create_dir_all(root.join("modprobe.d")).unwrap();
        fs::write(
            root.join("modprobe.d/blacklist-usbtmc.conf"),
            "# blacklist usbtmc\n",
        )
        .unwrap();
        assert!(!blacklist_installed(&root), "a comment is not a blacklist");
        fs::write(
            root.join("modprobe.d/blacklist-usbtmc.conf"),
            "# lager\nblacklist  usbtmc\n",
        )
        .unwrap();
        assert!(blacklist_installed(&root));
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn keeps_the_last_usb_lines_of_the_kernel_log() {
        // Every 5th of 300 lines mentions USB: the last 200 lines hold 40 of
        // them, of which the last 20 are kept.
        let log: String = (0..300)
            .map(|i| {
                if i % 5 == 0 {
                    format!("[{i}] usb 1-1.2: reset\n")
                } else {
                    format!("[{i}] eth0 up\n")
                }
            })
            .collect();
        let tail = usb_lines(&log);
        let lines: Vec<&str> = tail.lines().collect();
        assert_eq!(lines.len(), 20);
        assert_eq!(
            (lines[0], lines[19]),
            ("[200] usb 1-1.2: reset", "[295] usb 1-1.2: reset")
        );
        assert_eq!(usb_lines("nothing here\n"), DMESG_NO_USB);
    }
}
