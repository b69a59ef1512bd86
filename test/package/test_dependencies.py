"""package.xml declares what the code imports, and nothing it does not.

Every third-party module imported anywhere in the repository (package, launch files,
scripts, tests; ``pytest.importorskip`` included) must be in :data:`ROSDEP`, which maps it
to its rosdep key and the dependency tag that key needs, or says why it has no key and
where it is installed instead. An import missing from the table fails, so a new
dependency cannot slip in undeclared. The keys were read from ros/rosdistro
(``rosdep/base.yaml``, ``rosdep/python.yaml``, ``humble/`` and ``jazzy/distribution.yaml``;
commit 8468e88, 2026-08-22).
"""

from __future__ import annotations

import ast
import configparser
import re
import sys
from pathlib import Path
from typing import NamedTuple, Optional

import pytest

REPO = Path(__file__).resolve().parents[2]
RUN, TEST, OPTIONAL, PIP = "exec_depend", "test_depend", "optional", "pip"


class Dep(NamedTuple):
    """How one imported module reaches a ROS install: rosdep ``key`` declared with ``tag``;
    or ``tag`` OPTIONAL (lazily imported by a tool, not declared) or PIP (no usable key:
    requirements/ros.txt or the README installs it), with the reason in ``why``."""

    key: Optional[str]
    tag: str
    why: str = ""


ROSDEP: dict[str, Dep] = {
    # ROS packages (jazzy/ and humble/distribution.yaml)
    "rclpy": Dep("rclpy", RUN),
    "sensor_msgs": Dep("sensor_msgs", "depend"),
    "std_msgs": Dep("std_msgs", "depend"),
    "builtin_interfaces": Dep("builtin_interfaces", RUN),
    "visualization_msgs": Dep("visualization_msgs", RUN),
    "diagnostic_msgs": Dep("diagnostic_msgs", RUN),
    "vision_msgs": Dep("vision_msgs", RUN),  # the detections topic; imported guarded
    "colcon_core": Dep("python3-colcon-common-extensions", TEST),  # the stand-in's COLCON_IGNORE check
    "rcl_interfaces": Dep("rcl_interfaces", RUN),
    "ament_index_python": Dep("ament_index_python", RUN),
    "launch": Dep("launch", RUN),
    "launch_ros": Dep("launch_ros", RUN),
    "rosgraph_msgs": Dep("rosgraph_msgs", TEST),
    # The node's lifecycle services come with rclpy.lifecycle; the tests call them.
    "lifecycle_msgs": Dep("lifecycle_msgs", TEST),
    "launch_pytest": Dep("launch_pytest", TEST),
    "ros2launch": Dep("ros2launch", TEST),  # `ros2 launch` in test/launch/test_ros2_launch.py
    # rosdep/base.yaml and python.yaml
    "numpy": Dep("python3-numpy", RUN),
    "cv2": Dep("python3-opencv", RUN),
    "rosbags": Dep("python3-rosbags-pip", RUN),  # record_bag
    "transformers": Dep("python3-transformers-pip", RUN),
    "pytest": Dep("python3-pytest", TEST),
    "yaml": Dep("python3-yaml", TEST),
    "catkin_pkg": Dep("python3-catkin-pkg", TEST),
    # No declared key
    "torch": Dep(None, PIP, "must match the machine (CUDA, Jetson, CPU): python3-torch is an old "
                            "CPU-only build, python3-pytorch-pip PyPI's, without Jetson GPU support"),
    "safetensors": Dep(None, PIP, "no rosdep key; a dependency of transformers"),
    "tokenizers": Dep(None, PIP, "no rosdep key; a dependency of transformers"),
    "mcap": Dep(None, PIP, "no rosdep key; only the tests read MCAP with it"),
    "mcap_ros2": Dep(None, PIP, "no rosdep key (PyPI mcap-ros2-support); tests only"),
    "matplotlib": Dep("python3-matplotlib", OPTIONAL, "evaluate/benchmark reports only"),
    "pycocoevalcap": Dep(None, OPTIONAL, "no rosdep key; the evaluate tool only"),
    "setuptools": Dep(None, OPTIONAL, "setup.py, for `pip install .` without ROS"),
    # The CPU fast path's candidate libraries (setup.cfg's cpu-bench extra), measured side by
    # side by sharpeye_ros/benchmark/libraries.py only: the shipped int8 path is torch's own.
    "torchao": Dep(None, OPTIONAL, "benchmark/libraries.py only"),
    "openvino": Dep(None, OPTIONAL, "benchmark/libraries.py only"),
    "nncf": Dep(None, OPTIONAL, "benchmark/libraries.py only (OpenVINO's quantizer)"),
    "onnxruntime": Dep(None, OPTIONAL, "benchmark/libraries.py only"),
}
# Declared although no module imports them, each for a reason.
DECLARED_UNIMPORTED = {
    "ament_cmake": "build type", "ament_cmake_python": "installs the Python package",
    "rosidl_default_generators": "generates msg/", "rosidl_default_runtime": "the generated messages",
    "ament_cmake_pytest": "CMakeLists.txt find_package() when BUILD_TESTING",
}
# requirements/ros.txt names PyPI distributions, not modules.
DISTRIBUTION = {"mcap_ros2": "mcap-ros2-support"}
SOURCES = ["sharpeye_ros/**/*.py", "launch/*.py", "scripts/*.py", "test/**/*.py", "setup.py"]


def imported_modules(source: str) -> dict[str, bool]:
    """Top-level third-party modules imported by ``source`` -> True when any import of it is
    at module level (False: only inside functions, i.e. lazily)."""
    tree = ast.parse(source)
    found: dict[str, bool] = {}
    lazy_nodes = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                  for n in ast.walk(f) if n is not f}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "importorskip" and node.args and isinstance(node.args[0], ast.Constant)):
            names = [node.args[0].value]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            if top in sys.stdlib_module_names or top in ("__future__", "sharpeye_ros"):
                continue
            found[top] = found.get(top, False) or id(node) not in lazy_nodes
    return found


def repository_imports() -> dict[str, dict[str, bool]]:
    """module -> {repository file: imported at module level}."""
    result: dict[str, dict[str, bool]] = {}
    for pattern in SOURCES:
        for path in sorted(REPO.glob(pattern)):
            for module, eager in imported_modules(path.read_text()).items():
                result.setdefault(module, {})[str(path.relative_to(REPO))] = eager
    return result


def declared() -> dict[str, set[str]]:
    """Dependency tag -> keys declared in package.xml."""
    text = (REPO / "package.xml").read_text()
    text = re.sub(r"<!--.*?-->", "", text, flags=re.S)
    tags: dict[str, set[str]] = {}
    for tag, key in re.findall(r"<(\w+_depend|depend)>\s*([\w-]+)\s*</\1>", text):
        tags.setdefault(tag, set()).add(key)
    return tags


def ros_requirements() -> set[str]:
    """Distribution names in requirements/ros.txt (lower case)."""
    names = set()
    for line in (REPO / "requirements" / "ros.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            names.add(re.split(r"[<>=!~; \[]", line)[0].lower())
    return names


def test_the_scan_sees_every_kind_of_import() -> None:
    found = imported_modules(
        "import numpy as np\nfrom rclpy.node import Node\nimport os\nfrom . import x\n"
        "def f():\n    import matplotlib.pyplot\n    pytest.importorskip('mcap.reader')\n")
    assert found == {"numpy": True, "rclpy": True, "matplotlib": False, "mcap": False}


def test_every_imported_module_has_a_rosdep_entry() -> None:
    missing = {m: sorted(files) for m, files in repository_imports().items() if m not in ROSDEP}
    assert not missing, f"imports with no entry in ROSDEP (give each its rosdep key): {missing}"
    unused = set(ROSDEP) - set(repository_imports())
    assert not unused, f"ROSDEP entries that nothing imports: {sorted(unused)}"


def test_package_xml_declares_each_key_with_its_tag() -> None:
    tags = declared()
    everything = set().union(*tags.values())
    for module, dep in ROSDEP.items():
        if dep.tag in (RUN, TEST, "depend"):
            assert dep.key in tags.get(dep.tag, set()), \
                f"{module}: package.xml needs <{dep.tag}>{dep.key}</{dep.tag}>"
        else:
            assert dep.key not in everything, f"{module}: {dep.key} is declared but marked {dep.tag}"
            assert dep.why, module
    keys = {dep.key for dep in ROSDEP.values()}
    unexplained = everything - keys - set(DECLARED_UNIMPORTED)
    assert not unexplained, f"package.xml declares keys that no code imports: {sorted(unexplained)}"


def test_run_time_code_needs_no_test_only_key() -> None:
    """A module the installed package imports cannot be a test_depend: a robot's
    `rosdep install --dependency-types exec` would not install it."""
    for module, files in repository_imports().items():
        runtime = [f for f in files if f.startswith(("sharpeye_ros/", "launch/"))]
        if runtime and ROSDEP[module].tag == TEST:
            pytest.fail(f"{module} is imported by {runtime} but only a test_depend")


def test_optional_modules_are_imported_lazily() -> None:
    """Undeclared tool dependencies may only be imported inside functions, so that the nodes
    and every other executable start without them."""
    for module, files in repository_imports().items():
        if ROSDEP[module].tag == OPTIONAL:
            eager = [f for f, at_top in files.items() if at_top and f.startswith("sharpeye_ros/")]
            assert not eager, f"{module} is optional but imported at module level in {eager}"


def test_pip_only_modules_are_in_the_ros_requirements() -> None:
    wanted = {DISTRIBUTION.get(m, m) for m, dep in ROSDEP.items() if dep.tag == PIP and m != "torch"}
    missing = wanted - ros_requirements()
    assert not missing, f"requirements/ros.txt lacks {sorted(missing)}"
    # torch is installed by scripts/setup or by hand, for the machine (README).
    assert "torch" not in ros_requirements()
    # scripts/setup runs no rosdep (it needs sudo): the pip keys are installed from the file too.
    pip_keys = {DISTRIBUTION.get(m, m) for m, dep in ROSDEP.items() if (dep.key or "").endswith("-pip")}
    assert pip_keys == {"rosbags", "transformers"} and pip_keys <= ros_requirements()


def test_rviz_is_optional() -> None:
    # RViz (Qt, Ogre) only for `demo.launch.py rviz:=true`, never pulled onto a robot.
    assert not {"rviz2", "rviz_default_plugins"} & set().union(*declared().values())


def test_setup_cfg_requires_what_the_ros_free_library_imports() -> None:
    """`pip install .` (no ROS) installs every module the ROS-free part imports at module level."""
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    required = {re.split(r"[<>=!~; ]", line.strip())[0].lower()
                for line in config["options"]["install_requires"].splitlines() if line.strip()}
    pip_name = {"cv2": "opencv-python-headless", "yaml": "pyyaml"}
    ros_free = ("sharpeye_ros/model/", "sharpeye_ros/world/", "sharpeye_ros/training/",
                "sharpeye_ros/evaluation/", "sharpeye_ros/benchmark/")
    for module, files in repository_imports().items():
        if any(f.startswith(ros_free) and eager for f, eager in files.items()) and \
                ROSDEP[module].key not in {"rclpy", "sensor_msgs", "std_msgs"}:
            assert pip_name.get(module, module) in required, f"setup.cfg install_requires lacks {module}"
