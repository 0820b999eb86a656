//! Which box a command talks to (boxes.md §3–4) and the passive lock check
//! that runs during resolution (locking.md B.8).

use std::collections::HashSet;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Mutex;
use std::time::Duration;

use common::holder::format_lock_user;
use common::wire::LOCK_PORT;

use crate::client::{capped, Client, TransportError};
use crate::config::{natural_cmp, BoxEntry, Config};
use crate::error::CliError;
use crate::identity::Identity;
use crate::output;

/// A resolved box: where it is and what to call it in messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The saved name, else the `--box` text as typed (boxes.md §3).
    pub display: String,
    /// Bare host: IP literal (IPv6 without brackets) or DNS name.
    pub host: String,
    /// Explicit port, used for every request to the box.
    pub port: Option<u16>,
    pub token: Option<String>,
}

impl Target {
    /// A client for routes whose default port is `default_port`.
    pub fn client(&self, default_port: u16) -> Client {
        Client::new(
            &self.host,
            self.port.unwrap_or(default_port),
            self.token.clone(),
        )
    }

    /// Lock, status and hello traffic (default :9000).
    pub fn lock_client(&self) -> Client {
        self.client(LOCK_PORT)
    }

    /// The address as shown to people: the host, plus `:port` when explicit.
    pub fn address(&self) -> String {
        display_address(&self.host, self.port)
    }
}

/// `host` or `host:port` (`[v6]:port`).
pub fn display_address(host: &str, port: Option<u16>) -> String {
    match port {
        None => host.to_string(),
        Some(port) if host.contains(':') => format!("[{host}]:{port}"),
        Some(port) => format!("{host}:{port}"),
    }
}

/// A DNS host name: dot-separated labels of letters, digits and inner
/// hyphens, at most 253 bytes, and not all-numeric at the end (so that a
/// mistyped IPv4 address such as `10.0.0` is not taken for a name).
pub fn is_hostname(s: &str) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s);
    if s.is_empty() || s.len() > 253 {
        return false;
    }
    let labels: Vec<&str> = s.split('.').collect();
    let label_ok = |l: &&str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    labels.iter().all(label_ok)
        && !labels
            .last()
            .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()))
}

fn parse_port(text: &str) -> Option<u16> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<u16>().ok().filter(|p| *p > 0)
}

/// Parses an address; a bare host name is accepted only with
/// `allow_bare_hostname` (saved entries), never directly on `--box`.
pub fn parse_address(text: &str, allow_bare_hostname: bool) -> Option<(String, Option<u16>)> {
    if text.parse::<Ipv4Addr>().is_ok() || text.parse::<Ipv6Addr>().is_ok() {
        return Some((text.to_string(), None));
    }
    if let Some(rest) = text.strip_prefix('[') {
        let (host, port) = rest.split_once("]:")?;
        host.parse::<Ipv6Addr>().ok()?;
        return Some((host.to_string(), Some(parse_port(port)?)));
    }
    if let Some((host, port)) = text.rsplit_once(':') {
        let port = parse_port(port)?;
        if host.parse::<Ipv4Addr>().is_ok() || is_hostname(host) {
            return Some((host.to_string(), Some(port)));
        }
        return None;
    }
    if allow_bare_hostname && is_hostname(text) {
        return Some((text.to_string(), None));
    }
    None
}

fn env_token() -> Option<String> {
    std::env::var("LAGER_BOX_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
}

pub(crate) fn target_of_entry(name: &str, entry: &BoxEntry) -> Result<Target, CliError> {
    if entry.ip.is_empty() {
        return Err(CliError::NoIp {
            name: name.to_string(),
        });
    }
    if let Some(port) = &entry.bad_port {
        return Err(CliError::BadPort {
            name: name.to_string(),
            port: port.clone(),
        });
    }
    let (host, embedded_port) =
        parse_address(&entry.ip, true).ok_or_else(|| CliError::BadEntryAddress {
            name: name.to_string(),
            ip: entry.ip.clone(),
        })?;
    Ok(Target {
        display: name.to_string(),
        host,
        port: entry.port.or(embedded_port),
        token: entry.token.clone().or_else(env_token),
    })
}

/// Step 2 of boxes.md §4: a saved name, else an IP or an address with a port.
fn resolve_name(config: &Config, name: &str) -> Result<Target, CliError> {
    if let Some(entry) = config.boxes.get(name) {
        return target_of_entry(name, entry);
    }
    if let Some((host, port)) = parse_address(name, false) {
        return Ok(Target {
            display: name.to_string(),
            host,
            port,
            token: env_token(),
        });
    }
    let mut saved: Vec<String> = config.boxes.keys().cloned().collect();
    saved.sort_by(|a, b| natural_cmp(a, b));
    Err(CliError::UnknownBox {
        name: name.to_string(),
        saved,
    })
}

/// Resolves `--box` (or the default box) per boxes.md §4, steps 1–4.
pub fn resolve(config: &Config, box_arg: Option<&str>) -> Result<Target, CliError> {
    match box_arg {
        Some("") => Err(CliError::EmptyBoxName),
        Some(name) => resolve_name(config, name),
        None => {
            let default = std::env::var("LAGER_BOX")
                .ok()
                .filter(|b| !b.is_empty())
                .or_else(|| config.default_str("gateway_id"));
            match default {
                Some(name) => resolve_name(config, &name),
                None => Err(CliError::NoBoxSpecified {
                    has_saved: !config.boxes.is_empty(),
                }),
            }
        }
    }
}

/// Timeout of the passive `GET /lock` (locking.md B.8).
const PASSIVE_TIMEOUT: Duration = Duration::from_secs(3);

/// The passive lock check (locking.md B.8): fail if someone else holds
/// the box; warn once per box about images without lock support; skip
/// silently when the box cannot be asked, handing back why so the caller
/// can fail fast instead of waiting on the dead box again.
pub fn passive_check(
    target: &Target,
    client: &Client,
    identity: &Identity,
) -> Result<Option<TransportError>, CliError> {
    let reply = match client.get("/lock", capped(PASSIVE_TIMEOUT)) {
        Ok(reply) => reply,
        Err(e) => {
            log::debug!("passive lock check of {} skipped: {e}", target.display);
            return Ok(Some(e));
        }
    };
    match reply.status {
        200 => {
            let Some(record) = reply.json() else {
                return Ok(None);
            };
            if record.get("locked").and_then(|v| v.as_bool()) != Some(true) {
                return Ok(None);
            }
            let locked_by = record.get("user").and_then(|v| v.as_str()).unwrap_or("");
            if locked_by.is_empty() || identity.holds(locked_by) {
                return Ok(None);
            }
            Err(CliError::Locked {
                display: target.display.clone(),
                user: format_lock_user(locked_by),
                waited_secs: None,
            })
        }
        404 => {
            static WARNED: Mutex<Option<HashSet<String>>> = Mutex::new(None);
            let mut warned = WARNED.lock().unwrap_or_else(|e| e.into_inner());
            if warned
                .get_or_insert_with(HashSet::new)
                .insert(client.addr().to_string())
            {
                output::warn(&format!(
                    "Warning: Box '{0}' is running an old image without lock support on its :9000 API — lock checks are skipped. Run: lager box update --box {0}",
                    target.display
                ));
            }
            Ok(None)
        }
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn address_forms() {
        assert_eq!(
            parse_address("10.0.0.5", false),
            Some(("10.0.0.5".into(), None))
        );
        assert_eq!(parse_address("::1", false), Some(("::1".into(), None)));
        assert_eq!(
            parse_address("10.0.0.5:9100", false),
            Some(("10.0.0.5".into(), Some(9100)))
        );
        assert_eq!(
            parse_address("[::1]:9100", false),
            Some(("::1".into(), Some(9100)))
        );
        assert_eq!(
            parse_address("bench.local:9100", false),
            Some(("bench.local".into(), Some(9100)))
        );
        assert_eq!(parse_address("bench.local", false), None);
        assert_eq!(
            parse_address("bench.local", true),
            Some(("bench.local".into(), None))
        );
        assert_eq!(parse_address("10.0.0.5:0", false), None);
        assert_eq!(parse_address("10.0.0.5:70000", false), None);
        assert_eq!(parse_address("10.0.0.5:+80", false), None);
        assert_eq!(parse_address("[::1]", false), None);
        assert_eq!(parse_address("10.0.0", true), None);
        assert_eq!(parse_address("a b", true), None);
        assert_eq!(parse_address("", true), None);
        assert_eq!(parse_address("-bad.example", true), None);
    }

    #[test]
    fn display_address_brackets_v6_with_port() {
        assert_eq!(display_address("::1", Some(9)), "[::1]:9");
        assert_eq!(display_address("::1", None), "::1");
        assert_eq!(display_address("h", Some(9)), "h:9");
    }

    fn config_with(json: &str) -> (Config, PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "lager-boxsel-{}-{}",
            std::process::id(),
            json.len()
        ));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join(".lager");
        std::fs::write(&path, json).expect("write");
        (Config::load_from(path, None).expect("load"), dir)
    }

    #[test]
    fn resolution_steps() {
        let (config, dir) = config_with(
            r#"{"BOXES": {"b2": "10.0.0.2", "b10": {"ip": "h.local", "port": 9100}, "noip": {"ip": ""}}}"#,
        );
        let target = resolve(&config, Some("b10")).expect("saved");
        assert_eq!(target.display, "b10");
        assert_eq!(target.address(), "h.local:9100");
        assert_eq!(target.lock_client().addr(), "h.local:9100");
        let target = resolve(&config, Some("10.1.1.1")).expect("ip");
        assert_eq!(target.lock_client().addr(), "10.1.1.1:9000");
        assert!(matches!(
            resolve(&config, Some("")),
            Err(CliError::EmptyBoxName)
        ));
        let err = resolve(&config, Some("nope")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "No box named 'nope'.\nSaved boxes: b2, b10, noip\nAdd it: lager boxes add --name nope --ip [IP_ADDRESS]"
        );
        let err = resolve(&config, Some("noip")).unwrap_err();
        assert!(
            err.to_string().starts_with("Box 'noip' has no IP address."),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
