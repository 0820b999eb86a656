//! What counts as "true" where the older Python system decided it, so that
//! lagerd and lager read the same values the same way: Python's truthiness
//! of a JSON value (the lock file's `locked`, the diagnose bodies' flags),
//! and the runner's truthy form fields (runner.md §1).

use serde_json::Value;

/// Python's `bool(value)` of a decoded JSON value: `null`, `false`, `0`,
/// `""`, `[]` and `{}` are false, everything else true.
pub fn json(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// [`json`] of `body[key]`; a missing key is `null`, as with `dict.get`.
pub fn field(body: &Value, key: &str) -> bool {
    body.get(key).is_some_and(json)
}

/// A truthy form field (runner.md §1): `true`, `1`, `yes` or `on` in any
/// case, surrounding white space ignored (the CLI sends `True`/`False`).
pub fn form(data: &[u8]) -> bool {
    let text = String::from_utf8_lossy(data).trim().to_ascii_lowercase();
    matches!(text.as_str(), "true" | "1" | "yes" | "on")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_values_are_true_as_in_python() {
        for yes in [
            json!(true),
            json!(1),
            json!(-0.5),
            json!("x"),
            json!([0]),
            json!({"a": 0}),
        ] {
            assert!(json(&yes), "{yes}");
        }
        for no in [
            json!(null),
            json!(false),
            json!(0),
            json!(0.0),
            json!(""),
            json!([]),
            json!({}),
        ] {
            assert!(!json(&no), "{no}");
        }
        let body = json!({"on": "yes", "off": ""});
        assert!(field(&body, "on"));
        assert!(!field(&body, "off"));
        assert!(!field(&body, "missing"));
        assert!(!field(&json!([1]), "on"), "not an object");
    }

    #[test]
    fn form_fields_are_true_per_runner_md() {
        for yes in [&b"true"[..], b"True", b"1", b"YES", b"on", b" on\r\n"] {
            assert!(form(yes), "{yes:?}");
        }
        for no in [&b"false"[..], b"False", b"0", b"", b"maybe", b"\xff"] {
            assert!(!form(no), "{no:?}");
        }
    }
}
