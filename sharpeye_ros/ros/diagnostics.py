"""Health statistics of the captioner and the diagnostic status they add up to.

Pure Python (no rclpy): sliding-window rates, latency percentiles, error counters and a
log throttle, all fed with explicit timestamps so they are tested without sleeping. The
node turns a :class:`HealthReport` into a ``diagnostic_msgs/DiagnosticStatus``.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass
from typing import Optional

from sharpeye_ros.ros.frame_gate import GateCounters

# diagnostic_msgs/DiagnosticStatus levels.
OK, WARN, ERROR = 0, 1, 2

# Error kinds counted in diagnostics.
CONVERSION, INFERENCE, PUBLISH = "conversion", "inference", "publish"
ERROR_KINDS = (CONVERSION, INFERENCE, PUBLISH)


class RateMeter:
    """Events per second over the last ``window`` seconds (or since start, if shorter)."""

    def __init__(self, window: float, start: float, max_events: int = 100_000) -> None:
        if not window > 0:
            raise ValueError(f"window must be > 0 s, got {window}")
        self.window = window
        self._start = start
        self._times: deque[float] = deque(maxlen=max_events)

    def record(self, now: float) -> None:
        """Count one event at time ``now`` (seconds, any monotonic clock)."""
        self._times.append(now)
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
        self._errors = {kind: 0 for kind in ERROR_KINDS}
        self._recent_errors = {kind: RateMeter(window, start) for kind in ERROR_KINDS}
        self._last_error: dict[str, str] = {}
        self._captioned = 0

    def record_input(self, now: float) -> None:
        """A frame arrived on the image topic."""
        with self._lock:
            self._inputs.record(now)
            self._last_input = now

    def record_caption(self, now: float, latency: float, model_seconds: float, overhead: float) -> None:
        """A caption was published: stamp-to-publish latency, model time, and the node's own time."""
        with self._lock:
            self._captions.record(now)
            self._latency.add(latency)
            self._model_seconds.add(model_seconds)
            self._overhead.add(overhead)
            self._captioned += 1

    def record_error(self, kind: str, message: str, now: float) -> None:
        """A frame was lost to an error of ``kind`` (one of ``ERROR_KINDS``)."""
        if kind not in self._errors:
            raise ValueError(f"unknown error kind {kind!r}; expected one of {ERROR_KINDS}")
        with self._lock:
            self._errors[kind] += 1
            self._recent_errors[kind].record(now)
            self._last_error[kind] = message

    def error_count(self, kind: str) -> int:
        """Errors of ``kind`` since start."""
        with self._lock:
            return self._errors[kind]

    @property
    def captioned(self) -> int:
        """Captions published since start."""
        with self._lock:
            return self._captioned

    def _assess(self, now: float) -> tuple[int, str]:
        recent = {kind: meter.count(now) for kind, meter in self._recent_errors.items()}
        recent_captions = self._captions.count(now)
        window = f"{self.window:g} s"
        failing = [kind for kind in ERROR_KINDS if recent[kind]]
        if failing and not recent_captions:  # every frame of late was lost to errors
            kind = max(failing, key=lambda k: recent[k])
            return ERROR, (f"no caption in the last {window}: {recent[kind]} {kind} errors, "
                           f"last: {self._last_error[kind]}")
        silent = now - (self._last_input if self._last_input is not None else self._start)
        if silent > self.no_input_warn:
            what = "no image received" if self._last_input is None else "no image"
            return WARN, f"{what} for {silent:.1f} s"
        for kind in ERROR_KINDS:
            if recent[kind]:
                return WARN, f"{recent[kind]} {kind} errors in the last {window}: {self._last_error[kind]}"
        if self._last_input is None:
            return OK, "waiting for images"
        return OK, f"captioning at {self._captions.rate(now):.2f} Hz"

    def report(self, now: float, gate: GateCounters, extra: tuple[tuple[str, str], ...] = ()) -> HealthReport:
        """The status at ``now``; ``gate`` gives the frame counts, ``extra`` is appended as is."""
        with self._lock:
            level, message = self._assess(now)
            since_input = now - self._last_input if self._last_input is not None else math.nan
            values = (
                ("input_rate_hz", _fmt(self._inputs.rate(now), 2)),
                ("caption_rate_hz", _fmt(self._captions.rate(now), 2)),
                ("latency_last_s", _fmt(self._latency.last)),
                ("latency_mean_s", _fmt(self._latency.mean)),
                ("latency_p95_s", _fmt(self._latency.percentile(95))),
                ("model_mean_s", _fmt(self._model_seconds.mean)),
                ("node_overhead_p95_s", _fmt(self._overhead.percentile(95), 4)),
                ("seconds_since_last_image", _fmt(since_input, 1)),
                ("frames_received", str(gate.offered)),
                ("frames_captioned", str(self._captioned)),
                ("frames_dropped_superseded", str(gate.superseded)),
                ("frames_dropped_throttled", str(gate.throttled)),
                ("frames_dropped_out_of_order", str(gate.out_of_order)),
                ("time_resets", str(gate.time_resets)),
                *((f"errors_{kind}", str(self._errors[kind])) for kind in ERROR_KINDS),
                *((f"last_error_{kind}", self._last_error[kind]) for kind in ERROR_KINDS
                  if kind in self._last_error),
            )
            return HealthReport(level, message, values + tuple(extra))


__all__ = [
    "OK", "WARN", "ERROR", "CONVERSION", "INFERENCE", "PUBLISH", "ERROR_KINDS",
    "RateMeter", "LatencyWindow", "LogThrottle", "HealthReport", "CaptionerHealth",
]
