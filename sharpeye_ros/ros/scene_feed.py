"""A camera feed of synthetic-world scenes, shared by the synthetic camera and the bag recorder.

Pure Python (no rclpy): the recorder must run without ROS. A feed shows scenes
``start_index, start_index + 1, ...`` of one split, each held for ``scene_period`` seconds,
and describes each scene's ground truth as a small JSON document (topic ``ground_truth``,
``std_msgs/String``)::

    {"split": "test", "index": 3, "width": 640, "height": 480,
     "stamp": {"sec": 12, "nanosec": 0},            # first frame showing the scene
     "caption": "a large red circle ...",           # canonical reference caption
     "captions": [...], "objects": [WorldObject.to_dict(), ...]}
"""

from __future__ import annotations

import json
import math
from typing import Any, Mapping

from sharpeye_ros.ros.stamps import stamp_parts
from sharpeye_ros.world import SPLITS, Scene, SceneConfig, WorldObject, generate_scene


class SceneFeed:
    """Scenes of one split in index order; the current scene is rendered once and kept."""

    def __init__(self, split: str = "test", start_index: int = 0, width: int = 640,
                 height: int = 480, seed: int = 0) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if start_index < 0:
            raise ValueError(f"start_index must be >= 0, got {start_index}")
        try:
            self.config = SceneConfig(width=width, height=height, seed=seed)
        except ValueError as err:  # name the settings, not the dataclass
            raise ValueError(f"width x height = {width}x{height} rejected: {err}") from None
        self.split, self.start_index = split, start_index
        self._cached: Scene | None = None

    def scene(self, number: int) -> Scene:
        """The ``number``-th scene of the feed (0 = the one at ``start_index``)."""
        index = self.start_index + number
        if self._cached is None or self._cached.index != index:
            self._cached = generate_scene(self.split, index, self.config)
        return self._cached


def scene_number(elapsed: float, scene_period: float) -> int:
    """How many scene changes ``elapsed`` seconds into a feed hold each scene ``scene_period`` s.

    A small tolerance keeps float error from flipping a frame that lies exactly on a scene
    boundary (``k * period``, e.g. frame 15 at 5 Hz with a 3 s period) back to the old scene.
    """
    if scene_period <= 0:
        raise ValueError(f"scene_period must be > 0, got {scene_period}")
    return max(0, math.floor(elapsed / scene_period + 1e-9))


def ground_truth(scene: Scene, stamp_ns: int) -> dict[str, Any]:
    """The ground-truth document of ``scene``, first shown at ``stamp_ns`` (ROS time, ns)."""
    sec, nanosec = stamp_parts(stamp_ns)
    return {
        "split": scene.split,
        "index": scene.index,
        "width": int(scene.image.shape[1]),
        "height": int(scene.image.shape[0]),
        "stamp": {"sec": sec, "nanosec": nanosec},
        "caption": scene.captions[0],
        "captions": list(scene.captions),
        "objects": [obj.to_dict() for obj in scene.objects],
    }


def ground_truth_json(scene: Scene, stamp_ns: int) -> str:
    """:func:`ground_truth` as compact JSON, the ``data`` of a ``std_msgs/String``."""
    return json.dumps(ground_truth(scene, stamp_ns), separators=(",", ":"))


def parse_ground_truth(text: str) -> tuple[dict[str, Any], tuple[WorldObject, ...]]:
    """Inverse of :func:`ground_truth_json`: the document and its objects; ValueError if malformed."""
    try:
        data = json.loads(text)
        if not isinstance(data, Mapping):
            raise TypeError(f"expected a JSON object, got {type(data).__name__}")
        objects = tuple(WorldObject.from_dict(o) for o in data["objects"])
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"malformed ground-truth JSON ({err}): {text[:200]!r}") from None
    return dict(data), objects
