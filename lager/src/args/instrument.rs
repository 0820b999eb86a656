//! `lager supply`, `lager battery` and `lager nets` as typed
//! (instruments.md §8, §10.2, §10.6): the argh structs, and their turning
//! into [`InstrumentOpts`] and the nets commands. Values get parse-level
//! checks only (a number, a mode, a VISA address); ranges are the box's to
//! judge (§10.3), so a 25 V request reaches it and comes back with its
//! "outside the instrument's range" answer.

use argh::FromArgs;
use common::actions::{Action, Key, Rule};
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
    /// The box's action, a row of `common::actions`.
    pub action: &'static Action,
    /// The value (`params.value`, or `params.slot` for the model
    /// commands): a number or a mode; `None` reads the setting.
    pub value: Option<Value>,
    /// The value as typed, for prompts and the `--yes` hint.
    pub value_text: Option<String>,
    /// Further params: `ovp`/`ocp` beside a supply value, `force`.
    pub extra: Vec<(&'static str, Value)>,
    /// `model-create --csv` reads this file; `model-export --csv` writes it.
    pub csv: Option<std::path::PathBuf>,
}

impl InstrumentOpts {
    /// The request's params: the value under its key, then the extras.
    pub fn params(&self) -> serde_json::Map<String, Value> {
        let mut params = serde_json::Map::new();
        if let Some(value) = &self.value {
            params.insert(self.action.value_key().into(), value.clone());
        }
        for (key, value) in &self.extra {
            params.insert((*key).into(), value.clone());
        }
        params
    }

    /// Whether the command changes the instrument, so it locks the box
    /// (locking.md B.8): the action table says, from the params sent.
    pub fn mutates(&self) -> bool {
        self.action.mutates(&self.params())
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

/// What a subcommand that sends one action was given.
#[derive(Debug, Default)]
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

/// The VALUE (or SLOT) a subcommand takes: its name in help, what it is,
/// and whether it must be given.
#[derive(Debug)]
struct Positional {
    name: &'static str,
    help: &'static str,
    required: bool,
}

/// A `lager supply|battery` subcommand that sends one action: a row of
/// [`SUPPLY`] or [`BATTERY`], naming its row of `common::actions`. These
/// are parsed from the tables (argh's dynamic subcommands), so a new
/// action is a line here, not a type.
struct Sub {
    info: argh::CommandInfo,
    key: Key,
    value: Option<Positional>,
    /// `--ovp`/`--ocp`, set with the value.
    protections: bool,
    /// `--csv FILE` (required) with what the file is; `--force` with it
    /// when the slot may be overwritten.
    csv: Option<(&'static str, bool)>,
    note: &'static str,
}

impl std::fmt::Debug for Sub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.info.name)
    }
}

const fn sub(name: &'static str, key: Key, about: &'static str) -> Sub {
    Sub {
        info: argh::CommandInfo {
            name,
            short: &'\0',
            description: about,
        },
        key,
        value: None,
        protections: false,
        csv: None,
        note: "",
    }
}

/// A setter that reads without a value.
const fn setter(name: &'static str, key: Key, about: &'static str, help: &'static str) -> Sub {
    Sub {
        value: Some(Positional {
            name: "VALUE",
            help,
            required: false,
        }),
        ..sub(name, key, about)
    }
}

/// `voltage` and `current`: a setter with `--ovp`/`--ocp` set alongside.
const fn protected(name: &'static str, key: Key, about: &'static str, help: &'static str) -> Sub {
    Sub {
        protections: true,
        note: "With --ovp/--ocp the protections are set with the value, in an order that\n\
               never trips them (raise OVP before the voltage, lower it after).",
        ..setter(name, key, about, help)
    }
}

/// A model file command: SLOT and `--csv FILE`.
const fn model_file(
    name: &'static str,
    key: Key,
    about: &'static str,
    csv: &'static str,
    force: bool,
) -> Sub {
    Sub {
        value: Some(Positional {
            name: "SLOT",
            help: "model slot, 1-9",
            required: true,
        }),
        csv: Some((csv, force)),
        ..sub(name, key, about)
    }
}

/// `lager supply NET <subcommand>`, in `lager supply --help` order.
const SUPPLY: &[Sub] = &[
    protected(
        "voltage",
        Key::Voltage,
        "Set or read the output voltage.",
        "volts to set; omit to read",
    ),
    protected(
        "current",
        Key::Current,
        "Set or read the current limit.",
        "amps to set; omit to read",
    ),
    setter(
        "ovp",
        Key::Ovp,
        "Set or read the over-voltage protection level.",
        "volts to set; omit to read",
    ),
    setter(
        "ocp",
        Key::Ocp,
        "Set or read the over-current protection level.",
        "amps to set; omit to read",
    ),
    sub("enable", Key::Enable, "Turn the output on."),
    sub("disable", Key::Disable, "Turn the output off."),
    sub(
        "state",
        Key::SupplyState,
        "Show output, setpoints, measurements and protection.",
    ),
    sub("power", Key::Power, "Show the measured output power."),
    sub(
        "clear-ovp",
        Key::ClearOvp,
        "Clear a tripped over-voltage protection.",
    ),
    sub(
        "clear-ocp",
        Key::ClearOcp,
        "Clear a tripped over-current protection.",
    ),
    sub(
        "set",
        Key::SupplyMode,
        "Switch the instrument to its power-supply function.",
    ),
];

/// `lager battery NET <subcommand>`, in `lager battery --help` order.
const BATTERY: &[Sub] = &[
    setter(
        "soc",
        Key::Soc,
        "Set the simulated state of charge, or show it.",
        "state of charge in percent (0-100); omit to show",
    ),
    setter(
        "voc",
        Key::Voc,
        "Set the open-circuit voltage, or show it.",
        "volts; omit to show",
    ),
    setter(
        "capacity",
        Key::Capacity,
        "Set the capacity, or show it.",
        "amp-hours; omit to show",
    ),
    setter(
        "current-limit",
        Key::CurrentLimit,
        "Set the current limit, or show it.",
        "amps; omit to show",
    ),
    setter(
        "mode",
        Key::SimulationMode,
        "Set the simulation method, or show it.",
        "static or dynamic; omit to show",
    ),
    sub("enable", Key::BatteryOn, "Turn the battery output on."),
    sub("disable", Key::BatteryOff, "Turn the battery output off."),
    sub("clear", Key::Clear, "Clear tripped protections."),
    sub(
        "clear-ovp",
        Key::BatteryClearOvp,
        "Clear a tripped over-voltage protection.",
    ),
    sub(
        "clear-ocp",
        Key::BatteryClearOcp,
        "Clear a tripped over-current protection.",
    ),
    sub("state", Key::BatteryState, "Show the battery simulator's state."),
    sub(
        "set",
        Key::BatteryMode,
        "Switch to the battery-simulator function, outputs off, protections cleared.",
    ),
    setter(
        "batt-full",
        Key::VoltFull,
        "Set the open-circuit voltage of a full battery, or show it.",
        "volts; omit to show",
    ),
    setter(
        "batt-empty",
        Key::VoltEmpty,
        "Set the open-circuit voltage of an empty battery, or show it.",
        "volts; omit to show",
    ),
    setter(
        "ovp",
        Key::BatteryOvp,
        "Set the over-voltage protection level, or show it.",
        "volts; omit to show",
    ),
    setter(
        "ocp",
        Key::BatteryOcp,
        "Set the over-current protection level, or show it.",
        "amps; omit to show",
    ),
    setter(
        "model",
        Key::Model,
        "Recall a battery model, or show the active one.",
        "slot 1-9 or a built-in model (LI-ION4_2, NIMH1_2, NICD1_2, LEAD-ACID12, NIMH12); omit to show",
    ),
    sub(
        "models",
        Key::ListModels,
        "List the built-in models and the nine model slots.",
    ),
    Sub {
        note: "The CSV has a row per SOC percent, 0 to 100 (101 rows): soc,voc,esr, with\n\
               an optional header line; VOC must not fall and ESR must not rise as SOC\n\
               rises. `lager battery NET model-export SLOT --csv F` writes the same format.",
        ..model_file(
            "model-create",
            Key::CreateModel,
            "Store a battery model from a CSV file in a slot.",
            "the model file (soc,voc,esr per line)",
            true,
        )
    },
    model_file(
        "model-export",
        Key::ExportModel,
        "Save a slot's battery model to a CSV file.",
        "the file to write (soc,voc,esr per line)",
        false,
    ),
];

const BOX_HELP: &str = "box name, IP address or host:port (default: LAGER_BOX or the default box)";
const JSON_HELP: &str = "print the box's JSON reply instead of the message";

impl Sub {
    /// The options it takes, as `(flag, value name, help)`; a `None`
    /// value name is a switch.
    fn options(&self) -> Vec<(&'static str, Option<&'static str>, &'static str)> {
        let mut options = Vec::new();
        if self.protections {
            options.push((
                "--ocp",
                Some("ocp"),
                "over-current protection level to set with it, in amps",
            ));
            options.push((
                "--ovp",
                Some("ovp"),
                "over-voltage protection level to set with it, in volts",
            ));
        }
        if let Some((csv, force)) = self.csv {
            options.push(("--csv", Some("csv"), csv));
            if force {
                options.push((
                    "--force",
                    None,
                    "overwrite a model already stored in the slot",
                ));
            }
        }
        options.push(("--box", Some("box"), BOX_HELP));
        options.push(("--json", None, JSON_HELP));
        // The model files are not confirmed: nothing on the bench moves.
        if self.csv.is_none() {
            options.push(("--yes", None, "do not ask for confirmation"));
        }
        options
    }

    /// `--help`, laid out as argh lays out its own.
    fn help(&self, command: &[&str]) -> String {
        let options = self.options();
        let mut usage = format!("Usage: {}", command.join(" "));
        for (flag, value, _) in &options {
            match (flag, value) {
                (&"--csv", Some(value)) => usage.push_str(&format!(" {flag} <{value}>")),
                (_, Some(value)) => usage.push_str(&format!(" [{flag} <{value}>]")),
                (_, None) => usage.push_str(&format!(" [{flag}]")),
            }
        }
        if let Some(value) = &self.value {
            usage.push_str(if value.required {
                " [--] <"
            } else {
                " [--] [<"
            });
            usage.push_str(value.name);
            usage.push_str(if value.required { ">" } else { ">]" });
        }
        let mut out = format!("{usage}\n\n{}\n", self.info.description);
        if let Some(value) = &self.value {
            out.push_str("\nPositional Arguments:\n");
            described(&mut out, value.name, value.help);
        }
        out.push_str("\nOptions:\n");
        for (flag, _, help) in options {
            described(&mut out, flag, help);
        }
        described(&mut out, "--help, help", "display usage information");
        if !self.note.is_empty() {
            out.push_str("\nNotes:\n");
            for line in self.note.lines() {
                out.push_str("  ");
                out.push_str(line.trim_start());
                out.push('\n');
            }
        }
        out.truncate(out.trim_end().len());
        out
    }

    /// Parses what follows the subcommand's name.
    fn parse(&self, command: &[&str], args: &[&str]) -> Result<Leaf, argh::EarlyExit> {
        let usage = |text: String| argh::EarlyExit::from(text);
        let options = self.options();
        let mut leaf = Leaf::default();
        let mut options_ended = false;
        let mut rest = args.iter();
        while let Some(&arg) = rest.next() {
            if !options_ended && (arg == "--help" || arg == "help") {
                return Err(argh::EarlyExit {
                    output: self.help(command),
                    status: Ok(()),
                });
            }
            if !options_ended && arg == "--" {
                options_ended = true;
                continue;
            }
            if !options_ended && arg.starts_with('-') {
                let Some((flag, takes_value, _)) = options.iter().find(|(f, ..)| *f == arg) else {
                    return Err(usage(format!("Unrecognized argument: {arg}\n")));
                };
                let value = match takes_value {
                    None => None,
                    Some(_) => Some(rest.next().copied().ok_or_else(|| {
                        usage(format!("No value provided for option '{flag}'.\n"))
                    })?),
                };
                match (*flag, value) {
                    ("--box", Some(v)) => leaf.box_name = Some(v.to_string()),
                    ("--ovp", Some(v)) => leaf.ovp = Some(v.to_string()),
                    ("--ocp", Some(v)) => leaf.ocp = Some(v.to_string()),
                    ("--csv", Some(v)) => leaf.csv = Some(v.into()),
                    ("--json", _) => leaf.json = true,
                    ("--yes", _) => leaf.yes = true,
                    _ => leaf.force = true,
                }
                continue;
            }
            if self.value.is_none() || leaf.value.is_some() {
                return Err(usage(format!("Unrecognized argument: {arg}\n")));
            }
            leaf.value = Some(arg.to_string());
        }
        let mut missing = String::new();
        if let Some(value) = self.value.as_ref().filter(|v| v.required) {
            if leaf.value.is_none() {
                missing.push_str(&format!(
                    "Required positional arguments not provided:\n    {}",
                    value.name
                ));
            }
        }
        if self.csv.is_some() && leaf.csv.is_none() {
            if !missing.is_empty() {
                missing.push('\n');
            }
            missing.push_str("Required options not provided:\n    --csv");
        }
        if missing.is_empty() {
            Ok(leaf)
        } else {
            missing.push('\n');
            Err(usage(missing))
        }
    }
}

/// One `  NAME              help` entry, wrapped at 80 columns.
fn described(out: &mut String, name: &str, help: &str) {
    const INDENT: usize = 20;
    let mut line = format!("  {name}");
    if line.len() + 2 > INDENT {
        out.push_str(&line);
        out.push('\n');
        line.clear();
    }
    for word in help.split(' ') {
        let width = line.len().max(INDENT);
        if line.len() > INDENT && width + 1 + word.len() > 80 {
            out.push_str(&line);
            out.push('\n');
            line.clear();
        }
        if line.len() < INDENT {
            line.push_str(&" ".repeat(INDENT - line.len()));
        } else {
            line.push(' ');
        }
        line.push_str(word);
    }
    out.push_str(&line);
    out.push('\n');
}

/// The subcommand a dynamic-subcommand call is about.
fn sub_of(table: &'static [Sub], command: &[&str]) -> Option<&'static Sub> {
    let name = command.last()?;
    table.iter().find(|s| s.info.name == *name)
}

/// A subcommand of `table` as argh's dynamic subcommand, for one role.
macro_rules! action_subcommands {
    ($ty:ident, $table:ident) => {
        #[derive(Debug)]
        pub(super) struct $ty(&'static Sub, Leaf);

        impl argh::DynamicSubCommand for $ty {
            fn commands() -> &'static [&'static argh::CommandInfo] {
                static INFOS: std::sync::OnceLock<Vec<&'static argh::CommandInfo>> =
                    std::sync::OnceLock::new();
                INFOS.get_or_init(|| $table.iter().map(|s| &s.info).collect())
            }

            fn try_redact_arg_values(
                command: &[&str],
                _args: &[&str],
            ) -> Option<Result<Vec<String>, argh::EarlyExit>> {
                sub_of($table, command).map(|_| Ok(Vec::new()))
            }

            fn try_from_args(
                command: &[&str],
                args: &[&str],
            ) -> Option<Result<Self, argh::EarlyExit>> {
                let sub = sub_of($table, command)?;
                Some(sub.parse(command, args).map(|leaf| $ty(sub, leaf)))
            }
        }
    };
}

action_subcommands!(SupplyAction, SUPPLY);
action_subcommands!(BatteryAction, BATTERY);

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
    Tui(Tui),
    Watch(Watch),
    #[argh(dynamic)]
    Action(SupplyAction),
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
    Tui(Tui),
    Watch(Watch),
    #[argh(dynamic)]
    Action(BatteryAction),
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
        (Rule::Nothing | Rule::Field(_), _) | (Rule::Number(_), None) => Ok(None),
        (Rule::Number(q), Some(text)) => number(text, q.word, q.unit_word).map(Some),
        (Rule::Mode, None) => Ok(None),
        (Rule::Model, None) => Ok(None),
        (Rule::Model, Some(text)) => Ok(Some(Value::String(text.trim().to_string()))),
        (Rule::Slot | Rule::ModelData, text) => match text.map(|t| t.trim().parse::<u8>()) {
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
    sub: &'static Sub,
    leaf: Leaf,
) -> Result<Command, EarlyExit> {
    let (subcommand, key) = (sub.info.name, sub.key);
    if net.as_deref().is_some_and(|n| n.trim().is_empty()) {
        return Err(empty_net(role));
    }
    let value = value_of(role, subcommand, key.action().rule, leaf.value.as_deref())?;
    let mut extra = Vec::new();
    for (given, key) in [(&leaf.ovp, Key::Ovp), (&leaf.ocp, Key::Ocp)] {
        if let (Some(text), Some(q)) = (given, key.quantity()) {
            extra.push((key.action().name, number(text, q.word, q.unit_word)?));
        }
    }
    if leaf.force {
        extra.push(("force", Value::Bool(true)));
    }
    // `model` without a part shows the models, the active one first.
    let key = if key == Key::Model && value.is_none() {
        Key::ListModels
    } else {
        key
    };
    Ok(Command::Instrument(InstrumentOpts {
        role,
        net,
        // `--box` may come before or after the subcommand.
        box_name: leaf.box_name.or(group_box),
        json: leaf.json || group_json,
        yes: leaf.yes,
        subcommand,
        action: key.action(),
        value_text: value.as_ref().and(leaf.value),
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
    leaf: WatchLeaf,
) -> Result<Command, EarlyExit> {
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

/// A `lager supply|battery` subcommand, whichever the noun.
enum Picked {
    Action(&'static Sub, Leaf),
    Watch(WatchLeaf),
}

impl From<SupplyCommand> for Picked {
    fn from(command: SupplyCommand) -> Picked {
        match command {
            SupplyCommand::Action(SupplyAction(sub, leaf)) => Picked::Action(sub, leaf),
            SupplyCommand::Tui(w) => Picked::Watch(w.into()),
            SupplyCommand::Watch(w) => Picked::Watch(w.into()),
        }
    }
}

impl From<BatteryCommand> for Picked {
    fn from(command: BatteryCommand) -> Picked {
        match command {
            BatteryCommand::Action(BatteryAction(sub, leaf)) => Picked::Action(sub, leaf),
            BatteryCommand::Tui(w) => Picked::Watch(w.into()),
            BatteryCommand::Watch(w) => Picked::Watch(w.into()),
        }
    }
}

/// `lager supply|battery [NET] [--box B] [--json] [<subcommand>]`.
fn noun(
    role: Role,
    net: Option<String>,
    box_name: Option<String>,
    json: bool,
    picked: Option<Picked>,
) -> Result<Command, EarlyExit> {
    match picked {
        None => listing(role, net, box_name, json),
        Some(Picked::Action(sub, leaf)) => instrument(role, net, box_name, json, sub, leaf),
        Some(Picked::Watch(leaf)) => watch(role, net, box_name, json, leaf),
    }
}

pub(super) fn supply(args: SupplyArgs) -> Result<Command, EarlyExit> {
    let picked = args.command.map(Picked::from);
    noun(Role::Supply, args.net, args.box_name, args.json, picked)
}

pub(super) fn battery(args: BatteryArgs) -> Result<Command, EarlyExit> {
    let picked = args.command.map(Picked::from);
    noun(Role::Battery, args.net, args.box_name, args.json, picked)
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

    fn help(args: &[&str]) -> String {
        match parse(args) {
            Err(EarlyExit::Help(text)) => text,
            other => panic!("expected help, got {other:?}"),
        }
    }

    #[test]
    fn every_subcommand_is_a_row_of_its_role() {
        use common::actions::Role as ActionRole;
        for (table, role) in [(SUPPLY, ActionRole::Supply), (BATTERY, ActionRole::Battery)] {
            for sub in table {
                assert_eq!(sub.key.action().role, role, "{sub:?}");
                let takes_value = !matches!(sub.key.action().rule, Rule::Nothing | Rule::Field(_));
                assert_eq!(sub.value.is_some(), takes_value, "{sub:?}");
                assert_eq!(
                    table
                        .iter()
                        .filter(|s| s.info.name == sub.info.name)
                        .count(),
                    1
                );
            }
        }
    }

    #[test]
    fn subcommands_help_and_refuse_as_argh_does() {
        assert_eq!(
            help(&["supply", "s", "voltage", "--help"]),
            "Usage: lager supply voltage [--ocp <ocp>] [--ovp <ovp>] [--box <box>] [--json] [--yes] [--] [<VALUE>]\n\n\
             Set or read the output voltage.\n\n\
             Positional Arguments:\n  \
             VALUE             volts to set; omit to read\n\n\
             Options:\n  \
             --ocp             over-current protection level to set with it, in amps\n  \
             --ovp             over-voltage protection level to set with it, in volts\n  \
             --box             box name, IP address or host:port (default: LAGER_BOX or the\n                    \
             default box)\n  \
             --json            print the box's JSON reply instead of the message\n  \
             --yes             do not ask for confirmation\n  \
             --help, help      display usage information\n\n\
             Notes:\n  \
             With --ovp/--ocp the protections are set with the value, in an order that\n  \
             never trips them (raise OVP before the voltage, lower it after)."
        );
        assert!(help(&["battery", "b", "help", "state"])
            .starts_with("Usage: lager battery state [--box <box>] [--json] [--yes]\n"));
        assert_eq!(
            usage(&["battery", "b", "model-create"]),
            "Required positional arguments not provided:\n    SLOT\nRequired options not provided:\n    --csv\n"
        );
        assert_eq!(
            usage(&["supply", "s", "voltage", "--bogus"]),
            "Unrecognized argument: --bogus\n"
        );
        assert_eq!(
            usage(&["supply", "s", "state", "5"]),
            "Unrecognized argument: 5\n"
        );
        assert_eq!(
            usage(&["supply", "s", "voltage", "--box"]),
            "No value provided for option '--box'.\n"
        );
        let opts = instrument(&[
            "battery",
            "b",
            "model-export",
            "2",
            "--csv",
            "m.csv",
            "--box",
            "x",
        ]);
        assert_eq!(opts.action.name, "export_model");
        assert_eq!(opts.value, Some(serde_json::json!(2)));
        assert_eq!(opts.box_name.as_deref(), Some("x"));
        assert!(
            usage(&["battery", "b", "model-export", "2", "--csv", "m", "--yes"])
                .starts_with("Unrecognized argument: --yes")
        );
    }

    #[test]
    fn supply_commands_map_to_box_actions() {
        let opts = instrument(&["supply", "s1", "--box", "b", "voltage", "3.3", "--yes"]);
        assert_eq!(opts.role, Role::Supply);
        assert_eq!(opts.net.as_deref(), Some("s1"));
        assert_eq!(opts.box_name.as_deref(), Some("b"));
        assert_eq!(opts.action.name, "voltage");
        assert_eq!(opts.value, Some(serde_json::json!(3.3)));
        assert_eq!(opts.value_text.as_deref(), Some("3.3"));
        assert!(opts.yes && opts.mutates());
        let read = instrument(&["supply", "voltage", "--box", "b", "--json"]);
        assert_eq!((&read.net, &read.value, read.json), (&None, &None, true));
        assert!(!read.mutates());
        assert!(!instrument(&["supply", "s", "state"]).mutates());
        let clear = instrument(&["supply", "s", "clear-ocp"]);
        assert_eq!(clear.action.name, "clear_ocp");
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
            assert_eq!(
                (opts.action.name, &opts.value),
                (*action, value),
                "{args:?}"
            );
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
            assert_eq!((read.action.name, &read.value), (action, &None), "{setter}");
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
