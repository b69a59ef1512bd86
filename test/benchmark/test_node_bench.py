"""Latency through the node: the pure parts, and one short run of the installed captioner."""

from __future__ import annotations

import pytest

from sharpeye_ros.benchmark import node_bench


def test_frame_timeout_waits_well_past_a_typical_caption():
    assert node_bench.frame_timeout([0.1, 0.5, 0.3]) == pytest.approx(1.5)  # five times the median
    assert node_bench.frame_timeout([0.01]) == pytest.approx(1.0)  # at least a second
    with pytest.raises(ValueError):
        node_bench.frame_timeout([])


def test_latency_summary_subtracts_model_time():
    records = [
        {"receive_latency": 0.12, "message_latency": 0.11, "model": 0.10},
        {"receive_latency": 0.25, "message_latency": 0.22, "model": 0.20},
    ]
    s = node_bench.latency_summary(records)
    assert s["latency"]["n"] == 2 and s["latency"]["max"] == pytest.approx(0.25)
    assert s["overhead"]["min"] == pytest.approx(0.02) and s["overhead"]["max"] == pytest.approx(0.05)
    assert s["message_overhead"]["max"] == pytest.approx(0.02)
    with pytest.raises(ValueError):
        node_bench.latency_summary([])


def test_the_precision_logged_at_start_up_is_read_whole_when_it_names_a_device_itself():
    """auto's reason says 'on cpu (...)' inside the parentheses that hold the precision:
    the whole of it comes back, not the tail after its last 'on cpu ('."""
    from sharpeye_ros.model import precision as P

    line = ("[INFO] [1764640000.1] [sharpeye_benchmark.captioner]: captioning '/sharpeye_benchmark/image' "
            "(raw, reliable) at up to 100 Hz with paper on cpu ({})")
    for runs in ("float32; auto: float32 on cpu (int8 is opt-in)", P.resolve("auto", "cpu").describe(), "int8"):
        log = f"[INFO] [1764640000.0] [captioner]: loading\n{line.format(runs)}\n[INFO] [1764640001.0] [x]: ready\n"
        assert node_bench._precision_logged(log) == runs
    assert node_bench._precision_logged("no start-up line") == ""


def test_missing_executable_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(tmp_path))
    with pytest.raises(node_bench.NodeBenchmarkError, match="scripts/setup"):
        node_bench.run_node_benchmark("no_model")


def test_main_refuses_an_unknown_transport(tmp_path):
    spec = tmp_path / "spec.json"
    spec.write_text('{"model_path": "x", "transport": "carrier-pigeon"}')
    with pytest.raises(ValueError, match="transport"):
        node_bench.main([str(spec), str(tmp_path / "out.json")])
    assert node_bench.main([]) == 2


@pytest.mark.ros
@pytest.mark.slow
def test_latency_through_the_running_node(short_model_dir):
    pytest.importorskip("rclpy")
    # Reliable QoS and small frames: no frame lost on a busy test machine. The domain is
    # the test session's own (test/conftest.py).
    result = node_bench.run_node_benchmark(
        str(short_model_dir), captions=4, warmup=1, reliability="reliable", image_size=(320, 240), dtype="bfloat16"
    )
    assert result["captions"] >= 4 and result["refined"] and result["runs"].startswith("bfloat16")
    assert result["frames_sent"] >= result["captions"] and result["reliability"] == "reliable"
    a = result["all"]
    assert a["latency"]["n"] == result["captions"]
    # Latency covers the model, and stays within what one test machine can plausibly add.
    assert a["latency"]["min"] >= a["model"]["min"] > 0
    assert 0 <= a["overhead"]["p50"] < 5.0
    assert a["message_latency"]["max"] <= a["latency"]["max"] + 1e-3  # published before received
    assert {"rgb8", "bgr8"} <= set(result)
