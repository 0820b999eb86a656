//! The nets a box serves (instruments.md §3): `<state-dir>/saved_nets.json`,
//! plus, under `--sim`, `supply1` and `battery1` on the simulated Keithley
//! (in memory only: the user's file is never written for them).

use std::path::PathBuf;

use serde_json::{json, Value};

pub struct Nets {
    state_dir: PathBuf,
    /// The simulator's address under `--sim`.
    simulated: Option<String>,
}

impl Nets {
    pub fn new(state_dir: PathBuf, simulated: Option<String>) -> Nets {
        Nets {
            state_dir,
            simulated,
        }
    }

    /// Every net, read fresh; `[]` for a missing or unreadable file. Saved
    /// nets of the same name replace the simulated ones.
    pub fn list(&self) -> Vec<Value> {
        let saved: Vec<Value> = std::fs::read(self.state_dir.join("saved_nets.json"))
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Vec<Value>>(&bytes).ok())
            .unwrap_or_default();
        let Some(address) = &self.simulated else {
            return saved;
        };
        let taken: Vec<String> = saved
            .iter()
            .filter_map(|net| Some(net.get("name")?.as_str()?.to_string()))
            .collect();
        [("supply1", "power-supply"), ("battery1", "battery")]
            .into_iter()
            .filter(|(name, _)| !taken.iter().any(|t| t == name))
            .map(|(name, role)| {
                json!({"name": name, "role": role, "instrument": "Keithley_2281S", "address": address, "pin": 1})
            })
            .chain(saved)
            .collect()
    }
}
