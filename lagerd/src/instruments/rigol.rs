//! The Rigol DP800 driver (instruments.md §6.3): a multi-channel supply.
//! One session per instrument (§2), shared by the nets on its channels; each
//! command names its channel (`CH<n>`), so nothing depends on which channel
//! a previous command selected.

use serde_json::{json, Value};

use super::actions::{number, Action, Limits};
use super::scpi::{checked, reading, DriverError, Outcome};
use super::session::Session;

/// DP832 channels: 1 and 2 are 30 V/3 A, 3 is 5 V/3 A.
pub const CHANNELS: u8 = 3;

/// The settable ranges of `channel` (1-based).
pub fn limits(channel: u8) -> Limits {
    let volts = if channel == 3 { 5.0 } else { 30.0 };
    Limits {
        volts: (0.0, volts),
        amps: (0.0, 3.0),
        ovp: (0.0, volts * 1.1),
        ocp: (0.0, 3.3),
    }
}

/// Runs a supply `action` on `channel`.
pub fn run(session: &mut Session, channel: u8, action: &Action) -> Result<Outcome, DriverError> {
    let ch = format!("CH{channel}");
    let done = |message: String| Ok(Outcome::said(message));
    match action {
        Action::Voltage(Some(v)) => {
            let (_, amps) = setpoints(session, &ch)?;
            checked(
                session,
                &format!(":APPL {ch},{},{}", number(*v), number(amps)),
            )?;
            Ok(Outcome::set("Voltage", *v, "V", "voltage_set"))
        }
        Action::Current(Some(a)) => {
            let (volts, _) = setpoints(session, &ch)?;
            checked(
                session,
                &format!(":APPL {ch},{},{}", number(volts), number(*a)),
            )?;
            Ok(Outcome::set("Current limit", *a, "A", "current_set"))
        }
        Action::Voltage(None) | Action::Current(None) => {
            let volts = matches!(action, Action::Voltage(_));
            let text = if session.query(&format!(":OUTP? {ch}"))? == "ON" {
                session.query(&format!(
                    ":MEAS:{}? {ch}",
                    if volts { "VOLT" } else { "CURR" }
                ))?
            } else {
                let (v, a) = setpoints(session, &ch)?;
                number(if volts { v } else { a })
            };
            Ok(if volts {
                Outcome::read("Voltage", &text, "V", "voltage")
            } else {
                Outcome::read("Current", &text, "A", "current")
            })
        }
        Action::Limits => Ok(Outcome::limits(limits(channel))),
        Action::Ovp(Some(v)) | Action::Ocp(Some(v)) => {
            let kind = if matches!(action, Action::Ovp(_)) {
                "OVP"
            } else {
                "OCP"
            };
            checked(session, &format!(":OUTP:{kind}:VAL {ch},{}", number(*v)))?;
            checked(session, &format!(":OUTP:{kind} {ch},ON"))?;
            Ok(if kind == "OVP" {
                Outcome::set(kind, *v, "V", "ovp_limit")
            } else {
                Outcome::set(kind, *v, "A", "ocp_limit")
            })
        }
        Action::Ovp(None) => {
            let v = session.query(&format!(":OUTP:OVP:VAL? {ch}"))?;
            Ok(Outcome::read("OVP", &v, "V", "ovp_limit"))
        }
        Action::Ocp(None) => {
            let a = session.query(&format!(":OUTP:OCP:VAL? {ch}"))?;
            Ok(Outcome::read("OCP", &a, "A", "ocp_limit"))
        }
        Action::Enable => {
            checked(session, &format!(":OUTP {ch},ON"))?;
            // A protection below the output trips as it turns on (as on
            // the Keithley): say so instead of reporting success.
            for kind in ["OVP", "OCP"] {
                if session.query(&format!(":OUTP:{kind}:QUES? {ch}"))? == "YES" {
                    return Err(DriverError::Refused {
                        command: format!(":OUTP {ch},ON"),
                        error: format!("protection tripped ({kind})"),
                    });
                }
            }
            done(format!("Channel {channel} output enabled"))
        }
        Action::Disable => {
            checked(session, &format!(":OUTP {ch},OFF"))?;
            done(format!("Channel {channel} output disabled"))
        }
        Action::ClearProtection => {
            session.write(&format!(":OUTP:OVP:CLEAR {ch}"))?;
            session.write(&format!(":OUTP:OCP:CLEAR {ch}"))?;
            done(format!("Channel {channel} protection cleared"))
        }
        Action::SupplyState => Ok(Outcome::supply_state(state(session, channel)?)),
        // Protections first: the DP800 checks OVP against the output, not
        // the setpoint, so setting them before the value never trips.
        Action::Protected { ovp, ocp, then } => {
            let mut said = Vec::new();
            if let Some(o) = ovp {
                run(session, channel, &Action::Ovp(Some(*o)))?;
                said.push(format!("OVP {}V", number(*o)));
            }
            if let Some(a) = ocp {
                run(session, channel, &Action::Ocp(Some(*a)))?;
                said.push(format!("OCP {}A", number(*a)));
            }
            let outcome = run(session, channel, then)?;
            Ok(Outcome {
                message: format!("{} ({})", outcome.message, said.join(", ")),
                state: outcome.state,
            })
        }
        Action::SupplyMode => done("Power supply mode".into()),
        // Battery actions never reach a supply-only instrument: the net's
        // role is checked first.
        _ => Err(DriverError::Function(
            "The Rigol DP800 is a power supply; it has no battery simulator.",
        )),
    }
}

/// `(volts, amps)` set on the channel, from `:APPL? CHn` (`CH1:30V/3A,5.000,1.000`).
fn setpoints(session: &mut Session, ch: &str) -> Result<(f64, f64), DriverError> {
    let reply = session.query(&format!(":APPL? {ch}"))?;
    setpoints_of(&reply).ok_or_else(|| DriverError::Refused {
        command: format!(":APPL? {ch}"),
        error: format!("unexpected reply {reply:?}"),
    })
}

/// The volts and amps fields of an `:APPL?` reply, both finite numbers:
/// they are written back with the other one changed, and `nan` is no
/// setpoint (found by the `scpi_replies` fuzz target).
fn setpoints_of(reply: &str) -> Option<(f64, f64)> {
    let mut fields = reply.split(',').skip(1).map(reading);
    Some((fields.next()??, fields.next()??))
}

fn state(session: &mut Session, channel: u8) -> Result<Value, DriverError> {
    let ch = format!("CH{channel}");
    session.query("*IDN?")?;
    let enabled = session.query(&format!(":OUTP? {ch}"))? == "ON";
    let (voltage_set, current_set) = setpoints(session, &ch)?;
    let all = session.query(&format!(":MEAS:ALL? {ch}"))?;
    let measured: Vec<Option<f64>> = all.split(',').map(reading).collect();
    let value = |i: usize| measured.get(i).copied().flatten();
    let mut query = |header: &str| session.query(&format!("{header} {ch}"));
    let ovp_limit = reading(&query(":OUTP:OVP:VAL?")?);
    let ocp_limit = reading(&query(":OUTP:OCP:VAL?")?);
    let ovp_tripped = query(":OUTP:OVP:QUES?")? == "YES";
    let ocp_tripped = query(":OUTP:OCP:QUES?")? == "YES";
    // `UR` (unregulated: the output is off) reads as CV, as on the Keithley.
    let mode = match query(":OUTP:MODE?")?.as_str() {
        "CC" => Some("CC"),
        "CV" | "UR" => Some("CV"),
        _ => None,
    };
    let limits = limits(channel);
    Ok(json!({
        "voltage": value(0),
        "current": value(1),
        "power": value(2),
        "enabled": enabled,
        "mode": mode,
        "voltage_set": voltage_set,
        "current_set": current_set,
        "voltage_max": limits.volts.1,
        "current_max": limits.amps.1,
        "ocp_limit": ocp_limit,
        "ocp_tripped": ocp_tripped,
        "ovp_limit": ovp_limit,
        "ovp_tripped": ovp_tripped,
        "channel": channel,
        "error": null,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_three_is_the_five_volt_one() {
        assert_eq!(limits(1).volts, (0.0, 30.0));
        assert_eq!(limits(3).volts, (0.0, 5.0));
        assert_eq!(limits(2).amps, (0.0, 3.0));
    }

    #[test]
    fn setpoints_are_finite_numbers() {
        assert_eq!(setpoints_of("CH1:30V/3A,5.000,1.000"), Some((5.0, 1.0)));
        for reply in ["CH1:30V/3A,nan,1", "CH1,1,inf", "CH1,5", "5.0,1.0"] {
            assert_eq!(setpoints_of(reply), None, "{reply}");
        }
    }
}
