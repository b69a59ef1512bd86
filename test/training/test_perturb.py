"""Pseudo-initial captions: rule-based perturbation of reference captions."""

from collections import Counter

import numpy as np
import pytest

from sharpeye_ros.training.perturb import GENERIC_ENGLISH, SYNTHETIC, misname_small_shapes, perturb_caption
from sharpeye_ros.world import generate_scene, parse_objects, tokenize, vocabulary

COCO = "A man riding a horse next to a red car on a beach."


def _replay(caption, changes):
    """Apply the reported changes to the original; must give the perturbed caption."""
    for change in sorted(changes, key=lambda c: c.start, reverse=True):
        assert caption[change.start:change.end] == change.old
        caption = caption[:change.start] + change.new + caption[change.end:]
    return caption


def _synthetic_captions():
    return [c for i in range(12) for c in generate_scene("test", i).captions]


def test_zero_changes_returns_the_original():
    rng = np.random.default_rng(0)
    for caption in _synthetic_captions()[:5] + [COCO]:
        result = perturb_caption(caption, rng, 0)
        assert result.caption == caption and result.changes == ()


@pytest.mark.parametrize("num_changes", [1, 2, 3])
def test_synthetic_captions_change_exactly_the_reported_elements(num_changes):
    rng = np.random.default_rng(num_changes)
    vocab = set(vocabulary())
    for caption in _synthetic_captions():
        result = perturb_caption(caption, rng, num_changes)
        assert len(result.changes) == num_changes, caption
        assert all(c.old != c.new for c in result.changes)
        spans = sorted((c.start, c.end) for c in result.changes)
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])), "changes overlap"
        assert _replay(caption, result.changes) == result.caption
        assert set(tokenize(result.caption)) <= vocab, result.caption


def test_each_kind_changes_what_it_says():
    rng = np.random.default_rng(3)
    caption = "a large red circle at the top left and a small blue star on the right."
    seen = Counter()
    for _ in range(200):
        result = perturb_caption(caption, rng, 1)
        (change,) = result.changes
        seen[change.kind] += 1
        before, after = parse_objects(caption), parse_objects(result.caption)
        if change.kind == "entity":
            assert [s for _, s in before] != [s for _, s in after]
            assert [c for c, _ in before] == [c for c, _ in after]
        elif change.kind == "count":
            assert len(after) > len(before)  # "a" became "two" or "three"
        elif change.kind == "relation":
            assert after == before and change.old.split()[-1] in ("left", "right")
        else:
            assert change.kind == "attribute" and len(after) == len(before)
            assert after != before or change.old.split()[-1] in ("large", "small")
    assert set(seen) == {"entity", "attribute", "relation", "count"}


def test_coco_style_caption():
    rng = np.random.default_rng(0)
    for num_changes in (1, 2, 3):
        for _ in range(20):
            result = perturb_caption(COCO, rng, num_changes)
            assert len(result.changes) == num_changes
            assert _replay(COCO, result.changes) == result.caption != COCO
            assert result.caption[0].isupper()  # "A man" keeps its capital
    kinds = {c.kind for _ in range(100) for c in perturb_caption(COCO, rng, 3).changes}
    assert kinds == {"entity", "attribute", "relation", "action", "count"}


def test_counts_and_articles_agree():
    rng = np.random.default_rng(1)
    for _ in range(50):
        result = perturb_caption("Two dogs chase an apple.", rng, 2, GENERIC_ENGLISH)
        for change in result.changes:
            words = change.new.lower().split()
            if words[0] in ("a", "an"):
                assert (words[0] == "an") == (words[1][0] in "aeiou"), change
            if change.kind == "count" and words[0] == "a":
                assert words[-1] in ("dog", "apple"), change


def test_degrades_gracefully_without_perturbable_elements():
    rng = np.random.default_rng(0)
    result = perturb_caption("an abstract painting of something", rng, 3)
    assert result.caption == "an abstract painting of something" and result.changes == ()
    single = perturb_caption("a dog.", rng, 3)  # "dog" and the count "a dog" overlap
    assert len(single.changes) == 1


def test_same_seed_same_result_and_default_draws_zero_to_three():
    caption = _synthetic_captions()[0]
    a = perturb_caption(caption, np.random.default_rng(5))
    b = perturb_caption(caption, np.random.default_rng(5))
    assert a == b
    rng = np.random.default_rng(9)
    counts = Counter(len(perturb_caption(caption, rng).changes) for _ in range(200))
    assert set(counts) == {0, 1, 2, 3}


def test_vocabulary_choice_and_bad_count():
    rng = np.random.default_rng(0)
    # Swaps come from the vocabulary given: synthetic words only.
    result = perturb_caption("a large red circle in the middle.", rng, 3, SYNTHETIC)
    assert set(tokenize(result.caption)) <= set(vocabulary())
    with pytest.raises(ValueError, match="num_changes"):
        perturb_caption(COCO, rng, -1)


def test_misname_small_shapes_changes_only_the_shapes_of_small_objects():
    caption = "a large red star on the left, a small white diamond at the bottom and a tiny cyan triangle at the top."
    changed = misname_small_shapes(caption, np.random.default_rng(0), 1.0)
    before, after = parse_objects(caption), parse_objects(changed)
    assert [colour for colour, _ in before] == [colour for colour, _ in after]
    assert before[0] == after[0]  # the large star is kept
    assert all(b[1] != a[1] for b, a in zip(before[1:], after[1:]))  # both small shapes changed
    assert tokenize(changed).count("small") == 1 and tokenize(changed).count("tiny") == 1
    assert tokenize(changed)[-4:] == tokenize(caption)[-4:]  # positions and the rest are kept
    assert misname_small_shapes(caption, np.random.default_rng(0), 0.0) == caption
    # about `probability` of the small shapes change, over many draws
    rng = np.random.default_rng(1)
    share = np.mean([misname_small_shapes(caption, rng, 0.5) != caption for _ in range(400)])
    assert 0.65 < share < 0.85  # at least one of two small shapes changes: 1 - 0.5 ** 2


def test_pseudo_initial_is_the_misnaming_then_zero_to_max_changes():
    from sharpeye_ros.training.perturb import pseudo_initial

    caption = "a small red circle at the top left and a small blue star on the right."
    for seed in range(20):
        a, b = np.random.default_rng(seed), np.random.default_rng(seed)
        blind = misname_small_shapes(caption, b, 0.8)
        want = perturb_caption(blind, b, int(b.integers(0, 6))).caption
        assert pseudo_initial(caption, a, 5, 0.8) == want
