"""The evaluation command end to end on a very small random model, and the bars."""

from __future__ import annotations

import json
import math

import pytest
import torch

from sharpeye_ros.evaluation.evaluate import MODES, caption_modes, main, recorded_command, score_modes
from sharpeye_ros.evaluation.report import bars
from sharpeye_ros.model import SharpEyes
from sharpeye_ros.data import open_dataset
from sharpeye_ros.training.recipes import RECIPES


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model")
    SharpEyes.from_config(RECIPES["smoke"]().model_config()).save_pretrained(path)
    return path


@pytest.mark.slow
def test_command_writes_report_json_and_figure(model_dir, tmp_path):
    out = tmp_path / "docs" / "evaluation"
    assert main(["--model", str(model_dir), "--data", "world:test:3:1", "--output", str(out),
                 "--examples", "2", "--batch-size", "2"]) == 0
    result = json.loads(out.with_suffix(".json").read_text())
    assert result["samples"] == 3 and list(result["scores"]) == list(MODES)
    for mode in MODES:
        scores = result["scores"][mode]
        for key in ("bleu4", "cider", "f1_large", "f1_small", "pointing_all", "iou_all"):
            assert key in scores
        assert 0 <= scores["bleu4"] <= 100
        assert len(result["captions"][mode]) == 3
    report = out.with_suffix(".md").read_text()
    assert "| glance |" in report and "| refined + zoom |" in report and "## Bars" in report
    assert "world:test:3:1" in report and "evaluation_examples.png" in report
    png = (tmp_path / "docs" / "evaluation_examples.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--data", "world:test:3:1", "--notes", "trained --notes twice"],
         "--data world:test:3:1 --notes NOTES"),
        (["--notes=a b", "--examples", "2"], "--notes=NOTES --examples 2"),
        (["--note", "x", "--threads", "2"], "--note NOTES --threads 2"),
        (["--title", "world:test notes", "--no-caption-metrics"],
         "--title world:test notes --no-caption-metrics"),
    ],
)
def test_the_recorded_command_shows_notes_as_a_placeholder(argv, expected):
    assert recorded_command(argv) == "sharpeye-evaluate " + expected


def test_modes_share_a_glance_and_score_against_ground_truth(model_dir):
    model = SharpEyes.from_pretrained(model_dir)
    dataset = open_dataset("world:test:2:1")
    outputs, truth = caption_modes(model, dataset, ("glance", "zoom"), batch_size=2)
    glance = model.caption([dataset[1]["image"]], refine=False)[0]
    assert outputs["glance"].captions[1] == glance.caption  # same as a plain glance
    assert set(truth.objects) == {0, 1} and truth.has_objects
    # Hand the scorer a perfect caption: every object named, F1 100.
    outputs["glance"].captions = {i: truth.references[i][0] for i in truth.references}
    scores = score_modes(outputs, truth, with_captions=False)
    assert scores["glance"]["f1_all"] == 100.0 and "bleu4" not in scores["glance"]


def test_a_model_without_deeplens_gets_a_clear_error(model_dir, tmp_path, capsys):
    model = SharpEyes.from_pretrained(model_dir)
    model.deeplens = None
    with pytest.raises(ValueError, match="no DeepLens"):
        caption_modes(model, open_dataset("world:test:1"), MODES)
    assert main(["--model", str(tmp_path / "nothing"), "--output", str(tmp_path / "r"), "--data", "world:test:1"]) == 2
    assert "no such model directory" in capsys.readouterr().err


def test_bars_compare_glance_and_zoom():
    good = {"glance": {"f1_large": 93.0, "f1_small": 20.0, "pointing_all": 85.0},
            "zoom": {"f1_large": 93.0, "f1_small": 31.0, "pointing_all": 70.0}}
    assert [ok for *_, ok in bars(good)] == [True, True, True]
    bad = {"glance": {"f1_large": 89.0, "f1_small": 20.0, "pointing_all": math.nan},
           "zoom": {"f1_large": 93.0, "f1_small": 29.0, "pointing_all": 90.0}}
    assert [ok for *_, ok in bars(bad)] == [False, False, False]
    assert bars({"glance": good["glance"]}) == []
