#!/usr/bin/env bash
# Issue 8 benchmark: instrument round trips over real USB-TMC inside the
# usb-vm guest (QEMU TCG, dummy_hcd, `lagerd sim-usbtmc` as the device), next
# to the same round trips to `lagerd --sim`'s loopback simulator in the same
# guest, so both sides pay the same emulated CPU.
#
#   scripts/usb-vm-bench.sh             build, then one guest boot (~40 s)
#   scripts/usb-vm-bench.sh --no-build  reuse target/dist/x86_64 and usbvm-tool
#
# Measured with usbvm-tool (tests/usbvm): the raw `*IDN?` round trip (usbfs
# ioctls, no lagerd; TCP: one socket to the simulator), `POST /supply/command`
# voltage read through lagerd (one connection per request, as lager makes
# them), and `lager supply NET voltage` start to exit. Prints one table;
# exits 125 when the guest cannot boot, 1 when a measurement failed.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
VM="$ROOT/../shared/usb-vm"
N_RAW=${N_RAW:-500} N_HTTP=${N_HTTP:-200} N_CLI=${N_CLI:-30}
if [ "${1:-}" != --no-build ]; then
  "$VM/setup.sh" || exit 125
  scripts/build-release.sh --targets x86_64
  cargo build --quiet --release --locked --target x86_64-unknown-linux-musl -p lager-usbvm
fi
WORK="$(mktemp -d "${TMPDIR:-/tmp}/usb-vm-bench.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
cat >"$WORK/bench.sh" <<EOF
N_RAW=$N_RAW N_HTTP=$N_HTTP N_CLI=$N_CLI
EOF
cat >>"$WORK/bench.sh" <<'EOF'
exec </dev/null
export HOME=/tmp
set -e
row() { printf 'ROW|%s|%s\n' "$1" "$(echo "$2" | grep p50_us)"; }
# The raw USB-TMC round trip first, while nothing else claims the interface.
row "USB-TMC raw *IDN? (usbfs ioctls)" "$(usbvm-tool idn-rtt "$(usb_devnode)" $N_RAW)"
mkdir -p /tmp/s
lagerd --sim --state-dir /tmp/s --listen 127.0.0.1:9000 --health-interval-secs 0 >/tmp/lagerd.log 2>&1 &
n=50; until grep -q "^listening on" /tmp/lagerd.log; do n=$((n - 1)); [ $n -gt 0 ] || exit 1; sleep 0.1; done
lager nets add psu --role supply --instrument Keithley_2281S --address USB0::0x05E6::0x2281::4587429::INSTR --box 127.0.0.1:9000 >/dev/null
sim=$(wget -q -O- http://127.0.0.1:9000/status | sed -n 's/.*"simulator":{"address":"TCPIP0::\([^:]*\)::\([0-9]*\)::SOCKET".*/\1:\2/p')
[ -n "$sim" ] || { echo "no simulator address in /status"; exit 1; }
row "loopback raw *IDN? (TCP to the simulator)" "$(usbvm-tool tcp-rtt "$sim" '*IDN?' $N_RAW)"
for net in psu supply1; do
  body="{\"netname\":\"$net\",\"action\":\"voltage\",\"params\":{}}"
  usbvm-tool http-rtt 127.0.0.1:9000 /supply/command "$body" 20 >/dev/null   # opens the session
  row "$net: POST /supply/command voltage" "$(usbvm-tool http-rtt 127.0.0.1:9000 /supply/command "$body" $N_HTTP)"
  row "$net: lager supply $net voltage" "$(usbvm-tool cmd-rtt $N_CLI lager supply $net voltage --box 127.0.0.1:9000)"
done
EOF
out="$WORK/out"
rc=0
"$VM/run.sh" --no-usbtmc --serial 4587429 --device-cmd 'lagerd sim-usbtmc' \
  --copy target/dist/x86_64/lagerd --copy target/dist/x86_64/lager \
  --copy target/x86_64-unknown-linux-musl/release/usbvm-tool --timeout 240 -- "$WORK/bench.sh" >"$out" 2>&1 || rc=$?
if [ "$rc" != 0 ]; then
  cat "$out" >&2
  echo "usb-vm-bench: the guest failed (exit $rc)" >&2
  [ "$rc" = 125 ] && exit 125
  exit 1
fi
echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)  commit: $(git rev-parse --short HEAD)  host load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "guest: QEMU TCG, 1 vCPU, dummy_hcd high-speed; N raw=$N_RAW http=$N_HTTP cli=$N_CLI"
echo
echo "| measurement (inside the guest) | p50 | p90 |"
echo "|---|---|---|"
tr -d '\r' <"$out" | sed -n 's/^ROW|\([^|]*\)|p50_us=\([0-9]*\) p90_us=\([0-9]*\).*/| \1 | \2 µs | \3 µs |/p'
