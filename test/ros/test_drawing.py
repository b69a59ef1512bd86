"""Tests for sharpeye_ros.ros.drawing: boxes, labels and the caption band."""

from types import SimpleNamespace

import numpy as np
import pytest

from sharpeye_ros.ros.drawing import REGION_COLOURS, draw_annotations, place_label, wrap_text

LONG_CAPTION = ("a small red star to the left of a large blue circle, with a green square in the bottom "
                "left corner of the image and a yellow triangle above it")


def region(x_min, y_min, x_max, y_max, score=0.62, phrase="small red star"):
    return SimpleNamespace(x_min=x_min, y_min=y_min, x_max=x_max, y_max=y_max, score=score, phrase=phrase)


def grey(height=240, width=320, value=128):
    return np.full((height, width, 3), value, dtype=np.uint8)


def band_height(out, background):
    """Rows at the bottom darkened by the caption band (column 0 holds no text)."""
    darkened = out[:, 0, 0] < background
    rows = 0
    while rows < len(darkened) and darkened[-1 - rows]:
        rows += 1
    return rows


def colour_count(out, colour):
    return int(np.all(out == np.array(colour, dtype=np.uint8), axis=-1).sum())


def test_returns_new_image_and_leaves_input_untouched():
    image = grey()
    before = image.copy()
    out = draw_annotations(image, "a red star", [region(40, 60, 120, 150)], initial_caption="a star")
    assert out.shape == image.shape and out.dtype == np.uint8
    assert not np.shares_memory(out, image)
    assert np.array_equal(image, before)
    assert not np.array_equal(out, image)


def test_box_edges_have_the_region_colour_and_colours_differ():
    out = draw_annotations(grey(), "", [region(40, 60, 120, 150), region(200, 100, 300, 200)])
    assert out[105, 40].tolist() == list(REGION_COLOURS[0])  # left edge, middle row
    assert out[150, 80].tolist() == list(REGION_COLOURS[0])  # bottom edge
    assert out[150, 300].tolist() == list(REGION_COLOURS[1])  # right edge of the second box
    assert REGION_COLOURS[0] != REGION_COLOURS[1]
    assert out[105, 80].tolist() == [128, 128, 128]  # inside the box stays untouched


def test_label_is_drawn_in_the_region_colour():
    plain = draw_annotations(grey(), "", [region(40, 60, 120, 150, phrase="", score=None)])
    labelled = draw_annotations(grey(), "", [region(40, 60, 120, 150)])
    # The label background is a filled rectangle in the box colour, above the box.
    assert colour_count(labelled, REGION_COLOURS[0]) > colour_count(plain, REGION_COLOURS[0]) + 200
    assert np.any(np.all(labelled[:60, 40:] == REGION_COLOURS[0], axis=-1))


@pytest.mark.parametrize("box", [(250, 0, 319, 40), (0, 200, 60, 239), (-30, -30, 20, 20),
                                 (300, 220, 400, 300)])
def test_labels_at_image_edges_stay_inside(box):
    out = draw_annotations(grey(), "", [region(*box, phrase="a rather long phrase for the corner")])
    assert colour_count(out, REGION_COLOURS[0]) > 400  # box plus a visible label


@pytest.mark.parametrize(
    "box_x, box_y, image_h, expected",
    [(50, 40, 240, (50, 20)),  # room above: label sits on top of the box
     (50, 5, 240, (50, 5)),  # no room above: inside the box's top edge
     (300, 40, 240, (220, 20)),  # would overflow right: shifted left
     (-10, 235, 240, (0, 215)),  # box starting left of the image: shifted right
     (10, 15, 30, (10, 10))],  # inside the top edge would overflow the bottom: shifted up
)
def test_place_label_keeps_label_in_bounds(box_x, box_y, image_h, expected):
    assert place_label(box_x, box_y, 100, 20, 320, image_h) == expected


def test_out_of_bounds_and_degenerate_boxes_are_clipped_or_skipped():
    image = grey()
    out = draw_annotations(image, "", [region(-50, -50, 1e6, 1e6)])
    assert out[120, 0].tolist() == list(REGION_COLOURS[0])  # clipped to the left image edge
    assert out[239, 160].tolist() == list(REGION_COLOURS[0])  # and the bottom one
    skipped = [region(500, 500, 900, 900), region(float("nan"), 0, 10, 10), region(0, float("inf"), 5, 5),
               region(-100, 10, -20, 50), region(None, 0, 5, 5)]
    assert np.array_equal(draw_annotations(image, "", skipped), image)
    flipped = draw_annotations(image, "", [region(120, 150, 40, 60), region(70, 70, 70, 70)])
    assert flipped[105, 40].tolist() == list(REGION_COLOURS[0])  # min/max swapped still draws
    assert flipped[70, 70].tolist() == list(REGION_COLOURS[1])  # a zero-size box is a dot


def test_long_caption_wraps_into_a_taller_band():
    short = draw_annotations(grey(value=200), "a red star", [])
    long = draw_annotations(grey(value=200), LONG_CAPTION, [])
    assert 0 < band_height(short, 200) < band_height(long, 200)
    assert band_height(long, 200) <= 120  # never more than half the image


def test_wrap_text_respects_width_and_keeps_words():
    lines = wrap_text(LONG_CAPTION, 200, 0.5, 1)
    assert len(lines) > 2
    assert " ".join(lines) == LONG_CAPTION
    assert wrap_text("supercalifragilisticexpialidocious", 60, 0.5, 1)[0].endswith("...")
    assert wrap_text("too wide", 3, 0.5, 1) == []


def test_initial_caption_shown_only_when_different():
    same = draw_annotations(grey(value=200), "a red star", [], initial_caption="a red star")
    differs = draw_annotations(grey(value=200), "a red star", [], initial_caption="a red shape")
    assert band_height(same, 200) < band_height(differs, 200)


def test_caption_band_at_top():
    out = draw_annotations(grey(value=200), "a red star", [], caption_at_top=True)
    assert out[0, 0, 0] < 200 and out[-1, 0, 0] == 200


def test_zero_regions_and_empty_caption_leave_image_unchanged():
    image = grey()
    assert np.array_equal(draw_annotations(image, "", []), image)
    out = draw_annotations(image, "a caption", [])
    assert np.array_equal(out[:120], image[:120])  # only the bottom band changed


def test_tiny_image_draws_what_fits():
    out = draw_annotations(grey(32, 32), LONG_CAPTION, [region(2, 2, 20, 20), region(-5, -5, 100, 3)],
                           initial_caption="something else entirely")
    assert out.shape == (32, 32, 3)
    assert out[10, 2].tolist() == list(REGION_COLOURS[0])
    assert 0 < band_height(out, 128) <= 16


def test_font_scales_with_image_size():
    small = draw_annotations(grey(240, 320, 200), "a red star", [])
    large = draw_annotations(grey(1080, 1920, 200), "a red star", [])
    assert band_height(large, 200) > 2 * band_height(small, 200)


@pytest.mark.parametrize(
    "image, kwargs, pattern",
    [(np.zeros((10, 10), np.uint8), {}, r"rgb must be an \(H, W, 3\) uint8 array"),
     (grey(), {"band_opacity": 1.5}, r"band_opacity must be in \[0, 1\]")],
)
def test_bad_arguments_raise_value_error(image, kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        draw_annotations(image, "caption", [], **kwargs)
