"""The scene gate's benchmark: its false-skip measurement and the CPU reading it relies on."""

from __future__ import annotations

import os
import time

import pytest

from sharpeye_ros.benchmark.still_bench import gate_rates, process_cpu_seconds, split_cpu
from sharpeye_ros.ros.scene_gate import DEFAULT_MIN_CHANGE


def test_gate_rates_count_changes_below_the_threshold():
    rates = gate_rates(scenes=6)
    assert rates["threshold"] == DEFAULT_MIN_CHANGE and rates["scenes"] == 6
    colour, grey = rates["false_skips"]["colour"], rates["false_skips"]["grey"]
    assert set(colour) == {"new_object", "moved_object", "small_object"}
    for kind, summary in colour.items():
        assert summary["of"] == 6 and summary["count"] == 0 and summary["rate"] == 0.0, kind
        assert summary["min"] >= DEFAULT_MIN_CHANGE
    # A threshold above every change makes every change a false skip: the count is real.
    everything = gate_rates(scenes=2, threshold=1.0)["false_skips"]["colour"]
    assert all(s["count"] == s["of"] == 2 for s in everything.values())
    for sigma, summary in rates["still_recaptions"]["colour"].items():
        assert summary["max"] < DEFAULT_MIN_CHANGE and summary["rate"] == 0.0, sigma
    assert min(s["min"] for s in grey.values()) < min(s["min"] for s in colour.values())


def test_process_cpu_seconds_counts_this_process():
    before = process_cpu_seconds(os.getpid())
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:
        pass
    assert process_cpu_seconds(os.getpid()) - before == pytest.approx(0.3, abs=0.1)


def test_split_cpu_separates_the_idle_rate_from_each_model_caption():
    # 0.01 CPU s/s idle, readings every 0.25 s over 20 s; two model captions of 0.5 CPU s,
    # each within a span of 0.5 s (frame published -> caption received).
    samples, cpu = [], 0.0
    for k in range(81):
        t = k * 0.25
        if k:
            cpu += 0.01 * 0.25
            if k in (21, 22, 61, 62):  # the intervals (5.0, 5.5] and (15.0, 15.5]
                cpu += 0.25
        samples.append((t, cpu))
    idle, per_caption = split_cpu(samples, [(5.05, 5.45), (15.05, 15.45)])
    assert idle == pytest.approx(0.01)
    assert per_caption == pytest.approx(0.5)
    # No caption span: all of it is idle (0.2 + 1.0 CPU s in 20 s), and no caption's cost.
    assert split_cpu(samples, []) == (pytest.approx(0.06), None)
    # Too little idle time to tell the idle rate.
    assert split_cpu(samples, [(0.0, 19.0)]) == (None, None)


def test_the_still_period_is_read_from_the_second_report_that_counts_the_caption():
    # The first report counting the caption may have been put together while it finished
    # (the still period read just before the gate took the caption's time): the next is sure.
    import threading
    from types import SimpleNamespace

    from sharpeye_ros.benchmark.still_bench import _Feed

    reports = [(float(k), {"frames_captioned": str(n), "still_period_s": str(p)})
               for k, (n, p) in enumerate([(1, 60.0), (2, 60.0), (2, 1100.0), (2, 1100.0)])]
    feed = SimpleNamespace(_lock=threading.Lock(), reports=reports)
    assert _Feed.report_after(feed, 2, timeout=1.0)["still_period_s"] == "1100.0"
    assert _Feed.report_after(feed, 3, timeout=0.3) is None  # none counts it: None, not a hang
