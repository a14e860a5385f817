#!/usr/bin/env bash
# The firmware's tests (called by scripts/test.sh): the control core's tests and property
# tests on the host; its lints on the host and for the board; the board image and the selftest
# image built for thumbv7em-none-eabihf (Cortex-M4F), their flash and RAM printed; the core's
# checks run on the emulated CPU (QEMU's MPS2-AN386, semihosting); then the host's SerialRobot
# against the board image itself on QEMU (UART0 on a pseudo-terminal). Adds the Rust target and
# installs qemu-system-arm from Debian (as root) when missing. Shares the repo's target dir.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/features.sh
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
target=thumbv7em-none-eabihf

if ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
  echo "== adding the Rust target $target"
  rustup target add "$target"
fi
if ! command -v qemu-system-arm >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "== installing qemu-system-arm (the firmware's checks on an emulated Cortex-M4F)"
    apt-get install -y -qq qemu-system-arm >/dev/null 2>&1 \
      || { apt-get update -qq >/dev/null && apt-get install -y -qq qemu-system-arm >/dev/null; }
  else
    echo "the firmware's checks need: apt-get install qemu-system-arm" >&2
    exit 1
  fi
fi

cd firmware
echo "== firmware: the control core on the host"
cargo test "$@"
cargo clippy --all-targets -- -D warnings
echo "== firmware: board and selftest images for $target"
cargo clippy --release --target "$target" -p reflex-fw-board -p reflex-fw-selftest -- -D warnings
cargo build --release --target "$target" -p reflex-fw-board -p reflex-fw-selftest
python3 - "$CARGO_TARGET_DIR/$target/release/reflex-fw-board" <<'PY'
# Flash and RAM of an ELF32 image from its section headers: flash is every allocated section
# that is not written at run time plus .data's initial values; RAM is .data, .bss and .uninit.
import struct, sys
path = sys.argv[1]
elf = open(path, "rb").read()
shoff, = struct.unpack_from("<I", elf, 0x20)
shentsize, shnum, shstrndx = struct.unpack_from("<HHH", elf, 0x2E)
sections = [struct.unpack_from("<IIIIIIIIII", elf, shoff + i * shentsize) for i in range(shnum)]
strtab = sections[shstrndx][4]
name = lambda s: elf[strtab + s[0]:elf.index(b"\0", strtab + s[0])].decode()
ALLOC, WRITE, NOBITS = 0x2, 0x1, 8
flash = ram = 0
for s in sections:
    if not s[2] & ALLOC or s[5] == 0:
        continue
    if s[2] & WRITE:
        ram += s[5]
        if s[1] != NOBITS:
            flash += s[5]
    else:
        flash += s[5]
print(f"board image {path.rsplit('/', 1)[-1]}: flash {flash} bytes, static RAM {ram} bytes")
PY
echo "== firmware: the core's checks on the emulated Cortex-M4F (QEMU mps2-an386)"
cargo run --release --target "$target" -p reflex-fw-selftest
cd ..
echo "== firmware: the host's SerialRobot against the board image on QEMU (UART0 on a pty)"
# QEMU hands the emulated UART's receiver a few kilobytes a second and can pause on a loaded
# machine; a pause past the image's 50 ms watchdog is the emulation's, not the board's, so a
# failed run is tried once more (both runs' output is kept). The same features as the workspace
# tests: their build is reused.
qemu_board() {
  REFLEX_BOARD_IMAGE=$CARGO_TARGET_DIR/$target/release/reflex-fw-board \
    cargo test --workspace --features "$REFLEX_FEATURES" --test qemu_board -- --ignored --nocapture
}
qemu_board || { echo "== the QEMU board test failed once; running it again"; qemu_board; }
