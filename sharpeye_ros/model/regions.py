"""Attended regions: caption-token attention over the patch grid -> phrase boxes.

Pure functions on arrays, so they can be tested on hand-made heat maps:
caption -> phrases (runs of content words) -> one heat map per phrase (the mean of its
tokens' attention maps) -> the connected hot area around each peak -> a box in the
source image's pixels, scored by the share of the phrase's heat inside it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional, Sequence

import cv2
import numpy as np

from sharpeye_ros.model.preprocess import ImageTransform

_WORD = re.compile(r"[A-Za-z0-9']+")


@dataclass
class Region:
    """A box in source-image pixels, its score in [0, 1] and the caption phrase it grounds."""

    x_min: float
    y_min: float
    x_max: float
    y_max: float
    score: float
    phrase: str


@dataclass(frozen=True)
class Phrase:
    """A run of content words: its text and character span in the caption."""

    text: str
    start: int
    end: int


def caption_phrases(caption: str, function_words: Sequence[str]) -> list[Phrase]:
    """Maximal runs of content words, broken by function words and punctuation.

    ``"a large red circle at the top left, a blue star"`` -> ``large red circle``,
    ``blue star`` (with ``top``/``left`` among the function words).
    """
    stop = {w.lower() for w in function_words}
    phrases: list[Phrase] = []
    run: list[re.Match] = []

    def close() -> None:
        if run:
            start, end = run[0].start(), run[-1].end()
            phrases.append(Phrase(caption[start:end], start, end))
            run.clear()

    for match in _WORD.finditer(caption):
        if match.group().lower() in stop:
            close()
            continue
        if run and caption[run[-1].end() : match.start()].strip():
            close()  # punctuation between the two words
        run.append(match)
    close()
    return phrases


def phrase_heatmaps(
    token_maps: np.ndarray, token_spans: Sequence[tuple[int, int]], phrases: Sequence[Phrase]
) -> np.ndarray:
    """(P, M): each phrase's mean token attention; tokens overlap the phrase's span."""
    maps = np.zeros((len(phrases), token_maps.shape[1]), dtype=np.float64)
    for p, phrase in enumerate(phrases):
        rows = [
            i
            for i, (s, e) in enumerate(token_spans)
            if s < phrase.end and e > phrase.start and i < len(token_maps)
        ]
        if rows:
            maps[p] = token_maps[rows].mean(axis=0)
    return maps


def valid_cells(transform: ImageTransform, grid: int) -> np.ndarray:
    """(grid, grid) bool: patch cells that overlap the source image (not only padding)."""
    cell = transform.size / grid
    x0, y0, x1, y1 = transform.content_box()
    edges = np.arange(grid) * cell
    cols = (edges + cell > x0 + 1e-6) & (edges < x1 - 1e-6)
    rows = (edges + cell > y0 + 1e-6) & (edges < y1 - 1e-6)
    return rows[:, None] & cols[None, :]


def heat_boxes(
    heat: np.ndarray, valid: np.ndarray, threshold: float, max_boxes: int
) -> list[tuple[tuple[int, int, int, int], float]]:
    """Boxes around the peaks of a (H, W) heat map, hottest first.

    Each box bounds the 4-connected area around the current peak where heat is at least
    ``threshold`` x the peak; its score is the share of the map's heat inside that area.
    Later peaks must reach ``threshold`` x the first peak. Boxes are (row0, col0, row1,
    col1) in cells, end-exclusive.
    """
    h = np.where(valid, np.clip(np.nan_to_num(heat.astype(np.float64)), 0.0, None), 0.0)
    total = h.sum()
    if total <= 0:
        return []
    work = h.copy()
    first_peak = work.max()
    boxes = []
    for _ in range(max_boxes):
        peak = work.max()
        if peak <= 0 or peak < threshold * first_peak:
            break
        r, c = np.unravel_index(int(np.argmax(work)), work.shape)
        hot = (work >= threshold * peak).astype(np.uint8)
        _, labels = cv2.connectedComponents(hot, connectivity=4)
        area = labels == labels[r, c]
        rows, cols = np.nonzero(area)
        boxes.append(
            (
                (int(rows.min()), int(cols.min()), int(rows.max()) + 1, int(cols.max()) + 1),
                float(h[area].sum() / total),
            )
        )
        work[area] = 0.0
    return boxes


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two x_min, y_min, x_max, y_max boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def find_regions(
    token_maps: np.ndarray,
    token_spans: Sequence[tuple[int, int]],
    caption: str,
    transform: ImageTransform,
    num_regions: int,
    threshold: float = 0.5,
    max_boxes_per_phrase: int = 1,
    nms_iou: float = 0.5,
    contrast: float = 0.0,
    function_words: Sequence[str] = (),
) -> list[Region]:
    """Top ``num_regions`` phrase boxes, in source pixels, from the caption tokens'
    attention maps (T, M) over a square patch grid of M cells."""
    if num_regions <= 0 or len(token_maps) == 0:
        return []
    token_maps = np.asarray(token_maps, dtype=np.float64)
    grid = int(round(np.sqrt(token_maps.shape[1])))
    if grid * grid != token_maps.shape[1]:
        raise ValueError(f"find_regions: {token_maps.shape[1]} visual tokens do not form a square grid")
    phrases = caption_phrases(caption, function_words)
    maps = phrase_heatmaps(token_maps, token_spans, phrases)
    if contrast > 0:
        maps = maps - contrast * token_maps.mean(axis=0, keepdims=True)
    valid = valid_cells(transform, grid)
    candidates = []
    for phrase, heat in zip(phrases, maps):
        for cells, score in heat_boxes(heat.reshape(grid, grid), valid, threshold, max_boxes_per_phrase):
            candidates.append((score, _source_box(cells, transform, grid), phrase.text))
    candidates.sort(key=lambda c: -c[0])
    regions: list[Region] = []
    for score, box, text in candidates:
        if any(box_iou(box, (r.x_min, r.y_min, r.x_max, r.y_max)) > nms_iou for r in regions):
            continue
        regions.append(Region(float(box[0]), float(box[1]), float(box[2]), float(box[3]), float(score), text))
        if len(regions) == num_regions:
            break
    return regions


def zoom_boxes(regions: Sequence[Region], heat: Optional[np.ndarray], transform: ImageTransform, count: int,
               threshold: float) -> list[np.ndarray]:
    """``count`` source-pixel boxes to zoom into: the top ``regions``, then the peaks of
    ``heat`` (the whole caption's attention on the (grid, grid) patch grid, or None), then
    the whole image."""
    boxes = [np.array([r.x_min, r.y_min, r.x_max, r.y_max]) for r in regions[:count]]
    if len(boxes) < count and heat is not None:
        grid = heat.shape[0]
        for cells, _ in heat_boxes(heat, valid_cells(transform, grid), threshold, count - len(boxes)):
            boxes.append(_source_box(cells, transform, grid))
    while len(boxes) < count:
        boxes.append(np.array([0.0, 0.0, transform.width, transform.height]))
    return boxes


def _source_box(cells: tuple[int, int, int, int], transform: ImageTransform, grid: int) -> np.ndarray:
    """A (row0, col0, row1, col1) box of patch cells in source pixels."""
    r0, c0, r1, c1 = cells
    cell = transform.size / grid
    return transform.to_source(np.array([c0 * cell, r0 * cell, c1 * cell, r1 * cell]))
