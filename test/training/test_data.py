"""Dataset readers: COCO captions JSON + folder, LLaVA JSON, the synthetic world."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from sharpeye_ros.model.config import SharpEyesConfig
from sharpeye_ros.model.preprocess import ImageProcessor
from sharpeye_ros.data import (
    CaptionDataset, WorldScenes, open_dataset, read_coco, read_llava, read_pseudo_captions, references,
)
from sharpeye_ros.training.loop import collate
from sharpeye_ros.training.perturb import PseudoCaptionPairs
from sharpeye_ros.world import generate_scene, write_split


def _png(path, seed):
    image = np.random.default_rng(seed).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return image


def test_coco_json_with_an_image_folder(tmp_path):
    a = _png(tmp_path / "imgs" / "a.png", 0)
    b = _png(tmp_path / "imgs" / "sub" / "b.png", 1)
    data = {"images": [{"id": 7, "file_name": "a.png"}, {"id": 9, "file_name": "sub/b.png"},
                       {"id": 11, "file_name": "uncaptioned.png"}],
            "annotations": [{"image_id": 9, "caption": " two cats. "}, {"image_id": 7, "caption": "a dog."},
                            {"image_id": 9, "caption": "cats on a sofa."}]}
    (tmp_path / "captions.json").write_text(json.dumps(data))
    records = read_coco(tmp_path / "captions.json", tmp_path / "imgs")
    assert [r.image_id for r in records] == [7, 9]  # the uncaptioned image is skipped
    assert records[1].captions == ("two cats.", "cats on a sofa.")
    assert records[0].objects is None
    dataset = CaptionDataset(records)
    assert np.array_equal(dataset[0]["image"], a) and np.array_equal(dataset[1]["image"], b)
    assert dataset[1]["captions"] == ("two cats.", "cats on a sofa.")


def test_world_export_reads_back_with_objects_and_pixels(tmp_path):
    json_path = write_split(tmp_path, "test", 2)
    processor = ImageProcessor(64, (0, 0, 0), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    dataset = open_dataset(f"coco:{json_path}", processor=processor)  # folder: the JSON's
    scene = generate_scene("test", 1)
    sample = dataset[1]
    assert np.array_equal(sample["image"], scene.image)
    assert sample["captions"] == scene.captions and sample["objects"] == scene.objects
    assert tuple(sample["pixels"].shape) == (3, 64, 64)


def test_llava_json(tmp_path):
    image = _png(tmp_path / "folder" / "x.jpg", 2)
    data = [
        {"id": "x", "image": "x.jpg", "conversations": [
            {"from": "human", "value": "<image>\nDescribe the photo briefly."},
            {"from": "gpt", "value": "A red kite in the sky. "}]},
        {"id": "text-only", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]},
    ]
    (tmp_path / "llava.json").write_text(json.dumps(data))
    records = read_llava(tmp_path / "llava.json", tmp_path / "folder")
    assert len(records) == 1 and records[0].captions == ("A red kite in the sky.",)
    assert records[0].image_id == "x"
    assert CaptionDataset(records)[0]["image"].shape == image.shape


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    (json.dumps({"images": []}), "'images' and 'annotations'"),
    (json.dumps({"images": [{"id": 1}], "annotations": [{"image_id": 1, "caption": "x"}]}), "images[0]"),
    (json.dumps({"images": [{"id": 1, "file_name": "a.png"}], "annotations": [{"image_id": 1}]}), "annotations[0]"),
    (json.dumps({"images": [{"id": 1, "file_name": "a.png", "objects": [
        {"shape": "ring", "colour": "red", "size_class": "large", "size": 70.0, "box": [0, 0, 70, 70],
         "position": "top left"}]}], "annotations": [{"image_id": 1, "caption": "x"}]}), "unknown shape"),
])
def test_bad_coco_json_names_the_file_and_the_problem(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ValueError, match="bad.json") as info:
        read_coco(path)
    assert message in str(info.value)


def test_bad_llava_and_missing_files_have_clear_errors(tmp_path):
    path = tmp_path / "llava.json"
    path.write_text(json.dumps([{"image": "a.png", "conversations": [{"from": "human", "value": "<image>"}]}]))
    with pytest.raises(ValueError, match="entry 0 has no 'gpt' turn"):
        read_llava(path, tmp_path)
    with pytest.raises(ValueError, match="cannot read"):
        read_coco(tmp_path / "absent.json")
    path.write_text(json.dumps({"images": [{"id": 1, "file_name": "gone.png"}],
                                "annotations": [{"image_id": 1, "caption": "x"}]}))
    with pytest.raises(ValueError, match="gone.png: missing or not a readable image"):
        CaptionDataset(read_coco(path))[0]


def test_world_scenes_in_memory_match_the_world():
    processor = ImageProcessor(32, (0, 0, 0), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    dataset = WorldScenes("val", 3, start=5, processor=processor)
    scene = generate_scene("val", 6)
    assert len(dataset) == 3
    assert np.array_equal(dataset[1]["image"], scene.image) and dataset[1]["objects"] == scene.objects
    # float16 storage: within half-precision rounding of the processor's pixels
    assert np.allclose(dataset[1]["pixels"].numpy(), processor.one(scene.image)[0].numpy(), atol=2e-2)
    batch = collate([dataset[0], dataset[2]])
    assert tuple(batch["pixels"].shape) == (2, 3, 32, 32) and batch["index"] == [0, 2]
    assert [r.image_id for r in dataset.records()] == [5, 6, 7]


@pytest.mark.parametrize("spec", ["world:train", "world:nosuch:3", "coco:", "llava:x.json", "pets:x", "world:train:x"])
def test_bad_specs_name_the_spec(spec):
    with pytest.raises(ValueError, match=f"data spec '{spec}'"):
        open_dataset(spec)


def test_the_demo_tokenizer_covers_every_world_token():
    from sharpeye_ros.training.recipes import demo_model
    from sharpeye_ros.model.tokenizer import build_word_tokenizer
    from sharpeye_ros.world import vocabulary

    cfg: SharpEyesConfig = demo_model()
    tokenizer = build_word_tokenizer(cfg.lm.vocab_words)
    unk = tokenizer.unk_token_id
    ids = tokenizer(" ".join(vocabulary()) + " " + cfg.lm.refine_prompt.replace("<image>", "").replace("{caption}", ""))["input_ids"]
    assert unk not in ids


def _coco_with_ids(tmp_path):
    _png(tmp_path / "a.png", 0)
    _png(tmp_path / "b.png", 1)
    data = {"images": [{"id": 7, "file_name": "a.png"}, {"id": 9, "file_name": "b.png"}],
            "annotations": [{"id": 101, "image_id": 9, "caption": "two cats on a sofa."},
                            {"id": 102, "image_id": 7, "caption": "a dog on a beach."},
                            {"image_id": 9, "caption": "a cat."}]}  # no id: IMAGE_ID:K
    (tmp_path / "captions.json").write_text(json.dumps(data))
    return CaptionDataset(read_coco(tmp_path / "captions.json"))


def test_every_reference_caption_has_an_id(tmp_path):
    assert references(_coco_with_ids(tmp_path)) == [
        (("102",), ("a dog on a beach.",)), (("101", "9:1"), ("two cats on a sofa.", "a cat."))]
    world = WorldScenes("val", 2, start=5)
    assert [ids for ids, _ in references(world)] == [tuple(f"{i}:{k}" for k in range(len(c)))
                                                    for i, c in zip((5, 6), world.captions)]


def test_pseudo_captions_from_a_json_lines_file_pair_with_their_references(tmp_path):
    dataset = _coco_with_ids(tmp_path)
    path = tmp_path / "pseudo.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in [
        {"caption_id": 101, "pseudo_captions": ["two dogs on a sofa.", "a cat on a bed.", "two cats on a bed."]},
        {"caption_id": "102", "caption": "a dog on a beach.", "pseudo_captions": ["a cat on a beach.", "x.", "y."]},
        {"caption_id": "9:1", "pseudo_captions": ["a dog.", "two cats.", "a bird.", "a fish."]},
    ]) + "\n\n")
    pseudo = read_pseudo_captions(path)
    assert pseudo["101"][1] == "a cat on a bed." and len(pseudo["9:1"]) == 4
    pairs = PseudoCaptionPairs(dataset, 3, pseudo)
    assert len(pairs) == 9  # 3 references x 3
    sample = pairs[3]
    assert sample["captions"] == ("two cats on a sofa.",) and sample["initial"] == "two dogs on a sofa."
    assert np.array_equal(sample["image"], dataset[1]["image"]) and sample["index"] == 3
    assert len(PseudoCaptionPairs(dataset, None, pseudo)) == 10  # all of them
    with pytest.raises(ValueError, match="caption id '102' has 3, the stage asks for 5"):
        PseudoCaptionPairs(dataset, 5, pseudo)
    with pytest.raises(ValueError, match="none for caption id '102'"):
        PseudoCaptionPairs(dataset, 3, {k: v for k, v in pseudo.items() if k != "102"})


@pytest.mark.parametrize("content, message", [
    ('{"caption_id": 1, "pseudo_captions": ["a"]}\n{"caption_id": "1", "pseudo_captions": ["b"]}',
     r":2: caption id '1' appears twice"),
    ('{"caption_id": 1, "pseudo_captions": []}', r":1: write"),
    ('{"caption_id": 1, "pseudo": ["a"]}', r":1: write"),
    ('\n{"caption_id": 1', r":2: not valid JSON"),
])
def test_bad_pseudo_caption_files_name_the_line(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(ValueError, match="bad.jsonl" + message):
        read_pseudo_captions(path)
    with pytest.raises(ValueError, match="cannot read"):
        read_pseudo_captions(tmp_path / "absent.jsonl")


def test_rule_based_pairs_are_fixed_three_per_reference():
    world = WorldScenes("train", 2)
    pairs = PseudoCaptionPairs(world, 3, seed=4)
    captions = [c for _, cs in references(world) for c in cs]
    assert len(pairs) == 3 * len(captions)
    assert [pairs[i]["captions"][0] for i in range(len(pairs))] == [c for c in captions for _ in range(3)]
    made = [pairs.initial(i) for i in range(len(pairs))]
    assert made == [pairs[i]["initial"] for i in range(len(pairs))]  # the same each time it is read
    assert any(len(set(made[i:i + 3])) > 1 for i in range(0, len(made), 3))  # three draws, not one repeated
    assert made != [PseudoCaptionPairs(world, 3, seed=5).initial(i) for i in range(len(pairs))]
