#!/usr/bin/env bash
# Builds the r2r candidate of `reflex bench ros` (tests/interop/r2r_echo) against the PyPI
# ROS 2 packages in target/pyenv (scripts/r2r-build-env.sh says how). Run it with
# scripts/r2r-echo.sh.
#
# Where ROS 2 is sourced, plain `cargo build --release` in tests/interop/r2r_echo does it.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/r2r-build-env.sh
cargo build --release --manifest-path tests/interop/r2r_echo/Cargo.toml --target-dir target
echo "built target/release/r2r-echo; run it with scripts/r2r-echo.sh"
