"""The caption's standard forms from the running node: caption_text, detections and
caption_image/compressed, each checked against the Caption it mirrors, and built only
while someone subscribes."""

from __future__ import annotations

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
pytestmark = pytest.mark.ros

from rclpy.parameter import Parameter  # noqa: E402

S = 1_000_000_000
MIRRORS = ("caption_text", "detections", "caption_image/compressed")


def stamp_of(msg) -> int:
    return msg.header.stamp.sec * S + msg.header.stamp.nanosec


def scripted_regions():
    from sharpeye_ros.model import Region

    return [Region(-10.0, 5.2, 30.5, 60.0, 0.9, "red square"),  # clipped to the 64x48 frame
            Region(40.0, 8.0, 50.0, 20.0, 0.4, "blue circle"),
            Region(5.0, 5.0, 10.0, 10.0, 0.01, "faint")]  # below min_region_score: in neither


def test_each_standard_output_mirrors_its_caption(harness, scripted_model, frame):
    from sharpeye_ros.ros.image_conversion import compressed_msg_to_rgb

    scripted_model.regions = scripted_regions()
    scripted_model.text = "a red square and a blue circle"
    h = harness(scripted_model, {"num_regions": 3, "min_region_score": 0.05, "jpeg_quality": 90})
    for name in MIRRORS:
        h.subscribe(name)
    stamp = h.now_ns()
    h.publish(h.image_msg(frame(64, 48), stamp, frame_id="front_camera_optical"))
    (caption,) = h.wait_captions(1)
    assert h.wait_for(lambda: all(h.snapshot(name) for name in MIRRORS)), {n: len(h.snapshot(n)) for n in MIRRORS}

    (text,) = h.snapshot("caption_text")
    assert text.data == caption.caption == "a red square and a blue circle"

    (array,) = h.snapshot("detections")
    assert array.header == caption.header and stamp_of(array) == stamp
    assert [d.results[0].hypothesis.class_id for d in array.detections] == [r.phrase for r in caption.regions] \
        == ["red square", "blue circle"]
    for detection, region in zip(array.detections, caption.regions):
        (hypothesis,) = detection.results
        assert hypothesis.hypothesis.score == pytest.approx(region.score)
        roi, box = region.roi, detection.bbox
        # a center/size box in source pixels, the same rectangle as the Caption's ROI
        assert (box.size_x, box.size_y) == (roi.width, roi.height)
        assert (box.center.position.x, box.center.position.y) == (roi.x_offset + roi.width / 2,
                                                                  roi.y_offset + roi.height / 2)
        assert detection.header == caption.header
    # The first region, x -10..30.5 and y 5.2..60, clipped to the 64x48 frame: x 0..31, y 5..48.
    first = array.detections[0].bbox
    assert (first.center.position.x, first.center.position.y, first.size_x, first.size_y) == (15.5, 26.5, 31, 43)

    (jpeg,) = h.snapshot("caption_image/compressed")
    assert jpeg.header == caption.header and jpeg.format == "rgb8; jpeg compressed bgr8"
    drawn = compressed_msg_to_rgb(jpeg)
    assert drawn.shape == (48, 64, 3)
    assert np.abs(drawn.astype(int) - frame(64, 48)).max() > 100  # the regions and text were drawn on it


def test_jpeg_quality_is_a_parameter(harness, scripted_model, frame):
    h = harness(scripted_model, {"jpeg_quality": 95, "max_rate": 100.0})
    h.subscribe("caption_image/compressed", depth=10)
    rgb = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)  # costly to compress
    t0 = h.now_ns()
    h.publish(h.image_msg(rgb, t0))
    assert h.wait_for(lambda: len(h.snapshot("caption_image/compressed")) == 1)
    (result,) = h.captioner.set_parameters([Parameter("jpeg_quality", value=20)])
    assert result.successful, result.reason
    h.publish(h.image_msg(rgb, t0 + S))
    assert h.wait_for(lambda: len(h.snapshot("caption_image/compressed")) == 2)
    high, low = (len(m.data) for m in h.snapshot("caption_image/compressed"))
    assert low < high / 2, (low, high)
    (result,) = h.captioner.set_parameters([Parameter("jpeg_quality", value=101)])
    assert not result.successful and "jpeg_quality" in result.reason


def test_mirrors_are_built_only_while_subscribed(harness, scripted_model, monkeypatch):
    from sharpeye_ros.ros import captioner_node

    built: list[str] = []
    for name in ("caption_text_msg", "detections_msg", "annotated_compressed_msg", "annotated_rgb"):
        original = getattr(captioner_node, name)
        monkeypatch.setattr(captioner_node, name,
                            lambda *a, _name=name, _original=original, **k: built.append(_name) or _original(*a, **k))
    h = harness(scripted_model)
    t0 = h.now_ns()
    h.publish_frame(t0)
    h.wait_captions(1)
    assert built == []  # nobody listens: no text, no boxes, no drawing, no JPEG

    h.subscribe("caption_text")
    h.publish_frame(t0 + S)
    h.wait_captions(2)
    assert h.wait_for(lambda: h.snapshot("caption_text"))
    assert built == ["caption_text_msg"]  # only what someone listens to
    assert h.snapshot("caption_text")[0].data == h.snapshot()[1].caption


def test_the_caption_names_its_topics_under_the_namespace(harness, scripted_model):
    h = harness(scripted_model)
    topics = {name: pub.topic_name for name, pub in h.captioner._outputs.items()}
    ns = h.namespace
    assert topics == {"caption": f"{ns}/caption", "caption_text": f"{ns}/caption_text",
                      "detections": f"{ns}/detections", "caption_image": f"{ns}/caption_image",
                      "caption_image/compressed": f"{ns}/caption_image/compressed",
                      "caption_markers": f"{ns}/caption_markers", "/diagnostics": "/diagnostics"}
