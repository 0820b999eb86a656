#!/usr/bin/env bash
# Issue 13 benchmarks ("scripts"): what a test script pays for the lager
# package, measured in one run on this machine:
#   1. psu.voltage() 10,000 times from a `lager python` job through lagerd,
#      beside the raw SCPI round trip to the same simulated 2281S (the same
#      two queries lagerd sends, and one query), interleaved in blocks of
#      100: target p50 at most 300 µs above the raw read, 0 errors, lagerd's
#      RSS flat (sampled every 1,000 calls; no more than 256 KiB of growth
#      after the first 1,000, by when bounded buffers have filled);
#   2. `python3 -c "from lager import Net"` next to `python3 -c pass`,
#      alternated, 200 runs each: target at most 20 ms above (medians);
#   3. the static release binaries with the package embedded: x86_64 and
#      aarch64 musl, lagerd <= 2 MiB, lager <= 1.5 MiB.
#
#   scripts/bench-scripts.sh [--calls N] [--no-build]
#
# Builds with scripts/build-release.sh --targets x86_64,aarch64 (unless
# --no-build, which reuses target/dist/) and times the x86_64 binaries.
# Python: $BENCH_PYTHON, else /usr/bin/python3, else python3 (never a pyenv
# shim: its own start-up would be measured). Prints a table with PASS/FAIL;
# exits 0 even when a target is missed, 3 if a benchmark could not run.
set -euo pipefail
cd "$(dirname "$0")/.."
calls=10000 build=1
while [ $# -gt 0 ]; do
  case "$1" in
    --calls) calls=$2; shift 2 ;;
    --no-build) build=0; shift ;;
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench-scripts: unknown argument $1" >&2; exit 2 ;;
  esac
done
py=${BENCH_PYTHON:-}
[ -n "$py" ] || { [ -x /usr/bin/python3 ] && py=/usr/bin/python3; } || py=$(command -v python3)
[ "$build" = 0 ] || scripts/build-release.sh --targets x86_64,aarch64 >/dev/null
dist=target/dist
[ -x "$dist/x86_64/lagerd" ] && [ -x "$dist/x86_64/lager" ] || { echo "bench-scripts: no $dist/x86_64 binaries; run without --no-build" >&2; exit 3; }

work=$(mktemp -d)
daemon=
trap '[ -n "$daemon" ] && kill "$daemon" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
LAGERD_PYTHON=$py "$dist/x86_64/lagerd" --sim --health-interval-secs 0 --listen 127.0.0.1:0 \
  --state-dir "$work/state" >"$work/lagerd.out" 2>"$work/lagerd.log" &
daemon=$!
for _ in $(seq 100); do grep -q '^listening on' "$work/lagerd.out" && break; sleep 0.05; done
addr=$(sed -n 's/^listening on //p' "$work/lagerd.out" | head -1)
[ -n "$addr" ] || { cat "$work/lagerd.log" >&2; exit 3; }
echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)  commit: $(git rev-parse --short HEAD)  load: $(cut -d' ' -f1-3 /proc/loadavg)  python: $py ($($py --version 2>&1))"

# 1. calls through lagerd
export HOME=$work LAGER_CONFIG_FILE_DIR=$work LAGER_USER=bench
unset CI LAGER_BOX
"$dist/x86_64/lager" python tests/bench/py/psu_calls.py --box "$addr" -- "$calls" >"$work/calls.json" 2>"$work/calls.err" \
  || { cat "$work/calls.json" "$work/calls.err" >&2; exit 3; }

# 2. import time, alternated
pkg=$("$dist/x86_64/lagerd" python-path --state-dir "$work/state" | cut -d: -f1)
"$py" - "$py" "$pkg" >"$work/import.json" <<'PY'
import json, subprocess, sys, time
py, pkg = sys.argv[1], sys.argv[2]
env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": pkg}
runs = {"pass": [], "import": []}
commands = {"pass": [py, "-c", "pass"], "import": [py, "-c", "from lager import Net"]}
for kind in runs:
    subprocess.run(commands[kind], env=env, check=True)
for _ in range(200):
    for kind, command in commands.items():
        start = time.perf_counter()
        subprocess.run(command, env=env, check=True)
        runs[kind].append((time.perf_counter() - start) * 1000)
median = lambda xs: sorted(xs)[len(xs) // 2]
print(json.dumps({k: median(v) for k, v in runs.items()}))
PY

# 3. sizes, and the table
"$py" - "$work/calls.json" "$work/import.json" "$dist" <<'PY'
import json, os, sys
calls = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
imports = json.load(open(sys.argv[2]))
dist = sys.argv[3]
rows = []
def row(what, target, measured, ok):
    rows.append((what, target, measured, "info" if ok is None else "PASS" if ok else "FAIL"))
v, two, one = calls["via_lagerd_us"], calls["raw_two_queries_us"], calls["raw_one_query_us"]
fmt = lambda p: "%.0f / %.0f / %.0f µs" % (p["p50"], p["p90"], p["p99"])
row("raw SCPI, one query (:MEAS:VOLT?), p50/p90/p99", "baseline", fmt(one), None)
row("raw SCPI, the read's two queries, p50/p90/p99", "baseline", fmt(two), None)
row("psu.voltage() via lagerd, %d calls, p50/p90/p99" % v["n"], "info", fmt(v), None)
row("psu.voltage() p50 - raw two-query read p50", "<= 300 µs", "%.0f µs" % (v["p50"] - two["p50"]),
    v["p50"] - two["p50"] <= 300)
row("psu.voltage() p50 - raw one-query p50", "info", "%.0f µs" % (v["p50"] - one["p50"]), None)
row("errors / wrong values", "0", "%d / %d" % (calls["errors"], calls["wrong_values"]),
    calls["errors"] == 0 and calls["wrong_values"] == 0)
# Flat: no growth past the first 1,000 calls, by when the bounded buffers
# (the simulator's 4,096-command log) have filled.
rss = [kib for _, kib in calls["lagerd_rss_kib"] if kib]
growth = rss[-1] - rss[1]
row("lagerd VmRSS every 1,000 calls (KiB)", "flat: +<= 256 KiB after 1,000",
    "%s (%+d after 1,000)" % (" ".join(map(str, rss)), growth), growth <= 256)
row("`python3 -c pass`, median of 200", "baseline", "%.2f ms" % imports["pass"], None)
row("`python3 -c \"from lager import Net\"`, median of 200", "info", "%.2f ms" % imports["import"], None)
row("import - pass", "<= 20 ms", "%.2f ms" % (imports["import"] - imports["pass"]),
    imports["import"] - imports["pass"] <= 20)
budgets = {"lagerd": 2 * 1024 * 1024, "lager": 1536 * 1024}
for arch in ("x86_64", "aarch64"):
    for binary, budget in budgets.items():
        path = os.path.join(dist, arch, binary)
        if os.path.exists(path):
            size = os.path.getsize(path)
            row("%s %s (package embedded)" % (arch, binary), "<= %.1f MiB" % (budget / 1048576),
                "%.2f MiB (%d B, %d%%)" % (size / 1048576, size, 100 * size // budget), size <= budget)
width = max(len(r[0]) for r in rows)
for what, target, measured, verdict in rows:
    print("%-*s  %-26s  %-44s  %s" % (width, what, target, measured, verdict))
PY
