"""Shared fixtures for the benchmark tests: one real, tiny measurement, made once, and a saved
tiny checkpoint with short captions."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from sharpeye_ros.benchmark.results import ModelResult, Run

ALL_MODES = ("glance", "deeplens", "deeplens_nodraft", "zoom", "naive")
TOKENS = 4


@pytest.fixture(scope="session")
def tiny_measurement() -> ModelResult:
    """The worker's result for the micro preset: every mode, one timed caption each."""
    from sharpeye_ros.benchmark.worker import ModelSpec, measure

    spec = ModelSpec(
        name="tiny",
        source="micro",
        modes=ALL_MODES,
        warmup=0,
        repeats=1,
        tokens=TOKENS,
        extras=True,
        matmul_size=64,
    )
    return measure(spec)


@pytest.fixture(scope="session")
def tiny_run(tiny_measurement: ModelResult) -> Run:
    """A CPU run around the tiny measurement, with made-up machine limits and bounds filled."""
    from sharpeye_ros.benchmark.bounds import with_bounds
    from sharpeye_ros.benchmark.measure import machine_info
    from sharpeye_ros.benchmark.results import Limits, Run

    run = Run(
        machine=machine_info("cpu"),
        command="benchmark --test",
        quick=True,
        models=[copy.deepcopy(tiny_measurement)],
        limits=Limits(dtype="float32", matmul_size=256, matmul_flops_per_s=1e11,
                      read_mib=256, read_bytes_per_s=1e10),
    )
    return with_bounds(run)


@pytest.fixture(scope="session")
def smaller_config():
    """The micro preset with 5 new tokens per caption and no stop rules."""
    from sharpeye_ros.model import presets

    config = presets.micro()
    config.generation.max_new_tokens, config.generation.stop = 5, ()
    return config


def _four_tokens(config) -> None:
    config.generation.max_new_tokens = 4


@pytest.fixture(scope="session")
def short_model_dir(save_tiny_model: Callable[..., Path]) -> Path:
    """A saved tiny checkpoint (test/conftest.py) whose captions stop after 4 tokens."""
    return save_tiny_model("short_model", _four_tokens)


def _still_result(**changes):
    """A still-view result as still_bench's JSON gives it: the demo model at 1.5% from its
    parts (its forced caption in the window, the node's period 60 s), the paper-size one at
    8% over its window (no parts, no period: as a run before max_still_share), 9 of 10
    changes in time, no small object skipped."""
    def cpu(gating: bool, cpu_s: float, model: int, reused: int) -> dict:
        return {"gating": gating, "seconds": 60.0 if gating else 30.0, "cpu_seconds_per_second": cpu_s,
                "captions": model + reused, "model_captions": model, "reused_captions": reused, "input_rate_hz": 10.0,
                "noise_sigma": 3.0, "max_rate_hz": 2.0, "max_still_seconds": 60.0}

    def summary(count: int, low: float) -> dict:
        return {"rate": count / 20, "count": count, "of": 20, "min": low, "p5": low + 0.01, "median": 0.4, "max": 0.7}

    kinds = ("new_object", "moved_object", "small_object")
    data = {
        "machine": copy.deepcopy(MACHINE),
        "rates": {"threshold": 0.1, "scenes": 20, "split": "test",
                  "false_skips": {"colour": {k: summary(0, 0.23) for k in kinds},
                                  "grey": {k: summary(3, 0.004) for k in kinds}},
                  "still_recaptions": {"colour": {"3": summary(0, 0.01)}, "grey": {"3": summary(0, 0.01)}}},
        "cpu": [{"model_name": "demo", "on": {**cpu(True, 0.006, 1, 105), "input_received_hz": 9.9,
                                              "idle_cpu_seconds_per_second": 0.0055, "model_caption_cpu_seconds": 0.03,
                                              "max_still_share": 0.02, "still_period_s": 60.0, "model_last_s": 0.15,
                                              "window_still_period_s": 60.0, "still_seconds": 65.0,
                                              "change_caption_wall_seconds": 0.2},
                 "off": cpu(False, 0.4, 53, 0)},
                {"model_name": "paper", "on": cpu(True, 0.16, 1, 110), "off": cpu(False, 2.0, 12, 0)}],
        "changing": {"changes": 10, "captioned_in_time": 9, "interval_s": 0.6, "max_delay_s": 1.2,
                     "per_change": [{"change": "small_object" if i % 2 else "new scene", "captioned": i != 3,
                                     "delay_s": 1.2 if i == 3 else 0.1 * i / 3, "model_captions": 1} for i in range(10)],
                     "max_rate_hz": 2.0, "input_rate_hz": 10.0, "change_period_s": 1.0, "model_name": "demo"},
    }
    data.update(changes)
    from sharpeye_ros.benchmark.results import StillResult

    return StillResult.from_json(data, "still")


MACHINE = {"date_utc": "2026-12-02 00:40 UTC", "cpu": "Still CPU", "cpu_count": 2, "torch_threads": 2,
           "ram_bytes": None, "platform": "linux", "python": "3.11", "torch": "2.13", "transformers": "5.24",
           "numpy": "2.1", "load_average_1min": 1.0, "device": "cpu", "gpu": None}


@pytest.fixture
def still_result():
    """``still_result(**changes)``: a canned still-view result (see :func:`_still_result`)."""
    return _still_result
