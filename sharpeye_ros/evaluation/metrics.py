"""Caption metrics: BLEU-4 and CIDEr, object naming by size class, and grounding.

All functions are pure and return plain ``dict[str, float]``; scores are percentages
(0-100, as papers report BLEU and CIDEr). A score with nothing to measure (no objects of
a size class, say) is NaN and prints as ``n/a`` in :func:`markdown_table`.

Object naming, on the synthetic world
-------------------------------------
A caption names the (colour, shape) objects :func:`~sharpeye_ros.world.parse_objects`
finds. Named objects are matched one to one with ground-truth objects of the same
(colour, shape) (multiset matching; among equal candidates the largest first).

- recall[c]: matched ground-truth objects of size class c / ground-truth objects of c.
- precision[c]: a matched named object counts for the class of its ground-truth object.
  An unmatched one (a false positive) is blamed on the object the caption most likely
  meant to name: an unmatched ground-truth object with the same shape, else one with the
  same colour (a wrong colour or shape), else any object with the same shape, then
  colour; it counts for that object's class. A pure hallucination, sharing neither,
  counts in "all" only.
- "all" pools every object; f1 = 2PR / (P + R) = 2TP / (named + ground truth), so it
  is 0 when a class was present but never named. Counts are summed over the dataset
  before dividing (micro average).

Grounding
---------
For every correctly named object, its region is the first region whose phrase names the
same (colour, shape). pointing[c]: share of correctly named objects of class c whose
region contains the object's centre (no region is a miss); iou[c]: their mean IoU
between region and ground-truth box (no region scores 0).
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Hashable, Mapping, Optional, Sequence, Union

from sharpeye_ros.model.regions import box_iou
from sharpeye_ros.world.captions import SIZE_CLASSES, parse_objects
from sharpeye_ros.world.scene import WorldObject

Box = Sequence[float]  # x_min, y_min, x_max, y_max in source pixels
Region = tuple[Box, str]  # a box and the phrase it grounds
GROUPS = SIZE_CLASSES + ("all",)


def _check_keys(name: str, expected: Mapping, got: Mapping) -> None:
    if set(expected) != set(got):
        missing, extra = set(expected) - set(got), set(got) - set(expected)
        raise ValueError(f"{name}: ids differ from the references' ids "
                         f"(missing {sorted(map(str, missing))[:5]}, extra {sorted(map(str, extra))[:5]})")


def _ptb_tokenize(captions: list[str]) -> list[str]:
    """Lowercase PTB tokens without punctuation, as pycocoevalcap's PTBTokenizer does.

    One Java call for all captions. The jar comes from pycocoevalcap; the input goes to a
    private temporary file, because PTBTokenizer writes next to its jar, which may be read-only.
    """
    from pycocoevalcap.tokenizer import ptbtokenizer

    todo = sorted({c for c in captions if c not in _TOKENS})
    if todo:
        _TOKENS.update(zip(todo, _ptb_run(todo, ptbtokenizer)))
    return [_TOKENS[c] for c in captions]


# Each text's PTB tokens, once per process: the bootstrap of the scores' standard errors
# (evaluation.precision) rescores the same captions a hundred times.
_TOKENS: dict[str, str] = {}


def _ptb_run(captions: list[str], ptbtokenizer) -> list[str]:
    if shutil.which("java") is None:
        raise RuntimeError("BLEU/CIDEr need Java for the PTB tokenizer; install a Java runtime "
                           "(e.g. apt-get install default-jre-headless)")
    jar = Path(ptbtokenizer.__file__).with_name(ptbtokenizer.STANFORD_CORENLP_3_4_1_JAR)
    # An empty line would vanish at the end of the output; "." tokenises to nothing.
    lines = [" ".join(c.split()) or "." for c in captions]
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "captions.txt")
        with open(path, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        result = subprocess.run(
            ["java", "-cp", str(jar), "edu.stanford.nlp.process.PTBTokenizer",
             "-preserveLines", "-lowerCase", path], capture_output=True, text=True, check=False)
    out = result.stdout.split("\n")[:len(lines)]
    if result.returncode != 0 or len(out) != len(lines):
        raise RuntimeError(f"PTB tokenizer failed (exit {result.returncode}): {result.stderr[-500:]}")
    return [" ".join(w for w in line.split() if w not in ptbtokenizer.PUNCTUATIONS) for line in out]


def caption_scores(references: Mapping[Hashable, Sequence[str]],
                   hypotheses: Mapping[Hashable, Union[str, Sequence[str]]]) -> dict[str, float]:
    """Corpus BLEU-4 and CIDEr (pycocoevalcap, PTB-tokenised) of one caption per id.

    ``references`` maps an id to its reference captions, ``hypotheses`` the same ids to
    a caption (or a one-caption list, COCO-result style). Returns
    ``{"bleu4": ..., "cider": ...}`` in percent.
    """
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider

    _check_keys("caption_scores hypotheses", references, hypotheses)
    if not references:
        raise ValueError("caption_scores: no captions to score")
    ids = list(references)
    texts, owners = [], []
    for key in ids:
        hyp = hypotheses[key]
        hyp = [hyp] if isinstance(hyp, str) else list(hyp)
        refs = list(references[key])
        if len(hyp) != 1 or not refs:
            raise ValueError(f"caption_scores: id {key!r} needs exactly one hypothesis and at "
                             f"least one reference, got {len(hyp)} and {len(refs)}")
        texts += hyp + refs
        owners += [(key, "hyp")] + [(key, "ref")] * len(refs)
    gts: dict = defaultdict(list)
    res: dict = defaultdict(list)
    for (key, role), tokens in zip(owners, _ptb_tokenize(texts)):
        (res if role == "hyp" else gts)[key].append(tokens)
    # Integer ids keep the scorers' dict order aligned; only the corpus score is kept.
    gts_i = {i: gts[key] for i, key in enumerate(ids)}
    res_i = {i: res[key] for i, key in enumerate(ids)}
    bleu, _ = Bleu(4).compute_score(gts_i, res_i, verbose=0)
    cider, _ = Cider().compute_score(gts_i, res_i)
    return {"bleu4": 100.0 * float(bleu[3]), "cider": 100.0 * float(cider)}


def match_objects(named: Sequence[tuple[Optional[str], str]],
                  objects: Sequence[WorldObject]) -> list[Optional[int]]:
    """For each named (colour, shape), the index of the ground-truth object it matches, or None."""
    order = sorted(range(len(objects)), key=lambda i: -objects[i].size)
    taken: set[int] = set()
    matches: list[Optional[int]] = []
    for colour, shape in named:
        hit = next((i for i in order if i not in taken and objects[i].colour == colour
                    and objects[i].shape == shape), None)
        if hit is not None:
            taken.add(hit)
        matches.append(hit)
    return matches


def _blame(colour: Optional[str], shape: str, objects: Sequence[WorldObject],
           matched: set[int]) -> Optional[str]:
    """Size class a false positive counts for (see the module docstring)."""
    for pool in ([i for i in range(len(objects)) if i not in matched], range(len(objects))):
        for same in (lambda o: o.shape == shape, lambda o: o.colour == colour):
            candidates = [i for i in pool if same(objects[i])]
            if candidates:
                return objects[max(candidates, key=lambda i: objects[i].size)].size_class
    return None


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else math.nan


def object_scores(captions: Mapping[Hashable, str],
                  objects: Mapping[Hashable, Sequence[WorldObject]]) -> dict[str, float]:
    """Precision, recall and F1 (percent) of named objects per size class and overall.

    Keys: ``precision_<group>``, ``recall_<group>``, ``f1_<group>`` and ``objects_<group>``
    (ground-truth count), for group in large, medium, small, all.
    """
    _check_keys("object_scores captions", objects, captions)
    true_pos, named_n, gt_n = defaultdict(int), defaultdict(int), defaultdict(int)
    for key, caption in captions.items():
        gt = objects[key]
        named = parse_objects(caption)
        matches = match_objects(named, gt)
        matched = {m for m in matches if m is not None}
        for obj in gt:
            gt_n[obj.size_class] += 1
            gt_n["all"] += 1
        for (colour, shape), m in zip(named, matches):
            group = gt[m].size_class if m is not None else _blame(colour, shape, gt, matched)
            named_n["all"] += 1
            true_pos["all"] += m is not None
            if group is not None:
                named_n[group] += 1
                true_pos[group] += m is not None
    scores = {}
    for group in GROUPS:
        # true_pos counts matched named objects, which equal matched ground-truth ones.
        p, r = _ratio(true_pos[group], named_n[group]), _ratio(true_pos[group], gt_n[group])
        scores[f"precision_{group}"] = 100.0 * p
        scores[f"recall_{group}"] = 100.0 * r
        # 2TP / (named + ground truth): the harmonic mean of P and R, and 0 (not n/a)
        # when nothing of the class was named although it was there.
        scores[f"f1_{group}"] = 100.0 * _ratio(2 * true_pos[group], named_n[group] + gt_n[group])
        scores[f"objects_{group}"] = float(gt_n[group])
    return scores


def grounding_scores(captions: Mapping[Hashable, str],
                     regions: Mapping[Hashable, Sequence[Region]],
                     objects: Mapping[Hashable, Sequence[WorldObject]]) -> dict[str, float]:
    """Pointing accuracy and mean IoU (percent) of correctly named objects' regions.

    ``regions`` maps an id to ``(box, phrase)`` pairs. Keys: ``pointing_<group>``,
    ``iou_<group>`` and ``named_<group>`` (correctly named objects), for group in large,
    medium, small, all.
    """
    _check_keys("grounding_scores captions", objects, captions)
    _check_keys("grounding_scores regions", objects, regions)
    hits, iou_sum, count = defaultdict(int), defaultdict(float), defaultdict(int)
    for key, caption in captions.items():
        gt = objects[key]
        parsed = [(box, parse_objects(phrase)) for box, phrase in regions[key]]
        for m in match_objects(parse_objects(caption), gt):
            if m is None:
                continue
            obj = gt[m]
            box = next((b for b, names in parsed if (obj.colour, obj.shape) in names), None)
            for group in (obj.size_class, "all"):
                count[group] += 1
                if box is not None:
                    cx, cy = obj.centre
                    hits[group] += box[0] <= cx <= box[2] and box[1] <= cy <= box[3]
                    iou_sum[group] += box_iou(box, obj.box)
    scores = {}
    for group in GROUPS:
        scores[f"pointing_{group}"] = 100.0 * _ratio(hits[group], count[group])
        scores[f"iou_{group}"] = 100.0 * _ratio(iou_sum[group], count[group])
        scores[f"named_{group}"] = float(count[group])
    return scores


def markdown_table(rows: Mapping[str, Mapping[str, float]], columns: Optional[Sequence[str]] = None,
                   digits: int = 1) -> str:
    """A markdown table, one row per entry of ``rows`` (e.g. per model), NaN as ``n/a``."""
    if not rows:
        raise ValueError("markdown_table: no rows")
    columns = list(columns or next(iter(rows.values())))

    def cell(value: Optional[float]) -> str:
        if value is None or math.isnan(value):
            return "n/a"
        return f"{value:.{digits}f}"

    lines = ["| | " + " | ".join(columns) + " |", "| --- |" + " ---: |" * len(columns)]
    lines += [f"| {name} | " + " | ".join(cell(values.get(c)) for c in columns) + " |"
              for name, values in rows.items()]
    return "\n".join(lines) + "\n"
