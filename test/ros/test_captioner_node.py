"""The captioner node in-process: frames in on a test publisher, captions out."""

from __future__ import annotations

import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
pytestmark = pytest.mark.ros

from rclpy.parameter import Parameter  # noqa: E402
from rclpy.parameter_client import AsyncParameterClient  # noqa: E402

from sharpeye_ros.ros.frame_gate import RATE_SLACK  # noqa: E402
from sharpeye_ros.ros.stamps import stamp_ns, stamp_parts  # noqa: E402

S = 1_000_000_000


def test_caption_copies_header_and_reports_the_frame(harness, tiny_model, frame):
    h = harness(tiny_model, {"max_rate": 10.0, "refine": True, "zoom": False})
    stamp = h.now_ns()
    h.publish(h.image_msg(frame(64, 48), stamp, frame_id="front_camera_optical"))
    (caption,) = h.wait_captions(1)
    assert stamp_ns(caption) == stamp and caption.header.frame_id == "front_camera_optical"
    assert (caption.image_width, caption.image_height) == (64, 48)
    assert caption.model_id == tiny_model.model_id
    assert caption.refined and not caption.zoomed
    assert caption.glance_seconds > 0 and caption.refine_seconds > 0
    # Latency: the node clock at publication minus the stamp, so at least the model's time.
    assert caption.glance_seconds <= caption.latency_seconds < 30.0
    assert isinstance(caption.caption, str) and isinstance(caption.initial_caption, str)


def test_regions_are_published_in_source_pixels_inside_the_image(harness, scripted_model, frame):
    from sharpeye_ros.model import Region

    scripted_model.regions = [
        Region(-10.0, 5.2, 30.5, 60.0, 0.9, "red square"),  # sticks out of the 64x48 frame
        Region(100.0, 100.0, 200.0, 200.0, 0.8, "nowhere"),  # entirely outside
        Region(5.0, 5.0, 10.0, 10.0, 0.01, "faint"),  # below min_region_score
        Region(40.0, 8.0, 50.0, 20.0, 0.4, "blue circle"),
    ]
    h = harness(scripted_model, {"num_regions": 4, "min_region_score": 0.05})
    h.publish_frame(h.now_ns())
    (caption,) = h.wait_captions(1)
    assert scripted_model.calls[0]["num_regions"] == 4
    assert scripted_model.calls[0]["task"] is None  # auto: the model's own
    boxes = [(r.phrase, r.roi.x_offset, r.roi.y_offset, r.roi.width, r.roi.height) for r in caption.regions]
    assert boxes == [("red square", 0, 5, 31, 43), ("blue circle", 40, 8, 10, 12)]
    assert [round(r.score, 3) for r in caption.regions] == [0.9, 0.4]


def test_annotated_image_and_markers_only_while_subscribed(harness, scripted_model, frame, monkeypatch):
    from sharpeye_ros.ros import captioner_node

    drawn = []
    original = captioner_node.annotated_image_msg
    monkeypatch.setattr(captioner_node, "annotated_image_msg",
                        lambda *a, **k: drawn.append(1) or original(*a, **k))
    h = harness(scripted_model)
    t0 = h.now_ns()
    h.publish_frame(t0)
    h.wait_captions(1)
    assert drawn == []  # nobody listens: no drawing work at all

    h.subscribe("caption_image")
    h.subscribe("caption_markers")
    rgb = frame(64, 48)
    h.publish(h.image_msg(rgb, t0 + S, frame_id="cam"))
    h.wait_captions(2)
    assert h.wait_for(lambda: h.snapshot("caption_image") and h.snapshot("caption_markers"))
    (image,) = h.snapshot("caption_image")
    assert stamp_ns(image) == t0 + S and image.header.frame_id == "cam"
    assert (image.width, image.height, image.encoding) == (64, 48, "rgb8")
    pixels = np.frombuffer(image.data, dtype=np.uint8).reshape(48, 64, 3)
    assert (pixels != rgb).any()  # something was drawn
    (markers,) = h.snapshot("caption_markers")
    marker = markers.markers[0]
    assert marker.text == h.snapshot()[1].caption and marker.header.frame_id == "cam"
    assert len(drawn) == 1


def test_runtime_parameters_accepted_and_bad_values_rejected(harness, scripted_model):
    h = harness(scripted_model, {"max_rate": 2.0, "refine": True})
    node = h.captioner
    results = node.set_parameters([Parameter("max_rate", value=5.0), Parameter("refine", value=False),
                                   Parameter("min_region_score", value=0.5), Parameter("task", value="detailed")])
    assert all(r.successful for r in results)
    assert (node.settings.max_rate, node.settings.refine, node.settings.min_region_score) == (5.0, False, 0.5)
    t0 = h.now_ns()
    h.publish_frame(t0)
    h.wait_captions(1)
    h.publish_frame(t0 + S // 4)  # 0.25 s later: due at 5 Hz, not at 2 Hz
    captions = h.wait_captions(2)
    assert [c.refined for c in captions] == [False, False]
    assert [call["refine"] for call in scripted_model.calls] == [False, False]
    assert [call["task"] for call in scripted_model.calls] == ["detailed", "detailed"]

    (result,) = node.set_parameters([Parameter("max_rate", value=3)])  # an integer is taken as 3.0
    assert result.successful and node.settings.max_rate == 3.0

    for name, value, reason in [
        ("max_rate", -1.0, "max_rate"),
        ("num_regions", 17, "num_regions"),
        ("min_region_score", 1.5, "min_region_score"),
        ("refine", "yes", "Wrong parameter type"),  # rclpy's own type check
        ("device", "cpu", "only change while the node is unconfigured"),
        ("image_transport", "compressed", "read-only"),
    ]:
        (result,) = node.set_parameters([Parameter(name, value=value)])
        assert not result.successful and reason in result.reason, (name, result.reason)
    assert (node.settings.max_rate, node.settings.num_regions) == (3.0, 3)


def test_bad_value_through_the_parameter_service_gets_the_reason(harness, scripted_model):
    h = harness(scripted_model)
    client = AsyncParameterClient(h.node, h.captioner.get_fully_qualified_name())
    assert client.wait_for_services(timeout_sec=10.0)
    future = client.set_parameters([Parameter("num_regions", value=40), Parameter("zoom", value=False)])
    assert h.wait_for(future.done)
    bad, good = future.result().results
    assert not bad.successful and "num_regions" in bad.reason
    assert good.successful and h.captioner.settings.zoom is False


def test_throttled_on_message_time(harness, scripted_model):
    h = harness(scripted_model, {"max_rate": 2.0, "refine": False})
    t0 = h.now_ns()
    for i in range(30):  # 3 s of message time, published in about 0.6 s
        h.publish_frame(t0 + i * S // 10)
        time.sleep(0.02)
    gate = h.captioner._gate
    assert h.wait_for(lambda: not gate.has_pending and len(h.snapshot()) == gate.counters().taken)
    stamps = [stamp_ns(c) for c in h.snapshot()]
    assert len(stamps) >= 2
    assert stamps == sorted(stamps) and all(b - a >= S // 2 for a, b in zip(stamps, stamps[1:]))
    c = h.captioner._gate.counters()
    assert c.throttled > 0 and c.taken == len(stamps) and c.throttled + c.superseded == c.offered - c.taken


def test_sim_time_latency_and_throttle(harness, scripted_model):
    from rosgraph_msgs.msg import Clock

    h = harness(scripted_model, {"use_sim_time": True, "max_rate": 1.0, "refine": False})
    clock_pub = h.node.create_publisher(Clock, "/clock", 10)

    def set_clock(ns):
        msg = Clock()
        msg.clock.sec, msg.clock.nanosec = stamp_parts(ns)
        assert h.wait_for(lambda: (clock_pub.publish(msg), h.now_ns() == ns)[1], timeout=10)

    set_clock(100 * S)
    h.publish_frame(100 * S - S // 4)  # a frame from 0.25 s ago on the simulated clock
    (caption,) = h.wait_captions(1)
    assert caption.latency_seconds == pytest.approx(0.25, abs=1e-6)
    h.publish_frame(100 * S + S // 2)  # 0.75 s later in sim time: throttled at 1 Hz
    set_clock(102 * S)
    h.publish_frame(101 * S)
    captions = h.wait_captions(2)
    assert stamp_ns(captions[1]) == 101 * S and captions[1].latency_seconds == pytest.approx(1.0, abs=1e-6)
    assert h.captioner._gate.counters().throttled == 1


def test_only_the_newest_frame_is_captioned_while_the_model_is_busy(harness, scripted_model):
    h = harness(scripted_model, {"max_rate": 100.0, "refine": False})
    gate = h.captioner._gate
    scripted_model.release.clear()
    t0 = h.now_ns()
    h.publish_frame(t0, value=1)
    assert scripted_model.entered.wait(10)
    for i, value in enumerate((2, 3, 4), start=1):  # arrive while frame 1 is being captioned
        h.publish_frame(t0 + i * S, value=value)
    assert gate.counters().offered == 4
    # The executor is free during the caption: a parameter service call is answered at once.
    client = AsyncParameterClient(h.node, h.captioner.get_fully_qualified_name())
    assert client.wait_for_services(timeout_sec=10.0)
    future = client.set_parameters([Parameter("min_region_score", value=0.25)])
    assert h.wait_for(future.done, timeout=5) and future.result().results[0].successful
    assert not scripted_model.release.is_set()  # still inside the first caption
    scripted_model.release.set()
    captions = h.wait_captions(2)
    time.sleep(0.3)
    assert [stamp_ns(c) for c in h.snapshot()] == [t0, t0 + 3 * S]
    assert [call["pixel"] for call in scripted_model.calls] == [1, 4]
    assert gate.counters().superseded == 2 and len(captions) == 2


def _bad_raw(h, case):
    from sensor_msgs.msg import Image

    msg = Image(encoding="rgb8", height=48, width=64, step=192)
    msg.data = bytes(48 * 192)
    if case == "unsupported encoding":
        msg.encoding, msg.step = "32FC1", 256
        msg.data = bytes(48 * 256)
    elif case == "zero size":
        msg.width = msg.height = msg.step = 0
        msg.data = b""
    elif case == "data shorter than step*height":
        msg.data = bytes(100)
    elif case == "absurdly large":
        msg.width, msg.height, msg.step = 100_000, 100_000, 300_000  # declares 10 gigapixels
    return msg


@pytest.mark.parametrize("case, reason", [
    ("unsupported encoding", "unsupported image encoding '32FC1'"),
    ("zero size", "zero size"),
    ("data shorter than step*height", "data too short"),
    ("absurdly large", "exceeds max_pixels=20000000"),
])
def test_bad_raw_frames_are_counted_and_good_frames_still_captioned(harness, scripted_model, case, reason):
    h = harness(scripted_model, {"max_rate": 100.0, "refine": False})
    t0 = h.now_ns()
    h.publish(h.set_header(_bad_raw(h, case), t0))
    assert h.wait_for(lambda: h.captioner.health_report().value("errors_conversion") == "1")
    assert reason in h.captioner.health_report().value("last_error_conversion")
    h.publish_frame(t0 + S)
    (caption,) = h.wait_captions(1)
    assert stamp_ns(caption) == t0 + S and len(scripted_model.calls) == 1
    assert h.captioner.health_report().value("errors_inference") == "0"


@pytest.mark.parametrize("case, data, reason", [
    ("corrupt JPEG", b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4, "corrupt JPEG"),
    ("not an image", b"hello, world", "not a JPEG or PNG"),
])
def test_bad_compressed_frames_are_counted_and_good_ones_captioned(harness, scripted_model, frame, case, data,
                                                                   reason):
    from sensor_msgs.msg import CompressedImage

    from sharpeye_ros.ros.image_conversion import rgb_to_compressed

    h = harness(scripted_model, {"max_rate": 100.0, "refine": False}, transport="compressed")
    t0 = h.now_ns()
    h.publish(h.set_header(CompressedImage(format="jpeg", data=data), t0))
    assert h.wait_for(lambda: h.captioner.health_report().value("errors_conversion") == "1")
    assert reason in h.captioner.health_report().value("last_error_conversion")
    good = CompressedImage(format="rgb8; jpeg compressed bgr8", data=rgb_to_compressed(frame(64, 48), "jpeg"))
    h.publish(h.set_header(good, t0 + S))
    (caption,) = h.wait_captions(1)
    assert stamp_ns(caption) == t0 + S and (caption.image_width, caption.image_height) == (64, 48)


def test_max_image_pixels_rejects_big_frames_at_run_time(harness, scripted_model):
    h = harness(scripted_model, {"max_rate": 100.0, "refine": False})
    assert h.captioner.set_parameters([Parameter("max_image_pixels", value=1000)])[0].successful
    t0 = h.now_ns()
    h.publish_frame(t0)  # 64x48 = 3072 pixels
    assert h.wait_for(lambda: h.captioner.health_report().value("errors_conversion") == "1")
    assert "exceeds max_pixels=1000" in h.captioner.health_report().value("last_error_conversion")
    assert h.captioner.set_parameters([Parameter("max_image_pixels", value=10_000)])[0].successful
    h.publish_frame(t0 + S)
    h.wait_captions(1)


def test_inference_errors_are_counted_and_the_node_recovers(harness, scripted_model):
    h = harness(scripted_model, {"max_rate": 100.0, "refine": False})
    scripted_model.fail_next = 2
    t0 = h.now_ns()
    for i in range(2):
        h.publish_frame(t0 + i * S)
        assert h.wait_for(lambda: h.captioner.health_report().value("errors_inference") == str(i + 1))
    assert "scripted inference failure" in h.captioner.health_report().value("last_error_inference")
    h.publish_frame(t0 + 2 * S)
    (caption,) = h.wait_captions(1)
    assert stamp_ns(caption) == t0 + 2 * S


def test_errors_are_logged_throttled(harness, scripted_model, capfd):
    h = harness(scripted_model, {"max_rate": 100.0, "refine": False})
    t0 = h.now_ns()
    for i in range(4):
        bad = h.set_header(_bad_raw(h, "unsupported encoding"), t0 + i * S)
        h.publish(bad)
        assert h.wait_for(lambda: h.captioner.health_report().value("errors_conversion") == str(i + 1))
    time.sleep(0.2)
    err = capfd.readouterr().err
    assert err.count("unsupported image encoding '32FC1'") == 1, err  # one line, not four


def test_publishers_leave_the_executor_no_qos_event_handlers(harness, scripted_model):
    # Each event handler is one more waitable in every wake-up's wait set (at least two per
    # frame); the image subscription keeps its own, which report a camera it cannot hear.
    h = harness(scripted_model, {"refine": False})
    node = h.captioner
    assert node._outputs and all(not pub.event_handlers for pub in node._outputs.values())
    assert node._sub.event_handlers
    assert len([w for w in node.waitables if w in node._sub.event_handlers]) == len(node._sub.event_handlers)


def test_a_100hz_flood_keeps_the_node_current(harness, scripted_model):
    h = harness(scripted_model, {"max_rate": 5.0, "refine": False})
    gate = h.captioner._gate
    start = time.monotonic()
    published = 0
    while time.monotonic() - start < 3.0:
        h.publish_frame(h.now_ns(), wait=False)
        published += 1
        time.sleep(0.01)
    last_stamp = h.now_ns()
    assert h.wait_for(lambda: not gate.has_pending and len(h.snapshot()) == gate.counters().taken, timeout=10)
    captions = h.snapshot()
    counts = gate.counters()
    assert len(captions) >= 2 and counts.taken == len(captions)
    # Nothing piles up: one slot, every frame accounted for, captions stay fresh. A frame
    # waits at most for the caption in progress (the longest took `longest` seconds).
    assert counts.offered == counts.taken + counts.dropped
    # Most frames were never read (the read window, closed while none could be due), and
    # are counted as such; those read and those not read are about what came.
    not_read = int(h.captioner.health_report().value("frames_not_read"))
    assert counts.offered < published // 2 < not_read
    assert counts.offered + not_read > published // 2
    longest = max(m.glance_seconds + m.refine_seconds for m in captions)
    assert max(m.latency_seconds for m in captions) < 2 * longest + 1.0
    assert (last_stamp - stamp_ns(captions[-1])) / S < 2 * longest + 1.0
    stamps = [stamp_ns(m) for m in captions]
    assert all(b - a >= S // 5 * (1 - RATE_SLACK) for a, b in zip(stamps, stamps[1:]))  # max_rate, less the jitter slack


def test_publisher_vanishing_leaves_the_node_running_and_warns(harness, scripted_model, rclpy_context,
                                                               monkeypatch):
    from rclpy.node import Node
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    from sharpeye_ros.ros import captioner_node

    monkeypatch.setattr(captioner_node, "NO_INPUT_WARN", 1.0)
    h = harness(scripted_model, {"max_rate": 100.0, "refine": False, "diagnostics_period": 0.2})

    def camera():
        node = Node("vanishing_camera", context=rclpy_context, namespace=h.namespace)
        pub = node.create_publisher(Image, "image", qos_profile_sensor_data)
        assert h.wait_for(lambda: pub.get_subscription_count() > 0)
        return node, pub

    node, pub = camera()
    t0 = h.now_ns()
    pub.publish(h.image_msg(np.zeros((48, 64, 3), np.uint8), t0))
    h.wait_captions(1)
    node.destroy_node()  # the camera driver dies mid-stream
    assert h.wait_for(lambda: h.captioner.health_report().level == 1, timeout=5)
    assert "no image for" in h.captioner.health_report().message
    assert h.wait_for(lambda: any(s.level == b"\x01" for d in h.snapshot("diagnostics") for s in d.status))

    node, pub = camera()  # and comes back
    pub.publish(h.image_msg(np.zeros((48, 64, 3), np.uint8), t0 + S))
    assert stamp_ns(h.wait_captions(2)[1]) == t0 + S
    node.destroy_node()


def test_diagnostics_are_published(harness, scripted_model):
    h = harness(scripted_model, {"diagnostics_period": 0.2, "max_rate": 100.0, "refine": False})
    h.publish_frame(h.now_ns())
    h.wait_captions(1)
    name = h.captioner.diagnostic_name
    assert name == f"{h.namespace}/captioner: captioner"

    def mine():
        return [s for d in h.snapshot("diagnostics") for s in d.status
                if s.name == name and dict((v.key, v.value) for v in s.values)["frames_captioned"] == "1"]

    assert h.wait_for(lambda: mine(), timeout=5)
    status = mine()[-1]
    values = {v.key: v.value for v in status.values}
    assert status.level == b"\x00" and status.message.startswith("captioning at")
    assert status.hardware_id == "cpu"
    for key in ("input_rate_hz", "caption_rate_hz", "latency_last_s", "latency_median_s", "latency_p95_s",
                "frames_dropped_superseded", "frames_dropped_throttled", "errors_conversion",
                "errors_inference",
                "model_id", "device"):
        assert key in values
    assert values["model_id"] == scripted_model.model_id and float(values["latency_last_s"]) > 0


def test_model_without_refinement_turns_refine_off(harness, rclpy_context):
    from sharpeye_ros.model import SharpEyes, presets

    config = presets.tiny()
    config.deeplens = None
    config.refine = False
    config.generation.max_new_tokens = 4
    h = harness(SharpEyes.from_config(config).eval(), {"refine": True, "max_rate": 100.0})
    assert h.captioner.get_parameter("refine").value is False
    (result,) = h.captioner.set_parameters([Parameter("refine", value=True)])
    assert not result.successful and "no DeepLens" in result.reason
    h.publish_frame(h.now_ns())
    (caption,) = h.wait_captions(1)
    assert not caption.refined and caption.refine_seconds == 0.0
