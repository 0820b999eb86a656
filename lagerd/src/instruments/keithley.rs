//! The Keithley 2281S driver (instruments.md §6): the power-supply and
//! battery-simulator roles over one shared session. The entry function is
//! switched only when the role changes (§10.9), never before every command.
//! Actions arrive validated against the instrument's ranges (`actions.rs`).

use common::actions::Key;
use serde_json::{json, Value};

use super::actions::{number, Action, BatteryModel, BUILTIN_MODELS, LIMITS_2281S as LIMITS};
use super::scpi::{checked, float, reading, DriverError, Outcome};
use super::session::{Function, Session};

/// Runs `action` on the instrument behind `session`.
pub fn run(session: &mut Session, action: &Action) -> Result<Outcome, DriverError> {
    let done = |message: &str| Ok(Outcome::said(message));
    match action {
        Action::Voltage(Some(v)) => {
            ensure(session, Function::PowerSupply)?;
            checked(session, &format!(":SOUR1:VOLT {}", number(*v)))?;
            Ok(Outcome::set("Voltage", *v, "V", "voltage_set"))
        }
        Action::Voltage(None) => {
            let on = session.query(":OUTP?")? == "1";
            let v = session.query(if on { ":MEAS:VOLT?" } else { ":SOUR1:VOLT?" })?;
            Ok(Outcome::read("Voltage", &v, "V", "voltage"))
        }
        Action::Current(Some(a)) => {
            ensure(session, Function::PowerSupply)?;
            checked(session, &format!(":SOUR1:CURR {}", number(*a)))?;
            Ok(Outcome::set("Current limit", *a, "A", "current_set"))
        }
        Action::Current(None) => {
            let on = session.query(":OUTP?")? == "1";
            let a = session.query(if on { ":MEAS:CURR?" } else { ":SOUR1:CURR?" })?;
            Ok(Outcome::read("Current", &a, "A", "current"))
        }
        Action::Limits => Ok(Outcome::limits(LIMITS)),
        Action::Ovp(Some(v)) => {
            ensure(session, Function::PowerSupply)?;
            let setpoint = float(&session.query(":SOUR1:VOLT?")?);
            if *v < setpoint {
                return Err(DriverError::Invalid(format!(
                    "Cannot set OVP ({}V) below current voltage setpoint ({}V). Lower voltage first or use voltage command with both values.",
                    number(*v),
                    number(setpoint)
                )));
            }
            checked(session, &format!(":SOUR1:VOLT:PROT {}", number(*v)))?;
            Ok(Outcome::set("OVP", *v, "V", "ovp_limit"))
        }
        Action::Ovp(None) => {
            let v = session.query(":SOUR1:VOLT:PROT?")?;
            Ok(Outcome::read("OVP", &v, "V", "ovp_limit"))
        }
        Action::Ocp(Some(a)) => {
            ensure(session, Function::PowerSupply)?;
            checked(session, &format!(":SOUR1:CURR:PROT {}", number(*a)))?;
            Ok(Outcome::set("OCP", *a, "A", "ocp_limit"))
        }
        Action::Ocp(None) => {
            let a = session.query(":SOUR1:CURR:PROT?")?;
            Ok(Outcome::read("OCP", &a, "A", "ocp_limit"))
        }
        Action::Enable => {
            ensure(session, Function::PowerSupply)?;
            session.write(":OUTP:PROT:CLE")?;
            checked(session, ":OUTP ON")?;
            match session.query(":OUTP:PROT:TRIP?")?.as_str() {
                "NONE" if session.query(":OUTP?")? == "1" => done("Output enabled"),
                trip => Err(DriverError::Refused {
                    command: ":OUTP ON".into(),
                    error: format!("protection tripped ({trip})"),
                }),
            }
        }
        Action::Disable => {
            session.write(":OUTP OFF")?;
            done("Output disabled")
        }
        Action::ClearProtection => {
            for command in [":OUTP:PROT:CLE", "*CLS"] {
                session.write(command)?;
            }
            done("Protection cleared")
        }
        Action::SupplyState => Ok(Outcome::supply_state(supply_state(session)?)),
        Action::Soc(soc) => battery_setting(session, &SOC, *soc),
        Action::Voc(voc) => battery_setting(session, &VOC, *voc),
        Action::Capacity(ah) => battery_setting(session, &CAPACITY, *ah),
        Action::CurrentLimit(a) => battery_setting(session, &CURRENT_LIMIT, *a),
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
            done(if *dynamic {
                "Mode set to dynamic"
            } else {
                "Mode set to static"
            })
        }
        Action::BatteryOn => {
            ensure(session, Function::Battery)?;
            checked(session, ":BATT:OUTP ON")?;
            done("Battery output enabled")
        }
        Action::BatteryOff => {
            ensure(session, Function::Battery)?;
            checked(session, ":BATT:OUTP OFF")?;
            done("Battery output disabled")
        }
        Action::Protected { ovp, ocp, then } => protected(session, *ovp, *ocp, then),
        Action::SupplyMode => {
            ensure(session, Function::PowerSupply)?;
            done("Power supply mode")
        }
        Action::BatteryMode => {
            ensure(session, Function::Battery)?;
            for command in [
                ":ABOR",
                ":BATT:OUTP OFF",
                ":OUTP OFF",
                ":BATT:OUTP:PROT:CLE",
                ":OUTP:PROT:CLE",
                "*CLS",
                ":INIT:CONT ON",
            ] {
                session.write(command)?;
            }
            done("Battery simulator mode, output off, protections cleared")
        }
        Action::VoltFull(v) => battery_setting(session, &VOLT_FULL, *v),
        Action::VoltEmpty(v) => battery_setting(session, &VOLT_EMPTY, *v),
        Action::BatteryOvp(v) => battery_setting(session, &BATTERY_OVP, *v),
        Action::BatteryOcp(a) => battery_setting(session, &BATTERY_OCP, *a),
        Action::Model(name) => {
            ensure(session, Function::Battery)?;
            if name.parse::<u8>().is_ok()
                && slot_values(session, name.parse().unwrap_or(1), "VOC")?.is_empty()
            {
                return Err(DriverError::Invalid(format!(
                    "Model slot {name} is empty; store a model there first with `lager battery NET model-create {name} --csv FILE`"
                )));
            }
            with_battery_off(session, |session| {
                checked(session, &format!(":BATT:MOD:RCL {name}"))
            })?;
            Ok(Outcome {
                message: format!("Model {name} recalled"),
                state: Some(json!({ "model": name })),
            })
        }
        Action::ListModels => list_models(session),
        Action::ExportModel(slot) => {
            ensure(session, Function::Battery)?;
            let voc = slot_values(session, *slot, "VOC")?;
            let esr = slot_values(session, *slot, "RES")?;
            if voc.is_empty() {
                return Err(DriverError::Invalid(format!(
                    "Model slot {slot} is empty: nothing to export"
                )));
            }
            Ok(Outcome {
                message: format!("Model {slot}: {} points", voc.len()),
                state: Some(json!({ "slot": slot, "voc": voc, "esr": esr })),
            })
        }
        Action::CreateModel(model) => create_model(session, model),
        Action::BatteryRead(quantity) => battery_read(session, *quantity),
        // Cut down to its field by the caller (`instruments::Driver::run`).
        Action::Reading { state, .. } => run(session, state),
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

/// Battery parameters can only change with the battery output off (704):
/// it is turned off around `write` and restored.
fn with_battery_off(
    session: &mut Session,
    write: impl FnOnce(&mut Session) -> Result<(), DriverError>,
) -> Result<(), DriverError> {
    let was_on = session.query(":BATT:OUTP?")? == "1";
    if was_on {
        session.write(":BATT:OUTP OFF")?;
    }
    let written = write(session);
    if was_on {
        session.write(":BATT:OUTP ON")?;
    }
    written
}

/// One battery-simulator parameter: its SCPI header, its key in the
/// state object (§6.2), and how the message names it.
struct BatterySetting {
    header: &'static str,
    key: &'static str,
    what: &'static str,
    unit: &'static str,
}

const fn setting(
    header: &'static str,
    key: &'static str,
    what: &'static str,
    unit: &'static str,
) -> BatterySetting {
    BatterySetting {
        header,
        key,
        what,
        unit,
    }
}

// header, state key, message name, unit
const SOC: BatterySetting = setting(":BATT:SIM:SOC", "soc", "SOC", "%");
const VOC: BatterySetting = setting(":BATT:SIM:VOC", "voc", "VOC", "V");
const CAPACITY: BatterySetting = setting(":BATT:SIM:CAP:LIM", "capacity", "Capacity", "Ah");
const CURRENT_LIMIT: BatterySetting =
    setting(":BATT:SIM:CURR:LIM", "current_limit", "Current limit", "A");
const VOLT_FULL: BatterySetting = setting(":BATT:SIM:VOC:FULL", "volt_full", "Full voltage", "V");
const VOLT_EMPTY: BatterySetting =
    setting(":BATT:SIM:VOC:EMPT", "volt_empty", "Empty voltage", "V");
const BATTERY_OVP: BatterySetting = setting(":BATT:SIM:TVOL:PROT", "ovp_limit", "OVP", "V");
const BATTERY_OCP: BatterySetting = setting(":BATT:SIM:CURR:PROT", "ocp_limit", "OCP", "A");

/// Writes one parameter (output off around it) and answers with the value
/// under its state key, as §10.2 asks of setters.
fn battery_setting(
    session: &mut Session,
    setting: &BatterySetting,
    value: f64,
) -> Result<Outcome, DriverError> {
    ensure(session, Function::Battery)?;
    with_battery_off(session, |session| {
        checked(session, &format!("{} {}", setting.header, number(value)))
    })?;
    Ok(Outcome::set(setting.what, value, setting.unit, setting.key))
}

/// One battery-simulator setting read back: `soc`, `voc`, ... without a
/// value (§8), answered like the supply's reads (`SOC: 42%`) with the value
/// under its state key.
fn battery_read(session: &mut Session, key: Key) -> Result<Outcome, DriverError> {
    ensure(session, Function::Battery)?;
    let setting = match key {
        Key::Soc => &SOC,
        Key::Voc => &VOC,
        Key::VoltFull => &VOLT_FULL,
        Key::VoltEmpty => &VOLT_EMPTY,
        Key::Capacity => &CAPACITY,
        Key::CurrentLimit => &CURRENT_LIMIT,
        Key::BatteryOvp => &BATTERY_OVP,
        Key::BatteryOcp => &BATTERY_OCP,
        Key::SimulationMode => {
            let method = session.query(":BATT:SIM:METH?")?;
            let mode = if method.to_ascii_uppercase().starts_with("DYN") {
                "dynamic"
            } else {
                "static"
            };
            return Ok(Outcome {
                message: format!("Mode: {mode}"),
                state: Some(json!({ "mode": mode })),
            });
        }
        other => {
            return Err(DriverError::Invalid(format!(
                "{} is not a battery setting to read",
                other.action().name
            )))
        }
    };
    let value = float(&session.query(&format!("{}?", setting.header))?);
    Ok(Outcome {
        message: format!("{}: {}{}", setting.what, number(value), setting.unit),
        state: Some(json!({ setting.key: value })),
    })
}

/// A value set with its protections (§6.1): OCP first (it cannot trip on
/// a setting), then OVP and voltage in the order that keeps OVP at or above
/// the setpoint throughout.
fn protected(
    session: &mut Session,
    ovp: Option<f64>,
    ocp: Option<f64>,
    then: &Action,
) -> Result<Outcome, DriverError> {
    ensure(session, Function::PowerSupply)?;
    let mut said = Vec::new();
    if let Some(a) = ocp {
        checked(session, &format!(":SOUR1:CURR:PROT {}", number(a)))?;
        said.push(format!("OCP {}A", number(a)));
    }
    let set_ovp = |session: &mut Session, o: f64| {
        checked(session, &format!(":SOUR1:VOLT:PROT {}", number(o)))
    };
    let outcome = match (ovp, then) {
        (Some(o), Action::Voltage(Some(_))) => {
            // Raising: OVP first; lowering OVP: the voltage first.
            if o >= float(&session.query(":SOUR1:VOLT:PROT?")?) {
                set_ovp(session, o)?;
                run(session, then)?
            } else {
                let outcome = run(session, then)?;
                set_ovp(session, o)?;
                outcome
            }
        }
        (Some(o), _) => {
            run(session, &Action::Ovp(Some(o)))?;
            run(session, then)?
        }
        (None, _) => run(session, then)?,
    };
    if let Some(o) = ovp {
        said.push(format!("OVP {}V", number(o)));
    }
    Ok(Outcome {
        message: format!("{} ({})", outcome.message, said.join(", ")),
        state: outcome.state,
    })
}

/// The values stored in a model slot (`:BATT:MOD<n>:VOC?` / `RES?`);
/// empty for an empty slot.
fn slot_values(session: &mut Session, slot: u8, element: &str) -> Result<Vec<f64>, DriverError> {
    let reply = session.query(&format!(":BATT:MOD{slot}:{element}?"))?;
    Ok(reply
        .trim_matches('"')
        .split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(float)
        .collect())
}

fn list_models(session: &mut Session) -> Result<Outcome, DriverError> {
    ensure(session, Function::Battery)?;
    let active = session.query(":BATT:MOD:RCL?")?;
    let mut lines = vec![
        format!("Active model: {active}"),
        format!("Built in: {}", BUILTIN_MODELS.join(", ")),
    ];
    let mut slots = Vec::new();
    for slot in 1..=9u8 {
        let voc = slot_values(session, slot, "VOC")?;
        match (voc.first(), voc.last()) {
            (Some(low), Some(high)) => {
                lines.push(format!(
                    "Slot {slot}: {} points, VOC {}–{}V",
                    voc.len(),
                    number(*low),
                    number(*high)
                ));
                slots.push(
                    json!({"slot": slot, "points": voc.len(), "voc_empty": low, "voc_full": high}),
                );
            }
            _ => {
                lines.push(format!("Slot {slot}: empty"));
                slots.push(json!({"slot": slot, "points": 0}));
            }
        }
    }
    Ok(Outcome {
        message: lines.join("\n"),
        state: Some(json!({"active": active, "builtin": BUILTIN_MODELS, "slots": slots})),
    })
}

/// Writes a model into its slot (`:BATT:MOD<n>:VOC` and `:RES`, 101 values
/// each), refusing to overwrite a stored one without `force`.
fn create_model(session: &mut Session, model: &BatteryModel) -> Result<Outcome, DriverError> {
    ensure(session, Function::Battery)?;
    let slot = model.slot;
    if !model.force && !slot_values(session, slot, "VOC")?.is_empty() {
        return Err(DriverError::Invalid(format!(
            "Model slot {slot} already holds a model; export it first if you need it, then pass --force to overwrite it"
        )));
    }
    let list = |values: &[f64]| {
        values
            .iter()
            .map(|v| number(*v))
            .collect::<Vec<_>>()
            .join(",")
    };
    with_battery_off(session, |session| {
        checked(
            session,
            &format!(":BATT:MOD{slot}:VOC \"{}\"", list(&model.voc)),
        )?;
        checked(
            session,
            &format!(":BATT:MOD{slot}:RES \"{}\"", list(&model.esr)),
        )
    })?;
    Ok(Outcome {
        message: format!("Model {slot} stored ({} points)", model.voc.len()),
        state: Some(json!({"slot": slot, "points": model.voc.len()})),
    })
}

fn supply_state(session: &mut Session) -> Result<Value, DriverError> {
    session.query("*IDN?")?; // probe first: a stale session fails here and recovers
    let on = session.query(":OUTP?")? == "1";
    let voltage_set = reading(&session.query(":SOUR1:VOLT?")?);
    let current_set = reading(&session.query(":SOUR1:CURR?")?);
    // An output that is off measures nothing: 0, not a failed reading.
    let (voltage, current) = if on {
        (
            reading(&session.query(":MEAS:VOLT?")?),
            reading(&session.query(":MEAS:CURR?")?),
        )
    } else {
        (Some(0.0), Some(0.0))
    };
    let bits = session
        .query(":STAT:QUES:INST:ISUM:COND?")?
        .trim()
        .parse::<u32>()
        .ok();
    let ocp_limit = reading(&session.query(":SOUR1:CURR:PROT?")?);
    let ovp_limit = reading(&session.query(":SOUR1:VOLT:PROT?")?);
    let trip = session.query(":OUTP:PROT:TRIP?")?;
    Ok(json!({
        "voltage": voltage,
        "current": current,
        "power": voltage.zip(current).map(|(v, a)| v * a),
        "enabled": on,
        "mode": bits.map(|bits| if bits & 1 != 0 { "CC" } else { "CV" }),
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

fn battery_state(session: &mut Session) -> Result<Value, DriverError> {
    session.query("*IDN?")?;
    let mut q =
        |header: &str| -> Result<Option<f64>, DriverError> { Ok(reading(&session.query(header)?)) };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_functions_are_read_leniently() {
        assert_eq!(function_of("POW"), Some(Function::PowerSupply));
        assert_eq!(function_of("\"BATT\""), Some(Function::Battery));
        assert_eq!(function_of("???"), None);
    }
}
