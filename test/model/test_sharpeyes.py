"""The whole model on tiny random weights: shapes, refine/zoom switches, batching,
training losses and freezing, loading towers from saved directories."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sharpeye_ros.model import CaptionResult, CheckpointError, Region, SharpEyes
from sharpeye_ros.model.deeplens import pool_grid

GLANCE_STAGES = {"preprocess", "vision", "connector", "prefill", "decode", "regions"}
REFINE_STAGES = {"deeplens", "refine_prefill", "refine_decode", "refine_regions"}


def test_encode_and_deeplens_shapes(small_model, images):
    m = small_model
    pixels, transforms = m.preprocess(images)
    assert pixels.shape == (3, 3, 64, 64) and len(transforms) == 3
    encoded = m.encode(pixels, with_features=True)
    embeds, features = encoded.embeds, encoded.features
    assert embeds.shape == (3, 16, 32)  # 4x4 patches, LM width 32
    assert features.shape == (3, 16, 2 * 32)  # two DeepLens layers of width 32
    assert m.deeplens_layers == (2, 3) and m.vision.select_layer == 3
    caption = m.lm.embed(torch.tensor([[5, 6, 7]] * 3))
    mask = torch.ones(3, 3, dtype=torch.bool)
    heat = torch.rand(3, 16)
    with torch.no_grad():
        out = m.deeplens(features, embeds, heat, caption, mask)
    assert out.shape == (3, 4, 32)  # pool 2: 4x4 -> 2x2 refined tokens
    # An untrained DeepLens (zero last layer) hands over the pooled glance embeddings.
    torch.testing.assert_close(out, pool_grid(embeds, 2))


def test_caption_with_and_without_refinement_and_zoom(small_model, images):
    m = small_model
    plain = m.caption(images, refine=False)
    assert all(isinstance(r, CaptionResult) and not r.refined and not r.zoomed for r in plain)
    assert set(plain[0].timings) == GLANCE_STAGES
    assert all(r.caption == r.initial_caption for r in plain)
    refined = m.caption(images, refine=True, zoom=False)
    assert all(r.refined and not r.zoomed for r in refined)
    assert set(refined[0].timings) == GLANCE_STAGES | REFINE_STAGES
    assert [r.initial_caption for r in refined] == [r.caption for r in plain]
    zoomed = m.caption(images, refine=True, zoom=True)
    assert all(r.refined and r.zoomed for r in zoomed)
    assert set(zoomed[0].timings) == GLANCE_STAGES | REFINE_STAGES | {"zoom"}
    assert all(t >= 0 for t in zoomed[0].timings.values())
    # Zoom without refinement does nothing; the config's defaults apply to None.
    assert not m.caption(images[:1], refine=False, zoom=True)[0].zoomed
    assert m.caption(images[:1])[0].refined == m.config.refine


def test_zoom_changes_what_deeplens_sees(small_model, images):
    m = small_model
    with torch.no_grad():
        torch.manual_seed(1)
        torch.nn.init.normal_(m.deeplens.out.weight, std=0.5)  # make DeepLens's output matter
        try:
            glance = m.glance(images, refine=True, zoom=True)
            plain = m.refined_embeddings(images, glance, zoom=False)
            zoomed = m.refined_embeddings(images, glance, zoom=True)
        finally:
            torch.nn.init.zeros_(m.deeplens.out.weight)
    assert plain.shape == (3, 4, 32)
    assert zoomed.shape == (3, 4 + 2 * 16, 32)  # + 2 crops of 4x4 tokens (zoom pool 1)
    assert not torch.allclose(zoomed[:, :4], plain)  # zoom tokens changed the refined glance tokens


def test_regions_are_in_source_pixels(small_model, images):
    results = small_model.caption(images, refine=False, num_regions=2)
    for image, r in zip(images, results):
        assert len(r.regions) <= 2
        for reg in r.regions:
            assert isinstance(reg, Region) and 0 <= reg.score <= 1 and reg.phrase
            assert (
                0 <= reg.x_min < reg.x_max <= image.shape[1] and 0 <= reg.y_min < reg.y_max <= image.shape[0]
            )
    assert all(r.regions == [] for r in small_model.caption(images, refine=False, num_regions=0))


@pytest.mark.parametrize("beams", [1, 2])
def test_batch_gives_the_same_captions_as_single_images(small_model, images, beams):
    m = small_model
    m.config.generation.num_beams = beams
    try:
        together = m.caption(images, refine=True, zoom=True)
        for image, res in zip(images, together):
            alone = m.caption([image], refine=True, zoom=True)[0]
            assert (alone.initial_caption, alone.caption) == (res.initial_caption, res.caption)
            assert [(r.phrase, round(r.x_min, 3), round(r.score, 5)) for r in alone.regions] == [
                (r.phrase, round(r.x_min, 3), round(r.score, 5)) for r in res.regions
            ]
    finally:
        m.config.generation.num_beams = 1


def test_glance_loss_trains_only_the_chosen_groups(helpers, images):
    torch.manual_seed(0)
    m = SharpEyes.from_config(helpers.small_config())
    m.set_trainable("connector")
    loss = m.glance_loss(images, ["a red circle.", "a blue star and a green square.", "the left."])
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    groups = m.parameter_groups()
    assert all(p.grad is not None for p in groups["connector"])
    assert all(p.grad is None for name in ("vision", "lm", "deeplens") for p in groups[name])
    with pytest.raises(ValueError, match="unknown group"):
        m.set_trainable("decoder")


def test_refine_loss_reaches_deeplens_and_lm(helpers, images):
    torch.manual_seed(0)
    m = SharpEyes.from_config(helpers.small_config())
    m.set_trainable("deeplens", "lm")
    pixels, _ = m.preprocess(images)
    loss = m.refine_loss(
        images, ["a red circle.", "a star.", "left."], ["a red square.", "a blue star.", "left."], zoom=True
    )
    loss.backward()
    assert m.deeplens.out.weight.grad is not None and m.deeplens.out.weight.grad.abs().sum() > 0
    assert m.lm.model.get_input_embeddings().weight.grad is not None
    assert all(p.grad is None for p in m.parameter_groups()["vision"])
    # A few steps on one batch lower the loss: the graph is wired end to end.
    opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=3e-3)
    first = None
    for _ in range(8):
        opt.zero_grad()
        loss = m.refine_loss(
            images, ["a red circle.", "a star.", "left."], ["a red square.", "a blue star.", "left."]
        )
        loss.backward()
        opt.step()
        first = loss.item() if first is None else first
    assert loss.item() < first


def test_attention_of_given_captions_without_generating(small_model, images):
    maps = small_model.attention_maps(images, ["a red circle.", "blue", "a star and a square."])
    assert [tuple(m.shape) for m in maps] == [(5, 16), (2, 16), (7, 16)]  # tokens + EOS, 4x4 patches
    for m in maps:
        assert torch.all(m >= 0) and torch.all(m.sum(-1) <= 1 + 1e-5)
    regions = small_model.caption_regions(
        maps, ["a red circle.", "blue", "a star and a square."], small_model.preprocess(images)[1], num_regions=2
    )
    assert len(regions) == 3 and all(
        r.phrase in ("red circle", "blue", "star", "square") for rs in regions for r in rs
    )


def test_refine_needs_deeplens(helpers, images):
    m = SharpEyes.from_config(helpers.small_config().override({"deeplens": None, "refine": False}))
    assert m.caption(images[:1])[0].refined is False
    with pytest.raises(ValueError, match="no DeepLens"):
        m.caption(images[:1], refine=True)


def test_towers_load_from_local_directories(helpers, tmp_path, images, word_tokenizer):
    from transformers import CLIPVisionModel, OPTForCausalLM

    torch.manual_seed(0)
    clip = CLIPVisionModel(helpers.tiny_clip_config())
    opt = OPTForCausalLM(helpers.tiny_opt_config(len(word_tokenizer)))
    clip.save_pretrained(tmp_path / "clip")
    opt.save_pretrained(tmp_path / "opt")
    word_tokenizer.save_pretrained(tmp_path / "opt")
    cfg = helpers.small_config().override(
        {
            "vision.config": None,
            "vision.name_or_path": str(tmp_path / "clip"),
            "lm.config": None,
            "lm.name_or_path": str(tmp_path / "opt"),
            "lm.vocab_words": None,
        }
    )
    m = SharpEyes.from_config(cfg).eval()
    assert m.model_id == str(tmp_path / "clip")
    torch.testing.assert_close(
        m.vision.model.state_dict()["embeddings.patch_embedding.weight"],
        clip.state_dict()["embeddings.patch_embedding.weight"],
    )
    torch.testing.assert_close(m.lm.model.lm_head.weight, opt.lm_head.weight)
    assert len(m.caption(images[:1], refine=True)) == 1
    with pytest.raises(CheckpointError, match="cannot load the vision tower"):
        SharpEyes.from_config(cfg.override({"vision.name_or_path": str(tmp_path / "nothing")}))


def test_bad_caption_input_is_a_clear_error(small_model):
    with pytest.raises(ValueError, match=r"images\[1\].*uint8"):
        small_model.caption([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.float64)])


def test_refinement_with_and_without_draft_decoding_agree(small_model, images):
    m = small_model
    assert (
        m.config.generation.draft
        and (m.config.generation.refine_num_beams or m.config.generation.num_beams) == 1
    )
    with torch.no_grad():
        torch.nn.init.normal_(m.deeplens.out.weight, std=0.2)
    try:
        with_draft = m.caption(images, refine=True, zoom=True)
        without = m.caption(images, refine=True, zoom=True, draft=False)
    finally:
        torch.nn.init.zeros_(m.deeplens.out.weight)
    assert [r.caption for r in with_draft] == [r.caption for r in without]


@pytest.mark.parametrize("beams", [1, 3])
def test_a_changed_caption_gets_regions_of_its_own_words(small_model, images, beams):
    m = small_model
    m.config.generation.num_beams = beams
    try:
        glance = m.glance(images, num_regions=3, refine=True)
    finally:
        m.config.generation.num_beams = 1
    # stand-ins for refined captions: the second and third differ from their glance's
    finals = [glance.captions[0], "a red circle and a blue star.", "a star and a square."]
    assert finals[1] != glance.captions[1] and finals[2] != glance.captions[2]
    regions = m._final_regions(glance, finals, 3)
    assert regions[0] is glance.regions[0]  # unchanged caption: the glance's own regions
    # the same as a teacher-forced pass of prompt + caption, without running the prompt again
    expected = m.caption_regions(m.attention_maps(images, finals), finals, glance.transforms, 3)
    for got, want in zip(regions[1:], expected[1:]):
        assert got and [r.phrase for r in got] == [r.phrase for r in want]
        assert np.allclose([[r.x_min, r.y_min, r.x_max, r.y_max] for r in got],
                           [[r.x_min, r.y_min, r.x_max, r.y_max] for r in want], atol=1e-3)
