"""The package is one valid ROS 2 package, and the tests run against its install space."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_package_xml_is_valid_format_3_ament_cmake() -> None:
    catkin_pkg = pytest.importorskip("catkin_pkg.package")
    package = catkin_pkg.parse_package(str(REPO / "package.xml"))
    package.validate()
    assert package.name == "sharpeye_ros"
    assert package.package_format == 3
    assert package.get_build_type() == "ament_cmake"
    assert "rosidl_interface_packages" in [group.name for group in package.member_of_groups]


def test_source_tree_has_no_msg_package() -> None:
    # rosidl generates sharpeye_ros.msg at build time; a source folder of that name
    # would shadow it (NOTES: ros2/rosidl_python#141).
    assert not (REPO / "sharpeye_ros" / "msg").exists()


def _msg_fields(path: Path) -> list[tuple[str, str, bool]]:
    """(type, name, has_comment_above) for every field line of a .msg file."""
    fields = []
    commented = False
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line:
            commented = False
            continue
        if line.startswith("#"):
            commented = True
            continue
        match = re.match(r"^([\w/\[\]<=]+)\s+(\w+)", line)
        assert match, f"unparsable line in {path.name}: {raw!r}"
        fields.append((match.group(1), match.group(2), commented))
        # consecutive fields under one comment share it
    return fields


@pytest.mark.parametrize("name", ["Caption", "CaptionRegion"])
def test_every_message_field_is_commented(name: str) -> None:
    fields = _msg_fields(REPO / "msg" / f"{name}.msg")
    assert fields
    uncommented = [field for _, field, commented in fields if not commented]
    assert not uncommented, f"{name}.msg fields without a comment: {uncommented}"


@pytest.mark.ros
def test_tests_import_the_installed_package_not_the_source_tree() -> None:
    import sharpeye_ros
    import sharpeye_ros.msg

    package_dir = Path(sharpeye_ros.__file__).parent  # not resolved: symlink installs keep the install path
    assert (package_dir / "msg" / "_caption.py").exists(), package_dir
    assert Path(sharpeye_ros.msg.__file__).parent.parent == package_dir
    assert package_dir != REPO / "sharpeye_ros"
    assert "site-packages" in package_dir.parts


@pytest.mark.ros
def test_run_from_the_repository_root_the_source_tree_finds_the_installed_messages() -> None:
    # `python -m sharpeye_ros.benchmark...` from the root imports the source tree, which has
    # no generated msg: the package path reaches the installed one for it.
    import subprocess
    import sys

    code = "import sharpeye_ros, sharpeye_ros.msg; print(sharpeye_ros.__file__); print(sharpeye_ros.msg.Caption().reused)"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    package_file, reused = proc.stdout.split()
    assert Path(package_file) == REPO / "sharpeye_ros" / "__init__.py"  # the source's modules come first
    assert reused == "False"


@pytest.mark.ros
@pytest.mark.parametrize("name", ["Caption", "CaptionRegion"])
def test_installed_messages_match_their_definitions(name: str) -> None:
    """Introspection of the generated classes agrees with msg/*.msg (what `ros2 interface show` reads)."""
    import sharpeye_ros.msg

    cls = getattr(sharpeye_ros.msg, name)
    introspected = cls.get_fields_and_field_types()
    declared = [field for _, field, _ in _msg_fields(REPO / "msg" / f"{name}.msg")]
    assert list(introspected) == declared


@pytest.mark.ros
def test_caption_message_field_types() -> None:
    import sharpeye_ros.msg

    fields = sharpeye_ros.msg.Caption.get_fields_and_field_types()
    assert fields["header"] == "std_msgs/Header"
    assert fields["regions"] == "sequence<sharpeye_ros/CaptionRegion>"
    assert fields["image_width"] == fields["image_height"] == "uint32"
    region = sharpeye_ros.msg.CaptionRegion.get_fields_and_field_types()
    assert region == {"roi": "sensor_msgs/RegionOfInterest", "score": "float", "phrase": "string"}


@pytest.mark.ros
def test_install_space_layout() -> None:
    """Executables in lib/sharpeye_ros (for ros2 run); launch, config and msg files in share/."""
    prefixes = [Path(p) for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    prefix = next((p for p in prefixes if (p / "share" / "sharpeye_ros" / "package.xml").exists()), None)
    assert prefix is not None, f"sharpeye_ros not found on AMENT_PREFIX_PATH={prefixes}"
    assert (prefix / "share" / "ament_index" / "resource_index" / "packages" / "sharpeye_ros").exists()
    for name in ["captioner", "synthetic_camera", "record_bag", "demo"]:
        exe = prefix / "lib" / "sharpeye_ros" / name
        assert exe.exists() and os.access(exe, os.X_OK), exe
    for rel in ["msg/Caption.msg", "msg/CaptionRegion.msg", "launch/captioner.launch.py", "config/captioner.yaml"]:
        assert (prefix / "share" / "sharpeye_ros" / rel).exists(), rel


def test_every_python_file_parses_as_python_3_10() -> None:
    """Humble runs Python 3.10: no syntax newer than that anywhere (Python 3.10 itself is
    only exercised by scripts/floors, outside this suite)."""
    import ast

    files = [p for pattern in ("sharpeye_ros/**/*.py", "launch/*.py", "test/**/*.py", "scripts/*.py", "setup.py")
             for p in REPO.glob(pattern)]
    assert len(files) > 50
    for path in files:
        ast.parse(path.read_text(), filename=str(path), feature_version=(3, 10))
