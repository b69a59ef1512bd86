"""Configuration of the Sharp-Eyes specialist: dataclasses and config.json I/O.

The vision tower and the LM are each given either as ``name_or_path`` (a local directory
or a Hugging Face model name, loaded with ``from_pretrained``) or as an inline
``config`` dict (a ``CLIPVisionConfig`` / ``OPTConfig`` as a dict, built with random
weights). A saved checkpoint always holds the inline form, so it loads on its own.
The presets are in :mod:`sharpeye_ros.model.presets`.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

PROMPT = "USER: <image>What is in the photo? ASSISTANT:"
REFINE_PROMPT = "USER: <image>What is in the photo? First glance: {caption} ASSISTANT:"
IMAGE_TOKEN = "<image>"
STOP_RULES = ("eos", "sentence", "newline")
# Caption post-processing, as the paper evaluates: "coco" keeps the whole caption;
# "detailed" (ShareGPT4V, DCI) keeps its first DETAILED_SENTENCES sentences.
TASKS = ("coco", "detailed")
DETAILED_SENTENCES = 3


def read_words(name: str) -> tuple[str, ...]:
    """A word list shipped as data beside this module: ``words/NAME.txt``, one word a line
    (lines starting with ``#`` are comments)."""
    lines = (Path(__file__).with_name("words") / f"{name}.txt").read_text().splitlines()
    return tuple(line.strip() for line in lines if line.strip() and not line.startswith("#"))


# Words that never start or continue a grounded phrase: articles, conjunctions,
# prepositions and spatial words (a position is not a thing one can box).
FUNCTION_WORDS = read_words("function_words")


@dataclass
class VisionConfig:
    """CLIP vision tower. ``select_layer`` indexes the hidden states (0 = embeddings)."""

    name_or_path: Optional[str] = None
    config: Optional[dict] = None
    select_layer: int = -2
    pad_color: tuple[int, int, int] = (122, 116, 104)
    image_mean: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
    image_std: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class ConnectorConfig:
    """Vision-to-LM projector: ``mlp4x_bott4x_gelu``, ``mlpNx_gelu`` or ``linear``."""

    type: str = "mlp4x_bott4x_gelu"


@dataclass
class LMConfig:
    """OPT language model, its tokenizer and the prompts.

    ``tokenizer``: directory or name of the tokenizer; None means ``name_or_path`` (or
    the checkpoint directory). ``vocab_words``: build a word-level tokenizer instead.
    """

    name_or_path: Optional[str] = None
    config: Optional[dict] = None
    tokenizer: Optional[str] = None
    vocab_words: Optional[list[str]] = None
    prompt: str = PROMPT
    refine_prompt: str = REFINE_PROMPT


@dataclass
class GenerationConfig:
    """Decoding. ``stop``: any of "eos", "sentence" (end of the first sentence), "newline".
    The paper stops at EOS or ``max_new_tokens`` only; "sentence" and "newline" end a
    caption sooner (faster on a robot, but beams are then ranked without their EOS score).

    ``task``: the caption's post-processing (:data:`TASKS`): "coco" keeps the decoded
    text, "detailed" its first three sentences (the paper's ShareGPT4V / DCI evaluation).

    ``refine_num_beams``: beams for the refined caption (None: ``num_beams``). With 1 and
    ``draft``, the refined caption is decoded greedily with the initial caption as a
    draft: runs of it are verified in one LM pass, the same result in fewer steps.
    """

    num_beams: int = 3
    max_new_tokens: int = 77
    length_penalty: float = 0.0
    early_stopping: bool = True
    stop: tuple[str, ...] = ("eos",)
    task: str = "coco"
    refine_num_beams: Optional[int] = None
    draft: bool = True


@dataclass
class DeepLensConfig:
    """DeepLens (SeR-Connector): multi-layer features + initial caption -> refined tokens.

    ``layers`` index the vision hidden states like ``select_layer`` (negative: from the
    end), so the same setting scales with depth. ``pool`` averages ``pool x pool`` patch
    cells into one refined token, which keeps the refined prompt short.
    """

    layers: tuple[int, ...] = (13, 18, 23)
    hidden_size: int = 768
    num_layers: int = 6
    num_heads: int = 12
    mlp_ratio: float = 4.0
    pool: int = 2
    max_caption_tokens: int = 80
    dropout: float = 0.0


@dataclass
class ZoomConfig:
    """Zoom: square crops around the top attended regions, cut from the full-resolution
    image and re-encoded by the vision tower at its input size.

    ``margin``: context added on each side, as a fraction of the box's longer side.
    ``min_size``: smallest crop side in source pixels. ``pool``: like DeepLens ``pool``.
    """

    enabled: bool = False
    num_crops: int = 2
    margin: float = 0.5
    min_size: int = 64
    pool: int = 2


@dataclass
class RegionsConfig:
    """Attended regions: LM attention of caption tokens over the visual tokens -> boxes.

    ``attention_layers`` index the LM's decoder layers (negative: from the end); None
    takes the middle third (layers 4-7 of OPT-125M's 12), where grounding is best.
    ``threshold``: a box is the connected area around a heat peak above this fraction of
    the peak. ``contrast``: subtract this fraction of the whole caption's mean map from
    each phrase map (removes tokens every word attends to).
    """

    num_regions: int = 3
    attention_layers: Optional[tuple[int, ...]] = None
    threshold: float = 0.5
    max_boxes_per_phrase: int = 1
    nms_iou: float = 0.5
    contrast: float = 0.0
    function_words: tuple[str, ...] = FUNCTION_WORDS


@dataclass
class SharpEyesConfig:
    """Everything needed to build a :class:`~sharpeye_ros.model.sharpeyes.SharpEyes`.

    ``deeplens`` None: no refinement module. ``refine``: refine by default at call time.
    """

    vision: VisionConfig = field(default_factory=VisionConfig)
    connector: ConnectorConfig = field(default_factory=ConnectorConfig)
    lm: LMConfig = field(default_factory=LMConfig)
    deeplens: Optional[DeepLensConfig] = field(default_factory=DeepLensConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    regions: RegionsConfig = field(default_factory=RegionsConfig)
    zoom: ZoomConfig = field(default_factory=ZoomConfig)
    refine: bool = True

    # ---- dict / JSON ---------------------------------------------------------------
    def to_dict(self) -> dict:
        """A JSON-ready dict (tuples become lists)."""
        return _jsonable(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict) -> "SharpEyesConfig":
        """Inverse of :meth:`to_dict`; unknown keys raise ValueError naming them."""
        if not isinstance(data, dict):
            raise ValueError(f"SharpEyesConfig.from_dict: expected a dict, got {type(data).__name__}")
        data = copy.deepcopy(data)
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name not in data:
                continue
            value = data.pop(f.name)
            sub = _SECTIONS.get(f.name)
            if sub is not None and value is not None:
                value = _section_from_dict(sub, value, f.name)
            kwargs[f.name] = value
        if data:
            raise ValueError(f"SharpEyesConfig: unknown field(s) {sorted(data)}")
        cfg = cls(**kwargs)
        cfg.validate()
        return cfg

    def override(self, changes: dict[str, Any]) -> "SharpEyesConfig":
        """A copy with dotted fields replaced, e.g. ``{"generation.num_beams": 1}``."""
        data = self.to_dict()
        for key, value in changes.items():
            node = data
            parts = key.split(".")
            for part in parts[:-1]:
                if not isinstance(node.get(part), dict):
                    raise ValueError(f"SharpEyesConfig.override: no section '{part}' in '{key}'")
                node = node[part]
            if parts[-1] not in node and not (len(parts) == 3 and parts[1] == "config"):
                raise ValueError(f"SharpEyesConfig.override: unknown field '{key}'")
            node[parts[-1]] = _jsonable(value)
        return SharpEyesConfig.from_dict(data)

    def validate(self) -> None:
        """Raise ValueError naming the first field that is out of range."""
        for name, section in (("vision", self.vision), ("lm", self.lm)):
            if (section.name_or_path is None) == (section.config is None):
                raise ValueError(f"config.{name}: give exactly one of name_or_path and config")
        g = self.generation
        _check(g.num_beams >= 1, "generation.num_beams must be >= 1")
        _check(
            g.refine_num_beams is None or g.refine_num_beams >= 1, "generation.refine_num_beams must be >= 1"
        )
        _check(g.max_new_tokens >= 1, "generation.max_new_tokens must be >= 1")
        bad = [s for s in g.stop if s not in STOP_RULES]
        _check(not bad, f"generation.stop: unknown rule(s) {bad}; known: {list(STOP_RULES)}")
        _check(g.task in TASKS, f"generation.task must be one of {list(TASKS)}, got {g.task!r}")
        for name in ("prompt", "refine_prompt"):
            _check(
                getattr(self.lm, name).count(IMAGE_TOKEN) == 1, f"lm.{name} must hold '{IMAGE_TOKEN}' once"
            )
        _check("{caption}" in self.lm.refine_prompt, "lm.refine_prompt must hold '{caption}'")
        r = self.regions
        _check(r.num_regions >= 0, "regions.num_regions must be >= 0")
        _check(0.0 < r.threshold <= 1.0, "regions.threshold must be in (0, 1]")
        _check(
            r.attention_layers is None or len(r.attention_layers) > 0,
            "regions.attention_layers must not be empty",
        )
        _check(r.max_boxes_per_phrase >= 1, "regions.max_boxes_per_phrase must be >= 1")
        z = self.zoom
        _check(z.num_crops >= 1, "zoom.num_crops must be >= 1")
        _check(z.margin >= 0 and z.min_size >= 1 and z.pool >= 1, "zoom.margin/min_size/pool out of range")
        if self.deeplens is not None:
            d = self.deeplens
            _check(len(d.layers) > 0, "deeplens.layers must not be empty")
            _check(d.pool >= 1, "deeplens.pool must be >= 1")
            _check(d.hidden_size % d.num_heads == 0, "deeplens.hidden_size must be divisible by num_heads")
        _check(not (self.refine and self.deeplens is None), "refine=True needs a deeplens section")


_SECTIONS = {
    "vision": VisionConfig,
    "connector": ConnectorConfig,
    "lm": LMConfig,
    "deeplens": DeepLensConfig,
    "generation": GenerationConfig,
    "regions": RegionsConfig,
    "zoom": ZoomConfig,
}


def _section_from_dict(cls: type, value: Any, name: str) -> Any:
    if not isinstance(value, dict):
        raise ValueError(f"config.{name}: expected a dict, got {type(value).__name__}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(value) - set(known))
    if unknown:
        raise ValueError(f"config.{name}: unknown field(s) {unknown}")
    kwargs = {}
    for key, v in value.items():
        # JSON has no tuples: restore them where the field is annotated as one.
        if isinstance(v, list) and "tuple" in str(known[key].type):
            v = tuple(v)
        kwargs[key] = v
    return cls(**kwargs)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(f"SharpEyesConfig: {message}")
