//! Wheel file names (PEP 427), which `lager install-wheel` checks before
//! uploading and lagerd checks again before handing a file to pip: the
//! package's name and version come from the name, never from the upload.

/// The distribution name and version of a wheel file name, or why it is
/// not one. The name comes back normalized (PEP 503: lower case, each run
/// of `-`, `_`, `.` as one `-`), the form `lager install-wheel` reports.
pub fn parse(file_name: &str) -> Result<(String, String), String> {
    let stem = file_name
        .strip_suffix(".whl")
        .ok_or_else(|| format!("{file_name} is not a wheel: its name does not end in .whl"))?;
    let not_wheel = || {
        format!(
            "{file_name} is not a wheel name (PEP 427: NAME-VERSION[-BUILD]-PYTHON-ABI-PLATFORM.whl)"
        )
    };
    if file_name.contains(['/', '\\', '\0']) || file_name.starts_with('.') {
        return Err(not_wheel());
    }
    let fields: Vec<&str> = stem.split('-').collect();
    if !(5..=6).contains(&fields.len()) || fields.iter().any(|f| f.is_empty()) {
        return Err(not_wheel());
    }
    let (name, version) = (fields[0], fields[1]);
    let name_ok = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.'));
    let version_ok = version
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '+' | '!'));
    if !name_ok || !version_ok {
        return Err(not_wheel());
    }
    Ok((normalize(name), version.to_string()))
}

/// PEP 503 normalization: `My_Package.x` → `my-package-x`.
pub fn normalize(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut in_run = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            if !in_run {
                out.push('-');
            }
            in_run = true;
        } else {
            out.push(c.to_ascii_lowercase());
            in_run = false;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_versions_come_from_the_file_name() {
        assert_eq!(
            parse("my_pkg-1.2.0-py3-none-any.whl"),
            Ok(("my-pkg".into(), "1.2.0".into()))
        );
        assert_eq!(
            parse("Foo.Bar-2.0rc1-1-cp311-cp311-manylinux_2_17_aarch64.whl"),
            Ok(("foo-bar".into(), "2.0rc1".into()))
        );
        for bad in [
            "my_pkg-1.2.0.tar.gz",
            "my_pkg-1.2.0-py3-none.whl",
            "my_pkg-1.2.0-1-2-py3-none-any.whl",
            "../x-1-py3-none-any.whl",
            "a/b-1-py3-none-any.whl",
            "-1-py3-none-any.whl",
            "x y-1-py3-none-any.whl",
            ".whl",
        ] {
            assert!(parse(bad).is_err(), "{bad} accepted");
        }
        assert_eq!(normalize("A__b--C.d"), "a-b-c-d");
    }
}
