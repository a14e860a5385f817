#!/usr/bin/env bash
# Runs the r2r candidate of `reflex bench ros` (built by scripts/build-r2r-echo.sh).
cd "$(dirname "$0")/.."
source scripts/r2r-env.sh
exec target/release/r2r-echo "$@"
