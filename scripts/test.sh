#!/usr/bin/env bash
# Runs every test: formatting, the Rust unit and integration tests (real
# binaries on loopback), and the Python lager-cli 0.60 compatibility referee.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo build --workspace
cargo test --workspace
tests/referee/referee.sh
