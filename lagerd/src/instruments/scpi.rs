//! What every SCPI driver shares (`keithley.rs`, `rigol.rs`): how a
//! command fails at the instrument (`DriverError`), what it answers
//! (`Outcome`), setters checked against the error queue, and the lenient
//! reading of numeric replies. Nothing here knows a model's commands.

use serde_json::{json, Value};

use super::actions::{number, Limits};
use super::session::{Session, SessionError};

/// Why a valid command failed at the instrument.
#[derive(Debug)]
pub enum DriverError {
    Session(SessionError),
    /// The instrument's error queue reported `code,"message"`.
    Refused {
        command: String,
        error: String,
    },
    /// It would not change to the entry function the role needs.
    Function(&'static str),
    /// The request does not fit the instrument's present state (nothing
    /// written): the whole message.
    Invalid(String),
}

impl std::fmt::Display for DriverError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DriverError::Session(e) => e.fmt(f),
            DriverError::Refused { command, error } => {
                write!(f, "the instrument refused {command}: {error}")
            }
            DriverError::Function(what) => f.write_str(what),
            DriverError::Invalid(text) => f.write_str(text),
        }
    }
}

impl From<SessionError> for DriverError {
    fn from(e: SessionError) -> DriverError {
        DriverError::Session(e)
    }
}

/// A command's answer: the message and, when cheap, the state.
pub struct Outcome {
    pub message: String,
    pub state: Option<Value>,
}

impl Outcome {
    /// A message alone, for commands whose effect has no value to report.
    pub fn said(message: impl Into<String>) -> Outcome {
        Outcome {
            message: message.into(),
            state: None,
        }
    }

    /// A message with the values read or written (§10.2: every reply
    /// carries `state` when it is cheap).
    pub fn with(message: String, state: Value) -> Outcome {
        Outcome {
            message,
            state: Some(state),
        }
    }

    /// A setter's answer: `<what> set to <value><unit>`, and the value
    /// under `key`.
    pub fn set(what: &str, value: f64, unit: &str, key: &str) -> Outcome {
        Outcome::with(
            format!("{what} set to {}{unit}", number(value)),
            json!({ key: value }),
        )
    }

    /// A read's answer: `<label>: <reply><unit>`, and the value under
    /// `key` (null when the reply is not a number).
    pub fn read(label: &str, reply: &str, unit: &str, key: &str) -> Outcome {
        Outcome::with(
            format!("{label}: {reply}{unit}"),
            json!({ key: reading(reply) }),
        )
    }

    /// The `limits` action: a model's (or channel's) ceilings, from the
    /// driver's own table, without asking the instrument.
    pub fn limits(limits: Limits) -> Outcome {
        let (volts, amps) = (limits.volts.1, limits.amps.1);
        Outcome::with(
            format!("Limits: {}V, {}A", number(volts), number(amps)),
            json!({ "voltage_max": volts, "current_max": amps }),
        )
    }

    /// The `state` action of any supply, from its state object; a field
    /// that could not be read shows as `n/a` in the message (§7).
    pub fn supply_state(state: Value) -> Outcome {
        let field = |key: &str| match &state[key] {
            Value::Null => "n/a".to_string(),
            value => value.to_string(),
        };
        let message = format!(
            "Channel {}: {}, Set: {}V/{}A, Measured: {}V/{}A, OCP: {}A, OVP: {}V",
            field("channel"),
            if state["enabled"] == true {
                "ON"
            } else {
                "OFF"
            },
            field("voltage_set"),
            field("current_set"),
            field("voltage"),
            field("current"),
            field("ocp_limit"),
            field("ovp_limit")
        );
        Outcome::with(message, state)
    }
}

/// A setting followed by the error queue: a refused value is an error here,
/// not a silent no-op. Every driver's setter uses it.
pub fn checked(session: &mut Session, command: &str) -> Result<(), DriverError> {
    session.write(command)?;
    let error = session.query(":SYST:ERR?")?;
    if error.starts_with('0') {
        return Ok(());
    }
    let _ = session.write("*CLS");
    Err(DriverError::Refused {
        command: command.to_string(),
        error,
    })
}

/// A reading for a state object: the first comma field as a number, units
/// stripped (§6.2); `None` (JSON null) when the reply is not a number, so a
/// failed field never reads as 0 (scripts.md §2).
pub fn reading(reply: &str) -> Option<f64> {
    first_number(reply).filter(|v| v.is_finite())
}

/// The first comma field as a number, units stripped (§6.2); 0 if none.
/// `nan`, `inf` and `1e999` are none either: found by the `scpi_replies`
/// fuzz target, which saw them compared against and written back.
pub fn float(reply: &str) -> f64 {
    reading(reply).unwrap_or(0.0)
}

fn first_number(reply: &str) -> Option<f64> {
    let first = reply.split(',').next().unwrap_or("");
    first
        .trim()
        .trim_end_matches(['V', 'A', 'W', 's', '%', 'Ω'])
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_parse_leniently() {
        assert_eq!(float("5.000V"), 5.0);
        assert_eq!(float("3.7,other"), 3.7);
        assert_eq!(float("garbage"), 0.0);
        for not_a_reading in ["nan", "NaN", "inf", "-infinity", "1e999"] {
            assert_eq!(float(not_a_reading), 0.0, "{not_a_reading}");
        }
        assert_eq!(float("9.91E37"), 9.91e37, "SCPI's NaN is a finite number");
        assert_eq!(reading("nan"), None);
        assert_eq!(reading("5.000V"), Some(5.0));
        assert_eq!(reading("garbage"), None);
        assert_eq!(reading("nan"), None);
    }

    #[test]
    fn a_supply_state_names_what_could_not_be_read() {
        let outcome = Outcome::supply_state(json!({
            "channel": 2, "enabled": true, "voltage_set": 5.0, "current_set": 1.0,
            "voltage": 4.99, "current": null, "ocp_limit": 1.1, "ovp_limit": null,
        }));
        assert_eq!(
            outcome.message,
            "Channel 2: ON, Set: 5.0V/1.0A, Measured: 4.99V/n/aA, OCP: 1.1A, OVP: n/aV"
        );
        assert_eq!(outcome.state.unwrap()["channel"], 2);
    }
}
