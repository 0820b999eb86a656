//! `lager supply` and `lager battery` (instruments.md §8, §10): one
//! `POST /<role>/command` per invocation, answered `[OK] <message>` or
//! `Error: <error>`.
//!
//! Commands that change the instrument run the passive lock check, ask
//! for confirmation where the Python CLI does, then hold an auto-lock for
//! the process's lifetime (locking.md B.8); reads take no lock. Every
//! command sends `Lager-Holder` (A.10). A box error goes back as
//! [`CliError::Instrument`], which `main` renders through the errno table
//! (diagnose.md §6) when it is an EBUSY/ENODEV/ETIMEDOUT.

use std::process::ExitCode;
use std::time::Duration;

use common::actions::{find, Key, Quantity, Role as ActionRole};
use common::holder::format_lock_user;
use serde_json::{json, Value};

use crate::args::{InstrumentOpts, Role};
use crate::autolock::{self, AcquireState, LockSettings};
use crate::boxsel::{passive_check, resolve, Target};
use crate::client::Client;
use crate::cmd::{aborted, confirm, print_body};
use crate::config::Config;
use crate::error::CliError;
use crate::identity::{self, Identity};
use crate::transport::{capped, Reply, TransportError, TransportKind};

/// instruments.md §10.7: longer than the box's own 30 s command deadline,
/// so the box's timeout message always arrives first.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(40);

/// The header naming the lock holder (locking.md A.10).
pub const HOLDER_HEADER: &str = "Lager-Holder";

/// `lager supply|battery [NET] <command>`.
pub fn run(opts: &InstrumentOpts) -> Result<ExitCode, CliError> {
    check_limits(opts)?;
    let model = match (opts.action.key, &opts.csv) {
        (Key::CreateModel, Some(path)) => Some(read_model(path)?),
        _ => None,
    };
    let config = Config::load()?;
    let net = net_or_default(&config, opts.role, opts.net.as_deref())?;
    let target = resolve(&config, opts.box_name.as_deref())?;
    let client = target.lock_client();
    let identity = Identity::current(config.default_str("user").as_deref());
    let holder = if opts.mutates() {
        match prepare_change(opts, &net, &target, &client, &identity)? {
            Some(holder) => holder,
            None => return Ok(aborted()),
        }
    } else {
        identity.holder.clone()
    };

    let mut params = opts.params();
    if let Some((voc, esr)) = model {
        params.insert("voc".into(), json!(voc));
        params.insert("esr".into(), json!(esr));
    }
    let body = json!({"netname": net, "action": opts.action.name, "params": params});
    let reply = client
        .post_json_with(
            opts.role.path(),
            &body,
            &[(HOLDER_HEADER, &holder)],
            capped(COMMAND_TIMEOUT),
        )
        .map_err(not_delivered)?;
    let answer = answer(opts.role.noun(), opts.role.path(), &reply)?;
    if opts.json {
        print_body(&reply.body);
    }
    let mut message = done(answer, &target, &net)?;
    if let (Key::ExportModel, Some(path)) = (opts.action.key, &opts.csv) {
        write_model(path, &reply)?;
        message = format!("{message}, written to {}", path.display());
    }
    if !opts.json {
        println!("[OK] {message}");
    }
    Ok(ExitCode::SUCCESS)
}

/// The CLI's own ceilings (instruments.md §8), far above any instrument's
/// range: they catch a typo (50 for 5.0) before it reaches a box.
fn check_limits(opts: &InstrumentOpts) -> Result<(), CliError> {
    if opts.role != Role::Supply {
        return Ok(());
    }
    let mut given: Vec<(Key, Option<f64>)> = opts
        .extra
        .iter()
        .filter_map(|(name, value)| Some((find(ActionRole::Supply, name)?.key, value.as_f64())))
        .collect();
    given.push((opts.action.key, opts.value.as_ref().and_then(Value::as_f64)));
    for (key, value) in given {
        let max = match key {
            Key::Voltage => 100.0,
            Key::Current => 30.0,
            Key::Ovp => 110.0,
            Key::Ocp => 33.0,
            _ => continue,
        };
        let Some(Quantity {
            name: what, unit, ..
        }) = key.quantity()
        else {
            continue;
        };
        if let Some(value) = value.filter(|v| *v > max) {
            return Err(CliError::OverLimit {
                what,
                value,
                max,
                unit,
            });
        }
    }
    Ok(())
}

fn model_error(path: &std::path::Path, reason: String) -> CliError {
    CliError::ModelFile {
        path: path.to_path_buf(),
        reason,
    }
}

/// `model-create --csv`: the file's VOC and ESR columns.
fn read_model(path: &std::path::Path) -> Result<(Vec<f64>, Vec<f64>), CliError> {
    // 101 rows of three numbers: a few KiB; 1 MiB is plenty of slack.
    let text = crate::readcap::read_file(path, 1 << 20)
        .and_then(|bytes| {
            String::from_utf8(bytes).map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, "it is not UTF-8 text")
            })
        })
        .map_err(|e| model_error(path, e.to_string()))?;
    super::model_csv::parse(&text).map_err(|reason| model_error(path, reason))
}

/// `model-export --csv`: the slot's lists from the reply's `state`.
fn write_model(path: &std::path::Path, reply: &Reply) -> Result<(), CliError> {
    let state = reply
        .json()
        .map(|body| body["state"].clone())
        .unwrap_or_default();
    let list = |key: &str| -> Vec<f64> {
        state[key]
            .as_array()
            .map(|values| values.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default()
    };
    let (voc, esr) = (list("voc"), list("esr"));
    if voc.is_empty() || voc.len() != esr.len() {
        return Err(CliError::BoxRefused(
            "the box's export_model answer carries no model (state.voc/state.esr); update the box"
                .into(),
        ));
    }
    std::fs::write(path, super::model_csv::render(&voc, &esr))
        .map_err(|e| model_error(path, format!("cannot write it: {e}")))
}

/// The message of a successful answer; any other answer as the error to show.
pub fn done(answer: Answer, target: &Target, net: &str) -> Result<String, CliError> {
    match answer {
        Answer::Done(message) => Ok(message),
        Answer::Locked(user) => Err(CliError::Locked {
            display: target.display.clone(),
            user: format_lock_user(&user),
            waited_secs: None,
        }),
        Answer::TokenRequired => Err(CliError::TokenRequired {
            display: target.display.clone(),
        }),
        Answer::Failed(error) => Err(CliError::Instrument {
            box_name: target.display.clone(),
            net: Some(net.to_string()),
            error,
        }),
    }
}

/// NET as given, else the role's default net (`lager defaults`).
pub fn net_or_default(config: &Config, role: Role, net: Option<&str>) -> Result<String, CliError> {
    match net {
        Some(net) => Ok(net.to_string()),
        None => config
            .default_str(role.default_key())
            .filter(|n| !n.trim().is_empty())
            .ok_or(CliError::NoDefaultNet {
                noun: role.noun(),
                option: role.default_option(),
            }),
    }
}

/// Before a change: the passive check, the confirmation, the auto-lock.
/// Returns the holder to name in `Lager-Holder`, or `None` when the user
/// declined.
fn prepare_change(
    opts: &InstrumentOpts,
    net: &str,
    target: &Target,
    client: &Client,
    identity: &Identity,
) -> Result<Option<String>, CliError> {
    // A box that cannot answer GET /lock will not answer the command
    // either: fail now instead of waiting out a second timeout.
    if let Some(error) = passive_check(target, client, identity)? {
        return Err(CliError::BoxUnreachable(error));
    }
    if let Some(question) = opts.question(net).filter(|_| !opts.yes) {
        if !confirm(&question, &retry_hint(opts, net, target))? {
            return Ok(None);
        }
    }
    hold_box(target, client, identity).map(Some)
}

/// The auto-lock of a hardware change (locking.md B.8), held for the
/// process's lifetime; returns the holder to name in `Lager-Holder`.
pub fn hold_box(target: &Target, client: &Client, identity: &Identity) -> Result<String, CliError> {
    let settings = LockSettings::from_env(&identity::env_lookup, identity::under_ci());
    if settings.disabled {
        return Ok(identity.holder.clone());
    }
    let acquisition = autolock::engage(client, &target.display, &identity.holder, &settings)?;
    // A.10: name the lock's stored user, which may be a wider scope than
    // our holder when we adopted our own lock.
    let stored = match acquisition.state {
        AcquireState::Acquired | AcquireState::AlreadyOurs => acquisition
            .record
            .as_ref()
            .and_then(|r| r.get("user"))
            .and_then(Value::as_str)
            .map(str::to_string),
        AcquireState::Unreachable => None,
    };
    Ok(stored.unwrap_or_else(|| identity.holder.clone()))
}

/// The same command with `--yes`, for the no-terminal error.
fn retry_hint(opts: &InstrumentOpts, net: &str, target: &Target) -> String {
    let value = opts
        .value_text
        .as_deref()
        .map(|v| format!(" {v}"))
        .unwrap_or_default();
    format!(
        "lager {} {net} --box {} {}{value} --yes",
        opts.role.noun(),
        target.display,
        opts.subcommand
    )
}

/// A request that got no HTTP answer (instruments.md §8).
pub fn not_delivered(error: TransportError) -> CliError {
    if error.connected && error.kind == TransportKind::Timeout {
        CliError::BoxNoAnswer {
            addr: error.addr,
            timeout: error.timeout,
        }
    } else {
        CliError::BoxUnreachable(error)
    }
}

/// What a box's reply to a command means.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// 200 with `success: true`: the message.
    Done(String),
    /// 423 under `--enforce-locks`: the lock's user.
    Locked(String),
    TokenRequired,
    /// Anything else: the text to show after `Error: `.
    Failed(String),
}

/// Reads a `{"success", "message"|"error"}` reply of `path` (instruments.md
/// §8): a 404 from a box that predates the route (no `success` key) gets
/// the update hint; a body that is not JSON is an error of its own.
pub fn answer(noun: &str, path: &str, reply: &Reply) -> Result<Answer, CliError> {
    let Some(body) = reply.json() else {
        return Err(CliError::NonJsonReply {
            status: reply.status,
        });
    };
    let success = body.get("success").and_then(Value::as_bool);
    let text = |key: &str| body.get(key).and_then(Value::as_str).map(str::to_string);
    if reply.status == 200 && success == Some(true) {
        return Ok(Answer::Done(
            text("message").unwrap_or_else(|| "Command executed".to_string()),
        ));
    }
    match reply.status {
        423 => {
            let user = body
                .get("lock")
                .and_then(|lock| lock.get("user"))
                .and_then(Value::as_str)
                .unwrap_or("unknown");
            return Ok(Answer::Locked(user.to_string()));
        }
        401 => return Ok(Answer::TokenRequired),
        _ => {}
    }
    let mut error =
        text("error").unwrap_or_else(|| format!("{noun} command failed (HTTP {})", reply.status));
    if reply.status == 404 && success.is_none() {
        error.push_str(&format!(
            ". This box image does not expose {path}; update the box."
        ));
    }
    Ok(Answer::Failed(error))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: u16, body: &str) -> Reply {
        Reply {
            status,
            body: body.to_string(),
        }
    }

    fn answer_of(status: u16, body: &str) -> Answer {
        answer("supply", "/supply/command", &reply(status, body)).expect("JSON")
    }

    #[test]
    fn replies_are_read_per_spec() {
        assert_eq!(
            answer_of(
                200,
                r#"{"success":true,"action":"voltage","message":"Voltage set to 5V"}"#
            ),
            Answer::Done("Voltage set to 5V".into())
        );
        // A 200 can still be a refusal (the cross-role conflict).
        assert_eq!(
            answer_of(
                200,
                r#"{"success":false,"error":"'b' is on the same Keithley"}"#
            ),
            Answer::Failed("'b' is on the same Keithley".into())
        );
        assert_eq!(
            answer_of(
                502,
                r#"{"success":false,"error":"[Errno 19] No such device (X)"}"#
            ),
            Answer::Failed("[Errno 19] No such device (X)".into())
        );
        assert_eq!(
            answer_of(500, r#"{}"#),
            Answer::Failed("supply command failed (HTTP 500)".into())
        );
        assert_eq!(
            answer_of(
                423,
                r#"{"error":"Box is locked by bob","lock":{"user":"bob"}}"#
            ),
            Answer::Locked("bob".into())
        );
    }

    #[test]
    fn only_an_old_box_404_gets_the_update_hint() {
        assert_eq!(
            answer_of(404, r#"{"error":"Not found"}"#),
            Answer::Failed(
                "Not found. This box image does not expose /supply/command; update the box.".into()
            )
        );
        assert_eq!(
            answer_of(
                404,
                r#"{"success":false,"error":"Net 'x' not found. Create it with 'lager nets add'."}"#
            ),
            Answer::Failed("Net 'x' not found. Create it with 'lager nets add'.".into())
        );
    }

    #[test]
    fn non_json_is_its_own_error() {
        let err = answer("supply", "/supply/command", &reply(502, "<html>")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Error: box returned a non-JSON response (HTTP 502)."
        );
    }

    #[test]
    fn undelivered_requests_name_the_address() {
        let timeout = TransportError {
            kind: TransportKind::Timeout,
            addr: "10.0.0.5:9100".into(),
            timeout: COMMAND_TIMEOUT,
            connected: true,
        };
        assert_eq!(
            not_delivered(timeout.clone()).to_string(),
            "Error: the box at 10.0.0.5:9100 accepted the request but did not answer within 40s. \
             The operation may just be slow and may still complete on the box; try again in a moment."
        );
        let refused = TransportError {
            kind: TransportKind::Refused,
            connected: false,
            ..timeout
        };
        assert_eq!(
            not_delivered(refused).to_string(),
            "Error: cannot reach box at 10.0.0.5:9100 (connection refused). \
             Check network/Tailscale and that the box is online and updated."
        );
    }
}
