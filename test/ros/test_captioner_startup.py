"""Captioner start-up in-process: parameters from config/captioner.yaml, descriptors, and
clear errors for bad parameters or a model that does not load."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

rclpy = pytest.importorskip("rclpy")
pytestmark = pytest.mark.ros

from rclpy.parameter import Parameter  # noqa: E402

CONFIG = Path(__file__).resolve().parents[2] / "config" / "captioner.yaml"


def make(context, **params):
    from sharpeye_ros.ros.captioner_node import start

    overrides = [Parameter(k, value=v) for k, v in params.items()]
    return start(context=context, parameter_overrides=overrides)


@pytest.mark.parametrize("namespace", ["/", "/robot1/front"])
def test_params_file_is_loaded_in_any_namespace(rclpy_context, tiny_model_dir, tmp_path, namespace):
    from sharpeye_ros.ros.captioner_node import start

    config = yaml.safe_load(CONFIG.read_text())
    expected = config["/**/captioner"]["ros__parameters"]
    expected.update(model_path=str(tiny_model_dir), max_rate=3.5, num_regions=5, refine=False)
    params = tmp_path / "captioner.yaml"
    params.write_text(yaml.safe_dump(config))  # the shipped file, a few values changed
    node = start(context=rclpy_context, namespace=namespace,
                 cli_args=["--ros-args", "--params-file", str(params)])
    try:
        for name, value in expected.items():
            assert node.get_parameter(name).value == value, name
            assert getattr(node.settings, name) == value, name
        report = node.health_report()
        assert report.value("model_id") == str(tiny_model_dir)
        # dtype auto on a CPU: float32 for a model this small, whatever the CPU (test_precision.py)
        assert (report.value("device"), report.value("dtype")) == ("cpu", "float32")
    finally:
        node.destroy_node()


def test_parameters_are_described_with_ranges(rclpy_context, tiny_model_dir):
    node = make(rclpy_context, model_path=str(tiny_model_dir))
    try:
        rate = node.describe_parameter("max_rate")
        assert "header.stamp" in rate.description and not rate.read_only
        limits = rate.floating_point_range[0]
        assert (limits.from_value, limits.to_value) == (0.01, 100.0)
        regions = node.describe_parameter("num_regions")
        assert (regions.integer_range[0].from_value, regions.integer_range[0].to_value) == (0, 16)
        for name in ("model_path", "device", "dtype"):  # changeable while unconfigured only
            described = node.describe_parameter(name)
            assert not described.read_only and "unconfigured" in described.description, name
        assert node.describe_parameter("image_transport").read_only
        assert "compressed" in node.describe_parameter("image_transport").additional_constraints
    finally:
        node.destroy_node()


@pytest.mark.parametrize("params, message", [
    ({"max_rate": -1.0}, "max_rate"),
    ({"max_rate": 2}, "write a decimal number"),
    ({"num_regions": 99}, "num_regions"),
    ({"device": "gpu"}, "'device' must be auto, cpu, cuda or cuda:N"),
    ({"dtype": "float8"}, "'dtype' must be one of"),
    ({"image_transport": "h264"}, "'image_transport' must be one of raw, compressed"),
])
def test_bad_start_parameters_stop_the_node_with_a_reason(rclpy_context, tiny_model_dir, params, message):
    from sharpeye_ros.ros.captioner_node import StartupError

    with pytest.raises(StartupError, match=message):
        make(rclpy_context, model_path=str(tiny_model_dir), **params)


def test_missing_or_corrupt_model_stops_the_node(rclpy_context, tmp_path):
    from sharpeye_ros.ros.captioner_node import StartupError

    missing = tmp_path / "no_such_model"
    with pytest.raises(StartupError, match=f"cannot load model '{missing}': .*no such model directory"):
        make(rclpy_context, model_path=str(missing))
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "config.json").write_text("{ not json")
    with pytest.raises(StartupError, match=f"cannot load model '{corrupt}': .*not valid JSON"):
        make(rclpy_context, model_path=str(corrupt))


def test_cuda_without_cuda_is_refused(rclpy_context, tiny_model_dir):
    torch = pytest.importorskip("torch")
    from sharpeye_ros.model import precision as P
    from sharpeye_ros.ros.captioner_node import StartupError, resolve_device, resolve_dtype

    expected = "bfloat16-mixed" if P.bf16_matmul_available() else "int8-vision" if P.int8_available() else "float32"
    assert resolve_dtype("auto", "cpu").name == expected
    assert resolve_dtype("auto", "cuda:0").dtype == torch.float16
    assert resolve_dtype("bfloat16", "cpu").dtype == torch.bfloat16
    with pytest.raises(StartupError, match="parameter 'dtype': precision int8 runs on the CPU only"):
        resolve_dtype("int8", "cuda:0")
    assert resolve_device("cpu") == "cpu"
    if torch.cuda.is_available():
        assert resolve_device("auto") == "cuda"
    else:
        assert resolve_device("auto") == "cpu"
        with pytest.raises(StartupError, match="CUDA is not available"):
            make(rclpy_context, model_path=str(tiny_model_dir), device="cuda")


def test_shipped_demo_model_is_used_with_one_warning(rclpy_context, tiny_model_dir, monkeypatch, capfd):
    import sharpeye_ros.model

    monkeypatch.setattr(sharpeye_ros.model, "default_model_path", lambda: tiny_model_dir)
    node = make(rclpy_context)  # model_path "" (the default)
    try:
        assert node.health_report().value("model_id") == str(tiny_model_dir)
        err = capfd.readouterr().err
        assert err.count("shipped demo model") == 1 and "only knows the synthetic world" in err, err
    finally:
        node.destroy_node()
    node = make(rclpy_context, model_path=str(tiny_model_dir))
    node.destroy_node()
    assert "shipped demo model" not in capfd.readouterr().err
