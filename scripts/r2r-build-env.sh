# Sourced: the environment that builds r2r (the bridge's `r2r` backend, and the r2r candidate of
# `reflex bench ros`) against the PyPI ROS 2 packages in target/pyenv (scripts/test.sh installs
# them), with no ROS install. r2r needs ROS_DISTRO (jazzy: the newest distro r2r 0.9.7 knows; the
# PyPI packages are Kilted builds whose C API it accepts), AMENT_PREFIX_PATH, libclang
# (libclang-dev) and a librmw_implementation.so, which the PyPI packages lack: a link to
# librmw_fastrtps_cpp.so stands in (Fast DDS is the only middleware installed). Also sets up the
# run-time environment (scripts/r2r-env.sh).
#
# Where ROS 2 is sourced, none of this is needed: `cargo build --features r2r` does it.
r2r_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
r2r_venv=$r2r_root/target/pyenv
if [ ! -d "$r2r_venv/include/rcl" ]; then
  echo "$r2r_venv has no ROS 2 headers: run scripts/test.sh first" >&2
  return 1 2>/dev/null || exit 1
fi
if ! ls /usr/lib/llvm-*/lib/libclang.so >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "== installing libclang-dev (r2r generates its bindings with it)"
    apt-get install -y -qq --no-install-recommends libclang-dev >/dev/null 2>&1 \
      || { apt-get update -qq >/dev/null \
        && apt-get install -y -qq --no-install-recommends libclang-dev >/dev/null; }
  else
    echo "r2r needs libclang: apt-get install libclang-dev" >&2
    return 1 2>/dev/null || exit 1
  fi
fi
ln -sf librmw_fastrtps_cpp.so "$r2r_venv/lib/librmw_implementation.so"
export ROS_DISTRO=jazzy
export CMAKE_PREFIX_PATH=$r2r_venv
# Only the packages the bridge and the benchmark speak, and what they depend on (tf2_msgs is
# not on PyPI: where it is installed, /tf objects work over r2r too).
export IDL_PACKAGE_FILTER="std_msgs;sensor_msgs;geometry_msgs;builtin_interfaces;trajectory_msgs;std_srvs;diagnostic_msgs;tf2_msgs;rcl_interfaces;action_msgs;unique_identifier_msgs;service_msgs;type_description_interfaces;rosgraph_msgs;lifecycle_msgs"
# shellcheck source=r2r-env.sh
source "$r2r_root/scripts/r2r-env.sh"
