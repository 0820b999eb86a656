#!/usr/bin/env bash
# Puts lager on a bare box from a checkout, in one command: asks the box its
# architecture over ssh, builds the static lagerd for it and a lager for this
# machine (scripts/build-release.sh; incremental when they are up to date),
# then runs `lager install`, which copies lagerd and the box files, starts it
# (systemd, else lagerd-supervise) and waits for /status.
#
#   scripts/setup_and_deploy_box.sh HOST[:PORT] [--user USER] [--name NAME] [-- INSTALL-OPTIONS...]
#
# HOST is an IP address or host name that your ssh reaches (~/.ssh/config
# applies; LAGER_SSH replaces the ssh command); PORT is lagerd's HTTP port
# when it is not 9000 (give lagerd the same with -- --listen). --name also
# saves the box for later commands (`lager boxes add`). Options after -- go to
# `lager install` (e.g. --listen 0.0.0.0:9000, --prefix /srv/lager).
# Exit status: lager install's, or 2 on a usage error.
set -euo pipefail
usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; }

host="" user="" name=""
while [ $# -gt 0 ]; do
  case "$1" in
    --user) [ $# -ge 2 ] || { usage >&2; exit 2; }; user="$2"; shift 2 ;;
    --name) [ $# -ge 2 ] || { usage >&2; exit 2; }; name="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    --) shift; break ;;
    -*) echo "setup_and_deploy_box: unknown option '$1'" >&2; usage >&2; exit 2 ;;
    *) [ -z "$host" ] || { echo "setup_and_deploy_box: one HOST only" >&2; exit 2; }; host="$1"; shift ;;
  esac
done
[ -n "$host" ] || { usage >&2; exit 2; }
box="$host" port=""
case "$host" in
  *:*:*) ;; # an IPv6 address without a port
  *:*) port="${host##*:}"; host="${host%:*}" ;;
esac
cd "$(dirname "$0")/.."

arch_of() {
  case "$1" in
    x86_64|amd64) echo x86_64 ;;
    aarch64|arm64) echo aarch64 ;;
    armv7l|armv7|armv8l) echo armv7 ;;
    *) return 1 ;;
  esac
}

read -r -a ssh <<<"${LAGER_SSH:-ssh}"
login=()
[ -n "$user" ] && login=(-l "$user")
echo "asking $host for its architecture over ssh..."
machine=$("${ssh[@]}" -o BatchMode=yes -o ConnectTimeout=10 "${login[@]}" "$host" uname -m) ||
  { echo "setup_and_deploy_box: cannot run 'uname -m' on $host over ssh; check that \`ssh ${user:+$user@}$host\` works" >&2; exit 1; }
box_arch=$(arch_of "$machine") ||
  { echo "setup_and_deploy_box: $host is a '$machine' machine; lager builds lagerd for x86_64, aarch64 and armv7 only" >&2; exit 1; }
here_arch=$(arch_of "$(uname -m)") ||
  { echo "setup_and_deploy_box: this machine ($(uname -m)) cannot run a lager from build-release.sh" >&2; exit 1; }
targets=$box_arch
[ "$here_arch" = "$box_arch" ] || targets="$here_arch,$box_arch"
echo "building lagerd for $box_arch and lager for $here_arch (scripts/build-release.sh --targets $targets)..."
scripts/build-release.sh --targets "$targets" >/dev/null

dist="${CARGO_TARGET_DIR:-target}/dist"
lager="$dist/$here_arch/lager"
if [ -n "$name" ]; then
  "$lager" boxes add --name "$name" --ip "$host" --user "${user:-$(id -un)}" ${port:+--port "$port"} --yes
  box="$name"
fi
exec "$lager" install --box "$box" ${user:+--user "$user"} --dist "$dist" "$@"
