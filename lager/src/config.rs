//! The `.lager` inventory (boxes.md §1–2): the global file, which the CLI
//! reads and writes, merged with read-only project `.lager` files found
//! walking up from the current directory.
//!
//! The global file is kept as a JSON object so that keys this CLI does not
//! know (`NETS`, `DEVENV`, ...) survive a write unchanged. A file that is not
//! a JSON object is an error and is never overwritten.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::CliError;

/// File name of project files and the default global name.
pub const FILE_NAME: &str = ".lager";

/// Where the global file lives: `$LAGER_CONFIG_FILE_DIR/<name>`, else
/// `~/<name>`, with `<name>` = `LAGER_CONFIG_FILE_NAME` or `.lager`.
pub fn global_path() -> Result<PathBuf, CliError> {
    let name = std::env::var("LAGER_CONFIG_FILE_NAME")
        .ok()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| FILE_NAME.to_string());
    let dir = match std::env::var_os("LAGER_CONFIG_FILE_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
            Some(home) => PathBuf::from(home),
            None => return Err(CliError::NoHome),
        },
    };
    Ok(dir.join(name))
}

/// One saved box as read from a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoxEntry {
    /// `ip` of the entry; may be empty (an error when used).
    pub ip: String,
    /// Stored SSH user, display only.
    pub ssh_user: Option<String>,
    /// Entry `port`, when a valid 1–65535 integer.
    pub port: Option<u16>,
    /// An entry `port` that is not 1–65535, as written.
    pub bad_port: Option<String>,
    pub token: Option<String>,
    /// The project file that defined it; `None` for the global file.
    pub source: Option<PathBuf>,
}

impl BoxEntry {
    /// An entry of the global file as stored.
    pub fn from_stored(value: &Value) -> BoxEntry {
        BoxEntry::from_value(value, None)
    }

    fn from_value(value: &Value, source: Option<PathBuf>) -> BoxEntry {
        let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
        let mut entry = BoxEntry {
            ip: String::new(),
            ssh_user: None,
            port: None,
            bad_port: None,
            token: None,
            source,
        };
        match value {
            Value::String(ip) => entry.ip = ip.trim().to_string(),
            Value::Object(fields) => {
                entry.ip = text(fields.get("ip"))
                    .unwrap_or_default()
                    .trim()
                    .to_string();
                entry.ssh_user = text(fields.get("user")).filter(|u| !u.is_empty());
                entry.token = text(fields.get("token")).filter(|t| !t.is_empty());
                match fields.get("port") {
                    None | Some(Value::Null) => {}
                    Some(port) => match port.as_u64().and_then(|p| u16::try_from(p).ok()) {
                        Some(p) if p > 0 => entry.port = Some(p),
                        _ => entry.bad_port = Some(port.to_string()),
                    },
                }
            }
            // Anything else is an entry without an address.
            _ => {}
        }
        entry
    }
}

/// The effective configuration: the global file plus merged project boxes.
#[derive(Debug)]
pub struct Config {
    pub global_path: PathBuf,
    /// The global file's object as read (empty when the file is missing).
    global: Map<String, Value>,
    /// Effective boxes by name (global, then project files farthest first).
    pub boxes: BTreeMap<String, BoxEntry>,
}

/// Largest config file read: thousands of boxes fit in far less.
const CONFIG_MAX: usize = 4 << 20;

/// Reads one config file: missing ⇒ `None`; not a JSON object ⇒ error.
fn read_object(path: &Path) -> Result<Option<Map<String, Value>>, CliError> {
    let text = match crate::readcap::read_file(path, CONFIG_MAX).map(String::from_utf8) {
        Ok(Ok(text)) => text,
        Ok(Err(_)) => {
            return Err(CliError::ConfigInvalid {
                path: path.to_path_buf(),
                reason: "it is not UTF-8 text".to_string(),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(CliError::ConfigRead {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })
        }
    };
    // An empty file is what a fresh `touch ~/.lager` leaves; treat it as {}.
    if text.trim().is_empty() {
        return Ok(Some(Map::new()));
    }
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(map)) => Ok(Some(map)),
        Ok(_) => Err(CliError::ConfigInvalid {
            path: path.to_path_buf(),
            reason: "the top level must be a JSON object".to_string(),
        }),
        Err(e) => Err(CliError::ConfigInvalid {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }),
    }
}

/// `BOXES`, else the legacy `DUTS`, else `duts`.
fn boxes_of(map: &Map<String, Value>) -> Option<&Map<String, Value>> {
    ["BOXES", "DUTS", "duts"]
        .iter()
        .find_map(|key| map.get(*key))
        .and_then(Value::as_object)
}

/// `DEFAULTS`, else the legacy `LAGER`.
fn defaults_of(map: &Map<String, Value>) -> Option<&Map<String, Value>> {
    ["DEFAULTS", "LAGER"]
        .iter()
        .find_map(|key| map.get(*key))
        .and_then(Value::as_object)
}

/// Project files from `/` down to `start`, excluding `global`.
fn project_files(start: &Path, global: &Path) -> Vec<PathBuf> {
    let global = std::fs::canonicalize(global).unwrap_or_else(|_| global.to_path_buf());
    let mut found: Vec<PathBuf> = start
        .ancestors()
        .map(|dir| dir.join(FILE_NAME))
        .filter(|path| path.is_file())
        .filter(|path| std::fs::canonicalize(path).map_or(true, |p| p != global))
        .collect();
    found.reverse();
    found
}

impl Config {
    /// Loads the global file and merges project files above the current directory.
    pub fn load() -> Result<Config, CliError> {
        let global_path = global_path()?;
        let cwd = std::env::current_dir().ok();
        Config::load_from(global_path, cwd.as_deref())
    }

    pub fn load_from(global_path: PathBuf, cwd: Option<&Path>) -> Result<Config, CliError> {
        let global = read_object(&global_path)?.unwrap_or_default();
        let mut boxes = BTreeMap::new();
        if let Some(map) = boxes_of(&global) {
            for (name, value) in map {
                boxes.insert(name.clone(), BoxEntry::from_value(value, None));
            }
        }
        for path in cwd
            .map(|c| project_files(c, &global_path))
            .unwrap_or_default()
        {
            let Some(project) = read_object(&path)? else {
                continue;
            };
            if let Some(map) = boxes_of(&project) {
                for (name, value) in map {
                    boxes.insert(
                        name.clone(),
                        BoxEntry::from_value(value, Some(path.clone())),
                    );
                }
            }
        }
        Ok(Config {
            global_path,
            global,
            boxes,
        })
    }

    /// The global `DEFAULTS` object (project files never contribute).
    pub fn defaults(&self) -> Map<String, Value> {
        defaults_of(&self.global).cloned().unwrap_or_default()
    }

    /// A string default such as `user` or `gateway_id`, when non-empty.
    pub fn default_str(&self, key: &str) -> Option<String> {
        defaults_of(&self.global)
            .and_then(|d| d.get(key))
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    }

    /// The global file's own boxes, as stored.
    pub fn global_boxes(&self) -> Map<String, Value> {
        boxes_of(&self.global).cloned().unwrap_or_default()
    }

    /// Writes the global file with `boxes` and `defaults` replaced,
    /// migrating legacy keys (boxes.md §1).
    pub fn save(
        &mut self,
        boxes: Map<String, Value>,
        defaults: Map<String, Value>,
    ) -> Result<(), CliError> {
        let mut out = self.global.clone();
        for legacy in ["DUTS", "duts", "LAGER"] {
            out.remove(legacy);
        }
        for (legacy, key) in [("nets", "NETS"), ("devenv", "DEVENV")] {
            if let Some(value) = out.remove(legacy) {
                out.entry(key.to_string()).or_insert(value);
            }
        }
        out.insert("BOXES".to_string(), Value::Object(boxes));
        out.insert("DEFAULTS".to_string(), Value::Object(defaults));
        write_atomic(&self.global_path, &Value::Object(out.clone()))?;
        self.global = out;
        Ok(())
    }
}

/// Temp file in the same directory, fsync, rename; 0600 on first creation
/// (the file may hold tokens), the existing mode otherwise.
fn write_atomic(path: &Path, value: &Value) -> Result<(), CliError> {
    let fail = |e: std::io::Error| CliError::ConfigWrite {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(fail)?;
    let mode = std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(0o600);
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
    let mut text =
        serde_json::to_string_pretty(value).map_err(|e| fail(std::io::Error::other(e)))?;
    text.push('\n');
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(fail)
}

/// Natural order of box names: digit runs compare as numbers
/// (`bench-2` before `bench-10`), text case-insensitively.
pub fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    fn chunks(s: &str) -> Vec<(bool, String)> {
        let mut out: Vec<(bool, String)> = Vec::new();
        for c in s.chars() {
            let digit = c.is_ascii_digit();
            match out.last_mut() {
                Some((d, text)) if *d == digit => text.push(c),
                _ => out.push((digit, c.to_string())),
            }
        }
        out
    }
    let key = |s: &str| -> Vec<(u8, String)> {
        chunks(s)
            .into_iter()
            .map(|(digit, text)| {
                if digit {
                    // Left-padding makes text order numeric order.
                    (0, format!("{:0>40}", text.trim_start_matches('0')))
                } else {
                    (1, text.to_lowercase())
                }
            })
            .collect()
    };
    key(a).cmp(&key(b)).then_with(|| a.cmp(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dir(PathBuf);
    impl Dir {
        fn new(tag: &str) -> Dir {
            let path =
                std::env::temp_dir().join(format!("lager-config-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).expect("mkdir");
            Dir(path)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn missing_file_is_empty_and_invalid_is_an_error() {
        let dir = Dir::new("invalid");
        let path = dir.0.join(".lager");
        let config = Config::load_from(path.clone(), None).expect("missing is fine");
        assert!(config.boxes.is_empty());
        std::fs::write(&path, "{not json").expect("write");
        let err = Config::load_from(path.clone(), None).unwrap_err();
        assert!(
            err.to_string().starts_with(&format!(
                "Error: Config file {} is not valid JSON: ",
                path.display()
            )),
            "{err}"
        );
        std::fs::write(&path, "[1]").expect("write");
        assert!(matches!(
            Config::load_from(path, None),
            Err(CliError::ConfigInvalid { .. })
        ));
    }

    #[test]
    fn entries_and_legacy_keys() {
        let dir = Dir::new("legacy");
        let path = dir.0.join(".lager");
        std::fs::write(
            &path,
            r#"{"DUTS": {"a": "10.0.0.1", "b": {"ip": "h.local", "port": 9100, "token": "t", "user": "pi"},
                "c": {"ip": "10.0.0.3", "port": 70000}, "d": {"user": "x"}},
                "LAGER": {"gateway_id": "a", "user": ""}, "nets": {"n": 1}, "KEEP": [1]}"#,
        )
        .expect("write");
        let mut config = Config::load_from(path.clone(), None).expect("load");
        assert_eq!(config.boxes["a"].ip, "10.0.0.1");
        assert_eq!(config.boxes["b"].port, Some(9100));
        assert_eq!(config.boxes["b"].token.as_deref(), Some("t"));
        assert_eq!(config.boxes["b"].ssh_user.as_deref(), Some("pi"));
        assert_eq!(config.boxes["c"].bad_port.as_deref(), Some("70000"));
        assert_eq!(config.boxes["d"].ip, "");
        assert_eq!(config.default_str("gateway_id").as_deref(), Some("a"));
        assert_eq!(config.default_str("user"), None);

        let boxes = config.global_boxes();
        let defaults = config.defaults();
        config.save(boxes, defaults).expect("save");
        let written: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
        assert!(
            written.get("DUTS").is_none()
                && written.get("LAGER").is_none()
                && written.get("nets").is_none()
        );
        assert_eq!(written["BOXES"]["a"], "10.0.0.1");
        assert_eq!(written["DEFAULTS"]["gateway_id"], "a");
        assert_eq!(written["NETS"]["n"], 1);
        assert_eq!(written["KEEP"][0], 1);
    }

    #[test]
    fn first_write_is_private_and_existing_mode_is_kept() {
        let dir = Dir::new("mode");
        let path = dir.0.join("sub").join(".lager");
        let mut config = Config::load_from(path.clone(), None).expect("load");
        config.save(Map::new(), Map::new()).expect("save");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        config.save(Map::new(), Map::new()).expect("save");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
    }

    #[test]
    fn project_files_merge_closest_wins_and_global_is_excluded() {
        let dir = Dir::new("project");
        let root = dir.0.clone();
        let deep = root.join("a").join("b");
        std::fs::create_dir_all(&deep).expect("mkdir");
        let global = root.join("a").join(".lager");
        std::fs::write(&global, r#"{"BOXES": {"g": "10.0.0.9", "x": "10.0.0.1"}}"#).expect("write");
        std::fs::write(
            root.join(".lager"),
            r#"{"BOXES": {"x": "10.0.0.2", "far": "10.0.0.3"}}"#,
        )
        .expect("write");
        std::fs::write(deep.join(".lager"), r#"{"BOXES": {"far": "10.0.0.4"}}"#).expect("write");
        let config = Config::load_from(global, Some(&deep)).expect("load");
        assert_eq!(config.boxes["g"].ip, "10.0.0.9");
        assert_eq!(config.boxes["g"].source, None);
        assert_eq!(config.boxes["x"].ip, "10.0.0.2");
        assert_eq!(config.boxes["far"].ip, "10.0.0.4");
        assert_eq!(
            config.boxes["far"].source.as_deref(),
            Some(deep.join(".lager").as_path())
        );
    }

    #[test]
    fn natural_sort() {
        let mut names = vec!["bench-10", "bench-2", "Bench-3", "alpha", "bench-02x"];
        names.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            names,
            vec!["alpha", "bench-2", "bench-02x", "Bench-3", "bench-10"]
        );
    }
}
