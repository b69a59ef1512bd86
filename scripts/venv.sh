# Sourced by scripts/setup and scripts/env.sh: where the no-ROS virtual environment lives.
# ROS 2 Jazzy's PyPI wheels exist for CPython 3.11, so prefer that interpreter.
if [ -z "${SHARPEYE_PYTHON:-}" ]; then
  if command -v python3.11 >/dev/null 2>&1; then SHARPEYE_PYTHON=python3.11; else SHARPEYE_PYTHON=python3; fi
fi
_sharpeye_pyver=$("$SHARPEYE_PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
SHARPEYE_VENV="${SHARPEYE_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/sharpeye_ros/venv-py$_sharpeye_pyver}"
export SHARPEYE_PYTHON SHARPEYE_VENV
