"""Shared fixtures for the training tests: the smoke recipe (a very small model, a few
steps of every stage on 16 synthetic scenes)."""

from __future__ import annotations

import pytest

from sharpeye_ros.training.recipes import RECIPES, TrainConfig


@pytest.fixture()
def smoke() -> TrainConfig:
    """A fresh copy of the smoke recipe, free to modify."""
    return RECIPES["smoke"]()
