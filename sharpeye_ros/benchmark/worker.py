"""Model-only measurements of one model on one device, meant to run in a process of its
own so that its peak memory is its own.

For each mode (``glance``; ``deeplens``; ``deeplens_nodraft``, the same with the refined
caption decoded token by token, without the initial caption as a draft; ``zoom``;
``naive``, see :mod:`~sharpeye_ros.benchmark.naive`): per-stage seconds and the
whole call's over ``repeats`` images after ``warmup`` ones, the mode's peak memory
(CPU resident set; on CUDA also torch's allocated and reserved peaks), one untimed
extra run that counts each stage's FLOPs and, on the CPU for the glance and
glance + DeepLens, one that profiles where each stage's time goes (matmul, attention,
other ops, outside ops). Every mode generates the same
``tokens`` per caption (stop rules off), so paths and modes compare like for like.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Optional, Sequence, Union

import numpy as np
import torch

from sharpeye_ros.benchmark.bounds import LIMIT_MODES
from sharpeye_ros.benchmark.measure import (
    CountingTimer,
    ProfilingTimer,
    matmul_throughput,
    peak_rss_bytes,
    reset_peak_rss,
    rss_bytes,
    summarize,
    synchronize,
)
from sharpeye_ros.benchmark.naive import naive_caption
from sharpeye_ros.benchmark.results import (
    MODES,
    NAIVE,
    NODRAFT,
    Geometry,
    ModelResult,
    ModeResult,
    PerCaption,
    Skipped,
    Summary,
)
from sharpeye_ros.evaluation.modes import DEEPLENS, GLANCE, SWITCHES
from sharpeye_ros.model import SharpEyes, presets
from sharpeye_ros.model.timing import Timer

PRESETS = ("paper", "tiny", "micro")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
IMAGE_SIZE = (640, 480)


@dataclass
class ModelSpec:
    """What to measure. ``source``: a preset name (random weights) or a checkpoint
    directory. ``tokens``: new tokens per caption; None takes the model's natural caption
    length on the first benchmark images. ``extras``: also time the node's image
    conversion and drawing. ``random_weights``: a checkpoint known to hold random weights.
    ``matmul_size``: when > 0, sample the matmul throughput (square matrices of this size)
    around each timed caption of the glance mode, for its FLOP bound."""

    name: str
    source: str
    device: str = "cpu"
    dtype: str = "float32"
    modes: Sequence[str] = (GLANCE, DEEPLENS, NAIVE)
    warmup: int = 1
    repeats: int = 3
    tokens: Optional[int] = None
    threads: int = 0
    extras: bool = False
    seed: int = 0
    overrides: dict = field(default_factory=dict)
    random_weights: bool = False
    matmul_size: int = 0

    def validate(self) -> None:
        """Raise ValueError naming the first bad field."""
        bad = [m for m in self.modes if m not in MODES]
        if bad or not self.modes:
            raise ValueError(f"modes: unknown or none {bad}; known: {list(MODES)}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype: {self.dtype!r} is not one of {list(DTYPES)}")
        if self.warmup < 0 or self.repeats < 1:
            raise ValueError(f"need warmup >= 0 and repeats >= 1, got {self.warmup} and {self.repeats}")
        if self.tokens is not None and self.tokens < 1:
            raise ValueError(f"tokens must be >= 1, got {self.tokens}")
        if self.source not in PRESETS and not Path(self.source).is_dir():
            raise ValueError(
                f"model source {self.source!r} is neither a preset {list(PRESETS)} nor a directory"
            )


def benchmark_images(count: int, size: tuple[int, int] = IMAGE_SIZE) -> list[np.ndarray]:
    """``count`` synthetic scenes of ``size`` (width, height) from the world's validation split."""
    from sharpeye_ros.world import SceneConfig, generate_scene

    config = SceneConfig(width=size[0], height=size[1])
    return [generate_scene("val", i, config).image for i in range(count)]


def build_model(spec: ModelSpec) -> tuple[SharpEyes, bool]:
    """The model on its device and dtype, and whether its weights are random."""
    dtype = DTYPES[spec.dtype]
    if spec.source in PRESETS:
        torch.manual_seed(spec.seed)
        config = getattr(presets, spec.source)()
        if spec.overrides:
            config = config.override(spec.overrides)
        model = SharpEyes.from_config(config)
        # A random LM over a 50k vocabulary would write ids the small word tokenizer of
        # the preset cannot spell, leaving empty captions and short refine prompts. Zero
        # the embedding rows past the tokenizer: the same compute, captions of real words.
        with torch.no_grad():
            model.lm.model.get_input_embeddings().weight[len(model.lm.tokenizer) :] = 0
        return model.to(spec.device, dtype).eval(), True
    model = SharpEyes.from_pretrained(spec.source, device=spec.device, dtype=dtype)
    if spec.overrides:
        model.config = model.config.override(spec.overrides)
    return model, spec.random_weights


def unique_bytes(module: Optional[torch.nn.Module]) -> int:
    """Bytes of a module's parameters and buffers, shared (tied) tensors counted once."""
    if module is None:
        return 0
    seen, total = set(), 0
    for t in list(module.parameters()) + list(module.buffers()):
        if t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    return total


def natural_tokens(model: SharpEyes, images: Sequence[np.ndarray]) -> int:
    """Mean length in tokens (stop token included) of the glance captions of ``images``,
    at most the configured ``max_new_tokens``."""
    lengths = [
        len(model.lm.caption_ids(r.initial_caption)) + 1
        for image in images
        for r in model.caption([image], refine=False)
    ]
    return max(1, min(model.config.generation.max_new_tokens, round(sum(lengths) / len(lengths))))


def drafts(model: SharpEyes) -> bool:
    """Whether the model decodes its refined caption with the initial caption as a draft."""
    g = model.config.generation
    return bool(getattr(g, "draft", False)) and (g.refine_num_beams or g.num_beams) == 1


def _run(model: SharpEyes, mode: str, image: np.ndarray, timer: Optional[Timer]) -> dict[str, float]:
    """One caption in ``mode``; returns its stage seconds (``timer``: one to time it
    with, e.g. a FLOP-counting one)."""
    timer = timer or Timer(model.device)
    if mode == NAIVE:
        naive_caption(model, image, timer, refine=True)
    elif mode == NODRAFT:
        model.caption([image], **SWITCHES[DEEPLENS], timer=timer, draft=False)
    else:
        model.caption([image], **SWITCHES[mode], timer=timer)
    return dict(timer.times)


def measure_mode(
    model: SharpEyes, mode: str, images: Sequence[np.ndarray], warmup: int, matmul_size: int = 0
) -> ModeResult:
    """Warm-up, timed runs and one FLOP-counting run of ``mode``, with its peak memory;
    on the CPU, for the modes set against the limits, also one profiled run that splits
    each stage's time by op class.

    ``matmul_size`` > 0: also the matmul throughput just before and just after each timed
    caption (the better of the two), as ``per_caption``: a shared machine's speed drifts
    within a run, so each caption is compared with what the machine could do around it.
    """
    device = model.device
    reset_peak_rss()
    if device.type == "cuda":  # each mode's own peak: drop what earlier modes left cached
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    stages: dict[str, list[float]] = {}
    totals, limits = [], []

    def sample() -> float:
        return matmul_throughput(str(device), model.dtype, matmul_size, reps=3)

    for i, image in enumerate(images):
        before = sample() if matmul_size > 0 and i >= warmup else None
        synchronize(device)
        start = time.perf_counter()
        times = _run(model, mode, image, None)
        synchronize(device)
        if i < warmup:
            continue
        totals.append(time.perf_counter() - start)
        if before is not None:
            limits.append(max(before, sample()))
        for stage, seconds in times.items():
            stages.setdefault(stage, []).append(seconds)
    # The peaks before the extra runs below, which are not the mode's own.
    peak_rss = peak_rss_bytes()
    cuda_allocated = cuda_reserved = None
    if device.type == "cuda":
        cuda_allocated = int(torch.cuda.max_memory_allocated(device))
        cuda_reserved = int(torch.cuda.max_memory_reserved(device))
    counting = CountingTimer(device, watch=model.lm.model.model.decoder)
    _run(model, mode, images[-1], counting)
    op_seconds = None
    if device.type == "cpu" and mode in LIMIT_MODES:  # the modes the docs set against the limits
        profiling = ProfilingTimer(device)
        _run(model, mode, images[-1], profiling)
        op_seconds = profiling.ops
    return ModeResult(
        stages={s: Summary(**summarize(v)) for s, v in stages.items()},
        total=Summary(**summarize(totals)),
        captions_per_s=len(totals) / sum(totals),
        peak_rss_bytes=peak_rss,
        per_caption=PerCaption(seconds=totals, matmul_flops_per_s=limits) if limits else None,
        cuda_peak_allocated_bytes=cuda_allocated,
        cuda_peak_reserved_bytes=cuda_reserved,
        flops=counting.flops,
        op_flops=counting.class_flops,
        lm_passes=counting.calls,
        op_seconds=op_seconds,
    )


def geometry(model: SharpEyes, images: Sequence[np.ndarray]) -> Geometry:
    """Weight bytes, LM shape and prompt lengths of ``model`` with its current settings."""
    cfg, lm = model.config, model.lm
    g = cfg.generation
    n = model.vision.grid**2
    visual = torch.zeros(1, n, lm.hidden_size, device=model.device, dtype=model.dtype)
    prompt_len = lm.build_prompt(cfg.lm.prompt, visual).embeds.shape[1]
    refine_len = prompt_len
    if model.deeplens is not None:
        caption = model.caption([images[0]], refine=False)[0].initial_caption
        pool = cfg.deeplens.pool
        refined = visual[:, : n // (pool * pool)]
        refine_len = lm.build_prompt(cfg.lm.refine_prompt, refined, captions=[caption]).embeds.shape[1]
    opt = lm.model.config
    return Geometry(
        vision_bytes=unique_bytes(model.vision),
        connector_bytes=unique_bytes(model.connector),
        lm_bytes=unique_bytes(lm),
        deeplens_bytes=unique_bytes(model.deeplens),
        lm_layers=int(opt.num_hidden_layers),
        lm_hidden=int(opt.hidden_size),
        element_size=torch.empty((), dtype=model.dtype).element_size(),
        prompt_len=int(prompt_len),
        refine_prompt_len=int(refine_len),
        tokens=int(g.max_new_tokens),
        beams=int(g.num_beams),
        refine_beams=int(g.refine_num_beams or g.num_beams),
    )


def node_side_stages(images: Sequence[np.ndarray], caption: str, reps: int = 20) -> dict[str, Summary]:
    """Seconds of the node's own per-frame work at 640x480: converting an rgb8 and a bgr8
    Image message to RGB, and drawing three regions and the caption."""
    from sharpeye_ros.model import Region
    from sharpeye_ros.ros.drawing import draw_annotations
    from sharpeye_ros.ros.image_conversion import image_msg_to_rgb, rgb_to_image_msg_fields

    image = images[0]
    h, w = image.shape[:2]
    regions = [
        Region(w * 0.1, h * 0.1, w * 0.4, h * 0.5, 0.6, "large red circle"),
        Region(w * 0.5, h * 0.2, w * 0.9, h * 0.6, 0.3, "blue square"),
        Region(w * 0.3, h * 0.6, w * 0.5, h * 0.9, 0.1, "small star"),
    ]
    jobs = {}
    for encoding in ("rgb8", "bgr8"):
        msg = SimpleNamespace(**rgb_to_image_msg_fields(image, encoding))
        jobs[f"convert_{encoding}"] = lambda msg=msg: np.ascontiguousarray(image_msg_to_rgb(msg))
    jobs["drawing"] = lambda: draw_annotations(image, caption, regions, initial_caption="a glance caption")
    out = {}
    for name, job in jobs.items():
        job()
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            job()
            times.append(time.perf_counter() - start)
        out[name] = Summary(**summarize(times))
    return out


def measure(spec: ModelSpec) -> ModelResult:
    """Everything this module measures for ``spec``."""
    spec.validate()
    if spec.threads > 0:
        torch.set_num_threads(spec.threads)
    device = torch.device(spec.device)
    cuda_context = None
    if device.type == "cuda":
        torch.cuda.init()
        torch.zeros(1, device=device)
        free, total = torch.cuda.mem_get_info(device)
        cuda_context = int(total - free)  # the context (and anything else on the GPU) before the model
    rss_before = rss_bytes()
    start = time.perf_counter()
    model, random_weights = build_model(spec)
    load_seconds = time.perf_counter() - start
    images = benchmark_images(spec.warmup + spec.repeats)
    g = model.config.generation
    with torch.no_grad():
        tokens, source = spec.tokens, "fixed"
        if tokens is None:
            tokens, source = natural_tokens(model, images[: max(2, spec.warmup)]), "natural"
        g.max_new_tokens, g.stop = int(tokens), ()
        geo = geometry(model, images)
        modes: dict[str, Union[ModeResult, Skipped]] = {}
        for mode in spec.modes:
            if mode != GLANCE and model.deeplens is None:
                modes[mode] = Skipped(skipped="the model has no DeepLens")
                continue
            if mode == NODRAFT and not drafts(model):
                modes[mode] = Skipped(skipped="the model does not decode its refinement with a draft")
                continue
            sampled = spec.matmul_size if mode == GLANCE else 0
            modes[mode] = measure_mode(model, mode, images, spec.warmup, sampled)
    params = {name: sum(p.numel() for p in group) for name, group in model.parameter_groups().items()}
    node_side = None
    if spec.extras:
        node_side = node_side_stages(images, "a large red circle at the top left and a small blue star")
    return ModelResult(
        name=spec.name,
        source=docs_name(spec.source),
        random_weights=random_weights,
        device=spec.device,
        dtype=spec.dtype,
        threads=torch.get_num_threads(),
        model_id=docs_name(model.model_id),
        params=params,
        load_seconds=load_seconds,
        rss_before_model_bytes=rss_before,
        cuda_context_bytes=cuda_context,
        tokens=int(tokens),
        tokens_source=source,
        warmup=spec.warmup,
        repeats=spec.repeats,
        image_size=list(IMAGE_SIZE),
        geometry=geo,
        modes=modes,
        node_side=node_side,
    )


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``worker SPEC.json OUT.json``: measure the spec, write the result."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 2:
        print("usage: worker SPEC.json OUT.json", file=sys.stderr)
        return 2
    spec = ModelSpec(**json.loads(Path(argv[0]).read_text()))
    result = measure(spec)
    Path(argv[1]).write_text(json.dumps(result.to_json(), indent=1))
    return 0


def spec_json(spec: ModelSpec) -> str:
    """``spec`` as the JSON :func:`main` reads."""
    return json.dumps({**asdict(spec), "modes": list(spec.modes)})


def docs_name(source: str) -> str:
    """A model source as the docs name it: a preset, or a directory by its path from
    ``models/`` (the shipped model, also under an install's share/), never this machine's."""
    parts = Path(source).parts
    if not Path(source).is_absolute():
        return source
    if "models" in parts:
        index = len(parts) - 1 - parts[::-1].index("models")
        return "/".join(parts[index:])
    return f"a temporary directory ({parts[-1]})"
