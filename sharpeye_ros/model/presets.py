"""The model presets, all in one place: the paper's architecture, the tiny and micro models
of the tests, and the shipped demo model's (given its vocabulary, which the synthetic
world decides).

    from sharpeye_ros.model import presets
    config = presets.tiny().override({"generation.num_beams": 3})
"""

from __future__ import annotations

from typing import Sequence

from sharpeye_ros.model.config import (
    DeepLensConfig,
    GenerationConfig,
    LMConfig,
    RegionsConfig,
    SharpEyesConfig,
    VisionConfig,
    ZoomConfig,
    read_words,
)

# A word list covering the prompts and simple scene captions, for the word-level tokenizer
# of the presets with random weights (the demo overrides it with its world's vocabulary).
TINY_VOCAB = read_words("tiny_vocab")

# What makes the tiny preset micro: 64 px glance with a 4x4 patch grid, 32 wide; shared by
# :func:`micro` and the training recipes' smoke model.
MICRO = {
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
    "generation.max_new_tokens": 12,
}


def paper() -> SharpEyesConfig:
    """CLIP ViT-L/14-336 + ``mlp4x_bott4x_gelu`` + OPT-125M (~453M), DeepLens ~47M.

    The towers are inline configs (random weights) and the tokenizer is the small word
    list (OPT's BPE files cannot be fetched here); for real weights use
    :func:`paper_pretrained`, or set ``vision.name_or_path``, ``lm.name_or_path`` and
    ``lm.vocab_words`` None.
    """
    vision = dict(
        model_type="clip_vision_model",
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=24,
        num_attention_heads=16,
        image_size=336,
        patch_size=14,
        projection_dim=768,
        hidden_act="quick_gelu",
    )
    lm = dict(
        model_type="opt",
        vocab_size=50272,
        hidden_size=768,
        num_hidden_layers=12,
        ffn_dim=3072,
        num_attention_heads=12,
        max_position_embeddings=2048,
        word_embed_proj_dim=768,
        do_layer_norm_before=True,
        pad_token_id=1,
        bos_token_id=2,
        eos_token_id=2,
        tie_word_embeddings=True,
    )
    # The refined caption is decoded greedily with the initial caption as a draft (the
    # paper used 3 beams for both): this keeps refinement within +25% of the glance.
    return SharpEyesConfig(
        vision=VisionConfig(config=vision),
        lm=LMConfig(config=lm, vocab_words=list(TINY_VOCAB)),
        generation=GenerationConfig(refine_num_beams=1),
    )


def paper_pretrained() -> SharpEyesConfig:
    """:func:`paper` with the pretrained towers it starts from: CLIP ViT-L/14-336 and
    OPT-125M (hub names or cached), their own tokenizer."""
    return paper().override({
        "vision.name_or_path": "openai/clip-vit-large-patch14-336", "vision.config": None,
        "lm.name_or_path": "facebook/opt-125m", "lm.config": None,
    })


def tiny() -> SharpEyesConfig:
    """A ~2M-parameter model for tests and the demo (128 px glance, 8x8 patches grid)."""
    vision = dict(
        model_type="clip_vision_model",
        hidden_size=64,
        intermediate_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        image_size=128,
        patch_size=16,
        projection_dim=64,
        hidden_act="quick_gelu",
    )
    lm = dict(
        model_type="opt",
        hidden_size=128,
        num_hidden_layers=3,
        ffn_dim=512,
        num_attention_heads=4,
        max_position_embeddings=512,
        word_embed_proj_dim=128,
        do_layer_norm_before=True,
        dropout=0.0,
        tie_word_embeddings=True,
    )
    return SharpEyesConfig(
        vision=VisionConfig(config=vision),
        lm=LMConfig(config=lm, vocab_words=list(TINY_VOCAB)),
        deeplens=DeepLensConfig(layers=(-3, -2), hidden_size=128, num_layers=2, num_heads=4, pool=1),
        generation=GenerationConfig(num_beams=1, max_new_tokens=40, stop=("eos",)),
        regions=RegionsConfig(attention_layers=(-2, -1)),
        zoom=ZoomConfig(num_crops=2, min_size=48, pool=1),
    )


def micro() -> SharpEyesConfig:
    """The tiny preset made smaller still (:data:`MICRO`), for tests and smoke runs that
    take seconds."""
    return tiny().override({**MICRO, "deeplens.pool": 2, "zoom.pool": 1})


def demo(vocab_words: Sequence[str]) -> SharpEyesConfig:
    """The shipped demo model: the tiny preset with ``vocab_words`` (the world's), a vision
    tower twice as wide (at 64 channels it named only ~80% of large shapes when probed),
    three zoom crops (a scene has at most three objects) cut tight around the attended cells."""
    return tiny().override({
        "vision.config.hidden_size": 128, "vision.config.intermediate_size": 512,
        "vision.config.projection_dim": 128,
        "lm.vocab_words": list(vocab_words),
        "zoom.enabled": True, "zoom.num_crops": 3, "zoom.margin": 0.0, "zoom.min_size": 48, "zoom.pool": 2,
        "regions.num_regions": 3,
    })
