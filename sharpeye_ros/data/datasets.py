"""Datasets of caption records (samples ``{"index", "image", "size", "captions",
"objects"}``, plus glance ``pixels`` when a processor is given) and the data spec strings
that name them (:func:`open_dataset`; the formats are in :mod:`sharpeye_ros.data`).
"""

from __future__ import annotations

from multiprocessing import get_context
from typing import Any, Optional, Sequence

import torch
from torch.utils.data import Dataset

from sharpeye_ros.data.records import CaptionRecord, default_caption_ids, load_image, read_coco, read_llava
from sharpeye_ros.world import SceneConfig, generate_scene


class CaptionDataset(Dataset):
    """Records as samples: ``{"index", "image", "captions", "objects"}``, the image loaded
    from disk (RGB uint8), plus ``"pixels"`` when a ``processor`` is given (so DataLoader
    workers do the resizing)."""

    def __init__(self, records: Sequence[CaptionRecord], processor=None):
        self.records = list(records)
        self.processor = processor

    def __len__(self) -> int:
        return len(self.records)

    def references(self, index: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(caption ids, captions) of a sample, without loading its image."""
        return self.records[index].references()

    def __getitem__(self, index: int) -> dict:
        record = self.records[index]
        image = load_image(record.image_path)
        sample = {"index": index, "image": image, "size": (image.shape[1], image.shape[0]),
                  "captions": record.captions, "objects": record.objects}
        if self.processor is not None:
            sample["pixels"] = self.processor.one(image, name=record.image_path)[0]
        return sample


def _render(job: tuple[str, int, SceneConfig, Any]) -> tuple:
    split, index, config, processor = job
    scene = generate_scene(split, index, config)
    pixels = processor.one(scene.image)[0].half() if processor is not None else None
    return scene.image, scene.objects, scene.captions, pixels


def _worker_init() -> None:
    torch.set_num_threads(1)  # one process per core already


# Scenes for pretraining the vision tower: many objects, mostly ones a glance can name, so
# every image carries several shapes to learn (a standard scene has 1-3, a third small).
DENSE_SCENES = {"min_objects": 4, "max_objects": 6, "size_weights": (1.0, 1.0, 0.5)}


class WorldScenes(Dataset):
    """Synthetic scenes ``start .. start+count-1`` of ``split``, rendered once into memory
    (``workers`` processes); samples like :class:`CaptionDataset`. ``processor``:
    precompute the glance pixels too (float16, halving their memory); ``keep_images``
    False drops the full-resolution images then (samples have no ``image``)."""

    def __init__(self, split: str, count: int, config: Optional[SceneConfig] = None, start: int = 0,
                 processor=None, workers: int = 1, keep_images: bool = True):
        if count < 1:
            raise ValueError(f"world data: need at least 1 scene, got {count}")
        self.split, self.config = split, config or SceneConfig()
        jobs = [(split, start + i, self.config, processor) for i in range(count)]
        if workers > 1 and count >= 256:  # below that, starting the workers costs more
            with get_context("spawn").Pool(workers, initializer=_worker_init) as pool:
                rendered = pool.map(_render, jobs, chunksize=16)
        else:
            rendered = [_render(job) for job in jobs]
        self.sizes = [(r[0].shape[1], r[0].shape[0]) for r in rendered]
        self.images = [r[0] for r in rendered] if keep_images or processor is None else None
        self.objects = [r[1] for r in rendered]
        self.captions = [r[2] for r in rendered]
        self.ids = [start + i for i in range(count)]
        self.pixels = torch.stack([r[3] for r in rendered]) if processor is not None else None

    def __len__(self) -> int:
        return len(self.sizes)

    def references(self, index: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(caption ids, captions) of a scene."""
        return default_caption_ids(self.ids[index], len(self.captions[index])), tuple(self.captions[index])

    def __getitem__(self, index: int) -> dict:
        sample = {"index": index, "size": self.sizes[index], "captions": self.captions[index],
                  "objects": self.objects[index]}
        if self.images is not None:
            sample["image"] = self.images[index]
        if self.pixels is not None:
            sample["pixels"] = self.pixels[index].float()
        return sample

    def records(self) -> list[CaptionRecord]:
        """The scenes as records (``image_path`` names the scene, nothing is on disk)."""
        return [CaptionRecord(i, f"world:{self.split}:{i}", c, o)
                for i, c, o in zip(self.ids, self.captions, self.objects)]


def references(dataset: Dataset) -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
    """(caption ids, captions) of every sample of a dataset (a concatenation too)."""
    if isinstance(dataset, torch.utils.data.ConcatDataset):
        return [r for part in dataset.datasets for r in references(part)]
    if not hasattr(dataset, "references"):
        raise ValueError(f"{type(dataset).__name__}: its samples' reference captions are unknown")
    return [dataset.references(i) for i in range(len(dataset))]


def open_dataset(spec: str, processor=None, workers: int = 1) -> Dataset:
    """The dataset a spec string names (see the module docstring)."""
    kind, _, rest = spec.partition(":")
    parts = rest.split(":") if rest else []
    try:
        if kind == "world":
            if not 2 <= len(parts) <= 4:
                raise ValueError("write world:SPLIT:COUNT[:SEED[:START]]")
            seed = int(parts[2]) if len(parts) > 2 else 0
            start = int(parts[3]) if len(parts) > 3 else 0
            return WorldScenes(parts[0], int(parts[1]), SceneConfig(seed=seed), start, processor, workers)
        if kind == "world-dense":
            if not 1 <= len(parts) <= 2:
                raise ValueError("write world-dense:COUNT[:SEED]")
            config = SceneConfig(seed=int(parts[1]) if len(parts) > 1 else 0, **DENSE_SCENES)
            return WorldScenes("train", int(parts[0]), config, 0, processor, workers, keep_images=False)
        if kind == "coco" and 1 <= len(parts) <= 2:
            return CaptionDataset(read_coco(parts[0], parts[1] if len(parts) > 1 else None), processor)
        if kind == "llava" and len(parts) == 2:
            return CaptionDataset(read_llava(parts[0], parts[1]), processor)
        raise ValueError("write world:SPLIT:COUNT[:SEED[:START]], world-dense:COUNT[:SEED], "
                         "coco:JSON[:FOLDER] or llava:JSON:FOLDER")
    except ValueError as error:
        raise ValueError(f"data spec '{spec}': {error}") from error
