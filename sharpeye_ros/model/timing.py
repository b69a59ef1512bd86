"""Per-stage wall-clock timing that is honest on CUDA (synchronises before reading), and
the stage names: one contract, owned here, for the node's glance/refine split and the
benchmark's tables.

A caption's glance runs :data:`GLANCE_STAGES` in order; refining it adds
:data:`REFINE_STAGES` (``zoom`` only with zoom).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator, Mapping

import torch

GLANCE_STAGES: tuple[str, ...] = ("preprocess", "vision", "connector", "prefill", "decode", "regions")
REFINE_STAGES: tuple[str, ...] = ("zoom", "deeplens", "refine_prefill", "refine_decode", "refine_regions")
PREPROCESS, VISION, CONNECTOR, PREFILL, DECODE, REGIONS = GLANCE_STAGES
ZOOM, DEEPLENS, REFINE_PREFILL, REFINE_DECODE, REFINE_REGIONS = REFINE_STAGES


def split_seconds(timings: Mapping[str, float]) -> tuple[float, float]:
    """(glance seconds, refine seconds) of per-stage timings: the sums over
    :data:`GLANCE_STAGES` and :data:`REFINE_STAGES`."""
    return (float(sum(timings.get(s, 0.0) for s in GLANCE_STAGES)),
            float(sum(timings.get(s, 0.0) for s in REFINE_STAGES)))


class Timer:
    """Accumulates seconds per stage name in ``self.times``."""

    def __init__(self, device: torch.device) -> None:
        self.device = torch.device(device)
        self.times: dict[str, float] = {}

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self._sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self.times[name] = self.times.get(name, 0.0) + time.perf_counter() - start
