//! The `/diagnose/*` endpoints (diagnose.md §3): facts about one instrument
//! address, gathered from sysfs, `/proc`, the kernel and a fresh `*IDN?`
//! probe, for `lager diagnose` to classify. Read-only except the probe,
//! which goes through the same device lock as every other instrument open.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::addr::Address;
use serde_json::{json, Value};

use std::sync::Arc;

use crate::devlock::DeviceLocks;
use crate::instruments::session::{self, ScanRoots, Sessions};
use crate::instruments::transport::Transport;
use crate::procscan::{self, Holder, Target};
use crate::sysfs::{self, UsbDevice};

/// The fresh probe's open + `*IDN?` budget (§3, 2000 ms).
const PROBE_TIMEOUT: Duration = Duration::from_millis(2000);

/// Where the OS facts come from; tests point these at fixture trees.
pub struct Roots {
    pub sys: PathBuf,
    pub proc: PathBuf,
    pub dev: PathBuf,
    pub state: PathBuf,
}

/// Why a diagnose request has no answer: the request itself is wrong.
#[derive(Debug, PartialEq)]
pub enum DiagnoseError {
    /// No `address` given.
    NoAddress,
    /// `/diagnose/usb` of an address that is no USB instrument's.
    NotUsb { address: String },
}

impl std::fmt::Display for DiagnoseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // diagnose.md §3's texts, which clients match.
        f.write_str(match self {
            DiagnoseError::NoAddress => "address parameter required",
            DiagnoseError::NotUsb { .. } => {
                "not a USB VISA address (expected USB0::0xVID::0xPID::SERIAL::INSTR)"
            }
        })
    }
}

/// An endpoint's facts, as the JSON body of diagnose.md §3.
pub type Facts = Result<Value, DiagnoseError>;

pub struct Diagnose {
    roots: Roots,
    /// The daemon's one device-lock manager, shared with the sessions.
    device_locks: Arc<DeviceLocks>,
    sessions: Arc<Sessions>,
}

impl Diagnose {
    pub fn new(roots: Roots, device_locks: Arc<DeviceLocks>, sessions: Arc<Sessions>) -> Diagnose {
        Diagnose {
            roots,
            device_locks,
            sessions,
        }
    }

    /// `GET /diagnose/usb?address=A`: the host's view of a USB instrument.
    pub fn usb(&self, address: &str) -> Facts {
        let Ok(Address::Usb {
            vid, pid, serial, ..
        }) = Address::parse(address)
        else {
            return Err(DiagnoseError::NotUsb {
                address: address.to_string(),
            });
        };
        let usbtmc_loaded = sysfs::usbtmc_loaded(&self.roots.proc);
        let dmesg_tail = sysfs::dmesg_tail();
        let blacklist_installed = self.blacklist_installed();
        let Some(device) = sysfs::find(&self.roots.sys, vid, pid, &serial) else {
            return Ok(json!({
                    "address": address,
                    "enumerated": false,
                    "sysfs_path": null,
                    "device_path": null,
                    "is_usbtmc": false,
                    "lsof": [],
                    "usbtmc_loaded": usbtmc_loaded,
                    "blacklist_installed": blacklist_installed,
                    "dmesg_tail": dmesg_tail,
                    "classification_hint": "instrument not enumerated on USB — check power and cabling",
            }));
        };
        let holders = self.holders(&device);
        Ok(json!({
                "address": address,
                "enumerated": true,
                "sysfs_path": device.sysfs_path,
                "device_path": device.device_path(),
                "vid": device.vid,
                "pid": device.pid,
                "serial": device.serial,
                "manufacturer": device.manufacturer,
                "product": device.product,
                "is_usbtmc": device.is_usbtmc(),
                "usbtmc_bound": device.usbtmc_bound(),
                "interfaces": device.interfaces,
                "lsof": holders,
                "usbtmc_loaded": usbtmc_loaded,
                "blacklist_installed": blacklist_installed,
                "dmesg_tail": dmesg_tail,
        }))
    }

    /// `GET /diagnose/visa?address=A`: a fresh open and `*IDN?`, under the
    /// device lock, always closed again.
    pub fn visa(&self, address: &str) -> Facts {
        if address.is_empty() {
            return Err(DiagnoseError::NoAddress);
        }
        // §3 step 2: a fresh open would collide with the shared session.
        if self.sessions.is_open(address) {
            return Ok(
                json!({"address": address, "skipped": true, "reason": "lagerd already holds a shared session for this address; a fresh open would collide with it. See the Dispatcher section for the session's state."}),
            );
        }
        let started = Instant::now();
        let elapsed_ms = || started.elapsed().as_millis() as u64;
        // A probe that failed is a fact too (§3 step 3): 200, with its class.
        let failure = |error: String, class: &str, elapsed_ms: u64| {
            Ok(
                json!({"address": address, "error": error, "error_class": class, "elapsed_ms": elapsed_ms}),
            )
        };
        let parsed = match Address::parse(address) {
            Ok(parsed) => parsed,
            Err(e) => return failure(e.to_string(), "other", elapsed_ms()),
        };
        let key = parsed.canonical();
        // The same transports as the sessions (§3 lagerd note): a USB
        // address is opened through libusb, claimed, asked and released.
        let roots = ScanRoots {
            proc: self.roots.proc.clone(),
            dev: self.roots.dev.clone(),
        };
        let probe = self.device_locks.with(&key, || {
            Transport::open(&parsed, PROBE_TIMEOUT)
                .and_then(|mut transport| transport.query("*IDN?"))
                .map_err(|e| session::name_holders(e, &roots))
        });
        match probe {
            Ok(Ok(idn)) => {
                Ok(json!({"address": address, "idn": idn.trim(), "elapsed_ms": elapsed_ms()}))
            }
            Ok(Err(e)) => failure(e.to_string(), e.class(), elapsed_ms()),
            Err(contended) => failure(contended.to_string(), "busy", elapsed_ms()),
        }
    }

    /// `GET /diagnose/dispatcher?address=A`: the shared session pool.
    pub fn dispatcher(&self, address: &str) -> Facts {
        if address.is_empty() {
            return Err(DiagnoseError::NoAddress);
        }
        let cached = self.sessions.is_open(address);
        let drivers = if cached {
            json!([{"device_name": "keithley", "driver_class": "Keithley2281S"}])
        } else {
            json!([])
        };
        let pool = self.sessions.open_count();
        Ok(
            json!({"address": address, "cached_session": cached, "cached_drivers": drivers, "shared_pool_size": pool}),
        )
    }

    /// Processes holding the device's usbfs node or a `/dev/usbtmcN` the
    /// kernel driver made for it; one entry per process.
    fn holders(&self, device: &UsbDevice) -> Vec<Holder> {
        let mut nodes: Vec<PathBuf> = device.device_path().into_iter().collect();
        for interface in &device.interfaces {
            let misc = device
                .sysfs_path
                .with_file_name(&interface.name)
                .join("usbmisc");
            if let Ok(entries) = std::fs::read_dir(misc) {
                nodes.extend(
                    entries
                        .flatten()
                        .map(|e| Path::new("/dev").join(e.file_name())),
                );
            }
        }
        let mut holders: Vec<Holder> = Vec::new();
        for node in nodes {
            for holder in procscan::holders(&self.roots.proc, &Target::new(&node, &self.roots.dev))
            {
                if !holders.iter().any(|h| h.pid == holder.pid) {
                    holders.push(holder);
                }
            }
        }
        holders
    }

    /// The usbtmc blacklist in the state dir's or the system's modprobe.d.
    fn blacklist_installed(&self) -> bool {
        sysfs::blacklist_installed(&self.roots.state)
            || sysfs::blacklist_installed(Path::new("/etc"))
    }
}
