"""Loading and converting a (tiny, fake) LLaVA-OPT checkpoint with the released key names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn
from transformers import CLIPVisionModel, OPTForCausalLM

from sharpeye_ros.model import CheckpointError, SharpEyes
from sharpeye_ros.model.convert_llava import load_llava, main, scaled_deeplens_layers


class FakeLlava:
    """A LLaVA-OPT checkpoint directory with random tiny weights, and its parts."""

    def __init__(self, root: Path, helpers, with_vision: bool = True, bin_shards: bool = False):
        torch.manual_seed(0)
        self.tokenizer = helpers.build_bpe_tokenizer()
        self.clip = CLIPVisionModel(helpers.tiny_clip_config()).eval()
        self.clip_dir = root / "clip"
        torch.manual_seed(1)  # the tower directory holds other weights than the checkpoint
        CLIPVisionModel(helpers.tiny_clip_config()).save_pretrained(self.clip_dir)
        self.opt = OPTForCausalLM(
            helpers.tiny_opt_config(len(self.tokenizer), bos_token_id=2, eos_token_id=2)
        ).eval()
        self.projector = nn.Sequential(
            nn.Linear(32, 128),
            nn.GELU(),
            nn.Linear(128, 128),
            nn.GELU(),
            nn.Linear(128, 128),
            nn.Linear(128, 32),
        ).eval()
        self.dir = root / "llava"
        self.dir.mkdir()
        state = {f"model.mm_projector.{k}": v for k, v in self.projector.state_dict().items()}
        state.update({f"model.decoder.{k}": v for k, v in self.opt.model.decoder.state_dict().items()})
        if with_vision:  # stock CLIP names: vision_model.*
            state.update(
                {
                    f"model.vision_tower.vision_tower.vision_model.{k}": v
                    for k, v in self.clip.state_dict().items()
                }
            )
        state = {k: v.clone().contiguous() for k, v in state.items()}  # no lm_head.weight: it is tied
        if bin_shards:
            keys = sorted(state)
            shards = {
                "pytorch_model-00001-of-00002.bin": keys[: len(keys) // 2],
                "pytorch_model-00002-of-00002.bin": keys[len(keys) // 2 :],
            }
            for name, ks in shards.items():
                torch.save({k: state[k] for k in ks}, self.dir / name)
            index = {"weight_map": {k: name for name, ks in shards.items() for k in ks}}
            (self.dir / "pytorch_model.bin.index.json").write_text(json.dumps(index))
        else:
            save_file(state, str(self.dir / "model.safetensors"))
        cfg = self.opt.config.to_dict()
        cfg.update(
            model_type="llava_opt",
            architectures=["LlavaOPTForCausalLM"],
            mm_projector_type="mlp4x_bott4x_gelu",
            mm_hidden_size=32,
            mm_vision_tower=str(self.clip_dir),
            image_aspect_ratio="pad",
            mm_vision_select_layer="-2",
            mm_vision_select_feature="patch",
            mm_use_im_start_end=False,
            tune_mm_mlp_adapter=False,
        )
        (self.dir / "config.json").write_text(json.dumps(cfg))
        self.tokenizer.save_pretrained(self.dir)

    @torch.no_grad()
    def reference_generate(self, pixels: torch.Tensor, max_new_tokens: int) -> list[list[int]]:
        """The LLaVA pipeline spelled out with the stock modules and transformers' generate."""
        feats = self.clip(pixel_values=pixels, output_hidden_states=True).hidden_states[-2][:, 1:]
        visual = self.projector(feats)
        tok = self.tokenizer
        head = [tok.bos_token_id] + tok("USER: ", add_special_tokens=False).input_ids
        tail = tok("What is in the photo? ASSISTANT:", add_special_tokens=False).input_ids
        embed = self.opt.get_input_embeddings()
        embeds = torch.cat(
            [embed(torch.tensor([head] * len(pixels))), visual, embed(torch.tensor([tail] * len(pixels)))],
            dim=1,
        )
        out = self.opt.generate(
            inputs_embeds=embeds,
            attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long),
            num_beams=3,
            max_new_tokens=max_new_tokens,
            length_penalty=0.0,
            early_stopping=True,
            do_sample=False,
            eos_token_id=2,
            pad_token_id=1,
        )
        return [[t for t in row.tolist()] for row in out]


def trim(ids: list[int], eos: int) -> list[int]:
    return ids[: ids.index(eos) + 1] if eos in ids else ids


def test_converted_model_matches_the_llava_pipeline(tmp_path, helpers, images):
    fake = FakeLlava(tmp_path, helpers)
    model = load_llava(fake.dir)
    cfg = model.config
    assert cfg.vision.select_layer == -2 and model.vision.select_layer == 3
    assert cfg.connector.type == "mlp4x_bott4x_gelu" and cfg.deeplens is None and cfg.refine is False
    assert cfg.generation.stop == ("eos", "sentence", "newline") and cfg.generation.num_beams == 3
    assert model.lm.model.lm_head.weight is model.lm.model.get_input_embeddings().weight
    torch.testing.assert_close(model.connector[5].weight, fake.projector[5].weight)
    # The checkpoint's vision weights win over the tower directory's.
    torch.testing.assert_close(
        model.vision.model.state_dict()["embeddings.patch_embedding.weight"],
        fake.clip.state_dict()["embeddings.patch_embedding.weight"],
    )
    pixels, _ = model.preprocess(images)

    embeds, _ = model.encode(pixels)
    prompt = model.lm.build_prompt(cfg.lm.prompt, embeds)
    ours = model.lm.generate(prompt, 6, num_beams=3, stop=("eos",))
    ref = fake.reference_generate(pixels, 6)
    for gen, row in zip(ours, ref):
        assert gen.ids == trim(row, 2)
    # The converted model captions with its stop rules (it never needs EOS).
    model.config.generation.max_new_tokens = 10  # random weights: keep the test short
    results = model.caption(images)
    assert len(results) == 3 and not results[0].refined


def test_conversion_command_writes_our_format(tmp_path, helpers, images, capsys):
    fake = FakeLlava(tmp_path, helpers)
    out = tmp_path / "converted"
    assert main([str(fake.dir), str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    converted = SharpEyes.from_pretrained(out)
    direct = load_llava(fake.dir)
    converted.config.generation.max_new_tokens = direct.config.generation.max_new_tokens = 10
    assert [r.caption for r in converted.caption(images)] == [r.caption for r in direct.caption(images)]
    for key, value in direct.state_dict().items():
        assert torch.equal(converted.state_dict()[key], value), key


def test_sharded_bin_checkpoint_without_vision_weights(tmp_path, helpers):
    fake = FakeLlava(tmp_path, helpers, with_vision=False, bin_shards=True)
    model = load_llava(fake.dir, add_deeplens=True)
    tower = CLIPVisionModel.from_pretrained(fake.clip_dir)
    torch.testing.assert_close(
        model.vision.model.state_dict()["embeddings.patch_embedding.weight"],
        tower.state_dict()["embeddings.patch_embedding.weight"],
    )
    torch.testing.assert_close(
        model.lm.model.model.decoder.layers[0].fc1.weight, fake.opt.model.decoder.layers[0].fc1.weight
    )
    assert model.deeplens is not None and model.deeplens_layers == (2, 3)
    assert scaled_deeplens_layers(24) == (13, 18, 23)


def test_broken_checkpoints_give_clear_errors(tmp_path, helpers, capsys):
    fake = FakeLlava(tmp_path, helpers)
    cfg = json.loads((fake.dir / "config.json").read_text())
    with pytest.raises(CheckpointError, match=r"config\.json: missing"):
        load_llava(tmp_path / "nowhere")
    (fake.dir / "config.json").write_text(json.dumps({**cfg, "mm_vision_select_layer": "last"}))
    with pytest.raises(CheckpointError, match="mm_vision_select_layer is not an integer"):
        load_llava(fake.dir)
    (fake.dir / "config.json").write_text(json.dumps({**cfg, "image_aspect_ratio": "anyres"}))
    with pytest.raises(CheckpointError, match="anyres"):
        load_llava(fake.dir)
    (fake.dir / "config.json").write_text(
        json.dumps({k: v for k, v in cfg.items() if k != "mm_projector_type"})
    )
    with pytest.raises(CheckpointError, match="no 'mm_projector_type'"):
        load_llava(fake.dir)
    (fake.dir / "config.json").write_text(json.dumps({**cfg, "mm_hidden_size": 64}))
    with pytest.raises(CheckpointError, match="mm_hidden_size 64"):
        load_llava(fake.dir)
    (fake.dir / "config.json").write_text(json.dumps(cfg))
    from safetensors.torch import load_file

    state = load_file(str(fake.dir / "model.safetensors"))
    save_file({**state, "model.embed_extra": torch.zeros(1)}, str(fake.dir / "model.safetensors"))
    with pytest.raises(CheckpointError, match="unexpected weight"):
        load_llava(fake.dir)
    state.pop("model.mm_projector.4.bias")
    save_file(state, str(fake.dir / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"missing key\(s\), e\.g\. \['connector\.4\.bias'\]"):
        load_llava(fake.dir)
    (fake.dir / "model.safetensors").unlink()
    assert main([str(fake.dir), str(tmp_path / "out")]) == 1
    assert "no weights" in capsys.readouterr().err
