"""The frozen CLIP vision tower: one pass gives the glance features and DeepLens's layers."""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModel

from sharpeye_ros.model.config import VisionConfig
from sharpeye_ros.model.loading import load_pretrained


def resolve_layer(index: int, num_layers: int, name: str) -> int:
    """Index into the ``num_layers + 1`` hidden states (0 = embeddings; negative from the end)."""
    count = num_layers + 1
    resolved = index + count if index < 0 else index
    if not 1 <= resolved < count:
        raise ValueError(
            f"{name}: layer {index} is outside the vision tower's 1..{num_layers} (or -1..-{num_layers})"
        )
    return resolved


class VisionTower(nn.Module):
    """Wraps ``transformers.CLIPVisionModel`` (kept as ``self.model``)."""

    def __init__(self, model: CLIPVisionModel, select_layer: int = -2):
        super().__init__()
        self.model = model
        self.select_layer = resolve_layer(select_layer, self.num_layers, "vision.select_layer")

    @classmethod
    def from_config(cls, cfg: VisionConfig) -> "VisionTower":
        """Random weights from ``cfg.config``, or pretrained ones from ``cfg.name_or_path``."""
        if cfg.config is not None:
            return cls(CLIPVisionModel(clip_vision_config(cfg.config)), cfg.select_layer)
        return cls(load_pretrained(CLIPVisionModel, cfg.name_or_path, "vision tower"), cfg.select_layer)

    @property
    def image_size(self) -> int:
        return int(self.model.config.image_size)

    @property
    def patch_size(self) -> int:
        return int(self.model.config.patch_size)

    @property
    def grid(self) -> int:
        """Patches per side of the (square) input."""
        return self.image_size // self.patch_size

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def num_layers(self) -> int:
        return int(self.model.config.num_hidden_layers)

    def forward(
        self, pixels: torch.Tensor, layers: Optional[Sequence[int]] = None, full: bool = False
    ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Pixels (B, 3, S, S) -> (selected-layer patch features (B, N, D),
        the hidden states of ``layers`` (resolved indices) concatenated on channels
        (B, N, len(layers) * D), or None without ``layers``). CLS is dropped.

        Only the layers up to the deepest one asked for run: LLaVA-style towers select
        the penultimate layer, so the last layer (and the pooled head) would be wasted.
        ``full``: run them anyway, as transformers' own forward does (the benchmark's
        naive reference).
        """
        expected = (3, self.image_size, self.image_size)
        if pixels.dim() != 4 or tuple(pixels.shape[1:]) != expected:
            raise ValueError(
                f"vision tower: expected pixels of shape (B, {expected}), got {tuple(pixels.shape)}"
            )
        wanted = [self.select_layer, *(layers or [])]
        param = next(self.model.parameters())
        pixels = pixels.to(device=param.device, dtype=param.dtype)
        if full:
            hidden = self.model(pixel_values=pixels, output_hidden_states=True).hidden_states
            states = {i: hidden[i][:, 1:] for i in wanted}
        else:
            # Older transformers nest the tower's modules under ``vision_model``.
            tower = getattr(self.model, "vision_model", self.model)
            hidden = tower.pre_layrnorm(tower.embeddings(pixels))
            states = {}
            for index, layer in enumerate(tower.encoder.layers[: max(wanted)], start=1):
                hidden = layer(hidden, None)
                if index in wanted:
                    states[index] = hidden[:, 1:]
        multi = torch.cat([states[i] for i in layers], dim=-1) if layers else None
        return states[self.select_layer], multi


def clip_vision_config(data: dict) -> CLIPVisionConfig:
    """A ``CLIPVisionConfig`` from a dict (a full CLIP config's ``vision_config`` also works)."""
    data = dict(data.get("vision_config", data))
    return CLIPVisionConfig.from_dict(data)
