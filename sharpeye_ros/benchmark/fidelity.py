"""Fidelity of the CPU fast paths at paper size: each precision against float32, on the
same model (random weights: the only paper-size weights here) and the same images.

Two measures per image: the cosine similarity of the vision features (the tower's
patch features, mean over patches) and the agreement of the LM's top-1 token at every
position of the glance prompt (the token the model would write next there). Bars: top-1
agreement >= :data:`MIN_TOP1` over all positions of all images, vision cosine >=
:data:`MIN_COSINE` on every image.

A weak proxy: random weights lack the activation outliers of trained CLIP and OPT, which
usually hurt int8 most. The demo model's evaluation scores (docs/evaluation.md,
"Precision") are the trained check.

With ``--groups``, also int8 on one group of layers at a time (the rest float32), to find
which layers cost the fidelity: :data:`GROUPS`.

``python -m sharpeye_ros.benchmark.fidelity OUT.json [--preset paper] [--images 20] [--precisions bfloat16-mixed,int8-vision,int8,bfloat16] [--groups]``
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from sharpeye_ros.model import SharpEyes, presets
from sharpeye_ros.model import precision as P

IMAGES = 20  # half uniform noise, half synthetic scenes


def _decoder_layers(model: SharpEyes, names: Sequence[str]) -> list[torch.nn.Module]:
    layers = model.lm.model.model.decoder.layers
    return [getattr(layer if not n.startswith("self_attn.") else layer.self_attn, n.split(".")[-1])
            for layer in layers for n in names]


# int8 on one group at a time (each a function of the model: the modules whose Linear
# layers are quantized). The LM's value/output projections and fc1/fc2 write into the
# residual stream; q/k only shape the attention weights.
GROUPS = {
    "vision tower": lambda m: [m.vision],
    "connector": lambda m: [m.connector],
    "LM q/k projections": lambda m: _decoder_layers(m, ("self_attn.q_proj", "self_attn.k_proj")),
    "LM v/out projections": lambda m: _decoder_layers(m, ("self_attn.v_proj", "self_attn.out_proj")),
    "LM fc1/fc2": lambda m: _decoder_layers(m, ("fc1", "fc2")),
}
MIN_TOP1 = 0.98
MIN_COSINE = 0.999


def fidelity_images(count: int = IMAGES, size: tuple[int, int] = (640, 480)) -> list[np.ndarray]:
    """``count`` images of ``size`` (width, height): the first half uniform noise, the rest
    synthetic scenes of the world's validation split."""
    from sharpeye_ros.world import SceneConfig, generate_scene

    rng = np.random.default_rng(0)
    noise = [rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8) for _ in range(count // 2)]
    config = SceneConfig(width=size[0], height=size[1])
    return noise + [generate_scene("val", i, config).image for i in range(count - count // 2)]


@torch.no_grad()
def prompt_top1(model: SharpEyes, image: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(the vision features (patches, width) in float32, the LM's top-1 token at every
    position of the glance prompt) of ``model`` on ``image``."""
    pixels, _ = model.preprocess([image])
    encoded = model.encode(pixels)
    prompt = model.lm.build_prompt(model.config.lm.prompt, encoded.embeds)
    hidden = model.lm(prompt.embeds, prompt.attention_mask, prompt.position_ids)
    # The head as a decode step runs it (a few rows at a time: a converted model's
    # ShortlistHead drafts its logits then).
    logits = torch.cat([model.lm.logits(rows) for rows in hidden[0].split(P.FEW_ROWS)])
    return encoded.patches[0].float(), logits.argmax(-1)


def compare(reference: Sequence[tuple[torch.Tensor, torch.Tensor]],
            measured: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> dict:
    """Agreement of ``measured`` with ``reference`` (both from :func:`prompt_top1`, per image):
    the top-1 share over all positions, its minimum per image, each image's vision cosine,
    and whether the bars hold."""
    agree = [(m[1] == r[1]).float() for r, m in zip(reference, measured)]
    cosines = [float(torch.nn.functional.cosine_similarity(m[0], r[0], dim=-1).mean())
               for r, m in zip(reference, measured)]
    top1 = float(torch.cat(agree).mean())
    return {"top1": top1, "top1_min_image": float(min(a.mean() for a in agree)),
            "positions": int(sum(a.numel() for a in agree)), "images": len(agree),
            "cosine_min": min(cosines), "cosine_mean": float(np.mean(cosines)),
            "passes": top1 >= MIN_TOP1 and min(cosines) >= MIN_COSINE}


def measure(model: SharpEyes, images: Sequence[np.ndarray], precisions: Sequence[str]) -> dict:
    """:func:`compare` of each of ``precisions`` (on the CPU) against ``model`` in float32.
    ``model`` itself is left in float32."""
    model = model.float().eval()
    reference = [prompt_top1(model, im) for im in images]
    out = {}
    for name in precisions:
        chosen = P.resolve(name, "cpu")
        other = P.apply(copy.deepcopy(model), chosen)
        out[name] = {"runs": chosen.describe(), "int8_layers": P.int8_layers(other),
                     **compare(reference, [prompt_top1(other, im) for im in images])}
        del other
    return out


def measure_groups(model: SharpEyes, images: Sequence[np.ndarray]) -> dict:
    """:func:`compare` against float32 of int8 on each of :data:`GROUPS` alone."""
    model = model.float().eval()
    reference = [prompt_top1(model, im) for im in images]
    out = {}
    for name, select in GROUPS.items():
        other = copy.deepcopy(model)
        for part in select(other):
            if isinstance(part, torch.nn.Linear):  # a layer itself: replace it in its parent
                _replace(other, part)
            else:
                P.quantize_int8(part)
        out[name] = {"int8_layers": P.int8_layers(other), **compare(reference, [prompt_top1(other, im) for im in images])}
        del other
    return out


def _replace(model: torch.nn.Module, linear: torch.nn.Linear) -> None:
    for parent in model.modules():
        for attr, child in parent.named_children():
            if child is linear:
                setattr(parent, attr, P.Int8Linear(linear))
                return


def render(result: dict) -> list[str]:
    """The fidelity table's markdown lines."""
    lines = [f"| precision | top-1 agreement (all {next(iter(result['precisions'].values()))['positions']} "
             f"positions) | lowest per image | vision cosine, lowest | bars (>= {100 * MIN_TOP1:g}%, "
             f">= {MIN_COSINE:g}) |", "|---|---|---|---|---|"]
    for name, r in result["precisions"].items():
        lines.append(f"| {name} | {100 * r['top1']:.1f}% | {100 * r['top1_min_image']:.1f}% | "
                     f"{r['cosine_min']:.5f} | {'pass' if r['passes'] else 'FAIL'} |")
    if result.get("groups"):
        lines += ["", "int8 on one group of layers at a time, the rest float32 (same images):", "",
                  "| int8 group | Linear layers | top-1 agreement | lowest per image | vision cosine, lowest |",
                  "|---|---|---|---|---|"]
        for name, r in result["groups"].items():
            lines.append(f"| {name} | {r['int8_layers']} | {100 * r['top1']:.1f}% | {100 * r['top1_min_image']:.1f}% | "
                         f"{r['cosine_min']:.5f} |")
    return lines


def main(argv: Optional[Sequence[str]] = None) -> int:
    from sharpeye_ros.benchmark.measure import machine_info

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="results JSON")
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--images", type=int, default=IMAGES)
    parser.add_argument("--precisions", default="bfloat16-mixed,int8-vision,int8,bfloat16")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--groups", action="store_true", help="also int8 on one group of layers at a time")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = SharpEyes.from_config(getattr(presets, args.preset)().override({"deeplens": None, "refine": False}))
    images = fidelity_images(args.images)
    result = {"machine": machine_info("cpu").to_json(), "preset": args.preset,
              "precisions": measure(model, images, args.precisions.split(","))}
    if args.groups:
        result["groups"] = measure_groups(model, images)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print("\n".join(render(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
