"""`ros2 launch` of the installed launch files, as a user types it.

Needs ros2launch (a ROS 2 install); elsewhere skipped, and test_launch_support.py checks
the same behaviour through the helpers and the files' source.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("ros2launch", reason="ros2launch is not installed: `ros2 launch` comes with a ROS 2 "
                                         "install; test_launch_support.py checks the launch files statically")
pytestmark = [pytest.mark.ros, pytest.mark.slow]


def _ros2_launch(args: list[str], seconds: float, tmp_path: Path) -> tuple[int, str]:
    """Run `ros2 launch sharpeye_ros ...` for at most ``seconds`` (then SIGINT); code and output."""
    ros2 = shutil.which("ros2")
    assert ros2, "ros2launch is importable but the ros2 command is not on PATH"
    env = {**os.environ, "ROS_LOG_DIR": str(tmp_path / "log")}
    try:
        done = subprocess.run([ros2, "launch", "sharpeye_ros", *args], capture_output=True, text=True,
                              timeout=seconds, env=env, cwd=tmp_path)
        return done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as expired:
        out = (expired.stdout or b"").decode() if isinstance(expired.stdout, bytes) else expired.stdout or ""
        return -1, out


def test_show_args_prints_plain_defaults_and_real_choices(tmp_path: Path) -> None:
    for launch_file in ("captioner.launch.py", "demo.launch.py"):
        code, out = _ros2_launch([launch_file, "--show-args"], 60, tmp_path)
        assert code == 0, out
        assert "PathJoin" not in out and "FindPackageShare" not in out and "['', " not in out, out
        assert re.search(r"\(default: '/\S+/share/sharpeye_ros/config/captioner\.yaml'\)", out), out


def test_demo_ends_nonzero_when_the_captioner_dies(tmp_path: Path) -> None:
    empty = tmp_path / "no_model"
    empty.mkdir()
    code, out = _ros2_launch(["demo.launch.py", f"model_path:={empty}"], 180, tmp_path)
    assert code == 1, out
    assert "cannot load model" in out and "/captioner exited with code 1" in out, out
    assert re.search(r"\[synthetic_camera-1\]: process has finished cleanly|"
                     r"synthetic_camera-1\]: process has died", out), "the camera must be stopped too"


@pytest.mark.parametrize("launch_file", ["demo.launch.py", "captioner.launch.py"])
def test_rviz_missing_stops_before_anything_starts(tmp_path: Path, launch_file: str) -> None:
    from ament_index_python.packages import PackageNotFoundError, get_package_prefix

    try:
        get_package_prefix("rviz2")
        pytest.skip("rviz2 is installed here")
    except PackageNotFoundError:
        pass
    code, out = _ros2_launch([launch_file, "rviz:=true", "namespace:=robot1"], 60, tmp_path)
    assert code == 1 and "RViz is not installed" in out and "apt install ros-" in out, out
    assert "process started" not in out, "no node may be left running without RViz"
