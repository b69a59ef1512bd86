"""Data for training and evaluation: caption records, their readers and datasets.

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

from sharpeye_ros.data.datasets import DENSE_SCENES, CaptionDataset, WorldScenes, open_dataset, references
from sharpeye_ros.data.records import (
    CaptionRecord,
    default_caption_ids,
    load_image,
    read_coco,
    read_llava,
    read_pseudo_captions,
)

__all__ = [
    "DENSE_SCENES",
    "CaptionDataset",
    "CaptionRecord",
    "WorldScenes",
    "default_caption_ids",
    "load_image",
    "open_dataset",
    "read_coco",
    "read_llava",
    "read_pseudo_captions",
    "references",
]
