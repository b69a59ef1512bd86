"""Model result -> Caption / annotated Image / MarkerArray conversion."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from sharpeye_ros.model import CaptionResult
from sharpeye_ros.ros.caption_messages import region_roi, select_regions


def region(x0, y0, x1, y1, score=0.5, phrase="red square"):
    return SimpleNamespace(x_min=x0, y_min=y0, x_max=x1, y_max=y1, score=score, phrase=phrase)


@pytest.mark.parametrize("box, roi", [
    ((10.0, 20.0, 30.0, 40.0), (10, 20, 20, 20)),  # whole pixels stay as they are
    ((10.4, 20.6, 29.2, 39.9), (10, 20, 20, 20)),  # fractions grow to cover the box
    ((-15.0, -3.0, 30.0, 40.0), (0, 0, 30, 40)),  # clipped at the top-left
    ((600.0, 400.0, 700.0, 500.0), (600, 400, 40, 80)),  # clipped at the bottom-right (640x480)
    ((30.0, 40.0, 10.0, 20.0), (10, 20, 20, 20)),  # corners given the wrong way round
    ((-50.0, 10.0, -1.0, 20.0), None),  # entirely left of the image
    ((650.0, 10.0, 700.0, 20.0), None),  # entirely right of it
    ((10.0, 10.0, 10.0, 20.0), None),  # zero width
    ((float("nan"), 0.0, 10.0, 10.0), None),
    ((0.0, 0.0, float("inf"), 10.0), None),
])
def test_region_roi_clips_and_rounds_into_the_image(box, roi):
    assert region_roi(region(*box), 640, 480) == roi


def test_region_roi_always_inside_image():
    rng = np.random.default_rng(0)
    for _ in range(500):
        box = rng.uniform(-100, 800, size=4)
        roi = region_roi(region(*box), 640, 480)
        if roi is not None:
            x, y, w, h = roi
            assert 0 <= x and 0 <= y and w > 0 and h > 0 and x + w <= 640 and y + h <= 480


def test_select_regions_filters_by_score_and_limits():
    regions = [region(0, 0, 1, 1, s, str(s)) for s in (0.9, 0.04, 0.5, float("nan"), 0.3)]
    assert [r.phrase for r in select_regions(regions, 0.05, 16)] == ["0.9", "0.5", "0.3"]
    assert [r.phrase for r in select_regions(regions, 0.05, 2)] == ["0.9", "0.5"]
    assert select_regions(regions, 0.0, 0) == []


# ---- the messages themselves (need the built sharpeye_ros messages) -----------------------


@pytest.fixture
def msgs():
    pytest.importorskip("rclpy")
    return pytest.importorskip("sharpeye_ros.msg")


def result(regions=(), caption="a small red square", initial="a red square"):
    timings = {"vision": 0.1, "decode": 0.2, "deeplens": 0.05, "refine_decode": 0.15}
    return CaptionResult(caption=caption, initial_caption=initial, refined=True, zoomed=False,
                         regions=list(regions), timings=timings)


def header(sec=12, nanosec=345, frame_id="camera_optical_frame"):
    from std_msgs.msg import Header

    h = Header(frame_id=frame_id)
    h.stamp.sec, h.stamp.nanosec = sec, nanosec
    return h


@pytest.mark.ros
def test_caption_msg_fields(msgs):
    from sharpeye_ros.ros.caption_messages import caption_msg

    regions = [region(-5.5, 10.2, 30.0, 500.0, 0.8, "small red square"), region(700, 0, 800, 10, 0.4, "gone"),
               region(1.0, 2.0, 3.0, 4.0, 1.7, "odd score")]
    msg = caption_msg(result(regions), regions, header(), 640, 480, "tiny-model", 0.25)
    assert isinstance(msg, msgs.Caption)
    stamp = msg.header.stamp
    assert (stamp.sec, stamp.nanosec, msg.header.frame_id) == (12, 345, "camera_optical_frame")
    assert (msg.caption, msg.initial_caption) == ("a small red square", "a red square")
    assert (msg.refined, msg.zoomed) == (True, False)
    assert (msg.image_width, msg.image_height, msg.model_id) == (640, 480, "tiny-model")
    assert msg.glance_seconds == pytest.approx(0.3) and msg.refine_seconds == pytest.approx(0.2)
    assert msg.latency_seconds == pytest.approx(0.25)
    assert [r.phrase for r in msg.regions] == ["small red square", "odd score"]  # the box outside is left out
    roi = msg.regions[0].roi
    assert (roi.x_offset, roi.y_offset, roi.width, roi.height, roi.do_rectify) == (0, 10, 30, 470, False)
    assert msg.regions[0].score == pytest.approx(0.8) and msg.regions[1].score == 1.0


@pytest.mark.ros
def test_annotated_image_msg_draws_on_a_copy(msgs):
    from sharpeye_ros.ros.caption_messages import annotated_image_msg

    rgb = np.full((120, 160, 3), 40, dtype=np.uint8)
    before = rgb.copy()
    msg = annotated_image_msg(rgb, result(), [region(10, 10, 60, 60)], header())
    assert (msg.width, msg.height, msg.encoding, msg.step) == (160, 120, "rgb8", 480)
    assert msg.header.frame_id == "camera_optical_frame" and msg.header.stamp.sec == 12
    drawn = np.frombuffer(msg.data, dtype=np.uint8).reshape(120, 160, 3)
    assert (drawn != before).any()
    np.testing.assert_array_equal(rgb, before)


@pytest.mark.ros
def test_caption_markers_msg(msgs):
    from visualization_msgs.msg import Marker

    from sharpeye_ros.ros.caption_messages import caption_markers_msg

    array = caption_markers_msg("a small red square", header(), 2.5)
    (marker,) = array.markers
    assert marker.type == Marker.TEXT_VIEW_FACING and marker.action == Marker.ADD
    assert marker.text == "a small red square" and marker.header.frame_id == "camera_optical_frame"
    assert marker.pose.position.z > 0  # in front of the camera (optical frame: z forward)
    assert (marker.lifetime.sec, marker.lifetime.nanosec) == (2, 500_000_000)
    assert marker.color.a == 1.0 and marker.scale.z > 0


@pytest.mark.ros
def test_reused_caption_msg_keeps_the_caption_and_takes_the_new_frame(msgs):
    from sharpeye_ros.ros.caption_messages import caption_msg, reused_caption_msg

    regions = [region(10, 20, 50, 60, 0.7, "red square")]
    original = caption_msg(result(regions), regions, header(12, 0), 640, 480, "tiny-model", 0.25)
    assert original.reused is False
    reused = reused_caption_msg(original, header(13, 500, "other_frame"), 0.01)
    assert reused.reused is True and original.reused is False  # a copy: the stored one is untouched
    assert (reused.header.stamp.sec, reused.header.stamp.nanosec, reused.header.frame_id) == (13, 500, "other_frame")
    assert reused.latency_seconds == pytest.approx(0.01)
    for field in ("caption", "initial_caption", "refined", "zoomed", "image_width", "image_height", "model_id",
                  "glance_seconds", "refine_seconds", "regions"):
        assert getattr(reused, field) == getattr(original, field), field
    assert original.header.stamp.sec == 12 and original.latency_seconds == pytest.approx(0.25)


@pytest.mark.ros
def test_detections_mirror_the_caption(msgs):
    vision_msgs = pytest.importorskip("vision_msgs.msg")
    from sharpeye_ros.ros.caption_messages import caption_msg, detections_msg, roi_center_size

    regions = [region(10.4, 20.6, 29.2, 39.9, 0.8, "small red square"), region(600, 400, 700, 500, 0.3, "blue disc"),
               region(700, 0, 800, 10, 0.9, "outside")]
    caption = caption_msg(result(regions), regions, header(), 640, 480, "tiny-model", 0.25)
    array = detections_msg(caption)
    assert isinstance(array, vision_msgs.Detection2DArray)
    assert array.header == caption.header
    assert len(array.detections) == len(caption.regions) == 2  # the box outside the image is in neither
    for detection, mirrored in zip(array.detections, caption.regions):
        assert detection.header == caption.header and detection.id == ""
        (hypothesis,) = detection.results
        assert hypothesis.hypothesis.class_id == mirrored.phrase
        assert hypothesis.hypothesis.score == pytest.approx(mirrored.score)
        box = detection.bbox
        assert (box.center.position.x, box.center.position.y, box.size_x, box.size_y) == roi_center_size(mirrored.roi)
        assert box.center.theta == 0.0
    # Source pixels: the first ROI is x 10..30, y 20..40 -> centre (20, 30), size 20 x 20; the
    # second is clipped to the 640x480 image: x 600..640, y 400..480.
    first, second = array.detections
    assert (first.bbox.center.position.x, first.bbox.center.position.y, first.bbox.size_x) == (20.0, 30.0, 20.0)
    assert (second.bbox.center.position.x, second.bbox.size_x, second.bbox.size_y) == (620.0, 40.0, 80.0)
    empty = detections_msg(caption_msg(result(), [], header(), 640, 480, "tiny-model", 0.25))
    assert empty.detections == [] and empty.header == caption.header


@pytest.mark.ros
def test_caption_text_msg(msgs):
    from std_msgs.msg import String

    from sharpeye_ros.ros.caption_messages import caption_msg, caption_text_msg

    caption = caption_msg(result(caption="a large blue circle"), [], header(), 640, 480, "m", 0.1)
    text = caption_text_msg(caption)
    assert isinstance(text, String) and text.data == "a large blue circle"


@pytest.mark.ros
@pytest.mark.parametrize("quality", [30, 95])
def test_annotated_compressed_msg_is_the_drawn_frame_as_jpeg(msgs, quality):
    import cv2

    from sharpeye_ros.ros.caption_messages import annotated_compressed_msg, annotated_image_msg, annotated_rgb
    from sharpeye_ros.ros.image_conversion import compressed_msg_to_rgb

    rgb = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    rgb = cv2.GaussianBlur(rgb, (0, 0), 3)  # JPEG-friendly content
    drawn = annotated_rgb(rgb, result(), [region(10, 10, 60, 60)])
    msg = annotated_compressed_msg(drawn, header(), quality)
    assert msg.format == "rgb8; jpeg compressed bgr8" and bytes(msg.data[:2]) == b"\xff\xd8"
    assert msg.header.frame_id == "camera_optical_frame" and msg.header.stamp.sec == 12
    decoded = compressed_msg_to_rgb(msg)
    assert decoded.shape == drawn.shape
    error = np.abs(decoded.astype(float) - drawn).mean()
    assert error < (4.0 if quality == 95 else 12.0)  # the same picture, colours the right way round
    raw = annotated_image_msg(rgb, result(), [region(10, 10, 60, 60)], header(), drawn=drawn)
    np.testing.assert_array_equal(np.frombuffer(raw.data, np.uint8).reshape(drawn.shape), drawn)


@pytest.mark.ros
def test_jpeg_quality_decides_the_size(msgs):
    from sharpeye_ros.ros.caption_messages import annotated_compressed_msg

    rgb = np.random.default_rng(1).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    sizes = [len(annotated_compressed_msg(rgb, header(), q).data) for q in (20, 60, 95)]
    assert sizes[0] < sizes[1] < sizes[2]
