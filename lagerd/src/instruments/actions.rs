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
    /// The instrument's (or channel's) ceilings; nothing is sent.
    Limits,
    Soc(f64),
    Voc(f64),
    Capacity(f64),
    CurrentLimit(f64),
    Dynamic(bool),
    BatteryOn,
    BatteryOff,
    BatteryState,
    /// A battery setter without a value reads the setting (instruments.md
    /// §8: `soc [V]`, `voc [V]`, ...).
    BatteryRead(BatteryQuantity),
    /// `voltage`/`current` with `ovp`/`ocp` params: the protections are
    /// set together with the value, in an order that never trips them.
    Protected {
        ovp: Option<f64>,
        ocp: Option<f64>,
        then: Box<Action>,
    },
    /// Supply `set_mode`: enter the power-supply function.
    SupplyMode,
    /// Battery `set_to_battery_mode`: enter the battery function, outputs
    /// off and protections cleared (§6.2 `set`).
    BatteryMode,
    VoltFull(f64),
    VoltEmpty(f64),
    BatteryOvp(f64),
    BatteryOcp(f64),
    /// Recall a model: a slot 1–9 or a built-in name.
    Model(String),
    ListModels,
    ExportModel(u8),
    CreateModel(Box<BatteryModel>),
}

/// A battery-simulator setting that `BatteryRead` reads back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatteryQuantity {
    Soc,
    Voc,
    VoltFull,
    VoltEmpty,
    Capacity,
    CurrentLimit,
    Ovp,
    Ocp,
    Mode,
}

/// The 2281S's built-in battery models (`:BATT:MOD:RCL <name>`).
pub const BUILTIN_MODELS: [&str; 5] = ["LI-ION4_2", "NIMH1_2", "NICD1_2", "LEAD-ACID12", "NIMH12"];

/// Points in a stored model: one per SOC percent, 0 to 100.
pub const MODEL_POINTS: usize = 101;

/// A battery model for a slot: open-circuit voltage (non-decreasing) and
/// series resistance (non-increasing) at SOC 0, 1, …, 100 %.
#[derive(Clone, Debug, PartialEq)]
pub struct BatteryModel {
    pub slot: u8,
    pub voc: Vec<f64>,
    pub esr: Vec<f64>,
    pub force: bool,
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
    /// A parameter that is present but wrong, with the whole message.
    Invalid(String),
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
            ActionError::Invalid(text) => f.write_str(text),
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
    // `params[key]` as a number within range; `None` when absent.
    let param = |key: &str,
                 quantity: &'static str,
                 (min, max): (f64, f64),
                 unit: &'static str|
     -> Result<Option<f64>, ActionError> {
        let Some(given) = params.get(key).filter(|v| !v.is_null()) else {
            return Ok(None);
        };
        let v = as_number(given).ok_or_else(|| ActionError::NotANumber {
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
    let value = |quantity, range, unit| param("value", quantity, range, unit);
    // A battery setter with a value sets it; without one it reads it (§8).
    use BatteryQuantity::*;
    let read_or = |value: Option<f64>, set: fn(f64) -> Action, quantity| match value {
        Some(v) => set(v),
        None => Action::BatteryRead(quantity),
    };
    let action = match (battery, action) {
        (false, "voltage" | "current") => {
            let base = if action == "voltage" {
                Action::Voltage(value("Voltage", limits.volts, "V")?)
            } else {
                Action::Current(value("Current", limits.amps, "A")?)
            };
            // `ovp`/`ocp` beside `value` (§7).
            let ovp = param("ovp", "OVP", limits.ovp, "V")?;
            let ocp = param("ocp", "OCP", limits.ocp, "A")?;
            if ovp.is_none() && ocp.is_none() {
                base
            } else {
                if let (Action::Voltage(Some(v)), Some(o)) = (&base, ovp) {
                    if *v > o {
                        return Err(ActionError::Invalid(format!(
                            "Voltage {}V is above the OVP {}V given with it; the output would trip at once",
                            number(*v),
                            number(o)
                        )));
                    }
                }
                Action::Protected {
                    ovp,
                    ocp,
                    then: Box::new(base),
                }
            }
        }
        (false, "set_mode") => Action::SupplyMode,
        (true, "set_to_battery_mode") => Action::BatteryMode,
        // Full and empty are VOCs: §10.3 names the quantity VOC.
        (true, "set_volt_full") => {
            read_or(value("VOC", (0.0, 60.0), "V")?, Action::VoltFull, VoltFull)
        }
        (true, "set_volt_empty") => read_or(
            value("VOC", (0.0, 60.0), "V")?,
            Action::VoltEmpty,
            VoltEmpty,
        ),
        (true, "set_ovp") => read_or(value("OVP", (0.0, 61.0), "V")?, Action::BatteryOvp, Ovp),
        (true, "set_ocp") => read_or(value("OCP", (0.001, 6.1), "A")?, Action::BatteryOcp, Ocp),
        (true, "set_model") => Action::Model(model_name(given)?),
        (true, "list_models" | "models") => Action::ListModels,
        (true, "export_model") => Action::ExportModel(slot(params)?),
        (true, "create_model") => Action::CreateModel(Box::new(battery_model(params)?)),
        (false, "ovp") => Action::Ovp(value("OVP", limits.ovp, "V")?),
        (false, "ocp") => Action::Ocp(value("OCP", limits.ocp, "A")?),
        (false, "enable") => Action::Enable,
        (false, "disable") => Action::Disable,
        (false, "clear_ocp" | "clear_ovp") | (true, "clear" | "clear_ocp" | "clear_ovp") => {
            Action::ClearProtection
        }
        (false, "state") => Action::SupplyState,
        (false, "limits") => Action::Limits,
        (true, "set_soc") => read_or(value("SOC", (0.0, 100.0), "%")?, Action::Soc, Soc),
        (true, "set_voc") => read_or(value("VOC", (0.0, 60.0), "V")?, Action::Voc, Voc),
        (true, "set_capacity") => read_or(
            value("Capacity", (0.001, 1000.0), "Ah")?,
            Action::Capacity,
            Capacity,
        ),
        (true, "set_current_limit") => read_or(
            value("Current limit", (0.001, 6.0), "A")?,
            Action::CurrentLimit,
            CurrentLimit,
        ),
        (true, "set_mode") => match given
            .and_then(Value::as_str)
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("static") => Action::Dynamic(false),
            Some("dynamic") => Action::Dynamic(true),
            None if given.is_none() => Action::BatteryRead(BatteryQuantity::Mode),
            _ => return Err(ActionError::Missing("Mode (static or dynamic)")),
        },
        (true, "enable_battery") => Action::BatteryOn,
        (true, "disable_battery") => Action::BatteryOff,
        (true, "state" | "print_state") => Action::BatteryState,
        (_, other) => return Err(ActionError::Unknown(other.to_string())),
    };
    Ok(action)
}

fn as_number(given: &Value) -> Option<f64> {
    match given {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .filter(|v: &f64| v.is_finite())
}

/// `set_model`'s value: a slot 1–9 or a built-in model, by name.
fn model_name(given: Option<&Value>) -> Result<String, ActionError> {
    let text = match given {
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) => s.trim().to_ascii_uppercase(),
        _ => {
            return Err(ActionError::Missing(
                "Model (a slot 1-9 or a built-in name)",
            ))
        }
    };
    if matches!(text.parse::<u8>(), Ok(1..=9)) || BUILTIN_MODELS.contains(&text.as_str()) {
        return Ok(text);
    }
    Err(ActionError::Invalid(format!(
        "Model {text} is neither a slot 1-9 nor a built-in model ({})",
        BUILTIN_MODELS.join(", ")
    )))
}

/// `params.slot`: 1–9.
fn slot(params: &Map<String, Value>) -> Result<u8, ActionError> {
    match params.get("slot").and_then(as_number) {
        Some(n) if n.fract() == 0.0 && (1.0..=9.0).contains(&n) => Ok(n as u8),
        Some(n) => Err(ActionError::Invalid(format!(
            "Model slot {} is not 1-9",
            number(n)
        ))),
        None => Err(ActionError::Missing("Model slot (params.slot, 1-9)")),
    }
}

/// `create_model`'s params: `slot`, `voc` and `esr` lists of 101 numbers
/// (the instrument refuses any other length), `force`.
fn battery_model(params: &Map<String, Value>) -> Result<BatteryModel, ActionError> {
    let slot = slot(params)?;
    let list = |key: &str, what: &str| -> Result<Vec<f64>, ActionError> {
        let values = params.get(key).and_then(Value::as_array).ok_or_else(|| {
            ActionError::Invalid(format!(
                "create_model needs params.{key}, a list of {MODEL_POINTS} numbers"
            ))
        })?;
        let numbers: Option<Vec<f64>> = values.iter().map(as_number).collect();
        let numbers = numbers
            .ok_or_else(|| ActionError::Invalid(format!("{what} values must all be numbers")))?;
        if numbers.len() != MODEL_POINTS {
            return Err(ActionError::Invalid(format!(
                "A model has {MODEL_POINTS} {what} values (SOC 0 to 100 %), not {}",
                numbers.len()
            )));
        }
        Ok(numbers)
    };
    let voc = list("voc", "VOC")?;
    let esr = list("esr", "ESR")?;
    if let Some(i) = (1..MODEL_POINTS).find(|&i| voc[i] < voc[i - 1]) {
        return Err(ActionError::Invalid(format!(
            "VOC must not fall as SOC rises: {}V at {i}% is below {}V at {}%",
            number(voc[i]),
            number(voc[i - 1]),
            i - 1
        )));
    }
    if let Some(i) = (1..MODEL_POINTS).find(|&i| esr[i] > esr[i - 1]) {
        return Err(ActionError::Invalid(format!(
            "ESR must not rise with SOC: {}Ω at {i}% is above {}Ω at {}%",
            number(esr[i]),
            number(esr[i - 1]),
            i - 1
        )));
    }
    if let Some(v) = voc.iter().chain(&esr).find(|v| **v < 0.0 || **v > 100.0) {
        return Err(ActionError::Invalid(format!(
            "Model value {} is outside 0–100",
            number(*v)
        )));
    }
    let force = params
        .get("force")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Ok(BatteryModel {
        slot,
        voc,
        esr,
        force,
    })
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
            Ok(Action::BatteryRead(BatteryQuantity::Soc)),
            "without a value a setter reads (§8)"
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
            parse(false, "limits", &Map::new(), &LIMITS_2281S),
            Ok(Action::Limits)
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
    fn protections_ride_with_supply_values() {
        let mut p = params(json!(5));
        p.insert("ovp".into(), json!(6));
        p.insert("ocp".into(), json!("1"));
        assert_eq!(
            parse(false, "voltage", &p, &LIMITS_2281S),
            Ok(Action::Protected {
                ovp: Some(6.0),
                ocp: Some(1.0),
                then: Box::new(Action::Voltage(Some(5.0)))
            })
        );
        p.insert("ovp".into(), json!(4));
        assert_eq!(
            parse(false, "voltage", &p, &LIMITS_2281S)
                .unwrap_err()
                .to_string(),
            "Voltage 5V is above the OVP 4V given with it; the output would trip at once"
        );
        p.insert("ovp".into(), json!(30));
        assert_eq!(
            parse(false, "voltage", &p, &LIMITS_2281S)
                .unwrap_err()
                .to_string(),
            "OVP 30V is outside the instrument's range 0–21V"
        );
    }

    #[test]
    fn models_are_checked_before_the_instrument_sees_them() {
        assert_eq!(
            parse(
                true,
                "set_model",
                &params(json!("li-ion4_2")),
                &LIMITS_2281S
            ),
            Ok(Action::Model("LI-ION4_2".into()))
        );
        assert_eq!(
            parse(true, "set_model", &params(json!(3)), &LIMITS_2281S),
            Ok(Action::Model("3".into()))
        );
        assert!(
            parse(true, "set_model", &params(json!("AA")), &LIMITS_2281S)
                .unwrap_err()
                .to_string()
                .starts_with("Model AA is neither a slot 1-9 nor a built-in model")
        );
        let model = |voc: Vec<f64>, esr: Vec<f64>| {
            let mut p = Map::new();
            p.insert("slot".into(), json!(2));
            p.insert("voc".into(), json!(voc));
            p.insert("esr".into(), json!(esr));
            parse(true, "create_model", &p, &LIMITS_2281S)
        };
        let rising: Vec<f64> = (0..MODEL_POINTS).map(|i| 3.0 + i as f64 / 100.0).collect();
        let falling: Vec<f64> = (0..MODEL_POINTS).map(|i| 0.3 - i as f64 / 1000.0).collect();
        assert!(
            matches!(model(rising.clone(), falling.clone()), Ok(Action::CreateModel(m)) if m.slot == 2 && !m.force)
        );
        assert_eq!(
            model(falling.clone(), falling.clone())
                .unwrap_err()
                .to_string(),
            "VOC must not fall as SOC rises: 0.299V at 1% is below 0.3V at 0%"
        );
        assert_eq!(
            model(rising[..50].to_vec(), falling)
                .unwrap_err()
                .to_string(),
            "A model has 101 VOC values (SOC 0 to 100 %), not 50"
        );
        let mut p = Map::new();
        p.insert("slot".into(), json!(0));
        assert_eq!(
            parse(true, "export_model", &p, &LIMITS_2281S)
                .unwrap_err()
                .to_string(),
            "Model slot 0 is not 1-9"
        );
    }

    #[test]
    fn numbers_print_plainly() {
        assert_eq!(number(0.25), "0.25");
        assert_eq!(number(5.0), "5");
    }
}
