#!/usr/bin/env bash
# Issue 5 benchmarks (group 7, "diagnose"):
#  - holder scan: lagerd's /proc/*/fd scan behind GET /diagnose/usb with 200
#    holders among 500 real processes, next to `fuser` and `lsof` on the
#    same file in the same run (targets: >= 2x faster than fuser, >= 5x
#    faster than lsof);
#  - `lager diagnose NET --box bench` end to end on loopback with a fixture
#    sysfs of 20 USB devices, for a USB net and the simulated TCP supply
#    (target: median <= 50 ms); then, for information, the USB net again on a
#    lagerd whose `dmesg` (a stand-in first on its PATH) prints 136,000 bytes,
#    as a box with a full kernel ring buffer would.
#
#   scripts/bench-diagnose.sh           full run (about 60 s plus the build)
#   scripts/bench-diagnose.sh --quick   short run (about 30 s plus the build)
#
# Installs what it needs (the musl target via rustup; hyperfine, psmisc for
# fuser and lsof via apt), builds the same static x86_64 musl release
# binaries as scripts/bench.sh, runs both tools and prints one table: target,
# measured value, PASS/FAIL (also in target/bench/diagnose-summary.md; the
# full output in target/bench/diagnose-last-run.log). It exits 0 even when a
# target is missed, 1 if the build fails, 3 if a benchmark could not run.
# It first waits (at most 15 min) for other cargo builds and scripts/bench.sh
# runs to finish. All traffic stays on loopback; scratch files go under
# $BENCH_TMPDIR (default /tmp).
set -uo pipefail

QUICK=0
for arg in "$@"; do
  case "$arg" in
    --quick) QUICK=1 ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    *) echo "bench-diagnose.sh: unknown argument $arg (use --quick or --help)" >&2; exit 2 ;;
  esac
done

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
TARGET=x86_64-unknown-linux-musl
BIN="$ROOT/target/$TARGET/release"
OUT="$ROOT/target/bench"
LOG="$OUT/diagnose-last-run.log"
mkdir -p "$OUT"
: >"$LOG"

say() { printf '\n== %s\n' "$*" | tee -a "$LOG" >&2; }

# Waits, bounded, while `pgrep <args>` finds something.
wait_for_quiet() {
  local what="$1"; shift
  local waited=0
  while pgrep "$@" >/dev/null; do
    if [ $waited -ge 900 ]; then
      echo "bench-diagnose.sh: WARNING: still busy ($what) after 15 min; going on, figures may be noisy" >&2
      return
    fi
    [ $waited -eq 0 ] && echo "bench-diagnose.sh: waiting for $what to finish" >&2
    sleep 10; waited=$((waited + 10))
  done
}

# --- tools ------------------------------------------------------------------
if ! rustup target list --installed 2>/dev/null | grep -qx "$TARGET"; then
  say "installing the $TARGET target"
  rustup target add "$TARGET" || { echo "bench-diagnose.sh: cannot add the $TARGET target" >&2; exit 1; }
fi
MISSING=()
command -v hyperfine >/dev/null || MISSING+=(hyperfine)
command -v fuser >/dev/null || MISSING+=(psmisc)
command -v lsof >/dev/null || MISSING+=(lsof)
if [ ${#MISSING[@]} -gt 0 ]; then
  say "installing ${MISSING[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get install -y "${MISSING[@]}" >/dev/null 2>&1 \
    || { $SUDO apt-get update >/dev/null 2>&1 && $SUDO apt-get install -y "${MISSING[@]}" >/dev/null 2>&1; } \
    || echo "bench-diagnose.sh: could not install ${MISSING[*]}; the benchmarks that need them will fail" >&2
fi

# --- build: scripts/bench.sh's build command (one cargo at a time) ----------
wait_for_quiet "other cargo builds" -x 'cargo|rustc'
say "building static $TARGET release binaries"
. scripts/musl-cc.sh && musl_cc_setup || exit 1
cargo build --release --target "$TARGET" -p lagerd -p lager -p lager-bench >&2 \
  || { echo "bench-diagnose.sh: build failed" >&2; exit 1; }

# --- run context --------------------------------------------------------------
wait_for_quiet "scripts/bench.sh measurements" -f 'scripts/bench\.sh|loadgen|pystream|pyconcurrent'
WORK="$(mktemp -d "${BENCH_TMPDIR:-/tmp}/lager-bench-diagnose.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
METRICS="$WORK/metrics"
ROWS="$WORK/rows"
: >"$METRICS"; : >"$ROWS"
LOAD="$(cut -d' ' -f1-3 /proc/loadavg)"
BUSY="$(pgrep -x -d, 'cargo|rustc' || true)"
{
  echo "date:     $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit:   $(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet HEAD -- lagerd lager common 2>/dev/null || echo ' (+ uncommitted changes in lagerd/lager/common)')"
  echo "machine:  $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), kernel $(uname -r)"
  echo "load:     $LOAD (1/5/15 min) before the run, $(find /proc -maxdepth 1 -name '[0-9]*' | wc -l) processes${BUSY:+; WARNING: cargo/rustc running (pids $BUSY)}"
  echo "tools:    $(hyperfine --version 2>/dev/null), $(fuser -V 2>&1 | head -1), $(lsof -v 2>&1 | grep -m1 -i revision | sed 's/^ *//')"
  echo "mode:     $([ $QUICK = 1 ] && echo quick || echo full)"
} | tee "$OUT/diagnose-context.txt" | tee -a "$LOG" >&2

FAILED_TOOLS=()
run() {
  local name="$1"; shift
  say "$name"
  "$@" 2> >(tee -a "$LOG" >&2) | tee -a "$LOG" | grep -E '^(METRIC|ROW) ' >>"$METRICS"
  local statuses=("${PIPESTATUS[@]}")
  [ "${statuses[0]}" -eq 0 ] || FAILED_TOOLS+=("$name")
}

if [ $QUICK = 1 ]; then
  SCAN=(--runs 20 --warmup 2)
  DIAG=(--runs 30 --warmup 5 --big-log-runs 1)
else
  SCAN=(--runs 40 --warmup 3)
  DIAG=(--runs 200 --warmup 20 --big-log-runs 3)
fi

# 7a. Holder scan: 500 sleeps, 200 holding the target; fuser, lsof, lagerd.
run "7 holder scan" "$BIN/holderscan" --lagerd "$BIN/lagerd" --work-dir "$WORK" \
  --procs 500 --holders 200 --max-secs 120 "${SCAN[@]}"
# 7b. lager diagnose end to end, 20 fixture USB devices.
run "7 lager diagnose" "$BIN/diagbench" --lagerd "$BIN/lagerd" --lager "$BIN/lager" \
  --work-dir "$WORK" --devices 20 --limit-ms 50 "${DIAG[@]}"

# --- summary ----------------------------------------------------------------
grep '^METRIC ' "$METRICS" >"$OUT/diagnose-last-run.metrics"
grep '^ROW ' "$METRICS" | sed 's/^ROW //' >"$ROWS"
PASS=$(grep -c '| PASS |$' "$ROWS")
FAIL=$(grep -c '| \*\*FAIL\*\* |$' "$ROWS")
say "summary (also in $OUT/diagnose-summary.md)"
{
  sed 's/^/    /' "$OUT/diagnose-context.txt"
  echo
  echo "| # | measurement | target | measured | result |"
  echo "|---|---|---|---|---|"
  cat "$ROWS"
  echo
  echo "$PASS of $((PASS + FAIL)) targets pass."
  [ "$FAIL" -gt 0 ] && echo "FAIL: $FAIL target(s) missed (see the rows marked **FAIL**)."
} | tee "$OUT/diagnose-summary.md"
if [ ${#FAILED_TOOLS[@]} -gt 0 ]; then
  echo "bench-diagnose.sh: these benchmarks did not complete: ${FAILED_TOOLS[*]} (see $LOG)" >&2
  exit 3
fi
exit 0
