//! What `lagerd` and `lager` must agree on: wire types, holder identities,
//! version comparison. This crate does no IO and starts no threads, so both
//! binaries (and their tests) can use it anywhere.

pub mod actions;
pub mod addr;
pub mod bounded;
pub mod console;
pub mod diagnose;
pub mod errclass;
pub mod holder;
pub mod runid;
pub mod truthy;
pub mod version;
pub mod wheel;
pub mod wire;

/// The build version shared by `lager --version` and `lagerd`'s `/status`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
