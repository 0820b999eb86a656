#!/usr/bin/env bash
# The main job on the embedded default, no hardware needed: builds both
# binaries, starts lagerd with simulated instruments and a local state dir
# (./.demo) on a free loopback port, then drives it with the lager CLI:
# reserve the box, list it, run a script on it with `lager python`, ask
# `lager diagnose` about its simulated Keithley 2281S, and drive that
# instrument as a supply and as a battery simulator, then watch and type on
# the simulated device's serial console.
#
#   scripts/demo.sh                         the whole tour
#   scripts/demo.sh examples/rail_check.py  just run that script on the box
#                                           (exits with the script's code)
set -euo pipefail
script=${1:-}
[ -z "$script" ] || [ -f "$script" ] || { echo "demo.sh: no script $script" >&2; exit 2; }
[ -z "$script" ] || script=$(cd "$(dirname "$script")" && pwd)/$(basename "$script")
cd "$(dirname "$0")/.."
cargo build --quiet --bin lagerd --bin lager
bin=target/debug
demo=$PWD/.demo
rm -rf "$demo" && mkdir -p "$demo/state"
# The CLI's inventory lives in .demo too: your ~/.lager is never touched.
export LAGER_CONFIG_FILE_DIR=$demo LAGER_USER=${LAGER_USER:-demo-user}
unset LAGER_BOX

"$bin/lagerd" --sim --listen 127.0.0.1:0 --state-dir "$demo/state" >"$demo/lagerd.out" 2>"$demo/lagerd.log" &
daemon=$!
trap 'kill $daemon 2>/dev/null; wait $daemon 2>/dev/null' EXIT
for _ in $(seq 100); do grep -q '^listening on' "$demo/lagerd.out" && break; sleep 0.05; done
addr=$(sed -n 's/^listening on //p' "$demo/lagerd.out" | head -1)
[ -n "$addr" ] || { cat "$demo/lagerd.log" >&2; exit 1; }

run() { echo; echo "\$ $*"; "$@"; }
run "$bin/lager" boxes add --name demo --ip 127.0.0.1 --port "${addr##*:}" --user pi --yes
if [ -n "$script" ]; then
  set +e
  run "$bin/lager" python "$script" --box demo
  exit $?
fi
run "$bin/lager" hello --box demo
run "$bin/lager" boxes lock --box demo
run "$bin/lager" boxes
run env LAGER_USER=someone-else "$bin/lager" boxes lock --box demo || echo "(exit $?: the box is reserved)"
run "$bin/lager" boxes unlock --box demo
run "$bin/lager" boxes --json
cat >"$demo/hello.py" <<'PY'
import os, sys
print("hello from", os.environ["LAGER_HOST"], "run", os.environ["LAGER_PROCESS_ID"][:8])
print("this line goes to stderr", file=sys.stderr)
sys.exit(3)
PY
run "$bin/lager" python "$demo/hello.py" --box demo || echo "(exit $?: the script's own exit code)"
# A test script drives the bench by net name (from lager import Net, NetType).
run "$bin/lager" python examples/rail_check.py --box demo
run "$bin/lager" diagnose supply1 --box demo
# The simulated Keithley 2281S is both nets: one instrument, two roles.
run "$bin/lager" nets --box demo
run "$bin/lager" supply supply1 voltage 5 --box demo --yes
run "$bin/lager" supply supply1 enable --box demo --yes
run "$bin/lager" supply supply1 state --box demo
run "$bin/lager" battery battery1 soc 80 --box demo
run "$bin/lager" battery battery1 state --box demo
run "$bin/lager" supply supply1 voltage 25 --box demo --yes || echo "(exit $?: refused before reaching the instrument)"
# The simulated device's console: lagerd has captured it since it started,
# so its boot banner is there though nobody was watching. lager uart runs
# until Ctrl-C (Ctrl-] with -i); the demo stops it after 2 s.
run timeout 2 "$bin/lager" uart console1 --box demo --from-start || echo "(stopped after 2 s)"
run "$bin/lager" uart console1 serial-port --box demo
run "$bin/lager" diagnose console1 --box demo
run sh -c "printf 'help\nuptime\n' | timeout 2 $bin/lager uart console1 --box demo -i" || echo "(stopped after 2 s)"
echo
echo "lagerd log ($demo/lagerd.log):"
sed 's/^/  /' "$demo/lagerd.log"
