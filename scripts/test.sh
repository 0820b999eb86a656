#!/usr/bin/env bash
# Runs every test: formatting, the on-box Python package's unit tests, the
# Rust unit and integration tests (real binaries on loopback), and the
# Python lager-cli 0.60 compatibility referee.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
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
# install-wheel and module requirements run the box's `python3 -m pip`.
if ! python3 -m pip --version >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "test.sh: installing python3-pip for the install-wheel tests (apt)" >&2
  { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq \
      --no-install-recommends python3-pip >/dev/null; } ||
    echo "test.sh: could not install python3-pip; the install-wheel tests will fail" >&2
fi
# The on-box lager package's own tests (stdlib unittest), also under the
# oldest Python it supports when that one is here.
for py in python3 python3.8 "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.8*/bin/python3; do
  if [ "$py" = python3 ] || "$py" -c pass >/dev/null 2>&1; then
    (cd lagerd/python && "$py" -m unittest discover -s tests -t . -q)
  fi
done
LAGER_REQUIRE_SSHD=1 cargo test --workspace
tests/referee/referee.sh
