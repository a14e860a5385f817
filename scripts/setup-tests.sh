#!/usr/bin/env bash
# Installs what the tests and the lints need and are missing: the outside programs the interop
# tests compare against (MuJoCo, ROS's URDF parser, the safetensors reference library, rclpy and
# ROS 2 messages, Cyclone DDS, Playwright, pyarrow, pandas and `datasets`: from PyPI, into
# target/pyenv) and Debian's packages (iproute2 and util-linux for the network namespaces,
# ffmpeg, Chromium, libudev-dev for the gamepad feature, openssl), each only when its check
# fails. Run by scripts/test.sh and, before the lints, by .ci/run. Debian's packages are
# installed when run as root; otherwise it names them and fails.
set -euo pipefail
cd "$(dirname "$0")/.."

py=target/pyenv
if ! "$py/bin/python" -c 'import mujoco, urdf_parser_py, safetensors.numpy' 2>/dev/null; then
  echo "== installing test peers into $py (mujoco, urdf-parser-py, safetensors)"
  python3 -m venv "$py"
  "$py/bin/pip" install --quiet --disable-pip-version-check \
    'mujoco==4.0.0' 'urdf-parser-py==0.0.4' 'safetensors==0.8.0' 'numpy==2.4.6'
fi
# DDS peers for the bridge's interop tests: rclpy on Fast DDS (a Kilted build from PyPI) with the
# message packages the bridge speaks, and Eclipse Cyclone DDS.
if ! "$py/bin/python" -c 'import rclpy, std_srvs.srv, diagnostic_msgs.msg, trajectory_msgs.msg, sensor_msgs.msg, cyclonedds' 2>/dev/null; then
  echo "== installing DDS test peers into $py (rclpy, message packages, cyclonedds)"
  "$py/bin/pip" install --quiet --disable-pip-version-check \
    'ros-rclpy[fastrtps]==9.1.2' 'ros-std-msgs==5.5.1' 'ros-sensor-msgs==5.5.1' \
    'ros-geometry-msgs==5.5.1' 'ros-std-srvs==5.5.1' 'ros-trajectory-msgs==5.5.1' \
    'ros-diagnostic-msgs==5.5.1' 'cyclonedds==11.0.1'
fi

# Debian packages some tests need: installed when missing (as root), else a message saying which.
# apt_need WHY PACKAGE... ; run only when the check before it failed.
apt_need() {
  local why=$1
  shift
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "== installing $* ($why)"
    # A fresh machine may have no package lists yet: fetch them once and try again.
    apt-get install -y -qq "$@" >/dev/null 2>&1 \
      || { apt-get update -qq >/dev/null && apt-get install -y -qq "$@" >/dev/null; }
  else
    echo "$why needs: apt-get install $*" >&2
    exit 1
  fi
}

# The DDS tests run in their own network namespace (loopback only): `unshare` and `ip`; the
# fleet test puts each actor in a namespace of its own joined by a veth pair (`nsenter`).
if ! command -v ip >/dev/null || ! command -v unshare >/dev/null || ! command -v nsenter >/dev/null; then
  apt_need "the DDS tests' loopback-only namespace" iproute2 util-linux
fi

# The LeRobot export's test (the `lerobot` feature): the system's ffmpeg records the sessions'
# camera streams and encodes the dataset's AV1 videos; pyarrow, pandas and Hugging Face
# `datasets` (PyPI) read the dataset back as LeRobot does.
if ! "$py/bin/python" -c 'import pyarrow, pandas, datasets' 2>/dev/null; then
  echo "== installing dataset readers into $py (pyarrow, datasets)"
  "$py/bin/pip" install --quiet --disable-pip-version-check \
    'pyarrow==26.0.1' 'datasets==5.2.0' 'pandas==3.1.1'
fi
if ! command -v ffmpeg >/dev/null || ! command -v ffprobe >/dev/null; then
  apt_need "teleop sessions' camera recordings and the LeRobot export" ffmpeg
fi

# The teleop page's browser test: Debian's Chromium, driven by PyPI's Playwright (its own browser
# download does not work here; the test points it at /usr/bin/chromium).
if ! "$py/bin/python" -c 'import playwright' 2>/dev/null; then
  echo "== installing playwright into $py"
  "$py/bin/pip" install --quiet --disable-pip-version-check 'playwright==1.56.0'
fi
if [ ! -x /usr/bin/chromium ]; then
  apt_need "the teleop page's browser test" chromium
fi

# The native gamepad (`reflex-teleop`'s `gamepad` feature, gilrs) builds against libudev.
if ! command -v pkg-config >/dev/null || ! pkg-config --exists libudev; then
  apt_need "the native gamepad (the gamepad feature)" libudev-dev pkg-config
fi

if ! command -v openssl >/dev/null; then
  apt_need "the HTTPS test (it makes its certificates with openssl)" openssl
fi
