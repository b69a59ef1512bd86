"""Training configuration: stages, recipes and their JSON form.

The paper trains in three stages, each a :class:`StageConfig`, after a pretrained CLIP:

- ``vision``: only where no pretrained vision tower exists (the demo): pretrain the tower
  from scratch on dense per-patch labels of the synthetic world (colour, shape and size
  class of the object at each patch), a stand-in for CLIP's pretraining;
- ``connector``: connector pretraining, only the connector learns (paper: lr 1e-4);
- ``caption``: stage 1, caption fine-tuning of connector and LM (paper: lr 2e-5, ~10-12
  epochs), the vision tower too when it was not pretrained;
- ``refine``: stage 2, DeepLens learns to turn a pseudo-initial caption (the reference
  with 0-3 elements perturbed) into the reference.

A recipe (:data:`RECIPES`) is a whole :class:`TrainConfig`: the model, the data and the
stages. ``demo`` trains the shipped model on the synthetic world on a laptop CPU;
``paper`` is the real-data recipe (CLIP ViT-L/14-336 + OPT-125M, COCO / LLaVA JSON).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional

from sharpeye_ros.model import SharpEyesConfig, presets
from sharpeye_ros.model.config import PROMPT, REFINE_PROMPT
from sharpeye_ros.model.sharpeyes import PARAMETER_GROUPS
from sharpeye_ros.world import tokenize, vocabulary

STAGES = ("vision", "connector", "caption", "refine")


@dataclass
class StageConfig:
    """One training stage. ``epochs`` over the data, or ``steps`` (which wins when set).

    ``trainable``: parameter groups that learn (vision is dropped when the run freezes
    it). ``group_lr``: per-group learning rates overriding ``lr``. ``grounding_weight``,
    ``patch_weight``, ``word_weight``: the synthetic-world auxiliary losses
    (``training/auxiliary.py``; the patch head learns at ``lr``). ``glance_weight``
    (refine stage): add the glance caption loss, so a shared LM keeps its first look.
    ``zoom`` (refine stage): train with zoom crops of the attended regions.
    ``zoom_grounding_weight``, ``zoom_word_weight`` (refine stage with zoom): the same
    grounding and word alignment on the refinement's own pass and zoom tokens. ``augment``
    (vision stage): random shifts and flips of the glance.

    Pseudo-initial captions (refine stage): by default a fresh rule-based one per sample
    and step (``max_changes``, ``misname_small``). ``pseudo_per_caption`` N: as the paper,
    every reference caption paired with N fixed ones, one sample per pair (paper: 3).
    ``pseudo_captions``: a JSON Lines file of them made elsewhere, e.g. by an LLM
    (:func:`~sharpeye_ros.data.read_pseudo_captions`; its first
    ``pseudo_per_caption`` per caption, or all).
    """

    name: str
    lr: float
    epochs: float = 1.0
    steps: Optional[int] = None
    batch_size: int = 32
    trainable: tuple[str, ...] = ("connector",)
    group_lr: dict[str, float] = field(default_factory=dict)
    warmup: float = 0.03  # fraction of the stage's steps
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    grounding_weight: float = 0.0
    patch_weight: float = 0.0
    word_weight: float = 0.0
    glance_weight: float = 0.0
    zoom: bool = False
    zoom_grounding_weight: float = 0.0
    zoom_word_weight: float = 0.0
    max_changes: int = 3  # refine stage: perturb 0..max_changes elements
    misname_small: float = 0.0  # refine stage: chance a small object's shape is misnamed first
    pseudo_per_caption: Optional[int] = None
    pseudo_captions: Optional[str] = None
    data: Optional[list[str]] = None  # this stage's data specs instead of the run's
    augment: bool = False

    def validate(self) -> None:
        """Raise ValueError naming the first bad field."""
        where = f"stage '{self.name}'"
        if self.name not in STAGES:
            raise ValueError(f"{where}: unknown stage; choose from {list(STAGES)}")
        bad = [g for g in (*self.trainable, *self.group_lr) if g not in PARAMETER_GROUPS]
        if bad or not self.trainable:
            raise ValueError(f"{where}: trainable/group_lr need groups from {list(PARAMETER_GROUPS)}, got {bad or 'none'}")
        if self.lr <= 0 or self.batch_size < 1 or not 0 <= self.warmup < 1:
            raise ValueError(f"{where}: need lr > 0, batch_size >= 1 and 0 <= warmup < 1")
        if (self.steps is None and self.epochs <= 0) or (self.steps is not None and self.steps < 1):
            raise ValueError(f"{where}: need epochs > 0 or steps >= 1")
        if self.name != "refine" and (self.zoom or self.glance_weight or self.misname_small
                                      or self.pseudo_per_caption is not None or self.pseudo_captions):
            raise ValueError(f"{where}: zoom, glance_weight, misname_small and the pseudo-captions "
                             "belong to the refine stage")
        if self.pseudo_per_caption is not None and self.pseudo_per_caption < 1:
            raise ValueError(f"{where}: pseudo_per_caption must be >= 1 (or null: one fresh per step)")
        if (self.zoom_grounding_weight or self.zoom_word_weight) and not self.zoom:
            raise ValueError(f"{where}: zoom_grounding_weight and zoom_word_weight need a refine stage with zoom")
        if not 0 <= self.misname_small <= 1:
            raise ValueError(f"{where}: misname_small is a probability in [0, 1]")
        if self.name == "vision" and (self.patch_weight <= 0 or "vision" not in self.trainable):
            raise ValueError(f"{where}: the vision stage trains 'vision' on patch labels (patch_weight > 0)")
        if self.augment and self.name != "vision":
            raise ValueError(f"{where}: augment belongs to the vision stage (it moves no captions)")


@dataclass
class TrainConfig:
    """A training run: model (a preset's config, or ``init``: a checkpoint to start from),
    data specs (see :func:`~sharpeye_ros.data.open_dataset`) and stages.

    ``freeze_vision``: None means frozen when the vision tower came from a pretrained
    checkpoint (``model.vision.name_or_path``) and trainable when built from scratch.
    """

    model: dict[str, Any]
    train_data: list[str]
    stages: list[StageConfig]
    init: Optional[str] = None
    freeze_vision: Optional[bool] = None
    seed: int = 0
    caption_choice: str = "random"  # "first": always the first reference (canonical)
    num_workers: int = 0
    log_every: int = 20
    save_every: int = 500  # steps between checkpoints (and one at each stage's end)
    eval_data: Optional[str] = None  # evaluated after training when set
    eval_count: int = 0

    def validate(self) -> None:
        """Raise ValueError naming the first bad field."""
        if not self.stages:
            raise ValueError("train config: no stages")
        if not self.train_data and not all(s.data for s in self.stages):
            raise ValueError("train config: no training data (give train_data or every stage's data)")
        if self.caption_choice not in ("random", "first"):
            raise ValueError("train config: caption_choice must be 'random' or 'first'")
        if self.log_every < 1 or self.save_every < 1:
            raise ValueError("train config: log_every and save_every must be >= 1")
        for stage in self.stages:
            stage.validate()
        if self.vision_frozen() and any(s.name == "vision" for s in self.stages):
            raise ValueError("train config: a 'vision' stage trains the vision tower, which this run freezes")
        self.model_config()  # raises on a bad model section

    def model_config(self) -> SharpEyesConfig:
        return SharpEyesConfig.from_dict(self.model)

    def vision_frozen(self) -> bool:
        if self.freeze_vision is not None:
            return self.freeze_vision
        return self.model_config().vision.name_or_path is not None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        """Inverse of :meth:`to_dict`, validated; unknown keys raise ValueError."""
        data = dict(data)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"train config: unknown field(s) {unknown}")
        stage_fields = {f.name for f in dataclasses.fields(StageConfig)}
        stages = []
        for s in data.pop("stages", []):
            extra = sorted(set(s) - stage_fields)
            if extra:
                raise ValueError(f"train config: stage {s.get('name')!r} has unknown field(s) {extra}")
            s = dict(s)
            s["trainable"] = tuple(s.get("trainable", ("connector",)))
            stages.append(StageConfig(**s))
        cfg = cls(stages=stages, **data)
        cfg.validate()
        return cfg


def demo_vocabulary() -> list[str]:
    """The demo tokenizer's words: the prompts' tokens, then the world's caption vocabulary."""
    words: list[str] = []
    for text in (PROMPT, REFINE_PROMPT):
        for token in tokenize(text.replace("<image>", " ").replace("{caption}", " ")):
            if token not in words:
                words.append(token)
    return words + [w for w in vocabulary() if w not in words]


def demo_model() -> SharpEyesConfig:
    """The shipped demo model's config: the demo preset with the world's vocabulary."""
    return presets.demo(demo_vocabulary())


def demo_recipe() -> TrainConfig:
    """Synthetic world, tiny model, all stages on a 2-core CPU in under 20 minutes."""
    return TrainConfig(
        model=demo_model().to_dict(),
        train_data=["world:train:3000"],
        caption_choice="first",
        seed=0,
        stages=[
            StageConfig("vision", lr=2e-3, steps=3500, batch_size=32, trainable=("vision",), patch_weight=1.0,
                        augment=True, warmup=0.05, weight_decay=0.01, data=["world-dense:2000"]),
            StageConfig("connector", lr=1e-3, epochs=1, batch_size=32, trainable=("connector",), word_weight=1.0),
            StageConfig("caption", lr=1e-3, epochs=10, batch_size=32, trainable=("vision", "connector", "lm"),
                        group_lr={"vision": 2e-4}, warmup=0.02, weight_decay=0.01, grounding_weight=0.5,
                        word_weight=1.0),
            # Pseudo-initial captions: up to 5 changes (paper: 3), and most small shapes
            # misnamed (a glance names about one in five right), so the draft cannot be
            # trusted there. Zoom grounding and word alignment make the refined caption's
            # object words look at the crop that holds the object and the crop's tokens
            # read as its words; without them the refiner re-read the blurred glance
            # tokens (small F1 gain +8 with misnaming alone, +46 with both, 500 scenes).
            StageConfig("refine", lr=5e-4, epochs=3, batch_size=32, trainable=("deeplens", "lm"), zoom=True,
                        glance_weight=1.0, grounding_weight=0.5, word_weight=1.0, max_changes=5,
                        misname_small=0.8, zoom_grounding_weight=0.5, zoom_word_weight=1.0),
        ],
    )


def paper_recipe() -> TrainConfig:
    """Real data on GPUs: CLIP ViT-L/14-336 + OPT-125M. Give the data with ``--train-data``
    (e.g. ``llava:blip_laion_cc_sbu_558k.json:images`` for the connector stage, then COCO
    captions); the paper's connector and stage-1 learning rates, and its stage 2: 2 epochs
    of batches of 256 at lr 2e-5 over each reference paired with 3 pseudo-initial captions
    (rule based here; an LLM's with ``--set refine.pseudo_captions=FILE.jsonl``).

    Not the paper's, on purpose (docs/model.md): DeepLens, built from scratch, learns at
    1e-4 (the rate the paper gives its other fresh module, the connector), and stage 2
    trains with zoom, this package's addition (``--set refine.zoom=false`` for the paper's)."""
    return TrainConfig(
        model=presets.paper_pretrained().to_dict(),
        train_data=[],
        num_workers=8,
        log_every=50,
        save_every=2000,
        stages=[
            # The authors' scripts: pretraining 2 epochs, COCO fine-tuning 12 (their
            # ShareGPT4V/DCI one: 10), batches of 256 (128 x 2 accumulated), cosine, warm-up 3%.
            StageConfig("connector", lr=1e-4, epochs=2, batch_size=256, trainable=("connector",)),
            StageConfig("caption", lr=2e-5, epochs=12, batch_size=256, trainable=("connector", "lm")),
            StageConfig("refine", lr=2e-5, epochs=2, batch_size=256, trainable=("deeplens", "lm"),
                        group_lr={"deeplens": 1e-4}, glance_weight=1.0, zoom=True, pseudo_per_caption=3),
        ],
    )


def smoke_recipe() -> TrainConfig:
    """Seconds on a CPU: a very small model (64 px glance, 4x4 patches) and a few steps of
    every stage on 8 dense and 16 standard scenes, to check the whole pipeline (tests, CI)."""
    model = demo_model().override({**presets.MICRO, "deeplens.num_layers": 1, "zoom.num_crops": 2})
    return TrainConfig(
        model=model.to_dict(), train_data=["world:train:16"], caption_choice="first", log_every=1, save_every=2,
        stages=[
            StageConfig("vision", lr=1e-3, steps=2, batch_size=4, trainable=("vision",), patch_weight=1.0,
                        augment=True, data=["world-dense:8"]),
            StageConfig("connector", lr=1e-3, steps=2, batch_size=4, trainable=("connector",)),
            StageConfig("caption", lr=1e-3, steps=3, batch_size=4, trainable=("vision", "connector", "lm"),
                        grounding_weight=0.5, patch_weight=0.5, word_weight=0.5),
            StageConfig("refine", lr=1e-3, steps=2, batch_size=4, trainable=("deeplens",), zoom=True),
        ],
    )


RECIPES = {"demo": demo_recipe, "paper": paper_recipe, "smoke": smoke_recipe}
