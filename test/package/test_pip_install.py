"""setup.py / setup.cfg package the ROS-free part for `pip install .` on machines without ROS."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_wheel_holds_the_ros_free_library_and_its_commands(tmp_path: Path) -> None:
    # Build from a copy: setuptools writes build/ and *.egg-info next to setup.py, and the
    # repository's build/ belongs to colcon.
    src = tmp_path / "src"
    src.mkdir()
    for name in ("setup.py", "setup.cfg", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "sharpeye_ros", src / "sharpeye_ros", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "models" / "demo", src / "models" / "demo")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"), "."],
        cwd=src, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    (wheel,) = (tmp_path / "dist").glob("sharpeye_ros-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = next(archive.read(n).decode() for n in names if n.endswith("entry_points.txt"))
        metadata = next(archive.read(n).decode() for n in names if n.endswith("METADATA"))
    assert "sharpeye_ros/model/sharpeyes.py" in names
    assert "sharpeye_ros/world/scene.py" in names
    assert "sharpeye_ros/training/train.py" in names
    assert "sharpeye_ros/ros/image_conversion.py" in names
    assert not [n for n in names if "/msg/" in n], "generated messages come only from a colcon build"
    shipped = {n.rsplit("/", 1)[-1] for n in names if "/data/share/sharpeye_ros/models/demo/" in n}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= shipped  # for default_model_path()
    for command in ("sharpeye-train", "sharpeye-evaluate", "sharpeye-convert-llava", "sharpeye-benchmark"):
        assert command in entry_points
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    assert any(line.startswith("Requires-Dist: torch") for line in requires)
    assert not [line for line in requires if "rclpy" in line or "ros-" in line], "ROS comes from a ROS install"


ROS_FREE_CHECK = """
import builtins, configparser, importlib, sys
real_import = builtins.__import__
def no_ros(name, *args, **kwargs):
    if name.split(".")[0] in {"rclpy", "sensor_msgs", "std_msgs", "rosidl_runtime_py"} or name == "sharpeye_ros.msg":
        raise ImportError(f"ROS module {name} imported by a ROS-free tool")
    return real_import(name, *args, **kwargs)
builtins.__import__ = no_ros
config = configparser.ConfigParser()
config.read(sys.argv[1])
for line in config["options.entry_points"]["console_scripts"].splitlines():
    if line.strip():
        name, target = (part.strip() for part in line.split("="))
        module_name, function = target.split(":")
        assert callable(getattr(importlib.import_module(module_name), function, None)), target
        print("ok", name)
"""


def test_console_commands_import_without_ros(tmp_path: Path) -> None:
    """Every console script in setup.cfg names a real main(), importable with no ROS at all."""
    import sharpeye_ros

    package_parent = str(Path(sharpeye_ros.__file__).parent.parent)
    result = subprocess.run([sys.executable, "-c", ROS_FREE_CHECK, str(REPO / "setup.cfg")],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": package_parent})
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("ok ") == 4, result.stdout


def test_every_data_file_of_the_package_is_in_the_wheel() -> None:
    """Files in the package that are not Python are shipped only where setup.cfg's
    package_data names them (CMakeLists.txt installs the whole folder)."""
    import configparser
    import fnmatch

    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    patterns = [(package.replace(".", "/"), pattern.strip())
                for package, value in config["options.package_data"].items()
                for pattern in value.splitlines() if pattern.strip()]
    package = REPO / "sharpeye_ros"
    data = [p.relative_to(REPO).as_posix() for p in package.rglob("*")
            if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts]
    assert data, "the package ships data files (the model's word lists)"
    shipped = [f for f in data if any(fnmatch.fnmatch(f, f"{folder}/{pattern}") for folder, pattern in patterns)]
    assert shipped == data
