#!/usr/bin/env bash
# The bridge's r2r backend against the same interop tests as the default one: builds reflex-ros
# with its `r2r` feature against the PyPI ROS 2 packages in target/pyenv (scripts/test.sh
# installs them; scripts/r2r-build-env.sh says how), lints it, then runs the rclpy and Cyclone
# DDS interop tests (crates/reflex-jobs/tests/ros_rclpy.rs) and the simulated arm's camera,
# tracker and training tests (ros_sim.rs) with `backend: r2r`.
# It builds with the workspace tests' features (scripts/features.sh) plus `reflex-cli/r2r`, so only
# the crates r2r changes are built again. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/features.sh
source scripts/r2r-build-env.sh
# rcl takes its discovery range from the environment (the tests also run in a loopback-only
# network namespace).
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
echo "== r2r backend: clippy"
cargo clippy --workspace --all-targets --features "$REFLEX_FEATURES,reflex-cli/r2r" -- -D warnings
echo "== r2r backend: interop tests"
REFLEX_ROS_BACKEND=r2r cargo test --workspace --features "$REFLEX_FEATURES,reflex-cli/r2r" \
  --test ros_rclpy --test ros_sim "$@"
