"""The vision-to-language connector (LLaVA's ``mm_projector``)."""

from __future__ import annotations

import re

from torch import nn


def build_connector(kind: str, vision_size: int, lm_size: int) -> nn.Sequential:
    """The projector named ``kind``, as an ``nn.Sequential`` whose indices match LLaVA's.

    - ``mlp4x_bott4x_gelu``: Linear(v, 4h), GELU, Linear(4h, 4h), GELU, Linear(4h, 4h),
      Linear(4h, h); no activation between the last two (keys 0, 2, 4, 5).
    - ``mlpNx_gelu``: Linear(v, h) then N-1 times (GELU, Linear(h, h)).
    - ``linear``: Linear(v, h).
    """
    if kind == "mlp4x_bott4x_gelu":
        wide = 4 * lm_size
        return nn.Sequential(
            nn.Linear(vision_size, wide),
            nn.GELU(),
            nn.Linear(wide, wide),
            nn.GELU(),
            nn.Linear(wide, wide),
            nn.Linear(wide, lm_size),
        )
    if kind == "linear":
        return nn.Sequential(nn.Linear(vision_size, lm_size))
    match = re.fullmatch(r"mlp(\d+)x_gelu", kind)
    if match and int(match.group(1)) >= 1:
        layers: list[nn.Module] = [nn.Linear(vision_size, lm_size)]
        for _ in range(int(match.group(1)) - 1):
            layers += [nn.GELU(), nn.Linear(lm_size, lm_size)]
        return nn.Sequential(*layers)
    raise ValueError(
        f"connector.type: unknown projector '{kind}' (known: mlp4x_bott4x_gelu, mlpNx_gelu, linear)"
    )
