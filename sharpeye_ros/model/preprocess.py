"""Image preprocessing as LLaVA does it: pad to a square, resize, normalise.

Every image keeps an :class:`ImageTransform`, which maps boxes between the model's
input pixels and the source image's pixels (undoing the pad and the resize).

The pixels are those of padding to the square and resizing it, but the square is never
built: at full resolution it has max(w, h)^2 pixels, gigabytes for a long, thin frame
(16000x1). The resize is separable, so the source is resized along its long side (where
the square has no padding), and along the short side only the weights of the source's own
rows are computed; what remains of each output row's weight is pad colour. Memory and time
grow with the model's input size and the source's pixels, never with its longest side
squared, and the result equals LLaVA's expand2square + resize to float rounding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class ImageTransform:
    """Source image (``width`` x ``height``) -> padded square of side ``side`` -> ``size``.

    The source sits at (``pad_x``, ``pad_y``) in the padded square; ``scale`` = size / side.
    """

    width: int
    height: int
    size: int
    pad_x: int
    pad_y: int
    side: int

    @classmethod
    def for_image(cls, width: int, height: int, size: int) -> "ImageTransform":
        side = max(width, height)
        # Same split as LLaVA's expand2square: the odd pixel goes after the image.
        return cls(width, height, size, (side - width) // 2, (side - height) // 2, side)

    @property
    def scale(self) -> float:
        return self.size / self.side

    def to_source(self, boxes: np.ndarray, clip: bool = True) -> np.ndarray:
        """Model-input pixel boxes (..., 4) as x_min, y_min, x_max, y_max -> source pixels."""
        b = np.asarray(boxes, dtype=np.float64) / self.scale
        b = b - np.array([self.pad_x, self.pad_y, self.pad_x, self.pad_y], dtype=np.float64)
        if clip:
            b[..., 0::2] = np.clip(b[..., 0::2], 0.0, self.width)
            b[..., 1::2] = np.clip(b[..., 1::2], 0.0, self.height)
        return b

    def to_model(self, boxes: np.ndarray) -> np.ndarray:
        """Source pixel boxes (..., 4) -> model-input pixels (inverse of :meth:`to_source`)."""
        b = np.asarray(boxes, dtype=np.float64)
        b = b + np.array([self.pad_x, self.pad_y, self.pad_x, self.pad_y], dtype=np.float64)
        return b * self.scale

    def content_box(self) -> np.ndarray:
        """Where the source image lies in model-input pixels (x_min, y_min, x_max, y_max)."""
        return self.to_model(np.array([0.0, 0.0, self.width, self.height]))


@dataclass(frozen=True)
class ImageProcessor:
    """Resizes (bicubic, antialiased like PIL) and pads with ``pad_color`` to a ``size``
    square, then normalises with ``mean`` / ``std``."""

    size: int
    pad_color: tuple[int, int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __call__(
        self, images: Sequence[np.ndarray], device: Optional[torch.device] = None
    ) -> tuple[torch.Tensor, list[ImageTransform]]:
        """RGB uint8 HxWx3 arrays (sizes may differ) -> (float32 tensor Bx3xSxS, transforms).
        The resize runs on ``device`` (default CPU), where the model will use the pixels."""
        if len(images) == 0:
            raise ValueError("preprocess: got an empty list of images")
        pixels, transforms = [], []
        for i, image in enumerate(images):
            tensor, transform = self.one(image, name=f"images[{i}]", device=device)
            pixels.append(tensor)
            transforms.append(transform)
        return torch.stack(pixels), transforms

    def one(
        self, image: np.ndarray, name: str = "image", device: Optional[torch.device] = None
    ) -> tuple[torch.Tensor, ImageTransform]:
        """One image -> (3xSxS float32 tensor, transform)."""
        image = check_image(image, name)
        h, w = image.shape[:2]
        t = self.transform(w, h)
        source = image if image.flags.writeable else image.copy()  # torch wants writable memory
        x = torch.from_numpy(source).to(device or "cpu").permute(2, 0, 1).float()
        x = self._pad_and_resize(x, t).clamp_(0.0, 255.0) / 255.0
        mean = torch.tensor(self.mean, device=x.device).view(3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(3, 1, 1)
        return (x - mean) / std, t

    def transform(self, width: int, height: int) -> ImageTransform:
        """The transform of a ``width`` x ``height`` image (as :meth:`one` gives it, without
        the pixels: for pixels preprocessed earlier)."""
        return ImageTransform.for_image(width, height, self.size)

    def _pad_and_resize(self, x: torch.Tensor, t: ImageTransform) -> torch.Tensor:
        """(3, h, w) float source -> (3, S, S): the padded square of ``t`` resized to S."""
        size = self.size
        pad = torch.tensor(self.pad_color, dtype=x.dtype, device=x.device).view(3, 1, 1)
        if t.side == size:  # nothing to resize: paste onto the pad colour
            canvas = pad.expand(3, size, size).clone()
            canvas[:, t.pad_y : t.pad_y + t.height, t.pad_x : t.pad_x + t.width] = x
            return canvas
        if t.width == t.height:
            return _resize(x, size, size)
        tall = t.height > t.width
        if tall:  # work on the wide case; transpose back at the end
            x = x.transpose(1, 2)
        short, offset = x.shape[1], (t.pad_x if tall else t.pad_y)
        rows = _resize(x, short, size)  # the long side: the square has no padding there
        # Along the short side the padded column is `side` long; resizing a one-hot column per
        # source row gives that row's weight in each output row (the resize is linear). The
        # one-hots lie along the last axis: torch 2.13 resizes a width-1 tensor to zeros.
        one_hot = torch.zeros(1, short, t.side, device=x.device)
        index = torch.arange(short, device=x.device)
        one_hot[0, index, offset + index] = 1.0
        weights = _resize(one_hot, short, size)[0]  # (short, size)
        out = torch.einsum("ik,cij->ckj", weights, rows) + (1.0 - weights.sum(0)).view(1, size, 1) * pad
        return out.transpose(1, 2) if tall else out


def _resize(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(C, h, w) -> (C, height, width), bicubic and antialiased like PIL."""
    if x.shape[1:] == (height, width):
        return x
    return F.interpolate(
        x.unsqueeze(0), size=(height, width), mode="bicubic", antialias=True, align_corners=False
    ).squeeze(0)


def check_image(image: np.ndarray, name: str = "image") -> np.ndarray:
    """Raise ValueError unless ``image`` is an RGB uint8 HxWx3 array."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"{name}: expected a numpy array, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{name}: expected shape HxWx3 (RGB), got {tuple(image.shape)}")
    if image.dtype != np.uint8:
        raise ValueError(f"{name}: expected dtype uint8, got {image.dtype}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"{name}: empty image {tuple(image.shape)}")
    return image


def square_crop(
    image: np.ndarray, box: Sequence[float], margin: float, min_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """A square crop around ``box`` (source pixels) with context, from the full image.

    The side is the box's longer side plus ``margin`` of it on each side, at least
    ``min_size`` and at most the image's longer side; the square is shifted to stay inside
    the image where it fits. Returns (crop, crop box x_min, y_min, x_max, y_max); a crop
    wider than the image is padded later by the processor.
    """
    h, w = image.shape[:2]
    x0, y0, x1, y1 = (float(v) for v in box)
    side = max(x1 - x0, y1 - y0) * (1.0 + 2.0 * margin)
    side = int(round(min(max(side, float(min_size)), float(max(w, h)))))
    side = max(side, 1)
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0

    def place(center: float, extent: int) -> tuple[int, int]:
        start = int(round(center - side / 2.0))
        if side <= extent:
            start = min(max(start, 0), extent - side)
            return start, start + side
        return 0, extent  # the square is wider than the image here: take all of it

    cx0, cx1 = place(cx, w)
    cy0, cy1 = place(cy, h)
    crop = np.ascontiguousarray(image[cy0:cy1, cx0:cx1])
    return crop, np.array([cx0, cy0, cx1, cy1], dtype=np.float64)
