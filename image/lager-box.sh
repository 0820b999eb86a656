#!/bin/sh
# lager-box.sh: the box side of `lager install`, `update` and `uninstall`.
# lager streams it to the box over ssh and runs it as root (or as a user who
# can write PREFIX). It prints key=value lines that lager reads; errors go to
# stderr as one line that says what failed and what to do.
#
#   lager-box.sh probe     PREFIX
#   lager-box.sh activate  PREFIX STAGING CONFIG    CONFIG: keep | replace
#   lager-box.sh rollback  PREFIX
#   lager-box.sh uninstall PREFIX KEEP_CONFIG       KEEP_CONFIG: 0 | 1
#
# PREFIX is / on a real box; tests install into a temporary directory.
# POSIX sh only: boxes may have nothing but busybox.
set -u
action=${1:-}
P=${2:-/}
P=${P%/}
BIN=$P/usr/local/bin
LIB=$P/usr/local/lib/lager
ETC=$P/etc/lager
UNIT=$P/etc/systemd/system/lagerd.service
MODPROBE=$P/etc/modprobe.d/blacklist-usbtmc.conf
UDEV=$P/etc/udev/rules.d/99-lager-instruments.rules
PIDFILE=$P/run/lagerd-supervise.pid
LOG=$P/var/log/lagerd.log

fail() {
  echo "lager-box: $*" >&2
  exit 1
}

# Runs a command; on failure exits with its own error text after $1.
try() {
  what=$1
  shift
  out=$("$@" 2>&1) || fail "$what: $out"
}

# systemd runs lagerd on a box that booted with it; anything else (a
# container, a prefix, another init) gets lagerd-supervise.
uses_systemd() {
  [ -z "$P" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1
}

version_of() {
  "$1" --version 2>/dev/null | sed -n 's/^lagerd //p' | head -n 1
}

# The nearest existing directory at or above $1.
existing_dir() {
  d=$1
  while [ ! -d "$d" ]; do d=$(dirname "$d"); done
  echo "$d"
}

probe() {
  echo "lager_box_probe=1"
  echo "arch=$(uname -m)"
  echo "uid=$(id -u)"
  d=$(existing_dir "$BIN")
  if [ -w "$d" ]; then echo "writable=yes"; else echo "writable=no"; fi
  if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    echo "sudo=yes"
  else
    echo "sudo=no"
  fi
  echo "free_kb=$(df -Pk "$d" 2>/dev/null | awk 'NR == 2 { print $4 }')"
  if uses_systemd; then echo "init=systemd"; else echo "init=supervisor"; fi
  if [ -f "$BIN/lagerd" ]; then
    echo "installed=yes"
    echo "version=$(version_of "$BIN/lagerd")"
  else
    echo "installed=no"
  fi
  [ -f "$BIN/lagerd.prev" ] && echo "previous=$(version_of "$BIN/lagerd.prev")"
  return 0
}

# Whether process $1 runs. A zombie does not: where init is slow to reap
# (containers), `kill -0` would keep a stopped supervisor "alive".
alive() {
  [ -r "/proc/$1/stat" ] || return 1
  state=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1)
  [ -n "$state" ] && [ "$state" != Z ]
}

supervisor_pid() {
  [ -f "$PIDFILE" ] || return 1
  pid=$(cat "$PIDFILE")
  [ -n "$pid" ] && alive "$pid" && echo "$pid"
}

stop_lagerd() {
  if uses_systemd; then
    systemctl stop lagerd 2>/dev/null
    return 0
  fi
  pid=$(supervisor_pid) || return 0
  kill -TERM "$pid"
  # lagerd finishes its requests in flight first; give it 15 s, as the
  # systemd unit does, then kill the supervisor's whole process group.
  i=0
  while alive "$pid"; do
    i=$((i + 1))
    if [ "$i" -gt 300 ]; then
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid"
      break
    fi
    sleep 0.05
  done
  rm -f "$PIDFILE"
}

# Starts lagerd; on failure says why on stderr and returns 1.
start_lagerd() {
  if uses_systemd; then
    if ! out=$(sh -c 'systemctl daemon-reload && systemctl enable lagerd && systemctl restart lagerd' 2>&1); then
      echo "lager-box: systemd could not start lagerd (see: journalctl -u lagerd): $out" >&2
      return 1
    fi
    echo "init=systemd"
    return 0
  fi
  mkdir -p "$(dirname "$LOG")" "$P/run"
  # Its own session, all descriptors away from ssh: the ssh command returns
  # and the supervisor outlives it.
  if command -v setsid >/dev/null 2>&1; then
    setsid "$LIB/lagerd-supervise" "$P" </dev/null >>"$LOG" 2>&1 &
  else
    nohup "$LIB/lagerd-supervise" "$P" </dev/null >>"$LOG" 2>&1 &
  fi
  # Wait for its pid file, so that a stop right after this finds it.
  i=0
  while ! supervisor_pid >/dev/null; do
    i=$((i + 1))
    if [ "$i" -gt 100 ]; then
      echo "lager-box: lagerd-supervise did not start; see $LOG" >&2
      return 1
    fi
    sleep 0.05
  done
  echo "init=supervisor"
}

# The dedicated user: in group lager (the udev rules' group) and the groups
# that own serial ports on Debian, so that lagerd needs no root.
ensure_user() {
  getent group lager >/dev/null 2>&1 || try "could not create group lager" groupadd --system lager
  if ! id lager >/dev/null 2>&1; then
    try "could not create user lager" useradd --system --gid lager --home-dir /etc/lager \
      --no-create-home --shell /usr/sbin/nologin lager
  fi
  for g in dialout plugdev; do
    getent group "$g" >/dev/null 2>&1 && usermod -a -G "$g" lager
  done
  return 0
}

# Copies through a temporary name in the destination directory, so that a
# reader never sees half a file and a full disk leaves the old one.
put() {
  try "could not write $2" cp "$1" "$2.new"
  try "could not write $2" mv -f "$2.new" "$2"
}

activate() {
  staging=${3:?staging directory}
  config=${4:-keep}
  [ -f "$staging/lagerd" ] || fail "the upload has no lagerd; run the lager command again"
  chmod 755 "$staging/lagerd" "$staging/lagerd-supervise" "$staging/lager-box.sh"
  new=$(version_of "$staging/lagerd")
  if [ -z "$new" ]; then
    why=$("$staging/lagerd" --version 2>&1 | head -n 1)
    rm -rf "$staging"
    fail "the new lagerd does not run on this box ($(uname -m)): ${why:-no version printed}; nothing was changed"
  fi
  echo "new_version=$new"
  try "could not create lager's directories" mkdir -p "$BIN" "$LIB" "$ETC" \
    "$(dirname "$MODPROBE")" "$(dirname "$UDEV")"
  put "$staging/lagerd" "$BIN/.lagerd.staged"
  put "$staging/lagerd-supervise" "$LIB/lagerd-supervise"
  put "$staging/lager-box.sh" "$LIB/lager-box.sh"
  put "$staging/blacklist-usbtmc.conf" "$MODPROBE"
  put "$staging/99-lager-instruments.rules" "$UDEV"
  if [ "$config" = replace ] || [ ! -f "$ETC/lagerd.conf" ]; then
    put "$staging/lagerd.conf" "$ETC/lagerd.conf"
  fi
  if uses_systemd; then
    ensure_user
    put "$staging/lagerd.service" "$UNIT"
    chown -R lager:lager "$ETC"
    # New rules apply to instruments already plugged in too.
    udevadm control --reload >/dev/null 2>&1 && udevadm trigger --subsystem-match=usb >/dev/null 2>&1
  fi
  # Keep the running binary as lagerd.prev (a hard link costs no space),
  # then swap the new one in with one rename.
  [ -f "$BIN/lagerd" ] && { ln -f "$BIN/lagerd" "$BIN/lagerd.prev" 2>/dev/null || put "$BIN/lagerd" "$BIN/lagerd.prev"; }
  try "could not install lagerd in $BIN" mv -f "$BIN/.lagerd.staged" "$BIN/lagerd"
  rm -rf "$staging"
  stop_lagerd
  if ! start_lagerd; then
    # Never leave the box without a running lagerd: put the old one back.
    if [ -f "$BIN/lagerd.prev" ]; then
      ln -f "$BIN/lagerd" "$BIN/lagerd.failed" 2>/dev/null
      put "$BIN/lagerd.prev" "$BIN/lagerd"
      start_lagerd >/dev/null
    fi
    fail "the new lagerd did not start, so the previous one was put back"
  fi
}

rollback() {
  [ -f "$BIN/lagerd.prev" ] || fail "there is no previous lagerd in $BIN to roll back to"
  ln -f "$BIN/lagerd" "$BIN/lagerd.failed" 2>/dev/null
  put "$BIN/lagerd.prev" "$BIN/lagerd"
  chmod 755 "$BIN/lagerd"
  echo "version=$(version_of "$BIN/lagerd")"
  stop_lagerd
  start_lagerd || fail "the previous lagerd did not start either"
}

uninstall() {
  keep=${3:-0}
  stop_lagerd
  if uses_systemd; then
    systemctl disable lagerd >/dev/null 2>&1
    rm -f "$UNIT"
    systemctl daemon-reload
  fi
  rm -f "$BIN/lagerd" "$BIN/lagerd.prev" "$BIN/lagerd.failed" "$BIN/.lagerd.staged" \
    "$MODPROBE" "$UDEV" "$LOG"
  rm -rf "$LIB"
  if [ "$keep" = 1 ]; then
    # Kept configuration must not keep a reservation (locking.md A.4).
    rm -f "$ETC/lock.json" "$ETC/lock.json.flock" "$ETC"/lock.json.corrupt-*
    echo "kept=$ETC"
  else
    rm -rf "$ETC"
    if uses_systemd && id lager >/dev/null 2>&1; then userdel lager 2>/dev/null; fi
  fi
  echo "uninstalled=yes"
}

case "$action" in
  probe) probe ;;
  activate) activate "$@" ;;
  rollback) rollback ;;
  uninstall) uninstall "$@" ;;
  *) fail "unknown action '$action' (probe, activate, rollback, uninstall)" ;;
esac
