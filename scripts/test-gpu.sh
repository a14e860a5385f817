#!/usr/bin/env bash
# The gpu feature's tests: burn's wgpu backend against its CPU backend (the pixel encoder's
# features and Adam step, a classifier trained on the GPU and judged on the CPU, opening the
# device). Without a GPU they run on Mesa's lavapipe, a Vulkan driver on the CPU; as root on
# Debian this installs it (mesa-vulkan-drivers, libvulkan1) when it is missing. Not part of
# scripts/test.sh: wgpu in the shared test build costs CI about 13 minutes (scripts/features.sh).
# Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -e /usr/share/vulkan/icd.d/lvp_icd.x86_64.json ] \
  || [ ! -e /usr/lib/x86_64-linux-gnu/libvulkan.so.1 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "== installing Mesa's Vulkan drivers (lavapipe) for the gpu tests"
    apt-get install -y -qq mesa-vulkan-drivers libvulkan1 >/dev/null 2>&1 \
      || { apt-get update -qq >/dev/null && apt-get install -y -qq mesa-vulkan-drivers libvulkan1 >/dev/null; }
  else
    echo "the gpu tests need a Vulkan driver: apt-get install mesa-vulkan-drivers libvulkan1" >&2
    exit 1
  fi
fi

cargo test -p reflex-learn -p reflex-classifier --features reflex-learn/gpu,reflex-classifier/gpu \
  --lib "$@" -- gpu
