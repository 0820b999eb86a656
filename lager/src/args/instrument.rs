//! `lager supply`, `lager battery` and `lager nets` as typed
//! (instruments.md §8, §10.2, §10.6): the argh structs, and their turning
//! into [`InstrumentOpts`] and the nets commands. Values get parse-level
//! checks only (a number, a mode, a VISA address); ranges are the box's to
//! judge (§10.3), so a 25 V request reaches it and comes back with its
//! "outside the instrument's range" answer.

use argh::FromArgs;
use serde_json::Value;

use super::{Command, EarlyExit};

/// The endpoint family a command drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Supply,
    Battery,
}

impl Role {
    /// The CLI noun: `supply`, `battery`.
    pub fn noun(self) -> &'static str {
        match self {
            Role::Supply => "supply",
            Role::Battery => "battery",
        }
    }

    /// The net role on the box (instruments.md §3).
    pub fn net_role(self) -> &'static str {
        match self {
            Role::Supply => "power-supply",
            Role::Battery => "battery",
        }
    }

    /// The command route (instruments.md §7).
    pub fn path(self) -> &'static str {
        match self {
            Role::Supply => "/supply/command",
            Role::Battery => "/battery/command",
        }
    }

    /// The monitor stream route (instruments.md §7).
    pub fn monitor_path(self) -> &'static str {
        match self {
            Role::Supply => "/supply/monitor",
            Role::Battery => "/battery/monitor",
        }
    }

    /// The `DEFAULTS` key holding the default net (`lager defaults`).
    pub fn default_key(self) -> &'static str {
        match self {
            Role::Supply => "net_power_supply",
            Role::Battery => "net_battery",
        }
    }

    /// The `lager defaults add` option that sets the default net.
    pub fn default_option(self) -> &'static str {
        match self {
            Role::Supply => "--supply-net",
            Role::Battery => "--battery-net",
        }
    }
}

/// One `lager supply|battery` command, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstrumentOpts {
    pub role: Role,
    /// `None`: the default net of `role`, looked up when run.
    pub net: Option<String>,
    pub box_name: Option<String>,
    pub json: bool,
    pub yes: bool,
    /// The subcommand as typed (`voltage`, `clear-ovp`), for messages.
    pub subcommand: &'static str,
    /// The box's action (`voltage`, `clear_ovp`, `set_soc`).
    pub action: &'static str,
    /// `params.value`: a number or a mode; `None` reads the setting.
    pub value: Option<Value>,
    /// The value as typed, for prompts and the `--yes` hint.
    pub value_text: Option<String>,
    /// The params key the value goes under: `value`, or `slot` for the
    /// model commands.
    pub value_key: &'static str,
    /// Further params: `ovp`/`ocp` beside a supply value, `force`.
    pub extra: Vec<(&'static str, Value)>,
    /// `model-create --csv` reads this file; `model-export --csv` writes it.
    pub csv: Option<std::path::PathBuf>,
}

impl InstrumentOpts {
    /// Whether the command changes the instrument, so it locks the box
    /// (locking.md B.8): everything but `state` and a bare read.
    pub fn mutates(&self) -> bool {
        // A setter without a value reads (instruments.md §8).
        let bare_read = self.value.is_none()
            && matches!(
                self.action,
                "voltage"
                    | "current"
                    | "ovp"
                    | "ocp"
                    | "set_soc"
                    | "set_voc"
                    | "set_volt_full"
                    | "set_volt_empty"
                    | "set_capacity"
                    | "set_current_limit"
                    | "set_ovp"
                    | "set_ocp"
                    | "set_mode"
            );
        (self.value.is_some() && self.value_key == "value")
            || !self.extra.is_empty()
            || !(bare_read || matches!(self.action, "state" | "list_models" | "export_model"))
    }

    /// The question asked before the change unless `--yes` (as the Python
    /// CLI does for these four).
    pub fn question(&self, net: &str) -> Option<String> {
        match (self.role, self.subcommand, self.value_text.as_deref()) {
            (Role::Supply, "voltage", Some(v)) => Some(format!("Set voltage of {net} to {v} V?")),
            (Role::Supply, "current", Some(a)) => Some(format!("Set current of {net} to {a} A?")),
            (_, "enable", _) => Some(format!("Enable {net}?")),
            (_, "disable", _) => Some(format!("Disable {net}?")),
            _ => None,
        }
    }
}

/// `lager supply|battery NET tui|watch` (instruments.md §10): follow the
/// box's monitor stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchOpts {
    pub role: Role,
    /// `None`: the default net of `role`, looked up when run.
    pub net: Option<String>,
    pub box_name: Option<String>,
    /// Print the stream's lines as they come instead of the view.
    pub json: bool,
    /// Time between readings (the box allows no less than 0.1 s).
    pub interval: std::time::Duration,
    /// Stop after this many readings; `None` runs until interrupted.
    pub count: Option<u64>,
}

/// `lager nets add`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetAdd {
    pub box_name: Option<String>,
    pub json: bool,
    pub name: String,
    /// The box's role name (`supply` already mapped to `power-supply`).
    pub role: String,
    pub instrument: String,
    /// As typed (trimmed); it parsed as a VISA address (a uart net's is a
    /// USB serial number or a device path, checked by the box).
    pub address: String,
    pub pin: Option<u32>,
    /// A uart net's serial settings, as given (console.md §1); the box
    /// refuses bad values naming the allowed ones.
    pub params: Option<serde_json::Value>,
}

// ---------------------------------------------------------------------------
// argh structs

/// The common tail of every leaf subcommand.
#[derive(Default)]
struct Leaf {
    value: Option<String>,
    box_name: Option<String>,
    json: bool,
    yes: bool,
    ovp: Option<String>,
    ocp: Option<String>,
    csv: Option<std::path::PathBuf>,
    force: bool,
}

/// One leaf subcommand struct: `--box`, `--json`, `--yes`, and with
/// `value = "..."` an optional positional VALUE. argh needs a type per
/// subcommand; this keeps the eighteen of them identical.
macro_rules! leaf {
    ($ty:ident, $name:literal, $doc:literal) => {
        leaf!(@ $ty, $name, $doc, [], none);
    };
    ($ty:ident, $name:literal, $doc:literal, value = $value_doc:literal) => {
        leaf!(@ $ty, $name, $doc,
            [#[doc = $value_doc] #[argh(positional, arg_name = "VALUE")] value: Option<String>,],
            value);
    };
    (@ $ty:ident, $name:literal, $doc:literal, [$($field:tt)*], $value:ident) => {
        #[doc = $doc]
        #[derive(FromArgs, Debug)]
        #[argh(subcommand, name = $name)]
        pub(super) struct $ty {
            $($field)*
            #[doc = "box name, IP address or host:port (default: LAGER_BOX or the default box)"]
            #[argh(option, long = "box")]
            box_name: Option<String>,
            /// print the box's JSON reply instead of the message
            #[argh(switch)]
            json: bool,
            /// do not ask for confirmation
            #[argh(switch)]
            yes: bool,
        }

        impl From<$ty> for Leaf {
            fn from(args: $ty) -> Leaf {
                Leaf {
                    value: leaf!(@value args, $value),
                    box_name: args.box_name,
                    json: args.json,
                    yes: args.yes,
                    ..Leaf::default()
                }
            }
        }
    };
    (@value $args:ident, value) => {
        $args.value
    };
    (@value $args:ident, none) => {
        None
    };
}

/// `voltage` and `current`: a leaf with `--ovp`/`--ocp` set alongside.
macro_rules! protected_leaf {
    ($ty:ident, $name:tt, $doc:literal, $value_doc:literal) => {
        #[doc = $doc]
        #[derive(FromArgs, Debug)]
        #[argh(
            subcommand,
            name = $name,
            note = "With --ovp/--ocp the protections are set with the value, in an order that\n\
                    never trips them (raise OVP before the voltage, lower it after)."
        )]
        pub(super) struct $ty {
            #[doc = $value_doc]
            #[argh(positional, arg_name = "VALUE")]
            value: Option<String>,
            /// over-current protection level to set with it, in amps
            #[argh(option)]
            ocp: Option<String>,
            /// over-voltage protection level to set with it, in volts
            #[argh(option)]
            ovp: Option<String>,
            #[doc = "box name, IP address or host:port (default: LAGER_BOX or the default box)"]
            #[argh(option, long = "box")]
            box_name: Option<String>,
            /// print the box's JSON reply instead of the message
            #[argh(switch)]
            json: bool,
            /// do not ask for confirmation
            #[argh(switch)]
            yes: bool,
        }

        impl From<$ty> for Leaf {
            fn from(args: $ty) -> Leaf {
                Leaf {
                    value: args.value,
                    box_name: args.box_name,
                    json: args.json,
                    yes: args.yes,
                    ovp: args.ovp,
                    ocp: args.ocp,
                    ..Leaf::default()
                }
            }
        }
    };
}

protected_leaf!(
    SupplyVoltage,
    "voltage",
    "Set or read the output voltage.",
    "volts to set; omit to read"
);
protected_leaf!(
    SupplyCurrent,
    "current",
    "Set or read the current limit.",
    "amps to set; omit to read"
);
leaf!(
    SupplySet,
    "set",
    "Switch the instrument to its power-supply function."
);
leaf!(
    SupplyOvp,
    "ovp",
    "Set or read the over-voltage protection level.",
    value = "volts to set; omit to read"
);
leaf!(
    SupplyOcp,
    "ocp",
    "Set or read the over-current protection level.",
    value = "amps to set; omit to read"
);
leaf!(SupplyEnable, "enable", "Turn the output on.");
leaf!(SupplyDisable, "disable", "Turn the output off.");
leaf!(
    SupplyState,
    "state",
    "Show output, setpoints, measurements and protection."
);
leaf!(
    SupplyClearOvp,
    "clear-ovp",
    "Clear a tripped over-voltage protection."
);
leaf!(
    SupplyClearOcp,
    "clear-ocp",
    "Clear a tripped over-current protection."
);

leaf!(
    BatterySoc,
    "soc",
    "Set the simulated state of charge, or show it.",
    value = "state of charge in percent (0-100); omit to show"
);
leaf!(
    BatteryVoc,
    "voc",
    "Set the open-circuit voltage, or show it.",
    value = "volts; omit to show"
);
leaf!(
    BatteryCapacity,
    "capacity",
    "Set the capacity, or show it.",
    value = "amp-hours; omit to show"
);
leaf!(
    BatteryCurrentLimit,
    "current-limit",
    "Set the current limit, or show it.",
    value = "amps; omit to show"
);
leaf!(
    BatteryMode,
    "mode",
    "Set the simulation method, or show it.",
    value = "static or dynamic; omit to show"
);
leaf!(BatteryEnable, "enable", "Turn the battery output on.");
leaf!(BatteryDisable, "disable", "Turn the battery output off.");
leaf!(BatteryClear, "clear", "Clear tripped protections.");
leaf!(BatteryState, "state", "Show the battery simulator's state.");
leaf!(
    BatterySet,
    "set",
    "Switch to the battery-simulator function, outputs off, protections cleared."
);
leaf!(
    BatteryFull,
    "batt-full",
    "Set the open-circuit voltage of a full battery, or show it.",
    value = "volts; omit to show"
);
leaf!(
    BatteryEmpty,
    "batt-empty",
    "Set the open-circuit voltage of an empty battery, or show it.",
    value = "volts; omit to show"
);
leaf!(
    BatteryOvp,
    "ovp",
    "Set the over-voltage protection level, or show it.",
    value = "volts; omit to show"
);
leaf!(
    BatteryOcp,
    "ocp",
    "Set the over-current protection level, or show it.",
    value = "amps; omit to show"
);
leaf!(
    BatteryModelRecall,
    "model",
    "Recall a battery model, or show the active one.",
    value = "slot 1-9 or a built-in model (LI-ION4_2, NIMH1_2, NICD1_2, LEAD-ACID12, NIMH12); omit to show"
);
leaf!(
    BatteryModels,
    "models",
    "List the built-in models and the nine model slots."
);
leaf!(
    BatteryClearOvp,
    "clear-ovp",
    "Clear a tripped over-voltage protection."
);
leaf!(
    BatteryClearOcp,
    "clear-ocp",
    "Clear a tripped over-current protection."
);

/// Store a battery model from a CSV file in a slot.
#[derive(FromArgs, Debug)]
#[argh(
    subcommand,
    name = "model-create",
    note = "The CSV has a row per SOC percent, 0 to 100 (101 rows): soc,voc,esr, with\n\
            an optional header line; VOC must not fall and ESR must not rise as SOC\n\
            rises. `lager battery NET model-export SLOT --csv F` writes the same format."
)]
pub(super) struct BatteryModelCreate {
    /// model slot, 1-9
    #[argh(positional, arg_name = "SLOT")]
    slot: String,
    /// the model file (soc,voc,esr per line)
    #[argh(option)]
    csv: std::path::PathBuf,
    /// overwrite a model already stored in the slot
    #[argh(switch)]
    force: bool,
    #[doc = "box name, IP address or host:port (default: LAGER_BOX or the default box)"]
    #[argh(option, long = "box")]
    box_name: Option<String>,
    /// print the box's JSON reply instead of the message
    #[argh(switch)]
    json: bool,
}

/// Save a slot's battery model to a CSV file.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "model-export")]
pub(super) struct BatteryModelExport {
    /// model slot, 1-9
    #[argh(positional, arg_name = "SLOT")]
    slot: String,
    /// the file to write (soc,voc,esr per line)
    #[argh(option)]
    csv: std::path::PathBuf,
    #[doc = "box name, IP address or host:port (default: LAGER_BOX or the default box)"]
    #[argh(option, long = "box")]
    box_name: Option<String>,
    /// print the box's JSON reply instead of the message
    #[argh(switch)]
    json: bool,
}

impl From<BatteryModelCreate> for Leaf {
    fn from(args: BatteryModelCreate) -> Leaf {
        Leaf {
            value: Some(args.slot),
            box_name: args.box_name,
            json: args.json,
            csv: Some(args.csv),
            force: args.force,
            ..Leaf::default()
        }
    }
}

impl From<BatteryModelExport> for Leaf {
    fn from(args: BatteryModelExport) -> Leaf {
        Leaf {
            value: Some(args.slot),
            box_name: args.box_name,
            json: args.json,
            csv: Some(args.csv),
            ..Leaf::default()
        }
    }
}

/// The options of `tui` and its alias `watch`.
macro_rules! watch_leaf {
    ($ty:ident, $name:tt, $doc:literal) => {
        #[doc = $doc]
        #[derive(FromArgs, Debug)]
        #[argh(
            subcommand,
            name = $name,
            note = "Redraws the view on a terminal; otherwise prints one line per reading.\n\
                    Stop with Ctrl-C. Another client may watch the same net; a watch of the\n\
                    other role on the same Keithley 2281S is refused while this one runs."
        )]
        pub(super) struct $ty {
            /// seconds between readings (default 1, at least 0.1)
            #[argh(option, default = "1.0")]
            interval: f64,
            /// stop after this many readings (default: run until Ctrl-C)
            #[argh(option)]
            count: Option<u64>,
            #[doc = "box name, IP address or host:port (default: LAGER_BOX or the default box)"]
            #[argh(option, long = "box")]
            box_name: Option<String>,
            /// print the box's NDJSON lines as they come
            #[argh(switch)]
            json: bool,
        }

        impl From<$ty> for WatchLeaf {
            fn from(args: $ty) -> WatchLeaf {
                WatchLeaf {
                    interval: args.interval,
                    count: args.count,
                    box_name: args.box_name,
                    json: args.json,
                }
            }
        }
    };
}

struct WatchLeaf {
    interval: f64,
    count: Option<u64>,
    box_name: Option<String>,
    json: bool,
}

watch_leaf!(Tui, "tui", "Show the live state, refreshed every interval.");
watch_leaf!(Watch, "watch", "Same as tui.");

/// Set or read a power-supply net.
#[derive(FromArgs, Debug)]
#[argh(
    subcommand,
    name = "supply",
    note = "NET defaults to `lager defaults add --supply-net NET`. Without a command,\n\
            lists the box's power-supply nets. Commands that change the instrument\n\
            lock the box for the command's lifetime; reads (state, a bare voltage)\n\
            do not. The box checks ranges and answers with its own message.\n\
            Negative values may be written as they are: lager supply s voltage -1."
)]
pub(super) struct SupplyArgs {
    /// net name (default: the default supply net)
    #[argh(positional, arg_name = "NET")]
    net: Option<String>,
    /// box name, IP address or host:port (default: LAGER_BOX or the default box)
    #[argh(option, long = "box")]
    box_name: Option<String>,
    /// print the box's JSON reply instead of the message
    #[argh(switch)]
    json: bool,
    #[argh(subcommand)]
    command: Option<SupplyCommand>,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
enum SupplyCommand {
    Voltage(SupplyVoltage),
    Current(SupplyCurrent),
    Ovp(SupplyOvp),
    Ocp(SupplyOcp),
    Enable(SupplyEnable),
    Disable(SupplyDisable),
    State(SupplyState),
    ClearOvp(SupplyClearOvp),
    ClearOcp(SupplyClearOcp),
    Set(SupplySet),
    Tui(Tui),
    Watch(Watch),
}

/// Drive a battery-simulator net.
#[derive(FromArgs, Debug)]
#[argh(
    subcommand,
    name = "battery",
    note = "NET defaults to `lager defaults add --battery-net NET`. Without a command,\n\
            lists the box's battery nets. Setters need a value; read values with\n\
            `lager battery NET state`. Commands that change the instrument lock the\n\
            box for the command's lifetime; state does not."
)]
pub(super) struct BatteryArgs {
    /// net name (default: the default battery net)
    #[argh(positional, arg_name = "NET")]
    net: Option<String>,
    /// box name, IP address or host:port (default: LAGER_BOX or the default box)
    #[argh(option, long = "box")]
    box_name: Option<String>,
    /// print the box's JSON reply instead of the message
    #[argh(switch)]
    json: bool,
    #[argh(subcommand)]
    command: Option<BatteryCommand>,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
enum BatteryCommand {
    Soc(BatterySoc),
    Voc(BatteryVoc),
    Capacity(BatteryCapacity),
    CurrentLimit(BatteryCurrentLimit),
    Mode(BatteryMode),
    Enable(BatteryEnable),
    Disable(BatteryDisable),
    Clear(BatteryClear),
    ClearOvp(BatteryClearOvp),
    ClearOcp(BatteryClearOcp),
    State(BatteryState),
    Set(BatterySet),
    BattFull(BatteryFull),
    BattEmpty(BatteryEmpty),
    Ovp(BatteryOvp),
    Ocp(BatteryOcp),
    Model(BatteryModelRecall),
    Models(BatteryModels),
    ModelCreate(BatteryModelCreate),
    ModelExport(BatteryModelExport),
    Tui(Tui),
    Watch(Watch),
}

/// List, add and delete the nets saved on a box.
#[derive(FromArgs, Debug)]
#[argh(
    subcommand,
    name = "nets",
    note = "With no subcommand, lists the nets (same as `lager nets list`)."
)]
pub(super) struct NetsArgs {
    /// box name, IP address or host:port (default: LAGER_BOX or the default box)
    #[argh(option, long = "box")]
    box_name: Option<String>,
    /// print the nets as JSON
    #[argh(switch)]
    json: bool,
    #[argh(subcommand)]
    command: Option<NetsCommand>,
}

// Parsed once per process; boxing argh subcommands is not supported.
#[allow(clippy::large_enum_variant)]
#[derive(FromArgs, Debug)]
#[argh(subcommand)]
enum NetsCommand {
    List(NetsListArgs),
    Add(NetsAddArgs),
    Delete(NetsDeleteArgs),
}

/// List the box's nets: name, role, instrument, address.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "list")]
struct NetsListArgs {
    /// box name, IP address or host:port (default: LAGER_BOX or the default box)
    #[argh(option, long = "box")]
    box_name: Option<String>,
    /// print the nets as JSON
    #[argh(switch)]
    json: bool,
}

/// Save a net on the box.
#[derive(FromArgs, Debug)]
#[argh(
    subcommand,
    name = "add",
    note = "Example: lager nets add supply2 --role supply --instrument Keithley_2281S \\\n    \
            --address USB0::0x05E6::0x2281::4587429::INSTR --box bench1"
)]
struct NetsAddArgs {
    /// name of the new net
    #[argh(positional, arg_name = "NAME")]
    name: String,
    /// supply (same as power-supply), battery, uart, or another role the box knows
    #[argh(option)]
    role: String,
    /// instrument model, e.g. Keithley_2281S (optional for uart)
    #[argh(option)]
    instrument: Option<String>,
    /// VISA address, e.g. USB0::0x05E6::0x2281::4587429::INSTR or
    /// TCPIP0::10.0.0.5::5025::SOCKET; for uart the USB adapter's serial
    /// number (SERIAL or SERIAL:INTERFACE) or a device path
    #[argh(option)]
    address: String,
    /// channel number (default 1)
    #[argh(option)]
    pin: Option<u32>,
    /// uart: baud rate (default 115200)
    #[argh(option)]
    baudrate: Option<String>,
    /// uart: data bits, 5-8 (default 8)
    #[argh(option)]
    bytesize: Option<String>,
    /// uart: none, even, odd, mark or space (default none)
    #[argh(option)]
    parity: Option<String>,
    /// uart: 1, 1.5 or 2 (default 1)
    #[argh(option)]
    stopbits: Option<String>,
    /// uart: none, xonxoff, rtscts or dsrdtr (default none)
    #[argh(option)]
    flow: Option<String>,
    /// uart: what Enter sends in lager uart -i: lf, crlf or cr (default lf)
    #[argh(option)]
    line_ending: Option<String>,
    /// box name, IP address or host:port (default: LAGER_BOX or the default box)
    #[argh(option, long = "box")]
    box_name: Option<String>,
    /// print the box's JSON reply
    #[argh(switch)]
    json: bool,
}

/// Delete a net saved on the box.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "delete")]
struct NetsDeleteArgs {
    /// name of the net
    #[argh(positional, arg_name = "NAME")]
    name: String,
    /// box name, IP address or host:port (default: LAGER_BOX or the default box)
    #[argh(option, long = "box")]
    box_name: Option<String>,
    /// print the box's JSON reply
    #[argh(switch)]
    json: bool,
}

// ---------------------------------------------------------------------------
// Typing

/// What a subcommand's VALUE may be.
#[derive(Clone, Copy)]
enum Rule {
    /// The subcommand takes no value.
    Nothing,
    /// Optional number: absent reads the setting. `(what, unit word)`.
    ReadOrSet(&'static str, &'static str),
    /// Optional `static|dynamic`: absent reads the mode.
    Mode,
    /// Optional model: a slot 1-9 or a built-in name, checked by the box.
    Model,
    /// Required model slot 1-9 (sent as `params.slot`).
    Slot,
}

fn usage(text: String) -> EarlyExit {
    EarlyExit::Usage(text)
}

fn empty_net(role: Role) -> EarlyExit {
    usage(format!(
        "Net name cannot be empty. Usage: lager {} [NET] --box BOX <command>",
        role.noun()
    ))
}

/// A finite number as typed, else a usage error naming what was expected.
fn number(text: &str, what: &str, unit: &str) -> Result<Value, EarlyExit> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .and_then(serde_json::Number::from_f64)
        .map(Value::Number)
        .ok_or_else(|| {
            usage(format!(
                "Invalid {what} '{text}': expected a number of {unit}, e.g. 3.3"
            ))
        })
}

fn value_of(
    role: Role,
    subcommand: &str,
    rule: Rule,
    given: Option<&str>,
) -> Result<Option<Value>, EarlyExit> {
    let noun = role.noun();
    match (rule, given) {
        (Rule::Nothing, _) | (Rule::ReadOrSet(..), None) => Ok(None),
        (Rule::ReadOrSet(what, unit), Some(text)) => number(text, what, unit).map(Some),
        (Rule::Mode, None) => Ok(None),
        (Rule::Model, None) => Ok(None),
        (Rule::Model, Some(text)) => Ok(Some(Value::String(text.trim().to_string()))),
        (Rule::Slot, text) => match text.map(|t| t.trim().parse::<u8>()) {
            Some(Ok(slot @ 1..=9)) => Ok(Some(Value::from(slot))),
            _ => Err(usage(format!(
                "lager {noun} {subcommand} needs a model slot 1-9, got '{}'",
                text.unwrap_or("")
            ))),
        },
        (Rule::Mode, Some(text)) => match text.trim().to_ascii_lowercase().as_str() {
            mode @ ("static" | "dynamic") => Ok(Some(Value::String(mode.to_string()))),
            _ => Err(usage(format!(
                "Invalid mode '{text}': use static or dynamic"
            ))),
        },
    }
}

fn instrument(
    role: Role,
    net: Option<String>,
    group_box: Option<String>,
    group_json: bool,
    (subcommand, action, rule): (&'static str, &'static str, Rule),
    leaf: Leaf,
) -> Result<Command, EarlyExit> {
    if net.as_deref().is_some_and(|n| n.trim().is_empty()) {
        return Err(empty_net(role));
    }
    let value = value_of(role, subcommand, rule, leaf.value.as_deref())?;
    let mut extra = Vec::new();
    if let Some(text) = &leaf.ovp {
        extra.push(("ovp", number(text, "OVP level", "volts")?));
    }
    if let Some(text) = &leaf.ocp {
        extra.push(("ocp", number(text, "OCP level", "amps")?));
    }
    if leaf.force {
        extra.push(("force", Value::Bool(true)));
    }
    // `model` without a part shows the models, the active one first.
    let action = if action == "set_model" && value.is_none() {
        "list_models"
    } else {
        action
    };
    Ok(Command::Instrument(InstrumentOpts {
        role,
        net,
        // `--box` may come before or after the subcommand.
        box_name: leaf.box_name.or(group_box),
        json: leaf.json || group_json,
        yes: leaf.yes,
        subcommand,
        action,
        value_text: value.as_ref().and(leaf.value),
        value_key: if matches!(rule, Rule::Slot) {
            "slot"
        } else {
            "value"
        },
        value,
        extra,
        csv: leaf.csv,
    }))
}

fn watch(
    role: Role,
    net: Option<String>,
    group_box: Option<String>,
    group_json: bool,
    leaf: impl Into<WatchLeaf>,
) -> Result<Command, EarlyExit> {
    let leaf = leaf.into();
    if net.as_deref().is_some_and(|n| n.trim().is_empty()) {
        return Err(empty_net(role));
    }
    let interval = common::wire::MONITOR_INTERVAL
        .secs(leaf.interval)
        .map_err(|e| usage(format!("Invalid --interval {}: {e}", leaf.interval)))?;
    if leaf.count == Some(0) {
        return Err(usage(
            "--count 0 would read nothing: give at least 1, or leave it out to run until Ctrl-C"
                .into(),
        ));
    }
    Ok(Command::Watch(WatchOpts {
        role,
        net,
        box_name: leaf.box_name.or(group_box),
        json: leaf.json || group_json,
        interval,
        count: leaf.count,
    }))
}

/// Without a subcommand: the role's nets, as `lager supply` lists them.
fn listing(
    role: Role,
    net: Option<String>,
    box_name: Option<String>,
    json: bool,
) -> Result<Command, EarlyExit> {
    match net {
        None => Ok(Command::NetsList {
            box_name,
            json,
            role: Some(role.net_role()),
        }),
        Some(net) => Err(usage(format!(
            "Missing command for {} net '{net}'. Try: lager {} {net} state (see lager {} --help)",
            role.noun(),
            role.noun(),
            role.noun()
        ))),
    }
}

pub(super) fn supply(args: SupplyArgs) -> Result<Command, EarlyExit> {
    let role = Role::Supply;
    let (what, leaf): ((&'static str, &'static str, Rule), Leaf) = match args.command {
        None => return listing(role, args.net, args.box_name, args.json),
        Some(SupplyCommand::Voltage(l)) => (
            ("voltage", "voltage", Rule::ReadOrSet("voltage", "volts")),
            l.into(),
        ),
        Some(SupplyCommand::Current(l)) => (
            ("current", "current", Rule::ReadOrSet("current", "amps")),
            l.into(),
        ),
        Some(SupplyCommand::Ovp(l)) => (
            ("ovp", "ovp", Rule::ReadOrSet("OVP level", "volts")),
            l.into(),
        ),
        Some(SupplyCommand::Ocp(l)) => (
            ("ocp", "ocp", Rule::ReadOrSet("OCP level", "amps")),
            l.into(),
        ),
        Some(SupplyCommand::Enable(l)) => (("enable", "enable", Rule::Nothing), l.into()),
        Some(SupplyCommand::Disable(l)) => (("disable", "disable", Rule::Nothing), l.into()),
        Some(SupplyCommand::State(l)) => (("state", "state", Rule::Nothing), l.into()),
        Some(SupplyCommand::ClearOvp(l)) => (("clear-ovp", "clear_ovp", Rule::Nothing), l.into()),
        Some(SupplyCommand::ClearOcp(l)) => (("clear-ocp", "clear_ocp", Rule::Nothing), l.into()),
        Some(SupplyCommand::Set(l)) => (("set", "set_mode", Rule::Nothing), l.into()),
        Some(SupplyCommand::Tui(w)) => return watch(role, args.net, args.box_name, args.json, w),
        Some(SupplyCommand::Watch(w)) => return watch(role, args.net, args.box_name, args.json, w),
    };
    instrument(role, args.net, args.box_name, args.json, what, leaf)
}

pub(super) fn battery(args: BatteryArgs) -> Result<Command, EarlyExit> {
    let role = Role::Battery;
    let (what, leaf): ((&'static str, &'static str, Rule), Leaf) = match args.command {
        None => return listing(role, args.net, args.box_name, args.json),
        Some(BatteryCommand::Soc(l)) => (
            (
                "soc",
                "set_soc",
                Rule::ReadOrSet("state of charge", "percent"),
            ),
            l.into(),
        ),
        Some(BatteryCommand::Voc(l)) => (
            (
                "voc",
                "set_voc",
                Rule::ReadOrSet("open-circuit voltage", "volts"),
            ),
            l.into(),
        ),
        Some(BatteryCommand::Capacity(l)) => (
            (
                "capacity",
                "set_capacity",
                Rule::ReadOrSet("capacity", "amp-hours"),
            ),
            l.into(),
        ),
        Some(BatteryCommand::CurrentLimit(l)) => (
            (
                "current-limit",
                "set_current_limit",
                Rule::ReadOrSet("current limit", "amps"),
            ),
            l.into(),
        ),
        Some(BatteryCommand::Mode(l)) => (("mode", "set_mode", Rule::Mode), l.into()),
        Some(BatteryCommand::Enable(l)) => (("enable", "enable_battery", Rule::Nothing), l.into()),
        Some(BatteryCommand::Disable(l)) => {
            (("disable", "disable_battery", Rule::Nothing), l.into())
        }
        Some(BatteryCommand::Clear(l)) => (("clear", "clear", Rule::Nothing), l.into()),
        Some(BatteryCommand::ClearOvp(l)) => (("clear-ovp", "clear_ovp", Rule::Nothing), l.into()),
        Some(BatteryCommand::ClearOcp(l)) => (("clear-ocp", "clear_ocp", Rule::Nothing), l.into()),
        Some(BatteryCommand::Set(l)) => (("set", "set_to_battery_mode", Rule::Nothing), l.into()),
        Some(BatteryCommand::BattFull(l)) => (
            (
                "batt-full",
                "set_volt_full",
                Rule::ReadOrSet("full-battery voltage", "volts"),
            ),
            l.into(),
        ),
        Some(BatteryCommand::BattEmpty(l)) => (
            (
                "batt-empty",
                "set_volt_empty",
                Rule::ReadOrSet("empty-battery voltage", "volts"),
            ),
            l.into(),
        ),
        Some(BatteryCommand::Ovp(l)) => (
            ("ovp", "set_ovp", Rule::ReadOrSet("OVP level", "volts")),
            l.into(),
        ),
        Some(BatteryCommand::Ocp(l)) => (
            ("ocp", "set_ocp", Rule::ReadOrSet("OCP level", "amps")),
            l.into(),
        ),
        Some(BatteryCommand::Model(l)) => (("model", "set_model", Rule::Model), l.into()),
        Some(BatteryCommand::Models(l)) => (("models", "list_models", Rule::Nothing), l.into()),
        Some(BatteryCommand::ModelCreate(l)) => {
            (("model-create", "create_model", Rule::Slot), l.into())
        }
        Some(BatteryCommand::ModelExport(l)) => {
            (("model-export", "export_model", Rule::Slot), l.into())
        }
        Some(BatteryCommand::State(l)) => (("state", "state", Rule::Nothing), l.into()),
        Some(BatteryCommand::Tui(w)) => return watch(role, args.net, args.box_name, args.json, w),
        Some(BatteryCommand::Watch(w)) => {
            return watch(role, args.net, args.box_name, args.json, w)
        }
    };
    instrument(role, args.net, args.box_name, args.json, what, leaf)
}

pub(super) fn nets(args: NetsArgs) -> Result<Command, EarlyExit> {
    Ok(match args.command {
        None => Command::NetsList {
            box_name: args.box_name,
            json: args.json,
            role: None,
        },
        Some(NetsCommand::List(list)) => Command::NetsList {
            box_name: list.box_name.or(args.box_name),
            json: list.json || args.json,
            role: None,
        },
        Some(NetsCommand::Add(add)) => {
            let name = add.name.trim();
            if name.is_empty() || name.contains(char::is_whitespace) {
                return Err(usage(format!(
                    "Invalid net name '{}': use a non-empty name without spaces",
                    add.name
                )));
            }
            let role = match add.role.trim() {
                "" => {
                    return Err(usage(
                        "--role cannot be empty: use supply, battery or power-supply".into(),
                    ))
                }
                "supply" => "power-supply".to_string(),
                role => role.to_string(),
            };
            let instrument = add.instrument.as_deref().unwrap_or("").trim().to_string();
            let params = serial_params(&add);
            if role == "uart" {
                if add.address.trim().is_empty() {
                    return Err(usage("--address cannot be empty: give the USB serial adapter's serial number (SERIAL or SERIAL:INTERFACE) or a device path such as /dev/ttyUSB0".into()));
                }
            } else {
                if params.is_some() {
                    return Err(usage(
                        "--baudrate, --bytesize, --parity, --stopbits, --flow and --line-ending apply to --role uart only".into(),
                    ));
                }
                if instrument.is_empty() {
                    return Err(usage(
                        "--instrument cannot be empty: name the model, e.g. Keithley_2281S".into(),
                    ));
                }
                if let Err(e) = common::addr::Address::parse(&add.address) {
                    return Err(usage(format!("Invalid --address: {e}")));
                }
            }
            Command::NetsAdd(NetAdd {
                box_name: add.box_name.or(args.box_name),
                json: add.json || args.json,
                name: name.to_string(),
                role,
                instrument,
                address: add.address.trim().to_string(),
                pin: add.pin,
                params,
            })
        }
        Some(NetsCommand::Delete(delete)) => {
            if delete.name.trim().is_empty() {
                return Err(usage(
                    "Net name cannot be empty. Usage: lager nets delete NAME".into(),
                ));
            }
            Command::NetsDelete {
                box_name: delete.box_name.or(args.box_name),
                json: delete.json || args.json,
                name: delete.name,
            }
        }
    })
}

/// The serial options given to `nets add`, as the box's `params` object,
/// as typed: the box reads numbers from text and refuses a bad value
/// naming the allowed ones.
fn serial_params(add: &NetsAddArgs) -> Option<serde_json::Value> {
    let given = [
        ("baudrate", &add.baudrate),
        ("bytesize", &add.bytesize),
        ("parity", &add.parity),
        ("stopbits", &add.stopbits),
        ("flow", &add.flow),
        ("line_ending", &add.line_ending),
    ];
    let mut params = serde_json::Map::new();
    for (key, value) in given {
        if let Some(text) = value {
            params.insert(key.to_string(), serde_json::Value::String(text.clone()));
        }
    }
    (!params.is_empty()).then_some(serde_json::Value::Object(params))
}

/// argh reads `-1` as an option. For `lager supply|battery`, negative
/// numbers move behind a `--` at the end, where they stay positional and
/// the box answers for the range (`Voltage -1V is outside ...`).
pub(super) fn hoist_negative_numbers<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let noun = args.iter().find(|a| !a.starts_with('-'));
    if !matches!(noun, Some(&"supply" | &"battery")) || args.contains(&"--") {
        return args.to_vec();
    }
    let negative = |a: &&str| {
        a.strip_prefix('-')
            .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit() || c == '.'))
            && a.parse::<f64>().is_ok()
    };
    let (numbers, mut rest): (Vec<&str>, Vec<&str>) = args.iter().copied().partition(negative);
    if !numbers.is_empty() {
        rest.push("--");
        rest.extend(numbers);
    }
    rest
}

#[cfg(test)]
mod tests {
    use super::super::{parse, Command, EarlyExit};
    use super::*;

    fn instrument(args: &[&str]) -> InstrumentOpts {
        match parse(args).expect("parses").command {
            Command::Instrument(opts) => opts,
            other => panic!("not an instrument command: {other:?}"),
        }
    }

    fn usage(args: &[&str]) -> String {
        match parse(args) {
            Err(EarlyExit::Usage(text)) => text,
            other => panic!("expected a usage error, got {other:?}"),
        }
    }

    #[test]
    fn supply_commands_map_to_box_actions() {
        let opts = instrument(&["supply", "s1", "--box", "b", "voltage", "3.3", "--yes"]);
        assert_eq!(opts.role, Role::Supply);
        assert_eq!(opts.net.as_deref(), Some("s1"));
        assert_eq!(opts.box_name.as_deref(), Some("b"));
        assert_eq!(opts.action, "voltage");
        assert_eq!(opts.value, Some(serde_json::json!(3.3)));
        assert_eq!(opts.value_text.as_deref(), Some("3.3"));
        assert!(opts.yes && opts.mutates());
        let read = instrument(&["supply", "voltage", "--box", "b", "--json"]);
        assert_eq!((&read.net, &read.value, read.json), (&None, &None, true));
        assert!(!read.mutates());
        assert!(!instrument(&["supply", "s", "state"]).mutates());
        let clear = instrument(&["supply", "s", "clear-ocp"]);
        assert_eq!(clear.action, "clear_ocp");
        assert!(clear.mutates());
    }

    #[test]
    fn battery_commands_map_to_box_actions() {
        let cases: &[(&[&str], &str, Option<Value>)] = &[
            (&["soc", "80"], "set_soc", Some(serde_json::json!(80.0))),
            (&["voc", "4.2"], "set_voc", Some(serde_json::json!(4.2))),
            (
                &["capacity", "2"],
                "set_capacity",
                Some(serde_json::json!(2.0)),
            ),
            (
                &["current-limit", "1"],
                "set_current_limit",
                Some(serde_json::json!(1.0)),
            ),
            (
                &["mode", "STATIC"],
                "set_mode",
                Some(serde_json::json!("static")),
            ),
            (&["enable"], "enable_battery", None),
            (&["disable"], "disable_battery", None),
            (&["clear"], "clear", None),
            (&["state"], "state", None),
        ];
        for (tail, action, value) in cases {
            let mut args = vec!["battery", "b1"];
            args.extend_from_slice(tail);
            let opts = instrument(&args);
            assert_eq!((opts.action, &opts.value), (*action, value), "{args:?}");
            assert_eq!(opts.mutates(), *action != "state", "{args:?}");
        }
    }

    #[test]
    fn values_are_checked_for_form_only() {
        assert_eq!(
            usage(&["supply", "s", "current", "lots"]),
            "Invalid current 'lots': expected a number of amps, e.g. 3.3"
        );
        assert!(usage(&["supply", "s", "voltage", "inf"]).starts_with("Invalid voltage 'inf'"));
        // Without a value a battery setter reads (§8), and takes no lock.
        for (setter, action) in [
            ("soc", "set_soc"),
            ("voc", "set_voc"),
            ("batt-full", "set_volt_full"),
            ("batt-empty", "set_volt_empty"),
            ("capacity", "set_capacity"),
            ("current-limit", "set_current_limit"),
            ("ovp", "set_ovp"),
            ("ocp", "set_ocp"),
            ("mode", "set_mode"),
        ] {
            let read = instrument(&["battery", "b", setter]);
            assert_eq!((read.action, &read.value), (action, &None), "{setter}");
            assert!(!read.mutates(), "{setter}");
            let value = if setter == "mode" { "static" } else { "1" };
            assert!(
                instrument(&["battery", "b", setter, value]).mutates(),
                "{setter}"
            );
        }
        // Ranges are the box's: 250 V parses.
        assert_eq!(
            instrument(&["supply", "s", "voltage", "250"]).value,
            Some(serde_json::json!(250.0))
        );
        assert!(usage(&["supply", "", "state"]).starts_with("Net name cannot be empty"));
        assert!(usage(&["supply", "s1"]).starts_with("Missing command for supply net 's1'"));
    }

    #[test]
    fn negative_numbers_stay_values() {
        assert_eq!(
            hoist_negative_numbers(&["supply", "s", "voltage", "-1.5", "--yes"]),
            ["supply", "s", "voltage", "--yes", "--", "-1.5"]
        );
        assert_eq!(
            instrument(&["-v", "supply", "s", "voltage", "-2", "--box", "b"]).value,
            Some(serde_json::json!(-2.0))
        );
        // Elsewhere, and with an explicit `--`, nothing moves.
        assert_eq!(
            hoist_negative_numbers(&["python", "t.py", "-1"]),
            ["python", "t.py", "-1"]
        );
        assert_eq!(
            hoist_negative_numbers(&["supply", "s", "voltage", "--", "-1"]),
            ["supply", "s", "voltage", "--", "-1"]
        );
        assert_eq!(hoist_negative_numbers(&["supply", "-v"]), ["supply", "-v"]);
    }

    #[test]
    fn prompts_follow_the_python_cli() {
        let opts = instrument(&["supply", "s", "voltage", "5"]);
        assert_eq!(
            opts.question("s").as_deref(),
            Some("Set voltage of s to 5 V?")
        );
        assert_eq!(instrument(&["supply", "s", "voltage"]).question("s"), None);
        assert_eq!(instrument(&["supply", "s", "ovp", "5"]).question("s"), None);
        assert_eq!(
            instrument(&["battery", "b", "disable"])
                .question("b")
                .as_deref(),
            Some("Disable b?")
        );
    }

    #[test]
    fn nets_commands() {
        let Command::NetsAdd(add) = parse(&[
            "nets",
            "add",
            "psu",
            "--role",
            "supply",
            "--instrument",
            "Keithley_2281S",
            "--address",
            " TCPIP0::10.0.0.5::5025::SOCKET ",
            "--pin",
            "2",
        ])
        .expect("parses")
        .command
        else {
            panic!("not nets add");
        };
        assert_eq!(add.role, "power-supply");
        assert_eq!(add.address, "TCPIP0::10.0.0.5::5025::SOCKET");
        assert_eq!(add.pin, Some(2));
        assert!(usage(&[
            "nets",
            "add",
            "x",
            "--role",
            "battery",
            "--instrument",
            "K",
            "--address",
            "COM3"
        ])
        .starts_with("Invalid --address: not an instrument address"));
        assert!(usage(&[
            "nets",
            "add",
            "a b",
            "--role",
            "battery",
            "--instrument",
            "K",
            "--address",
            "/dev/ttyUSB0"
        ])
        .starts_with("Invalid net name 'a b'"));
        assert_eq!(
            parse(&["nets", "--json"]).expect("parses").command,
            Command::NetsList {
                box_name: None,
                json: true,
                role: None
            }
        );
        assert_eq!(
            parse(&["battery", "--box", "b"]).expect("parses").command,
            Command::NetsList {
                box_name: Some("b".into()),
                json: false,
                role: Some("battery")
            }
        );
        assert!(matches!(
            parse(&["nets", "delete", "x", "--box", "b"])
                .expect("parses")
                .command,
            Command::NetsDelete { .. }
        ));
    }
}
