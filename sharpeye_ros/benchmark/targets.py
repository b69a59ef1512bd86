"""The benchmark's targets and their verdicts, from the results.

A target is a limit (a module constant below) and a function of the
:class:`~sharpeye_ros.benchmark.results.Results` that returns its :class:`Target` rows:
one per device kind or node variant, or one saying why it was not measured.
:data:`TARGETS` lists them in the order of the docs' table.

Adding a target: write such a function, with ``detail`` saying what the value was
computed from (a reader checks it there), and add it to :data:`TARGETS`; the docs' table
(:mod:`~sharpeye_ros.benchmark.report`) and the command's summary pick it up. Nothing
here measures or renders.
"""

from __future__ import annotations

import dataclasses
import statistics
from dataclasses import dataclass
from typing import Callable, Optional

from sharpeye_ros.benchmark.bounds import glance_seconds, total_flop_ratio
from sharpeye_ros.benchmark.results import CPU, CUDA, RUN_KINDS, RUN_TITLES, ModeResult, NodeResult, Results, Run
from sharpeye_ros.benchmark.units import gb, ms, one_line
from sharpeye_ros.evaluation.modes import DEEPLENS, GLANCE

DEEPLENS_MAX_OVERHEAD = 0.25  # DeepLens adds at most 25% to the glance at paper size
GLANCE_MAX_FLOP_RATIO = 1.5  # the paper-size CPU glance within 1.5x of its FLOP bound
NODE_MAX_OVERHEAD_S = 0.010  # node overhead at p95, 640x480
GPU_MAX_BYTES = 2.7e9  # paper size + DeepLens in fp16 on a GPU
STILL_MAX_CPU_RATIO = 0.05  # a still view costs at most 5% of the CPU that captioning every frame does
STILL_PERIOD_TOLERANCE = 0.01  # the node's still period within 1% of the documented formula (its rounding)
MAX_LATE_CHANGES = 0.0  # the share of a changing view's changes not captioned within one caption interval
SMALL_OBJECT_MAX_FALSE_SKIPS = 0.0  # a small object appearing is never taken for a still view
UNITS = ("fraction", "share", "x", "s", "bytes")  # what a target's value and limit are in (fraction: an
# increase, "+25%"; share: a part of a whole, "4.2%")
FAST_PATH_MAX_TIME = 1 / 3  # the CPU fast path: at least 3x faster than float32 (paper size, 3 beams)
FAST_PATH_MAX_ROOFLINE = 1.3  # the fast path's glance within 1.3x of its own roofline
FAST_PATH = "int8"  # the fast path of a run that does not say what auto ran (before bfloat16-mixed)


@dataclass
class Target:
    """One target: the value measured (None: not measured), its limit, both in ``unit``
    (one of :data:`UNITS`), the machine that measured it and how (``detail``; when not
    measured, why)."""

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


def find_mode(run: Optional[Run], model: str, mode: str) -> Optional[ModeResult]:
    """Mode ``mode`` of the model called ``model`` in ``run``, or None where it was not measured."""
    found = run.model(model) if run else None
    return found.mode(mode) if found else None


def mode_seconds(mode: Optional[ModeResult]) -> Optional[float]:
    """Mean seconds per caption of ``mode``, or None when it was not measured."""
    return None if mode is None else float(mode.total.mean)


# ---- the targets -------------------------------------------------------------------------
def deeplens_overhead(results: Results) -> list[Target]:
    """DeepLens's refinement over the glance, paper size, on each device kind."""
    out = []
    for key in RUN_KINDS:
        run = results.runs.get(key)
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
                f"refinement {ms(deeplens - own_glance)} after a {ms(own_glance)} glance, in the same "
                f"captions (timed apart: glance {ms(glance)}, glance + DeepLens {ms(deeplens)})"
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
    return out


def glance_flop_ratio(results: Results) -> list[Target]:
    """The paper-size glance on the CPU against its FLOP bound: the median over its
    captions of each one's time against the matmul throughput sampled around it."""
    run = results.runs.get(CPU)
    paper = run.model("paper") if run else None
    mode = paper.mode(GLANCE) if paper else None
    ratio, detail = None, ""
    if mode is not None:
        flops, peak = sum(mode.flops.values()), run.limits.matmul_flops_per_s
        bound = flops / peak
        ratio = total_flop_ratio(mode.total.mean, flops, peak)
        detail = (
            f"{ms(mode.total.mean)} measured vs {ms(bound)} = {flops / 1e9:.0f} GFLOP at "
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
                f"; vs the roofline (per stage the slower of FLOPs and bytes read) {ms(roofline)}: "
                f"{mode.total.mean / roofline:.2f}x; a glance at its roofline would itself be "
                f"{roofline / bound:.2f}x its FLOP bound"
            )
    return [
        _target(
            "Paper-size glance on the CPU within 1.5x of its FLOP bound",
            ratio,
            GLANCE_MAX_FLOP_RATIO,
            "x",
            run,
            detail,
        )
    ]


def node_overhead(results: Results) -> list[Target]:
    """What the node adds to the model's time at p95, per node variant of the CPU run."""
    run = results.runs.get(CPU)
    node = (run.node if run else None) or {}
    out = []
    for result in node.values():
        if not isinstance(result, NodeResult):
            continue
        detail = (
            f"{result.captions} captions ({result.model_name}), p50 "
            f"{ms(result.all.overhead.p50)}; {result.frames_lost} of {result.frames_sent} "
            "frames got no caption"
        )
        size = "x".join(str(v) for v in result.image_size)
        out.append(
            _target(
                f"Node overhead at p95, {size}, {result.variant}",
                result.all.overhead.p95,
                NODE_MAX_OVERHEAD_S,
                "s",
                run,
                detail,
            )
        )
    if not out:
        errors = [v for v in node.values() if isinstance(v, str)]
        missing = "not measured: " + (one_line(errors[0]) if errors else "no node run")
        out.append(_target("Node overhead at p95, 640x480", None, NODE_MAX_OVERHEAD_S, "s", None, "", missing))
    return out


def gpu_memory(results: Results) -> list[Target]:
    """The paper-size model with DeepLens in fp16 on a GPU: torch's reserved peak plus
    the CUDA context; without a GPU run, what the CPU run's weights alone would take."""
    run = results.runs.get(CUDA)
    paper = run.model("paper") if run else None
    used, detail = None, ""
    mode = paper.mode(DEEPLENS) if paper else None
    if mode and mode.cuda_peak_reserved_bytes is not None:
        context = paper.cuda_context_bytes or 0
        used = mode.cuda_peak_reserved_bytes + context
        detail = (
            f"torch reserved peak {gb(mode.cuda_peak_reserved_bytes)} (allocated "
            f"{gb(mode.cuda_peak_allocated_bytes)}) + CUDA context {gb(context)}, {paper.dtype}"
        )
    missing = one_line(results.gpu_note or "not measured: no GPU run")
    cpu_paper = results.runs[CPU].model("paper") if CPU in results.runs else None
    if cpu_paper:  # what can be said without a GPU: the weights alone, in fp16
        params = sum(cpu_paper.params.values())
        missing += (
            f"; its weights alone take {gb(2 * params)} in fp16 ({params / 1e6:.0f}M parameters, "
            "CPU run), activations and the CUDA context come on top"
        )
    return [
        _target("Paper size + DeepLens fits a GPU in fp16", used, GPU_MAX_BYTES, "bytes", run, detail, missing)
    ]


def _still(results: Results):  # noqa: ANN202
    """The CPU run's still-view result, and a stand-in run that names where it was
    measured (its own machine and date, when it was added to an earlier run)."""
    run = results.runs.get(CPU)
    still = run.still if run else None
    if still is not None and still.machine is not None:
        run = dataclasses.replace(run, machine=still.machine)
    return run, still


def _still_missing(still) -> str:  # noqa: ANN001
    errors = still.errors if still else []
    return "not measured: " + (one_line(errors[0]) if errors else "no still-view run")


def still_cpu(results: Results) -> list[Target]:
    """The captioner's CPU per second on a still scene over gating off's, per model: amortised
    from its measured parts (idle rate + CPU per model caption / the node's still period),
    which a window shorter than a stretched period cannot hold whole; the window's own ratio
    where the parts were not measured."""
    run, still = _still(results)
    out = []
    for pair in still.cpu if still else []:
        on, off = pair.on, pair.off
        window = (f"{on.model_captions} model captions and {on.reused_captions} reused in {on.seconds:.0f} s still "
                  f"vs {off.model_captions} in {off.seconds:.0f} s gating off, at {on.input_rate_hz:g} Hz input, "
                  f"max_rate {on.max_rate_hz:g}")
        if pair.amortised_ratio is not None:
            measured = pair.amortised_ratio
            source = (f"the node's; max_still_seconds {on.max_still_seconds:g}, max_still_share {on.max_still_share:g}"
                      if on.still_period_s is not None and on.max_still_share is not None
                      else "max_still_seconds: a run before max_still_share")
            detail = (f"amortised: {on.idle_cpu_seconds_per_second:.4f} idle + {on.model_caption_cpu_seconds:.2f} "
                      f"CPU s per model caption / {on.period:.0f} s still period ({source}) = {pair.amortised:.4f} "
                      f"vs {off.cpu_seconds_per_second:.4f} CPU s/s; {window}")
        else:
            measured = pair.ratio
            detail = (f"{on.cpu_seconds_per_second:.4f} vs {off.cpu_seconds_per_second:.4f} CPU s/s over the "
                      f"window (max_still_seconds {on.max_still_seconds:g}): {window}")
        out.append(_target(f"Still view: CPU <= 5% of gating off, {pair.model_name}", measured,
                           STILL_MAX_CPU_RATIO, "share", run, detail))
    if not out:
        out.append(_target("Still view: CPU <= 5% of gating off", None, STILL_MAX_CPU_RATIO, "share", None, "",
                           _still_missing(still)))
    return out


def _g(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.2f}"


def still_period(results: Results) -> list[Target]:
    """The forced caption of a still view comes as documented, per model: the node's reported
    still period against max(max_still_seconds, model_last_s / max_still_share) from its
    own report (the relative difference), and 100% where the still window lasted its period
    and held no forced caption, or held one before it."""
    run, still = _still(results)
    out = []
    for pair in still.cpu if still else []:
        on = pair.on
        documented, due = on.documented_period, on.forced_due
        if documented is None or on.still_period_s is None or due is None:
            continue
        error = abs(on.still_period_s - documented) / documented
        forced_ok = (on.model_captions >= 1) if due else on.model_captions == 0
        detail = (f"the node reported {on.still_period_s:.1f} s after a {on.model_last_s:.3f} s caption (frame "
                  f"sent to caption back: {_g(on.change_caption_wall_seconds)} s); max({on.max_still_seconds:g}, "
                  f"{on.model_last_s:.3f} / {on.max_still_share:g}) = {documented:.1f} s. The still window: "
                  f"{on.still_seconds:.0f} s after a model caption, period {on.window_still_period_s:.1f} s, "
                  f"{on.model_captions} forced caption(s), {due} due")
        out.append(_target(f"Still view: the forced caption as the still period says, {pair.model_name}",
                           error if forced_ok else 1.0, STILL_PERIOD_TOLERANCE, "share", run, detail))
    if not out:
        out.append(_target("Still view: the forced caption as the still period says", None, STILL_PERIOD_TOLERANCE,
                           "share", None, "", _still_missing(still) if not (still and still.cpu)
                           else "not measured: no still period reported (a run before max_still_share)"))
    return out


def changes_in_time(results: Results) -> list[Target]:
    """The share of a changing view's changes whose first caption was not the model's, or
    came later than one caption interval (plus one input frame) after the change."""
    run, still = _still(results)
    view = still.changing if still else None
    late, detail = None, ""
    if view is not None and view.changes:
        late = (view.changes - view.captioned_in_time) / view.changes
        detail = (
            f"{view.captioned_in_time} of {view.changes} changes (one every {view.change_period_s:g} s, "
            f"{view.model_name}) captioned by the model within {ms(view.interval_s)}; the slowest after "
            f"{ms(view.max_delay_s) if view.max_delay_s is not None else '-'}"
        )
    return [_target("Changing view: every change captioned within one caption interval", late, MAX_LATE_CHANGES,
                    "share", run, detail, _still_missing(still))]


def small_object_false_skips(results: Results) -> list[Target]:
    """The gate's false-skip rate on a small object appearing, at the default threshold."""
    run, still = _still(results)
    rates = still.rates if still else None
    rate, detail = None, ""
    if rates is not None:
        small = rates.false_skips["colour"]["small_object"]
        rate = small.rate
        detail = (
            f"{small.count} of {small.of} scenes at min_scene_change {rates.threshold:g}; the smallest change "
            f"measured {small.min:.3f}"
        )
    return [_target("Small object appearing never skipped at the default threshold", rate,
                    SMALL_OBJECT_MAX_FALSE_SKIPS, "share", run, detail, _still_missing(still))]


def fast_paths(fast) -> list[str]:
    """The precisions the speed targets are held for: what ``auto`` ran on the run's machine
    (a float32 ``auto`` has no fast path) and the fastest at the paper glance, if another."""
    auto = fast.auto if fast is not None and fast.auto else FAST_PATH
    names = [] if auto == "float32" else [auto]
    glances = [r for r in (fast.rows if fast is not None else []) if (r.model, r.mode) == ("paper", GLANCE)
               and r.precision != "float32"]
    if glances:
        names.append(min(glances, key=lambda r: r.seconds).precision)
    return list(dict.fromkeys(names)) or [FAST_PATH]


def fast_path_speed(results: Results) -> list[Target]:
    """The CPU fast path's paper-size caption time over float32's, glance and glance +
    DeepLens: medians of captions interleaved round-robin in one run; for what ``auto``
    runs and for the fastest precision (:func:`fast_paths`)."""
    fast = results.fast_path
    out = []
    auto = fast.auto if fast is not None else None
    for name in fast_paths(fast):
        label = f"{name}, {'auto' if name == auto else 'fastest'}" if auto else name  # an older run: just the name
        for mode, title in ((GLANCE, "glance"), (DEEPLENS, "glance + DeepLens")):
            ratio, detail, machine = None, "", None
            ref = fast.row("paper", "float32", mode) if fast else None
            row = fast.row("paper", name, mode) if fast else None
            if ref is not None and row is not None:
                ratio = row.seconds / ref.seconds
                machine = fast.machine.label
                detail = (f"{name} {ms(row.seconds)} vs float32 {ms(ref.seconds)}: **{1 / ratio:.2f}x faster**; "
                          f"{fast.beams} beams, {fast.tokens} new tokens, medians of {fast.rounds} round-robin rounds")
            t = _target(f"CPU fast path ({label}) takes <= 1/3 of float32's time, paper {title}, 3 beams",
                        ratio, FAST_PATH_MAX_TIME, "x", None, detail, "not measured: no fast-path run")
            t.machine = machine
            out.append(t)
    return out


def fast_path_roofline(results: Results) -> list[Target]:
    """The fast path's paper glance against its own roofline (its Linear kernel's
    throughput, its weights' bytes)."""
    fast = results.fast_path
    roof = fast.roofline if fast else None
    ratio, detail, machine = None, "", None
    if roof is not None and roof.ratio is not None:
        ratio = roof.ratio
        machine = fast.machine.label
        detail = (f"{ms(roof.seconds)} measured vs {ms(roof.bound_s)}: per stage the slower of its FLOPs (Linear "
                  f"layers at the {roof.precision} kernel's {roof.linear_flops_per_s / 1e9:.0f} GFLOP/s, the rest at float32's "
                  f"{roof.float32_flops_per_s / 1e9:.0f}) and its bytes ({gb(roof.weight_bytes)} of weights) at "
                  f"{roof.bytes_per_s / 1e9:.1f} GB/s")
    name = roof.precision if roof is not None else FAST_PATH
    t = _target(f"CPU fast path's paper glance within 1.3x of its roofline ({name})", ratio,
                FAST_PATH_MAX_ROOFLINE, "x", None, detail, "not measured: no fast-path run")
    t.machine = machine
    return [t]


TARGETS: tuple[Callable[[Results], list[Target]], ...] = (
    deeplens_overhead,
    glance_flop_ratio,
    node_overhead,
    gpu_memory,
    still_cpu,
    still_period,
    changes_in_time,
    small_object_false_skips,
    fast_path_speed,
    fast_path_roofline,
)


def targets(results: Results) -> list[Target]:
    """Every target of :data:`TARGETS`, each with its measured value, limit, pass/fail
    (None: not measured) and the machine that measured it."""
    return [t for target in TARGETS for t in target(results)]
