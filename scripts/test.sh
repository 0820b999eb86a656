#!/usr/bin/env bash
# Runs every test: formatting, the on-box Python package's unit tests, the
# Rust unit and integration tests (real binaries on loopback), and the
# Python lager-cli 0.60 compatibility referee.
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
# Issue 16: /metrics is checked by the Prometheus project's own parsers
# (promtool from Debian's prometheus package, prometheus_client from PyPI
# in a venv) and the status page in Debian's headless chromium. Installed
# here when missing; the tests then fail instead of skipping.
missing=()
command -v promtool >/dev/null || missing+=(prometheus)
command -v chromium >/dev/null || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "test.sh: installing ${missing[*]} for the /metrics and status page tests (apt)" >&2
  { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq \
      --no-install-recommends "${missing[@]}" >/dev/null; } ||
    echo "test.sh: could not install ${missing[*]}; the /metrics or page tests will fail" >&2
  # Only promtool is wanted: a Prometheus server the package may start stays off.
  if command -v systemctl >/dev/null && systemctl is-active -q prometheus 2>/dev/null; then
    $sudo systemctl disable --now prometheus >/dev/null 2>&1 || true
  fi
fi
VENV=target/fleet-venv
if ! "$VENV/bin/python" -c 'import prometheus_client' 2>/dev/null; then
  echo "test.sh: making $VENV with prometheus_client (PyPI) for the /metrics test" >&2
  python3 -m venv "$VENV" && "$VENV/bin/pip" install -q prometheus_client ||
    echo "test.sh: could not make $VENV; the /metrics test will fail" >&2
fi
export LAGER_REQUIRE_PROMETHEUS=1 LAGER_REQUIRE_BROWSER=1 LAGER_PROM_PYTHON="$PWD/$VENV/bin/python"
LAGER_REQUIRE_SSHD=1 cargo test --workspace
tests/referee/referee.sh
