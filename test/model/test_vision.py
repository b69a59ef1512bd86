"""The vision tower: the layers it returns are transformers' own hidden states."""

from __future__ import annotations

import pytest
import torch

from sharpeye_ros.model import presets
from sharpeye_ros.model.vision import VisionTower


@pytest.fixture(scope="module")
def tower() -> VisionTower:
    torch.manual_seed(0)
    return VisionTower.from_config(presets.micro().vision).eval()


@torch.no_grad()
def test_features_equal_the_full_forward_hidden_states(tower):
    pixels = torch.randn(2, 3, tower.image_size, tower.image_size)
    full = tower.model(pixel_values=pixels, output_hidden_states=True).hidden_states
    assert len(full) == tower.num_layers + 1
    selected, multi = tower(pixels, [1, tower.select_layer])
    torch.testing.assert_close(selected, full[tower.select_layer][:, 1:], rtol=1e-5, atol=1e-5)
    expected = torch.cat([full[1][:, 1:], full[tower.select_layer][:, 1:]], dim=-1)
    torch.testing.assert_close(multi, expected, rtol=1e-5, atol=1e-5)
    assert tower(pixels)[1] is None


@torch.no_grad()
def test_layers_after_the_deepest_one_asked_for_do_not_run(tower):
    ran = []
    hooks = [
        layer.register_forward_hook(lambda *a, i=i: ran.append(i))
        for i, layer in enumerate(tower.model.encoder.layers, start=1)
    ]
    try:
        tower(torch.randn(1, 3, tower.image_size, tower.image_size))
    finally:
        for h in hooks:
            h.remove()
    assert tower.select_layer < tower.num_layers  # the preset selects the penultimate layer
    assert ran == list(range(1, tower.select_layer + 1))


def test_pixels_of_the_wrong_shape_are_an_error(tower):
    with pytest.raises(ValueError, match="expected pixels of shape"):
        tower(torch.randn(1, 3, tower.image_size + 1, tower.image_size))
