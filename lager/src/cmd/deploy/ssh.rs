//! The ssh boundary: one command on the box through the user's own OpenSSH
//! client (so ~/.ssh/config, keys and agents apply), with its failures
//! classified from ssh's own words.

use std::io::Write;
use std::process::{Command, Stdio};
use std::thread;

use super::error::DeployError;
use crate::readcap;

/// What is kept of a remote command's stdout (its first bytes) and of its
/// stderr (this much of its start and of its end).
const STDOUT_KEEP: usize = 1 << 20;
const STDERR_KEEP: usize = 32 * 1024;

/// A box reached over ssh.
pub struct Ssh {
    /// `LAGER_SSH` split on whitespace, else `ssh`.
    program: Vec<String>,
    host: String,
    user: Option<String>,
}

/// What the remote command printed.
pub struct Output {
    pub stdout: String,
}

impl Ssh {
    pub fn new(host: &str, user: Option<&str>) -> Ssh {
        let program = std::env::var("LAGER_SSH")
            .ok()
            .map(|v| v.split_whitespace().map(str::to_string).collect::<Vec<_>>())
            .filter(|words| !words.is_empty())
            .unwrap_or_else(|| vec!["ssh".to_string()]);
        Ssh {
            program,
            host: host.to_string(),
            user: user.map(str::to_string),
        }
    }

    /// `user@host`, or the host when ssh picks the login.
    pub fn dest(&self) -> String {
        match &self.user {
            Some(user) => format!("{user}@{}", self.host),
            None => self.host.clone(),
        }
    }

    /// Runs `remote` (one shell command line) on the box, feeding it
    /// `stdin`. A non-zero exit of the remote command is `OnBox` for
    /// `step`, with the command's last stderr line.
    pub fn run(
        &self,
        display: &str,
        step: &'static str,
        remote: &str,
        stdin: &[u8],
    ) -> Result<Output, DeployError> {
        let mut command = Command::new(&self.program[0]);
        command.args(&self.program[1..]);
        // Never prompt: a password prompt would hang scripts and CI; the
        // error says how to install a key instead.
        command.args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=10"]);
        command.args(["-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3"]);
        if let Some(user) = &self.user {
            command.args(["-l", user]);
        }
        command.arg(&self.host).arg(remote);
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().map_err(|e| DeployError::NoSsh {
            program: self.program[0].clone(),
            error: e.to_string(),
        })?;
        // Feed stdin from its own thread: the box may answer before it has
        // read everything, and both pipes must drain.
        let mut pipe = child.stdin.take().expect("stdin is piped");
        let input = stdin.to_vec();
        let feeder = thread::spawn(move || {
            let _ = pipe.write_all(&input);
        });
        // Both read to their ends with a bound (issue 12): a box that
        // prints without end must not fill this machine's memory. The
        // start of stdout holds the answers; stderr's first and last lines
        // hold ssh's complaint and the remote command's.
        let stderr = child.stderr.take().expect("stderr is piped");
        let drain = thread::spawn(move || readcap::drain(stderr, STDERR_KEEP, STDERR_KEEP));
        let stdout = child
            .stdout
            .take()
            .map(|out| readcap::drain(out, STDOUT_KEEP, 0))
            .unwrap_or_default();
        let status = child.wait().map_err(|e| DeployError::Ssh {
            dest: self.dest(),
            detail: e.to_string(),
        })?;
        let _ = feeder.join();
        let stderr = String::from_utf8_lossy(&drain.join().unwrap_or_default()).into_owned();
        let stdout = String::from_utf8_lossy(&stdout).into_owned();
        if status.success() {
            return Ok(Output { stdout });
        }
        Err(match status.code() {
            Some(255) => classify_ssh(&self.dest(), &stderr),
            _ => classify_remote(display, &self.dest(), step, &stderr),
        })
    }
}

/// The last non-empty line of `text`, trimmed.
fn last_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or("no message")
        .to_string()
}

/// ssh's own failure (exit 255), from its stderr.
fn classify_ssh(dest: &str, stderr: &str) -> DeployError {
    let detail = stderr
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with("Warning: Permanently added"))
        .map_or_else(
            || last_line(stderr),
            |l| l.trim_start_matches("ssh: ").to_string(),
        );
    // The message adds its own full stop.
    let detail = detail.trim_end_matches('.').to_string();
    let dest = dest.to_string();
    let has = |needle: &str| stderr.contains(needle);
    if has("Permission denied") || has("Too many authentication failures") {
        DeployError::AuthFailed { dest, detail }
    } else if has("Host key verification failed") || has("HOST IDENTIFICATION HAS CHANGED") {
        DeployError::HostKey { dest, detail }
    } else if has("Connection refused")
        || has("No route to host")
        || has("timed out")
        || has("Could not resolve hostname")
        || has("Network is unreachable")
        || has("Name or service not known")
    {
        DeployError::Unreachable { dest, detail }
    } else {
        DeployError::Ssh { dest, detail }
    }
}

/// The remote command failed: its last stderr line says why.
fn classify_remote(display: &str, dest: &str, step: &'static str, stderr: &str) -> DeployError {
    let display = display.to_string();
    if stderr.contains("No space left on device") {
        return DeployError::DiskFull {
            display,
            detail: last_line(stderr),
        };
    }
    if stderr.contains("sudo:")
        && (stderr.contains("password") || stderr.contains("not in the sudoers"))
    {
        return DeployError::NoSudo {
            dest: dest.to_string(),
        };
    }
    let detail = last_line(stderr);
    DeployError::OnBox {
        display,
        step,
        detail: detail
            .strip_prefix("lager-box: ")
            .unwrap_or(&detail)
            .to_string(),
    }
}

/// `text` as one single-quoted shell word.
pub fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_failures_are_told_apart_by_their_words() {
        let kind = |stderr: &str| match classify_ssh("root@box", stderr) {
            DeployError::AuthFailed { .. } => "auth",
            DeployError::HostKey { .. } => "hostkey",
            DeployError::Unreachable { .. } => "unreachable",
            DeployError::Ssh { .. } => "other",
            _ => "?",
        };
        assert_eq!(
            kind("root@127.0.0.1: Permission denied (publickey).\r\n"),
            "auth"
        );
        assert_eq!(
            kind("ssh: connect to host 10.0.0.9 port 22: Connection refused\n"),
            "unreachable"
        );
        assert_eq!(
            kind("ssh: connect to host 10.0.0.9 port 22: Connection timed out\n"),
            "unreachable"
        );
        assert_eq!(
            kind("ssh: Could not resolve hostname nosuch: Name or service not known\n"),
            "unreachable"
        );
        assert_eq!(kind("Host key verification failed.\n"), "hostkey");
        assert_eq!(
            kind("kex_exchange_identification: read: Connection reset by peer\n"),
            "other"
        );
    }

    #[test]
    fn the_first_meaningful_ssh_line_is_the_detail() {
        let e = classify_ssh(
            "root@box",
            "Warning: Permanently added '[127.0.0.1]:2222' (ED25519) to the list of known hosts.\nssh: connect to host 127.0.0.1 port 2222: Connection refused\n",
        );
        assert!(
            e.to_string()
                .contains(": connect to host 127.0.0.1 port 2222: Connection refused. Check"),
            "{e}"
        );
    }

    #[test]
    fn box_failures_keep_the_script_line_and_spot_full_disks_and_sudo() {
        let e = classify_remote(
            "b1",
            "root@b1",
            "activation",
            "lager-box: could not write /x: cp: No space left on device\n",
        );
        assert!(matches!(e, DeployError::DiskFull { .. }), "{e:?}");
        let e = classify_remote(
            "b1",
            "pi@b1",
            "activation",
            "sudo: a password is required\n",
        );
        assert!(matches!(e, DeployError::NoSudo { .. }), "{e:?}");
        let e = classify_remote(
            "b1",
            "root@b1",
            "rollback",
            "noise\nlager-box: there is no previous lagerd in /usr/local/bin to roll back to\n",
        );
        assert_eq!(
            e.to_string(),
            "Error: rollback failed on box 'b1': there is no previous lagerd in /usr/local/bin to roll back to"
        );
    }

    #[test]
    fn quoting_survives_quotes_and_spaces() {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("printf %s {}", quote("it's a /dir with $x")))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "it's a /dir with $x");
    }
}
