"""Writing splits to disk and the command line."""

import json

import cv2
import numpy as np
import pytest

from sharpeye_ros.world import SceneConfig, generate_scene, read_objects, write_split
from sharpeye_ros.world.dataset import main


def test_write_split_round_trips(tmp_path):
    config = SceneConfig(width=320, height=240)
    json_path = write_split(tmp_path, "small", 3, config, start=5)
    data = json.loads(json_path.read_text())
    assert [image["id"] for image in data["images"]] == [5, 6, 7]
    objects = read_objects(json_path)
    for image in data["images"]:
        scene = generate_scene("small", image["id"], config)
        png = cv2.cvtColor(cv2.imread(str(tmp_path / image["file_name"])), cv2.COLOR_BGR2RGB)
        assert np.array_equal(png, scene.image)  # PNG is lossless: same pixels as in memory
        assert (image["width"], image["height"]) == (320, 240)
        captions = [a["caption"] for a in data["annotations"] if a["image_id"] == image["id"]]
        assert captions == list(scene.captions)
        assert objects[image["id"]] == scene.objects
        assert image["objects"][0]["centre"] == list(scene.objects[0].centre)
    assert len({a["id"] for a in data["annotations"]}) == len(data["annotations"])


def test_read_objects_explains_bad_files(tmp_path):
    coco = tmp_path / "coco.json"
    coco.write_text(json.dumps({"images": [{"id": 1, "file_name": "x.png"}], "annotations": []}))
    with pytest.raises(ValueError, match="coco.json.*no 'objects'"):
        read_objects(coco)
    bad_object = {"shape": "ring", "colour": "red", "size_class": "large", "size": 70.0,
                  "box": [0, 0, 70, 70], "position": "top left"}
    odd = tmp_path / "odd.json"
    odd.write_text(json.dumps({"images": [{"id": 1, "objects": [bad_object]}], "annotations": []}))
    with pytest.raises(ValueError, match="unknown shape"):
        read_objects(odd)
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(ValueError, match="broken.json"):
        read_objects(broken)


def test_command_line_writes_requested_splits(tmp_path, capsys):
    assert main(["--out", str(tmp_path), "test:2", "val", "--count", "1",
                 "--width", "256", "--height", "192"]) == 0
    assert len(json.loads((tmp_path / "test.json").read_text())["images"]) == 2
    assert len(json.loads((tmp_path / "val.json").read_text())["images"]) == 1
    assert len(list((tmp_path / "test").glob("*.png"))) == 2
    assert "test: 2 scenes" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["bogus"], "unknown split"), (["test:x"], "bad count"), (["--width", "10"], "width"),
])
def test_command_line_rejects_bad_arguments(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["--out", str(tmp_path)] + argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
