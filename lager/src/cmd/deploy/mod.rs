//! `lager install`, `lager update` and `lager uninstall` (issue 7): put
//! lagerd on a box over the user's own ssh, replace it with a rollback
//! net, and take it off again.
//!
//! Every step on the box is `image/lager-box.sh`, streamed to `sh -s` (or
//! shipped in the upload), so the box needs a POSIX shell and `tar`, and
//! nothing is left half-done by a dropped connection: the new binary is
//! swapped in with one rename after it has proven it runs there.

mod bundle;
mod ssh;

use crate::error::DeployError;

use std::collections::HashMap;
use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::args::{DeployAction, DeployOpts};
use crate::autolock::{self, AcquireState, LockSettings};
use crate::boxsel::{self, Target};
use crate::client::Client;
use crate::config::Config;
use crate::error::CliError;
use crate::identity::{self, Identity};
use crate::output;
use bundle::Arch;
use ssh::{quote, Ssh};

/// How long a new lagerd has to answer `/status` before it is rolled back.
const HEALTH_DEADLINE: Duration = Duration::from_secs(10);
/// Install's auto-lock TTL (locking.md B.8).
const INSTALL_TTL_SECS: u32 = 3600;

pub fn run(opts: &DeployOpts) -> Result<ExitCode, CliError> {
    let config = Config::load()?;
    let target = boxsel::resolve(&config, opts.box_name.as_deref())?;
    let saved_user = config
        .boxes
        .get(&target.display)
        .and_then(|entry| entry.ssh_user.clone());
    let user = opts.user.clone().or(saved_user);
    let identity = Identity::current(config.default_str("user").as_deref());
    let remote = Remote {
        ssh: Ssh::new(&target.host, user.as_deref()),
        prefix: opts.prefix.clone(),
        display: target.display.clone(),
        sudo: false,
    };
    let result = match &opts.action {
        DeployAction::Install { listen } => deploy(&target, remote, opts, &identity, Some(listen)),
        DeployAction::Update { .. } => deploy(&target, remote, opts, &identity, None),
        DeployAction::Uninstall { keep_config, yes } => {
            uninstall(&target, remote, &identity, *keep_config, *yes)
        }
    };
    result.map_err(|e| match e {
        Failure::Deploy(e) => CliError::Deploy(e),
        Failure::Cli(e) => e,
    })
}

/// A step's failure: the box's, or the CLI's own (lock refused, prompt).
enum Failure {
    Deploy(DeployError),
    Cli(CliError),
}

impl From<DeployError> for Failure {
    fn from(e: DeployError) -> Failure {
        Failure::Deploy(e)
    }
}

impl From<CliError> for Failure {
    fn from(e: CliError) -> Failure {
        Failure::Cli(e)
    }
}

/// The box as reached over ssh, and where lager lives on it.
struct Remote {
    ssh: Ssh,
    prefix: String,
    display: String,
    /// Run privileged steps under `sudo -n`.
    sudo: bool,
}

/// What `lager-box.sh probe` found.
struct Probe {
    arch: String,
    root: bool,
    writable: bool,
    sudo: bool,
    free_kb: Option<u64>,
    systemd: bool,
    /// `Some(version)` when lagerd is installed (empty if it will not run).
    installed: Option<String>,
}

impl Remote {
    /// Runs a box-script action streamed over stdin.
    fn script(
        &self,
        step: &'static str,
        action: &str,
        args: &[&str],
    ) -> Result<String, DeployError> {
        let mut command = format!(
            "{}sh -s {action} {}",
            self.sudo_prefix(),
            quote(&self.prefix)
        );
        for arg in args {
            command.push(' ');
            command.push_str(&quote(arg));
        }
        Ok(self
            .ssh
            .run(&self.display, step, &command, bundle::BOX_SCRIPT.as_bytes())?
            .stdout)
    }

    fn sudo_prefix(&self) -> &'static str {
        if self.sudo {
            "sudo -n "
        } else {
            ""
        }
    }

    fn probe(&mut self) -> Result<Probe, DeployError> {
        let out = self.script("the probe", "probe", &[])?;
        let facts: HashMap<&str, &str> = out.lines().filter_map(|l| l.split_once('=')).collect();
        if facts.get("lager_box_probe") != Some(&"1") {
            return Err(DeployError::BadProbe {
                display: self.display.clone(),
                output: out.lines().next().unwrap_or("nothing").to_string(),
            });
        }
        let yes = |key: &str| facts.get(key) == Some(&"yes");
        let probe = Probe {
            arch: facts.get("arch").unwrap_or(&"").to_string(),
            root: facts.get("uid") == Some(&"0"),
            writable: yes("writable"),
            sudo: yes("sudo"),
            free_kb: facts.get("free_kb").and_then(|v| v.parse().ok()),
            systemd: facts.get("init") == Some(&"systemd"),
            installed: yes("installed").then(|| facts.get("version").unwrap_or(&"").to_string()),
        };
        // / needs root whatever its permissions say (systemd, users); a
        // prefix needs it only when the login cannot write there.
        let needs_root = (self.prefix == "/" && !probe.root) || !probe.writable;
        if needs_root && !probe.root {
            if !probe.sudo {
                return Err(DeployError::NoSudo {
                    dest: self.ssh.dest(),
                });
            }
            self.sudo = true;
        }
        Ok(probe)
    }

    /// Where the box's lagerd log is, for messages.
    fn log_hint(&self, systemd: bool) -> String {
        if systemd {
            "`journalctl -u lagerd` on the box".into()
        } else {
            format!(
                "{}/var/log/lagerd.log on the box",
                self.prefix.trim_end_matches('/')
            )
        }
    }
}

/// One line per step: `[n/N] what... outcome`.
struct Steps {
    total: usize,
    done: usize,
}

impl Steps {
    fn start(&mut self, text: &str) {
        self.done += 1;
        print!("[{}/{}] {text}... ", self.done, self.total);
        let _ = std::io::stdout().flush();
    }

    fn end(&self, outcome: &str) {
        println!("{outcome}");
    }
}

/// The end of a step that failed: close its line before the error.
fn failed<T, E>(result: Result<T, E>) -> Result<T, E> {
    if result.is_err() {
        println!("failed");
    }
    result
}

fn describe(probe: &Probe) -> String {
    let installed = match &probe.installed {
        None => "no lagerd yet".to_string(),
        Some(v) if v.is_empty() => "a lagerd that does not run".to_string(),
        Some(v) => format!("lagerd {v}"),
    };
    let init = if probe.systemd {
        "systemd"
    } else {
        "no systemd"
    };
    format!("{}, {installed}, {init}", probe.arch)
}

fn size(bytes: usize) -> String {
    if bytes < 1024 * 1024 {
        format!("{} KiB", bytes.div_ceil(1024))
    } else {
        format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
    }
}

/// `lager install` (`listen` is `Some`) and `lager update`.
fn deploy(
    target: &Target,
    mut remote: Remote,
    opts: &DeployOpts,
    identity: &Identity,
    listen: Option<&Vec<String>>,
) -> Result<ExitCode, Failure> {
    let install = listen.is_some();
    let verb = if install { "install" } else { "update" };
    println!(
        "lager {verb}: box '{}' over ssh ({})",
        target.display,
        remote.ssh.dest()
    );
    let mut steps = Steps { total: 4, done: 0 };

    steps.start("probing the box");
    let probe = failed(remote.probe())?;
    steps.end(&describe(&probe));
    let previous = probe.installed.clone();
    if !install && previous.is_none() {
        return Err(DeployError::NotInstalled {
            display: remote.display.clone(),
            prefix: remote.prefix.clone(),
        }
        .into());
    }
    let arch = Arch::from_uname(&probe.arch).ok_or_else(|| DeployError::UnknownArch {
        display: remote.display.clone(),
        arch: probe.arch.clone(),
    })?;
    let (path, lagerd) = bundle::lagerd_for(arch, opts.lagerd.as_deref(), opts.dist.as_deref())?;
    // The upload is unpacked beside the binary, then copied once more.
    let need_kb = (2 * lagerd.len() as u64) / 1024 + 256;
    if let Some(free_kb) = probe.free_kb.filter(|free| *free < need_kb) {
        return Err(DeployError::DiskFull {
            display: remote.display.clone(),
            detail: format!(
                "{free_kb} KiB free under {}, {need_kb} KiB needed",
                remote.prefix
            ),
        }
        .into());
    }

    steps.start("reserving the box");
    let client = target.lock_client();
    let force = matches!(opts.action, DeployAction::Update { force: true });
    let reserved = failed(reserve(target, &client, identity, install, force))?;
    steps.end(&reserved);

    let config_mode = match listen {
        Some(listen) if !listen.is_empty() => "replace",
        _ => "keep",
    };
    let config = bundle::config(listen.map(Vec::as_slice).unwrap_or_default());
    steps.start(&format!(
        "copying {} ({}) and the box files, then restarting lagerd",
        path.display(),
        size(lagerd.len())
    ));
    // The daemon is down for a moment: no heartbeat errors meanwhile.
    autolock::pause_heartbeat();
    let upload = bundle::bundle(&lagerd, &config);
    let activated = failed(activate(&remote, &upload, config_mode))?;
    let new_version = activated.get("new_version").cloned().unwrap_or_default();
    let systemd = activated.get("init").map(String::as_str) == Some("systemd");
    steps.end(&if systemd {
        format!("lagerd {new_version} started by systemd (lagerd.service)")
    } else {
        format!(
            "lagerd {new_version} started under lagerd-supervise: this box has no systemd, so the supervisor restarts lagerd when it fails but nothing starts it at boot"
        )
    });

    steps.start(&format!("waiting for /status on {}", client.addr()));
    let waited = wait_healthy(&client, &new_version, HEALTH_DEADLINE);
    autolock::unpause_heartbeat();
    match waited {
        Ok(took) => {
            steps.end(&format!(
                "lagerd {new_version} answered in {:.1} s",
                took.as_secs_f64()
            ));
            let was = match previous.as_deref() {
                Some(v) if !v.is_empty() && v != new_version => format!(" (was {v})"),
                _ => String::new(),
            };
            let done = if install { "Installed" } else { "Updated" };
            output::say(
                output::Color::Green,
                &format!(
                    "{done} lagerd {new_version} on box '{}'{was}.",
                    remote.display
                ),
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(()) => {
            println!("no answer in {} s", HEALTH_DEADLINE.as_secs());
            Err(roll_back(&remote, &client, &new_version, systemd).into())
        }
    }
}

/// Takes the admin lock (install: TTL 3600). A box whose lagerd does not
/// answer has nothing to lock yet; `--force` goes ahead past a holder.
/// `lager install-wheel` reserves the box the same way (locking.md B.8).
pub(crate) fn reserve(
    target: &Target,
    client: &Client,
    identity: &Identity,
    install: bool,
    force: bool,
) -> Result<String, CliError> {
    let mut settings = LockSettings::from_env(&identity::env_lookup, identity::under_ci());
    if install && std::env::var_os("LAGER_LOCK_TTL").is_none() {
        settings.ttl_secs = Some(INSTALL_TTL_SECS);
    }
    if settings.disabled {
        return Ok("skipped (LAGER_AUTO_LOCK_DISABLE)".into());
    }
    // Nothing answers on a fresh box, or on one whose lagerd is down (which
    // an update may be meant to fix): there is no lock to take.
    if client.get("/status", Duration::from_secs(2)).is_err() {
        return Ok("lagerd does not answer yet: nothing to reserve".into());
    }
    if force {
        return Ok(match boxsel::passive_check(target, client, identity) {
            Err(CliError::Locked { user, .. }) => {
                format!("locked by {user}: going ahead anyway (--force)")
            }
            _ => "not reserved (--force)".into(),
        });
    }
    let acquisition = autolock::engage(client, &target.display, &identity.holder, &settings)?;
    Ok(match acquisition.state {
        AcquireState::Acquired => format!("locked as {}", identity.holder),
        AcquireState::AlreadyOurs => format!("already held by {}", identity.holder),
        AcquireState::Unreachable => "lagerd does not answer yet: nothing to reserve".into(),
    })
}

/// Uploads the bundle and runs `activate` from it, in one ssh session.
fn activate(
    remote: &Remote,
    upload: &[u8],
    config_mode: &str,
) -> Result<HashMap<String, String>, DeployError> {
    let staging = format!(
        "{}/usr/local/lib/lager-staging",
        remote.prefix.trim_end_matches('/')
    );
    let inner = format!(
        "S={}; rm -rf \"$S\" && mkdir -p \"$S\" && {{ tar -xf - -C \"$S\" || {{ rm -rf \"$S\"; exit 1; }}; }} && exec sh \"$S/lager-box.sh\" activate {} \"$S\" {config_mode}",
        quote(&staging),
        quote(&remote.prefix)
    );
    let command = format!("{}sh -c {}", remote.sudo_prefix(), quote(&inner));
    let out = remote
        .ssh
        .run(&remote.display, "installing", &command, upload)?;
    Ok(facts(&out.stdout))
}

fn facts(stdout: &str) -> HashMap<String, String> {
    stdout
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Polls `/status` until it reports `version`; `Err` after `deadline`.
fn wait_healthy(client: &Client, version: &str, deadline: Duration) -> Result<Duration, ()> {
    let start = Instant::now();
    while start.elapsed() < deadline {
        let answer = client.get("/status", Duration::from_secs(1)).ok();
        let reported = answer
            .filter(|reply| reply.status == 200)
            .and_then(|reply| reply.json())
            .and_then(|body| {
                body.get("version")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            });
        if reported.as_deref() == Some(version) {
            return Ok(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(())
}

/// The new lagerd never answered: put the previous one back and check it.
fn roll_back(remote: &Remote, client: &Client, failed_version: &str, systemd: bool) -> DeployError {
    println!("rolling back to the previous lagerd...");
    let log_hint = remote.log_hint(systemd);
    let failed_version = failed_version.to_string();
    let restored = match remote.script("the rollback", "rollback", &[]) {
        Ok(out) => facts(&out).get("version").cloned().unwrap_or_default(),
        Err(e) => {
            return DeployError::RollbackFailed {
                display: remote.display.clone(),
                failed: failed_version,
                waited: HEALTH_DEADLINE,
                detail: e.to_string(),
                log_hint,
            }
        }
    };
    match wait_healthy(client, &restored, HEALTH_DEADLINE) {
        Ok(_) => DeployError::RolledBack {
            display: remote.display.clone(),
            failed: failed_version,
            restored,
            waited: HEALTH_DEADLINE,
            log_hint,
        },
        Err(()) => DeployError::RollbackFailed {
            display: remote.display.clone(),
            failed: failed_version,
            waited: HEALTH_DEADLINE,
            detail: format!("the previous lagerd {restored} does not answer /status either"),
            log_hint,
        },
    }
}

/// `lager uninstall`: stop lagerd and remove what install put there.
fn uninstall(
    target: &Target,
    mut remote: Remote,
    identity: &Identity,
    keep_config: bool,
    yes: bool,
) -> Result<ExitCode, Failure> {
    if !yes {
        let question = format!(
            "Remove lagerd{} from box '{}'?",
            if keep_config {
                ""
            } else {
                " and its state (/etc/lager)"
            },
            target.display
        );
        let hint = format!(
            "lager uninstall --box {}{} --yes",
            target.display,
            if keep_config { " --keep-config" } else { "" }
        );
        if !super::confirm(&question, &hint)? {
            return Ok(super::aborted());
        }
    }
    println!(
        "lager uninstall: box '{}' over ssh ({})",
        target.display,
        remote.ssh.dest()
    );
    let mut steps = Steps { total: 3, done: 0 };
    steps.start("probing the box");
    let probe = failed(remote.probe())?;
    steps.end(&describe(&probe));
    if probe.installed.is_none() {
        return Err(DeployError::NotInstalled {
            display: remote.display.clone(),
            prefix: remote.prefix.clone(),
        }
        .into());
    }
    steps.start("reserving the box");
    let client = target.lock_client();
    let reserved = failed(reserve(target, &client, identity, false, false))?;
    steps.end(&reserved);
    steps.start("stopping lagerd and removing its files");
    let keep = if keep_config { "1" } else { "0" };
    let out = failed(remote.script("uninstalling", "uninstall", &[keep]))?;
    // The lock died with the state: nothing is left to release (B.8).
    autolock::keep();
    let kept = facts(&out).get("kept").cloned();
    steps.end(&match &kept {
        Some(dir) => format!("done; kept the configuration in {dir}"),
        None => "done".to_string(),
    });
    output::say(
        output::Color::Green,
        &format!("Uninstalled lagerd from box '{}'.", remote.display),
    );
    Ok(ExitCode::SUCCESS)
}
