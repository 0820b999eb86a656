//! The `lager` CLI as a library: `main.rs` only parses arguments and maps
//! [`run`]'s result to an exit code. Being a library also lets the
//! integration tests drive [`autolock`] against a real `lagerd` before any
//! command uses it.

#![deny(clippy::undocumented_unsafe_blocks)]

pub mod args;
pub mod autolock;
pub mod boxsel;
pub mod client;
pub mod cmd;
pub mod config;
pub mod errmap;
pub mod error;
pub mod identity;
pub mod output;
pub mod pick;
pub mod readcap;
pub mod signals;
pub mod skew;

use std::process::ExitCode;

use args::Command;
pub use error::CliError;

/// Runs one parsed command.
pub fn run(command: Command) -> Result<ExitCode, CliError> {
    match command {
        Command::Version => {
            println!("lager {}", common::VERSION);
            Ok(ExitCode::SUCCESS)
        }
        Command::BoxesList { json } => cmd::boxes::list(json),
        Command::BoxesAdd {
            name,
            ip,
            user,
            port,
            version,
            yes,
        } => cmd::boxes::add(cmd::boxes::AddBox {
            name: &name,
            ip: &ip,
            user: &user,
            port,
            version: version.as_deref(),
            yes,
        }),
        Command::BoxesDelete { name, yes } => cmd::boxes::delete(&name, yes),
        Command::BoxesLock {
            box_name,
            user,
            json,
        } => cmd::boxes::lock(&box_name, user.as_deref(), json),
        Command::BoxesLockAny {
            pool,
            nets,
            wait_secs,
            user,
            json,
        } => cmd::boxes::lock_any(
            pick::Want { pool, nets },
            std::time::Duration::from_secs(wait_secs),
            user.as_deref(),
            json,
        ),
        Command::BoxesUnlock {
            box_name,
            force,
            json,
        } => cmd::boxes::unlock(&box_name, force, json),
        Command::Hello { box_name } => cmd::hello::run(box_name.as_deref()),
        Command::DefaultsList { json } => cmd::defaults::list(json),
        Command::DefaultsAdd { settings } => cmd::defaults::add(&settings),
        Command::DefaultsDelete { key, yes } => cmd::defaults::delete(&key, yes),
        Command::DefaultsDeleteAll { yes } => cmd::defaults::delete_all(yes),
        Command::Python(opts) => cmd::python::run(opts),
        Command::Diagnose(opts) => cmd::diagnose::run(&opts),
        Command::Instrument(opts) => cmd::instrument::run(&opts),
        Command::Watch(opts) => cmd::watch::run(&opts),
        Command::Deploy(opts) => cmd::deploy::run(&opts),
        Command::Uart(opts) => cmd::uart::run(&opts),
        Command::InstallWheel(opts) => cmd::wheel::run(&opts),
        Command::NetsList {
            box_name,
            json,
            role,
        } => cmd::nets::list(box_name.as_deref(), json, role),
        Command::NetsAdd(net) => cmd::nets::add(&net),
        Command::NetsDelete {
            box_name,
            json,
            name,
        } => cmd::nets::delete(box_name.as_deref(), json, &name),
    }
}
