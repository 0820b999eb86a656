//! hello: the cold-start baseline for `lager --version` (issue 3, target 1).
//!
//! A static musl hello world built with the same release profile as
//! `lager` (opt-level s, LTO, strip, panic=abort): its start-up time is
//! what exec, the dynamic-free loader path and Rust's runtime set-up cost
//! on this machine, so `lager`'s cold start is judged against it in the
//! same run rather than against an absolute number alone.

fn main() {
    println!("hello");
}
