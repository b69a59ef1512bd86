"""The captioner in-process against what real cameras, bags and clocks send: long thin
frames, remapped compressed topics, frames the worker rejects, empty or non-finite model
results, frozen and future stamps, a missing /clock, silence and damaged JPEGs."""

from __future__ import annotations

import math
import time

import pytest

rclpy = pytest.importorskip("rclpy")
pytestmark = pytest.mark.ros

from sharpeye_ros.ros.stamps import stamp_ns  # noqa: E402

S = 1_000_000_000


def report(h):
    return h.captioner.health_report()


def test_a_long_thin_frame_is_refused_by_aspect_ratio_and_counted(harness, scripted_model):
    from sensor_msgs.msg import Image

    h = harness(scripted_model, {"max_rate": 100.0, "refine": False})
    thin = Image(encoding="rgb8", height=1, width=16000, step=48000)
    thin.data = bytes(48000)
    h.publish(h.set_header(thin, h.now_ns()))
    assert h.wait_for(lambda: report(h).value("errors_conversion") == "1")
    assert "16000x1 has an aspect ratio of 1.6e+04:1, beyond max_aspect_ratio=32" in \
        report(h).value("last_error_conversion")
    assert scripted_model.calls == []


def test_compressed_input_follows_the_image_remap(harness, scripted_model, frame):
    # `-r image:=/cam -p image_transport:=compressed` subscribed /image/compressed and then
    # heard nothing; image_transport names the compressed stream of /cam /cam/compressed.
    from sensor_msgs.msg import CompressedImage

    from sharpeye_ros.ros.image_conversion import rgb_to_compressed

    topic = f"/remapped_cam_{time.monotonic_ns()}"
    h = harness(scripted_model, {"max_rate": 100.0, "refine": False}, transport="compressed",
                image_topic=f"{topic}/compressed", cli_args=["--ros-args", "-r", f"image:={topic}"])
    assert h.captioner._sub.topic_name == f"{topic}/compressed"
    assert report(h).value("image_topic") == f"{topic}/compressed"
    msg = CompressedImage(format="jpeg", data=rgb_to_compressed(frame(64, 48), "jpeg"))
    h.publish(h.set_header(msg, h.now_ns()))
    (caption,) = h.wait_captions(1)
    assert (caption.image_width, caption.image_height) == (64, 48)


def _unsupported_frame():
    from sensor_msgs.msg import Image

    msg = Image(encoding="32FC1", height=48, width=64, step=256)
    msg.data = bytes(48 * 256)
    return msg


@pytest.mark.parametrize("rejection", ["conversion", "inference", "empty caption"])
def test_a_rejected_frame_does_not_use_up_the_rate_slot(harness, scripted_model, rejection):
    # At 2 Hz a good frame 0.1 s after a rejected one used to be throttled: only a
    # captioned frame starts the interval.
    h = harness(scripted_model, {"max_rate": 2.0, "refine": False})
    t0 = h.now_ns()
    h.publish_frame(t0)
    h.wait_captions(1)
    kind = "conversion" if rejection == "conversion" else "inference"
    if rejection == "conversion":
        h.publish(h.set_header(_unsupported_frame(), t0 + S))
    else:
        scripted_model.fail_next = int(rejection == "inference")
        scripted_model.text = "" if rejection == "empty caption" else None
        h.publish_frame(t0 + S)
    assert h.wait_for(lambda: report(h).value(f"errors_{kind}") == "1")
    scripted_model.text = None
    h.publish_frame(t0 + S + S // 10)
    captions = h.wait_captions(2)
    assert stamp_ns(captions[1]) == t0 + S + S // 10
    assert h.captioner._gate.counters().throttled == 0
    h.publish_frame(t0 + S + 2 * S // 10)  # but the interval runs from the captioned frame
    assert h.wait_for(lambda: h.captioner._gate.counters().throttled == 1)


@pytest.mark.parametrize("text, regions, reason", [
    ("", None, "the model wrote an empty caption"),
    ("a red square", "nan", "the model's attention is not finite"),
])
def test_empty_or_non_finite_results_are_inference_errors_not_captions(harness, scripted_model, text,
                                                                       regions, reason):
    from sharpeye_ros.model import Region

    h = harness(scripted_model, {"max_rate": 100.0, "refine": False})
    scripted_model.text = text
    if regions == "nan":
        scripted_model.regions = [Region(math.nan, 0.0, 10.0, 10.0, 0.5, "red square")]
    h.publish_frame(h.now_ns())
    assert h.wait_for(lambda: report(h).value("errors_inference") == "1")
    assert reason in report(h).value("last_error_inference")
    time.sleep(0.2)
    assert h.snapshot() == [] and report(h).value("frames_captioned") == "0"


def test_a_frozen_stamp_falls_back_to_arrival_time_and_says_so_once(harness, scripted_model, capfd):
    # A driver whose clock stopped: 1 caption of 148 frames, "OK, captioning at 0.00 Hz".
    h = harness(scripted_model, {"max_rate": 10.0, "refine": False, "diagnostics_period": 0.2})
    frozen = h.now_ns()
    for i in range(4):  # 0.5 s apart in arrival, always the same stamp
        h.publish_frame(frozen, value=i)
        h.wait_captions(i + 1)
        time.sleep(0.5)
    assert [stamp_ns(c) for c in h.snapshot()] == [frozen] * 4
    r = report(h)
    assert r.value("frames_frozen_stamp") == "3" and r.value("throttle_clock") == "arrival time"
    assert r.level == 1 and "header.stamp does not advance" in r.message
    err = capfd.readouterr().err
    assert err.count("header.stamp does not advance") == 1, err
    assert all(0 <= c.latency_seconds < 10 for c in h.snapshot())  # from arrival, not from the frozen stamp


def test_time_resets_and_out_of_order_frames_are_logged(harness, scripted_model, capfd):
    h = harness(scripted_model, {"max_rate": 100.0, "refine": False})
    t0 = h.now_ns()
    h.publish_frame(t0)
    h.wait_captions(1)
    h.publish_frame(t0 - S // 10)  # a straggler
    h.publish_frame(t0 + S)
    h.wait_captions(2)
    h.publish_frame(t0 - 60 * S)  # a rosbag loop
    h.wait_captions(3)
    assert h.captioner._gate.counters().out_of_order == 1 and report(h).value("time_resets") == "1"
    err = capfd.readouterr().err
    assert "frame dropped: stamped 0.1 s before a newer frame (out of order)" in err, err
    assert "header.stamp went back 61 s: a new timeline" in err, err


def test_a_frame_stamped_in_the_future_does_not_poison_latency(harness, scripted_model):
    # One frame stamped 1e6 s ahead made latency_mean_s read -15872 for 100 captions.
    h = harness(scripted_model, {"max_rate": 100.0, "refine": False})
    t0 = h.now_ns()
    h.publish_frame(t0 - S // 10)
    h.publish_frame(t0 + 10**6 * S)
    h.wait_captions(2)
    for i in range(3):
        h.publish_frame(h.now_ns() - S // 10)
        captions = h.wait_captions(3 + i)
    assert math.isnan(captions[1].latency_seconds)
    assert all(0.0 < c.latency_seconds < 30.0 for i, c in enumerate(captions) if i != 1)
    r = report(h)
    assert 0.0 < float(r.value("latency_median_s")) < 30.0
    assert r.value("latency_unmeasured_stamp_ahead") == "1"
    assert r.value("time_resets") == "2"  # ahead of the node's clock, then back from it


def test_use_sim_time_without_clock_warns_once_and_publishes_no_latency(harness, scripted_model, capfd):
    # No /clock: the node's clock reads 0 and latency was -1.8e9 s.
    h = harness(scripted_model, {"use_sim_time": True, "max_rate": 100.0, "refine": False})
    assert h.now_ns() == 0
    for i in range(2):
        h.publish_frame(1_800_000_000 * S + i * S)
    captions = h.wait_captions(2)
    assert all(math.isnan(c.latency_seconds) for c in captions)
    r = report(h)
    assert r.value("latency_last_s") == "n/a" and r.value("latency_unmeasured_no_clock") == "2"
    err = capfd.readouterr().err
    assert err.count("no /clock message arrived") == 1, err


def test_silence_is_logged_with_the_topic_and_where_the_frames_are(harness, scripted_model, capfd,
                                                                  monkeypatch):
    # A wrong transport: only /diagnostics said "no image received for 902 s".
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import CompressedImage

    from sharpeye_ros.ros import captioner_node

    monkeypatch.setattr(captioner_node, "NO_INPUT_WARN", 1.0)
    h = harness(scripted_model, {"refine": False})
    h.node.destroy_publisher(h.image_pub)  # the camera publishes compressed only
    h.node.create_publisher(CompressedImage, "image/compressed", qos_profile_sensor_data)
    expected = (f"no image received on '{h.namespace}/image' (raw) for ")
    hint = f"'{h.namespace}/image/compressed' has 1 publisher(s): set image_transport:=compressed?"
    seen = ""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and hint not in seen:
        time.sleep(0.2)
        seen += capfd.readouterr().err
    assert expected in seen and hint in seen, seen
    time.sleep(2.5)  # throttled: not every second
    assert expected not in capfd.readouterr().err


def test_a_damaged_jpeg_is_captioned_counted_as_a_warning_and_kept_off_stderr(harness, scripted_model,
                                                                             frame, capfd):
    # A bit-flipped JPEG was captioned and counted nowhere; libjpeg wrote to stderr itself.
    from sensor_msgs.msg import CompressedImage

    from sharpeye_ros.ros.image_conversion import rgb_to_compressed

    h = harness(scripted_model, {"max_rate": 100.0, "refine": False}, transport="compressed")
    jpeg = rgb_to_compressed(frame(64, 48), "jpeg")
    damaged = jpeg[:-2] + bytes(range(1, 40)) + jpeg[-2:]
    h.publish(h.set_header(CompressedImage(format="jpeg", data=damaged), h.now_ns()))
    h.wait_captions(1)
    r = report(h)
    assert r.value("warnings_conversion") == "1" and r.value("errors_conversion") == "0"
    assert "Corrupt JPEG data" in r.value("last_warning_conversion")
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if "Corrupt JPEG data" in line]
    assert len(lines) == 1 and lines[0].startswith("[WARN]"), err  # the node's log line, not libjpeg's
