"""Shared fixtures for the benchmark tests: one real, tiny measurement, made once."""

from __future__ import annotations

import copy

import pytest

ALL_MODES = ("glance", "deeplens", "deeplens_nodraft", "zoom", "naive")
TOKENS = 4
# The tiny preset made smaller still (64 px input, 4x4 patch grid), to stay fast.
SMALLER = {
    "vision.config": dict(
        model_type="clip_vision_model",
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        image_size=64,
        patch_size=16,
    ),
    "lm.config": dict(
        model_type="opt",
        hidden_size=32,
        num_hidden_layers=2,
        ffn_dim=64,
        num_attention_heads=4,
        max_position_embeddings=256,
        word_embed_proj_dim=32,
        dropout=0.0,
    ),
    "deeplens.hidden_size": 32,
    "deeplens.num_heads": 4,
    "zoom.min_size": 24,
}


@pytest.fixture(scope="session")
def tiny_measurement() -> dict:
    """The worker's result for the tiny preset: every mode, one timed caption each."""
    from sharpeye_ros.benchmark.worker import ModelSpec, measure

    spec = ModelSpec(
        name="tiny",
        source="tiny",
        modes=ALL_MODES,
        warmup=0,
        repeats=1,
        tokens=TOKENS,
        extras=True,
        overrides=SMALLER,
    )
    return measure(spec)


@pytest.fixture(scope="session")
def tiny_run(tiny_measurement) -> dict:
    """A CPU run around the tiny measurement, with made-up machine limits and bounds filled."""
    from sharpeye_ros.benchmark import report
    from sharpeye_ros.benchmark.measure import machine_info

    run = {
        "machine": machine_info("cpu"),
        "command": "benchmark --test",
        "quick": True,
        "models": [copy.deepcopy(tiny_measurement)],
        "limits": {
            "dtype": "float32",
            "matmul_size": 256,
            "matmul_flops_per_s": 1e11,
            "copy_bytes_per_s": 1e10,
        },
    }
    report.add_bounds(run)
    return run


@pytest.fixture(scope="session")
def smaller_config():
    """The tiny preset shrunk by SMALLER, with 5 new tokens per caption and no stop rules."""
    from sharpeye_ros.model import SharpEyesConfig

    config = SharpEyesConfig.tiny().override(SMALLER)
    config.generation.max_new_tokens, config.generation.stop = 5, ()
    return config
