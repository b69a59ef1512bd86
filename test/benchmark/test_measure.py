"""Statistics, peak memory, FLOP counting and the machine's limits."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sharpeye_ros.benchmark import measure


def test_percentile_interpolates_between_order_statistics():
    values = [5.0, 1.0, 4.0, 2.0, 3.0]
    assert measure.percentile(values, 50) == 3.0
    assert measure.percentile(values, 95) == pytest.approx(4.8)
    assert measure.percentile(values, 0) == 1.0 and measure.percentile(values, 100) == 5.0
    assert measure.percentile([7.0], 95) == 7.0


@pytest.mark.parametrize("values, q", [([], 50), ([1.0], 101), ([1.0], -1)])
def test_percentile_rejects_bad_input(values, q):
    with pytest.raises(ValueError, match="percentile"):
        measure.percentile(values, q)


def test_summarize():
    s = measure.summarize([0.1, 0.3, 0.2, 0.4])
    assert s["n"] == 4 and s["mean"] == pytest.approx(0.25)
    assert s["min"] == 0.1 and s["max"] == 0.4 and s["p50"] == pytest.approx(0.25)
    assert s["p50"] <= s["p95"] <= s["max"]
    with pytest.raises(ValueError, match="no values"):
        measure.summarize([])


def test_flop_counter_counts_the_cpu_attention_kernel():
    q, k, v = torch.randn(2, 3, 10, 8), torch.randn(2, 3, 12, 8), torch.randn(2, 3, 12, 4)
    with measure.flop_counter() as counter:
        F.scaled_dot_product_attention(q, k, v)
    # Q K^T: 2*b*h*s_q*s_k*d_k; weights x V: 2*b*h*s_q*s_k*d_v.
    assert counter.get_total_flops() == 2 * 2 * 3 * 10 * 12 * (8 + 4)


def test_counting_timer_counts_flops_and_calls_per_stage():
    layer = torch.nn.Linear(16, 32)
    timer = measure.CountingTimer(torch.device("cpu"), watch=layer)
    x = torch.randn(4, 16)
    with timer.stage("two"):
        layer(x)
        layer(x)
    with timer.stage("none"):
        x.sum()
    layer(x)  # outside any stage: not counted
    assert timer.flops == {"two": 2 * (2 * 4 * 16 * 32), "none": 0}
    assert timer.calls == {"two": 2}
    assert set(timer.times) == {"two", "none"} and all(t >= 0 for t in timer.times.values())
    assert not layer._forward_pre_hooks  # the hook is gone after the stage


@pytest.mark.parametrize(
    "name, cls",
    [
        ("aten::addmm", "matmul"),
        ("aten.mm", "matmul"),
        ("aten::mkldnn_convolution", "matmul"),
        ("aten.convolution", "matmul"),
        ("aten::_scaled_dot_product_flash_attention_for_cpu", "attention"),
        ("aten._scaled_dot_product_efficient_attention", "attention"),
        ("aten::mul", "other"),
        ("aten::copy_", "other"),
        ("aten::topk", "other"),
        ("aten::_conj", "other"),
    ],
)
def test_op_class(name, cls):
    assert measure.op_class(name) == cls


def test_counting_timer_splits_flops_by_op_class():
    timer = measure.CountingTimer(torch.device("cpu"))
    a, b = torch.randn(8, 16), torch.randn(16, 4)
    q = k = v = torch.randn(1, 2, 5, 8)
    with timer.stage("mixed"):
        a @ b
        F.scaled_dot_product_attention(q, k, v)
        torch.relu(a)
    assert timer.class_flops["mixed"] == {
        "matmul": 2 * 8 * 16 * 4,
        "attention": 2 * 1 * 2 * 5 * 5 * (8 + 8),
        "other": 0,
    }
    assert timer.flops["mixed"] == sum(timer.class_flops["mixed"].values())


def test_profiling_timer_splits_a_stage_by_op_class():
    timer = measure.ProfilingTimer(torch.device("cpu"))
    a = torch.randn(512, 512)
    x = torch.randn(4_000_000)
    with timer.stage("work"):
        for _ in range(3):
            a @ a  # ~0.8 GFLOP
        x.exp()
        time.sleep(0.05)  # in no op
    with timer.stage("work"):  # a stage entered twice adds up
        a @ a
    ops = timer.ops["work"]
    assert set(ops) == {"matmul", "attention", "other", "outside"}
    assert ops["matmul"] > 0 and ops["other"] > 0 and ops["attention"] == 0
    assert ops["outside"] >= 0.04
    assert sum(ops.values()) == pytest.approx(timer.times["work"], rel=1e-6)
    with pytest.raises(ValueError, match="CPU only"):
        measure.ProfilingTimer(torch.device("cuda"))


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc")
def test_peak_rss_sees_a_freed_allocation_until_reset():
    measure.reset_peak_rss()
    rss = measure.rss_bytes()
    block = np.ones(200 * 2**20 // 8)  # 200 MiB, touched
    del block
    peak = measure.peak_rss_bytes()
    assert peak >= rss + 150 * 2**20  # the peak remembers the freed block
    if measure.reset_peak_rss():
        assert measure.peak_rss_bytes() < peak - 100 * 2**20


def test_limits_are_plausible():
    flops = measure.matmul_throughput("cpu", torch.float32, size=128, reps=2)
    bandwidth = measure.read_bandwidth("cpu", num_bytes=8 * 2**20, reps=2)
    assert 1e6 < flops < 1e15
    assert 1e6 < bandwidth < 1e13


def test_machine_info_names_the_machine_and_software():
    info = measure.machine_info("cpu")
    assert info.cpu and info.cpu_count == os.cpu_count()
    assert info.torch == torch.__version__ and info.transformers
    assert info.gpu is None and info.date_utc.endswith("UTC")
