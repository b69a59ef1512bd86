"""The synthetic camera's parameters and its settings (the mechanism:
:mod:`sharpeye_ros.ros.parameters`).

Pure Python (no rclpy), so that the launch files read the specs without starting ROS.
Rules that need the synthetic world or the image encoders (a known split, a size the scene
generator takes, an encoding) are checked by the node when it builds its feed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Mapping

from sharpeye_ros.ros.parameters import ParamSpec, Settings, index


def _positive(value: float) -> bool:
    return value > 0


# Doubles are dynamically typed, so that "rate:=5" works too.
PARAMETERS: tuple[ParamSpec, ...] = (
    ParamSpec("rate", 5.0, "frames per second, on the node's clock", constraints="a number > 0",
              accept=_positive, dynamic_typing=True),
    ParamSpec("scene_period", 5.0, "seconds each scene is shown before the next one", constraints="a number > 0",
              accept=_positive, dynamic_typing=True),
    ParamSpec("split", "test", "synthetic-world split: train, val, test or small"),
    ParamSpec("start_index", 0, "index of the first scene in the split"),
    ParamSpec("num_scenes", 0, "cycle through this many scenes; 0 = never repeat", constraints=">= 0",
              accept=lambda n: n >= 0),
    ParamSpec("width", 640, "image width in pixels"),
    ParamSpec("height", 480, "image height in pixels"),
    ParamSpec("seed", 0, "world seed (a different world of the same kind)"),
    ParamSpec("encoding", "rgb8", "raw encoding of 'image' (rgb8, bgr8, mono8, yuv422, bayer_rggb8, ...)"),
    ParamSpec("frame_id", "camera_optical_frame", "header.frame_id of the images"),
    ParamSpec("publish_compressed", False, "also publish JPEG on '<image>/compressed'"),
    ParamSpec("jpeg_quality", 90, "JPEG quality 0..100 of '<image>/compressed'", constraints="in 0..100",
              accept=lambda q: 0 <= q <= 100),
)

SPECS: dict[str, ParamSpec] = index(PARAMETERS)


@dataclass(frozen=True)
class CameraSettings(Settings):
    """The camera's parameter values, validated."""

    SPECS: ClassVar[Mapping[str, ParamSpec]] = SPECS
    rate: float = SPECS["rate"].default
    scene_period: float = SPECS["scene_period"].default
    split: str = SPECS["split"].default
    start_index: int = SPECS["start_index"].default
    num_scenes: int = SPECS["num_scenes"].default
    width: int = SPECS["width"].default
    height: int = SPECS["height"].default
    seed: int = SPECS["seed"].default
    encoding: str = SPECS["encoding"].default
    frame_id: str = SPECS["frame_id"].default
    publish_compressed: bool = SPECS["publish_compressed"].default
    jpeg_quality: int = SPECS["jpeg_quality"].default


__all__ = ["PARAMETERS", "SPECS", "CameraSettings"]
