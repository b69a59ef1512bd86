"""Peers: other small captioners beside the paper glance, on the same CPU, in one run.

BLIP-base, GIT-base and Florence-2-base, each built from its base-size configuration with
random weights (no hub here; speed does not depend on the weights' values), caption the
same 640x480 scene, resized per caption to each model's own square input, with exactly
``tokens`` new tokens (EOS suppressed until then), greedy and with 3 beams, each in
float32 and in the int8 path of the paper model (:func:`sharpeye_ros.model.precision.quantize_int8`
on every Linear layer but the LM head, which ours keeps float too). The paper glance
(random weights, the same tokens, its regions included) runs beside them in each
precision. All entries are timed round-robin, one caption each per round after a warm-up
round, so the machine's drift hits them alike. A peer whose class this transformers
lacks is skipped with a note.

These are reference points, not dependencies: nothing here is used outside the benchmark.

``python -m sharpeye_ros.benchmark.peers OUT.json [--rounds 3]``, then
``python -m sharpeye_ros.benchmark.fast_path FAST.json --no-speed --peers OUT.json`` and
``benchmark --merge FAST.json`` put the table into docs/benchmarks.md ("CPU fast path").
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
from torch import nn

from sharpeye_ros.benchmark.results import PeerTable
from sharpeye_ros.model import precision as P

TOKENS = 20
BEAMS = (1, 3)
PRECISIONS = ("float32", "int8")
OURS = "ours (paper glance)"
OURS_OVERRIDES = {"deeplens": None, "refine": False}  # the glance alone: DeepLens's weights are not needed
ROUNDS = 3

CLIP_MEAN, CLIP_STD = (0.4815, 0.4578, 0.4082), (0.2686, 0.2613, 0.2758)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def pixels(image: np.ndarray, size: int, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """An HxWx3 uint8 image as a normalized 1x3x``size``x``size`` float tensor (bicubic resize)."""
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0
    x = nn.functional.interpolate(x, size=(size, size), mode="bicubic", align_corners=False)
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


@dataclass(frozen=True)
class Peer:
    """How to build and feed one peer: its transformers classes (by name, so a missing
    one is a note, not an import error), its base-size configuration, its input, the
    inputs of one caption and its LM head (kept float in int8, as ours)."""

    config_class: str
    model_class: str
    base_config: Callable[[Any], Any]  # the config class -> the base-size config
    image_size: Callable[[Any], int]  # config -> square input side
    mean: Sequence[float]
    std: Sequence[float]
    prompt: Callable[[nn.Module, torch.Tensor], Optional[torch.Tensor]]  # (model, pixels) -> input_ids
    head: Callable[[nn.Module], nn.Module]


def _blip_config(cls):
    return cls()  # BlipConfig's defaults are BLIP-base: ViT-B/16 at 384 px, a BERT-base text decoder


def _git_config(cls):
    return cls()  # GitConfig's defaults are GIT-base: CLIP ViT-B/16 at 224 px, 6 text layers


# Florence-2-base: DaViT (Florence2VisionConfig's defaults: dims 128-1024, depths 1-1-9-1)
# projected to 768, then a BART-base encoder-decoder (BartConfig's defaults are BART-large).
FLORENCE2_BASE_TEXT = dict(d_model=768, encoder_layers=6, decoder_layers=6, encoder_attention_heads=12,
                           decoder_attention_heads=12, encoder_ffn_dim=3072, decoder_ffn_dim=3072,
                           vocab_size=51329, max_position_embeddings=1024)
FLORENCE2_PROMPT_TOKENS = 6  # "What does the image describe?", its <CAPTION> task prompt, in BART tokens


def _florence2_config(cls):
    return cls(text_config={"model_type": "bart", **FLORENCE2_BASE_TEXT},
               vision_config={"model_type": "florence_vision", "projection_dim": FLORENCE2_BASE_TEXT["d_model"]})


def _florence2_prompt(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    # As its processor lays it out: the image tokens, then <s> prompt </s>.
    with torch.no_grad():
        features = model.get_image_features(x)
    count = (features.pooler_output if hasattr(features, "pooler_output") else features).shape[1]
    config, text = model.config, model.config.text_config
    prompt = list(range(100, 100 + FLORENCE2_PROMPT_TOKENS))
    return torch.tensor([[config.image_token_id] * count + [text.bos_token_id] + prompt + [text.eos_token_id]])


PEERS: dict[str, Peer] = {
    "BLIP-base": Peer("BlipConfig", "BlipForConditionalGeneration", _blip_config,
                      lambda c: c.vision_config.image_size, CLIP_MEAN, CLIP_STD,
                      lambda m, x: None, lambda m: m.text_decoder.get_output_embeddings()),
    "GIT-base": Peer("GitConfig", "GitForCausalLM", _git_config,
                     lambda c: c.vision_config.image_size, CLIP_MEAN, CLIP_STD,
                     lambda m, x: torch.tensor([[m.config.bos_token_id]]), lambda m: m.get_output_embeddings()),
    "Florence-2-base": Peer("Florence2Config", "Florence2ForConditionalGeneration", _florence2_config,
                            lambda c: 768, IMAGENET_MEAN, IMAGENET_STD, _florence2_prompt,
                            lambda m: m.get_output_embeddings()),
}


def peer_classes(peer: Peer) -> tuple[type, type]:
    """(config class, model class) of ``peer`` in this transformers; AttributeError naming
    the class this version lacks."""
    import transformers

    found = []
    for name in (peer.config_class, peer.model_class):
        cls = getattr(transformers, name, None)
        if cls is None:
            raise AttributeError(f"transformers {transformers.__version__} has no {name}")
        found.append(cls)
    return found[0], found[1]


@dataclass
class Built:
    """A peer (or ours) ready to caption: its float32 model, the inputs of one caption
    from an image, and its LM head."""

    model: nn.Module
    image_size: int
    inputs: Callable[[nn.Module, np.ndarray], dict]
    head: Optional[nn.Module]


def build_peer(name: str, config: Any = None, seed: int = 0) -> Built:
    """Peer ``name`` with random weights from ``config`` (default: its base size).
    AttributeError when this transformers lacks its class."""
    peer = PEERS[name]
    config_class, model_class = peer_classes(peer)
    torch.manual_seed(seed)
    model = model_class(config if config is not None else peer.base_config(config_class)).eval()
    size = int(peer.image_size(model.config))
    ids = peer.prompt(model, pixels(np.zeros((size, size, 3), np.uint8), size, peer.mean, peer.std))

    def inputs(m: nn.Module, image: np.ndarray) -> dict:
        given = {"pixel_values": pixels(image, size, peer.mean, peer.std)}
        return given if ids is None else {**given, "input_ids": ids}

    return Built(model, size, inputs, peer.head(model))


def in_precisions(built: Built, precisions: Sequence[str]) -> dict[str, nn.Module]:
    """``built``'s model in each of ``precisions``: itself in float32; a copy in int8 (its
    LM head kept float, as ours) or in another float dtype."""
    out = {}
    for name in precisions:
        chosen = P.resolve(name, "cpu")
        if chosen.name == "float32":
            out[name] = built.model
            continue
        twin = copy.deepcopy(built.model)
        if chosen.quantized:
            heads = [n for n, m in built.model.named_modules() if m is built.head]
            out[name] = P.quantize_int8(twin, keep=[twin.get_submodule(n) for n in heads])
        else:
            out[name] = twin.to(chosen.dtype)
    return out


def generate_kwargs(beams: int, tokens: int) -> dict:
    """``generate``'s arguments for exactly ``tokens`` new tokens with ``beams`` beams,
    ranked as ours (no length penalty, stop once ``beams`` hypotheses are done)."""
    kwargs: dict = dict(max_new_tokens=tokens, min_new_tokens=tokens, num_beams=beams, do_sample=False)
    if beams > 1:
        kwargs.update(early_stopping=True, length_penalty=0.0)
    return kwargs


@dataclass
class Entry:
    """One (model, precision, beams) to time: ``run`` makes one caption of the image."""

    model: str
    precision: str
    beams: int
    run: Callable[[], object]
    times: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return float(np.median(self.times))


def peer_entries(name: str, built: Built, models: dict[str, nn.Module], image: np.ndarray,
                 tokens: int) -> list[Entry]:
    """The entries of peer ``name`` in each precision of ``models``, greedy and 3 beams;
    each caption preprocesses the image and calls ``generate``."""
    def caption(model: nn.Module, dtype: torch.dtype, beams: int) -> torch.Tensor:
        given = {k: v.to(dtype) if v.is_floating_point() else v for k, v in built.inputs(model, image).items()}
        with torch.no_grad():
            return model.generate(**given, **generate_kwargs(beams, tokens))

    return [Entry(name, precision, b, functools.partial(caption, model, P.resolve(precision, "cpu").dtype, b))
            for precision, model in models.items() for b in BEAMS]


def ours_in_precisions(base: nn.Module, precisions: Sequence[str], tokens: int) -> dict[str, nn.Module]:
    """The paper glance (``base``: a float32 SharpEyes) in each precision as the library
    applies it, decoding exactly ``tokens`` new tokens."""
    g = base.config.generation
    g.max_new_tokens, g.stop = tokens, ()
    return {name: base if name == "float32" else P.apply(copy.deepcopy(base), P.resolve(name, "cpu"))
            for name in precisions}


def ours_entries(models: dict[str, nn.Module], image: np.ndarray) -> list[Entry]:
    """Our glance's entries in each precision of ``models``, greedy and 3 beams."""
    def caption(net: nn.Module, beams: int) -> object:
        net.config.generation.num_beams = beams
        with torch.no_grad():
            return net.caption([image], refine=False)

    return [Entry(OURS, precision, b, functools.partial(caption, net, b)) for precision, net in models.items()
            for b in BEAMS]


def round_robin(entries: Sequence[Entry], rounds: int, log: Optional[Callable[[str], None]] = None) -> None:
    """``rounds`` + 1 rounds in which every entry makes one caption in turn; each entry's
    times are those of the rounds after the first (a warm-up)."""
    for r in range(rounds + 1):
        if log is not None:
            log(f"peers: round {r}/{rounds}{' (warm-up)' if r == 0 else ''}")
        for e in entries:
            start = time.perf_counter()
            e.run()
            if r > 0:
                e.times.append(time.perf_counter() - start)


def model_info(models: dict[str, nn.Module], image_size: int) -> dict:
    """A :class:`~sharpeye_ros.benchmark.results.PeerModel` as JSON: the float32 model's
    parameters, its input side, and the Linear layers its int8 copy quantizes and keeps float."""
    base = next(iter(models.values()))
    params = sum(p.numel() for p in {id(p): p for p in base.parameters()}.values())
    q = next((m for m in models.values() if P.int8_layers(m) > 0), None)
    return {"params": params, "image_size": image_size, "int8_layers": 0 if q is None else P.int8_layers(q),
            "float_linears": 0 if q is None else sum(type(m) is nn.Linear for m in q.modules())}


def measure(rounds: int = ROUNDS, peers: Sequence[str] = tuple(PEERS), precisions: Sequence[str] = PRECISIONS,
            tokens: int = TOKENS, log: Optional[Callable[[str], None]] = None,
            ours: Optional[nn.Module] = None, configs: Optional[dict[str, Any]] = None) -> dict:
    """The peer table as :class:`~sharpeye_ros.benchmark.results.PeerTable` JSON: per entry
    the median seconds of ``rounds`` round-robin rounds after a warm-up round. ``ours``:
    the float32 model to set beside them (default: the paper size, random weights);
    ``configs``: a config per peer instead of its base size (tests)."""
    from sharpeye_ros.benchmark.measure import load_average, machine_info
    from sharpeye_ros.benchmark.worker import ModelSpec, benchmark_images, build_model

    if "float32" not in precisions:
        raise ValueError(f"peers: the precisions must include float32 (the reference), got {list(precisions)}")
    image = benchmark_images(1)[0]
    if ours is None:
        ours = build_model(ModelSpec(name="paper", source="paper", overrides=OURS_OVERRIDES))[0]
    nets = ours_in_precisions(ours, precisions, tokens)
    entries = ours_entries(nets, image)
    models, notes = {OURS: model_info(nets, ours.vision.image_size)}, {}
    for name in peers:
        try:
            built = build_peer(name, (configs or {}).get(name))
        except AttributeError as err:  # this transformers lacks the class
            notes[name] = f"skipped: {err}"
            continue
        copies = in_precisions(built, precisions)
        models[name] = model_info(copies, built.image_size)
        entries += peer_entries(name, built, copies, image, tokens)
    load = load_average()
    round_robin(entries, rounds, log)
    return {"machine": machine_info("cpu").to_json(), "tokens": tokens, "rounds": rounds, "load_before": load,
            "load_after": load_average(), "models": models, "notes": notes,
            "entries": [{"model": e.model, "precision": e.precision, "beams": e.beams, "seconds": e.median,
                         "times": e.times} for e in entries]}


def _beams(b: int) -> str:
    return "greedy" if b == 1 else f"{b} beams"


def render(table: PeerTable) -> list[str]:
    """The peer table: per model its size and input, seconds per caption in each precision,
    greedy and 3 beams, each against our glance in the same precision and beams (a peer's
    seconds / ours: under 1 is faster than ours), and each model's speed-up in int8 over
    its own float32; then the peers that were skipped."""
    precisions = list(dict.fromkeys(e.precision for e in table.entries))
    beams = list(dict.fromkeys(e.beams for e in table.entries))
    others = [p for p in precisions if p != "float32"]
    header = (["model", "params", "input"] + [f"{p}, {_beams(b)}" for p in precisions for b in beams]
              + [f"{p} speed-up, {_beams(b)}" for p in others for b in beams])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for model in dict.fromkeys(e.model for e in table.entries):
        info = table.models.get(model)
        cells = [model, f"{info.params / 1e6:.0f}M" if info else "-", f"{info.image_size} px" if info else "-"]
        for p in precisions:
            for b in beams:
                s, ref = table.seconds(model, p, b), table.seconds(OURS, p, b)
                ratio = f" ({s / ref:.2f}x ours)" if s is not None and ref and model != OURS else ""
                cells.append("-" if s is None else f"{s:.2f} s{ratio}")
        for p in others:
            for b in beams:
                s, ref = table.seconds(model, p, b), table.seconds(model, "float32", b)
                cells.append(f"**{ref / s:.2f}x**" if s and ref is not None else "-")
        lines.append("| " + " | ".join(cells) + " |")
    quantized = [f"{m} {i.int8_layers} of {i.int8_layers + i.float_linears}" for m, i in table.models.items()
                 if i.int8_layers]
    if quantized:
        lines += ["", "Linear layers in int8: " + ", ".join(quantized) + "."]
    if table.notes:
        lines += [""] + [f"- {peer}: {note}" for peer, note in table.notes.items()]
    return lines


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Measure the peer table, write it to OUT.json (a :class:`PeerTable`, which
    ``fast_path --peers`` folds into a results file) and print it."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="the peer table's JSON")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help=f"timed round-robin rounds (default {ROUNDS})")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    parser.add_argument("--peers", default=",".join(PEERS), help=f"comma-separated, of {', '.join(PEERS)}")
    parser.add_argument("--precisions", default=",".join(PRECISIONS))
    parser.add_argument("--tokens", type=int, default=TOKENS, help=f"new tokens per caption (default {TOKENS})")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.peers.split(",") if n.strip()]
    if any(n not in PEERS for n in names):
        parser.error(f"--peers: unknown {[n for n in names if n not in PEERS]}; choose from {list(PEERS)}")
    if args.rounds < 1 or args.tokens < 1:
        parser.error("--rounds and --tokens must be at least 1")
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    try:
        for p in precisions:
            P.resolve(p, "cpu")
    except ValueError as err:
        parser.error(f"--precisions: {err}")
    if args.threads:
        torch.set_num_threads(args.threads)
    result = measure(args.rounds, names, precisions, args.tokens, log=lambda t: print(t, file=sys.stderr, flush=True))
    table = PeerTable.from_json(result, "peers")
    Path(args.out).write_text(json.dumps(table.to_json(), indent=1) + "\n")
    print("\n".join(render(table)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
