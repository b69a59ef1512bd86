"""Converting the authors' released LLaVA-OPT checkpoint, in its exact layout
(``authors_release_layout.json``: key names, dtypes, config.json fields, files), scaled
down in width and depth, and checking that it captions as the authors' pipeline does."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Optional

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModel, OPTConfig, OPTForCausalLM

from sharpeye_ros.model import CheckpointError, SharpEyes
from sharpeye_ros.model.convert_llava import KNOWN_VISION_CONFIGS, load_llava, main, scaled_deeplens_layers

LAYOUT = json.loads(Path(__file__).with_name("authors_release_layout.json").read_text())
# What the fake release's LM learns to write: a role tag of its own (the authors keep the
# text after the last one), then four sentences (a detailed caption keeps three).
TAUGHT = " A cat. ASSISTANT: A red circle. A blue star on the left. A photo of the sky. A dog."
AFTER_TAG = "A red circle. A blue star on the left. A photo of the sky. A dog."
THREE_SENTENCES = "A red circle. A blue star on the left. A photo of the sky."


def expected_keys(depths: dict[str, int]) -> dict[str, str]:
    """The authors' state-dict keys (with ``lm_head.weight``) and dtypes at the given depths."""
    out = {}
    for template, (_, dtype) in LAYOUT["tensors"].items():
        stack = template.split(".{i}.")[0]
        for i in range(depths[stack] if "{i}" in template else 1):
            out[template.replace("{i}", str(i))] = dtype
    return out


def template(key: str) -> str:
    return re.sub(r"\.layers\.\d+\.", ".layers.{i}.", key)


def release_modules(clip_config: CLIPVisionConfig, release_config: dict):
    """The release's three parts as stock modules: CLIP tower, projector, OPT."""
    clip = CLIPVisionModel(clip_config).eval()
    opt = OPTForCausalLM(OPTConfig.from_dict({**release_config, "model_type": "opt"})).eval()
    mid, out = 4 * release_config["hidden_size"], release_config["hidden_size"]
    projector = nn.Sequential(
        nn.Linear(release_config["mm_hidden_size"], mid),
        nn.GELU(),
        nn.Linear(mid, mid),
        nn.GELU(),
        nn.Linear(mid, mid),
        nn.Linear(mid, out),
    ).eval()
    return clip, projector, opt


def authors_state(clip, projector, opt, with_head: bool) -> dict[str, torch.Tensor]:
    """The parts' weights under the authors' key names and in their dtypes; the
    ``lm_head.weight`` of a .bin release is the embeddings' tensor itself (tied)."""
    dtypes = {t: getattr(torch, d) for t, (_, d) in LAYOUT["tensors"].items()}
    state = {f"model.decoder.{k}": v for k, v in opt.model.decoder.state_dict().items()}
    # Stock CLIP names as transformers 4.37 writes them (vision_model.*; 5.x drops that level).
    state.update({"model.vision_tower.vision_tower.vision_model." + k.removeprefix("vision_model."): v
                  for k, v in clip.state_dict().items() if "position_ids" not in k})
    state.update({f"model.mm_projector.{k}": v for k, v in projector.state_dict().items()})
    state = {k: v.detach().to(dtypes[template(k)]).clone().contiguous() for k, v in state.items()}
    if with_head:
        state["lm_head.weight"] = state["model.decoder.embed_tokens.weight"]
    return state


def save_tokenizer_files(tokenizer_bpe, directory: Path) -> None:
    """The release's tokenizer files: GPT-2 style vocab.json and merges.txt (no
    tokenizer.json), with OPT's </s> as BOS, EOS, UNK and, as the authors train, PAD."""
    tokenizer_bpe.save_model(str(directory))
    special = {name: "</s>" for name in ("bos_token", "eos_token", "unk_token", "pad_token")}
    (directory / "special_tokens_map.json").write_text(json.dumps(special))
    config = {"tokenizer_class": "GPT2Tokenizer", "add_bos_token": True, "add_prefix_space": False,
              "errors": "replace", "model_max_length": 2048, "padding_side": "right", **special}
    (directory / "tokenizer_config.json").write_text(json.dumps(config))


def train_bpe():
    from tokenizers import ByteLevelBPETokenizer

    corpus = ["USER: What is in the photo? ASSISTANT:" + TAUGHT, "First glance: two green squares.\nA cat. A dog!"] * 3
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(corpus, vocab_size=300, special_tokens=["<s>", "<pad>", "</s>", "<unk>"])
    return bpe


class FakeLlava:
    """A LLaVA-OPT release in the authors' layout, scaled down (32 wide, 4 + 2 layers):
    config.json (the authors' fields, widths scaled), generation_config.json, tokenizer
    files, and ``model.safetensors`` (no ``lm_head``) or ``pytorch_model.bin`` (with it).
    ``taught``: a text the LM learns to write; ``parts``: another fake whose weights to
    save again (in this fake's format)."""

    def __init__(self, root: Path, helpers, fmt: str = "safetensors", with_vision: bool = True,
                 bin_shards: bool = False, taught: Optional[str] = None, name: str = "llava",
                 parts: Optional["FakeLlava"] = None):
        from transformers import AutoTokenizer

        torch.manual_seed(0)
        self.dir = root / name
        self.dir.mkdir()
        save_tokenizer_files(train_bpe(), self.dir)
        self.tokenizer = AutoTokenizer.from_pretrained(self.dir)
        clip_config = helpers.tiny_clip_config()
        self.clip_dir = root / f"{name}-clip"
        lm = helpers.tiny_opt_config(len(self.tokenizer))
        self.config = {
            **LAYOUT["config_json"],
            "hidden_size": lm.hidden_size, "word_embed_proj_dim": lm.hidden_size, "hidden_size_projector": lm.hidden_size,
            "ffn_dim": lm.ffn_dim, "num_attention_heads": lm.num_attention_heads,
            "num_hidden_layers": lm.num_hidden_layers, "max_position_embeddings": lm.max_position_embeddings,
            "vocab_size": 8 * -(-len(self.tokenizer) // 8),  # padded to a multiple of 8, as OPT's 50272
            "mm_hidden_size": clip_config.hidden_size, "vision_width": clip_config.hidden_size,
            "mm_vision_tower": str(self.clip_dir),
        }
        self.clip, self.projector, self.opt = release_modules(clip_config, self.config)
        torch.manual_seed(1)  # the tower directory holds other weights than the checkpoint
        CLIPVisionModel(clip_config).save_pretrained(self.clip_dir)
        if parts is not None:
            for mine, theirs in zip((self.clip, self.projector, self.opt), (parts.clip, parts.projector, parts.opt)):
                mine.load_state_dict(theirs.state_dict())
        elif taught is not None:
            self.teach(helpers.make_images(), taught)
        full = authors_state(self.clip, self.projector, self.opt, with_head=fmt == "bin")
        tower = "model.vision_tower.vision_tower."
        self.state = state = {k: v for k, v in full.items() if with_vision or not k.startswith(tower)}
        if bin_shards:
            keys = sorted(state)
            shards = {"pytorch_model-00001-of-00002.bin": keys[: len(keys) // 2],
                      "pytorch_model-00002-of-00002.bin": keys[len(keys) // 2 :]}
            for shard, ks in shards.items():
                torch.save({k: state[k] for k in ks}, self.dir / shard)
            index = {"weight_map": {k: shard for shard, ks in shards.items() for k in ks}}
            (self.dir / "pytorch_model.bin.index.json").write_text(json.dumps(index))
        elif fmt == "bin":
            torch.save(state, self.dir / "pytorch_model.bin")
        else:
            save_file(state, str(self.dir / "model.safetensors"), metadata={"format": "pt"})
        (self.dir / "config.json").write_text(json.dumps(self.config, indent=2))
        (self.dir / "generation_config.json").write_text(json.dumps(LAYOUT["generation_config_json"]))
        # The reference runs the stored values (bf16 where the release keeps bf16), in fp32.
        prefix = tower + ("" if "vision_model.embeddings.class_embedding" in self.clip.state_dict() else "vision_model.")
        self.clip.load_state_dict({k[len(prefix):]: v.float() for k, v in full.items() if k.startswith(tower)})
        decoder = "model.decoder."
        self.opt.model.decoder.load_state_dict({k[len(decoder):]: v.float() for k, v in full.items()
                                                if k.startswith(decoder)})
        self.opt.tie_weights()

    def prompt_embeds(self, visual: torch.Tensor) -> torch.Tensor:
        """The authors' prompt around the visual tokens: BOS + "USER: " + image +
        "What is in the photo? ASSISTANT:", the text pieces tokenised separately."""
        tok, n = self.tokenizer, len(visual)
        head = [tok.bos_token_id] + tok("USER: ", add_special_tokens=False).input_ids
        tail = tok("What is in the photo? ASSISTANT:", add_special_tokens=False).input_ids
        embed = self.opt.get_input_embeddings()
        return torch.cat([embed(torch.tensor([head] * n)), visual, embed(torch.tensor([tail] * n))], dim=1)

    def visual(self, pixels: torch.Tensor) -> torch.Tensor:
        feats = self.clip(pixel_values=pixels, output_hidden_states=True).hidden_states[-2][:, 1:]
        return self.projector(feats)

    def teach(self, images, text: str, steps: int = 80) -> None:
        """Fit projector and LM to write ``text`` then EOS (so decoding ends at EOS and the
        post-processing has something to cut)."""
        from sharpeye_ros.model.config import VisionConfig
        from sharpeye_ros.model.preprocess import ImageProcessor

        v = VisionConfig()
        pixels, _ = ImageProcessor(self.clip.config.image_size, v.pad_color, v.image_mean, v.image_std)(images)
        target = self.tokenizer(text, add_special_tokens=False).input_ids + [self.tokenizer.eos_token_id]
        ids = torch.tensor([target] * len(images))
        params = list(self.projector.parameters()) + list(self.opt.parameters())
        opt = torch.optim.Adam(params, lr=1e-2)
        with torch.no_grad():
            feats = self.clip(pixel_values=pixels, output_hidden_states=True).hidden_states[-2][:, 1:]
        for _ in range(steps):
            prompt = self.prompt_embeds(self.projector(feats))
            embeds = torch.cat([prompt, self.opt.get_input_embeddings()(ids[:, :-1])], dim=1)
            logits = self.opt(inputs_embeds=embeds).logits[:, prompt.shape[1] - 1 :]
            loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids.reshape(-1))
            opt.zero_grad()
            loss.backward()
            opt.step()

    @torch.no_grad()
    def reference_generate(self, pixels: torch.Tensor, max_new_tokens: int = 77) -> list[list[int]]:
        """The authors' pipeline with stock transformers modules and ``generate``:
        CLIP layer -2 without CLS -> projector -> OPT, their beam settings and EOS."""
        embeds = self.prompt_embeds(self.projector(
            self.clip(pixel_values=pixels, output_hidden_states=True).hidden_states[-2][:, 1:]))
        g = LAYOUT["eval_generation"]
        out = self.opt.generate(
            inputs_embeds=embeds,
            attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long),
            num_beams=g["num_beams"],
            max_new_tokens=min(max_new_tokens, g["max_new_tokens"]),
            length_penalty=float(g["length_penalty"]),
            early_stopping=g["early_stopping"],
            do_sample=False,
            eos_token_id=g["eos_token_id"],
            pad_token_id=LAYOUT["generation_config_json"]["pad_token_id"],
        )
        return [row.tolist() for row in out]

    def reference_caption(self, ids: list[int], task: str) -> str:
        """The authors' post-processing of one output: the text after the last
        "ASSISTANT: "; for detailed captions, the first 3 "."-sentences, each stripped,
        joined by "." and ended by one."""
        text = self.tokenizer.decode(ids, skip_special_tokens=True).strip()
        text = text.split(LAYOUT["eval_postprocess"]["prefix"])[-1]
        if task == "detailed":
            sentences = [s.strip() for s in text.split(".") if s.strip()]
            text = ".".join(sentences[: LAYOUT["eval_postprocess"]["detailed_sentences"]]).strip() + "."
        return text


def joined_as_the_authors(caption: str) -> str:
    """A caption with the spaces after its periods dropped, as the authors' detailed
    post-processing writes it ("A cat.A dog."); this package keeps them."""
    return re.sub(r"\.\s+", ".", caption)


def trim(ids: list[int], eos: int) -> list[int]:
    return ids[: ids.index(eos) + 1] if eos in ids else ids


def recorded_generations(monkeypatch) -> list:
    """A list that receives what each of the model's ``generate`` calls returns."""
    from sharpeye_ros.model import sharpeyes

    calls: list = []
    original = sharpeyes.generate

    def generate(*args, **kwargs):
        out = original(*args, **kwargs)
        calls.append(out)
        return out

    monkeypatch.setattr(sharpeyes, "generate", generate)
    return calls


def test_the_fake_release_has_the_authors_layout(tmp_path, helpers):
    # Built at full size (on the meta device) from the authors' config.json, the same
    # construction gives exactly the released keys, shapes and dtypes.
    with torch.device("meta"):
        full = release_modules(CLIPVisionConfig.from_dict(KNOWN_VISION_CONFIGS["openai/clip-vit-large-patch14-336"]),
                               LAYOUT["config_json"])
    state = authors_state(*full, with_head=True)
    assert len(state) == LAYOUT["bin_tensors"] and len(state) - 1 == LAYOUT["safetensors_tensors"]
    assert {k: str(v.dtype)[len("torch."):] for k, v in state.items()} == expected_keys(LAYOUT["depth"])
    assert all(list(v.shape) == LAYOUT["tensors"][template(k)][0] for k, v in state.items())
    # Scaled down: the same keys at the smaller depths, the same dtypes, the same files and fields.
    for fmt in ("safetensors", "bin"):
        fake = FakeLlava(tmp_path, helpers, fmt=fmt, name=fmt)
        stored = load_file(str(fake.dir / "model.safetensors")) if fmt == "safetensors" else \
            torch.load(fake.dir / "pytorch_model.bin", weights_only=True)
        depths = {"model.decoder.layers": 2, "model.vision_tower.vision_tower.vision_model.encoder.layers": 4}
        want = expected_keys(depths)
        if fmt == "safetensors":
            del want["lm_head.weight"]
        else:
            assert stored["lm_head.weight"].data_ptr() == stored["model.decoder.embed_tokens.weight"].data_ptr()
        assert {k: str(v.dtype)[len("torch."):] for k, v in stored.items()} == want
        config = json.loads((fake.dir / "config.json").read_text())
        assert set(config) == set(LAYOUT["config_json"])
        names = set(LAYOUT["files_safetensors_release"]) - {"model.safetensors"}
        assert names <= {p.name for p in fake.dir.iterdir()} and not (fake.dir / "tokenizer.json").exists()


@pytest.fixture(scope="module")
def taught(tmp_path_factory, helpers):
    """Both formats of a release whose LM writes :data:`TAUGHT`, converted by the command."""
    root = tmp_path_factory.mktemp("taught")
    out = {}
    first = None
    for fmt in ("safetensors", "bin"):
        fake = first = FakeLlava(root, helpers, fmt=fmt, taught=TAUGHT, name=fmt, parts=first)
        assert main([str(fake.dir), str(root / f"{fmt}-converted")]) == 0
        out[fmt] = fake, root / f"{fmt}-converted"
    return out


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_the_release_converts_with_every_tensor_mapped_with_equal_values(taught, fmt):
    fake, converted = taught[fmt]
    ours = load_file(str(converted / "model.safetensors"))
    tower = "vision.model." if "vision.model.embeddings.class_embedding" in ours else "vision.model.vision_model."
    mapping = {"model.mm_projector.": "connector.", "model.decoder.": "lm.model.model.decoder.",
               "model.vision_tower.vision_tower.vision_model.": tower}
    seen = set()
    for key, value in fake.state.items():
        if key == "lm_head.weight":  # stored once, tied to the embeddings
            target = "lm.model.model.decoder.embed_tokens.weight"
        else:
            prefix = next(p for p in mapping if key.startswith(p))
            target = mapping[prefix] + key[len(prefix):]
        assert torch.equal(ours[target], value.float()), key
        seen.add(target)
    assert seen == set(ours)  # nothing else in the converted model
    model = SharpEyes.from_pretrained(converted)
    assert model.lm.model.lm_head.weight is model.lm.model.get_input_embeddings().weight


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
@pytest.mark.parametrize("task", ["coco", "detailed"])
def test_the_converted_model_captions_token_for_token_as_the_authors_pipeline(taught, fmt, task, images,
                                                                               monkeypatch):
    fake, converted = taught[fmt]
    model = SharpEyes.from_pretrained(converted)
    g = model.config.generation
    assert (g.num_beams, g.max_new_tokens, g.length_penalty, g.early_stopping, g.stop) == (3, 77, 0.0, True, ("eos",))
    assert model.config.refine is False and g.task == "coco"
    pixels, _ = model.preprocess(images)
    reference = fake.reference_generate(pixels)
    eos = fake.tokenizer.eos_token_id
    assert all(eos in row for row in reference)  # the test is about EOS-ended beams
    calls = recorded_generations(monkeypatch)
    results = model.caption(images, task=None if task == "coco" else task)
    assert [gen.ids for gen in calls[0]] == [trim(row, eos) for row in reference]
    want = [fake.reference_caption(row, task) for row in reference]
    got = [r.caption for r in results]
    assert (got if task == "coco" else [joined_as_the_authors(c) for c in got]) == want
    assert got == [AFTER_TAG if task == "coco" else THREE_SENTENCES] * len(images)


def test_without_eos_decoding_runs_to_77_tokens_as_the_authors(tmp_path, helpers, images, monkeypatch):
    fake = FakeLlava(tmp_path, helpers)  # random weights
    state = load_file(str(fake.dir / "model.safetensors"))
    embeddings = state["model.decoder.embed_tokens.weight"]
    embeddings[2] = 0  # EOS's logit 0, mid-field among random ones: never among the best
    save_file(state, str(fake.dir / "model.safetensors"))
    fake.opt.get_input_embeddings().weight.data[2] = 0
    model = load_llava(fake.dir)
    pixels, _ = model.preprocess(images)
    reference = fake.reference_generate(pixels)
    calls = recorded_generations(monkeypatch)
    results = model.caption(images)
    assert [gen.ids for gen in calls[0]] == [trim(row, 2) for row in reference]
    assert all(len(gen.ids) == 77 and 2 not in gen.ids for gen in calls[0])
    assert [r.caption for r in results] == [fake.reference_caption(row, "coco") for row in reference]


def test_the_task_is_a_conversion_choice_and_a_caption_keyword(taught, tmp_path, images, capsys):
    fake, _ = taught["safetensors"]
    out = tmp_path / "detailed"
    assert main([str(fake.dir), str(out), "--task", "detailed"]) == 0
    model = SharpEyes.from_pretrained(out)
    assert model.config.generation.task == "detailed"
    assert {r.caption for r in model.caption(images)} == {THREE_SENTENCES}
    assert {r.caption for r in model.caption(images, task="coco")} == {AFTER_TAG}
    with pytest.raises(ValueError, match="task must be one of"):
        model.caption(images, task="long")
    with pytest.raises(SystemExit):
        main([str(fake.dir), str(tmp_path / "x"), "--task", "long"])
    assert "invalid choice" in capsys.readouterr().err
    # Stopping sooner is a separate, explicit choice.
    early = load_llava(fake.dir, early_stop=True)
    assert early.config.generation.stop == ("eos", "sentence", "newline")
    assert {r.caption for r in early.caption(images)} == {"A cat."}


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


def test_the_checkpoints_tower_is_kept_unless_vision_tower_replaces_it(tmp_path, helpers):
    fake = FakeLlava(tmp_path, helpers)
    tower = CLIPVisionModel.from_pretrained(fake.clip_dir).state_dict()
    key = "embeddings.patch_embedding.weight"

    def patch_weight(model):
        return model.vision.model.state_dict()[key]

    # Default: the checkpoint's (bf16) copy, though mm_vision_tower names a directory with weights.
    kept = load_llava(fake.dir)
    stored = fake.state[f"model.vision_tower.vision_tower.vision_model.{key}"]
    assert torch.equal(patch_weight(kept), stored.float())
    # --vision-tower: the tower's own (fp32) weights replace it, as the authors' loader does.
    replaced = load_llava(fake.dir, vision_tower=str(fake.clip_dir))
    assert torch.equal(patch_weight(replaced), tower[key])
    assert not torch.equal(patch_weight(replaced), stored.float())
    out = tmp_path / "replaced"
    assert main([str(fake.dir), str(out), "--vision-tower", str(fake.clip_dir)]) == 0
    assert torch.equal(patch_weight(SharpEyes.from_pretrained(out)), tower[key])


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


def test_a_release_of_mixed_dtypes_loads_in_one_dtype(tmp_path, helpers, images):
    # The release keeps its projector in fp32 and the rest in bf16; --vision-tower adds an fp32 tower.
    fake = FakeLlava(tmp_path, helpers)
    for tower in (None, str(fake.clip_dir)):
        for dtype in ("default", None, torch.bfloat16):
            model = load_llava(fake.dir, vision_tower=tower) if dtype == "default" else \
                load_llava(fake.dir, vision_tower=tower, dtype=dtype)
            want = torch.bfloat16 if dtype == torch.bfloat16 else torch.float32  # None: the widest
            assert {p.dtype for p in model.parameters()} == {want}, (tower, dtype)
            model.config.generation.max_new_tokens = 4
            assert len(model.caption(images)) == len(images)  # no "mat1 and mat2 must have the same dtype"


def test_a_head_that_differs_from_the_tied_embeddings_is_refused(tmp_path, helpers):
    fake = FakeLlava(tmp_path, helpers, fmt="bin")
    state = torch.load(fake.dir / "pytorch_model.bin", weights_only=True)
    assert load_llava(fake.dir) is not None  # the authors' .bin: the head is the embeddings
    state["lm_head.weight"] = state["lm_head.weight"].clone() + 1
    torch.save(state, fake.dir / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="lm_head.weight differs from the input embeddings"):
        load_llava(fake.dir)


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
    with pytest.raises(CheckpointError, match="task must be one of"):
        load_llava(fake.dir, task="long")
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
