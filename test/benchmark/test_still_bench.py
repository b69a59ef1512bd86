"""The scene gate's benchmark: its false-skip measurement and the CPU reading it relies on."""

from __future__ import annotations

import os
import time

import pytest

from sharpeye_ros.benchmark.still_bench import gate_rates, process_cpu_seconds
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
