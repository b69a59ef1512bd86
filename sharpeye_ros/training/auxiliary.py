"""Auxiliary losses for the synthetic world, where every object's box is known.

A tiny ViT trained from scratch on a few thousand scenes learns slowly through the
caption loss alone: the LM first learns the grammar and ignores the image. Two extra
signals, both only on the synthetic world (real-data recipes leave them off):

- grounding: for each size/colour/shape word of an object, ``-log`` of its attention
  mass over the visual tokens (in the LM layers the regions read) that lies on the patch
  cells the object's box touches. It makes the attended regions point at what a word names.
- patch labels: a linear head on the vision tower's selected features classifies each
  patch cell's object colour, shape and size class (or "none"). It gives the vision
  tower dense supervision; the head is used in training only and not saved with the model.
- word alignment: the connector's embedding of an object's centre cell, read through the
  LM's (tied) word embeddings, should score the object's colour and shape words highest.
  A visual token that already looks like the words for what it shows is one the LM can
  copy into the caption, which a from-scratch LM otherwise learns only slowly.

Stage 2 (refinement with zoom) has the same two on its own pass: the refined zoom tokens
should read as the words of the objects inside their crop (small shapes included: a crop
sees them), and the refined caption's object words should attend to those crop cells.
Without them the refiner re-reads the blurred glance tokens and ignores the crops.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sharpeye_ros.model.deeplens import ZoomTokens
from sharpeye_ros.model.preprocess import ImageTransform
from sharpeye_ros.world import COLOURS, SHAPES, SIZE_CLASSES, WorldObject, tokenize
from sharpeye_ros.world.captions import SHAPE_PLURALS, SIZE_SYNONYMS

_OBJECT_WORDS = set(COLOURS) | set(SIZE_CLASSES) | set(SIZE_SYNONYMS)
_SHAPE_WORDS = set(SHAPES) | set(SHAPE_PLURALS.values())
_BREAKS = {",", ".", "and"}
_LABELS = (COLOURS, SHAPES, SIZE_CLASSES)  # patch-label tasks; class 0 of each is "none"


def object_words(caption: str) -> list[tuple[int, int]]:
    """(token index, object index) of the size, colour and shape words of a synthetic
    caption; the k-th shape word closes the phrase of the caption's k-th object."""
    out, pending, k = [], [], 0
    for i, token in enumerate(tokenize(caption)):
        if token in _OBJECT_WORDS:
            pending.append(i)
        elif token in _SHAPE_WORDS:
            out += [(j, k) for j in pending + [i]]
            pending, k = [], k + 1
        elif token in _BREAKS:
            pending = []
    return out


def box_cells(box: Sequence[float], transform: ImageTransform, grid: int) -> np.ndarray:
    """(grid * grid,) bool: the patch cells a source-pixel box touches."""
    x0, y0, x1, y1 = transform.to_model(np.asarray(box, dtype=np.float64)) / (transform.size / grid)
    cols = (np.arange(grid) + 1 > x0) & (np.arange(grid) < x1)
    rows = (np.arange(grid) + 1 > y0) & (np.arange(grid) < y1)
    return (rows[:, None] & cols[None, :]).reshape(-1)


def centre_cell(obj: WorldObject, transform: ImageTransform, grid: int) -> int:
    """Index of the patch cell holding the object's centre."""
    x, y = transform.to_model(np.array([*obj.centre, *obj.centre]))[:2] / (transform.size / grid)
    return min(grid - 1, int(y)) * grid + min(grid - 1, int(x))


def grounding_targets(captions: Sequence[str], objects: Sequence[Sequence[WorldObject]],
                      transforms: Sequence[ImageTransform], grid: int, max_len: int) -> Optional[torch.Tensor]:
    """(B, max_len, grid*grid) bool masks: the cells each caption token should attend to
    (all False for tokens that name nothing); None when no token names an object.

    Token indices follow :func:`~sharpeye_ros.world.tokenize`, which matches the word-level
    tokenizer one to one; objects are in caption order (the world's canonical order).
    """
    masks = np.zeros((len(captions), max_len, grid * grid), dtype=bool)
    for b, (caption, objs, transform) in enumerate(zip(captions, objects, transforms)):
        for token, k in object_words(caption):
            if token < max_len and k < len(objs):
                masks[b, token] = box_cells(objs[k].box, transform, grid)
    return torch.from_numpy(masks) if masks.any() else None


def grounding_loss(maps: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean ``-log`` share of attention on the target cells, over tokens with a target.

    ``maps`` (B, T, M): attention over visual tokens; ``targets`` (B, T, M) bool."""
    has = targets.any(-1)
    share = (maps * targets).sum(-1) / maps.sum(-1).clamp(min=1e-12)
    return -(share[has].clamp(min=1e-6).log()).mean()


def patch_targets(objects: Sequence[Sequence[WorldObject]], transforms: Sequence[ImageTransform],
                  grid: int, small_shapes: bool = False) -> torch.Tensor:
    """(B, grid*grid, 3) long: per cell, 1 + the index of its object's colour, shape and
    size class, 0 for none. The size class (with its "none": where objects are) labels
    every cell an object's box touches, the larger object winning a shared cell; colour
    and shape label only the cell holding the object's centre, where they are clearest,
    and shape only for objects larger than "small" (a glance cannot see those shapes:
    asking would only teach the tower noise) unless ``small_shapes`` (zoom crops)."""
    out = np.zeros((len(objects), grid * grid, len(_LABELS)), dtype=np.int64)
    for b, (objs, transform) in enumerate(zip(objects, transforms)):
        for obj in sorted(objs, key=lambda o: o.size):
            labels = [names.index(v) + 1 for names, v in zip(_LABELS, (obj.colour, obj.shape, obj.size_class))]
            out[b, box_cells(obj.box, transform, grid), -1] = labels[-1]
            cell = centre_cell(obj, transform, grid)
            out[b, cell, 0] = labels[0]
            if small_shapes or obj.size_class != "small":  # a glance cannot see a small object's shape
                out[b, cell, 1] = labels[1]
    return torch.from_numpy(out)


def shift_flip(pixels: torch.Tensor, objects: Sequence[Sequence[WorldObject]],
               transforms: Sequence[ImageTransform], pad: torch.Tensor,
               max_shift: int) -> tuple[torch.Tensor, list[list[WorldObject]]]:
    """Glance pixels shifted by up to ``max_shift`` pixels each way (uncovered pixels
    take ``pad``, the padding colour as normalised pixels, shape (3,)) and flipped left to
    right half the time, with the objects' boxes moved to match; draws from torch's RNG.

    A ViT trained from scratch must see each shape at many offsets to the patch grid;
    these give new offsets for free. Captions are not moved along (a flip swaps left and
    right), so this is for the patch labels only."""
    b, _, size, _ = pixels.shape
    out = pad.to(pixels).view(1, 3, 1, 1).repeat(b, 1, size, size)
    moved = []
    shifts = torch.randint(-max_shift, max_shift + 1, (b, 2)).tolist()
    flips = torch.rand(b).lt(0.5).tolist()
    for i, ((dx, dy), flip, objs, t) in enumerate(zip(shifts, flips, objects, transforms)):
        image = pixels[i].flip(-1) if flip else pixels[i]
        out[i, :, max(dy, 0):size + min(dy, 0), max(dx, 0):size + min(dx, 0)] = \
            image[:, max(-dy, 0):size - max(dy, 0), max(-dx, 0):size - max(dx, 0)]
        boxes = []
        for o in objs:
            x0, y0, x1, y1 = o.box
            if flip:  # mirror about the padded square's centre, in source pixels
                x0, x1 = t.side - 2 * t.pad_x - x1, t.side - 2 * t.pad_x - x0
            sx, sy = dx / t.scale, dy / t.scale
            boxes.append(dataclasses.replace(o, box=(x0 + sx, y0 + sy, x1 + sx, y1 + sy)))
        moved.append(boxes)
    return out, moved


class PatchHead(nn.Module):
    """Per-patch colour, shape and size-class logits from vision features (training only)."""

    def __init__(self, dim: int):
        super().__init__()
        self.proj = nn.Linear(dim, sum(len(names) + 1 for names in _LABELS))

    def loss(self, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of the three tasks; ``targets`` from :func:`patch_targets`.

        Colour and shape are scored on object cells only (most cells are empty, and
        "none" would swamp them); the size class, with its "none", also says where objects are."""
        logits = self.proj(features).float().split([len(n) + 1 for n in _LABELS], dim=-1)
        total = 0.0
        for t, lg in enumerate(logits):
            y = targets[..., t].reshape(-1)
            if t < len(_LABELS) - 1:
                y = y.masked_fill(y == 0, -100)
                if not (y >= 0).any():
                    continue
            total = total + F.cross_entropy(lg.reshape(-1, lg.shape[-1]), y, ignore_index=-100)
        return total / len(_LABELS)


def word_alignment_loss(model, embeds: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of the colour and shape words, scored by the dot product of the
    connector ``embeds`` (B, M, D) with the LM's word embeddings, over the cells that
    ``targets`` (from :func:`patch_targets`) label; zero when none is labelled."""
    table = model.lm.model.get_input_embeddings().weight
    flat = embeds.reshape(-1, embeds.shape[-1])
    total, parts = embeds.new_zeros(()), 0
    for task, names in enumerate(_LABELS[:2]):
        y = targets[..., task].reshape(-1).to(embeds.device) - 1  # -1: no label
        keep = y >= 0
        if keep.any():
            ids = torch.tensor([model.lm.text_ids(" " + name)[0] for name in names], device=embeds.device)
            total = total + F.cross_entropy(flat[keep].float() @ table[ids].float().T, y[keep])
            parts += 1
    return total / max(parts, 1)


def crop_objects(zoom: ZoomTokens, objects: Sequence[Sequence[WorldObject]],
                 image_size: int) -> tuple[list[dict[int, WorldObject]], list[ImageTransform]]:
    """Per crop (image-major, as the zoom tokens): the objects whose centre lies inside it,
    by their index in the image's objects, with boxes moved into the crop's frame; and the
    crop's transform to the tower's input."""
    if zoom.source_boxes is None:
        raise ValueError("crop_objects: the zoom tokens carry no source boxes")
    crops, transforms = [], []
    for objs, boxes in zip(objects, zoom.source_boxes):
        for x0, y0, x1, y1 in boxes:
            crops.append({
                k: dataclasses.replace(o, box=(o.box[0] - x0, o.box[1] - y0, o.box[2] - x0, o.box[3] - y0))
                for k, o in enumerate(objs) if x0 <= o.centre[0] < x1 and y0 <= o.centre[1] < y1
            })
            transforms.append(ImageTransform.for_image(int(round(x1 - x0)), int(round(y1 - y0)), image_size))
    return crops, transforms


def refine_grounding_targets(captions: Sequence[str], objects: Sequence[Sequence[WorldObject]],
                             transforms: Sequence[ImageTransform], crops: Sequence[dict[int, WorldObject]],
                             crop_transforms: Sequence[ImageTransform], grid: int, zoom_grid: int,
                             max_len: int) -> Optional[torch.Tensor]:
    """(B, max_len, grid^2 + C * zoom_grid^2) bool: for each object word of the refined
    caption, the cells of the zoom crops holding its object (its sharp view; ``crops`` and
    ``crop_transforms`` from :func:`crop_objects`), or its glance cells (``grid``: DeepLens's
    pooled glance grid) when no crop holds it; None when no token names an object."""
    c = len(crops) // len(captions)
    masks = np.zeros((len(captions), max_len, grid * grid + c * zoom_grid * zoom_grid), dtype=bool)
    for i, (caption, objs, transform) in enumerate(zip(captions, objects, transforms)):
        cells = []
        for k, obj in enumerate(objs):
            zoomed = np.zeros((c, zoom_grid * zoom_grid), dtype=bool)
            for j in range(c):
                if k in crops[i * c + j]:
                    zoomed[j] = box_cells(crops[i * c + j][k].box, crop_transforms[i * c + j], zoom_grid)
            glance = np.zeros(grid * grid, dtype=bool) if zoomed.any() else box_cells(obj.box, transform, grid)
            cells.append(np.concatenate([glance, zoomed.reshape(-1)]))
        for token, k in object_words(caption):
            if token < max_len and k < len(cells):
                masks[i, token] = cells[k]
    return torch.from_numpy(masks) if masks.any() else None


def glance_losses(model, pixels: torch.Tensor, captions: Sequence[str], objects: Sequence[Sequence[WorldObject]],
                  transforms: Sequence[ImageTransform], grounding: bool = True,
                  head: Optional[PatchHead] = None, words: bool = False) -> dict[str, torch.Tensor]:
    """The glance caption loss with the auxiliary losses, from the model's one teacher-forced
    pass (``SharpEyes.teacher_forced_glance``): ``caption``, plus ``grounding`` when asked,
    ``patch`` with a ``head`` and ``words`` (word alignment) when asked."""
    forced = model.teacher_forced_glance(pixels, captions, attention=grounding)
    out = {"caption": forced.loss}
    if grounding:
        maps = forced.maps
        targets = grounding_targets(captions, objects, transforms, model.vision.grid, maps.shape[1])
        out["grounding"] = maps.new_zeros(()) if targets is None else grounding_loss(maps, targets.to(maps.device))
    if head is not None or words:
        labels = patch_targets(objects, transforms, model.vision.grid).to(forced.patches.device)
        if head is not None:
            out["patch"] = head.loss(forced.patches, labels)
        if words:
            out["words"] = word_alignment_loss(model, forced.visual, labels)
    return out


def refine_losses(model, images: Sequence[np.ndarray], initial: Sequence[str], targets: Sequence[str],
                  objects: Sequence[Sequence[WorldObject]], grounding: bool = True,
                  words: bool = True, pixels: Optional[torch.Tensor] = None) -> dict[str, torch.Tensor]:
    """The stage-2 loss with zoom and its auxiliary losses, from the model's one
    teacher-forced pass (``SharpEyes.teacher_forced_refine``): ``refine``, plus
    ``zoom_grounding`` (:func:`refine_grounding_targets`) and ``zoom_words`` (word alignment
    of the refined zoom tokens) when asked. ``pixels``: the images' glance pixels, if a
    dataset preprocessed them."""
    forced = model.teacher_forced_refine(images, initial, targets, zoom=True, attention=grounding,
                                         pixels=pixels)
    grid = model.vision.grid // model.config.deeplens.pool
    zoom_grid = model.vision.grid // model.config.zoom.pool
    crops, crop_transforms = crop_objects(forced.zoom, objects, model.vision.image_size)
    out = {"refine": forced.loss}
    if grounding:
        maps = forced.maps
        masks = refine_grounding_targets(targets, objects, forced.transforms, crops, crop_transforms, grid,
                                         zoom_grid, maps.shape[1])
        out["zoom_grounding"] = maps.new_zeros(()) if masks is None else grounding_loss(maps, masks.to(maps.device))
    if words:
        labels = patch_targets([list(c.values()) for c in crops], crop_transforms, zoom_grid, small_shapes=True)
        labels = labels.view(len(images), -1, labels.shape[-1]).to(forced.visual.device)
        out["zoom_words"] = word_alignment_loss(model, forced.visual[:, grid * grid:], labels)
    return out
