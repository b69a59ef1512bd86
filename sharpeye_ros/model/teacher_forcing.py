"""SharpEyes's training passes, teacher-forced: the glance's caption loss (connector
pretraining, stage 1) and the refinement's (stage 2), each one pass that also returns what
the auxiliary losses read (attention maps with gradients, the vision features, the zoom
tokens). A mixin of :class:`~sharpeye_ros.model.sharpeyes.SharpEyes`, which supplies
``encode``, ``zoom_crops``, ``refined_embeddings``, ``refine_prompt`` and ``caption_regions``.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from sharpeye_ros.model.language import Prompt
from sharpeye_ros.model.outputs import Glance, TeacherForced


class TeacherForcing:
    """The teacher-forced passes of :class:`~sharpeye_ros.model.sharpeyes.SharpEyes`."""

    def teacher_forced_glance(self, images_or_pixels, captions: Sequence[str],
                              attention: bool = False) -> TeacherForced:
        """The glance's caption loss of ``captions`` (connector pretraining, stage 1), from
        images or pixels from :meth:`preprocess`; ``attention``: with the targets' maps."""
        encoded = self.encode(self._pixels(images_or_pixels))
        ids = [self.lm.caption_ids(c) for c in captions]
        prompt = self.lm.build_prompt(self.config.lm.prompt, encoded.embeds, targets=ids)
        loss, maps = self._loss(prompt, attention)
        return TeacherForced(loss, maps, encoded.embeds, encoded.patches, [])

    def teacher_forced_refine(
        self,
        images: Sequence[np.ndarray],
        initial_captions: Sequence[str],
        target_captions: Sequence[str],
        zoom: Optional[bool] = None,
        attention: bool = False,
        pixels: Optional[torch.Tensor] = None,
    ) -> TeacherForced:
        """Stage 2: the refined caption's loss given the images and an initial caption,
        whose glance attention is teacher-forced. ``pixels``: the images' glance pixels,
        preprocessed earlier (a dataset's); ``attention`` as in :meth:`teacher_forced_glance`."""
        if self.deeplens is None:
            raise ValueError("teacher_forced_refine: this model has no DeepLens (config.deeplens is None)")
        zoom = self.config.zoom.enabled if zoom is None else zoom
        crops = self.config.zoom.num_crops if zoom else 0
        glance = self._forced_glance(images, initial_captions, crops, pixels)
        tokens = self.zoom_crops(images, glance) if zoom else None
        refined = self.refined_embeddings(images, glance, zoom_tokens=tokens)
        loss, maps = self._loss(self.refine_prompt(glance, refined, target_captions), attention)
        return TeacherForced(loss, maps, refined, None, glance.transforms, tokens)

    def glance_loss(self, images_or_pixels, captions: Sequence[str]) -> torch.Tensor:
        """:meth:`teacher_forced_glance`'s loss."""
        return self.teacher_forced_glance(images_or_pixels, captions).loss

    def refine_loss(self, images: Sequence[np.ndarray], initial_captions: Sequence[str],
                    target_captions: Sequence[str], zoom: Optional[bool] = None,
                    pixels: Optional[torch.Tensor] = None) -> torch.Tensor:
        """:meth:`teacher_forced_refine`'s loss."""
        return self.teacher_forced_refine(images, initial_captions, target_captions, zoom, pixels=pixels).loss

    def _forced_glance(self, images, captions: Sequence[str], num_regions: int,
                       pixels: Optional[torch.Tensor] = None) -> Glance:
        """The glance that would have written ``captions`` (teacher-forced): embeddings,
        DeepLens-layer features, the captions' attention and ``num_regions`` regions each.
        ``pixels``: the images' glance pixels, preprocessed earlier."""
        if pixels is None:
            pixels, transforms = self.preprocess(images, device=self.device)
        else:
            transforms = [self.processor.transform(im.shape[1], im.shape[0]) for im in images]
        encoded = self.encode(pixels.to(self.device, self.dtype), with_features=True)
        captions = [c.strip() for c in captions]
        with torch.no_grad():
            ids = [self.lm.caption_ids(c) for c in captions]
            prompt = self.lm.build_prompt(self.config.lm.prompt, encoded.embeds.detach(), targets=ids)
            maps = self.lm.target_attention(prompt, self.attention_layers)
        regions = self.caption_regions(maps, captions, transforms, num_regions)
        return Glance(transforms, encoded.embeds, encoded.features, captions, list(maps), [], regions)

    def _loss(self, prompt: Prompt, attention: bool) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """A teacher-forced prompt's loss, and with ``attention`` its targets' maps with gradients."""
        if attention:
            return self.lm.forced_attention(prompt, self.attention_layers, loss=True, detach=False)
        return self.lm.loss(prompt), None
