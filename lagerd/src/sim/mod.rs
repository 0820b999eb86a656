//! A simulated Keithley 2281S-20-6 (instruments.md §9): real SCPI over a
//! real TCP socket on loopback, with the state a real one has (entry
//! function, supply setpoints and output, battery-simulator parameters,
//! measurements that follow a simple load model, the error queue).
//!
//! Faults are injected at the socket, as a LAN instrument shows them
//! (instruments.md §10.8): a busy one accepts a connection and resets it at
//! once (EBUSY), an unplugged one resets its sessions and refuses new ones
//! (ENODEV), a muted one never answers (ETIMEDOUT), garbled replies are
//! garbage bytes. They are driven through a line-based control port, which
//! also counts the sessions opened (`connections?`).
//! Nothing above the transport can tell this from an instrument.

pub mod dut;
pub mod rigol;
pub mod serial;
pub mod usbtmc;

use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use common::bounded::Range;
use log::debug;

use crate::instruments::actions::{BUILTIN_MODELS, MODEL_POINTS};

pub const SERIAL: &str = "4587429";
const MAX_VOLTS: f64 = 20.0;
const MAX_AMPS: f64 = 6.0;
const MODEL_RESISTANCE: f64 = 0.067;
/// Commands kept for `log?`: enough for any test's sequence.
const LOG_MAX: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Function {
    PowerSupply,
    Battery,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Trip {
    None,
    Ocp,
    Ovp,
}

/// What a simulated instrument does with its SCPI lines.
pub trait Model: Send {
    /// Handles one command line; `Some(reply)` for queries.
    fn execute(&mut self, line: &str) -> Option<String>;
    /// Amps the simulated load would draw.
    fn set_load(&mut self, amps: f64);
}

/// Which instrument to simulate.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    Keithley2281S,
    RigolDp832,
}

/// The Keithley's state, as its front panel would show it.
struct Keithley {
    function: Function,
    output: bool,
    volts: f64,
    amps: f64,
    ovp: f64,
    ocp: f64,
    trip: Trip,
    battery_output: bool,
    dynamic: bool,
    soc: f64,
    voc: f64,
    voc_full: f64,
    voc_empty: f64,
    resistance_offset: f64,
    capacity: f64,
    current_limit: f64,
    current_protection: f64,
    voltage_protection: f64,
    model: String,
    /// Stored models, slots 1–9: (VOC list, resistance list), empty = none.
    slots: [(Vec<f64>, Vec<f64>); 9],
    /// Amps the simulated load would draw.
    load: f64,
    errors: VecDeque<(i32, &'static str)>,
    /// When the dynamic battery model last drained its charge.
    drained_at: Instant,
}

impl Keithley {
    fn reset() -> Keithley {
        Keithley {
            function: Function::PowerSupply,
            output: false,
            volts: 0.0,
            amps: 0.1,
            ovp: 21.0,
            ocp: 6.1,
            trip: Trip::None,
            battery_output: false,
            dynamic: false,
            soc: 100.0,
            voc: 4.2,
            voc_full: 4.2,
            voc_empty: 3.0,
            resistance_offset: 0.0,
            capacity: 2.0,
            current_limit: 1.0,
            current_protection: 6.1,
            voltage_protection: 21.0,
            model: "0".into(),
            slots: Default::default(),
            load: 0.0,
            errors: VecDeque::new(),
            drained_at: Instant::now(),
        }
    }

    fn push_error(&mut self, code: i32, message: &'static str) {
        if self.errors.len() < 32 {
            self.errors.push_back((code, message));
        }
    }

    /// Supply current: the load, capped by the current limit (CC mode).
    fn supply_amps(&self) -> f64 {
        if self.output {
            self.load.min(self.amps)
        } else {
            0.0
        }
    }

    fn in_cc(&self) -> bool {
        self.output && self.load > self.amps
    }

    fn battery_amps(&self) -> f64 {
        if self.battery_output {
            self.load.min(self.current_limit)
        } else {
            0.0
        }
    }

    /// The active model's VOC and resistance at each SOC percent: a stored
    /// slot's tables, else a straight line from the empty to the full VOC
    /// with the model's fixed resistance (`None`).
    fn model_tables(&self) -> Option<&(Vec<f64>, Vec<f64>)> {
        let slot = self.model.parse::<usize>().ok()?.checked_sub(1)?;
        self.slots
            .get(slot)
            .filter(|(voc, res)| voc.len() == MODEL_POINTS && res.len() == MODEL_POINTS)
    }

    /// VOC at `soc` %, by the model: SOC and VOC are one state.
    fn voc_at(&self, soc: f64) -> f64 {
        let soc = soc.clamp(0.0, 100.0);
        match self.model_tables() {
            Some((voc, _)) => interpolate(voc, soc),
            None => self.voc_empty + (self.voc_full - self.voc_empty) * soc / 100.0,
        }
    }

    /// SOC % at which the model has `voc` (clamped to 0–100).
    fn soc_at(&self, voc: f64) -> f64 {
        match self.model_tables() {
            Some((table, _)) => {
                // Tables are non-decreasing: the first point at or above voc.
                match table.iter().position(|v| *v >= voc) {
                    None => 100.0,
                    Some(0) => 0.0,
                    Some(i) => {
                        let (low, high) = (table[i - 1], table[i]);
                        let fraction = if high > low {
                            (voc - low) / (high - low)
                        } else {
                            0.0
                        };
                        (i - 1) as f64 + fraction
                    }
                }
            }
            None if self.voc_full > self.voc_empty => (100.0 * (voc - self.voc_empty)
                / (self.voc_full - self.voc_empty))
                .clamp(0.0, 100.0),
            None => 100.0,
        }
    }

    /// Series resistance now: the model's at this SOC plus the offset.
    fn resistance(&self) -> f64 {
        let model = match self.model_tables() {
            Some((_, res)) => interpolate(res, self.soc),
            None => MODEL_RESISTANCE,
        };
        model + self.resistance_offset
    }

    fn terminal_volts(&self) -> f64 {
        self.voc - self.battery_amps() * self.resistance()
    }

    /// In dynamic mode the charge follows the current drawn since the last
    /// command (capacity in Ah), and VOC follows the charge.
    fn drain(&mut self) {
        let now = Instant::now();
        let hours = now.duration_since(self.drained_at).as_secs_f64() / 3600.0;
        self.drained_at = now;
        if self.function == Function::Battery && self.battery_output && self.dynamic {
            let used = 100.0 * self.battery_amps() * hours / self.capacity.max(0.001);
            if used > 0.0 {
                self.soc = (self.soc - used).max(0.0);
                self.voc = self.voc_at(self.soc);
            }
        }
    }

    /// Protections, checked before every command as the instrument checks
    /// them continuously: a supply delivering more than its OCP level, or a
    /// simulated battery past its current or terminal-voltage protection,
    /// trips and turns the output off.
    fn enforce_protection(&mut self) {
        if self.output && self.supply_amps() > self.ocp {
            self.trip = Trip::Ocp;
            self.output = false;
        }
        if self.battery_output && self.battery_amps() > self.current_protection {
            self.trip = Trip::Ocp;
            self.battery_output = false;
        }
        if self.battery_output && self.terminal_volts() > self.voltage_protection {
            self.trip = Trip::Ovp;
            self.battery_output = false;
        }
    }

    /// Handles one command line; `Some(reply)` for queries.
    fn handle(&mut self, line: &str) -> Option<String> {
        self.drain();
        self.enforce_protection();
        let line = line.trim();
        let (header, argument) = match line.split_once(char::is_whitespace) {
            Some((header, argument)) => (header, argument.trim()),
            None => (line, ""),
        };
        let query = header.ends_with('?');
        let slot = model_slot(header);
        let header = canonical_header(header.trim_end_matches('?'));
        let number = || argument.parse::<f64>().ok();
        let on_off = || match argument.to_ascii_uppercase().as_str() {
            "ON" | "1" => Some(true),
            "OFF" | "0" => Some(false),
            _ => None,
        };
        let fmt = |v: f64| format_number(v);
        macro_rules! set_in_range {
            ($field:expr, $min:expr, $max:expr) => {
                match number() {
                    Some(v) if ($min..=$max).contains(&v) => $field = v,
                    Some(_) => self.push_error(-222, "Data out of range"),
                    None => self.push_error(-224, "Illegal parameter value"),
                }
            };
        }
        macro_rules! battery_only {
            () => {
                if self.function != Function::Battery {
                    self.push_error(700, "Command not permitted in this mode");
                    return None;
                }
            };
        }
        macro_rules! battery_param {
            ($field:expr, $min:expr, $max:expr) => {{
                battery_only!();
                if query {
                    return Some(fmt($field));
                }
                if self.battery_output {
                    self.push_error(704, "Not allowed while output is running");
                    return None;
                }
                set_in_range!($field, $min, $max);
                None
            }};
        }
        match (header.as_str(), query) {
            ("*IDN", true) => Some(format!(
                "KEITHLEY INSTRUMENTS,MODEL 2281S-20-6,{SERIAL},1.05.3b"
            )),
            ("*RST", false) => {
                let load = self.load;
                *self = Keithley::reset();
                self.load = load;
                None
            }
            ("*CLS", false) => {
                self.errors.clear();
                None
            }
            ("SYST:ERR", true) => Some(match self.errors.pop_front() {
                Some((code, message)) => format!("{code},\"{message}\""),
                None => "0,\"No error\"".into(),
            }),
            ("ENTR:FUNC", true) => Some(match self.function {
                Function::PowerSupply => "POW".into(),
                Function::Battery => "BATT".into(),
            }),
            ("ENTR:FUNC", false) => {
                let token = argument.trim_matches('"').to_ascii_uppercase();
                let function = match token.as_str() {
                    "POW" | "POWER" | "POWERSUPPLY" => Function::PowerSupply,
                    "BATT" | "BATTERY" | "SIM" => Function::Battery,
                    _ => {
                        self.push_error(-224, "Illegal parameter value");
                        return None;
                    }
                };
                self.function = function;
                self.output = false;
                self.battery_output = false;
                None
            }
            ("ABOR", false) | ("INIT:CONT", false) => None,
            ("OUTP", true) => Some(if self.output { "1" } else { "0" }.into()),
            ("OUTP", false) => {
                match on_off() {
                    Some(true) if self.function != Function::PowerSupply => {
                        self.push_error(700, "Command not permitted in this mode")
                    }
                    Some(true) if self.volts > self.ovp => {
                        self.trip = Trip::Ovp;
                        self.output = false;
                    }
                    Some(on) => self.output = on,
                    None => self.push_error(-224, "Illegal parameter value"),
                }
                None
            }
            ("OUTP:PROT:CLE", false) => {
                self.trip = Trip::None;
                None
            }
            ("OUTP:PROT:TRIP", true) => Some(
                match self.trip {
                    Trip::None => "NONE",
                    Trip::Ocp => "OCP",
                    Trip::Ovp => "OVP",
                }
                .into(),
            ),
            ("SOUR:VOLT", true) => Some(fmt(self.volts)),
            ("SOUR:VOLT", false) => {
                set_in_range!(self.volts, 0.0, MAX_VOLTS);
                if self.output && self.volts > self.ovp {
                    self.trip = Trip::Ovp;
                    self.output = false;
                }
                None
            }
            ("SOUR:CURR", true) => Some(fmt(self.amps)),
            ("SOUR:CURR", false) => {
                set_in_range!(self.amps, 0.0, MAX_AMPS);
                None
            }
            ("SOUR:VOLT:PROT", true) => Some(fmt(self.ovp)),
            ("SOUR:VOLT:PROT", false) => {
                set_in_range!(self.ovp, 0.0, MAX_VOLTS + 1.0);
                // A level under the live output trips at once.
                if self.output && self.volts > self.ovp {
                    self.trip = Trip::Ovp;
                    self.output = false;
                }
                None
            }
            ("SOUR:CURR:PROT", true) => Some(fmt(self.ocp)),
            ("SOUR:CURR:PROT", false) => {
                set_in_range!(self.ocp, 0.0, MAX_AMPS + 0.1);
                None
            }
            ("MEAS:VOLT", true) => Some(fmt(if !self.output {
                0.0
            } else if self.in_cc() {
                self.volts * self.amps / self.load
            } else {
                self.volts
            })),
            ("MEAS:CURR", true) => Some(fmt(self.supply_amps())),
            ("STAT:QUES:INST:ISUM:COND", true) => {
                let mut bits = 0;
                if self.output {
                    bits |= if self.in_cc() { 1 } else { 2 };
                }
                bits |= match self.trip {
                    Trip::Ocp => 4,
                    Trip::Ovp => 8,
                    Trip::None => 0,
                };
                Some(bits.to_string())
            }
            ("BATT:OUTP", true) => Some(if self.battery_output { "1" } else { "0" }.into()),
            ("BATT:OUTP", false) => {
                battery_only!();
                match on_off() {
                    Some(on) => self.battery_output = on,
                    None => self.push_error(-224, "Illegal parameter value"),
                }
                None
            }
            ("BATT:OUTP:PROT:CLE", false) | ("BATT:PROT:CLE", false) => {
                self.trip = Trip::None;
                None
            }
            ("BATT:SIM:METH", true) => {
                battery_only!();
                Some(if self.dynamic { "DYN" } else { "STAT" }.into())
            }
            ("BATT:SIM:METH", false) => {
                battery_only!();
                match argument.to_ascii_uppercase().as_str() {
                    "STAT" | "STATIC" => self.dynamic = false,
                    "DYN" | "DYNAMIC" => self.dynamic = true,
                    _ => self.push_error(-224, "Illegal parameter value"),
                }
                None
            }
            // SOC and VOC are tied by the model: setting one moves the other;
            // moving an end of the curve keeps the charge.
            ("BATT:SIM:SOC", _) => {
                let reply = battery_param!(self.soc, 0.0, 100.0);
                self.voc = self.voc_at(self.soc);
                reply
            }
            ("BATT:SIM:VOC", _) => {
                let reply = battery_param!(self.voc, 0.0, 60.0);
                self.soc = self.soc_at(self.voc);
                reply
            }
            ("BATT:SIM:VOC:FULL", _) => {
                let reply = battery_param!(self.voc_full, 0.0, 60.0);
                self.voc = self.voc_at(self.soc);
                reply
            }
            ("BATT:SIM:VOC:EMPT", _) => {
                let reply = battery_param!(self.voc_empty, 0.0, 60.0);
                self.voc = self.voc_at(self.soc);
                reply
            }
            ("BATT:SIM:RES:OFFS", _) => battery_param!(self.resistance_offset, -100.0, 100.0),
            ("BATT:SIM:CAP:LIM", _) => battery_param!(self.capacity, 0.001, 1000.0),
            ("BATT:SIM:CURR:LIM", _) => battery_param!(self.current_limit, 0.001, MAX_AMPS),
            ("BATT:SIM:CURR:PROT", _) => {
                battery_param!(self.current_protection, 0.001, MAX_AMPS + 0.1)
            }
            ("BATT:SIM:TVOL:PROT", _) => battery_param!(self.voltage_protection, 0.0, 61.0),
            ("BATT:SIM:TVOL", true) => Some(fmt(self.terminal_volts())),
            ("BATT:SIM:CURR", true) => Some(fmt(self.battery_amps())),
            ("BATT:SIM:RES", true) => Some(fmt(self.resistance())),
            ("BATT:MOD:RCL", true) => Some(self.model.clone()),
            ("BATT:MOD:RCL", false) => {
                battery_only!();
                let name = argument.trim_matches('"').to_ascii_uppercase();
                match name.parse::<usize>() {
                    Ok(n @ 1..=9) if self.slots[n - 1].0.len() != MODEL_POINTS => {
                        self.push_error(705, "Model length not enough")
                    }
                    Ok(1..=9) => self.model = name,
                    _ if BUILTIN_MODELS.contains(&name.as_str()) => self.model = name,
                    _ => self.push_error(-224, "Illegal parameter value"),
                }
                // The charge stays; the new model decides its VOC.
                self.voc = self.voc_at(self.soc);
                None
            }
            ("BATT:MOD:VOC" | "BATT:MOD:RES", _) => {
                battery_only!();
                let Some(n) = slot else {
                    self.push_error(-113, "Undefined header");
                    return None;
                };
                let voc = header.ends_with("VOC");
                let stored = if voc {
                    &mut self.slots[n].0
                } else {
                    &mut self.slots[n].1
                };
                if query {
                    return Some(stored.iter().map(|v| fmt(*v)).collect::<Vec<_>>().join(","));
                }
                let values: Option<Vec<f64>> = argument
                    .trim_matches('"')
                    .split(',')
                    .map(|v| v.trim().parse().ok())
                    .collect();
                match values {
                    Some(values) if values.len() < MODEL_POINTS => {
                        self.push_error(705, "Model length not enough")
                    }
                    Some(values) if values.len() > MODEL_POINTS => {
                        self.push_error(702, "Model length is too long")
                    }
                    // VOC non-decreasing, resistance non-increasing.
                    Some(values)
                        if values
                            .windows(2)
                            .any(|w| if voc { w[1] < w[0] } else { w[1] > w[0] }) =>
                    {
                        self.push_error(-224, "Illegal parameter value")
                    }
                    Some(values) => *stored = values,
                    None => self.push_error(-224, "Illegal parameter value"),
                }
                None
            }
            _ => {
                self.push_error(-113, "Undefined header");
                None
            }
        }
    }
}

impl Model for Keithley {
    fn execute(&mut self, line: &str) -> Option<String> {
        self.handle(line)
    }

    fn set_load(&mut self, amps: f64) {
        self.load = amps;
    }
}

/// Linear interpolation in a 101-point table indexed by SOC percent.
fn interpolate(table: &[f64], soc: f64) -> f64 {
    let position = soc.clamp(0.0, 100.0);
    let low = (position.floor() as usize).min(table.len().saturating_sub(1));
    let high = (low + 1).min(table.len().saturating_sub(1));
    let fraction = position - low as f64;
    match (table.get(low), table.get(high)) {
        (Some(a), Some(b)) => a + (b - a) * fraction,
        _ => 0.0,
    }
}

/// The slot (0-based) of `:BATTery:MODel<n>:…`, when the header names one.
fn model_slot(header: &str) -> Option<usize> {
    header.split(':').find_map(|token| {
        let upper = token.to_ascii_uppercase();
        let digits = upper
            .strip_prefix("MODEL")
            .or_else(|| upper.strip_prefix("MOD"))?;
        match digits.parse::<usize>() {
            Ok(n @ 1..=9) => Some(n - 1),
            _ => None,
        }
    })
}

/// A simulated 2281S just powered on, for any front end: the TCP socket
/// here or the USB-TMC gadget (`sim/usbtmc.rs`).
pub fn keithley_2281s() -> Box<dyn Model> {
    Box::new(Keithley::reset())
}

/// `:STATus:QUEStionable:instrument:ISUM:COND` → `STAT:QUES:INST:ISUM:COND`:
/// upper case, leading colon dropped, long forms shortened, numeric
/// suffixes (`SOUR1`) removed.
pub(super) fn canonical_header(header: &str) -> String {
    const LONG: &[(&str, &str)] = &[
        ("ABORT", "ABOR"),
        ("APPLY", "APPL"),
        ("BATTERY", "BATT"),
        ("CAPACITY", "CAP"),
        ("CLEAR", "CLE"),
        ("CONDITION", "COND"),
        ("CONTINUOUS", "CONT"),
        ("CURRENT", "CURR"),
        ("EMPTY", "EMPT"),
        ("ENTRY", "ENTR"),
        ("ERROR", "ERR"),
        ("FUNCTION", "FUNC"),
        ("INITIATE", "INIT"),
        ("INSTRUMENT", "INST"),
        ("ISUMMARY", "ISUM"),
        ("LIMIT", "LIM"),
        ("MEASURE", "MEAS"),
        ("NSELECT", "NSEL"),
        ("METHOD", "METH"),
        ("MODEL", "MOD"),
        ("OFFSET", "OFFS"),
        ("OUTPUT", "OUTP"),
        ("PROTECTION", "PROT"),
        ("QUESTION", "QUES"),
        ("QUESTIONABLE", "QUES"),
        ("RECALL", "RCL"),
        ("RESISTANCE", "RES"),
        ("SIMULATOR", "SIM"),
        ("SOURCE", "SOUR"),
        ("STATUS", "STAT"),
        ("SYSTEM", "SYST"),
        ("TVOLTAGE", "TVOL"),
        ("VALUE", "VAL"),
        ("VOLTAGE", "VOLT"),
    ];
    header
        .trim_start_matches(':')
        .split(':')
        .map(|token| {
            let upper = token.to_ascii_uppercase();
            let base = upper.trim_end_matches(|c: char| c.is_ascii_digit());
            let base = if base.is_empty() || base.starts_with('*') {
                upper.as_str()
            } else {
                base
            };
            LONG.iter()
                .find(|(long, _)| *long == base)
                .map_or(base, |(_, short)| short)
                .to_string()
        })
        .collect::<Vec<_>>()
        .join(":")
}

/// `%g`-like plain decimals: `5`, `0.1`, `4.1866`.
pub(super) fn format_number(value: f64) -> String {
    let text = format!("{:.6}", value);
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" {
        "0".into()
    } else {
        text.into()
    }
}

/// Injected faults, shared by the instrument and control threads.
#[derive(Default)]
struct Faults {
    /// Accept opens and reset them at once until this instant.
    busy_until: Mutex<Option<Instant>>,
    /// Take commands, answer nothing.
    muted: AtomicBool,
    /// Replies held back this long.
    delay_ms: AtomicU64,
    /// The next N replies are garbage.
    garbled: AtomicUsize,
}

/// A running simulator: its instrument and control addresses.
pub struct Simulator {
    pub address: SocketAddr,
    pub control: SocketAddr,
}

struct Shared {
    model: Mutex<Box<dyn Model>>,
    faults: Faults,
    connections: AtomicUsize,
    /// The last `LOG_MAX` commands received, in order, for tests that
    /// check ordering.
    log: Mutex<VecDeque<String>>,
    /// The sessions still open, by number, for `drop` to reset; each
    /// removes itself when its peer closes, or every reopen would keep a
    /// descriptor for good.
    sessions: Mutex<Vec<(usize, TcpStream)>>,
    /// The instrument's listener; `None` while unplugged. The control
    /// thread closes and reopens it, so a fault is in place before its
    /// `OK` is sent.
    listener: Mutex<Option<TcpListener>>,
    address: SocketAddr,
}

impl Simulator {
    /// Starts a simulated 2281S on an ephemeral loopback port, with its
    /// control port beside it.
    pub fn start(kind: Kind) -> io::Result<Simulator> {
        let instrument = TcpListener::bind("127.0.0.1:0")?;
        let control = TcpListener::bind("127.0.0.1:0")?;
        let address = instrument.local_addr()?;
        instrument.set_nonblocking(true)?;
        let shared = Arc::new(Shared {
            model: Mutex::new(match kind {
                Kind::Keithley2281S => keithley_2281s(),
                Kind::RigolDp832 => Box::new(rigol::RigolDp832::new()),
            }),
            faults: Faults::default(),
            connections: AtomicUsize::new(0),
            log: Mutex::new(VecDeque::new()),
            sessions: Mutex::new(Vec::new()),
            listener: Mutex::new(Some(instrument)),
            address,
        });
        let simulator = Simulator {
            address,
            control: control.local_addr()?,
        };
        let accept_shared = shared.clone();
        thread::Builder::new()
            .name("sim-2281s".into())
            .spawn(move || accept_loop(accept_shared))?;
        thread::Builder::new()
            .name("sim-control".into())
            .spawn(move || {
                for stream in control.incoming().flatten() {
                    let shared = shared.clone();
                    let _ = thread::Builder::new()
                        .name("sim-control-conn".into())
                        .spawn(move || control_session(stream, &shared));
                }
            })?;
        Ok(simulator)
    }

    /// The address nets use for it: `TCPIP0::127.0.0.1::<port>::SOCKET`.
    pub fn visa_address(&self) -> String {
        format!(
            "TCPIP0::{}::{}::SOCKET",
            self.address.ip(),
            self.address.port()
        )
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Accepts instrument sessions while the listener is there (`drop` closes
/// it, so opens are refused: nothing listens); while busy each open is
/// accepted and reset at once, as an instrument that serves one client does.
fn accept_loop(shared: Arc<Shared>) {
    let busy = || lock(&shared.faults.busy_until).is_some_and(|until| Instant::now() < until);
    loop {
        let accepted = match lock(&shared.listener).as_ref() {
            Some(listener) => listener.accept(),
            None => Err(io::ErrorKind::WouldBlock.into()),
        };
        match accepted {
            Ok((stream, _)) if busy() => reset(stream),
            Ok((stream, _)) => {
                let _ = stream.set_nonblocking(false);
                let number = shared.connections.fetch_add(1, Ordering::SeqCst);
                if let Ok(clone) = stream.try_clone() {
                    lock(&shared.sessions).push((number, clone));
                }
                let session_shared = shared.clone();
                let _ = thread::Builder::new()
                    .name("sim-session".into())
                    .spawn(move || {
                        let _ = instrument_session(stream, &session_shared);
                        lock(&session_shared.sessions).retain(|(n, _)| *n != number);
                    });
            }
            // Non-blocking, so a fault never waits for the next connection.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(2))
            }
            Err(e) => debug!("simulator accept: {e}"),
        }
    }
}

/// A non-blocking listener on the simulator's one address.
fn listen(address: SocketAddr) -> io::Result<TcpListener> {
    let listener = rebind(address)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Closes with an RST (SO_LINGER 0): the peer's next read fails with
/// ECONNRESET: EBUSY on a fresh session, ENODEV on one that was answering,
/// like a device that left the bus.
fn reset(stream: TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt reads `size_of::<linger>()` bytes from the local `linger`, on the descriptor `stream` owns.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

fn rebind(address: SocketAddr) -> io::Result<TcpListener> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match TcpListener::bind(address) {
            Ok(listener) => return Ok(listener),
            Err(e) if Instant::now() < deadline => {
                debug!("rebinding {address}: {e}");
                thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Longest line the simulator takes (SCPI or control): a 101-point model
/// list is a few KiB. A longer one ends the connection, so a client that
/// streams bytes without a line end cannot fill lagerd's memory.
pub(crate) const LINE_MAX: usize = 64 * 1024;

/// The next `\n`-terminated line (without it), `None` at the end; a line
/// longer than `LINE_MAX` is an `InvalidData` error.
pub(crate) fn next_line(reader: &mut impl BufRead) -> io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    Read::take(&mut *reader, LINE_MAX as u64 + 1).read_until(b'\n', &mut line)?;
    if line.is_empty() {
        return Ok(None);
    }
    if line.last() == Some(&b'\n') {
        line.pop();
    } else if line.len() > LINE_MAX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a line longer than {LINE_MAX} bytes"),
        ));
    }
    Ok(Some(line))
}

fn instrument_session(stream: TcpStream, shared: &Shared) -> io::Result<()> {
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    while let Some(line) = next_line(&mut reader)? {
        let line = String::from_utf8_lossy(&line).trim().to_string();
        if line.is_empty() {
            continue;
        }
        let mut log = lock(&shared.log);
        // The newest commands only: a long-running `lagerd --sim` (a soak,
        // a benchmark) must not grow without bound.
        if log.len() == LOG_MAX {
            log.pop_front();
        }
        log.push_back(line.clone());
        drop(log);
        let reply = lock(&shared.model).execute(&line);
        let Some(reply) = reply else { continue };
        if shared.faults.muted.load(Ordering::SeqCst) {
            continue;
        }
        let delay = shared.faults.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            thread::sleep(Duration::from_millis(delay));
        }
        let garble = shared
            .faults
            .garbled
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        let reply = if garble {
            "\u{1}#%garbled~\u{7f}".to_string()
        } else {
            reply
        };
        writer.write_all(format!("{reply}\n").as_bytes())?;
    }
    Ok(())
}

/// The control port: one command per line, one reply line each.
fn control_session(stream: TcpStream, shared: &Shared) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    while let Ok(Some(line)) = next_line(&mut reader) {
        let line = String::from_utf8_lossy(&line).into_owned();
        let (command, value) = line
            .trim()
            .split_once(['=', ' '])
            .unwrap_or((line.trim(), ""));
        // Values are checked before they become deadlines or counts: the
        // control port is input too, and a panic here would abort lagerd.
        let range = match command {
            "busy_ms" => Some(Range::new(0.0, 3_600_000.0, "milliseconds")),
            "delay_ms" => Some(Range::new(0.0, 600_000.0, "milliseconds")),
            "garble" => Some(Range::new(0.0, 1_000_000.0, "replies")),
            "set_load_current" => Some(Range::new(0.0, 1000.0, "amps")),
            _ => None,
        };
        let number = match range.map(|range| range.parse(value)) {
            Some(Err(e)) => {
                if writeln!(writer, "ERR {command} {}: {e}", value.trim()).is_err() {
                    return;
                }
                continue;
            }
            Some(Ok(number)) => Some(number),
            None => None,
        };
        let faults = &shared.faults;
        let reply = match (command, number) {
            ("busy_ms", Some(ms)) => {
                *lock(&faults.busy_until) = Some(Instant::now() + Duration::from_millis(ms as u64));
                "OK".to_string()
            }
            ("drop", _) => {
                // Closed before the reply: from here on opens are refused.
                lock(&shared.listener).take();
                for (_, session) in lock(&shared.sessions).drain(..) {
                    let _ = session.shutdown(Shutdown::Both);
                    reset(session);
                }
                "OK".to_string()
            }
            ("replug", _) => {
                let mut listener = lock(&shared.listener);
                if listener.is_some() {
                    "OK".to_string()
                } else {
                    match listen(shared.address) {
                        Ok(reopened) => {
                            *listener = Some(reopened);
                            "OK".to_string()
                        }
                        Err(e) => format!("ERR cannot listen on {} again: {e}", shared.address),
                    }
                }
            }
            ("mute", _) => {
                faults.muted.store(true, Ordering::SeqCst);
                "OK".to_string()
            }
            ("unmute", _) => {
                faults.muted.store(false, Ordering::SeqCst);
                "OK".to_string()
            }
            ("delay_ms", Some(ms)) => {
                faults.delay_ms.store(ms as u64, Ordering::SeqCst);
                "OK".to_string()
            }
            ("garble", Some(n)) => {
                faults.garbled.store(n as usize, Ordering::SeqCst);
                "OK".to_string()
            }
            ("set_load_current", Some(amps)) => {
                lock(&shared.model).set_load(amps.max(0.0));
                "OK".to_string()
            }
            ("connections?", _) => shared.connections.load(Ordering::SeqCst).to_string(),
            ("log?", _) => lock(&shared.log)
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(";"),
            ("clear_log", _) => {
                lock(&shared.log).clear();
                "OK".to_string()
            }
            _ => format!("ERR unknown control command {:?}", line.trim()),
        };
        if writeln!(writer, "{reply}").is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(state: &mut Keithley, lines: &[&str]) -> Vec<String> {
        lines
            .iter()
            .filter_map(|line| state.execute(line))
            .collect()
    }

    #[test]
    fn lines_are_bounded() {
        let mut reader = BufReader::new(&b"*IDN?\nlast"[..]);
        assert_eq!(next_line(&mut reader).unwrap(), Some(b"*IDN?".to_vec()));
        assert_eq!(next_line(&mut reader).unwrap(), Some(b"last".to_vec()));
        assert_eq!(next_line(&mut reader).unwrap(), None);
        let mut endless = BufReader::new(io::repeat(b'x'));
        assert_eq!(
            next_line(&mut endless).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
    }

    #[test]
    fn headers_match_in_long_short_and_mixed_case() {
        assert_eq!(
            canonical_header(":STATus:QUEStionable:INSTrument:ISUMmary:CONDition"),
            "STAT:QUES:INST:ISUM:COND"
        );
        assert_eq!(
            canonical_header(":STATUS:QUESTIONABLE:INSTRUMENT:ISUMMARY:CONDITION"),
            "STAT:QUES:INST:ISUM:COND"
        );
        assert_eq!(canonical_header("sour1:volt:prot"), "SOUR:VOLT:PROT");
        assert_eq!(canonical_header(":SOURce1:VOLTage"), "SOUR:VOLT");
        assert_eq!(canonical_header("*IDN"), "*IDN");
    }

    #[test]
    fn model_slots_take_101_ordered_points_and_recall_only_when_full() {
        let mut s = Keithley::reset();
        let list = |f: &dyn Fn(usize) -> f64| {
            (0..MODEL_POINTS)
                .map(|i| format_number(f(i)))
                .collect::<Vec<_>>()
                .join(",")
        };
        let voc = list(&|i| 3.0 + i as f64 / 100.0);
        let res = list(&|i| 0.3 - i as f64 / 1000.0);
        run(&mut s, &[":ENTR:FUNC BATT", ":BATT:MOD:RCL 2"]);
        assert_eq!(
            run(&mut s, &[":SYST:ERR?"]),
            ["705,\"Model length not enough\""]
        );
        run(&mut s, &[":BATT:MOD2:VOC \"1,2,3\""]);
        assert_eq!(
            run(&mut s, &[":SYST:ERR?"]),
            ["705,\"Model length not enough\""]
        );
        // Falling VOC is refused.
        run(&mut s, &[&format!(":BATT:MOD2:VOC \"{res}\"")]);
        assert_eq!(
            run(&mut s, &[":SYST:ERR?"]),
            ["-224,\"Illegal parameter value\""]
        );
        run(
            &mut s,
            &[
                &format!(":BATTery:MODel2:VOC \"{voc}\""),
                &format!(":BATT:MOD2:RES \"{res}\""),
            ],
        );
        assert_eq!(run(&mut s, &[":SYST:ERR?"]), ["0,\"No error\""]);
        assert_eq!(run(&mut s, &[":BATT:MOD2:VOC?"]), [voc]);
        assert_eq!(run(&mut s, &[":BATT:MOD3:VOC?"]), [""]);
        run(&mut s, &[":BATT:MOD:RCL 2"]);
        assert_eq!(
            run(&mut s, &[":BATT:MOD:RCL?", ":SYST:ERR?"]),
            ["2", "0,\"No error\""]
        );
        run(&mut s, &[":BATT:MOD:RCL nimh1_2"]);
        assert_eq!(run(&mut s, &[":BATT:MOD:RCL?"]), ["NIMH1_2"]);
    }

    #[test]
    fn supply_setpoints_output_and_load_model() {
        let mut s = Keithley::reset();
        assert_eq!(
            run(&mut s, &["*IDN?"]),
            [format!(
                "KEITHLEY INSTRUMENTS,MODEL 2281S-20-6,{SERIAL},1.05.3b"
            )]
        );
        run(&mut s, &[":SOUR1:VOLT 5", ":SOUR1:CURR 1.5", ":OUTP ON"]);
        assert_eq!(
            run(
                &mut s,
                &[":SOUR1:VOLT?", ":OUTP?", ":MEAS:VOLT?", ":MEAS:CURR?"]
            ),
            ["5", "1", "5", "0"]
        );
        s.load = 0.5;
        assert_eq!(
            run(&mut s, &[":MEAS:CURR?", ":STAT:QUES:INST:ISUM:COND?"]),
            ["0.5", "2"]
        );
        s.load = 3.0; // more than the 1.5 A limit: constant current
        assert_eq!(
            run(
                &mut s,
                &[":MEAS:CURR?", ":MEAS:VOLT?", ":STAT:QUES:INST:ISUM:COND?"]
            ),
            ["1.5", "2.5", "1"]
        );
        run(&mut s, &[":SOUR1:VOLT 25"]);
        assert_eq!(
            run(&mut s, &[":SYST:ERR?", ":SYST:ERR?"]),
            ["-222,\"Data out of range\"", "0,\"No error\""]
        );
        run(&mut s, &[":SOUR1:VOLT:PROT 6", ":SOUR1:VOLT 7"]);
        assert_eq!(
            run(
                &mut s,
                &[":OUTP?", ":OUTP:PROT:TRIP?", ":STAT:QUES:INST:ISUM:COND?"]
            ),
            ["0", "OVP", "8"]
        );
        run(&mut s, &[":OUTP:PROT:CLE"]);
        assert_eq!(run(&mut s, &[":OUTP:PROT:TRIP?"]), ["NONE"]);
        // 1.5 A delivered against a 1 A OCP: tripped, output off.
        run(&mut s, &[":SOUR1:VOLT 5", ":SOUR1:CURR:PROT 1", ":OUTP ON"]);
        assert_eq!(
            run(
                &mut s,
                &[":OUTP?", ":OUTP:PROT:TRIP?", ":STAT:QUES:INST:ISUM:COND?"]
            ),
            ["0", "OCP", "4"]
        );
    }

    #[test]
    fn soc_and_voc_are_tied_by_the_model() {
        let mut s = Keithley::reset();
        run(&mut s, &[":ENTR:FUNC BATT"]);
        // The default model: a line from the empty (3 V) to the full (4.2 V) VOC.
        run(&mut s, &[":BATT:SIM:SOC 50"]);
        assert_eq!(run(&mut s, &[":BATT:SIM:VOC?"]), ["3.6"]);
        run(&mut s, &[":BATT:SIM:VOC 3.9"]);
        assert_eq!(run(&mut s, &[":BATT:SIM:SOC?"]), ["75"]);
        run(&mut s, &[":BATT:SIM:VOC:FULL 4.4"]);
        assert_eq!(
            run(&mut s, &[":BATT:SIM:SOC?", ":BATT:SIM:VOC?"]),
            ["75", "4.05"],
            "a new end of the curve keeps the charge"
        );
        // A stored model decides VOC and ESR by its own tables.
        let table = |f: &dyn Fn(usize) -> f64| {
            (0..MODEL_POINTS)
                .map(|i| format_number(f(i)))
                .collect::<Vec<_>>()
                .join(",")
        };
        run(
            &mut s,
            &[
                &format!(":BATT:MOD4:VOC \"{}\"", table(&|i| 3.0 + i as f64 / 100.0)),
                &format!(":BATT:MOD4:RES \"{}\"", table(&|i| 0.2 - i as f64 / 1000.0)),
                ":BATT:MOD:RCL 4",
            ],
        );
        assert_eq!(
            run(&mut s, &[":BATT:SIM:VOC?", ":BATT:SIM:RES?"]),
            ["3.75", "0.125"]
        );
        run(&mut s, &[":BATT:SIM:VOC 3.205"]);
        assert_eq!(run(&mut s, &[":BATT:SIM:SOC?"]), ["20.5"]);
        assert_eq!(run(&mut s, &[":SYST:ERR?"]), ["0,\"No error\""]);
    }

    #[test]
    fn a_dynamic_battery_drains_and_protections_trip() {
        let mut s = Keithley::reset();
        run(
            &mut s,
            &[
                ":ENTR:FUNC BATT",
                ":BATT:SIM:METH DYN",
                ":BATT:SIM:CAP:LIM 1",
                ":BATT:SIM:CURR:LIM 3",
                ":BATT:OUTP ON",
            ],
        );
        s.load = 3.0;
        // 3 A for 1.2 s from 1 Ah: 1 mAh, 0.1 % of the charge.
        s.drained_at -= Duration::from_millis(1200);
        run(&mut s, &["*IDN?"]);
        assert!((s.soc - 99.9).abs() < 0.01, "soc {}", s.soc);
        assert!((s.voc - s.voc_at(s.soc)).abs() < 1e-9);
        // Drawing more than the OCP level trips the simulated battery.
        run(
            &mut s,
            &[":BATT:OUTP OFF", ":BATT:SIM:CURR:PROT 2", ":BATT:OUTP ON"],
        );
        assert_eq!(
            run(&mut s, &[":BATT:OUTP?", ":OUTP:PROT:TRIP?"]),
            ["0", "OCP"]
        );
        run(&mut s, &[":BATT:OUTP:PROT:CLE"]);
        assert_eq!(run(&mut s, &[":OUTP:PROT:TRIP?"]), ["NONE"]);
    }

    #[test]
    fn battery_commands_need_the_battery_entry_function() {
        let mut s = Keithley::reset();
        run(&mut s, &[":BATT:SIM:SOC 50"]);
        assert_eq!(
            run(&mut s, &[":SYST:ERR?"]),
            ["700,\"Command not permitted in this mode\""]
        );
        run(&mut s, &[":OUTP ON", ":ENTR:FUNC BATT"]);
        assert_eq!(
            run(&mut s, &[":ENTR:FUNC?", ":OUTP?"]),
            ["BATT", "0"],
            "switching turns outputs off"
        );
        run(
            &mut s,
            &[":BATT:SIM:VOC 3.7", ":BATT:SIM:CURR:LIM 2", ":BATT:OUTP ON"],
        );
        s.load = 1.0;
        assert_eq!(
            run(
                &mut s,
                &[":BATT:SIM:TVOL?", ":BATT:SIM:CURR?", ":BATT:SIM:RES?"]
            ),
            ["3.633", "1", "0.067"],
            "terminal voltage is VOC - I * ESR"
        );
        run(&mut s, &[":BATT:SIM:CAP:LIM 3"]);
        assert_eq!(
            run(&mut s, &[":SYST:ERR?"]),
            ["704,\"Not allowed while output is running\""]
        );
        run(&mut s, &[":ENTR:FUNC NOPE", ":FOO:BAR?"]);
        assert_eq!(
            run(&mut s, &[":SYST:ERR?", ":SYST:ERR?"]),
            [
                "-224,\"Illegal parameter value\"",
                "-113,\"Undefined header\""
            ]
        );
    }

    fn control(sim: &Simulator, command: &str) -> String {
        let mut stream = TcpStream::connect(sim.control).unwrap();
        writeln!(stream, "{command}").unwrap();
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).unwrap();
        line.trim().to_string()
    }

    #[test]
    fn faults_show_up_at_the_socket() {
        use crate::instruments::transport::TcpTransport;
        let sim = Simulator::start(Kind::Keithley2281S).unwrap();
        let addr = sim.visa_address();
        let open = |timeout_ms| {
            TcpTransport::open(
                &addr,
                "127.0.0.1",
                sim.address.port(),
                Duration::from_millis(timeout_ms),
            )
        };
        let mut session = open(1000).unwrap();
        assert!(session.query("*IDN?").unwrap().starts_with("KEITHLEY"));
        assert_eq!(control(&sim, "connections?"), "1");

        // Busy: the connection is accepted, then reset before any answer.
        assert_eq!(control(&sim, "busy_ms 300"), "OK");
        let busy = open(1000).unwrap().query("*IDN?").unwrap_err();
        assert_eq!(busy.class(), "busy");
        assert!(busy.to_string().starts_with("[Errno 16] Resource busy"));
        std::thread::sleep(Duration::from_millis(400));
        assert!(
            open(1000).unwrap().query("*IDN?").is_ok(),
            "answers again once the claim is released"
        );

        assert_eq!(control(&sim, "garble 1"), "OK");
        assert_ne!(
            session.query("*IDN?").unwrap(),
            session.query("*IDN?").unwrap()
        );

        assert_eq!(control(&sim, "mute"), "OK");
        let mut short = open(150).unwrap();
        assert_eq!(short.query("*IDN?").unwrap_err().class(), "timeout");
        control(&sim, "unmute");

        // Unplugged: the open session is reset, new opens are refused.
        assert_eq!(control(&sim, "drop"), "OK");
        assert_eq!(session.query("*IDN?").unwrap_err().class(), "nodev");
        let refused = open(300).err().unwrap();
        assert_eq!(refused.class(), "nodev", "gone until replugged");
        assert!(
            refused.to_string().starts_with("[Errno 19] No such device"),
            "{refused}"
        );
        assert_eq!(control(&sim, "replug"), "OK");
        assert!(open(1000).unwrap().query("*IDN?").is_ok());
        assert!(control(&sim, "log?").starts_with("*IDN?;"));
        assert!(control(&sim, "bogus").starts_with("ERR unknown control command"));
        assert_eq!(
            control(&sim, "busy_ms 1e20"),
            "ERR busy_ms 1e20: use a number of milliseconds from 0 to 3600000"
        );
        assert!(control(&sim, "delay_ms nan").starts_with("ERR delay_ms nan"));
        assert!(
            control(&sim, "connections?").parse::<u32>().is_ok(),
            "the simulator lives on"
        );
    }
}
