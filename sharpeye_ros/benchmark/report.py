"""``docs/benchmarks.md`` and its plot, rendered from the results.

Nothing here measures or judges: every number in the document comes from ``results`` (see
:mod:`sharpeye_ros.benchmark.results` for its layout), each with the machine and date that
produced it, and the verdicts from :mod:`sharpeye_ros.benchmark.targets`. The prose is
``report_template.md`` beside this module (package data), in named blocks; this module
builds the tables and puts blocks and tables in order.
"""

from __future__ import annotations

import functools
import importlib.resources
import re
import statistics
import string
from pathlib import Path
from typing import Optional

from sharpeye_ros.benchmark import fast_path, fidelity, libraries, naive, peers
from sharpeye_ros.benchmark.bounds import LIMIT_MODES, glance_seconds
from sharpeye_ros.benchmark.results import (
    CPU,
    CUDA,
    NAIVE,
    FastPath,
    Machine,
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

# ---- prose ---------------------------------------------------------------------------------
TEMPLATE = "report_template.md"
_BLOCK = re.compile(r"<!-- block: (\w+) -->")


class TemplateError(ValueError):
    """The report template lacks a block, or a block names a value the report does not give."""


@functools.lru_cache(maxsize=None)
def template_blocks() -> dict[str, string.Template]:
    """The template's prose blocks by name. A block starts at a line that is only
    ``<!-- block: NAME -->`` and runs to the next one; what comes before the first is a
    comment for the template's readers."""
    text = importlib.resources.files(__package__).joinpath(TEMPLATE).read_text(encoding="utf-8")
    blocks: dict[str, list[str]] = {}
    lines: Optional[list[str]] = None
    for line in text.splitlines():
        match = _BLOCK.fullmatch(line)
        if match:
            lines = blocks.setdefault(match.group(1), [])
        elif lines is not None:
            lines.append(line)
    return {name: string.Template("\n".join(lines)) for name, lines in blocks.items()}


def prose(block: str, /, **values: object) -> list[str]:
    """The lines of the template's ``block`` with ``values`` filled in (already
    formatted: the block says where, the report says what)."""
    template = template_blocks().get(block)
    if template is None:
        raise TemplateError(f"{TEMPLATE} has no block {block!r}")
    try:
        return template.substitute(values).split("\n")
    except KeyError as err:
        raise TemplateError(f"{TEMPLATE}, block {block!r}: no value for {err}") from None
    except ValueError as err:  # a '$' that starts no name
        raise TemplateError(f"{TEMPLATE}, block {block!r}: {err}") from None


def _samples_note(limits: Limits) -> str:
    """Which samples the limits are the best of, when there were several (it runs on in
    the limit's paragraph, hence the trailing space)."""
    matmul, read = limits.matmul_samples, limits.read_samples
    if len(matmul) < 2:
        return ""
    (note,) = prose(
        "samples",
        matmul=", ".join(f"{v / 1e9:.0f}" for v in matmul),
        read=", ".join(f"{v / 1e9:.1f}" for v in read),
    )
    return note + " "


# ---- formatting ----------------------------------------------------------------------------
def format_value(t: Target) -> str:
    """A target's measured value as the docs write it ('-' when not measured)."""
    v = t.measured
    if v is None:
        return "-"
    return {"fraction": f"{v * 100:+.0f}%", "share": f"{v * 100:.1f}%", "x": f"{v:.2f}x", "s": ms(v),
            "bytes": gb(v)}[t.unit]


def _limit(t: Target) -> str:
    v = t.limit
    texts = {
        "fraction": f"<= +{v * 100:.0f}%",
        "share": f"<= {v * 100:g}%",
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
    return lines + (prose("skipped", skipped="; ".join(skipped)) if skipped else [])


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
        return prose("no_naive")
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
            lines += prose("node_failed", name=name, error=one_line(result, 600))
            continue
        lines += prose(
            "node_run",
            variant=result.variant,
            rmw=result.rmw,
            size="x".join(str(v) for v in result.image_size),
            model=result.model_name,
            device=result.device,
            refine=str(result.refine).lower(),
            zoom=str(result.zoom).lower(),
            captions=result.captions,
            frames=result.frames_sent,
            gap=ms(result.publish_gap_s),
            lost=result.frames_lost,
            timeout=ms(result.frame_timeout_s),
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
    return lines or prose("not_measured")


def _node_side(run: Run) -> list[str]:
    rows = []
    for model in run.models:
        for stage, s in (model.node_side or {}).items():
            rows.append([stage, f"{ms(s.p50)}", f"{ms(s.p95)}"])
        if rows:
            break
    return _table(["stage (640x480)", "p50", "p95"], rows) if rows else prose("not_measured")


def _still_section(run: Run) -> list[str]:
    still = run.still
    if still is None:
        return []
    lines = []
    first = still.cpu[0].on if still.cpu else None
    rates = still.rates
    lines += prose(
        "still",
        machine=(still.machine or run.machine).label,
        threshold=f"{rates.threshold:g}" if rates else "-",
        max_still=f"{first.max_still_seconds:g}" if first else "-",
        max_share=(f"{first.max_still_share:g}" if first and first.max_still_share is not None
                   else "0 (a run from before it existed)" if first else "-"),
        input_rate=f"{first.input_rate_hz:g}" if first else "-",
        noise=f"{first.noise_sigma:g}" if first else "-",
        max_rate=f"{first.max_rate_hz:g}" if first else "-",
    )
    rows, parts = [], []
    for pair in still.cpu:
        for name, r in (("on", pair.on), ("off", pair.off)):
            received = f"{r.input_received_hz:.1f} Hz" if r.input_received_hz is not None else "-"
            idle = f"{r.idle_cpu_seconds_per_second:.4f}" if r.idle_cpu_seconds_per_second is not None else "-"
            per_caption = f"{r.model_caption_cpu_seconds:.2f} s" if r.model_caption_cpu_seconds is not None else "-"
            period = f"{r.period:.0f} s" if name == "on" else "-"
            rows.append([pair.model_name, name, received, f"{r.cpu_seconds_per_second:.4f}", idle, per_caption,
                         period, str(r.model_captions), str(r.reused_captions), f"{r.seconds:.0f} s",
                         f"{pair.ratio * 100:.1f}%" if name == "on" else "100%"])
        if pair.amortised is not None:
            on, off = pair.on, pair.off.cpu_seconds_per_second
            source = (f" (the node's: max({on.max_still_seconds:g}, {on.model_last_s:.2f} s caption / "
                      f"{on.max_still_share:g}))" if on.still_period_s is not None and on.model_last_s is not None
                      and on.max_still_share is not None else " (max_still_seconds)")
            parts.append(f"{pair.model_name}: {on.idle_cpu_seconds_per_second:.4f} + "
                         f"{on.model_caption_cpu_seconds:.2f} / {on.period:.0f}{source} = {pair.amortised:.4f} CPU s/s, "
                         f"{pair.amortised / off * 100:.1f}% of gating off, of which the "
                         f"forced caption {on.model_caption_cpu_seconds / on.period / off * 100:.1f}%")
    lines += _table(["model", "gating", "frames received", "CPU s/s", "idle CPU s/s", "CPU per model caption",
                     "still period", "model captions", "reused captions", "window", "CPU vs gating off"],
                    rows) if rows else prose("not_measured")
    if parts:
        lines += prose("still_parts", parts="; ".join(parts))
    view = still.changing
    if view is not None:
        lines += prose("still_changing", period=f"{view.change_period_s:g}", model=view.model_name,
                       input_rate=f"{view.input_rate_hz:g}", max_rate=f"{view.max_rate_hz:g}",
                       received=(f"{view.input_received_hz:.1f} Hz" if view.input_received_hz is not None
                                 else "an unmeasured rate"),
                       interval=ms(view.interval_s), in_time=view.captioned_in_time, changes=view.changes)
        kinds: dict[str, list] = {}
        for c in view.per_change:
            kinds.setdefault(c.change, []).append(c)
        rows = []
        for kind, changes in kinds.items():
            delays = [c.delay_s for c in changes if c.delay_s is not None]
            # Reused: the gate took the change for a still view; none: no frame showing it
            # was captioned at all (lost in transport, or the node was starved of CPU).
            reused = sum(not c.captioned and c.delay_s is not None for c in changes)
            none = sum(c.delay_s is None for c in changes)
            rows.append([kind.replace("_", " "), str(len(changes)), str(sum(c.captioned for c in changes)),
                         str(reused), str(none), ms(statistics.median(delays)) if delays else "-",
                         ms(max(delays)) if delays else "-"])
        lines += _table(["change", "changes", "first caption the model's", "first caption reused",
                         "no caption", "delay p50", "delay max"], rows)
    if rates is not None:
        lines += prose("still_rates", scenes=rates.scenes, split=rates.split, threshold=f"{rates.threshold:g}")
        rows = []
        for kind, colour in rates.false_skips["colour"].items():
            grey = rates.false_skips["grey"][kind]
            rows.append([kind.replace("_", " "), f"{colour.count} of {colour.of}",
                         f"{colour.min:.3f} / {colour.p5:.3f} / {colour.median:.3f}", f"{grey.count} of {grey.of}",
                         f"{grey.min:.3f} / {grey.p5:.3f} / {grey.median:.3f}"])
        for sigma, colour in rates.still_recaptions["colour"].items():
            grey = rates.still_recaptions["grey"][sigma]
            rows.append([f"still, noise sigma {sigma}: needless captions", f"{colour.count} of {colour.of}",
                         f"max {colour.max:.3f}, median {colour.median:.3f}", f"{grey.count} of {grey.of}",
                         f"max {grey.max:.3f}, median {grey.median:.3f}"])
        lines += _table(["scene change", "colour: false skips", "colour: measure min / p5 / median",
                         "grey: false skips", "grey: measure min / p5 / median"], rows)
    for error in still.errors:
        lines += prose("node_failed", name="still view", error=one_line(error, 600))
    return lines


def render_markdown(results: Results, plot_name: Optional[str] = None) -> str:
    """The whole of ``docs/benchmarks.md`` for ``results``."""
    runs = results.runs
    out = prose("header")
    out += _machines(results)
    out += prose("targets")
    out += _targets_section(results)
    if plot_name:
        out += prose("plot", plot=plot_name)
    out += prose("naive")
    out += _naive_section(results)
    for key, run in runs.items():
        title = RUN_TITLES.get(key, key)
        out += prose("stages", run=title, machine=run.machine.label)
        for model in run.models:
            g = model.geometry
            out += prose(
                "model",
                model=_model_title(model),
                tokens=model.tokens,
                tokens_source=model.tokens_source,
                beams=g.beams,
                prompt_len=g.prompt_len,
                refine_prompt_len=g.refine_prompt_len,
                repeats=model.repeats,
                warmup=model.warmup,
                load_seconds=f"{model.load_seconds:.1f}",
            )
            out += _stage_table(model)
            out += [""]
        limits = run.limits
        out += prose(
            "limits",
            run=title,
            machine=run.machine.label,
            dtype=limits.dtype,
            size=limits.matmul_size,
            matmul=f"{limits.matmul_flops_per_s / 1e9:.0f}",
            read=f"{limits.read_bytes_per_s / 1e9:.1f}",
            read_mib=limits.read_mib,
            samples=_samples_note(limits),
        )
        for model in run.models:
            for mode in LIMIT_MODES:
                if mode in (model.bounds or {}):
                    out += prose("limit_mode", model=_model_title(model), mode=MODE_TITLES[mode])
                    out += _bounds_table(model, mode)
                    out += [""]
                    ops = _ops_table(model.modes[mode], limits.matmul_flops_per_s)
                    if ops:
                        out += prose("ops")
                        out += ops + [""]
        if key == CPU:
            out += prose("node", machine=run.machine.label)
            out += _node_section(run)
            out += prose("node_side")
            out += _node_side(run)
            out += _still_section(run)
    if results.fast_path is not None:
        out += _fast_path_section(results.fast_path)
    if CUDA not in runs:
        out += prose("no_gpu", note=one_line(results.gpu_note or "no GPU run has been merged", 600))
    check = results.gpu_check
    if check is not None and check.to_json():
        out += prose(
            "gpu_check",
            gpu=check.gpu or "-",
            date=check.date_utc or "-",
            tests=check.model_tests or "-",
        )
    out += prose("definitions")
    return "\n".join(out) + "\n"


def _fast_path_section(fast: FastPath) -> list[str]:
    """The CPU fast path: its speed run, roofline and node rates, then the side-by-sides
    it was chosen by, each table as its own module renders it."""
    if fast.rows:
        m = fast.machine
        out = prose("fast_path", machine=m.label if m else "-", rounds=fast.rounds, tokens=fast.tokens,
                    beams=fast.beams, load=f"{fast.load_before or 0:.1f} -> {fast.load_after or 0:.1f}",
                    auto=fast.auto or "int8-vision (a run that did not record it: from the CPU, as below)")
        out += fast_path.render(fast.to_json()) + [""]
    else:
        out = prose("fast_path_no_speed")
    if fast.node:
        node = fast.node
        auto = [f"{r.model}: {r.runs}" for r in node.rows if r.dtype == "auto"]
        out += prose("fast_path_node", machine=node.machine.label, rounds=node.rounds,
                     load=f"{node.load_before or 0:.1f} -> {node.load_after or 0:.1f}",
                     auto="; ".join(auto) or "not measured")
        out += fast_path.render_node(node) + [""]
    if fast.fidelity:
        out += prose("fast_path_fidelity", machine=Machine.from_json(fast.fidelity["machine"]).label)
        out += fidelity.render(fast.fidelity) + [""]
    if fast.libraries:
        out += prose("fast_path_libraries", machine=Machine.from_json(fast.libraries["machine"]).label)
        out += libraries.render(fast.libraries).rstrip("\n").split("\n")[1:] + [""]
    if fast.peers:
        table = fast.peers
        out += prose("fast_path_peers", machine=table.machine.label, tokens=table.tokens, rounds=table.rounds,
                     load=f"{table.load_before or 0:.1f} -> {table.load_after or 0:.1f}")
        out += peers.render(table) + [""]
    out += prose("fast_path_choice")
    return out


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
