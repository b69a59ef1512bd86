# Source this file (bash) to use the built package: `source scripts/env.sh`.
# It puts the virtual environment first on PATH (scripts/venv.sh: the no-ROS one, or the
# workspace venv over a sourced ROS 2) and sources the colcon install space, so `python -c "import sharpeye_ros.msg"`
# and the executables in install/sharpeye_ros/lib/sharpeye_ros work.
_sharpeye_repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ ! -f "$_sharpeye_repo/install/setup.bash" ]; then
  echo "sharpeye_ros: not built yet; run scripts/setup first" >&2
  return 1 2>/dev/null || exit 1
fi
source "$_sharpeye_repo/scripts/venv.sh"
export VIRTUAL_ENV="$SHARPEYE_VENV"
export PATH="$SHARPEYE_VENV/bin:$PATH"
source "$_sharpeye_repo/install/setup.bash"
if [ -z "$SHARPEYE_ROS" ]; then
  # The venv is a plain ament prefix without local_setup files: colcon's setup.bash
  # cannot chain it, so it is appended by hand.
  export AMENT_PREFIX_PATH="$AMENT_PREFIX_PATH:$SHARPEYE_VENV"
fi
unset _sharpeye_repo
