"""Health statistics of the captioner, the diagnostic status they add up to, and what the
node logs about its input.

Pure Python (no rclpy): sliding-window rates, latency percentiles, error and warning
counters, a log throttle and the texts of the input warnings, all fed with explicit
timestamps so they are tested without sleeping. The node turns a :class:`HealthReport`
into a ``diagnostic_msgs/DiagnosticStatus``.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass
from typing import Optional

from sharpeye_ros.ros.frame_gate import (DEFAULT_RESET_SECONDS, FROZEN_STAMP, OUT_OF_ORDER, ZERO_STAMP, GateCounters,
                                        Offer)
from sharpeye_ros.ros.stamps import NS_PER_S

# diagnostic_msgs/DiagnosticStatus levels.
OK, WARN, ERROR = 0, 1, 2

# Error kinds counted in diagnostics.
CONVERSION, INFERENCE, PUBLISH = "conversion", "inference", "publish"
ERROR_KINDS = (CONVERSION, INFERENCE, PUBLISH)

# Why a caption's latency is not measured (its message says NaN).
CLOCK_NOT_RUNNING, STAMP_AHEAD = "clock_not_running", "stamp_ahead"
# A stamp further ahead of the node's clock than this comes from another clock (or a bad
# driver): its latency would be a large negative number.
AHEAD_TOLERANCE = DEFAULT_RESET_SECONDS


def frame_latency(now_ns: int, stamp_ns: int) -> tuple[float, Optional[str]]:
    """Seconds from ``stamp_ns`` to ``now_ns`` (the node's clock), or (NaN, why) when that
    means nothing: the clock reads 0 (use_sim_time and no /clock yet), or the stamp is
    more than AHEAD_TOLERANCE ahead of it."""
    if now_ns == 0:
        return math.nan, CLOCK_NOT_RUNNING
    latency = (now_ns - stamp_ns) / NS_PER_S
    if latency < -AHEAD_TOLERANCE:
        return math.nan, STAMP_AHEAD
    return latency, None


class RateMeter:
    """Events per second over the last ``window`` seconds (or since start, if shorter)."""

    def __init__(self, window: float, start: float, max_events: int = 100_000) -> None:
        if not window > 0:
            raise ValueError(f"window must be > 0 s, got {window}")
        self.window = window
        self._start = start
        self._times: deque[float] = deque(maxlen=max_events)

    def record(self, now: float, count: int = 1) -> None:
        """Count ``count`` events at time ``now`` (seconds, any monotonic clock)."""
        self._times.extend([now] * count)
        self._prune(now)

    def _prune(self, now: float) -> None:
        while self._times and self._times[0] <= now - self.window:
            self._times.popleft()

    def count(self, now: float) -> int:
        """Events within the window ending at ``now``."""
        self._prune(now)
        return len(self._times)

    def rate(self, now: float) -> float:
        """Events per second within the window ending at ``now``."""
        span = min(self.window, now - self._start)
        return self.count(now) / span if span > 0 else 0.0


class LatencyWindow:
    """The last ``size`` values of a duration: last, mean and percentiles."""

    def __init__(self, size: int = 100) -> None:
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        self._values: deque[float] = deque(maxlen=size)

    def add(self, value: float) -> None:
        """Add one value (seconds)."""
        self._values.append(float(value))

    def __len__(self) -> int:
        return len(self._values)

    @property
    def last(self) -> float:
        """The newest value (NaN when empty)."""
        return self._values[-1] if self._values else math.nan

    @property
    def mean(self) -> float:
        """Mean over the window (NaN when empty)."""
        return sum(self._values) / len(self._values) if self._values else math.nan

    @property
    def median(self) -> float:
        """Median over the window (NaN when empty): one wild value does not move it."""
        if not self._values:
            return math.nan
        ordered = sorted(self._values)
        mid = len(ordered) // 2
        return ordered[mid] if len(ordered) % 2 else 0.5 * (ordered[mid - 1] + ordered[mid])

    def percentile(self, q: float) -> float:
        """Nearest-rank ``q``-th percentile (0 < q <= 100) over the window (NaN when empty)."""
        if not 0 < q <= 100:
            raise ValueError(f"percentile must be in (0, 100], got {q}")
        if not self._values:
            return math.nan
        ordered = sorted(self._values)
        return ordered[max(0, math.ceil(q / 100.0 * len(ordered)) - 1)]


class LogThrottle:
    """At most one log line per key every ``period`` seconds, counting what it held back."""

    def __init__(self, period: float) -> None:
        self.period = period
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def allow(self, key: str, now: float) -> Optional[int]:
        """None to stay quiet, else the number of lines suppressed since the last one logged."""
        last = self._last.get(key)
        if last is not None and now - last < self.period:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return None
        self._last[key] = now
        return self._suppressed.pop(key, 0)


@dataclass(frozen=True)
class HealthReport:
    """One diagnostic status: level (OK/WARN/ERROR), a summary and key/value pairs."""

    level: int
    message: str
    values: tuple[tuple[str, str], ...]

    def value(self, key: str) -> str:
        """The value stored under ``key`` (KeyError when absent)."""
        return dict(self.values)[key]


def _fmt(x: float, digits: int = 3) -> str:
    return "n/a" if math.isnan(x) else f"{x:.{digits}f}"


class Tally:
    """Frames lost to (errors) or captioned despite (warnings) problems of each kind: the
    count since start, those within the window, and the last message."""

    def __init__(self, what: str, window: float, start: float) -> None:
        self.what = what
        self.total = {kind: 0 for kind in ERROR_KINDS}
        self.recent = {kind: RateMeter(window, start) for kind in ERROR_KINDS}
        self.last: dict[str, str] = {}

    def record(self, kind: str, message: str, now: float) -> None:
        """One more of ``kind`` (one of ``ERROR_KINDS``), at ``now``."""
        if kind not in self.total:
            raise ValueError(f"unknown {self.what} kind {kind!r}; expected one of {ERROR_KINDS}")
        self.total[kind] += 1
        self.recent[kind].record(now)
        self.last[kind] = message


class CaptionerHealth:
    """Everything the captioner's diagnostics report, updated from the callback and worker.

    Thread-safe. Times are seconds on one monotonic clock (the node passes
    ``time.monotonic()``); latencies are whatever the caller measures them in.
    """

    def __init__(self, start: float, window: float = 10.0, no_input_warn: float = 5.0,
                 latency_window: int = 100) -> None:
        self._lock = threading.Lock()
        self._start = start
        self.window = window
        self.no_input_warn = no_input_warn
        self._inputs = RateMeter(window, start)
        self._captions = RateMeter(window, start)
        self._latency = LatencyWindow(latency_window)
        self._model_seconds = LatencyWindow(latency_window)
        self._overhead = LatencyWindow(latency_window)
        self._last_input: Optional[float] = None
        self._not_read = 0  # frames estimated sent while the read window was closed
        self._errors = Tally("error", window, start)
        self._warnings = Tally("warning", window, start)
        self._frozen = RateMeter(window, start)  # frames whose stamp did not advance
        self._last_fallback: Optional[str] = None  # of the newest frame
        self._unmeasured: dict[str, int] = {CLOCK_NOT_RUNNING: 0, STAMP_AHEAD: 0}
        self._captioned = 0
        self._still = {True: 0, False: 0}  # frames not captioned on a still view: republished, skipped
        self._still_recent = RateMeter(window, start)
        self._last_change = math.nan  # the scene gate's measure of the newest frame judged

    def resume(self, now: float) -> None:
        """Captioning starts again (the node was activated): silence is counted from ``now``."""
        with self._lock:
            self._start, self._last_input = now, None

    def record_input(self, now: float, fallback: Optional[str] = None, not_read: int = 0) -> None:
        """A frame was read from the image topic; ``fallback``: why the gate judged it on its
        arrival time (frame_gate.ZERO_STAMP, FROZEN_STAMP), if it did; ``not_read``: frames
        the camera sent before it while the node's read window was closed (counted in the
        input rate too: see :mod:`~sharpeye_ros.ros.read_window`)."""
        with self._lock:
            self._inputs.record(now, 1 + not_read)
            self._not_read += not_read
            self._last_input = now
            self._last_fallback = fallback
            if fallback == FROZEN_STAMP:
                self._frozen.record(now)

    def record_caption(self, now: float, latency: float, model_seconds: float, overhead: float,
                       unmeasured: Optional[str] = None, change: float = math.nan) -> None:
        """A caption was published: stamp-to-publish latency (NaN, with ``unmeasured`` from
        :func:`frame_latency` saying why, stays out of the statistics), model time, and the
        node's own time. A stamp ahead of the node's clock counts as a time reset. ``change``:
        the scene gate's measure of the frame (NaN: not measured)."""
        with self._lock:
            self._last_change = change
            self._captions.record(now)
            if not math.isnan(latency):
                self._latency.add(latency)
            if unmeasured is not None:
                self._unmeasured[unmeasured] += 1
            self._model_seconds.add(model_seconds)
            self._overhead.add(overhead)
            self._captioned += 1

    def record_still(self, now: float, republished: bool, change: float) -> None:
        """The view was still (scene change ``change`` below the threshold): the model did not
        run, the last caption was ``republished`` or the frame skipped."""
        with self._lock:
            self._still[republished] += 1
            self._still_recent.record(now)
            self._last_change = change

    def record_warning(self, kind: str, message: str, now: float) -> None:
        """A frame was captioned despite a problem of ``kind`` (e.g. damaged JPEG data)."""
        with self._lock:
            self._warnings.record(kind, message, now)

    def silence(self, now: float) -> tuple[float, bool]:
        """(seconds since the last frame, or since start; whether any frame ever came)."""
        with self._lock:
            last = self._last_input
            return now - (last if last is not None else self._start), last is not None

    def record_error(self, kind: str, message: str, now: float) -> None:
        """A frame was lost to an error of ``kind`` (one of ``ERROR_KINDS``)."""
        with self._lock:
            self._errors.record(kind, message, now)

    def error_count(self, kind: str) -> int:
        """Errors of ``kind`` since start."""
        with self._lock:
            return self._errors.total[kind]

    @property
    def captioned(self) -> int:
        """Captions published since start."""
        with self._lock:
            return self._captioned

    def _assess(self, now: float) -> tuple[int, str]:
        recent = {kind: meter.count(now) for kind, meter in self._errors.recent.items()}
        recent_captions = self._captions.count(now)
        window = f"{self.window:g} s"
        failing = [kind for kind in ERROR_KINDS if recent[kind]]
        if failing and not recent_captions:  # every frame of late was lost to errors
            kind = max(failing, key=lambda k: recent[k])
            return ERROR, (f"no caption in the last {window}: {recent[kind]} {kind} errors, "
                           f"last: {self._errors.last[kind]}")
        silent = now - (self._last_input if self._last_input is not None else self._start)
        if silent > self.no_input_warn:
            what = "no image received" if self._last_input is None else "no image"
            return WARN, f"{what} for {silent:.1f} s"
        for kind in ERROR_KINDS:
            if recent[kind]:
                return WARN, f"{recent[kind]} {kind} errors in the last {window}: {self._errors.last[kind]}"
        frozen = self._frozen.count(now)
        if frozen:
            return WARN, (f"header.stamp does not advance: {frozen} frames in the last {window} "
                          "throttled on arrival time")
        for kind in ERROR_KINDS:
            count = self._warnings.recent[kind].count(now)
            if count:
                return WARN, (f"{count} {kind} warnings in the last {window} (frames captioned anyway): "
                              f"{self._warnings.last[kind]}")
        if self._last_input is None:
            return OK, "waiting for images"
        suffix = " (on arrival time: header.stamp is 0)" if self._last_fallback == ZERO_STAMP else ""
        still = self._still_recent.count(now)
        if still:
            suffix += f"; the view is still: {still} frames not captioned in the last {window}"
        return OK, f"captioning at {self._captions.rate(now):.2f} Hz{suffix}"

    def report(self, now: float, gate: GateCounters, extra: tuple[tuple[str, str], ...] = ()) -> HealthReport:
        """The status at ``now``; ``gate`` gives the frame counts, ``extra`` is appended as is."""
        with self._lock:
            level, message = self._assess(now)
            since_input = now - self._last_input if self._last_input is not None else math.nan
            values = (
                ("input_rate_hz", _fmt(self._inputs.rate(now), 2)),
                ("caption_rate_hz", _fmt(self._captions.rate(now), 2)),
                ("latency_last_s", _fmt(self._latency.last)),
                ("latency_median_s", _fmt(self._latency.median)),
                ("latency_p95_s", _fmt(self._latency.percentile(95))),
                ("model_mean_s", _fmt(self._model_seconds.mean)),
                ("model_last_s", _fmt(self._model_seconds.last)),  # what the scene gate's still period follows
                ("node_overhead_p95_s", _fmt(self._overhead.percentile(95), 4)),
                ("seconds_since_last_image", _fmt(since_input, 1)),
                ("frames_received", str(gate.offered)),
                ("frames_not_read", str(self._not_read)),
                ("frames_captioned", str(self._captioned)),
                ("frames_still_reused", str(self._still[True])),
                ("frames_still_skipped", str(self._still[False])),
                ("scene_change_last", _fmt(self._last_change)),
                ("frames_dropped_superseded", str(gate.superseded)),
                ("frames_dropped_throttled", str(gate.throttled)),
                ("frames_dropped_out_of_order", str(gate.out_of_order)),
                ("time_resets", str(gate.time_resets + self._unmeasured[STAMP_AHEAD])),
                ("throttle_clock", "arrival time" if self._last_fallback else "header.stamp"),
                ("frames_zero_stamp", str(gate.zero_stamps)),
                ("frames_frozen_stamp", str(gate.frozen_stamps)),
                ("latency_unmeasured_no_clock", str(self._unmeasured[CLOCK_NOT_RUNNING])),
                ("latency_unmeasured_stamp_ahead", str(self._unmeasured[STAMP_AHEAD])),
                *((f"errors_{kind}", str(self._errors.total[kind])) for kind in ERROR_KINDS),
                *((f"last_error_{kind}", self._errors.last[kind]) for kind in ERROR_KINDS
                  if kind in self._errors.last),
                ("warnings_conversion", str(self._warnings.total[CONVERSION])),
                *((f"last_warning_{kind}", self._warnings.last[kind]) for kind in ERROR_KINDS
                  if kind in self._warnings.last),
            )
            return HealthReport(level, message, values + tuple(extra))


class InputLog:
    """The log lines the node writes about its input: which, and how often.

    A stamp fallback is said once per kind; out-of-order drops, time resets, unmeasured
    latencies and silence at most once per ``period`` seconds each, with the count of
    those held back. Every method returns the lines to log now (empty: stay quiet).
    """

    def __init__(self, period: float) -> None:
        self._throttle = LogThrottle(period)
        self._said: set[str] = set()
        self._lock = threading.Lock()

    def _once(self, key: str, text: str) -> list[str]:
        with self._lock:
            if key in self._said:
                return []
            self._said.add(key)
            return [text]

    def _throttled(self, key: str, text: str, now: float) -> list[str]:
        with self._lock:
            held = self._throttle.allow(key, now)
        if held is None:
            return []
        return [text + (f" ({held} more since the last report)" if held else "")]

    def offer(self, offer: Offer, now: float) -> list[str]:
        """Lines about the gate's verdict on one frame."""
        lines = []
        if offer.fallback == ZERO_STAMP:
            lines += self._once(ZERO_STAMP, "frames have header.stamp = 0: throttling on arrival time")
        elif offer.fallback == FROZEN_STAMP:
            lines += self._once(FROZEN_STAMP, "header.stamp does not advance (the same stamp twice in a "
                                              "row): throttling such frames on arrival time")
        if offer.time_reset:
            lines += self._throttled("time_reset", f"header.stamp went back {offer.back_s:.3g} s: a new "
                                     "timeline (a rosbag loop, a restarted driver or simulation); "
                                     "throttling starts over", now)
        if offer.dropped == OUT_OF_ORDER:
            lines += self._throttled(OUT_OF_ORDER, f"frame dropped: stamped {offer.back_s:.3g} s before a "
                                     "newer frame (out of order)", now)
        return lines

    def latency(self, unmeasured: Optional[str], now: float) -> list[str]:
        """Lines about a caption whose latency was not measured (see :func:`frame_latency`)."""
        if unmeasured == CLOCK_NOT_RUNNING:
            return self._once(CLOCK_NOT_RUNNING, "the node's clock reads 0 (use_sim_time is true and no "
                                                 "/clock message arrived): latency is not measured")
        if unmeasured == STAMP_AHEAD:
            return self._throttled(STAMP_AHEAD, "a frame stamped ahead of the node's clock by more than "
                                   f"{AHEAD_TOLERANCE:g} s: a time reset; its latency is left out", now)
        return []

    def silence(self, text: str, now: float) -> list[str]:
        """The no-input warning (:func:`no_input_warning`), throttled."""
        return self._throttled("silence", text, now)


def no_input_warning(topic: str, transport: str, seconds: float, received_before: bool,
                     publishers: int, other_topic: str, other_transport: str, other_publishers: int) -> str:
    """What to tell a user whose captioner hears nothing on ``topic``, with a hint."""
    what = "no image" if received_before else "no image received"
    text = f"{what} on '{topic}' ({transport}) for {seconds:.0f} s"
    hints = []
    if publishers:
        hints.append(f"it has {publishers} publisher(s): check that their QoS matches (parameter "
                     "reliability) and that they publish the right message type")
    if other_publishers:
        hints.append(f"'{other_topic}' has {other_publishers} publisher(s): set "
                     f"image_transport:={other_transport}?")
    if not hints:
        hints.append("nothing publishes it; remap 'image' to the camera's topic (-r image:=<topic>)")
    return f"{text}; " + "; ".join(hints)


__all__ = [
    "OK", "WARN", "ERROR", "CONVERSION", "INFERENCE", "PUBLISH", "ERROR_KINDS",
    "CLOCK_NOT_RUNNING", "STAMP_AHEAD", "AHEAD_TOLERANCE", "frame_latency",
    "RateMeter", "LatencyWindow", "LogThrottle", "HealthReport", "CaptionerHealth",
    "InputLog", "no_input_warning",
]
