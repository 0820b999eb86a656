//! The Keithley 2281S driver (instruments.md §6): the power-supply and
//! battery-simulator roles over one shared session. The entry function is
//! switched only when the role changes (§10.9), never before every command.
//! Actions arrive validated against the instrument's ranges (`actions.rs`).

use serde_json::{json, Value};

use super::actions::{number, Action, LIMITS_2281S as LIMITS};
use super::session::{Function, Session, SessionError};

/// Why a valid command failed at the instrument (HTTP 502).
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
}

impl std::fmt::Display for DriverError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DriverError::Session(e) => e.fmt(f),
            DriverError::Refused { command, error } => {
                write!(f, "the instrument refused {command}: {error}")
            }
            DriverError::Function(what) => f.write_str(what),
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

/// Runs `action` on the instrument behind `session`.
pub fn run(session: &mut Session, action: &Action) -> Result<Outcome, DriverError> {
    let done = |message: String| {
        Ok(Outcome {
            message,
            state: None,
        })
    };
    match action {
        Action::Voltage(Some(v)) => {
            ensure(session, Function::PowerSupply)?;
            checked(session, &format!(":SOUR1:VOLT {}", number(*v)))?;
            done(format!("Voltage set to {}V", number(*v)))
        }
        Action::Voltage(None) => {
            let on = session.query(":OUTP?")? == "1";
            let v = session.query(if on { ":MEAS:VOLT?" } else { ":SOUR1:VOLT?" })?;
            done(format!("Voltage: {v}V"))
        }
        Action::Current(Some(a)) => {
            ensure(session, Function::PowerSupply)?;
            checked(session, &format!(":SOUR1:CURR {}", number(*a)))?;
            done(format!("Current limit set to {}A", number(*a)))
        }
        Action::Current(None) => {
            let on = session.query(":OUTP?")? == "1";
            let a = session.query(if on { ":MEAS:CURR?" } else { ":SOUR1:CURR?" })?;
            done(format!("Current: {a}A"))
        }
        Action::Ovp(Some(v)) => {
            ensure(session, Function::PowerSupply)?;
            checked(session, &format!(":SOUR1:VOLT:PROT {}", number(*v)))?;
            done(format!("OVP set to {}V", number(*v)))
        }
        Action::Ovp(None) => done(format!("OVP: {}V", session.query(":SOUR1:VOLT:PROT?")?)),
        Action::Ocp(Some(a)) => {
            ensure(session, Function::PowerSupply)?;
            checked(session, &format!(":SOUR1:CURR:PROT {}", number(*a)))?;
            done(format!("OCP set to {}A", number(*a)))
        }
        Action::Ocp(None) => done(format!("OCP: {}A", session.query(":SOUR1:CURR:PROT?")?)),
        Action::Enable => {
            ensure(session, Function::PowerSupply)?;
            session.write(":OUTP:PROT:CLE")?;
            checked(session, ":OUTP ON")?;
            match session.query(":OUTP:PROT:TRIP?")?.as_str() {
                "NONE" if session.query(":OUTP?")? == "1" => done("Output enabled".into()),
                trip => Err(DriverError::Refused {
                    command: ":OUTP ON".into(),
                    error: format!("protection tripped ({trip})"),
                }),
            }
        }
        Action::Disable => {
            session.write(":OUTP OFF")?;
            done("Output disabled".into())
        }
        Action::ClearProtection => {
            for command in [":OUTP:PROT:CLE", "*CLS"] {
                session.write(command)?;
            }
            done("Protection cleared".into())
        }
        Action::SupplyState => {
            let state = supply_state(session)?;
            Ok(Outcome {
                message: supply_message(&state),
                state: Some(state),
            })
        }
        Action::Soc(soc) => battery_setting(session, ":BATT:SIM:SOC", *soc, "SOC", "%"),
        Action::Voc(voc) => battery_setting(session, ":BATT:SIM:VOC", *voc, "VOC", "V"),
        Action::Capacity(ah) => {
            battery_setting(session, ":BATT:SIM:CAP:LIM", *ah, "Capacity", "Ah")
        }
        Action::CurrentLimit(a) => {
            battery_setting(session, ":BATT:SIM:CURR:LIM", *a, "Current limit", "A")
        }
        Action::Dynamic(dynamic) => {
            ensure(session, Function::Battery)?;
            checked(
                session,
                if *dynamic {
                    ":BATT:SIM:METH DYN"
                } else {
                    ":BATT:SIM:METH STAT"
                },
            )?;
            done(format!(
                "Mode set to {}",
                if *dynamic { "dynamic" } else { "static" }
            ))
        }
        Action::BatteryOn => {
            ensure(session, Function::Battery)?;
            checked(session, ":BATT:OUTP ON")?;
            done("Battery output enabled".into())
        }
        Action::BatteryOff => {
            ensure(session, Function::Battery)?;
            checked(session, ":BATT:OUTP OFF")?;
            done("Battery output disabled".into())
        }
        Action::BatteryState => {
            ensure(session, Function::Battery)?;
            let state = battery_state(session)?;
            let message = format!(
                "Battery: {}, SOC {}%, VOC {}V, terminal {}V, {}A",
                if state["enabled"] == true {
                    "ON"
                } else {
                    "OFF"
                },
                state["soc"],
                state["voc"],
                state["terminal_voltage"],
                state["current"]
            );
            Ok(Outcome {
                message,
                state: Some(state),
            })
        }
    }
}

/// Switches the entry function only when the role changes (§6, §10.9).
fn ensure(session: &mut Session, wanted: Function) -> Result<(), DriverError> {
    if session.function == Some(wanted) {
        return Ok(());
    }
    // Ask only when the session does not know; a known other function
    // goes straight to the switch.
    if session.function.is_none() && function_of(&session.query(":ENTR:FUNC?")?) == Some(wanted) {
        session.function = Some(wanted);
        return Ok(());
    }
    let (switch, failure) = match wanted {
        Function::PowerSupply => (
            ":ENTR:FUNC POW",
            "Unable to enter Power Supply entry function (:ENTR:FUNC POW).",
        ),
        Function::Battery => (
            ":ENTR:FUNC BATT",
            "Unable to enter Battery entry function (:ENTR:FUNC BATT).",
        ),
    };
    // Both outputs off first, as the front panel requires.
    for command in [":ABOR", ":OUTP OFF", switch, "*CLS"] {
        session.write(command)?;
    }
    if function_of(&session.query(":ENTR:FUNC?")?) != Some(wanted) {
        return Err(DriverError::Function(failure));
    }
    session.function = Some(wanted);
    Ok(())
}

fn function_of(reply: &str) -> Option<Function> {
    let reply = reply.to_ascii_uppercase();
    if reply.contains("POW") || reply.contains("SUPPLY") || reply.contains("PSS") {
        Some(Function::PowerSupply)
    } else if reply.contains("BATT") || reply.contains("SIM") {
        Some(Function::Battery)
    } else {
        None
    }
}

/// A setting followed by the error queue: a refused value is an error here,
/// not a silent no-op.
fn checked(session: &mut Session, command: &str) -> Result<(), DriverError> {
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

/// Battery parameters can only change with the battery output off (704):
/// it is turned off around the write and restored.
fn battery_setting(
    session: &mut Session,
    header: &str,
    value: f64,
    what: &str,
    unit: &str,
) -> Result<Outcome, DriverError> {
    ensure(session, Function::Battery)?;
    let was_on = session.query(":BATT:OUTP?")? == "1";
    if was_on {
        session.write(":BATT:OUTP OFF")?;
    }
    let written = checked(session, &format!("{header} {}", number(value)));
    if was_on {
        session.write(":BATT:OUTP ON")?;
    }
    written?;
    Ok(Outcome {
        message: format!("{what} set to {}{unit}", number(value)),
        state: Some(json!({ what.to_ascii_lowercase().replace(' ', "_"): value })),
    })
}

fn supply_state(session: &mut Session) -> Result<Value, DriverError> {
    session.query("*IDN?")?; // probe first: a stale session fails here and recovers
    let on = session.query(":OUTP?")? == "1";
    let voltage_set = float(&session.query(":SOUR1:VOLT?")?);
    let current_set = float(&session.query(":SOUR1:CURR?")?);
    let (voltage, current) = if on {
        (
            float(&session.query(":MEAS:VOLT?")?),
            float(&session.query(":MEAS:CURR?")?),
        )
    } else {
        (0.0, 0.0)
    };
    let bits = session
        .query(":STAT:QUES:INST:ISUM:COND?")?
        .trim()
        .parse::<u32>()
        .unwrap_or(0);
    let ocp_limit = float(&session.query(":SOUR1:CURR:PROT?")?);
    let ovp_limit = float(&session.query(":SOUR1:VOLT:PROT?")?);
    let trip = session.query(":OUTP:PROT:TRIP?")?;
    Ok(json!({
        "voltage": voltage,
        "current": current,
        "power": voltage * current,
        "enabled": on,
        "mode": if bits & 1 != 0 { "CC" } else { "CV" },
        "voltage_set": voltage_set,
        "current_set": current_set,
        "voltage_max": LIMITS.volts.1,
        "current_max": LIMITS.amps.1,
        "ocp_limit": ocp_limit,
        "ocp_tripped": trip == "OCP",
        "ovp_limit": ovp_limit,
        "ovp_tripped": trip == "OVP",
        "channel": 1,
        "error": null,
    }))
}

/// The `state` action's message for any supply, from its state object.
pub(super) fn supply_message(state: &Value) -> String {
    format!(
        "Channel {}: {}, Set: {}V/{}A, Measured: {}V/{}A, OCP: {}A, OVP: {}V",
        state["channel"],
        if state["enabled"] == true {
            "ON"
        } else {
            "OFF"
        },
        state["voltage_set"],
        state["current_set"],
        state["voltage"],
        state["current"],
        state["ocp_limit"],
        state["ovp_limit"]
    )
}

fn battery_state(session: &mut Session) -> Result<Value, DriverError> {
    session.query("*IDN?")?;
    let mut q = |header: &str| -> Result<f64, DriverError> { Ok(float(&session.query(header)?)) };
    let state = json!({
        "terminal_voltage": q(":BATT:SIM:TVOL?")?,
        "current": q(":BATT:SIM:CURR?")?,
        "esr": q(":BATT:SIM:RES?")?,
        "soc": q(":BATT:SIM:SOC?")?,
        "voc": q(":BATT:SIM:VOC?")?,
        "capacity": q(":BATT:SIM:CAP:LIM?")?,
        "current_limit": q(":BATT:SIM:CURR:LIM?")?,
        "ocp_limit": q(":BATT:SIM:CURR:PROT?")?,
        "ovp_limit": q(":BATT:SIM:TVOL:PROT?")?,
        "volt_full": q(":BATT:SIM:VOC:FULL?")?,
        "volt_empty": q(":BATT:SIM:VOC:EMPT?")?,
    });
    let mut state = state;
    let enabled = session.query(":BATT:OUTP?")? == "1";
    let method = session.query(":BATT:SIM:METH?")?;
    let model = session.query(":BATT:MOD:RCL?")?;
    let trip = session.query(":OUTP:PROT:TRIP?")?;
    state["enabled"] = json!(enabled);
    state["mode"] = json!(if method.starts_with("DYN") {
        "Dynamic"
    } else {
        "Static"
    });
    state["model"] = json!(model);
    state["ocp_tripped"] = json!(trip == "OCP");
    state["ovp_tripped"] = json!(trip == "OVP");
    Ok(state)
}

/// The first comma field as a number, units stripped (§6.2); 0 if none.
fn float(reply: &str) -> f64 {
    let first = reply.split(',').next().unwrap_or("");
    first
        .trim()
        .trim_end_matches(['V', 'A', 'W', 's', '%', 'Ω'])
        .trim()
        .parse()
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_parse_leniently() {
        assert_eq!(float("5.000V"), 5.0);
        assert_eq!(float("3.7,other"), 3.7);
        assert_eq!(float("garbage"), 0.0);
        assert_eq!(function_of("POW"), Some(Function::PowerSupply));
        assert_eq!(function_of("\"BATT\""), Some(Function::Battery));
        assert_eq!(function_of("???"), None);
    }
}
