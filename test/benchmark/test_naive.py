"""The naive reference path computes what the library computes, the slow way."""

from __future__ import annotations

import pytest
import torch

from sharpeye_ros.benchmark.naive import NAIVE_STAGES, hf_generate, naive_caption
from sharpeye_ros.benchmark.worker import benchmark_images
from sharpeye_ros.model import SharpEyes
from sharpeye_ros.model.timing import Timer

TOKENS = 5


@pytest.fixture(scope="module")
def model(smaller_config) -> SharpEyes:
    torch.manual_seed(0)
    assert smaller_config.generation.max_new_tokens == TOKENS
    return SharpEyes.from_config(smaller_config).eval()


@pytest.fixture(scope="module")
def image():
    return benchmark_images(1, (160, 120))[0]


def test_generate_writes_exactly_the_asked_tokens(model, image):
    with torch.no_grad():
        embeds = model.encode(model.preprocess([image])[0]).embeds
        prompt = model.lm.build_prompt(model.config.lm.prompt, embeds)
        for beams in (1, 2):
            assert len(hf_generate(model.lm, prompt, TOKENS, beams, 0.0, True)) == TOKENS


def test_naive_greedy_captions_match_the_library(model, image):
    """Same model, same prompts, greedy: the naive glance and refinement write the
    library's captions (an untrained DeepLens passes the glance's embeddings through)."""
    timer = Timer(torch.device("cpu"))
    glance_only = naive_caption(model, image, timer, refine=False)
    result = model.caption([image], refine=True, zoom=False)[0]
    assert glance_only == result.initial_caption
    assert naive_caption(model, image, Timer(torch.device("cpu")), refine=True) == result.caption
    assert set(timer.times) == {"preprocess", "vision", "connector", "generate", "attention", "regions"}


def test_naive_refinement_runs_a_second_full_vision_pass(model, image):
    timer = Timer(torch.device("cpu"))
    calls = []
    last_layer = model.vision.model.encoder.layers[-1]  # one the library never runs
    handle = last_layer.register_forward_pre_hook(lambda module, args: calls.append(1))
    try:
        naive_caption(model, image, timer, refine=True)
    finally:
        handle.remove()
    assert len(calls) == 2
    assert set(NAIVE_STAGES) <= set(timer.times) and "deeplens" in timer.times


def test_naive_refinement_needs_deeplens(model, image, monkeypatch):
    monkeypatch.setattr(model, "deeplens", None)
    with pytest.raises(ValueError, match="no DeepLens"):
        naive_caption(model, image, Timer(torch.device("cpu")), refine=True)
