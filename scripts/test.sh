#!/usr/bin/env bash
# The test command. Installs what the tests need (scripts/setup-tests.sh: the Python peers from
# PyPI into target/pyenv, Chromium, ffmpeg, libudev-dev and openssl from Debian), then runs every
# test in the workspace in one build with the features in scripts/features.sh (the LeRobot export,
# the fleet over Zenoh, the VLM client's HTTPS and the native gamepad), then the bridge's r2r
# backend (scripts/test-r2r.sh), then the firmware's tests (scripts/test-firmware.sh: the control
# core on the host and on QEMU's Cortex-M4F; adds the Rust target and qemu-system-arm itself).
# The later scripts reuse the workspace build. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-tests.sh
source scripts/features.sh

cargo test --workspace --features "$REFLEX_FEATURES" "$@"
scripts/test-r2r.sh "$@"
scripts/test-firmware.sh "$@"
