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
