"""The training loop: stages, optimisers, checkpoints, resume and DDP.

Every bit of randomness is a function of (seed, stage, step) -- data order, the
reference caption picked, the perturbation, dropout -- so a resumed run repeats an
uninterrupted one exactly (on a deterministic device). Checkpoints hold the model in our
format (``save_pretrained``) and, in ``trainer_state.pt``, the optimiser, scheduler and
position, loaded with ``weights_only=True``.

Under ``torchrun`` each process trains on its shard (``DistributedSampler``) of every
batch; only rank 0 logs and saves. ``batch_size`` is the global batch.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from sharpeye_ros.data import open_dataset, read_pseudo_captions
from sharpeye_ros.model import ImageTransform, SharpEyes
from sharpeye_ros.training.auxiliary import PatchHead, glance_losses, patch_targets, refine_losses, shift_flip
from sharpeye_ros.training.perturb import PseudoCaptionPairs, pseudo_initial
from sharpeye_ros.training.recipes import StageConfig, TrainConfig

STATE_NAME = "trainer_state.pt"
LATEST_NAME = "latest"


@dataclass
class Position:
    """Where training stands: stage index and optimiser steps done in it (a finished
    stage is recorded as the next one at step 0)."""

    stage: int = 0
    step: int = 0


def _seed(*parts: int) -> int:
    """A 63-bit seed from integers, stable across runs and platforms."""
    return int(np.random.SeedSequence([abs(int(p)) for p in parts]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def collate(samples: list[dict]) -> dict:
    """A batch: lists per key, ``pixels`` stacked when every sample has them."""
    batch = {key: [s[key] for s in samples] for key in samples[0] if key != "pixels"}
    if all("pixels" in s for s in samples):
        batch["pixels"] = torch.stack([s["pixels"] for s in samples])
    return batch


def _objects(batch: dict) -> Optional[list]:
    """The batch's ground-truth objects when every sample has them (synthetic world), else None."""
    objects = batch.get("objects")
    return objects if objects and all(o is not None for o in objects) else None


class StageLoss(nn.Module):
    """The losses of one stage on a batch; a module so DDP can wrap it. Holds the
    training-only patch head when the stage uses one."""

    def __init__(self, model: SharpEyes, stage: StageConfig):
        super().__init__()
        self.model, self.stage = model, stage
        self.head = PatchHead(model.vision.hidden_size).to(model.device) if stage.patch_weight > 0 else None

    def _pixels(self, batch: dict) -> torch.Tensor:
        pixels = batch.get("pixels")
        if pixels is None:
            pixels = self.model.preprocess(batch["image"])[0]
        return pixels.to(self.model.device, self.model.dtype)

    def _transforms(self, batch: dict) -> list[ImageTransform]:
        return [self.model.processor.transform(w, h) for w, h in batch["size"]]

    def _patches(self, batch: dict) -> dict[str, torch.Tensor]:
        """The vision stage: patch labels only, on (augmented) glance pixels."""
        model, pixels, objects, transforms = self.model, self._pixels(batch), batch["objects"], self._transforms(batch)
        if self.stage.augment:
            v = model.config.vision
            pad = (torch.tensor(v.pad_color) / 255.0 - torch.tensor(v.image_mean)) / torch.tensor(v.image_std)
            pixels, objects = shift_flip(pixels, objects, transforms, pad, model.vision.image_size // 16)
        patches = model.encode(pixels).patches
        labels = patch_targets(objects, transforms, model.vision.grid).to(patches.device)
        return {"patch": self.head.loss(patches, labels)}

    def _glance(self, batch: dict, targets: list[str]) -> dict[str, torch.Tensor]:
        model, s = self.model, self.stage
        pixels = self._pixels(batch)
        objects = _objects(batch)
        if (s.grounding_weight > 0 or self.head is not None or s.word_weight > 0) and objects:
            return glance_losses(model, pixels, targets, objects, self._transforms(batch), s.grounding_weight > 0,
                                 self.head, s.word_weight > 0)
        return {"caption": model.glance_loss(pixels, targets)}

    def forward(self, batch: dict, targets: list[str], initial: Optional[list[str]]) -> dict[str, torch.Tensor]:
        s = self.stage
        weights = {"caption": 1.0, "grounding": s.grounding_weight, "patch": s.patch_weight, "words": s.word_weight}
        if s.name == "vision":
            parts = self._patches(batch)
        elif s.name != "refine":
            parts = self._glance(batch, targets)
        else:
            objects = _objects(batch)
            zoom_aux = (s.zoom_grounding_weight > 0 or s.zoom_word_weight > 0) and objects
            images, pixels = batch["image"], batch.get("pixels")  # pixels: the dataset's, preprocessed once
            if zoom_aux:
                parts = refine_losses(self.model, images, initial, targets, objects, s.zoom_grounding_weight > 0,
                                      s.zoom_word_weight > 0, pixels=pixels)
            else:
                parts = {"refine": self.model.refine_loss(images, initial, targets, zoom=s.zoom, pixels=pixels)}
            weights = {"refine": 1.0, "zoom_grounding": s.zoom_grounding_weight, "zoom_words": s.zoom_word_weight,
                       **{k: s.glance_weight * w for k, w in weights.items()}}
            if s.glance_weight > 0:
                parts.update(self._glance(batch, targets))
        parts["loss"] = sum(weights[k] * v for k, v in parts.items())
        return parts


class Trainer:
    """Runs the stages of a :class:`TrainConfig`; checkpoints go to ``work_dir``."""

    def __init__(self, cfg: TrainConfig, work_dir: Path, device: str = "cpu",
                 log: Callable[[str], None] = print, precision: str = "fp32"):
        cfg.validate()
        self.cfg, self.work_dir, self.log_fn, self.precision = cfg, Path(work_dir), log, precision
        self.world = dist.get_world_size() if dist.is_initialized() else 1
        self.rank = dist.get_rank() if dist.is_initialized() else 0
        self.device = torch.device(device)
        self.datasets: dict[tuple[str, ...], Dataset] = {}
        self.model: Optional[SharpEyes] = None
        self.loss_module: Optional[StageLoss] = None
        self.position = Position()
        self.history: list[dict] = []

    # ---- set-up ----------------------------------------------------------------------
    def log(self, text: str) -> None:
        if self.rank == 0:
            self.log_fn(text)

    def build_model(self, resume: bool) -> SharpEyes:
        """The model to train: the latest checkpoint (resume), ``init`` or a fresh one."""
        latest = self.latest_checkpoint() if resume else None
        if latest is not None:
            self.model = SharpEyes.from_pretrained(latest, device=self.device)
            state = torch.load(latest / STATE_NAME, map_location="cpu", weights_only=True)
            self.position = Position(int(state["stage"]), int(state["step"]))
            self.log(f"resuming from {latest} (stage {self.position.stage}, step {self.position.step})")
        elif self.cfg.init:
            self.model = SharpEyes.from_pretrained(self.cfg.init, device=self.device)
        else:
            torch.manual_seed(self.cfg.seed)
            self.model = SharpEyes.from_config(self.cfg.model_config()).to(self.device)
        return self.model

    def dataset(self, stage: StageConfig) -> Dataset:
        """The stage's data; for a refine stage with fixed pseudo-initial captions, its pairs."""
        specs = tuple(stage.data or self.cfg.train_data)
        if specs not in self.datasets:
            began = time.perf_counter()
            parts = [open_dataset(s, self.model.processor, workers=max(1, os.cpu_count() or 1)) for s in specs]
            self.datasets[specs] = parts[0] if len(parts) == 1 else torch.utils.data.ConcatDataset(parts)
            self.log(f"data {', '.join(specs)}: {len(self.datasets[specs])} samples "
                     f"({time.perf_counter() - began:.1f} s)")
        if stage.name != "refine" or (stage.pseudo_per_caption is None and not stage.pseudo_captions):
            return self.datasets[specs]
        key = (*specs, "pseudo", stage.pseudo_per_caption, stage.pseudo_captions, stage.max_changes,
               stage.misname_small)
        if key not in self.datasets:
            pseudo = read_pseudo_captions(stage.pseudo_captions) if stage.pseudo_captions else None
            self.datasets[key] = PseudoCaptionPairs(self.datasets[specs], stage.pseudo_per_caption, pseudo,
                                                    self.cfg.seed, stage.max_changes, stage.misname_small)
            self.log(f"stage 2 pairs: {len(self.datasets[key])} (reference, pseudo-initial caption) from "
                     f"{stage.pseudo_captions or 'the rules'}")
        return self.datasets[key]

    def stage_steps(self, stage: StageConfig, dataset: Dataset) -> tuple[int, int]:
        """(optimiser steps of the stage, batches per epoch per process)."""
        if stage.batch_size % self.world:
            raise ValueError(f"stage '{stage.name}': batch_size {stage.batch_size} is not divisible "
                             f"by the {self.world} processes")
        per_epoch = len(dataset) // stage.batch_size
        if per_epoch < 1:
            raise ValueError(f"stage '{stage.name}': {len(dataset)} samples give no full batch of {stage.batch_size}")
        steps = stage.steps if stage.steps is not None else max(1, math.ceil(stage.epochs * per_epoch))
        return steps, per_epoch

    def optimizer(self, stage: StageConfig, steps: int, head: Optional[nn.Module] = None):
        model = self.model
        groups = [g for g in stage.trainable if not (g == "vision" and self.cfg.vision_frozen())]
        model.set_trainable(*groups)
        params = []
        for name, group in model.parameter_groups().items():
            if name not in groups:
                continue
            lr = stage.group_lr.get(name, stage.lr)
            decay = [p for p in group if p.ndim >= 2]
            no_decay = [p for p in group if p.ndim < 2]
            params += [{"params": decay, "lr": lr, "weight_decay": stage.weight_decay},
                       {"params": no_decay, "lr": lr, "weight_decay": 0.0}]
        if head is not None:
            params.append({"params": list(head.parameters()), "lr": stage.lr, "weight_decay": 0.0})
        opt = torch.optim.AdamW([g for g in params if g["params"]], betas=(0.9, 0.999))
        warmup = int(stage.warmup * steps)

        def factor(step: int) -> float:  # linear warm-up, then cosine to zero
            if step < warmup:
                return (step + 1) / (warmup + 1)
            return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

        return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor), groups

    # ---- checkpoints -----------------------------------------------------------------
    def latest_checkpoint(self) -> Optional[Path]:
        pointer = self.work_dir / LATEST_NAME
        if not pointer.is_file():
            return None
        path = self.work_dir / pointer.read_text().strip()
        if not (path / STATE_NAME).is_file():
            raise ValueError(f"{pointer}: names {path}, which holds no {STATE_NAME}")
        return path

    def save_checkpoint(self, opt, sched) -> None:
        if self.rank == 0:
            name = f"stage{self.position.stage}_step{self.position.step:07d}"
            path = self.work_dir / name
            self.model.save_pretrained(path)
            head = self.loss_module.head
            torch.save({"stage": self.position.stage, "step": self.position.step,
                        "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                        "head": head.state_dict() if head is not None else None}, path / STATE_NAME)
            previous = self.latest_checkpoint()
            (self.work_dir / (LATEST_NAME + ".tmp")).write_text(name)
            os.replace(self.work_dir / (LATEST_NAME + ".tmp"), self.work_dir / LATEST_NAME)
            if previous is not None and previous != path:
                shutil.rmtree(previous, ignore_errors=True)
        if dist.is_initialized():
            dist.barrier()

    # ---- the loop --------------------------------------------------------------------
    def batches(self, dataset: Dataset, stage_index: int, stage: StageConfig, epoch: int, skip: int):
        """Batches of one epoch for this process, the first ``skip`` left out."""
        sampler = DistributedSampler(dataset, num_replicas=self.world, rank=self.rank, shuffle=True,
                                     seed=_seed(self.cfg.seed, stage_index) % (2 ** 31), drop_last=True)
        sampler.set_epoch(epoch)
        per_rank = stage.batch_size // self.world
        order = list(sampler)
        chunks = [order[i:i + per_rank] for i in range(0, len(order) - per_rank + 1, per_rank)][skip:]
        return DataLoader(dataset, batch_sampler=chunks, collate_fn=collate, num_workers=self.cfg.num_workers,
                          persistent_workers=False)

    def targets(self, batch: dict, stage_index: int, stage: StageConfig, step: int) -> tuple[list[str], Optional[list[str]]]:
        """Target captions (one reference each) and, for the refine stage, pseudo-initial ones
        (the batch's own when its data are fixed pairs)."""
        if stage.name == "refine" and "initial" in batch:
            return [captions[0] for captions in batch["captions"]], list(batch["initial"])
        targets, initial = [], [] if stage.name == "refine" else None
        for index, captions in zip(batch["index"], batch["captions"]):
            rng = np.random.default_rng([self.cfg.seed, stage_index, step, int(index)])
            target = captions[0] if self.cfg.caption_choice == "first" else captions[int(rng.integers(len(captions)))]
            targets.append(target)
            if initial is not None:
                initial.append(pseudo_initial(target, rng, stage.max_changes, stage.misname_small))
        return targets, initial

    def run(self, stop_after: Optional[int] = None) -> bool:
        """Train every remaining stage; True when all are done. ``stop_after``: stop,
        checkpointed, after that many steps of this call, as an interruption would."""
        if self.model is None:
            raise RuntimeError("Trainer.run: call build_model first")
        budget = stop_after
        for index in range(self.position.stage, len(self.cfg.stages)):
            stage = self.cfg.stages[index]
            dataset = self.dataset(stage)
            steps, per_epoch = self.stage_steps(stage, dataset)
            torch.manual_seed(_seed(self.cfg.seed, index, 2 ** 40))  # the head's initialisation
            loss_module = StageLoss(self.model, stage)
            opt, sched, groups = self.optimizer(stage, steps, loss_module.head)
            start = self.position.step
            if start:
                state = torch.load(self.latest_checkpoint() / STATE_NAME, map_location="cpu", weights_only=True)
                opt.load_state_dict(state["optimizer"])
                sched.load_state_dict(state["scheduler"])
                if loss_module.head is not None:
                    loss_module.head.load_state_dict(state["head"])
            self.loss_module = loss_module
            if self.world > 1:
                # Unused: the vision layers after the selected one; zoom inputs without zoom.
                loss_module = nn.parallel.DistributedDataParallel(loss_module, find_unused_parameters=True)
            self.log(f"stage {index + 1}/{len(self.cfg.stages)} '{stage.name}': {steps} steps "
                     f"({steps / per_epoch:.1f} epochs of {per_epoch} batches of {stage.batch_size}), "
                     f"training {'+'.join(groups)}, lr {stage.lr:g}")
            done = self._stage(loss_module, dataset, index, stage, steps, per_epoch, opt, sched, budget)
            if self.position.stage == index:
                return False  # out of budget within the stage
            if budget is not None:
                budget -= done
                if budget <= 0 and index + 1 < len(self.cfg.stages):
                    return False
        return True

    def _stage(self, loss_module, dataset, index, stage, steps, per_epoch, opt, sched, budget) -> int:
        """Train one stage from ``self.position.step`` to its end, or for ``budget``
        steps; returns the steps done. Checkpoints every ``save_every`` steps and at the end."""
        self.model.train()
        params = [p for g in opt.param_groups for p in g["params"]]
        step = began_step = self.position.step
        began, ema = time.perf_counter(), None
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")
        while step < steps and (budget is None or step - began_step < budget):
            epoch, skip = divmod(step, per_epoch)
            for batch in self.batches(dataset, index, stage, epoch, skip):
                torch.manual_seed(_seed(self.cfg.seed, index, step))  # dropout, per step
                targets, initial = self.targets(batch, index, stage, step)
                with autocast:
                    parts = loss_module(batch, targets, initial)
                parts["loss"].backward()
                if stage.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(params, stage.grad_clip)
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
                step += 1
                self.position = Position(index, step)
                values = {k: float(v.detach()) for k, v in parts.items()}
                ema = values if ema is None else {k: 0.9 * ema.get(k, v) + 0.1 * v for k, v in values.items()}
                if step % self.cfg.log_every == 0 or step == steps:
                    self._progress(stage, epoch, step, steps, per_epoch, began, began_step, ema, sched)
                if step == steps:
                    self.position = Position(index + 1, 0)  # a resume starts at the next stage
                stop = step == steps or (budget is not None and step - began_step >= budget)
                if stop or step % self.cfg.save_every == 0:
                    self.save_checkpoint(opt, sched)
                if stop:
                    break
        self.model.eval()
        return step - began_step

    def _progress(self, stage, epoch, step, steps, per_epoch, began, began_step, ema, sched) -> None:
        elapsed = time.perf_counter() - began
        rate = (step - began_step) / max(elapsed, 1e-9)
        eta = (steps - step) / max(rate, 1e-9)
        losses = " ".join(f"{k} {v:.4f}" for k, v in ema.items() if k != "loss")
        record = {"stage": stage.name, "epoch": epoch, "step": step, "steps": steps, "loss": ema["loss"],
                  **{k: v for k, v in ema.items() if k != "loss"}, "lr": max(sched.get_last_lr()),
                  "steps_per_s": rate, "elapsed_s": elapsed}
        self.history.append(record)
        self.log(f"[{stage.name}] epoch {epoch + 1}/{math.ceil(steps / per_epoch)} step {step}/{steps} "
                 f"loss {ema['loss']:.4f} ({losses}) lr {record['lr']:.2e} "
                 f"{rate:.2f} steps/s {rate * stage.batch_size:.0f} samples/s ETA {_clock(eta)}")
        if self.rank == 0:
            self.work_dir.mkdir(parents=True, exist_ok=True)
            with open(self.work_dir / "log.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
