"""Draw a caption and its attended regions onto an RGB image, for RViz.

Pure OpenCV/numpy. Regions are duck-typed: any object with ``x_min, y_min, x_max, y_max``
(source pixels, possibly out of bounds or degenerate), ``score`` and ``phrase``.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import cv2
import numpy as np

from sharpeye_ros.ros.image_conversion import validate_rgb

# Distinct, saturated RGB colours (the matplotlib "tab10" palette); cycled past ten regions.
REGION_COLOURS: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
)
GLANCE_PREFIX = "glance: "
GLANCE_COLOUR = (190, 190, 190)  # the first glance in grey, the refined caption in white
CAPTION_COLOUR = (255, 255, 255)

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_MIN_FONT_SCALE = 0.3  # smaller Hershey text is unreadable: tiny images keep this size and skip
# the text that does not fit


def _style(height: int, width: int) -> tuple[float, int, int]:
    """Font scale, text thickness and box thickness, proportional to the image size."""
    size = min(height, width) / 480.0
    return max(_MIN_FONT_SCALE, 0.55 * size), max(1, round(1.2 * size)), max(1, round(2.0 * size))


def _text_size(text: str, scale: float, thickness: int) -> tuple[int, int]:
    """(width, height) of ``text`` including its descender."""
    (w, h), baseline = cv2.getTextSize(text, _FONT, scale, thickness)
    return w, h + baseline


def _fit(text: str, max_width: int, scale: float, thickness: int) -> str:
    """``text`` shortened with '...' until it fits ``max_width`` pixels ('' if nothing fits)."""
    if _text_size(text, scale, thickness)[0] <= max_width:
        return text
    for end in range(len(text) - 1, 0, -1):
        candidate = text[:end].rstrip() + "..."
        if _text_size(candidate, scale, thickness)[0] <= max_width:
            return candidate
    return ""


def wrap_text(text: str, max_width: int, scale: float, thickness: int) -> list[str]:
    """Split ``text`` into lines no wider than ``max_width`` pixels, breaking at spaces.

    A single word wider than the line is cut with '...' rather than overflowing.
    """
    lines: list[str] = []
    for word in text.split():
        joined = f"{lines[-1]} {word}" if lines else word
        if lines and _text_size(joined, scale, thickness)[0] <= max_width:
            lines[-1] = joined
        elif (fitted := _fit(word, max_width, scale, thickness)):
            lines.append(fitted)
    return lines


def place_label(box_x: int, box_y: int, label_w: int, label_h: int,
                image_w: int, image_h: int) -> tuple[int, int]:
    """Top-left corner for a box's label: above the box's top-left corner when there is room,
    else just inside its top edge; always shifted to lie within the image."""
    y = box_y - label_h if box_y >= label_h else box_y
    return max(0, min(box_x, image_w - label_w)), max(0, min(y, image_h - label_h))


def _clip_box(region: Any, width: int, height: int) -> tuple[int, int, int, int] | None:
    """Integer pixel box clipped to the image, or None when it is not numeric, finite and visible."""
    try:
        coords = [float(getattr(region, name)) for name in ("x_min", "y_min", "x_max", "y_max")]
    except (TypeError, ValueError):
        return None
    if not all(math.isfinite(c) for c in coords):
        return None
    x0, x1 = sorted(coords[0::2])
    y0, y1 = sorted(coords[1::2])
    if x1 < 0 or y1 < 0 or x0 > width - 1 or y0 > height - 1:
        return None
    x0, x1 = (min(max(round(v), 0), width - 1) for v in (x0, x1))
    y0, y1 = (min(max(round(v), 0), height - 1) for v in (y0, y1))
    return x0, y0, x1, y1


def _label_text(region: Any) -> str:
    phrase = str(getattr(region, "phrase", "") or "").strip()
    score = getattr(region, "score", None)
    score_text = f"{float(score):.2f}" if isinstance(score, (int, float, np.number)) else ""
    return " ".join(part for part in (phrase, score_text) if part)


def _text_colour(background: Sequence[int]) -> tuple[int, int, int]:
    luminance = 0.299 * background[0] + 0.587 * background[1] + 0.114 * background[2]
    return (0, 0, 0) if luminance > 140 else (255, 255, 255)


def _draw_region(out: np.ndarray, region: Any, colour: tuple[int, int, int],
                 scale: float, thickness: int, box_thickness: int) -> None:
    height, width = out.shape[:2]
    box = _clip_box(region, width, height)
    if box is None:
        return
    x0, y0, x1, y1 = box
    cv2.rectangle(out, (x0, y0), (x1, y1), colour, box_thickness, cv2.LINE_8)
    pad = max(1, thickness)
    text = _fit(_label_text(region), width - 2 * pad, scale, thickness)
    text_w, text_h = _text_size(text, scale, thickness) if text else (0, 0)
    label_w, label_h = text_w + 2 * pad, text_h + 2 * pad
    if not text or label_h > height // 3:  # a label that would cover the image is skipped
        return
    lx, ly = place_label(x0, y0, label_w, label_h, width, height)
    cv2.rectangle(out, (lx, ly), (lx + label_w - 1, ly + label_h - 1), colour, cv2.FILLED)
    baseline = cv2.getTextSize(text, _FONT, scale, thickness)[1]
    cv2.putText(out, text, (lx + pad, ly + label_h - pad - baseline), _FONT, scale,
                _text_colour(colour), thickness, cv2.LINE_AA)


def _draw_caption_band(out: np.ndarray, paragraphs: list[tuple[str, tuple[int, int, int]]], at_top: bool,
                       opacity: float, scale: float, thickness: int) -> None:
    """Wrap each (text, colour) paragraph to the image width and draw all on a darkened band."""
    height, width = out.shape[:2]
    pad = max(2, 2 * thickness)
    lines = [(line, colour) for text, colour in paragraphs
             for line in wrap_text(text, width - 2 * pad, scale, thickness)]
    (_, text_h), baseline = cv2.getTextSize("Ag", _FONT, scale, thickness)
    line_h = text_h + baseline + pad
    max_lines = (height // 2 - pad) // line_h  # the band never covers more than half the image
    if max_lines < 1 or not lines:
        return
    if len(lines) > max_lines:
        text, colour = lines[max_lines - 1]
        lines = lines[: max_lines - 1] + [(_fit(text + " ...", width - 2 * pad, scale, thickness), colour)]
    band_h = len(lines) * line_h + pad
    y0 = 0 if at_top else height - band_h
    band = out[y0:y0 + band_h]
    band[:] = (band * (1.0 - opacity)).astype(np.uint8)  # darken towards black
    for i, (text, colour) in enumerate(lines):
        cv2.putText(out, text, (pad, y0 + (i + 1) * line_h - baseline), _FONT, scale, colour,
                    thickness, cv2.LINE_AA)


def draw_annotations(
    rgb: np.ndarray,
    caption: str,
    regions: Iterable[Any] = (),
    initial_caption: str | None = None,
    *,
    caption_at_top: bool = False,
    band_opacity: float = 0.6,
) -> np.ndarray:
    """Return a new (H, W, 3) uint8 RGB image with ``regions`` and ``caption`` drawn on ``rgb``.

    Each region gets a rectangle in its own colour (``REGION_COLOURS``, in order) and a label
    "phrase score" kept inside the image. The caption is wrapped to the image width on a
    darkened band at the bottom (or top); ``initial_caption`` is shown above it, prefixed
    "glance: ", when it differs. Text that cannot fit (tiny images) is shortened or skipped.
    """
    out = validate_rgb(rgb).copy()
    if not 0.0 <= band_opacity <= 1.0:
        raise ValueError(f"band_opacity must be in [0, 1], got {band_opacity}")
    scale, thickness, box_thickness = _style(*out.shape[:2])
    for i, region in enumerate(regions):
        _draw_region(out, region, REGION_COLOURS[i % len(REGION_COLOURS)], scale, thickness, box_thickness)
    caption = caption or ""
    paragraphs = []
    if initial_caption and initial_caption.strip() != caption.strip():
        paragraphs.append((GLANCE_PREFIX + initial_caption, GLANCE_COLOUR))
    paragraphs.append((caption, CAPTION_COLOUR))
    _draw_caption_band(out, paragraphs, caption_at_top, band_opacity, scale, thickness)
    return out
