#!/usr/bin/env bash
# Issue 7 benchmark (group 9, "deploy"): `lager update` of a box on loopback,
# end to end (target: <= 3 s), with the static release binaries that would
# ship: a real sshd on 127.0.0.1 (run as you, temp host key, temp prefix),
# the real ssh client, lagerd restarted under lagerd-supervise and checked
# through /status. `lager install` of the bare box is timed once too.
#
#   scripts/bench-deploy.sh [--runs N] [--setup]
#
# --setup installs the bare box with scripts/setup_and_deploy_box.sh instead
# of `lager install` (CI does, so that script is run end to end too).
#
# Needs sshd (Debian: openssh-server). Builds target/dist/x86_64/ with
# scripts/build-release.sh. Prints the times and PASS/FAIL against the
# target; exits 0 even when it is missed, 3 if the benchmark could not run.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=10
setup=()
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs="$2"; shift 2 ;;
    --setup) setup=(--setup scripts/setup_and_deploy_box.sh); shift ;;
    *) echo "bench-deploy: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
scripts/build-release.sh --targets x86_64 >/dev/null
cargo build --quiet --release -p lager-bench --bin deploybench
echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)  commit: $(git rev-parse --short HEAD)  load: $(cut -d' ' -f1-3 /proc/loadavg)"
out=$(target/release/deploybench --lager target/dist/x86_64/lager --lagerd target/dist/x86_64/lagerd --runs "$runs" "${setup[@]}") || exit 3
median=$(sed -n 's/^METRIC deploy.update_median_s //p' <<<"$out")
max=$(sed -n 's/^METRIC deploy.update_max_s //p' <<<"$out")
install=$(sed -n 's/^METRIC deploy.install_s //p' <<<"$out")
verdict=$(awk -v m="$max" 'BEGIN { print (m <= 3.0) ? "PASS" : "FAIL" }')
printf '%-40s %-10s %s\n' "lager update, loopback (median / max)" "<= 3 s" "$median s / $max s  $verdict"
printf '%-40s %-10s %s\n' "install of a bare box${setup:+ (setup_and_deploy_box.sh, builds included)}" "-" "$install s"
