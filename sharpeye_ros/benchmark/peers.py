"""Peers: other small captioners beside the paper glance, on the same CPU, in one run.

BLIP-base, GIT-base and Florence-2-base, each built from its configuration with random
weights (no hub here; speed does not depend on the weights' values), caption the same
640x480 scene, resized to each model's own input size, with exactly ``tokens`` new tokens
(EOS suppressed until then), greedy and with 3 beams, each in float32 and in the int8
path the paper model uses (:func:`sharpeye_ros.model.precision.quantize_int8`: every
Linear layer but the tied LM head). The paper glance (random weights, the same tokens,
its regions included) runs beside them in each precision. All entries are timed
round-robin, one caption each per round, so the machine's drift hits them alike. A peer
whose class this transformers lacks is skipped with a note.

These are reference points, not dependencies: nothing here is used outside the benchmark.
"""

from __future__ import annotations

import copy
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from sharpeye_ros.model import precision as P

TOKENS = 20
BEAMS = (1, 3)


@dataclass
class Entry:
    """One (model, precision, beams) to time: ``run`` makes one caption."""

    model: str
    precision: str
    beams: int
    run: Callable[[], object]
    times: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return float(np.median(self.times))


def _pixels(image: np.ndarray, size: int, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bicubic", align_corners=False)
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


CLIP_MEAN, CLIP_STD = (0.4815, 0.4578, 0.4082), (0.2686, 0.2613, 0.2758)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _blip(image: np.ndarray):
    from transformers import BlipConfig, BlipForConditionalGeneration

    model = BlipForConditionalGeneration(BlipConfig()).eval()  # the defaults are BLIP-base (ViT-B/16, 384 px)
    size = model.config.vision_config.image_size
    return model, {"pixel_values": _pixels(image, size, CLIP_MEAN, CLIP_STD)}


def _git(image: np.ndarray):
    from transformers import GitConfig, GitForCausalLM

    model = GitForCausalLM(GitConfig()).eval()  # the defaults are GIT-base (CLIP ViT-B/16, 224 px, 6 layers)
    size = model.config.vision_config.image_size
    ids = torch.tensor([[model.config.bos_token_id]])
    return model, {"pixel_values": _pixels(image, size, CLIP_MEAN, CLIP_STD), "input_ids": ids}


# Florence-2-base: DaViT (the vision defaults) projected to a BART-base encoder-decoder.
FLORENCE2_BASE_TEXT = dict(d_model=768, encoder_layers=6, decoder_layers=6, encoder_attention_heads=12,
                           decoder_attention_heads=12, encoder_ffn_dim=3072, decoder_ffn_dim=3072,
                           vocab_size=51329, max_position_embeddings=1024)


def _florence2(image: np.ndarray):
    from transformers import Florence2Config, Florence2ForConditionalGeneration

    config = Florence2Config(text_config={"model_type": "bart", **FLORENCE2_BASE_TEXT},
                             vision_config={"model_type": "florence_vision", "projection_dim": 768})
    model = Florence2ForConditionalGeneration(config).eval()
    pixels = _pixels(image, 768, IMAGENET_MEAN, IMAGENET_STD)
    with torch.no_grad():
        count = model.get_image_features(pixels)
        count = (count.pooler_output if hasattr(count, "pooler_output") else count).shape[1]
    text = config.text_config
    prompt = [text.bos_token_id] + [config.image_token_id] * count + list(range(100, 107)) + [text.eos_token_id]
    return model, {"pixel_values": pixels, "input_ids": torch.tensor([prompt])}


PEERS: dict[str, Callable] = {"BLIP-base": _blip, "GIT-base": _git, "Florence-2-base": _florence2}


def _peer_run(model, inputs: dict, beams: int, tokens: int) -> Callable[[], object]:
    kwargs = dict(max_new_tokens=tokens, min_new_tokens=tokens, num_beams=beams, do_sample=False)
    if beams > 1:
        kwargs.update(early_stopping=True, length_penalty=0.0)

    def run():
        with torch.no_grad():
            return model.generate(**inputs, **kwargs)
    return run


def _ours(tokens: int):
    from sharpeye_ros.benchmark.worker import ModelSpec, build_model

    model, _ = build_model(ModelSpec(name="paper", source="paper", overrides={"deeplens": None, "refine": False}))
    g = model.config.generation
    g.max_new_tokens, g.stop = tokens, ()  # exactly ``tokens`` per caption, as the peers
    return model


def _ours_run(model, image: np.ndarray, beams: int) -> Callable[[], object]:
    def run():
        model.config.generation.num_beams = beams
        return model.caption([image], refine=False)
    return run


def build_entries(image: np.ndarray, peers: Sequence[str], precisions: Sequence[str], tokens: int,
                  notes: dict) -> list[Entry]:
    """Every (model, precision, beams) entry; a peer that cannot be built goes to ``notes``."""
    entries = []
    base = _ours(tokens)
    for name in precisions:
        ours = base if name == "float32" else P.apply(copy.deepcopy(base), P.resolve(name, "cpu"))
        entries += [Entry("ours (paper glance)", name, b, _ours_run(ours, image, b)) for b in BEAMS]
    for peer in peers:
        try:
            model, inputs = PEERS[peer](image)
        except (ImportError, AttributeError, TypeError, ValueError) as err:  # class or config missing here
            notes[peer] = f"skipped: {type(err).__name__}: {str(err)[:160]}"
            continue
        for name in precisions:
            chosen, m, given = P.resolve(name, "cpu"), model, inputs
            if chosen.quantized:
                m = P.quantize_int8(copy.deepcopy(model))
            elif chosen.dtype != torch.float32:
                m = copy.deepcopy(model).to(chosen.dtype)
                given = {k: v.to(chosen.dtype) if v.is_floating_point() else v for k, v in inputs.items()}
            entries += [Entry(peer, name, b, _peer_run(m, given, b, tokens)) for b in BEAMS]
    return entries


def measure(rounds: int = 3, peers: Sequence[str] = tuple(PEERS), precisions: Sequence[str] = ("float32", "int8"),
            tokens: int = TOKENS, log=None) -> dict:
    """The peer table's measurements: per entry the median seconds of ``rounds``
    round-robin rounds after one warm-up round, and its times."""
    from sharpeye_ros.benchmark.measure import load_average, machine_info
    from sharpeye_ros.benchmark.worker import benchmark_images

    image = benchmark_images(1)[0]
    notes: dict = {}
    entries = build_entries(image, peers, precisions, tokens, notes)
    load = load_average()
    for r in range(rounds + 1):
        if log is not None:
            log(f"peers: round {r}/{rounds}")
        for e in entries:
            start = time.perf_counter()
            e.run()
            if r > 0:  # round 0 warms every entry up
                e.times.append(time.perf_counter() - start)
    return {"machine": machine_info("cpu").to_json(), "tokens": tokens, "rounds": rounds, "load_before": load, "load_after": load_average(), "notes": notes,
            "entries": [{"model": e.model, "precision": e.precision, "beams": e.beams, "seconds": e.median,
                         "times": e.times} for e in entries]}


def render(result: dict) -> list[str]:
    """The peer table: seconds per caption, greedy and 3 beams, per precision, and each
    entry against the paper glance in the same precision and beams."""
    rows = {(e["model"], e["precision"], e["beams"]): e["seconds"] for e in result["entries"]}
    models = list(dict.fromkeys(e["model"] for e in result["entries"]))
    precisions = list(dict.fromkeys(e["precision"] for e in result["entries"]))
    header = ["model"] + [f"{p}, {'greedy' if b == 1 else f'{b} beams'}" for p in precisions for b in BEAMS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    ours = "ours (paper glance)"
    for m in models:
        cells = [m]
        for p in precisions:
            for b in BEAMS:
                s = rows.get((m, p, b))
                ref = rows.get((ours, p, b))
                ratio = f" ({s / ref:.2f}x ours)" if s and ref and m != ours else ""
                cells.append("-" if s is None else f"{s:.2f} s{ratio}")
        lines.append("| " + " | ".join(cells) + " |")
    for peer, note in result.get("notes", {}).items():
        lines.append(f"\n{peer}: {note}")
    return lines


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m sharpeye_ros.benchmark.peers OUT.json [ROUNDS]``: measure and print the table."""
    import json
    from pathlib import Path

    args = list(sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(int(args[2]) if len(args) > 2 else torch.get_num_threads())
    result = measure(int(args[1]) if len(args) > 1 else 3, log=lambda t: print(t, file=sys.stderr, flush=True))
    Path(args[0]).write_text(json.dumps(result, indent=1) + "\n")
    print("\n".join(render(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
