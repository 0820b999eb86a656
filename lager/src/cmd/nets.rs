//! `lager nets` (instruments.md §3, §10.6): list the box's nets
//! (`GET /nets/list`), add and delete them (`POST /nets`). The box
//! validates roles, instruments and name clashes; the CLI has already
//! checked that an address parses. Neither locks the box: nets are the
//! box's configuration, not hardware state (locking.md B.8 "listings").

use std::process::ExitCode;
use std::time::Duration;

use serde_json::{json, Value};

use crate::args::NetAdd;
use crate::boxsel::resolve;
use crate::client::{capped, Client};
use crate::cmd::instrument::{answer, not_delivered, Answer, HOLDER_HEADER};
use crate::cmd::print_body;
use crate::config::Config;
use crate::error::CliError;
use crate::identity::Identity;

/// Nets requests touch no instrument; the box answers from a file.
const NETS_TIMEOUT: Duration = Duration::from_secs(10);

/// The nets of a `/nets/list` body: a list, or `{"nets": [...]}` from an
/// older box (instruments.md §3).
pub fn nets_of(body: &Value) -> Option<Vec<Value>> {
    match body {
        Value::Array(nets) => Some(nets.clone()),
        Value::Object(map) => map.get("nets").and_then(Value::as_array).cloned(),
        _ => None,
    }
}

fn field(net: &Value, key: &str) -> String {
    match net.get(key) {
        Some(Value::String(s)) => s.clone(),
        None | Some(Value::Null) => "-".to_string(),
        Some(other) => other.to_string(),
    }
}

/// The `name  role  instrument  address` table, as `lager boxes` draws its.
pub fn render_table(nets: &[Value]) -> String {
    let header = ["name", "role", "instrument", "address"];
    let rows: Vec<Vec<String>> = nets
        .iter()
        .map(|net| header.iter().map(|key| field(net, key)).collect())
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|c| {
            rows.iter()
                .map(|row| row[c].chars().count())
                .chain([header[c].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<String>| -> String {
        let mut out = String::new();
        for (c, text) in cells.iter().enumerate() {
            out.push_str(text);
            if c + 1 < cells.len() {
                out.push_str(&" ".repeat(widths[c] - text.chars().count() + 3));
            }
        }
        out.trim_end().to_string()
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    out.push('\n');
    out.push_str(&"=".repeat(widths.iter().sum::<usize>() + 3 * (widths.len() - 1)));
    for row in rows {
        out.push('\n');
        out.push_str(&line(row));
    }
    out
}

/// `lager nets [list]`, or `lager supply|battery` without a command (then
/// only `role`'s nets).
pub fn list(box_name: Option<&str>, json: bool, role: Option<&str>) -> Result<ExitCode, CliError> {
    let config = Config::load()?;
    let target = resolve(&config, box_name)?;
    let client = target.lock_client();
    let reply = client
        .get("/nets/list", capped(NETS_TIMEOUT))
        .map_err(not_delivered)?;
    if reply.status == 404 {
        return Err(CliError::BoxRefused(format!(
            "box '{}' does not serve /nets/list; update the box.",
            target.display
        )));
    }
    let body = reply.json().ok_or(CliError::NonJsonReply {
        status: reply.status,
    })?;
    if reply.status != 200 {
        let error = body
            .get("error")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| format!("listing nets failed (HTTP {})", reply.status));
        return Err(CliError::BoxRefused(error));
    }
    let mut nets = nets_of(&body).ok_or(CliError::BoxRefused(format!(
        "box '{}' answered /nets/list with something that is not a list of nets; update the box.",
        target.display
    )))?;
    if let Some(role) = role {
        nets.retain(|net| net.get("role").and_then(Value::as_str) == Some(role));
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&Value::Array(nets)).unwrap_or_default()
        );
    } else if nets.is_empty() {
        let what = role.map(|r| format!("{r} nets")).unwrap_or("nets".into());
        println!(
            "No {what} on box '{0}'. Add one: lager nets add NAME --role ROLE --instrument INSTRUMENT --address ADDRESS --box {0}",
            target.display
        );
    } else {
        println!("{}", render_table(&nets));
    }
    Ok(ExitCode::SUCCESS)
}

/// `POST /nets` with `body`, printed as `[OK] <message>`.
fn change(box_name: Option<&str>, json: bool, body: Value) -> Result<ExitCode, CliError> {
    let config = Config::load()?;
    let target = resolve(&config, box_name)?;
    let client: Client = target.lock_client();
    let identity = Identity::current(config.default_str("user").as_deref());
    // Not lock-enforced today; naming ourselves costs nothing and keeps
    // working if the box starts enforcing (locking.md A.10).
    let reply = client
        .post_json_with(
            "/nets",
            &body,
            &[(HOLDER_HEADER, &identity.holder)],
            capped(NETS_TIMEOUT),
        )
        .map_err(not_delivered)?;
    let answer = answer("nets", "/nets", &reply)?;
    if json {
        print_body(&reply.body);
    }
    match answer {
        Answer::Done(message) => {
            if !json {
                println!("[OK] {message}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Answer::Locked(user) => Err(CliError::Locked {
            display: target.display.clone(),
            user: common::holder::format_lock_user(&user),
            waited_secs: None,
        }),
        Answer::TokenRequired => Err(CliError::TokenRequired {
            display: target.display.clone(),
        }),
        Answer::Failed(error) => Err(CliError::BoxRefused(error)),
    }
}

/// `lager nets add NAME --role R --instrument I --address A [--pin N]`.
pub fn add(net: &NetAdd) -> Result<ExitCode, CliError> {
    let mut spec = json!({
        "name": net.name,
        "role": net.role,
        "address": net.address,
    });
    if !net.instrument.is_empty() {
        spec["instrument"] = json!(net.instrument);
    }
    if let Some(pin) = net.pin {
        spec["pin"] = json!(pin);
    }
    if let Some(params) = &net.params {
        spec["params"] = params.clone();
    }
    change(
        net.box_name.as_deref(),
        net.json,
        json!({"action": "add", "net": spec}),
    )
}

/// `lager nets delete NAME`.
pub fn delete(box_name: Option<&str>, json: bool, name: &str) -> Result<ExitCode, CliError> {
    change(box_name, json, json!({"action": "delete", "name": name}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_list_shapes_are_read() {
        let net = json!({"name": "s", "role": "power-supply"});
        assert_eq!(nets_of(&json!([net.clone()])), Some(vec![net.clone()]));
        assert_eq!(nets_of(&json!({"nets": [net.clone()]})), Some(vec![net]));
        assert_eq!(nets_of(&json!({"error": "x"})), None);
    }

    #[test]
    fn table_aligns_and_marks_missing_fields() {
        let nets = [
            json!({"name": "supply1", "role": "power-supply", "instrument": "Keithley_2281S", "address": "TCPIP0::127.0.0.1::5025::SOCKET", "pin": 1}),
            json!({"name": "b", "role": "battery"}),
        ];
        assert_eq!(
            render_table(&nets),
            "name      role           instrument       address\n\
             =========================================================================\n\
             supply1   power-supply   Keithley_2281S   TCPIP0::127.0.0.1::5025::SOCKET\n\
             b         battery        -                -"
        );
    }
}
