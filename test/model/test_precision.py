"""Precisions: how ``auto`` resolves, the int8 layer, quantizing at load without changing
the API, and the int8 path's fidelity on paper-size random weights.

The demo model's fidelity bars (evaluation scores within noise of float32) are in
test/evaluation/test_precision_scores.py.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from sharpeye_ros.model import SharpEyes, presets
from sharpeye_ros.model import precision as P

needs_int8 = pytest.mark.skipif(not P.int8_available(), reason="this CPU/torch has no x86 int8 kernels")


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    """A saved tiny checkpoint (random weights, with DeepLens), loaded through the real path."""
    torch.manual_seed(0)
    config = presets.tiny()
    config.generation.max_new_tokens = 8
    directory = tmp_path_factory.mktemp("tiny_precision") / "model"
    SharpEyes.from_config(config).save_pretrained(directory)
    return directory


def test_auto_resolves_as_documented(monkeypatch):
    assert P.resolve("auto", "cuda:0") == P.Precision("float16", torch.float16, "auto: float16 on CUDA")
    monkeypatch.setattr(P, "int8_available", lambda: True)
    auto = P.resolve("auto", "cpu")
    assert (auto.name, auto.dtype, auto.quantized) == ("int8", torch.float32, True)
    assert auto.why.startswith("auto: int8 on this")
    monkeypatch.setattr(P, "int8_available", lambda: False)
    assert P.resolve("auto", "cpu").name == "float32"
    with pytest.raises(ValueError, match="needs torch's x86 int8 kernels"):
        P.resolve("int8", "cpu")


def test_int8_availability_follows_the_cpu(monkeypatch):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "DEFAULT")
    assert not P.int8_available()  # no AVX2: fbgemm has no kernels there
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert P.int8_available() == any(e in torch.backends.quantized.supported_engines for e in P.INT8_ENGINES)


def test_names_and_dtypes_resolve_and_bad_ones_are_refused():
    assert P.resolve(torch.bfloat16, "cpu") == P.Precision("bfloat16", torch.bfloat16)
    assert P.resolve(None, "cpu").name == "float32"
    assert P.resolve("float16", "cpu").dtype == torch.float16
    resolved = P.Precision("float32", torch.float32, "why")
    assert P.resolve(resolved, "cpu") is resolved
    with pytest.raises(ValueError, match="one of auto, float32, float16, bfloat16, int8; got 'int4'"):
        P.resolve("int4", "cpu")
    with pytest.raises(ValueError, match="not a floating dtype"):
        P.resolve(torch.int8, "cpu")
    with pytest.raises(ValueError, match="int8 runs on the CPU only"):
        P.resolve("int8", "cuda")


@needs_int8
@torch.no_grad()
def test_int8_linear_is_close_to_the_float_one_for_any_input_shape():
    torch.manual_seed(0)
    linear = nn.Linear(64, 48)
    q = P.Int8Linear(linear)
    for shape in ((5, 64), (2, 7, 64), (1, 1, 64)):
        x = torch.randn(*shape)
        ref, out = linear(x), q(x)
        assert out.shape == ref.shape and out.dtype == torch.float32
        assert float((out - ref).norm() / ref.norm()) < 0.03
    # a zero-initialised layer (DeepLens's last one, untrained) gives exactly its bias
    zero = nn.Linear(32, 8)
    nn.init.zeros_(zero.weight)
    assert torch.equal(P.Int8Linear(zero)(torch.randn(3, 32)), zero.bias.expand(3, 8))
    assert copy.deepcopy(q)(x).shape == ref.shape  # models that quantize can still be copied


@needs_int8
def test_quantize_keeps_tied_kept_and_tiny_layers_float():
    torch.manual_seed(0)
    emb = nn.Embedding(10, 32)
    head = nn.Linear(32, 10, bias=False)
    head.weight = emb.weight
    net = nn.ModuleDict({"emb": emb, "head": head, "body": nn.Linear(32, 32), "kept": nn.Linear(32, 32),
                         "tiny": nn.Linear(4, 32)})
    P.quantize_int8(net, keep=[net["kept"]])
    kinds = {name: type(m).__name__ for name, m in net.items()}
    assert kinds == {"emb": "Embedding", "head": "Linear", "body": "Int8Linear", "kept": "Linear",
                     "tiny": "Linear"}


@needs_int8
def test_int8_loads_from_a_float_checkpoint_with_the_same_api(tiny_model_dir, images):
    f = SharpEyes.from_pretrained(tiny_model_dir, dtype=torch.float32)
    q = SharpEyes.from_pretrained(tiny_model_dir, dtype="int8")
    assert q.precision.quantized and f.precision.name == "float32"
    assert q.dtype == torch.float32  # activations and the layers kept float
    lm = q.lm.model
    assert type(lm.lm_head) is nn.Linear and lm.lm_head.weight is lm.get_input_embeddings().weight
    assert P.int8_layers(q) == sum(type(m) is nn.Linear and m.in_features >= P.MIN_INT8_FEATURES
                                   for m in f.modules()) - 1  # all but the head
    assert P.weight_bytes(q) < 0.7 * P.weight_bytes(f)
    a = f.glance(images, num_regions=3, refine=True, zoom=True)
    b = q.glance(images, num_regions=3, refine=True, zoom=True)
    assert [m.shape[1:] for m in b.token_maps] == [m.shape[1:] for m in a.token_maps]
    assert b.embeds.shape == a.embeds.shape and b.features.shape == a.features.shape
    results = q.finish(images, b, refine=True, zoom=True, num_regions=3)
    for image, r in zip(images, results):
        assert isinstance(r.caption, str) and len(r.regions) <= 3
        h, w = image.shape[:2]
        assert all(0 <= g.x_min <= g.x_max <= w and 0 <= g.y_min <= g.y_max <= h for g in r.regions)
    with pytest.raises(ValueError, match="runs in int8, quantized at load"):
        q.save_pretrained(tiny_model_dir.parent / "never")
    assert not (tiny_model_dir.parent / "never").exists()


def test_auto_on_the_cpu_loads_what_resolve_says(tiny_model_dir):
    model = SharpEyes.from_pretrained(tiny_model_dir, dtype="auto")
    expected = P.resolve("auto", "cpu")
    assert model.precision == expected
    assert (P.int8_layers(model) > 0) == expected.quantized


def test_float_dtypes_still_cast_every_weight(tiny_model_dir):
    model = SharpEyes.from_pretrained(tiny_model_dir, dtype="bfloat16")
    assert model.precision.name == "bfloat16"
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert P.int8_layers(model) == 0


# ---- paper size, random weights ------------------------------------------------------------
PAPER_IMAGES = 20  # half uniform noise, half synthetic scenes
MIN_TOP1 = 0.98
MIN_COSINE = 0.999


def paper_images(count: int = PAPER_IMAGES) -> list[np.ndarray]:
    """``count`` 640x480 images: the first half uniform noise, the rest synthetic scenes."""
    from sharpeye_ros.world import SceneConfig, generate_scene

    rng = np.random.default_rng(0)
    noise = [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(count // 2)]
    return noise + [generate_scene("val", i, SceneConfig()).image for i in range(count - count // 2)]


@torch.no_grad()
def prompt_top1(model: SharpEyes, image: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(vision features (N, D), the LM's top-1 token at every glance-prompt position)."""
    pixels, _ = model.preprocess([image])
    encoded = model.encode(pixels)
    prompt = model.lm.build_prompt(model.config.lm.prompt, encoded.embeds)
    hidden = model.lm(prompt.embeds, prompt.attention_mask, prompt.position_ids)
    return encoded.patches[0].float(), model.lm.model.lm_head(hidden[0]).argmax(-1)


@needs_int8
@pytest.mark.slow
def test_int8_paper_model_agrees_with_float32():
    """The weak proxy the docs name: random weights lack trained CLIP's and OPT's activation
    outliers, which hurt int8 most."""
    torch.manual_seed(0)
    model = SharpEyes.from_config(presets.paper().override({"deeplens": None, "refine": False})).eval()
    images = paper_images()
    reference = [prompt_top1(model, im) for im in images]
    P.apply(model, P.resolve("int8", "cpu"))
    assert P.int8_layers(model) == 24 * 6 + 4 + 12 * 6
    agree, cosines = [], []
    for im, (features, top1) in zip(images, reference):
        f8, t8 = prompt_top1(model, im)
        cosines.append(float(torch.nn.functional.cosine_similarity(f8, features, dim=-1).mean()))
        agree.append((t8 == top1).float())
    share = float(torch.cat(agree).mean())
    per_image = [round(float(a.mean()), 3) for a in agree]
    assert share >= MIN_TOP1, f"top-1 agreement {share:.3f} over {len(agree[0])} positions; per image {per_image}"
    assert min(cosines) >= MIN_COSINE, f"vision-feature cosine per image {[round(c, 5) for c in cosines]}"
