#!/usr/bin/env bash
# Issue 7: fully static musl release binaries of lagerd and lager.
#
#   scripts/build-release.sh                               x86_64, aarch64 and armv7
#   scripts/build-release.sh --targets x86_64,aarch64      a subset
#
# Installs what it needs, from the registries only (facts behind each step:
# ../shared/notes/cross-builds.md):
#   - rustup's musl std for x86_64 and aarch64. armv7 (hard float) has no std
#     in the registry, so it gets rust-src and is built with
#     -Zbuild-std=std,panic_abort (RUSTC_BOOTSTRAP=1 on the stable toolchain).
#   - ziglang and cargo-zigbuild from PyPI, in a venv under
#     target/release-tools/. `cargo zigbuild` links with `zig cc` and hands it to
#     cc-rs as each target's C cross compiler, so C dependencies (rusb's
#     vendored libusb) build for every target without a Debian cross gcc.
#     Plain `cargo build --target aarch64-...` cannot: cc-rs looks for an
#     aarch64-linux-musl-gcc that does not exist here.
#   - `file` and `readelf` (Debian) for the checks.
# Then per target: `cargo zigbuild --release --locked -p lagerd -p lager` into
# target/<triple>/release/ (armv7: target/build-std/<triple>/release/), checks that each binary is static (`file` says so,
# no INTERP header, no NEEDED libraries) for the right machine, and within the
# size budget of issue 7, copies it to target/dist/<arch>/, and prints a size
# table and the `file` output.
#
# Exit codes: 0 built and checked, 1 an install, build or check failed, 2 usage.
set -euo pipefail

# Issue 7's budgets (aarch64; armv7 must be smaller still, so the same budget
# is a ceiling for it too). x86_64 is the CI host's build and has none.
LAGERD_BUDGET=$((2 * 1024 * 1024))
LAGER_BUDGET=$((1536 * 1024))
# Pinned so that a release build is the same build next month.
ZIGLANG_VERSION=0.17.1
ZIGBUILD_VERSION=0.24.0

usage() { sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "build-release: $*" >&2; exit 1; }

TARGETS=x86_64,aarch64,armv7
while [ $# -gt 0 ]; do
  case "$1" in
    --targets) [ $# -ge 2 ] || { echo "build-release: --targets needs a value, e.g. x86_64,aarch64" >&2; exit 2; }
               TARGETS="$2"; shift 2 ;;
    --targets=*) TARGETS="${1#--targets=}"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "build-release: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
done

triple_of() {
  case "$1" in
    x86_64) echo x86_64-unknown-linux-musl ;;
    aarch64) echo aarch64-unknown-linux-musl ;;
    armv7) echo armv7-unknown-linux-musleabihf ;;
    *) return 1 ;;
  esac
}
# What `file -b` says about each machine.
machine_of() {
  case "$1" in
    x86_64) echo "x86-64" ;;
    aarch64) echo "ARM aarch64" ;;
    armv7) echo "32-bit LSB executable, ARM, EABI5" ;;
  esac
}

ARCHES=()
IFS=, read -r -a requested <<<"$TARGETS"
for arch in "${requested[@]}"; do
  [ -n "$arch" ] || continue
  triple_of "$arch" >/dev/null || { echo "build-release: unknown target '$arch' (known: x86_64, aarch64, armv7)" >&2; exit 2; }
  case " ${ARCHES[*]-} " in *" $arch "*) ;; *) ARCHES+=("$arch") ;; esac
done
[ ${#ARCHES[@]} -gt 0 ] || { echo "build-release: --targets is empty" >&2; exit 2; }

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
TOOLS="$TARGET_DIR/release-tools"
VENV="$TOOLS/venv"
DIST="$TARGET_DIR/dist"
mkdir -p "$TOOLS" "$DIST"

# A developer's RUSTFLAGS would both change the release build and override the
# armv7 target flags set below, so a release build ignores them.
unset RUSTFLAGS CARGO_ENCODED_RUSTFLAGS CARGO_BUILD_RUSTFLAGS

apt_install() {
  command -v apt-get >/dev/null || die "$1 is missing and there is no apt-get to install it; install $* yourself"
  echo "build-release: installing $* (apt)"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"; } >"$TOOLS/apt.log" 2>&1 \
    || { tail -20 "$TOOLS/apt.log" >&2; die "apt-get install $* failed (log: $TOOLS/apt.log)"; }
}

# --- tools -------------------------------------------------------------------
command -v rustup >/dev/null || die "rustup is missing; the musl targets are installed through it"
command -v cargo >/dev/null || die "cargo is missing"
command -v python3 >/dev/null || apt_install python3
command -v file >/dev/null || apt_install file
command -v readelf >/dev/null || apt_install binutils

for arch in "${ARCHES[@]}"; do
  triple="$(triple_of "$arch")"
  if [ "$arch" = armv7 ]; then
    # The registry has no rust-std for this target: build std from source.
    rustup component add rust-src >"$TOOLS/rustup.log" 2>&1 \
      || { cat "$TOOLS/rustup.log" >&2; die "rustup component add rust-src failed"; }
  elif ! grep -qx "$triple" <<<"$(rustup target list --installed)"; then
    echo "build-release: rustup target add $triple"
    rustup target add "$triple" >"$TOOLS/rustup.log" 2>&1 \
      || { cat "$TOOLS/rustup.log" >&2; die "rustup target add $triple failed"; }
  fi
done

stamp="ziglang==$ZIGLANG_VERSION cargo-zigbuild==$ZIGBUILD_VERSION"
if [ "$(cat "$VENV/.installed" 2>/dev/null)" != "$stamp" ]; then
  echo "build-release: installing $stamp into $VENV (pip)"
  rm -rf "$VENV"
  if ! python3 -m venv "$VENV" >"$TOOLS/venv.log" 2>&1; then
    # Debian's python3 ships venv (ensurepip) separately.
    apt_install python3-venv
    rm -rf "$VENV"
    python3 -m venv "$VENV" >"$TOOLS/venv.log" 2>&1 || { cat "$TOOLS/venv.log" >&2; die "python3 -m venv failed"; }
  fi
  "$VENV/bin/pip" install -q --disable-pip-version-check "ziglang==$ZIGLANG_VERSION" "cargo-zigbuild==$ZIGBUILD_VERSION" \
    >"$TOOLS/pip.log" 2>&1 || { tail -20 "$TOOLS/pip.log" >&2; die "pip install $stamp failed (log: $TOOLS/pip.log)"; }
  echo "$stamp" >"$VENV/.installed"
fi
# cargo finds `cargo-zigbuild` on PATH, and cargo-zigbuild finds zig through
# `python3 -m ziglang`, so the venv's python must come first.
export PATH="$VENV/bin:$PATH"
"$VENV/bin/python3" -m ziglang version >/dev/null 2>&1 || die "zig from the ziglang wheel does not run (venv: $VENV; remove it to reinstall)"

# --- build and check ---------------------------------------------------------
failures=0
fail() { echo "build-release: FAIL $*" >&2; failures=$((failures + 1)); }

for arch in "${ARCHES[@]}"; do
  triple="$(triple_of "$arch")"
  log="$DIST/build-$arch.log"
  args=(zigbuild --release --locked -p lagerd -p lager --target "$triple")
  out_dir="$TARGET_DIR"
  envs=()
  if [ "$arch" = armv7 ]; then
    args+=(-Zbuild-std=std,panic_abort)
    # zig brings its own musl crt objects; rustc's self-contained ones for this
    # target would be linked twice (cross-builds.md).
    # Its own target dir: proc-macro2's build script tracks RUSTC_BOOTSTRAP, so
    # sharing the host artifacts (target/release/) with the other targets
    # rebuilt every proc macro on each switch, about 40 s a target.
    out_dir="$TARGET_DIR/build-std"
    envs=(RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR="$out_dir"
          CARGO_TARGET_ARMV7_UNKNOWN_LINUX_MUSLEABIHF_RUSTFLAGS="-C link-self-contained=no")
  fi
  echo "build-release: building $arch ($triple), log $log"
  started=$SECONDS
  if ! env ${envs[@]+"${envs[@]}"} cargo "${args[@]}" >"$log" 2>&1; then
    tail -40 "$log" >&2
    die "cargo ${args[*]} failed for $arch (full log: $log)"
  fi
  echo "build-release: built $arch in $((SECONDS - started)) s"

  mkdir -p "$DIST/$arch"
  for bin in lagerd lager; do
    src="$out_dir/$triple/release/$bin"
    [ -x "$src" ] || { fail "$arch $bin: $src was not built"; continue; }
    what="$(file -b "$src")"
    case "$what" in
      *"statically linked"*|*"static-pie linked"*) ;;
      *) fail "$arch $bin is not static: $what" ;;
    esac
    case "$what" in
      *"$(machine_of "$arch")"*) ;;
      *) fail "$arch $bin is not a $(machine_of "$arch") binary: $what" ;;
    esac
    # Whole outputs in variables: `readelf | grep -q` under pipefail can fail
    # on readelf's SIGPIPE when grep stops reading early.
    headers="$(readelf -lW "$src")"
    dynamic="$(readelf -dW "$src")"
    if grep -q INTERP <<<"$headers"; then
      fail "$arch $bin has a program interpreter (INTERP header), so it is not static"
    fi
    if grep -q NEEDED <<<"$dynamic"; then
      fail "$arch $bin needs shared libraries: $(grep NEEDED <<<"$dynamic" | tr -s ' ' | tr '\n' ' ')"
    fi
    if [ "$arch" = armv7 ] && ! grep -q 'Tag_ABI_VFP_args: VFP registers' <<<"$(readelf -A "$src")"; then
      fail "armv7 $bin is not hard float (no Tag_ABI_VFP_args: VFP registers)"
    fi
    # Copy through a temp name so a reader of dist/ never sees half a binary.
    cp "$src" "$DIST/$arch/.$bin.tmp" && mv -f "$DIST/$arch/.$bin.tmp" "$DIST/$arch/$bin"
  done
done

# --- report ------------------------------------------------------------------
echo
printf '%-8s %-7s %10s %9s %10s  %s\n' arch binary bytes KiB budget ""
for arch in "${ARCHES[@]}"; do
  for bin in lagerd lager; do
    f="$DIST/$arch/$bin"
    [ -f "$f" ] || continue
    bytes=$(stat -c %s "$f")
    kib=$(awk -v b="$bytes" 'BEGIN { printf "%.1f", b / 1024 }')
    budget="-"; verdict=""
    if [ "$arch" != x86_64 ]; then
      if [ "$bin" = lagerd ]; then limit=$LAGERD_BUDGET; else limit=$LAGER_BUDGET; fi
      budget="$((limit / 1024)) KiB"
      if [ "$bytes" -le "$limit" ]; then verdict=ok; else verdict=OVER; fail "$arch $bin is $bytes bytes, over its budget of $limit"; fi
    fi
    printf '%-8s %-7s %10s %9s %10s  %s\n' "$arch" "$bin" "$bytes" "$kib" "$budget" "$verdict"
  done
done
echo
for arch in "${ARCHES[@]}"; do
  for bin in lagerd lager; do
    f="$DIST/$arch/$bin"
    [ -f "$f" ] && echo "${f#"$ROOT"/}: $(file -b "$f")"
  done
done
echo
if [ "$failures" -gt 0 ]; then
  echo "build-release: $failures check(s) failed" >&2
  exit 1
fi
echo "build-release: ${ARCHES[*]} built, static, in $DIST"
