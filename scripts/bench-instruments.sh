#!/usr/bin/env bash
# Issue 6 benchmarks (group 8, "instruments"): against lagerd --sim's
# simulated Keithley 2281S on loopback, in one run, the raw SCPI round trip
# next to the same read through lagerd (target: overhead <= 300 µs at p50),
# `lager supply supply1 voltage` start to exit (target: <= 5 ms median), and
# 1,000 mixed commands from 8 clients (0 errors, no extra session).
#
#   scripts/bench-instruments.sh
#
# Builds the static musl release binaries (as scripts/bench.sh does) and
# prints a table: target, measured value, PASS/FAIL. Exits 0 even when a
# target is missed; 3 if the benchmark could not run. Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
target=x86_64-unknown-linux-musl
rustup target list --installed 2>/dev/null | grep -qx "$target" || rustup target add "$target" >/dev/null
. scripts/musl-cc.sh && musl_cc_setup
cargo build --quiet --release --target "$target" -p lagerd -p lager -p lager-bench
bin="target/$target/release"
echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)  commit: $(git rev-parse --short HEAD)  load: $(cut -d' ' -f1-3 /proc/loadavg)"
"$bin/instbench" --lagerd "$bin/lagerd" --lager "$bin/lager" || exit 3
