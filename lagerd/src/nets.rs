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

/// Why `POST /nets` changed nothing. The texts are what `lager nets` and
/// the package's net store show.
#[derive(Debug)]
pub enum NetsError {
    /// `save` or `replace` without a list of nets.
    NotAList,
    /// One name twice in one list.
    Twice(String),
    /// `rename` without a usable new name.
    BadNewName,
    /// `rename` to a name a net already has.
    NameTaken(String),
    /// `add` of a name a net already has.
    Exists(String),
    /// `rename` or `delete` of a net the file does not hold.
    NotSaved(String),
    UnknownAction,
    /// A net that is not a JSON object.
    NotAnObject,
    BadName,
    UnknownRole(String),
    /// An instrument lager has no driver for in that role.
    Unsupported {
        name: String,
        role: String,
        instrument: String,
    },
    BadAddress(common::addr::AddressError),
    /// A `uart` net's port or serial params, with the console module's
    /// reason (console.md §1).
    BadConsole(String),
    /// `pin` as given, when it is no channel number.
    BadPin(Value),
    /// `saved_nets.json` could not be written; the old one stands.
    Save(std::io::Error),
}

impl std::fmt::Display for NetsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NetsError::NotAList => f.write_str("nets must be a list of net objects"),
            NetsError::Twice(name) => write!(f, "Net '{name}' is in the list twice"),
            NetsError::BadNewName => f.write_str("new_name is required and may not contain spaces"),
            NetsError::NameTaken(name) => {
                write!(f, "Net '{name}' already exists; pick another name")
            }
            NetsError::Exists(name) => write!(
                f,
                "Net '{name}' already exists; delete it first (lager nets delete {name})"
            ),
            NetsError::NotSaved(name) => write!(f, "Net '{name}' not found in the saved nets"),
            NetsError::UnknownAction => {
                f.write_str("action must be one of add, delete, save, replace, rename, delete_all")
            }
            NetsError::NotAnObject => f.write_str("net must be an object"),
            NetsError::BadName => f.write_str("net name is required and may not contain spaces"),
            NetsError::UnknownRole(role) => {
                write!(f, "unknown role '{role}'; one of: {}", ROLES.join(", "))
            }
            NetsError::Unsupported {
                name,
                role,
                instrument,
            } => write!(
                f,
                "Unsupported instrument '{instrument}' for {role} net '{name}'."
            ),
            NetsError::BadAddress(e) => e.fmt(f),
            NetsError::BadConsole(why) => f.write_str(why),
            NetsError::BadPin(pin) => {
                write!(f, "pin must be a channel number of 1 or more, not {pin}")
            }
            NetsError::Save(e) => write!(f, "Could not save the nets: {e}"),
        }
    }
}

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
    pub fn change(&self, body: &Map<String, Value>) -> Result<String, NetsError> {
        let _writing = self.writing.lock().unwrap_or_else(PoisonError::into_inner);
        let mut saved = self.saved();
        let text = |key: &str| {
            body.get(key)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        // Every net of a list is checked before anything is written.
        let listed = || -> Result<Vec<Value>, NetsError> {
            let Some(Value::Array(nets)) = body.get("nets") else {
                return Err(NetsError::NotAList);
            };
            let nets = nets
                .iter()
                .map(|net| validate(Some(net)))
                .collect::<Result<Vec<_>, _>>()?;
            let mut names: Vec<&str> = nets.iter().filter_map(|n| n["name"].as_str()).collect();
            names.sort_unstable();
            if let Some(twice) = names.windows(2).find(|w| w[0] == w[1]) {
                return Err(NetsError::Twice(twice[0].to_string()));
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
                    return Err(NetsError::BadNewName);
                }
                if self
                    .list()
                    .iter()
                    .any(|n| n.get("name").and_then(Value::as_str) == Some(new.as_str()))
                {
                    return Err(NetsError::NameTaken(new));
                }
                let Some(net) = saved
                    .iter_mut()
                    .find(|n| n.get("name").and_then(Value::as_str) == Some(old.as_str()))
                else {
                    return Err(NetsError::NotSaved(old));
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
                    return Err(NetsError::Exists(name));
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
                    return Err(NetsError::NotSaved(name));
                }
                format!("Deleted net '{name}'")
            }
            _ => return Err(NetsError::UnknownAction),
        };
        let bytes = serde_json::to_vec_pretty(&Value::Array(saved)).unwrap_or_default();
        fsutil::replace(
            &self.state_dir.join("saved_nets.json"),
            &bytes,
            Durability::Durable,
        )
        .map_err(NetsError::Save)?;
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
fn validate(net: Option<&Value>) -> Result<Value, NetsError> {
    let Some(Value::Object(net)) = net else {
        return Err(NetsError::NotAnObject);
    };
    let text = |key: &str| {
        net.get(key)
            .and_then(Value::as_str)
            .map(str::trim)
            .unwrap_or_default()
    };
    let (name, role, instrument) = (text("name"), text("role"), text("instrument"));
    if name.is_empty() || name.contains(char::is_whitespace) {
        return Err(NetsError::BadName);
    }
    if !ROLES.contains(&role) {
        return Err(NetsError::UnknownRole(role.to_string()));
    }
    // A console names a serial port, not a VISA instrument (console.md §1).
    if role == "uart" {
        return crate::console::params::validate_net(name, net).map_err(NetsError::BadConsole);
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
        return Err(NetsError::Unsupported {
            name: name.to_string(),
            role: role.to_string(),
            instrument: instrument.to_string(),
        });
    }
    let address = Address::parse(text("address")).map_err(NetsError::BadAddress)?;
    let pin = match net.get("pin") {
        None | Some(Value::Null) => json!(1),
        Some(Value::Number(n)) if n.as_u64().is_some_and(|p| p >= 1) => json!(n),
        Some(other) => return Err(NetsError::BadPin(other.clone())),
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
            nets.change(&add(keithley.clone())).unwrap(),
            "Added net 'bat'"
        );
        let saved = nets.list();
        assert_eq!(
            saved[0]["address"], "USB0::0x05e6::0x2281::1::INSTR",
            "stored canonical"
        );
        assert_eq!(saved[0]["pin"], 1);
        assert!(
            matches!(nets.change(&add(keithley)), Err(NetsError::Exists(name)) if name == "bat"),
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
            let message = nets.change(&add(net.clone())).unwrap_err().to_string();
            assert!(message.starts_with(error), "{net} -> {message}");
        }
        let delete = |name: &str| {
            nets.change(
                json!({"action": "delete", "name": name})
                    .as_object()
                    .unwrap(),
            )
        };
        assert!(matches!(delete("ghost"), Err(NetsError::NotSaved(name)) if name == "ghost"));
        assert_eq!(delete("bat").unwrap(), "Deleted net 'bat'");
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
        let error = change(
            json!({"action": "replace", "nets": [net("c", "battery"), net("d", "toaster")]}),
        )
        .unwrap_err();
        assert!(
            matches!(&error, NetsError::UnknownRole(role) if role == "toaster"),
            "{error}"
        );
        assert_eq!(nets.saved().len(), 2);
        assert_eq!(
            change(json!({"action": "save", "nets": [net("x", "battery"), net("x", "battery")]}))
                .unwrap_err()
                .to_string(),
            "Net 'x' is in the list twice"
        );
        assert!(
            matches!(
                change(json!({"action": "rename", "name": "a", "new_name": "supply1"})),
                Err(NetsError::NameTaken(_))
            ),
            "a simulated net's name is taken"
        );
        assert!(matches!(
            change(json!({"action": "rename", "name": "ghost", "new_name": "g2"})),
            Err(NetsError::NotSaved(_))
        ));
        change(json!({"action": "rename", "name": "a", "new_name": "vbus"})).unwrap();
        assert!(
            matches!(
                change(json!({"action": "delete", "name": "vbus", "role": "battery"})),
                Err(NetsError::NotSaved(_))
            ),
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
        assert!(
            matches!(nets.change(&add(taken)), Err(NetsError::Exists(_))),
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
