"""Is a precision's evaluation within noise of float32's? The fidelity bar of the CPU fast
paths (int8, bfloat16): every score of every mode within two standard errors of the
float32 evaluation on the same scenes, and the demo model's bars still met.

The standard error of each score is a bootstrap over scenes (resampled with replacement,
every score recomputed on each draw, corpus BLEU and CIDEr included), so it is the noise
that the choice of scenes puts on the float32 figure itself.
"""

from __future__ import annotations

import math
from typing import Mapping, Optional

import numpy as np

from sharpeye_ros.evaluation.report import COLUMNS

NOISE_SE = 2.0  # a precision's score may differ from float32's by this many standard errors
RESAMPLES = 100


def standard_errors(outputs: Mapping, truth, resamples: int = RESAMPLES, seed: int = 0,
                    with_captions: bool = True) -> dict[str, dict[str, float]]:
    """Bootstrap standard error of every score of every mode of ``outputs`` (as
    :func:`~sharpeye_ros.evaluation.evaluate.caption_modes` returns them)."""
    from sharpeye_ros.evaluation.evaluate import ModeOutput, Truth, score_modes

    ids = sorted(truth.references)
    rng = np.random.default_rng(seed)
    draws: list[dict[str, dict[str, float]]] = []
    for _ in range(resamples):
        pick = rng.choice(len(ids), len(ids)).tolist()
        keys = range(len(pick))  # a scene drawn twice gets two keys
        chosen = [ids[j] for j in pick]
        sub = {m: ModeOutput({k: o.captions[i] for k, i in zip(keys, chosen)},
                             {k: o.regions[i] for k, i in zip(keys, chosen)}) for m, o in outputs.items()}
        sub_truth = Truth({k: truth.references[i] for k, i in zip(keys, chosen)},
                          {k: truth.objects.get(i) for k, i in zip(keys, chosen)})
        draws.append(score_modes(sub, sub_truth, with_captions))
    return {m: {c: _nanstd([d[m].get(c, math.nan) for d in draws]) for c in draws[0][m]} for m in outputs}


def _nanstd(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.std(finite, ddof=1)) if len(finite) > 1 else math.nan


def compare(reference: Mapping[str, Mapping[str, float]], errors: Mapping[str, Mapping[str, float]],
            scores: Mapping[str, Mapping[str, float]], k: float = NOISE_SE) -> list[dict]:
    """One row per (mode, score) of the report's columns: the float32 score, this
    precision's, the difference, ``k`` standard errors and whether it is within them."""
    rows = []
    for mode, ref in reference.items():
        for column in COLUMNS:
            if column not in ref or column not in scores.get(mode, {}):
                continue
            a, b, se = ref[column], scores[mode][column], errors.get(mode, {}).get(column, math.nan)
            diff = b - a
            within: Optional[bool]
            if math.isnan(a) and math.isnan(b):
                within = True
            elif math.isnan(diff) or math.isnan(se):
                within = None
            else:
                within = abs(diff) <= k * se
            rows.append({"mode": mode, "score": column, "float32": a, "value": b, "diff": diff,
                         "bound": k * se, "within": within})
    return rows


def summary(rows: list[dict]) -> tuple[int, int]:
    """(scores within noise, scores compared)."""
    return sum(r["within"] is True for r in rows), len(rows)


def check_precisions(model_dir, dataset, modes, batch_size: int, precisions, reference_outputs: Mapping,
                     truth, reference_scores: Mapping, with_captions: bool = True, device: str = "cpu",
                     resamples: int = RESAMPLES, log=None) -> dict:
    """Evaluate ``model_dir`` again in each of ``precisions`` on the same scenes and compare
    every score with the reference evaluation's (``reference_outputs`` / ``reference_scores``):
    the ``precision`` entry of the evaluation's results."""
    from sharpeye_ros.evaluation.evaluate import caption_modes, score_modes
    from sharpeye_ros.evaluation.report import bars
    from sharpeye_ros.model import SharpEyes

    errors = standard_errors(reference_outputs, truth, resamples, with_captions=with_captions)
    out: dict = {"noise_se": NOISE_SE, "resamples": resamples, "standard_errors": errors, "precisions": {}}
    for name in precisions:
        if log is not None:
            log(f"precision {name}")
        model = SharpEyes.from_pretrained(model_dir, device=device, dtype=name)
        outputs, _ = caption_modes(model, dataset, modes, batch_size)
        scores = score_modes(outputs, truth, with_captions)
        rows = compare(reference_scores, errors, scores)
        same = {m: float(np.mean([outputs[m].captions[i] == reference_outputs[m].captions[i]
                                  for i in reference_outputs[m].captions])) for m in modes}
        out["precisions"][name] = {
            "runs": model.precision.describe(), "scores": scores, "rows": rows,
            "within": list(summary(rows)), "identical_captions": same,
            "bars": [[bar, value, target, met] for bar, value, target, met in bars(scores)],
        }
    return out
