"""Our checkpoint format: a directory with ``config.json``, ``model.safetensors`` and the
tokenizer files. Loading is safe (safetensors only, no remote code) and every failure
is one :class:`CheckpointError` naming the file and what is wrong with it.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Union

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from sharpeye_ros.model.config import SharpEyesConfig

if TYPE_CHECKING:
    from sharpeye_ros.model.sharpeyes import SharpEyes

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
TOKENIZER_NAME = "tokenizer.json"
# A tokenizer's vocabulary, in one of the forms AutoTokenizer reads without extra packages:
# the fast tokenizer's file, or a GPT-2/OPT BPE pair (the authors' release ships those).
VOCABULARY_FILES = ((TOKENIZER_NAME,), ("vocab.json", "merges.txt"))
FORMAT_KEY = "sharpeye_format"
FORMAT_VERSION = 1
PACKAGE = "sharpeye_ros"


class CheckpointError(Exception):
    """A checkpoint is missing, unreadable or does not match its config."""


def default_model_path() -> Path:
    """The shipped demo model, the first that holds one of: ``share/sharpeye_ros/models/demo``
    of the ROS install; ``models/demo`` in this source tree; ``share/sharpeye_ros/models/demo``
    under the Python prefix (where ``pip install`` puts it). Else the source tree's path
    (the model may not be trained yet)."""
    source = Path(__file__).resolve().parents[2] / "models" / "demo"
    pip_data = Path(sys.prefix) / "share" / PACKAGE / "models" / "demo"
    for candidate in (_ros_share(), source, pip_data):
        if candidate is not None and (candidate / CONFIG_NAME).is_file():  # not a stale, emptied install
            return candidate
    return source


def _ros_share() -> Optional[Path]:
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory(PACKAGE)) / "models" / "demo"
    except Exception:  # no ROS, or the package is not installed
        return None


def save_checkpoint(model: "SharpEyes", directory: Union[str, os.PathLike]) -> Path:
    """Write ``model`` to ``directory`` (created if needed). The config holds the towers'
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


def read_config(directory: Union[str, os.PathLike]) -> SharpEyesConfig:
    """The :class:`SharpEyesConfig` in ``directory/config.json``."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: no such model directory")
    path = directory / CONFIG_NAME
    if not path.is_file():
        raise CheckpointError(
            f"{path}: missing (a model directory holds {CONFIG_NAME}, {WEIGHTS_NAME} and tokenizer files)"
        )
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(data, dict) or data.pop(FORMAT_KEY, None) != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: not a sharpeye_ros model config ('{FORMAT_KEY}': {FORMAT_VERSION} missing)"
        )
    try:
        cfg = SharpEyesConfig.from_dict(data)
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: {e}") from e
    if cfg.vision.config is None or cfg.lm.config is None:
        raise CheckpointError(f"{path}: vision.config and lm.config must be inline in a saved model")
    return cfg


def read_weights(path: Union[str, os.PathLike]) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file, or a CheckpointError naming it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: missing")
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for truncated headers/data
        raise CheckpointError(f"{path}: cannot be read, truncated or corrupt ({e})") from e


def read_torch_bin(path: Union[str, os.PathLike]) -> dict[str, torch.Tensor]:
    """A PyTorch ``.bin`` state dict, loaded with ``weights_only=True`` (no pickled code)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: missing")
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path}: cannot be read safely, truncated or corrupt ({e})") from e
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: holds a {type(state).__name__}, not a state dict")
    return state


def load_tokenizer(source: Union[str, os.PathLike]):
    """A tokenizer from a directory (or a hub name), never running remote code."""
    from transformers import AutoTokenizer

    directory = Path(source)
    if directory.is_dir() and not any(all((directory / f).is_file() for f in files)
                                      for files in VOCABULARY_FILES):
        # transformers would blame missing packages (sentencepiece, tiktoken) instead
        raise CheckpointError(f"{directory / TOKENIZER_NAME}: missing (the tokenizer's vocabulary; "
                              "vocab.json with merges.txt would also do)")
    try:
        return AutoTokenizer.from_pretrained(str(source), trust_remote_code=False)
    except Exception as e:
        raise CheckpointError(f"{source}: cannot load the tokenizer ({e})") from e


def load_pretrained(cls, name_or_path: str, what: str):
    """``cls.from_pretrained`` of a local directory or a Hugging Face name, with a clear error."""
    try:
        return cls.from_pretrained(name_or_path)
    except Exception as e:
        where = "directory" if Path(name_or_path).is_dir() else "name (needs hub access unless cached)"
        raise CheckpointError(f"{name_or_path}: cannot load the {what} from this {where} ({e})") from e


def check_state_dict(
    model: torch.nn.Module, state: dict[str, torch.Tensor], source: str, optional: tuple[str, ...] = ()
) -> None:
    """Raise CheckpointError unless ``state`` has exactly ``model``'s keys and shapes
    (keys in ``optional`` may be absent) and finite values."""
    expected = model.state_dict()
    missing = sorted(k for k in expected if k not in state and k not in optional)
    unexpected = sorted(k for k in state if k not in expected)
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s), e.g. {missing[:3]}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s), e.g. {unexpected[:3]}")
    for k, v in state.items():
        if k in expected and tuple(v.shape) != tuple(expected[k].shape):
            problems.append(
                f"'{k}' has shape {tuple(v.shape)}, the config expects {tuple(expected[k].shape)}"
            )
            break
    if problems:
        raise CheckpointError(f"{source}: does not match the model config: " + "; ".join(problems))
    check_finite(state, source)


def check_finite(state: dict[str, torch.Tensor], source: str) -> None:
    """Raise CheckpointError naming the first tensor holding NaN or infinity: a damaged
    file that still parses would otherwise load and caption nothing, silently."""
    for key, value in state.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            raise CheckpointError(f"{source}: tensor '{key}' holds {bad} non-finite value(s) "
                                  f"(NaN or infinity) of {value.numel()}: the weights are corrupt")


def load_checkpoint(
    directory: Union[str, os.PathLike],
    device: Union[str, torch.device] = "cpu",
    dtype: Optional[torch.dtype] = torch.float32,
) -> "SharpEyes":
    """Load a model saved by :func:`save_checkpoint`."""
    directory = Path(directory)
    cfg = read_config(directory)
    state = read_weights(directory / WEIGHTS_NAME)
    tokenizer = load_tokenizer(directory)
    model = build_from_state(cfg, state, str(directory / WEIGHTS_NAME), tokenizer, dtype)
    model.model_id = str(directory)
    return model.to(device=device)


def build_from_state(
    cfg: SharpEyesConfig,
    state: dict[str, torch.Tensor],
    source: str,
    tokenizer,
    dtype: Optional[torch.dtype] = None,
) -> "SharpEyes":
    """A model of config ``cfg`` holding the weights ``state`` (checked first).

    Every floating-point weight gets one dtype: ``dtype``, or when None the widest of
    ``state``'s (a release may keep its projector in fp32 and the rest in bf16; a model
    of mixed dtypes fails in its first matmul). The model is built on the meta device,
    so no time goes into random initialisation.
    """
    from sharpeye_ros.model.sharpeyes import SharpEyes

    try:
        with torch.device("meta"):
            model = SharpEyes.from_config(cfg, tokenizer=tokenizer)
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
        model = SharpEyes.from_config(cfg, tokenizer=tokenizer)
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
