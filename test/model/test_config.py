"""Config presets, JSON round trips, overrides and validation; paper-preset parameter counts."""

from __future__ import annotations

import json

import pytest
import torch

from sharpeye_ros.model import SharpEyes, SharpEyesConfig, presets


@pytest.mark.parametrize("preset", [presets.paper, presets.tiny])
def test_preset_round_trips_through_json(preset):
    cfg = preset()
    cfg.validate()
    again = SharpEyesConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    assert isinstance(again.deeplens.layers, tuple) and isinstance(again.generation.stop, tuple)


def test_override_replaces_dotted_fields_and_rejects_unknown_ones():
    cfg = presets.tiny().override(
        {"generation.num_beams": 3, "zoom.enabled": True, "deeplens.layers": [-2]}
    )
    assert cfg.generation.num_beams == 3 and cfg.zoom.enabled and cfg.deeplens.layers == (-2,)
    assert presets.tiny().generation.num_beams == 1  # presets are not modified
    with pytest.raises(ValueError, match="generation.beams"):
        presets.tiny().override({"generation.beams": 3})
    with pytest.raises(ValueError, match="unknown field"):
        SharpEyesConfig.from_dict({**presets.tiny().to_dict(), "extra": 1})


@pytest.mark.parametrize(
    "change, message",
    [
        ({"generation.num_beams": 0}, "num_beams"),
        ({"generation.stop": ["eos", "period"]}, "stop"),
        ({"lm.prompt": "no image tag"}, "lm.prompt"),
        ({"lm.refine_prompt": "USER: <image> no caption"}, "caption"),
        ({"regions.threshold": 0.0}, "threshold"),
        ({"deeplens.num_heads": 5}, "divisible"),
        ({"deeplens": None}, "refine=True needs"),
        ({"vision.name_or_path": "some/clip"}, "exactly one"),
    ],
)
def test_invalid_values_name_the_field(change, message):
    with pytest.raises(ValueError, match=message):
        presets.tiny().override(change)


def count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_paper_preset_parameter_counts_match_the_paper():
    with torch.device("meta"):
        model = SharpEyes.from_config(presets.paper())
    # CLIP ViT-L/14-336 (~304M), mlp4x_bott4x_gelu (~24M), OPT-125M with a tied head (~125M).
    assert abs(count(model.vision) - 303.5e6) < 1e6
    assert count(model.connector) == (1024 * 3072 + 3072) + 2 * (3072 * 3072 + 3072) + (3072 * 768 + 768)
    assert model.lm.model.config.vocab_size == 50272
    assert abs(count(model.lm) - 125.2e6) < 1e6
    specialist = count(model) - count(model.deeplens)
    assert abs(specialist - 450e6) / 450e6 < 0.05
    assert 40e6 <= count(model.deeplens) <= 60e6
    assert abs(count(model) - 500e6) / 500e6 < 0.05
    # DeepLens reads the paper's layers 13, 18 and 23; the glance reads layer -2 (= 23).
    assert model.deeplens_layers == (13, 18, 23) and model.vision.select_layer == 23
    assert model.vision.grid == 24 and model.vision.image_size == 336


def test_default_attention_layers_are_the_middle_third():
    with torch.device("meta"):
        paper = SharpEyes.from_config(presets.paper())
    assert paper.attention_layers == (4, 5, 6, 7)
    assert SharpEyes.from_config(presets.tiny()).attention_layers == (-2, -1)
