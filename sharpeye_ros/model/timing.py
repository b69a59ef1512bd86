"""Per-stage wall-clock timing that is honest on CUDA (synchronises before reading)."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

import torch


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
