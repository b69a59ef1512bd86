"""FrameGate: newest frame wins, rate limited on message time (only captioned frames start the
interval), stamps that go backwards, stand still or are missing."""

from __future__ import annotations

import threading
import time

import pytest

from sharpeye_ros.ros.frame_gate import (ARRIVAL, FROZEN_STAMP, OUT_OF_ORDER, RATE_SLACK, STAMP, THROTTLED, ZERO_STAMP,
                                        FrameGate, GateCounters)

S = 1_000_000_000  # ns per second


def drain(gate: FrameGate, captioned: bool = True) -> list:
    """Take what is waiting without blocking, and report it captioned (or not)."""
    item = gate.take(timeout=0)
    if item is None:
        return []
    gate.done(item, captioned)
    return [(item.frame, item.stamp_ns)]


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


def jittered(i: int, frame_ns: int = S // 10) -> int:
    """Frame ``i`` of a camera at 1 s / ``frame_ns``, stamped up to 0.3 ms early or late (a
    deterministic pattern), as a driver that stamps on arrival does."""
    return i * frame_ns + ((i * 7919) % 11 - 5) * 60_000


def test_a_camera_at_a_multiple_of_max_rate_keeps_max_rate_despite_stamp_jitter():
    # 10 Hz in, 2 Hz out: every fifth frame, whether it is stamped a hair early or late. A
    # frame 0.3 ms short of the interval used to be throttled, and the next one taken a
    # whole input frame (0.1 s) late: 1.7 Hz instead of 2, changes seen up to 0.1 s later.
    gate = FrameGate(max_rate=2.0)
    taken = []
    for i in range(101):
        gate.offer(i, jittered(i))
        taken += [frame for frame, _ in drain(gate)]
    assert taken == list(range(0, 101, 5))


def test_the_slack_for_jitter_does_not_let_frames_through_early():
    gate = FrameGate(max_rate=2.0)
    gate.offer("a", 0)
    drain(gate)
    assert not gate.offer("2.1% early", S // 2 - S // 2 * 21 // 1000)
    assert gate.offer("1.9% early", S // 2 - S // 2 * 19 // 1000)


def test_busy_worker_gets_the_newest_due_frame():
    gate = FrameGate(max_rate=2.0)
    gate.offer("f0", 0)
    f0 = gate.take(timeout=0)  # the worker now captions f0 for a while
    for i in range(1, 13):  # stamps 0.1 .. 1.2 s arrive meanwhile
        gate.offer(f"f{i}", i * S // 10)
    gate.done(f0, captioned=True)
    assert drain(gate) == [("f12", 12 * S // 10)]
    c = gate.counters()
    assert c.superseded == 11 and c.throttled == 0  # each replaced by the next
    assert c.offered == c.taken + c.dropped


def test_a_frame_waiting_too_close_to_the_captioned_one_is_throttled_when_it_is_done():
    gate = FrameGate(max_rate=2.0)
    gate.offer("f0", 0)
    f0 = gate.take(timeout=0)
    assert gate.offer("f1", S // 10)  # waits: f0 may still fail
    dropped = gate.done(f0, captioned=True)  # it did not: f1 is within 0.5 s of it
    assert drain(gate) == [] and gate.counters().throttled == 1
    assert dropped is not None and dropped.frame == "f1"  # returned, so the node can log why


def test_a_frame_the_worker_drops_does_not_use_up_the_rate_slot():
    # A rejected frame (undecodable, failed inference) must not hold back the next good one.
    gate = FrameGate(max_rate=2.0)
    gate.offer("good", 0)
    assert drain(gate) == [("good", 0)]
    gate.offer("bad", S)
    assert drain(gate, captioned=False) == [("bad", S)]
    assert gate.offer("next", S + S // 10)  # 0.1 s after the bad frame, 1.1 s after the captioned one
    assert drain(gate) == [("next", S + S // 10)]
    assert not gate.offer("too soon", S + 2 * S // 10)  # measured from "next", which was captioned
    gate.offer("slow bad", 3 * S)
    bad = gate.take(timeout=0)
    assert gate.offer("meanwhile", 3 * S + S // 10)  # while the bad one is in hand
    gate.done(bad, captioned=False)
    assert drain(gate) == [("meanwhile", 3 * S + S // 10)]


def test_equal_stamp_counts_as_throttled():
    gate = FrameGate(max_rate=2.0)
    gate.offer("a", S)
    drain(gate)
    offer = gate.offer("b", S)  # without an arrival time the gate has nothing else to go by
    assert not offer and offer.dropped == THROTTLED and offer.fallback is None
    assert gate.counters().throttled == 1


def test_small_step_back_is_out_of_order_and_dropped():
    gate = FrameGate(max_rate=100.0)
    gate.offer("new", 10 * S)
    late = gate.offer("late", 10 * S - S // 10)
    assert not late and late.dropped == OUT_OF_ORDER and late.back_s == pytest.approx(0.1)
    assert drain(gate) == [("new", 10 * S)]
    assert gate.offer("newer", 10 * S + S // 10)  # the next in-order frame: "late" was a straggler
    assert not gate.offer("late again", 10 * S - S // 20)
    assert gate.counters().out_of_order == 2 and gate.counters().time_resets == 0


def test_a_loop_shorter_than_the_reset_threshold_is_a_new_timeline():
    # A bag of 0.8 s replayed in a loop: its stamps step back by 0.8 s (less than the 1 s
    # that marks a reset) and then go on from there. It used to be dropped as out of order
    # for as long as the loop ran (2 captions of 148 frames).
    gate = FrameGate(max_rate=2.0)
    taken = []
    for loop in range(3):
        for i in range(8):  # 0.0 .. 0.7 s, 10 Hz
            gate.offer((loop, i), i * S // 10)
            taken += [frame for frame, _ in drain(gate)]
    c = gate.counters()
    assert (0, 0) in taken and (1, 1) in taken and (2, 1) in taken  # the first frame of a loop
    assert c.time_resets == 2 and c.out_of_order == 2  # of each loop is a lone straggler until the next
    assert len(taken) == 6


def test_zero_and_frozen_stamps_fall_back_to_arrival_time():
    gate = FrameGate(max_rate=2.0)
    offer = gate.offer("a", 0, arrival_ns=100 * S)
    assert offer and offer.fallback == ZERO_STAMP
    item = gate.take(timeout=0)
    assert (item.stamp_ns, item.clock, item.header_ns) == (100 * S, ARRIVAL, 0)
    gate.done(item, True)
    # A frozen, non-zero stamp (a driver whose clock stopped) used to throttle every frame
    # after the first: 1 caption of 148 frames.
    frozen = 7 * S
    captioned = []
    for i in range(20):  # 10 Hz of arrival, always the same stamp
        offer = gate.offer(i, frozen, arrival_ns=101 * S + i * S // 10)
        assert offer.fallback == (None if i == 0 else FROZEN_STAMP)
        captioned += [stamp for _, stamp in drain(gate)]
    assert captioned == [frozen] + [101 * S + k * S // 2 for k in range(1, 4)]  # on arrival, 2 Hz
    c = gate.counters()
    assert (c.zero_stamps, c.frozen_stamps, c.out_of_order, c.time_resets) == (1, 19, 0, 0)
    offer = gate.offer("moving again", frozen + S // 10, arrival_ns=103 * S)
    assert offer.fallback is None and not offer and offer.dropped == THROTTLED  # 0.1 s after "frozen"
    assert gate.offer("later", frozen + S, arrival_ns=103 * S)
    item = gate.take(timeout=0)
    assert item.clock == STAMP and item.stamp_ns == frozen + S


def test_large_step_back_starts_a_new_timeline():
    # A rosbag loop: stamps jump back 60 s; captioning must resume at once.
    gate = FrameGate(max_rate=2.0)
    gate.offer("end", 60 * S)
    drain(gate)
    start = gate.offer("start", 0)
    assert start and start.time_reset and start.back_s == 60.0
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


def test_a_new_timeline_that_starts_while_a_frame_is_captioned_is_not_throttled_by_it():
    # CI saw it: a frame stamped far ahead was in hand when the camera's clock came back; the
    # frame after the reset waited, and the finished caption's old-timeline stamp then
    # throttled it (and every frame for the next 1e6 s).
    gate = FrameGate(max_rate=100.0)
    gate.offer("ahead", 10**6 * S)
    in_hand = gate.take(timeout=0)
    assert gate.offer("back", S).time_reset
    assert gate.done(in_hand, captioned=True) is None  # nothing dropped as throttled
    assert drain(gate) == [("back", S)]
    assert not gate.offer("too soon", S + S // 1000)  # the new timeline's own throttle holds
    assert gate.offer("due", S + S // 50)
    c = gate.counters()
    assert (c.time_resets, c.throttled) == (1, 1)


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


def test_next_due_counts_the_frame_waiting_or_in_hand_as_captioned():
    gate = FrameGate(max_rate=2.0)
    period = int(S / 2 * (1 - RATE_SLACK))
    assert gate.next_due_ns() is None  # nothing yet: any frame is due
    assert gate.offer("a", 10 * S)
    assert gate.next_due_ns() == 10 * S + period  # waiting
    item = gate.take(timeout=0)
    assert gate.next_due_ns() == 10 * S + period  # in the worker's hand
    gate.done(item, captioned=False)
    assert gate.next_due_ns() is None  # it failed: the interval is where it was (nowhere)
    assert gate.offer("b", 11 * S)
    gate.done(gate.take(timeout=0), captioned=True)
    assert gate.next_due_ns() == 11 * S + period  # captioned: the interval starts at it
    gate.set_max_rate(1.0)
    assert gate.next_due_ns() == 11 * S + int(S * (1 - RATE_SLACK))


def test_next_due_is_unknown_on_arrival_time_and_follows_a_new_timeline():
    period = int(S / 2 * (1 - RATE_SLACK))
    gate = FrameGate(max_rate=2.0)
    assert gate.offer("zero", 0, arrival_ns=50 * S)  # judged on arrival time
    assert gate.next_due_ns() is None
    gate = FrameGate(max_rate=2.0)
    assert gate.offer("old", 100 * S)
    old = gate.take(timeout=0)
    assert gate.offer("back", 90 * S).time_reset  # a rosbag looped while "old" was captioned
    gate.done(old, captioned=True)
    assert gate.next_due_ns() == 90 * S + period  # from the new timeline's frame, not the old one
    gate.done(gate.take(timeout=0), captioned=False)
    assert gate.next_due_ns() is None
    gate.close()
    assert gate.next_due_ns() is None
