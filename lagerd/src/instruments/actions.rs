//! Supply and battery commands as drivers receive them (instruments.md §7,
//! §10.2–§10.3): parsed from the request and checked against the
//! instrument's (or channel's) ranges before anything reaches it: refused,
//! never clamped.

use serde_json::{Map, Value};

/// An instrument's (or one channel's) settable ranges.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    pub volts: (f64, f64),
    pub amps: (f64, f64),
    pub ovp: (f64, f64),
    pub ocp: (f64, f64),
}

/// The Keithley 2281S-20-6.
pub const LIMITS_2281S: Limits = Limits {
    volts: (0.0, 20.0),
    amps: (0.0, 6.0),
    ovp: (0.0, 21.0),
    ocp: (0.0, 6.1),
};

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

/// Parses `action` with `params` for the role (`supply` or `battery`),
/// checking values against `limits`.
pub fn parse(
    battery: bool,
    action: &str,
    params: &Map<String, Value>,
    limits: &Limits,
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
        (false, "voltage") => Action::Voltage(value("Voltage", limits.volts, "V")?),
        (false, "current") => Action::Current(value("Current", limits.amps, "A")?),
        (false, "ovp") => Action::Ovp(value("OVP", limits.ovp, "V")?),
        (false, "ocp") => Action::Ocp(value("OCP", limits.ocp, "A")?),
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

/// `%g`-like plain decimals for commands and messages: `5`, `0.25`.
pub fn number(value: f64) -> String {
    let text = format!("{value:.6}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn params(value: Value) -> Map<String, Value> {
        let mut map = Map::new();
        map.insert("value".into(), value);
        map
    }

    #[test]
    fn actions_are_validated_before_reaching_the_instrument() {
        assert_eq!(
            parse(false, "voltage", &params(json!(5)), &LIMITS_2281S),
            Ok(Action::Voltage(Some(5.0)))
        );
        assert_eq!(
            parse(false, "voltage", &params(json!("3.3")), &LIMITS_2281S),
            Ok(Action::Voltage(Some(3.3)))
        );
        assert_eq!(
            parse(false, "voltage", &Map::new(), &LIMITS_2281S),
            Ok(Action::Voltage(None))
        );
        assert_eq!(
            parse(false, "voltage", &params(json!(25)), &LIMITS_2281S)
                .unwrap_err()
                .to_string(),
            "Voltage 25V is outside the instrument's range 0–20V"
        );
        assert_eq!(
            parse(false, "current", &params(json!(-1)), &LIMITS_2281S)
                .unwrap_err()
                .to_string(),
            "Current -1A is outside the instrument's range 0–6A"
        );
        assert_eq!(
            parse(false, "voltage", &params(json!("five")), &LIMITS_2281S)
                .unwrap_err()
                .to_string(),
            "Voltage must be a number, not \"five\""
        );
        assert_eq!(
            parse(true, "set_soc", &params(json!(101)), &LIMITS_2281S)
                .unwrap_err()
                .to_string(),
            "SOC 101% is outside the instrument's range 0–100%"
        );
        assert_eq!(
            parse(true, "set_soc", &Map::new(), &LIMITS_2281S),
            Err(ActionError::Missing("SOC"))
        );
        assert_eq!(
            parse(true, "set_mode", &params(json!("Dynamic")), &LIMITS_2281S),
            Ok(Action::Dynamic(true))
        );
        assert_eq!(
            parse(true, "print_state", &Map::new(), &LIMITS_2281S),
            Ok(Action::BatteryState)
        );
        assert_eq!(
            parse(false, "set_soc", &Map::new(), &LIMITS_2281S)
                .unwrap_err()
                .to_string(),
            "Unknown action: set_soc"
        );
        assert_eq!(
            parse(true, "warp", &Map::new(), &LIMITS_2281S)
                .unwrap_err()
                .to_string(),
            "Unknown action: warp"
        );
    }

    #[test]
    fn numbers_print_plainly() {
        assert_eq!(number(0.25), "0.25");
        assert_eq!(number(5.0), "5");
    }
}
