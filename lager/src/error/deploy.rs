//! `DeployError`: every way `lager install`, `update` and `uninstall` fail at
//! the ssh and box boundary, each message naming the next step.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug)]
pub enum DeployError {
    /// The ssh program could not be started.
    NoSsh { program: String, error: String },
    /// ssh could not connect (refused, no route, DNS, timeout).
    Unreachable { dest: String, detail: String },
    /// ssh connected but could not log in.
    AuthFailed { dest: String, detail: String },
    /// The box's host key did not match known_hosts.
    HostKey { dest: String, detail: String },
    /// Any other ssh failure (exit status 255).
    Ssh { dest: String, detail: String },
    /// The login is not root and has no password-less sudo.
    NoSudo { dest: String },
    /// `uname -m` named a machine lager builds no lagerd for.
    UnknownArch { display: String, arch: String },
    /// No lagerd for the box's architecture on this machine.
    NoBinary {
        arch: &'static str,
        searched: Vec<PathBuf>,
    },
    /// `--lagerd` was built for another machine.
    WrongArch {
        path: PathBuf,
        built_for: String,
        arch: &'static str,
    },
    /// The lagerd file could not be read.
    ReadBinary { path: PathBuf, error: String },
    /// Not enough room on the box, found before or while copying.
    DiskFull { display: String, detail: String },
    /// `update`/`uninstall` of a box without lagerd.
    NotInstalled { display: String, prefix: String },
    /// The box script refused or failed a step; `detail` is its own line.
    OnBox {
        display: String,
        step: &'static str,
        detail: String,
    },
    /// The probe's answer was not the box script's.
    BadProbe { display: String, output: String },
    /// The new lagerd did not answer `/status` in time and was rolled back.
    RolledBack {
        display: String,
        failed: String,
        restored: String,
        waited: Duration,
        log_hint: String,
    },
    /// … and the rollback did not bring the old one back either.
    RollbackFailed {
        display: String,
        failed: String,
        waited: Duration,
        detail: String,
        log_hint: String,
    },
}

impl fmt::Display for DeployError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeployError::NoSsh { program, error } => write!(
                f,
                "Error: cannot run '{program}': {error}. Install the OpenSSH client, or point LAGER_SSH at one."
            ),
            DeployError::Unreachable { dest, detail } => write!(
                f,
                "Error: cannot reach {dest} over ssh: {detail}. Check that the box is powered and on the network, and that `ssh {dest}` works from here."
            ),
            DeployError::AuthFailed { dest, detail } => write!(
                f,
                "Error: ssh could not log in to {dest}: {detail}. Install your key on the box (ssh-copy-id {dest}) or name another login with --user."
            ),
            DeployError::HostKey { dest, detail } => write!(
                f,
                "Error: ssh refused {dest}: {detail}. If the box was reinstalled, forget its old key with `ssh-keygen -R <host>` and run again."
            ),
            DeployError::Ssh { dest, detail } => write!(f, "Error: ssh to {dest} failed: {detail}"),
            DeployError::NoSudo { dest } => write!(
                f,
                "Error: the ssh login on {dest} is not root and cannot use sudo without a password. Log in as root (--user root), or allow it on the box: echo '<user> ALL=(ALL) NOPASSWD: ALL' | sudo tee /etc/sudoers.d/lager"
            ),
            DeployError::UnknownArch { display, arch } => write!(
                f,
                "Error: box '{display}' is a '{arch}' machine; lager builds lagerd for x86_64, aarch64 and armv7 (armv7l) only."
            ),
            DeployError::NoBinary { arch, searched } => {
                let searched: Vec<String> =
                    searched.iter().map(|p| p.display().to_string()).collect();
                write!(
                    f,
                    "Error: no lagerd for {arch} here (looked for {}). Build it with `scripts/build-release.sh --targets {arch}` and pass --dist target/dist, or pass --lagerd FILE.",
                    searched.join(", ")
                )
            }
            DeployError::WrongArch { path, built_for, arch } => write!(
                f,
                "Error: {} is built for {built_for}, but the box is {arch}. Pass the {arch} lagerd (scripts/build-release.sh puts it in target/dist/{arch}/).",
                path.display()
            ),
            DeployError::ReadBinary { path, error } => {
                write!(f, "Error: cannot read {}: {error}", path.display())
            }
            DeployError::DiskFull { display, detail } => write!(
                f,
                "Error: box '{display}' is out of disk space: {detail}. Free some space on it (e.g. `sudo apt-get clean`, `sudo journalctl --vacuum-size=20M`) and run again; the running lagerd was not touched."
            ),
            DeployError::NotInstalled { display, prefix } => write!(
                f,
                "Error: lagerd is not installed on box '{display}' (under {prefix}). Install it with: lager install --box {display}"
            ),
            DeployError::OnBox { display, step, detail } => {
                write!(f, "Error: {step} failed on box '{display}': {detail}")
            }
            DeployError::BadProbe { display, output } => write!(
                f,
                "Error: box '{display}' did not answer the probe as expected (is its login shell a POSIX shell?): {output}"
            ),
            DeployError::RolledBack { display, failed, restored, waited, log_hint } => write!(
                f,
                "Error: the new lagerd {failed} did not answer /status on box '{display}' within {}s, so it was rolled back: lagerd {restored} runs and answers again. See why in {log_hint}.",
                waited.as_secs()
            ),
            DeployError::RollbackFailed { display, failed, waited, detail, log_hint } => write!(
                f,
                "Error: the new lagerd {failed} did not answer /status on box '{display}' within {}s, and the rollback failed too: {detail}. Log in to the box and look at {log_hint}.",
                waited.as_secs()
            ),
        }
    }
}
