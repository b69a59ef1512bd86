"""Pseudo-initial captions for DeepLens (stage 2) training.

The paper trains refinement on ground-truth captions with 0-3 elements perturbed, not on
the model's own first-pass captions (with those, the model learned to ignore its input).
Elements are entities (nouns), attributes (colour, size), relations (spatial phrases),
actions (verbs) and counts (``a dog`` -> ``two dogs``). Swaps are rule based and only
within a group of like words, so the result stays fluent; a caption with fewer
perturbable elements than asked for simply gets fewer changes. (The paper has an LLM make
3 per caption; such captions, made elsewhere, are read from a JSON Lines file, see
:func:`~sharpeye_ros.data.read_pseudo_captions`; :class:`PseudoCaptionPairs` pairs them with
their references.) This module writes that file with rule-based captions, e.g. as a
template for an LLM's::

    python -m sharpeye_ros.training.perturb coco:captions_train2017.json pseudo.jsonl --per-caption 3
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence

import numpy as np
from torch.utils.data import Dataset

from sharpeye_ros.data import open_dataset, references
from sharpeye_ros.world.captions import (
    COLOURS, POSITION_PHRASES, SHAPE_PLURALS, SHAPES, SIZE_CLASSES, SIZE_SYNONYMS, token_spans,
    vocabulary,
)

KINDS = ("entity", "attribute", "relation", "action", "count")


@dataclass(frozen=True)
class SwapVocabulary:
    """What may be swapped: per kind, groups of interchangeable (possibly multi-word) phrases.

    ``plurals`` maps every entity to its plural (plural entities are swapped too);
    ``numbers`` are the count words besides ``a``/``an``; ``synonyms`` maps a phrase to
    the phrase whose meaning it shares, so a swap never just picks a synonym.
    """

    groups: Mapping[str, tuple[tuple[str, ...], ...]]
    plurals: Mapping[str, str]
    numbers: tuple[str, ...]
    synonyms: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Change:
    """One perturbed element: ``caption[start:end]`` was ``old`` and became ``new``."""

    kind: str  # one of KINDS
    old: str
    new: str
    start: int
    end: int


@dataclass(frozen=True)
class Perturbation:
    """A perturbed caption and its changes, ordered by position."""

    caption: str
    changes: tuple[Change, ...]


def _plural(noun: str) -> str:
    irregular = {"man": "men", "woman": "women", "person": "people", "child": "children",
                 "sheep": "sheep", "mouse": "mice"}
    if noun in irregular:
        return irregular[noun]
    if noun.endswith(("s", "x", "ch", "sh")):
        return noun + "es"
    if noun.endswith("y") and noun[-2] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + "s"


SYNTHETIC = SwapVocabulary(
    groups={"entity": (SHAPES,),
            "attribute": (COLOURS, SIZE_CLASSES + tuple(SIZE_SYNONYMS)),
            "relation": (tuple(POSITION_PHRASES.values()),)},
    plurals=SHAPE_PLURALS, numbers=("two", "three"), synonyms=SIZE_SYNONYMS)

# A modest list for COCO-style English; swaps stay within a group (animal for animal).
_GENERIC_ENTITIES = (
    ("man", "woman", "boy", "girl", "person", "child", "player"),
    ("dog", "cat", "horse", "cow", "sheep", "bird", "elephant", "giraffe", "zebra", "bear"),
    ("car", "bus", "truck", "train", "motorcycle", "bicycle", "boat", "airplane"),
    ("pizza", "sandwich", "cake", "banana", "apple", "donut"),
    ("table", "chair", "couch", "bed", "bench", "desk"),
    ("umbrella", "kite", "frisbee", "ball", "laptop", "phone", "clock", "bag", "surfboard",
     "skateboard"),
    ("street", "beach", "field", "park", "kitchen", "room", "road"),
)
GENERIC_ENGLISH = SwapVocabulary(
    groups={
        "entity": _GENERIC_ENTITIES,
        "attribute": (("red", "blue", "green", "yellow", "white", "black", "brown", "pink",
                       "purple", "gray", "grey"),
                      ("large", "small", "big", "little", "tall")),
        "relation": (("on", "under", "next to", "behind", "in front of", "near", "above",
                      "below", "beside", "on top of", "inside"),),
        "action": (("riding", "holding", "eating", "sitting", "standing", "walking", "playing",
                    "flying", "carrying", "looking", "running", "lying"),),
    },
    plurals={noun: _plural(noun) for group in _GENERIC_ENTITIES for noun in group},
    numbers=("two", "three", "four", "five"),
    synonyms={"grey": "gray", "big": "large", "little": "small", "beside": "next to"})

_ARTICLES = ("a", "an")
_MAX_LOOKAHEAD = 4  # tokens between a count word and its noun ("a large red circle")


@dataclass(frozen=True)
class _Element:
    kind: str
    first: int  # token range [first, last]
    last: int
    options: tuple[str, ...]  # replacements for the whole element (count) or its phrase


def _elements(tokens: list[str], vocab: SwapVocabulary) -> list[_Element]:
    """Every perturbable element of a tokenised caption, with its replacement options."""
    def meaning(phrase: str) -> str:
        return vocab.synonyms.get(phrase, phrase)

    singular = {plural: noun for noun, plural in vocab.plurals.items()}
    phrases: dict[tuple[str, ...], tuple[str, tuple[str, ...]]] = {}
    for kind, groups in vocab.groups.items():
        for group in groups:
            for phrase in group:
                others = tuple(p for p in group if meaning(p) != meaning(phrase))
                phrases[tuple(phrase.split())] = (kind, others)
                if kind == "entity":
                    phrases[(vocab.plurals[phrase],)] = (kind, tuple(vocab.plurals[p] for p in others))
    longest = max(len(p) for p in phrases)
    found = []
    i = 0
    while i < len(tokens):
        for length in range(min(longest, len(tokens) - i), 0, -1):
            hit = phrases.get(tuple(tokens[i:i + length]))
            if hit:
                found.append(_Element(hit[0], i, i + length - 1, hit[1]))
                i += length
                break
        else:
            i += 1
    # Counts: a count word agreeing with an entity noun a few tokens on.
    counts = _ARTICLES + vocab.numbers
    for i, token in enumerate(tokens):
        if token not in counts:
            continue
        for j in range(i + 1, min(i + 1 + _MAX_LOOKAHEAD, len(tokens))):
            if not tokens[j].isalpha() or tokens[j] in counts:
                break
            is_singular, is_plural = tokens[j] in vocab.plurals, tokens[j] in singular
            if is_singular or is_plural:
                if is_singular == (token in _ARTICLES):
                    current = "a" if token == "an" else token
                    options = tuple(n for n in ("a",) + vocab.numbers if n != current)
                    found.append(_Element("count", i, j, options))
                break
    return found


def _max_disjoint(elements: list[_Element]) -> int:
    """Most pairwise non-overlapping elements (interval scheduling, earliest end first)."""
    count, end = 0, -1
    for e in sorted(elements, key=lambda e: e.last):
        if e.first > end:
            count, end = count + 1, e.last
    return count


def _overlaps(a: _Element, b: _Element) -> bool:
    return a.first <= b.last and b.first <= a.last


def _match_case(old: str, new: str) -> str:
    return new[:1].upper() + new[1:] if old[:1].isupper() else new


def perturb_caption(caption: str, rng: np.random.Generator, num_changes: Optional[int] = None,
                    vocab: Optional[SwapVocabulary] = None) -> Perturbation:
    """Perturb ``num_changes`` elements of ``caption`` (drawn from 0-3 when None).

    ``vocab`` defaults to :data:`SYNTHETIC` for captions made only of synthetic-world
    words and to :data:`GENERIC_ENGLISH` otherwise. Fewer elements change when the
    caption has fewer non-overlapping perturbable elements; text outside the changed
    spans is kept byte for byte, and zero changes return ``caption`` itself.
    """
    if num_changes is None:
        num_changes = int(rng.integers(0, 4))
    if num_changes < 0:
        raise ValueError(f"perturb_caption: num_changes must be >= 0, got {num_changes}")
    spans = token_spans(caption)
    tokens = [t for t, _, _ in spans]
    if vocab is None:
        vocab = SYNTHETIC if set(tokens) <= set(vocabulary()) else GENERIC_ENGLISH
    available = _elements(tokens, vocab)
    target = min(num_changes, _max_disjoint(available))
    chosen: list[_Element] = []
    while len(chosen) < target:
        # Only picks that still leave room for the remaining changes; kinds equally likely.
        need = target - len(chosen) - 1
        feasible = [e for e in available
                    if _max_disjoint([o for o in available if not _overlaps(o, e)]) >= need]
        kinds = sorted({e.kind for e in feasible})
        kind = kinds[int(rng.integers(len(kinds)))]
        options = [e for e in feasible if e.kind == kind]
        pick = options[int(rng.integers(len(options)))]
        chosen.append(pick)
        available = [e for e in available if not _overlaps(e, pick)]
    changes = [_apply(caption, spans, e, rng, vocab) for e in sorted(chosen, key=lambda e: e.first)]
    text = caption
    for change in reversed(changes):
        text = text[:change.start] + change.new + text[change.end:]
    return Perturbation(text, tuple(changes))


def _apply(caption: str, spans: list[tuple[str, int, int]], element: _Element,
           rng: np.random.Generator, vocab: SwapVocabulary) -> Change:
    start, end = spans[element.first][1], spans[element.last][2]
    new = element.options[int(rng.integers(len(element.options)))]
    if element.kind == "count":
        noun = spans[element.last][0]
        singular = {plural: n for n, plural in vocab.plurals.items()}.get(noun, noun)
        article, new = new, caption[spans[element.first][2]:spans[element.last][1]] + (
            singular if new == "a" else vocab.plurals[singular])
    elif element.first > 0 and spans[element.first - 1][0] in _ARTICLES:
        # Take the article along, so "an apple" may become "a cake".
        before = spans[element.first - 1]
        article, new = before[0], caption[before[2]:start] + new
        start = before[1]
    else:
        article = ""
    if article in _ARTICLES:
        article = "an" if new.lstrip()[:1] in tuple("aeiou") else "a"
    old = caption[start:end]
    return Change(element.kind, old, _match_case(old, article + new), start, end)


def misname_small_shapes(caption: str, rng: np.random.Generator, probability: float) -> str:
    """Visual blindness, simulated: each singular shape named as ``small`` (or ``tiny``)
    is replaced, with ``probability``, by another shape, as a glance that saw it as a blur
    would write it.

    Random perturbations alone rarely hit exactly these words, so a refiner trained on
    them learns to trust the initial caption's small shapes, which a real glance mostly
    gets wrong. Works on the caption's words alone (any reference order)."""
    from sharpeye_ros.training.auxiliary import object_words  # the phrase parser the losses use

    spans = token_spans(caption)
    phrases: dict[int, list[int]] = {}
    for token, k in object_words(caption):
        phrases.setdefault(k, []).append(token)
    text = caption
    for tokens in sorted(phrases.values(), reverse=True):  # right to left keeps offsets valid
        words = [spans[t][0] for t in tokens]
        shape = words[-1]
        sizes = {SIZE_SYNONYMS.get(w, w) for w in words}
        if shape not in SHAPES or "small" not in sizes or rng.random() >= probability:
            continue
        others = [s for s in SHAPES if s != shape]
        _, start, end = spans[tokens[-1]]
        text = text[:start] + _match_case(text[start:end], others[int(rng.integers(len(others)))]) + text[end:]
    return text


def pseudo_initial(caption: str, rng: np.random.Generator, max_changes: int = 3,
                   misname_small: float = 0.0) -> str:
    """A pseudo-initial caption for stage 2: ``caption`` with 0..``max_changes``
    elements perturbed, after :func:`misname_small_shapes` when ``misname_small`` > 0."""
    blind = misname_small_shapes(caption, rng, misname_small) if misname_small else caption
    return perturb_caption(blind, rng, int(rng.integers(0, max_changes + 1))).caption


class PseudoCaptionPairs(Dataset):
    """Stage-2 pairs as the paper makes them: every reference caption of ``dataset`` with
    each of its pseudo-initial captions, one sample per pair (``captions``: the reference
    alone; ``initial``: the pseudo-initial caption; ``index``: the pair's).

    ``pseudo``: captions by caption id (:func:`read_pseudo_captions`), its first
    ``per_caption`` each (None: all); without it, ``per_caption`` rule-based ones per
    reference (:func:`pseudo_initial`), fixed by ``seed``
    and the pair, as a set made once would be."""

    def __init__(self, dataset: Dataset, per_caption: Optional[int] = None,
                 pseudo: Optional[dict[str, tuple[str, ...]]] = None, seed: int = 0,
                 max_changes: int = 3, misname_small: float = 0.0):
        if pseudo is None and (per_caption is None or per_caption < 1):
            raise ValueError("pseudo-caption pairs: give per_caption >= 1 or pseudo-captions")
        self.dataset, self.seed, self.max_changes, self.misname_small = dataset, seed, max_changes, misname_small
        self.pairs: list[tuple[int, str, Optional[str]]] = []  # (sample, reference, pseudo-initial or None)
        for index, (ids, captions) in enumerate(references(dataset)):
            for key, caption in zip(ids, captions):
                if pseudo is None:
                    self.pairs += [(index, caption, None)] * per_caption
                    continue
                if key not in pseudo:
                    raise ValueError(f"pseudo-captions: none for caption id {key!r} ({caption!r})")
                made = pseudo[key]
                if per_caption is not None and len(made) < per_caption:
                    raise ValueError(f"pseudo-captions: caption id {key!r} has {len(made)}, "
                                     f"the stage asks for {per_caption}")
                self.pairs += [(index, caption, p) for p in made[:per_caption]]

    def __len__(self) -> int:
        return len(self.pairs)

    def initial(self, index: int) -> str:
        """The pseudo-initial caption of pair ``index`` (no image loaded)."""
        _, target, initial = self.pairs[index]
        if initial is not None:
            return initial
        return pseudo_initial(target, np.random.default_rng([self.seed, index]), self.max_changes, self.misname_small)

    def __getitem__(self, index: int) -> dict:
        sample, target, _ = self.pairs[index]
        return {**self.dataset[sample], "index": index, "captions": (target,), "initial": self.initial(index)}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Write rule-based pseudo-initial captions of a data spec's references as JSON Lines."""
    parser = argparse.ArgumentParser(prog="python -m sharpeye_ros.training.perturb", description=main.__doc__)
    parser.add_argument("data", help="a data spec, e.g. coco:captions_train2017.json or world:train:3000")
    parser.add_argument("output", help="the JSON Lines file to write")
    parser.add_argument("--per-caption", type=int, default=3, help="pseudo-initial captions per reference (paper: 3)")
    parser.add_argument("--max-changes", type=int, default=3, help="elements perturbed, at most (paper: 3)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        if args.per_caption < 1 or args.max_changes < 0:
            raise ValueError("--per-caption must be >= 1 and --max-changes >= 0")
        dataset = open_dataset(args.data)
        pairs = PseudoCaptionPairs(dataset, args.per_caption, seed=args.seed, max_changes=args.max_changes)
        n = 0  # pairs come caption by caption, per_caption each
        with open(args.output, "w") as f:
            for ids, captions in references(dataset):
                for key, caption in zip(ids, captions):
                    made = [pairs.initial(n + j) for j in range(args.per_caption)]
                    n += args.per_caption
                    f.write(json.dumps({"caption_id": key, "caption": caption, "pseudo_captions": made}) + "\n")
    except (OSError, ValueError) as error:
        print(f"perturb: error: {error}", file=sys.stderr)
        return 2
    print(f"perturb: wrote {n} pseudo-initial captions to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
