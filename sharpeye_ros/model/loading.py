"""Reading a model directory safely: its config, weights and tokenizer, each failure one
:class:`CheckpointError` naming the file and what is wrong with it (safetensors, or
``torch.load(weights_only=True)`` for ``.bin``; never remote code). Also where the shipped
demo model lies (:func:`default_model_path`). Building a model from what was read is
:mod:`sharpeye_ros.model.checkpoint`'s job.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional, Union

import torch
from safetensors import safe_open

from sharpeye_ros.model.config import SharpEyesConfig

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
