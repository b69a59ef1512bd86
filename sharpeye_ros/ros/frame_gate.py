"""A one-frame slot between an image callback and a captioning worker, throttled on message time.

Pure Python (no rclpy), thread-safe. The camera callback calls :meth:`FrameGate.offer` for
every frame; the worker thread blocks in :meth:`FrameGate.take`. The gate keeps only the
newest frame that is due, so the worker never captions a frame older than the newest one
available, and the caption rate is limited on the frames' own stamps (``header.stamp``)
rather than on the wall clock: a rosbag replayed at any speed is captioned as it was live.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Generic, Optional, TypeVar

T = TypeVar("T")

NS_PER_S = 1_000_000_000

# Stamps that go back by more than this are a new timeline (a rosbag loop, a restarted
# driver, a reset simulation), not frames delivered out of order.
DEFAULT_RESET_SECONDS = 1.0


@dataclass(frozen=True)
class GateCounters:
    """How many frames went where since the gate was made (all counts only grow)."""

    offered: int = 0  # every frame offered
    taken: int = 0  # handed to the worker
    superseded: int = 0  # waited in the slot, replaced by a newer frame before the worker took it
    throttled: int = 0  # arrived less than 1/max_rate (on message time) after the last taken frame
    out_of_order: int = 0  # stamped before a newer frame already seen
    time_resets: int = 0  # stamps jumped back by more than the reset threshold

    @property
    def dropped(self) -> int:
        """Frames offered that the worker will never see."""
        return self.superseded + self.throttled + self.out_of_order


@dataclass(frozen=True)
class GatedFrame(Generic[T]):
    """A frame handed to the worker, with the stamp the gate judged it by."""

    frame: T
    stamp_ns: int


class FrameGate(Generic[T]):
    """Newest-frame slot with a maximum rate on message time.

    A frame is *due* when its stamp is at least ``1 / max_rate`` seconds after the stamp of
    the last frame the worker took. A due frame replaces whatever waits in the slot (that
    one counts as superseded); a frame that is not due is dropped at once (throttled).
    Since stamps normally grow, a newer frame is due whenever the waiting one is, so the
    slot always holds the newest frame received.

    Stamps that go backwards: by at most ``reset_seconds`` the frame is dropped as out of
    order (something newer was already seen); by more, the gate treats it as a new timeline
    and forgets the old one, so a looping rosbag keeps being captioned.
    """

    def __init__(self, max_rate: float, reset_seconds: float = DEFAULT_RESET_SECONDS) -> None:
        self._cond = threading.Condition()
        self._period_ns = self._period(max_rate)
        if not reset_seconds > 0:
            raise ValueError(f"reset_seconds must be > 0, got {reset_seconds}")
        self._reset_ns = int(reset_seconds * NS_PER_S)
        self._pending: Optional[GatedFrame[T]] = None
        self._last_taken_ns: Optional[int] = None
        self._newest_ns: Optional[int] = None
        self._closed = False
        self._counts = dict.fromkeys(GateCounters.__dataclass_fields__, 0)

    @staticmethod
    def _period(max_rate: float) -> int:
        if not max_rate > 0:  # also rejects NaN
            raise ValueError(f"max_rate must be > 0 Hz, got {max_rate}")
        return int(round(NS_PER_S / max_rate))

    def set_max_rate(self, max_rate: float) -> None:
        """Change the caption rate limit; applies to frames offered from now on."""
        period = self._period(max_rate)
        with self._cond:
            self._period_ns = period

    def offer(self, frame: T, stamp_ns: int) -> bool:
        """Offer the newest frame; True when it now waits in the slot for the worker."""
        with self._cond:
            self._counts["offered"] += 1
            if self._closed:
                return False
            if self._newest_ns is not None and stamp_ns < self._newest_ns:
                if self._newest_ns - stamp_ns <= self._reset_ns:
                    self._counts["out_of_order"] += 1
                    return False
                self._counts["time_resets"] += 1
                self._last_taken_ns = None
            self._newest_ns = stamp_ns
            if self._last_taken_ns is not None and stamp_ns - self._last_taken_ns < self._period_ns:
                self._counts["throttled"] += 1
                return False
            if self._pending is not None:
                self._counts["superseded"] += 1
            self._pending = GatedFrame(frame, stamp_ns)
            self._cond.notify()
            return True

    def take(self, timeout: Optional[float] = None) -> Optional[GatedFrame[T]]:
        """Wait up to ``timeout`` seconds (None: forever) for a frame and take it.

        Returns None on timeout or once the gate is closed.
        """
        with self._cond:
            self._cond.wait_for(lambda: self._pending is not None or self._closed, timeout)
            if self._closed or self._pending is None:
                return None
            item, self._pending = self._pending, None
            self._last_taken_ns = item.stamp_ns
            self._counts["taken"] += 1
            return item

    def close(self) -> None:
        """Wake the worker and refuse frames from now on; the waiting frame is discarded."""
        with self._cond:
            self._closed = True
            self._pending = None
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    @property
    def has_pending(self) -> bool:
        """True while a frame waits for the worker."""
        with self._cond:
            return self._pending is not None

    def counters(self) -> GateCounters:
        """A consistent snapshot of the counters."""
        with self._cond:
            return GateCounters(**self._counts)



# Why the gate dropped a frame, by the counter that grew (for the node's debug log).
_DROPS = {
    "out_of_order": "stamped before a frame already seen",
    "throttled": "throttled: less than 1/max_rate after the last captioned frame, on message time",
}


def offer_outcome(before: GateCounters, after: GateCounters, accepted: bool) -> str:
    """What became of the one frame offered between two counter snapshots (``accepted``:
    what :meth:`FrameGate.offer` returned), in words."""
    notes = ["stamps jumped back: a new timeline"] if after.time_resets > before.time_resets else []
    if accepted:
        outcome = "waits for the worker"
        if after.superseded > before.superseded:
            outcome += " (the frame that waited there is dropped: superseded)"
    else:
        reasons = [text for name, text in _DROPS.items() if getattr(after, name) > getattr(before, name)]
        outcome = "dropped: " + (reasons[0] if reasons else "the node is shutting down")
    return "; ".join(notes + [outcome])


__all__ = ["FrameGate", "GateCounters", "GatedFrame", "NS_PER_S", "DEFAULT_RESET_SECONDS", "offer_outcome"]
