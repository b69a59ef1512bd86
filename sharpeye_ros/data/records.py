"""Caption records and their readers: COCO captions JSON, LLaVA conversation JSON, and
stage 2's pseudo-initial captions (JSON Lines). Every failure is a ValueError naming the
file and what is wrong with it. The package docstring (:mod:`sharpeye_ros.data`) gives
the formats.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import cv2
import numpy as np

from sharpeye_ros.world import WorldObject

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
