"""``benchmark`` / ``sharpeye-benchmark``: speed, latency and memory against the limits.

    scripts/setup; source scripts/env.sh
    install/sharpeye_ros/lib/sharpeye_ros/benchmark   # (below: "benchmark") = ros2 run sharpeye_ros benchmark
    benchmark                      # CPU: paper size + demo model, naive path, node latency, still view
    benchmark --quick              # fewer repeats, a short node run
    benchmark --model-only --device cuda --json gpu.json    # on a GPU machine (no ROS needed)
    benchmark --merge gpu.json     # fold another machine's results into the docs
    benchmark --render             # rewrite the docs from docs/benchmarks.json
    benchmark --still-only         # only idle-when-still, added to the docs' CPU run

Each model is measured in a process of its own (:mod:`sharpeye_ros.benchmark.worker`),
so its peak memory is its own. Results go to ``docs/benchmarks.json`` (one run per
device kind, each with its machine and date), from which ``docs/benchmarks.md`` and
``docs/benchmarks.png`` are generated. This is not a test: it measures and reports;
the targets table says what passed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence, Union

import torch

import sharpeye_ros
from sharpeye_ros.benchmark import report, targets
from sharpeye_ros.benchmark.measure import load_average, machine_info, matmul_throughput, read_bandwidth
from sharpeye_ros.benchmark.bounds import with_bounds
from sharpeye_ros.benchmark.results import (
    CPU,
    CUDA,
    MODES,
    NAIVE,
    NODRAFT,
    RESULTS_FORMAT,
    ChangingView,
    GateRates,
    GpuCheck,
    Limits,
    ModelResult,
    NodeResult,
    Results,
    ResultsError,
    Run,
    StillCpu,
    StillPair,
    StillResult,
    run_kind,
)
from sharpeye_ros.benchmark.worker import DTYPES, ModelSpec, spec_json
from sharpeye_ros.evaluation.modes import DEEPLENS, GLANCE, ZOOM

RESULTS_NAME, DOC_NAME, PLOT_NAME = "benchmarks.json", "benchmarks.md", "benchmarks.png"
MODEL_NAMES = ("paper", "demo")
PAPER_TOKENS = 20  # a caption of about 15 words; the random paper-size LM never stops on its own


class BenchmarkError(RuntimeError):
    """A benchmark that cannot run or a results file that cannot be read; the message says why."""


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="benchmark",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="1 timed repeat per mode and a short node run")
    p.add_argument(
        "--models", default=",".join(MODEL_NAMES), help="comma-separated: paper, demo (default: both)"
    )
    p.add_argument(
        "--model-path",
        default="",
        help="the demo model's directory (default: the shipped one; "
        "a tiny random model when there is none)",
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument(
        "--dtype",
        default="auto",
        choices=("auto",) + tuple(DTYPES),
        help="auto: float32 on the CPU, float16 on CUDA",
    )
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    p.add_argument("--repeats", type=int, default=None, help="timed captions per mode (default 3, quick 1)")
    p.add_argument("--warmup", type=int, default=1, help="untimed captions before each mode (default 1)")
    p.add_argument(
        "--paper-tokens",
        type=int,
        default=PAPER_TOKENS,
        help=f"new tokens per caption of the random paper-size model (default {PAPER_TOKENS})",
    )
    p.add_argument(
        "--node-captions", type=int, default=None, help="captions through the node (default 40, quick 10)"
    )
    p.add_argument(
        "--model-only", action="store_true", help="no node run and no docs (e.g. on a GPU machine)"
    )
    p.add_argument("--json", default="", help="also write this run's results to this file")
    p.add_argument("--out-dir", default="docs", help="where benchmarks.md/.png/.json go (default docs)")
    p.add_argument(
        "--max-load", type=float, default=1.5, help="warn (or wait, see --wait-load) above this load"
    )
    p.add_argument("--wait-load", type=float, default=0.0, help="wait up to this many seconds for a low load")
    p.add_argument(
        "--merge",
        nargs="+",
        default=None,
        metavar="RESULTS",
        help="merge these results files into the docs' results and re-render",
    )
    p.add_argument("--tests-log", default="", help="with --merge: the GPU machine's model test log")
    p.add_argument("--gpu-note", default="", help="with --merge/--render: why there are no GPU figures")
    p.add_argument("--render", action="store_true", help="only re-render the docs from their results file")
    p.add_argument(
        "--still-only",
        action="store_true",
        help="only measure idle-when-still (the scene gate through the node) and add it to the docs' CPU run",
    )
    args = p.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    bad = [m for m in args.models if m not in MODEL_NAMES]
    if bad or not args.models:
        p.error(f"--models: unknown {bad}; choose from {list(MODEL_NAMES)}")
    if not (args.device == "cpu" or args.device.startswith("cuda")):
        p.error(f"--device: {args.device!r} is not cpu, cuda or cuda:N")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error(f"--device {args.device}: CUDA is not available here")
    for name in ("threads", "paper_tokens", "repeats", "node_captions"):
        value = getattr(args, name)
        if value is not None and value < (0 if name == "threads" else 1):
            p.error(f"--{name.replace('_', '-')} must be positive, got {value}")
    if args.warmup < 0:
        p.error(f"--warmup must be >= 0, got {args.warmup}")
    if args.model_path and not Path(args.model_path).is_dir():
        p.error(f"--model-path: {args.model_path} is not a directory")
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.node_captions = args.node_captions or (10 if args.quick else 40)
    if args.dtype == "auto":
        args.dtype = "float16" if args.device.startswith("cuda") else "float32"
    return args


# ---- results file ------------------------------------------------------------------------
def load_results(path: Path) -> Results:
    """A results file (``{"format": 1, "runs": {...}}``); empty results when it does not exist."""
    if not path.exists():
        return Results()
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BenchmarkError(f"{path}: not a readable results file ({err})") from None
    if (
        not isinstance(data, dict)
        or data.get("format") != RESULTS_FORMAT
        or not isinstance(data.get("runs"), dict)
    ):
        raise BenchmarkError(f"{path}: not a benchmark results file (format {RESULTS_FORMAT} with 'runs')")
    try:
        return Results.from_json(data, "results")
    except ResultsError as err:
        raise BenchmarkError(f"{path}: not a benchmark results file ({err})") from None


def write_docs(results: Results, out_dir: Path) -> list[Path]:
    """Write the results file, the markdown and the plot into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / RESULTS_NAME).write_text(json.dumps(results.to_json(), indent=1) + "\n")
    plot = report.write_plot(results, out_dir / PLOT_NAME)
    (out_dir / DOC_NAME).write_text(report.render_markdown(results, PLOT_NAME if plot else None))
    return [out_dir / RESULTS_NAME, out_dir / DOC_NAME] + ([plot] if plot else [])


def tests_summary(log: Path) -> str:
    """pytest's last summary line ("12 passed in 3.4s") from a log."""
    lines = [
        line.strip("= \n")
        for line in log.read_text(errors="replace").splitlines()
        if " passed" in line or " failed" in line or " error" in line
    ]
    return lines[-1] if lines else "no pytest summary in the log"


# ---- measuring ---------------------------------------------------------------------------
def wait_for_low_load(max_load: float, wait: float) -> Optional[float]:
    """Wait (up to ``wait`` s) until the 1-minute load is at most ``max_load``; returns it."""
    deadline = time.monotonic() + wait
    load = load_average()
    while load is not None and load > max_load and time.monotonic() < deadline:
        time.sleep(15)
        load = load_average()
    if load is not None and load > max_load:
        print(
            f"benchmark: warning: load average {load:.2f} > {max_load}; timings will be slower than "
            "this machine can do (the docs record the load)",
            file=sys.stderr,
        )
    return load


def run_isolated(module: str, spec: str, what: str) -> dict:
    """``module.main([spec.json, out.json])`` in a fresh Python process (its own peak
    memory, its own DDS participant); its result, as the JSON it wrote. BenchmarkError
    with its output on failure."""
    package_parent = str(Path(sharpeye_ros.__file__).absolute().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH", "")) if p)
    with tempfile.TemporaryDirectory(prefix="sharpeye_benchmark_") as tmp:
        spec_path, out_path = Path(tmp) / "spec.json", Path(tmp) / "result.json"
        spec_path.write_text(spec)
        code = f"import sys; from {module} import main; sys.exit(main(sys.argv[1:]))"
        # cwd outside the source tree, which would shadow the installed package.
        proc = subprocess.run(
            [sys.executable, "-c", code, str(spec_path), str(out_path)],
            cwd=tmp,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        if proc.returncode != 0 or not out_path.exists():
            raise BenchmarkError(f"{what} failed (exit {proc.returncode}):\n{proc.stdout[-4000:]}")
        return json.loads(out_path.read_text())


def run_worker(spec: ModelSpec) -> ModelResult:
    """Measure ``spec`` in a process of its own (see :func:`run_isolated`)."""
    result = run_isolated("sharpeye_ros.benchmark.worker", spec_json(spec), f"measuring {spec.name}")
    return ModelResult.from_json(result, spec.name)


def demo_source(model_path: str, tmp: Path) -> tuple[str, str]:
    """(name, directory) of the demo model: the given or shipped one, else a tiny random
    model saved to ``tmp`` (so that it still loads through the real path)."""
    from sharpeye_ros.model import SharpEyes, default_model_path, presets

    path = Path(model_path) if model_path else default_model_path()
    if (path / "config.json").is_file():
        return "demo", str(path)
    print(f"benchmark: no demo model at {path}: using a tiny random model instead", file=sys.stderr)
    torch.manual_seed(0)
    SharpEyes.from_config(presets.tiny()).save_pretrained(tmp / "tiny")
    return "tiny", str(tmp / "tiny")


def matmul_size(device: str) -> int:
    """Side of the square matrices whose product measures the device's FLOP/s."""
    return 8192 if device.startswith("cuda") else 2048


def model_specs(args: argparse.Namespace, demo: tuple[str, str]) -> list[ModelSpec]:
    """What to measure for ``args``: the paper-size preset and/or the demo model."""
    specs = []
    common = dict(
        device=args.device, dtype=args.dtype, warmup=args.warmup, repeats=args.repeats, threads=args.threads
    )
    gpu = run_kind(args.device) == CUDA
    if "paper" in args.models:
        # Zoom re-encodes two crops with ViT-L: measured on a GPU, left out of the CPU run's budget.
        modes = (GLANCE, DEEPLENS, NODRAFT) + ((ZOOM,) if gpu else ()) + (NAIVE,)
        specs.append(
            ModelSpec(
                name="paper",
                source="paper",
                modes=modes,
                tokens=args.paper_tokens,
                matmul_size=matmul_size(args.device),  # for the FLOP-bound target
                **common,
            )
        )
    if "demo" in args.models:
        specs.append(
            ModelSpec(
                name=demo[0],
                source=demo[1],
                modes=MODES,
                tokens=None,
                extras=not gpu,
                random_weights=demo[0] == "tiny",
                **common,
            )
        )
    return specs


def measure_run(args: argparse.Namespace, argv: Sequence[str]) -> Run:
    """One run on ``args.device``: machine, limits, models and (unless model-only) the node."""
    if args.threads:
        torch.set_num_threads(args.threads)
    load = wait_for_low_load(args.max_load, args.wait_load)
    machine = machine_info(args.device)
    machine.load_average_1min = load
    gpu = run_kind(args.device) == CUDA
    size, read_mib = matmul_size(args.device), 1024 if gpu else 512

    def sample_limits() -> tuple[float, float]:
        # A shared machine's speed drifts: the limit is the best of samples taken before
        # and after the models (one sample once let a slow moment pass for the limit).
        matmul = matmul_throughput(args.device, DTYPES[args.dtype], size, reps=5)
        return matmul, read_bandwidth(args.device, num_bytes=read_mib * 2**20)

    matmul, read = sample_limits()
    limits = Limits(
        dtype=args.dtype,
        matmul_size=size,
        read_mib=read_mib,
        matmul_samples=[matmul],
        read_samples=[read],
        matmul_flops_per_s=matmul,
        read_bytes_per_s=read,
    )
    run = Run(machine=machine, limits=limits, models=[], quick=args.quick, command=" ".join(["benchmark", *argv]))
    with tempfile.TemporaryDirectory(prefix="sharpeye_benchmark_models_") as tmp:
        demo = demo_source(args.model_path, Path(tmp))
        for spec in model_specs(args, demo):
            print(
                f"benchmark: {spec.name} on {spec.device} ({spec.dtype}), modes {', '.join(spec.modes)}",
                file=sys.stderr,
            )
            try:
                run.models.append(run_worker(spec))
            except (BenchmarkError, ResultsError) as err:
                print(f"benchmark: {err}", file=sys.stderr)
                run.errors.append(str(err)[-2000:])
        limits.add_sample(*sample_limits())
        if not args.model_only:
            run.node = measure_node(args, demo)
            run.still = measure_still(args, demo, Path(tmp))
    run = with_bounds(run)
    machine.load_average_1min_end = load_average()
    return run


def measure_node(args: argparse.Namespace, demo: tuple[str, str]) -> dict[str, Union[NodeResult, str]]:
    """Node latency, each variant in a process of its own: best-effort image QoS (the
    default) and, unless quick, best-effort over a large shared-memory segment and reliable."""
    from sharpeye_ros.benchmark.node_bench import NODE_VARIANTS
    from sharpeye_ros.ros.processes import isolate_dds

    isolate_dds()
    out: dict[str, Union[NodeResult, str]] = {}
    variants = list(NODE_VARIANTS)[:1] if args.quick else list(NODE_VARIANTS)
    for name in variants:
        print(f"benchmark: node latency, {name}, {demo[0]} model", file=sys.stderr)
        spec = {
            "model_path": demo[1],
            "captions": args.node_captions,
            "device": args.device,
            **NODE_VARIANTS[name],
        }
        try:
            result = run_isolated("sharpeye_ros.benchmark.node_bench", json.dumps(spec), f"node run {name}")
            out[name] = NodeResult.from_json({**result, "model_name": demo[0]}, f"node run {name}")
        except (BenchmarkError, ResultsError) as err:
            print(f"benchmark: {err}", file=sys.stderr)
            out[name] = str(err)[-1000:]
    return out


def paper_checkpoint(tokens: int, tmp: Path) -> str:
    """The random paper-size model (as the worker builds it, writing ``tokens`` tokens per
    caption) saved to ``tmp``, for the node to load: its directory."""
    from sharpeye_ros.benchmark.worker import build_model

    spec = ModelSpec(name="paper", source="paper", modes=(), overrides={"generation.max_new_tokens": tokens})
    model, _ = build_model(spec)
    model.save_pretrained(tmp / "paper")
    del model
    return str(tmp / "paper")


def measure_still(args: argparse.Namespace, demo: tuple[str, str], tmp: Path) -> StillResult:
    """Idle when the view is still (:mod:`~sharpeye_ros.benchmark.still_bench`), each
    measurement in a process of its own: the gate's false-skip rates, the captioner's CPU
    on a still scene with gating on and off (the demo model, and the paper-size one unless
    quick or not asked for), and a view changing every second (the demo model). The
    gating-on window is ``max_still_seconds`` long, so that it holds the forced caption
    where the still period stays ``max_still_seconds`` (the demo model); where a slow
    caption stretches the period (the paper size on a CPU: over ten minutes) the window
    holds none, and the still cost is amortised from its parts and the node's reported
    period (:func:`~sharpeye_ros.benchmark.still_bench.still_cpu`)."""
    from sharpeye_ros.ros.captioner_parameters import SPECS
    from sharpeye_ros.ros.processes import isolate_dds

    isolate_dds()
    out = StillResult(machine=machine_info(args.device))
    out.machine.load_average_1min = load_average()
    still_window = 20.0 if args.quick else float(SPECS["max_still_seconds"].default)

    def run(spec: dict, what: str) -> Optional[dict]:
        print(f"benchmark: still view, {what}", file=sys.stderr)
        try:
            return run_isolated("sharpeye_ros.benchmark.still_bench", json.dumps(spec), what)
        except BenchmarkError as err:
            print(f"benchmark: {err}", file=sys.stderr)
            out.errors.append(str(err)[-1000:])
            return None

    rates = run({"mode": "rates", "scenes": 50 if args.quick else 200}, "the gate's false-skip rates")
    if rates is not None:
        out.rates = GateRates.from_json(rates, "still.rates")
    models = [demo]
    if "paper" in args.models and not args.quick:
        print("benchmark: saving the paper-size model for the node", file=sys.stderr)
        models.append(("paper", paper_checkpoint(args.paper_tokens, tmp)))
    for name, path in models:
        pair = {}
        for gating, seconds in ((True, still_window), (False, still_window / 2)):
            spec = {"mode": "still", "model_path": path, "gating": gating, "seconds": seconds,
                    "warmup": 10.0 if name == "paper" else 5.0, "device": args.device}
            result = run(spec, f"CPU on a still scene, {name}, gating {'on' if gating else 'off'}")
            if result is not None:
                pair["on" if gating else "off"] = StillCpu.from_json(result, "still.cpu")
        if len(pair) == 2:
            out.cpu.append(StillPair(model_name=name, **pair))
    changing = run({"mode": "changing", "model_path": demo[1], "changes": 10 if args.quick else 30,
                    "device": args.device, "model_name": demo[0]}, f"a changing view, {demo[0]}")
    if changing is not None:
        out.changing = ChangingView.from_json(changing, "still.changing")
    out.machine.load_average_1min_end = load_average()
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the benchmark (see the module docstring); 0 on success, 1 on an error."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    out_dir = Path(args.out_dir)
    try:
        if args.render or args.merge:
            results = load_results(out_dir / RESULTS_NAME)
            for path in args.merge or ():
                if not Path(path).is_file():
                    raise BenchmarkError(f"{path}: no such results file")
                results = results.merged(load_results(Path(path)))
            if args.gpu_note:
                results.gpu_note = args.gpu_note
            if args.tests_log:
                check = dataclasses.replace(results.gpu_check or GpuCheck())
                check.model_tests = tests_summary(Path(args.tests_log))
                results.gpu_check = check
            for path in write_docs(results, out_dir):
                print(path)
            return 0
        if args.still_only:
            results = load_results(out_dir / RESULTS_NAME)
            if CPU not in results.runs or args.device != "cpu":
                raise BenchmarkError("--still-only adds to the docs' CPU run: run the whole benchmark first, on cpu")
            with tempfile.TemporaryDirectory(prefix="sharpeye_benchmark_models_") as tmp:
                still = measure_still(args, demo_source(args.model_path, Path(tmp)), Path(tmp))
            results.runs[CPU] = dataclasses.replace(results.runs[CPU], still=still)
            for path in write_docs(results, out_dir):
                print(path)
            for t in targets.targets(results):
                print(f"{t.name}: {report.format_value(t)} ({report.verdict(t.passed)})")
            return 0
        key = run_kind(args.device)
        run = measure_run(args, argv)
        fresh = Results(runs={key: run})
        if key == CUDA:
            fresh.gpu_check = GpuCheck(gpu=run.machine.gpu, date_utc=run.machine.date_utc)
        if args.json:
            Path(args.json).write_text(json.dumps(fresh.to_json(), indent=1) + "\n")
            print(args.json)
        if not args.model_only:
            for path in write_docs(load_results(out_dir / RESULTS_NAME).merged(fresh), out_dir):
                print(path)
        for t in targets.targets(fresh):
            print(f"{t.name}: {report.format_value(t)} ({report.verdict(t.passed)})")
        return 0
    except BenchmarkError as err:
        print(f"benchmark: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
