#!/usr/bin/env bash
# Builds and runs every coverage-guided fuzz target in fuzz/ (cargo-fuzz,
# libFuzzer, AddressSanitizer) and prints executions per target. Exits 1
# if any target crashed, hung or ran out of memory (the input is kept in
# fuzz/artifacts/<target>/), 3 if the targets could not be built.
#
#   scripts/fuzz.sh                  every target, 60 s each
#   scripts/fuzz.sh --time 600 lock_file router   named targets, 10 min each
#   scripts/fuzz.sh --ci             every target, 150 s of fuzzing in all
#   scripts/fuzz.sh --update-corpus  add what the run found to fuzz/corpus/
#                                    and minimize it (cargo fuzz cmin)
#
# Targets are discovered with `cargo fuzz list`, so a new [[bin]] in
# fuzz/Cargo.toml is run without touching this script. Per target,
# fuzz/dicts/<target>.dict is passed as -dict, and fuzz/args/<target> may
# add libFuzzer flags (one per line). A run starts from the committed
# corpus fuzz/corpus/<target>/ but writes new inputs to a scratch dir, so
# the checkout stays clean unless --update-corpus is given.
#
# Toolchain: libFuzzer needs nightly-only rustc flags (-Zsanitizer,
# coverage instrumentation). On a stable toolchain RUSTC_BOOTSTRAP=1 lets
# rustc accept them; this script sets it. See RELIABILITY.md.
set -euo pipefail
cd "$(dirname "$0")/.."

time_each=60
ci=0
update=0
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --time) time_each="$2"; shift 2 ;;
    --ci) ci=1; shift ;;
    --update-corpus) update=1; shift ;;
    -h|--help) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "fuzz.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done

export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz.sh: installing cargo-fuzz (cargo install cargo-fuzz --locked)" >&2
  cargo install cargo-fuzz --locked
fi

cd fuzz
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo fuzz list)
fi
if [ ${#targets[@]} -eq 0 ]; then
  echo "fuzz.sh: no fuzz targets found in fuzz/Cargo.toml" >&2
  exit 3
fi
if [ "$ci" -eq 1 ]; then
  # The whole CI budget is 150 s of fuzzing, split evenly, 5 s at least.
  time_each=$(( 150 / ${#targets[@]} ))
  [ "$time_each" -lt 5 ] && time_each=5
fi

scratch=$(mktemp -d "${TMPDIR:-/tmp}/lager-fuzz.XXXXXX")
# The targets' own state dirs (lock files, archives, the router's state):
# on tmpfs when there is one, and this run's alone, so a second fuzz.sh
# (another checkout, CI beside a long run) never removes them mid-run.
state_base=/dev/shm
[ -d "$state_base" ] || state_base="${TMPDIR:-/tmp}"
LAGER_FUZZ_SCRATCH=$(mktemp -d "$state_base/lager-fuzz-state.XXXXXX")
export LAGER_FUZZ_SCRATCH
trap 'rm -rf "$scratch" "$LAGER_FUZZ_SCRATCH"' EXIT
echo "fuzz.sh: building ${#targets[@]} targets with AddressSanitizer ($(cargo fuzz --version))"
build_started=$(date +%s)
if ! cargo fuzz build >"$scratch/build.log" 2>&1; then
  tail -40 "$scratch/build.log" >&2
  echo "fuzz.sh: the fuzz targets do not build" >&2
  exit 3
fi
echo "fuzz.sh: built in $(( $(date +%s) - build_started )) s; ${time_each} s per target"

failed=()
rows=()
for target in "${targets[@]}"; do
  corpus="corpus/$target"
  mkdir -p "$corpus" "$scratch/$target"
  extra=()
  [ -f "dicts/$target.dict" ] && extra+=(-dict="dicts/$target.dict")
  if [ -f "args/$target" ]; then
    while IFS= read -r line; do
      case "$line" in ''|'#'*) ;; *) extra+=("$line") ;; esac
    done < "args/$target"
  fi
  flags=(-max_total_time="$time_each" -timeout=25 -print_final_stats=1 "${extra[@]}")
  asan="${ASAN_OPTIONS:-}"
  # Targets with background threads (simulators, sessions) allocate across
  # runs: LeakSanitizer, per run and at exit, would report those as leaks.
  if printf '%s\n' "${extra[@]}" | grep -qx -- '-detect_leaks=0'; then
    asan="detect_leaks=0${asan:+:$asan}"
  fi
  log="$scratch/$target.log"
  echo "fuzz.sh: $target for ${time_each} s"
  status=0
  ASAN_OPTIONS="$asan" nice cargo fuzz run "$target" "$scratch/$target" "$corpus" -- "${flags[@]}" \
    >"$log" 2>&1 || status=$?
  # libFuzzer's last words: "Done N runs in S second(s)" and the final stats.
  # A crash before the first stats line leaves these empty, and must still
  # reach the report below (grep finding nothing is not the script's end).
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  secs=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -1)
  cov=$({ grep -o 'cov: [0-9]*' "$log" || true; } | tail -1 | cut -d' ' -f2)
  rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log" | tail -1)
  verdict=ok
  if [ "$status" -ne 0 ]; then
    verdict="FAILED (exit $status)"
    failed+=("$target")
    echo "fuzz.sh: $target failed; its log:" >&2
    # The panic's message is the line after "panicked at".
    grep -E -A1 'panicked|ERROR|SUMMARY|Test unit written|Base64' "$log" | head -30 >&2 ||
      tail -30 "$log" >&2
  fi
  rows+=("$(printf '%-16s %12s %6s %8s %6s %8s  %s' "$target" "${runs:-?}" "${secs:-?}" \
    "$(( ${runs:-0} / (${secs:-0} > 0 ? ${secs:-1} : 1) ))" "${cov:-?}" "${rss:-?}" "$verdict")")
  rm -rf "${LAGER_FUZZ_SCRATCH:?}"/lager-fuzz-"$target"-* 2>/dev/null || true
  if [ "$update" -eq 1 ] && [ "$status" -eq 0 ]; then
    cp -n "$scratch/$target"/* "$corpus"/ 2>/dev/null || true
    ASAN_OPTIONS="$asan" cargo fuzz cmin "$target" "$corpus" -- "${extra[@]}" >"$log.cmin" 2>&1 ||
      echo "fuzz.sh: cmin of $target failed (see $log.cmin)" >&2
    echo "fuzz.sh: $target corpus now $(find "$corpus" -type f | wc -l) inputs"
  fi
done

echo
printf '%-16s %12s %6s %8s %6s %8s  %s\n' target executions secs exec/s cov rss_mb verdict
printf '%s\n' "${rows[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz.sh: crashed: ${failed[*]} (inputs in fuzz/artifacts/<target>/; replay with" \
    "RUSTC_BOOTSTRAP=1 cargo fuzz run <target> <file> in fuzz/)" >&2
  exit 1
fi
