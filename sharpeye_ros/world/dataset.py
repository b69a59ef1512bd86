"""Write world splits to disk as PNG images plus a COCO-style captions JSON.

Layout (``file_name`` is relative to the folder holding the JSON)::

    OUT/test.json              {"info": {...}, "images": [...], "annotations": [...]}
    OUT/test/000000.png ...

Each ``images`` entry is ``{"id", "file_name", "width", "height", "objects"}``, with
``objects`` as :meth:`WorldObject.to_dict` writes them; each ``annotations`` entry is
``{"id", "image_id", "caption"}``, the canonical caption first for every image. Real
caption datasets in the same JSON format simply lack ``objects``.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Optional, Sequence, Union

import cv2

from sharpeye_ros.world.scene import SPLITS, SceneConfig, generate_scene, split_config


def write_split(out_dir: Union[str, Path], split: str, count: int,
                config: Optional[SceneConfig] = None, start: int = 0) -> Path:
    """Render scenes ``start .. start+count-1`` of ``split`` into ``out_dir``; returns the JSON path."""
    if count < 1 or start < 0:
        raise ValueError(f"write_split: need count >= 1 and start >= 0, got count={count}, start={start}")
    config = split_config(split, config)
    out_dir = Path(out_dir)
    (out_dir / split).mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for index in range(start, start + count):
        scene = generate_scene(split, index, config)
        file_name = f"{split}/{index:06d}.png"
        if not cv2.imwrite(str(out_dir / file_name), cv2.cvtColor(scene.image, cv2.COLOR_RGB2BGR)):
            raise OSError(f"could not write image {out_dir / file_name}")
        images.append({"id": index, "file_name": file_name, "width": config.width,
                       "height": config.height, "objects": [o.to_dict() for o in scene.objects]})
        annotations.extend({"id": len(annotations) + i, "image_id": index, "caption": caption}
                           for i, caption in enumerate(scene.captions))
    info = {"description": "sharpeye_ros synthetic shapes world", "split": split,
            "config": asdict(config)}
    json_path = out_dir / f"{split}.json"
    json_path.write_text(json.dumps({"info": info, "images": images, "annotations": annotations}))
    return json_path


def _split_count(text: str, default: int) -> tuple[str, int]:
    name, _, number = text.partition(":")
    if name not in SPLITS:
        raise argparse.ArgumentTypeError(f"unknown split {name!r}; choose from {', '.join(SPLITS)}")
    try:
        return name, int(number) if number else default
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad count in {text!r}; write SPLIT or SPLIT:COUNT") from None


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command line: ``python -m sharpeye_ros.world --out DIR [train:5000 val:200 ...]``."""
    parser = argparse.ArgumentParser(
        prog="python -m sharpeye_ros.world",
        description="Render synthetic-world splits as PNG images plus COCO-style captions JSON.")
    parser.add_argument("splits", nargs="*", default=list(SPLITS),
                        help="SPLIT or SPLIT:COUNT, SPLIT one of " + ", ".join(SPLITS) + " (default: all)")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--count", type=int, default=100, help="scenes per split without a COUNT")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--min-objects", type=int, default=1)
    parser.add_argument("--max-objects", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0, help="world seed (0 is the standard world)")
    args = parser.parse_args(argv)
    try:
        requests = [_split_count(text, args.count) for text in args.splits]
        config = SceneConfig(width=args.width, height=args.height, min_objects=args.min_objects,
                             max_objects=args.max_objects, seed=args.seed)
        for split, count in requests:
            began = time.perf_counter()
            path = write_split(args.out, split, count, config)
            print(f"{split}: {count} scenes -> {path} ({time.perf_counter() - began:.1f} s)")
    except (argparse.ArgumentTypeError, ValueError) as error:
        parser.error(str(error))
    return 0
