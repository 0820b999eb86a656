#!/usr/bin/env bash
# Runs every test: formatting, the Rust unit and integration tests (real
# binaries on loopback), and the Python lager-cli 0.60 compatibility referee.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
# fuzz/ is its own workspace (scripts/fuzz.sh builds and runs it).
(cd fuzz && cargo fmt -- --check)
cargo build --workspace
# The install/update tests need a real sshd; a fresh Debian machine gets
# it from apt, and a missing one fails them here instead of skipping.
if [ ! -x /usr/sbin/sshd ] || ! command -v ssh-keygen >/dev/null; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "test.sh: installing openssh-server for the install/update tests (apt)" >&2
  { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq \
      --no-install-recommends openssh-server openssh-client >/dev/null; } ||
    echo "test.sh: could not install openssh-server; the install/update tests will fail" >&2
fi
LAGER_REQUIRE_SSHD=1 cargo test --workspace
tests/referee/referee.sh
