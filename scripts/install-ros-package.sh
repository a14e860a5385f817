#!/usr/bin/env bash
# Installs the reflex_bringup ROS 2 package into PREFIX the way `colcon build` + CMakeLists.txt
# would, without colcon: PREFIX/share/reflex_bringup/{package.xml,launch,config,urdf,sim},
# PREFIX/lib/reflex_bringup/reflex and the ament index marker. Then, with a ROS 2 install:
#   AMENT_PREFIX_PATH=PREFIX:$AMENT_PREFIX_PATH ros2 launch reflex_bringup reflex_bringup.launch.py
#
# Usage: scripts/install-ros-package.sh PREFIX [REFLEX_BINARY]
#        (default binary: target/release/reflex)
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=${1:?usage: $0 PREFIX [REFLEX_BINARY]}
binary=${2:-target/release/reflex}
[ -x "$binary" ] || { echo "$binary is missing: cargo build --release -p reflex-cli" >&2; exit 1; }
share="$prefix/share/reflex_bringup"
mkdir -p "$share" "$prefix/lib/reflex_bringup" "$prefix/share/ament_index/resource_index/packages"
cp launch/package.xml "$share/"
cp -r launch/launch launch/config urdf sim "$share/"
cp "$binary" "$prefix/lib/reflex_bringup/reflex"
: > "$prefix/share/ament_index/resource_index/packages/reflex_bringup"
echo "installed reflex_bringup into $prefix"
