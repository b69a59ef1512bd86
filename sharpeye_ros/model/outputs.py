"""What the model's steps return: a caption (:class:`CaptionResult`), a vision pass
(:class:`Encoded`), a glance kept for its refinement (:class:`Glance`) and a training
pass (:class:`TeacherForced`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch

from sharpeye_ros.model.deeplens import ZoomTokens
from sharpeye_ros.model.language import Prompt
from sharpeye_ros.model.preprocess import ImageTransform
from sharpeye_ros.model.regions import Region
from sharpeye_ros.model.timing import split_seconds


@dataclass
class CaptionResult:
    """One image's caption. ``timings``: seconds per stage (for a batch call, the
    whole batch's time, the same dict for every image), named as in
    :mod:`~sharpeye_ros.model.timing`."""

    caption: str
    initial_caption: str
    refined: bool
    zoomed: bool
    regions: list[Region]
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def glance_seconds(self) -> float:
        """Seconds of the glance's stages (:data:`~sharpeye_ros.model.timing.GLANCE_STAGES`)."""
        return split_seconds(self.timings)[0]

    @property
    def refine_seconds(self) -> float:
        """Seconds of the refinement's stages (:data:`~sharpeye_ros.model.timing.REFINE_STAGES`)."""
        return split_seconds(self.timings)[1]


@dataclass
class Encoded:
    """One vision pass: the selected layer's patch features (B, N, Dv), CLS dropped; the
    connector's embeddings of them (B, N, D_lm); the DeepLens layers (B, N, L*Dv) or None."""

    patches: torch.Tensor
    embeds: torch.Tensor
    features: Optional[torch.Tensor]


@dataclass
class Glance:
    """What the first look at a batch produced, kept for the refinement."""

    transforms: list[ImageTransform]
    embeds: torch.Tensor  # (B, N, D_lm) connector output
    features: Optional[torch.Tensor]  # (B, N, L*Dv) DeepLens-layer hidden states
    captions: list[str]
    token_maps: list[Optional[torch.Tensor]]  # per image (T, N) attention over patches
    token_spans: list[list[tuple[int, int]]]
    regions: list[list[Region]]  # the zoom's candidates (at least num_crops)
    # The glance's prompt and its per-layer (keys, values), kept when refining, so that a
    # refined caption's regions come from the same prompt without running it again.
    prompt: Optional[Prompt] = None
    prompt_kv: list = field(default_factory=list)


@dataclass
class TeacherForced:
    """One teacher-forced pass (training): the targets' mean cross-entropy ``loss``;
    ``maps`` (B, T, M), their attention over the visual tokens in the region layers, with
    gradients (asked for with ``attention``; T: the longest target incl. EOS); ``visual``
    (B, M, D_lm), the visual tokens the LM read (the connector's, or DeepLens's refined
    ones); ``patches``, the glance's selected vision features (glance pass only);
    ``transforms`` of the images (refine pass; the glance pass may read pixels only);
    ``zoom``, the crops DeepLens saw (refine pass with zoom)."""

    loss: torch.Tensor
    maps: Optional[torch.Tensor]
    visual: torch.Tensor
    patches: Optional[torch.Tensor]
    transforms: list[ImageTransform]
    zoom: Optional[ZoomTokens] = None
