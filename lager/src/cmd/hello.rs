//! `lager hello [--box X]` (locking.md B.12): is the box online, and which
//! version does it run.

use std::process::ExitCode;
use std::time::Duration;

use common::version::usable;
use serde_json::Value;

use crate::boxsel::{passive_check, resolve};
use crate::config::Config;
use crate::error::CliError;
use crate::identity::Identity;
use crate::output::{self, Color};
use crate::skew;
use crate::transport::capped;

/// Spec B.12: `/status` and `/hello` get 10 s each.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

pub fn run(box_name: Option<&str>) -> Result<ExitCode, CliError> {
    let config = Config::load()?;
    let target = resolve(&config, box_name)?;
    let identity = Identity::current(config.default_str("user").as_deref());
    let client = target.lock_client();
    let display = target.display.clone();
    let unreachable = |error| CliError::Unreachable {
        display: display.clone(),
        error,
    };
    // A box that did not answer the passive check fails now rather than
    // costing a second timeout on /status.
    if let Some(error) = passive_check(&target, &client, &identity)? {
        return Err(unreachable(error));
    }
    let status = client.get("/status", capped(HELLO_TIMEOUT));
    skew::check_with(&client, &display, &status);
    let status = status.map_err(unreachable)?;
    let version = (status.status == 200)
        .then(|| status.json())
        .flatten()
        .and_then(|body| {
            let field = |key: &str| {
                body.get(key)
                    .and_then(Value::as_str)
                    .and_then(|v| usable(Some(v)))
                    .map(str::to_string)
            };
            field("version").or_else(|| field("box_version"))
        })
        .unwrap_or_else(|| "Unknown".to_string());
    let hello = client
        .get("/hello", capped(HELLO_TIMEOUT))
        .map_err(unreachable)?;
    println!();
    println!("Box: {display}");
    println!("IP: {}", target.address());
    println!("Version: {version}");
    println!();
    if hello.status == 200 {
        output::say(
            Color::Green,
            &format!("{display} is online and responding!"),
        );
        Ok(ExitCode::SUCCESS)
    } else {
        output::say(
            Color::Red,
            &format!("{display} responded with HTTP {}", hello.status),
        );
        Ok(ExitCode::from(1))
    }
}
