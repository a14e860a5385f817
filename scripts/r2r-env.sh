# Sourced: the environment an r2r program built against target/pyenv's PyPI ROS 2 packages
# needs at run time (their libraries, the rmw, and libpython, which the packages' Python
# type-support libraries link against), with discovery kept on this machine.
venv=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/target/pyenv
site=$(echo "$venv"/lib/python3*/site-packages)
libs=$(ls -d "$site"/*.libs 2>/dev/null | tr '\n' ':')
export AMENT_PREFIX_PATH=$venv
export LD_LIBRARY_PATH=$venv/lib:$libs${LD_LIBRARY_PATH:-}
export RMW_IMPLEMENTATION=rmw_fastrtps_cpp
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
pylib=$(ls /usr/lib/x86_64-linux-gnu/libpython3.*.so* 2>/dev/null | head -1)
[ -n "$pylib" ] && export LD_PRELOAD=$pylib
