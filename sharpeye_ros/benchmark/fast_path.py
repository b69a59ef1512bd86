"""The CPU fast path's speed: the same model in each precision, in one run, as ratios.

Every (model, precision, mode) entry makes one caption per round, round-robin (round 0
warms up), so that the machine's drift hits them alike: the paper model (random weights,
20 new tokens, the paper's 3 beams) and the demo model, in float32, bfloat16-mixed,
int8-vision, int8 and bfloat16, glance alone and glance + DeepLens; ``auto`` records what
``dtype: auto`` runs on this CPU. For the paper glance in the fast path (:func:`roofline_precision`:
what ``auto`` runs when that is bfloat16-mixed or int8, else int8) it also gives the
roofline ratio: the measured time over the time at the machine's limits, per stage the
slower of its FLOPs (the Linear layers' at that precision's Linear throughput measured
here, the rest at float32's) and the bytes it must read (weights as held: int8 at 1 byte,
bfloat16 at 2; the KV cache in float32) at the measured read bandwidth.

``--node`` adds the running node's captions per second with ``dtype: auto`` (and what it
resolved to) against ``float32`` (:func:`node_rates`).

``python -m sharpeye_ros.benchmark.fast_path OUT.json [--rounds 3] [--threads 2]
[--speed EARLIER.json | --no-speed] [--node [--node-rounds 1]] [--peers P.json]
[--libraries L.json] [--fidelity F.json]``, then ``benchmark --merge OUT.json`` puts it
into docs/benchmarks.md (section "CPU fast path" and its targets); a piece OUT.json
lacks (``--no-speed``: the speed run) stays as the docs have it.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from sharpeye_ros.benchmark import peers
from sharpeye_ros.benchmark.bounds import Geometry, stage_bytes
from sharpeye_ros.benchmark.measure import CountingTimer, load_average, machine_info, matmul_throughput, read_bandwidth
from sharpeye_ros.benchmark.results import FastPath, NodeRates, Results
from sharpeye_ros.evaluation.modes import DEEPLENS, GLANCE, SWITCHES
from sharpeye_ros.model import SharpEyes, default_model_path
from sharpeye_ros.model import precision as P
from sharpeye_ros.model.timing import GLANCE_STAGES, Timer

TOKENS = 20
BEAMS = 3
PRECISIONS = ("float32", "bfloat16-mixed", "int8-vision", "int8", "bfloat16")
ROOFLINE_PRECISIONS = ("bfloat16-mixed", "int8")  # whose every large Linear layer runs one kernel
MODES = (GLANCE, DEEPLENS)
MIN_SPEEDUP = 3.0  # the fast path's target against float32, paper size, 3 beams


@dataclass
class Entry:
    """One (model, precision, mode): its model and the seconds of each timed caption."""

    model: str
    precision: str
    mode: str
    net: SharpEyes
    times: list[float] = field(default_factory=list)
    stages: list[dict[str, float]] = field(default_factory=list)

    def caption(self, image: np.ndarray) -> tuple[float, dict[str, float]]:
        timer = Timer(self.net.device)
        start = time.perf_counter()
        self.net.caption([image], timer=timer, **SWITCHES[self.mode])
        return time.perf_counter() - start, dict(timer.times)


def paper_model(seed: int = 0) -> SharpEyes:
    """The paper-size model with random weights, as the benchmark builds it."""
    from sharpeye_ros.benchmark.worker import ModelSpec, build_model

    return build_model(ModelSpec(name="paper", source="paper", seed=seed))[0]


def in_precisions(base: SharpEyes, precisions: Sequence[str]) -> dict[str, SharpEyes]:
    """``base`` (float32) and copies of it in each other precision, each set to decode
    exactly :data:`TOKENS` tokens with :data:`BEAMS` beams."""
    g = base.config.generation
    g.max_new_tokens, g.stop, g.num_beams = TOKENS, (), BEAMS
    return {name: base if name == "float32" else P.apply(copy.deepcopy(base), P.resolve(name, "cpu"))
            for name in precisions}


def roofline_precision(auto: str) -> str:
    """The precision whose paper glance the roofline measures: ``auto`` (what ``dtype: auto``
    runs) when it is one of :data:`ROOFLINE_PRECISIONS`, else int8."""
    return auto if auto in ROOFLINE_PRECISIONS else "int8"


def linear_throughput(precision: str, size: int = 2048, reps: int = 3) -> float:
    """FLOP/s of ``precision``'s Linear layer (:class:`~sharpeye_ros.model.precision.Int8Linear`
    for int8, :class:`~sharpeye_ros.model.precision.Bf16Linear` for bfloat16-mixed) on a
    square ``size`` problem, its input converted per call as in the model, best of ``reps``."""
    kind = P.Bf16Linear if precision == "bfloat16-mixed" else P.Int8Linear
    layer = kind(torch.nn.Linear(size, size, bias=False))
    x = torch.randn(size, size)
    layer(x)
    best = math.inf
    for _ in range(reps):
        start = time.perf_counter()
        layer(x)
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best


def fast_geometry(model: SharpEyes, prompt_len: int) -> Geometry:
    """The bytes a caption of the converted ``model`` reads (its weights as held: int8 at
    1 byte, bfloat16 at 2)."""
    opt = model.lm.model.config
    lm_bytes = P.weight_bytes(model.lm)
    head = model.lm.model.lm_head
    if isinstance(head, P.ShortlistHead):  # a pass reads its draft, and of the float32 weight a shortlist's rows
        lm_bytes -= head.weight.numel() * head.weight.element_size()
    return Geometry(vision_bytes=P.weight_bytes(model.vision), connector_bytes=P.weight_bytes(model.connector),
                    lm_bytes=lm_bytes,
                    deeplens_bytes=P.weight_bytes(model.deeplens) if model.deeplens is not None else 0,
                    lm_layers=int(opt.num_hidden_layers), lm_hidden=int(opt.hidden_size), element_size=4,
                    prompt_len=prompt_len, refine_prompt_len=prompt_len, tokens=TOKENS, beams=BEAMS,
                    refine_beams=BEAMS)


def roofline(reference: SharpEyes, quantized: SharpEyes, image: np.ndarray, seconds: dict[str, float],
             precision: str = "int8") -> dict:
    """The ``precision`` (int8 or bfloat16-mixed) glance's stages against the machine's
    limits (see the module docstring). ``reference``: the same model in float32, whose FLOPs
    the converted one runs (the FLOP counter does not see quantized kernels); ``seconds``:
    the converted glance's median stage seconds."""
    counting = CountingTimer(reference.device, watch=reference.lm.model.model.decoder)
    reference.caption([image], timer=counting, **SWITCHES[GLANCE])
    linear_flops, float_flops = linear_throughput(precision), matmul_throughput("cpu", torch.float32)
    bandwidth = read_bandwidth("cpu")
    visual = torch.zeros(1, reference.vision.grid**2, reference.lm.hidden_size)
    prompt_len = reference.lm.build_prompt(reference.config.lm.prompt, visual).embeds.shape[1]
    geo = fast_geometry(quantized, int(prompt_len))
    stages, bound = {}, 0.0
    for stage in GLANCE_STAGES:
        by_class = counting.class_flops.get(stage, {})
        flop_s = by_class.get("matmul", 0) / linear_flops + (by_class.get("attention", 0) + by_class.get("other", 0)) / float_flops
        read = stage_bytes(geo, stage, counting.calls)
        byte_s = (read or 0) / bandwidth
        stages[stage] = {"seconds": seconds.get(stage, 0.0), "flop_bound_s": flop_s, "byte_bound_s": byte_s,
                         "limit": "memory" if byte_s > flop_s else "compute"}
        bound += max(flop_s, byte_s)
    measured = sum(seconds.get(s, 0.0) for s in GLANCE_STAGES)
    return {"precision": precision, "linear_flops_per_s": linear_flops, "float32_flops_per_s": float_flops, "bytes_per_s": bandwidth,
            "weight_bytes": P.weight_bytes(quantized), "stages": stages, "bound_s": bound, "seconds": measured,
            "ratio": measured / bound if bound > 0 else None}


def measure(rounds: int = 3, precisions: Sequence[str] = PRECISIONS, demo: bool = True, log=None) -> dict:
    """Every entry's median seconds over ``rounds`` round-robin rounds after a warm-up round,
    each paper entry's speed-up over float32 in the same mode, what ``auto`` runs here, and the
    fast path's glance against its roofline (:func:`roofline_precision`)."""
    from sharpeye_ros.benchmark.worker import benchmark_images

    images = benchmark_images(rounds + 1)
    models = {"paper": in_precisions(paper_model(), precisions)}
    if demo:
        models["demo"] = in_precisions(SharpEyes.from_pretrained(default_model_path(), dtype="float32"), precisions)
    entries = [Entry(m, p, mode, net) for m, nets in models.items() for p, net in nets.items() for mode in MODES]
    load = load_average()
    with torch.no_grad():
        for r in range(rounds + 1):
            if log is not None:
                log(f"fast path: round {r}/{rounds}")
            for e in entries:
                seconds, stages = e.caption(images[r])
                if r > 0:
                    e.times.append(seconds)
                    e.stages.append(stages)
        after = load_average()
        rows = []
        for e in entries:
            rows.append({"model": e.model, "precision": e.precision, "mode": e.mode,
                         "seconds": float(np.median(e.times)), "times": e.times,
                         "stages": {s: float(np.median([t.get(s, 0.0) for t in e.stages])) for s in e.stages[0]}})
        base = {(r["model"], r["mode"]): r["seconds"] for r in rows if r["precision"] == "float32"}
        for r in rows:
            r["speedup"] = base[(r["model"], r["mode"])] / r["seconds"]
        result = {"machine": machine_info("cpu").to_json(), "rounds": rounds, "tokens": TOKENS, "beams": BEAMS,
                  "load_before": load, "load_after": after, "rows": rows, "auto": P.resolve("auto", "cpu").name}
        fast = roofline_precision(result["auto"])
        if fast in precisions and "float32" in precisions:
            glance = next(r for r in rows if (r["model"], r["precision"], r["mode"]) == ("paper", fast, GLANCE))
            result["roofline"] = roofline(models["paper"]["float32"], models["paper"][fast], images[0],
                                          glance["stages"], fast)
    return result


NODE_DTYPES = ("auto", "float32")  # the comparison: what ``auto`` picks here against float32
NODE_CAPTIONS = {"paper": 6, "demo": 20}  # timed captions per node run: about a minute each on a 2-core CPU


def node_rates(model_dirs: dict[str, str], dtypes: Sequence[str] = NODE_DTYPES, rounds: int = 1,
               captions: Optional[dict[str, int]] = None, log=None) -> dict:
    """The running node's captions per second with each of ``dtypes`` (its ``dtype``
    parameter; ``auto``: :func:`~sharpeye_ros.model.precision.resolve`) for each model of ``model_dirs``
    (name -> directory; glance + DeepLens, the node's default), as :class:`~sharpeye_ros.benchmark.results.NodeRates` JSON. Each run
    is a node process of its own on a DDS domain of its own; the dtypes take turns, in
    ``rounds`` rounds, so that the machine's drift hits them alike. Frames go out one at a
    time, each once the previous caption came back: captions/s = 1 / mean latency over the
    captions of all rounds. ``runs``: what the node's start-up log said it runs (for
    ``auto``: what it resolved to)."""
    from sharpeye_ros.benchmark.run import run_isolated
    from sharpeye_ros.ros.processes import isolate_dds

    isolate_dds()
    captions = {**NODE_CAPTIONS, **(captions or {})}
    done: dict[tuple[str, str], list[dict]] = {}
    load = load_average()
    for r in range(rounds):
        for model, path in model_dirs.items():
            for dtype in dtypes:
                if log is not None:
                    log(f"fast path: node round {r + 1}/{rounds}, {model}, dtype {dtype}")
                spec = {"model_path": path, "captions": captions.get(model, 6), "warmup": 1, "dtype": dtype,
                        "reliability": "reliable", "transport": "large_shm", "max_seconds": 900.0}
                done.setdefault((model, dtype), []).append(
                    run_isolated("sharpeye_ros.benchmark.node_bench", json.dumps(spec), f"node run, {model}, dtype {dtype}"))
    rows = []
    for (model, dtype), runs in done.items():
        n = sum(x["captions"] for x in runs)
        latency = sum(x["all"]["latency"]["mean"] * x["captions"] for x in runs) / n
        model_s = sum(x["all"]["model"]["mean"] * x["captions"] for x in runs) / n
        said = list(dict.fromkeys(x["runs"] for x in runs))
        rows.append({"model": model, "dtype": dtype, "runs": " / ".join(said), "captions": n,
                     "latency_mean_s": latency, "model_mean_s": model_s, "captions_per_s": 1.0 / latency})
    return {"machine": machine_info("cpu").to_json(), "rounds": rounds, "load_before": load,
            "load_after": load_average(), "rows": rows}


def save_for_node(net: SharpEyes, directory: Path) -> str:
    """Save ``net`` (random weights) for a node run, set to decode exactly :data:`TOKENS`
    new tokens, as the speed run does: a random LM never ends a caption, and would run
    each to the preset's ``max_new_tokens``. Returns the directory."""
    g = net.config.generation
    g.max_new_tokens, g.stop = TOKENS, ()
    net.save_pretrained(directory)
    return str(directory)


def render_node(node: NodeRates) -> list[str]:
    """The node's captions per second by model and dtype, each against float32's."""
    lines = ["| node (glance + DeepLens) | dtype | runs as | captions | captions/s | vs float32 | mean latency | model time |",
             "|---|---|---|---|---|---|---|---|"]
    for r in node.rows:
        ref = node.row(r.model, "float32")
        ratio = f"**{r.captions_per_s / ref.captions_per_s:.2f}x**" if ref is not None else "-"
        lines.append(f"| {r.model} | {r.dtype} | {r.runs or '-'} | {r.captions} | {r.captions_per_s:.3f} | {ratio} | "
                     f"{r.latency_mean_s:.2f} s | {r.model_mean_s:.2f} s |")
    return lines


def render(result: dict) -> list[str]:
    """The speed run's table (seconds per caption and the speed-up over float32) and the
    roofline line (the node's rates: :func:`render_node`)."""
    lines = ["| model | precision | glance | speed-up | glance + DeepLens | speed-up |", "|---|---|---|---|---|---|"]
    rows = {(r["model"], r["precision"], r["mode"]): r for r in result["rows"]}
    for model, precision in dict.fromkeys((r["model"], r["precision"]) for r in result["rows"]):
        cells = [model, precision]
        for mode in MODES:
            r = rows.get((model, precision, mode))
            cells += ["-", "-"] if r is None else [f"{r['seconds']:.2f} s", f"**{r['speedup']:.2f}x**"]
        lines.append("| " + " | ".join(cells) + " |")
    roof = result.get("roofline")
    if roof:
        name = roof.get("precision", "int8")
        lines += ["", f"{name} paper glance against its roofline: {roof['seconds']:.2f} s measured vs {roof['bound_s']:.2f} s "
                  f"at the limits = **{roof['ratio']:.2f}x** ({name} Linear {roof['linear_flops_per_s'] / 1e9:.0f} GFLOP/s, "
                  f"float32 {roof['float32_flops_per_s'] / 1e9:.0f} GFLOP/s, read bandwidth "
                  f"{roof['bytes_per_s'] / 1e9:.1f} GB/s, weights {roof['weight_bytes'] / 1e6:.0f} MB)", "",
                  "| stage | measured | FLOP bound | byte bound | limit |", "|---|---|---|---|---|"]
        for stage, s in roof["stages"].items():
            lines.append(f"| {stage} | {s['seconds'] * 1e3:.1f} ms | {s['flop_bound_s'] * 1e3:.1f} ms | "
                         f"{s['byte_bound_s'] * 1e3:.1f} ms | {s['limit']} |")
    return lines


def write_results(out: str, fast: dict) -> Results:
    """Write ``fast`` (the pieces measured so far) to ``out`` as a benchmark results file."""
    results = Results(fast_path=FastPath.from_json(fast, "fast_path"))
    Path(out).write_text(json.dumps(results.to_json(), indent=1) + "\n")
    return results


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Measure (or reuse, ``--speed``; or leave out, ``--no-speed``) the speed run, add the
    pieces given, and write OUT.json as a benchmark results file (``Results.fast_path``)
    for ``benchmark --merge``, which keeps the pieces this file lacks."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="results JSON (a benchmark results file)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--precisions", default=",".join(PRECISIONS))
    parser.add_argument("--no-demo", action="store_true", help="the speed run and the node: paper size only")
    speed = parser.add_mutually_exclusive_group()
    speed.add_argument("--speed", default="", help="reuse this speed run (an earlier OUT.json) instead of measuring")
    speed.add_argument("--no-speed", action="store_true",
                       help="no speed run: only the pieces below (merging keeps the docs' speed run)")
    parser.add_argument("--node", action="store_true",
                        help=f"also measure the node's captions/s with dtype {' and '.join(NODE_DTYPES)} "
                        "(paper size, random weights, and the demo model; glance + DeepLens)")
    parser.add_argument("--node-rounds", type=int, default=1, help="rounds of node runs, the dtypes taking turns")
    for piece in ("peers", "libraries", "fidelity"):
        parser.add_argument(f"--{piece}", default="", help=f"include this {piece}.py results file")
    args = parser.parse_args(argv)
    if args.node_rounds < 1:
        parser.error(f"--node-rounds must be at least 1, got {args.node_rounds}")
    if args.threads:
        torch.set_num_threads(args.threads)
    log = lambda t: print(t, file=sys.stderr, flush=True)  # noqa: E731
    if args.no_speed:
        fast: dict = {}
    elif args.speed:
        data = json.loads(Path(args.speed).read_text())
        fast = dict(data.get("fast_path", data))
    else:
        fast = measure(args.rounds, args.precisions.split(","), not args.no_demo, log=log)
    for piece in ("peers", "libraries", "fidelity"):
        if getattr(args, piece):
            fast[piece] = json.loads(Path(getattr(args, piece)).read_text())
    # Written before the node piece, and again after it: a node run that fails (minutes
    # in) must not lose the speed run finished before it.
    results = write_results(args.out, fast)
    if args.node:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="sharpeye_fast_path_") as tmp:
            dirs = {"paper": save_for_node(paper_model(), Path(tmp) / "paper")}
            if not args.no_demo:
                dirs["demo"] = str(default_model_path())
            fast["node"] = node_rates(dirs, rounds=args.node_rounds, log=log)
        results = write_results(args.out, fast)
    out = results.fast_path
    lines = render(fast) if out.rows else []
    lines += render_node(out.node) if out.node else []
    lines += peers.render(out.peers) if out.peers else []
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
