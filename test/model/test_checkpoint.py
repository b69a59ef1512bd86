"""Our checkpoint format: exact save/load round trips and one clear error per problem."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from sharpeye_ros.model import CheckpointError, SharpEyes, default_model_path
from sharpeye_ros.model.loading import read_torch_bin


@pytest.fixture(scope="module")
def saved(tmp_path_factory, helpers):
    torch.manual_seed(0)
    model = SharpEyes.from_config(helpers.small_config()).eval()
    with torch.no_grad():  # a non-zero DeepLens output, so the refined caption depends on its weights
        torch.nn.init.normal_(model.deeplens.out.weight, std=0.3)
    directory = tmp_path_factory.mktemp("ckpt") / "model"
    model.save_pretrained(directory)
    return model, directory


def test_save_and_load_give_identical_outputs(saved, images):
    model, directory = saved
    assert sorted(p.name for p in directory.iterdir()) == [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    loaded = SharpEyes.from_pretrained(directory)
    assert loaded.model_id == str(directory) and not loaded.training
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert loaded.lm.model.lm_head.weight is loaded.lm.model.get_input_embeddings().weight  # still tied
    a = model.caption(images, refine=True, zoom=True)
    b = loaded.caption(images, refine=True, zoom=True)
    assert [(r.caption, r.initial_caption, r.regions) for r in a] == [
        (r.caption, r.initial_caption, r.regions) for r in b
    ]
    assert loaded.config == model.config.override({}) or loaded.config.generation == model.config.generation


def test_loading_in_half_precision(saved, images):
    _, directory = saved
    loaded = SharpEyes.from_pretrained(directory, dtype=torch.bfloat16)
    assert loaded.dtype == torch.bfloat16
    assert len(loaded.caption(images[:2], refine=True, zoom=True)) == 2


def copy_dir(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def test_missing_directory_and_files(saved, tmp_path):
    _, directory = saved
    with pytest.raises(CheckpointError, match="no such model directory"):
        SharpEyes.from_pretrained(tmp_path / "absent")
    d = copy_dir(directory, tmp_path / "no_weights")
    (d / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"model\.safetensors: missing"):
        SharpEyes.from_pretrained(d)
    d = copy_dir(directory, tmp_path / "no_config")
    (d / "config.json").unlink()
    with pytest.raises(CheckpointError, match=r"config\.json: missing"):
        SharpEyes.from_pretrained(d)


def test_missing_tokenizer_file_is_named(saved, tmp_path):
    _, directory = saved
    d = copy_dir(directory, tmp_path / "no_tokenizer")
    (d / "tokenizer.json").unlink()
    with pytest.raises(CheckpointError, match=r"tokenizer\.json: missing \(the tokenizer's vocabulary") as info:
        SharpEyes.from_pretrained(d)
    assert "sentencepiece" not in str(info.value)


def _poke(path: Path, key: str, raw: bytes, at: int = 0) -> None:
    """Overwrite bytes of tensor ``key`` inside a safetensors file, in place."""
    data = bytearray(path.read_bytes())
    header_len = int.from_bytes(data[:8], "little")
    start = json.loads(data[8 : 8 + header_len])[key]["data_offsets"][0] + 8 + header_len + at
    data[start : start + len(raw)] = raw
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("raw", [b"\x00\x00\xc0\x7f", b"\x00\x00\x80\xff"], ids=["nan", "-inf"])
def test_non_finite_weights_are_refused_naming_the_tensor(saved, tmp_path, raw):
    # Random bytes written into the file parse as weights; two of them NaN made the node
    # publish empty captions. Loading now names the tensor.
    _, directory = saved
    d = copy_dir(directory, tmp_path / "nan")
    key = "connector.2.weight"
    assert load_file(str(d / "model.safetensors"))[key].dtype == torch.float32
    _poke(d / "model.safetensors", key, raw * 2, at=40)
    with pytest.raises(CheckpointError, match=rf"model\.safetensors: tensor '{key}' holds 2 non-finite value"):
        SharpEyes.from_pretrained(d)


def test_truncated_weights(saved, tmp_path):
    _, directory = saved
    d = copy_dir(directory, tmp_path / "truncated")
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"model\.safetensors: cannot be read, truncated or corrupt"):
        SharpEyes.from_pretrained(d)


def test_bad_config(saved, tmp_path):
    _, directory = saved
    d = copy_dir(directory, tmp_path / "bad_json")
    (d / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"config\.json: not valid JSON"):
        SharpEyes.from_pretrained(d)
    d = copy_dir(directory, tmp_path / "bad_field")
    cfg = json.loads((d / "config.json").read_text())
    cfg["generation"]["num_beams"] = 0
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"config\.json: .*num_beams"):
        SharpEyes.from_pretrained(d)
    d = copy_dir(directory, tmp_path / "foreign")
    (d / "config.json").write_text(json.dumps({"model_type": "opt"}))
    with pytest.raises(CheckpointError, match="not a sharpeye_ros model config"):
        SharpEyes.from_pretrained(d)


def test_mismatched_weights(saved, tmp_path):
    _, directory = saved
    d = copy_dir(directory, tmp_path / "shape")
    cfg = json.loads((d / "config.json").read_text())
    cfg["deeplens"]["hidden_size"] = 64
    cfg["deeplens"]["num_heads"] = 4
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(
        CheckpointError, match=r"model\.safetensors: does not match the model config: .*shape"
    ):
        SharpEyes.from_pretrained(d)
    d = copy_dir(directory, tmp_path / "keys")
    state = load_file(str(d / "model.safetensors"))
    state.pop("connector.0.weight")
    state["extra.weight"] = torch.zeros(1)
    save_file(state, str(d / "model.safetensors"))
    with pytest.raises(
        CheckpointError,
        match=r"1 missing key\(s\), e\.g\. \['connector\.0\.weight'\]; "
        r"1 unexpected key\(s\), e\.g\. \['extra\.weight'\]",
    ):
        SharpEyes.from_pretrained(d)


def test_weights_saved_in_mixed_dtypes_load_in_one(saved, tmp_path, images):
    _, directory = saved
    d = copy_dir(directory, tmp_path / "mixed")
    state = load_file(str(d / "model.safetensors"))
    state = {k: v if k.startswith("connector.") else v.to(torch.bfloat16) for k, v in state.items()}
    save_file(state, str(d / "model.safetensors"))
    kept = SharpEyes.from_pretrained(d, dtype=None)  # None: as stored, here the widest (fp32)
    assert {p.dtype for p in kept.parameters()} == {torch.float32}
    assert len(kept.caption(images[:1], refine=True, zoom=True)) == 1
    assert {p.dtype for p in SharpEyes.from_pretrained(d, dtype=torch.bfloat16).parameters()} == {torch.bfloat16}


def test_a_stored_head_must_equal_the_embeddings_it_is_tied_to(saved, tmp_path):
    _, directory = saved
    d = copy_dir(directory, tmp_path / "head")
    state = load_file(str(d / "model.safetensors"))
    embeddings = state["lm.model.model.decoder.embed_tokens.weight"]
    save_file({**state, "lm.model.lm_head.weight": embeddings.clone()}, str(d / "model.safetensors"))
    assert SharpEyes.from_pretrained(d).tied_keys() == ["lm.model.lm_head.weight"]
    save_file({**state, "lm.model.lm_head.weight": embeddings + 0.5}, str(d / "model.safetensors"))
    with pytest.raises(CheckpointError, match="lm_head.weight differs from the input embeddings"):
        SharpEyes.from_pretrained(d)


def test_bin_files_load_weights_only(tmp_path):
    good = tmp_path / "good.bin"
    torch.save({"w": torch.arange(3)}, good)
    assert torch.equal(read_torch_bin(good)["w"], torch.arange(3))

    class Payload:  # a pickled object is refused: weights_only=True
        def __reduce__(self):
            return (print, ("pickled code ran",))

    evil = tmp_path / "evil.bin"
    torch.save({"w": Payload()}, evil)
    with pytest.raises(CheckpointError, match="evil.bin: cannot be read safely"):
        read_torch_bin(evil)


def test_default_model_path_points_at_the_demo_model():
    path = default_model_path()
    assert path.parts[-2:] == ("models", "demo")
    if not path.is_dir():
        with pytest.raises(CheckpointError, match="no such model directory"):
            SharpEyes.from_pretrained(path)


def test_default_model_path_finds_a_pip_installed_demo_model(tmp_path, monkeypatch):
    """Outside ROS and the source tree, the model comes from the Python prefix's share/."""
    from sharpeye_ros.model import loading

    monkeypatch.setattr(loading, "_ros_share", lambda: None)
    monkeypatch.setattr(loading, "__file__", str(tmp_path / "site" / "sharpeye_ros" / "model" / "loading.py"))
    prefix = tmp_path / "venv"
    monkeypatch.setattr(sys, "prefix", str(prefix))
    source = tmp_path / "site" / "models" / "demo"  # beside the package, as in a checkout
    assert default_model_path() == source  # nowhere: the source tree's path, for the error message
    installed = prefix / "share" / "sharpeye_ros" / "models" / "demo"
    installed.mkdir(parents=True)
    (installed / "config.json").write_text("{}")
    assert default_model_path() == installed
    source.mkdir(parents=True)
    (source / "config.json").write_text("{}")
    assert default_model_path() == source  # a source checkout wins over a pip install
