#!/usr/bin/env bash
# Soaks one release `lagerd --sim` (issue 12): 8 lock clients, 2 script
# runners, instrument commands under injected simulator faults, 200 slow
# or silent connections and clients killed at random, for 10 minutes.
# Then it prints requests by status, RSS and threads, and PASS/FAIL for:
# no crash, no acknowledged lock lost, every answer a clear status
# (connection errors only where the soak killed the client), scripts
# exact and reaped, RSS flat after warm-up (max/min <= 1.2), threads
# bounded. Exits 1 when a check fails.
#
#   scripts/soak.sh                 10 minutes
#   scripts/soak.sh --minutes 30
#   scripts/soak.sh --short         1 minute, to try it
#   scripts/soak.sh --seed 42       replay the same random choices
#
# The load generator is tests/bench/src/bin/soak.rs (`soak --help`).
set -euo pipefail
cd "$(dirname "$0")/.."

minutes=10
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --minutes) minutes="$2"; shift 2 ;;
    --short) minutes=1; shift ;;
    -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) extra+=("$1"); shift ;;
  esac
done

# The lagerd a box runs: the static musl release build (as scripts/bench.sh
# builds it; the musl allocator is what a box's memory figures are made of).
TARGET=x86_64-unknown-linux-musl
rustup target list --installed 2>/dev/null | grep -qx "$TARGET" || rustup target add "$TARGET"
. scripts/musl-cc.sh && musl_cc_setup || { echo "soak.sh: no C compiler for musl" >&2; exit 3; }
echo "soak.sh: building static $TARGET release lagerd and the soak tool" >&2
cargo build --release -q --target "$TARGET" -p lagerd -p lager-bench --bin lagerd --bin soak
BIN=target/$TARGET/release
echo "soak.sh: load $(cut -d' ' -f1-3 /proc/loadavg) before the run (1/5/15 min)" >&2
exec "$BIN/soak" --lagerd "$BIN/lagerd" --minutes "$minutes" "${extra[@]}"
