"""Scenes shared by the world tests (rendering costs ~30 ms each, so render once)."""

import pytest

from sharpeye_ros.world import SPLITS, generate_scene

SCENES_PER_SPLIT = 40


@pytest.fixture(scope="session")
def world_scenes():
    """{split: [scene 0 .. SCENES_PER_SPLIT-1]} of the standard world."""
    return {split: [generate_scene(split, i) for i in range(SCENES_PER_SPLIT)] for split in SPLITS}
