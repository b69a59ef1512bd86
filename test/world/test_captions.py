"""Caption grammar: references, vocabulary, tokenizer and the object parser."""

import re

import pytest

from sharpeye_ros.world import parse_objects, reference_captions, tokenize, vocabulary
from sharpeye_ros.world.scene import WorldObject

_CLAUSE = (r"a (large|medium|small) (\w+) (\w+) "
           r"(at the top left|at the top right|at the top|on the left|in the middle|on the right|"
           r"at the bottom left|at the bottom right|at the bottom)")
_CANONICAL = re.compile(rf"^{_CLAUSE}((, {_CLAUSE})* and {_CLAUSE})?\.$")


def _objects(scene):
    return sorted((o.colour, o.shape) for o in scene.objects)


def test_every_reference_parses_back_to_the_scene_objects(world_scenes):
    for scenes in world_scenes.values():
        for scene in scenes:
            assert 3 <= len(scene.captions) <= 5
            for caption in scene.captions:
                assert sorted(parse_objects(caption)) == _objects(scene), caption


def test_canonical_caption_follows_the_grammar_largest_first(world_scenes):
    for scene in world_scenes["test"]:
        canonical = scene.captions[0]
        assert _CANONICAL.match(canonical), canonical
        sizes = [o.size for o in scene.objects]
        assert sizes == sorted(sizes, reverse=True)
        assert parse_objects(canonical) == [(o.colour, o.shape) for o in scene.objects]
        # Captions depend on the objects, not on the order they are given in.
        assert reference_captions(scene.objects[::-1]) == list(scene.captions)


def test_vocabulary_covers_every_reference(world_scenes):
    vocab = set(vocabulary())
    assert {",", "."} <= vocab and len(vocab) == len(vocabulary())
    used = set()
    for scenes in world_scenes.values():
        for scene in scenes:
            for caption in scene.captions:
                used.update(tokenize(caption))
    assert used <= vocab
    # Words only perturbed captions use (plurals, numbers) are listed too.
    assert {"two", "three", "circles", "crosses"} <= vocab


def test_tokenize_splits_punctuation():
    assert tokenize("A red circle, and a Star.") == ["a", "red", "circle", ",", "and", "a", "star", "."]


def test_parser_survives_model_mistakes():
    assert parse_objects("") == []
    assert parse_objects("a large red") == []  # truncated: a colour, no shape
    assert parse_objects("a big reddish red circle and a blurry star") == [("red", "circle"), (None, "star")]
    assert parse_objects("two small blue crosses at the top") == [("blue", "cross")] * 2
    assert parse_objects("a red , circle") == [(None, "circle")]  # the colour belonged elsewhere
    assert parse_objects("at the top left there is a yellow square and on the right a green ring") == \
        [("yellow", "square")]


def test_reference_captions_need_objects():
    obj = WorldObject("star", "red", "large", 80.0, (10.0, 10.0, 90.0, 86.0), "top left")
    assert reference_captions([obj])[0] == "a large red star at the top left."
    with pytest.raises(ValueError, match="at least one object"):
        reference_captions([])
