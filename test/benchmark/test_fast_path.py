"""The CPU fast path's speed run, on the tiny model: the precisions compared are copies of
one float32 model, decoding the same fixed tokens and beams, and the int8 glance's roofline
counts int8 weights at one byte."""

from __future__ import annotations

import pytest
import torch

from sharpeye_ros.benchmark import fast_path
from sharpeye_ros.benchmark.worker import benchmark_images
from sharpeye_ros.model import SharpEyes, presets
from sharpeye_ros.model import precision as P
from sharpeye_ros.model.timing import GLANCE_STAGES

pytestmark = pytest.mark.skipif(not P.int8_available(), reason="this CPU/torch has no x86 int8 kernels")


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(0)
    return fast_path.in_precisions(SharpEyes.from_config(presets.tiny()).eval(), ["float32", "int8"])


def test_each_precision_is_a_copy_of_one_float32_model(nets):
    base, q = nets["float32"], nets["int8"]
    assert base.precision.name == "float32" and P.int8_layers(base) == 0
    assert q.precision.quantized and P.int8_layers(q) > 0 and q is not base
    for net in (base, q):
        g = net.config.generation
        assert (g.max_new_tokens, tuple(g.stop), g.num_beams) == (fast_path.TOKENS, (), fast_path.BEAMS)


@torch.no_grad()
def test_the_int8_roofline_reads_int8_weights_and_sums_its_stages(nets):
    base, q = nets["float32"], nets["int8"]
    image = benchmark_images(1, (160, 120))[0]
    seconds, stages = fast_path.Entry("tiny", "int8", "glance", q).caption(image)
    assert set(stages) == set(GLANCE_STAGES) and seconds >= sum(stages.values()) * 0.99
    geo = fast_path.int8_geometry(q, 10)
    assert geo.lm_bytes == P.weight_bytes(q.lm) < P.weight_bytes(base.lm)
    roof = fast_path.roofline(base, q, image, stages)
    assert set(roof["stages"]) == set(GLANCE_STAGES)
    bound = sum(max(s["flop_bound_s"], s["byte_bound_s"]) for s in roof["stages"].values())
    assert roof["bound_s"] == pytest.approx(bound) and roof["ratio"] == pytest.approx(roof["seconds"] / bound)
    assert roof["stages"]["decode"]["byte_bound_s"] > 0 and roof["int8_flops_per_s"] > 0
