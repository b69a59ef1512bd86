"""DeepLens (the SeR-Connector): a second, sharper look guided by the first glance.

Inputs, all from the glance (no second full-image encoder pass): the hidden states of
a few vision layers concatenated on channels, the glance's attention heat per patch, and
the initial caption's token embeddings. Optional zoom tokens come from crops of the top
attended regions, re-encoded at full resolution. A few Transformer blocks fuse them with
self-attention; the visual (and zoom) positions come out as refined visual embeddings.

The output is a residual on the (pooled) connector embeddings of the same tokens, with a
zero-initialised last layer: an untrained DeepLens hands the LM the glance's own
embeddings, so stage-2 training starts from a working model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sharpeye_ros.model.config import DeepLensConfig


@dataclass
class ZoomTokens:
    """Zoom inputs for DeepLens: per image, C crops of a grid of patches.

    ``features`` (B, C, N, L*Dv): the crops' DeepLens-layer hidden states;
    ``base`` (B, C, N, D): their connector embeddings; ``boxes`` (B, C, 4): the crops in
    the glance's input frame, as fractions of its side; ``source_boxes`` (B, C, 4): the
    same crops in source pixels (x_min, y_min, x_max, y_max), where known.
    """

    features: torch.Tensor
    base: torch.Tensor
    boxes: torch.Tensor
    source_boxes: Optional[np.ndarray] = None


def pool_grid(x: torch.Tensor, pool: int) -> torch.Tensor:
    """Average ``pool x pool`` cells of a square token grid: (..., N, C) -> (..., N / pool^2, C)."""
    if pool == 1:
        return x
    *lead, n, c = x.shape
    side = int(round(n**0.5))
    grid = x.reshape(-1, side, side, c).permute(0, 3, 1, 2)
    pooled = F.avg_pool2d(grid, pool)
    return pooled.permute(0, 2, 3, 1).reshape(*lead, -1, c)


def attention_heat(token_maps: Optional[torch.Tensor], n: int, device: torch.device) -> torch.Tensor:
    """DeepLens's attention input: a caption's mean attention per patch, (T, n) -> (n,),
    scaled to a peak of 1 (zeros without maps)."""
    if token_maps is None or len(token_maps) == 0:
        return torch.zeros(n, device=device)
    heat = token_maps.float().mean(0)
    return heat / heat.max().clamp(min=1e-12)


class Block(nn.Module):
    """Pre-norm Transformer block with a key padding mask."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.dropout = dropout

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        drop = self.dropout if self.training else 0.0
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask[:, None, None, :], dropout_p=drop)
        x = x + F.dropout(self.proj(attn.transpose(1, 2).reshape(b, n, d)), drop, self.training)
        return x + F.dropout(self.mlp(self.norm2(x)), drop, self.training)


class DeepLens(nn.Module):
    """Fuses multi-layer visual features, zoom crops and the initial caption."""

    def __init__(self, cfg: DeepLensConfig, vision_size: int, lm_size: int, grid: int, zoom_pool: int):
        super().__init__()
        for name, pool in (("deeplens.pool", cfg.pool), ("zoom.pool", zoom_pool)):
            if grid % pool:
                raise ValueError(
                    f"{name}: {pool} does not divide the vision tower's {grid}x{grid} patch grid"
                )
        d = cfg.hidden_size
        self.pool, self.zoom_pool = cfg.pool, zoom_pool
        self.max_caption_tokens = cfg.max_caption_tokens
        self.feature_mlp = nn.Sequential(
            nn.Linear(len(cfg.layers) * vision_size, d), nn.GELU(), nn.Linear(d, d)
        )
        self.caption_mlp = nn.Sequential(nn.Linear(lm_size, d), nn.GELU(), nn.Linear(d, d))
        self.heat_proj = nn.Linear(1, d)
        self.box_proj = nn.Linear(4, d)
        self.visual_pos = nn.Parameter(torch.randn((grid // cfg.pool) ** 2, d) * 0.02)
        self.zoom_pos = nn.Parameter(torch.randn((grid // zoom_pool) ** 2, d) * 0.02)
        self.caption_pos = nn.Parameter(torch.randn(cfg.max_caption_tokens, d) * 0.02)
        self.type_embed = nn.Parameter(torch.randn(3, d) * 0.02)  # visual, zoom, caption
        self.blocks = nn.ModuleList(
            Block(d, cfg.num_heads, cfg.mlp_ratio, cfg.dropout) for _ in range(cfg.num_layers)
        )
        self.norm = nn.LayerNorm(d)
        self.out = nn.Linear(d, lm_size)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(
        self,
        features: torch.Tensor,
        base: torch.Tensor,
        heat: torch.Tensor,
        caption: torch.Tensor,
        caption_mask: torch.Tensor,
        zoom: Optional[ZoomTokens] = None,
    ) -> torch.Tensor:
        """Refined visual embeddings (B, N/pool^2 [+ C*Nz/zoom_pool^2], D_lm).

        ``features`` (B, N, L*Dv): glance hidden states of the DeepLens layers; ``base``
        (B, N, D_lm): glance connector embeddings; ``heat`` (B, N): glance attention
        per patch, in [0, 1]; ``caption`` (B, T, D_lm): initial-caption token embeddings
        with ``caption_mask`` (B, T) True on real tokens.
        """
        caption, caption_mask = (
            caption[:, : self.max_caption_tokens],
            caption_mask[:, : self.max_caption_tokens],
        )
        heat = pool_grid(heat.unsqueeze(-1).to(features.dtype), self.pool)
        visual = self.feature_mlp(pool_grid(features, self.pool)) + self.visual_pos + self.type_embed[0]
        tokens = [visual + self.heat_proj(heat)]
        bases = [pool_grid(base, self.pool)]
        if zoom is not None:
            b, c = zoom.features.shape[:2]
            z = (
                self.feature_mlp(pool_grid(zoom.features, self.zoom_pool))
                + self.zoom_pos
                + self.type_embed[1]
            )
            z = z + self.box_proj(zoom.boxes.to(z.dtype)).unsqueeze(2)
            tokens.append(z.reshape(b, -1, z.shape[-1]))
            bases.append(pool_grid(zoom.base, self.zoom_pool).reshape(b, -1, zoom.base.shape[-1]))
        num_visual = sum(t.shape[1] for t in tokens)
        tokens.append(self.caption_mlp(caption) + self.caption_pos[: caption.shape[1]] + self.type_embed[2])
        x = torch.cat(tokens, dim=1)
        key_mask = torch.cat([caption_mask.new_ones((x.shape[0], num_visual)), caption_mask.bool()], dim=1)
        for block in self.blocks:
            x = block(x, key_mask)
        return torch.cat(bases, dim=1) + self.out(self.norm(x[:, :num_visual]))
