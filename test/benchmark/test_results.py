"""The typed results: the results file read and written again is the same file, and
what is not a results file is refused, saying where."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sharpeye_ros.benchmark import run
from sharpeye_ros.benchmark.results import ModelResult, NodeResult, Results, ResultsError, Skipped

REPO = Path(__file__).resolve().parents[2]


def test_the_docs_results_file_reads_and_writes_back_unchanged():
    text = (REPO / "docs" / "benchmarks.json").read_text()
    results = Results.from_json(json.loads(text))
    assert json.dumps(results.to_json(), indent=1) + "\n" == text
    cpu = results.runs["cpu"]
    assert cpu.model("paper").mode("glance").total.mean > 0
    assert all(isinstance(v, NodeResult) for v in cpu.node.values())


def test_a_measurement_survives_the_worker_s_json(tiny_measurement):
    again = ModelResult.from_json(json.loads(json.dumps(tiny_measurement.to_json())))
    assert again == tiny_measurement
    # Keys that the worker leaves out stay out: a CPU mode has no CUDA peaks.
    assert "cuda_peak_reserved_bytes" not in tiny_measurement.to_json()["modes"]["glance"]


def test_skipped_modes_and_failed_node_runs_keep_their_reasons(tiny_run):
    data = tiny_run.to_json()
    data["models"][0]["modes"]["zoom"] = {"skipped": "the model has no DeepLens"}
    data["node"] = {"reliable": "the captioner gave 0 of 3 warm-up captions"}
    results = Results.from_json({"format": 1, "runs": {"cpu": data}})
    model = results.runs["cpu"].models[0]
    assert model.modes["zoom"] == Skipped(skipped="the model has no DeepLens")
    assert model.mode("zoom") is None and "zoom" not in model.measured_modes
    assert results.runs["cpu"].node == {"reliable": "the captioner gave 0 of 3 warm-up captions"}
    assert results.to_json()["runs"]["cpu"] == data


@pytest.mark.parametrize(
    "change, where",
    [
        (lambda m: m["modes"]["glance"]["total"].update(mean="fast"), "models[0].modes.glance.total.mean"),
        (lambda m: m["modes"]["glance"].update(stagez={}), "models[0].modes.glance: unknown keys ['stagez']"),
        (lambda m: m.pop("geometry"), "models[0]: missing 'geometry'"),
        (lambda m: m["params"].update(vision=True), "models[0].params.vision: expected int"),
        (lambda m: m.update(image_size="640x480"), "models[0].image_size: expected a list"),
    ],
)
def test_what_is_not_a_result_is_refused_saying_where(tiny_run, change, where):
    data = tiny_run.to_json()
    change(data["models"][0])
    with pytest.raises(ResultsError, match="runs.cpu." + where.replace("[", r"\[").replace("]", r"\]")):
        Results.from_json({"format": 1, "runs": {"cpu": data}})


def test_a_results_file_with_a_broken_run_is_a_clear_error(tmp_path):
    """Not a crash in the middle of rendering: the file is refused when it is read."""
    path = tmp_path / "gpu.json"
    path.write_text(json.dumps({"format": 1, "runs": {"cuda": {"machine": {"cpu": "x"}}}}))
    with pytest.raises(run.BenchmarkError, match=r"gpu.json: not a benchmark results file .*runs\.cuda"):
        run.load_results(path)
    assert run.main(["--merge", str(path), "--out-dir", str(tmp_path / "docs")]) == 1
    assert not (tmp_path / "docs" / "benchmarks.md").exists()
