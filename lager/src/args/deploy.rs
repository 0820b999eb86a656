//! `lager install`, `lager update` and `lager uninstall` as typed (issue 7):
//! the argh structs and their turning into [`DeployOpts`].

use std::path::PathBuf;

use argh::FromArgs;

use super::{Command, EarlyExit};

/// Put lagerd on a box over ssh and start it.
#[derive(FromArgs, Debug)]
#[argh(
    subcommand,
    name = "install",
    note = "Detects the box's architecture (uname -m), copies the matching static lagerd\n\
            and the box files (systemd unit or supervisor, udev rules, usbtmc\n\
            blacklist, default /etc/lager/lagerd.conf), starts lagerd and waits for\n\
            its /status. Re-running it updates the box in place.\n\
            lagerd is looked up in --lagerd, else <dist>/<arch>/lagerd for --dist,\n\
            LAGER_DIST and the dist/ directories beside this lager (target/dist/ as\n\
            scripts/build-release.sh leaves it).\n\
            Uses your own ssh (OpenSSH: ~/.ssh/config, keys and agent apply) and\n\
            contacts nothing but the box; LAGER_SSH replaces the ssh command.\n\
            Exit status: 0 installed and answering, 1 otherwise."
)]
pub struct InstallArgs {
    /// box name, IP address or host:port (default: LAGER_BOX or the default box)
    #[argh(option, long = "box")]
    box_name: Option<String>,
    /// ssh login on the box (default: the box's saved user, else ssh's own)
    #[argh(option)]
    user: Option<String>,
    /// the lagerd binary to install (must suit the box's architecture)
    #[argh(option)]
    lagerd: Option<PathBuf>,
    /// directory with <arch>/lagerd binaries (default: LAGER_DIST)
    #[argh(option)]
    dist: Option<PathBuf>,
    /// address lagerd serves, host:port, repeatable; written to the box's
    /// lagerd.conf (default: keep it, else 0.0.0.0:9000 and 0.0.0.0:5000)
    #[argh(option)]
    listen: Vec<String>,
    /// install under this directory on the box instead of / (tests, chroots)
    #[argh(option)]
    prefix: Option<String>,
}

/// Replace a box's lagerd, keeping the previous one to roll back to.
#[derive(FromArgs, Debug)]
#[argh(
    subcommand,
    name = "update",
    note = "Reserves the box first (refusing while someone else holds it, unless\n\
            --force), copies the new lagerd and box files, restarts lagerd and rolls\n\
            back to the previous binary if the new one does not answer /status within\n\
            10 s.\n\
            Uses your own ssh (OpenSSH: ~/.ssh/config, keys and agent apply) and\n\
            contacts nothing but the box; LAGER_SSH replaces the ssh command.\n\
            Exit status: 0 updated and answering, 1 otherwise (after a rollback the\n\
            box runs its previous lagerd)."
)]
pub struct UpdateArgs {
    /// box name, IP address or host:port (default: LAGER_BOX or the default box)
    #[argh(option, long = "box")]
    box_name: Option<String>,
    /// ssh login on the box (default: the box's saved user, else ssh's own)
    #[argh(option)]
    user: Option<String>,
    /// the lagerd binary to install (must suit the box's architecture)
    #[argh(option)]
    lagerd: Option<PathBuf>,
    /// directory with <arch>/lagerd binaries (default: LAGER_DIST)
    #[argh(option)]
    dist: Option<PathBuf>,
    /// update even while someone else holds the box's lock
    #[argh(switch)]
    force: bool,
    /// the directory lagerd was installed under with `lager install --prefix`
    #[argh(option)]
    prefix: Option<String>,
}

/// Stop lagerd on a box and remove everything lager installed there.
#[derive(FromArgs, Debug)]
#[argh(
    subcommand,
    name = "uninstall",
    note = "Removes lagerd, its box files and /etc/lager (with --keep-config only the\n\
            lock files go; lagerd.conf and saved nets stay).\n\
            Uses your own ssh (OpenSSH: ~/.ssh/config, keys and agent apply) and\n\
            contacts nothing but the box; LAGER_SSH replaces the ssh command.\n\
            Exit status: 0 removed, 1 otherwise."
)]
pub struct UninstallArgs {
    /// box name, IP address or host:port (default: LAGER_BOX or the default box)
    #[argh(option, long = "box")]
    box_name: Option<String>,
    /// ssh login on the box (default: the box's saved user, else ssh's own)
    #[argh(option)]
    user: Option<String>,
    /// keep /etc/lager's configuration (the lock is removed all the same)
    #[argh(switch)]
    keep_config: bool,
    /// do not ask for confirmation
    #[argh(switch)]
    yes: bool,
    /// the directory lagerd was installed under with `lager install --prefix`
    #[argh(option)]
    prefix: Option<String>,
}

/// Which deploy command, with what it alone takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeployAction {
    Install { listen: Vec<String> },
    Update { force: bool },
    Uninstall { keep_config: bool, yes: bool },
}

/// `lager install|update|uninstall`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployOpts {
    pub action: DeployAction,
    pub box_name: Option<String>,
    pub user: Option<String>,
    pub lagerd: Option<PathBuf>,
    pub dist: Option<PathBuf>,
    /// `/`, or an absolute directory without `..`, trailing `/` removed.
    pub prefix: String,
}

fn usage(text: String) -> EarlyExit {
    EarlyExit::Usage(text)
}

/// `/` when absent; else absolute, no `..`, no control characters.
fn prefix(value: Option<String>) -> Result<String, EarlyExit> {
    let Some(value) = value else {
        return Ok("/".into());
    };
    let ok = value.starts_with('/')
        && !value.split('/').any(|part| part == "..")
        && !value.chars().any(char::is_control);
    if !ok {
        return Err(usage(format!(
            "--prefix must be an absolute directory on the box without '..', e.g. /srv/lager (got '{value}')"
        )));
    }
    let trimmed = value.trim_end_matches('/');
    Ok(if trimmed.is_empty() {
        "/".into()
    } else {
        trimmed.into()
    })
}

fn listen(values: Vec<String>) -> Result<Vec<String>, EarlyExit> {
    for value in &values {
        let port = value.rsplit_once(':').map(|(_, port)| port.parse::<u16>());
        if !matches!(port, Some(Ok(_))) || value.chars().any(|c| c.is_whitespace() || c == '\'') {
            return Err(usage(format!(
                "--listen takes host:port, e.g. 0.0.0.0:9000 (got '{value}')"
            )));
        }
    }
    Ok(values)
}

pub fn install(args: InstallArgs) -> Result<Command, EarlyExit> {
    Ok(Command::Deploy(DeployOpts {
        action: DeployAction::Install {
            listen: listen(args.listen)?,
        },
        box_name: args.box_name,
        user: args.user,
        lagerd: args.lagerd,
        dist: args.dist,
        prefix: prefix(args.prefix)?,
    }))
}

pub fn update(args: UpdateArgs) -> Result<Command, EarlyExit> {
    Ok(Command::Deploy(DeployOpts {
        action: DeployAction::Update { force: args.force },
        box_name: args.box_name,
        user: args.user,
        lagerd: args.lagerd,
        dist: args.dist,
        prefix: prefix(args.prefix)?,
    }))
}

pub fn uninstall(args: UninstallArgs) -> Result<Command, EarlyExit> {
    Ok(Command::Deploy(DeployOpts {
        action: DeployAction::Uninstall {
            keep_config: args.keep_config,
            yes: args.yes,
        },
        box_name: args.box_name,
        user: args.user,
        lagerd: None,
        dist: None,
        prefix: prefix(args.prefix)?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_absolute_and_normalised() {
        assert_eq!(prefix(None).unwrap(), "/");
        assert_eq!(prefix(Some("/".into())).unwrap(), "/");
        assert_eq!(prefix(Some("/srv/lager/".into())).unwrap(), "/srv/lager");
        for bad in ["srv", "/srv/../etc", "/a\nb", ""] {
            assert!(prefix(Some(bad.into())).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn listen_needs_a_port() {
        assert!(listen(vec!["0.0.0.0:9000".into(), "[::]:5000".into()]).is_ok());
        for bad in ["0.0.0.0", "host:port", "a b:1", "x':1"] {
            assert!(listen(vec![bad.into()]).is_err(), "{bad:?} accepted");
        }
    }
}
