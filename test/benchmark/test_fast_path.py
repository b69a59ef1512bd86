"""The CPU fast path's speed run, on the tiny model: the precisions compared are copies of
one float32 model, decoding the same fixed tokens and beams, and the int8 glance's roofline
counts int8 weights at one byte."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from sharpeye_ros.benchmark import fast_path
from sharpeye_ros.benchmark.worker import benchmark_images
from sharpeye_ros.model import SharpEyes, presets
from sharpeye_ros.model import precision as P
from sharpeye_ros.model.timing import GLANCE_STAGES

pytestmark = pytest.mark.skipif(not P.int8_available(), reason="this CPU/torch has no x86 int8 kernels")


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(0)
    return fast_path.in_precisions(SharpEyes.from_config(presets.tiny()).eval(), ["float32", "int8", "bfloat16-mixed"])


def test_each_precision_is_a_copy_of_one_float32_model(nets):
    base, q = nets["float32"], nets["int8"]
    assert base.precision.name == "float32" and P.int8_layers(base) == 0
    assert q.precision.quantized and P.int8_layers(q) > 0 and q is not base
    for net in (base, q):
        g = net.config.generation
        assert (g.max_new_tokens, tuple(g.stop), g.num_beams) == (fast_path.TOKENS, (), fast_path.BEAMS)


@torch.no_grad()
@pytest.mark.parametrize("name", fast_path.ROOFLINE_PRECISIONS)
def test_the_roofline_reads_the_converted_weights_and_sums_its_stages(nets, name):
    base, q = nets["float32"], nets[name]
    image = benchmark_images(1, (160, 120))[0]
    seconds, stages = fast_path.Entry("tiny", name, "glance", q).caption(image)
    assert set(stages) == set(GLANCE_STAGES) and seconds >= sum(stages.values()) * 0.99
    geo = fast_path.fast_geometry(q, 10)
    head = q.lm.model.lm_head  # its float32 weight is read for the shortlist's rows only
    assert type(head) is P.ShortlistHead
    assert geo.lm_bytes == P.weight_bytes(q.lm) - 4 * head.weight.numel() < P.weight_bytes(base.lm)
    roof = fast_path.roofline(base, q, image, stages, name)
    assert roof["precision"] == name and set(roof["stages"]) == set(GLANCE_STAGES)
    bound = sum(max(s["flop_bound_s"], s["byte_bound_s"]) for s in roof["stages"].values())
    assert roof["bound_s"] == pytest.approx(bound) and roof["ratio"] == pytest.approx(roof["seconds"] / bound)
    assert roof["stages"]["decode"]["byte_bound_s"] > 0 and roof["linear_flops_per_s"] > 0


def test_the_roofline_is_of_what_auto_runs_when_one_kernel_runs_its_layers():
    assert fast_path.roofline_precision("bfloat16-mixed") == "bfloat16-mixed"
    assert fast_path.roofline_precision("int8-vision") == "int8"  # int8 and float32 layers mixed
    assert fast_path.roofline_precision("float32") == "int8"


def test_node_rates_take_turns_by_dtype_and_pool_the_rounds(monkeypatch):
    """Each (model, dtype) runs in a node process of its own, the dtypes in turn in every
    round; its rate is 1 / the mean latency over all its captions, and it keeps what the
    node said it runs."""
    import json

    from sharpeye_ros.benchmark import run as run_module
    from sharpeye_ros.benchmark.results import NodeRates

    calls = []
    latency = {("paper", "auto"): [1.0, 3.0], ("paper", "float32"): [4.0, 4.0], ("demo", "auto"): [0.1, 0.1],
               ("demo", "float32"): [0.2, 0.2]}

    def fake_run(module, spec, what):
        s = json.loads(spec)
        model = "paper" if s["model_path"] == "/p" else "demo"
        calls.append((model, s["dtype"], s["captions"]))
        mean = latency[(model, s["dtype"])][sum(c[:2] == (model, s["dtype"]) for c in calls) - 1]
        captions = 2 if mean == 1.0 else 6  # rounds of unequal length: weighted by captions
        return {"captions": captions, "runs": f"{s['dtype']} (logged)",
                "all": {"latency": {"mean": mean}, "model": {"mean": mean * 0.9}}}

    monkeypatch.setattr(run_module, "run_isolated", fake_run)
    monkeypatch.setattr("sharpeye_ros.ros.processes.isolate_dds", lambda: None)
    result = fast_path.node_rates({"paper": "/p", "demo": "/d"}, rounds=2, captions={"demo": 5})
    assert calls == [("paper", "auto", 6), ("paper", "float32", 6), ("demo", "auto", 5), ("demo", "float32", 5)] * 2
    node = NodeRates.from_json(result, "node")
    auto = node.row("paper", "auto")
    assert auto.captions == 8 and auto.latency_mean_s == pytest.approx((2 * 1.0 + 6 * 3.0) / 8)
    assert auto.captions_per_s == pytest.approx(1 / auto.latency_mean_s) and auto.runs == "auto (logged)"
    assert node.row("demo", "float32").captions_per_s == pytest.approx(5.0) and node.rounds == 2
    text = "\n".join(fast_path.render_node(node))
    assert f"| paper | auto | auto (logged) | 8 | {1 / 2.5:.3f} | **{4.0 / 2.5:.2f}x** | 2.50 s | 2.25 s |" in text


def test_main_without_a_speed_run_writes_only_the_pieces_given(tmp_path, capsys):
    import json

    from sharpeye_ros.benchmark.results import Results

    machine = {"date_utc": "2026-12-02 03:00 UTC", "cpu": "Test CPU", "cpu_count": 2, "torch_threads": 2,
               "ram_bytes": 1, "platform": "p", "python": "3.11", "torch": "2", "transformers": "5", "numpy": "2",
               "load_average_1min": 0.1, "device": "cpu", "gpu": None}
    table = {"machine": machine, "tokens": 20, "rounds": 1, "load_before": 0.1, "load_after": 0.2,
             "models": {}, "notes": {}, "entries": [{"model": "ours (paper glance)", "precision": "float32",
                                                     "beams": 3, "seconds": 2.0, "times": [2.0]}]}
    (tmp_path / "peers.json").write_text(json.dumps(table))
    assert fast_path.main([str(tmp_path / "out.json"), "--no-speed", "--peers", str(tmp_path / "peers.json")]) == 0
    data = json.loads((tmp_path / "out.json").read_text())
    assert list(data["fast_path"]) == ["peers"] and data["fast_path"]["peers"] == table
    assert Results.from_json(data).fast_path.peers.seconds("ours (paper glance)", "float32", 3) == 2.0
    assert "| ours (paper glance) |" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # a speed run reused and none at all contradict each other
        fast_path.main([str(tmp_path / "x.json"), "--no-speed", "--speed", str(tmp_path / "out.json")])


def test_the_node_runs_a_random_model_saved_to_decode_exactly_the_tokens_of_the_speed_run(tmp_path):
    torch.manual_seed(0)
    path = fast_path.save_for_node(SharpEyes.from_config(presets.tiny()), tmp_path / "m")
    g = SharpEyes.from_pretrained(path).config.generation
    assert (g.max_new_tokens, tuple(g.stop)) == (fast_path.TOKENS, ())


def test_a_failing_node_piece_keeps_the_speed_run_already_measured(tmp_path, monkeypatch):
    import json

    from sharpeye_ros.benchmark.results import Results

    docs = json.loads((Path(__file__).parents[2] / "docs" / "benchmarks.json").read_text())["fast_path"]
    speed = {k: v for k, v in docs.items() if k not in ("node", "peers", "libraries", "fidelity")}
    monkeypatch.setattr(fast_path, "measure", lambda *a, **k: copy.deepcopy(speed))
    monkeypatch.setattr(fast_path, "save_for_node", lambda net, directory: str(directory))
    monkeypatch.setattr(fast_path, "paper_model", lambda: None)

    def fail(*args, **kwargs):
        raise RuntimeError("node run failed")

    monkeypatch.setattr(fast_path, "node_rates", fail)
    out = tmp_path / "out.json"
    with pytest.raises(RuntimeError, match="node run failed"):
        fast_path.main([str(out), "--node", "--no-demo"])
    kept = Results.from_json(json.loads(out.read_text())).fast_path
    assert kept.rows and len(kept.rows) == len(speed["rows"]) and kept.node is None
