#!/usr/bin/env bash
# The compatibility referee: the Python lager-cli 0.60.0 that users already
# have must work unmodified against lagerd. That client hard-codes ports
# 9000 and 5000, so the checks run in a private network namespace
# (`unshare -n`, needs root) where those ports are always free; without
# one they run only if both ports are free. A skip is reported as a skip,
# never as a pass, and fails the run under CI.
#
# Usage: tests/referee/referee.sh   (after `cargo build --workspace`)
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
target="${CARGO_TARGET_DIR:-$root/target}"
lagerd="$target/debug/lagerd"
rust_lager="$target/debug/lager"
venv="$target/referee-venv"

skip() {
    echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!" >&2
    echo "!! referee SKIPPED: $*" >&2
    echo "!! the Python lager-cli 0.60 compatibility checks did NOT run." >&2
    echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!" >&2
    echo "referee: 0 passed, 0 failed, 1 skipped"
    if [ "${CI:-}" = "true" ]; then exit 1; fi
    exit 0
}

if [ "${REFEREE_IN_NETNS:-}" != 1 ]; then
    [ -x "$lagerd" ] && [ -x "$rust_lager" ] || { echo "build first: cargo build --workspace" >&2; exit 2; }
    if ! "$root/tests/referee/install.sh" "$venv" >"$root/target/referee-install.log" 2>&1; then
        cat "$root/target/referee-install.log" >&2
        skip "could not install lager-cli 0.60.0 into $venv"
    fi
    if [ "$(id -u)" = 0 ] && unshare -n true 2>/dev/null; then
        REFEREE_IN_NETNS=1 exec unshare -n "$0" "$@"
    fi
    ports_free=$(python3 - <<'PY'
import socket
ok = True
for port in (9000, 5000):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        ok = False
    s.close()
print("yes" if ok else "no")
PY
)
    [ "$ports_free" = yes ] || skip "no private network namespace (needs root + unshare) and port 9000 or 5000 is taken"
else
    ip link set lo up 2>/dev/null || skip "cannot bring up loopback in the network namespace"
fi

work=$(mktemp -d)
trap 'kill "$daemon_pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
export HOME="$work/home" LAGER_CONFIG_FILE_DIR="$work/home" NO_COLOR=1
unset CI GITHUB_RUN_ID LAGER_BOX LAGER_USER LAGER_LOCK_HOLDER
mkdir -p "$HOME" "$work/state"
py="$venv/bin/lager"

# --sim: the simulated instruments the lager-package check below drives.
"$lagerd" --sim --state-dir "$work/state" >"$work/lagerd.out" 2>"$work/lagerd.log" &
daemon_pid=$!
for _ in $(seq 100); do
    [ "$(grep -c '^listening on' "$work/lagerd.out" 2>/dev/null)" = 2 ] && break
    sleep 0.05
done
grep -q '0.0.0.0:9000' "$work/lagerd.out" && grep -q '0.0.0.0:5000' "$work/lagerd.out" \
    || { cat "$work/lagerd.log" >&2; skip "lagerd did not come up on the default ports 9000 and 5000"; }

passed=0 failed=0
out="$work/out" err="$work/err"
# check NAME EXPECTED_RC PATTERN(stdout+stderr, extended regex) -- COMMAND...
check() {
    local name=$1 want_rc=$2 pattern=$3
    shift 4
    "$@" >"$out" 2>"$err"
    local rc=$?
    # grep reads all its input (no -q): with pipefail, a grep that quits at
    # the first match can SIGPIPE cat while it writes the second file, and
    # a check that matched would fail.
    if [ "$rc" = "$want_rc" ] && cat "$out" "$err" | grep -E -- "$pattern" >/dev/null; then
        passed=$((passed + 1)); echo "ok   $name"
    else
        failed=$((failed + 1)); echo "FAIL $name (exit $rc, wanted $want_rc; wanted /$pattern/)"
        sed 's/^/     | /' "$out" "$err"
    fi
}
# expect NAME CONDITION...: a plain shell assertion
expect() {
    local name=$1; shift
    if "$@"; then passed=$((passed + 1)); echo "ok   $name"
    else failed=$((failed + 1)); echo "FAIL $name"; fi
}
# gone_within SECONDS PID: true once PID has left /proc (exited and been
# reaped), polling as a user would, for at most SECONDS.
gone_within() {
    local deadline=$((SECONDS + $1))
    while [ -d "/proc/$2" ]; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.1
    done
}
holder_on_disk() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["user"])' "$work/state/lock.json" 2>/dev/null; }

check "python: boxes add" 0 "Added box 'bench1'" -- "$py" boxes add --name bench1 --ip 127.0.0.1 --user tester --yes
check "python: lock as alice" 0 "Box 'bench1' is locked by alice" -- env LAGER_USER=alice "$py" boxes lock --box bench1
expect "lock.json names alice" [ "$(holder_on_disk)" = alice ]
check "python: bob is refused (409)" 1 "Box 'bench1' is already locked by alice \(since [0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:]{8}Z\)" \
    -- env LAGER_USER=bob "$py" boxes lock --box bench1
check "python: bob cannot unlock (403)" 1 "Box 'bench1' is locked by alice. To force unlock: lager boxes unlock --box bench1 --force" \
    -- env LAGER_USER=bob "$py" boxes unlock --box bench1
check "python: boxes shows the holder" 0 "bench1 +127\.0\.0\.1 +tester +[0-9.]+ +[a-z ]+ +alice" -- "$py" boxes
check "rust: boxes sees the python lock" 0 "alice" -- "$rust_lager" boxes
check "python: alice unlocks" 0 "Box 'bench1' is now unlocked" -- env LAGER_USER=alice "$py" boxes unlock --box bench1
expect "lock.json is gone" [ ! -e "$work/state/lock.json" ]
check "python: boxes shows no holder" 0 "bench1 +127\.0\.0\.1 +tester +[0-9.]+ +[a-z ]+$" -- "$py" boxes
check "rust: lock as carol" 0 "Box 'bench1' is locked by carol" -- env LAGER_USER=carol "$rust_lager" boxes lock --box bench1
check "python: sees carol's lock" 1 "already locked by carol" -- env LAGER_USER=bob "$py" boxes lock --box bench1
check "python: force unlock" 0 "Box 'bench1' is now unlocked" -- env LAGER_USER=bob "$py" boxes unlock --box bench1 --force
check "python: hello" 0 "bench1 is online and responding" -- "$py" hello --box bench1
# The Python client sends runner traffic to :5000: the same router answers there.
expect "port 5000 serves the same router" python3 -c '
import json, urllib.request
for port in (9000, 5000):
    body = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/hello", timeout=5))
    assert body["service"] == "lager-python-box", body'

# lager python (runner.md): the client uploads to :5000 and renders frames.
printf 'import sys\nprint("to stdout")\nprint("to stderr", file=sys.stderr)\nsys.exit(3)\n' >"$work/exit3.py"
printf 'import os\nprint("bye", flush=True)\nos.kill(os.getpid(), 9)\n' >"$work/killed.py"
printf 'import os, time\nopen("%s/long.pid", "w").write(str(os.getpid()))\nprint("detached", flush=True)\ntime.sleep(60)\n' "$work" >"$work/long.py"
"$py" python "$work/exit3.py" --box bench1 >"$work/py.out" 2>"$work/py.err"
rc=$?
expect "python: script exit code 3 comes back" [ "$rc" = 3 ]
expect "python: stdout arrives on stdout" [ "$(cat "$work/py.out")" = "to stdout" ]
expect "python: stderr arrives on stderr" grep -qx "to stderr" "$work/py.err"
expect "python: the auto-lock is released" [ ! -e "$work/state/lock.json" ]
check "python: a killed script exits 137" 137 "bye" -- "$py" python "$work/killed.py" --box bench1
check "python: --detach" 0 "Process detached \(Process ID: [0-9a-f-]{36}\)" -- "$py" python "$work/long.py" --box bench1 --detach
run_id=$(grep -oE '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}' "$out" | head -1)
for _ in $(seq 50); do [ -s "$work/long.pid" ] && break; sleep 0.1; done
long_pid=$(cat "$work/long.pid" 2>/dev/null)
expect "the detached script runs" test -d "/proc/${long_pid:-none}"
check "python: --kill the detached run" 0 "Process $run_id killed" -- "$py" python --kill "$run_id" --box bench1
expect "the detached script is gone" gone_within 5 "${long_pid:-none}"
expect "the killed run's record was kept, not lost" \
    grep -q "run $run_id: detached job finished with" "$work/lagerd.log"
expect "lagerd logged no failure for the kill" \
    sh -c '! grep -q "cannot write meta.json" "$1"' sh "$work/lagerd.log"

# A script written against the Python system's API (issue 13): 0.60's
# `lager python` starts it, it imports the lager package lagerd ships and
# drives the simulated supply through lagerd's shared session.
cat >"$work/supply.py" <<'PY'
from lager import Net, NetType
psu = Net.get("supply1", type=NetType.PowerSupply)
psu.set_voltage(3.3)
psu.enable()
volts = psu.voltage()
assert isinstance(volts, float) and abs(volts - 3.3) < 0.066, volts
psu.disable()
print("package drove supply1 to", volts)
PY
check "python: a script imports the lager package and drives the supply" 0 "^package drove supply1 to 3\.3$" \
    -- "$py" python "$work/supply.py" --box bench1

echo "referee: $passed passed, $failed failed, 0 skipped"
[ "$failed" = 0 ]
