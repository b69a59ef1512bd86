"""``sharpeye-evaluate``: score a model in three modes and write a report.

Modes (:mod:`~sharpeye_ros.evaluation.modes`): ``glance`` (the first look only),
``deeplens`` (refined by DeepLens, without zoom) and ``zoom`` (DeepLens with zoom crops of
the attended regions). For each: BLEU-4 and
CIDEr against the references; on the synthetic world also precision/recall/F1 of the
named (colour, shape) objects by size class and the grounding of the named objects
(pointing game and IoU of their attended region). A glance's regions are those it
published; a refined caption's regions come from its own words' attention over the
glance's patches (teacher-forced, as the node publishes them), so each caption is judged
on its own grounding.

    sharpeye-evaluate --model models/demo --data world:test:500:1 --output docs/evaluation

writes ``docs/evaluation.md``, ``docs/evaluation.json`` and ``docs/evaluation_examples.png``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import torch

from sharpeye_ros.evaluation import metrics
from sharpeye_ros.evaluation.modes import GLANCE, MODES, SWITCHES, ZOOM
from sharpeye_ros.evaluation.precision import check_precisions
from sharpeye_ros.model import CheckpointError, SharpEyes, default_model_path
from sharpeye_ros.data import open_dataset



@dataclass
class ModeOutput:
    """One mode's captions and regions (``(box, phrase)`` in source pixels) per sample."""

    captions: dict[int, str] = field(default_factory=dict)
    regions: dict[int, list[tuple[list[float], str]]] = field(default_factory=dict)


def _pairs(regions) -> list[tuple[list[float], str]]:
    return [([r.x_min, r.y_min, r.x_max, r.y_max], r.phrase) for r in regions]


@dataclass
class Truth:
    """References and ground-truth objects (None off the synthetic world) per sample."""

    references: dict[int, list[str]] = field(default_factory=dict)
    objects: dict[int, Optional[tuple]] = field(default_factory=dict)

    @property
    def has_objects(self) -> bool:
        return bool(self.objects) and all(o is not None for o in self.objects.values())


@torch.no_grad()
def caption_modes(model: SharpEyes, dataset, modes: Sequence[str] = MODES, batch_size: int = 16,
                  log=None) -> tuple[dict[str, ModeOutput], Truth]:
    """Captions and regions of every sample of ``dataset`` in each of ``modes``: one
    glance per batch, finished once per mode; and the samples' references and objects."""
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise ValueError(f"modes: unknown {unknown}; choose from {list(MODES)}")
    if model.deeplens is None and any(m != GLANCE for m in modes):
        raise ValueError("modes: this model has no DeepLens, so only 'glance' can be evaluated")
    out, truth = {m: ModeOutput() for m in modes}, Truth()
    refine = any(m != GLANCE for m in modes)
    num_regions = model.config.regions.num_regions
    began = time.perf_counter()
    for start in range(0, len(dataset), batch_size):
        samples = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        images = [s["image"] for s in samples]
        for s in samples:
            truth.references[s["index"]] = list(s["captions"])
            truth.objects[s["index"]] = s["objects"]
        glance = model.glance(images, num_regions=num_regions, refine=refine, zoom=ZOOM in modes)
        for mode in modes:
            for s, result in zip(samples, model.finish(images, glance, num_regions=num_regions, **SWITCHES[mode])):
                out[mode].captions[s["index"]] = result.caption
                out[mode].regions[s["index"]] = _pairs(result.regions)
        if log is not None:
            done = start + len(samples)
            log(f"captioned {done}/{len(dataset)} ({done / (time.perf_counter() - began):.1f} images/s)")
    return out, truth


def score_modes(outputs: dict[str, ModeOutput], truth: Truth, with_captions: bool = True) -> dict[str, dict[str, float]]:
    """Per mode: BLEU-4/CIDEr (when ``with_captions``) and, with ground-truth objects,
    object and grounding scores (percent, as :mod:`metrics` gives them)."""
    scores = {}
    for mode, out in outputs.items():
        row: dict[str, float] = {}
        if with_captions:
            row.update(metrics.caption_scores(truth.references, out.captions))
        if truth.has_objects:
            row.update(metrics.object_scores(out.captions, truth.objects))
            row.update(metrics.grounding_scores(out.captions, out.regions, truth.objects))
        scores[mode] = row
    return scores


def machine() -> dict[str, object]:
    """Where the evaluation ran."""
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__}


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="sharpeye-evaluate", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--model", type=Path, default=None, help="model directory (default: the shipped demo model)")
    p.add_argument("--data", default="world:test:500:1",
                   help="data spec: world:SPLIT:COUNT[:SEED], coco:JSON[:FOLDER], llava:JSON:FOLDER "
                        "(default world:test:500:1, a world seed no recipe trains on)")
    p.add_argument("--modes", default=",".join(MODES), help="comma-separated, from " + ", ".join(MODES))
    p.add_argument("--output", type=Path, required=True,
                   help="report path without extension: writes OUTPUT.md, OUTPUT.json, OUTPUT_examples.png")
    p.add_argument("--examples", type=int, default=6, help="example scenes in the figure (0: no figure)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--no-caption-metrics", action="store_true", help="skip BLEU/CIDEr (they need Java)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32",
                   help="precision to evaluate in: float32, float16, bfloat16, bfloat16-mixed, int8, int8-vision or auto "
                        "(default float32)")
    p.add_argument("--compare-dtypes", default="",
                   help="comma-separated precisions (e.g. int8,bfloat16) to evaluate again on the same scenes, "
                        "each score checked against two bootstrap standard errors of --dtype's")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--title", default="Evaluation", help="the report's heading")
    p.add_argument("--notes", default="", help="markdown appended under the heading (e.g. how the model was trained)")
    return p.parse_args(argv)


def recorded_command(argv: Sequence[str]) -> str:
    """The command line as run, with the ``--notes`` text shown as NOTES: the notes are
    in the report already, and may run to paragraphs. Abbreviations argparse takes
    (``--note``, ``--not``) and the ``--notes=...`` form count too."""
    out: list[str] = []
    value_next = False
    for arg in argv:
        key, eq, _ = arg.partition("=")
        if value_next:
            arg, value_next = "NOTES", False
        elif len(key) >= len("--not") and "--notes".startswith(key):
            if eq:
                arg = f"{key}=NOTES"
            else:
                value_next = True
        out.append(arg)
    return " ".join(["sharpeye-evaluate", *out])


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point (``sharpeye-evaluate``)."""
    from sharpeye_ros.evaluation.report import write_figure, write_report

    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model_dir = args.model or default_model_path()
    try:
        modes = [m for m in args.modes.split(",") if m]
        model = SharpEyes.from_pretrained(model_dir, device=args.device, dtype=args.dtype)
        dataset = open_dataset(args.data, workers=max(1, os.cpu_count() or 1))
        began = time.perf_counter()
        outputs, truth = caption_modes(model, dataset, modes, args.batch_size, log=lambda t: print(t, flush=True))
        seconds = time.perf_counter() - began
        scores = score_modes(outputs, truth, with_captions=not args.no_caption_metrics)
        compared = None
        if args.compare_dtypes:
            compared = check_precisions(model_dir, dataset, modes, args.batch_size,
                                        [d for d in args.compare_dtypes.split(",") if d], outputs, truth, scores,
                                        not args.no_caption_metrics, args.device, log=lambda t: print(t, flush=True))
            compared["reference"] = model.precision.describe()
    except (ValueError, CheckpointError) as error:
        print(f"sharpeye-evaluate: error: {error}", file=sys.stderr)
        return 2
    result = {
        "model": str(model_dir), "data": args.data, "samples": len(dataset), "modes": modes,
        "glance_size": model.vision.image_size,
        "command": recorded_command(sys.argv[1:] if argv is None else argv),
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(), "caption_seconds": round(seconds, 1), "scores": scores,
        "model_info": model_info(model, model_dir), "training": training_info(model_dir),
        "captions": {m: {str(k): v for k, v in o.captions.items()} for m, o in outputs.items()},
    }
    if compared is not None:
        result["precision"] = compared
    args.output.parent.mkdir(parents=True, exist_ok=True)
    figure = None
    if args.examples > 0 and truth.has_objects:
        figure = write_figure(Path(f"{args.output}_examples.png"), dataset, outputs, truth, args.examples)
    Path(f"{args.output}.json").write_text(json.dumps(result, indent=1) + "\n")
    write_report(Path(f"{args.output}.md"), result, figure, args.title, args.notes)
    print(f"wrote {args.output}.md and {args.output}.json" + (f" and {figure}" if figure else ""))
    return 0


def model_info(model: SharpEyes, model_dir: Path) -> dict:
    """Parameters per group and the model directory's size on disk (every file in it)."""
    files = [f for f in Path(model_dir).iterdir() if f.is_file()]
    return {"parameters": {g: sum(p.numel() for p in ps) for g, ps in model.parameter_groups().items()},
            "disk_bytes": sum(f.stat().st_size for f in files)}


def training_info(model_dir: Path) -> Optional[dict]:
    """What ``training.json`` (written by ``sharpeye-train``) says, or None without one."""
    path = Path(model_dir) / "training.json"
    try:
        info = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    config = info.get("config") or {}
    keep = ("name", "epochs", "steps", "batch_size", "lr", "trainable", "grounding_weight", "patch_weight",
            "word_weight", "glance_weight", "zoom", "zoom_grounding_weight", "zoom_word_weight", "max_changes",
            "misname_small")
    return {"command": info.get("command"), "started_utc": info.get("started_utc"),
            "wall_time_s": info.get("wall_time_s"), "machine": info.get("machine"),
            "processes": info.get("processes"), "resumed": info.get("resumed"), "seed": config.get("seed"),
            "train_data": config.get("train_data"),
            "stages": [{k: s.get(k) for k in keep} for s in config.get("stages", [])]}


if __name__ == "__main__":
    sys.exit(main())
