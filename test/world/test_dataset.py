"""Writing splits to disk and the command line."""

import json

import cv2
import numpy as np
import pytest

from sharpeye_ros.world import SceneConfig, WorldObject, generate_scene, write_split
from sharpeye_ros.world.dataset import main


def test_write_split_round_trips(tmp_path):
    config = SceneConfig(width=320, height=240)
    json_path = write_split(tmp_path, "small", 3, config, start=5)
    data = json.loads(json_path.read_text())
    assert [image["id"] for image in data["images"]] == [5, 6, 7]
    for image in data["images"]:
        scene = generate_scene("small", image["id"], config)
        png = cv2.cvtColor(cv2.imread(str(tmp_path / image["file_name"])), cv2.COLOR_BGR2RGB)
        assert np.array_equal(png, scene.image)  # PNG is lossless: same pixels as in memory
        assert (image["width"], image["height"]) == (320, 240)
        captions = [a["caption"] for a in data["annotations"] if a["image_id"] == image["id"]]
        assert captions == list(scene.captions)
        assert tuple(WorldObject.from_dict(o) for o in image["objects"]) == scene.objects
        assert image["objects"][0]["centre"] == list(scene.objects[0].centre)
    assert len({a["id"] for a in data["annotations"]}) == len(data["annotations"])


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
