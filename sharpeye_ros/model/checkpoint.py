"""Our checkpoint format, written and built: a directory with ``config.json``,
``model.safetensors`` and the tokenizer files. Reading it safely is
:mod:`sharpeye_ros.model.loading`'s; here a read state becomes a model's weights.

Nothing here imports the model class: :meth:`SharpEyes.from_pretrained
<sharpeye_ros.model.sharpeyes.SharpEyes.from_pretrained>` passes in how to build one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Optional, Union

import torch
from safetensors.torch import save_file
from torch import nn

from sharpeye_ros.model.config import SharpEyesConfig
from sharpeye_ros.model.loading import (
    CONFIG_NAME,
    FORMAT_KEY,
    FORMAT_VERSION,
    WEIGHTS_NAME,
    CheckpointError,
    check_state_dict,
    load_tokenizer,
    read_config,
    read_weights,
)


def save_checkpoint(model: nn.Module, directory: Union[str, os.PathLike]) -> Path:
    """Write ``model`` (a SharpEyes) to ``directory`` (created if needed). The config holds the towers'
    configs inline, so the directory loads on its own."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cfg = model.config.to_dict()
    cfg["vision"].update(name_or_path=None, config=model.vision.model.config.to_dict())
    cfg["lm"].update(
        name_or_path=None, config=model.lm.model.config.to_dict(), tokenizer=None, vocab_words=None
    )
    with open(directory / CONFIG_NAME, "w") as f:
        json.dump({FORMAT_KEY: FORMAT_VERSION, **cfg}, f, indent=2, sort_keys=False)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    for key in model.tied_keys():
        state.pop(key, None)  # safetensors stores no shared tensors; ties are restored on load
    save_file(state, str(directory / WEIGHTS_NAME), metadata={"format": "pt"})
    model.lm.tokenizer.save_pretrained(str(directory))
    return directory


def read_checkpoint(
    directory: Union[str, os.PathLike],
) -> tuple[SharpEyesConfig, dict[str, torch.Tensor], Any, str]:
    """What a directory saved by :func:`save_checkpoint` holds: (config, weights,
    tokenizer, the weights file's name for error messages), each checked as it is read."""
    directory = Path(directory)
    cfg = read_config(directory)
    state = read_weights(directory / WEIGHTS_NAME)
    return cfg, state, load_tokenizer(directory), str(directory / WEIGHTS_NAME)


def build_from_state(
    build: Callable[[], nn.Module],
    state: dict[str, torch.Tensor],
    source: str,
    dtype: Optional[torch.dtype] = None,
) -> nn.Module:
    """``build()`` (a model with ``tied_keys`` and ``tie_weights``) holding the weights
    ``state`` (checked first).

    Every floating-point weight gets one dtype: ``dtype``, or when None the widest of
    ``state``'s (a release may keep its projector in fp32 and the rest in bf16; a model
    of mixed dtypes fails in its first matmul). The model is built on the meta device,
    so no time goes into random initialisation.
    """
    try:
        with torch.device("meta"):
            model = build()
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{source}: cannot build the model its config describes ({e})") from e
    tied = tuple(model.tied_keys())
    check_state_dict(model, state, source, optional=tied)
    state = _one_dtype(state, dtype)
    _check_tied(state, tied, source)
    model.load_state_dict(state, strict=False, assign=True)
    model.tie_weights()
    if not _materialise_buffers(model):
        # An unknown non-persistent buffer: build normally (slower) and copy the weights in.
        model = build()
        model.load_state_dict(state, strict=False)
        model.tie_weights()
        model.to(next((v.dtype for v in state.values() if v.is_floating_point()), torch.float32))
    return model


# The tied LM head and the weight it shares.
_HEAD, _EMBEDDINGS = "lm.model.lm_head.weight", "lm.model.model.decoder.embed_tokens.weight"


def _check_tied(state: dict[str, torch.Tensor], tied: tuple[str, ...], source: str) -> None:
    """A stored head that the config ties to the input embeddings must equal them: the
    tie would overwrite it."""
    head, embeddings = state.get(_HEAD), state.get(_EMBEDDINGS)
    if _HEAD in tied and head is not None and embeddings is not None and not torch.equal(head, embeddings):
        raise CheckpointError(
            f"{source}: lm_head.weight differs from the input embeddings, but the LM config ties them "
            "(tie_word_embeddings, default true); tying would discard the head. Set "
            "tie_word_embeddings false in the LM config to keep an untied head"
        )


def _one_dtype(state: dict[str, torch.Tensor], dtype: Optional[torch.dtype]) -> dict[str, torch.Tensor]:
    """``state`` with every floating-point tensor in ``dtype`` (None: the widest present)."""
    floats = {v.dtype for v in state.values() if v.is_floating_point()}
    if dtype is None:
        if len(floats) <= 1:
            return state
        dtype = floats.pop()
        for other in floats:
            dtype = torch.promote_types(dtype, other)
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}


def _materialise_buffers(model: torch.nn.Module) -> bool:
    """Re-create non-persistent buffers left on the meta device; False if one is unknown."""
    for module in model.modules():
        for name, buf in list(module.named_buffers(recurse=False)):
            if not buf.is_meta:
                continue
            if name != "position_ids":  # the only one CLIP/OPT have: arange(n) as (1, n)
                return False
            module.register_buffer(
                name, torch.arange(buf.shape[-1]).expand(buf.shape).clone(), persistent=False
            )
    return all(not p.is_meta for p in model.parameters())
