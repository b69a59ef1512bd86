"""Shared fixtures for the model tests: tiny random models and images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import CLIPVisionConfig, OPTConfig

from sharpeye_ros.model import SharpEyes, SharpEyesConfig, presets
from sharpeye_ros.model.tokenizer import build_word_tokenizer

WORDS = (
    "a",
    "red",
    "blue",
    "green",
    "circle",
    "square",
    "star",
    "and",
    "the",
    "on",
    "left",
    "right",
    ".",
    ",",
    "user",
    ":",
    "what",
    "is",
    "in",
    "photo",
    "?",
    "assistant",
    "first",
    "glance",
)


def tiny_clip_config(**kw) -> CLIPVisionConfig:
    """The micro preset's CLIP config, as a transformers config."""
    return CLIPVisionConfig.from_dict({**presets.micro().vision.config, "projection_dim": 32, **kw})


def tiny_opt_config(vocab_size: int, **kw) -> OPTConfig:
    """The micro preset's OPT config with ``vocab_size`` and OPT's special ids."""
    ids = dict(pad_token_id=1, bos_token_id=0, eos_token_id=2)
    return OPTConfig.from_dict({**presets.micro().lm.config, "vocab_size": vocab_size, **ids, **kw})


def make_images(seed: int = 0) -> list[np.ndarray]:
    """Three images of different sizes and aspect ratios, with coloured blocks on grey."""
    rng = np.random.default_rng(seed)
    out = []
    for h, w in ((96, 128), (80, 60), (64, 64)):
        img = np.full((h, w, 3), 90, dtype=np.uint8)
        for _ in range(3):
            y, x = rng.integers(0, h - 16), rng.integers(0, w - 16)
            img[y : y + 16, x : x + 16] = rng.integers(0, 256, 3)
        img += rng.integers(0, 20, img.shape, dtype=np.uint8)
        out.append(img)
    return out


def small_config() -> SharpEyesConfig:
    """The micro preset (64 px, 4x4 patches grid), for fast tests."""
    return presets.micro()


@pytest.fixture(scope="session")
def small_model() -> SharpEyes:
    torch.manual_seed(0)
    return SharpEyes.from_config(small_config()).eval()


@pytest.fixture()
def images() -> list[np.ndarray]:
    return make_images()


@pytest.fixture(scope="session")
def word_tokenizer():
    return build_word_tokenizer(WORDS)


def build_bpe_tokenizer():
    """A small byte-level BPE tokenizer (GPT-2/OPT style, with </s> as BOS and EOS)."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    corpus = [
        "USER: What is in the photo? ASSISTANT: A red circle and a blue star on the left.",
        "First glance: two green squares.\nA cat. A dog! Is it? yes.",
        "a photo of the sky",
    ] * 3
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(corpus, vocab_size=300, special_tokens=["<s>", "<pad>", "</s>", "<unk>"])
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer,
        bos_token="</s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
    )


@pytest.fixture(scope="session")
def bpe_tokenizer():
    return build_bpe_tokenizer()


@pytest.fixture(scope="session")
def helpers():
    """The helper functions above, for test modules (importlib mode cannot import conftest)."""
    from types import SimpleNamespace

    return SimpleNamespace(
        tiny_clip_config=tiny_clip_config,
        tiny_opt_config=tiny_opt_config,
        make_images=make_images,
        small_config=small_config,
        build_bpe_tokenizer=build_bpe_tokenizer,
    )
