"""The synthetic camera publishes the world's scenes with correct headers, timing and ground truth."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
pytestmark = pytest.mark.ros

from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402

from sharpeye_ros.ros.image_conversion import compressed_msg_to_rgb, image_msg_to_rgb  # noqa: E402
from sharpeye_ros.ros.processes import installed_executable  # noqa: E402
from sharpeye_ros.ros.scene_feed import parse_ground_truth, scene_number  # noqa: E402
from sharpeye_ros.ros.stamps import stamp_ns  # noqa: E402
from sharpeye_ros.world import generate_scene  # noqa: E402
from sharpeye_ros.world.scene import SceneConfig  # noqa: E402

SIZE = {"width": 96, "height": 64}


def _camera(context: Any, cli_args: Any = None, **params: Any) -> Any:
    from sharpeye_ros.ros.synthetic_camera_node import SyntheticCamera

    overrides = [Parameter(k, value=v) for k, v in {**SIZE, **params}.items()]
    return SyntheticCamera(context=context, parameter_overrides=overrides, cli_args=cli_args)


class _Listener:
    """A node in the test collecting images, compressed images and ground truth."""

    def __init__(self, context: Any) -> None:
        from sensor_msgs.msg import CompressedImage, Image
        from std_msgs.msg import String

        from sharpeye_ros.ros.synthetic_camera_node import LATCHED

        self.node = rclpy.create_node("camera_listener", context=context)
        self.images: list = []
        self.compressed: list = []
        self.truths: list = []
        self.node.create_subscription(Image, "image", self.images.append, qos_profile_sensor_data)
        self.node.create_subscription(CompressedImage, "image/compressed", self.compressed.append,
                                      qos_profile_sensor_data)
        self.truths_sub = self.node.create_subscription(String, "ground_truth", self.truths.append, LATCHED)


def _spin_until(executor: SingleThreadedExecutor, done: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "timed out waiting for camera messages"
        executor.spin_once(timeout_sec=0.05)


def test_publishes_scenes_with_headers_and_ground_truth(rclpy_context: Any) -> None:
    camera = _camera(rclpy_context, rate=20.0, scene_period=0.5, split="val", start_index=3,
                     encoding="bgr8", frame_id="cam", publish_compressed=True)
    listener = _Listener(rclpy_context)
    executor = SingleThreadedExecutor(context=rclpy_context)
    executor.add_node(camera)
    executor.add_node(listener.node)
    try:
        _spin_until(executor, lambda: len(listener.truths) >= 3 and len(listener.images) >= 25)
    finally:
        executor.shutdown()
    docs = [parse_ground_truth(m.data) for m in listener.truths]
    assert [d["index"] for d, _ in docs[:3]] == [3, 4, 5]
    scenes = {i: generate_scene("val", i, SceneConfig(**SIZE)) for i in (3, 4, 5, 6)}
    for doc, objects in docs[:3]:
        assert objects == scenes[doc["index"]].objects and doc["caption"] == scenes[doc["index"]].captions[0]
    start = stamp_ns(docs[0][0]["stamp"])
    stamps = [stamp_ns(m) for m in listener.images]
    assert all(b > a for a, b in zip(stamps, stamps[1:])), "stamps must increase"
    periods = np.diff(stamps) / 1e9
    assert 0.03 < float(np.median(periods)) < 0.08  # 20 Hz on a busy 2-core machine
    for msg, stamp in zip(listener.images, stamps):
        assert (msg.header.frame_id, msg.encoding, msg.width, msg.height) == ("cam", "bgr8", 96, 64)
        if stamp >= start:  # frames before the first ground truth we got belong to scene 3 too
            expected = scenes[3 + scene_number((stamp - start) / 1e9, 0.5)]
            np.testing.assert_array_equal(image_msg_to_rgb(msg), expected.image)
    assert listener.compressed, "publish_compressed=true must publish image/compressed"
    jpeg = listener.compressed[0]
    assert "jpeg" in jpeg.format and jpeg.header.frame_id == "cam"
    assert stamps[0] - 10**9 < stamp_ns(jpeg) <= stamps[-1]
    decoded = compressed_msg_to_rgb(jpeg).astype(int)
    assert min(np.abs(decoded - s.image).mean() for s in scenes.values()) < 6.0

    # Transient-local: a subscriber joining late still gets the current scene's truth.
    late = _Listener(rclpy_context)
    executor = SingleThreadedExecutor(context=rclpy_context)
    executor.add_node(late.node)
    try:
        _spin_until(executor, lambda: bool(late.truths), timeout=10.0)
    finally:
        executor.shutdown()
    assert parse_ground_truth(late.truths[0].data)[0]["index"] >= 5
    camera.destroy_node()


def test_compressed_stream_follows_the_image_remap(rclpy_context: Any) -> None:
    # image_transport's naming: a remap of `image` to /front/image_raw moves the JPEG stream
    # to /front/image_raw/compressed, where the captioner (image_transport:=compressed) looks.
    from sensor_msgs.msg import CompressedImage

    camera = _camera(rclpy_context, ["--ros-args", "-r", "image:=/front/image_raw"], rate=20.0,
                     publish_compressed=True)
    assert camera._compressed_pub.topic_name == "/front/image_raw/compressed"
    node = rclpy.create_node("remap_listener", context=rclpy_context)
    got: list = []
    node.create_subscription(CompressedImage, "/front/image_raw/compressed", got.append, qos_profile_sensor_data)
    executor = SingleThreadedExecutor(context=rclpy_context)
    executor.add_node(camera)
    executor.add_node(node)
    try:
        _spin_until(executor, lambda: len(got) >= 2)
    finally:
        executor.shutdown()
    assert compressed_msg_to_rgb(got[0]).shape == (64, 96, 3)
    camera.destroy_node()


def test_follows_sim_time(rclpy_context: Any) -> None:
    from rosgraph_msgs.msg import Clock

    camera = _camera(rclpy_context, rate=10.0, scene_period=1.0, num_scenes=2, use_sim_time=True)
    listener = _Listener(rclpy_context)
    clock_pub = listener.node.create_publisher(Clock, "/clock", 10)
    executor = SingleThreadedExecutor(context=rclpy_context)
    executor.add_node(camera)
    executor.add_node(listener.node)
    try:
        t0 = time.monotonic()
        while time.monotonic() - t0 < 0.5:  # no /clock yet: sim time is 0, nothing is published
            executor.spin_once(timeout_sec=0.05)
        assert listener.images == []
        sim_ns = 50 * 10**9
        deadline = time.monotonic() + 30.0
        while sim_ns < 53 * 10**9 + 10**8:  # 3.1 s of sim time in 10 ms steps, as fast as we can
            assert time.monotonic() < deadline
            sim_ns += 10**7
            clock_pub.publish(Clock(clock=rclpy.time.Time(nanoseconds=sim_ns).to_msg()))
            executor.spin_once(timeout_sec=0.005)
        _spin_until(executor, lambda: len(listener.truths) >= 3, timeout=5.0)
    finally:
        executor.shutdown()
    stamps = [stamp_ns(m) for m in listener.images]
    assert stamps and all(50 * 10**9 <= s <= sim_ns for s in stamps), "stamps come from /clock"
    # About one frame per 0.1 s of sim time (a few may be dropped on the best-effort topic).
    assert 15 <= len(stamps) <= 32
    # num_scenes=2 cycles 0, 1, 0, 1 at 1 s of sim time each.
    assert [parse_ground_truth(m.data)[0]["index"] for m in listener.truths[:3]] == [0, 1, 0]
    truth_stamps = [parse_ground_truth(m.data)[0]["stamp"]["sec"] for m in listener.truths[:3]]
    assert truth_stamps[1] - truth_stamps[0] == 1 and truth_stamps[2] - truth_stamps[1] == 1
    camera.destroy_node()


@pytest.mark.parametrize("params, message", [
    ({"rate": 0.0}, "'rate' must be a number > 0"),
    ({"scene_period": -1.0}, "'scene_period' must be a number > 0"),
    ({"encoding": "rgb16"}, "parameter 'encoding' = 'rgb16' rejected"),
    ({"encoding": "yuv422", "width": 97}, "even width"),
    ({"split": "everything"}, "split must be one of"),
    ({"width": 20}, "20x64 rejected"),
    ({"num_scenes": -2}, "'num_scenes' must be >= 0"),
    ({"jpeg_quality": 101}, "'jpeg_quality' must be in 0..100"),
])
def test_bad_parameters_raise_clear_errors(rclpy_context: Any, params: dict, message: str) -> None:
    with pytest.raises(ValueError) as info:
        _camera(rclpy_context, **params)
    assert message in str(info.value)


def test_rate_and_scene_period_take_integers(rclpy_context: Any) -> None:
    camera = _camera(rclpy_context, rate=5, scene_period=2)  # as `-p rate:=5` gives them
    try:
        assert (camera.settings.rate, camera.settings.scene_period) == (5.0, 2.0)
        assert type(camera.settings.rate) is float and type(camera.settings.scene_period) is float
    finally:
        camera.destroy_node()


def test_executable_reports_bad_parameters(tmp_path: Path) -> None:
    command = [str(installed_executable("synthetic_camera")), "--ros-args", "-p", "encoding:=jpeg"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "synthetic_camera: parameter 'encoding' = 'jpeg' rejected" in result.stderr
    assert "Traceback" not in result.stderr


def test_images_are_published_reliable_as_rep_2003_asks(rclpy_context: Any) -> None:
    from rclpy.qos import ReliabilityPolicy

    node = _camera(rclpy_context, publish_compressed=True)
    try:
        for topic in ("/image", "/image/compressed"):
            (info,) = node.get_publishers_info_by_topic(topic)
            assert info.qos_profile.reliability == ReliabilityPolicy.RELIABLE, topic
    finally:
        node.destroy_node()
