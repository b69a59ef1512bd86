"""The benchmark's results, typed: what ``docs/benchmarks.json`` holds.

Every part is a dataclass whose fields are its JSON keys, in the file's order, so
``Results.from_json(json.load(f))`` and ``results.to_json()`` read and write the file
as it has always been (a GPU machine's ``--json`` file is the same format, folded in by
``benchmark --merge``)::

    Results                      format, runs {"cpu" | "cuda": Run}, gpu_check, gpu_note
    Run                          one device kind: machine, limits, models, node, errors
      Machine                    CPU/GPU, versions, date, load
      Limits                     the measured matmul FLOP/s and read bandwidth (best sample)
      ModelResult                one model (worker.py): params, geometry, modes, bounds
        modes {mode: ModeResult | Skipped}
          ModeResult             per-stage Summary, total, memory, FLOPs, LM passes, op profile
        geometry: Geometry       sizes that set a caption's bytes (bounds.py)
        bounds {mode: {stage: StageBound}}   filled by bounds.with_bounds
      node {variant: NodeResult | error text}   node_bench.py's runs through the node
      still: StillResult         still_bench.py: the scene gate's rates, CPU on a still scene, a changing view
    FastPath                     the CPU fast path (fast_path.py): rows, roofline, node rates, side-by-sides
      NodeRates, PeerTable       the node's captions/s by dtype; the peer table (peers.py)

Adding a field: give it a default (``optional()`` when the key is left out of the file
while unset), so that files written before it still load, then fill it where it is
measured (worker.py for a model or mode, run.py for a run). ``from_json`` refuses keys
it does not know and values of the wrong type, naming where they are
(``runs.cpu.models[0].modes.glance: ...``), so a field added on one side only shows.
Adding a table or a target: see :mod:`~sharpeye_ros.benchmark.report` and
:mod:`~sharpeye_ros.benchmark.targets`.

The modes a model is measured in: the model's own (:mod:`sharpeye_ros.evaluation.modes`:
``glance``, ``deeplens``, ``zoom``) and the benchmark's two, ``deeplens_nodraft`` (the
refined caption decoded token by token, without the initial caption as a draft) and
``naive`` (:mod:`~sharpeye_ros.benchmark.naive`). Runs are keyed by the kind of device
they ran on: ``cpu`` or ``cuda``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional, TypeVar, Union, get_args, get_origin, get_type_hints

from sharpeye_ros.evaluation.modes import DEEPLENS, GLANCE, ZOOM

NODRAFT = "deeplens_nodraft"
NAIVE = "naive"
MODES = (GLANCE, DEEPLENS, NODRAFT, ZOOM, NAIVE)
CPU, CUDA = RUN_KINDS = ("cpu", "cuda")
RUN_TITLES = {CPU: "CPU", CUDA: "GPU"}
RESULTS_FORMAT = 1


def run_kind(device: str) -> str:
    """The kind of run a measurement on ``device`` (cpu, cuda or cuda:N) belongs to."""
    return CUDA if device.startswith("cuda") else CPU


# ---- JSON <-> dataclasses ------------------------------------------------------------------
class ResultsError(ValueError):
    """Data that is not what the benchmark writes; the message says where and why."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where}: {problem}")
        self.where = where


_OMIT = "omit_unset"
_HINTS: dict[type, dict[str, Any]] = {}
R = TypeVar("R", bound="Record")


def optional(default_factory: Any = None) -> Any:
    """A field whose key the JSON leaves out while it holds its default (None, or
    ``default_factory()``), as the benchmark has always written it."""
    if default_factory is None:
        return field(default=None, metadata={_OMIT: True})
    return field(default_factory=default_factory, metadata={_OMIT: True})


class Record:
    """A dataclass that is one JSON object: its fields are the keys, in order. Records
    are built with keywords (``kw_only``), so a field with a default can come before one
    without, in the file's order."""

    def to_json(self) -> dict[str, Any]:
        """The JSON object (nested dicts, lists and scalars), ready for ``json.dumps``."""
        out = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if f.metadata.get(_OMIT) and value == _default(f):
                continue
            out[f.name] = _dump(value)
        return out

    @classmethod
    def from_json(cls: type[R], data: Any, where: str = "") -> R:
        """The record held by ``data`` (as :meth:`to_json` writes it). Raises
        :class:`ResultsError` naming the first key that is missing, unknown or of the
        wrong type."""
        where = where or cls.__name__
        if not isinstance(data, dict):
            raise ResultsError(where, f"expected an object, got {type(data).__name__}")
        if cls not in _HINTS:
            _HINTS[cls] = get_type_hints(cls)
        hints, fields = _HINTS[cls], dataclasses.fields(cls)  # type: ignore[arg-type]
        unknown = sorted(set(data) - {f.name for f in fields})
        if unknown:
            raise ResultsError(where, f"unknown keys {unknown}")
        values = {}
        for f in fields:
            if f.name in data:
                values[f.name] = _load(hints[f.name], data[f.name], f"{where}.{f.name}")
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ResultsError(where, f"missing '{f.name}'")
        return cls(**values)


def _default(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def _dump(value: Any) -> Any:
    if isinstance(value, Record):
        return value.to_json()
    if isinstance(value, dict):
        return {k: _dump(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_dump(v) for v in value]
    return value


def _load(tp: Any, value: Any, where: str) -> Any:
    """``value`` checked against the type hint ``tp`` (records built from their objects)."""
    origin, args = get_origin(tp), get_args(tp)
    if tp is Any:
        return value
    if origin is Union:
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _load(option, value, where)
            except ResultsError as err:
                errors.append(err)
        raise max(errors, key=lambda e: len(e.where))  # the option that got furthest
    if isinstance(tp, type) and issubclass(tp, Record):
        return tp.from_json(value, where)
    if origin is dict:
        if not isinstance(value, dict):
            raise ResultsError(where, f"expected an object, got {type(value).__name__}")
        return {k: _load(args[1], v, f"{where}.{k}") for k, v in value.items()}
    if origin is list:
        if not isinstance(value, list):
            raise ResultsError(where, f"expected a list, got {type(value).__name__}")
        return [_load(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    # Scalars are kept as the file has them (an integral float stays an int), so that a
    # file read and written again is the same file.
    accepted = {float: (int, float), int: (int,), str: (str,), bool: (bool,)}.get(tp)
    if accepted is None:
        raise TypeError(f"{where}: results fields cannot have type {tp!r}")
    if not isinstance(value, accepted) or (tp is not bool and isinstance(value, bool)):
        raise ResultsError(where, f"expected {tp.__name__}, got {value!r}")
    return value


# ---- the results ---------------------------------------------------------------------------
@dataclass(kw_only=True)
class Summary(Record):
    """Summary statistics of a set of measurements (:func:`~sharpeye_ros.benchmark.measure.summarize`)."""

    n: int
    mean: float
    p50: float
    p95: float
    min: float
    max: float


@dataclass(kw_only=True)
class PerCaption(Record):
    """Each timed caption's seconds, and the matmul FLOP/s sampled around it (the better
    of just before and just after)."""

    seconds: list[float]
    matmul_flops_per_s: list[float]


@dataclass(kw_only=True)
class ModeResult(Record):
    """One mode of one model (:func:`~sharpeye_ros.benchmark.worker.measure_mode`):
    per-stage and whole-call seconds, throughput, peak memory, and from one untimed
    extra caption each stage's FLOPs (also by op class: matmul, attention, other) and LM
    passes; ``op_seconds``: where each stage's time went in one profiled caption (CPU,
    the modes set against the limits only)."""

    stages: dict[str, Summary]
    total: Summary
    captions_per_s: float
    peak_rss_bytes: Optional[int]
    per_caption: Optional[PerCaption] = optional()
    cuda_peak_allocated_bytes: Optional[int] = optional()
    cuda_peak_reserved_bytes: Optional[int] = optional()
    flops: dict[str, int]
    op_flops: dict[str, dict[str, int]]
    lm_passes: dict[str, int]
    op_seconds: Optional[dict[str, dict[str, float]]] = optional()


@dataclass(kw_only=True)
class Skipped(Record):
    """A mode that was not measured, and why (e.g. the model has no DeepLens)."""

    skipped: str


@dataclass(frozen=True, kw_only=True)
class Geometry(Record):
    """Sizes that set a caption's bytes: weight bytes per part, the LM's shape, the
    prompts' lengths in tokens, the tokens generated and the beams."""

    vision_bytes: int
    connector_bytes: int
    lm_bytes: int
    deeplens_bytes: int
    lm_layers: int
    lm_hidden: int
    element_size: int
    prompt_len: int
    refine_prompt_len: int
    tokens: int
    beams: int
    refine_beams: int


@dataclass(kw_only=True)
class StageBound(Record):
    """One stage against the machine's limits (:func:`~sharpeye_ros.benchmark.bounds.stage_bounds`):
    measured seconds, FLOPs, the least bytes read (None: it runs no model weights), the
    time each would take at the limit, which limit binds and ``achieved`` = the larger
    bound / the measured time (None when either is zero)."""

    seconds: float
    flops: int
    bytes: Optional[int]
    flop_bound_s: float
    byte_bound_s: Optional[float]
    limit: str
    achieved: Optional[float]


@dataclass(kw_only=True)
class ModelResult(Record):
    """One model on one device (:func:`~sharpeye_ros.benchmark.worker.measure`).
    ``node_side``: the node's own per-frame work outside the model (conversion, drawing);
    ``bounds``: per mode and stage, against the run's limits (:mod:`~sharpeye_ros.benchmark.bounds`)."""

    name: str
    source: str
    random_weights: bool
    device: str
    dtype: str
    threads: int
    model_id: str
    params: dict[str, int]
    load_seconds: float
    rss_before_model_bytes: Optional[int]
    cuda_context_bytes: Optional[int]
    tokens: int
    tokens_source: str
    warmup: int
    repeats: int
    image_size: list[int]
    geometry: Geometry
    modes: dict[str, Union[ModeResult, Skipped]]
    node_side: Optional[dict[str, Summary]] = optional()
    bounds: Optional[dict[str, dict[str, StageBound]]] = optional()

    def mode(self, name: str) -> Optional[ModeResult]:
        """The measured mode ``name``, or None (not asked for, or skipped)."""
        m = self.modes.get(name)
        return m if isinstance(m, ModeResult) else None

    @property
    def measured_modes(self) -> dict[str, ModeResult]:
        """The modes that were measured (not skipped), in order."""
        return {name: m for name, m in self.modes.items() if isinstance(m, ModeResult)}


@dataclass(kw_only=True)
class Machine(Record):
    """Machine, software and date of a run (:func:`~sharpeye_ros.benchmark.measure.machine_info`),
    with the 1-minute load at its start and end."""

    date_utc: str
    cpu: str
    cpu_count: Optional[int]
    torch_threads: int
    ram_bytes: Optional[int]
    platform: str
    python: str
    torch: str
    transformers: str
    numpy: str
    load_average_1min: Optional[float]
    device: str
    gpu: Optional[str]
    gpu_memory_bytes: Optional[int] = optional()
    cuda: Optional[str] = optional()
    load_average_1min_end: Optional[float] = optional()

    @property
    def label(self) -> str:
        """'<CPU or GPU name>, <date>', as the docs name where a figure comes from."""
        what = self.gpu or f"{self.cpu} ({self.torch_threads} threads)"
        return f"{what}, {self.date_utc}"


@dataclass(kw_only=True)
class Limits(Record):
    """The machine's measured limits: a square ``matmul_size`` matrix product in ``dtype``
    and summing a ``read_mib`` MiB tensor, sampled before and after the models; the limit
    is the best sample."""

    dtype: str
    matmul_size: int
    read_mib: int
    matmul_samples: list[float] = field(default_factory=list)
    read_samples: list[float] = field(default_factory=list)
    matmul_flops_per_s: float
    read_bytes_per_s: float

    def add_sample(self, matmul_flops_per_s: float, read_bytes_per_s: float) -> None:
        """Record one sample of each; the limits become the best so far."""
        self.matmul_samples.append(matmul_flops_per_s)
        self.read_samples.append(read_bytes_per_s)
        self.matmul_flops_per_s = max(self.matmul_samples)
        self.read_bytes_per_s = max(self.read_samples)


@dataclass(kw_only=True)
class LatencySummary(Record):
    """Latency through the node (:func:`~sharpeye_ros.benchmark.node_bench.latency_summary`):
    received and node-reported latency, the model's time, and the overhead of each."""

    latency: Summary
    message_latency: Summary
    model: Summary
    overhead: Summary
    message_overhead: Summary


@dataclass(kw_only=True)
class NodeResult(Record):
    """One run through the ``captioner`` node (:func:`~sharpeye_ros.benchmark.node_bench.run_node_benchmark`):
    ``all`` frames, and those of each encoding."""

    captions: int
    frames_sent: int
    frames_lost: int
    publish_gap_s: float
    frame_timeout_s: float
    image_size: list[int]
    device: str
    refine: bool
    zoom: bool
    reliability: str
    rmw: str
    all: LatencySummary
    refined: bool
    rgb8: Optional[LatencySummary] = optional()
    bgr8: Optional[LatencySummary] = optional()
    transport: str
    model_name: str

    @property
    def variant(self) -> str:
        """'best_effort image QoS, 16 MiB shared memory', as the docs name the run."""
        shm = ", 16 MiB shared memory" if self.transport == "large_shm" else ""
        return f"{self.reliability} image QoS{shm}"


@dataclass(kw_only=True)
class GateSummary(Record):
    """The scene gate's measure over one kind of scene change (or still pair):
    ``count`` of ``of`` on the wrong side of the threshold (``rate``), and the measure's
    spread (:func:`~sharpeye_ros.benchmark.still_bench.gate_rates`)."""

    rate: float
    count: int
    of: int
    min: float
    p5: float
    median: float
    max: float


@dataclass(kw_only=True)
class GateRates(Record):
    """False skips on the world's scene changes and needless captions on still views,
    per thumbnail space (``colour``: the node's; ``grey``), at ``threshold``."""

    threshold: float
    scenes: int
    split: str
    false_skips: dict[str, dict[str, GateSummary]]
    still_recaptions: dict[str, dict[str, GateSummary]]


@dataclass(kw_only=True)
class StillCpu(Record):
    """The captioner process's CPU seconds per second on a still, noisy scene
    (:func:`~sharpeye_ros.benchmark.still_bench.still_cpu`)."""

    gating: bool
    seconds: float
    cpu_seconds_per_second: float
    captions: int
    model_captions: int
    reused_captions: int
    input_rate_hz: float
    noise_sigma: float
    max_rate_hz: float
    max_still_seconds: float
    input_received_hz: Optional[float] = optional()  # frames/s the node received (its /diagnostics)
    idle_cpu_seconds_per_second: Optional[float] = optional()  # outside model captions
    model_caption_cpu_seconds: Optional[float] = optional()  # CPU each model caption added to that
    # Gating on, from the node's /diagnostics after a change's caption (absent in runs before
    # max_still_share: the period was max_still_seconds): its still period, the share and the
    # model's last caption time that period follows; and the still window's own period.
    max_still_share: Optional[float] = optional()
    still_period_s: Optional[float] = optional()
    model_last_s: Optional[float] = optional()
    window_still_period_s: Optional[float] = optional()
    still_seconds: Optional[float] = optional()  # of the still window after the last model caption before it
    change_caption_wall_seconds: Optional[float] = optional()  # the change's frame sent -> its caption back

    @property
    def period(self) -> float:
        """The still period of the amortised cost: the node's own, else max_still_seconds."""
        return self.still_period_s if self.still_period_s is not None else self.max_still_seconds

    @property
    def documented_period(self) -> Optional[float]:
        """The still period as the README documents it, from what the node reported:
        max(max_still_seconds, model_last_s / max_still_share) (share 0: max_still_seconds);
        None where the node did not report them."""
        if self.max_still_share is None or self.model_last_s is None:
            return None
        if self.max_still_share <= 0:
            return self.max_still_seconds
        return max(self.max_still_seconds, self.model_last_s / self.max_still_share)

    @property
    def forced_due(self) -> Optional[int]:
        """Forced captions the still window should hold: 1 when it lasted at least its still
        period after the last model caption, else 0; None where not measured."""
        if self.still_seconds is None or self.window_still_period_s is None:
            return None
        return int(self.still_seconds >= self.window_still_period_s)


@dataclass(kw_only=True)
class StillPair(Record):
    """One model's still-scene runs, gating on and off."""

    model_name: str
    on: StillCpu
    off: StillCpu

    @property
    def ratio(self) -> float:
        """CPU per second with gating on over gating off."""
        return self.on.cpu_seconds_per_second / self.off.cpu_seconds_per_second

    @property
    def amortised(self) -> Optional[float]:
        """Gating on's CPU per second from its parts: the idle rate plus one model caption's
        CPU every still period (the node's, :attr:`StillCpu.period`); None where a part was
        not measured."""
        on = self.on
        if on.idle_cpu_seconds_per_second is None or on.model_caption_cpu_seconds is None:
            return None
        return on.idle_cpu_seconds_per_second + on.model_caption_cpu_seconds / on.period

    @property
    def amortised_ratio(self) -> Optional[float]:
        """:attr:`amortised` over gating off's CPU per second (None where not measured)."""
        amortised = self.amortised
        return None if amortised is None else amortised / self.off.cpu_seconds_per_second


@dataclass(kw_only=True)
class ChangeCaption(Record):
    """One change of the changing view: whether its first caption was the model's, and
    how long after the change that caption's frame was stamped."""

    change: str
    captioned: bool
    delay_s: Optional[float]
    model_captions: int


@dataclass(kw_only=True)
class ChangingView(Record):
    """A view that changes every ``change_period_s`` (:func:`~sharpeye_ros.benchmark.still_bench.changing_view`)."""

    changes: int
    captioned_in_time: int
    interval_s: float
    max_delay_s: Optional[float]
    per_change: list[ChangeCaption]
    max_rate_hz: float
    input_rate_hz: float
    change_period_s: float
    model_name: str = ""
    input_received_hz: Optional[float] = optional()  # frames/s the node received (its /diagnostics)


@dataclass(kw_only=True)
class StillResult(Record):
    """Idle when the view is still: the gate's rates, CPU on a still scene per model,
    the changing view, and what could not be measured. ``machine``: where and when it was
    measured (``benchmark --still-only`` adds it to a run measured before)."""

    machine: Optional[Machine] = optional()
    rates: Optional[GateRates] = optional()
    cpu: list[StillPair] = optional(list)
    changing: Optional[ChangingView] = optional()
    errors: list[str] = optional(list)


@dataclass(kw_only=True)
class Run(Record):
    """Everything measured on one device kind in one benchmark command. ``node``: each
    node variant's result, or why it could not run; ``still``: the scene gate's
    measurements; ``errors``: models that failed."""

    machine: Machine
    limits: Limits
    models: list[ModelResult]
    quick: bool
    command: str
    errors: list[str] = optional(list)
    node: Optional[dict[str, Union[NodeResult, str]]] = optional()
    still: Optional[StillResult] = optional()

    def model(self, name: str) -> Optional[ModelResult]:
        """The model result called ``name``, or None."""
        return next((m for m in self.models if m.name == name), None)


@dataclass(kw_only=True)
class GpuCheck(Record):
    """The GPU machine's check (``scripts/gpu_check.sh``): which GPU, when, and the model
    library's test summary there."""

    gpu: Optional[str] = optional()
    date_utc: Optional[str] = optional()
    model_tests: Optional[str] = optional()


@dataclass(kw_only=True)
class FastPathRow(Record):
    """One (model, precision, mode) of the CPU fast path's speed run: the median seconds
    per caption, the times it is taken from, the median stage seconds, and the speed-up
    over float32 in the same model and mode, in the same run."""

    model: str
    precision: str
    mode: str
    seconds: float
    times: list[float]
    stages: dict[str, float]
    speedup: float


@dataclass(kw_only=True)
class RooflineStage(Record):
    """A stage of the fast path's glance against its limits (:func:`~sharpeye_ros.benchmark.fast_path.roofline`)."""

    seconds: float
    flop_bound_s: float
    byte_bound_s: float
    limit: str


@dataclass(kw_only=True)
class Roofline(Record):
    """The fast path's paper glance (``precision``: int8 or bfloat16-mixed) against the time at
    the machine's Linear (in that precision) and float32 matmul throughput and read
    bandwidth: ``ratio`` = measured / ``bound_s``."""

    linear_flops_per_s: float
    float32_flops_per_s: float
    bytes_per_s: float
    weight_bytes: int
    stages: dict[str, RooflineStage]
    bound_s: float
    seconds: float
    ratio: Optional[float]
    precision: str = "int8"


@dataclass(kw_only=True)
class NodeRate(Record):
    """The running node's captions per second with one model and one ``dtype`` parameter,
    and what its start-up log said it runs (``auto``: what it resolved to)."""

    model: str
    dtype: str
    runs: str
    captions: int
    latency_mean_s: float
    model_mean_s: float
    captions_per_s: float


@dataclass(kw_only=True)
class NodeRates(Record):
    """The node on the CPU (:func:`~sharpeye_ros.benchmark.fast_path.node_rates`): each
    (model, dtype) in a node process of its own, one after the other in ``rounds`` rounds
    (rates of the captions of all rounds together), on ``machine``."""

    machine: Machine
    rounds: int
    load_before: Optional[float]
    load_after: Optional[float]
    rows: list[NodeRate]

    def row(self, model: str, dtype: str) -> Optional[NodeRate]:
        """The rate of (``model``, ``dtype``), or None."""
        return next((r for r in self.rows if (r.model, r.dtype) == (model, dtype)), None)


@dataclass(kw_only=True)
class PeerModel(Record):
    """One model of the peer table: its parameters (float32), the square input it is fed,
    and how many of its Linear layers the int8 path quantizes (and how many it keeps float)."""

    params: int
    image_size: int
    int8_layers: int
    float_linears: int


@dataclass(kw_only=True)
class PeerEntry(Record):
    """One (model, precision, beams) of the peer table: median seconds per caption and the
    timed rounds' seconds."""

    model: str
    precision: str
    beams: int
    seconds: float
    times: list[float]


@dataclass(kw_only=True)
class PeerTable(Record):
    """The peer table (:mod:`~sharpeye_ros.benchmark.peers`): every entry timed round-robin
    in one run; ``notes``: each peer that was skipped, and why."""

    machine: Machine
    tokens: int
    rounds: int
    load_before: Optional[float]
    load_after: Optional[float]
    models: dict[str, PeerModel]
    notes: dict[str, str]
    entries: list[PeerEntry]

    def seconds(self, model: str, precision: str, beams: int) -> Optional[float]:
        """The median seconds of (``model``, ``precision``, ``beams``), or None."""
        return next((e.seconds for e in self.entries if (e.model, e.precision, e.beams) == (model, precision, beams)),
                    None)


@dataclass(kw_only=True)
class FastPath(Record):
    """The CPU fast path (:mod:`~sharpeye_ros.benchmark.fast_path`): its speed run (machine
    to rows; absent from a file that carries only other pieces), the int8 glance's
    roofline, the node by dtype, and the side-by-sides it was chosen by: ``peers``
    (:mod:`~sharpeye_ros.benchmark.peers`), ``libraries`` (:mod:`~sharpeye_ros.benchmark.libraries`)
    and ``fidelity`` (:mod:`~sharpeye_ros.benchmark.fidelity`), the last two as their
    own modules write and render them. Each piece carries the machine it ran on."""

    machine: Optional[Machine] = optional()
    rounds: Optional[int] = optional()
    tokens: Optional[int] = optional()
    beams: Optional[int] = optional()
    load_before: Optional[float] = optional()
    load_after: Optional[float] = optional()
    rows: list[FastPathRow] = optional(list)
    auto: Optional[str] = optional()  # what dtype auto ran on the speed run's machine
    roofline: Optional[Roofline] = optional()
    node: Optional[NodeRates] = optional()
    peers: Optional[PeerTable] = optional()
    libraries: Optional[dict[str, Any]] = optional()
    fidelity: Optional[dict[str, Any]] = optional()

    def row(self, model: str, precision: str, mode: str) -> Optional[FastPathRow]:
        """The row of (``model``, ``precision``, ``mode``), or None."""
        return next((r for r in self.rows if (r.model, r.precision, r.mode) == (model, precision, mode)), None)

    def merged(self, other: FastPath) -> FastPath:
        """These measurements with ``other``'s in their place wherever ``other`` has them:
        its speed run (with its roofline) when it has one, and each of its other pieces,
        so that results files measured apart (the peers here, the libraries there) fold
        into one without undoing each other."""
        speed = ("machine", "rounds", "tokens", "beams", "load_before", "load_after", "rows", "auto", "roofline")
        taken = {name: getattr(other, name) for name in speed} if other.rows else {}
        for piece in ("node", "peers", "libraries", "fidelity"):
            if getattr(other, piece) is not None:
                taken[piece] = getattr(other, piece)
        return dataclasses.replace(self, **taken)


@dataclass(kw_only=True)
class Results(Record):
    """A results file: one run per device kind (:data:`RUN_KINDS`). ``gpu_note``: why
    there are no GPU figures, when there are none. ``fast_path``: the CPU fast path's
    measurements (``python -m sharpeye_ros.benchmark.fast_path``, folded in by ``--merge``)."""

    format: int = RESULTS_FORMAT
    runs: dict[str, Run] = field(default_factory=dict)
    gpu_check: Optional[GpuCheck] = optional()
    gpu_note: Optional[str] = optional()
    fast_path: Optional[FastPath] = optional()

    def merged(self, other: Results) -> Results:
        """These results with each run of ``other`` replacing the run of the same kind
        (and its GPU check and note, where it has them), and the fast path's pieces
        merged (:meth:`FastPath.merged`)."""
        return dataclasses.replace(
            self,
            runs={**self.runs, **other.runs},
            gpu_check=other.gpu_check if other.gpu_check is not None else self.gpu_check,
            gpu_note=other.gpu_note if other.gpu_note is not None else self.gpu_note,
            fast_path=(self.fast_path.merged(other.fast_path)
                       if self.fast_path is not None and other.fast_path is not None
                       else other.fast_path or self.fast_path),
        )
