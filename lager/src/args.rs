//! Command-line parsing: the argh structs as typed, turned once into a
//! [`Command`] that the rest of the CLI consumes. Nothing here does IO.

use argh::FromArgs;

/// Control, inspect and reserve lager boxes.
#[derive(FromArgs, Debug)]
struct TopArgs {
    /// print the CLI version and exit
    #[argh(switch)]
    version: bool,
    /// more logging on stderr (repeat for more; RUST_LOG also works)
    #[argh(switch, short = 'v')]
    verbose: u8,
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

/// Reserve a box until you unlock it.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "lock")]
struct BoxesLockArgs {
    /// box name, IP address or host:port
    #[argh(option, long = "box")]
    box_name: String,
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
}

/// A parsed command line.
#[derive(Debug)]
pub struct Invocation {
    pub verbose: u8,
    pub command: Command,
}

/// Why parsing stopped early: help text (exit 0) or a usage error (exit 2).
#[derive(Debug)]
pub enum EarlyExit {
    Help(String),
    Usage(String),
}

/// Parses `args` (without the program name).
pub fn parse(args: &[&str]) -> Result<Invocation, EarlyExit> {
    let top = TopArgs::from_args(&["lager"], args).map_err(|exit| match exit.status {
        Ok(()) => EarlyExit::Help(exit.output),
        Err(()) => EarlyExit::Usage(exit.output),
    })?;
    let command = if top.version {
        Command::Version
    } else {
        match top.command {
            None => {
                return Err(EarlyExit::Usage(
                    "No command given. Try: lager boxes, lager hello, lager defaults".to_string(),
                ))
            }
            Some(command) => typed(command),
        }
    };
    Ok(Invocation {
        verbose: top.verbose,
        command,
    })
}

fn typed(command: TopCommand) -> Command {
    match command {
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
            Some(BoxesCommand::Lock(lock)) => Command::BoxesLock {
                box_name: lock.box_name,
                user: lock.user,
                json: lock.json,
            },
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
    }
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
}
