"""The stage names and the glance/refine split of a caption's timings."""

from __future__ import annotations

import pytest

from sharpeye_ros.model.timing import GLANCE_STAGES, REFINE_STAGES, split_seconds


def test_split_seconds_into_glance_and_refine():
    timings = {"preprocess": 0.01, "vision": 0.02, "connector": 0.001, "prefill": 0.03, "decode": 0.1,
               "regions": 0.002, "zoom": 0.05, "deeplens": 0.01, "refine_prefill": 0.03, "refine_decode": 0.1}
    glance, refine = split_seconds(timings)
    assert glance == pytest.approx(0.163) and refine == pytest.approx(0.19)
    assert split_seconds({}) == (0.0, 0.0)


def test_every_stage_a_caption_times_is_listed_and_counted_once(small_model, images):
    """The stage lists are the contract: a caption's stages are theirs, in their order,
    and its glance and refine seconds add up to its timings."""
    for kwargs in ({"refine": False}, {"refine": True, "zoom": False}, {"refine": True, "zoom": True}):
        (result,) = small_model.caption(images[:1], **kwargs)
        listed = [s for s in GLANCE_STAGES + REFINE_STAGES if s in result.timings]
        assert list(result.timings) == listed
        assert set(GLANCE_STAGES) <= set(result.timings)
        assert result.glance_seconds + result.refine_seconds == pytest.approx(sum(result.timings.values()))
        assert (result.refine_seconds > 0) == kwargs["refine"]
