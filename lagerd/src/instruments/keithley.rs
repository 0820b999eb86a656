//! The Keithley 2281S driver (instruments.md §6): the power-supply and
//! battery-simulator roles over one shared session. The entry function is
//! switched only when the role changes (§10.9), never before every command.
//! Values are checked against the instrument's range before anything is
//! sent (§10.3: refused, never clamped).

use serde_json::{json, Map, Value};

use super::session::{Function, Session, SessionError};

/// What a supply or battery command asks for, validated.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    Voltage(Option<f64>),
    Current(Option<f64>),
    Ovp(Option<f64>),
    Ocp(Option<f64>),
    Enable,
    Disable,
    ClearProtection,
    SupplyState,
    Soc(f64),
    Voc(f64),
    Capacity(f64),
    CurrentLimit(f64),
    Dynamic(bool),
    BatteryOn,
    BatteryOff,
    BatteryState,
}

/// A request that never reaches the instrument (HTTP 400).
#[derive(Debug, PartialEq)]
pub enum ActionError {
    Unknown(String),
    NotANumber {
        quantity: &'static str,
        given: String,
    },
    OutOfRange {
        quantity: &'static str,
        value: f64,
        min: f64,
        max: f64,
        unit: &'static str,
    },
    Missing(&'static str),
}

impl std::fmt::Display for ActionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ActionError::Unknown(action) => write!(f, "Unknown action: {action}"),
            ActionError::NotANumber { quantity, given } => {
                write!(f, "{quantity} must be a number, not {given}")
            }
            ActionError::OutOfRange {
                quantity,
                value,
                min,
                max,
                unit,
            } => write!(
                f,
                "{quantity} {}{unit} is outside the instrument's range {}–{}{unit}",
                number(*value),
                number(*min),
                number(*max)
            ),
            ActionError::Missing(what) => write!(f, "{what} needs a value (params.value)"),
        }
    }
}

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

/// The 2281S-20-6's ranges.
const VOLTS: (f64, f64) = (0.0, 20.0);
const AMPS: (f64, f64) = (0.0, 6.0);
const OVP: (f64, f64) = (0.0, 21.0);
const OCP: (f64, f64) = (0.0, 6.1);

/// Parses `action` with `params` for the role (`supply` or `battery`).
pub fn parse(
    battery: bool,
    action: &str,
    params: &Map<String, Value>,
) -> Result<Action, ActionError> {
    let given = params.get("value").filter(|v| !v.is_null());
    let value = |quantity: &'static str,
                 (min, max): (f64, f64),
                 unit: &'static str|
     -> Result<Option<f64>, ActionError> {
        let Some(given) = given else { return Ok(None) };
        let v = match given {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
        .filter(|v: &f64| v.is_finite())
        .ok_or_else(|| ActionError::NotANumber {
            quantity,
            given: given.to_string(),
        })?;
        if !(min..=max).contains(&v) {
            return Err(ActionError::OutOfRange {
                quantity,
                value: v,
                min,
                max,
                unit,
            });
        }
        Ok(Some(v))
    };
    let required =
        |quantity, range, unit| value(quantity, range, unit)?.ok_or(ActionError::Missing(quantity));
    let action = match (battery, action) {
        (false, "voltage") => Action::Voltage(value("Voltage", VOLTS, "V")?),
        (false, "current") => Action::Current(value("Current", AMPS, "A")?),
        (false, "ovp") => Action::Ovp(value("OVP", OVP, "V")?),
        (false, "ocp") => Action::Ocp(value("OCP", OCP, "A")?),
        (false, "enable") => Action::Enable,
        (false, "disable") => Action::Disable,
        (false, "clear_ocp" | "clear_ovp") | (true, "clear" | "clear_ocp" | "clear_ovp") => {
            Action::ClearProtection
        }
        (false, "state") => Action::SupplyState,
        (true, "set_soc") => Action::Soc(required("SOC", (0.0, 100.0), "%")?),
        (true, "set_voc") => Action::Voc(required("VOC", (0.0, 60.0), "V")?),
        (true, "set_capacity") => Action::Capacity(required("Capacity", (0.001, 1000.0), "Ah")?),
        (true, "set_current_limit") => {
            Action::CurrentLimit(required("Current limit", (0.001, 6.0), "A")?)
        }
        (true, "set_mode") => match given
            .and_then(Value::as_str)
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("static") => Action::Dynamic(false),
            Some("dynamic") => Action::Dynamic(true),
            _ => return Err(ActionError::Missing("Mode (static or dynamic)")),
        },
        (true, "enable_battery") => Action::BatteryOn,
        (true, "disable_battery") => Action::BatteryOff,
        (true, "state" | "print_state") => Action::BatteryState,
        (_, other) => return Err(ActionError::Unknown(other.to_string())),
    };
    Ok(action)
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
        "voltage_max": VOLTS.1,
        "current_max": AMPS.1,
        "ocp_limit": ocp_limit,
        "ocp_tripped": trip == "OCP",
        "ovp_limit": ovp_limit,
        "ovp_tripped": trip == "OVP",
        "channel": 1,
        "error": null,
    }))
}

fn supply_message(state: &Value) -> String {
    format!(
        "Channel 1: {}, Set: {}V/{}A, Measured: {}V/{}A, OCP: {}A, OVP: {}V",
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

/// `%g`-like plain decimals for commands and messages: `5`, `0.25`.
fn number(value: f64) -> String {
    let text = format!("{value:.6}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(value: Value) -> Map<String, Value> {
        let mut map = Map::new();
        map.insert("value".into(), value);
        map
    }

    #[test]
    fn actions_are_validated_before_reaching_the_instrument() {
        assert_eq!(
            parse(false, "voltage", &params(json!(5))),
            Ok(Action::Voltage(Some(5.0)))
        );
        assert_eq!(
            parse(false, "voltage", &params(json!("3.3"))),
            Ok(Action::Voltage(Some(3.3)))
        );
        assert_eq!(
            parse(false, "voltage", &Map::new()),
            Ok(Action::Voltage(None))
        );
        assert_eq!(
            parse(false, "voltage", &params(json!(25)))
                .unwrap_err()
                .to_string(),
            "Voltage 25V is outside the instrument's range 0–20V"
        );
        assert_eq!(
            parse(false, "current", &params(json!(-1)))
                .unwrap_err()
                .to_string(),
            "Current -1A is outside the instrument's range 0–6A"
        );
        assert_eq!(
            parse(false, "voltage", &params(json!("five")))
                .unwrap_err()
                .to_string(),
            "Voltage must be a number, not \"five\""
        );
        assert_eq!(
            parse(true, "set_soc", &params(json!(101)))
                .unwrap_err()
                .to_string(),
            "SOC 101% is outside the instrument's range 0–100%"
        );
        assert_eq!(
            parse(true, "set_soc", &Map::new()),
            Err(ActionError::Missing("SOC"))
        );
        assert_eq!(
            parse(true, "set_mode", &params(json!("Dynamic"))),
            Ok(Action::Dynamic(true))
        );
        assert_eq!(
            parse(true, "print_state", &Map::new()),
            Ok(Action::BatteryState)
        );
        assert_eq!(
            parse(false, "set_soc", &Map::new())
                .unwrap_err()
                .to_string(),
            "Unknown action: set_soc"
        );
        assert_eq!(
            parse(true, "warp", &Map::new()).unwrap_err().to_string(),
            "Unknown action: warp"
        );
    }

    #[test]
    fn replies_parse_leniently() {
        assert_eq!(float("5.000V"), 5.0);
        assert_eq!(float("3.7,other"), 3.7);
        assert_eq!(float("garbage"), 0.0);
        assert_eq!(function_of("POW"), Some(Function::PowerSupply));
        assert_eq!(function_of("\"BATT\""), Some(Function::Battery));
        assert_eq!(function_of("???"), None);
        assert_eq!(number(0.25), "0.25");
        assert_eq!(number(5.0), "5");
    }
}
