"""When the captioner may stop reading its image topic: while no frame could be due.

Reading a frame costs the node far more in rclpy's executor (a wake-up, a take, a task and
two guard-condition triggers) than the gate's verdict on it: at 10 Hz with ``max_rate`` 2,
four frames of five were read only to be throttled, most of the node's CPU on a still view.
So after each frame read, the node asks :meth:`ReadWindow.reopen_in` how long no frame can
be due, and for that long closes its *read window*: the image subscription leaves the
executor's wait set, DDS keeps the newest sample (depth 1), and a timer reopens the window
just after the first frame that can be due should have arrived, so that this frame is the
sample read.

To predict that arrival the window learns the camera's pace from the frames read: its frame
interval on the stamps (from frames read back to back, the window open between them) and
the stamps' speed against arrival time (1 live, the rate of a replayed rosbag). Until both
are known, and whenever the gate judges frames on arrival time, it stays open. It reopens a
fraction of a frame interval after the expected arrival: late enough for delivery jitter,
early enough that the frame after has not replaced the due one (which would move the rate
interval a frame on). A reopening that comes early only costs one more frame read.

Pure Python (no rclpy); times are seconds on one clock (the node uses DDS's reception time
and the system clock).
"""

from __future__ import annotations

import math
from collections import deque
from statistics import median
from typing import Optional

from sharpeye_ros.ros.stamps import NS_PER_S

# Closed at most this long, so the node still reads a frame every second: it notices a
# silent camera (NO_INPUT_WARN) and a stream that became due again (a parameter change).
MAX_CLOSED = 1.0
# Shorter closures are not worth a timer's wake-up.
MIN_CLOSED = 0.01
# The window reopens this share of a frame interval after the due frame's expected arrival.
LATE_SHARE = 0.3
# Medians over this many of the latest measurements of the frame interval and the speed.
SAMPLES = 5
# The speed is measured between frames read at least this far apart: arrival jitter over
# one 10 Hz frame interval would make it a poor estimate.
MIN_BASELINE = 0.2


class ReadWindow:
    """The pace of the frames read, and how long the image subscription may stay closed."""

    def __init__(self, max_closed: float = MAX_CLOSED) -> None:
        if not max_closed > 0:
            raise ValueError(f"max_closed must be > 0 s, got {max_closed}")
        self.max_closed = max_closed
        self._intervals: deque[int] = deque(maxlen=SAMPLES)  # stamp steps between frames read back to back
        self._speeds: deque[float] = deque(maxlen=SAMPLES)  # stamp seconds per arrival second
        self._last: Optional[tuple[int, float]] = None  # (stamp_ns, arrival) of the last frame read
        self._baseline: Optional[tuple[int, float]] = None  # where the speed's current baseline starts

    def reset(self) -> None:
        """Forget the pace (a new timeline, or the node reactivated)."""
        self._intervals.clear()
        self._speeds.clear()
        self._last = self._baseline = None

    @property
    def frame_interval_ns(self) -> Optional[int]:
        """The camera's frame interval on the stamps (None: not known yet)."""
        return int(median(self._intervals)) if self._intervals else None

    @property
    def speed(self) -> Optional[float]:
        """Stamp seconds per arrival second (None: not known yet)."""
        return median(self._speeds) if self._speeds else None

    def observe(self, stamp_ns: int, arrival: float, contiguous: bool) -> int:
        """A frame was read: its ``stamp_ns`` and ``arrival`` time; ``contiguous``: the window
        stayed open since the previous frame read, so none was missed. Returns how many
        frames the camera is estimated to have sent unread since that previous frame."""
        last, self._last = self._last, (stamp_ns, arrival)
        if last is None:
            self._baseline = self._last
            return 0
        step = stamp_ns - last[0]
        if step <= 0:  # not a time line the pace says anything about
            self.reset()
            self._last = self._baseline = (stamp_ns, arrival)
            return 0
        unread = 0
        if contiguous:
            self._intervals.append(step)
        elif self._intervals:
            interval = self.frame_interval_ns
            unread = max(0, round(step / interval) - 1)
            if self._speeds:  # no more than could have arrived meanwhile (a stamp jumping on)
                unread = min(unread, max(0, round((arrival - last[1]) * self.speed * NS_PER_S / interval) - 1))
        start_ns, start = self._baseline or last
        if arrival - start >= MIN_BASELINE:
            self._speeds.append((stamp_ns - start_ns) / NS_PER_S / (arrival - start))
            self._baseline = self._last
        return unread

    def reopen_in(self, due_ns: Optional[int], stamp_ns: int, arrival: float, now: float) -> Optional[float]:
        """Seconds from ``now`` to keep the window closed after reading the frame stamped
        ``stamp_ns`` (arrived at ``arrival``), when no frame stamped before ``due_ns`` can be
        due; None: stay open (nothing known, or the due frame is the next one)."""
        interval, speed = self.frame_interval_ns, self.speed
        if due_ns is None or interval is None or speed is None or not speed > 0:
            return None
        frames_ahead = math.ceil((due_ns - stamp_ns) / interval)
        if frames_ahead < 2:  # the next frame may be due: reading it costs less than a timer
            return None
        expected = arrival + (frames_ahead + LATE_SHARE) * interval / NS_PER_S / speed
        delay = expected - now
        if not delay >= MIN_CLOSED:
            return None
        return min(delay, self.max_closed)


__all__ = ["ReadWindow", "MAX_CLOSED", "MIN_CLOSED", "LATE_SHARE", "MIN_BASELINE"]
