"""Skip the model while the view is still: compare each frame, cheaply, with the last one the
model captioned.

Pure Python and numpy (no rclpy). The captioner's worker calls :func:`thumbnail` on each
frame the rate gate hands it, asks :meth:`SceneGate.judge` whether the model must run, and
reports each caption the model wrote with :meth:`SceneGate.captioned`.

**The measure.** A frame's thumbnail is its RGB image shrunk by area averaging to
:data:`THUMBNAIL_SIDE` pixels on its longer side (5x5 pixel cells at 640x480; about 1 ms).
The change between two frames is the largest difference of any cell in any colour channel,
as a fraction of full scale (0..1). The largest cell, not the mean, so that one small object
appearing counts as much as a large one; colour, not grey, because the synthetic world's
saturated objects on greyish backgrounds are often as bright as the background: with grey
thumbnails a new object changed a cell by as little as 1/255 (0.004), in colour by at least
0.23 (``docs/benchmarks.md``, the gate's false-skip rates). Averaging a cell's 25 pixels
divides a camera's per-pixel noise by 5, so frame-to-frame noise of 8 grey levels moves the
measure by less than 0.05; :data:`DEFAULT_MIN_CHANGE` sits between the two.

**The decision** (:class:`Verdict`): caption when gating is off (``min_change`` 0), when
there is nothing to compare with (the first frame, a new size, the reference forgotten
after a parameter change), when the stamps went back (a new timeline), when the change
reaches ``min_change``, or when the last caption is one still period old on the frames'
stamps; otherwise the view is still: REPUBLISH the last caption (``on_still``
``republish``) or SKIP the frame (``skip``).

**The still period** (:attr:`SceneGate.still_period`): a still view is captioned again after
``max(max_still_seconds, d / max_still_share)`` seconds, ``d`` being the wall time of the
model's last caption, so that these forced captions take at most ``max_still_share`` of the
node's time on any hardware: a 0.2 s caption (a Jetson) keeps 60 s, a 22 s one (the paper
size on a 2-core CPU) stretches it to 1100 s at 0.02. ``max_still_share`` 0: always
``max_still_seconds``. A changed view is captioned at once, whatever the period.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Optional

import numpy as np

THUMBNAIL_SIDE = 128  # pixels on the thumbnail's longer side
DEFAULT_MIN_CHANGE = 0.1
DEFAULT_MAX_STILL_SECONDS = 60.0  # a still view costs one caption per period (Jetson Nano, per the paper: ~0.2 s)
DEFAULT_MAX_STILL_SHARE = 0.02  # forced captions of a still view take at most 2% of the node's time
ON_STILL = ("republish", "skip")
CAPTION, REPUBLISH, SKIP = "caption", "republish", "skip"
_NS_PER_S = 1_000_000_000


def thumbnail(rgb: np.ndarray, side: int = THUMBNAIL_SIDE) -> np.ndarray:
    """``rgb`` (H, W, 3) uint8 shrunk by area averaging so that its longer side is ``side``
    pixels (uint8; a frame already that small is kept as it is)."""
    import cv2  # here: the parameter specs import this module's defaults, and launch files them

    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"thumbnail: expected an (H, W, 3) uint8 image, got {rgb.shape} {rgb.dtype}")
    height, width = rgb.shape[:2]
    scale = side / max(height, width)
    if scale >= 1:
        return rgb.copy()
    factor = max(height, width) // side
    if factor * side == max(height, width) and height % factor == 0 and width % factor == 0:
        # A whole factor (640x480 -> 128x96): the same box average as INTER_AREA (exact for
        # odd factors, within one level at rounding ties for even ones) at a third of its CPU,
        # which the node spends on every due frame of a still view.
        box = cv2.boxFilter(rgb, -1, (factor, factor), anchor=(0, 0), borderType=cv2.BORDER_REPLICATE)
        return np.ascontiguousarray(box[::factor, ::factor])
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


def view_change(a: np.ndarray, b: np.ndarray) -> float:
    """How much thumbnail ``b`` differs from ``a``: the largest difference of one cell in one
    channel, in 0..1. ValueError when their sizes differ."""
    if a.shape != b.shape:
        raise ValueError(f"view_change: thumbnails of different sizes {a.shape} and {b.shape}")
    if a.size == 0:
        return 0.0
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).max()) / 255.0


@dataclass(frozen=True)
class Verdict:
    """What to do with one frame: ``action`` CAPTION, REPUBLISH or SKIP; ``change``: the
    measured change (NaN when not measured); ``reason`` in words, for the debug log."""

    action: str
    change: float
    reason: str

    @property
    def still(self) -> bool:
        """True when the model does not run for this frame."""
        return self.action != CAPTION


class SceneGate:
    """Decides, frame by frame, whether the view changed enough to run the model (see the
    module). Thread-safe: the worker judges while the parameter callback reconfigures."""

    def __init__(self, min_change: float = DEFAULT_MIN_CHANGE, on_still: str = "republish",
                 max_still_seconds: float = DEFAULT_MAX_STILL_SECONDS,
                 max_still_share: float = DEFAULT_MAX_STILL_SHARE) -> None:
        self._lock = threading.Lock()
        self._reference: Optional[np.ndarray] = None  # thumbnail of the last captioned frame
        self._reference_ns = 0
        self._min_change, self._on_still, self._max_still_ns, self._max_still_share = 0.0, ON_STILL[0], 0, 0.0
        # Wall time of the model's last caption (NaN: none yet). Wall time, not CPU time: while
        # the model runs the worker can do nothing else, so it is the node's time that the
        # share bounds (on a CPU that captions slower than max_rate, gating off is busy all the
        # time and the forced captions then cost about max_still_share of its CPU); the last
        # caption's, not a smoothed one, so that the period is what the diagnostics say and
        # one slow caption stretches one period only (the next forced caption measures again).
        self._caption_seconds = math.nan
        self.configure(min_change, on_still, max_still_seconds, max_still_share)

    def configure(self, min_change: Optional[float] = None, on_still: Optional[str] = None,
                  max_still_seconds: Optional[float] = None, max_still_share: Optional[float] = None) -> None:
        """Change any of the settings (None: keep); ValueError for a bad value."""
        if min_change is not None and not 0.0 <= min_change <= 1.0:
            raise ValueError(f"min_change must be in [0, 1], got {min_change}")
        if on_still is not None and on_still not in ON_STILL:
            raise ValueError(f"on_still must be one of {', '.join(ON_STILL)}, got {on_still!r}")
        if max_still_seconds is not None and not (max_still_seconds > 0 and math.isfinite(max_still_seconds)):
            raise ValueError(f"max_still_seconds must be > 0, got {max_still_seconds}")
        if max_still_share is not None and not 0.0 <= max_still_share <= 1.0:  # NaN fails too
            raise ValueError(f"max_still_share must be in [0, 1], got {max_still_share}")
        with self._lock:
            if min_change is not None:
                self._min_change = float(min_change)
            if on_still is not None:
                self._on_still = on_still
            if max_still_seconds is not None:
                self._max_still_ns = int(max_still_seconds * _NS_PER_S)
            if max_still_share is not None:
                self._max_still_share = float(max_still_share)

    def _period_ns(self) -> int:
        """The still period in ns (see the module); call with the lock held."""
        if self._max_still_share > 0 and self._caption_seconds > 0:  # NaN: no caption timed yet
            return max(self._max_still_ns, int(self._caption_seconds / self._max_still_share * _NS_PER_S))
        return self._max_still_ns

    @property
    def still_period(self) -> float:
        """Seconds (on the frames' stamps) after which a still view is captioned again:
        max(max_still_seconds, the model's last caption's wall time / max_still_share)."""
        with self._lock:
            return self._period_ns() / _NS_PER_S

    @property
    def enabled(self) -> bool:
        """False when ``min_change`` is 0: every frame is captioned and no thumbnail is needed."""
        with self._lock:
            return self._min_change > 0

    def reset(self) -> None:
        """Forget the last captioned frame: the next frame is captioned (its caption would
        differ, e.g. after a parameter change)."""
        with self._lock:
            self._reference = None

    def judge(self, thumb: Optional[np.ndarray], stamp_ns: int) -> Verdict:
        """The verdict on a frame with thumbnail ``thumb`` (None when gating is off) stamped
        ``stamp_ns`` (the rate gate's time of the frame)."""
        with self._lock:
            if self._min_change <= 0 or thumb is None:
                return Verdict(CAPTION, math.nan, "scene gating off (min_scene_change 0)")
            reference = self._reference
            if reference is None:
                return Verdict(CAPTION, math.nan, "no captioned frame to compare with")
            if reference.shape != thumb.shape:
                return Verdict(CAPTION, math.nan, "the frame size changed")
            elapsed = stamp_ns - self._reference_ns
            if elapsed < 0:
                return Verdict(CAPTION, math.nan, "stamps went back: a new timeline")
            change = view_change(reference, thumb)
            if change >= self._min_change:
                return Verdict(CAPTION, change, f"the view changed by {change:.3f} >= {self._min_change:g}")
            period = self._period_ns()
            if elapsed >= period:
                return Verdict(CAPTION, change, f"still for {elapsed / _NS_PER_S:.1f} s >= the still period "
                                                f"{period / _NS_PER_S:.1f} s (max_still_seconds, or the last "
                                                "caption's time / max_still_share)")
            action = REPUBLISH if self._on_still == "republish" else SKIP
            return Verdict(action, change, f"still: changed by {change:.3f} < {self._min_change:g}")

    def captioned(self, thumb: Optional[np.ndarray], stamp_ns: int, seconds: Optional[float] = None) -> None:
        """The model captioned the frame with thumbnail ``thumb`` (None: gating was off) and
        stamp ``stamp_ns`` in ``seconds`` of wall time (None: not timed, the last time stays):
        frames are compared with it from now on, and the still period follows its time."""
        with self._lock:
            self._reference, self._reference_ns = thumb, stamp_ns
            if seconds is not None and math.isfinite(seconds) and seconds >= 0:
                self._caption_seconds = float(seconds)


__all__ = ["SceneGate", "Verdict", "thumbnail", "view_change", "THUMBNAIL_SIDE", "DEFAULT_MIN_CHANGE",
           "DEFAULT_MAX_STILL_SECONDS", "DEFAULT_MAX_STILL_SHARE", "ON_STILL", "CAPTION", "REPUBLISH", "SKIP"]
