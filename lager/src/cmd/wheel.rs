//! `lager install-wheel` (scripts.md §3): push locally built wheels into the
//! box's script environment without an index. Every file is checked here
//! first (a readable `.whl` zip with a `.dist-info`, within the box's upload
//! limit); then one multipart `POST /wheels` under the admin lock, and the
//! box installs them all or none. `--list` and `--uninstall NAME` too.

use std::process::ExitCode;
use std::time::Duration;

use serde_json::{json, Value};

use crate::args::{WheelAction, WheelOpts};
use crate::boxsel::{self, Target};
use crate::client::{capped, Reply};
use crate::cmd::instrument::HOLDER_HEADER;
use crate::cmd::print_body;
use crate::cmd::python::multipart::Multipart;
use crate::config::Config;
use crate::error::CliError;
use crate::identity::Identity;

/// The box's largest upload (runner.md §1), less room for the form.
const UPLOAD_LIMIT: u64 = 64 * 1024 * 1024 - 64 * 1024;
/// The box gives pip two minutes a wheel; the answer waits for all.
const PER_WHEEL: Duration = Duration::from_secs(120);

pub fn run(opts: &WheelOpts) -> Result<ExitCode, CliError> {
    // Nothing reaches the box before every file passed.
    let wheels = match &opts.action {
        WheelAction::Install(paths) => read_wheels(paths)?,
        _ => Vec::new(),
    };
    let config = Config::load()?;
    let target = boxsel::resolve(&config, opts.box_name.as_deref())?;
    let client = target.lock_client();
    let identity = Identity::current(config.default_str("user").as_deref());
    if opts.action == WheelAction::List {
        let reply = client
            .get("/wheels", capped(Duration::from_secs(10)))
            .map_err(|error| unreachable(&target, error))?;
        let body = answer(&target, &reply)?;
        if opts.json {
            print_body(&reply.body);
        } else {
            print_list(&body);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let reserved = crate::cmd::deploy::reserve(&target, &client, &identity, false, opts.force)?;
    log::info!("lock on {}: {reserved}", target.display);
    let headers = [(HOLDER_HEADER, identity.holder.as_str())];
    let reply = match &opts.action {
        WheelAction::Uninstall(name) => client.post_json_with(
            "/wheels/uninstall",
            &json!({"name": name}),
            &headers,
            capped(Duration::from_secs(60)),
        ),
        _ => {
            let mut form = Multipart::new(
                common::runid::uuid4(crate::cmd::python::random_bytes()?).replace('-', ""),
            );
            for (file, bytes) in &wheels {
                form.file("wheel", file, bytes);
            }
            let content_type = form.content_type();
            let timeout = Duration::from_secs(30) + PER_WHEEL * wheels.len() as u32;
            client.post_bytes(
                "/wheels",
                &content_type,
                &form.finish(),
                &headers,
                capped(timeout),
            )
        }
    }
    .map_err(|error| unreachable(&target, error))?;
    let body = answer(&target, &reply)?;
    if opts.json {
        print_body(&reply.body);
        return Ok(ExitCode::SUCCESS);
    }
    match &opts.action {
        WheelAction::Uninstall(_) => println!(
            "Uninstalled {} {}",
            body["name"].as_str().unwrap_or("?"),
            body["version"].as_str().unwrap_or("")
        ),
        _ => {
            for installed in body["installed"].as_array().into_iter().flatten() {
                let name = installed["name"].as_str().unwrap_or("?");
                if installed["replaced"] == true {
                    println!("Uninstalled previous version of {name}");
                }
                println!(
                    "Successfully installed {name} {}",
                    installed["version"].as_str().unwrap_or("")
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Each wheel's file name and bytes, after the local checks.
fn read_wheels(paths: &[std::path::PathBuf]) -> Result<Vec<(String, Vec<u8>)>, CliError> {
    let mut wheels = Vec::new();
    let mut total = 0u64;
    for path in paths {
        let refuse = |reason: String| CliError::Wheel {
            path: path.clone(),
            reason,
        };
        let file = path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .ok_or_else(|| refuse("not a file name".into()))?;
        common::wheel::parse(&file).map_err(refuse)?;
        let bytes = std::fs::read(path).map_err(|e| {
            refuse(if e.kind() == std::io::ErrorKind::NotFound {
                "no such file".into()
            } else {
                format!("cannot read it ({e})")
            })
        })?;
        total += bytes.len() as u64;
        if total > UPLOAD_LIMIT {
            return Err(refuse(format!(
                "the wheels come to {total} bytes, over the box's upload limit of {UPLOAD_LIMIT}; install them in several commands"
            )));
        }
        check_zip(&bytes).map_err(refuse)?;
        wheels.push((file, bytes));
    }
    Ok(wheels)
}

/// A wheel is a zip with a `<name>-<version>.dist-info/` directory.
fn check_zip(bytes: &[u8]) -> Result<(), String> {
    let names = match zip_names(bytes) {
        Zip::Names(names) => names,
        // Too big for this check to read; the box's pip judges it.
        Zip::Zip64 => return Ok(()),
        Zip::Not => return Err("not a valid wheel: it is not a zip file".into()),
    };
    let has_metadata = names.iter().any(|name| {
        name.split('/')
            .next()
            .is_some_and(|top| top.ends_with(".dist-info"))
    });
    if !has_metadata {
        return Err("not a valid wheel: it has no .dist-info directory".into());
    }
    Ok(())
}

enum Zip {
    Names(Vec<String>),
    /// A ZIP64 directory (over 65,535 entries or 4 GiB).
    Zip64,
    Not,
}

/// The entry names of a zip's central directory: just the part of the
/// format this check needs. The zip crate's reader would do it too, but it
/// costs `lager` ~50 KB (of a 1.5 MiB budget) for this one check; every
/// read is bounds-checked, so no input can make it panic.
fn zip_names(bytes: &[u8]) -> Zip {
    let u16_at = |at: usize| {
        bytes
            .get(at..at.checked_add(2)?)
            .map(|b| usize::from(u16::from_le_bytes([b[0], b[1]])))
    };
    let u32_at = |at: usize| {
        bytes
            .get(at..at.checked_add(4)?)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    // The end record (22 bytes) is last, before a comment of up to 64 KiB.
    let Some(last) = bytes.len().checked_sub(22) else {
        return Zip::Not;
    };
    let Some(end) = (last.saturating_sub(65_535)..=last)
        .rev()
        .find(|&at| bytes[at..at + 4] == [0x50, 0x4b, 0x05, 0x06])
    else {
        return Zip::Not;
    };
    let (Some(count), Some(mut at)) = (u16_at(end + 10), u32_at(end + 16)) else {
        return Zip::Not;
    };
    if count == 0xffff || at == 0xffff_ffff {
        return Zip::Zip64;
    }
    let mut names = Vec::with_capacity(count);
    for _ in 0..count {
        let entry = (|| {
            if u32_at(at)? != 0x0201_4b50 {
                return None;
            }
            let name_len = u16_at(at + 28)?;
            let skip = name_len + u16_at(at + 30)? + u16_at(at + 32)?;
            let name = bytes.get(at + 46..at + 46 + name_len)?;
            Some((String::from_utf8_lossy(name).into_owned(), at + 46 + skip))
        })();
        let Some((name, next)) = entry else {
            return Zip::Not;
        };
        names.push(name);
        at = next;
    }
    Zip::Names(names)
}

/// The JSON of a successful answer, else the error to print.
fn answer(target: &Target, reply: &Reply) -> Result<Value, CliError> {
    let body = reply.json().ok_or(CliError::NonJsonReply {
        status: reply.status,
    })?;
    let error = body["error"].as_str().map(str::to_string);
    match reply.status {
        200 => Ok(body),
        401 => Err(CliError::TokenRequired {
            display: target.display.clone(),
        }),
        423 => Err(CliError::Locked {
            display: target.display.clone(),
            user: common::holder::format_lock_user(body["lock"]["user"].as_str().unwrap_or("")),
            waited_secs: None,
        }),
        404 if body.get("success").is_none() => Err(CliError::BoxRefused(format!(
            "the box at {} does not install wheels; update it (lager update --box {})",
            target.address(),
            target.display
        ))),
        status => {
            Err(CliError::BoxRefused(error.unwrap_or_else(|| {
                format!("install-wheel failed (HTTP {status})")
            })))
        }
    }
}

fn print_list(body: &Value) {
    let wheels = body["wheels"].as_array().cloned().unwrap_or_default();
    if wheels.is_empty() {
        println!("No wheels installed. Install some with: lager install-wheel WHEEL...");
        return;
    }
    for wheel in wheels {
        println!(
            "{} {}",
            wheel["name"].as_str().unwrap_or("?"),
            wheel["version"].as_str().unwrap_or("")
        );
    }
}

fn unreachable(target: &Target, error: crate::client::TransportError) -> CliError {
    CliError::Unreachable {
        display: target.display.clone(),
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn zip_with(names: &[&str]) -> Vec<u8> {
        let mut out = std::io::Cursor::new(Vec::new());
        let mut zip = zip::ZipWriter::new(&mut out);
        for name in names {
            zip.start_file(*name, zip::write::SimpleFileOptions::default())
                .unwrap();
            zip.write_all(b"x").unwrap();
        }
        zip.finish().unwrap();
        out.into_inner()
    }

    #[test]
    fn zip_names_come_from_the_central_directory_and_never_panic() {
        let zip = zip_with(&["a.py", "pkg-1.0.dist-info/METADATA"]);
        let Zip::Names(names) = zip_names(&zip) else {
            panic!("not read as a zip");
        };
        assert_eq!(names, ["a.py", "pkg-1.0.dist-info/METADATA"]);
        // Every truncation and every single-byte change is an answer, not
        // a panic.
        for cut in 0..zip.len() {
            let _ = zip_names(&zip[..cut]);
            let mut changed = zip.clone();
            changed[cut] ^= 0xff;
            let _ = zip_names(&changed);
        }
        assert!(matches!(zip_names(&zip[..zip.len() - 1]), Zip::Not));
        assert!(matches!(zip_names(b""), Zip::Not));
    }

    #[test]
    fn wheels_are_zips_with_metadata() {
        assert_eq!(
            check_zip(&zip_with(&[
                "pkg/__init__.py",
                "pkg-1.0.dist-info/METADATA"
            ])),
            Ok(())
        );
        assert_eq!(
            check_zip(&zip_with(&["pkg/__init__.py"])),
            Err("not a valid wheel: it has no .dist-info directory".into())
        );
        assert!(check_zip(b"not a zip")
            .unwrap_err()
            .contains("not a zip file"));
    }

    #[test]
    fn files_are_checked_before_anything_is_sent() {
        let dir = std::env::temp_dir().join(format!("wheel-check-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("pkg-1.0-py3-none-any.whl");
        std::fs::write(&good, zip_with(&["pkg-1.0.dist-info/RECORD"])).unwrap();
        let tarball = dir.join("pkg-1.0.tar.gz");
        std::fs::write(&tarball, b"x").unwrap();
        let broken = dir.join("broken-1.0-py3-none-any.whl");
        std::fs::write(&broken, b"PK but not really").unwrap();
        assert_eq!(
            read_wheels(std::slice::from_ref(&good)).unwrap()[0].0,
            "pkg-1.0-py3-none-any.whl"
        );
        for (path, reason) in [
            (&tarball, "is not a wheel: its name does not end in .whl"),
            (&broken, "not a valid wheel: it is not a zip file"),
            (&dir.join("gone-1.0-py3-none-any.whl"), "no such file"),
        ] {
            let error = read_wheels(&[good.clone(), path.clone()])
                .unwrap_err()
                .to_string();
            assert!(error.contains(reason), "{error}");
            assert!(
                error.starts_with(&format!("Error: {}", path.display())),
                "{error}"
            );
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}
