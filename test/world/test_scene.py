"""Scene generation: determinism, geometry, size classes, what is actually drawn."""

import hashlib
import math

import numpy as np
import pytest

from sharpeye_ros.world import (
    COLOURS, SHAPES, SIZE_CLASSES, SceneConfig, WorldObject, generate_scene,
    size_class_of, size_range,
)
from sharpeye_ros.world.scene import PALETTE, grid_position


def _digest(image: np.ndarray) -> str:
    return hashlib.sha256(image.tobytes()).hexdigest()


def test_same_seed_gives_identical_scene():
    a, b = generate_scene("train", 7), generate_scene("train", 7)
    assert np.array_equal(a.image, b.image)
    assert a.captions == b.captions and a.objects == b.objects
    other_world = generate_scene("train", 7, SceneConfig(seed=1))
    assert not np.array_equal(a.image, other_world.image)


def test_splits_are_disjoint(world_scenes):
    seen = {}
    for split, scenes in world_scenes.items():
        for scene in scenes:
            digest = _digest(scene.image)
            assert digest not in seen, f"{split}/{scene.index} repeats {seen[digest]}"
            seen[digest] = f"{split}/{scene.index}"


def test_image_format(world_scenes):
    scene = world_scenes["test"][0]
    assert scene.image.dtype == np.uint8 and scene.image.shape == (480, 640, 3)
    small = generate_scene("val", 0, SceneConfig(width=320, height=256))
    assert small.image.shape == (256, 320, 3)


def test_size_thresholds_at_640x480():
    assert size_range("small", 640, 480) == (8.0, 20.0)
    assert size_range("medium", 640, 480) == (20.0, 60.0)
    assert size_range("large", 640, 480) == (60.0, 120.0)  # a quarter of the frame height
    assert size_class_of(19.9, 640, 480) == "small" and size_class_of(20.0, 640, 480) == "medium"
    assert size_class_of(7.0, 640, 480) is None


def test_objects_inside_frame_apart_and_in_their_size_class(world_scenes):
    classes_seen = set()
    for scenes in world_scenes.values():
        for scene in scenes:
            height, width = scene.image.shape[:2]
            assert 1 <= len(scene.objects) <= 3
            pairs = [(o.colour, o.shape) for o in scene.objects]
            assert len(set(pairs)) == len(pairs), "a (colour, shape) pair repeats in one scene"
            for o in scene.objects:
                x0, y0, x1, y1 = o.box
                assert 0 <= x0 < x1 <= width - 1 and 0 <= y0 < y1 <= height - 1
                assert math.isclose(o.size, max(x1 - x0, y1 - y0), rel_tol=1e-9)
                assert size_class_of(o.size, width, height) == o.size_class
                assert o.position == grid_position(*o.centre, width, height)
                assert o.shape in SHAPES and o.colour in COLOURS
                classes_seen.add(o.size_class)
            for i, a in enumerate(scene.objects):
                for b in scene.objects[i + 1:]:
                    apart = a.box[2] < b.box[0] or b.box[2] < a.box[0] or \
                        a.box[3] < b.box[1] or b.box[3] < a.box[1]
                    assert apart, f"{scene.split}/{scene.index}: {a} overlaps {b}"
    assert classes_seen == set(SIZE_CLASSES)


def test_small_split_always_has_a_small_object(world_scenes):
    for scene in world_scenes["small"]:
        assert any(o.size_class == "small" for o in scene.objects), scene.captions[0]
    # The other splits do not force it: some of their scenes have none.
    assert any(all(o.size_class != "small" for o in s.objects) for s in world_scenes["test"])


def test_colour_at_object_centre_is_its_palette_colour(world_scenes):
    palette = {name: np.array(rgb, float) for name, rgb in PALETTE.items()}
    for scenes in world_scenes.values():
        for scene in scenes:
            for o in scene.objects:
                cx, cy = (int(round(v)) for v in o.centre)
                pixel = scene.image[cy, cx].astype(float)
                nearest = min(palette, key=lambda name: np.linalg.norm(pixel - palette[name]))
                assert nearest == o.colour and np.linalg.norm(pixel - palette[o.colour]) < 45, \
                    f"{scene.split}/{scene.index} {o.colour} {o.shape}: centre pixel {pixel}"


# Share of the box the shape covers, and share of the shape in the box's top half.
_FILL = {"circle": math.pi / 4, "square": 1.0, "diamond": 0.5, "triangle": 0.5,
         "cross": 1 - (1 - 0.25) ** 2, "star": 0.359}


def _shape_mask(image: np.ndarray, obj: WorldObject) -> np.ndarray:
    x0, y0, x1, y1 = obj.box
    patch = image[math.ceil(y0):math.floor(y1) + 1, math.ceil(x0):math.floor(x1) + 1].astype(float)
    return np.linalg.norm(patch - np.array(PALETTE[obj.colour]), axis=2) < 60


def test_large_shapes_cover_their_box_as_the_shape_should(world_scenes):
    checked = set()
    for scenes in world_scenes.values():
        for scene in scenes:
            for o in scene.objects:
                if o.size_class != "large":
                    continue
                mask = _shape_mask(scene.image, o)
                assert mask.mean() == pytest.approx(_FILL[o.shape], abs=0.05), o
                top_share = mask[:mask.shape[0] // 2].sum() / mask.sum()
                if o.shape == "triangle":  # apex up: a quarter of it in the top half
                    assert top_share < 0.35, o
                elif o.shape != "star":
                    assert 0.4 < top_share < 0.6, o
                checked.add(o.shape)
    assert checked == set(SHAPES)


def test_clutter_and_background_are_grey_and_never_white(world_scenes):
    for scene in world_scenes["train"]:
        free = np.ones(scene.image.shape[:2], bool)
        for o in scene.objects:
            x0, y0, x1, y1 = (int(v) for v in o.box)
            free[max(0, y0 - 4):y1 + 5, max(0, x0 - 4):x1 + 5] = False
        pixels = scene.image[free].astype(int)
        assert (pixels.max(axis=1) - pixels.min(axis=1)).max() <= 40  # low saturation
        assert pixels.max() < 225  # darker than any white object (245 +- 12)


@pytest.mark.parametrize("kwargs", [
    {"width": 32}, {"width": 1000, "height": 100}, {"min_objects": 0}, {"min_objects": 3, "max_objects": 2},
    {"min_small": 2, "min_objects": 1}, {"size_weights": (0.0, 0.0, 0.0)}, {"distractors": (5, 2)},
])
def test_bad_config_is_refused_clearly(kwargs):
    with pytest.raises(ValueError, match="SceneConfig"):
        SceneConfig(**kwargs)


def test_bad_split_or_index_is_refused():
    with pytest.raises(ValueError, match="unknown split"):
        generate_scene("training", 0)
    with pytest.raises(ValueError, match="index"):
        generate_scene("train", -1)


def test_object_count_is_configurable():
    config = SceneConfig(min_objects=3, max_objects=3, size_weights=(1.0, 0.0, 0.0))
    for index in range(5):
        scene = generate_scene("test", index, config)
        assert len(scene.objects) == 3 and {o.size_class for o in scene.objects} == {"large"}
