"""FrameGate: newest frame wins, rate limited on message time, stamps that go backwards."""

from __future__ import annotations

import threading
import time

import pytest

from sharpeye_ros.ros.frame_gate import FrameGate, GateCounters

S = 1_000_000_000  # ns per second


def drain(gate: FrameGate) -> list:
    """Take what is waiting without blocking."""
    item = gate.take(timeout=0)
    return [] if item is None else [(item.frame, item.stamp_ns)]


def test_first_frame_is_taken_with_its_stamp():
    gate = FrameGate(max_rate=2.0)
    assert gate.offer("a", 5 * S)
    item = gate.take(timeout=0)
    assert (item.frame, item.stamp_ns) == ("a", 5 * S)
    assert gate.take(timeout=0) is None
    assert gate.counters() == GateCounters(offered=1, taken=1)


def test_newest_frame_replaces_the_waiting_one():
    gate = FrameGate(max_rate=1000.0)
    for i in range(5):
        assert gate.offer(i, i * S)
    assert drain(gate) == [(4, 4 * S)]
    c = gate.counters()
    assert (c.offered, c.taken, c.superseded, c.throttled) == (5, 1, 4, 0)
    assert c.dropped == 4


def test_throttle_on_message_time_not_wall_time():
    # Frames 0.1 s apart in stamp, all offered at once in wall time: at 2 Hz only frames
    # at least 0.5 s (of stamp) after the last taken one get through.
    gate = FrameGate(max_rate=2.0)
    taken = []
    for i in range(21):
        gate.offer(i, i * S // 10)
        item = gate.take(timeout=0)  # the worker is always idle
        if item is not None:
            taken.append(item.stamp_ns)
    assert taken == [0, 5 * S // 10, 10 * S // 10, 15 * S // 10, 20 * S // 10]
    c = gate.counters()
    assert c.throttled == 16 and c.superseded == 0 and c.taken == 5


def test_busy_worker_gets_the_newest_due_frame():
    gate = FrameGate(max_rate=2.0)
    gate.offer("f0", 0)
    assert drain(gate) == [("f0", 0)]  # the worker now captions f0 for a while
    for i in range(1, 13):  # stamps 0.1 .. 1.2 s arrive meanwhile
        gate.offer(f"f{i}", i * S // 10)
    assert drain(gate) == [("f12", 12 * S // 10)]
    c = gate.counters()
    assert c.throttled == 4  # 0.1 .. 0.4 s: within 0.5 s of f0
    assert c.superseded == 7  # 0.5 .. 1.1 s: each replaced by the next
    assert c.offered == c.taken + c.dropped


def test_equal_stamp_counts_as_throttled():
    gate = FrameGate(max_rate=2.0)
    gate.offer("a", S)
    drain(gate)
    assert not gate.offer("b", S)
    assert gate.counters().throttled == 1


def test_small_step_back_is_out_of_order_and_dropped():
    gate = FrameGate(max_rate=100.0)
    gate.offer("new", 10 * S)
    assert not gate.offer("late", 10 * S - S // 10)
    assert drain(gate) == [("new", 10 * S)]
    assert gate.counters().out_of_order == 1


def test_large_step_back_starts_a_new_timeline():
    # A rosbag loop: stamps jump back 60 s; captioning must resume at once.
    gate = FrameGate(max_rate=2.0)
    gate.offer("end", 60 * S)
    drain(gate)
    assert gate.offer("start", 0)
    assert drain(gate) == [("start", 0)]
    assert not gate.offer("too soon", S // 10)  # and the throttle works on the new timeline
    c = gate.counters()
    assert (c.time_resets, c.throttled, c.out_of_order) == (1, 1, 0)


def test_reset_replaces_a_frame_waiting_from_the_old_timeline():
    gate = FrameGate(max_rate=2.0)
    gate.offer("old", 60 * S)
    gate.offer("new", 0)
    assert drain(gate) == [("new", 0)]
    assert gate.counters().superseded == 1


def test_set_max_rate_applies_to_following_frames():
    gate = FrameGate(max_rate=1.0)
    gate.offer(0, 0)
    drain(gate)
    assert not gate.offer(1, S // 2)
    gate.set_max_rate(4.0)
    assert gate.offer(2, 3 * S // 4)
    with pytest.raises(ValueError, match="max_rate"):
        gate.set_max_rate(0.0)


@pytest.mark.parametrize("rate", [0.0, -1.0, float("nan")])
def test_bad_rate_rejected(rate):
    with pytest.raises(ValueError, match="max_rate"):
        FrameGate(max_rate=rate)


def test_take_blocks_until_offer_and_close_wakes_it():
    gate = FrameGate(max_rate=10.0)
    got = []
    worker = threading.Thread(target=lambda: got.append(gate.take(timeout=5)))
    worker.start()
    time.sleep(0.05)
    gate.offer("x", S)
    worker.join(timeout=5)
    assert got[0].frame == "x"

    got.clear()
    worker = threading.Thread(target=lambda: got.append(gate.take()))
    worker.start()
    time.sleep(0.05)
    gate.close()
    worker.join(timeout=5)
    assert not worker.is_alive() and got == [None]
    assert gate.closed and not gate.offer("y", 2 * S)


def test_close_discards_waiting_frame():
    gate = FrameGate(max_rate=10.0)
    gate.offer("x", S)
    assert gate.has_pending
    gate.close()
    assert not gate.has_pending and gate.take(timeout=0) is None


def test_concurrent_offers_keep_the_accounting_exact():
    gate = FrameGate(max_rate=50.0)
    taken = []
    stop = threading.Event()

    def worker():
        while not stop.is_set():
            item = gate.take(timeout=0.01)
            if item is not None:
                taken.append(item.stamp_ns)

    thread = threading.Thread(target=worker)
    thread.start()
    for i in range(2000):
        gate.offer(i, i * S // 1000)  # 1 kHz of message time
    time.sleep(0.1)
    stop.set()
    thread.join(timeout=5)
    c = gate.counters()
    assert c.offered == 2000
    assert c.offered == c.taken + c.dropped + int(gate.has_pending)
    assert taken == sorted(taken)
    assert all(b - a >= S // 50 for a, b in zip(taken, taken[1:]))  # never faster than 50 Hz
