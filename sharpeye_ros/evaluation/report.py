"""The evaluation report: markdown table, the bars the demo model must meet, and a
figure of example scenes with both captions and their attended regions."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Optional

import numpy as np

from sharpeye_ros.evaluation.metrics import match_objects, markdown_table
from sharpeye_ros.evaluation.modes import GLANCE, TITLES, ZOOM
from sharpeye_ros.world import parse_objects

# The demo model's bars (percent), measured on a held-out world seed.
BAR_LARGE_F1_GLANCE = 90.0
BAR_SMALL_F1_GAIN = 10.0
BAR_POINTING = 80.0

COLUMNS = {
    "bleu4": "BLEU-4", "cider": "CIDEr", "f1_large": "F1 large", "f1_medium": "F1 medium",
    "f1_small": "F1 small", "f1_all": "F1 all", "precision_small": "P small", "recall_small": "R small",
    "pointing_all": "pointing", "iou_all": "IoU",
}


def bars(scores: dict[str, dict[str, float]]) -> list[tuple[str, float, str, bool]]:
    """(bar, measured value, target, met) for the demo bars; needs the glance and zoom modes.

    - large-object F1 at the glance >= 90;
    - small-object F1 refined with zoom >= the glance's + 10;
    - pointing game (all correctly named objects, glance regions: those the node
      publishes) >= 80.
    """
    if GLANCE not in scores or ZOOM not in scores or "f1_large" not in scores[GLANCE]:
        return []
    g, z = scores[GLANCE], scores[ZOOM]
    gain = z["f1_small"] - g["f1_small"]
    return [
        ("large-object F1 at the glance", g["f1_large"], f">= {BAR_LARGE_F1_GLANCE:g}",
         g["f1_large"] >= BAR_LARGE_F1_GLANCE),
        ("small-object F1 gain, refined + zoom over glance", gain, f">= +{BAR_SMALL_F1_GAIN:g}",
         gain >= BAR_SMALL_F1_GAIN),
        ("pointing game at the glance", g["pointing_all"], f">= {BAR_POINTING:g}", g["pointing_all"] >= BAR_POINTING),
    ]


def _fmt(value: float, signed: bool = False) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    return f"{value:+.1f}" if signed else f"{value:.1f}"


def write_report(path: Path, result: dict, figure: Optional[Path], title: str, notes: str = "") -> None:
    """``result`` (as ``sharpeye-evaluate`` builds it) as a markdown report at ``path``."""

    scores = result["scores"]
    rows = {TITLES[m]: {COLUMNS[k]: v for k, v in s.items() if k in COLUMNS} for m, s in scores.items()}
    columns = [c for k, c in COLUMNS.items() if any(k in s for s in scores.values())]
    first = next(iter(scores.values()))
    lines = [f"# {title}", ""]
    if notes:
        lines += [notes.strip(), ""]
    if "f1_all" in first and result.get("glance_size"):
        lines += [_about(result["glance_size"]), ""]
    lines += [f"- Model: `{result['model']}`"]
    info = result.get("model_info")
    if info:
        params = info["parameters"]
        lines[-1] += (f": {sum(params.values()) / 1e6:.2f} M parameters ("
                      + ", ".join(f"{g} {n / 1e6:.2f} M" for g, n in params.items()) + f"), "
                      f"{info['disk_bytes'] / 2 ** 20:.1f} MiB on disk")
    counts = ""
    if "objects_all" in first:
        counts = (f", {first['objects_all']:.0f} objects: {first['objects_large']:.0f} large, "
                  f"{first['objects_medium']:.0f} medium, {first['objects_small']:.0f} small")
    mach = result["machine"]
    lines += [f"- Data: `{result['data']}` ({result['samples']} images{counts})",
              f"- Evaluated {result['date_utc']} on {mach['platform']} ({mach['cpu_count']} CPUs, "
              f"torch {mach['torch']}); captioning took {result['caption_seconds']:.0f} s",
              f"- Command: `{result['command']}`", "",
              "## Scores (percent)", "",
              "F1/P/R: the (colour, shape) objects a caption names, matched to the scene's objects, "
              "by size class. Pointing: share of correctly named objects whose attended region holds "
              "the object's centre; IoU: their region's mean IoU with the object's box.", "",
              markdown_table(rows, columns)]
    checks = bars(scores)
    if checks:
        lines += ["## Bars", "", "| bar | measured | target | met |", "| --- | ---: | ---: | --- |"]
        lines += [f"| {name} | {_fmt(v, signed='gain' in name)} | {target} | {'yes' if ok else 'NO'} |"
                  for name, v, target, ok in checks]
        lines += [""]
    lines += _precision_lines(result.get("precision"))
    if figure is not None:
        lines += ["## Examples", "",
                  f"![example scenes]({figure.name})", "",
                  "Scenes where zoom corrected the most named objects (ties: lowest index). "
                  "Orange: the glance's regions; cyan: the regions of the refined + zoom caption; "
                  "thin white: ground-truth boxes.", ""]
    lines += _training_lines(result.get("training"))
    path.write_text("\n".join(lines))


def _precision_lines(precision: Optional[dict]) -> list[str]:
    """The CPU fast paths' fidelity bar: each precision's scores against the reference's."""
    if not precision or not precision.get("precisions"):
        return []
    k = precision["noise_se"]
    lines = ["## Precision", "",
             f"The same scenes in other precisions (reference: {precision['reference']}). A score is within "
             f"noise when it differs from the reference's by at most {k:g} standard errors of the reference "
             f"(bootstrap over scenes, {precision['resamples']} draws, every score recomputed).", "",
             "| precision | runs as | scores within noise | identical captions | demo bars met | "
             "largest difference (in standard errors) |", "| --- | --- | ---: | --- | --- | --- |"]
    for name, p in precision["precisions"].items():
        worst = max(p["rows"], key=lambda r: abs(r["diff"]) / max(r["bound"] / k, 1e-9)
                    if r["within"] is not None else -1, default=None)
        worst_text = "-" if worst is None else (
            f"{TITLES[worst['mode']]} {COLUMNS[worst['score']]}: {_fmt(worst['diff'], signed=True)} "
            f"({abs(worst['diff']) / max(worst['bound'] / k, 1e-9):.1f})")
        same = ", ".join(f"{TITLES[m]} {100 * v:.0f}%" for m, v in p["identical_captions"].items())
        met = sum(bool(b[3]) for b in p["bars"])
        lines.append(f"| {name} | {p['runs']} | {p['within'][0]} of {p['within'][1]} | {same} | "
                     f"{met} of {len(p['bars'])} | {worst_text} |")
    lines.append("")
    for name, p in precision["precisions"].items():
        rows = {TITLES[m]: {COLUMNS[c]: v for c, v in s.items() if c in COLUMNS} for m, s in p["scores"].items()}
        columns = [c for key, c in COLUMNS.items() if any(key in s for s in p["scores"].values())]
        lines += [f"Scores in {name}:", "", markdown_table(rows, columns)]
        outside = [r for r in p["rows"] if r["within"] is False]
        if outside:
            lines += ["Outside noise: " + "; ".join(
                f"{TITLES[r['mode']]} {COLUMNS[r['score']]} {_fmt(r['diff'], signed=True)} (bound {r['bound']:.1f})"
                for r in outside), ""]
    return lines


def _about(glance: int) -> str:
    """What the synthetic-world figures mean, with the object sizes this glance sees."""
    from sharpeye_ros.world import size_range

    def px(cls: str) -> str:
        low, high = size_range(cls, 640, 480)
        return f"{low:.0f}-{high:.0f} px, {low * glance / 640:.1f}-{high * glance / 640:.1f} px at the glance"

    return (
        "Scenes of the synthetic world (`sharpeye_ros.world`, 640x480) hold 1-3 coloured shapes on cluttered "
        f"backgrounds: large ({px('large')}), medium ({px('medium')}) and small ({px('small')}). "
        f"The glance sees the frame padded to a square and resized to {glance} px, where a small object's "
        "colour survives but its shape does not: visual blindness. Modes: **glance**, the first look; "
        "**refined, no zoom**, DeepLens rewrites the caption from the glance's multi-layer features; "
        "**refined + zoom**, DeepLens also sees crops of the glance's top attended regions, cut from the "
        "full-resolution frame and re-encoded.")


def _training_lines(training: Optional[dict]) -> list[str]:
    if not training or not training.get("command"):
        return []
    m = training.get("machine") or {}
    lines = ["## Training", "",
             f"`{training['command']}` ran {training['wall_time_s'] / 60:.1f} min (wall clock"
             + (", resumed" if training.get("resumed") else "") + f"), started {training.get('started_utc')} on "
             f"{m.get('processor')} with {m.get('cpu_count')} CPUs ({m.get('threads')} torch threads, torch "
             f"{m.get('torch')}, device {m.get('device')}); seed {training.get('seed')}, data "
             f"{', '.join(f'`{d}`' for d in training.get('train_data') or [])}.", "",
             "| stage | epochs | batch | lr | trains | auxiliary losses (weight), stage-2 inputs |",
             "| --- | ---: | ---: | ---: | --- | --- |"]
    for s in training.get("stages", []):
        aux = [f"{k.replace('_weight', '')} {s[k]:g}"
               for k in ("grounding_weight", "patch_weight", "word_weight", "glance_weight", "zoom_grounding_weight",
                         "zoom_word_weight") if s.get(k)]
        if s["name"] == "refine" and s.get("max_changes") is not None:
            aux.append(f"pseudo-initial captions: 0-{s['max_changes']} changes"
                       + (f", small shapes misnamed {s['misname_small']:g}" if s.get("misname_small") else ""))
        length = f"{s['steps']} steps" if s.get("steps") else f"{s.get('epochs'):g}"
        lines.append(f"| {s['name']}{' + zoom' if s.get('zoom') else ''} | {length} | {s.get('batch_size')} | "
                     f"{s['lr']:g} | {', '.join(s.get('trainable') or [])} | {', '.join(aux) or '-'} |")
    return lines + [""]


def _correct(caption: str, objects) -> int:
    return sum(m is not None for m in match_objects(parse_objects(caption), objects))


def write_figure(path: Path, dataset, outputs: dict, truth, count: int) -> Path:
    """A grid of ``count`` scenes: glance and refined + zoom captions and regions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    final = ZOOM if ZOOM in outputs else list(outputs)[-1]
    glance = outputs[GLANCE]
    gain = {i: _correct(outputs[final].captions[i], truth.objects[i]) - _correct(glance.captions[i], truth.objects[i])
            for i in glance.captions}
    chosen = sorted(gain, key=lambda i: (-gain[i], i))[:count]
    cols = min(3, len(chosen))
    rows = math.ceil(len(chosen) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 5.0 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, chosen):
        ax.imshow(np.asarray(dataset[i]["image"]))
        for obj in truth.objects[i]:
            x0, y0, x1, y1 = obj.box
            ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, lw=0.8, ec="white"))
        for mode, colour in ((GLANCE, "orange"), (final, "cyan")):
            for box, phrase in outputs[mode].regions[i]:
                ax.add_patch(plt.Rectangle((box[0], box[1]), box[2] - box[0], box[3] - box[1],
                                           fill=False, lw=1.6, ec=colour, ls="-" if mode == GLANCE else "--"))
                ax.text(box[0] + 2, box[1] + (12 if mode == GLANCE else 26), phrase, color=colour, fontsize=6.5,
                        bbox=dict(facecolor="black", alpha=0.5, pad=0.5, lw=0))
        text = (textwrap.fill("glance: " + glance.captions[i], 62) + "\n"
                + textwrap.fill("zoom: " + outputs[final].captions[i], 62))
        ax.set_title(text, fontsize=7.5, loc="left")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
