"""Pad-to-square, resize and normalise; box round trips through the pad and the resize."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sharpeye_ros.model.preprocess import ImageProcessor, ImageTransform, square_crop

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)
PAD = (122, 116, 104)


def processor(size: int = 64) -> ImageProcessor:
    return ImageProcessor(size, PAD, MEAN, STD)


def unnormalise(x: torch.Tensor) -> np.ndarray:
    return (
        ((x * torch.tensor(STD).view(3, 1, 1) + torch.tensor(MEAN).view(3, 1, 1)) * 255)
        .permute(1, 2, 0)
        .numpy()
    )


def test_wide_image_is_centred_on_a_padded_square():
    image = np.zeros((32, 64, 3), dtype=np.uint8)
    image[...] = (200, 10, 50)
    pixels, (t,) = processor(64)([image])
    assert pixels.shape == (1, 3, 64, 64) and pixels.dtype == torch.float32
    assert (t.pad_x, t.pad_y, t.side, t.scale) == (0, 16, 64, 1.0)
    rgb = unnormalise(pixels[0])
    np.testing.assert_allclose(rgb[2, 10], PAD, atol=0.5)  # top band: pad colour
    np.testing.assert_allclose(rgb[32, 10], (200, 10, 50), atol=0.5)
    np.testing.assert_allclose(rgb[60, 40], PAD, atol=0.5)  # bottom band


def test_tall_image_is_padded_left_and_right_and_resized():
    image = np.full((200, 100, 3), 255, dtype=np.uint8)
    pixels, (t,) = processor(50)([image])
    assert (t.pad_x, t.pad_y, t.side) == (50, 0, 200) and t.scale == 0.25
    rgb = unnormalise(pixels[0])
    np.testing.assert_allclose(rgb[25, 3], PAD, atol=1.0)
    np.testing.assert_allclose(rgb[25, 25], (255, 255, 255), atol=1.0)
    np.testing.assert_allclose(t.content_box(), [12.5, 0, 37.5, 50])


@pytest.mark.parametrize("w, h, size", [(640, 480, 336), (480, 640, 128), (333, 101, 64), (50, 50, 336)])
def test_box_round_trip_through_pad_and_resize(w, h, size):
    t = ImageTransform.for_image(w, h, size)
    rng = np.random.default_rng(0)
    x0, y0 = rng.uniform(0, w / 2, 5), rng.uniform(0, h / 2, 5)
    boxes = np.stack([x0, y0, x0 + rng.uniform(1, w / 2, 5), y0 + rng.uniform(1, h / 2, 5)], axis=1)
    np.testing.assert_allclose(t.to_source(t.to_model(boxes)), boxes, atol=1e-9)
    # The whole model input maps to the source image (clipped), its content box exactly.
    np.testing.assert_allclose(t.to_source(np.array([0, 0, size, size])), [0, 0, w, h])
    np.testing.assert_allclose(t.to_source(t.content_box(), clip=False), [0, 0, w, h], atol=1e-9)


def test_a_pixel_lands_where_the_transform_says():
    image = np.zeros((300, 400, 3), dtype=np.uint8)
    image[200:220, 300:320] = 255  # a white square at x 300..320, y 200..220
    pixels, (t,) = processor(100)([image])
    x0, y0, x1, y1 = t.to_model(np.array([300, 200, 320, 220]))
    bright = unnormalise(pixels[0]).mean(-1) > 128
    ys, xs = np.nonzero(bright)
    assert abs(xs.min() - x0) <= 1 and abs(xs.max() + 1 - x1) <= 1
    assert abs(ys.min() - y0) <= 1 and abs(ys.max() + 1 - y1) <= 1


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros((10, 10), dtype=np.uint8), "HxWx3"),
        (np.zeros((10, 10, 4), dtype=np.uint8), "HxWx3"),
        (np.zeros((10, 10, 3), dtype=np.float32), "uint8"),
        (np.zeros((0, 10, 3), dtype=np.uint8), "empty"),
        ("not an image", "numpy"),
    ],
)
def test_bad_images_name_the_problem(bad, message):
    with pytest.raises(ValueError, match=message):
        processor()([np.zeros((4, 4, 3), dtype=np.uint8), bad])
    with pytest.raises(ValueError, match="empty list"):
        processor()([])


def test_square_crop_adds_context_keeps_min_size_and_stays_inside():
    image = np.arange(480 * 640 * 3, dtype=np.uint32).reshape(480, 640, 3).astype(np.uint8)
    crop, box = square_crop(image, (100, 100, 110, 110), margin=0.5, min_size=64)
    assert crop.shape == (64, 64, 3) and box[2] - box[0] == 64
    assert box[0] <= 100 and box[2] >= 110 and box[1] <= 100 and box[3] >= 110
    np.testing.assert_array_equal(crop, image[int(box[1]) : int(box[3]), int(box[0]) : int(box[2])])
    crop, box = square_crop(image, (600, 450, 640, 480), margin=0.5, min_size=16)  # corner: shifted in
    assert crop.shape == (80, 80, 3) and tuple(box[2:]) == (640, 480)
    crop, box = square_crop(image, (0, 0, 640, 480), margin=0.5, min_size=16)  # wider than tall
    assert crop.shape == (480, 640, 3)


# Run in a fresh interpreter, so its peak RSS is this work's alone; RLIMIT_AS keeps the old
# pad-first code (19 GB for the 40000x1 frame) from taking the machine down with it; 8 GB,
# as a CUDA build of torch (the version floor's, from PyPI) reserves more than 3 GB of
# address space as it imports.
_THIN_FRAMES = r"""
import json, resource, sys, time
resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))
import numpy as np, torch
from sharpeye_ros.model import SharpEyes, presets
from sharpeye_ros.model.preprocess import ImageProcessor

torch.manual_seed(0)
processor = ImageProcessor(336, (122, 116, 104), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))  # CLIP-L/336's size
config = presets.tiny()
config.generation.max_new_tokens = 4
model = SharpEyes.from_config(config).eval()
model.caption([np.zeros((8, 600, 3), np.uint8)], refine=True, zoom=True)  # warm up every kernel
processor.one(np.zeros((2, 600, 3), np.uint8))
peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MB (Linux reports KB)
out = {}
for h, w in ((1, 16000), (1, 40000), (40000, 1)):
    image = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    before, start = peak(), time.perf_counter()
    pixels, transform = processor.one(image)
    seconds = time.perf_counter() - start
    (result,) = model.caption([image], refine=True, zoom=True)  # zoom crops come from the source
    out[f"{w}x{h}"] = {"preprocess_s": seconds, "extra_peak_mb": peak() - before,
                       "shape": list(pixels.shape), "zoomed": result.zoomed}
print(json.dumps(out))
"""


@pytest.mark.slow
def test_long_thin_frames_cost_what_the_model_input_costs():
    import json
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-c", _THIN_FRAMES], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    measured = json.loads(run.stdout.strip().splitlines()[-1])
    for size, m in measured.items():
        assert m["shape"] == [3, 336, 336] and m["zoomed"], (size, m)
        assert m["extra_peak_mb"] < 50 and m["preprocess_s"] < 0.5, (size, m)


def _pad_then_resize(image: np.ndarray, size: int) -> torch.Tensor:
    """LLaVA's order, the reference: the full padded square, resized (0..255 floats)."""
    h, w = image.shape[:2]
    t = ImageTransform.for_image(w, h, size)
    canvas = np.empty((t.side, t.side, 3), dtype=np.uint8)
    canvas[...] = PAD
    canvas[t.pad_y : t.pad_y + h, t.pad_x : t.pad_x + w] = image
    x = torch.from_numpy(canvas).permute(2, 0, 1)[None].float()
    if t.side != size:
        x = F.interpolate(x, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
    return x[0].clamp(0, 255)


@pytest.mark.parametrize("h, w", [(480, 640), (640, 480), (300, 301), (33, 100), (100, 33), (7, 3),
                                  (50, 50), (1, 500), (500, 1), (2, 128), (1, 2)])
def test_pixels_equal_padding_to_the_square_then_resizing(h, w):
    # Same pixels as LLaVA's order to float rounding (the demo model's captions depend on
    # them), without building the square.
    image = np.random.default_rng(h * 1000 + w).integers(0, 256, (h, w, 3), dtype=np.uint8)
    pixels, _ = ImageProcessor(128, PAD, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)).one(image)
    np.testing.assert_allclose((pixels * 255).numpy(), _pad_then_resize(image, 128).numpy(), atol=1e-3)
