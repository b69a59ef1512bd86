"""The Sharp-Eyes captioning specialist: glance, attended regions, DeepLens refinement.

``caption`` is the entry point: a glance (vision tower -> connector -> OPT) writes the
initial caption while its tokens' attention over the patches is captured; that
attention gives the attended regions; DeepLens then refines the visual embeddings from
the same vision pass (plus, with zoom, sharp crops of those regions) and the LM writes
the refined caption.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from sharpeye_ros.model.checkpoint import build_from_state, read_checkpoint, save_checkpoint
from sharpeye_ros.model.config import TASKS, SharpEyesConfig
from sharpeye_ros.model.connector import build_connector
from sharpeye_ros.model.decoding import generate
from sharpeye_ros.model.deeplens import DeepLens, ZoomTokens
from sharpeye_ros.model.language import LanguageModel, Prompt
from sharpeye_ros.model.preprocess import ImageProcessor, ImageTransform, check_image, square_crop
from sharpeye_ros.model.regions import Region, find_regions, heat_boxes, valid_cells
from sharpeye_ros.model.timing import REFINE_DECODE, REFINE_PREFILL, Timer
from sharpeye_ros.model.vision import VisionTower, resolve_layer

PARAMETER_GROUPS = ("vision", "connector", "lm", "deeplens")


@dataclass
class CaptionResult:
    """One image's caption. ``timings``: seconds per stage (for a batch call, the
    whole batch's time, the same dict for every image). Stages: preprocess, vision,
    connector, prefill, decode, regions, zoom, deeplens, refine_prefill, refine_decode."""

    caption: str
    initial_caption: str
    refined: bool
    zoomed: bool
    regions: list[Region]
    timings: dict[str, float] = field(default_factory=dict)


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


class SharpEyes(nn.Module):
    """Vision tower (``vision``), connector (``connector``), OPT (``lm``), DeepLens (``deeplens``)."""

    def __init__(
        self,
        config: SharpEyesConfig,
        vision: VisionTower,
        connector: nn.Module,
        lm: LanguageModel,
        deeplens: Optional[DeepLens] = None,
        model_id: str = "",
    ) -> None:
        super().__init__()
        self.config = config
        self.vision = vision
        self.connector = connector
        self.lm = lm
        self.deeplens = deeplens
        self.model_id = model_id
        v = config.vision
        self.processor = ImageProcessor(
            vision.image_size, tuple(v.pad_color), tuple(v.image_mean), tuple(v.image_std)
        )
        self.deeplens_layers: tuple[int, ...] = ()
        n = lm.num_layers
        self.attention_layers: tuple[int, ...] = tuple(
            config.regions.attention_layers or range(n // 3, max(n // 3 + 1, 2 * n // 3))
        )
        if config.deeplens is not None:
            self.deeplens_layers = tuple(
                resolve_layer(i, vision.num_layers, "deeplens.layers") for i in config.deeplens.layers
            )

    # ---- construction and checkpoints ----------------------------------------------
    @classmethod
    def from_config(cls, config: SharpEyesConfig, tokenizer=None) -> "SharpEyes":
        """Build from a config: random weights for inline tower configs, pretrained ones
        for ``name_or_path`` towers; connector and DeepLens are freshly initialised."""
        config.validate()
        vision = VisionTower.from_config(config.vision)
        lm = LanguageModel.from_config(config.lm, tokenizer=tokenizer)
        connector = build_connector(config.connector.type, vision.hidden_size, lm.hidden_size)
        deeplens = None
        if config.deeplens is not None:
            deeplens = DeepLens(
                config.deeplens, vision.hidden_size, lm.hidden_size, vision.grid, config.zoom.pool
            )
        model_id = config.vision.name_or_path or config.lm.name_or_path or "random-init"
        return cls(config, vision, connector, lm, deeplens, model_id=model_id)

    @classmethod
    def from_pretrained(
        cls,
        path: Union[str, os.PathLike],
        device: Union[str, torch.device] = "cpu",
        dtype: Optional[torch.dtype] = torch.float32,
    ) -> "SharpEyes":
        """Load a model directory in our format (see :mod:`sharpeye_ros.model.checkpoint`)."""
        config, state, tokenizer, source = read_checkpoint(path)
        model = cls.from_state(config, state, source, tokenizer, dtype)
        model.model_id = str(Path(path))
        return model.to(device=device).eval()

    @classmethod
    def from_state(
        cls,
        config: SharpEyesConfig,
        state: dict[str, torch.Tensor],
        source: str,
        tokenizer,
        dtype: Optional[torch.dtype] = None,
    ) -> "SharpEyes":
        """A model of ``config`` holding the weights ``state`` (checked first; ``source``
        names them in errors), every weight in ``dtype`` (None: the widest stored)."""
        return build_from_state(lambda: cls.from_config(config, tokenizer=tokenizer), state, source, dtype)

    def save_pretrained(self, directory: Union[str, os.PathLike]) -> None:
        """Write config.json, model.safetensors and the tokenizer files to ``directory``."""
        save_checkpoint(self, directory)

    def tied_keys(self) -> list[str]:
        """State-dict keys that share storage with another key (the LM head)."""
        lm = self.lm.model
        if lm.lm_head.weight is lm.get_input_embeddings().weight:
            return ["lm.model.lm_head.weight"]
        return []

    def tie_weights(self) -> None:
        """Share the LM head with the input embeddings when the LM config ties them."""
        lm = self.lm.model
        if getattr(lm.config, "tie_word_embeddings", True):
            lm.lm_head.weight = lm.get_input_embeddings().weight

    # ---- devices and training helpers ----------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters by group: vision, connector, lm, deeplens (empty without DeepLens)."""
        return {
            name: list(getattr(self, name).parameters()) if getattr(self, name) is not None else []
            for name in PARAMETER_GROUPS
        }

    def set_trainable(self, *groups: str) -> None:
        """Make only ``groups`` trainable, e.g. ``set_trainable("connector", "lm")``."""
        unknown = [g for g in groups if g not in PARAMETER_GROUPS]
        if unknown:
            raise ValueError(f"set_trainable: unknown group(s) {unknown}; known: {list(PARAMETER_GROUPS)}")
        for name, params in self.parameter_groups().items():
            for p in params:
                p.requires_grad_(name in groups)

    def preprocess(
        self, images: Sequence[np.ndarray], device: Optional[Union[str, torch.device]] = None
    ) -> tuple[torch.Tensor, list[ImageTransform]]:
        """RGB uint8 HxWx3 images -> (float32 pixels (B, 3, S, S) on ``device``
        (default CPU, e.g. for a dataset), transforms)."""
        return self.processor(images, device=device)

    def encode(
        self, pixels: torch.Tensor, with_features: bool = False
    ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Pixels -> (connector embeddings (B, N, D_lm), DeepLens-layer features or None).
        The vision tower runs without gradients unless one of its parameters is trainable."""
        selected, features = self._vision(pixels, self.deeplens_layers if with_features else None)
        return self.connector(selected), features

    def _vision(self, pixels: torch.Tensor, layers) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        # The frozen tower needs no autograd graph, even inside a training step.
        grad = torch.is_grad_enabled() and any(p.requires_grad for p in self.vision.parameters())
        with torch.set_grad_enabled(grad):
            return self.vision(pixels.to(self.device, self.dtype), layers)

    # ---- inference -----------------------------------------------------------------
    @torch.no_grad()
    def caption(
        self,
        images: Sequence[np.ndarray],
        refine: Optional[bool] = None,
        zoom: Optional[bool] = None,
        num_regions: Optional[int] = None,
        timer: Optional[Timer] = None,
        task: Optional[str] = None,
    ) -> list[CaptionResult]:
        """Caption RGB uint8 HxWx3 images (sizes may differ), all in one batch.

        ``refine`` / ``zoom`` / ``num_regions`` / ``task``: None takes the config's
        default. Zoom only acts when refining. ``task``: "coco" (the caption as decoded)
        or "detailed" (its first three sentences), the paper's two evaluations. Timings
        are the batch's totals (``timer``: a :class:`Timer` to collect them in, e.g. one
        that also counts FLOPs).
        """
        images = list(images)
        task = self._task(task)
        refine = self.config.refine if refine is None else bool(refine)
        zoom = self.config.zoom.enabled if zoom is None else bool(zoom)
        num_regions = self.config.regions.num_regions if num_regions is None else int(num_regions)
        if refine and self.deeplens is None:
            raise ValueError("caption: refine=True but this model has no DeepLens (config.deeplens is None)")
        zoom = zoom and refine
        timer = timer or Timer(self.device)
        glance = self.glance(
            images,
            num_regions=num_regions,
            with_features=refine,
            timer=timer,
            min_regions=self.config.zoom.num_crops if zoom else 0,
            task=task,
        )
        finals, regions = glance.captions, glance.regions
        if refine:
            finals = self.refine(images, glance, zoom=zoom, timer=timer, task=task)
            with timer.stage("refine_regions"):
                regions = self.final_regions(glance, finals, num_regions)
        return [
            CaptionResult(
                caption=final,
                initial_caption=initial,
                refined=refine,
                zoomed=zoom,
                regions=regs[:num_regions],
                timings=dict(timer.times),
            )
            for final, initial, regs in zip(finals, glance.captions, regions)
        ]

    def final_regions(self, glance: Glance, finals: Sequence[str], num_regions: int) -> list[list[Region]]:
        """Attended regions of the final captions: the glance's where a caption is
        unchanged, else from the final caption's own attention over the glance's patches
        (teacher-forced on the glance's kept prompt: its phrases are the final caption's)."""
        changed = [f != c for f, c in zip(finals, glance.captions)]
        if num_regions <= 0 or not any(changed):
            return list(glance.regions)
        if glance.prompt is None or not glance.prompt_kv:
            raise ValueError("final_regions: the glance kept no prompt (run it with with_features=True)")
        ids = [self.lm.caption_ids(f) for f in finals]
        maps = self.lm.continuation_attention(glance.prompt, glance.prompt_kv, ids, self.attention_layers)
        return [
            self._caption_regions(m, final, t, num_regions) if new else kept
            for final, m, t, new, kept in zip(finals, maps, glance.transforms, changed, glance.regions)
        ]

    @torch.no_grad()
    def glance(
        self,
        images: Sequence[np.ndarray],
        num_regions: Optional[int] = None,
        with_features: bool = False,
        timer: Optional[Timer] = None,
        min_regions: int = 0,
        task: Optional[str] = None,
    ) -> Glance:
        """The first look: initial captions, their attention maps and attended regions
        (``max(num_regions, min_regions)`` per image); ``task`` as in :meth:`caption`."""
        timer = timer or Timer(self.device)
        task = self._task(task)
        cfg = self.config
        num_regions = cfg.regions.num_regions if num_regions is None else num_regions
        want_regions = max(num_regions, min_regions)
        with timer.stage("preprocess"):
            pixels, transforms = self.preprocess(images, device=self.device)
            pixels = pixels.to(self.dtype)
        with timer.stage("vision"):
            selected, features = self.vision(pixels, self.deeplens_layers if with_features else None)
        with timer.stage("connector"):
            embeds = self.connector(selected)
        capture = want_regions > 0 or with_features
        with timer.stage("prefill"):  # building the prompt is part of the prefill's work
            prompt = self.lm.build_prompt(cfg.lm.prompt, embeds)
        g = cfg.generation
        prompt_kv: list = []
        generated = generate(
            self.lm,
            prompt,
            g,
            attention_layers=self.attention_layers if capture else None,
            timer=timer,
            keep_prompt=prompt_kv if with_features else None,
        )
        with timer.stage("regions"):
            captions, spans, maps = [], [], []
            for gen in generated:
                text, token_spans = self.lm.decode(gen.ids, g.stop, task)
                captions.append(text)
                spans.append(token_spans)
                maps.append(gen.attention)
            regions = [
                self._regions(m, s, c, t, want_regions)
                for m, s, c, t in zip(maps, spans, captions, transforms)
            ]
        kept = prompt if with_features else None
        return Glance(transforms, embeds, features, captions, maps, spans, regions, kept, prompt_kv)

    def _caption_regions(self, token_maps, caption: str, transform, num_regions: int) -> list[Region]:
        """Regions of a given caption from its teacher-forced maps (EOS included)."""
        if num_regions <= 0:
            return []
        text, spans = self.lm.decode(self.lm.caption_ids(caption) + [self.lm.eos_id])
        return self._regions(token_maps, spans, text, transform, num_regions)

    def _regions(self, token_maps, spans, caption, transform, num_regions) -> list[Region]:
        if token_maps is None or num_regions <= 0:
            return []
        r = self.config.regions
        return find_regions(
            token_maps.float().cpu().numpy(),
            spans,
            caption,
            transform,
            num_regions,
            r.threshold,
            r.max_boxes_per_phrase,
            r.nms_iou,
            r.contrast,
            r.function_words,
        )

    def _task(self, task: Optional[str]) -> str:
        """The post-processing to use: ``task``, or the config's when None."""
        task = self.config.generation.task if task is None else task
        if task not in TASKS:
            raise ValueError(f"caption: task must be one of {list(TASKS)}, got {task!r}")
        return task

    @torch.no_grad()
    def refine(
        self,
        images: Sequence[np.ndarray],
        glance: Glance,
        zoom: bool = False,
        timer: Optional[Timer] = None,
        task: Optional[str] = None,
    ) -> list[str]:
        """Refined captions from a glance (and the same images, for zoom crops)."""
        task = self._task(task)
        if self.deeplens is None:
            raise ValueError("refine: this model has no DeepLens (config.deeplens is None)")
        if glance.features is None:
            raise ValueError("refine: the glance ran without with_features=True")
        timer = timer or Timer(self.device)
        refined = self.refined_embeddings(images, glance, zoom, timer)
        g = self.config.generation
        beams = g.refine_num_beams or g.num_beams
        with timer.stage("refine_prefill"):  # building the prompt is part of the prefill's work
            prompt = self.refine_prompt(glance, refined)
            drafts = [self.lm.caption_ids(c) for c in glance.captions] if beams == 1 and g.draft else None
        generated = generate(
            self.lm,
            prompt,
            dataclasses.replace(g, num_beams=beams),
            timer=timer,
            stages=(REFINE_PREFILL, REFINE_DECODE),
            drafts=drafts,
        )
        with timer.stage("refine_decode"):
            return [self.lm.decode(gen.ids, g.stop, task)[0] for gen in generated]

    def refined_embeddings(
        self,
        images: Sequence[np.ndarray],
        glance: Glance,
        zoom: bool = False,
        timer: Optional[Timer] = None,
        zoom_tokens: Optional[ZoomTokens] = None,
    ) -> torch.Tensor:
        """DeepLens on a glance's outputs: the refined visual embeddings (B, M, D_lm)
        (shared by inference and the stage-2 loss). ``images``: for zoom crops;
        ``zoom_tokens``: crops already cut by :meth:`zoom_crops`, used instead."""
        timer = timer or Timer(self.device)
        embeds, token_maps = glance.embeds, glance.token_maps
        if zoom and zoom_tokens is None:
            with timer.stage("zoom"):
                zoom_tokens = self.zoom_crops(images, glance)
        with timer.stage("deeplens"):
            ids = [self.lm.caption_ids(c) for c in glance.captions]
            length = max(1, max(len(i) for i in ids))
            padded = torch.full((len(ids), length), self.lm.pad_id, dtype=torch.long)
            mask = torch.zeros((len(ids), length), dtype=torch.bool)
            for b, row in enumerate(ids):
                padded[b, : len(row)] = torch.tensor(row, dtype=torch.long)
                mask[b, : len(row)] = True
            caption = self.lm.embed(padded.to(self.device)).to(embeds.dtype)
            heat = torch.stack([self._heat(m, embeds.shape[1]) for m in token_maps]).to(embeds)
            return self.deeplens(glance.features, embeds, heat, caption, mask.to(self.device), zoom_tokens)

    def _heat(self, token_maps: Optional[torch.Tensor], n: int) -> torch.Tensor:
        """The caption's mean attention per patch, scaled to a peak of 1."""
        if token_maps is None or len(token_maps) == 0:
            return torch.zeros(n, device=self.device)
        heat = token_maps.float().mean(0)
        return heat / heat.max().clamp(min=1e-12)

    def _zoom_boxes(
        self,
        image: np.ndarray,
        transform: ImageTransform,
        regions: list[Region],
        token_maps: Optional[torch.Tensor],
    ) -> list[np.ndarray]:
        """Source-pixel boxes to zoom into: the top regions, then peaks of the whole
        caption's heat map, then the whole image."""
        n = self.config.zoom.num_crops
        boxes = [np.array([r.x_min, r.y_min, r.x_max, r.y_max]) for r in regions[:n]]
        if len(boxes) < n and token_maps is not None and len(token_maps):
            grid = self.vision.grid
            heat = token_maps.float().mean(0).cpu().numpy().reshape(grid, grid)
            cell = transform.size / grid
            for (r0, c0, r1, c1), _ in heat_boxes(
                heat, valid_cells(transform, grid), self.config.regions.threshold, n - len(boxes)
            ):
                boxes.append(transform.to_source(np.array([c0 * cell, r0 * cell, c1 * cell, r1 * cell])))
        while len(boxes) < n:
            boxes.append(np.array([0.0, 0.0, image.shape[1], image.shape[0]]))
        return boxes

    def zoom_crops(self, images: Sequence[np.ndarray], glance: Glance) -> ZoomTokens:
        """Crops of the glance's top attended regions from the full-resolution images,
        re-encoded."""
        z = self.config.zoom
        crops, boxes, source = [], [], []
        for image, transform, regs, maps in zip(images, glance.transforms, glance.regions, glance.token_maps):
            image = check_image(image)
            for box in self._zoom_boxes(image, transform, regs, maps):
                crop, crop_box = square_crop(image, box, z.margin, z.min_size)
                crops.append(crop)
                source.append(crop_box)
                boxes.append(transform.to_model(crop_box) / transform.size)
        pixels, _ = self.preprocess(crops, device=self.device)
        selected, features = self._vision(pixels, self.deeplens_layers)
        base = self.connector(selected)
        b, c = len(images), z.num_crops
        box_tensor = torch.tensor(np.stack(boxes), dtype=base.dtype, device=self.device)
        return ZoomTokens(
            features.view(b, c, *features.shape[1:]),
            base.view(b, c, *base.shape[1:]),
            box_tensor.view(b, c, 4),
            np.stack(source).reshape(b, c, 4),
        )

    # ---- attention of given captions (no generation) -------------------------------
    @torch.no_grad()
    def attention_maps(self, images_or_pixels, captions: Sequence[str]) -> list[torch.Tensor]:
        """Teacher-forced attention of each caption's tokens (EOS included) over the
        patches: a list of (T, N) tensors. Takes images or preprocessed pixels."""
        pixels = self._pixels(images_or_pixels)
        embeds, _ = self.encode(pixels)
        prompt = self.lm.build_prompt(
            self.config.lm.prompt, embeds, targets=[self.lm.caption_ids(c) for c in captions]
        )
        return self.lm.target_attention(prompt, self.attention_layers)

    @torch.no_grad()
    def regions_for(
        self, images: Sequence[np.ndarray], captions: Sequence[str], num_regions: Optional[int] = None
    ) -> list[list[Region]]:
        """Attended regions of given captions (e.g. references), without generating."""
        num_regions = self.config.regions.num_regions if num_regions is None else num_regions
        pixels, transforms = self.preprocess(images, device=self.device)
        maps = self.attention_maps(pixels, captions)
        return [self._caption_regions(m, c, t, num_regions) for m, c, t in zip(maps, captions, transforms)]

    # ---- training losses -----------------------------------------------------------
    def _pixels(self, images_or_pixels) -> torch.Tensor:
        if isinstance(images_or_pixels, torch.Tensor):
            return images_or_pixels.to(self.device, self.dtype)
        return self.preprocess(images_or_pixels, device=self.device)[0].to(self.device, self.dtype)

    def glance_loss(self, images_or_pixels, captions: Sequence[str]) -> torch.Tensor:
        """Teacher-forced caption loss of the glance (connector pretraining, stage 1).
        ``images_or_pixels``: RGB images or pixels from :meth:`preprocess`."""
        embeds, _ = self.encode(self._pixels(images_or_pixels))
        prompt = self.lm.build_prompt(
            self.config.lm.prompt, embeds, targets=[self.lm.caption_ids(c) for c in captions]
        )
        return self.lm.loss(prompt)

    def glance_of(self, images: Sequence[np.ndarray], captions: Sequence[str], num_regions: int = 0) -> Glance:
        """The glance that would have written ``captions`` (teacher-forced): embeddings,
        DeepLens-layer features, the captions' attention and ``num_regions`` regions each."""
        pixels, transforms = self.preprocess(images, device=self.device)
        embeds, features = self.encode(pixels.to(self.device, self.dtype), with_features=True)
        captions = [c.strip() for c in captions]
        with torch.no_grad():
            prompt = self.lm.build_prompt(
                self.config.lm.prompt, embeds.detach(), targets=[self.lm.caption_ids(c) for c in captions]
            )
            maps = self.lm.target_attention(prompt, self.attention_layers)
        regions = [self._caption_regions(m, c, t, num_regions) for m, c, t in zip(maps, captions, transforms)]
        return Glance(transforms, embeds, features, captions, list(maps), [], regions)

    def refine_prompt(self, glance: Glance, refined: torch.Tensor, targets: Optional[Sequence[str]] = None):
        """The refinement's LM input: the refine prompt with the refined embeddings and the
        glance's captions, followed by ``targets`` when training."""
        return self.lm.build_prompt(
            self.config.lm.refine_prompt,
            refined,
            captions=glance.captions,
            targets=None if targets is None else [self.lm.caption_ids(c) for c in targets],
        )

    def refine_loss(
        self,
        images: Sequence[np.ndarray],
        initial_captions: Sequence[str],
        target_captions: Sequence[str],
        zoom: Optional[bool] = None,
    ) -> torch.Tensor:
        """Stage-2 loss: the refined caption given the images and an initial caption.
        The glance attention comes from the initial caption, teacher-forced."""
        if self.deeplens is None:
            raise ValueError("refine_loss: this model has no DeepLens (config.deeplens is None)")
        zoom = self.config.zoom.enabled if zoom is None else zoom
        glance = self.glance_of(images, initial_captions, self.config.zoom.num_crops if zoom else 0)
        refined = self.refined_embeddings(images, glance, zoom)
        return self.lm.loss(self.refine_prompt(glance, refined, target_captions))
