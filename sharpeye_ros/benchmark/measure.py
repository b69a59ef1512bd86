"""What the benchmark measures with: the machine, peak memory, the matmul and memory-read
limits, FLOPs per stage, and summary statistics."""

from __future__ import annotations

import datetime
import math
import os
import platform
import time
from contextlib import contextmanager
from typing import Iterator, Optional, Sequence

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from sharpeye_ros.benchmark.results import Machine
from sharpeye_ros.model.timing import Timer

GB = 1e9


# ---- statistics ------------------------------------------------------------------------
def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation between order statistics."""
    if not values:
        raise ValueError("percentile: no values")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile: q must be in [0, 100], got {q}")
    ordered = sorted(float(v) for v in values)
    pos = (len(ordered) - 1) * q / 100.0
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def summarize(values: Sequence[float]) -> dict[str, float]:
    """n, mean, p50, p95, min and max of ``values``."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("summarize: no values")
    return {
        "n": len(values),
        "mean": sum(values) / len(values),
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "min": min(values),
        "max": max(values),
    }


# ---- the machine -----------------------------------------------------------------------
def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (``platform.processor()`` elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def total_ram_bytes() -> Optional[int]:
    """Installed RAM from /proc/meminfo, or None where there is none."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def load_average() -> Optional[float]:
    """The 1-minute load average (None where the OS has none)."""
    try:
        return float(os.getloadavg()[0])
    except (OSError, AttributeError):
        return None


def machine_info(device: str) -> Machine:
    """Machine, software versions and date of a measurement on ``device``."""
    import numpy
    import transformers

    gpu = props = None
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.device(device))
        gpu = props.name
    return Machine(
        date_utc=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        cpu=cpu_model(),
        cpu_count=os.cpu_count(),
        torch_threads=torch.get_num_threads(),
        ram_bytes=total_ram_bytes(),
        platform=platform.platform(),
        python=platform.python_version(),
        torch=torch.__version__,
        transformers=transformers.__version__,
        numpy=numpy.__version__,
        load_average_1min=load_average(),
        device=device,
        gpu=gpu,
        gpu_memory_bytes=None if props is None else int(props.total_memory),
        cuda=None if props is None else torch.version.cuda,
    )


# ---- peak memory -----------------------------------------------------------------------
def _status_kib(field: str) -> Optional[int]:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def reset_peak_rss() -> bool:
    """Reset this process's peak resident set (VmHWM) to its current size. False where
    the kernel does not allow it (then peaks include what ran before)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> Optional[int]:
    """This process's peak resident set size (VmHWM), or None without /proc."""
    kib = _status_kib("VmHWM")
    return None if kib is None else kib * 1024


def rss_bytes() -> Optional[int]:
    """This process's current resident set size (VmRSS), or None without /proc."""
    kib = _status_kib("VmRSS")
    return None if kib is None else kib * 1024


def synchronize(device: torch.device) -> None:
    """Wait for queued work on ``device`` (a no-op on the CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


# ---- the machine's limits ----------------------------------------------------------------
def matmul_throughput(device: str, dtype: torch.dtype, size: int = 2048, reps: int = 3) -> float:
    """FLOP/s of a square ``size`` matrix product (2 size^3 FLOPs), best of ``reps``,
    after one warm-up, with the current thread count."""
    dev = torch.device(device)
    a = torch.randn(size, size, device=dev).to(dtype)
    b = torch.randn(size, size, device=dev).to(dtype)
    torch.mm(a, b)
    best = math.inf
    for _ in range(reps):
        synchronize(dev)
        start = time.perf_counter()
        torch.mm(a, b)
        synchronize(dev)
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best


def read_bandwidth(device: str, num_bytes: int = 256 * 2**20, reps: int = 3) -> float:
    """Memory read bandwidth in bytes/s: summing a tensor too large for the caches (a
    sum is one add per 4 bytes read, so it is limited by memory, like reading weights),
    best of ``reps`` after one warm-up."""
    dev = torch.device(device)
    data = torch.ones(num_bytes // 4, device=dev)
    data.sum()
    best = math.inf
    for _ in range(reps):
        synchronize(dev)
        start = time.perf_counter()
        data.sum()
        synchronize(dev)
        best = min(best, time.perf_counter() - start)
    return data.numel() * data.element_size() / best


# ---- FLOPs per stage -----------------------------------------------------------------
def _sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """Q K^T and the weighted sum of V: 2 b h s_q s_k (d_k + d_v)."""
    *batch, s_q, d_k = query_shape
    s_k, d_v = key_shape[-2], value_shape[-1]
    return 2 * math.prod(batch) * s_q * s_k * (d_k + d_v)


def flop_counter() -> FlopCounterMode:
    """A ``FlopCounterMode`` that also counts the CPU's fused attention kernel (torch
    counts the CUDA ones, and the math fallback as matmuls, but not this one)."""
    custom = {}
    cpu_sdpa = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if cpu_sdpa is not None:
        custom[cpu_sdpa] = _sdpa_flops
    return FlopCounterMode(display=False, custom_mapping=custom)


# ---- where a stage's time goes ---------------------------------------------------------
OP_CLASSES = ("matmul", "attention", "other")
_MATMUL_OPS = frozenset({"addmm", "mm", "bmm", "baddbmm", "addmv", "mv", "matmul", "linear", "einsum"})


def op_class(name: str) -> str:
    """The class in :data:`OP_CLASSES` of an op named like ``aten::addmm`` (profiler) or
    ``aten.addmm`` (FLOP counter): matrix products and convolutions are 'matmul', fused
    attention kernels 'attention', everything else (elementwise, norms, copies, top-k) 'other'."""
    parts = name.replace("::", ".").split(".")
    base = parts[1] if parts[0] == "aten" and len(parts) > 1 else parts[0]
    if "scaled_dot_product" in base or base.endswith("_attention"):
        return "attention"
    if base in _MATMUL_OPS or "convolution" in base or base.startswith("conv"):
        return "matmul"
    return "other"


class CountingTimer(Timer):
    """A model :class:`~sharpeye_ros.model.timing.Timer` that also counts each stage's
    FLOPs (matrix products, convolutions and attention) into ``self.flops`` and, with
    ``watch``, the forward passes of that module into ``self.calls`` (e.g. LM passes)."""

    def __init__(self, device: torch.device, watch: Optional[torch.nn.Module] = None) -> None:
        super().__init__(device)
        self.flops: dict[str, int] = {}
        self.class_flops: dict[str, dict[str, int]] = {}  # stage -> op class -> FLOPs
        self.calls: dict[str, int] = {}
        self._current: Optional[str] = None
        self._watch = watch

    def _count_call(self, module, args) -> None:
        if self._current is not None:
            self.calls[self._current] = self.calls.get(self._current, 0) + 1

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        counter = flop_counter()
        handle = self._watch.register_forward_pre_hook(self._count_call) if self._watch is not None else None
        self._current = name
        try:
            with super().stage(name), counter:
                yield
        finally:
            self._current = None
            if handle is not None:
                handle.remove()
        self.flops[name] = self.flops.get(name, 0) + int(counter.get_total_flops())
        by_class = self.class_flops.setdefault(name, dict.fromkeys(OP_CLASSES, 0))
        for op, count in counter.get_flop_counts().get("Global", {}).items():
            by_class[op_class(str(op))] += int(count)


class ProfilingTimer(Timer):
    """A model :class:`~sharpeye_ros.model.timing.Timer` that also splits each stage's
    time by op class, from ``torch.profiler``: ``self.ops[stage]`` holds the seconds of
    the aten ops' own time per class of :data:`OP_CLASSES`, and 'outside': the stage's
    time in no op (Python, dispatch, and the profiler's own cost per op). CPU only: on
    CUDA the host times only the kernels' launches."""

    def __init__(self, device: torch.device) -> None:
        super().__init__(device)
        if self.device.type != "cpu":
            raise ValueError(f"ProfilingTimer: CPU only, got device {self.device}")
        self.ops: dict[str, dict[str, float]] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        before = self.times.get(name, 0.0)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            with super().stage(name):
                yield
        ops = self.ops.setdefault(name, {**dict.fromkeys(OP_CLASSES, 0.0), "outside": 0.0})
        inside = 0.0
        for event in prof.key_averages():
            if event.key.startswith("aten::"):
                seconds = event.self_cpu_time_total / 1e6
                ops[op_class(event.key)] += seconds
                inside += seconds
        ops["outside"] += max(0.0, self.times[name] - before - inside)
