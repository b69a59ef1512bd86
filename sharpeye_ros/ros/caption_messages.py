"""Model results -> ROS messages: the Caption, its mirrors for standard tools (detections,
plain text), the annotated image (raw and JPEG) and the RViz text marker.

The box arithmetic (:func:`region_roi`, :func:`select_regions`, :func:`roi_center_size`) is
pure. Message classes are imported where a message is built, so this module imports without
a ROS install (and without vision_msgs, which only :func:`detections_msg` needs).
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Optional, Sequence

import numpy as np

from sharpeye_ros.ros.drawing import draw_annotations
from sharpeye_ros.ros.image_conversion import fill_compressed_msg, fill_image_msg

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


def reused_caption_msg(caption: Any, header: Any, latency_seconds: float) -> Any:
    """A copy of ``caption`` (a ``sharpeye_ros/Caption``) republished for a later frame whose
    view has not changed: that frame's ``header``, ``reused`` true, the latency measured for
    that frame; the caption, its regions and how it was made (model, timings) stay as they were.
    The regions are shared with ``caption``, not copied: a deep copy was a third of what a
    still frame cost the node, and published messages are not changed."""
    msg = type(caption)(**{name: getattr(caption, name) for name in caption.get_fields_and_field_types()})
    msg.header = header
    msg.reused = True
    msg.latency_seconds = float(latency_seconds)
    return msg


def roi_center_size(roi: Any) -> tuple[float, float, float, float]:
    """``(center_x, center_y, size_x, size_y)`` of a ``sensor_msgs/RegionOfInterest`` in
    continuous pixel coordinates (pixel ``i`` spans ``[i, i + 1)``), as vision_msgs'
    BoundingBox2D holds a box."""
    width, height = float(roi.width), float(roi.height)
    return float(roi.x_offset) + width / 2, float(roi.y_offset) + height / 2, width, height


def detections_msg(caption: Any) -> Any:
    """A ``vision_msgs/Detection2DArray`` mirroring ``caption`` (a ``sharpeye_ros/Caption``):
    its header; one Detection2D per region, in the same order (most attended first), with the
    region's phrase as the only hypothesis' ``class_id``, its score, and its box as
    center/size in source pixels (:func:`roi_center_size`). ``id`` stays empty: regions are
    not tracked from one caption to the next. ImportError when vision_msgs is not installed."""
    from vision_msgs.msg import (BoundingBox2D, Detection2D, Detection2DArray, ObjectHypothesis,
                                 ObjectHypothesisWithPose)

    array = Detection2DArray(header=caption.header)
    for region in caption.regions:
        cx, cy, sx, sy = roi_center_size(region.roi)
        bbox = BoundingBox2D(size_x=sx, size_y=sy)
        bbox.center.position.x, bbox.center.position.y = cx, cy
        hypothesis = ObjectHypothesisWithPose(
            hypothesis=ObjectHypothesis(class_id=region.phrase, score=float(region.score)))
        array.detections.append(Detection2D(header=caption.header, results=[hypothesis], bbox=bbox))
    return array


def caption_text_msg(caption: Any) -> Any:
    """A ``std_msgs/String`` holding only ``caption``'s text, for tools that take plain text."""
    from std_msgs.msg import String

    return String(data=caption.caption)


def annotated_rgb(rgb: np.ndarray, result: Any, regions: Sequence[Any]) -> np.ndarray:
    """A copy of ``rgb`` with ``regions`` and ``result``'s caption (and first glance) drawn on it."""
    return draw_annotations(rgb, result.caption, regions, initial_caption=result.initial_caption)


def annotated_image_msg(rgb: np.ndarray, result: Any, regions: Sequence[Any], header: Any,
                        drawn: Optional[np.ndarray] = None) -> Any:
    """A ``sensor_msgs/Image`` (rgb8) of ``rgb`` with the regions and the caption drawn on it
    (``drawn``: that drawing, when already made by :func:`annotated_rgb`)."""
    from sensor_msgs.msg import Image

    msg = fill_image_msg(Image(), annotated_rgb(rgb, result, regions) if drawn is None else drawn, "rgb8")
    msg.header = header
    return msg


def annotated_compressed_msg(drawn: np.ndarray, header: Any, quality: int) -> Any:
    """A ``sensor_msgs/CompressedImage`` (JPEG of ``quality`` 0..100, image_transport's
    ``rgb8; jpeg compressed bgr8`` format) of an annotated frame made by :func:`annotated_rgb`."""
    from sensor_msgs.msg import CompressedImage

    msg = fill_compressed_msg(CompressedImage(), drawn, quality)
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


__all__ = ["region_roi", "select_regions", "caption_msg", "reused_caption_msg", "roi_center_size",
           "detections_msg", "caption_text_msg", "annotated_rgb", "annotated_image_msg",
           "annotated_compressed_msg", "caption_markers_msg"]
