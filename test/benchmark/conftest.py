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
