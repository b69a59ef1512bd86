"""Bytes and time bounds per stage."""

from __future__ import annotations

import pytest

from sharpeye_ros.benchmark.bounds import decode_bytes, stage_bounds, stage_bytes, total_flop_ratio
from sharpeye_ros.benchmark.results import Geometry

GEO = Geometry(
    vision_bytes=1000,
    connector_bytes=100,
    lm_bytes=500,
    deeplens_bytes=50,
    lm_layers=2,
    lm_hidden=4,
    element_size=2,
    prompt_len=10,
    refine_prompt_len=6,
    tokens=3,
    beams=2,
    refine_beams=1,
)


def test_decode_bytes_reads_weights_and_kv_cache_per_step():
    # Steps 1 and 2 (the first token comes from the prefill); KV: layers*2*(P + rows*s)*hidden*bytes:
    # the prompt's positions once (the beams share them), each row's s generated ones.
    expected = sum(500 + 2 * 2 * (10 + 2 * s) * 4 * 2 for s in (1, 2))
    assert decode_bytes(GEO, GEO.prompt_len, GEO.beams) == expected
    assert decode_bytes(Geometry(**{**GEO.to_json(), "tokens": 1}), 10, 2) == 0
    assert decode_bytes(GEO, GEO.prompt_len, GEO.beams, passes=2) == expected  # one pass per token
    # Draft decoding: one pass that checked both tokens reads the weights once.
    assert decode_bytes(GEO, GEO.prompt_len, GEO.beams, passes=1) == 500 + 2 * 2 * (10 + 2) * 4 * 2


def test_stage_bytes_by_stage():
    assert stage_bytes(GEO, "vision") == stage_bytes(GEO, "refine_vision") == 1000
    assert stage_bytes(GEO, "prefill") == 500
    assert stage_bytes(GEO, "generate") == 500 + decode_bytes(GEO, 10, 2)
    assert stage_bytes(GEO, "refine_decode") == decode_bytes(GEO, 6, 1)
    measured = {"decode": 1, "refine_decode": 1}
    assert stage_bytes(GEO, "refine_decode", measured) == decode_bytes(GEO, 6, 1, passes=1)
    assert stage_bytes(GEO, "decode", measured) == decode_bytes(GEO, 10, 2, passes=1)
    assert stage_bytes(GEO, "deeplens") == 50
    assert stage_bytes(GEO, "preprocess") is None and stage_bytes(GEO, "regions") is None


def test_stage_bounds_picks_the_larger_limit():
    seconds = {"vision": 2.0, "decode": 1.0, "regions": 0.01}
    flops = {"vision": 100, "decode": 1, "regions": 0}
    out = stage_bounds(seconds, flops, GEO, flops_per_s=100.0, bytes_per_s=1000.0)
    assert out["vision"].limit == "compute"
    assert out["vision"].achieved == pytest.approx(1.0 / 2.0)  # 100 FLOP at 100 FLOP/s in 2 s
    assert out["decode"].limit == "memory"
    assert out["decode"].achieved == pytest.approx(decode_bytes(GEO, 10, 2) / 1000.0 / 1.0)
    assert out["regions"].achieved is None and out["regions"].bytes is None
    with pytest.raises(ValueError, match="positive"):
        stage_bounds(seconds, flops, GEO, 0.0, 1.0)


def test_total_flop_ratio():
    assert total_flop_ratio(3.0, 200, 100.0) == pytest.approx(1.5)
    with pytest.raises(ValueError):
        total_flop_ratio(1.0, 0, 100.0)
