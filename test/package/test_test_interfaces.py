"""vision_msgs, real or the tests' stand-in (test/interfaces/vision_msgs), has the layout the
node writes: the fields of vision_msgs 4.x (Humble, Jazzy) as docs.ros.org documents them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
STAND_IN = REPO / "test" / "interfaces" / "vision_msgs"
# docs.ros.org/en/jazzy/p/vision_msgs/msg/<name>.html (the same in Humble's 4.x).
LAYOUT = {
    "Point2D": {"x": "double", "y": "double"},
    "Pose2D": {"position": "vision_msgs/Point2D", "theta": "double"},
    "BoundingBox2D": {"center": "vision_msgs/Pose2D", "size_x": "double", "size_y": "double"},
    "ObjectHypothesis": {"class_id": "string", "score": "double"},
    "ObjectHypothesisWithPose": {"hypothesis": "vision_msgs/ObjectHypothesis",
                                 "pose": "geometry_msgs/PoseWithCovariance"},
    "Detection2D": {"header": "std_msgs/Header", "results": "sequence<vision_msgs/ObjectHypothesisWithPose>",
                    "bbox": "vision_msgs/BoundingBox2D", "id": "string"},
    "Detection2DArray": {"header": "std_msgs/Header", "detections": "sequence<vision_msgs/Detection2D>"},
}


@pytest.mark.ros
@pytest.mark.parametrize("name", sorted(LAYOUT))
def test_vision_msgs_has_the_documented_fields(name):
    pytest.importorskip("rclpy")
    vision_msgs = pytest.importorskip("vision_msgs.msg")
    fields = getattr(vision_msgs, name).get_fields_and_field_types()
    assert fields == LAYOUT[name]


def test_the_stand_in_declares_every_message_of_the_layout():
    declared = sorted(p.stem for p in (STAND_IN / "msg").glob("*.msg"))
    assert declared == sorted(LAYOUT)
    cmake = (STAND_IN / "CMakeLists.txt").read_text()
    assert all(f'"msg/{name}.msg"' in cmake for name in LAYOUT)


def test_a_workspace_build_never_sees_the_stand_in():
    # Its COLCON_IGNORE: `colcon build` in a workspace holding this repository must not build a
    # vision_msgs that would overlay the real one. scripts/setup --test-interfaces builds a copy.
    colcon = pytest.importorskip("colcon_core")
    assert (STAND_IN / "COLCON_IGNORE").exists()
    out = subprocess.run([sys.executable, "-m", "colcon", "--log-base", os.devnull, "list", "--names-only",
                          "--base-paths", str(REPO)], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["sharpeye_ros"], (colcon.__file__, out.stdout, out.stderr)


@pytest.mark.ros
def test_the_installed_vision_msgs_is_the_stand_in_only_when_no_other_is_installed():
    pytest.importorskip("rclpy")
    vision_msgs = pytest.importorskip("vision_msgs.msg")
    ours = (REPO / "install" / "vision_msgs").resolve()
    others = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)
              if p and (Path(p) / "share" / "vision_msgs" / "package.xml").is_file()
              and not Path(p).resolve().is_relative_to(REPO / "install")]
    loaded = Path(vision_msgs.__file__).resolve()
    assert loaded.is_relative_to(ours) == (not others), (loaded, others)
