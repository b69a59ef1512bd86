"""The naive reference path: what the same model does without the library's optimisations.

Defined as:

- glance: preprocess, a full vision-tower pass (``full``: transformers' forward, every
  layer, even those after the deepest one read), the connector, then
  ``OPTForCausalLM.generate`` with transformers' defaults (its own KV cache and search),
  told only what makes the output comparable: ``num_beams``, ``length_penalty``,
  ``early_stopping`` of the model's config and a fixed number of new tokens;
- attended regions: a second, teacher-forced LM pass over prompt + caption to read the
  caption tokens' attention (instead of capturing it while decoding), then the same boxes;
- refinement: a second full vision-tower pass (no reuse of the glance's hidden states),
  the connector again, DeepLens, and ``generate`` again for the refined caption.

The steps the library shares are timed under the model's stage names
(:mod:`~sharpeye_ros.model.timing`), the others under :data:`NAIVE_STAGES`: those of the
glance (:data:`NAIVE_GLANCE_STAGES`), then those of the refinement (:data:`NAIVE_REFINE_STAGES`).
"""

from __future__ import annotations

import numpy as np
import torch

from sharpeye_ros.model import Glance, SharpEyes
from sharpeye_ros.model.language import LanguageModel, Prompt
from sharpeye_ros.model.timing import CONNECTOR, PREPROCESS, REGIONS, VISION, Timer

NAIVE_GLANCE_STAGES: tuple[str, ...] = ("generate", "attention")
NAIVE_REFINE_STAGES: tuple[str, ...] = ("refine_vision", "refine_connector", "refine_generate")
NAIVE_STAGES = NAIVE_GLANCE_STAGES + NAIVE_REFINE_STAGES
GENERATE, ATTENTION = NAIVE_GLANCE_STAGES
REFINE_VISION, REFINE_CONNECTOR, REFINE_GENERATE = NAIVE_REFINE_STAGES


def hf_generate(
    lm: LanguageModel,
    prompt: Prompt,
    tokens: int,
    num_beams: int,
    length_penalty: float,
    early_stopping: bool,
) -> list[int]:
    """``tokens`` new token ids from transformers' ``generate`` on a batch-1 prompt."""
    search = (
        dict(num_beams=num_beams, length_penalty=length_penalty, early_stopping=early_stopping)
        if num_beams > 1
        else {}
    )  # transformers warns about beam settings in a greedy search
    out = lm.model.generate(
        inputs_embeds=prompt.embeds,
        attention_mask=prompt.attention_mask,
        max_new_tokens=tokens,
        min_new_tokens=tokens,
        do_sample=False,
        pad_token_id=lm.pad_id,
        eos_token_id=lm.eos_id,
        **search,
    )
    return out[0].tolist()


@torch.no_grad()
def naive_caption(model: SharpEyes, image: np.ndarray, timer: Timer, refine: bool = True) -> str:
    """Caption one RGB uint8 image the naive way (module docstring); returns the caption."""
    cfg, lm = model.config, model.lm
    g = cfg.generation
    with timer.stage(PREPROCESS):
        pixels, transforms = model.preprocess([image])
        pixels = pixels.to(model.device, model.dtype)
    with timer.stage(VISION):
        selected, _ = model.vision(pixels, full=True)
    with timer.stage(CONNECTOR):
        embeds = model.connector(selected)
    with timer.stage(GENERATE):
        ids = hf_generate(
            lm,
            lm.build_prompt(cfg.lm.prompt, embeds),
            g.max_new_tokens,
            g.num_beams,
            g.length_penalty,
            g.early_stopping,
        )
    caption = lm.decode(ids, g.stop, g.task)[0]
    with timer.stage(ATTENTION):
        target = lm.build_prompt(cfg.lm.prompt, embeds, targets=[lm.caption_ids(caption)])
        maps = lm.target_attention(target, model.attention_layers)
    with timer.stage(REGIONS):
        regions = model.caption_regions(maps, [caption], transforms, cfg.regions.num_regions)
    if not refine:
        return caption
    if model.deeplens is None:
        raise ValueError("naive_caption: refine=True but the model has no DeepLens")
    with timer.stage(REFINE_VISION):
        selected, features = model.vision(pixels, model.deeplens_layers, full=True)
    with timer.stage(REFINE_CONNECTOR):
        embeds = model.connector(selected)
    # DeepLens on the second pass's states (the library times it as "deeplens").
    second = Glance(transforms, embeds, features, [caption], maps, [[]], regions)
    refined = model.refined_embeddings([image], second, zoom=False, timer=timer)
    with timer.stage(REFINE_GENERATE):
        ids = hf_generate(
            lm,
            model.refine_prompt(second, refined),
            g.max_new_tokens,
            g.refine_num_beams or g.num_beams,
            g.length_penalty,
            g.early_stopping,
        )
    return lm.decode(ids, g.stop, g.task)[0]
