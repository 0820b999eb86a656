#!/usr/bin/env bash
# Issue 8: the real USB path, proven in a throwaway QEMU guest whose own USB
# bus carries `lagerd sim-usbtmc` (the simulated Keithley 2281S as a USB-TMC
# FunctionFS gadget), driven by the project's static lagerd and lager
# through the guest's kernel: sysfs, the usbtmc driver, usbfs and libusb.
#
#   scripts/usb-vm-test.sh             every case (four guest boots, ~1.5 min)
#   scripts/usb-vm-test.sh --no-build  reuse target/dist/x86_64 and usbvm-tool
#   scripts/usb-vm-test.sh --only ACM  only the cases whose name has that word
#
# Runs ../shared/usb-vm/setup.sh (idempotent; apt-gets qemu, busybox-static,
# musl-tools and a Debian kernel the first time), builds static x86_64 musl
# binaries with scripts/build-release.sh (lagerd, lager) and cargo
# (usbvm-tool, libc only), then boots guests with ../shared/usb-vm/run.sh.
# Each case prints PASS/FAIL with what a user would see. Exit codes: 0 all
# passed; 1 a case failed; 125 a guest could not boot or the harness failed
# (never reported as a pass).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
VM="$ROOT/../shared/usb-vm"
BUILD=1
ONLY=
while [ $# -gt 0 ]; do
  arg=$1; shift
  case "$arg" in
    --no-build) BUILD=0 ;;
    --only) [ $# -gt 0 ] || { echo "usb-vm-test: --only needs a word" >&2; exit 2; }; ONLY=$1; shift ;;
    -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "usb-vm-test: unknown argument $arg (use --no-build, --only or --help)" >&2; exit 2 ;;
  esac
done
[ -x "$VM/run.sh" ] || { echo "usb-vm-test: $VM/run.sh is missing (../shared/usb-vm beside the repo)" >&2; exit 125; }

"$VM/setup.sh" || { echo "usb-vm-test: ../shared/usb-vm/setup.sh failed" >&2; exit 125; }
TARGET=x86_64-unknown-linux-musl
if [ "$BUILD" = 1 ]; then
  scripts/build-release.sh --targets x86_64
  cargo build --quiet --release --locked --target "$TARGET" -p lager-usbvm
fi
BINS=(target/dist/x86_64/lagerd target/dist/x86_64/lager "target/$TARGET/release/usbvm-tool")
for bin in "${BINS[@]}"; do
  [ -x "$bin" ] || { echo "usb-vm-test: $bin was not built" >&2; exit 125; }
  case "$(file -b "$bin")" in
    *"statically linked"*|*"static-pie linked"*) ;;
    *) echo "usb-vm-test: $bin is not static; the guest has no C library" >&2; exit 125 ;;
  esac
done

WORK="$(mktemp -d "${TMPDIR:-/tmp}/usb-vm-test.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
SERIAL=4587429
ADDRESS="USB0::0x05E6::0x2281::$SERIAL::INSTR"

# What every guest script starts with: assertions and a lagerd launcher.
cat >"$WORK/lib.sh" <<EOF
ADDRESS='$ADDRESS'
SERIAL='$SERIAL'
EOF
cat >>"$WORK/lib.sh" <<'EOF'
exec </dev/null
export HOME=/tmp NO_COLOR=1
fails=0
pass() { echo "PASS: $*"; }
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
# has NAME TEXT NEEDLE: TEXT contains NEEDLE.
has() { case "$2" in *"$3"*) pass "$1" ;; *) fail "$1: expected '$3' in:"; echo "$2" | head -c 2000 | sed 's/^/    | /'; echo ;; esac; }
lacks() { case "$2" in *"$3"*) fail "$1: did not expect '$3' in:"; echo "$2" | sed 's/^/    | /' ;; *) pass "$1" ;; esac; }
same() { if [ "$2" = "$3" ]; then pass "$1"; else fail "$1: got '$2', want '$3'"; fi; }
# start_lagerd NAME PORT STATE_DIR [FLAGS...]: a lagerd in the background; its pid in $NAME_pid.
start_lagerd() {
  mkdir -p "$3"
  name=$1 port=$2 state=$3; shift 3
  lagerd --state-dir "$state" --listen "127.0.0.1:$port" --health-interval-secs 0 "$@" >"/tmp/$name.log" 2>&1 &
  set -- "$name"
  eval "$1_pid=$!"
  n=50; until grep -q "^listening on" "/tmp/$1.log" 2>/dev/null; do
    n=$((n - 1)); [ $n -gt 0 ] || { fail "lagerd $1 did not start"; cat "/tmp/$1.log"; return 1; }; sleep 0.1
  done
}
box() { echo "--box 127.0.0.1:$1"; }
add_nets() { # PORT
  lager nets add psu --role supply --instrument Keithley_2281S --address "$ADDRESS" $(box $1) >/dev/null &&
  lager nets add bat --role battery --instrument Keithley_2281S --address "$ADDRESS" $(box $1) >/dev/null
}
post() { wget -q -O- --post-data="${3:-}" --header 'Content-Type: application/json' "http://127.0.0.1:$1$2"; }
opened() { grep -c "session opened" "/tmp/$1.log"; }
finish() { echo "guest: $fails failed"; [ "$fails" = 0 ] || exit 1; exit 0; }
EOF

# --- guest 1: the kernel usbtmc driver bound ---------------------------------
cat "$WORK/lib.sh" >"$WORK/driver.sh"
cat >>"$WORK/driver.sh" <<'EOF'
d=$(usb_dev); node=$(usb_devnode)
start_lagerd a 9000 /tmp/a && add_nets 9000
# Enumeration: lagerd's sysfs reading of the real kernel's device.
# (JSON without blanks, so the needles need none either.)
out=$(lager diagnose psu --box 127.0.0.1:9000 --json | tr -d ' \n'); rc=$?
same "diagnose --json exits 2 when usbtmc holds the instrument" "$(lager diagnose psu --box 127.0.0.1:9000 --json >/dev/null; echo $?)" 2
has "diagnose: vendor from sysfs" "$out" '"vid":"05e6"'
has "diagnose: product id from sysfs" "$out" '"pid":"2281"'
has "diagnose: serial from sysfs" "$out" "\"serial\":\"$(cat $d/serial)\""
has "diagnose: manufacturer from sysfs" "$out" '"manufacturer":"KEITHLEY"'
has "diagnose: product from sysfs" "$out" '"product":"2281Ssim"'
has "diagnose: bus/dev node" "$out" "\"device_path\":\"$node\""
has "diagnose: interface class fe" "$out" '"class":254'
has "diagnose: interface subclass 03" "$out" '"subclass":3'
has "diagnose: usbtmc bound to the interface" "$out" '"driver":"usbtmc"'
[ -c /dev/usbtmc0 ] && pass "kernel made /dev/usbtmc0" || fail "no /dev/usbtmc0"
# Driver-bound bucket and its fix, as a person reads it; and a holder of
# /dev/usbtmc0 named by the scan.
sleep 60 3<>/dev/usbtmc0 &
holder=$!
sleep 0.3
out=$(lager diagnose psu --box 127.0.0.1:9000); rc=$?
echo "$out" | sed 's/^/    > /'
same "diagnose text exits 2" "$rc" 2
has "diagnose names the driver-bound bucket" "$out" "HOST-SIDE: usbtmc kernel module loaded"
has "diagnose gives the blacklist fix" "$out" "lager box update"
has "diagnose shows usbtmc loaded" "$out" "usbtmc kmod:  LOADED (problem)"
has "diagnose shows the device node" "$out" "device:       $node"
has "holder scan names the process holding /dev/usbtmc0" "$out" "sleep($holder)"
kill $holder
# A command: EBUSY with the driver named and what to do.
out=$(LAGER_DEBUG=1 lager supply psu voltage --box 127.0.0.1:9000 2>&1); rc=$?
echo "$out" | sed 's/^/    > /'
same "supply fails while usbtmc is bound" "$rc" 1
has "supply: the errno 16 headline" "$out" "USB device busy"
has "supply: the raw error names the usbtmc driver" "$out" "bound to the kernel's usbtmc driver"
has "supply: the raw error says how to fix it" "$out" "usbtmc blacklist"
finish
EOF

# --- guest 2: libusb path: supply and battery, one session, ENODEV ----------
cat "$WORK/lib.sh" >"$WORK/libusb.sh"
cat >>"$WORK/libusb.sh" <<'EOF'
same "no kernel driver on the interface" "$(usb_iface_driver)" none
start_lagerd a 9000 /tmp/a --instrument-timeout-ms 1500 && add_nets 9000
# Fresh *IDN? probe over USB-TMC before any session exists.
out=$(lager diagnose psu --box 127.0.0.1:9000); rc=$?
echo "$out" | sed 's/^/    > /'
same "diagnose exits 0 for a reachable instrument" "$rc" 0
has "diagnose: the fresh USB-TMC probe answers *IDN?" "$out" "REACHABLE — IDN: KEITHLEY INSTRUMENTS,MODEL 2281S-20-6,$SERIAL"
has "diagnose: usbtmc not loaded" "$out" "usbtmc kmod:  not loaded (good)"
# Supply and battery on one address, one session through rusb.
out=$(lager supply psu voltage 5 --yes $(box 9000) 2>&1); has "supply voltage 5" "$out" "[OK] Voltage set to 5V"
out=$(lager supply psu current 0.5 --yes $(box 9000) 2>&1); has "supply current 0.5" "$out" "[OK]"
out=$(lager supply psu enable --yes $(box 9000) 2>&1); has "supply enable" "$out" "[OK]"
out=$(lager supply psu state $(box 9000) 2>&1); has "supply state over USB" "$out" "Set: 5.0V/0.5A"
has "supply output on" "$out" "ON"
out=$(lager supply psu disable --yes $(box 9000) 2>&1); has "supply disable" "$out" "[OK]"
# VOC first: the simulated 2281S (like the real one) moves SOC along its
# model when VOC is set, so SOC set last is what state shows.
out=$(lager battery bat voc 4.1 --yes $(box 9000) 2>&1); has "battery voc 4.1" "$out" "[OK]"
out=$(lager battery bat soc 80 --yes $(box 9000) 2>&1); has "battery soc 80" "$out" "[OK] SOC set to 80%"
out=$(lager battery bat state $(box 9000) 2>&1); has "battery state over USB" "$out" "SOC 80.0%"
out=$(lager supply psu voltage $(box 9000) 2>&1); has "supply again after battery: state kept" "$out" "[OK] Voltage: 5V"
same "one session for both roles" "$(opened a)" 1
same "usbfs is the interface's driver while lagerd holds it" "$(usb_iface_driver)" usbfs
out=$(lager diagnose psu --box 127.0.0.1:9000); rc=$?
has "diagnose reports the shared session" "$out" "REACHABLE (hw_service has an active shared session"
# ETIMEDOUT: the instrument takes a query and never answers (sim-usbtmc
# holds replies while /tmp/mute exists); lagerd aborts and clears, so the
# held reply cannot answer the next query.
touch /tmp/mute
out=$(LAGER_DEBUG=1 lager supply psu voltage $(box 9000) 2>&1); rc=$?
echo "$out" | sed 's/^/    > /'
rm /tmp/mute
same "a silent instrument fails the command" "$rc" 1
has "ETIMEDOUT: the errno 110 headline" "$out" "did not respond to SCPI within the timeout"
has "ETIMEDOUT: the raw error" "$out" "[Errno 110] Operation timed out"
out=$(lager supply psu voltage $(box 9000) 2>&1)
has "after the timeout the next read is its own answer, not the held one" "$out" "[OK] Voltage: 5V"
same "the timed-out session was closed and reopened" "$(opened a)" 2
# ENODEV: the instrument drops off the bus mid-session.
usb_unbind || fail "usb_unbind"
out=$(LAGER_DEBUG=1 lager supply psu voltage $(box 9000) 2>&1); rc=$?
echo "$out" | sed 's/^/    > /'
same "a command on a vanished instrument fails" "$rc" 1
has "ENODEV: the errno 19 headline" "$out" "Instrument disappeared from USB"
has "ENODEV: the raw error" "$out" "[Errno 19] No such device"
out=$(wget -q -O- "http://127.0.0.1:9000/diagnose/dispatcher?address=$ADDRESS")
has "ENODEV closed the session" "$out" '"cached_session":false'
usb_rebind || fail "usb_rebind"
out=$(lager supply psu voltage $(box 9000) 2>&1)
has "after replug the next command works" "$out" "[OK] Voltage: 5V"
kill -0 $a_pid 2>/dev/null && pass "same lagerd (pid $a_pid), no restart" || fail "lagerd died"
same "one new session after the replug" "$(opened a)" 3
finish
EOF

# --- guest 3: two processes on one USB address: EBUSY and device locks -------
cat "$WORK/lib.sh" >"$WORK/contention.sh"
cat >>"$WORK/contention.sh" <<'EOF'
# Two lagerds on one box, sharing the device-lock dir (one state dir).
start_lagerd a 9000 /tmp/s && start_lagerd b 9001 /tmp/s && add_nets 9000
out=$(lager supply psu voltage 3 --yes $(box 9000) 2>&1); has "lagerd a opens the instrument" "$out" "[OK]"
# EBUSY: b's open finds a's claim; backs off, then names the holder.
out=$(LAGER_DEBUG=1 lager supply psu voltage $(box 9001) 2>&1); rc=$?
echo "$out" | sed 's/^/    > /'
same "EBUSY: the command fails" "$rc" 1
has "EBUSY: the errno 16 headline" "$out" "USB device busy"
has "EBUSY: names the holding process" "$out" "claimed by pid $a_pid (lagerd)"
has "EBUSY: lagerd backed off before giving up" "$(cat /tmp/b.log)" "retrying the open in 2000 ms"
# What diagnose on b says about it: the busy bucket, and a's lagerd as the holder.
out=$(lager diagnose psu --box 127.0.0.1:9001); rc=$?
echo "$out" | sed 's/^/    > /'
same "diagnose exits 2 for a busy instrument" "$rc" 2
has "diagnose: the busy bucket" "$out" "HOST-SIDE: USB device busy — another process holds it"
has "diagnose: the holder scan names a's lagerd" "$out" "lsof:         lagerd($a_pid)"
has "diagnose: the probe error names it too" "$out" "claimed by pid $a_pid (lagerd)"
# Released during the backoff: the same command succeeds.
lager supply psu voltage $(box 9001) >/tmp/late.out 2>&1 &
late=$!
sleep 1
post 9000 /cache/clear_all >/dev/null || fail "clear_all on a"
wait $late; rc=$?
same "EBUSY then released: the command succeeds" "$rc" 0
has "EBUSY then released: reads the instrument" "$(cat /tmp/late.out)" "[OK] Voltage: 3V"
post 9001 /cache/clear_all >/dev/null
# Device lock: another lager process holds this address's lock file.
lock=/tmp/s/lager_device_locks/device_USB0__0x05e6__0x2281__${SERIAL}__INSTR.lock
[ -f "$lock" ] && pass "both lagerds use one lock file: ${lock##*/}" || fail "no $lock"
usbvm-tool hold-lock "$lock" >/tmp/hold.out &
holder=$!
n=30; until grep -q held /tmp/hold.out; do n=$((n - 1)); [ $n -gt 0 ] || break; sleep 0.1; done
out=$(LAGER_DEBUG=1 lager supply psu voltage $(box 9000) 2>&1); rc=$?
echo "$out" | sed 's/^/    > /'
same "locked: the command fails" "$rc" 1
has "locked: names the lock holder" "$out" "is locked by pid $holder, which is still running"
kill $holder; wait $holder 2>/dev/null
out=$(lager supply psu voltage $(box 9000) 2>&1)
has "lock released: the command works" "$out" "[OK] Voltage: 3V"
finish
EOF

# --- guest 4: a CDC-ACM serial port: a console found by its serial number ---
# Issue 15. The gadget's acm function is a USB serial adapter whose device
# side (/dev/ttyGS0) stands for the DUT's UART; lagerd captures the host
# side (/dev/ttyACMn) by the gadget's USB serial number and survives an
# unbind/rebind of the UDC (re-enumeration, maybe as another ttyACM).
cat "$WORK/lib.sh" >"$WORK/acm.sh"
cat >>"$WORK/acm.sh" <<'EOF'
# wait_in FILE NEEDLE SECS: FILE contains NEEDLE within SECS.
wait_in() { n=$(($3 * 10)); until grep -qF -- "$2" "$1" 2>/dev/null; do n=$((n - 1)); [ $n -gt 0 ] || return 1; sleep 0.1; done; }
[ -c /dev/ttyGS0 ] && pass "the gadget's serial function is /dev/ttyGS0" || fail "no /dev/ttyGS0"
# The DUT's end, raw. (The gadget hangs its tty up on unbind, so the
# "DUT" opens it again after the rebind; a real UART would not notice.)
device_end() { exec 3<>/dev/ttyGS0 && stty -F /dev/ttyGS0 raw -echo; }
device_end || fail "open /dev/ttyGS0 raw"
printf 'printed before anyone watched\n' >&3
start_lagerd a 9000 /tmp/a
lager nets add dut --role uart --address "$SERIAL" $(box 9000) >/dev/null || fail "nets add --role uart"
n=50; until lager uart dut serial-port $(box 9000) >/tmp/port 2>/dev/null; do n=$((n - 1)); [ $n -gt 0 ] || break; sleep 0.1; done
port=$(cat /tmp/port)
case "$port" in /dev/ttyACM*) pass "found by USB serial number $SERIAL: $port" ;; *) fail "serial-port said '$port'"; cat /tmp/a.log ;; esac
out=$(lager diagnose dut $(box 9000)); rc=$?
echo "$out" | sed 's/^/    > /'
same "diagnose: capturing, exit 0" "$rc" 0
has "diagnose: the adapter's serial from sysfs" "$out" "serial:       $SERIAL"
has "diagnose: the cdc_acm driver" "$out" "driver:       cdc_acm"
lager uart dut --from-start $(box 9000) >/tmp/watch.out 2>/tmp/watch.err &
watcher=$!
wait_in /tmp/watch.out "printed before anyone watched" 10 && pass "--from-start: bytes printed before lagerd opened the port" || fail "no early bytes: $(cat /tmp/watch.out /tmp/watch.err)"
i=1; while [ $i -le 100 ]; do echo "before $i" >&3; i=$((i + 1)); done
wait_in /tmp/watch.out "before 100" 10 && pass "100 lines through the real port" || fail "lines before the unbind missing"
usb_unbind || fail "usb_unbind"
wait_in /tmp/watch.out " dut gone (unplugged) --" 5 && pass "unbind: a gone event" || fail "no gone event: $(tail -3 /tmp/watch.out)"
usb_rebind || fail "usb_rebind"
device_end || fail "reopen /dev/ttyGS0"
# Written the moment the device is back, before lagerd has found it.
i=1; while [ $i -le 500 ]; do echo "after $i" >&3; i=$((i + 1)); done
wait_in /tmp/watch.out "after 500" 10 || fail "the lines after the rebind did not all arrive: $(tail -3 /tmp/watch.out)"
has "rebind: a back event naming the port" "$(cat /tmp/watch.out)" " dut back on /dev/ttyACM"
i=1; while [ $i -le 500 ]; do echo "after $i"; i=$((i + 1)); done >/tmp/want
grep '^after ' /tmp/watch.out >/tmp/got
cmp -s /tmp/want /tmp/got && pass "every byte written after the rebind arrived, in order ($(wc -l </tmp/got) lines)" || fail "bytes after the rebind lost or reordered: $(diff /tmp/want /tmp/got | head -5)"
kill -0 $watcher 2>/dev/null && pass "the watcher lived through the unbind" || fail "lager uart exited: $(cat /tmp/watch.err)"
kill $watcher
echo "    the port after the rebind: $(lager uart dut serial-port $(box 9000))"
st=$(wget -q -O- "http://127.0.0.1:9000/uart/status?netname=dut")
has "status: open again" "$st" '"state":"open"'
has "status: gone once" "$st" '"gone":1'
has "status: opened twice" "$st" '"opens":2'
# Typing reaches the device side. (What is waiting in its input first is
# dropped: a tty opens with echo on, and the first open of a new adapter
# can echo the bytes the device had queued before lagerd makes it raw.)
dd bs=4096 count=1 <&3 >/dev/null 2>&1 & r=$!; sleep 0.3; kill $r 2>/dev/null
(printf 'ping\n'; sleep 5) | lager uart dut -i $(box 9000) >/dev/null 2>&1 &
typist=$!
: >/tmp/typed
n=50; until grep -q ping /tmp/typed; do
  n=$((n - 1)); [ $n -gt 0 ] || break
  dd bs=64 count=1 <&3 >>/tmp/typed 2>/dev/null & r=$!; sleep 0.1; kill $r 2>/dev/null
done
has "lager uart -i: keystrokes reach the device" "$(cat /tmp/typed)" "ping"
kill $typist 2>/dev/null
kill -0 $a_pid 2>/dev/null && pass "same lagerd (pid $a_pid), no restart" || fail "lagerd died"
finish
EOF

failed=0
boot() { # NAME RUN.SH-ARGS... -- SCRIPT
  local name=$1; shift
  case "$name" in *"$ONLY"*) ;; *) echo "== usb-vm-test: $name: skipped (--only $ONLY)"; return ;; esac
  echo "== usb-vm-test: $name"
  local started=$SECONDS rc=0
  "$VM/run.sh" --serial "$SERIAL" --device-cmd 'lagerd sim-usbtmc --mute-file /tmp/mute' \
    --copy target/dist/x86_64/lagerd --copy target/dist/x86_64/lager \
    --copy "target/$TARGET/release/usbvm-tool" --timeout 120 "$@" || rc=$?
  echo "== usb-vm-test: $name: exit $rc in $((SECONDS - started)) s"
  if [ "$rc" = 125 ]; then
    echo "usb-vm-test: FAIL: the $name guest did not boot or the harness failed (see above)" >&2
    exit 125
  fi
  [ "$rc" = 0 ] || failed=$((failed + 1))
}
boot "usbtmc driver bound" --usbtmc -- "$WORK/driver.sh"
boot "libusb: supply, battery, ETIMEDOUT, ENODEV" --no-usbtmc -- "$WORK/libusb.sh"
boot "two processes: EBUSY, device locks" --no-usbtmc -- "$WORK/contention.sh"
boot "a CDC-ACM console: capture, unbind/rebind" --no-usbtmc --acm -- "$WORK/acm.sh"
if [ "$failed" -gt 0 ]; then
  echo "usb-vm-test: $failed guest(s) had failing cases" >&2
  exit 1
fi
echo "usb-vm-test: every case passed"
