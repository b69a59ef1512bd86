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
from sharpeye_ros.ros.scene_gate import DEFAULT_MAX_STILL_SECONDS, DEFAULT_MAX_STILL_SHARE, DEFAULT_MIN_CHANGE, ON_STILL

DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
DTYPES = ("auto", "float32", "float16", "bfloat16", "bfloat16-mixed", "int8", "int8-vision")  # = precision.PRECISIONS
IMAGE_TRANSPORTS = ("raw", "compressed")
RELIABILITIES = ("best_effort", "reliable")
TASKS = ("auto", "coco", "detailed")

PARAMETERS: tuple[ParamSpec, ...] = (
    ParamSpec("autostart", True, "Configure and activate at start-up (a plain node); false: wait, "
              "unconfigured, for a lifecycle manager.", read_only=True),
    ParamSpec("model_path", "", "Checkpoint directory of the captioning model; empty: the shipped "
              "demo model, which only knows synthetic scenes of coloured shapes. Changeable while "
              "unconfigured."),
    ParamSpec("device", "auto", "Torch device: auto (cuda when available, else cpu), cpu, cuda or "
              "cuda:N. Changeable while unconfigured.", constraints="auto, cpu, cuda or cuda:N",
              accept=lambda device: DEVICE_PATTERN.match(device) is not None),
    ParamSpec("dtype", "auto", "Model precision: float32, float16, bfloat16, or a CPU fast path "
              "converted at load: bfloat16-mixed (the Linear layers in bfloat16, the rest float32), "
              "int8 (int8 Linear layers) or int8-vision (only the vision tower in int8); auto: "
              "float16 on CUDA; on a CPU bfloat16-mixed with AMX, else int8-vision with AVX2, else "
              "float32. The log says at start-up which one runs. Changeable while unconfigured.",
              choices=DTYPES),
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
    ParamSpec("min_scene_change", DEFAULT_MIN_CHANGE, "Caption a frame only when its view changed at least this "
              "much since the last caption (the largest change of one cell of a 128 px colour "
              "thumbnail, 0..1); 0: caption every frame.", limits=(0.0, 1.0)),
    ParamSpec("on_still", "republish", "When the view did not change: republish the last caption "
              "with the new frame's header (reused: true), or skip the frame.", choices=ON_STILL),
    ParamSpec("max_still_seconds", DEFAULT_MAX_STILL_SECONDS, "Caption again after this many seconds (on the frames' "
              "stamps) even when the view did not change; longer where a caption is slow (max_still_share).",
              limits=(0.1, 86400.0)),
    ParamSpec("max_still_share", DEFAULT_MAX_STILL_SHARE, "The largest share of the node's time that these forced "
              "captions of a still view may take: the period is max(max_still_seconds, the last caption's wall "
              "time / max_still_share), reported as still_period_s on /diagnostics; 0: max_still_seconds always.",
              limits=(0.0, 1.0)),
    ParamSpec("jpeg_quality", 80, "JPEG quality (0..100) of caption_image/compressed.", limits=(0, 100)),
    ParamSpec("diagnostics_period", 1.0, "Seconds between diagnostics on /diagnostics (wall "
              "clock).", read_only=True, limits=(0.1, 60.0)),
)

SPECS: dict[str, ParamSpec] = index(PARAMETERS)
# Parameters that need the model loaded again: changeable only while unconfigured.
RELOAD = frozenset({"model_path", "device", "dtype"})
# Parameters that change what a caption says: the next frame is captioned, never reused.
RECAPTION = frozenset({"refine", "zoom", "task", "num_regions", "min_region_score"})


def validate(name: str, value: Any) -> Optional[str]:
    """Why ``value`` is not acceptable for captioner parameter ``name``, or None when it is."""
    return _validate(SPECS, name, value)


@dataclass(frozen=True)
class CaptionerSettings(Settings):
    """The values of all parameters, validated; replaced as a whole when one changes."""

    SPECS: ClassVar[Mapping[str, ParamSpec]] = SPECS
    autostart: bool = SPECS["autostart"].default
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
    min_scene_change: float = SPECS["min_scene_change"].default
    on_still: str = SPECS["on_still"].default
    max_still_seconds: float = SPECS["max_still_seconds"].default
    max_still_share: float = SPECS["max_still_share"].default
    jpeg_quality: int = SPECS["jpeg_quality"].default
    diagnostics_period: float = SPECS["diagnostics_period"].default


__all__ = ["PARAMETERS", "SPECS", "RELOAD", "RECAPTION", "validate", "CaptionerSettings", "DTYPES",
           "IMAGE_TRANSPORTS", "RELIABILITIES", "TASKS", "ON_STILL"]
