//! Command-line parsing: the argh structs as typed, turned once into a
//! [`Command`] that the rest of the CLI consumes. Nothing here does IO.

use argh::FromArgs;

mod deploy;
mod instrument;
mod uart;
mod wheel;

pub use deploy::{DeployAction, DeployOpts};
pub use instrument::{InstrumentOpts, NetAdd, Role, WatchOpts};
pub use uart::{Start, UartOpts};
pub use wheel::{WheelAction, WheelOpts};

/// Control, inspect and reserve lager boxes.
#[derive(FromArgs, Debug)]
struct TopArgs {
    /// print the CLI version and exit
    #[argh(switch)]
    version: bool,
    /// more logging on stderr (repeat for more; RUST_LOG also works)
    #[argh(switch, short = 'v')]
    verbose: u8,
    /// show the box's raw error text under mapped instrument errors (also
    /// LAGER_DEBUG=1)
    #[argh(switch)]
    debug: bool,
    #[argh(subcommand)]
    command: Option<TopCommand>,
}

// Parsed once per process; boxing argh subcommands is not supported.
#[allow(clippy::large_enum_variant)]
#[derive(FromArgs, Debug)]
#[argh(subcommand)]
enum TopCommand {
    Boxes(BoxesArgs),
    Hello(HelloArgs),
    Defaults(DefaultsArgs),
    Python(PythonArgs),
    Diagnose(DiagnoseArgs),
    Supply(instrument::SupplyArgs),
    Battery(instrument::BatteryArgs),
    Nets(instrument::NetsArgs),
    Uart(uart::UartArgs),
    Install(deploy::InstallArgs),
    Update(deploy::UpdateArgs),
    Uninstall(deploy::UninstallArgs),
    InstallWheel(wheel::InstallWheelArgs),
    Box(BoxArgs),
}

// The errno advice of diagnose.md §6 names `lager box update`, the older
// CLI's spelling; it works here too.
/// Same as `lager update` (the older CLI's spelling: lager box update).
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "box")]
struct BoxArgs {
    #[argh(subcommand)]
    command: BoxCommand,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
enum BoxCommand {
    Update(deploy::UpdateArgs),
}

/// Say exactly why an instrument does not answer.
#[derive(FromArgs, Debug)]
#[argh(
    subcommand,
    name = "diagnose",
    note = "Looks NET up in the box's saved nets, then asks the box in parallel for the\n\
            host's USB view, a fresh *IDN? probe and the daemon's session pool, and\n\
            prints one classification with the next step.\n\
            Exit status: 0 REACHABLE, 2 any other classification (the instrument needs\n\
            attention), 1 when nothing could be diagnosed (box or net not found)."
)]
struct DiagnoseArgs {
    /// name of the net to diagnose
    #[argh(positional, arg_name = "NET")]
    net: String,
    /// box name, IP address or host:port (default: LAGER_BOX or the default box)
    #[argh(option, long = "box")]
    box_name: Option<String>,
    /// which of the net's entries to use: auto (the first) or a role such as
    /// battery, power-supply, eload, scope
    #[argh(option, long = "type", default = "String::from(\"auto\")")]
    role: String,
    /// print one JSON object instead of the report
    #[argh(switch)]
    json: bool,
}

/// List, add, delete, lock and unlock saved boxes.
#[derive(FromArgs, Debug)]
#[argh(
    subcommand,
    name = "boxes",
    note = "With no subcommand, lists the saved boxes (same as `lager boxes list`).\n\
            Each box is probed in parallel (GET /status, then GET /lock) within one\n\
            per-box budget of 5 s, so an unreachable box never delays the others.\n\
            Environment:\n  \
            LAGER_BOX_TIMEOUT_MS  cap every per-box and per-request timeout (milliseconds)\n  \
            LAGER_BOX_TOKEN       bearer token for boxes whose entry has no \"token\"\n  \
            LAGER_CONFIG_FILE_DIR, LAGER_CONFIG_FILE_NAME  where the box list lives (~/.lager)"
)]
struct BoxesArgs {
    /// print the listing as JSON
    #[argh(switch)]
    json: bool,
    #[argh(subcommand)]
    command: Option<BoxesCommand>,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
enum BoxesCommand {
    List(BoxesListArgs),
    Add(BoxesAddArgs),
    Delete(BoxesDeleteArgs),
    Lock(BoxesLockArgs),
    Unlock(BoxesUnlockArgs),
}

/// List saved boxes with their version, status and lock holder.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "list")]
struct BoxesListArgs {
    /// print JSON instead of a table
    #[argh(switch)]
    json: bool,
}

/// Save a box under a name.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "add")]
struct BoxesAddArgs {
    /// name to save the box under
    #[argh(option)]
    name: String,
    /// IP address or hostname of the box
    #[argh(option)]
    ip: String,
    /// SSH user on the box (e.g. lagerdata)
    #[argh(option)]
    user: String,
    /// HTTP port for every request to the box (1-65535)
    #[argh(option)]
    port: Option<u16>,
    /// branch used by install/update
    #[argh(option)]
    version: Option<String>,
    /// do not ask for confirmation
    #[argh(switch)]
    yes: bool,
}

/// Forget a saved box.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "delete")]
struct BoxesDeleteArgs {
    /// name of the saved box
    #[argh(option)]
    name: String,
    /// do not ask for confirmation
    #[argh(switch)]
    yes: bool,
}

/// Reserve a box until you unlock it, or the first free one with --any.
#[derive(FromArgs, Debug)]
#[argh(
    subcommand,
    name = "lock",
    note = "--any asks every saved box (or those matching --pool) at once, locks the
            first free one and prints its name. With --wait it queues on every busy
            candidate and keeps only the first grant; you never end up holding two."
)]
struct BoxesLockArgs {
    /// box name, IP address or host:port
    #[argh(option, long = "box")]
    box_name: Option<String>,
    /// lock the first free saved box instead of a named one
    #[argh(switch)]
    any: bool,
    /// with --any: only boxes whose name matches this glob (e.g. 'bench-*')
    #[argh(option)]
    pool: Option<String>,
    /// with --any: only boxes that have this net, healthy (repeatable)
    #[argh(option)]
    net: Vec<String>,
    /// with --any: wait up to this many seconds for a box to free up
    #[argh(option)]
    wait: Option<u64>,
    /// user to lock as (default: LAGER_USER, `lager defaults` user, login name)
    #[argh(option)]
    user: Option<String>,
    /// print the box's JSON response
    #[argh(switch)]
    json: bool,
}

/// Release a box's lock.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "unlock")]
struct BoxesUnlockArgs {
    /// box name, IP address or host:port
    #[argh(option, long = "box")]
    box_name: String,
    /// unlock even if someone else holds the lock
    #[argh(switch)]
    force: bool,
    /// print the box's JSON response
    #[argh(switch)]
    json: bool,
}

/// Check that a box is online and show its version.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "hello")]
struct HelloArgs {
    /// box name, IP address or host:port (default: LAGER_BOX or the default box)
    #[argh(option, long = "box")]
    box_name: Option<String>,
}

/// Run a Python script or module on a box, streaming its output back.
#[derive(FromArgs, Debug)]
#[argh(
    subcommand,
    name = "python",
    note = "RUNNABLE is a .py file or a directory with a main.py; ARGS after -- go to\n\
            the script. The CLI exits with the script's exit code and holds the box's\n\
            lock exactly as long as the run.\n\
            Environment:\n  \
            LAGER_AUTO_LOCK_DISABLE  do not lock the box; only check nobody else holds it\n  \
            LAGER_LOCK_WAIT          seconds to queue behind another holder (CI: 1800)\n  \
            LAGER_LOCK_TTL, LAGER_LOCK_HEARTBEAT, LAGER_LOCK_HOLDER  see the locking spec"
)]
struct PythonArgs {
    /// script file or directory containing main.py, then the script's
    /// arguments (put them after --)
    #[argh(positional, arg_name = "RUNNABLE [-- ARGS]")]
    runnable_and_args: Vec<String>,
    /// box name, IP address or host:port (default: LAGER_BOX or the default box)
    #[argh(option, long = "box")]
    box_name: Option<String>,
    /// KEY=VALUE to set in the script's environment (repeatable)
    #[argh(option)]
    env: Vec<String>,
    /// name of a local environment variable to pass to the script (repeatable)
    #[argh(option)]
    passenv: Vec<String>,
    /// kill the run with this process ID
    #[argh(option)]
    kill: Option<String>,
    /// kill every run on the box
    #[argh(switch)]
    kill_all: bool,
    /// signal for --kill/--kill-all: name or number (default SIGTERM)
    #[argh(option)]
    signal: Option<String>,
    /// file on the box to download after the run (repeatable)
    #[argh(option)]
    download: Vec<String>,
    /// let --download overwrite existing local files
    #[argh(switch)]
    allow_overwrite: bool,
    /// seconds before the box stops the script (0 = no limit; the box caps at 300)
    #[argh(option)]
    timeout: Option<u64>,
    /// start the run and return at once, keeping the box locked
    #[argh(switch, short = 'd')]
    detach: bool,
    /// port forward SRC[:DST][/PROTO] (accepted for compatibility; ignored by the box)
    #[argh(option, short = 'p')]
    port: Vec<String>,
    /// organisation (compatibility; ignored by the box)
    #[argh(option, hidden_help)]
    org: Option<String>,
    /// extra file to ship next to the script (repeatable)
    #[argh(option)]
    add_file: Vec<String>,
    /// follow the output of a detached run with this process ID
    #[argh(option)]
    reattach: Option<String>,
    /// resume the run with this process ID from its breakpoint
    #[argh(option, long = "continue")]
    continue_id: Option<String>,
    /// open the interactive console of the run paused at a breakpoint
    #[argh(option)]
    console: Option<String>,
}

/// Show or change defaults (box, user, serial port, nets).
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "defaults")]
struct DefaultsArgs {
    /// print the defaults as JSON
    #[argh(switch)]
    json: bool,
    #[argh(subcommand)]
    command: Option<DefaultsCommand>,
}

#[allow(clippy::large_enum_variant)]
#[derive(FromArgs, Debug)]
#[argh(subcommand)]
enum DefaultsCommand {
    List(DefaultsListArgs),
    Add(DefaultsAddArgs),
    Delete(DefaultsDeleteArgs),
    DeleteAll(DefaultsDeleteAllArgs),
}

/// List the defaults.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "list")]
struct DefaultsListArgs {
    /// print the raw defaults object as JSON
    #[argh(switch)]
    json: bool,
}

/// Set one or more defaults (written to the global config file).
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "add")]
struct DefaultsAddArgs {
    /// default box (a saved box name)
    #[argh(option, long = "box")]
    box_name: Option<String>,
    /// user for box locks
    #[argh(option)]
    user: Option<String>,
    /// default serial port
    #[argh(option)]
    serial_port: Option<String>,
    /// default power-supply net
    #[argh(option)]
    supply_net: Option<String>,
    /// default battery net
    #[argh(option)]
    battery_net: Option<String>,
    /// default electronic-load net
    #[argh(option)]
    eload_net: Option<String>,
    /// default solar net
    #[argh(option)]
    solar_net: Option<String>,
    /// default scope net
    #[argh(option)]
    scope_net: Option<String>,
    /// default logic-analyzer net
    #[argh(option)]
    logic_net: Option<String>,
    /// default ADC net
    #[argh(option)]
    adc_net: Option<String>,
    /// default DAC net
    #[argh(option)]
    dac_net: Option<String>,
    /// default GPIO net
    #[argh(option)]
    gpio_net: Option<String>,
    /// default debug net
    #[argh(option)]
    debug_net: Option<String>,
    /// default UART net
    #[argh(option)]
    uart_net: Option<String>,
    /// default USB net
    #[argh(option)]
    usb_net: Option<String>,
    /// default thermocouple net
    #[argh(option)]
    thermocouple_net: Option<String>,
    /// default watt-meter net
    #[argh(option)]
    watt_meter_net: Option<String>,
}

/// Delete one default: user, box, serial-port or <kind>-net.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "delete")]
struct DefaultsDeleteArgs {
    /// which default: user, box, serial-port or <kind>-net
    #[argh(positional)]
    key: String,
    /// do not ask for confirmation
    #[argh(switch)]
    yes: bool,
}

/// Delete every default.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "delete-all")]
struct DefaultsDeleteAllArgs {
    /// do not ask for confirmation
    #[argh(switch)]
    yes: bool,
}

/// What the user asked for, validated.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Version,
    BoxesList {
        json: bool,
    },
    BoxesAdd {
        name: String,
        ip: String,
        user: String,
        port: Option<u16>,
        version: Option<String>,
        yes: bool,
    },
    BoxesDelete {
        name: String,
        yes: bool,
    },
    BoxesLock {
        box_name: String,
        user: Option<String>,
        json: bool,
    },
    /// `lager boxes lock --any` (fleet.md §3).
    BoxesLockAny {
        pool: Option<String>,
        nets: Vec<String>,
        wait_secs: u64,
        user: Option<String>,
        json: bool,
    },
    BoxesUnlock {
        box_name: String,
        force: bool,
        json: bool,
    },
    Hello {
        box_name: Option<String>,
    },
    DefaultsList {
        json: bool,
    },
    /// `(display key, value)` pairs in option order, e.g. `("supply-net", "vbus")`.
    DefaultsAdd {
        settings: Vec<(String, String)>,
    },
    DefaultsDelete {
        key: String,
        yes: bool,
    },
    DefaultsDeleteAll {
        yes: bool,
    },
    Python(PythonOpts),
    Diagnose(DiagnoseOpts),
    /// `lager supply|battery NET <command>`.
    Instrument(InstrumentOpts),
    /// `lager supply|battery NET tui|watch`.
    Watch(WatchOpts),
    /// `lager nets`, and `lager supply|battery` without a command (then
    /// `role` keeps only that role's nets).
    NetsList {
        box_name: Option<String>,
        json: bool,
        role: Option<&'static str>,
    },
    NetsAdd(NetAdd),
    NetsDelete {
        box_name: Option<String>,
        json: bool,
        name: String,
    },
    /// `lager install|update|uninstall`.
    Deploy(DeployOpts),
    /// `lager uart` (console.md §4).
    Uart(UartOpts),
    /// `lager install-wheel`.
    InstallWheel(WheelOpts),
}

/// `lager diagnose` options (diagnose.md §4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiagnoseOpts {
    pub net: String,
    pub box_name: Option<String>,
    /// `None` for `--type auto`.
    pub role: Option<String>,
    pub json: bool,
}

/// What `lager python` should do besides running a script (runner.md §5.6–5.8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Manage {
    Kill { id: String, signal: i32 },
    KillAll { signal: i32 },
    Reattach(String),
    Continue(String),
    Console(String),
}

/// `lager python` options, validated (runner.md §5.1).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PythonOpts {
    /// The runnable as typed; `None` only with a management operation.
    pub runnable: Option<String>,
    pub args: Vec<String>,
    pub box_name: Option<String>,
    /// `KEY=VALUE` as typed, keys checked.
    pub env: Vec<String>,
    pub passenv: Vec<String>,
    pub manage: Option<Manage>,
    pub downloads: Vec<String>,
    pub allow_overwrite: bool,
    pub timeout_secs: u64,
    pub detach: bool,
    pub ports: Vec<String>,
    pub org: Option<String>,
    pub add_files: Vec<String>,
}

/// A parsed command line.
#[derive(Debug)]
pub struct Invocation {
    pub verbose: u8,
    /// `--debug`: raw error text under mapped errors (diagnose.md §6).
    pub debug: bool,
    pub command: Command,
}

/// Why parsing stopped early: help text (exit 0) or a usage error (exit 2).
#[derive(Debug)]
pub enum EarlyExit {
    Help(String),
    Usage(String),
}

/// `boxes lock`: either `--box NAME` or `--any` with its filters.
fn boxes_lock(lock: BoxesLockArgs) -> Result<Command, EarlyExit> {
    let usage = |text: &str| Err(EarlyExit::Usage(text.to_string()));
    match (lock.box_name, lock.any) {
        (Some(_), true) => usage("Give either --box NAME or --any, not both."),
        (None, false) => usage(
            "Missing --box NAME (or --any for the first free box). Usage: lager boxes lock --box NAME",
        ),
        (Some(box_name), false) => {
            if lock.pool.is_some() || !lock.net.is_empty() || lock.wait.is_some() {
                return usage("--pool, --net and --wait go with --any.");
            }
            Ok(Command::BoxesLock {
                box_name,
                user: lock.user,
                json: lock.json,
            })
        }
        (None, true) => Ok(Command::BoxesLockAny {
            pool: lock.pool,
            nets: lock.net,
            wait_secs: lock.wait.unwrap_or(0),
            user: lock.user,
            json: lock.json,
        }),
    }
}

/// Parses `args` (without the program name).
pub fn parse(args: &[&str]) -> Result<Invocation, EarlyExit> {
    let args = instrument::hoist_negative_numbers(args);
    let top = TopArgs::from_args(&["lager"], &args).map_err(|exit| match exit.status {
        Ok(()) => EarlyExit::Help(exit.output),
        Err(()) => EarlyExit::Usage(exit.output),
    })?;
    let command = if top.version {
        Command::Version
    } else {
        match top.command {
                None => return Err(EarlyExit::Usage(
                    "No command given. Try: lager boxes, lager hello, lager defaults, lager python, lager diagnose, lager supply, lager battery, lager nets, lager uart, lager install, lager update, lager uninstall, lager install-wheel"
                        .to_string(),
                )),
                Some(command) => typed(command)?,
            }
    };
    Ok(Invocation {
        verbose: top.verbose,
        debug: top.debug,
        command,
    })
}

fn typed(command: TopCommand) -> Result<Command, EarlyExit> {
    Ok(match command {
        TopCommand::Python(python) => Command::Python(python_opts(python)?),
        TopCommand::Diagnose(diagnose) => Command::Diagnose(diagnose_opts(diagnose)?),
        TopCommand::Supply(supply) => instrument::supply(supply)?,
        TopCommand::Battery(battery) => instrument::battery(battery)?,
        TopCommand::Nets(nets) => instrument::nets(nets)?,
        TopCommand::Uart(args) => uart::uart(args)?,
        TopCommand::Install(install) => deploy::install(install)?,
        TopCommand::Update(update) => deploy::update(update)?,
        TopCommand::Uninstall(uninstall) => deploy::uninstall(uninstall)?,
        TopCommand::InstallWheel(args) => wheel::install_wheel(args)?,
        TopCommand::Box(BoxArgs {
            command: BoxCommand::Update(update),
        }) => deploy::update(update)?,
        TopCommand::Boxes(boxes) => match boxes.command {
            None => Command::BoxesList { json: boxes.json },
            Some(BoxesCommand::List(list)) => Command::BoxesList {
                json: boxes.json || list.json,
            },
            Some(BoxesCommand::Add(add)) => Command::BoxesAdd {
                name: add.name,
                ip: add.ip,
                user: add.user,
                port: add.port,
                version: add.version,
                yes: add.yes,
            },
            Some(BoxesCommand::Delete(delete)) => Command::BoxesDelete {
                name: delete.name,
                yes: delete.yes,
            },
            Some(BoxesCommand::Lock(lock)) => boxes_lock(lock)?,
            Some(BoxesCommand::Unlock(unlock)) => Command::BoxesUnlock {
                box_name: unlock.box_name,
                force: unlock.force,
                json: unlock.json,
            },
        },
        TopCommand::Hello(hello) => Command::Hello {
            box_name: hello.box_name,
        },
        TopCommand::Defaults(defaults) => match defaults.command {
            None => Command::DefaultsList {
                json: defaults.json,
            },
            Some(DefaultsCommand::List(list)) => Command::DefaultsList {
                json: defaults.json || list.json,
            },
            Some(DefaultsCommand::Add(add)) => Command::DefaultsAdd {
                settings: defaults_settings(add),
            },
            Some(DefaultsCommand::Delete(delete)) => Command::DefaultsDelete {
                key: delete.key,
                yes: delete.yes,
            },
            Some(DefaultsCommand::DeleteAll(all)) => Command::DefaultsDeleteAll { yes: all.yes },
        },
    })
}

/// `--signal` names and numbers of runner.md §5.1 (case-insensitive, with
/// or without the `SIG` prefix).
pub fn parse_signal(text: &str) -> Option<i32> {
    const NAMES: [(&str, i32); 8] = [
        ("INT", 2),
        ("QUIT", 3),
        ("ABRT", 6),
        ("KILL", 9),
        ("USR1", 10),
        ("USR2", 12),
        ("TERM", 15),
        ("STOP", 19),
    ];
    let text = text.trim();
    if let Ok(number) = text.parse::<i32>() {
        return NAMES.iter().any(|(_, n)| *n == number).then_some(number);
    }
    let upper = text.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    NAMES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, number)| *number)
}

/// An environment variable name: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn is_env_key(key: &str) -> bool {
    let mut bytes = key.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn python_opts(python: PythonArgs) -> Result<PythonOpts, EarlyExit> {
    for pair in &python.env {
        let key = pair.split_once('=').map(|(k, _)| k);
        if !key.is_some_and(is_env_key) {
            return Err(EarlyExit::Usage(format!(
                "Invalid --env value '{pair}': expected KEY=VALUE with KEY matching [A-Za-z_][A-Za-z0-9_]*"
            )));
        }
    }
    let signal = match &python.signal {
        None => 15,
        Some(text) => parse_signal(text).ok_or_else(|| {
            EarlyExit::Usage(format!(
                "Invalid --signal '{text}': use one of SIGINT (2), SIGQUIT (3), SIGABRT (6), SIGKILL (9), SIGUSR1 (10), SIGUSR2 (12), SIGTERM (15), SIGSTOP (19)"
            ))
        })?,
    };
    let manage = if let Some(id) = python.kill {
        Some(Manage::Kill { id, signal })
    } else if python.kill_all {
        Some(Manage::KillAll { signal })
    } else if let Some(id) = python.reattach {
        Some(Manage::Reattach(id))
    } else if let Some(id) = python.continue_id {
        Some(Manage::Continue(id))
    } else {
        python.console.map(Manage::Console)
    };
    let mut positional = python.runnable_and_args.into_iter();
    let runnable = positional.next();
    let args: Vec<String> = positional.collect();
    if manage.is_none() && runnable.is_none() {
        return Err(EarlyExit::Usage(
            "Please supply a RUNNABLE, --kill, --kill-all, --reattach, --continue, or --console option"
                .to_string(),
        ));
    }
    Ok(PythonOpts {
        runnable,
        args,
        box_name: python.box_name,
        env: python.env,
        passenv: python.passenv,
        manage,
        downloads: python.download,
        allow_overwrite: python.allow_overwrite,
        timeout_secs: python.timeout.unwrap_or(0),
        detach: python.detach,
        ports: python.port,
        org: python.org,
        add_files: python.add_file,
    })
}

fn diagnose_opts(diagnose: DiagnoseArgs) -> Result<DiagnoseOpts, EarlyExit> {
    if diagnose.net.trim().is_empty() {
        return Err(EarlyExit::Usage(
            "Net name cannot be empty. Usage: lager diagnose NET [--box BOX] [--type ROLE]"
                .to_string(),
        ));
    }
    let role = diagnose.role.trim();
    if role.is_empty() {
        return Err(EarlyExit::Usage(
            "--type cannot be empty: use auto or a role such as battery, power-supply, eload, scope"
                .to_string(),
        ));
    }
    Ok(DiagnoseOpts {
        net: diagnose.net,
        box_name: diagnose.box_name,
        role: (!role.eq_ignore_ascii_case("auto")).then(|| role.to_string()),
        json: diagnose.json,
    })
}

fn defaults_settings(add: DefaultsAddArgs) -> Vec<(String, String)> {
    let options = [
        ("box", add.box_name),
        ("user", add.user),
        ("serial-port", add.serial_port),
        ("supply-net", add.supply_net),
        ("battery-net", add.battery_net),
        ("eload-net", add.eload_net),
        ("solar-net", add.solar_net),
        ("scope-net", add.scope_net),
        ("logic-net", add.logic_net),
        ("adc-net", add.adc_net),
        ("dac-net", add.dac_net),
        ("gpio-net", add.gpio_net),
        ("debug-net", add.debug_net),
        ("uart-net", add.uart_net),
        ("usb-net", add.usb_net),
        ("thermocouple-net", add.thermocouple_net),
        ("watt-meter-net", add.watt_meter_net),
    ];
    options
        .into_iter()
        .filter_map(|(key, value)| value.map(|v| (key.to_string(), v)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(args: &[&str]) -> Command {
        parse(args).expect("parses").command
    }

    #[test]
    fn boxes_defaults_to_list() {
        assert_eq!(command(&["boxes"]), Command::BoxesList { json: false });
        assert_eq!(
            command(&["boxes", "list", "--json"]),
            Command::BoxesList { json: true }
        );
        assert_eq!(
            command(&["boxes", "--json"]),
            Command::BoxesList { json: true }
        );
    }

    #[test]
    fn lock_any_takes_its_filters() {
        assert_eq!(
            command(&[
                "boxes", "lock", "--any", "--pool", "bench-*", "--net", "vbat", "--net", "uart0",
                "--wait", "30", "--json"
            ]),
            Command::BoxesLockAny {
                pool: Some("bench-*".into()),
                nets: vec!["vbat".into(), "uart0".into()],
                wait_secs: 30,
                user: None,
                json: true,
            }
        );
        for bad in [
            &["boxes", "lock", "--any", "--box", "b"][..],
            &["boxes", "lock", "--box", "b", "--wait", "3"],
            &["boxes", "lock", "--pool", "x"],
        ] {
            assert!(matches!(parse(bad), Err(EarlyExit::Usage(_))), "{bad:?}");
        }
    }

    #[test]
    fn lock_requires_box_and_unlock_rejects_user() {
        assert!(matches!(
            parse(&["boxes", "lock"]),
            Err(EarlyExit::Usage(_))
        ));
        assert!(matches!(
            parse(&["boxes", "unlock", "--box", "b", "--user", "x"]),
            Err(EarlyExit::Usage(_))
        ));
        assert_eq!(
            command(&["boxes", "unlock", "--box", "b", "--force"]),
            Command::BoxesUnlock {
                box_name: "b".into(),
                force: true,
                json: false
            }
        );
    }

    #[test]
    fn help_is_not_a_usage_error() {
        assert!(matches!(
            parse(&["boxes", "--help"]),
            Err(EarlyExit::Help(_))
        ));
        let Err(EarlyExit::Help(text)) = parse(&["boxes", "--help"]) else {
            panic!("expected help");
        };
        assert!(text.contains("LAGER_BOX_TIMEOUT_MS"), "{text}");
    }

    #[test]
    fn version_and_verbosity() {
        assert_eq!(command(&["--version"]), Command::Version);
        assert_eq!(parse(&["-v", "-v", "hello"]).expect("parses").verbose, 2);
        assert!(matches!(parse(&[]), Err(EarlyExit::Usage(_))));
    }

    fn python(args: &[&str]) -> PythonOpts {
        let mut full = vec!["python"];
        full.extend_from_slice(args);
        match command(&full) {
            Command::Python(opts) => opts,
            other => panic!("not python: {other:?}"),
        }
    }

    fn usage(args: &[&str]) -> String {
        match parse(args) {
            Err(EarlyExit::Usage(text)) => text,
            other => panic!("expected a usage error, got {other:?}"),
        }
    }

    #[test]
    fn python_runnable_and_script_args() {
        let opts = python(&["t.py", "--box", "b", "-d", "--", "--fast", "x"]);
        assert_eq!(opts.runnable.as_deref(), Some("t.py"));
        assert_eq!(opts.args, ["--fast", "x"]);
        assert_eq!(opts.box_name.as_deref(), Some("b"));
        assert!(opts.detach);
        assert_eq!(opts.timeout_secs, 0);
        let opts = python(&["t.py", "a", "b", "--env", "K=v=w", "-p", "80:8080/tcp"]);
        assert_eq!(opts.args, ["a", "b"]);
        assert_eq!(opts.env, ["K=v=w"]);
        assert_eq!(opts.ports, ["80:8080/tcp"]);
        assert_eq!(opts.manage, None);
    }

    #[test]
    fn python_usage_errors() {
        assert_eq!(
            usage(&["python"]),
            "Please supply a RUNNABLE, --kill, --kill-all, --reattach, --continue, or --console option"
        );
        assert!(usage(&["python", "t.py", "--env", "1X=2"]).contains("Invalid --env value '1X=2'"));
        assert!(usage(&["python", "t.py", "--env", "novalue"]).contains("KEY=VALUE"));
        assert!(usage(&["python", "--kill-all", "--signal", "HUP"]).contains("Invalid --signal"));
        assert!(!usage(&["python", "t.py", "--timeout", "-1"]).is_empty());
    }

    #[test]
    fn python_management_and_signals() {
        assert_eq!(
            python(&["--kill", "abc", "--signal", "sigkill"]).manage,
            Some(Manage::Kill {
                id: "abc".into(),
                signal: 9
            })
        );
        assert_eq!(
            python(&["--kill-all"]).manage,
            Some(Manage::KillAll { signal: 15 })
        );
        assert_eq!(
            python(&["--continue", "x"]).manage,
            Some(Manage::Continue("x".into()))
        );
        assert_eq!(parse_signal("int"), Some(2));
        assert_eq!(parse_signal("SIGUSR2"), Some(12));
        assert_eq!(parse_signal("19"), Some(19));
        assert_eq!(parse_signal("1"), None);
        assert!(is_env_key("_A1"));
        assert!(!is_env_key(""));
        assert!(!is_env_key("A-B"));
    }

    #[test]
    fn diagnose_options() {
        assert_eq!(
            command(&["diagnose", "bat1", "--box", "b", "--json"]),
            Command::Diagnose(DiagnoseOpts {
                net: "bat1".into(),
                box_name: Some("b".into()),
                role: None,
                json: true
            })
        );
        let Command::Diagnose(opts) = command(&["diagnose", "s1", "--type", "power-supply"]) else {
            panic!("not diagnose");
        };
        assert_eq!(opts.role.as_deref(), Some("power-supply"));
        let Command::Diagnose(opts) = command(&["diagnose", "s1", "--type", "AUTO"]) else {
            panic!("not diagnose");
        };
        assert_eq!(opts.role, None);
        assert!(matches!(parse(&["diagnose"]), Err(EarlyExit::Usage(_))));
        assert!(usage(&["diagnose", ""]).contains("Net name cannot be empty"));
        assert!(usage(&["diagnose", "n", "--type", " "]).contains("--type cannot be empty"));
        assert!(parse(&["--debug", "diagnose", "n"]).expect("parses").debug);
    }

    #[test]
    fn defaults_add_keeps_option_order() {
        assert_eq!(
            command(&["defaults", "add", "--user", "alice", "--supply-net", "vbus"]),
            Command::DefaultsAdd {
                settings: vec![
                    ("user".into(), "alice".into()),
                    ("supply-net".into(), "vbus".into())
                ]
            }
        );
        assert_eq!(
            command(&["defaults", "add"]),
            Command::DefaultsAdd { settings: vec![] }
        );
    }
    #[test]
    fn install_wheel_takes_wheels_or_list_or_uninstall() {
        assert_eq!(
            command(&["install-wheel", "a.whl", "b.whl", "--box", "b1"]),
            Command::InstallWheel(WheelOpts {
                action: WheelAction::Install(vec!["a.whl".into(), "b.whl".into()]),
                box_name: Some("b1".into()),
                force: false,
                json: false,
            })
        );
        let Command::InstallWheel(opts) = command(&["install-wheel", "--list", "--json"]) else {
            panic!("not install-wheel");
        };
        assert_eq!((opts.action, opts.json), (WheelAction::List, true));
        let Command::InstallWheel(opts) = command(&["install-wheel", "--uninstall", "pkg"]) else {
            panic!("not install-wheel");
        };
        assert_eq!(opts.action, WheelAction::Uninstall("pkg".into()));
        assert!(usage(&["install-wheel"]).starts_with("No wheel given"));
        assert!(usage(&["install-wheel", "a.whl", "--list"]).starts_with("Give wheels"));
        assert!(usage(&["install-wheel", "--uninstall", " "]).starts_with("Give wheels"));
    }

    #[test]
    fn box_update_is_update() {
        assert_eq!(
            command(&["box", "update", "--box", "b1", "--force"]),
            command(&["update", "--box", "b1", "--force"])
        );
        let Command::Deploy(opts) = command(&["box", "update", "--box", "b1"]) else {
            panic!("not a deploy command");
        };
        assert_eq!(
            opts.action,
            crate::args::DeployAction::Update { force: false }
        );
        assert_eq!(opts.prefix, "/");
    }
}
