"""The command line: arguments, results files, merging and rendering."""

from __future__ import annotations

import dataclasses
import json

import pytest

from sharpeye_ros.benchmark import run
from sharpeye_ros.benchmark.results import GpuCheck, Results


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--models", "paper,huge"], "--models"),
        (["--device", "tpu"], "--device"),
        (["--repeats", "0"], "--repeats"),
        (["--warmup", "-1"], "--warmup"),
        (["--model-path", "/no/such/dir"], "--model-path"),
    ],
)
def test_bad_arguments_are_refused_with_their_name(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run.parse_args(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_defaults_and_quick():
    args = run.parse_args([])
    assert args.models == ["paper", "demo"] and args.dtype == "float32" and args.repeats == 3
    quick = run.parse_args(["--quick"])
    assert quick.repeats == 1 and quick.node_captions == 10


def test_load_results_refuses_what_is_not_a_results_file(tmp_path):
    assert run.load_results(tmp_path / "missing.json").runs == {}
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(run.BenchmarkError, match="bad.json"):
        run.load_results(bad)
    bad.write_text(json.dumps({"runs": []}))
    with pytest.raises(run.BenchmarkError, match="not a benchmark results file"):
        run.load_results(bad)


def test_merge_replaces_runs_of_the_same_kind_only(tiny_run):
    def a_run(name):
        return dataclasses.replace(tiny_run, command=name)

    base = Results(runs={"cpu": a_run("old cpu"), "cuda": a_run("old gpu")})
    other = Results(runs={"cuda": a_run("new gpu")}, gpu_check=GpuCheck(gpu="X"))
    merged = base.merged(other)
    assert merged.runs == {"cpu": a_run("old cpu"), "cuda": a_run("new gpu")}
    assert merged.gpu_check == GpuCheck(gpu="X") and base.runs["cuda"] == a_run("old gpu")


def test_tests_summary(tmp_path):
    log = tmp_path / "log"
    log.write_text("....\n======== 41 passed, 2 skipped in 12.30s ========\n")
    assert run.tests_summary(log) == "41 passed, 2 skipped in 12.30s"
    log.write_text("nothing here\n")
    assert "no pytest summary" in run.tests_summary(log)


def test_render_and_merge_write_the_docs(tiny_run, tmp_path, capsys):
    gpu_file = tmp_path / "gpu.json"
    gpu_run = tiny_run.to_json()
    gpu_run["machine"]["gpu"] = "Test GPU"
    gpu_run["machine"]["gpu_memory_bytes"] = 2**34
    gpu_file.write_text(json.dumps({"format": 1, "runs": {"cuda": gpu_run}}))
    log = tmp_path / "tests.log"
    log.write_text("7 passed in 1.0s\n")
    out = tmp_path / "docs"
    assert run.main(["--merge", str(gpu_file), "--tests-log", str(log), "--out-dir", str(out)]) == 0
    text = (out / "benchmarks.md").read_text()
    assert "Test GPU" in text and "7 passed in 1.0s" in text
    assert (out / "benchmarks.png").exists()
    results = json.loads((out / "benchmarks.json").read_text())
    assert set(results["runs"]) == {"cuda"}
    assert run.main(["--render", "--out-dir", str(out)]) == 0
    assert (out / "benchmarks.md").read_text() == text
    assert run.main(["--merge", str(tmp_path / "nope.json"), "--out-dir", str(out)]) == 1
    assert "nope.json: no such results file" in capsys.readouterr().err


@pytest.mark.slow
def test_model_only_run_measures_in_a_subprocess(tmp_path, short_model_dir):
    """The whole model-only path: limits, a worker process per model, bounds, results file."""
    out = tmp_path / "results.json"
    code = run.main(
        [
            "--model-only",
            "--models",
            "demo",
            "--model-path",
            str(short_model_dir),
            "--repeats",
            "1",
            "--warmup",
            "0",
            "--json",
            str(out),
        ]
    )
    assert code == 0
    results = json.loads(out.read_text())
    cpu = results["runs"]["cpu"]
    assert cpu["limits"]["matmul_flops_per_s"] > 0 and not cpu.get("errors")
    # sampled before and after the models; the limit is the best sample
    assert len(cpu["limits"]["matmul_samples"]) == 2
    assert cpu["limits"]["matmul_flops_per_s"] == max(cpu["limits"]["matmul_samples"])
    (model,) = cpu["models"]
    assert model["name"] == "demo" and not model["random_weights"] and model["tokens_source"] == "natural"
    assert set(model["modes"]) == {"glance", "deeplens", "deeplens_nodraft", "zoom", "naive"}
    assert model["bounds"]["glance"]["vision"]["achieved"] > 0
    assert "node" not in cpu
