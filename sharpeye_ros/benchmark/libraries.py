"""The CPU fast path's candidates, side by side: which library makes the paper model fastest.

Two fixed-shape pieces of the paper-size model, random weights, batch 1, each run by every
candidate that is installed (a missing one is skipped with a note), timed in interleaved
rounds (round r runs every candidate once, so the machine's drift hits them alike):

- ``vision``: the CLIP ViT-L/14-336 tower's embeddings and its first :data:`VISION_LAYERS`
  layers (of the 23 the glance runs: every layer has the same shape and cost, so the
  ratios are the whole tower's, and exporting and calibrating 4 layers keeps the run
  within minutes), one 336 px image: compute-bound, like the connector, the prefills and
  DeepLens;
- ``prefill``: OPT-125M over a 587-token glance prompt (input embeddings in, last hidden
  states out): compute-bound;
- ``decode`` (torch candidates only): one 3-beam decode step of OPT-125M over a 587-token
  KV cache, with the LM head: memory-bound.

Candidates: ``torch-fp32``; ``torch-bf16`` (weights in bfloat16) and ``torch-autocast``
(fp32 weights, bfloat16 autocast); ``torch-int8`` (this package's int8 path,
:mod:`sharpeye_ros.model.precision`); ``torch.ao-int8`` (``torch.ao.quantization.
quantize_dynamic``, the deprecated reference); ``torchao-int8`` (torchao's
``Int8DynamicActivationInt8WeightConfig``, eager); ``openvino-fp32`` / ``openvino-int8``
(``openvino.convert_model``; int8 by NNCF's post-training ``nncf.quantize`` on a few
calibration inputs); ``onnxruntime-fp32`` / ``onnxruntime-int8`` (``torch.onnx.export``,
``onnxruntime.quantization.quantize_dynamic``). Every output is compared with torch fp32's
(relative error of the output).

``python -m sharpeye_ros.benchmark.libraries OUT.json [--rounds 3] [--pieces vision,prefill,decode]``
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import os
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
from torch import nn

from sharpeye_ros.benchmark.measure import load_average, machine_info

PIECES = ("vision", "prefill", "decode")
PROMPT_TOKENS = 587  # BOS + 10 + 576 visual tokens: the paper glance's prompt
BEAMS = 3
VISION_LAYERS = 4
PIECE_WHAT = {"vision": f"CLIP ViT-L/14-336, embeddings + {VISION_LAYERS} of the 23 layers the glance runs, one 336 px image",
              "prefill": f"OPT-125M over a {PROMPT_TOKENS}-token prompt",
              "decode": f"one {BEAMS}-beam OPT-125M step over a {PROMPT_TOKENS}-token KV cache, LM head included"}


@dataclass
class Candidate:
    """One library's runner of one piece: ``run()`` returns the output; ``note`` says why
    it is missing when ``run`` is None."""

    name: str
    run: Optional[Callable[[], torch.Tensor]] = None
    note: str = ""
    setup_seconds: float = 0.0
    times: list[float] = field(default_factory=list)
    error: Optional[float] = None


def _have(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


class VisionPiece(nn.Module):
    """The tower's pass as :class:`~sharpeye_ros.model.vision.VisionTower` runs it: the
    embeddings, the pre-norm and the layers up to the selected one."""

    def __init__(self, tower, layers: Optional[int] = None) -> None:
        super().__init__()
        model = getattr(tower.model, "vision_model", tower.model)
        self.embeddings, self.pre = model.embeddings, model.pre_layrnorm
        self.layers = nn.ModuleList(model.encoder.layers[: tower.select_layer][:layers])

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        hidden = self.pre(self.embeddings(pixels))
        for layer in self.layers:
            hidden = layer(hidden, None)
        return hidden


class PrefillPiece(nn.Module):
    """OPT's decoder over input embeddings, without a cache."""

    def __init__(self, lm) -> None:
        super().__init__()
        self.decoder = lm.model.model.decoder

    def forward(self, embeds: torch.Tensor) -> torch.Tensor:
        mask = torch.ones(embeds.shape[:2], dtype=torch.long)
        return self.decoder(inputs_embeds=embeds, attention_mask=mask, use_cache=False).last_hidden_state


def _torch_variants(module: nn.Module, inputs: tuple) -> list[Candidate]:
    from sharpeye_ros.model import precision

    out = []

    def add(name: str, make: Callable[[], Callable[[], torch.Tensor]]) -> None:
        start = time.perf_counter()
        try:
            run = make()
        except Exception as err:  # a library that cannot run this piece is a finding, not a crash
            out.append(Candidate(name, note=f"failed: {type(err).__name__}: {str(err)[:160]}"))
            return
        out.append(Candidate(name, run, setup_seconds=time.perf_counter() - start))

    def plain(m: nn.Module, args: tuple) -> Callable[[], torch.Tensor]:
        return lambda: m(*args)

    add("torch-fp32", lambda: plain(module, inputs))
    add("torch-bf16", lambda: plain(copy.deepcopy(module).to(torch.bfloat16),
                                    tuple(a.to(torch.bfloat16) if a.is_floating_point() else a for a in inputs)))

    def autocast() -> Callable[[], torch.Tensor]:
        def run() -> torch.Tensor:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return module(*inputs)
        return run

    add("torch-autocast", autocast)
    add("torch-int8", lambda: plain(precision.quantize_int8(copy.deepcopy(module)), inputs))

    def torch_ao() -> Callable[[], torch.Tensor]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            q = torch.ao.quantization.quantize_dynamic(copy.deepcopy(module), {nn.Linear}, dtype=torch.qint8)
        return plain(q, inputs)

    add("torch.ao-int8", torch_ao)
    add("torchao-int8", lambda: plain(_torchao_int8(copy.deepcopy(module)), inputs))
    return out


def _torchao_int8(module: nn.Module) -> nn.Module:
    """``module`` with torchao's dynamic int8 activations and int8 weights on every Linear."""
    if not _have("torchao"):
        raise ImportError("torchao not installed")
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

    quantize_(module, Int8DynamicActivationInt8WeightConfig())
    return module


def _openvino(module: nn.Module, inputs: tuple, calibration: Sequence[tuple]) -> list[Candidate]:
    if not _have("openvino"):
        return [Candidate(n, note="openvino not installed") for n in ("openvino-fp32", "openvino-int8")]
    import openvino as ov

    core = ov.Core()
    out = []
    start = time.perf_counter()
    try:
        model = ov.convert_model(module, example_input=inputs)
        compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    except Exception as err:
        return [Candidate("openvino-fp32", note=f"conversion failed: {type(err).__name__}: {str(err)[:160]}")]
    arrays = [a.numpy() for a in inputs]
    out.append(Candidate("openvino-fp32", lambda: torch.from_numpy(compiled(arrays)[0]),
                         setup_seconds=time.perf_counter() - start))
    if not _have("nncf"):
        out.append(Candidate("openvino-int8", note="nncf not installed"))
        return out
    import nncf

    start = time.perf_counter()
    try:
        data = nncf.Dataset([[a.numpy() for a in c] for c in calibration])
        quantized = nncf.quantize(model, data, subset_size=len(calibration),
                                  model_type=nncf.ModelType.TRANSFORMER)
        compiled8 = core.compile_model(quantized, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    except Exception as err:
        out.append(Candidate("openvino-int8", note=f"nncf failed: {type(err).__name__}: {str(err)[:160]}"))
        return out
    out.append(Candidate("openvino-int8", lambda: torch.from_numpy(compiled8(arrays)[0]),
                         setup_seconds=time.perf_counter() - start))
    return out


def _onnxruntime(module: nn.Module, inputs: tuple, tmp: Path) -> list[Candidate]:
    if not (_have("onnxruntime") and _have("onnx")):
        return [Candidate(n, note="onnxruntime or onnx not installed")
                for n in ("onnxruntime-fp32", "onnxruntime-int8")]
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = []
    start = time.perf_counter()
    path = tmp / "piece.onnx"
    try:
        torch.onnx.export(module, inputs, str(path), input_names=[f"in{i}" for i in range(len(inputs))],
                          output_names=["out"], dynamo=False)
    except Exception as err:
        return [Candidate("onnxruntime-fp32", note=f"export failed: {type(err).__name__}: {str(err)[:160]}")]
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    feeds = {f"in{i}": a.numpy() for i, a in enumerate(inputs)}

    def session(p: Path) -> Callable[[], torch.Tensor]:
        s = ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"])
        return lambda: torch.from_numpy(s.run(None, feeds)[0])

    out.append(Candidate("onnxruntime-fp32", session(path), setup_seconds=time.perf_counter() - start))
    start = time.perf_counter()
    try:
        quantize_dynamic(str(path), str(tmp / "piece_int8.onnx"), weight_type=QuantType.QInt8)
        out.append(Candidate("onnxruntime-int8", session(tmp / "piece_int8.onnx"),
                             setup_seconds=time.perf_counter() - start))
    except Exception as err:
        out.append(Candidate("onnxruntime-int8", note=f"quantize_dynamic failed: {type(err).__name__}: "
                                                      f"{str(err)[:160]}"))
    return out


def _decode_candidates(model) -> list[Candidate]:
    """Torch candidates of one beam-search decode step over a filled KV cache."""
    from transformers.cache_utils import Cache

    from sharpeye_ros.model import precision
    from sharpeye_ros.model.kv_cache import KVBuffer

    lm = model.lm
    prompt = torch.randn(BEAMS, PROMPT_TOKENS, lm.hidden_size) * 0.1
    mask = torch.ones(BEAMS, PROMPT_TOKENS + 1, dtype=torch.long)
    pos = torch.full((BEAMS, 1), PROMPT_TOKENS, dtype=torch.long)
    tokens = torch.tensor([[5], [6], [7]])

    def make(variant: nn.Module, dtype: torch.dtype, autocast: bool = False) -> Callable[[], torch.Tensor]:
        cache = Cache(layers=[KVBuffer(PROMPT_TOKENS + 4) for _ in range(variant.num_layers)])
        with torch.no_grad():
            variant(prompt.to(dtype), mask[:, :-1], torch.arange(PROMPT_TOKENS).expand(BEAMS, -1), cache)

        def run() -> torch.Tensor:
            for layer in cache.layers:  # step over the same position every time
                layer.crop(PROMPT_TOKENS)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                hidden = variant(variant.embed(tokens).to(dtype), mask, pos, cache)
                return variant.model.lm_head(hidden[:, -1]).float()
        return run

    out = []
    for name, build in (
        ("torch-fp32", lambda: make(lm, torch.float32)),
        ("torch-bf16", lambda: make(copy.deepcopy(lm).to(torch.bfloat16), torch.bfloat16)),
        ("torch-autocast", lambda: make(lm, torch.float32, autocast=True)),
        ("torch-int8", lambda: make(precision.quantize_int8(copy.deepcopy(lm)), torch.float32)),
        ("torchao-int8", lambda: make(_torchao_int8(copy.deepcopy(lm)), torch.float32)),
    ):
        start = time.perf_counter()
        try:
            out.append(Candidate(name, build(), setup_seconds=time.perf_counter() - start))
        except Exception as err:
            out.append(Candidate(name, note=f"failed: {type(err).__name__}: {str(err)[:160]}"))
    for name in ("openvino-int8", "onnxruntime-int8"):
        out.append(Candidate(name, note="not measured: needs the decoder exported with its KV cache "
                                        "as graph state (see docs/benchmarks.md)"))
    return out


def _rel_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    out = out.float().reshape(ref.shape)
    return float((out - ref).norm() / ref.norm().clamp(min=1e-12))


SLOW = 8.0  # a candidate whose warm-up takes this many times torch fp32's is timed once


def time_candidates(candidates: list[Candidate], rounds: int) -> None:
    """One warm-up each, then ``rounds`` interleaved rounds; errors against the first.
    A candidate :data:`SLOW` times slower than the first at warm-up keeps its warm-up
    time as its one measurement (so that a kernel that falls back to a slow path does not
    take the run's hour)."""
    live = [c for c in candidates if c.run is not None]
    with torch.no_grad():
        outputs, warm = {}, {}
        for c in live:
            start = time.perf_counter()
            outputs[c.name] = c.run()
            warm[c.name] = time.perf_counter() - start
        ref = outputs[live[0].name].float()
        for c in live:
            c.error = _rel_error(outputs[c.name], ref)
        slow = [c for c in live if warm[c.name] > SLOW * warm[live[0].name]]
        for c in slow:
            c.times = [warm[c.name]]
            c.note = (c.note + "; " if c.note else "") + f"timed once (its warm-up): over {SLOW:g}x torch fp32"
        live = [c for c in live if c not in slow]
        for _ in range(rounds):
            for c in live:
                start = time.perf_counter()
                c.run()
                c.times.append(time.perf_counter() - start)


def measure(pieces: Sequence[str] = PIECES, rounds: int = 3, seed: int = 0) -> dict:
    """The side-by-side of ``pieces``: per piece, each candidate's median seconds, its
    ratio to torch fp32, its relative output error and set-up seconds (or why it is missing)."""
    from sharpeye_ros.benchmark.worker import ModelSpec, build_model

    torch.manual_seed(seed)
    model, _ = build_model(ModelSpec(name="paper", source="paper", overrides={"deeplens": None, "refine": False}))
    results: dict = {"machine": machine_info("cpu").to_json(), "rounds": rounds, "pieces": {}}
    with tempfile.TemporaryDirectory(prefix="sharpeye_libraries_") as tmp:
        for piece in pieces:
            print(f"libraries: {piece}", file=sys.stderr, flush=True)
            if piece == "vision":
                module = VisionPiece(model.vision, VISION_LAYERS).eval()
                size = model.vision.image_size
                inputs = (torch.randn(1, 3, size, size),)
                calibration = [(torch.randn(1, 3, size, size),) for _ in range(2)]
            elif piece == "prefill":
                module = PrefillPiece(model.lm).eval()
                inputs = (torch.randn(1, PROMPT_TOKENS, model.lm.hidden_size) * 0.1,)
                calibration = [(torch.randn(1, PROMPT_TOKENS, model.lm.hidden_size) * 0.1,) for _ in range(2)]
            elif piece == "decode":
                candidates = _decode_candidates(model)
            else:
                raise ValueError(f"unknown piece {piece!r}; known: {PIECES}")
            if piece != "decode":
                with torch.no_grad():
                    candidates = _torch_variants(module, inputs)
                    candidates += _openvino(module, inputs, calibration)
                    candidates += _onnxruntime(module, inputs, Path(tmp))
            load = load_average()
            time_candidates(candidates, rounds)
            base = None
            rows = []
            for c in candidates:
                median = sorted(c.times)[len(c.times) // 2] if c.times else None
                base = median if c.name == "torch-fp32" else base
                rows.append({"name": c.name, "seconds": median, "times": c.times, "rel_error": c.error,
                             "setup_seconds": c.setup_seconds, "note": c.note})
            for r in rows:
                r["speedup"] = base / r["seconds"] if base and r["seconds"] else None
            results["pieces"][piece] = {"rows": rows, "load_before": load, "load_after": load_average(),
                                        "what": PIECE_WHAT[piece]}
            del candidates
    return results


def render(results: dict) -> str:
    """A markdown table per piece."""
    m = results["machine"]
    lines = [f"{m['cpu']}, {m['torch_threads']} threads, {m['date_utc']}, {results['rounds']} interleaved rounds"]
    for piece, data in results["pieces"].items():
        what = f": {data['what']}" if data.get("what") else ""
        lines += ["", f"**{piece}**{what} (load {data['load_before']:.2f} -> {data['load_after']:.2f})", "",
                  "| candidate | median | vs torch fp32 | output rel. error | set-up | note |",
                  "|---|---|---|---|---|---|"]
        for r in data["rows"]:
            sec = f"{r['seconds'] * 1e3:.1f} ms" if r["seconds"] else "-"
            speed = f"{r['speedup']:.2f}x" if r["speedup"] else "-"
            err = f"{r['rel_error']:.4f}" if r["rel_error"] is not None else "-"
            lines.append(f"| {r['name']} | {sec} | {speed} | {err} | {r['setup_seconds']:.1f} s | {r['note']} |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="results JSON")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pieces", default=",".join(PIECES))
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    results = measure([p for p in args.pieces.split(",") if p], args.rounds)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print(render(results))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OPENVINO_TELEMETRY", "0")
    sys.exit(main())
