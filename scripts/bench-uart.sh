#!/usr/bin/env bash
# Issue 15 benchmarks: serial consoles, in one run on this machine.
# Sequence-numbered lines through a pty into lagerd (8 readers, then 64)
# and, as the baseline, into ser2net (Debian's, one client), each line
# checked end to end: at the 921,600-baud byte rate and as fast as a pty
# carries; what a reader attaching late gets from each; keystroke to echo
# through `lager uart -i` next to the bare pty round trip; lagerd's CPU per
# MB and its RSS with 64 readers.
#
#   scripts/bench-uart.sh [--paced-secs N] [--flood-mb N] [--keys N]
#
# Installs ser2net with apt when missing, builds the static musl release
# binaries (as scripts/bench.sh does) and prints a table: target, measured
# value, PASS/FAIL. Exits 0 even when a target is missed; 3 if the
# benchmark could not run. Loopback and ptys only; about 1 minute.
set -euo pipefail
cd "$(dirname "$0")/.."
target=x86_64-unknown-linux-musl
rustup target list --installed 2>/dev/null | grep -qx "$target" || rustup target add "$target" >/dev/null
. scripts/musl-cc.sh && musl_cc_setup
if ! command -v ser2net >/dev/null; then
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "bench-uart: installing ser2net (apt), the baseline" >&2
  { $sudo apt-get install -y -qq ser2net >/dev/null 2>&1 \
    || { $sudo apt-get update -qq && $sudo apt-get install -y -qq ser2net >/dev/null 2>&1; }; } \
    || { echo "bench-uart: cannot install ser2net" >&2; exit 3; }
fi
cargo build --quiet --release --target "$target" -p lagerd -p lager -p lager-bench
bin="target/$target/release"
echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)  commit: $(git rev-parse --short HEAD)  load: $(cut -d' ' -f1-3 /proc/loadavg)  ser2net: $(ser2net -v 2>&1 | head -1)"
"$bin/uartbench" --lagerd "$bin/lagerd" --lager "$bin/lager" --ser2net "$(command -v ser2net)" "$@" || exit 3
