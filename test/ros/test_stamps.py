"""Stamps <-> nanoseconds, for rclpy-like messages, bare stamps and the ground-truth JSON."""

from __future__ import annotations

from types import SimpleNamespace as NS

import pytest

from sharpeye_ros.ros.stamps import NS_PER_S, stamp_ns, stamp_parts, stamp_seconds


def test_stamp_ns_reads_every_form_of_a_stamp():
    stamp = NS(sec=1_700_000_000, nanosec=123_456_789)
    expected = 1_700_000_000_123_456_789
    assert stamp_ns(stamp) == expected
    assert stamp_ns(NS(header=NS(stamp=stamp))) == expected  # a message: its header.stamp
    assert stamp_ns({"sec": 1_700_000_000, "nanosec": 123_456_789}) == expected  # ground-truth JSON
    assert stamp_ns(NS(sec=0, nanosec=0)) == 0
    assert stamp_seconds(stamp) == pytest.approx(1_700_000_000.123456789)


@pytest.mark.parametrize("ns", [0, 1, 999_999_999, NS_PER_S, 12 * NS_PER_S + 345, 1_700_000_000_123_456_789])
def test_stamp_parts_inverts_stamp_ns(ns):
    sec, nanosec = stamp_parts(ns)
    assert 0 <= nanosec < 1_000_000_000 and sec * 1_000_000_000 + nanosec == ns
    assert stamp_ns(NS(sec=sec, nanosec=nanosec)) == ns
