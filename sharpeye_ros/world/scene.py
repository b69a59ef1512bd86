"""Seeded scenes of coloured shapes on cluttered, low-saturation backgrounds.

A scene is fully determined by ``(config.seed, split, index)``: all randomness comes from
one ``numpy.random.Generator`` seeded with those three numbers.

Object size is the longer side of its tight box, relative to the frame's longer side
(the side of the padded square a glance sees). Size classes, with their pixel ranges at
640x480 and at a 128 px glance of the padded 640x640 square:

=========  ==========================  ==============  ===========
class      fraction of longer side     640x480 frame   128 px glance
=========  ==========================  ==============  ===========
large      [3/32, 3/16)                [60, 120) px    [12, 24) px
medium     [1/32, 3/32)                [20, 60) px     [4, 12) px
small      [1/80, 1/32)                [8, 20) px      [1.6, 4) px
=========  ==========================  ==============  ===========

"small" objects are too small to name reliably at the glance: that is visual blindness.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Optional, Sequence

import cv2
import numpy as np

from sharpeye_ros.world.captions import (
    COLOURS, POSITION_PHRASES, POSITIONS, SHAPES, SIZE_CLASSES, canonical_order, reference_captions,
)

SPLITS = ("train", "val", "test", "small")

SIZE_RANGES = {  # fractions of the frame's longer side, [low, high)
    "large": (3 / 32, 3 / 16),
    "medium": (1 / 32, 3 / 32),
    "small": (1 / 80, 1 / 32),
}

# Saturated, well separated hues (about 60 degrees apart) and a white far brighter than
# any background or clutter, so a colour is nameable even from a few blended pixels.
PALETTE = {
    "red": (225, 30, 30),
    "yellow": (235, 215, 25),
    "green": (35, 190, 45),
    "cyan": (20, 205, 215),
    "blue": (35, 75, 240),
    "purple": (165, 55, 215),
    "white": (245, 245, 245),
}
_COLOUR_JITTER = 12  # per channel, so objects are not one exact RGB value
_CLUTTER_MAX_VALUE = 180  # clutter and background stay darker than white objects
_CLUTTER_MAX_SATURATION = 0.15


def _normalise(outline: np.ndarray) -> np.ndarray:
    """Centre the outline's box on 0 and scale its longer side to 1."""
    lo, hi = outline.min(axis=0), outline.max(axis=0)
    return (outline - (lo + hi) / 2) / (hi - lo).max()


def _star(points: int = 5, inner: float = 0.42) -> np.ndarray:
    angles = -math.pi / 2 + np.arange(2 * points) * math.pi / points
    radii = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


_ARM = 0.25  # half width of the cross's arms
# Outlines with unit longer side, centred on their box; the circle is drawn natively.
_OUTLINES = {
    "square": _normalise(np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], float)),
    "diamond": _normalise(np.array([[0, -1], [1, 0], [0, 1], [-1, 0]], float)),
    "triangle": _normalise(np.array([[0, -math.sqrt(3) / 2], [1, math.sqrt(3) / 2],
                                     [-1, math.sqrt(3) / 2]])),
    "star": _normalise(_star()),
    "cross": _normalise(np.array([
        [-_ARM, -1], [_ARM, -1], [_ARM, -_ARM], [1, -_ARM], [1, _ARM], [_ARM, _ARM],
        [_ARM, 1], [-_ARM, 1], [-_ARM, _ARM], [-1, _ARM], [-1, -_ARM], [-_ARM, -_ARM]], float)),
}
_EXTENTS = {name: tuple(o.max(axis=0) - o.min(axis=0)) for name, o in _OUTLINES.items()}
_EXTENTS["circle"] = (1.0, 1.0)
assert set(_EXTENTS) == set(SHAPES) and set(PALETTE) == set(COLOURS)


@dataclass(frozen=True)
class WorldObject:
    """One named object of a scene, in source-image pixels (pixel centres at integers)."""

    shape: str
    colour: str
    size_class: str
    size: float  # longer side of the box
    box: tuple[float, float, float, float]  # x_min, y_min, x_max, y_max
    position: str  # 3x3 grid word of the centre, e.g. "top left" or "middle"

    @property
    def centre(self) -> tuple[float, float]:
        """Centre of the box (inside every shape, the star included)."""
        return ((self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready metadata, centre included."""
        return {"shape": self.shape, "colour": self.colour, "size_class": self.size_class,
                "size": self.size, "box": [float(v) for v in self.box],
                "centre": [float(v) for v in self.centre],
                "position": self.position}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "WorldObject":
        """Inverse of :meth:`to_dict`; raises ValueError on missing or unknown values."""
        missing = {"shape", "colour", "size_class", "size", "box", "position"} - set(data)
        if missing:
            raise ValueError(f"object metadata lacks {sorted(missing)}: {dict(data)}")
        if data["shape"] not in SHAPES or data["colour"] not in COLOURS \
                or data["size_class"] not in SIZE_CLASSES or len(data["box"]) != 4 \
                or data["position"] not in POSITION_PHRASES:
            raise ValueError(f"object metadata has an unknown shape, colour, size class or "
                             f"position, or a box without 4 numbers: {dict(data)}")
        box = tuple(float(v) for v in data["box"])
        return cls(data["shape"], data["colour"], data["size_class"], float(data["size"]),
                   box, data["position"])  # type: ignore[arg-type]


@dataclass(frozen=True)
class SceneConfig:
    """How scenes are drawn. ``seed`` selects a different world of the same kind."""

    width: int = 640
    height: int = 480
    min_objects: int = 1
    max_objects: int = 3
    size_weights: tuple[float, float, float] = (1.0, 1.0, 1.0)  # large, medium, small
    min_small: int = 0  # objects per scene forced to be small (the "small" split uses 1)
    distractors: tuple[int, int] = (4, 20)  # clutter marks per scene, inclusive range
    seed: int = 0

    def __post_init__(self) -> None:
        longer, shorter = max(self.width, self.height), min(self.width, self.height)
        if shorter < 64:
            raise ValueError(f"SceneConfig: width and height must be >= 64, got {self.width}x{self.height}")
        if SIZE_RANGES["large"][1] * longer + 2 * _margin(longer) > shorter:
            raise ValueError(f"SceneConfig: {self.width}x{self.height} is too elongated for "
                             f"large objects; keep the aspect ratio below about 4:1")
        if not 1 <= self.min_objects <= self.max_objects <= 6:
            raise ValueError(f"SceneConfig: need 1 <= min_objects <= max_objects <= 6, "
                             f"got {self.min_objects}, {self.max_objects}")
        if not 0 <= self.min_small <= self.min_objects:
            raise ValueError(f"SceneConfig: min_small must be in [0, min_objects], got {self.min_small}")
        if len(self.size_weights) != 3 or min(self.size_weights) < 0 or sum(self.size_weights) <= 0:
            raise ValueError(f"SceneConfig: size_weights needs 3 non-negative weights, "
                             f"got {self.size_weights}")
        if not 0 <= self.distractors[0] <= self.distractors[1]:
            raise ValueError(f"SceneConfig: distractors must be (low, high), 0 <= low <= high, "
                             f"got {self.distractors}")


@dataclass(frozen=True)
class Scene:
    """A rendered scene: RGB uint8 image, objects in caption order, reference captions."""

    split: str
    index: int
    image: np.ndarray = field(repr=False)  # (height, width, 3) uint8 RGB
    objects: tuple[WorldObject, ...]
    captions: tuple[str, ...]  # captions[0] is the canonical caption


def _margin(longer: int) -> float:
    return 0.01 * longer + 2


def size_range(size_class: str, width: int, height: int) -> tuple[float, float]:
    """[low, high) object size in pixels of ``size_class`` in a width x height frame."""
    low, high = SIZE_RANGES[size_class]
    longer = max(width, height)
    return low * longer, high * longer


def size_class_of(size: float, width: int, height: int) -> Optional[str]:
    """The size class of an object ``size`` pixels long, or None outside all ranges."""
    for name in SIZE_CLASSES:
        low, high = size_range(name, width, height)
        if low <= size < high:
            return name
    return None


def grid_position(x: float, y: float, width: int, height: int) -> str:
    """3x3 grid word ("top left" ... "bottom right") of a point."""
    column = min(2, max(0, int(3 * x / width)))
    row = min(2, max(0, int(3 * y / height)))
    return POSITIONS[row][column]


def split_config(split: str, config: Optional[SceneConfig] = None) -> SceneConfig:
    """The configuration scenes of ``split`` use: "small" forces one small object."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}")
    config = config or SceneConfig()
    return replace(config, min_small=max(1, config.min_small)) if split == "small" else config


def generate_scene(split: str, index: int, config: Optional[SceneConfig] = None) -> Scene:
    """Scene ``index`` of ``split``, identical on every call with the same config."""
    config = split_config(split, config)
    if index < 0:
        raise ValueError(f"scene index must be >= 0, got {index}")
    rng = np.random.default_rng([config.seed, SPLITS.index(split), index])
    objects = _layout(rng, config)
    image = _render(rng, config, objects)
    ordered = tuple(canonical_order(objects))
    return Scene(split, index, image, ordered, tuple(reference_captions(ordered)))


def render_objects(split: str, index: int, objects: Sequence[WorldObject],
                   config: Optional[SceneConfig] = None, seed: int = 0) -> np.ndarray:
    """Scene ``index`` of ``split`` drawn with ``objects`` in place of its own: the same
    background, clutter, blur and sensor noise, so that only the objects differ. Its own
    objects (known by shape and colour) keep their colours; any other gets its palette
    colour jittered by a generator seeded with ``seed``. With the scene's own objects this
    is the scene's image, pixel for pixel."""
    config = split_config(split, config)
    if index < 0:
        raise ValueError(f"scene index must be >= 0, got {index}")
    rng = np.random.default_rng([config.seed, SPLITS.index(split), index])
    own = _layout(rng, config)  # the same random stream as generate_scene from here on
    base = _base_image(rng, config)
    colours = {(obj.shape, obj.colour): _object_colour(rng, obj) for obj in own}
    noise = _sensor_noise(rng, base.shape)
    extra = np.random.default_rng([config.seed, SPLITS.index(split), index, 1, seed])
    drawn = [colours.get((obj.shape, obj.colour)) or _object_colour(extra, obj) for obj in objects]
    return _finish(base, objects, drawn, noise)


def place_object(rng: np.random.Generator, config: SceneConfig, colour: str, shape: str,
                 size_class: str, placed: Sequence[WorldObject] = (),
                 size: Optional[float] = None) -> Optional[WorldObject]:
    """An object of ``size_class`` (``size`` pixels long, default a random size in its range)
    at a random spot of a ``config`` frame that keeps the scene's rules: inside the margins,
    apart from ``placed``, centre off the grid lines. None when no spot was found."""
    if colour not in PALETTE or shape not in _EXTENTS or size_class not in SIZE_RANGES:
        raise ValueError(f"unknown colour, shape or size class: {colour!r}, {shape!r}, {size_class!r}")
    if size is None:
        size = _draw_size(rng, size_class, config.width, config.height)
    return _place(rng, config, colour, shape, size_class, size, placed)


def _layout(rng: np.random.Generator, config: SceneConfig) -> list[WorldObject]:
    width, height = config.width, config.height
    longer = max(width, height)
    count = int(rng.integers(config.min_objects, config.max_objects + 1))
    weights = np.array(config.size_weights, float) / sum(config.size_weights)
    classes = ["small"] * config.min_small + [
        SIZE_CLASSES[i] for i in rng.choice(3, count - config.min_small, p=weights)]
    # Distinct (colour, shape) pairs, so every named object has one meaning.
    pairs = rng.choice(len(COLOURS) * len(SHAPES), count, replace=False)
    specs = []
    for size_class, pair in zip(classes, pairs):
        specs.append((COLOURS[pair // len(SHAPES)], SHAPES[pair % len(SHAPES)], size_class,
                      _draw_size(rng, size_class, width, height)))
    specs.sort(key=lambda s: -s[3])  # place large objects first: they are hardest to fit
    for _ in range(100):
        placed: list[WorldObject] = []
        for colour, shape, size_class, size in specs:
            obj = _place(rng, config, colour, shape, size_class, size, placed)
            if obj is None:
                break  # this object found no room: lay the whole scene out again
            placed.append(obj)
        if len(placed) == len(specs):
            return placed
    raise RuntimeError(f"could not place {len(specs)} objects in a {width}x{height} frame")


def _draw_size(rng: np.random.Generator, size_class: str, width: int, height: int) -> float:
    """A log-uniform size within ``size_class``'s range."""
    low, high = size_range(size_class, width, height)
    size = float(np.exp(rng.uniform(math.log(low), math.log(high))))
    return min(max(size, low), high * 0.9999)  # exp(log(x)) may round past a bound


def _place(rng: np.random.Generator, config: SceneConfig, colour: str, shape: str, size_class: str,
           size: float, placed: Sequence[WorldObject]) -> Optional[WorldObject]:
    """The object at a random free spot: inside the margins, apart from ``placed``, its centre
    off the 3x3 grid lines (so position words are clear); None after 200 tries."""
    width, height = config.width, config.height
    longer = max(width, height)
    margin, gap = _margin(longer), 0.02 * longer + 2
    near_line = 0.02
    half_w, half_h = (e * size / 2 for e in _EXTENTS[shape])
    for _ in range(200):
        cx = rng.uniform(margin + half_w, width - margin - half_w)
        cy = rng.uniform(margin + half_h, height - margin - half_h)
        if min(abs(3 * cx / width - k) for k in (1, 2)) < 3 * near_line or \
                min(abs(3 * cy / height - k) for k in (1, 2)) < 3 * near_line:
            continue
        box = (float(cx - half_w), float(cy - half_h), float(cx + half_w), float(cy + half_h))
        if all(box[0] > o.box[2] + gap or box[2] < o.box[0] - gap or
               box[1] > o.box[3] + gap or box[3] < o.box[1] - gap for o in placed):
            return WorldObject(shape, colour, size_class, size, box, grid_position(cx, cy, width, height))
    return None


def _render(rng: np.random.Generator, config: SceneConfig, objects: Sequence[WorldObject]) -> np.ndarray:
    base = _base_image(rng, config)
    colours = [_object_colour(rng, obj) for obj in objects]
    return _finish(base, objects, colours, _sensor_noise(rng, base.shape))


def _base_image(rng: np.random.Generator, config: SceneConfig) -> np.ndarray:
    """Background and clutter, before any object."""
    image = np.clip(_background(rng, config.height, config.width), 0, 255).astype(np.uint8)
    _draw_clutter(rng, image, int(rng.integers(config.distractors[0], config.distractors[1] + 1)))
    return image


def _object_colour(rng: np.random.Generator, obj: WorldObject) -> tuple[int, int, int]:
    """The object's palette colour, jittered per channel."""
    rgb = np.array(PALETTE[obj.colour]) + rng.integers(-_COLOUR_JITTER, _COLOUR_JITTER + 1, 3)
    return tuple(int(c) for c in np.clip(rgb, 0, 255))  # type: ignore[return-value]


def _sensor_noise(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Grey sensor noise of a random strength, (height, width, 1) float32."""
    return float(rng.uniform(2, 5)) * rng.standard_normal((*shape[:2], 1), dtype=np.float32)


def _finish(base: np.ndarray, objects: Sequence[WorldObject], colours: Sequence[tuple[int, int, int]],
            noise: np.ndarray) -> np.ndarray:
    """The objects drawn on a copy of ``base``, then a touch of lens blur and sensor noise, as a
    camera would add."""
    image = base.copy()
    for obj, rgb in zip(objects, colours):
        _draw_object(image, obj, rgb)
    out = cv2.GaussianBlur(image, (0, 0), 0.5).astype(np.float32) + noise
    return np.clip(out, 0, 255).astype(np.uint8)


_SHIFT = 4  # cv2 fixed-point bits: sub-pixel accurate edges for few-pixel objects


def _draw_object(image: np.ndarray, obj: WorldObject, rgb: tuple[int, int, int]) -> None:
    scale = 1 << _SHIFT
    cx, cy = obj.centre
    if obj.shape == "circle":
        cv2.circle(image, (round(cx * scale), round(cy * scale)), round(obj.size / 2 * scale),
                   rgb, -1, cv2.LINE_AA, _SHIFT)
    else:
        points = _OUTLINES[obj.shape] * obj.size + (cx, cy)
        cv2.fillPoly(image, [np.round(points * scale).astype(np.int32)], rgb, cv2.LINE_AA, _SHIFT)


def _low_saturation(rng: np.random.Generator, low: float, high: float, saturation: float) -> np.ndarray:
    """A greyish RGB colour with value in [low, high] and saturation up to ``saturation``."""
    r, g, b = colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(0, saturation), 1.0)
    return np.array([r, g, b]) * rng.uniform(low, high)


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Float image: tinted gradient plus stripes and/or soft blobs."""
    ys = np.arange(height, dtype=np.float32)[:, None]
    xs = np.arange(width, dtype=np.float32)[None, :]
    angle = rng.uniform(0, 2 * math.pi)
    ramp = xs * math.cos(angle) + ys * math.sin(angle)
    ramp = (ramp - ramp.min()) / max(float(ramp.max() - ramp.min()), 1e-6)  # (h, w)
    start, end = (_low_saturation(rng, 50, 160, 0.12).astype(np.float32) for _ in range(2))
    image = start + ramp[..., None] * (end - start)
    texture = int(rng.integers(3))  # 0 stripes, 1 blobs, 2 both
    if texture in (0, 2):
        amplitude, period = rng.uniform(4, 14), rng.uniform(10, 80)
        theta, phase = rng.uniform(0, math.pi), rng.uniform(0, 2 * math.pi)
        stripes = np.sin(2 * math.pi * (xs * math.cos(theta) + ys * math.sin(theta)) / period + phase)
        image += (amplitude * stripes)[..., None]
    if texture in (1, 2):
        blobs = np.zeros((height, width), np.float32)
        longer = max(width, height)
        for _ in range(int(rng.integers(3, 9))):
            centre = (int(rng.integers(width)), int(rng.integers(height)))
            axes = tuple(int(a) for a in rng.uniform(0.03, 0.25, 2) * longer)
            value = float(rng.choice([-1, 1]) * rng.uniform(10, 35))
            cv2.ellipse(blobs, centre, axes, float(rng.uniform(0, 180)), 0, 360, value, -1)
        image += cv2.GaussianBlur(blobs, (0, 0), float(rng.uniform(0.01, 0.04) * longer))[..., None]
    return image


def _draw_clutter(rng: np.random.Generator, image: np.ndarray, count: int) -> None:
    """Grey lines, open arcs, scribbles and dots: marks that never form a named object."""
    height, width = image.shape[:2]
    longer = max(width, height)
    for _ in range(count):
        colour = tuple(int(c) for c in _low_saturation(rng, 20, _CLUTTER_MAX_VALUE, _CLUTTER_MAX_SATURATION))
        thickness = int(rng.integers(1, 3))
        x, y = int(rng.integers(width)), int(rng.integers(height))
        kind = int(rng.integers(4))
        if kind == 0:
            length, angle = rng.uniform(0.015, 0.1) * longer, rng.uniform(0, 2 * math.pi)
            end = (int(x + length * math.cos(angle)), int(y + length * math.sin(angle)))
            cv2.line(image, (x, y), end, colour, thickness, cv2.LINE_AA)
        elif kind == 1:  # open arcs only: a closed one would be a ring
            axes = tuple(int(a) for a in rng.uniform(0.006, 0.04, 2) * longer + 1)
            start = float(rng.uniform(0, 360))
            cv2.ellipse(image, (x, y), axes, float(rng.uniform(0, 180)), start,
                        start + float(rng.uniform(60, 220)), colour, thickness, cv2.LINE_AA)
        elif kind == 2:
            points = np.array([x, y]) + rng.normal(0, 0.02 * longer, (int(rng.integers(3, 6)), 2))
            cv2.polylines(image, [points.astype(np.int32)], False, colour, thickness, cv2.LINE_AA)
        else:
            cv2.circle(image, (x, y), int(rng.integers(1, 3)), colour, -1, cv2.LINE_AA)
