#!/usr/bin/env bash
# Builds the r2r candidate of `reflex bench ros` (tests/interop/r2r_echo) against the PyPI
# ROS 2 packages in target/pyenv (scripts/test.sh installs them), with no ROS install: r2r needs
# ROS_DISTRO (jazzy: the newest distro r2r 0.9.7 knows; the PyPI packages are Kilted builds whose
# C API it accepts), AMENT_PREFIX_PATH, libclang (libclang-dev), and a librmw_implementation.so,
# which the PyPI packages lack: a link to librmw_fastrtps_cpp.so stands in (Fast DDS is the
# only middleware installed). Prints the wrapper to run it with: scripts/r2r-echo.sh.
#
# Where ROS 2 is sourced, plain `cargo build --release` in tests/interop/r2r_echo does it.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$PWD/target/pyenv
[ -d "$venv/include/rcl" ] || { echo "$venv has no ROS 2 headers: run scripts/test.sh first" >&2; exit 1; }
if ! ls /usr/lib/llvm-*/lib/libclang.so >/dev/null 2>&1; then
  apt-get install -y --no-install-recommends libclang-dev >/dev/null
fi
ln -sf librmw_fastrtps_cpp.so "$venv/lib/librmw_implementation.so"
source scripts/r2r-env.sh
ROS_DISTRO=jazzy CMAKE_PREFIX_PATH=$venv \
IDL_PACKAGE_FILTER="std_msgs;sensor_msgs;geometry_msgs;builtin_interfaces;rcl_interfaces;action_msgs;unique_identifier_msgs;service_msgs;type_description_interfaces;rosgraph_msgs;lifecycle_msgs" \
  cargo build --release --manifest-path tests/interop/r2r_echo/Cargo.toml --target-dir target
echo "built target/release/r2r-echo; run it with scripts/r2r-echo.sh"
