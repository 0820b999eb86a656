//! Instruments: the transport boundary (`transport.rs`) where hardware, or
//! the simulator (`sim.rs`), plugs in; one shared session per address
//! (`session.rs`); drivers over a session (`keithley.rs`); and the
//! supply/battery commands that nets resolve to. Nothing above the
//! transport knows whether an instrument is simulated.

pub mod keithley;
pub mod session;
pub mod sim;
pub mod transport;

use std::sync::Arc;

use common::addr::Address;
use serde_json::{json, Map, Value};

use crate::nets::Nets;
use keithley::{Action, DriverError};
use session::Sessions;

/// `POST /supply/command` and `/battery/command` (instruments.md §7, §10).
pub struct Instruments {
    sessions: Arc<Sessions>,
    nets: Arc<Nets>,
}

/// A command's HTTP status and JSON body.
pub type Answer = (u16, Value);

fn failure(status: u16, error: impl std::fmt::Display) -> Answer {
    (
        status,
        json!({"success": false, "error": error.to_string()}),
    )
}

impl Instruments {
    pub fn new(sessions: Arc<Sessions>, nets: Arc<Nets>) -> Instruments {
        Instruments { sessions, nets }
    }

    /// Whether the command would change the instrument (for `--enforce-locks`).
    pub fn mutates(battery: bool, body: &Map<String, Value>) -> bool {
        let action = body
            .get("action")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let params = body
            .get("params")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        match keithley::parse(battery, action, &params) {
            Ok(Action::SupplyState | Action::BatteryState) => false,
            Ok(Action::Voltage(v) | Action::Current(v) | Action::Ovp(v) | Action::Ocp(v)) => {
                v.is_some()
            }
            _ => true,
        }
    }

    pub fn command(&self, battery: bool, body: &Map<String, Value>) -> Answer {
        let (Some(name), Some(action)) = (
            body.get("netname").and_then(Value::as_str),
            body.get("action").and_then(Value::as_str),
        ) else {
            return failure(400, "netname and action are required");
        };
        let params = body
            .get("params")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let role = if battery { "battery" } else { "power-supply" };
        let nets = self.nets.list();
        let Some(net) = nets
            .iter()
            .find(|n| n.get("name").and_then(Value::as_str) == Some(name))
        else {
            return failure(
                404,
                format!("Net '{name}' not found. Create it with 'lager nets add'."),
            );
        };
        let actual = net.get("role").and_then(Value::as_str).unwrap_or("unknown");
        if actual != role {
            return failure(
                400,
                format!("Net '{name}' is a '{actual}' net, not '{role}'."),
            );
        }
        let instrument = net
            .get("instrument")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let lowered = instrument.to_ascii_lowercase();
        if !(lowered.contains("keithley") && lowered.contains("2281s")) {
            return failure(
                400,
                format!("Unsupported instrument '{instrument}' for {role} net '{name}'."),
            );
        }
        let address = match Address::parse(
            net.get("address")
                .and_then(Value::as_str)
                .unwrap_or_default(),
        ) {
            Ok(address) => address,
            Err(e) => return failure(400, format!("Net '{name}' has a bad address: {e}")),
        };
        let parsed = match keithley::parse(battery, action, &params) {
            Ok(parsed) => parsed,
            Err(e) => return failure(400, e),
        };
        let outcome: Result<_, DriverError> = self
            .sessions
            .run(&address, move |session| keithley::run(session, &parsed));
        match outcome {
            Ok(done) => {
                let mut reply = json!({"success": true, "action": action, "message": done.message});
                if let Some(mut state) = done.state {
                    if let Value::Object(map) = &mut state {
                        map.insert("netname".into(), json!(name));
                    }
                    reply["state"] = state;
                }
                (200, reply)
            }
            Err(e) => failure(502, format!("{e} ({})", address.canonical())),
        }
    }
}
