"""Training and evaluation data: caption records, their readers and datasets.

Three sources give the same :class:`CaptionRecord` list:

- COCO captions JSON (``images[{id, file_name}]``, ``annotations[{image_id, caption}]``)
  with an image folder; the synthetic world's exported splits are this format too, with
  ground-truth ``objects`` per image (:func:`read_coco`);
- LLaVA conversation JSON (``[{"image", "conversations": [human, gpt, ...]}]``), the
  caption being the first ``gpt`` turn (:func:`read_llava`);
- the synthetic world rendered in memory (:class:`WorldScenes`), no files at all.

A data *spec* string names one on the command line (:func:`open_dataset`)::

    world:train:3000          synthetic split "train", scenes 0..2999 (world seed 0)
    world:test:200:7          ... of world seed 7
    world-dense:2000[:SEED]   4-6 objects a scene, mostly large or medium ("train" split),
                              glance pixels only: dense labels for pretraining the vision tower
    coco:PATH.json[:FOLDER]   FOLDER defaults to the JSON's folder
    llava:PATH.json:FOLDER

Every reference caption has a *caption id*: a COCO annotation's ``id``, a LLaVA entry's
``id``, else ``IMAGE_ID:K`` (its image's id and its index among the image's captions).
Stage 2 can read pseudo-initial captions made elsewhere (e.g. by an LLM, as the paper
does) by those ids: a JSON Lines file, one line per caption id (:func:`read_pseudo_captions`)::

    {"caption_id": "48", "pseudo_captions": ["A cat on a red sofa.", "Two dogs on a sofa.", "..."]}
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from sharpeye_ros.world import SceneConfig, WorldObject, generate_scene

PathLike = Union[str, os.PathLike]


@dataclass(frozen=True)
class CaptionRecord:
    """One image and its reference captions (``objects``: synthetic ground truth, or None).
    ``caption_ids``: one per caption; None: ``IMAGE_ID:K``."""

    image_id: Union[int, str]
    image_path: str
    captions: tuple[str, ...]
    objects: Optional[tuple[WorldObject, ...]] = None
    caption_ids: Optional[tuple[str, ...]] = None

    def references(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(caption ids, captions)."""
        return self.caption_ids or default_caption_ids(self.image_id, len(self.captions)), self.captions


def default_caption_ids(image_id: Union[int, str], count: int) -> tuple[str, ...]:
    """``IMAGE_ID:K`` for each of an image's ``count`` captions."""
    return tuple(f"{image_id}:{k}" for k in range(count))


def load_image(path: PathLike) -> np.ndarray:
    """An RGB uint8 HxWx3 array, or ValueError naming the file."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"{path}: missing or not a readable image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _read_json(path: PathLike) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except OSError as error:
        raise ValueError(f"{path}: cannot read ({error.strerror or error})") from error
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from error


def read_coco(json_path: PathLike, image_root: Optional[PathLike] = None) -> list[CaptionRecord]:
    """Records of a COCO captions JSON; ``file_name`` is relative to ``image_root``
    (default: the JSON's folder). Images without captions are skipped."""
    data = _read_json(json_path)
    root = Path(image_root) if image_root is not None else Path(json_path).parent
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) \
            or not isinstance(data.get("annotations"), list):
        raise ValueError(f"{json_path}: a COCO captions JSON needs lists 'images' and 'annotations'")
    captions: dict[Any, list[str]] = {}
    ids: dict[Any, list[str]] = {}
    for n, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or "image_id" not in ann or not isinstance(ann.get("caption"), str):
            raise ValueError(f"{json_path}: annotations[{n}] needs 'image_id' and a string 'caption'")
        captions.setdefault(ann["image_id"], []).append(ann["caption"].strip())
        k = len(ids.setdefault(ann["image_id"], []))
        ids[ann["image_id"]].append(str(ann["id"]) if "id" in ann else f"{ann['image_id']}:{k}")
    records = []
    for n, image in enumerate(data["images"]):
        if not isinstance(image, dict) or "id" not in image or not isinstance(image.get("file_name"), str):
            raise ValueError(f"{json_path}: images[{n}] needs 'id' and a string 'file_name'")
        if image["id"] not in captions:
            continue
        objects = None
        if "objects" in image:
            try:
                objects = tuple(WorldObject.from_dict(o) for o in image["objects"])
            except (ValueError, TypeError, KeyError) as error:
                raise ValueError(f"{json_path}: images[{n}] has bad 'objects' ({error})") from error
        records.append(CaptionRecord(image["id"], str(root / image["file_name"]),
                                     tuple(captions[image["id"]]), objects, tuple(ids[image["id"]])))
    if not records:
        raise ValueError(f"{json_path}: no image has a caption")
    return records


def read_llava(json_path: PathLike, image_root: PathLike) -> list[CaptionRecord]:
    """Records of a LLaVA conversation JSON; the caption is the first ``gpt`` turn.
    Entries without an image (text-only conversations) are skipped."""
    data = _read_json(json_path)
    if not isinstance(data, list):
        raise ValueError(f"{json_path}: a LLaVA JSON is a list of conversations")
    records = []
    for n, entry in enumerate(data):
        if not isinstance(entry, dict) or not isinstance(entry.get("conversations"), list):
            raise ValueError(f"{json_path}: entry {n} needs a 'conversations' list")
        if "image" not in entry:
            continue
        answer = next((t.get("value") for t in entry["conversations"]
                       if isinstance(t, dict) and t.get("from") == "gpt"), None)
        if not isinstance(answer, str) or not answer.strip():
            raise ValueError(f"{json_path}: entry {n} has no 'gpt' turn with a caption")
        image_id = entry.get("id", n)
        records.append(CaptionRecord(image_id, str(Path(image_root) / entry["image"]), (answer.strip(),),
                                     caption_ids=(str(image_id),)))
    if not records:
        raise ValueError(f"{json_path}: no entry has an image")
    return records


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


def read_pseudo_captions(path: PathLike) -> dict[str, tuple[str, ...]]:
    """Pseudo-initial captions by caption id, from a JSON Lines file: one line per caption
    id, ``{"caption_id": ID, "pseudo_captions": [TEXT, ...]}`` (blank lines are skipped).
    Other fields (e.g. the reference ``caption``, which ``python -m
    sharpeye_ros.training.perturb`` writes) are ignored. A ValueError names the file, the
    line and what is wrong with it."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as error:
        raise ValueError(f"{path}: cannot read ({error.strerror or error})") from error
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 text ({error})") from error
    out: dict[str, tuple[str, ...]] = {}
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}:{n}: not valid JSON ({error})") from error
        pseudo = entry.get("pseudo_captions") if isinstance(entry, dict) else None
        if not isinstance(entry, dict) or not isinstance(entry.get("caption_id"), (str, int)) \
                or not isinstance(pseudo, list) or not pseudo \
                or not all(isinstance(c, str) and c.strip() for c in pseudo):
            raise ValueError(f"{path}:{n}: write {{\"caption_id\": ID, \"pseudo_captions\": [TEXT, ...]}} "
                             "with at least one non-empty caption")
        key = str(entry["caption_id"])
        if key in out:
            raise ValueError(f"{path}:{n}: caption id {key!r} appears twice")
        out[key] = tuple(c.strip() for c in pseudo)
    return out


def references(dataset: Dataset) -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
    """(caption ids, captions) of every sample of a dataset (a concatenation too)."""
    if isinstance(dataset, torch.utils.data.ConcatDataset):
        return [r for part in dataset.datasets for r in references(part)]
    if not hasattr(dataset, "references"):
        raise ValueError(f"{type(dataset).__name__}: its samples' reference captions are unknown")
    return [dataset.references(i) for i in range(len(dataset))]


class PseudoCaptionPairs(Dataset):
    """Stage-2 pairs as the paper makes them: every reference caption of ``dataset`` with
    each of its pseudo-initial captions, one sample per pair (``captions``: the reference
    alone; ``initial``: the pseudo-initial caption; ``index``: the pair's).

    ``pseudo``: captions by caption id (:func:`read_pseudo_captions`), its first
    ``per_caption`` each (None: all); without it, ``per_caption`` rule-based ones per
    reference (:func:`~sharpeye_ros.training.perturb.pseudo_initial`), fixed by ``seed``
    and the pair, as a set made once would be."""

    def __init__(self, dataset: Dataset, per_caption: Optional[int] = None,
                 pseudo: Optional[dict[str, tuple[str, ...]]] = None, seed: int = 0,
                 max_changes: int = 3, misname_small: float = 0.0):
        if pseudo is None and (per_caption is None or per_caption < 1):
            raise ValueError("pseudo-caption pairs: give per_caption >= 1 or pseudo-captions")
        self.dataset, self.seed, self.max_changes, self.misname_small = dataset, seed, max_changes, misname_small
        self.pairs: list[tuple[int, str, Optional[str]]] = []  # (sample, reference, pseudo-initial or None)
        for index, (ids, captions) in enumerate(references(dataset)):
            for key, caption in zip(ids, captions):
                if pseudo is None:
                    self.pairs += [(index, caption, None)] * per_caption
                    continue
                if key not in pseudo:
                    raise ValueError(f"pseudo-captions: none for caption id {key!r} ({caption!r})")
                made = pseudo[key]
                if per_caption is not None and len(made) < per_caption:
                    raise ValueError(f"pseudo-captions: caption id {key!r} has {len(made)}, "
                                     f"the stage asks for {per_caption}")
                self.pairs += [(index, caption, p) for p in made[:per_caption]]

    def __len__(self) -> int:
        return len(self.pairs)

    def initial(self, index: int) -> str:
        """The pseudo-initial caption of pair ``index`` (no image loaded)."""
        from sharpeye_ros.training.perturb import pseudo_initial

        _, target, initial = self.pairs[index]
        if initial is not None:
            return initial
        return pseudo_initial(target, np.random.default_rng([self.seed, index]), self.max_changes, self.misname_small)

    def __getitem__(self, index: int) -> dict:
        sample, target, _ = self.pairs[index]
        return {**self.dataset[sample], "index": index, "captions": (target,), "initial": self.initial(index)}


def collate(samples: list[dict]) -> dict:
    """A batch: lists per key, ``pixels`` stacked when every sample has them."""
    batch = {key: [s[key] for s in samples] for key in samples[0] if key != "pixels"}
    if all("pixels" in s for s in samples):
        batch["pixels"] = torch.stack([s["pixels"] for s in samples])
    return batch


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
