"""Multi-process training through torchrun, on CPU with the gloo backend."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist

from sharpeye_ros.model import SharpEyes
from sharpeye_ros.data import WorldScenes
from sharpeye_ros.training.loop import Trainer
from sharpeye_ros.training.recipes import RECIPES
from sharpeye_ros.training.train import main

ARGS = ["--recipe", "smoke", "--stages", "connector,caption", "--set", "caption.steps=6", "--set", "caption.lr=3e-3", "--set", "log_every=1"]


def test_each_process_gets_its_own_shard_of_the_global_batch(smoke, tmp_path):
    dataset = list(range(16))  # the sampler only needs a length
    stage = smoke.stages[2]  # global batch 4
    one = Trainer(smoke, tmp_path)
    ranks = [Trainer(smoke, tmp_path) for _ in range(2)]
    for rank, trainer in enumerate(ranks):
        trainer.world, trainer.rank = 2, rank
    for epoch in (0, 1):
        shards = [t.batches(dataset, 1, stage, epoch, 0).batch_sampler for t in ranks]
        assert all(len(b) == 2 for shard in shards for b in shard)  # 4 / 2 processes
        seen = [i for shard in shards for b in shard for i in b]
        assert sorted(seen) == list(range(16))  # disjoint, and every sample once
    assert len(one.batches(dataset, 1, stage, 0, 1).batch_sampler) == 3  # resume skips a batch


@pytest.mark.slow
@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="no gloo backend in this torch")
def test_two_gloo_processes_train_and_rank_zero_saves(tmp_path):
    ddp_out, single_out = tmp_path / "ddp", tmp_path / "single"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    # cwd outside the repository, so the package comes from the environment, not the source tree
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "sharpeye_ros.training.train", *ARGS, "--output", str(ddp_out)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    assert run.stdout.count("[caption] epoch 2/2 step 6/6") == 1  # rank 0 alone logs
    assert json.loads((ddp_out / "training.json").read_text())["processes"] == 2
    assert main([*ARGS, "--output", str(single_out)]) == 0

    # Both runs learned about as much: their loss on the training scenes, against the
    # weights they started from (the recipe's seed). Weights themselves are not compared:
    # a shard's loss is a mean over its own tokens, and Adam's first steps amplify that.
    scenes = WorldScenes("train", 16)
    captions = [c[0] for c in scenes.captions]
    torch.manual_seed(0)
    init = SharpEyes.from_config(RECIPES["smoke"]().model_config())

    def loss(model):
        with torch.no_grad():
            return float(model.glance_loss(scenes.images, captions))

    start, ddp, single = loss(init), loss(SharpEyes.from_pretrained(ddp_out)), loss(SharpEyes.from_pretrained(single_out))
    assert ddp < start - 0.1 and single < start - 0.1
    assert abs(ddp - single) < 0.25 * (start - single)
