//! Instruments: the transport boundary (`transport.rs`) where hardware, or
//! the simulator (`crate::sim`), plugs in; one shared session per address
//! (`session.rs`); drivers over a session (`keithley.rs`, `rigol.rs`, with
//! what they share in `scpi.rs`), which receive validated `actions.rs`; and the
//! supply/battery commands that nets resolve to. Nothing above the
//! transport knows whether an instrument is simulated.

pub mod actions;
pub mod keithley;
pub mod rigol;
pub mod scpi;
pub mod serial;
pub mod session;
pub mod transport;
pub mod usbtmc;

use std::io::{self, Write};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use common::addr::Address;
use common::wire::MONITOR_INTERVAL;
use serde_json::{json, Map, Value};

use crate::nets::Nets;
use actions::{Action, Limits};
use scpi::{DriverError, Outcome};
use session::Sessions;

/// `POST /supply/command` and `/battery/command` (instruments.md §7, §10),
/// and the live monitors behind `lager supply|battery <net> watch`.
pub struct Instruments {
    sessions: Arc<Sessions>,
    nets: Arc<Nets>,
    /// Running monitors, for the cross-role conflict check (§7).
    monitors: Mutex<Vec<Monitor>>,
}

/// A registered monitor: who watches which role of which instrument.
#[derive(Clone)]
struct Monitor {
    id: u64,
    address: String,
    battery: bool,
    net: String,
    holder: String,
    /// Whether the watcher's client left; set when the stream starts. It
    /// answers "gone" for good once its connection closed, so asking it
    /// from another request's thread is safe even as that happens.
    client_gone: Option<ClientGone>,
}

/// Asks whether a monitor's client left, from any thread.
pub type ClientGone = Arc<dyn Fn() -> bool + Send + Sync>;

/// A resolved net: its name, instrument address and driver.
struct Target {
    name: String,
    address: Address,
    driver: Driver,
}

/// The driver for a net's instrument.
#[derive(Clone, Copy)]
enum Driver {
    Keithley2281S,
    /// A Rigol DP800 channel (the net's `pin`).
    RigolDp800 {
        channel: u8,
    },
}

impl Driver {
    fn limits(self) -> Limits {
        match self {
            Driver::Keithley2281S => actions::LIMITS_2281S,
            Driver::RigolDp800 { channel } => rigol::limits(channel),
        }
    }

    /// Whether the instrument is known to be in the role other than
    /// `battery`'s (only a 2281S has two).
    fn in_other_role(self, function: Option<session::Function>, battery: bool) -> bool {
        let wanted = if battery {
            session::Function::Battery
        } else {
            session::Function::PowerSupply
        };
        matches!(self, Driver::Keithley2281S) && function.is_some_and(|f| f != wanted)
    }

    fn run(self, session: &mut session::Session, action: &Action) -> Result<Outcome, DriverError> {
        if let Action::Reading { state, field } = action {
            let value = self
                .run(session, state)?
                .state
                .and_then(|mut s| s.get_mut(field.key).map(Value::take))
                .unwrap_or(Value::Null);
            let shown = match &value {
                Value::Number(n) => n.as_f64().map_or(n.to_string(), actions::number),
                Value::String(s) => s.clone(),
                Value::Null => "n/a".to_string(),
                other => other.to_string(),
            };
            let message = format!("{}: {shown}{}", field.label, field.unit);
            return Ok(Outcome::with(message, json!({ field.key: value })));
        }
        match self {
            Driver::Keithley2281S => keithley::run(session, action),
            Driver::RigolDp800 { channel } => rigol::run(session, channel, action),
        }
    }
}

fn role_name(battery: bool) -> &'static str {
    if battery {
        "battery"
    } else {
        "power-supply"
    }
}

/// Why a supply or battery command (or a monitor) was not carried out.
/// The texts are instruments.md §7 and §10's, which clients match.
#[derive(Debug)]
pub enum CommandError {
    /// The body lacks `netname` or `action`.
    Incomplete,
    /// No net of that name (§10.5).
    UnknownNet(String),
    /// The net has the other role (§3).
    WrongRole {
        net: String,
        actual: String,
        wanted: &'static str,
    },
    /// A pin that is no channel of the instrument.
    BadChannel { net: String, pin: u64 },
    /// No driver for the net's instrument in this role.
    Unsupported {
        net: String,
        instrument: String,
        role: &'static str,
    },
    BadAddress {
        net: String,
        error: common::addr::AddressError,
    },
    /// A monitor's `interval` beyond what it may be.
    BadInterval {
        given: String,
        error: common::bounded::OutOfRange,
    },
    /// The action or its values, refused before anything was sent.
    Action(actions::ActionError),
    /// A watch of the other role holds the instrument (§7).
    InUse(Conflict),
    /// The instrument (or its session) failed the command.
    Driver { address: String, error: DriverError },
}

impl std::fmt::Display for CommandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CommandError::Incomplete => f.write_str("netname and action are required"),
            CommandError::UnknownNet(net) => {
                write!(f, "Net '{net}' not found. Create it with 'lager nets add'.")
            }
            CommandError::WrongRole {
                net,
                actual,
                wanted,
            } => write!(f, "Net '{net}' is a '{actual}' net, not '{wanted}'."),
            CommandError::BadChannel { net, pin } => {
                write!(f, "Invalid channel pin '{pin}' for net '{net}'.")
            }
            CommandError::Unsupported {
                net,
                instrument,
                role,
            } => write!(
                f,
                "Unsupported instrument '{instrument}' for {role} net '{net}'."
            ),
            CommandError::BadAddress { net, error } => {
                write!(f, "Net '{net}' has a bad address: {error}")
            }
            CommandError::BadInterval { given, error } => {
                write!(f, "interval {given} is out of range: {error}")
            }
            CommandError::Action(e) => e.fmt(f),
            CommandError::InUse(conflict) => conflict.fmt(f),
            // A refusal that fits no state of the instrument is its own text.
            CommandError::Driver {
                error: error @ DriverError::Invalid(_),
                ..
            } => error.fmt(f),
            CommandError::Driver { address, error } => write!(f, "{error} ({address})"),
        }
    }
}

/// §7's cross-role conflict: `net` wants the instrument that a watch of
/// `watched` holds in the other role.
#[derive(Debug)]
pub struct Conflict {
    net: String,
    watched: String,
    /// The role the instrument is in.
    other_role: &'static str,
    /// Who runs that watch.
    holder: String,
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Conflict {
            net,
            watched,
            other_role,
            holder,
        } = self;
        write!(
            f,
            "'{net}' is on the same Keithley 2281S as '{watched}', which is currently in use as a {other_role}. The 2281S supports one role at a time — close the {other_role} session first. (A watch of '{watched}' by {holder} holds it: stop that watch with Ctrl+C where it runs.)"
        )
    }
}

impl Instruments {
    pub fn new(sessions: Arc<Sessions>, nets: Arc<Nets>) -> Instruments {
        Instruments {
            sessions,
            nets,
            monitors: Mutex::new(Vec::new()),
        }
    }

    /// The net `name` if it exists, has `battery`'s role and an instrument
    /// with a driver (a Keithley 2281S, or a Rigol DP800 channel).
    fn resolve(&self, name: &str, battery: bool) -> Result<Target, CommandError> {
        let role = role_name(battery);
        let nets = self.nets.list();
        let Some(net) = nets
            .iter()
            .find(|n| n.get("name").and_then(Value::as_str) == Some(name))
        else {
            return Err(CommandError::UnknownNet(name.to_string()));
        };
        let actual = net.get("role").and_then(Value::as_str).unwrap_or("unknown");
        if actual != role {
            return Err(CommandError::WrongRole {
                net: name.to_string(),
                actual: actual.to_string(),
                wanted: role,
            });
        }
        let instrument = net
            .get("instrument")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let lowered = instrument.to_ascii_lowercase();
        let pin = net.get("pin").and_then(Value::as_u64).unwrap_or(1);
        let driver = if lowered.contains("keithley") && lowered.contains("2281s") {
            Driver::Keithley2281S
        } else if lowered.contains("rigol") && lowered.contains("dp8") && !battery {
            match u8::try_from(pin)
                .ok()
                .filter(|c| (1..=rigol::CHANNELS).contains(c))
            {
                Some(channel) => Driver::RigolDp800 { channel },
                None => {
                    return Err(CommandError::BadChannel {
                        net: name.to_string(),
                        pin,
                    })
                }
            }
        } else {
            return Err(CommandError::Unsupported {
                net: name.to_string(),
                instrument: instrument.to_string(),
                role,
            });
        };
        match Address::parse(
            net.get("address")
                .and_then(Value::as_str)
                .unwrap_or_default(),
        ) {
            Ok(address) => Ok(Target {
                name: name.to_string(),
                address,
                driver,
            }),
            Err(error) => Err(CommandError::BadAddress {
                net: name.to_string(),
                error,
            }),
        }
    }

    /// §7: a monitor of the other role on the same instrument blocks it.
    fn conflict(monitors: &[Monitor], target: &Target, battery: bool) -> Option<Conflict> {
        let key = target.address.canonical();
        // A watcher that just left (`--count` reached, Ctrl-C) has not been
        // noticed by its stream yet; it holds nothing.
        let other = monitors.iter().find(|m| {
            m.address == key
                && m.battery != battery
                && !m.client_gone.as_ref().is_some_and(|gone| gone())
        })?;
        Some(Conflict {
            net: target.name.clone(),
            watched: other.net.clone(),
            other_role: role_name(other.battery),
            holder: other.holder.clone(),
        })
    }

    /// `GET /supply|battery/monitor?netname=N&interval=S` (§7, §10): after
    /// the checks, an NDJSON stream of state lines until the client leaves.
    ///
    /// An `observe` watch (the status page's) reads without taking the
    /// role: it is not registered for the cross-role check, so it never
    /// refuses anyone, and it skips reads while the instrument is known to
    /// be in the other role, so it never switches or disturbs it.
    pub fn monitor(
        self: &Arc<Self>,
        battery: bool,
        name: &str,
        interval: Option<&str>,
        holder: String,
        observe: bool,
    ) -> Result<MonitorStream, CommandError> {
        let target = self.resolve(name, battery)?;
        let interval = monitor_interval(interval)?;
        let id = if observe {
            // Never registered: the stream's drop finds nothing to remove.
            u64::MAX
        } else {
            let mut monitors = self.monitors.lock().unwrap_or_else(PoisonError::into_inner);
            // Checked and registered under one lock: two opposite watches
            // started together cannot both pass (the older system's race).
            if let Some(conflict) = Self::conflict(&monitors, &target, battery) {
                return Err(CommandError::InUse(conflict));
            }
            let id = monitors.iter().map(|m| m.id + 1).max().unwrap_or(0);
            monitors.push(Monitor {
                id,
                address: target.address.canonical(),
                battery,
                net: name.to_string(),
                holder,
                client_gone: None,
            });
            id
        };
        Ok(MonitorStream {
            instruments: self.clone(),
            id,
            battery,
            target,
            interval,
            observe,
        })
    }

    /// `POST /cache/clear` and `/cache/clear_all` (§5).
    pub fn clear_cache(&self, close: bool) -> Value {
        let (cleared, open) = self.sessions.clear(close);
        let kept = if close {
            "shared_closed"
        } else {
            "shared_retained"
        };
        json!({"status": "success", "cleared": cleared, "closed": if close { open } else { 0 }, "errors": [], kept: open})
    }

    /// Every instrument with a session thread and whether its session is
    /// open (`lagerd_instrument_session_open`).
    pub fn session_states(&self) -> Vec<(String, bool)> {
        self.sessions
            .addresses()
            .into_iter()
            .map(|address| {
                let open = self.sessions.is_open(&address);
                (address, open)
            })
            .collect()
    }

    /// `GET /cache/stats` (§5; lagerd reports addresses, never a 500).
    pub fn cache_stats(&self) -> Value {
        let devices: Vec<Value> = self
            .sessions
            .addresses()
            .iter()
            .map(|a| json!({"name": "session", "address": a}))
            .collect();
        json!({"cached_devices": devices.len(), "devices": devices})
    }

    /// Whether the command would change the instrument (for
    /// `--enforce-locks`): the action table's word, as the CLI's auto-lock.
    pub fn mutates(battery: bool, body: &Map<String, Value>) -> bool {
        let role = if battery {
            common::actions::Role::Battery
        } else {
            common::actions::Role::Supply
        };
        common::actions::mutates(role, body)
    }

    /// Runs one command on the net's instrument; its answer has the state
    /// it reported, with the net's name in it.
    pub fn command(
        &self,
        battery: bool,
        body: &Map<String, Value>,
    ) -> Result<Outcome, CommandError> {
        let (Some(name), Some(action)) = (
            body.get("netname").and_then(Value::as_str),
            body.get("action").and_then(Value::as_str),
        ) else {
            return Err(CommandError::Incomplete);
        };
        let params = body
            .get("params")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let target = self.resolve(name, battery)?;
        // Checked under the registry lock, like registration, so a watch
        // that ends meanwhile is never asked about after it unregistered.
        let conflict = Self::conflict(
            &self.monitors.lock().unwrap_or_else(PoisonError::into_inner),
            &target,
            battery,
        );
        if let Some(conflict) = conflict {
            return Err(CommandError::InUse(conflict));
        }
        let (address, driver) = (target.address, target.driver);
        let parsed = actions::parse(battery, action, &params, &driver.limits())
            .map_err(CommandError::Action)?;
        let outcome: Result<_, DriverError> = self
            .sessions
            .run(&address, move |session| driver.run(session, &parsed));
        crate::metrics::instrument_command(name, command_outcome(&outcome));
        let mut done = outcome.map_err(|error| CommandError::Driver {
            address: address.canonical(),
            error,
        })?;
        if let Some(Value::Object(state)) = &mut done.state {
            state.insert("netname".into(), json!(name));
        }
        Ok(done)
    }
}

/// `lagerd_instrument_commands_total`'s outcome label for a command.
fn command_outcome<T>(outcome: &Result<T, DriverError>) -> crate::metrics::CommandOutcome {
    use crate::metrics::CommandOutcome;
    use session::SessionError;
    use transport::TransportError;
    match outcome {
        Ok(_) => CommandOutcome::Ok,
        Err(DriverError::Session(SessionError::Transport(e))) => match e {
            TransportError::Busy { .. } => CommandOutcome::Busy,
            TransportError::NoDevice { .. } => CommandOutcome::Nodev,
            TransportError::Timeout { .. } => CommandOutcome::Timeout,
            _ => CommandOutcome::Error,
        },
        Err(DriverError::Session(SessionError::Locked(_))) => CommandOutcome::Busy,
        Err(DriverError::Session(SessionError::Deadline { .. })) => CommandOutcome::Timeout,
        Err(_) => CommandOutcome::Error,
    }
}

/// A monitor's `interval` (§7.1: default 1.0, garbage 1.0, at least 0.1);
/// a number above the hour, or not finite, is refused (`BadInterval`).
fn monitor_interval(given: Option<&str>) -> Result<Duration, CommandError> {
    let Some(text) = given else {
        return Ok(Duration::from_secs(1));
    };
    let Some(value) = text.trim().parse::<f64>().ok().filter(|v| !v.is_nan()) else {
        return Ok(Duration::from_secs(1));
    };
    MONITOR_INTERVAL
        .secs(value.max(MONITOR_INTERVAL.min))
        .map_err(|error| CommandError::BadInterval {
            given: text.to_string(),
            error,
        })
}

/// A live monitor's stream (`Body::Stream`): one JSON object per line.
/// It is registered from `Instruments::monitor` until it is dropped,
/// however that happens: its stream ended, or never ran (a `HEAD`, a
/// client gone before the reply).
pub struct MonitorStream {
    instruments: Arc<Instruments>,
    id: u64,
    battery: bool,
    target: Target,
    interval: Duration,
    observe: bool,
}

impl Drop for MonitorStream {
    fn drop(&mut self) {
        self.instruments
            .monitors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|m| m.id != self.id);
    }
}

impl MonitorStream {
    pub fn run(self, out: &mut dyn Write, client_gone: ClientGone) -> io::Result<()> {
        if let Some(me) = self
            .instruments
            .monitors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter_mut()
            .find(|m| m.id == self.id)
        {
            me.client_gone = Some(client_gone.clone());
        }
        let name = &self.target.name;
        let line = |out: &mut dyn Write, value: Value| -> io::Result<()> {
            let mut text = value.to_string();
            text.push('\n');
            out.write_all(text.as_bytes())
        };
        line(
            out,
            json!({"event": "monitor_started", "netname": name, "interval": self.interval.as_secs_f64()}),
        )?;
        line(out, json!({"event": "driver_ready"}))?;
        let state = if self.battery {
            Action::BatteryState
        } else {
            Action::SupplyState
        };
        loop {
            let tick = Instant::now();
            let action = state.clone();
            let driver = self.target.driver;
            let (observe, battery) = (self.observe, self.battery);
            let outcome: Result<_, DriverError> =
                self.instruments
                    .sessions
                    .run(&self.target.address, move |session| {
                        if observe && driver.in_other_role(session.function, battery) {
                            return Ok(None);
                        }
                        driver.run(session, &action).map(Some)
                    });
            let event = match outcome {
                Ok(Some(done)) => json!({"event": "state", "state": done.state}),
                Ok(None) => json!({
                    "event": "idle",
                    "message": format!("in use as {}", role_name(!battery)),
                }),
                Err(e) => json!({"event": "error", "message": e.to_string()}),
            };
            line(out, event)?;
            // Wait out the interval, noticing a client that left (§10.10).
            while tick.elapsed() < self.interval {
                if client_gone() {
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(50).min(self.interval));
            }
        }
    }
}
