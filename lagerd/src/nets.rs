//! The nets a box serves (instruments.md §3): `<state-dir>/saved_nets.json`,
//! plus, under `--sim`, `supply1` and `battery1` on the simulated Keithley
//! (in memory only: the user's file is never written for them). The only
//! writer of `saved_nets.json` (`POST /nets`, §10.6).

use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};

use common::addr::Address;
use serde_json::{json, Map, Value};

use crate::fsutil::{self, Durability};

/// Roles a net may have (instruments.md §3).
const ROLES: &[&str] = &[
    "power-supply",
    "battery",
    "eload",
    "scope",
    "debug",
    "usb",
    "gpio",
    "adc",
    "dac",
    "uart",
];

/// A refused change: HTTP status and message.
pub type Refusal = (u16, String);

/// Largest `saved_nets.json` read: thousands of nets; a larger file is
/// treated as unreadable (the last good list is kept).
const NETS_FILE_MAX: usize = 4 << 20;

pub struct Nets {
    state_dir: PathBuf,
    /// The simulator's address under `--sim`.
    simulated: Option<String>,
    /// Under `--sim`, the simulated device's console link (`console1`).
    simulated_console: Option<String>,
    /// Serializes read-modify-write of the file: two adds at once must
    /// both land.
    writing: Mutex<()>,
}

impl Nets {
    pub fn new(state_dir: PathBuf, simulated: Option<String>) -> Nets {
        Nets {
            state_dir,
            simulated,
            simulated_console: None,
            writing: Mutex::new(()),
        }
    }

    /// Serves the simulated device's console at `link` as `console1`.
    pub fn with_sim_console(mut self, link: String) -> Nets {
        self.simulated_console = Some(link);
        self
    }

    /// `POST /nets`: `{"action":"add","net":{…}}` or `{"action":"delete",
    /// "name", "role"?}`, and for the `lager` package's net store (scripts.md
    /// §2): `save` (add or replace by name, `nets: [...]`), `replace` (the
    /// whole saved list), `rename` (`name`, `new_name`), `delete_all`.
    pub fn change(&self, body: &Map<String, Value>) -> Result<String, Refusal> {
        let _writing = self.writing.lock().unwrap_or_else(PoisonError::into_inner);
        let mut saved = self.saved();
        let text = |key: &str| {
            body.get(key)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        // Every net of a list is checked before anything is written.
        let listed = || -> Result<Vec<Value>, Refusal> {
            let Some(Value::Array(nets)) = body.get("nets") else {
                return Err((400, "nets must be a list of net objects".to_string()));
            };
            let nets = nets
                .iter()
                .map(|net| validate(Some(net)))
                .collect::<Result<Vec<_>, _>>()?;
            let mut names: Vec<&str> = nets.iter().filter_map(|n| n["name"].as_str()).collect();
            names.sort_unstable();
            if let Some(twice) = names.windows(2).find(|w| w[0] == w[1]) {
                return Err((400, format!("Net '{}' is in the list twice", twice[0])));
            }
            Ok(nets)
        };
        let message = match body.get("action").and_then(Value::as_str) {
            Some("save") => {
                let nets = listed()?;
                for net in &nets {
                    saved.retain(|n| n.get("name") != net.get("name"));
                }
                let count = nets.len();
                saved.extend(nets);
                format!("Saved {count} net(s)")
            }
            Some("replace") => {
                saved = listed()?;
                format!("Saved {} net(s), replacing the list", saved.len())
            }
            Some("delete_all") => {
                let count = saved.len();
                saved.clear();
                format!("Deleted {count} net(s)")
            }
            Some("rename") => {
                let (old, new) = (text("name"), text("new_name"));
                if new.is_empty() || new.contains(char::is_whitespace) {
                    return Err((
                        400,
                        "new_name is required and may not contain spaces".into(),
                    ));
                }
                if self
                    .list()
                    .iter()
                    .any(|n| n.get("name").and_then(Value::as_str) == Some(new.as_str()))
                {
                    return Err((
                        400,
                        format!("Net '{new}' already exists; pick another name"),
                    ));
                }
                let Some(net) = saved
                    .iter_mut()
                    .find(|n| n.get("name").and_then(Value::as_str) == Some(old.as_str()))
                else {
                    return Err((404, format!("Net '{old}' not found in the saved nets")));
                };
                net["name"] = json!(new);
                format!("Renamed net '{old}' to '{new}'")
            }
            Some("add") => {
                let net = validate(body.get("net"))?;
                let name = net["name"].as_str().unwrap_or_default().to_string();
                if self
                    .list()
                    .iter()
                    .any(|n| n.get("name").and_then(Value::as_str) == Some(name.as_str()))
                {
                    return Err((400, format!("Net '{name}' already exists; delete it first (lager nets delete {name})")));
                }
                saved.push(net);
                format!("Added net '{name}'")
            }
            Some("delete") => {
                let name = text("name");
                let role = body.get("role").and_then(Value::as_str);
                let before = saved.len();
                saved.retain(|n| {
                    n.get("name").and_then(Value::as_str) != Some(name.as_str())
                        || role.is_some_and(|r| n.get("role").and_then(Value::as_str) != Some(r))
                });
                if saved.len() == before {
                    return Err((404, format!("Net '{name}' not found in the saved nets")));
                }
                format!("Deleted net '{name}'")
            }
            _ => {
                return Err((
                    400,
                    "action must be one of add, delete, save, replace, rename, delete_all"
                        .to_string(),
                ))
            }
        };
        let bytes = serde_json::to_vec_pretty(&Value::Array(saved)).unwrap_or_default();
        fsutil::replace(
            &self.state_dir.join("saved_nets.json"),
            &bytes,
            Durability::Durable,
        )
        .map_err(|e| (500, format!("Could not save the nets: {e}")))?;
        Ok(message)
    }

    /// The nets in `saved_nets.json` only (`GET /nets/list?local=1`).
    pub fn saved(&self) -> Vec<Value> {
        crate::fsutil::read_limited(&self.state_dir.join("saved_nets.json"), NETS_FILE_MAX)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Vec<Value>>(&bytes).ok())
            .unwrap_or_default()
    }

    /// Every net, read fresh; `[]` for a missing or unreadable file. Saved
    /// nets of the same name replace the simulated ones.
    pub fn list(&self) -> Vec<Value> {
        let saved = self.saved();
        if self.simulated.is_none() && self.simulated_console.is_none() {
            return saved;
        }
        let taken: Vec<String> = saved
            .iter()
            .filter_map(|net| Some(net.get("name")?.as_str()?.to_string()))
            .collect();
        let free = |name: &str| !taken.iter().any(|t| t == name);
        let mut nets = Vec::new();
        if let Some(address) = &self.simulated {
            for (name, role) in [("supply1", "power-supply"), ("battery1", "battery")] {
                if free(name) {
                    nets.push(json!({"name": name, "role": role, "instrument": "Keithley_2281S", "address": address, "pin": 1}));
                }
            }
        }
        if let Some(link) = self.simulated_console.as_ref().filter(|_| free("console1")) {
            let params = crate::console::SerialParams::default().to_json();
            nets.push(json!({"name": "console1", "role": "uart", "instrument": "sim-dut", "address": link, "params": params}));
        }
        nets.extend(saved);
        nets
    }
}

/// A net to add: known role, a driver for supply/battery instruments, a
/// parseable address (stored in canonical form), `pin` 1 by default.
fn validate(net: Option<&Value>) -> Result<Value, Refusal> {
    let bad = |why: String| Err((400, why));
    let Some(Value::Object(net)) = net else {
        return bad("net must be an object".into());
    };
    let text = |key: &str| {
        net.get(key)
            .and_then(Value::as_str)
            .map(str::trim)
            .unwrap_or_default()
    };
    let (name, role, instrument) = (text("name"), text("role"), text("instrument"));
    if name.is_empty() || name.contains(char::is_whitespace) {
        return bad("net name is required and may not contain spaces".into());
    }
    if !ROLES.contains(&role) {
        return bad(format!(
            "unknown role '{role}'; one of: {}",
            ROLES.join(", ")
        ));
    }
    // A console names a serial port, not a VISA instrument (console.md §1).
    if role == "uart" {
        return crate::console::params::validate_net(name, net).map_err(|e| (400, e));
    }
    let lowered = instrument.to_ascii_lowercase();
    let supported = match role {
        "power-supply" => ["keithley", "rigol", "keysight", "ea"]
            .iter()
            .any(|v| lowered.contains(v)),
        "battery" => lowered.contains("keithley") && lowered.contains("2281s"),
        _ => !instrument.is_empty(),
    };
    if !supported {
        return bad(format!(
            "Unsupported instrument '{instrument}' for {role} net '{name}'."
        ));
    }
    let address = Address::parse(text("address")).map_err(|e| (400, e.to_string()))?;
    let pin = match net.get("pin") {
        None | Some(Value::Null) => json!(1),
        Some(Value::Number(n)) if n.as_u64().is_some_and(|p| p >= 1) => json!(n),
        Some(other) => {
            return bad(format!(
                "pin must be a channel number of 1 or more, not {other}"
            ))
        }
    };
    Ok(
        json!({"name": name, "role": role, "instrument": instrument, "address": address.canonical(), "pin": pin}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(tag: &str, simulated: Option<&str>) -> (Nets, PathBuf) {
        let dir = std::env::temp_dir().join(format!("nets-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        (Nets::new(dir.clone(), simulated.map(str::to_string)), dir)
    }

    fn add(net: Value) -> Map<String, Value> {
        json!({"action": "add", "net": net})
            .as_object()
            .unwrap()
            .clone()
    }

    #[test]
    fn adds_validates_and_deletes() {
        let (nets, dir) = nets("crud", None);
        let keithley = json!({"name": "bat", "role": "battery", "instrument": "Keithley_2281S", "address": "USB0::0x05E6::0x2281::1::INSTR"});
        assert_eq!(
            nets.change(&add(keithley.clone())),
            Ok("Added net 'bat'".into())
        );
        let saved = nets.list();
        assert_eq!(
            saved[0]["address"], "USB0::0x05e6::0x2281::1::INSTR",
            "stored canonical"
        );
        assert_eq!(saved[0]["pin"], 1);
        assert_eq!(
            nets.change(&add(keithley)).unwrap_err().0,
            400,
            "names are unique"
        );
        let cases = [
            (
                json!({"name": "x", "role": "toaster", "instrument": "i", "address": "TCPIP0::h::1::SOCKET"}),
                "unknown role 'toaster'",
            ),
            (
                json!({"name": "x", "role": "battery", "instrument": "Rigol_DP821", "address": "TCPIP0::h::1::SOCKET"}),
                "Unsupported instrument 'Rigol_DP821' for battery net 'x'.",
            ),
            (
                json!({"name": "x", "role": "power-supply", "instrument": "Keithley_2281S", "address": "nope"}),
                "not an instrument address",
            ),
            (
                json!({"name": "", "role": "power-supply", "instrument": "Keithley_2281S", "address": "TCPIP0::h::1::SOCKET"}),
                "net name is required",
            ),
            (
                json!({"name": "x", "role": "power-supply", "instrument": "Keithley_2281S", "address": "TCPIP0::h::1::SOCKET", "pin": 0}),
                "pin must be",
            ),
        ];
        for (net, error) in cases {
            let (status, message) = nets.change(&add(net.clone())).unwrap_err();
            assert!(
                status == 400 && message.starts_with(error),
                "{net} -> {message}"
            );
        }
        let delete = |name: &str| {
            nets.change(
                json!({"action": "delete", "name": name})
                    .as_object()
                    .unwrap(),
            )
        };
        assert_eq!(delete("ghost").unwrap_err().0, 404);
        assert_eq!(delete("bat"), Ok("Deleted net 'bat'".into()));
        assert!(nets.list().is_empty());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_script_store_saves_replaces_renames_and_deletes() {
        let (nets, dir) = nets("store", Some("TCPIP0::127.0.0.1::5025::SOCKET"));
        let net = |name: &str, role: &str| json!({"name": name, "role": role, "instrument": "Keithley_2281S", "address": "TCPIP0::h::1::SOCKET"});
        let change = |body: Value| nets.change(body.as_object().unwrap());
        change(json!({"action": "save", "nets": [net("a", "battery"), net("b", "power-supply")]}))
            .unwrap();
        // Saving a name again replaces that net.
        change(json!({"action": "save", "nets": [net("a", "power-supply")]})).unwrap();
        let names = |list: Vec<Value>| -> Vec<(String, String)> {
            list.iter()
                .map(|n| {
                    (
                        n["name"].as_str().unwrap().into(),
                        n["role"].as_str().unwrap().into(),
                    )
                })
                .collect()
        };
        assert_eq!(
            names(nets.saved()),
            [
                ("b".into(), "power-supply".into()),
                ("a".into(), "power-supply".into())
            ]
        );
        assert_eq!(nets.list().len(), 4, "the simulated nets are listed too");
        // One bad net refuses the whole list.
        let (status, error) = change(
            json!({"action": "replace", "nets": [net("c", "battery"), net("d", "toaster")]}),
        )
        .unwrap_err();
        assert!(
            status == 400 && error.starts_with("unknown role 'toaster'"),
            "{error}"
        );
        assert_eq!(nets.saved().len(), 2);
        assert_eq!(
            change(json!({"action": "save", "nets": [net("x", "battery"), net("x", "battery")]}))
                .unwrap_err(),
            (400, "Net 'x' is in the list twice".into())
        );
        assert_eq!(
            change(json!({"action": "rename", "name": "a", "new_name": "supply1"}))
                .unwrap_err()
                .0,
            400,
            "a simulated net's name is taken"
        );
        assert_eq!(
            change(json!({"action": "rename", "name": "ghost", "new_name": "g2"}))
                .unwrap_err()
                .0,
            404
        );
        change(json!({"action": "rename", "name": "a", "new_name": "vbus"})).unwrap();
        assert_eq!(
            change(json!({"action": "delete", "name": "vbus", "role": "battery"}))
                .unwrap_err()
                .0,
            404,
            "the role must match when given"
        );
        change(json!({"action": "delete", "name": "vbus", "role": "power-supply"})).unwrap();
        change(json!({"action": "replace", "nets": [net("c", "battery")]})).unwrap();
        assert_eq!(names(nets.saved()), [("c".into(), "battery".into())]);
        change(json!({"action": "delete_all"})).unwrap();
        assert!(nets.saved().is_empty());
        assert_eq!(nets.list().len(), 2);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn simulated_nets_are_listed_but_never_saved() {
        let (nets, dir) = nets("sim", Some("TCPIP0::127.0.0.1::5025::SOCKET"));
        assert_eq!(nets.list().len(), 2);
        let taken = json!({"name": "supply1", "role": "power-supply", "instrument": "Keithley_2281S", "address": "TCPIP0::h::1::SOCKET"});
        assert_eq!(
            nets.change(&add(taken)).unwrap_err().0,
            400,
            "the simulated name is taken"
        );
        let other = json!({"name": "eload1", "role": "eload", "instrument": "Rigol_DL3021", "address": "TCPIP0::h::1::SOCKET"});
        nets.change(&add(other)).unwrap();
        let saved: Vec<Value> =
            serde_json::from_slice(&std::fs::read(dir.join("saved_nets.json")).unwrap()).unwrap();
        assert_eq!(saved.len(), 1, "only the added net is written");
        assert_eq!(nets.list().len(), 3);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
