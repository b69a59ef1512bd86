"""The Sharp-Eyes captioning specialist: glance, attended regions, DeepLens refinement.

``caption`` is the entry point, two steps: :meth:`SharpEyes.glance` (vision tower ->
connector -> OPT) writes the initial caption while its tokens' attention over the patches
is captured, which gives the attended regions; :meth:`SharpEyes.finish` keeps it, or has
DeepLens refine the visual embeddings from the same vision pass (plus, with zoom, sharp
crops of those regions) and the LM write the refined caption, grounded by its own words.
Training uses the teacher-forced passes (:mod:`~sharpeye_ros.model.teacher_forcing`).
"""

from __future__ import annotations

import dataclasses
import os
from contextlib import nullcontext
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from sharpeye_ros.model.checkpoint import build_from_state, read_checkpoint, save_checkpoint
from sharpeye_ros.model.config import TASKS, SharpEyesConfig
from sharpeye_ros.model.connector import build_connector
from sharpeye_ros.model.decoding import generate
from sharpeye_ros.model.deeplens import DeepLens, ZoomTokens, attention_heat
from sharpeye_ros.model.language import LanguageModel, Prompt
from sharpeye_ros.model.outputs import CaptionResult, Encoded, Glance
from sharpeye_ros.model.precision import Precision, apply as apply_precision, resolve as resolve_precision
from sharpeye_ros.model.teacher_forcing import TeacherForcing
from sharpeye_ros.model.preprocess import ImageProcessor, ImageTransform, check_image, square_crop
from sharpeye_ros.model.regions import Region, find_regions, zoom_boxes
from sharpeye_ros.model.timing import (
    CONNECTOR,
    DEEPLENS,
    PREFILL,
    PREPROCESS,
    REFINE_DECODE,
    REFINE_PREFILL,
    REFINE_REGIONS,
    REGIONS,
    VISION,
    ZOOM,
    Timer,
)
from sharpeye_ros.model.vision import VisionTower, resolve_layer

PARAMETER_GROUPS = ("vision", "connector", "lm", "deeplens")


class SharpEyes(TeacherForcing, nn.Module):
    """Vision tower (``vision``), connector (``connector``), OPT (``lm``), DeepLens (``deeplens``)."""

    def __init__(self, config: SharpEyesConfig, vision: VisionTower, connector: nn.Module, lm: LanguageModel,
                 deeplens: Optional[DeepLens] = None, model_id: str = "") -> None:
        super().__init__()
        self.config, self.vision, self.connector, self.lm = config, vision, connector, lm
        self.deeplens, self.model_id = deeplens, model_id
        self.precision = Precision("float32", torch.float32)  # set by precision.apply
        v = config.vision
        self.processor = ImageProcessor(
            vision.image_size, tuple(v.pad_color), tuple(v.image_mean), tuple(v.image_std)
        )
        n = lm.num_layers
        self.attention_layers: tuple[int, ...] = tuple(
            config.regions.attention_layers or range(n // 3, max(n // 3 + 1, 2 * n // 3))
        )
        self.deeplens_layers: tuple[int, ...] = () if config.deeplens is None else tuple(
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
        deeplens = None if config.deeplens is None else DeepLens(
            config.deeplens, vision.hidden_size, lm.hidden_size, vision.grid, config.zoom.pool
        )
        model_id = config.vision.name_or_path or config.lm.name_or_path or "random-init"
        return cls(config, vision, connector, lm, deeplens, model_id=model_id)

    @classmethod
    def from_pretrained(cls, path: Union[str, os.PathLike], device: Union[str, torch.device] = "cpu",
                        dtype: Union[torch.dtype, str, None] = torch.float32) -> "SharpEyes":
        """Load a model directory in our format (see :mod:`sharpeye_ros.model.checkpoint`).

        ``dtype``: a float ``torch.dtype``; None: the widest stored; or a precision name
        of :mod:`sharpeye_ros.model.precision`: "float32", "float16", "bfloat16", "int8",
        "int8-vision" or "bfloat16-mixed" (the CPU's fast paths, converted here at load) or
        "auto" (float16 on CUDA; on a CPU bfloat16-mixed with AMX, else int8-vision with
        AVX2, else float32:
        :func:`sharpeye_ros.model.precision.resolve`). ``model.precision`` says which one runs."""
        chosen = None if dtype is None else resolve_precision(dtype, device)
        config, state, tokenizer, source = read_checkpoint(path)
        model = cls.from_state(config, state, source, tokenizer, None if chosen is None else chosen.dtype)
        model.model_id = str(Path(path))
        model = model.to(device=device).eval()
        return apply_precision(model, chosen or resolve_precision(model.dtype, device))

    @classmethod
    def from_state(cls, config: SharpEyesConfig, state: dict[str, torch.Tensor], source: str, tokenizer,
                   dtype: Optional[torch.dtype] = None) -> "SharpEyes":
        """A model of ``config`` holding the weights ``state`` (checked first; ``source``
        names them in errors), every weight in ``dtype`` (None: the widest stored)."""
        return build_from_state(lambda: cls.from_config(config, tokenizer=tokenizer), state, source, dtype)

    def save_pretrained(self, directory: Union[str, os.PathLike]) -> None:
        """Write config.json, model.safetensors and the tokenizer files to ``directory``
        (a float model: an int8 or bfloat16-mixed one is converted at load, from its float
        checkpoint)."""
        if self.precision.converted:
            raise ValueError(f"save_pretrained: this model runs in {self.precision.name}, converted at load; save "
                             "the float model it was loaded from (load it with dtype=torch.float32)")
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
        return {name: list(getattr(self, name).parameters()) if getattr(self, name) is not None else []
                for name in PARAMETER_GROUPS}

    def set_trainable(self, *groups: str) -> None:
        """Make only ``groups`` trainable, e.g. ``set_trainable("connector", "lm")``."""
        unknown = [g for g in groups if g not in PARAMETER_GROUPS]
        if unknown:
            raise ValueError(f"set_trainable: unknown group(s) {unknown}; known: {list(PARAMETER_GROUPS)}")
        for name, params in self.parameter_groups().items():
            for p in params:
                p.requires_grad_(name in groups)

    # ---- the steps -----------------------------------------------------------------
    def preprocess(
        self, images: Sequence[np.ndarray], device: Optional[Union[str, torch.device]] = None
    ) -> tuple[torch.Tensor, list[ImageTransform]]:
        """RGB uint8 HxWx3 images -> (float32 pixels (B, 3, S, S) on ``device``
        (default CPU, e.g. for a dataset), transforms)."""
        return self.processor(images, device=device)

    def encode(self, pixels: torch.Tensor, with_features: bool = False,
               timer: Optional[Timer] = None) -> Encoded:
        """Pixels -> the vision tower's selected layer, the connector's embeddings of it and,
        ``with_features``, the DeepLens layers; ``timer`` gets the vision and connector
        stages. The tower runs without gradients unless one of its parameters is trainable."""
        grad = torch.is_grad_enabled() and any(p.requires_grad for p in self.vision.parameters())
        with _stage(timer, VISION), torch.set_grad_enabled(grad):
            layers = self.deeplens_layers if with_features else None
            patches, features = self.vision(pixels.to(self.device, self.dtype), layers)
        with _stage(timer, CONNECTOR):
            embeds = self.connector(patches)
        return Encoded(patches, embeds, features)

    @torch.no_grad()
    def caption(self, images: Sequence[np.ndarray], refine: Optional[bool] = None,
                zoom: Optional[bool] = None, num_regions: Optional[int] = None, timer: Optional[Timer] = None,
                task: Optional[str] = None, draft: Optional[bool] = None) -> list[CaptionResult]:
        """Caption RGB uint8 HxWx3 images (sizes may differ), all in one batch:
        :meth:`glance`, then :meth:`finish`.

        ``refine`` / ``zoom`` / ``num_regions`` / ``task`` / ``draft``: None takes the
        config's default. Zoom only acts when refining. ``task``: "coco" (the caption as
        decoded) or "detailed" (its first three sentences), the paper's two evaluations.
        ``draft``: decode a greedy refined caption with the initial one as a draft (the
        same caption in fewer LM passes). Timings are the batch's totals (``timer``: a
        :class:`Timer` to collect them in, e.g. one that also counts FLOPs).
        """
        images = list(images)
        task = self._task(task)
        refine, zoom = self._switches(refine, zoom, "caption")
        timer = timer or Timer(self.device)
        glance = self.glance(images, num_regions, refine=refine, zoom=zoom, timer=timer, task=task)
        return self.finish(images, glance, refine, zoom, num_regions, timer, task, draft)

    @torch.no_grad()
    def glance(self, images: Sequence[np.ndarray], num_regions: Optional[int] = None, refine: bool = False,
               zoom: bool = False, timer: Optional[Timer] = None, task: Optional[str] = None) -> Glance:
        """The first look: initial captions, their attention maps and attended regions;
        ``task`` as in :meth:`caption`. ``refine``: keep what :meth:`finish` needs to refine
        it (the DeepLens layers, the prompt); ``zoom``: and at least ``zoom.num_crops``
        regions per image to zoom into."""
        timer = timer or Timer(self.device)
        task = self._task(task)
        cfg = self.config
        num_regions = cfg.regions.num_regions if num_regions is None else num_regions
        want_regions = max(num_regions, cfg.zoom.num_crops if zoom else 0)
        with timer.stage(PREPROCESS):
            pixels, transforms = self.preprocess(images, device=self.device)
            pixels = pixels.to(self.dtype)
        encoded = self.encode(pixels, with_features=refine, timer=timer)
        capture = want_regions > 0 or refine
        with timer.stage(PREFILL):  # building the prompt is part of the prefill's work
            prompt = self.lm.build_prompt(cfg.lm.prompt, encoded.embeds)
        g = cfg.generation
        prompt_kv: list = []
        generated = generate(self.lm, prompt, g, attention_layers=self.attention_layers if capture else None,
                             timer=timer, keep_prompt=prompt_kv if refine else None)
        with timer.stage(REGIONS):
            captions, spans, maps = [], [], []
            for gen in generated:
                text, token_spans = self.lm.decode(gen.ids, g.stop, task)
                captions.append(text)
                spans.append(token_spans)
                maps.append(gen.attention)
            regions = [self._regions(m, s, c, t, want_regions)
                       for m, s, c, t in zip(maps, spans, captions, transforms)]
        kept = prompt if refine else None
        return Glance(transforms, encoded.embeds, encoded.features, captions, maps, spans, regions, kept,
                      prompt_kv)

    @torch.no_grad()
    def finish(self, images: Sequence[np.ndarray], glance: Glance, refine: Optional[bool] = None,
               zoom: Optional[bool] = None, num_regions: Optional[int] = None, timer: Optional[Timer] = None,
               task: Optional[str] = None, draft: Optional[bool] = None) -> list[CaptionResult]:
        """The step after a glance of ``images``: its own captions and regions, or with
        ``refine`` the refined captions (DeepLens, with ``zoom`` crops of the glance's top
        regions) with their own words' regions. Arguments as in :meth:`caption`; refining
        needs a glance made with ``refine`` (and ``zoom``). One glance can be finished in
        several ways (evaluation compares them)."""
        task = self._task(task)
        refine, zoom = self._switches(refine, zoom, "finish")
        num_regions = self.config.regions.num_regions if num_regions is None else int(num_regions)
        timer = timer or Timer(self.device)
        finals, regions = glance.captions, glance.regions
        if refine:
            finals = self._refine(images, glance, zoom, timer, task, draft)
            with timer.stage(REFINE_REGIONS):
                regions = self._final_regions(glance, finals, num_regions)
        return [
            CaptionResult(final, initial, refine, zoom, regs[:num_regions], dict(timer.times))
            for final, initial, regs in zip(finals, glance.captions, regions)
        ]

    def refined_embeddings(self, images: Sequence[np.ndarray], glance: Glance, zoom: bool = False,
                           timer: Optional[Timer] = None,
                           zoom_tokens: Optional[ZoomTokens] = None) -> torch.Tensor:
        """DeepLens on a glance's outputs: the refined visual embeddings (B, M, D_lm)
        (shared by inference and the stage-2 loss). ``images``: for zoom crops;
        ``zoom_tokens``: crops already cut by :meth:`zoom_crops`, used instead."""
        timer = timer or Timer(self.device)
        embeds = glance.embeds
        if zoom and zoom_tokens is None:
            with timer.stage(ZOOM):
                zoom_tokens = self.zoom_crops(images, glance)
        with timer.stage(DEEPLENS):
            caption, mask = self.lm.embed_captions(glance.captions)
            heat = torch.stack([attention_heat(m, embeds.shape[1], self.device) for m in glance.token_maps])
            heat = heat.to(embeds)
            return self.deeplens(glance.features, embeds, heat, caption.to(embeds.dtype), mask, zoom_tokens)

    def zoom_crops(self, images: Sequence[np.ndarray], glance: Glance) -> ZoomTokens:
        """Crops of the glance's top attended regions (then of its heat's peaks, then the
        whole image: ``zoom.num_crops`` each) from the full-resolution images, re-encoded."""
        z, grid = self.config.zoom, self.vision.grid
        crops, boxes, source = [], [], []
        for image, transform, regs, maps in zip(images, glance.transforms, glance.regions, glance.token_maps):
            image = check_image(image)
            short = len(regs) < z.num_crops and maps is not None and len(maps)
            heat = maps.float().mean(0).cpu().numpy().reshape(grid, grid) if short else None
            for box in zoom_boxes(regs, heat, transform, z.num_crops, self.config.regions.threshold):
                crop, crop_box = square_crop(image, box, z.margin, z.min_size)
                crops.append(crop)
                source.append(crop_box)
                boxes.append(transform.to_model(crop_box) / transform.size)
        pixels, _ = self.preprocess(crops, device=self.device)
        encoded = self.encode(pixels, with_features=True)
        b, c = len(images), z.num_crops
        features, base = encoded.features, encoded.embeds
        box_tensor = torch.tensor(np.stack(boxes), dtype=base.dtype, device=self.device)
        return ZoomTokens(features.view(b, c, *features.shape[1:]), base.view(b, c, *base.shape[1:]),
                          box_tensor.view(b, c, 4), np.stack(source).reshape(b, c, 4))

    def refine_prompt(self, glance: Glance, refined: torch.Tensor,
                      targets: Optional[Sequence[str]] = None) -> Prompt:
        """The refinement's LM input: the refine prompt with the refined embeddings and the
        glance's captions, followed by ``targets`` when training."""
        ids = None if targets is None else [self.lm.caption_ids(c) for c in targets]
        return self.lm.build_prompt(self.config.lm.refine_prompt, refined, captions=glance.captions,
                                    targets=ids)

    # ---- grounding: attention and regions of given captions ------------------------
    @torch.no_grad()
    def attention_maps(self, images_or_pixels, captions: Sequence[str]) -> list[torch.Tensor]:
        """Teacher-forced attention of each caption's tokens (EOS included) over the
        patches: a list of (T, N) tensors. Takes images or preprocessed pixels."""
        embeds = self.encode(self._pixels(images_or_pixels)).embeds
        ids = [self.lm.caption_ids(c) for c in captions]
        prompt = self.lm.build_prompt(self.config.lm.prompt, embeds, targets=ids)
        return self.lm.target_attention(prompt, self.attention_layers)

    def caption_regions(self, token_maps: Sequence[torch.Tensor], captions: Sequence[str],
                        transforms: Sequence[ImageTransform],
                        num_regions: Optional[int] = None) -> list[list[Region]]:
        """Attended regions of given captions (e.g. references, refined captions), from
        their tokens' teacher-forced attention (EOS included, as :meth:`attention_maps`
        gives it), ``num_regions`` each (None: the config's), in source pixels."""
        num_regions = self.config.regions.num_regions if num_regions is None else num_regions
        out = []
        for maps, caption, transform in zip(token_maps, captions, transforms):
            if num_regions <= 0:
                out.append([])
                continue
            text, spans = self.lm.decode(self.lm.caption_ids(caption) + [self.lm.eos_id])
            out.append(self._regions(maps, spans, text, transform, num_regions))
        return out

    # ---- internals -----------------------------------------------------------------
    def _switches(self, refine: Optional[bool], zoom: Optional[bool], where: str) -> tuple[bool, bool]:
        """(refine, zoom) with None taking the config's; zoom only acts when refining."""
        refine = self.config.refine if refine is None else bool(refine)
        zoom = self.config.zoom.enabled if zoom is None else bool(zoom)
        if refine and self.deeplens is None:
            raise ValueError(f"{where}: refine=True but this model has no DeepLens (config.deeplens is None)")
        return refine, zoom and refine

    def _task(self, task: Optional[str]) -> str:
        """The post-processing to use: ``task``, or the config's when None."""
        task = self.config.generation.task if task is None else task
        if task not in TASKS:
            raise ValueError(f"caption: task must be one of {list(TASKS)}, got {task!r}")
        return task

    def _refine(self, images, glance: Glance, zoom: bool, timer: Timer, task: str,
                draft: Optional[bool]) -> list[str]:
        """Refined captions of a glance (and the same images, for zoom crops)."""
        if glance.features is None:
            raise ValueError("finish: the glance ran without refine=True")
        refined = self.refined_embeddings(images, glance, zoom, timer)
        g = self.config.generation
        beams = g.refine_num_beams or g.num_beams
        draft = g.draft if draft is None else bool(draft)
        with timer.stage(REFINE_PREFILL):  # building the prompt is part of the prefill's work
            prompt = self.refine_prompt(glance, refined)
            drafts = [self.lm.caption_ids(c) for c in glance.captions] if beams == 1 and draft else None
        generated = generate(self.lm, prompt, dataclasses.replace(g, num_beams=beams), timer=timer,
                             stages=(REFINE_PREFILL, REFINE_DECODE), drafts=drafts)
        with timer.stage(REFINE_DECODE):
            return [self.lm.decode(gen.ids, g.stop, task)[0] for gen in generated]

    def _final_regions(self, glance: Glance, finals: Sequence[str], num_regions: int) -> list[list[Region]]:
        """Attended regions of the final captions: the glance's where a caption is
        unchanged, else from the final caption's own attention over the glance's patches
        (teacher-forced on the glance's kept prompt: its phrases are the final caption's)."""
        changed = [i for i, (f, c) in enumerate(zip(finals, glance.captions)) if f != c]
        regions = list(glance.regions)
        if num_regions <= 0 or not changed:
            return regions
        if glance.prompt is None or not glance.prompt_kv:
            raise ValueError("finish: the glance kept no prompt (run it with refine=True)")
        ids = [self.lm.caption_ids(f) for f in finals]
        maps = self.lm.continuation_attention(glance.prompt, glance.prompt_kv, ids, self.attention_layers)
        own = self.caption_regions([maps[i] for i in changed], [finals[i] for i in changed],
                                   [glance.transforms[i] for i in changed], num_regions)
        for i, regs in zip(changed, own):
            regions[i] = regs
        return regions

    def _pixels(self, images_or_pixels) -> torch.Tensor:
        if isinstance(images_or_pixels, torch.Tensor):
            return images_or_pixels.to(self.device, self.dtype)
        return self.preprocess(images_or_pixels, device=self.device)[0].to(self.device, self.dtype)

    def _regions(self, token_maps, spans, caption, transform, num_regions) -> list[Region]:
        if token_maps is None or num_regions <= 0:
            return []
        r = self.config.regions
        return find_regions(token_maps.float().cpu().numpy(), spans, caption, transform, num_regions,
                            r.threshold, r.max_boxes_per_phrase, r.nms_iou, r.contrast, r.function_words)


def _stage(timer: Optional[Timer], name: str):
    """``timer``'s stage ``name``, or nothing without a timer."""
    return timer.stage(name) if timer is not None else nullcontext()
