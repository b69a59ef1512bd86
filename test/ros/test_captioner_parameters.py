"""Captioner parameters: specs, validation reasons, settings, and config/captioner.yaml."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from sharpeye_ros.ros.captioner_parameters import PARAMETERS, SPECS, CaptionerSettings, validate

CONFIG = Path(__file__).resolve().parents[2] / "config" / "captioner.yaml"
INTERFACE = {"model_path", "device", "dtype", "image_transport", "reliability", "max_rate", "refine", "zoom",
             "task", "num_regions", "min_region_score", "max_image_pixels", "max_aspect_ratio",
             "diagnostics_period", "autostart", "min_scene_change", "on_still", "max_still_seconds",
             "max_still_share", "jpeg_quality"}


def test_parameter_names_are_the_published_interface():
    assert {spec.name for spec in PARAMETERS} == INTERFACE
    assert {f.name for f in dataclasses.fields(CaptionerSettings)} == INTERFACE
    read_only = {spec.name for spec in PARAMETERS if spec.read_only}
    # model_path, device and dtype: changeable while unconfigured (the node refuses them otherwise)
    assert read_only == {"autostart", "image_transport", "reliability", "diagnostics_period"}
    assert all(spec.description for spec in PARAMETERS)


def test_defaults_are_valid():
    for spec in PARAMETERS:
        assert validate(spec.name, spec.default) is None, spec.name
    assert CaptionerSettings() == CaptionerSettings.from_values({})


@pytest.mark.parametrize("name, value, reason", [
    ("max_rate", 0.0, r"'max_rate' must be in \[0.01, 100\], got 0.0"),
    ("max_rate", -2.0, r"must be in \[0.01, 100\]"),
    ("max_rate", float("nan"), r"'max_rate' must be finite"),
    ("max_rate", 2, r"'max_rate' must be a double, got integer 2 \(write 2.0\)"),
    ("max_rate", "fast", r"must be a double, got string"),
    ("num_regions", 17, r"'num_regions' must be in \[0, 16\], got 17"),
    ("num_regions", True, r"'num_regions' must be a integer, got bool"),
    ("min_region_score", 1.5, r"'min_region_score' must be in \[0, 1\]"),
    ("max_image_pixels", 0, r"'max_image_pixels' must be in"),
    ("refine", 1, r"'refine' must be a bool, got integer"),
    ("device", "gpu", r"'device' must be auto, cpu, cuda or cuda:N; got 'gpu'"),
    ("device", "cuda:x", r"'device' must be"),
    ("dtype", "int4", r"'dtype' must be one of auto, float32, float16, bfloat16, bfloat16-mixed, int8, int8-vision; got 'int4'"),
    ("image_transport", "theora", r"'image_transport' must be one of raw, compressed"),
    ("reliability", "sometimes", r"'reliability' must be one of best_effort, reliable"),
    ("task", "long", r"'task' must be one of auto, coco, detailed; got 'long'"),
    ("max_still_share", 1.5, r"'max_still_share' must be in \[0, 1\], got 1.5"),
    ("max_still_share", -0.1, r"'max_still_share' must be in \[0, 1\]"),
    ("max_still_share", float("nan"), r"'max_still_share' must be finite"),
    ("frobnicate", 1, r"unknown parameter 'frobnicate'"),
])
def test_bad_values_get_a_reason(name, value, reason):
    message = validate(name, value)
    assert message is not None and re.search(reason, message), message


@pytest.mark.parametrize("name, value", [
    ("max_rate", 0.01), ("max_rate", 100.0), ("num_regions", 0), ("num_regions", 16),
    ("min_region_score", 0.0), ("min_region_score", 1.0), ("device", "cuda:1"), ("device", "cpu"),
    ("dtype", "bfloat16"), ("dtype", "int8"), ("image_transport", "compressed"), ("reliability", "reliable"),
    ("task", "detailed"), ("task", "coco"), ("max_still_share", 0.0), ("max_still_share", 1.0),
])
def test_good_values_pass(name, value):
    assert validate(name, value) is None


def test_settings_update_validates_and_copies():
    settings = CaptionerSettings()
    changed = settings.updated({"max_rate": 5.0, "refine": False})
    assert (changed.max_rate, changed.refine) == (5.0, False)
    assert settings.max_rate == SPECS["max_rate"].default  # the original is untouched
    with pytest.raises(ValueError, match="num_regions"):
        settings.updated({"num_regions": -1})


def test_config_file_sets_every_parameter_with_a_comment():
    text = CONFIG.read_text()
    data = yaml.safe_load(text)
    assert list(data) == ["/**/captioner"]  # the captioner in any namespace
    values = data["/**/captioner"]["ros__parameters"]
    assert set(values) == INTERFACE
    for name, value in values.items():
        assert validate(name, value) is None, f"config/captioner.yaml: {name}: {validate(name, value)}"
    lines = text.splitlines()
    for i, line in enumerate(lines):
        key = re.match(r"^\s{4}(\w+):", line)
        if key:  # the line before each parameter is (the end of) its comment
            assert lines[i - 1].strip().startswith("#"), f"{key.group(1)} has no comment"
