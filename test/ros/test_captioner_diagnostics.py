"""Diagnostics statistics: rates, latency percentiles, log throttle, and the health levels."""

from __future__ import annotations

import math

import pytest

from sharpeye_ros.ros.diagnostics import (CLOCK_NOT_RUNNING, CONVERSION, ERROR, INFERENCE, OK, STAMP_AHEAD, WARN,
                                          CaptionerHealth, InputLog, LatencyWindow, LogThrottle, RateMeter,
                                          frame_latency, no_input_warning)
from sharpeye_ros.ros.frame_gate import FROZEN_STAMP, OUT_OF_ORDER, ZERO_STAMP, GateCounters, Offer

S = 1_000_000_000


def test_rate_meter_counts_a_sliding_window():
    meter = RateMeter(window=2.0, start=0.0)
    for i in range(40):  # 10 Hz for 4 s
        meter.record(i * 0.1)
    assert meter.rate(3.9) == pytest.approx(10.0)
    assert meter.rate(5.05) == pytest.approx(9 / 2.0)  # the events at 3.1 .. 3.9 s only
    assert meter.rate(10.0) == 0.0


def test_rate_meter_before_a_full_window_uses_the_elapsed_time():
    meter = RateMeter(window=10.0, start=100.0)
    for i in range(5):
        meter.record(100.0 + 0.2 * (i + 1))
    assert meter.rate(101.0) == pytest.approx(5.0)
    assert RateMeter(window=1.0, start=0.0).rate(0.0) == 0.0


def test_rate_meter_memory_is_bounded():
    meter = RateMeter(window=1e9, start=0.0, max_events=100)
    for i in range(10_000):
        meter.record(float(i))
    assert meter.count(10_000.0) == 100


def test_latency_window_last_mean_percentile():
    window = LatencyWindow(size=100)
    assert math.isnan(window.mean) and math.isnan(window.last) and math.isnan(window.percentile(95))
    for v in range(1, 101):  # 1 .. 100
        window.add(v / 100)
    assert window.last == 1.0
    assert window.mean == pytest.approx(0.505)
    assert window.percentile(95) == pytest.approx(0.95)
    assert window.percentile(50) == pytest.approx(0.50)
    window.add(10.0)  # the oldest value (0.01) falls out
    assert len(window) == 100 and window.percentile(100) == 10.0
    with pytest.raises(ValueError):
        window.percentile(0)


def test_log_throttle_counts_suppressed_lines_per_key():
    throttle = LogThrottle(period=5.0)
    assert throttle.allow("conversion", 0.0) == 0
    assert throttle.allow("conversion", 1.0) is None
    assert throttle.allow("conversion", 2.0) is None
    assert throttle.allow("inference", 2.0) == 0  # other kinds have their own budget
    assert throttle.allow("conversion", 5.0) == 2
    assert throttle.allow("conversion", 6.0) is None


def gate(**counts) -> GateCounters:
    return GateCounters(**counts)


def test_health_ok_while_captioning():
    health = CaptionerHealth(start=0.0, window=10.0, no_input_warn=5.0)
    for i in range(20):
        health.record_input((i + 1) * 0.5)
        health.record_caption((i + 1) * 0.5, latency=0.2 + 0.01 * i, model_seconds=0.15, overhead=0.002)
    report = health.report(10.0, gate(offered=20, taken=20))
    assert report.level == OK and "captioning at 2.00 Hz" in report.message
    assert report.value("input_rate_hz") == "2.00"
    assert report.value("latency_last_s") == "0.390"
    assert report.value("latency_p95_s") == "0.380"
    assert report.value("frames_captioned") == "20"
    assert report.value("errors_conversion") == "0"


def test_frames_not_read_count_in_the_input_rate():
    # The read window left 4 frames unread before each frame read: the camera's 10 Hz, not 2.
    health = CaptionerHealth(start=0.0, window=10.0)
    for i in range(20):
        health.record_input((i + 1) * 0.5, not_read=4 if i else 0)
    report = health.report(10.0, GateCounters(offered=20))
    assert report.value("frames_received") == "20" and report.value("frames_not_read") == "76"
    assert float(report.value("input_rate_hz")) == pytest.approx(9.6, abs=0.11)


def test_health_waits_then_warns_without_input():
    health = CaptionerHealth(start=0.0, no_input_warn=5.0)
    assert health.report(1.0, gate()).level == OK
    report = health.report(6.0, gate())
    assert report.level == WARN and "no image received for 6.0 s" in report.message
    health.record_input(7.0)
    health.record_caption(7.1, 0.1, 0.1, 0.0)
    assert health.report(8.0, gate(offered=1)).level == OK
    report = health.report(20.0, gate(offered=1))  # the publisher vanished
    assert report.level == WARN and "no image for 13.0 s" in report.message
    assert report.value("seconds_since_last_image") == "13.0"


def test_health_warns_on_some_errors_and_errors_when_nothing_gets_through():
    health = CaptionerHealth(start=0.0, window=10.0)
    health.record_input(1.0)
    health.record_caption(1.0, 0.1, 0.1, 0.0)
    health.record_error(CONVERSION, "unsupported image encoding 'x'", 1.5)
    report = health.report(2.0, gate(offered=2, taken=2))
    assert report.level == WARN and "1 conversion errors" in report.message
    assert report.value("errors_conversion") == "1"
    assert report.value("last_error_conversion") == "unsupported image encoding 'x'"

    for t in range(12, 15):  # later every frame fails in the model
        health.record_input(float(t))
        health.record_error(INFERENCE, "out of memory", float(t))
    report = health.report(15.0, gate(offered=5, taken=5))
    assert report.level == ERROR and "3 inference errors" in report.message
    assert "out of memory" in report.message
    assert health.error_count(INFERENCE) == 3 and health.error_count(CONVERSION) == 1

    # Errors age out of the window: counts stay, the level recovers.
    health.record_input(30.0)
    health.record_caption(30.0, 0.1, 0.1, 0.0)
    assert health.report(30.0, gate()).level == OK


def test_health_reports_gate_counts_and_extras():
    health = CaptionerHealth(start=0.0)
    report = health.report(1.0, gate(offered=9, taken=2, superseded=3, throttled=4), (("model_id", "tiny"),))
    assert report.value("frames_received") == "9"
    assert report.value("frames_dropped_superseded") == "3"
    assert report.value("frames_dropped_throttled") == "4"
    assert report.value("model_id") == "tiny"
    assert report.value("latency_median_s") == "n/a"


def test_unknown_error_kind_rejected():
    with pytest.raises(ValueError, match="unknown error kind"):
        CaptionerHealth(start=0.0).record_error("cosmic rays", "", 0.0)
    with pytest.raises(ValueError, match="unknown warning kind"):
        CaptionerHealth(start=0.0).record_warning("cosmic rays", "", 0.0)


def test_one_stamp_from_the_future_does_not_poison_the_latency_figures():
    # One frame stamped 1e6 s ahead made latency_mean_s read -15872 for 100 captions.
    health = CaptionerHealth(start=0.0)
    now_ns = 1000 * S
    for i in range(100):
        stamp = now_ns + 10**6 * S if i == 50 else now_ns - S // 5
        latency, unmeasured = frame_latency(now_ns, stamp)
        health.record_caption(1.0 + i * 0.1, latency, 0.1, 0.001, unmeasured)
    report = health.report(11.0, gate(time_resets=1))
    assert report.value("latency_median_s") == "0.200" and report.value("latency_p95_s") == "0.200"
    assert report.value("latency_unmeasured_stamp_ahead") == "1"
    assert report.value("time_resets") == "2"  # the gate's jump back, and the stamp ahead of the clock
    window = LatencyWindow()
    for v in (0.2, 0.2, -15872.0, 0.3):
        window.add(v)
    assert window.median == pytest.approx(0.2) and math.isnan(LatencyWindow().median)


def test_latency_is_not_measured_without_a_running_clock():
    # use_sim_time without /clock: the node's clock reads 0, latency was -1.8e9 s.
    latency, why = frame_latency(0, 1_800_000_000 * S)
    assert math.isnan(latency) and why == CLOCK_NOT_RUNNING
    assert frame_latency(10 * S, 9 * S) == (1.0, None)
    assert frame_latency(10 * S, 10 * S + S // 2) == (-0.5, None)  # a camera clock a little ahead
    assert frame_latency(10 * S, 12 * S)[1] == STAMP_AHEAD
    health = CaptionerHealth(start=0.0)
    health.record_caption(1.0, latency, 0.1, 0.0, why)
    report = health.report(2.0, gate(offered=1, taken=1))
    assert report.value("latency_last_s") == "n/a" and report.value("latency_unmeasured_no_clock") == "1"
    assert report.value("frames_captioned") == "1"


def test_conversion_warnings_are_counted_and_reported():
    health = CaptionerHealth(start=0.0, window=10.0)
    health.record_input(1.0)
    health.record_caption(1.0, 0.1, 0.1, 0.0)
    health.record_warning(CONVERSION, "damaged JPEG data, decoded anyway: Corrupt JPEG data: bad Huffman code", 1.0)
    report = health.report(2.0, gate(offered=1, taken=1))
    assert report.level == WARN and "1 conversion warnings" in report.message and "Huffman" in report.message
    assert report.value("warnings_conversion") == "1" and report.value("errors_conversion") == "0"
    assert "bad Huffman code" in report.value("last_warning_conversion")
    health.record_input(20.0)
    assert health.report(20.0, gate()).level == OK  # aged out of the window; the count stays
    assert health.report(20.0, gate()).value("warnings_conversion") == "1"


def test_frozen_stamps_are_reported_zero_stamps_noted():
    health = CaptionerHealth(start=0.0)
    health.record_input(1.0, ZERO_STAMP)
    health.record_caption(1.0, 0.1, 0.1, 0.0)
    report = health.report(1.5, gate(offered=1, taken=1, zero_stamps=1))
    assert report.level == OK and "on arrival time: header.stamp is 0" in report.message
    assert report.value("throttle_clock") == "arrival time" and report.value("frames_zero_stamp") == "1"
    health.record_input(2.0, FROZEN_STAMP)
    report = health.report(2.5, gate(offered=2, taken=1, zero_stamps=1, frozen_stamps=1))
    assert report.level == WARN and "header.stamp does not advance" in report.message
    assert report.value("frames_frozen_stamp") == "1"
    health.record_input(20.0)
    report = health.report(20.0, gate())
    assert report.level == OK and report.value("throttle_clock") == "header.stamp"


def test_input_log_says_fallbacks_once_and_throttles_the_rest():
    log = InputLog(period=5.0)
    assert log.offer(Offer(True, ZERO_STAMP), 0.0) == ["frames have header.stamp = 0: throttling on arrival time"]
    assert log.offer(Offer(True, ZERO_STAMP), 100.0) == []
    (frozen,) = log.offer(Offer(False, FROZEN_STAMP), 0.0)
    assert "header.stamp does not advance" in frozen and log.offer(Offer(True, FROZEN_STAMP), 99.0) == []
    late = Offer(False, dropped=OUT_OF_ORDER, back_s=0.25)
    assert log.offer(late, 0.0) == ["frame dropped: stamped 0.25 s before a newer frame (out of order)"]
    assert log.offer(late, 1.0) == [] and log.offer(late, 2.0) == []
    assert log.offer(late, 6.0) == ["frame dropped: stamped 0.25 s before a newer frame (out of order) "
                                    "(2 more since the last report)"]
    (reset,) = log.offer(Offer(True, time_reset=True, back_s=60.0), 0.0)
    assert "went back 60 s: a new timeline" in reset
    assert len(log.latency(CLOCK_NOT_RUNNING, 0.0)) == 1 and log.latency(CLOCK_NOT_RUNNING, 99.0) == []
    assert "a time reset" in log.latency(STAMP_AHEAD, 0.0)[0] and log.latency(None, 0.0) == []


def test_no_input_warning_names_the_topic_and_hints():
    text = no_input_warning("/cam/image", "raw", 5.2, False, 0, "/cam/image/compressed", "compressed", 1)
    assert text == ("no image received on '/cam/image' (raw) for 5 s; '/cam/image/compressed' has 1 "
                    "publisher(s): set image_transport:=compressed?")
    text = no_input_warning("/cam/image/compressed", "compressed", 9.0, True, 0, "/cam/image", "raw", 0)
    assert text.startswith("no image on '/cam/image/compressed' (compressed) for 9 s; nothing publishes")
    assert "-r image:=" in text
    text = no_input_warning("/image", "raw", 6.0, False, 2, "/image/compressed", "compressed", 0)
    assert "; it has 2 publisher(s): check that their QoS matches" in text and "image_transport" not in text
