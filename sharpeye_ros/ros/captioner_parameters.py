"""The captioner node's parameters: names, defaults, ranges, descriptions, and its settings.

Pure Python (no rclpy). The node declares :data:`PARAMETERS` and keeps their values as
:class:`CaptionerSettings`, whose construction is their one validation (the mechanism:
:mod:`sharpeye_ros.ros.parameters`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Optional

from sharpeye_ros.ros.parameters import ParamSpec, Settings, index
from sharpeye_ros.ros.parameters import validate as _validate

DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
DTYPES = ("auto", "float32", "float16", "bfloat16", "int8")
IMAGE_TRANSPORTS = ("raw", "compressed")
RELIABILITIES = ("best_effort", "reliable")
TASKS = ("auto", "coco", "detailed")

PARAMETERS: tuple[ParamSpec, ...] = (
    ParamSpec("model_path", "", "Checkpoint directory of the captioning model; empty: the shipped "
              "demo model, which only knows synthetic scenes of coloured shapes.", read_only=True),
    ParamSpec("device", "auto", "Torch device: auto (cuda when available, else cpu), cpu, cuda or "
              "cuda:N.", read_only=True, constraints="auto, cpu, cuda or cuda:N",
              accept=lambda device: DEVICE_PATTERN.match(device) is not None),
    ParamSpec("dtype", "auto", "Model precision: float32, float16, bfloat16, or int8 (the CPU's fast "
              "path: int8 Linear layers, quantized at load); auto: float16 on CUDA, int8 on an x86 "
              "CPU with AVX2 or newer for a model of at least 20 M int8-able weights, float32 "
              "otherwise. The log says at start-up which one runs.",
              read_only=True, choices=DTYPES),
    ParamSpec("image_transport", "raw", "raw: subscribe to sensor_msgs/Image on 'image'; "
              "compressed: sensor_msgs/CompressedImage on '<image>/compressed', as image_transport "
              "names it (a remap of 'image' serves both).", read_only=True,
              choices=IMAGE_TRANSPORTS),
    ParamSpec("reliability", "best_effort", "QoS reliability of the image subscription (sensor "
              "data QoS, depth 1); 'reliable' only matches reliable publishers.", read_only=True,
              choices=RELIABILITIES),
    ParamSpec("max_rate", 2.0, "Maximum caption rate in Hz, measured on the frames' header.stamp "
              "(so rosbag playback behaves as live).", limits=(0.01, 100.0)),
    ParamSpec("refine", True, "Run Sharp-Eyed Refinement (a second, sharper look) after the first "
              "glance."),
    ParamSpec("zoom", True, "During refinement, also re-encode zoomed crops of the attended "
              "regions."),
    ParamSpec("task", "auto", "Caption post-processing as the paper evaluates: coco keeps the whole "
              "caption, detailed its first 3 sentences; auto: the model's own setting.", choices=TASKS),
    ParamSpec("num_regions", 3, "Maximum number of attended regions published per caption.",
              limits=(0, 16)),
    ParamSpec("min_region_score", 0.05, "Regions whose attention share is below this are not "
              "published.", limits=(0.0, 1.0)),
    ParamSpec("max_image_pixels", 20_000_000, "Frames with more pixels (width*height) are rejected "
              "before decoding.", limits=(1, 1_000_000_000)),
    ParamSpec("max_aspect_ratio", 32.0, "Frames whose longer side exceeds this many times the shorter "
              "are rejected before decoding (the model would see a sliver).", limits=(1.0, 1_000_000.0)),
    ParamSpec("diagnostics_period", 1.0, "Seconds between diagnostics on /diagnostics (wall "
              "clock).", read_only=True, limits=(0.1, 60.0)),
)

SPECS: dict[str, ParamSpec] = index(PARAMETERS)


def validate(name: str, value: Any) -> Optional[str]:
    """Why ``value`` is not acceptable for captioner parameter ``name``, or None when it is."""
    return _validate(SPECS, name, value)


@dataclass(frozen=True)
class CaptionerSettings(Settings):
    """The values of all parameters, validated; replaced as a whole when one changes."""

    SPECS: ClassVar[Mapping[str, ParamSpec]] = SPECS
    model_path: str = SPECS["model_path"].default
    device: str = SPECS["device"].default
    dtype: str = SPECS["dtype"].default
    image_transport: str = SPECS["image_transport"].default
    reliability: str = SPECS["reliability"].default
    max_rate: float = SPECS["max_rate"].default
    refine: bool = SPECS["refine"].default
    zoom: bool = SPECS["zoom"].default
    task: str = SPECS["task"].default
    num_regions: int = SPECS["num_regions"].default
    min_region_score: float = SPECS["min_region_score"].default
    max_image_pixels: int = SPECS["max_image_pixels"].default
    max_aspect_ratio: float = SPECS["max_aspect_ratio"].default
    diagnostics_period: float = SPECS["diagnostics_period"].default


__all__ = ["PARAMETERS", "SPECS", "validate", "CaptionerSettings", "DTYPES", "IMAGE_TRANSPORTS", "RELIABILITIES",
           "TASKS"]
