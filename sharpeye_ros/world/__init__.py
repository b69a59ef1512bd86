"""A synthetic world of coloured shapes for measuring visual blindness.

Scenes hold 1-3 coloured shapes, from large down to a few glance pixels, on textured,
cluttered backgrounds, with reference captions and ground-truth objects. Public API:

- :func:`generate_scene`, :class:`Scene`, :class:`WorldObject`, :class:`SceneConfig`,
  :data:`SPLITS`, :func:`size_range`, :func:`size_class_of`, :func:`render_objects`,
  :func:`place_object` (``scene``)
- :func:`scene_change`, :data:`CHANGES`, :func:`add_sensor_noise` (``changes``): the scene
  as a camera sees it change, or stay still
- :func:`reference_captions`, :func:`parse_objects`, :func:`tokenize`,
  :func:`vocabulary`, :data:`SHAPES`, :data:`COLOURS`, :data:`SIZE_CLASSES` (``captions``)
- :func:`write_split` and ``python -m sharpeye_ros.world`` (``dataset``); the training
  data readers (``sharpeye_ros.data.read_coco``) read its splits back
"""

from sharpeye_ros.world.captions import (
    COLOURS, SHAPES, SIZE_CLASSES, parse_objects, reference_captions, tokenize, vocabulary,
)
from sharpeye_ros.world.dataset import write_split
from sharpeye_ros.world.scene import (
    SPLITS, Scene, SceneConfig, WorldObject, generate_scene, place_object, render_objects, size_class_of,
    size_range,
)
from sharpeye_ros.world.changes import CHANGES, ChangedScene, add_sensor_noise, scene_change

__all__ = [
    "CHANGES", "COLOURS", "SHAPES", "SIZE_CLASSES", "SPLITS", "ChangedScene", "Scene", "SceneConfig",
    "WorldObject", "add_sensor_noise", "generate_scene", "parse_objects", "place_object",
    "reference_captions", "render_objects", "scene_change", "size_class_of", "size_range", "tokenize",
    "vocabulary", "write_split",
]
