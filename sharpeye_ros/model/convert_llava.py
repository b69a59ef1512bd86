"""Load the authors' released LLaVA-OPT checkpoint and convert it to our format.

The checkpoint is a LLaVA directory: ``config.json`` (an OPT config plus ``mm_*``
fields), weights (``model.safetensors`` / ``pytorch_model.bin``, maybe sharded with an
index), tokenizer files. Key names:

- ``model.mm_projector.{0,2,4,5}.*`` -> our ``connector.*``
- ``model.decoder.*`` and ``lm_head.weight`` (tied, may be absent) -> our ``lm.model.*``
- ``model.vision_tower.vision_tower.vision_model.*`` (stock CLIP; may be absent, then
  the tower comes from ``--vision-tower`` or the config's ``mm_vision_tower``;
  ``--vision-tower`` also replaces a tower the checkpoint holds)

The converted config decodes as the authors evaluate: 3 beams, length penalty 0, early
stopping, stop at EOS or 77 new tokens; the caption is the text after the last
``ASSISTANT: ``, for ``--task detailed`` its first three sentences. Command::

    sharpeye-convert-llava LLAVA_DIR OUT_DIR [--task coco|detailed] [--vision-tower CLIP_DIR]
        [--add-deeplens] [--early-stop] [--dtype float16]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

import torch

from sharpeye_ros.model.config import (
    ConnectorConfig,
    DeepLensConfig,
    GenerationConfig,
    LMConfig,
    STOP_RULES,
    TASKS,
    SharpEyesConfig,
    VisionConfig,
)
from sharpeye_ros.model import presets
from sharpeye_ros.model.deeplens import DeepLens
from sharpeye_ros.model.loading import (
    CheckpointError,
    load_pretrained,
    load_tokenizer,
    read_torch_bin,
    read_weights,
)
from sharpeye_ros.model.sharpeyes import SharpEyes

PROJECTOR = "model.mm_projector."
DECODER = "model.decoder."
VISION = "model.vision_tower.vision_tower."
LM_HEAD = "lm_head.weight"
# The published CLIP ViT-L/14-336 config, for checkpoints that carry the tower's weights
# but whose tower config cannot be fetched (no hub access).
KNOWN_VISION_CONFIGS = {"openai/clip-vit-large-patch14-336": presets.paper().vision.config}
PAPER_DEEPLENS_LAYERS = (13, 18, 23)  # of 24 vision layers


def read_llava_weights(directory: Path) -> dict[str, torch.Tensor]:
    """All weights of a (possibly sharded) LLaVA checkpoint, safetensors preferred."""
    for index_name, reader in (
        ("model.safetensors.index.json", read_weights),
        ("pytorch_model.bin.index.json", read_torch_bin),
    ):
        index = directory / index_name
        if index.is_file():
            try:
                shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            except (OSError, ValueError, KeyError, AttributeError) as e:
                raise CheckpointError(f"{index}: not a valid shard index ({e})") from e
            state: dict[str, torch.Tensor] = {}
            for shard in shards:
                state.update(reader(directory / shard))
            return state
    if (directory / "model.safetensors").is_file():
        return read_weights(directory / "model.safetensors")
    if (directory / "pytorch_model.bin").is_file():
        return read_torch_bin(directory / "pytorch_model.bin")
    raise CheckpointError(f"{directory}: no weights (model.safetensors, pytorch_model.bin or a shard index)")


def _vision_config(
    llava_cfg: dict, vision_tower: Optional[str], source: Path, have_weights: bool
) -> tuple[dict, Optional[str]]:
    """(CLIP vision config dict, directory/name to load the tower's weights from, or None
    to keep the checkpoint's). An explicit ``vision_tower`` always gives the weights."""
    from transformers import CLIPVisionConfig

    name = vision_tower or llava_cfg.get("mm_vision_tower")
    if name is None:
        raise CheckpointError(f"{source}: config.json has no mm_vision_tower; pass --vision-tower")
    if vision_tower is None and have_weights and name in KNOWN_VISION_CONFIGS and not Path(name).is_dir():
        return dict(KNOWN_VISION_CONFIGS[name]), None  # no need to ask the hub
    try:
        config = CLIPVisionConfig.from_pretrained(name).to_dict()
        return config, name if vision_tower is not None or not have_weights else None
    except Exception as e:
        raise CheckpointError(
            f"{name}: cannot read the vision tower's config ({e}); pass --vision-tower DIR"
        ) from e


def _vision_state(target_keys: set[str], state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Stock-CLIP keys (``vision_model.*``) -> this transformers version's CLIPVisionModel keys."""
    out = {}
    for key, value in state.items():
        bare = key[len("vision_model.") :] if key.startswith("vision_model.") else key
        for candidate in ("vision.model.vision_model." + bare, "vision.model." + bare):
            if candidate in target_keys:
                out[candidate] = value
                break
        else:
            if key.endswith("position_ids"):
                continue  # a buffer old transformers versions saved; rebuilt on load
            out["vision.model." + key] = value  # reported as unexpected by the check
    return out


def scaled_deeplens_layers(depth: int) -> tuple[int, ...]:
    """The paper's DeepLens layers {13, 18, 23} of 24, scaled to a tower of ``depth`` layers
    by their distance from the top (23 stays the second-to-last layer)."""
    return tuple(
        sorted({max(1, depth - max(1, round(depth * (24 - i) / 24))) for i in PAPER_DEEPLENS_LAYERS})
    )


def load_llava(
    path,
    vision_tower: Optional[str] = None,
    add_deeplens: bool = False,
    task: str = "coco",
    dtype: Optional[torch.dtype] = torch.float32,
    early_stop: bool = False,
):
    """A :class:`SharpEyes` holding the LLaVA-OPT checkpoint at ``path``.

    ``vision_tower``: a CLIP directory or name whose weights replace the checkpoint's
    tower (the authors' evaluation reloads the fp32 hub tower); default: the
    checkpoint's tower, configured by the config's ``mm_vision_tower`` (whose weights
    are used when the checkpoint has none). ``add_deeplens``: attach a freshly
    initialised DeepLens (for stage-2 training). ``task``: the default post-processing,
    "coco" or "detailed" (the model's training data; switchable per ``caption`` call).
    ``dtype``: of every weight (None: the widest in the checkpoint). ``early_stop``:
    also end a caption at its first sentence end or newline: faster, but not the
    paper's decoding (beams end early, and a detailed caption keeps one sentence).
    """
    if task not in TASKS:
        raise CheckpointError(f"task must be one of {list(TASKS)}, got {task!r}")
    source = Path(path)
    config_path = source / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"{config_path}: missing (not a LLaVA checkpoint directory)")
    try:
        llava_cfg = json.loads(config_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{config_path}: not valid JSON ({e})") from e
    for key in ("mm_projector_type", "mm_hidden_size"):
        if key not in llava_cfg:
            raise CheckpointError(f"{config_path}: no '{key}'; not a LLaVA config")
    if llava_cfg.get("image_aspect_ratio", "pad") != "pad":
        raise CheckpointError(
            f"{config_path}: image_aspect_ratio '{llava_cfg['image_aspect_ratio']}' is not supported "
            "(only 'pad')"
        )
    if llava_cfg.get("mm_vision_select_feature", "patch") != "patch":
        raise CheckpointError(f"{config_path}: only mm_vision_select_feature 'patch' is supported")
    try:
        select_layer = int(llava_cfg.get("mm_vision_select_layer", -2))  # stored as the string "-2"
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{config_path}: mm_vision_select_layer is not an integer ({e})") from e

    state = read_llava_weights(source)
    have_vision = any(k.startswith(VISION) for k in state)
    vision_cfg, vision_source = _vision_config(llava_cfg, vision_tower, source, have_vision)
    if int(vision_cfg["hidden_size"]) != int(llava_cfg["mm_hidden_size"]):
        raise CheckpointError(
            f"{config_path}: mm_hidden_size {llava_cfg['mm_hidden_size']} does not match the "
            f"vision tower's hidden_size {vision_cfg['hidden_size']}"
        )
    opt_cfg = {k: v for k, v in llava_cfg.items() if not k.startswith("mm_") and k not in _LLAVA_ONLY_KEYS}
    opt_cfg["model_type"] = "opt"
    deeplens = None
    if add_deeplens:
        deeplens = DeepLensConfig(
            layers=scaled_deeplens_layers(int(vision_cfg["num_hidden_layers"])),
            hidden_size=int(opt_cfg.get("hidden_size", 768)),
            num_heads=int(opt_cfg.get("num_attention_heads", 12)),
        )
    cfg = SharpEyesConfig(
        vision=VisionConfig(config=vision_cfg, select_layer=select_layer),
        connector=ConnectorConfig(type=llava_cfg["mm_projector_type"]),
        lm=LMConfig(config=opt_cfg),
        deeplens=deeplens,
        generation=GenerationConfig(
            num_beams=3,
            max_new_tokens=77,
            length_penalty=0.0,
            early_stopping=True,
            stop=STOP_RULES if early_stop else ("eos",),
            task=task,
        ),
        refine=False,
    )
    tokenizer = load_tokenizer(source)

    with torch.device("meta"):
        skeleton = SharpEyes.from_config(cfg, tokenizer=tokenizer)
    target_keys = set(skeleton.state_dict())
    ours: dict[str, torch.Tensor] = {}
    vision_part: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in state.items():
        if key.startswith(PROJECTOR):
            ours["connector." + key[len(PROJECTOR) :]] = value
        elif key.startswith(DECODER):
            ours["lm.model.model.decoder." + key[len(DECODER) :]] = value
        elif key == LM_HEAD:
            ours["lm.model.lm_head.weight"] = value
        elif key.startswith(VISION):
            vision_part[key[len(VISION) :]] = value
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointError(f"{source}: unexpected weight(s) for LLaVA-OPT, e.g. {sorted(unknown)[:3]}")
    if vision_source is not None:  # none in the checkpoint, or --vision-tower replaces them
        from transformers import CLIPVisionModel

        tower = load_pretrained(CLIPVisionModel, vision_source, "vision tower")
        vision_part = {
            "vision_model." + k if not k.startswith("vision_model.") else k: v
            for k, v in tower.state_dict().items()
        }
    ours.update(_vision_state(target_keys, vision_part))
    if add_deeplens:
        fresh = DeepLens(
            cfg.deeplens,
            int(vision_cfg["hidden_size"]),
            skeleton.lm.hidden_size,
            skeleton.vision.grid,
            cfg.zoom.pool,
        )
        ours.update({"deeplens." + k: v for k, v in fresh.state_dict().items()})
    model = SharpEyes.from_state(cfg, ours, str(source), tokenizer, dtype)
    model.model_id = str(source)
    return model.eval()


# LLaVA training flags that are not part of an OPT config.
_LLAVA_ONLY_KEYS = {
    "image_aspect_ratio",
    "image_grid_pinpoints",
    "tune_mm_mlp_adapter",
    "freeze_mm_mlp_adapter",
    "use_mm_proj",
    "architectures",
    "tokenizer_model_max_length",
    "tokenizer_padding_side",
    "unfreeze_mm_vision_tower",
    "mm_use_im_start_end",
    "mm_use_im_patch_token",
    "hidden_size_projector",
    "vision_width",
    "tokenizer_bos_token_id",
    "tokenizer_eos_token_id",
    "tokenizer_pad_token_id",
    "torch_dtype",
    "dtype",
    "transformers_version",
}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``sharpeye-convert-llava SRC DST``: convert a LLaVA-OPT checkpoint to our format."""
    parser = argparse.ArgumentParser(prog="sharpeye-convert-llava", description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="LLaVA-OPT checkpoint directory")
    parser.add_argument(
        "output", help="directory to write config.json, model.safetensors and tokenizer files to"
    )
    parser.add_argument(
        "--task",
        choices=TASKS,
        default="coco",
        help="the checkpoint's captions: coco (kept whole) or detailed (ShareGPT4V/DCI: the first "
        "3 sentences kept); the default post-processing, switchable per caption() call",
    )
    parser.add_argument(
        "--vision-tower",
        help="CLIP directory or name whose weights replace the checkpoint's tower (the paper's "
        "evaluation uses the fp32 openai/clip-vit-large-patch14-336); default: the checkpoint's "
        "tower, or the config's mm_vision_tower when it has none",
    )
    parser.add_argument("--add-deeplens", action="store_true", help="attach a freshly initialised DeepLens")
    parser.add_argument(
        "--early-stop",
        action="store_true",
        help="also stop at the first sentence end or newline (faster; not the paper's decoding)",
    )
    parser.add_argument(
        "--dtype", choices=("float32", "float16", "bfloat16"), default="float32", help="weight dtype to store"
    )
    args = parser.parse_args(argv)
    try:
        model = load_llava(
            args.source,
            vision_tower=args.vision_tower,
            add_deeplens=args.add_deeplens,
            task=args.task,
            dtype=getattr(torch, args.dtype),
            early_stop=args.early_stop,
        )
        model.save_pretrained(args.output)
    except CheckpointError as e:
        print(f"sharpeye-convert-llava: {e}", file=sys.stderr)
        return 1
    print(f"sharpeye-convert-llava: wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
