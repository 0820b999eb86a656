#!/usr/bin/env bash
# Issue 16 benchmarks: the fleet view.
#
#   scripts/bench-fleet.sh            full run (about 3 minutes plus the builds)
#   scripts/bench-fleet.sh --quick    short run (fewer rounds, 200 boxes)
#
# 1. /metrics on a busy box: 8 GET /lock clients at full rate, rounds with
#    and without a scrape every 100 ms, plus the same clients against the
#    build before /metrics (BASELINE_REV, default 691ec32, built once into
#    target/bench-baseline) for the lock path's own cost.
# 2. The status page in headless Chromium: transferred size and first
#    contentful paint over 20 loads (tests/browser/cdp.py).
# 3. A fleet on one machine: 1,000 lagerd processes plus 50 dead boxes,
#    `lager boxes` and `lager boxes lock --any` with a 1 s per-box
#    timeout, and lagerd's memory per box.
#
# Static x86_64 musl release binaries, as shipped. Every process it starts
# is its own (lagerd children die with their tool: PR_SET_PDEATHSIG); all
# traffic stays on loopback. METRIC lines and a summary go to
# target/bench/fleet-summary.txt.
set -uo pipefail

QUICK=0
for arg in "$@"; do
  case "$arg" in
    --quick) QUICK=1 ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "bench-fleet.sh: unknown argument $arg (use --quick or --help)" >&2; exit 2 ;;
  esac
done

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
TARGET=x86_64-unknown-linux-musl
BIN="$ROOT/target/$TARGET/release"
OUT="$ROOT/target/bench"
BASELINE_REV="${BASELINE_REV:-691ec32}"
BASE_DIR="$ROOT/target/bench-baseline"
mkdir -p "$OUT"
METRICS="$OUT/fleet.metrics"
: >"$METRICS"

say() { printf '\n== %s\n' "$*" >&2; }

rustup target list --installed 2>/dev/null | grep -qx "$TARGET" || rustup target add "$TARGET" \
  || { echo "bench-fleet.sh: cannot add the $TARGET target" >&2; exit 1; }
command -v chromium >/dev/null || {
  say "installing chromium (apt)"
  { apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1 \
    || { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1; }; } \
    || echo "bench-fleet.sh: no chromium; the page benchmark cannot run" >&2
}

say "building static $TARGET release binaries"
. "$ROOT/scripts/musl-cc.sh" && musl_cc_setup || { echo "bench-fleet.sh: no C compiler for musl" >&2; exit 1; }
cargo build --release --target "$TARGET" -p lagerd -p lager -p lager-bench >&2 \
  || { echo "bench-fleet.sh: build failed" >&2; exit 1; }

BASELINE="$BASE_DIR/lagerd-$BASELINE_REV"
if [ ! -x "$BASELINE" ]; then
  say "building the baseline lagerd at $BASELINE_REV (once; kept in $BASE_DIR)"
  SRC="$(mktemp -d /tmp/lager-baseline.XXXXXX)"
  if git worktree add --detach "$SRC" "$BASELINE_REV" >&2 \
    && (cd "$SRC" && CARGO_TARGET_DIR="$BASE_DIR/target" cargo build --release --target "$TARGET" -p lagerd >&2); then
    cp "$BASE_DIR/target/$TARGET/release/lagerd" "$BASELINE"
  else
    echo "bench-fleet.sh: could not build the baseline; measuring without it" >&2
  fi
  git worktree remove --force "$SRC" >/dev/null 2>&1 || rm -rf "$SRC"
fi
BASE_ARG=()
[ -x "$BASELINE" ] && BASE_ARG=(--baseline-lagerd "$BASELINE")

WORK="$(mktemp -d "${BENCH_TMPDIR:-/tmp}/lager-fleet-bench.XXXXXX")"
LAGERD_PID=""
cleanup() {
  [ -n "$LAGERD_PID" ] && kill "$LAGERD_PID" 2>/dev/null && wait "$LAGERD_PID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

{
  echo "date:    $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit:  $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- lagerd lager common || echo ' (+ uncommitted changes)')"
  echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg) before the run (shared machine: other builds may run)"
  echo "mode:    $([ $QUICK = 1 ] && echo quick || echo full)"
} | tee "$OUT/fleet-context.txt" >&2

FAILED=()
run() {
  local name="$1"; shift
  say "$name"
  "$@" | tee -a "$METRICS"
  [ "${PIPESTATUS[0]}" -eq 0 ] || FAILED+=("$name")
}

if [ $QUICK = 1 ]; then
  SCRAPE=(--rounds 2 --round-secs 3); PAGE_RUNS=5; FLEET=(--live 200 --dead 10 --runs 2)
else
  SCRAPE=(--rounds 5 --round-secs 6); PAGE_RUNS=20; FLEET=(--live 1000 --dead 50 --runs 5)
fi

run "1 /metrics on a busy box" "$BIN/scrapebench" --lagerd "$BIN/lagerd" "${BASE_ARG[@]}" \
  --work-dir "$WORK" --clients 8 --scrape-ms 100 "${SCRAPE[@]}"

say "2 the status page in headless Chromium"
mkdir -p "$WORK/page"
"$BIN/lagerd" --sim --listen 127.0.0.1:0 --state-dir "$WORK/page" >"$WORK/page.out" 2>/dev/null &
LAGERD_PID=$!
for _ in $(seq 100); do grep -q 'listening on' "$WORK/page.out" 2>/dev/null && break; sleep 0.05; done
ADDR="$(sed -n 's/^listening on //p' "$WORK/page.out" | head -1)"
if [ -n "$ADDR" ]; then
  # A realistic page: a CI job holds the box, someone waits, a job ran.
  curl -s -XPOST "http://$ADDR/lock" -d '{"user":"ci:github:lager/lager#999-2/integration@bench-3:42","holder_type":"ci","ttl_seconds":600}' >/dev/null
  python3 tests/browser/cdp.py bench "http://$ADDR/" --runs "$PAGE_RUNS" | tee -a "$METRICS"
  [ "${PIPESTATUS[0]}" -eq 0 ] || FAILED+=("page")
else
  FAILED+=("page")
fi
kill "$LAGERD_PID" 2>/dev/null; wait "$LAGERD_PID" 2>/dev/null; LAGERD_PID=""

run "3 a fleet of lagerd processes" "$BIN/fleetbench" --lagerd "$BIN/lagerd" --lager "$BIN/lager" \
  --work-dir "$WORK" --timeout-ms 1000 "${FLEET[@]}"

say "summary (also in $OUT/fleet-summary.txt)"
{
  cat "$OUT/fleet-context.txt"
  echo
  grep '^METRIC ' "$METRICS" | sed 's/^METRIC //'
} | tee "$OUT/fleet-summary.txt"
if [ ${#FAILED[@]} -gt 0 ]; then
  echo "bench-fleet.sh: these benchmarks did not complete: ${FAILED[*]}" >&2
  exit 3
fi
