#!/usr/bin/env bash
# The test command. Installs the outside programs the interop tests compare against (MuJoCo, ROS's
# URDF parser, the safetensors reference library; from PyPI, into target/pyenv), then runs every
# test in the workspace, then the VLM client's HTTPS test (the `tls` feature; needs the `openssl`
# command, installed from Debian when missing and run as root).
# Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

py=target/pyenv
if ! "$py/bin/python" -c 'import mujoco, urdf_parser_py, safetensors.numpy' 2>/dev/null; then
  echo "== installing test peers into $py (mujoco, urdf-parser-py, safetensors)"
  python3 -m venv "$py"
  "$py/bin/pip" install --quiet --disable-pip-version-check \
    'mujoco==4.0.0' 'urdf-parser-py==0.0.4' 'safetensors==0.8.0' 'numpy==2.4.6'
fi

if ! command -v openssl >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "== installing openssl (the HTTPS test makes its certificates with it)"
    apt-get install -y -qq openssl >/dev/null
  else
    echo "the HTTPS test needs the openssl command: apt-get install openssl" >&2
    exit 1
  fi
fi

cargo test --workspace "$@"
cargo test -p reflex-reward --features tls --test vlm_tls "$@"
