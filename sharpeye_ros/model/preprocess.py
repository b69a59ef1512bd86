"""Image preprocessing as LLaVA does it: pad to a square, resize, normalise.

Every image keeps an :class:`ImageTransform`, which maps boxes between the model's
input pixels and the source image's pixels (undoing the pad and the resize).
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
    """Pads with ``pad_color``, resizes to ``size`` (bicubic, antialiased like PIL) and
    normalises with ``mean`` / ``std``."""

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
        t = ImageTransform.for_image(w, h, self.size)
        canvas = np.empty((t.side, t.side, 3), dtype=np.uint8)
        canvas[...] = np.asarray(self.pad_color, dtype=np.uint8)
        canvas[t.pad_y : t.pad_y + h, t.pad_x : t.pad_x + w] = image
        x = torch.from_numpy(canvas).to(device or "cpu").permute(2, 0, 1).unsqueeze(0).float()
        if t.side != self.size:
            x = F.interpolate(
                x, size=(self.size, self.size), mode="bicubic", antialias=True, align_corners=False
            )
        x = x.squeeze(0).clamp_(0.0, 255.0) / 255.0
        mean = torch.tensor(self.mean, device=x.device).view(3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(3, 1, 1)
        return (x - mean) / std, t


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
