"""The running node reads only the frames that can be due: its image subscription closes
between them (the read window's arithmetic: test_read_window.py), and the captions keep
their rate, their freshness and their account of every frame."""

from __future__ import annotations

import statistics
import time

import pytest

rclpy = pytest.importorskip("rclpy")
pytestmark = pytest.mark.ros

from sharpeye_ros.ros.stamps import stamp_ns  # noqa: E402

S = 1_000_000_000
FRAME = S // 10  # the camera here: 10 Hz


def live_camera(h, frame, seconds: float, bad: range = range(0)) -> list[int]:
    """Publish 10 Hz frames stamped on the node's clock, as a live camera does (those numbered
    in ``bad`` of an encoding the node cannot read); their stamps."""
    from sensor_msgs.msg import Image

    stamps: list[int] = []
    start = time.monotonic()
    k = 0
    while time.monotonic() - start < seconds:
        stamp = h.now_ns()
        if k in bad:
            msg = Image(encoding="32FC1", height=48, width=64, step=256, data=bytes(48 * 256))
        else:
            msg = h.image_msg(frame(value=k % 200), stamp)
        h.publish(h.set_header(msg, stamp), wait=False)
        stamps.append(stamp)
        k += 1
        time.sleep(max(0.0, start + k * FRAME / S - time.monotonic()))
    return stamps


def test_a_live_camera_is_read_only_when_a_frame_can_be_due(harness, scripted_model, frame):
    h = harness(scripted_model, {"max_rate": 2.0, "refine": False})
    stamps = live_camera(h, frame, 4.0)
    time.sleep(0.3)
    captions = h.snapshot()
    gate, report = h.captioner._gate.counters(), h.captioner.health_report()
    not_read = int(report.value("frames_not_read"))
    # Most frames were left in DDS unread, and each is accounted for: read or counted unread.
    assert gate.offered < len(stamps) / 2
    assert abs(gate.offered + not_read - len(stamps)) <= 3, (gate, not_read, len(stamps))
    # The rate is still max_rate on the stamps: each caption five camera frames after the
    # last (0.5 s), at most one late (a reopening after the frame after the due one).
    gaps = [(stamp_ns(b) - stamp_ns(a)) / FRAME for a, b in zip(captions, captions[1:])]
    assert len(captions) >= 6, gaps
    assert statistics.median(gaps) == pytest.approx(5, abs=0.2), gaps
    assert all(4.8 < g < 6.2 for g in gaps), gaps
    assert set(map(stamp_ns, captions)) <= set(stamps)


def test_a_frame_that_failed_reopens_the_window_at_once(harness, scripted_model, frame):
    """A due frame lost to a bad encoding: the next frames are read at once, so the first
    good one is captioned, not one read when the closure's timer ran out."""
    h = harness(scripted_model, {"max_rate": 2.0, "refine": False})
    bad = range(20, 28)  # 0.8 s of bad frames: at least one of them is due
    stamps = live_camera(h, frame, 4.0, bad)
    time.sleep(0.3)
    assert int(h.captioner.health_report().value("errors_conversion")) >= 1
    first_good = stamps[bad.stop]
    after = [stamp_ns(c) for c in h.snapshot() if stamp_ns(c) >= stamps[bad.start]]
    assert after, "nothing captioned after the bad frames"
    assert after[0] - first_good <= FRAME, (after[0] - first_good) / S


def test_a_deeper_queue_reads_every_frame_and_keeps_the_rate(harness, scripted_model, frame):
    """A QoS override of depth > 1 keeps frames queued for the node: the read window, which
    relies on DDS keeping only the newest, is off, so every frame is read (none counted
    unread) and the throttle alone keeps max_rate."""
    namespace = "/captioner_qos_depth"
    h = harness(scripted_model, {"max_rate": 2.0, "refine": False,
                                 f"qos_overrides.{namespace}/image.subscription.depth": 5}, namespace=namespace)
    assert h.captioner.image_qos == "best_effort, depth 5" and not h.captioner._window_enabled
    stamps = live_camera(h, frame, 3.0)
    time.sleep(0.3)
    captions = h.snapshot()
    gate, report = h.captioner._gate.counters(), h.captioner.health_report()
    assert int(report.value("frames_not_read")) == 0
    assert gate.offered >= len(stamps) - 3, (gate, len(stamps))  # best effort on one host: about all
    gaps = [(stamp_ns(b) - stamp_ns(a)) / FRAME for a, b in zip(captions, captions[1:])]
    assert len(captions) >= 4, gaps
    assert statistics.median(gaps) == pytest.approx(5, abs=0.2), gaps
    assert set(map(stamp_ns, captions)) <= set(stamps)
