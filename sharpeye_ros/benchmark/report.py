"""Targets, ``docs/benchmarks.md`` and its plot, all computed from the results.

Nothing here measures: every number in the document comes from ``results`` (see
:mod:`sharpeye_ros.benchmark.results` for its layout), each with the machine and date that
produced it.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from sharpeye_ros.benchmark import naive
from sharpeye_ros.benchmark.bounds import LIMIT_MODES, glance_seconds, total_flop_ratio
from sharpeye_ros.benchmark.results import (
    CPU,
    CUDA,
    NAIVE,
    NODRAFT,
    RUN_KINDS,
    RUN_TITLES,
    Limits,
    ModelResult,
    ModeResult,
    NodeResult,
    Results,
    Run,
    Skipped,
    run_kind,
)
from sharpeye_ros.evaluation.modes import DEEPLENS, GLANCE, ZOOM
from sharpeye_ros.model.timing import DECODE, GLANCE_STAGES, REFINE_DECODE, REFINE_STAGES

DEEPLENS_MAX_OVERHEAD = 0.25  # DeepLens adds at most 25% to the glance at paper size
GLANCE_MAX_FLOP_RATIO = 1.5  # the paper-size CPU glance within 1.5x of its FLOP bound
NODE_MAX_OVERHEAD_S = 0.010  # node overhead at p95, 640x480
GPU_MAX_BYTES = 2.7e9  # paper size + DeepLens in fp16 on a GPU
MODE_TITLES = {
    GLANCE: "glance",
    DEEPLENS: "glance + DeepLens",
    NODRAFT: "glance + DeepLens, refinement without draft",
    ZOOM: "glance + DeepLens + zoom",
    NAIVE: "naive reference (glance + refinement)",
}
# Table rows: each path's glance, then each path's refinement.
STAGE_ORDER = GLANCE_STAGES + naive.NAIVE_GLANCE_STAGES + REFINE_STAGES + naive.NAIVE_REFINE_STAGES


# ---- lookups ---------------------------------------------------------------------------
def find_mode(run: Optional[Run], model: str, mode: str) -> Optional[ModeResult]:
    """Mode ``mode`` of the model called ``model`` in ``run``, or None where it was not measured."""
    found = run.model(model) if run else None
    return found.mode(mode) if found else None


def mode_seconds(mode: Optional[ModeResult]) -> Optional[float]:
    """Mean seconds per caption of ``mode``, or None when it was not measured."""
    return None if mode is None else float(mode.total.mean)


# ---- targets -----------------------------------------------------------------------------
@dataclass
class Target:
    """One target: the value measured (None: not measured), its limit in ``unit``
    (fraction, x, s or bytes), the machine that measured it and how (``detail``)."""

    name: str
    measured: Optional[float]
    limit: float
    unit: str
    machine: Optional[str]
    detail: str

    @property
    def passed(self) -> Optional[bool]:
        """Whether the measured value is within the limit; None when not measured."""
        return None if self.measured is None else self.measured <= self.limit


def _target(
    name: str,
    measured: Optional[float],
    limit: float,
    unit: str,
    run: Optional[Run],
    detail: str,
    missing: str = "not measured",
) -> Target:
    return Target(
        name=name,
        measured=measured,
        limit=limit,
        unit=unit,
        machine=run.machine.label if run and measured is not None else None,
        detail=detail if measured is not None else missing,
    )


def targets(results: Results) -> list[Target]:
    """The issue's targets, each with its measured value, limit, pass/fail (None: not
    measured) and the machine that measured it."""
    runs = results.runs
    out = []
    for key in RUN_KINDS:
        run = runs.get(key)
        glance = mode_seconds(find_mode(run, "paper", GLANCE))
        refined = find_mode(run, "paper", DEEPLENS)
        deeplens = mode_seconds(refined)
        ratio, detail = None, ""
        if refined is not None:
            # Refinement over the glance of the same captions: the two totals come from runs
            # a minute apart, and this machine's speed drifts by more than DeepLens costs.
            own_glance = glance_seconds(refined)
            ratio = (deeplens - own_glance) / own_glance
            detail = (
                f"refinement {_ms(deeplens - own_glance)} after a {_ms(own_glance)} glance, in the same "
                f"captions (timed apart: glance {_ms(glance)}, glance + DeepLens {_ms(deeplens)})"
            )
        out.append(
            _target(
                f"DeepLens adds <= 25% to the glance, paper size, {RUN_TITLES[key]}",
                ratio,
                DEEPLENS_MAX_OVERHEAD,
                "fraction",
                run,
                detail,
            )
        )
    run = runs.get(CPU)
    paper = run.model("paper") if run else None
    mode = paper.mode(GLANCE) if paper else None
    ratio, detail = None, ""
    if mode is not None:
        flops, peak = sum(mode.flops.values()), run.limits.matmul_flops_per_s
        bound = flops / peak
        ratio = total_flop_ratio(mode.total.mean, flops, peak)
        detail = (
            f"{_ms(mode.total.mean)} measured vs {_ms(bound)} = {flops / 1e9:.0f} GFLOP at "
            f"{peak / 1e9:.0f} GFLOP/s (the run's best sample): {ratio:.2f}x"
        )
        per_caption = mode.per_caption
        if per_caption:
            # The verdict: each caption against the matmul throughput sampled around it.
            ratios = [
                total_flop_ratio(t, flops, p)
                for t, p in zip(per_caption.seconds, per_caption.matmul_flops_per_s)
            ]
            ratio = statistics.median(ratios)
            peaks = ", ".join(f"{p / 1e9:.0f}" for p in per_caption.matmul_flops_per_s)
            detail = (
                f"median of {len(ratios)} captions, each against the matmul throughput sampled around it "
                f"({peaks} GFLOP/s): {', '.join(f'{r:.2f}x' for r in ratios)}; " + detail
            )
        stages = (paper.bounds or {}).get(GLANCE, {})
        roofline = sum(max(b.flop_bound_s, b.byte_bound_s or 0.0) for b in stages.values())
        if roofline > 0:  # decoding is bound by memory, which a FLOP bound leaves out
            detail += (
                f"; vs the roofline (per stage the slower of FLOPs and bytes read) {_ms(roofline)}: "
                f"{mode.total.mean / roofline:.2f}x; a glance at its roofline would itself be "
                f"{roofline / bound:.2f}x its FLOP bound"
            )
    out.append(
        _target(
            "Paper-size glance on the CPU within 1.5x of its FLOP bound",
            ratio,
            GLANCE_MAX_FLOP_RATIO,
            "x",
            run,
            detail,
        )
    )
    node = (run.node if run else None) or {}
    for result in node.values():
        if not isinstance(result, NodeResult):
            continue
        p95 = result.all.overhead.p95
        detail = (
            f"{result.captions} captions ({result.model_name}), p50 "
            f"{_ms(result.all.overhead.p50)}; {result.frames_lost} of {result.frames_sent} "
            "frames got no caption"
        )
        size = "x".join(str(v) for v in result.image_size)
        out.append(
            _target(
                f"Node overhead at p95, {size}, {result.variant}",
                p95,
                NODE_MAX_OVERHEAD_S,
                "s",
                run,
                detail,
            )
        )
    if not any(t.name.startswith("Node overhead") for t in out):
        out.append(
            _target(
                "Node overhead at p95, 640x480", None, NODE_MAX_OVERHEAD_S, "s", None, "", _node_missing(node)
            )
        )
    run = runs.get(CUDA)
    paper = run.model("paper") if run else None
    used, detail = None, ""
    mode = paper.mode(DEEPLENS) if paper else None
    if mode and mode.cuda_peak_reserved_bytes is not None:
        context = paper.cuda_context_bytes or 0
        used = mode.cuda_peak_reserved_bytes + context
        detail = (
            f"torch reserved peak {_gb(mode.cuda_peak_reserved_bytes)} (allocated "
            f"{_gb(mode.cuda_peak_allocated_bytes)}) + CUDA context {_gb(context)}, {paper.dtype}"
        )
    missing = one_line(results.gpu_note or "not measured: no GPU run")
    cpu_paper = runs[CPU].model("paper") if CPU in runs else None
    if cpu_paper:  # what can be said without a GPU: the weights alone, in fp16
        params = sum(cpu_paper.params.values())
        missing += (
            f"; its weights alone take {_gb(2 * params)} in fp16 ({params / 1e6:.0f}M parameters, "
            "CPU run), activations and the CUDA context come on top"
        )
    out.append(
        _target(
            "Paper size + DeepLens fits a GPU in fp16", used, GPU_MAX_BYTES, "bytes", run, detail, missing
        )
    )
    return out


def _node_missing(node: dict[str, object]) -> str:
    errors = [v for v in node.values() if isinstance(v, str)]
    return "not measured: " + (one_line(errors[0]) if errors else "no node run")


def _samples_note(limits: Limits) -> str:
    """Which samples the limits are the best of, when there were several."""
    matmul, read = limits.matmul_samples, limits.read_samples
    if len(matmul) < 2:
        return ""
    return (f"Each is the best of samples taken before and after the models (matmul "
            f"{', '.join(f'{v / 1e9:.0f}' for v in matmul)} GFLOP/s; read "
            f"{', '.join(f'{v / 1e9:.1f}' for v in read)} GB/s): this machine's speed drifts. ")


def one_line(text: str, limit: int = 200) -> str:
    """``text`` on one line (a table cell), cut to ``limit`` characters."""
    text = " ".join(str(text).split()).replace("|", "/")
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---- formatting ----------------------------------------------------------------------------
def _ms(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1e3:.1f} ms" if seconds < 1.0 else f"{seconds:.2f} s"


def _gb(num_bytes: Optional[float]) -> str:
    return "-" if num_bytes is None else f"{num_bytes / 1e9:.2f} GB"


def format_value(t: Target) -> str:
    """A target's measured value as the docs write it ('-' when not measured)."""
    v = t.measured
    if v is None:
        return "-"
    return {"fraction": f"{v * 100:+.0f}%", "x": f"{v:.2f}x", "s": _ms(v), "bytes": _gb(v)}[t.unit]


def _limit(t: Target) -> str:
    v = t.limit
    texts = {
        "fraction": f"<= +{v * 100:.0f}%",
        "x": f"<= {v:.1f}x",
        "s": f"<= {_ms(v)}",
        "bytes": f"<= {_gb(v)}",
    }
    return texts[t.unit]


def verdict(passed: Optional[bool]) -> str:
    """'**pass**', '**FAIL**' or 'not measured'."""
    return {True: "**pass**", False: "**FAIL**", None: "not measured"}[passed]


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


def _model_title(model: ModelResult) -> str:
    weights = "random weights" if model.random_weights else "trained weights"
    params = sum(model.params.values()) / 1e6
    return f"{model.name} ({params:.0f}M parameters, {weights}), {model.device} {model.dtype}"


# ---- sections ------------------------------------------------------------------------------
def _machines(results: Results) -> list[str]:
    rows = []
    for key, run in results.runs.items():
        m = run.machine
        ram = f"{m.ram_bytes / 2 ** 30:.0f} GiB" if m.ram_bytes else "-"
        gpu = f"{m.gpu} ({m.gpu_memory_bytes / 2 ** 30:.0f} GiB), CUDA {m.cuda}" if m.gpu else "-"
        load = "-" if m.load_average_1min is None else f"{m.load_average_1min:.2f}"
        rows.append(
            [
                RUN_TITLES.get(key, key),
                m.date_utc,
                f"{m.cpu}, {m.cpu_count} cores, " f"{m.torch_threads} torch threads, {ram} RAM",
                gpu,
                f"torch {m.torch}, transformers {m.transformers}, Python {m.python}",
                load,
                f"`{run.command}`",
            ]
        )
    return _table(["run", "date", "machine", "GPU", "software", "load (1 min)", "command"], rows)


def _targets_section(results: Results) -> list[str]:
    rows = [
        [t.name, format_value(t), _limit(t), verdict(t.passed), t.machine or "-", t.detail]
        for t in targets(results)
    ]
    return _table(["target", "measured", "target", "result", "measured on", "how"], rows)


def _passes(mode: ModeResult) -> str:
    """'glance decode passes / refine decode passes' (the naive path's: its generate calls)."""
    p = mode.lm_passes
    return (
        f"{p.get(DECODE, p.get(naive.GENERATE, '-'))} / "
        f"{p.get(REFINE_DECODE, p.get(naive.REFINE_GENERATE, '-'))}"
    )


def _stage_table(model: ModelResult) -> list[str]:
    modes = model.measured_modes
    stages = [s for s in STAGE_ORDER if any(s in m.stages for m in modes.values())]
    rows = []
    for stage in stages:
        row = [stage]
        for m in modes.values():
            s = m.stages.get(stage)
            row.append(_ms(s.mean) if s else "")
        rows.append(row)
    rows.append(
        ["**total per caption** (p50 / p95)"]
        + [f"**{_ms(m.total.mean)}** ({_ms(m.total.p50)} / {_ms(m.total.p95)})" for m in modes.values()]
    )
    rows.append(["LM passes: decode / refine decode"] + [_passes(m) for m in modes.values()])
    rows.append(["captions per second"] + [f"{m.captions_per_s:.2f}" for m in modes.values()])
    rows.append(["peak resident memory (CPU)"] + [_gb(m.peak_rss_bytes) for m in modes.values()])
    if run_kind(model.device) == CUDA:
        rows.append(
            ["peak CUDA allocated / reserved"]
            + [f"{_gb(m.cuda_peak_allocated_bytes)} / {_gb(m.cuda_peak_reserved_bytes)}" for m in modes.values()]
        )
    skipped = [f"{name}: {m.skipped}" for name, m in model.modes.items() if isinstance(m, Skipped)]
    lines = _table(["stage (mean)"] + [MODE_TITLES[m] for m in modes], rows)
    return lines + ([f"\nNot measured: {'; '.join(skipped)}."] if skipped else [])


def _naive_section(results: Results) -> list[str]:
    rows = []
    for run in results.runs.values():
        for model in run.models:
            slow, opt = model.mode(NAIVE), model.mode(DEEPLENS)
            if slow is None or opt is None:
                continue
            ng, og = glance_seconds(slow), glance_seconds(opt)
            n_ref, o_ref = slow.total.mean - ng, opt.total.mean - og
            rows.append(
                [
                    f"{model.name}, {model.device} {model.dtype}",
                    _ms(og),
                    _ms(ng),
                    f"{ng / og:.2f}x",
                    _ms(o_ref),
                    _ms(n_ref),
                    f"{n_ref / o_ref:.2f}x" if o_ref > 0 else "-",
                    _ms(opt.total.mean),
                    _ms(slow.total.mean),
                    f"**{slow.total.mean / opt.total.mean:.2f}x**",
                ]
            )
    if not rows:
        return ["No naive reference was measured."]
    return _table(
        [
            "model",
            "glance",
            "naive glance",
            "ratio",
            "refinement",
            "naive refinement",
            "ratio",
            "glance + DeepLens",
            "naive",
            "speed-up",
        ],
        rows,
    )


def _bounds_table(model: ModelResult, mode: str) -> list[str]:
    bounds = (model.bounds or {}).get(mode, {})
    rows = []
    for stage in STAGE_ORDER:
        b = bounds.get(stage)
        if not b or (not b.flops and b.bytes is None):
            continue
        achieved = "-" if b.achieved is None else f"{b.achieved * 100:.0f}%"
        rows.append(
            [
                stage,
                f"{b.flops / 1e9:.2f}",
                _ms(b.flop_bound_s),
                "-" if b.bytes is None else f"{b.bytes / 1e6:.0f}",
                _ms(b.byte_bound_s),
                _ms(b.seconds),
                achieved,
                b.limit,
            ]
        )
    return _table(
        [
            "stage",
            "GFLOP",
            "FLOP bound",
            "MB read",
            "bytes bound",
            "measured (mean)",
            "achieved",
            "limited by",
        ],
        rows,
    )


def _ops_table(mode: ModeResult, peak_flops_per_s: float) -> list[str]:
    """Per stage of one profiled caption: the time in matmul, attention, other ops and
    outside ops, with the matmul and attention FLOP rates (and their share of the
    machine's matmul limit). Empty without a profile (e.g. a GPU run)."""
    seconds, flops = mode.op_seconds or {}, mode.op_flops

    def rate(stage: str, cls: str) -> str:
        t, n = seconds[stage].get(cls, 0.0), flops.get(stage, {}).get(cls, 0)
        if t <= 0 or n <= 0:
            return "-"
        return f"{n / t / 1e9:.0f} ({n / t / peak_flops_per_s * 100:.0f}%)"

    rows = []
    for stage in STAGE_ORDER:
        ops = seconds.get(stage)
        if not ops:
            continue
        rows.append(
            [
                stage,
                _ms(sum(ops.values())),
                _ms(ops["matmul"]),
                rate(stage, "matmul"),
                _ms(ops["attention"]),
                rate(stage, "attention"),
                _ms(ops["other"]),
                _ms(ops["outside"]),
            ]
        )
    if not rows:
        return []
    header = ["stage", "profiled", "matmul", "GFLOP/s (of limit)", "attention", "GFLOP/s (of limit)",
              "other ops", "outside ops"]
    return _table(header, rows)


def _node_section(run: Run) -> list[str]:
    node = run.node or {}
    lines = []
    for name, result in node.items():
        if isinstance(result, str):
            lines.append(f"- {name}: not measured: {one_line(result, 600)}")
            continue
        size = "x".join(str(v) for v in result.image_size)
        lines.append(
            f"\n**{result.variant}** ({result.rmw}), {size}: "
            f"{result.model_name} on {result.device}, refine "
            f"{str(result.refine).lower()}, zoom {str(result.zoom).lower()}; {result.captions} "
            f"captions of {result.frames_sent} frames, each published {_ms(result.publish_gap_s)} after "
            f"the previous caption came back, so that it finds the node idle ({result.frames_lost} got "
            f"no caption within {_ms(result.frame_timeout_s)}).\n"
        )
        rows = []
        for part, s in (("all", result.all), ("rgb8", result.rgb8), ("bgr8", result.bgr8)):
            if not s:
                continue
            rows.append(
                [
                    part,
                    str(s.latency.n),
                    f"{_ms(s.latency.p50)} / {_ms(s.latency.p95)}",
                    f"{_ms(s.message_latency.p50)} / {_ms(s.message_latency.p95)}",
                    f"{_ms(s.model.p50)} / {_ms(s.model.p95)}",
                    f"{_ms(s.overhead.p50)} / {_ms(s.overhead.p95)}",
                    f"{_ms(s.message_overhead.p50)} / {_ms(s.message_overhead.p95)}",
                ]
            )
        lines += _table(
            [
                "frames",
                "captions",
                "latency p50 / p95 (received)",
                "latency p50 / p95 (node)",
                "model p50 / p95",
                "overhead p50 / p95 (received)",
                "overhead p50 / p95 (node)",
            ],
            rows,
        )
    return lines or ["Not measured."]


def _node_side(run: Run) -> list[str]:
    rows = []
    for model in run.models:
        for stage, s in (model.node_side or {}).items():
            rows.append([stage, f"{_ms(s.p50)}", f"{_ms(s.p95)}"])
        if rows:
            break
    return _table(["stage (640x480)", "p50", "p95"], rows) if rows else ["Not measured."]


def render_markdown(results: Results, plot_name: Optional[str] = None) -> str:
    """The whole of ``docs/benchmarks.md`` for ``results``."""
    runs = results.runs
    out = [
        "# Benchmarks: speed, latency and memory",
        "",
        "Generated by the benchmark command from its measurements; do not edit by hand. Every figure "
        "names the machine and date that produced it (see Machines). Regenerate with:",
        "",
        "```bash",
        "scripts/setup; source scripts/env.sh",
        "install/sharpeye_ros/lib/sharpeye_ros/benchmark          # = ros2 run sharpeye_ros benchmark; "
        "about 10-15 min on 2 CPU cores",
        "install/sharpeye_ros/lib/sharpeye_ros/benchmark --quick  # a short run",
        "```",
        "",
        "Run it on a quiet machine: other processes' load slows every stage (the load is recorded per run). "
        "GPU figures come from `scripts/gpu_check.sh` on a GPU machine (model-only, no ROS needed), merged "
        "here with `install/sharpeye_ros/lib/sharpeye_ros/benchmark --merge out/gpu/gpu_results.json "
        "--tests-log out/gpu/model_tests.log`.",
        "",
        "## Machines",
        "",
    ]
    out += _machines(results)
    out += ["", "## Targets", ""]
    out += _targets_section(results)
    if plot_name:
        out += ["", f"![Time per stage and fraction of the machine's limit]({plot_name})"]
    out += [
        "",
        "## Naive reference vs the library",
        "",
        "Both paths generate the same number of tokens per caption with the same search (see Definitions). "
        "A ratio is naive time / library time.",
        "",
    ]
    out += _naive_section(results)
    for key, run in runs.items():
        title = RUN_TITLES.get(key, key)
        out += ["", f"## {title}: time per stage", "", f"Measured on {run.machine.label}.", ""]
        for model in run.models:
            g = model.geometry
            out += [
                f"### {_model_title(model)}",
                "",
                f"{model.tokens} new tokens per caption ({model.tokens_source}), beams "
                f"{g.beams}, glance prompt {g.prompt_len} tokens, "
                f"refine prompt {g.refine_prompt_len} tokens; mean of {model.repeats} "
                "images "
                f"after {model.warmup} warm-up; model built/loaded in {model.load_seconds:.1f} s.",
                "",
            ]
            out += _stage_table(model)
            out += [""]
        limits = run.limits
        out += [
            f"## {title}: the limit",
            "",
            f"Measured on {run.machine.label}: {limits.dtype} matrix product "
            f"{limits.matmul_size}x{limits.matmul_size}: "
            f"**{limits.matmul_flops_per_s / 1e9:.0f} GFLOP/s**; memory read: "
            f"**{limits.read_bytes_per_s / 1e9:.1f} GB/s** (summing a {limits.read_mib} MiB "
            "tensor). "
            + _samples_note(limits) +
            "FLOP bound = stage FLOPs / matmul throughput; bytes bound = weights (and KV cache) read / "
            "bandwidth; achieved = the larger bound / measured time. Decoding at batch 1 reads every LM "
            "weight per token: it is limited by memory bandwidth, not FLOPs.",
            "",
        ]
        for model in run.models:
            for mode in LIMIT_MODES:
                if mode in (model.bounds or {}):
                    out += [f"**{_model_title(model)}, {MODE_TITLES[mode]}**", ""]
                    out += _bounds_table(model, mode)
                    out += [""]
                    ops = _ops_table(model.modes[mode], limits.matmul_flops_per_s)
                    if ops:
                        out += ["Where its time goes, in one profiled caption (each op's own time):", ""]
                        out += ops + [""]
        if key == CPU:
            out += [
                "## End-to-end latency through the node",
                "",
                f"Measured on {run.machine.label}: the installed `captioner` process, frames "
                "alternating rgb8 and bgr8, stamped when published. Latency (received) = caption received - "
                "header.stamp; latency (node) = the caption's latency_seconds (stamp -> publish); model = "
                "glance_seconds + refine_seconds; overhead = latency - model.",
                "",
            ]
            out += _node_section(run)
            out += [
                "",
                "Node-side work per frame outside the model (the annotated image is drawn only while "
                "someone subscribes to `caption_image`):",
                "",
            ]
            out += _node_side(run)
    if CUDA not in runs:
        out += [
            "",
            "## GPU",
            "",
            f"No GPU figures: {one_line(results.gpu_note or 'no GPU run has been merged', 600)}. "
            "`scripts/gpu_check.sh` measures them on a machine with CUDA.",
        ]
    check = results.gpu_check
    if check is not None and check.to_json():
        out += [
            "",
            "## GPU check",
            "",
            f"On {check.gpu or '-'}, {check.date_utc or '-'}: model tests: {check.model_tests or '-'}.",
        ]
    out += ["", "## Definitions", "", *DEFINITIONS]
    return "\n".join(out) + "\n"


DEFINITIONS = [
    "- **Images**: synthetic 640x480 scenes of the world's validation split, batch 1.",
    "- **Stages** are the model's own timings (`CaptionResult.timings`; CUDA synchronised at each stage "
    "edge): preprocess (pad, resize, normalise), vision (CLIP tower, up to the deepest layer used), "
    "connector, prefill and "
    "decode of the glance, regions (boxes from the captured attention), deeplens, refine_prefill, "
    "refine_decode and refine_regions (a changed caption's own regions, from one teacher-forced pass on the "
    "glance's kept prompt); "
    "total = the whole `caption()` call.",
    "- **Tokens**: every mode and path generates the same number of new tokens per caption (stop rules off): "
    "the preset's random LM never stops on its own, so the paper-size model writes a fixed number; the demo "
    "model writes its natural caption length on these images. Beam search as the model's config says.",
    "- **Draft**: where the config decodes the refined caption greedily with the initial caption as a draft, "
    "runs of draft tokens are checked in one LM pass (the row 'LM passes' counts passes). How much that "
    "saves depends on how far the refined caption follows the initial one: a random model's two captions "
    "agree almost fully, the best case. The mode 'refinement without draft' decodes token by token: the "
    "worst case.",
    "- **Random weights**: the paper-size architecture (CLIP ViT-L/14-336 + mlp4x_bott4x_gelu + OPT-125M + "
    "DeepLens) is built with random weights; its embedding rows past the small word tokenizer are zeroed so "
    "that captions are words (same compute). Speed does not depend on the weights' values.",
    "- **Naive reference**: (1) a full vision pass, the connector and transformers' `generate` with its "
    "default settings (its own KV cache and beam search; told only num_beams, length_penalty, early_stopping "
    "and the fixed token count); (2) attended regions from a second, teacher-forced LM pass over prompt + "
    "caption instead of attention captured while decoding; (3) refinement with a second full vision pass "
    "(nothing of the glance's vision states reused), the connector again, DeepLens, and `generate` again.",
    "- **FLOPs** are counted by `torch.utils.flop_counter.FlopCounterMode` on one extra run per mode (matrix "
    "products, convolutions and attention, 2 FLOPs per multiply-add), so they are what actually ran (e.g. "
    "23 of the 24 CLIP layers: the glance and DeepLens read none after layer 23).",
    "- **Where the time goes**: on the CPU, one extra caption of the glance and of glance + DeepLens under "
    "`torch.profiler`; each aten op's "
    "own time (not its callees') is summed by class: matmul (matrix products, convolutions), attention (fused "
    "attention kernels), other ops (elementwise, norms, softmax, copies, top-k, indexing); outside ops = the "
    "stage's time in no op (Python, dispatch, and the profiler's own cost per op, so it overstates them). "
    "The GFLOP/s divide each class's counted FLOPs by its time; the share is of the run's matmul limit "
    "(over 100%: the machine ran faster during that caption than during the limit's samples).",
    "- **FLOP-bound target**: each timed paper-size glance caption against the float32 matmul throughput "
    "sampled just before and just after it (the better of the two), then the median over the captions; "
    "the ratio against the run's best sample (the limit in the tables) is shown beside it. Both samples "
    "and captions come from a machine whose speed drifts by tens of percent within minutes.",
    "- **DeepLens overhead**: the refinement's time (total - the glance stages) over the glance stages' time, "
    "both within the same 'glance + DeepLens' captions; the totals of the two modes are shown beside it "
    "but are timed a minute apart, and this machine's speed drifts between them.",
    "- **Node runs**: each in a fresh process pair (benchmark client and `captioner`), with the shipped "
    "parameters except max_rate 100. Each frame is published 20 ms after the previous caption came back, so "
    "it finds the node idle: overhead = latency - model time is what the node and the transport add, not "
    "waiting behind an earlier caption (a frame that comes while the node is busy waits up to one caption's "
    "model time on top; the rate is the captions per second above). 'best_effort' is the node's default "
    "image QoS with the RMW's default transport; '16 MiB shared memory' is `config/fastdds_large_shm.xml` "
    "for both ends: a Fast DDS shared-memory segment large enough for a whole 640x480 rgb8 frame (the default "
    "512 KiB segment sends it as UDP fragments, which a busy receiver drops, or with 'reliable' acknowledges "
    "and resends).",
    "- **Peak memory**: CPU = the process's peak resident set (VmHWM, reset before each mode; each model "
    "runs in a process of its own); CUDA = torch's peak allocated and reserved bytes per mode, plus the CUDA "
    "context (device memory in use before the model was loaded). GB = 10^9 bytes.",
]


# ---- plot ----------------------------------------------------------------------------------
def write_plot(results: Results, path: Path) -> Optional[Path]:
    """Stacked time per stage for each measured (run, model, mode), and the achieved
    fraction of the limit per stage of the paper-size glance + DeepLens. None when there
    is nothing to draw or matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    bars: list[tuple[str, dict[str, float]]] = []
    achieved: list[tuple[str, dict[str, float]]] = []
    for key, run in results.runs.items():
        for model in run.models:
            for mode, m in model.measured_modes.items():
                bars.append(
                    (
                        f"{RUN_TITLES.get(key, key)} {model.name} {mode}",
                        {s: v.mean for s, v in m.stages.items()},
                    )
                )
            b = (model.bounds or {}).get(DEEPLENS)
            if model.name == "paper" and b:
                achieved.append(
                    (
                        RUN_TITLES.get(key, key),
                        {s: v.achieved for s, v in b.items() if v.achieved is not None},
                    )
                )
    if not bars:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(14, 0.45 * len(bars) + 2.5), gridspec_kw={"width_ratios": [3, 2]})
    ax = axes[0]
    colours = plt.get_cmap("tab20").colors
    stages = [s for s in STAGE_ORDER if any(s in d for _, d in bars)]
    for y, (label, times) in enumerate(bars):
        left = 0.0
        for i, stage in enumerate(stages):
            value = times.get(stage, 0.0)
            ax.barh(y, value, left=left, color=colours[i % len(colours)], label=stage if y == 0 else None)
            left += value
    for i, stage in enumerate(stages):  # legend entries for stages missing from the first bar
        if stage not in bars[0][1]:
            ax.barh(0, 0, color=colours[i % len(colours)], label=stage)
    ax.set_yticks(range(len(bars)), [label for label, _ in bars])
    ax.invert_yaxis()
    ax.set_xscale(
        "log"
        if max(sum(t.values()) for _, t in bars) / min(sum(t.values()) for _, t in bars) > 50
        else "linear"
    )
    ax.set_xlabel("seconds per caption (stacked stages)")
    ax.legend(fontsize=7, ncol=2, loc="lower right")
    ax = axes[1]
    width = 0.8 / max(1, len(achieved))
    names = [s for s in STAGE_ORDER if any(s in a for _, a in achieved)]
    for j, (label, fractions) in enumerate(achieved):
        ax.bar(
            [i + j * width for i in range(len(names))],
            [100 * fractions.get(s, 0.0) for s in names],
            width,
            label=label,
        )
    ax.set_xticks(
        [i + width * (len(achieved) - 1) / 2 for i in range(len(names))], names, rotation=45, ha="right"
    )
    ax.set_ylabel("% of the machine's limit (paper size, glance + DeepLens)")
    if achieved:
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


__all__ = [
    "Target",
    "format_value",
    "render_markdown",
    "targets",
    "verdict",
    "write_plot",
]
