"""Caption grammar of the synthetic world: reference captions, vocabulary and parser.

Canonical caption (the first reference, the training target): every object as
``a <size> <colour> <shape> <position>``, largest object first (ties: leftmost first),
joined as ``X.`` / ``X and Y.`` / ``X, Y and Z.``, for example::

    a large red circle at the top left, a medium blue star in the middle and a small green cross on the right.

The other references paraphrase word order and synonyms with the same small vocabulary
(see :func:`reference_captions`). Captions are lowercase words plus the punctuation
tokens ``,`` and ``.``; :func:`tokenize` splits them and :func:`vocabulary` lists every
token any caption (or a perturbed caption, see ``sharpeye_ros.training.perturb``) can hold.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Optional, Sequence

if TYPE_CHECKING:  # only for type hints: scene.py imports this module
    from sharpeye_ros.world.scene import WorldObject

SHAPES = ("circle", "square", "triangle", "star", "cross", "diamond")
SHAPE_PLURALS = {
    "circle": "circles", "square": "squares", "triangle": "triangles",
    "star": "stars", "cross": "crosses", "diamond": "diamonds",
}
# Hues about 60 degrees apart plus white, so they stay apart after heavy downscaling.
COLOURS = ("red", "yellow", "green", "cyan", "blue", "purple", "white")
SIZE_CLASSES = ("large", "medium", "small")
SIZE_SYNONYMS = {"big": "large", "tiny": "small"}
# Coarse 3x3 grid of object centres, indexed [row][column].
POSITIONS = (
    ("top left", "top", "top right"),
    ("left", "middle", "right"),
    ("bottom left", "bottom", "bottom right"),
)
POSITION_PHRASES = {
    "top left": "at the top left", "top": "at the top", "top right": "at the top right",
    "left": "on the left", "middle": "in the middle", "right": "on the right",
    "bottom left": "at the bottom left", "bottom": "at the bottom",
    "bottom right": "at the bottom right",
}
# Count words a (perturbed) caption may use; canonical captions only use "a".
NUMBERS = {"a": 1, "two": 2, "three": 3}

_TOKEN = re.compile(r"[a-z]+|\d+|[^\sa-z\d]")


def tokenize(caption: str) -> list[str]:
    """Split a caption into lowercase word and punctuation tokens."""
    return _TOKEN.findall(caption.lower())


def token_spans(caption: str) -> list[tuple[str, int, int]]:
    """Tokens of ``caption`` (as :func:`tokenize`) with their character start/end."""
    return [(m.group(), m.start(), m.end()) for m in _TOKEN.finditer(caption.lower())]


def _join(clauses: Sequence[str]) -> str:
    if len(clauses) == 1:
        return clauses[0]
    return ", ".join(clauses[:-1]) + " and " + clauses[-1]


def _sentence(text: str) -> str:
    return text + "."


def canonical_order(objects: Sequence["WorldObject"]) -> list["WorldObject"]:
    """Objects in caption order: largest first, ties broken left to right."""
    return sorted(objects, key=lambda o: (-o.size, o.centre[0], o.centre[1]))


def reference_captions(objects: Sequence["WorldObject"]) -> list[str]:
    """Five reference captions for a scene's objects; the first one is canonical.

    1. canonical: ``a large red circle at the top left and a small blue star on the right.``
    2. ``there is`` + canonical
    3. position first: ``at the top left there is a large red circle and on the right
       there is a small blue star.``
    4. left to right, with ``big``/``tiny`` for large/small
    5. without positions: ``a large red circle and a small blue star.``
    """
    if not objects:
        raise ValueError("reference_captions: a scene needs at least one object")
    ordered = canonical_order(objects)

    def noun(o: "WorldObject", size_word: Optional[str] = None) -> str:
        return f"a {size_word or o.size_class} {o.colour} {o.shape}"

    def where(o: "WorldObject") -> str:
        return POSITION_PHRASES[o.position]

    synonym = {v: k for k, v in SIZE_SYNONYMS.items()}
    left_to_right = sorted(ordered, key=lambda o: (o.centre[0], o.centre[1]))
    canonical = _join([f"{noun(o)} {where(o)}" for o in ordered])
    return [
        _sentence(canonical),
        _sentence("there is " + canonical),
        _sentence(_join([f"{where(o)} there is {noun(o)}" for o in ordered])),
        _sentence(_join([f"{noun(o, synonym.get(o.size_class))} {where(o)}" for o in left_to_right])),
        _sentence(_join([noun(o) for o in ordered])),
    ]


def vocabulary() -> list[str]:
    """Every token a synthetic caption (reference or perturbed) can contain, sorted."""
    words = {",", ".", "and", "there", "is", "the"}
    words.update(SHAPES, SHAPE_PLURALS.values(), COLOURS, SIZE_CLASSES, SIZE_SYNONYMS, NUMBERS)
    for phrase in POSITION_PHRASES.values():
        words.update(phrase.split())
    return sorted(words)


_PLURAL_TO_SHAPE = {plural: shape for shape, plural in SHAPE_PLURALS.items()}
# Tokens that close a noun phrase: a colour seen before them belongs to no shape.
_PHRASE_BREAKS = {",", ".", "and", "there", "is", "at", "on", "in"}


def parse_objects(caption: str) -> list[tuple[Optional[str], str]]:
    """The (colour, shape) objects a caption names, in order of mention.

    A shape word names one object (``two``/``three`` before a plural names several); its
    colour is the last colour word since the previous noun phrase ended, or None when the
    caption gives none (``a large circle``). Unknown words are ignored and a colour
    with no shape (a truncated caption) names nothing, so model mistakes parse safely.
    """
    found: list[tuple[Optional[str], str]] = []
    colour: Optional[str] = None
    count = 1
    for token in tokenize(caption):
        if token in COLOURS:
            colour = token
        elif token in NUMBERS:
            count = NUMBERS[token]
        elif token in SHAPE_PLURALS or token in _PLURAL_TO_SHAPE:
            shape = _PLURAL_TO_SHAPE.get(token, token)
            found.extend([(colour, shape)] * count)
            colour, count = None, 1
        elif token in _PHRASE_BREAKS:
            colour, count = None, 1
    return found
