//! `lager defaults` (locking.md B.13): the global `DEFAULTS` object, shown
//! and edited under the option names people type (`box`, `serial-port`,
//! `supply-net`) while stored under the Python system's keys.

use std::process::ExitCode;

use serde_json::{Map, Value};

use crate::cmd::{aborted, confirm};
use crate::config::Config;
use crate::error::CliError;
use crate::output::{self, Color};

/// The option name shown for a stored key (`gateway_id` → `box`).
pub fn display_key(stored: &str) -> String {
    match stored {
        "gateway_id" => "box".to_string(),
        "serial_device" => "serial-port".to_string(),
        "net_power_supply" => "supply-net".to_string(),
        _ => match stored.strip_prefix("net_") {
            Some(kind) => format!("{}-net", kind.replace('_', "-")),
            None => stored.replace('_', "-"),
        },
    }
}

/// The stored key for an option name, if it is one `defaults` manages.
pub fn stored_key(display: &str) -> Option<String> {
    match display {
        "box" => Some("gateway_id".to_string()),
        "user" => Some("user".to_string()),
        "serial-port" => Some("serial_device".to_string()),
        "supply-net" => Some("net_power_supply".to_string()),
        _ => {
            let kind = display.strip_suffix("-net")?;
            let valid = !kind.is_empty()
                && kind
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            valid.then(|| format!("net_{}", kind.replace('-', "_")))
        }
    }
}

fn value_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The `Default | Value` table.
pub fn render(defaults: &Map<String, Value>) -> String {
    let rows: Vec<(String, String)> = defaults
        .iter()
        .map(|(k, v)| (display_key(k), value_text(v)))
        .collect();
    let key_width = rows
        .iter()
        .map(|(k, _)| k.chars().count())
        .chain(["Default".len()])
        .max()
        .unwrap_or(0);
    let value_width = rows
        .iter()
        .map(|(_, v)| v.chars().count())
        .chain(["Value".len()])
        .max()
        .unwrap_or(0);
    let mut out = format!("{:<key_width$} | Value\n", "Default");
    out.push_str(&format!(
        "{}-+-{}",
        "-".repeat(key_width),
        "-".repeat(value_width)
    ));
    for (key, value) in rows {
        out.push_str(&format!("\n{key:<key_width$} | {value}"));
    }
    out
}

pub fn list(json: bool) -> Result<ExitCode, CliError> {
    let config = Config::load()?;
    let defaults = config.defaults();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&Value::Object(defaults)).unwrap_or_default()
        );
    } else if defaults.is_empty() {
        println!("No defaults are currently set. Add one with: lager defaults add");
    } else {
        println!("{}", render(&defaults));
    }
    Ok(ExitCode::SUCCESS)
}

pub fn add(settings: &[(String, String)]) -> Result<ExitCode, CliError> {
    if settings.is_empty() {
        return Err(CliError::NoDefaultSetting);
    }
    let mut config = Config::load()?;
    let mut defaults = config.defaults();
    for (key, value) in settings {
        if key == "box" && !config.boxes.contains_key(value) {
            return Err(CliError::DefaultBoxNotFound(value.clone()));
        }
        let stored = stored_key(key).ok_or_else(|| CliError::UnknownDefaultKey(key.clone()))?;
        defaults.insert(stored, Value::String(value.clone()));
    }
    let boxes = config.global_boxes();
    config.save(boxes, defaults)?;
    match settings {
        [(key, value)] => output::say(Color::Green, &format!("Set default {key}: {value}")),
        _ => {
            let mut text = String::from("Set defaults:");
            for (key, value) in settings {
                text.push_str(&format!("\n  - {key}: {value}"));
            }
            output::say(Color::Green, &text);
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn delete(key: &str, yes: bool) -> Result<ExitCode, CliError> {
    let stored = stored_key(key).ok_or_else(|| CliError::UnknownDefaultKey(key.to_string()))?;
    let mut config = Config::load()?;
    let mut defaults = config.defaults();
    let Some(current) = defaults.get(&stored).map(value_text) else {
        println!("No default {key} is currently set.");
        return Ok(ExitCode::SUCCESS);
    };
    if !yes {
        let question = format!("Delete default {key} '{current}'?");
        if !confirm(&question, &format!("lager defaults delete {key} --yes"))? {
            return Ok(aborted());
        }
    }
    defaults.remove(&stored);
    let boxes = config.global_boxes();
    config.save(boxes, defaults)?;
    output::say(Color::Green, &format!("Deleted default {key} '{current}'"));
    Ok(ExitCode::SUCCESS)
}

pub fn delete_all(yes: bool) -> Result<ExitCode, CliError> {
    let mut config = Config::load()?;
    if config.defaults().is_empty() {
        println!("No defaults are currently set.");
        return Ok(ExitCode::SUCCESS);
    }
    if !yes && !confirm("Delete all defaults?", "lager defaults delete-all --yes")? {
        return Ok(aborted());
    }
    let boxes = config.global_boxes();
    config.save(boxes, Map::new())?;
    output::say(Color::Green, "Deleted all defaults");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_names_round_trip() {
        for (stored, shown) in [
            ("gateway_id", "box"),
            ("serial_device", "serial-port"),
            ("net_power_supply", "supply-net"),
            ("net_battery", "battery-net"),
            ("net_watt_meter", "watt-meter-net"),
            ("user", "user"),
        ] {
            assert_eq!(display_key(stored), shown);
            assert_eq!(stored_key(shown).as_deref(), Some(stored));
        }
        assert_eq!(display_key("some_other_key"), "some-other-key");
        assert_eq!(stored_key("nonsense"), None);
        assert_eq!(stored_key("-net"), None);
    }

    #[test]
    fn table_layout() {
        let mut defaults = Map::new();
        defaults.insert("gateway_id".into(), Value::String("bench-1".into()));
        defaults.insert("user".into(), Value::String("alice".into()));
        assert_eq!(
            render(&defaults),
            "Default | Value\n--------+--------\nbox     | bench-1\nuser    | alice"
        );
    }
}
