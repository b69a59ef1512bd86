"""``sharpeye-train``: train a Sharp-Eyes model through the paper's stages.

    sharpeye-train --recipe demo --output models/demo            # the shipped demo model
    sharpeye-train --recipe demo --output runs/x --resume         # continue an interrupted run
    torchrun --nproc_per_node 8 -m sharpeye_ros.training.train --recipe paper \\
        --stage-data connector=llava:blip_laion_cc_sbu_558k.json:images \\
        --train-data coco:captions_train2017.json:train2017 --output runs/paper

Checkpoints go to ``OUTPUT/checkpoints`` (removed at the end unless
``--keep-checkpoints``); the final model, in our format, to ``OUTPUT``, with
``training.json`` (config, command, timing, machine) and ``train_log.jsonl``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
import torch.distributed as dist

from sharpeye_ros.training.loop import Trainer
from sharpeye_ros.training.recipes import RECIPES, STAGES, TrainConfig


def apply_overrides(data: dict, items: Sequence[str]) -> dict:
    """``KEY=VALUE`` edits of a train-config dict. KEY is a dotted path
    (``seed``, ``model.zoom.num_crops``) or starts with a stage name
    (``caption.lr``); VALUE is parsed as JSON when it can be (else kept as text)."""
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set {item!r}: write KEY=VALUE")
        try:
            value: Any = json.loads(text)
        except json.JSONDecodeError:
            value = text
        parts = key.split(".")
        if parts[0] in STAGES:
            stage = next((s for s in data["stages"] if s["name"] == parts[0]), None)
            if stage is None:
                raise ValueError(f"--set {item!r}: this run has no stage '{parts[0]}'")
            node, parts = stage, parts[1:]
        else:
            node = data
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise ValueError(f"--set {item!r}: no section '{part}'")
            node = node[part]
        if not parts or parts[-1] not in node:
            raise ValueError(f"--set {item!r}: unknown field '{key}'")
        node[parts[-1]] = value
    return data


def build_config(args: argparse.Namespace) -> TrainConfig:
    """The run's config: a recipe or a JSON file, then the command line's changes."""
    if args.config:
        try:
            data = json.loads(Path(args.config).read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise ValueError(f"--config {args.config}: cannot read a JSON train config ({error})") from error
    else:
        data = RECIPES[args.recipe]().to_dict()
    if args.stages:
        names = args.stages.split(",")
        unknown = [n for n in names if n not in {s["name"] for s in data["stages"]}]
        if unknown:
            raise ValueError(f"--stages: no stage(s) {unknown} in this recipe")
        data["stages"] = [s for s in data["stages"] if s["name"] in names]
    if args.train_data:
        data["train_data"] = list(args.train_data)
    for item in args.stage_data or []:
        name, sep, spec = item.partition("=")
        stage = next((s for s in data["stages"] if s["name"] == name), None)
        if not sep or stage is None:
            raise ValueError(f"--stage-data {item!r}: write STAGE=SPEC with a stage of this run")
        stage["data"] = (stage.get("data") or []) + [spec]
    if args.init:
        data["init"] = args.init
    if args.seed is not None:
        data["seed"] = args.seed
    if args.freeze_vision is not None:
        data["freeze_vision"] = args.freeze_vision == "yes"
    return TrainConfig.from_dict(apply_overrides(data, args.set or []))


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="sharpeye-train", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    src = p.add_mutually_exclusive_group()
    src.add_argument("--recipe", choices=sorted(RECIPES), default="demo", help="a built-in recipe (default demo)")
    src.add_argument("--config", help="a train-config JSON (as written to OUTPUT/training.json's 'config')")
    p.add_argument("--output", required=True, type=Path, help="folder for the final model")
    p.add_argument("--train-data", nargs="+", metavar="SPEC",
                   help="data specs: world:SPLIT:COUNT[:SEED], coco:JSON[:FOLDER], llava:JSON:FOLDER")
    p.add_argument("--stage-data", action="append", metavar="STAGE=SPEC", help="data for one stage only")
    p.add_argument("--stages", help="comma-separated stages to run, e.g. refine (with --init)")
    p.add_argument("--init", help="start from this model directory instead of a fresh model")
    p.add_argument("--seed", type=int)
    p.add_argument("--freeze-vision", choices=("yes", "no"),
                   help="default: frozen when the vision tower is pretrained, trained when built from scratch")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="change a config field, e.g. caption.lr=2e-4 or model.zoom.num_crops=2")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in OUTPUT/checkpoints")
    p.add_argument("--keep-checkpoints", action="store_true")
    p.add_argument("--stop-after", type=int, metavar="STEPS", help="stop (checkpointed) after STEPS steps")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="bf16: autocast (GPU)")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    return p.parse_args(argv)


def _distributed(device: str) -> str:
    """Join the torchrun process group if there is one; the device this process uses."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
        if device == "cuda":
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
            torch.cuda.set_device(device)
    return device


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point (``sharpeye-train``)."""
    args = parse_args(argv)
    try:
        cfg = build_config(args)
        if args.stop_after is not None and args.stop_after < 1:
            raise ValueError("--stop-after must be >= 1")
    except ValueError as error:
        print(f"sharpeye-train: error: {error}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    device = _distributed(args.device)
    work_dir = args.output / "checkpoints"
    trainer = Trainer(cfg, work_dir, device=device, precision=args.precision,
                      log=lambda text: print(text, flush=True))
    began, started = time.perf_counter(), datetime.datetime.now(datetime.timezone.utc)
    try:
        trainer.build_model(resume=args.resume)
        finished = trainer.run(stop_after=args.stop_after)
    except ValueError as error:
        print(f"sharpeye-train: error: {error}", file=sys.stderr)
        if dist.is_initialized():
            dist.destroy_process_group()
        return 2
    seconds = time.perf_counter() - began
    if trainer.rank == 0:
        if finished:
            command = " ".join(["sharpeye-train", *(sys.argv[1:] if argv is None else argv)])
            save_final(trainer, args.output, cfg, command, args.resume, started, seconds)
            if not args.keep_checkpoints:
                shutil.rmtree(work_dir, ignore_errors=True)
            print(f"done in {seconds / 60:.1f} min: model saved to {args.output}", flush=True)
        else:
            print(f"stopped after {seconds / 60:.1f} min; continue with --resume", flush=True)
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    return 0


def save_final(trainer: Trainer, out: Path, cfg: TrainConfig, command: str, resumed: bool,
               started: datetime.datetime, seconds: float) -> None:
    """The trained model plus ``training.json`` and ``train_log.jsonl`` in ``out``."""
    trainer.model.save_pretrained(out)
    log = trainer.work_dir / "log.jsonl"
    if log.is_file():
        shutil.copyfile(log, out / "train_log.jsonl")
    info = {
        "command": command,
        "config": cfg.to_dict(),
        "started_utc": started.isoformat(timespec="seconds"),
        "wall_time_s": round(seconds, 1),
        "resumed": resumed,
        "processes": trainer.world,
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(), "torch": torch.__version__, "device": str(trainer.device),
                    "threads": torch.get_num_threads()},
        "final_losses": trainer.history[-1] if trainer.history else None,
    }
    (out / "training.json").write_text(json.dumps(info, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
