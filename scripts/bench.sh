#!/usr/bin/env bash
# Issue 3 benchmarks: cold start, lock reads/refusals, durable lock writes,
# `lager boxes` over a partly dead fleet, binary size and daemon memory.
# Issue 4 benchmarks (group 6): `lager python` start-to-exit next to the
# interpreter's own start-up, 1 GiB of script output streamed through the
# CLI and through a raw client with lagerd's memory sampled, 32 concurrent runs.
#
#   scripts/bench.sh           full run (about 90 s plus the build)
#   scripts/bench.sh --quick   short run (about 45 s plus the build)
#
# Installs what it needs (the musl target via rustup, hyperfine and python3
# via apt), builds static x86_64 musl release binaries of lagerd, lager and
# the bench tools (tests/bench), runs the six groups and prints one table: target,
# measured value, PASS/FAIL. It exits 0 even when a target is missed (FAIL
# is printed loudly), 1 if the build fails, 3 if a benchmark could not run.
# All traffic stays on loopback. Scratch files go under $BENCH_TMPDIR (default
# /tmp): that directory's file system is where lock writes are measured.
# Group 6 pins one Python interpreter for the box and the baseline:
# $BENCH_PYTHON if set, else /usr/bin/python3, else python3 on PATH (never a
# wrapper script such as a pyenv shim).
set -uo pipefail

QUICK=0
for arg in "$@"; do
  case "$arg" in
    --quick) QUICK=1 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "bench.sh: unknown argument $arg (use --quick or --help)" >&2; exit 2 ;;
  esac
done

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
TARGET=x86_64-unknown-linux-musl
BIN="$ROOT/target/$TARGET/release"
OUT="$ROOT/target/bench"
LOG="$OUT/last-run.log"
mkdir -p "$OUT"
: >"$LOG"

say() { printf '\n== %s\n' "$*" | tee -a "$LOG" >&2; }

# --- tools ------------------------------------------------------------------
if ! rustup target list --installed 2>/dev/null | grep -qx "$TARGET"; then
  say "installing the $TARGET target"
  rustup target add "$TARGET" || { echo "bench.sh: cannot add the $TARGET target" >&2; exit 1; }
fi
if ! command -v hyperfine >/dev/null; then
  say "installing hyperfine"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get install -y hyperfine >/dev/null 2>&1 \
    || { $SUDO apt-get update >/dev/null 2>&1 && $SUDO apt-get install -y hyperfine >/dev/null 2>&1; } \
    || echo "bench.sh: hyperfine not installed; coldstart falls back to its own fork/exec loop" >&2
fi
if [ -z "${BENCH_PYTHON:-}" ] && ! command -v python3 >/dev/null; then
  say "installing python3"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get install -y python3 >/dev/null 2>&1 \
    || { $SUDO apt-get update >/dev/null 2>&1 && $SUDO apt-get install -y python3 >/dev/null 2>&1; } \
    || echo "bench.sh: python3 not installed; group 6 cannot run" >&2
fi
PYTHON_ARG=()
[ -n "${BENCH_PYTHON:-}" ] && PYTHON_ARG=(--python "$BENCH_PYTHON")

# --- build (one cargo at a time: this is a 2-core machine) ------------------
say "building static $TARGET release binaries"
. "$ROOT/scripts/musl-cc.sh" && musl_cc_setup || { echo "bench.sh: no C compiler for musl" >&2; exit 1; }
cargo build --release --target "$TARGET" -p lagerd -p lager -p lager-bench >&2 \
  || { echo "bench.sh: build failed" >&2; exit 1; }

# --- run context --------------------------------------------------------------
WORK="$(mktemp -d "${BENCH_TMPDIR:-/tmp}/lager-bench.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
METRICS="$WORK/metrics"
: >"$METRICS"
LOAD="$(cut -d' ' -f1-3 /proc/loadavg)"
BUSY="$(pgrep -x -d, 'cargo|rustc' || true)"
{
  echo "date:     $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit:   $(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet HEAD -- lagerd lager common 2>/dev/null || echo ' (+ uncommitted changes in lagerd/lager/common)')"
  echo "machine:  $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), kernel $(uname -r)"
  echo "load:     $LOAD (1/5/15 min) before the run${BUSY:+; WARNING: cargo/rustc running (pids $BUSY)}"
  echo "scratch:  $WORK ($(findmnt -no FSTYPE,SOURCE --target "$WORK" 2>/dev/null || stat -f -c %T "$WORK"))"
  echo "mode:     $([ $QUICK = 1 ] && echo quick || echo full)"
} | tee "$OUT/context.txt" | tee -a "$LOG" >&2
if [ -n "$BUSY" ]; then
  echo "bench.sh: WARNING: a build is running; figures will be noisy. Rerun on a quiet machine." >&2
fi

# Runs one tool: human output to the terminal and the log, METRIC lines kept.
FAILED_TOOLS=()
run() {
  local name="$1"; shift
  say "$name"
  "$@" 2> >(tee -a "$LOG" >&2) | tee -a "$LOG" | grep '^METRIC ' >>"$METRICS"
  local statuses=("${PIPESTATUS[@]}")
  [ "${statuses[0]}" -eq 0 ] || FAILED_TOOLS+=("$name")
}

if [ $QUICK = 1 ]; then
  COLD=(--runs 200 --warmup 20)
  SAT=(--requests 100000 --duration-secs 2)
  PACED=(--requests 100000 --duration-secs 2)
  FLOOR=(--iterations 100)
  SEQ=(--requests 100 --warmup 10)
  CONT=(--requests 200000 --duration-secs 3)
  BOXES=(--runs 2)
  PYHELLO=(--runs 30 --warmup 5)
  PYSTREAM=(--total-bytes $((256 << 20)))
else
  COLD=(--runs 1000 --warmup 100)
  SAT=(--requests 1000000 --duration-secs 10)
  PACED=(--requests 1000000 --duration-secs 10)
  FLOOR=(--iterations 500)
  SEQ=(--requests 500 --warmup 20)
  CONT=(--requests 1000000 --duration-secs 10)
  BOXES=(--runs 5)
  PYHELLO=(--runs 150 --warmup 15)
  PYSTREAM=(--total-bytes $((1 << 30)))
fi
RATE=20000

# 1. Cold start next to a static hello world.
run "1 cold start" "$BIN/coldstart" --hello "$BIN/hello" --lager "$BIN/lager" "${COLD[@]}"

# 2. Lock reads and refusals, 8 keep-alive clients: saturated, then paced at
#    the target rate for latency.
run "2 GET /lock saturated" "$BIN/loadgen" --lagerd "$BIN/lagerd" --work-dir "$WORK" \
  --mode get --held --clients 8 "${SAT[@]}" --label read.get
run "2 GET /lock at $RATE/s" "$BIN/loadgen" --lagerd "$BIN/lagerd" --work-dir "$WORK" \
  --mode get --held --clients 8 --rate $RATE "${PACED[@]}" --label read.get_paced
run "2 POST /lock 409 saturated" "$BIN/loadgen" --lagerd "$BIN/lagerd" --work-dir "$WORK" \
  --mode conflict --clients 8 "${SAT[@]}" --label read.conflict
run "2 POST /lock 409 at $RATE/s" "$BIN/loadgen" --lagerd "$BIN/lagerd" --work-dir "$WORK" \
  --mode conflict --clients 8 --rate $RATE "${PACED[@]}" --label read.conflict_paced

# 3. Durable writes next to the raw fsync floor on the same file system.
run "3 fsync floor" "$BIN/fsync_floor" --dir "$WORK" "${FLOOR[@]}"
FLOOR_P50="$(awk '$2=="floor.p50_us"{print $3}' "$METRICS")"
LIMIT=()
[ -n "$FLOOR_P50" ] && LIMIT=(--limit-us "$(awk -v f="$FLOOR_P50" 'BEGIN{printf "%d", 4*f}')")
run "3 writes, 1 client" "$BIN/loadgen" --lagerd "$BIN/lagerd" --work-dir "$WORK" \
  --mode cycle --clients 1 "${SEQ[@]}" --label write.seq
run "3 writes, 8 contending clients" "$BIN/loadgen" --lagerd "$BIN/lagerd" --work-dir "$WORK" \
  --mode cycle --clients 8 "${CONT[@]}" "${LIMIT[@]}" --label write.contended

# 4. lager boxes over 50 boxes, 10 dead.
run "4 lager boxes" "$BIN/boxfleet" --lagerd "$BIN/lagerd" --lager "$BIN/lager" \
  --work-dir "$WORK" --timeout-ms 1000 "${BOXES[@]}" --label boxes
if [ $QUICK = 0 ]; then
  run "4 lager boxes, default timeout" "$BIN/boxfleet" --lagerd "$BIN/lagerd" --lager "$BIN/lager" \
    --work-dir "$WORK" --timeout-ms 0 --runs 1 --label boxes_default
fi

# 5. Size and memory.
say "5 binary sizes"
for b in lagerd lager; do
  size="$(stat -c %s "$BIN/$b")"
  echo "  $b: $size bytes ($(file -b "$BIN/$b" 2>/dev/null | cut -d, -f1-2))" | tee -a "$LOG" >&2
  echo "METRIC size.${b}_bytes $size" >>"$METRICS"
done
run "5 lagerd memory" "$BIN/rss" --lagerd "$BIN/lagerd" --work-dir "$WORK"

# 6. Issue 4: lager python. Every tool starts its own lagerd on 127.0.0.1
#    with LAGERD_RUN_DIR and job dirs under $WORK and an isolated lager
#    config (box `bench`, LAGER_USER=bench, CI markers unset).
run "6 lager python hello.py" "$BIN/pyhello" --lagerd "$BIN/lagerd" --lager "$BIN/lager" \
  --work-dir "$WORK" "${PYTHON_ARG[@]}" "${PYHELLO[@]}"
run "6 lager python: streaming stdout" "$BIN/pystream" --lagerd "$BIN/lagerd" --lager "$BIN/lager" \
  --work-dir "$WORK" "${PYTHON_ARG[@]}" "${PYSTREAM[@]}"
run "6 lager python: 32 concurrent runs" "$BIN/pyconcurrent" --lagerd "$BIN/lagerd" --lager "$BIN/lager" \
  --work-dir "$WORK" "${PYTHON_ARG[@]}" --clients 32

# --- summary ----------------------------------------------------------------
cp "$METRICS" "$OUT/last-run.metrics"
say "summary (also in $OUT/summary.md)"
{
  sed 's/^/    /' "$OUT/context.txt"
  echo
  "$BIN/report" "$METRICS"
} | tee "$OUT/summary.md"
REPORT_STATUS=${PIPESTATUS[0]}
if [ ${#FAILED_TOOLS[@]} -gt 0 ]; then
  echo "bench.sh: these benchmarks did not complete: ${FAILED_TOOLS[*]} (see $LOG)" >&2
  exit 3
fi
[ "$REPORT_STATUS" -eq 3 ] && exit 3
exit 0
