#!/usr/bin/env bash
# Runs every test: formatting, the Rust unit and integration tests (real
# binaries on loopback), and the Python lager-cli 0.60 compatibility referee.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo build --workspace
# The install/update tests need a real sshd (Debian: openssh-server); a
# missing one fails them here instead of skipping.
LAGER_REQUIRE_SSHD=1 cargo test --workspace
tests/referee/referee.sh
