//! The supply and battery actions of `POST /supply|battery/command`
//! (instruments.md §7, §10.2–§10.3), in one table: each action's wire
//! name, role, value rule and whether it changes the bench.
//!
//! lagerd parses and range-checks commands from it, lager builds its
//! subcommands' requests from it and decides from it which commands lock
//! the box (locking.md B.8), and a lagerd test holds the on-box package's
//! `lager/actions.py` against it. Code names an action by its [`Key`]; its
//! wire spelling is written here and nowhere else.

use serde_json::{Map, Value};

/// The endpoint family an action belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Supply,
    Battery,
}

/// Which action a row is, for code that must treat each one its own way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    Voltage,
    Current,
    Ovp,
    Ocp,
    Enable,
    Disable,
    ClearOvp,
    ClearOcp,
    SupplyState,
    SupplyMode,
    Limits,
    Power,
    Soc,
    Voc,
    VoltFull,
    VoltEmpty,
    Capacity,
    CurrentLimit,
    BatteryOvp,
    BatteryOcp,
    SimulationMode,
    Model,
    ListModels,
    ExportModel,
    CreateModel,
    BatteryOn,
    BatteryOff,
    BatteryMode,
    Clear,
    BatteryClearOvp,
    BatteryClearOcp,
    BatteryState,
}

/// Where a number's bounds come from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Bounds {
    /// The same on every instrument of the role.
    Fixed(f64, f64),
    /// The instrument's (or channel's) own ceiling for this quantity.
    Volts,
    Amps,
    OvpVolts,
    OcpAmps,
}

/// A number an action sets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quantity {
    /// As lagerd's messages name it: `Voltage`, `SOC`.
    pub name: &'static str,
    /// Its unit symbol: `V`, `%`.
    pub unit: &'static str,
    pub bounds: Bounds,
    /// As lager's usage errors name it: `state of charge`.
    pub word: &'static str,
    /// Its unit as a word: `percent`.
    pub unit_word: &'static str,
}

/// What `params` an action takes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rule {
    /// Nothing.
    Nothing,
    /// `value`, a number: given, it is set; absent, the setting is read
    /// (instruments.md §8).
    Number(Quantity),
    /// `value`, `static` or `dynamic`; absent, the mode is read.
    Mode,
    /// `value`, a slot 1–9 or a built-in model name.
    Model,
    /// `slot`, 1–9.
    Slot,
    /// `slot`, `voc` and `esr` (101 numbers each) and `force`.
    ModelData,
    /// Nothing; the action reads one field of the role's state
    /// (instruments.md §6.1, §6.2).
    Field(Field),
}

/// A field of a role's state that an action reads by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    /// Its key in the state object: `power`.
    pub key: &'static str,
    /// As the answer's message names it: `Power`.
    pub label: &'static str,
    /// Its unit symbol, empty for words (`CV`).
    pub unit: &'static str,
}

/// Whether an action changes the bench (for the auto-lock and for
/// `--enforce-locks`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutates {
    Always,
    Never,
    /// Only with a `value` or one of the action's extra params: without
    /// them the action reads.
    WhenGiven,
}

/// One row of the table; rows are equal when they are the same action.
#[derive(Debug, Clone, Copy)]
pub struct Action {
    pub key: Key,
    pub role: Role,
    /// The wire name.
    pub name: &'static str,
    /// Other spellings lagerd accepts (instruments.md §7).
    pub aliases: &'static [&'static str],
    pub rule: Rule,
    /// Params taken beside the rule's (`ovp`/`ocp` with a supply value).
    pub extras: &'static [Key],
    pub mutates: Mutates,
}

const fn number(
    name: &'static str,
    unit: &'static str,
    bounds: Bounds,
    word: &'static str,
    unit_word: &'static str,
) -> Rule {
    Rule::Number(Quantity {
        name,
        unit,
        bounds,
        word,
        unit_word,
    })
}

const fn row(key: Key, role: Role, name: &'static str, rule: Rule, mutates: Mutates) -> Action {
    Action {
        key,
        role,
        name,
        aliases: &[],
        rule,
        extras: &[],
        mutates,
    }
}

use Bounds::Fixed;
use Mutates::{Always, Never, WhenGiven};
use Role::{Battery, Supply};
use Rule::Nothing;

/// Every action lagerd accepts. Full and empty are VOCs: §10.3 names the
/// quantity VOC.
pub const ACTIONS: &[Action] = &[
    Action {
        extras: &[Key::Ovp, Key::Ocp],
        ..row(
            Key::Voltage,
            Supply,
            "voltage",
            number("Voltage", "V", Bounds::Volts, "voltage", "volts"),
            WhenGiven,
        )
    },
    Action {
        extras: &[Key::Ovp, Key::Ocp],
        ..row(
            Key::Current,
            Supply,
            "current",
            number("Current", "A", Bounds::Amps, "current", "amps"),
            WhenGiven,
        )
    },
    row(
        Key::Ovp,
        Supply,
        "ovp",
        number("OVP", "V", Bounds::OvpVolts, "OVP level", "volts"),
        WhenGiven,
    ),
    row(
        Key::Ocp,
        Supply,
        "ocp",
        number("OCP", "A", Bounds::OcpAmps, "OCP level", "amps"),
        WhenGiven,
    ),
    row(Key::Enable, Supply, "enable", Nothing, Always),
    row(Key::Disable, Supply, "disable", Nothing, Always),
    row(Key::ClearOvp, Supply, "clear_ovp", Nothing, Always),
    row(Key::ClearOcp, Supply, "clear_ocp", Nothing, Always),
    row(Key::SupplyState, Supply, "state", Nothing, Never),
    row(Key::SupplyMode, Supply, "set_mode", Nothing, Always),
    // The instrument's (or channel's) ceilings; nothing is sent.
    row(Key::Limits, Supply, "limits", Nothing, Never),
    // Measured output power (scripts.md: `power()`).
    row(
        Key::Power,
        Supply,
        "power",
        Rule::Field(Field {
            key: "power",
            label: "Power",
            unit: "W",
        }),
        Never,
    ),
    row(
        Key::Soc,
        Battery,
        "set_soc",
        number("SOC", "%", Fixed(0.0, 100.0), "state of charge", "percent"),
        WhenGiven,
    ),
    row(
        Key::Voc,
        Battery,
        "set_voc",
        number(
            "VOC",
            "V",
            Fixed(0.0, 60.0),
            "open-circuit voltage",
            "volts",
        ),
        WhenGiven,
    ),
    row(
        Key::VoltFull,
        Battery,
        "set_volt_full",
        number(
            "VOC",
            "V",
            Fixed(0.0, 60.0),
            "full-battery voltage",
            "volts",
        ),
        WhenGiven,
    ),
    row(
        Key::VoltEmpty,
        Battery,
        "set_volt_empty",
        number(
            "VOC",
            "V",
            Fixed(0.0, 60.0),
            "empty-battery voltage",
            "volts",
        ),
        WhenGiven,
    ),
    row(
        Key::Capacity,
        Battery,
        "set_capacity",
        number(
            "Capacity",
            "Ah",
            Fixed(0.001, 1000.0),
            "capacity",
            "amp-hours",
        ),
        WhenGiven,
    ),
    row(
        Key::CurrentLimit,
        Battery,
        "set_current_limit",
        number(
            "Current limit",
            "A",
            Fixed(0.001, 6.0),
            "current limit",
            "amps",
        ),
        WhenGiven,
    ),
    row(
        Key::BatteryOvp,
        Battery,
        "set_ovp",
        number("OVP", "V", Fixed(0.0, 61.0), "OVP level", "volts"),
        WhenGiven,
    ),
    row(
        Key::BatteryOcp,
        Battery,
        "set_ocp",
        number("OCP", "A", Fixed(0.001, 6.1), "OCP level", "amps"),
        WhenGiven,
    ),
    row(
        Key::SimulationMode,
        Battery,
        "set_mode",
        Rule::Mode,
        WhenGiven,
    ),
    row(Key::Model, Battery, "set_model", Rule::Model, Always),
    Action {
        aliases: &["models"],
        ..row(Key::ListModels, Battery, "list_models", Nothing, Never)
    },
    row(Key::ExportModel, Battery, "export_model", Rule::Slot, Never),
    row(
        Key::CreateModel,
        Battery,
        "create_model",
        Rule::ModelData,
        Always,
    ),
    row(Key::BatteryOn, Battery, "enable_battery", Nothing, Always),
    row(Key::BatteryOff, Battery, "disable_battery", Nothing, Always),
    // Enter the battery function, outputs off, protections cleared (§6.2).
    row(
        Key::BatteryMode,
        Battery,
        "set_to_battery_mode",
        Nothing,
        Always,
    ),
    row(Key::Clear, Battery, "clear", Nothing, Always),
    row(Key::BatteryClearOvp, Battery, "clear_ovp", Nothing, Always),
    row(Key::BatteryClearOcp, Battery, "clear_ocp", Nothing, Always),
    Action {
        aliases: &["print_state"],
        ..row(Key::BatteryState, Battery, "state", Nothing, Never)
    },
];

/// The action `name` (or an alias of it) of `role`.
pub fn find(role: Role, name: &str) -> Option<&'static Action> {
    ACTIONS
        .iter()
        .find(|a| a.role == role && (a.name == name || a.aliases.contains(&name)))
}

impl Key {
    /// Its row.
    pub fn action(self) -> &'static Action {
        ACTIONS
            .iter()
            .find(|a| a.key == self)
            .expect("every Key has a row in ACTIONS (tested)")
    }

    /// The quantity its value is, for a `Rule::Number` action.
    pub fn quantity(self) -> Option<Quantity> {
        match self.action().rule {
            Rule::Number(quantity) => Some(quantity),
            _ => None,
        }
    }
}

impl PartialEq for Action {
    fn eq(&self, other: &Action) -> bool {
        self.key == other.key
    }
}

impl Eq for Action {}

impl Action {
    /// The params key its value goes under: `slot` for the model slots.
    pub fn value_key(&self) -> &'static str {
        match self.rule {
            Rule::Slot | Rule::ModelData => "slot",
            _ => "value",
        }
    }

    /// Whether this action with `params` changes the bench.
    pub fn mutates(&self, params: &Map<String, Value>) -> bool {
        let given = |key: &str| params.get(key).is_some_and(|v| !v.is_null());
        match self.mutates {
            Mutates::Always => true,
            Mutates::Never => false,
            Mutates::WhenGiven => {
                given("value") || self.extras.iter().any(|e| given(e.action().name))
            }
        }
    }
}

/// Whether a command body's action changes the bench; an unknown action
/// counts as a change (it is refused anyway, and never waved through).
pub fn mutates(role: Role, body: &Map<String, Value>) -> bool {
    let action = body.get("action").and_then(Value::as_str).unwrap_or("");
    let empty = Map::new();
    let params = body
        .get("params")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    match find(role, action) {
        Some(action) => action.mutates(params),
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_key_has_one_row_and_names_are_unique_per_role() {
        for action in ACTIONS {
            assert_eq!(
                ACTIONS.iter().filter(|a| a.key == action.key).count(),
                1,
                "{:?}",
                action.key
            );
            let names = std::iter::once(action.name).chain(action.aliases.iter().copied());
            for name in names {
                assert_eq!(
                    find(action.role, name).map(|a| a.key),
                    Some(action.key),
                    "{name}"
                );
            }
            for extra in action.extras {
                assert!(extra.quantity().is_some(), "{extra:?} is not a number");
                assert_eq!(extra.action().role, action.role);
            }
        }
    }

    #[test]
    fn reads_do_not_mutate_and_changes_do() {
        let body = |action: &str, params: Value| {
            json!({"netname": "n", "action": action, "params": params})
                .as_object()
                .cloned()
                .unwrap_or_default()
        };
        for (role, action, params, changes) in [
            (Supply, "voltage", json!({}), false),
            (Supply, "voltage", json!({"value": null}), false),
            (Supply, "voltage", json!({"value": 5}), true),
            (Supply, "voltage", json!({"ovp": 6}), true),
            (Supply, "state", json!({}), false),
            (Supply, "limits", json!({}), false),
            (Supply, "power", json!({}), false),
            (Supply, "enable", json!({}), true),
            (Supply, "set_soc", json!({}), true),
            (Battery, "set_soc", json!({}), false),
            (Battery, "set_soc", json!({"value": 50}), true),
            (Battery, "set_soc", json!({"ovp": 5}), false),
            (Battery, "set_mode", json!({}), false),
            (Battery, "set_mode", json!({"value": "dynamic"}), true),
            (Battery, "print_state", json!({}), false),
            (Battery, "models", json!({}), false),
            (Battery, "export_model", json!({"slot": 2}), false),
            (Battery, "create_model", json!({"slot": 2}), true),
            (Battery, "set_model", json!({}), true),
            (Battery, "warp", json!({}), true),
        ] {
            assert_eq!(
                mutates(role, &body(action, params.clone())),
                changes,
                "{role:?} {action} {params}"
            );
        }
    }
}
