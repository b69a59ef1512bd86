"""Scene changes as a camera sees them: only the changed object's pixels differ."""

from __future__ import annotations

import numpy as np
import pytest

from sharpeye_ros.world import (CHANGES, SceneConfig, add_sensor_noise, generate_scene, render_objects,
                                scene_change, size_range)


@pytest.mark.parametrize("split, index", [("test", 0), ("small", 7), ("train", 12)])
def test_render_objects_with_the_scenes_own_objects_is_the_scene(split, index):
    scene = generate_scene(split, index)
    np.testing.assert_array_equal(render_objects(split, index, scene.objects), scene.image)
    # In another order too: colours belong to objects, not to positions in the list.
    np.testing.assert_array_equal(render_objects(split, index, scene.objects[::-1]), scene.image)


def _changed_pixels(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    return np.abs(after.astype(np.int16) - before).max(axis=2) > 0


@pytest.mark.parametrize("kind", CHANGES)
def test_a_change_touches_only_the_changed_object(kind):
    for index in range(8):
        change = scene_change("test", index, kind)
        np.testing.assert_array_equal(change.before, generate_scene("test", index).image)
        ys, xs = np.nonzero(_changed_pixels(change.before, change.after))
        assert len(xs) > 0, f"{kind} in scene {index} changed nothing"
        x0, y0, x1, y1 = change.changed.box
        old = [o for o in generate_scene("test", index).objects
               if (o.shape, o.colour) == (change.changed.shape, change.changed.colour)]
        boxes = [change.changed.box] + [o.box for o in old]  # a moved object also leaves its old spot
        inside = np.zeros(len(xs), bool)
        for bx0, by0, bx1, by1 in boxes:  # 3 px for anti-aliasing and the blur
            inside |= (xs >= bx0 - 3) & (xs <= bx1 + 3) & (ys >= by0 - 3) & (ys <= by1 + 3)
        assert inside.all(), f"{kind} in scene {index}: pixels changed outside the object"
        if kind == "moved_object":
            assert len(old) == 1 and old[0].size == change.changed.size
            assert len(change.objects_after) == len(generate_scene("test", index).objects)
        else:
            assert not old and len(change.objects_after) == len(generate_scene("test", index).objects) + 1


def test_a_small_object_appearing_is_small():
    low, high = size_range("small", 640, 480)
    for index in range(10):
        obj = scene_change("test", index, "small_object").changed
        assert obj.size_class == "small" and low <= obj.size < high


def test_changes_are_reproducible_and_seeded():
    a, b = scene_change("test", 3, "new_object"), scene_change("test", 3, "new_object")
    np.testing.assert_array_equal(a.after, b.after)
    assert scene_change("test", 3, "new_object", seed=1).changed != a.changed


def test_bad_change_kind_is_refused():
    with pytest.raises(ValueError, match="unknown scene change"):
        scene_change("test", 0, "vanished")


def test_sensor_noise_has_the_asked_strength():
    image = np.full((200, 300, 3), 128, np.uint8)
    noisy = add_sensor_noise(image, 6.0, np.random.default_rng(0))
    assert noisy.dtype == np.uint8 and noisy.shape == image.shape
    assert (noisy.astype(float) - image).std() == pytest.approx(6.0, rel=0.05)
    np.testing.assert_array_equal(add_sensor_noise(image, 0.0, np.random.default_rng(0)), image)
    with pytest.raises(ValueError):
        add_sensor_noise(image, -1.0, np.random.default_rng(0))


def test_other_sizes_work():
    config = SceneConfig(width=320, height=240)
    change = scene_change("val", 2, "small_object", config)
    assert change.after.shape == (240, 320, 3)
