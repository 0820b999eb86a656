#!/usr/bin/env bash
# Issue 7: run the static release binaries from scripts/build-release.sh, the
# foreign ones under qemu-user, and check that they work, not only link.
#
#   scripts/cross-smoke.sh                              every arch in target/dist/
#   scripts/cross-smoke.sh --targets x86_64,aarch64     these (built beforehand)
#
# Per arch: `lager --version` and `lagerd --version`; a `lagerd` on
# 127.0.0.1:0 (its own state dir, no health checks) under qemu; the x86_64
# `lager` saves it as a box, locks it, sees it locked (`boxes --json`, and the
# arch's own `lager` sees the same), unlocks it and sees it free; SIGTERM stops
# lagerd with exit 0. Installs qemu-user-static (Debian) when missing; all
# traffic stays on loopback. Prints `cross-smoke: N passed, N failed` and exits
# 1 on any failure, 2 on a usage error.
set -uo pipefail

usage() { sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'; }

TARGETS=""
while [ $# -gt 0 ]; do
  case "$1" in
    --targets) [ $# -ge 2 ] || { echo "cross-smoke: --targets needs a value, e.g. x86_64,aarch64" >&2; exit 2; }
               TARGETS="$2"; shift 2 ;;
    --targets=*) TARGETS="${1#--targets=}"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "cross-smoke: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
done

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DIST="${CARGO_TARGET_DIR:-$ROOT/target}/dist"
VERSION="$(sed -n 's/^version = "\(.*\)"$/\1/p' "$ROOT/Cargo.toml" | head -1)"

# The qemu-user binary that runs each arch ("" runs it natively).
runner_of() {
  case "$1" in
    x86_64) echo "" ;;
    aarch64) echo qemu-aarch64-static ;;
    armv7) echo qemu-arm-static ;;
    *) return 1 ;;
  esac
}

ARCHES=()
if [ -z "$TARGETS" ]; then
  for arch in x86_64 aarch64 armv7; do
    [ -x "$DIST/$arch/lagerd" ] && ARCHES+=("$arch")
  done
else
  IFS=, read -r -a requested <<<"$TARGETS"
  for arch in "${requested[@]}"; do
    [ -n "$arch" ] || continue
    runner_of "$arch" >/dev/null || { echo "cross-smoke: unknown target '$arch' (known: x86_64, aarch64, armv7)" >&2; exit 2; }
    ARCHES+=("$arch")
  done
fi

passed=0
failed=0
pass() { echo "cross-smoke: ok   $*"; passed=$((passed + 1)); }
fail() { echo "cross-smoke: FAIL $*"; failed=$((failed + 1)); }
finish() {
  echo "cross-smoke: $passed passed, $failed failed"
  [ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
  exit $?
}

CLIENT="$DIST/x86_64/lager"
if [ ${#ARCHES[@]} -eq 0 ]; then
  fail "nothing to run: no binaries in $DIST (run scripts/build-release.sh first)"
  finish
fi
if [ ! -x "$CLIENT" ]; then
  fail "the x86_64 client $CLIENT is missing (run scripts/build-release.sh --targets x86_64 first)"
  finish
fi
command -v python3 >/dev/null || { fail "python3 is needed to read lager's --json output"; finish; }

need_qemu=0
for arch in "${ARCHES[@]}"; do
  [ -n "$(runner_of "$arch")" ] && need_qemu=1
done
if [ "$need_qemu" = 1 ] && ! command -v qemu-aarch64-static >/dev/null; then
  echo "cross-smoke: installing qemu-user-static (apt)"
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user-static; } >/tmp/cross-smoke-apt.log 2>&1; then
    tail -20 /tmp/cross-smoke-apt.log
    fail "apt-get install qemu-user-static failed (log: /tmp/cross-smoke-apt.log)"
    finish
  fi
fi

TMP="$(mktemp -d /tmp/cross-smoke.XXXXXX)"
DAEMON_PID=""
cleanup() {
  [ -n "$DAEMON_PID" ] && kill -KILL "$DAEMON_PID" 2>/dev/null
  rm -rf "$TMP"
}
trap cleanup EXIT

# `capture NAME cmd...`: runs cmd with a 60 s ceiling, leaving its exit code in
# $rc and its output in $TMP/NAME.out and $TMP/NAME.err.
capture() {
  local name="$1"; shift
  timeout 60 "$@" >"$TMP/$name.out" 2>"$TMP/$name.err"
  rc=$?
}
# Shows a failed command's output, indented, so CI logs say why.
show() { sed 's/^/    | /' "$TMP/$1.out" "$TMP/$1.err" | head -20; }

# `lock_state JSONFILE`: the box `arm`'s locked_by from `lager boxes --json`
# ("free" when null), or "unreadable: ..." when the output is not the expected JSON.
lock_state() {
  python3 - "$1" <<'EOF'
import json, sys
try:
    rows = json.load(open(sys.argv[1]))
    row = next(r for r in rows if r.get("name") == "arm")
    print(row["locked_by"] if row.get("locked_by") is not None else "free")
except Exception as e:
    print(f"unreadable: {e!r}")
EOF
}

for arch in "${ARCHES[@]}"; do
  runner="$(runner_of "$arch")"
  dir="$DIST/$arch"
  via="${runner:+ under $runner}"
  echo "cross-smoke: $arch$via"
  if [ ! -x "$dir/lagerd" ] || [ ! -x "$dir/lager" ]; then
    fail "$arch: $dir has no lagerd/lager (run scripts/build-release.sh --targets $arch first)"
    continue
  fi

  for bin in lager lagerd; do
    capture version $runner "$dir/$bin" --version
    if [ "$rc" = 0 ] && [ "$(cat "$TMP/version.out")" = "$bin $VERSION" ]; then
      pass "$arch $bin --version: $bin $VERSION"
    else
      fail "$arch $bin --version: exit $rc, wanted '$bin $VERSION'"; show version
    fi
  done

  # A fresh daemon, config and identity per arch.
  work="$TMP/$arch"
  mkdir -p "$work/state" "$work/home"
  $runner "$dir/lagerd" --listen 127.0.0.1:0 --state-dir "$work/state" --health-interval-secs 0 \
    >"$work/lagerd.out" 2>"$work/lagerd.err" &
  DAEMON_PID=$!
  port=""
  for _ in $(seq 300); do   # up to 30 s: qemu start-up is well under 1 s here
    port="$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$work/lagerd.out" | head -1)"
    [ -n "$port" ] && break
    kill -0 "$DAEMON_PID" 2>/dev/null || break
    sleep 0.1
  done
  if [ -z "$port" ]; then
    fail "$arch lagerd did not print 'listening on 127.0.0.1:PORT'"
    sed 's/^/    | /' "$work/lagerd.out" "$work/lagerd.err" | head -20
    kill -KILL "$DAEMON_PID" 2>/dev/null; wait "$DAEMON_PID" 2>/dev/null; DAEMON_PID=""
    continue
  fi
  pass "$arch lagerd listens on 127.0.0.1:$port"

  # Only what the CLI needs: no developer's LAGER_* variables or CI identity,
  # and the cwd is the temp dir so no project .lager file is read.
  lager_env=(env -i PATH="$PATH" HOME="$work/home" LAGER_CONFIG_FILE_DIR="$work/home"
             LAGER_USER=ci-smoke NO_COLOR=1)
  cd "$work" || { fail "cannot cd to $work"; finish; }

  capture add "${lager_env[@]}" "$CLIENT" boxes add --name arm --ip 127.0.0.1 --port "$port" --user pi --yes
  if [ "$rc" = 0 ]; then pass "$arch: x86_64 lager boxes add"; else fail "$arch: x86_64 lager boxes add: exit $rc"; show add; fi

  capture lock "${lager_env[@]}" "$CLIENT" boxes lock --box arm
  if [ "$rc" = 0 ] && grep -q "Box 'arm' is locked by ci-smoke" "$TMP/lock.out"; then
    pass "$arch: x86_64 lager boxes lock"
  else
    fail "$arch: x86_64 lager boxes lock: exit $rc, wanted \"Box 'arm' is locked by ci-smoke\""; show lock
  fi

  capture list "${lager_env[@]}" "$CLIENT" boxes --json
  state="$(lock_state "$TMP/list.out")"
  if [ "$rc" = 0 ] && [ "$state" = ci-smoke ]; then
    pass "$arch: x86_64 lager boxes --json shows arm locked by ci-smoke"
  else
    fail "$arch: x86_64 lager boxes --json: exit $rc, locked_by '$state', wanted ci-smoke"; show list
  fi

  # The arch's own CLI over HTTP too (its ureq client, not only argument parsing).
  capture own "${lager_env[@]}" $runner "$dir/lager" boxes --json
  state="$(lock_state "$TMP/own.out")"
  if [ "$rc" = 0 ] && [ "$state" = ci-smoke ]; then
    pass "$arch: $arch lager boxes --json shows arm locked by ci-smoke"
  else
    fail "$arch: $arch lager boxes --json: exit $rc, locked_by '$state', wanted ci-smoke"; show own
  fi

  capture unlock "${lager_env[@]}" "$CLIENT" boxes unlock --box arm
  if [ "$rc" = 0 ] && grep -q "Box 'arm' is now unlocked" "$TMP/unlock.out"; then
    pass "$arch: x86_64 lager boxes unlock"
  else
    fail "$arch: x86_64 lager boxes unlock: exit $rc, wanted \"Box 'arm' is now unlocked\""; show unlock
  fi

  capture list "${lager_env[@]}" "$CLIENT" boxes --json
  state="$(lock_state "$TMP/list.out")"
  if [ "$rc" = 0 ] && [ "$state" = free ]; then
    pass "$arch: x86_64 lager boxes --json shows arm free"
  else
    fail "$arch: x86_64 lager boxes --json after unlock: exit $rc, locked_by '$state', wanted none"; show list
  fi
  cd "$ROOT" || finish

  # qemu-user delivers the signal to the guest, so this is lagerd's own shutdown.
  kill -TERM "$DAEMON_PID" 2>/dev/null
  stopped=0
  for _ in $(seq 100); do
    kill -0 "$DAEMON_PID" 2>/dev/null || { stopped=1; break; }
    sleep 0.1
  done
  if [ "$stopped" = 1 ]; then
    wait "$DAEMON_PID"; code=$?
    if [ "$code" = 0 ]; then pass "$arch lagerd exits 0 on SIGTERM"; else fail "$arch lagerd exited $code on SIGTERM"; fi
  else
    fail "$arch lagerd still running 10 s after SIGTERM"
    kill -KILL "$DAEMON_PID" 2>/dev/null; wait "$DAEMON_PID" 2>/dev/null
  fi
  DAEMON_PID=""
done

finish
