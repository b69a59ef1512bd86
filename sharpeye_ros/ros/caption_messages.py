"""Model results -> ROS messages: the Caption, the annotated image and the RViz text marker.

The box arithmetic (:func:`region_roi`, :func:`select_regions`) is pure. Message classes
are imported where a message is built, so this module imports without a ROS install.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Optional, Sequence

import numpy as np

from sharpeye_ros.ros.drawing import draw_annotations
from sharpeye_ros.ros.image_conversion import fill_image_msg

# The caption text marker floats this far in front of the camera (optical frame: z forward,
# y down), a little above the optical axis.
MARKER_DEPTH_M = 2.0
MARKER_HEIGHT_M = -0.5
MARKER_TEXT_SIZE_M = 0.12
MARKER_NAMESPACE = "caption"


def region_roi(region: Any, width: int, height: int) -> Optional[tuple[int, int, int, int]]:
    """``(x_offset, y_offset, width, height)`` of a region box within a ``width`` x ``height`` image.

    The model's boxes are continuous pixel coordinates (``x_max`` is the right edge); the
    ROI is the smallest whole-pixel box covering them, clipped to the image. None for a box
    that is not finite or lies entirely outside the image.
    """
    coords = [float(getattr(region, name)) for name in ("x_min", "y_min", "x_max", "y_max")]
    if not all(math.isfinite(c) for c in coords):
        return None
    x0, x1 = sorted(coords[0::2])
    y0, y1 = sorted(coords[1::2])
    left, right = max(0, math.floor(x0)), min(width, math.ceil(x1))
    top, bottom = max(0, math.floor(y0)), min(height, math.ceil(y1))
    if right <= left or bottom <= top:
        return None
    return left, top, right - left, bottom - top


def result_problem(result: Any) -> Optional[str]:
    """Why a model result is no caption to publish (None when it is one): an empty caption,
    or regions with non-finite boxes or scores, which is what NaN weights or activations
    produce. The node counts these as inference errors."""
    if not str(getattr(result, "caption", "")).strip():
        return "the model wrote an empty caption (non-finite weights or activations?)"
    for region in getattr(result, "regions", ()):
        values = [float(getattr(region, name)) for name in ("x_min", "y_min", "x_max", "y_max", "score")]
        if not all(math.isfinite(v) for v in values):
            return f"the model's attention is not finite (region '{region.phrase}': {values})"
    return None


def select_regions(regions: Iterable[Any], min_score: float, limit: int) -> list[Any]:
    """The first ``limit`` regions (the model orders them most attended first) scoring at least
    ``min_score``."""
    kept = [r for r in regions if math.isfinite(float(r.score)) and float(r.score) >= min_score]
    return kept[:max(0, limit)]


def caption_msg(result: Any, regions: Sequence[Any], header: Any, width: int, height: int,
                model_id: str, latency_seconds: float) -> Any:
    """A ``sharpeye_ros/Caption`` for ``result`` (a model ``CaptionResult``) of a frame.

    ``header`` is the frame's header, copied as is; ``regions`` are the ones to publish
    (see :func:`select_regions`), converted with :func:`region_roi` (boxes outside the
    image are left out). Scores are clipped to [0, 1]. ``latency_seconds`` may be NaN
    (not measured).
    """
    from sensor_msgs.msg import RegionOfInterest

    from sharpeye_ros.msg import Caption, CaptionRegion

    msg = Caption()
    msg.header = header
    msg.caption = result.caption
    msg.initial_caption = result.initial_caption
    msg.refined = bool(result.refined)
    msg.zoomed = bool(result.zoomed)
    msg.image_width, msg.image_height = int(width), int(height)
    msg.model_id = model_id
    msg.glance_seconds, msg.refine_seconds = float(result.glance_seconds), float(result.refine_seconds)
    msg.latency_seconds = float(latency_seconds)
    for region in regions:
        roi = region_roi(region, width, height)
        if roi is None:
            continue
        x, y, w, h = roi
        msg.regions.append(CaptionRegion(
            roi=RegionOfInterest(x_offset=x, y_offset=y, width=w, height=h, do_rectify=False),
            score=min(1.0, max(0.0, float(region.score))),
            phrase=str(region.phrase)))
    return msg


def annotated_image_msg(rgb: np.ndarray, result: Any, regions: Sequence[Any], header: Any) -> Any:
    """A ``sensor_msgs/Image`` (rgb8) of ``rgb`` with the regions and the caption drawn on it."""
    from sensor_msgs.msg import Image

    drawn = draw_annotations(rgb, result.caption, regions, initial_caption=result.initial_caption)
    msg = fill_image_msg(Image(), drawn, "rgb8")
    msg.header = header
    return msg


def caption_markers_msg(caption: str, header: Any, lifetime_seconds: float) -> Any:
    """A ``visualization_msgs/MarkerArray`` with the caption as one TEXT_VIEW_FACING marker
    in the camera's frame; it fades after ``lifetime_seconds`` unless replaced."""
    from builtin_interfaces.msg import Duration
    from visualization_msgs.msg import Marker, MarkerArray

    marker = Marker()
    marker.header = header
    marker.ns = MARKER_NAMESPACE
    marker.id = 0  # one marker, replaced by each caption
    marker.type = Marker.TEXT_VIEW_FACING
    marker.action = Marker.ADD
    marker.pose.position.y = MARKER_HEIGHT_M
    marker.pose.position.z = MARKER_DEPTH_M
    marker.pose.orientation.w = 1.0
    marker.scale.z = MARKER_TEXT_SIZE_M
    marker.color.r = marker.color.g = marker.color.b = marker.color.a = 1.0
    seconds = max(0.0, lifetime_seconds)
    marker.lifetime = Duration(sec=int(seconds), nanosec=int((seconds % 1.0) * 1e9))
    marker.text = caption
    return MarkerArray(markers=[marker])


__all__ = ["region_roi", "select_regions", "caption_msg", "annotated_image_msg",
           "caption_markers_msg"]
