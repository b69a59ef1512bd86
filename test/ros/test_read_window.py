"""The read window's pace and closures (pure: no rclpy). The node that closes its image
subscription with it: test_captioner_read_window.py."""

from __future__ import annotations

import pytest

from sharpeye_ros.ros.read_window import LATE_SHARE, MAX_CLOSED, ReadWindow

S = 1_000_000_000
FRAME = S // 10  # a 10 Hz camera
DUE = int(S / 2 * 0.98)  # max_rate 2, less the gate's slack


def camera(window: ReadWindow, frames: int, t0: float = 100.0, speed: float = 1.0, start_ns: int = 5 * S) -> tuple:
    """Read ``frames`` frames back to back from a 10 Hz camera; the last (stamp, arrival)."""
    for k in range(frames):
        stamp, arrival = start_ns + k * FRAME, t0 + k * FRAME / S / speed
        assert window.observe(stamp, arrival, contiguous=True) == 0
    return stamp, arrival


def test_it_learns_the_camera_pace_from_frames_read_back_to_back():
    window = ReadWindow()
    assert window.frame_interval_ns is None and window.speed is None
    camera(window, 6)
    assert window.frame_interval_ns == FRAME
    assert window.speed == pytest.approx(1.0)


def test_nothing_known_or_nothing_to_wait_for_keeps_it_open():
    window = ReadWindow()
    stamp, arrival = camera(window, 1)  # one frame: no interval, no speed
    assert window.reopen_in(stamp + DUE, stamp, arrival, arrival) is None
    stamp, arrival = camera(window, 6)
    assert window.reopen_in(None, stamp, arrival, arrival) is None  # any frame may be due
    # The next frame may be due (max_rate at the camera's rate): reading it is cheaper.
    assert window.reopen_in(stamp + FRAME, stamp, arrival, arrival) is None


def test_it_reopens_just_after_the_first_frame_that_can_be_due():
    window = ReadWindow()
    stamp, arrival = camera(window, 6)
    # Due from stamp + 0.49 s: the frame stamped + 0.5 s, expected 0.5 s after this one's
    # arrival, and a third of a frame for its delivery jitter, well before the frame after.
    delay = window.reopen_in(stamp + DUE, stamp, arrival, now=arrival + 0.004)
    assert delay == pytest.approx(0.5 + LATE_SHARE * 0.1 - 0.004)
    assert 0.5 < delay + 0.004 < 0.6


def test_a_replay_twice_as_fast_halves_the_closure():
    window = ReadWindow()
    stamp, arrival = camera(window, 8, speed=2.0)
    assert window.speed == pytest.approx(2.0)
    assert window.reopen_in(stamp + DUE, stamp, arrival, arrival) == pytest.approx((0.5 + LATE_SHARE * 0.1) / 2)


def test_a_closure_never_outlasts_max_closed():
    window = ReadWindow()
    stamp, arrival = camera(window, 6)
    assert window.reopen_in(stamp + 10 * S, stamp, arrival, arrival) == MAX_CLOSED  # max_rate 0.1
    # A due time about to pass is not worth closing for.
    assert window.reopen_in(stamp + DUE, stamp, arrival, arrival + 0.53 - 0.005) is None


def test_frames_sent_while_closed_are_counted_from_the_stamps():
    window = ReadWindow()
    stamp, arrival = camera(window, 6)
    # Closed for half a second: the frame read next is 5 frames on, 4 were not read.
    assert window.observe(stamp + 5 * FRAME, arrival + 0.5, contiguous=False) == 4
    # A stamp that jumps an hour on after a short closure counts what could have come.
    assert window.observe(stamp + 5 * FRAME + 3600 * S, arrival + 1.0, contiguous=False) == 4


def test_stamps_going_back_forget_the_pace():
    window = ReadWindow()
    stamp, arrival = camera(window, 6)
    assert window.observe(stamp - 10 * S, arrival + 0.1, contiguous=True) == 0  # a looping bag
    assert window.frame_interval_ns is None and window.speed is None
    assert window.reopen_in(stamp + DUE, stamp, arrival, arrival) is None


def test_max_closed_must_be_positive():
    with pytest.raises(ValueError, match="max_closed"):
        ReadWindow(max_closed=0)
