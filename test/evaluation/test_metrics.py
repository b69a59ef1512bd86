"""Metrics on hand-made examples with known answers."""

import math

import pytest

from sharpeye_ros.evaluation.metrics import (
    box_iou, caption_scores, grounding_scores, markdown_table, match_objects, object_scores,
)
from sharpeye_ros.world import WorldObject


def _obj(colour, shape, size_class, box):
    size = max(box[2] - box[0], box[3] - box[1])
    return WorldObject(shape, colour, size_class, float(size), tuple(map(float, box)), "middle")


BIG = _obj("red", "circle", "large", (100, 100, 180, 180))
MID = _obj("green", "square", "medium", (300, 50, 330, 80))
TINY = _obj("blue", "star", "small", (500, 400, 510, 410))
SCENE = {0: (BIG, MID, TINY)}


def test_perfect_caption_scores_100_everywhere():
    caption = "a large red circle, a medium green square and a small blue star."
    scores = object_scores({0: caption}, SCENE)
    for group in ("large", "medium", "small", "all"):
        assert scores[f"precision_{group}"] == scores[f"recall_{group}"] == scores[f"f1_{group}"] == 100
    assert scores["objects_all"] == 3 and scores["objects_small"] == 1


def test_missing_small_object_lowers_small_recall_only():
    scores = object_scores({0: "a large red circle and a medium green square."}, SCENE)
    assert scores["recall_small"] == 0 and scores["f1_small"] == 0
    assert math.isnan(scores["precision_small"])  # nothing small was named
    assert scores["recall_all"] == pytest.approx(200 / 3) and scores["precision_all"] == 100
    assert scores["f1_large"] == 100


def test_wrong_shape_is_a_false_positive_of_that_objects_class():
    # The small blue star named a blue circle: the colour matches the star, so it
    # counts against small precision (and small recall), not against large.
    scores = object_scores({0: "a large red circle, a medium green square and a small blue circle."},
                           SCENE)
    assert scores["precision_small"] == 0 and scores["recall_small"] == 0
    assert scores["precision_large"] == 100
    assert scores["precision_all"] == pytest.approx(200 / 3)
    assert scores["f1_all"] == pytest.approx(200 / 3)  # 2 * 2 / (3 + 3)


def test_hallucination_counts_in_all_only():
    scores = object_scores({0: "a large red circle, a medium green square, a small blue star "
                               "and a purple triangle."}, SCENE)
    assert scores["precision_all"] == 75 and scores["recall_all"] == 100
    for group in ("large", "medium", "small"):
        assert scores[f"precision_{group}"] == 100


def test_duplicate_naming_matches_once_and_scores_sum_over_images():
    assert match_objects([("red", "circle"), ("red", "circle")], [BIG]) == [0, None]
    captions = {0: "a large red circle.", 1: "a small blue star."}
    objects = {0: (BIG,), 1: (TINY, MID)}
    scores = object_scores(captions, objects)
    assert scores["recall_all"] == pytest.approx(200 / 3) and scores["precision_all"] == 100
    assert math.isnan(object_scores({0: "a red circle."}, {0: (BIG,)})["recall_small"])


def test_ids_must_agree():
    with pytest.raises(ValueError, match="ids differ"):
        object_scores({1: "a red circle."}, SCENE)


def test_box_iou_known_values():
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(1 / 3)
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1
    assert box_iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0


def test_pointing_hit_miss_and_iou():
    caption = "a large red circle, a medium green square and a small green star."  # star misnamed
    regions = {0: [
        ((90, 90, 170, 170), "a large red circle"),  # contains the centre (140, 140)
        ((0, 0, 20, 20), "a medium green square"),  # misses
        ((495, 395, 515, 415), "a small green star"),  # the star was not named correctly
    ]}
    scores = grounding_scores({0: caption}, regions, SCENE)
    assert scores["named_all"] == 2 and scores["named_small"] == 0
    assert scores["pointing_large"] == 100 and scores["pointing_medium"] == 0
    assert scores["pointing_all"] == 50
    expected_iou = box_iou((90, 90, 170, 170), BIG.box)
    assert scores["iou_large"] == pytest.approx(100 * expected_iou)
    assert scores["iou_all"] == pytest.approx(100 * expected_iou / 2)
    assert math.isnan(scores["pointing_small"])


def test_object_without_region_is_a_miss():
    scores = grounding_scores({0: "a large red circle."}, {0: []}, {0: (BIG,)})
    assert scores["pointing_all"] == 0 and scores["iou_all"] == 0


def test_bleu_and_cider_prefer_the_right_caption():
    refs = {
        1: ["a large red circle at the top left.", "there is a large red circle at the top left."],
        2: ["a small blue star on the right.", "there is a small blue star on the right."],
        3: ["a medium green cross in the middle.", "in the middle there is a medium green cross."],
    }
    right = {k: v[0] for k, v in refs.items()}
    wrong = {1: "a small blue star on the right.", 2: "a medium green cross in the middle.",
             3: ""}  # an empty caption must not break the tokenizer
    good, bad = caption_scores(refs, right), caption_scores(refs, wrong)
    assert good["bleu4"] > 90 and good["cider"] > bad["cider"] and good["bleu4"] > bad["bleu4"]
    assert caption_scores(refs, {k: [v] for k, v in right.items()}) == good
    # PTB tokenization: punctuation and case do not matter.
    shouty = {k: v.upper().replace(".", " !") for k, v in right.items()}
    assert caption_scores(refs, shouty) == pytest.approx(good)
    with pytest.raises(ValueError, match="ids differ"):
        caption_scores(refs, {1: "a red circle."})


def test_markdown_table():
    table = markdown_table({"glance": {"cider": 80.0, "f1_small": math.nan},
                            "deeplens": {"cider": 95.25, "f1_small": 40.0}})
    assert table.splitlines() == [
        "| | cider | f1_small |",
        "| --- | ---: | ---: |",
        "| glance | 80.0 | n/a |",
        "| deeplens | 95.2 | 40.0 |",
    ]
