"""The limits a stage cannot beat on a machine: its FLOPs at the measured matmul
throughput, and the bytes it must read at the measured memory bandwidth.

Bytes are a lower bound: each weight is read once per forward pass, and a decode step
also reads its KV cache; activations are left out. At batch 1 decoding reads every LM
weight to produce one token per row, so it is bound by memory, not by FLOPs.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Optional

from sharpeye_ros.benchmark import naive
from sharpeye_ros.benchmark.results import Geometry, Limits, ModelResult, ModeResult, Run, StageBound
from sharpeye_ros.evaluation.modes import DEEPLENS, GLANCE
from sharpeye_ros.model import timing

# The stages of a caption's glance on either path, the library's and the naive one's.
GLANCE_PART_STAGES = timing.GLANCE_STAGES + naive.NAIVE_GLANCE_STAGES
# The modes whose stages the docs set against the limits (and profile by op class).
LIMIT_MODES = (GLANCE, DEEPLENS)


def decode_bytes(g: Geometry, prompt_len: int, rows: int, passes: Optional[int] = None) -> int:
    """Bytes read by the decode's LM passes after the prefill of one sample, each reading
    every LM weight once and the KV cache of ``rows`` sequences (its beams). ``passes``
    defaults to one per new token after the first (``tokens - 1``); draft decoding checks
    several tokens per pass, so it makes fewer. Pass ``i`` reads the prompt's
    ``prompt_len`` cached positions once (the beams share them: model.kv_cache) and at
    least ``i`` positions of each row's own."""
    passes = max(g.tokens - 1, 0) if passes is None else passes
    total = 0
    for step in range(1, passes + 1):
        kv = g.lm_layers * 2 * (prompt_len + rows * step) * g.lm_hidden * g.element_size
        total += g.lm_bytes + kv
    return total


def stage_bytes(g: Geometry, stage: str, passes: Optional[Mapping[str, int]] = None) -> Optional[int]:
    """The least bytes ``stage`` reads, or None for a stage that runs no model weights.
    ``passes``: the LM passes measured per stage (the decode stages' count is used)."""
    passes = passes or {}
    glance_decode = decode_bytes(g, g.prompt_len, g.beams, passes.get(timing.DECODE))
    refine_decode = decode_bytes(g, g.refine_prompt_len, g.refine_beams, passes.get(timing.REFINE_DECODE))
    table = {
        timing.VISION: g.vision_bytes,
        timing.ZOOM: g.vision_bytes,
        naive.REFINE_VISION: g.vision_bytes,
        timing.CONNECTOR: g.connector_bytes,
        naive.REFINE_CONNECTOR: g.connector_bytes,
        timing.PREFILL: g.lm_bytes,
        timing.REFINE_PREFILL: g.lm_bytes,
        naive.ATTENTION: g.lm_bytes,
        timing.DECODE: glance_decode,
        timing.REFINE_DECODE: refine_decode,
        timing.REFINE_REGIONS: g.lm_bytes,  # one teacher-forced pass of the changed captions
        naive.GENERATE: g.lm_bytes + decode_bytes(g, g.prompt_len, g.beams),
        naive.REFINE_GENERATE: g.lm_bytes + decode_bytes(g, g.refine_prompt_len, g.refine_beams),
        timing.DEEPLENS: g.deeplens_bytes,
    }
    return table.get(stage)


def stage_bounds(
    seconds: Mapping[str, float],
    flops: Mapping[str, int],
    g: Geometry,
    flops_per_s: float,
    bytes_per_s: float,
    passes: Optional[Mapping[str, int]] = None,
) -> dict[str, StageBound]:
    """Per stage: measured seconds, FLOPs, bytes, the time each would take at the
    machine's limit, and ``achieved`` = the larger bound / the measured time.
    ``passes``: LM passes per stage, as measured (see :func:`stage_bytes`)."""
    if flops_per_s <= 0 or bytes_per_s <= 0:
        raise ValueError("stage_bounds: throughput and bandwidth must be positive")
    out = {}
    for stage, measured in seconds.items():
        f = int(flops.get(stage, 0))
        b = stage_bytes(g, stage, passes)
        flop_bound = f / flops_per_s
        byte_bound = b / bytes_per_s if b is not None else 0.0
        bound = max(flop_bound, byte_bound)
        out[stage] = StageBound(
            seconds=measured,
            flops=f,
            bytes=b,
            flop_bound_s=flop_bound,
            byte_bound_s=byte_bound if b is not None else None,
            limit="memory" if byte_bound > flop_bound else "compute",
            achieved=bound / measured if measured > 0 and bound > 0 else None,
        )
    return out


def model_bounds(model: ModelResult, limits: Limits) -> dict[str, dict[str, StageBound]]:
    """:func:`stage_bounds` of each measured mode of ``model`` (mean stage seconds, the
    FLOPs and LM passes of its counted caption) at the machine's ``limits``."""
    return {
        name: stage_bounds(
            {s: v.mean for s, v in m.stages.items()},
            m.flops,
            model.geometry,
            limits.matmul_flops_per_s,
            limits.read_bytes_per_s,
            m.lm_passes,
        )
        for name, m in model.measured_modes.items()
    }


def with_bounds(run: Run) -> Run:
    """``run`` with each model's ``bounds`` filled from its timings and the run's limits
    (``run`` itself unchanged)."""
    models = [dataclasses.replace(m, bounds=model_bounds(m, run.limits)) for m in run.models]
    return dataclasses.replace(run, models=models)


def glance_seconds(mode: ModeResult) -> float:
    """Mean seconds of a mode's glance stages, on either path (:data:`GLANCE_PART_STAGES`):
    its share of the whole caption's time."""
    return sum(s.mean for name, s in mode.stages.items() if name in GLANCE_PART_STAGES)


def total_flop_ratio(seconds: float, flops: int, flops_per_s: float) -> float:
    """Measured time over the FLOP bound (1.0: running at the machine's matmul throughput)."""
    if flops <= 0 or flops_per_s <= 0:
        raise ValueError("total_flop_ratio: need positive FLOPs and throughput")
    return seconds / (flops / flops_per_s)
