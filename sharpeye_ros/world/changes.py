"""How a scene changes in front of a camera, or stays still: the cases a captioner that
skips unchanged views must tell apart.

:func:`scene_change` returns a scene before and after one change of kind :data:`CHANGES`:

- ``new_object``: an object of a random size class appears at a free spot;
- ``moved_object``: one of the scene's objects moves to another free spot;
- ``small_object``: a small object (8-20 px at 640x480, too small to name at the glance)
  appears at a free spot.

Only the objects differ between the two images: background, clutter and sensor noise
stay (:func:`~sharpeye_ros.world.scene.render_objects`). :func:`add_sensor_noise` adds a
camera's frame-to-frame noise on top, for a still view that is not pixel-identical.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sharpeye_ros.world.captions import COLOURS, SHAPES, SIZE_CLASSES
from sharpeye_ros.world.scene import (SPLITS, SceneConfig, WorldObject, generate_scene, place_object,
                                      render_objects, split_config)

CHANGES = ("new_object", "moved_object", "small_object")


@dataclass(frozen=True)
class ChangedScene:
    """Scene ``index`` of ``split`` before (its own image) and after a change of ``kind``;
    ``changed`` is the object that appeared or moved (where it is after the change)."""

    split: str
    index: int
    kind: str
    before: np.ndarray
    after: np.ndarray
    objects_after: tuple[WorldObject, ...]
    changed: WorldObject


def scene_change(split: str, index: int, kind: str, config: SceneConfig | None = None,
                 seed: int = 0) -> ChangedScene:
    """Scene ``index`` of ``split`` and the same scene after a change of ``kind`` (one of
    :data:`CHANGES`), chosen by a generator seeded with ``seed``. ValueError for an unknown
    kind; RuntimeError when the frame has no free spot for the change (a rare crowded scene)."""
    if kind not in CHANGES:
        raise ValueError(f"unknown scene change {kind!r}; choose one of {CHANGES}")
    config = split_config(split, config)
    scene = generate_scene(split, index, config)
    rng = np.random.default_rng([config.seed, SPLITS.index(split), index, 2, CHANGES.index(kind), seed])
    objects = list(scene.objects)
    for _ in range(20):
        if kind == "moved_object":
            mover = objects[int(rng.integers(len(objects)))]
            others = [o for o in objects if o is not mover]
            changed = _relocated(rng, config, mover, others)
            after = [changed if o is mover else o for o in objects]
        else:
            used = {(o.colour, o.shape) for o in objects}
            free = [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in used]
            colour, shape = free[int(rng.integers(len(free)))]
            size_class = "small" if kind == "small_object" else SIZE_CLASSES[int(rng.integers(len(SIZE_CLASSES)))]
            changed = place_object(rng, config, colour, shape, size_class, objects)
            after = objects + [changed] if changed is not None else objects
        if changed is not None:
            image = render_objects(split, index, after, config, seed=seed)
            return ChangedScene(split, index, kind, scene.image, image, tuple(after), changed)
    raise RuntimeError(f"no free spot for a {kind} change in scene {split}/{index}")


def _relocated(rng: np.random.Generator, config: SceneConfig, obj: WorldObject,
               others: list[WorldObject]) -> WorldObject | None:
    """``obj``, same size, at a new free spot at least its own size away from where it was."""
    for _ in range(20):
        moved = place_object(rng, config, obj.colour, obj.shape, obj.size_class, others, size=obj.size)
        if moved is not None and np.hypot(moved.centre[0] - obj.centre[0], moved.centre[1] - obj.centre[1]) >= obj.size:
            return moved
    return None


def add_sensor_noise(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """``image`` (uint8) with fresh Gaussian noise of ``sigma`` grey levels per pixel, as the
    next frame of a still camera shows it."""
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    noisy = image.astype(np.float32) + np.float32(sigma) * rng.standard_normal(image.shape, dtype=np.float32)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


__all__ = ["CHANGES", "ChangedScene", "scene_change", "add_sensor_noise"]
