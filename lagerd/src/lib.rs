//! The box daemon as a library: `main.rs` parses flags and calls
//! `daemon::run`; the fuzz targets (`fuzz/`) and benches reach the parsers
//! and the router through here, against the same code the binary runs.

#![deny(clippy::undocumented_unsafe_blocks)]

pub mod clock;
pub mod config;
pub mod console;
pub mod daemon;
pub mod devlock;
pub mod diagnose;
pub mod fsutil;
pub mod health;
pub mod http;
pub mod instruments;
pub mod lockbox;
pub mod metrics;
pub mod multipart;
pub mod nets;
pub mod page;
pub mod procscan;
pub mod runner;
pub mod scriptenv;
pub mod server;
pub mod signals;
pub mod sim;
pub mod sysfs;
