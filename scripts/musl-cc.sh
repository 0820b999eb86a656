# Sourced by the scripts that build x86_64 musl binaries with plain cargo
# (bench.sh, bench-instruments.sh, bench-diagnose.sh). lagerd links libusb
# (rusb's vendored C sources), and cc-rs compiles it with musl-gcc, whose
# include path holds no kernel headers (linux/magic.h, linux/usbdevice_fs.h).
# This installs musl-tools and the kernel headers when missing (apt) and
# points musl-gcc at the kernel headers only, after its own: glibc's headers
# stay out. scripts/build-release.sh needs none of this (zig cc has both).
musl_cc_setup() {
  local root kh arch sudo=""
  root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  if ! command -v x86_64-linux-musl-gcc >/dev/null || [ ! -f /usr/include/linux/usbdevice_fs.h ]; then
    echo "musl-cc: installing musl-tools and linux-libc-dev (apt)" >&2
    { $sudo apt-get install -y -qq musl-tools linux-libc-dev >/dev/null 2>&1 \
      || { $sudo apt-get update -qq && $sudo apt-get install -y -qq musl-tools linux-libc-dev >/dev/null 2>&1; }; } \
      || { echo "musl-cc: cannot install musl-tools linux-libc-dev; install them to build lagerd for musl" >&2; return 1; }
  fi
  arch="$(gcc -dumpmachine 2>/dev/null || echo x86_64-linux-gnu)"
  kh="${CARGO_TARGET_DIR:-$root/target}/musl-kernel-headers"
  mkdir -p "$kh"
  ln -sfn /usr/include/linux "$kh/linux"
  ln -sfn /usr/include/asm-generic "$kh/asm-generic"
  ln -sfn "/usr/include/$arch/asm" "$kh/asm"
  export CFLAGS_x86_64_unknown_linux_musl="-idirafter $kh"
}
