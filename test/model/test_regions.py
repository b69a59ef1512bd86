"""Attended regions on hand-made heat maps: phrases, peaks, boxes in source pixels."""

from __future__ import annotations

import numpy as np
import pytest

from sharpeye_ros.model.config import FUNCTION_WORDS
from sharpeye_ros.model.preprocess import ImageTransform
from sharpeye_ros.model.regions import (
    box_iou,
    caption_phrases,
    find_regions,
    heat_boxes,
    phrase_heatmaps,
    valid_cells,
)


def test_phrases_are_runs_of_content_words():
    caption = "a large red circle at the top left, a small blue star and two green squares."
    phrases = caption_phrases(caption, FUNCTION_WORDS)
    assert [p.text for p in phrases] == ["large red circle", "small blue star", "green squares"]
    assert all(caption[p.start : p.end] == p.text for p in phrases)
    # Punctuation splits a run even without a function word.
    assert [p.text for p in caption_phrases("red circle, blue star", FUNCTION_WORDS)] == [
        "red circle",
        "blue star",
    ]
    assert caption_phrases("a the and", FUNCTION_WORDS) == []


def test_phrase_heatmap_averages_the_phrase_tokens():
    caption = "a red circle"
    spans = [(0, 1), (2, 5), (6, 12)]  # a | red | circle
    maps = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]])
    (heat,) = phrase_heatmaps(maps, spans, caption_phrases(caption, FUNCTION_WORDS))
    np.testing.assert_allclose(heat, [0, 0.5, 0.5])


def test_heat_boxes_find_connected_hot_areas_hottest_first():
    heat = np.zeros((6, 6))
    heat[1:3, 1:4] = 1.0  # a 2x3 blob
    heat[1, 2] = 2.0  # its peak
    heat[4:6, 4:6] = 1.5  # a second blob
    heat[0, 5] = 0.2  # below threshold: not part of anything
    valid = np.ones((6, 6), dtype=bool)
    boxes = heat_boxes(heat, valid, threshold=0.4, max_boxes=3)
    assert [b for b, _ in boxes] == [(1, 1, 3, 4), (4, 4, 6, 6)]
    total = heat.sum()
    assert boxes[0][1] == pytest.approx(7.0 / total) and boxes[1][1] == pytest.approx(6.0 / total)
    # A high threshold keeps the peak cell only, and drops the weaker second blob.
    assert heat_boxes(heat, valid, threshold=0.9, max_boxes=3) == [((1, 2, 2, 3), pytest.approx(2.0 / total))]
    assert heat_boxes(np.zeros((3, 3)), np.ones((3, 3), bool), 0.5, 2) == []


def test_padding_cells_are_ignored():
    t = ImageTransform.for_image(200, 100, 64)  # a wide image: rows 0-15 and 48-63 are padding
    valid = valid_cells(t, 4)
    assert valid.tolist() == [[False] * 4, [True] * 4, [True] * 4, [False] * 4]
    heat = np.zeros((4, 4))
    heat[0, 0] = 5.0  # the hottest cell is padding
    heat[2, 3] = 1.0
    assert heat_boxes(heat, valid, 0.5, 2) == [((2, 3, 3, 4), 1.0)]


def test_find_regions_maps_cells_to_source_pixels():
    # 640x480 source, 64 px model input, 4x4 grid of 16 px cells; pad_y = 80 source px.
    t = ImageTransform.for_image(640, 480, 64)
    caption = "a red circle and a blue star"
    spans = [(0, 1), (2, 5), (6, 12), (13, 16), (17, 18), (19, 23), (24, 28)]
    maps = np.full((7, 16), 0.01)
    maps[1:3, 1 * 4 + 2] = 1.0  # red circle -> cell row 1, col 2
    maps[5:7, 2 * 4 + 0] = 1.0  # blue star -> cell row 2, col 0
    maps[6, 2 * 4 + 1] = 1.0  # star also the cell to the right
    regions = find_regions(
        maps, spans, caption, t, num_regions=5, threshold=0.5, function_words=FUNCTION_WORDS
    )
    assert [r.phrase for r in regions] == ["blue star", "red circle"] or [r.phrase for r in regions] == [
        "red circle",
        "blue star",
    ]
    by_phrase = {r.phrase: r for r in regions}
    red = by_phrase["red circle"]
    # cell (1, 2) = model px x 32..48, y 16..32 -> source x 320..480, y 160-80=80..240
    assert (red.x_min, red.y_min, red.x_max, red.y_max) == pytest.approx((320, 80, 480, 240))
    star = by_phrase["blue star"]  # mean map: cell (2,0) = 1.0, (2,1) = 0.5 -> both above 0.5 x peak
    assert (star.x_min, star.y_min, star.x_max, star.y_max) == pytest.approx((0, 240, 320, 400))
    assert all(0.0 <= r.score <= 1.0 for r in regions)
    assert find_regions(maps, spans, caption, t, num_regions=1, function_words=FUNCTION_WORDS)[
        0
    ].score == max(r.score for r in regions)
    assert find_regions(maps, spans, caption, t, num_regions=0) == []


def test_overlapping_boxes_are_suppressed():
    t = ImageTransform.for_image(64, 64, 64)
    caption = "red circle and circle"
    spans = [(0, 3), (4, 10), (11, 14), (15, 21)]
    maps = np.zeros((4, 16))
    maps[:, 5] = 1.0  # both phrases peak on the same cell
    regions = find_regions(maps, spans, caption, t, 3, function_words=FUNCTION_WORDS, nms_iou=0.5)
    assert len(regions) == 1
    assert box_iou((0, 0, 2, 2), (1, 1, 3, 3)) == pytest.approx(1 / 7)


def test_non_square_token_count_is_an_error():
    with pytest.raises(ValueError, match="square grid"):
        find_regions(np.ones((2, 15)), [(0, 1), (2, 3)], "a b", ImageTransform.for_image(8, 8, 8), 1)
