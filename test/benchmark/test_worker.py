"""The model-only measurement of one model: every mode, like for like."""

from __future__ import annotations

import pytest

from sharpeye_ros.benchmark.naive import NAIVE_STAGES
from sharpeye_ros.benchmark.worker import ModelSpec, benchmark_images, build_model
from sharpeye_ros.model.timing import GLANCE_STAGES, REFINE_STAGES

MODEL_STAGES = GLANCE_STAGES + REFINE_STAGES

ALL_MODES = ("glance", "deeplens", "deeplens_nodraft", "zoom", "naive")
TOKENS = 4  # as in conftest.py


@pytest.mark.parametrize(
    "change, message",
    [
        ({"modes": ("glance", "fast")}, "modes"),
        ({"modes": ()}, "modes"),
        ({"dtype": "int8"}, "dtype"),
        ({"repeats": 0}, "repeats"),
        ({"tokens": 0}, "tokens"),
        ({"source": "/no/such/model"}, "neither a preset"),
    ],
)
def test_spec_rejects_bad_fields(change, message):
    spec = ModelSpec(**{"name": "x", "source": "tiny", **change})
    with pytest.raises(ValueError, match=message):
        spec.validate()


def test_benchmark_images_have_the_asked_size():
    images = benchmark_images(2, (320, 240))
    assert [im.shape for im in images] == [(240, 320, 3)] * 2
    assert images[0].dtype.name == "uint8" and (images[0] != images[1]).any()


def test_random_preset_captions_are_words():
    model, random_weights = build_model(ModelSpec(name="tiny", source="tiny"))
    assert random_weights
    emb = model.lm.model.get_input_embeddings().weight
    assert not emb[len(model.lm.tokenizer) :].any()


def test_every_mode_measured_with_the_same_tokens(tiny_measurement):
    r = tiny_measurement
    assert r.tokens == TOKENS and r.tokens_source == "fixed" and r.random_weights
    assert set(r.modes) == set(ALL_MODES)
    for mode, m in r.modes.items():
        assert m.total.n == 1
        stage_sum = sum(s.mean for s in m.stages.values())
        assert 0 < stage_sum <= m.total.mean * 1.05, mode
        assert m.captions_per_s == pytest.approx(1 / m.total.mean)
        assert m.peak_rss_bytes > 0
        assert m.flops["vision"] > 0
    glance, deeplens, naive = (r.modes[m] for m in ("glance", "deeplens", "naive"))
    assert set(glance.stages) == {"preprocess", "vision", "connector", "prefill", "decode", "regions"}
    assert set(deeplens.stages) <= set(MODEL_STAGES) and "refine_decode" in deeplens.stages
    assert set(NAIVE_STAGES) <= set(naive.stages)
    # One prefill, then one LM pass per further token; transformers' generate: one per token.
    assert glance.lm_passes == {"prefill": 1, "decode": TOKENS - 1}
    assert naive.lm_passes["generate"] == TOKENS and naive.lm_passes["refine_generate"] == TOKENS
    assert r.modes["deeplens_nodraft"].lm_passes["refine_decode"] == TOKENS - 1
    assert deeplens.lm_passes["refine_decode"] <= TOKENS - 1  # drafts can only save passes
    # The same stage costs the same FLOPs in every mode; the naive path does more (its
    # vision passes run every layer, the library's only those it reads: 3 of the micro's 4).
    assert deeplens.flops["vision"] == glance.flops["vision"]
    assert naive.flops["vision"] == naive.flops["refine_vision"] > glance.flops["vision"]
    assert sum(naive.flops.values()) > sum(deeplens.flops.values())
    assert r.modes["zoom"].flops["zoom"] > 0


def test_geometry_and_node_side(tiny_measurement):
    g = tiny_measurement.geometry
    grid_tokens = (64 // 16) ** 2  # the micro preset
    assert g.prompt_len > grid_tokens and g.tokens == TOKENS
    assert g.refine_prompt_len > grid_tokens // 4  # DeepLens pools 2x2 patches into one token
    assert g.vision_bytes > 0 and g.lm_bytes > 0 and g.element_size == 4
    assert sum(tiny_measurement.params.values()) > 1e4
    assert set(tiny_measurement.node_side) == {"convert_rgb8", "convert_bgr8", "drawing"}


def test_vision_flops_match_the_vit_formula(tiny_measurement):
    """FLOPs counted while running equal a ViT's by hand (the micro preset: 64 px, 16 px
    patches, width 32, MLP 64, 4 layers), attention included. The glance selects the
    penultimate layer, so only 3 layers run."""
    n, d, f, layers = (64 // 16) ** 2, 32, 64, 3
    s = n + 1  # with the class token
    patch = 2 * n * (3 * 16 * 16) * d
    per_layer = 2 * s * (4 * d * d + 2 * d * f) + 4 * s * s * d
    assert tiny_measurement.modes["glance"].flops["vision"] == patch + layers * per_layer


def test_docs_name_never_shows_this_machines_paths():
    from sharpeye_ros.benchmark.worker import docs_name

    assert docs_name("paper") == "paper"
    assert docs_name("/opt/ws/install/sharpeye_ros/share/sharpeye_ros/models/demo") == "models/demo"
    assert docs_name("/home/me/sharpeye_ros/models/demo") == "models/demo"
    named = docs_name("/tmp/sharpeye_benchmark_models_x1/tiny")
    assert "/tmp" not in named and "tiny" in named


def test_the_glance_samples_the_machine_around_each_caption(tiny_measurement):
    modes = tiny_measurement.modes
    per_caption = modes["glance"].per_caption
    assert per_caption.seconds == [modes["glance"].total.mean]  # the one timed caption
    assert len(per_caption.matmul_flops_per_s) == 1 and per_caption.matmul_flops_per_s[0] > 0
    assert all(m.per_caption is None for name, m in modes.items() if name != "glance")


def test_the_limit_modes_are_profiled_by_op_class_on_the_cpu(tiny_measurement):
    for name, mode in tiny_measurement.modes.items():
        if name in ("glance", "deeplens"):  # the modes the docs set against the limits
            assert set(mode.op_seconds) == set(mode.stages), name
        else:
            assert mode.op_seconds is None, name  # no profile that nothing shows
        assert set(mode.op_flops) == set(mode.flops), name
        for stage, flops in mode.op_flops.items():
            assert sum(flops.values()) == mode.flops[stage], (name, stage)
    glance = tiny_measurement.modes["glance"]
    assert glance.op_seconds["vision"]["matmul"] > 0 and glance.op_seconds["vision"]["attention"] > 0
    assert glance.op_flops["vision"]["attention"] > 0 and glance.op_flops["decode"]["attention"] > 0
