# Sourced by scripts/setup, scripts/test and scripts/env.sh: where the virtual environment lives.
# - No ROS 2 sourced: ROS 2 Jazzy comes from PyPI wheels, which exist for CPython 3.11, so
#   prefer that interpreter.
# - A ROS 2 install sourced (ROS_DISTRO set): ROS's documented recipe for Python packages
#   that ROS does not ship: a venv of the system interpreter that ROS was built for, with
#   --system-site-packages so ROS's own Python packages and apt's numpy and OpenCV stay in use.
if [ -n "${ROS_DISTRO:-}" ] && [ -z "${SHARPEYE_FORCE_VENV:-}" ]; then
  SHARPEYE_ROS=1
  SHARPEYE_PYTHON=${SHARPEYE_PYTHON:-python3}
else
  SHARPEYE_ROS=
  if [ -z "${SHARPEYE_PYTHON:-}" ]; then
    if command -v python3.11 >/dev/null 2>&1; then SHARPEYE_PYTHON=python3.11; else SHARPEYE_PYTHON=python3; fi
  fi
fi
_sharpeye_pyver=$("$SHARPEYE_PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
SHARPEYE_VENV="${SHARPEYE_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/sharpeye_ros/venv-${SHARPEYE_ROS:+$ROS_DISTRO-}py$_sharpeye_pyver}"
export SHARPEYE_PYTHON SHARPEYE_VENV SHARPEYE_ROS
