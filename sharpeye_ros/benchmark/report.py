"""``docs/benchmarks.md`` and its plot, rendered from the results.

Nothing here measures or judges: every number in the document comes from ``results`` (see
:mod:`sharpeye_ros.benchmark.results` for its layout), each with the machine and date that
produced it, and the verdicts from :mod:`sharpeye_ros.benchmark.targets`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from sharpeye_ros.benchmark import naive
from sharpeye_ros.benchmark.bounds import LIMIT_MODES, glance_seconds
from sharpeye_ros.benchmark.results import (
    CPU,
    CUDA,
    NAIVE,
    NODRAFT,
    RUN_TITLES,
    Limits,
    ModelResult,
    ModeResult,
    Results,
    Run,
    Skipped,
    run_kind,
)
from sharpeye_ros.benchmark.targets import Target, targets
from sharpeye_ros.benchmark.units import gb, ms, one_line
from sharpeye_ros.evaluation.modes import DEEPLENS, GLANCE, ZOOM
from sharpeye_ros.model.timing import DECODE, GLANCE_STAGES, REFINE_DECODE, REFINE_STAGES

MODE_TITLES = {
    GLANCE: "glance",
    DEEPLENS: "glance + DeepLens",
    NODRAFT: "glance + DeepLens, refinement without draft",
    ZOOM: "glance + DeepLens + zoom",
    NAIVE: "naive reference (glance + refinement)",
}
# Table rows: each path's glance, then each path's refinement.
STAGE_ORDER = GLANCE_STAGES + naive.NAIVE_GLANCE_STAGES + REFINE_STAGES + naive.NAIVE_REFINE_STAGES


def _samples_note(limits: Limits) -> str:
    """Which samples the limits are the best of, when there were several."""
    matmul, read = limits.matmul_samples, limits.read_samples
    if len(matmul) < 2:
        return ""
    return (f"Each is the best of samples taken before and after the models (matmul "
            f"{', '.join(f'{v / 1e9:.0f}' for v in matmul)} GFLOP/s; read "
            f"{', '.join(f'{v / 1e9:.1f}' for v in read)} GB/s): this machine's speed drifts. ")


# ---- formatting ----------------------------------------------------------------------------
def format_value(t: Target) -> str:
    """A target's measured value as the docs write it ('-' when not measured)."""
    v = t.measured
    if v is None:
        return "-"
    return {"fraction": f"{v * 100:+.0f}%", "x": f"{v:.2f}x", "s": ms(v), "bytes": gb(v)}[t.unit]


def _limit(t: Target) -> str:
    v = t.limit
    texts = {
        "fraction": f"<= +{v * 100:.0f}%",
        "x": f"<= {v:.1f}x",
        "s": f"<= {ms(v)}",
        "bytes": f"<= {gb(v)}",
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
            row.append(ms(s.mean) if s else "")
        rows.append(row)
    rows.append(
        ["**total per caption** (p50 / p95)"]
        + [f"**{ms(m.total.mean)}** ({ms(m.total.p50)} / {ms(m.total.p95)})" for m in modes.values()]
    )
    rows.append(["LM passes: decode / refine decode"] + [_passes(m) for m in modes.values()])
    rows.append(["captions per second"] + [f"{m.captions_per_s:.2f}" for m in modes.values()])
    rows.append(["peak resident memory (CPU)"] + [gb(m.peak_rss_bytes) for m in modes.values()])
    if run_kind(model.device) == CUDA:
        rows.append(
            ["peak CUDA allocated / reserved"]
            + [f"{gb(m.cuda_peak_allocated_bytes)} / {gb(m.cuda_peak_reserved_bytes)}" for m in modes.values()]
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
                    ms(og),
                    ms(ng),
                    f"{ng / og:.2f}x",
                    ms(o_ref),
                    ms(n_ref),
                    f"{n_ref / o_ref:.2f}x" if o_ref > 0 else "-",
                    ms(opt.total.mean),
                    ms(slow.total.mean),
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
                ms(b.flop_bound_s),
                "-" if b.bytes is None else f"{b.bytes / 1e6:.0f}",
                ms(b.byte_bound_s),
                ms(b.seconds),
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
                ms(sum(ops.values())),
                ms(ops["matmul"]),
                rate(stage, "matmul"),
                ms(ops["attention"]),
                rate(stage, "attention"),
                ms(ops["other"]),
                ms(ops["outside"]),
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
            f"captions of {result.frames_sent} frames, each published {ms(result.publish_gap_s)} after "
            f"the previous caption came back, so that it finds the node idle ({result.frames_lost} got "
            f"no caption within {ms(result.frame_timeout_s)}).\n"
        )
        rows = []
        for part, s in (("all", result.all), ("rgb8", result.rgb8), ("bgr8", result.bgr8)):
            if not s:
                continue
            rows.append(
                [
                    part,
                    str(s.latency.n),
                    f"{ms(s.latency.p50)} / {ms(s.latency.p95)}",
                    f"{ms(s.message_latency.p50)} / {ms(s.message_latency.p95)}",
                    f"{ms(s.model.p50)} / {ms(s.model.p95)}",
                    f"{ms(s.overhead.p50)} / {ms(s.overhead.p95)}",
                    f"{ms(s.message_overhead.p50)} / {ms(s.message_overhead.p95)}",
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
            rows.append([stage, f"{ms(s.p50)}", f"{ms(s.p95)}"])
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
    "format_value",
    "render_markdown",
    "verdict",
    "write_plot",
]
