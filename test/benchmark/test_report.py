"""Targets, the markdown and the plot, from results."""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from sharpeye_ros.benchmark import report, run
from sharpeye_ros.benchmark.bounds import with_bounds
from sharpeye_ros.benchmark.results import (
    FastPath, GpuCheck, Limits, NodeResult, PerCaption, Results, Skipped, StillResult,
)
from sharpeye_ros.benchmark.targets import targets

REPO = Path(__file__).resolve().parents[2]


def _paper(run, glance_s: float, deeplens_s: float, flops: int):
    """The tiny measurement renamed 'paper', with chosen totals and glance FLOPs."""
    model = copy.deepcopy(run.models[0])
    model.name = "paper"
    model.modes["glance"].total.mean = glance_s
    model.modes["glance"].flops = {"vision": flops}
    model.modes["glance"].per_caption = None  # judged against the run's best sample
    model.modes["deeplens"].total.mean = deeplens_s
    # Its DeepLens captions: a glance as long as the glance alone, then the refinement.
    stage = model.modes["deeplens"].stages["vision"]
    model.modes["deeplens"].stages = {
        "vision": dataclasses.replace(stage, mean=glance_s),
        "deeplens": dataclasses.replace(stage, mean=deeplens_s - glance_s),
    }
    return model


def _node(p95: float, reliability: str = "best_effort", transport: str = "default") -> NodeResult:
    s = {"n": 30, "mean": p95 / 2, "p50": p95 / 2, "p95": p95, "min": 0.0, "max": p95}
    part = {k: s for k in ("latency", "message_latency", "model", "overhead", "message_overhead")}
    return NodeResult.from_json({
        "captions": 30,
        "frames_sent": 32,
        "frames_lost": 2,
        "publish_gap_s": 0.02,
        "frame_timeout_s": 1.0,
        "image_size": [640, 480],
        "device": "cpu",
        "refine": True,
        "zoom": False,
        "reliability": reliability,
        "rmw": "rmw_fastrtps_cpp",
        "refined": True,
        "transport": transport,
        "model_name": "demo",
        "all": part,
        "rgb8": part,
        "bgr8": part,
    })


def test_targets_pass_and_fail_from_measurements(tiny_run):
    cpu = copy.deepcopy(tiny_run)
    # 1e11 FLOP/s: 2e11 FLOPs take 2 s at the bound; 2.5 s measured is 1.25x.
    cpu.models = [_paper(tiny_run, 2.5, 3.5, int(2e11))]
    cpu.node = {
        "best_effort": _node(0.008),
        "best_effort_large_shm": _node(0.003, transport="large_shm"),
        "reliable": _node(0.012, "reliable"),
    }
    results = Results(runs={"cpu": cpu})
    found = targets(results)
    deeplens_cpu = found[0]
    assert deeplens_cpu.measured == pytest.approx(0.4) and deeplens_cpu.passed is False
    # The ratio is the refinement over the glance timed in the same captions, not the
    # difference of two runs: a glance run that happened to be slow changes nothing.
    slow_glance = copy.deepcopy(results)
    slow_glance.runs["cpu"].models[0].modes["glance"].total.mean = 3.4
    assert targets(slow_glance)[0].measured == pytest.approx(0.4)
    assert "in the same captions" in deeplens_cpu.detail
    flop = next(t for t in found if "FLOP bound" in t.name)
    assert flop.measured == pytest.approx(1.25) and flop.passed is True
    assert "vs the roofline" in flop.detail  # the bounds of the tiny run, per stage
    node = {t.name: t.passed for t in found if t.name.startswith("Node overhead")}
    assert node == {
        "Node overhead at p95, 640x480, best_effort image QoS": True,
        "Node overhead at p95, 640x480, best_effort image QoS, 16 MiB shared memory": True,
        "Node overhead at p95, 640x480, reliable image QoS": False,
    }
    gpu = [t for t in found if t.passed is None and "GPU" in t.name]
    assert {t.name for t in found if t.passed is None and "fast path" not in t.name} == {  # no fast-path run here
        "DeepLens adds <= 25% to the glance, paper size, GPU",
        "Paper size + DeepLens fits a GPU in fp16",
        "Still view: CPU <= 5% of gating off",  # no still-view run in these results
        "Still view: the forced caption as the still period says",
        "Changing view: every change captioned within one caption interval",
        "Small object appearing never skipped at the default threshold",
    }
    assert all(t.machine is None and t.detail.startswith("not measured") for t in gpu)
    memory = next(t for t in gpu if "fits a GPU" in t.name)
    params = sum(cpu.models[0].params.values())
    assert f"{2 * params / 1e9:.2f} GB in fp16" in memory.detail  # the weights, from the CPU run
    text = report.render_markdown(dataclasses.replace(results, gpu_note="the device time was used up"))
    assert "No GPU figures: the device time was used up." in text


def test_gpu_memory_target_counts_the_cuda_context(tiny_run):
    gpu = copy.deepcopy(tiny_run)
    gpu.machine.gpu = "Test GPU"
    paper = _paper(tiny_run, 0.1, 0.12, int(1e9))
    paper.device, paper.cuda_context_bytes = "cuda", int(0.5e9)
    paper.modes["deeplens"].cuda_peak_reserved_bytes = int(2.0e9)
    paper.modes["deeplens"].cuda_peak_allocated_bytes = int(1.5e9)
    gpu.models = [paper]
    found = {t.name: t for t in targets(Results(runs={"cuda": gpu}))}
    memory = found["Paper size + DeepLens fits a GPU in fp16"]
    assert memory.measured == int(2.5e9) and memory.passed is True
    assert memory.machine.startswith("Test GPU")
    assert found["DeepLens adds <= 25% to the glance, paper size, GPU"].measured == pytest.approx(0.2)


def test_markdown_reports_every_run_with_machine_and_date(tiny_run):
    cpu = copy.deepcopy(tiny_run)
    cpu.models.append(_paper(tiny_run, 2.5, 3.0, int(2e11)))
    cpu.node = {"best_effort": _node(0.004), "reliable": "the captioner gave 0 of 3 warm-up captions"}
    text = report.render_markdown(Results(runs={"cpu": cpu}), "benchmarks.png")
    m = cpu.machine
    assert m.date_utc in text and m.cpu in text and m.torch in text
    assert "## Targets" in text and "**pass**" in text and "not measured" in text
    assert "![" in text and "benchmarks.png" in text
    assert "naive" in text and "GFLOP" in text and "rgb8" in text and "bgr8" in text
    assert "None" not in text and "nan" not in text
    for mode in ("glance + DeepLens", "refinement without draft", "zoom"):
        assert mode in text


def test_plot_is_written(tiny_run, tmp_path):
    cpu = copy.deepcopy(tiny_run)
    cpu.models.append(_paper(tiny_run, 2.5, 3.0, int(2e11)))
    cpu = with_bounds(cpu)
    path = report.write_plot(Results(runs={"cpu": cpu}), tmp_path / "plot.png")
    assert path is not None and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report.write_plot(Results(runs={}), tmp_path / "empty.png") is None


def test_bounds_are_added_per_mode(tiny_run):
    model = tiny_run.models[0]
    assert set(model.bounds) == set(model.modes)
    vision = model.bounds["glance"]["vision"]
    assert vision.flops == model.modes["glance"].flops["vision"]
    assert vision.flop_bound_s == pytest.approx(vision.flops / 1e11)
    steps = model.geometry.tokens - 1
    assert model.bounds["glance"]["decode"].bytes > steps * model.geometry.lm_bytes  # + KV cache
    assert model.bounds["glance"]["regions"].achieved is None


def test_the_limits_say_which_samples_they_are_the_best_of():
    def limits(matmul, read):
        return Limits(dtype="float32", matmul_size=64, read_mib=1, matmul_samples=matmul, read_samples=read,
                      matmul_flops_per_s=max(matmul), read_bytes_per_s=max(read))

    note = report._samples_note(limits([1.6e11, 3.2e11], [1.8e10, 1.2e10]))
    assert "160, 320 GFLOP/s" in note and "18.0, 12.0 GB/s" in note
    assert report._samples_note(limits([1e11], [1e10])) == ""


def test_flop_bound_verdict_takes_each_caption_against_the_throughput_around_it(tiny_run):
    cpu = copy.deepcopy(tiny_run)
    paper = _paper(tiny_run, 2.5, 3.0, int(2e11))
    # The run's best sample is 1e11 FLOP/s (2 s bound, 1.25x), but the machine was slower
    # while these captions ran: 2.4 s at 1e11, 3.0 s at 0.8e11, 2.8 s at 0.9e11 FLOP/s.
    paper.modes["glance"].per_caption = PerCaption(seconds=[2.4, 3.0, 2.8], matmul_flops_per_s=[1e11, 0.8e11, 0.9e11])
    cpu.models = [paper]
    flop = next(t for t in targets(Results(runs={"cpu": cpu})) if "FLOP bound" in t.name)
    assert flop.measured == pytest.approx(1.2)  # median of 1.2, 1.2, 1.26
    assert "1.25x" in flop.detail and "sampled around it" in flop.detail
    paper.modes["glance"].per_caption.seconds = [3.2, 3.2, 3.2]
    flop = next(t for t in targets(Results(runs={"cpu": cpu})) if "FLOP bound" in t.name)
    assert flop.measured == pytest.approx(1.44) and flop.passed is True


def test_the_limit_section_shows_where_each_stage_s_time_goes(tiny_run):
    mode = dataclasses.replace(
        tiny_run.models[0].modes["glance"],
        op_seconds={"vision": {"matmul": 1.0, "attention": 0.2, "other": 0.3, "outside": 0.1}},
        op_flops={"vision": {"matmul": int(2.5e11), "attention": int(2e10), "other": 0}},
    )
    table = report._ops_table(mode, peak_flops_per_s=2.5e11)
    assert table[0].startswith("| stage | profiled | matmul")
    row = table[2]
    assert row.startswith(
        "| vision | 1.60 s | 1.00 s | 250 (100%) | 200.0 ms | 100 (40%) | 300.0 ms | 100.0 ms |"
    )
    no_profile = dataclasses.replace(mode, op_seconds=None, op_flops={})
    assert report._ops_table(no_profile, 2.5e11) == []  # a GPU run has no profile


def test_the_markdown_has_the_op_profile_and_the_roofline_floor(tiny_run):
    cpu = copy.deepcopy(tiny_run)
    cpu.models.append(_paper(tiny_run, 2.5, 3.0, int(2e11)))
    cpu = with_bounds(cpu)
    text = report.render_markdown(Results(runs={"cpu": cpu}))
    assert "Where its time goes, in one profiled caption" in text and "outside ops" in text
    flop = next(t for t in targets(Results(runs={"cpu": cpu})) if "FLOP bound" in t.name)
    assert "at its roofline would itself be" in flop.detail


def test_the_docs_render_again_from_their_results_byte_for_byte(tmp_path):
    """``benchmark --render`` on the committed docs/benchmarks.json writes the committed
    docs/benchmarks.md: the report (its template, tables and number formats) renders what
    the measured run rendered."""
    shutil.copy(REPO / "docs" / run.RESULTS_NAME, tmp_path / run.RESULTS_NAME)
    assert run.main(["--render", "--out-dir", str(tmp_path)]) == 0
    rendered = (tmp_path / run.DOC_NAME).read_text()
    assert rendered == (REPO / "docs" / run.DOC_NAME).read_text()


def test_the_installed_template_has_every_block_the_report_renders(tiny_run, monkeypatch, still_result):
    """The template is package data beside the installed module (CMakeLists.txt installs
    the folder; setup.cfg's package_data ships it in the wheel), and its blocks are the
    ones the report asks for, each rendered with the values it gives: none missing, none
    left over."""
    shipped = Path(report.__file__).with_name(report.TEMPLATE)
    assert shipped.is_file() and "<!-- block: header -->" in shipped.read_text()
    used: list[str] = []
    real = report.prose
    monkeypatch.setattr(report, "prose", lambda block, /, **values: used.append(block) or real(block, **values))
    cpu = copy.deepcopy(tiny_run)
    cpu.models[0].modes["zoom"] = Skipped(skipped="the model has no DeepLens")
    cpu.node = {"best_effort": _node(0.004), "reliable": "the captioner gave 0 of 3 warm-up captions"}
    cpu.models[0].node_side = None
    cpu.still = still_result(errors=["the captioner gave no caption"])
    cpu.limits = dataclasses.replace(cpu.limits, matmul_samples=[1e11, 0.9e11], read_samples=[1e10, 1.1e10])
    check = GpuCheck(gpu="Test GPU", date_utc="2026-12-01", model_tests="7 passed")
    text = report.render_markdown(Results(runs={"cpu": cpu}, gpu_note="no device", gpu_check=check), "plot.png")
    text += report.render_markdown(run.load_results(REPO / "docs" / run.RESULTS_NAME))
    text += report.render_markdown(Results())  # nothing measured
    text += report.render_markdown(Results(fast_path=_fast_path_with_side_by_sides(cpu.machine.to_json())))
    pieces = _fast_path_with_side_by_sides(cpu.machine.to_json())
    text += report.render_markdown(Results(fast_path=FastPath(peers=pieces.peers)))  # no speed run
    assert set(used) == set(report.template_blocks())
    assert "$" not in text  # every value filled in
    assert "Not measured: zoom: the model has no DeepLens." in text
    assert "- reliable: not measured: the captioner gave 0 of 3 warm-up captions" in text
    assert "No naive reference was measured." in text
    assert "On Test GPU, 2026-12-01: model tests: 7 passed." in text


def test_still_view_targets_and_section(tiny_run, still_result):
    cpu = copy.deepcopy(tiny_run)
    cpu.still = still_result()
    results = Results(runs={"cpu": cpu})
    found = {t.name: t for t in targets(results)}
    demo, paper = found["Still view: CPU <= 5% of gating off, demo"], found["Still view: CPU <= 5% of gating off, paper"]
    assert demo.measured == pytest.approx(0.015) and demo.passed is True
    assert paper.measured == pytest.approx(0.08) and paper.passed is False
    assert demo.machine.startswith("Still CPU (2 threads), 2026-12-02")  # where the still view was measured
    assert "1 model captions and 105 reused in 60 s" in demo.detail
    assert "amortised: 0.0055 idle + 0.03 CPU s per model caption / 60 s still period (the node's" in demo.detail
    assert "over the window" in paper.detail  # no parts: the window's own ratio
    period = found["Still view: the forced caption as the still period says, demo"]
    assert period.measured == 0.0 and period.passed is True and "1 forced caption(s), 1 due" in period.detail
    assert "Still view: the forced caption as the still period says, paper" not in found  # not reported
    late = found["Changing view: every change captioned within one caption interval"]
    assert late.measured == pytest.approx(0.1) and late.passed is False
    small = found["Small object appearing never skipped at the default threshold"]
    assert small.measured == 0.0 and small.passed is True and "0 of 20 scenes" in small.detail
    text = report.render_markdown(results)
    assert "## Idle when the view is still" in text and "Measured on Still CPU (2 threads)" in text
    assert "| demo | on | 9.9 Hz | 0.0060 | 0.0055 | 0.03 s | 60 s | 1 | 105 | 60 s | 1.5% |" in text
    assert "| paper | on | - | 0.1600 | - | - | 60 s | 1 | 110 | 60 s | 8.0% |" in text  # parts not measured
    # idle + one model caption per still period: 0.0055 + 0.03 / 60 = 0.0060, 1.5% of 0.4
    assert ("demo: 0.0055 + 0.03 / 60 (the node's: max(60, 0.15 s caption / 0.02)) = 0.0060 CPU s/s, 1.5% of "
            "gating off, of which the forced caption 0.1%") in text
    assert "max_still_seconds 60 s, max_still_share 0.02)" in text
    assert "**amortised from these measured parts**" in text
    assert "| small object | 5 | 4 | 1 | 0 |" in text  # 5 small-object changes, one reused
    assert "| small object | 0 of 20 | 0.230 / 0.240 / 0.400 | 3 of 20 | 0.004 / 0.014 / 0.400 |" in text
    assert "| Still view: CPU <= 5% of gating off, paper | 8.0% | <= 5% | **FAIL** |" in text
    assert "9 of 10" in text
    again = StillResult.from_json(cpu.still.to_json(), "still")
    assert again == cpu.still  # the results file keeps it as it is


def test_a_stretched_still_period_is_amortised_and_checked_against_the_formula(tiny_run, still_result):
    # The paper size on a 2-core CPU: a 22 s caption at max_still_share 0.02 stretches the
    # period to 1100 s; its 60 s window holds no forced caption (none due), its parts do.
    cpu = copy.deepcopy(tiny_run)
    cpu.still = still_result()
    on = cpu.still.cpu[1].on
    on.idle_cpu_seconds_per_second, on.model_caption_cpu_seconds = 0.024, 38.0
    on.max_still_share, on.model_last_s, on.still_period_s = 0.02, 22.0, 1100.0
    on.window_still_period_s, on.still_seconds, on.model_captions = 1250.0, 70.0, 0
    results = Results(runs={"cpu": cpu})
    found = {t.name: t for t in targets(results)}
    paper = found["Still view: CPU <= 5% of gating off, paper"]
    # (0.024 + 38 / 1100) / 2.0 = 0.0293: the window's own ratio (8%) is not what counts
    assert paper.measured == pytest.approx((0.024 + 38.0 / 1100.0) / 2.0) and paper.passed is True
    assert "/ 1100 s still period" in paper.detail
    period = found["Still view: the forced caption as the still period says, paper"]
    assert period.measured == pytest.approx(0.0) and period.passed is True
    assert "max(60, 22.000 / 0.02) = 1100.0 s" in period.detail and "0 forced caption(s), 0 due" in period.detail
    text = report.render_markdown(results)
    assert "paper: 0.0240 + 38.00 / 1100 (the node's: max(60, 22.00 s caption / 0.02)) = 0.0585 CPU s/s" in text
    assert "| paper | on | - | 0.1600 | 0.0240 | 38.00 s | 1100 s | 0 |" in text
    # A period off the formula, a forced caption missing when due, or one before it: fail.
    on.still_period_s = 1000.0
    assert next(t for t in targets(results) if t.name == period.name).passed is False
    on.still_period_s, on.still_seconds = 1100.0, 1300.0  # lasted its period: one was due
    assert next(t for t in targets(results) if t.name == period.name).measured == 1.0
    on.still_seconds, on.model_captions = 70.0, 1  # one came, none due
    assert next(t for t in targets(results) if t.name == period.name).measured == 1.0
    on.max_still_share = 0.0  # share 0: max_still_seconds whatever the caption took
    assert on.documented_period == 60.0


def test_a_block_the_template_lacks_or_a_value_not_given_is_a_clear_error():
    with pytest.raises(report.TemplateError, match="has no block 'summary'"):
        report.prose("summary")
    with pytest.raises(report.TemplateError, match="block 'stages': no value for 'machine'"):
        report.prose("stages", run="CPU")
    assert report.prose("stages", run="CPU", machine="m") == ["", "## CPU: time per stage", "", "Measured on m.", ""]


def _fast_path(int8_glance: float, machine: dict):
    """A fast-path record: paper float32 3.0 s glance, 4.0 s with DeepLens, int8 as given."""
    from sharpeye_ros.benchmark.results import FastPath, FastPathRow, NodeRate, NodeRates, Roofline, RooflineStage

    def row(precision: str, mode: str, seconds: float, base: float) -> FastPathRow:
        return FastPathRow(model="paper", precision=precision, mode=mode, seconds=seconds, times=[seconds],
                           stages={"vision": seconds / 2}, speedup=base / seconds)

    rows = [row("float32", "glance", 3.0, 3.0), row("int8", "glance", int8_glance, 3.0),
            row("float32", "deeplens", 4.0, 4.0), row("int8", "deeplens", 1.6, 4.0)]
    roof = Roofline(linear_flops_per_s=2e11, float32_flops_per_s=1e11, bytes_per_s=1e10, weight_bytes=600_000_000,
                    stages={"vision": RooflineStage(seconds=0.5, flop_bound_s=0.4, byte_bound_s=0.01, limit="compute")},
                    bound_s=0.8, seconds=int8_glance, ratio=int8_glance / 0.8)
    node = NodeRates(machine=machine, rounds=1, load_before=0.5, load_after=0.6, rows=[
        NodeRate(model="paper", dtype="auto", runs="int8 weights; auto: int8", captions=6, latency_mean_s=2.0,
                 model_mean_s=1.9, captions_per_s=0.5),
        NodeRate(model="paper", dtype="float32", runs="float32", captions=6, latency_mean_s=5.0,
                 model_mean_s=4.9, captions_per_s=0.2)])
    return FastPath(machine=machine, rounds=3, tokens=20, beams=3, load_before=0.5, load_after=0.6, rows=rows,
                    roofline=roof, node=node)


def test_fast_path_targets_take_the_ratio_to_float32_in_the_same_run(tiny_run):
    from sharpeye_ros.benchmark.results import Machine

    machine = Machine.from_json(tiny_run.machine.to_json())
    found = {t.name: t for t in targets(Results(fast_path=_fast_path(0.9, machine)))}
    glance = next(t for name, t in found.items() if "fast path (int8) takes" in name and "paper glance," in name)
    refined = next(t for name, t in found.items() if "glance + DeepLens" in name)
    roof = next(t for name, t in found.items() if "roofline (int8)" in name)
    assert (glance.measured, glance.passed) == (pytest.approx(0.3), True) and "3.33x faster" in glance.detail
    assert (refined.measured, refined.passed) == (pytest.approx(0.4), False)  # 2.5x: short of 3x
    assert (roof.measured, roof.passed) == (pytest.approx(1.125), True) and roof.machine == machine.label
    slow = {t.name: t for t in targets(Results(fast_path=_fast_path(1.2, machine)))}
    assert [t.passed for n, t in slow.items() if "roofline (int8)" in n] == [False]  # 1.5x its roofline
    missing = [t for t in targets(Results()) if "fast path" in t.name]
    assert len(missing) == 3 and all(t.passed is None and "no fast-path run" in t.detail for t in missing)


def test_fast_path_targets_are_held_for_what_auto_ran_and_for_the_fastest(tiny_run):
    import dataclasses

    from sharpeye_ros.benchmark.results import FastPathRow, Machine

    fast = _fast_path(0.9, Machine.from_json(tiny_run.machine.to_json()))
    extra = [FastPathRow(model="paper", precision="bfloat16-mixed", mode=m, seconds=t, times=[t], stages={},
                         speedup=b / t) for m, t, b in (("glance", 1.5, 3.0), ("deeplens", 2.0, 4.0))]
    fast = dataclasses.replace(fast, rows=fast.rows + extra, auto="bfloat16-mixed")
    names = [t.name for t in targets(Results(fast_path=fast)) if "takes <= 1/3" in t.name]
    assert names == [f"CPU fast path ({p}) takes <= 1/3 of float32's time, paper {m}, 3 beams"
                     for p in ("bfloat16-mixed, auto", "int8, fastest") for m in ("glance", "glance + DeepLens")]
    found = {t.name: t for t in targets(Results(fast_path=fast))}
    assert found[names[0]].measured == pytest.approx(0.5) and not found[names[0]].passed  # 2x: short of 3x
    # auto float32 (no fast path on that CPU): only the fastest; a run that does not say: int8
    assert [t.name for t in targets(Results(fast_path=dataclasses.replace(fast, auto="float32")))
            if "takes <= 1/3" in t.name] == names[2:]
    assert Results.from_json(Results(fast_path=fast).to_json()).fast_path.auto == "bfloat16-mixed"
    # merged into docs from an earlier run's, what auto ran comes with the new speed run
    older = Results(fast_path=dataclasses.replace(fast, auto="int8-vision"))
    assert older.merged(Results(fast_path=fast)).fast_path.auto == "bfloat16-mixed"


def test_fast_path_section_renders_and_round_trips(tiny_run):
    from sharpeye_ros.benchmark.results import Machine

    results = Results(fast_path=_fast_path(0.9, Machine.from_json(tiny_run.machine.to_json())))
    again = Results.from_json(results.to_json())
    assert again == results
    text = report.render_markdown(again)
    assert "## CPU fast path" in text and "| paper | int8 | 0.90 s | **3.33x** | 1.60 s | **2.50x** |" in text
    assert "int8 paper glance against its roofline" in text
    assert "| paper | auto | int8 weights; auto: int8 | 6 | 0.500 | **2.50x** | 2.00 s | 1.90 s |" in text
    assert "| paper | float32 | float32 | 6 | 0.200 | **1.00x** |" in text
    assert "here `auto` resolved to: paper: int8 weights; auto: int8." in text


def _fast_path_with_side_by_sides(machine: dict):
    """A fast-path record with a fidelity, library and peer side-by-side, as their modules write them."""
    from sharpeye_ros.benchmark.results import Machine

    from sharpeye_ros.benchmark.results import PeerEntry, PeerModel, PeerTable

    fast = _fast_path(0.9, Machine.from_json(machine))
    fast.fidelity = {"machine": machine, "preset": "paper", "precisions": {"int8": {
        "runs": "int8", "int8_layers": 220, "top1": 0.99, "top1_min_image": 0.97, "positions": 100, "images": 2,
        "cosine_min": 0.9995, "cosine_mean": 0.9997, "passes": True}}}
    rows = [{"name": n, "seconds": s, "times": [s], "rel_error": 0.01, "setup_seconds": 1.0, "note": "",
             "speedup": 1.0 / s} for n, s in (("torch-fp32", 1.0), ("torch-int8", 0.5))]
    fast.libraries = {"machine": machine, "rounds": 2,
                      "pieces": {"prefill": {"rows": rows, "load_before": 0.5, "load_after": 0.6}}}
    ours = "ours (paper glance)"
    fast.peers = PeerTable(machine=Machine.from_json(machine), tokens=20, rounds=2, load_before=0.5, load_after=0.6,
                           models={ours: PeerModel(params=450_000_000, image_size=336, int8_layers=200, float_linears=3),
                                   "GIT-base": PeerModel(params=177_000_000, image_size=224, int8_layers=70,
                                                         float_linears=1)},
                           notes={"Florence-2-base": "skipped: transformers 4.0 has no Florence2Config"},
                           entries=[PeerEntry(model=m, precision=p, beams=b, seconds=s * f, times=[s * f])
                                    for m, s in ((ours, 2.0), ("GIT-base", 1.0))
                                    for p, f in (("float32", 1.0), ("int8", 0.4)) for b in (1, 3)])
    return fast


def test_fast_path_side_by_sides_render(tiny_run):
    text = report.render_markdown(Results(fast_path=_fast_path_with_side_by_sides(tiny_run.machine.to_json())))
    assert "| int8 | 99.0% | 97.0% | 0.99950 | pass |" in text
    assert "| torch-int8 | 500.0 ms | 2.00x |" in text
    assert ("| GIT-base | 177M | 224 px | 1.00 s (0.50x ours) | 1.00 s (0.50x ours) | 0.40 s (0.50x ours) | "
            "0.40 s (0.50x ours) | **2.50x** | **2.50x** |") in text
    assert "| ours (paper glance) | 450M | 336 px | 2.00 s | 2.00 s | 0.80 s |" in text
    assert "Linear layers in int8: ours (paper glance) 200 of 203, GIT-base 70 of 71." in text
    assert "- Florence-2-base: skipped: transformers 4.0 has no Florence2Config" in text
    assert "**The choice.**" in text


def test_fast_path_pieces_measured_apart_merge_without_undoing_each_other(tiny_run, tmp_path):
    """A results file with only the peer table and the node (``fast_path --no-speed``)
    keeps the docs' speed run and their other pieces; a later speed run keeps the peers."""
    machine = tiny_run.machine.to_json()
    full = _fast_path_with_side_by_sides(machine)
    docs = Results(fast_path=dataclasses.replace(full, peers=None, node=None))
    pieces = Results.from_json(Results(fast_path=FastPath(peers=full.peers, node=full.node)).to_json())
    assert pieces.to_json()["fast_path"].keys() == {"node", "peers"}  # no speed run written
    merged = docs.merged(pieces)
    assert merged.fast_path == full  # speed run, roofline, fidelity and libraries kept; peers and node added
    newer = dataclasses.replace(docs.fast_path, rows=docs.fast_path.rows[:2], rounds=5, fidelity=None)
    again = merged.merged(Results(fast_path=newer))
    assert again.fast_path.rows == newer.rows and again.fast_path.rounds == 5  # the new speed run
    assert again.fast_path.peers == full.peers and again.fast_path.node == full.node
    assert again.fast_path.fidelity == full.fidelity  # a piece the newer file lacks stays
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / run.RESULTS_NAME).write_text(json.dumps(docs.to_json()))
    (tmp_path / "pieces.json").write_text(json.dumps(pieces.to_json()))
    assert run.main(["--merge", str(tmp_path / "pieces.json"), "--out-dir", str(tmp_path / "docs")]) == 0
    assert run.load_results(tmp_path / "docs" / run.RESULTS_NAME).fast_path == full
    text = (tmp_path / "docs" / run.DOC_NAME).read_text()
    assert "## CPU fast path" in text and "| paper | int8 | 0.90 s |" in text and "| GIT-base | 177M |" in text
