//! `lager install-wheel` as typed (scripts.md §3): the argh struct and its
//! turning into [`WheelOpts`].

use std::path::PathBuf;

use argh::FromArgs;

use super::{Command, EarlyExit};

/// Install wheels into the box's script environment, offline.
#[derive(FromArgs, Debug)]
#[argh(
    subcommand,
    name = "install-wheel",
    note = "Checks each WHEEL here first (a readable .whl zip with a .dist-info), uploads\n\
            them in one request, and the box installs them with its own\n\
            python3 -m pip --no-index --no-deps into the site directory every\n\
            `lager python` job imports from (it survives restarts and lager update).\n\
            Upload a package's dependencies in the same command. All or nothing: a\n\
            wheel pip refuses leaves the previous versions in place.\n\
            Reserves the box for the command (refusing while someone else holds it,\n\
            unless --force).\n\
            Exit status: 0 installed, 1 otherwise, 2 usage error."
)]
pub struct InstallWheelArgs {
    /// wheel files (.whl) to install
    #[argh(positional, arg_name = "WHEEL")]
    wheels: Vec<String>,
    /// box name, IP address or host:port (default: LAGER_BOX or the default box)
    #[argh(option, long = "box")]
    box_name: Option<String>,
    /// list the packages installed on the box instead
    #[argh(switch)]
    list: bool,
    /// remove the installed package NAME instead
    #[argh(option)]
    uninstall: Option<String>,
    /// go ahead even while someone else holds the box's lock
    #[argh(switch)]
    force: bool,
    /// print the box's JSON answer
    #[argh(switch)]
    json: bool,
}

/// What `install-wheel` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WheelAction {
    Install(Vec<PathBuf>),
    List,
    Uninstall(String),
}

/// `lager install-wheel`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WheelOpts {
    pub action: WheelAction,
    pub box_name: Option<String>,
    pub force: bool,
    pub json: bool,
}

pub fn install_wheel(args: InstallWheelArgs) -> Result<Command, EarlyExit> {
    let usage = "Usage: lager install-wheel WHEEL... [--box BOX], or --list, or --uninstall NAME";
    let action = match (args.wheels.is_empty(), args.list, args.uninstall) {
        (false, false, None) => {
            WheelAction::Install(args.wheels.into_iter().map(PathBuf::from).collect())
        }
        (true, true, None) => WheelAction::List,
        (true, false, Some(name)) if !name.trim().is_empty() => WheelAction::Uninstall(name),
        (true, false, None) => {
            return Err(EarlyExit::Usage(format!("No wheel given. {usage}")));
        }
        _ => {
            return Err(EarlyExit::Usage(format!(
                "Give wheels, --list or --uninstall NAME, one of them. {usage}"
            )))
        }
    };
    Ok(Command::InstallWheel(WheelOpts {
        action,
        box_name: args.box_name,
        force: args.force,
        json: args.json,
    }))
}
