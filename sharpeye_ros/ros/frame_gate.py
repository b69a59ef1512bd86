"""A one-frame slot between an image callback and a captioning worker, throttled on message time.

Pure Python (no rclpy), thread-safe. The camera callback calls :meth:`FrameGate.offer` for
every frame; the worker thread blocks in :meth:`FrameGate.take` and reports each frame's
fate with :meth:`FrameGate.done`. The gate keeps only the newest frame that is due, so the
worker never captions a frame older than the newest one available, and the caption rate is
limited on the frames' own stamps (``header.stamp``) rather than on the wall clock: a
rosbag replayed at any speed is captioned as it was live. Only a captioned frame starts the
rate interval: a frame the worker had to drop (undecodable, failed inference) leaves the
slot to the next one.

Stamps that say nothing about time -- zero (an unstamped driver) or the same as the
previous frame's (a frozen driver clock, a bag looping faster than it plays) -- make the
gate judge that frame on its arrival time instead, as each :class:`Offer` reports.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Generic, Optional, TypeVar

from sharpeye_ros.ros.stamps import NS_PER_S

T = TypeVar("T")

# Stamps that go back by more than this are a new timeline (a rosbag loop, a restarted
# driver, a reset simulation), not frames delivered out of order.
DEFAULT_RESET_SECONDS = 1.0
# A frame is due this fraction of 1/max_rate early. When the camera's rate is a multiple of
# max_rate, the frame one interval on lands on the interval's end, a hair early or late by
# the stamps' jitter: without slack the early ones (about half) would be throttled and the
# next frame taken a whole input frame late, so max_rate 2 on a 10 Hz camera gave 1.7 Hz
# and changes waited up to an extra input frame. 2% absorbs 10 ms of jitter at 2 Hz; the
# rate limit is exceeded by at most that.
RATE_SLACK = 0.02

# What a frame was judged by: its header.stamp, or (see Offer.fallback) its arrival time.
STAMP, ARRIVAL = "stamp", "arrival"
# Why a frame was judged by its arrival time.
ZERO_STAMP, FROZEN_STAMP = "zero", "frozen"
# Why an offered frame was dropped at once.
THROTTLED, OUT_OF_ORDER, CLOSED = "throttled", "out_of_order", "closed"
_DROP_REASONS = {
    THROTTLED: "throttled: less than 1/max_rate after the last captioned frame",
    OUT_OF_ORDER: "out of order: stamped before a frame already seen",
    CLOSED: "the node is shutting down",
}


@dataclass(frozen=True)
class GateCounters:
    """How many frames went where since the gate was made (all counts only grow)."""

    offered: int = 0  # every frame offered
    taken: int = 0  # handed to the worker
    superseded: int = 0  # waited in the slot, replaced by a newer frame before the worker took it
    throttled: int = 0  # arrived less than 1/max_rate (on message time) after the last taken frame
    out_of_order: int = 0  # stamped before a newer frame already seen
    time_resets: int = 0  # stamps jumped back by more than the reset threshold, or kept going back
    zero_stamps: int = 0  # judged on arrival time: header.stamp was 0
    frozen_stamps: int = 0  # judged on arrival time: header.stamp equal to the previous frame's

    @property
    def dropped(self) -> int:
        """Frames offered that the worker will never see."""
        return self.superseded + self.throttled + self.out_of_order


@dataclass(frozen=True)
class GatedFrame(Generic[T]):
    """A frame handed to the worker, with the time the gate judged it by (``stamp_ns``:
    its header.stamp, or its arrival time when ``clock`` is ARRIVAL)."""

    frame: T
    stamp_ns: int
    clock: str = STAMP
    header_ns: Optional[int] = None  # header.stamp as received
    arrival_ns: Optional[int] = None


@dataclass(frozen=True)
class Offer:
    """The gate's verdict on one offered frame (true when the frame waits for the worker).

    ``fallback``: ZERO_STAMP or FROZEN_STAMP when the frame was judged on its arrival
    time; ``dropped``: THROTTLED, OUT_OF_ORDER or CLOSED for a frame dropped at once;
    ``time_reset``: the frame starts a new timeline; ``back_s``: how far its stamp went
    back from the newest one (out of order, time reset); ``superseded``: a kept frame
    replaced one that was still waiting.
    """

    kept: bool
    fallback: Optional[str] = None
    dropped: Optional[str] = None
    time_reset: bool = False
    back_s: float = 0.0
    superseded: bool = False

    def __bool__(self) -> bool:
        return self.kept

    def describe(self) -> str:
        """The verdict in words, for the node's debug log."""
        notes = [f"stamps jumped back {self.back_s:.3f} s: a new timeline"] if self.time_reset else []
        if self.fallback is not None:
            notes.append(f"judged on arrival time ({self.fallback} stamp)")
        if self.kept:
            outcome = "waits for the worker"
            if self.superseded:
                outcome += " (the frame that waited there is dropped: superseded)"
        else:
            outcome = "dropped: " + _DROP_REASONS[self.dropped or CLOSED]
        return "; ".join(notes + [outcome])


class FrameGate(Generic[T]):
    """Newest-frame slot with a maximum rate on message time.

    A frame is *due* when its stamp is at least ``1 / max_rate`` seconds (less
    :data:`RATE_SLACK` of that, for the stamps' jitter) after the stamp of the last frame
    the worker captioned. A due frame replaces whatever waits in the slot
    (that one counts as superseded); a frame that is not due is dropped at once
    (throttled). Since stamps normally grow, a newer frame is due whenever the waiting one
    is, so the slot always holds the newest frame received. A frame the worker has in hand
    starts the interval only once :meth:`done` says it was captioned; a frame waiting then
    that is too close to it is dropped as throttled.

    Stamps that go backwards: by at most ``reset_seconds`` the frame is dropped as out of
    order (something newer was already seen), unless the frame before went back too and
    this one advances from it: then, as for a step back of more than ``reset_seconds``, the
    gate takes it for a new timeline and forgets the old one, so a looping rosbag keeps
    being captioned however short the loop.

    Frames offered with an ``arrival_ns`` whose stamp is 0, or equal to the previous
    frame's, are judged on arrival time (the interval's frame is known on both clocks).
    """

    def __init__(self, max_rate: float, reset_seconds: float = DEFAULT_RESET_SECONDS) -> None:
        self._cond = threading.Condition()
        self._period_ns = self._period(max_rate)  # the shortest interval: 1/max_rate less the slack
        if not reset_seconds > 0:
            raise ValueError(f"reset_seconds must be > 0, got {reset_seconds}")
        self._reset_ns = int(reset_seconds * NS_PER_S)
        self._pending: Optional[GatedFrame[T]] = None
        self._in_flight: Optional[GatedFrame[T]] = None  # taken, not yet done
        self._timeline = 0  # counts time resets; the in-flight frame's is kept beside it
        self._in_flight_timeline = 0
        self._interval: Optional[GatedFrame[T]] = None  # the last frame captioned
        self._newest_ns: Optional[int] = None  # newest header.stamp judged on stamps
        self._newest_arrival_ns: Optional[int] = None
        self._previous_ns: Optional[int] = None  # header.stamp of the previous frame offered
        self._went_back_ns: Optional[int] = None  # the previous frame's stamp if it went back
        self._closed = False
        self._counts = dict.fromkeys(GateCounters.__dataclass_fields__, 0)

    @staticmethod
    def _period(max_rate: float) -> int:
        if not max_rate > 0:  # also rejects NaN
            raise ValueError(f"max_rate must be > 0 Hz, got {max_rate}")
        return int(round(NS_PER_S / max_rate * (1.0 - RATE_SLACK)))

    def set_max_rate(self, max_rate: float) -> None:
        """Change the caption rate limit; applies to frames offered from now on."""
        period = self._period(max_rate)
        with self._cond:
            self._period_ns = period

    def offer(self, frame: T, stamp_ns: int, arrival_ns: Optional[int] = None) -> Offer:
        """Offer the newest frame (``arrival_ns``: when it arrived, on the clock stamps
        normally follow); the verdict is true when the frame now waits for the worker."""
        with self._cond:
            self._counts["offered"] += 1
            if self._closed:
                return Offer(False, dropped=CLOSED)
            fallback = None
            if arrival_ns is not None:
                if stamp_ns == 0:
                    fallback = ZERO_STAMP
                elif stamp_ns == self._previous_ns:
                    fallback = FROZEN_STAMP
            self._previous_ns = stamp_ns
            if fallback is not None:
                self._counts[f"{fallback}_stamps"] += 1
                return self._judge(GatedFrame(frame, int(arrival_ns), ARRIVAL, stamp_ns, arrival_ns),
                                   fallback)
            return self._judge(GatedFrame(frame, stamp_ns, STAMP, stamp_ns, arrival_ns), None)

    def _judge(self, item: GatedFrame[T], fallback: Optional[str]) -> Offer:
        time_reset, back = False, 0
        if item.clock == STAMP:
            newest = self._newest_ns
            if newest is not None and item.stamp_ns < newest:
                back = newest - item.stamp_ns
                went_back, self._went_back_ns = self._went_back_ns, item.stamp_ns
                if back <= self._reset_ns and not (went_back is not None and item.stamp_ns > went_back):
                    self._counts["out_of_order"] += 1
                    return Offer(False, fallback, OUT_OF_ORDER, back_s=back / NS_PER_S)
                time_reset = True
            else:
                self._went_back_ns = None
            self._newest_ns = item.stamp_ns
        else:
            newest = self._newest_arrival_ns
            time_reset = newest is not None and newest - item.stamp_ns > self._reset_ns  # e.g. /clock reset
            back = newest - item.stamp_ns if time_reset else 0
        if item.arrival_ns is not None:
            self._newest_arrival_ns = item.arrival_ns
        if time_reset:
            self._counts["time_resets"] += 1
            self._timeline += 1
            self._interval = None
        if not self._due(item):
            self._counts["throttled"] += 1
            return Offer(False, fallback, THROTTLED, time_reset, back / NS_PER_S)
        superseded = self._pending is not None
        if superseded:
            self._counts["superseded"] += 1
        self._pending = item
        self._cond.notify()
        return Offer(True, fallback, None, time_reset, back / NS_PER_S, superseded)

    def _due(self, item: GatedFrame[T]) -> bool:
        """At least one period after the last captioned frame, on the clock ``item`` is judged by."""
        last = self._interval
        if last is None:
            return True
        if item.clock == ARRIVAL:
            if last.arrival_ns is None:
                return True
            return item.stamp_ns - last.arrival_ns >= self._period_ns
        return item.stamp_ns - (last.header_ns if last.header_ns is not None else last.stamp_ns) >= self._period_ns

    def take(self, timeout: Optional[float] = None) -> Optional[GatedFrame[T]]:
        """Wait up to ``timeout`` seconds (None: forever) for a frame and take it.

        Returns None on timeout or once the gate is closed. Report the frame's fate with
        :meth:`done`; a frame still in hand at the next take counts as captioned.
        """
        with self._cond:
            self._cond.wait_for(lambda: self._pending is not None or self._closed, timeout)
            if self._in_flight is not None:
                self._finish(captioned=True)
            if self._closed or self._pending is None:
                return None
            item, self._pending = self._pending, None
            self._in_flight, self._in_flight_timeline = item, self._timeline
            self._counts["taken"] += 1
            return item

    def done(self, item: GatedFrame[T], captioned: bool) -> Optional[GatedFrame[T]]:
        """The worker is done with ``item``: ``captioned`` starts the rate interval at it
        (a waiting frame too close to it is dropped as throttled, and returned so the
        caller can say so); otherwise the interval stays where it was, so the next good
        frame is not held back by a bad one."""
        with self._cond:
            if self._in_flight is item:
                return self._finish(captioned)
            return None

    def _finish(self, captioned: bool) -> Optional[GatedFrame[T]]:
        item, self._in_flight = self._in_flight, None
        if not captioned or item is None:
            return None
        if self._in_flight_timeline != self._timeline:
            # The stamps started a new timeline while this frame was being captioned: its
            # stamp belongs to the old one, and must not throttle the new timeline's frames.
            return None
        self._interval = item
        if self._pending is not None and not self._due(self._pending):
            dropped, self._pending = self._pending, None
            self._counts["throttled"] += 1
            return dropped
        return None

    def close(self) -> None:
        """Wake the worker and refuse frames from now on; the waiting frame is discarded."""
        with self._cond:
            self._closed = True
            self._pending = None
            self._cond.notify_all()

    def next_due_ns(self) -> Optional[int]:
        """The earliest header.stamp at which a frame can be due, counting the newest frame
        waiting or in the worker's hand as captioned (see :mod:`~sharpeye_ros.ros.read_window`);
        None when any frame may be due: nothing captioned yet on this timeline, or frames
        judged on arrival time."""
        with self._cond:
            anchor = self._pending
            if anchor is None and self._in_flight is not None:
                anchor = self._in_flight if self._in_flight_timeline == self._timeline else None
            elif anchor is None:
                anchor = self._interval
            if anchor is None or anchor.clock != STAMP or self._closed:
                return None
            return anchor.stamp_ns + self._period_ns

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    @property
    def has_pending(self) -> bool:
        """True while a frame waits for the worker."""
        with self._cond:
            return self._pending is not None

    @property
    def busy(self) -> bool:
        """True while a frame waits or the worker has one in hand (taken, not yet done)."""
        with self._cond:
            return self._pending is not None or self._in_flight is not None

    def counters(self) -> GateCounters:
        """A consistent snapshot of the counters."""
        with self._cond:
            return GateCounters(**self._counts)


__all__ = ["FrameGate", "GateCounters", "GatedFrame", "Offer", "DEFAULT_RESET_SECONDS", "RATE_SLACK",
           "STAMP", "ARRIVAL", "ZERO_STAMP", "FROZEN_STAMP", "THROTTLED", "OUT_OF_ORDER", "CLOSED"]
