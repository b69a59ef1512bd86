"""The installed ``captioner`` executable as a process: clean exit on SIGINT while captions
flow (with a params file and an override), and one clear message (exit code 1) when it
cannot start. test_signals.py sweeps every signal at every moment of its life."""

from __future__ import annotations

import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sharpeye_ros.ros.processes import installed_executable, installed_file, start_child

rclpy = pytest.importorskip("rclpy")
pytestmark = [pytest.mark.ros, pytest.mark.slow]


def start(tmp_path: Path, *ros_args: str) -> tuple[subprocess.Popen, Path]:
    """Start the captioner; its output goes to the returned log file."""
    # cwd outside the repository: the source tree must not shadow install/
    child = start_child("captioner", [str(installed_executable("captioner")), "--ros-args", *ros_args],
                        tmp_path, cwd=tmp_path)
    return child.process, child.log


@contextmanager
def camera(context: Any, namespace: str) -> Iterator[tuple[Any, Callable[[], None]]]:
    """A spinning test node in ``namespace`` and a function publishing one stamped frame on ``image``."""
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    from sharpeye_ros.ros.image_conversion import fill_image_msg

    node = Node("process_tester", context=context, namespace=namespace)
    pub = node.create_publisher(Image, "image", qos_profile_sensor_data)
    image = fill_image_msg(Image(), np.full((120, 160, 3), 90, np.uint8))

    def publish() -> None:
        image.header.stamp = node.get_clock().now().to_msg()
        pub.publish(image)

    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    threading.Thread(target=executor.spin, daemon=True).start()
    try:
        yield node, publish
    finally:
        executor.shutdown(timeout_sec=5)
        node.destroy_node()


def feed_until(event: threading.Event, publish: Callable[[], None], process: subprocess.Popen,
               log: Path) -> None:
    """Publish frames until ``event`` is set (fail after 60 s or if the process dies)."""
    deadline = time.monotonic() + 60
    while not event.is_set() and time.monotonic() < deadline and process.poll() is None:
        publish()
        event.wait(0.1)
    assert event.is_set(), f"the captioner process did not get there; its output:\n{log.read_text()}"


def stop(process: subprocess.Popen, sig: int) -> tuple[int, float]:
    """Send ``sig``; return the exit code and the seconds the process took to exit."""
    process.send_signal(sig)
    signalled = time.monotonic()
    try:
        code = process.wait(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return code, time.monotonic() - signalled


def test_sigint_while_captions_flow_exits_cleanly(rclpy_context, tiny_model_dir, tmp_path):
    from sharpeye_ros.msg import Caption

    namespace = "/sigint_test"
    config = installed_file("share", "config/captioner.yaml")
    process, log = start(tmp_path, "--params-file", str(config), "-p", f"model_path:={tiny_model_dir}",
                         "-p", "max_rate:=50.0", "-r", f"__ns:={namespace}")
    captioned = threading.Event()
    with camera(rclpy_context, namespace) as (node, publish):
        node.create_subscription(Caption, "caption", lambda msg: captioned.set(), 10)
        feed_until(captioned, publish, process, log)
        for _ in range(3):  # keep it busy, so the signal likely lands during a caption
            publish()
            time.sleep(0.05)
        code, seconds = stop(process, signal.SIGINT)
    output = log.read_text()
    assert code == 0 and "Traceback" not in output, output
    assert "at up to 50 Hz" in output, output  # the -p override on top of the params file
    assert seconds < 5.0, output  # before `ros2 launch` would escalate to SIGTERM


def test_model_that_does_not_load_stops_with_one_message(tmp_path):
    # (test_captioner_startup checks the messages for missing and corrupt models in-process.)
    model = tmp_path / "no_model_here"
    process, log = start(tmp_path, "-p", f"model_path:={model}")
    code = process.wait(timeout=60)
    output = log.read_text()
    assert code == 1, output
    assert output.count(f"cannot load model '{model}'") == 1 and "Traceback" not in output, output
    assert len(output.strip().splitlines()) == 1, output  # that message and nothing else


def test_bad_parameter_in_a_params_file_stops_with_one_message(tmp_path, tiny_model_dir):
    params = tmp_path / "params.yaml"
    params.write_text(f"/**/captioner:\n  ros__parameters:\n    model_path: '{tiny_model_dir}'\n"
                      "    max_rate: 2\n")
    process, log = start(tmp_path, "--params-file", str(params))
    code = process.wait(timeout=60)
    output = log.read_text()
    assert code == 1, output
    assert "parameter 'max_rate'" in output and "write a decimal number" in output, output
    assert "Traceback" not in output, output
    assert len(output.strip().splitlines()) == 1, output


def test_standard_qos_override_and_debug_logs(tmp_path: Path, rclpy_context: Any) -> None:
    """`qos_overrides.<topic>.subscription.reliability` sets the image subscription's QoS, as in
    image_proc; `--log-level captioner:=debug` shows why each frame was dropped and each
    stage's time, and nothing from rcl or rmw."""
    from rclpy.qos import ReliabilityPolicy

    topic = "/qos_test/image"
    process, log = start(tmp_path, "-r", f"image:={topic}", "-p", "max_rate:=0.5", "-p", "device:=cpu",
                         "-p", f"qos_overrides.{topic}.subscription.reliability:=reliable",
                         "--log-level", "captioner:=debug")
    try:
        with camera(rclpy_context, "qos_test") as (node, _):
            from rclpy.qos import QoSProfile
            from sensor_msgs.msg import Image

            from sharpeye_ros.ros.image_conversion import fill_image_msg

            # A reliable subscription only matches reliable publishers (a camera per REP 2003).
            pub = node.create_publisher(Image, "image", QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE))
            image = fill_image_msg(Image(), np.full((120, 160, 3), 90, np.uint8))

            def publish() -> None:
                image.header.stamp = node.get_clock().now().to_msg()
                pub.publish(image)

            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and process.poll() is None and not (
                    node.get_subscriptions_info_by_topic(topic) and "captioned:" in log.read_text()
                    and "dropped: throttled" in log.read_text()):
                publish()
                time.sleep(0.1)
            (info,) = node.get_subscriptions_info_by_topic(topic)
            assert info.qos_profile.reliability == ReliabilityPolicy.RELIABLE
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(30)
    text = log.read_text()
    assert f"captioning '{topic}' (raw, reliable, depth 1)" in text, text
    assert re.search(r"\[DEBUG\] .*\[captioner\]: frame \d+\.\d{3}: dropped: throttled", text), text
    assert re.search(r"\[DEBUG\] .*\[captioner\]: frame \d+\.\d{3} captioned: conversion [\d.]+ ms, "
                     r"model [\d.]+ ms \(.*vision [\d.]+ ms", text), text
    assert not re.search(r"\[DEBUG\] [^\n]*\[(rcl|rmw|rclpy)", text), "debug must be the node's own only"


def test_a_bad_qos_override_is_one_clear_error(tmp_path: Path) -> None:
    process, log = start(tmp_path, "-r", "image:=/q/image",
                         "-p", "qos_overrides./q/image.subscription.reliability:=sometimes")
    assert process.wait(90) == 1
    text = log.read_text()
    assert "QoS override of the image subscription rejected" in text and "Traceback" not in text, text


def test_a_lifecycle_manager_drives_the_executable_to_its_exit(rclpy_context, tiny_model_dir, tmp_path):
    # autostart:=false: the process waits, unconfigured, until a manager configures and
    # activates it; a shutdown transition ends the process (exit 0), as a manager expects.
    from lifecycle_msgs.srv import ChangeState, GetState

    from sharpeye_ros.msg import Caption

    namespace = "/lifecycle_test"
    process, log = start(tmp_path, "-p", f"model_path:={tiny_model_dir}", "-p", "autostart:=false",
                         "-r", f"__ns:={namespace}")
    captioned = threading.Event()
    with camera(rclpy_context, namespace) as (node, publish):
        node.create_subscription(Caption, "caption", lambda msg: captioned.set(), 10)
        change = node.create_client(ChangeState, f"{namespace}/captioner/change_state")
        get = node.create_client(GetState, f"{namespace}/captioner/get_state")
        # Both services: CI once called get_state when only change_state had been found, and
        # the request went to no one (the call then waited its 60 s out).
        for client in (change, get):
            assert client.wait_for_service(timeout_sec=30.0), f"{client.srv_name}\n{log.read_text()}"

        def call(client, request):
            future = client.call_async(request)
            deadline = time.monotonic() + 60
            while not future.done() and time.monotonic() < deadline:
                time.sleep(0.01)
            assert future.done(), f"no answer from {client.srv_name}\n{log.read_text()}"
            return future.result()

        def transition(label: str) -> bool:
            request = ChangeState.Request()
            request.transition.label = label
            return call(change, request).success

        assert call(get, GetState.Request()).current_state.label == "unconfigured"
        for _ in range(10):
            publish()
        assert not captioned.wait(1.0)  # unconfigured: no subscription, no caption
        assert transition("configure") and transition("activate")
        feed_until(captioned, publish, process, log)
        assert transition("shutdown")
        code = process.wait(timeout=20)
    output = log.read_text()
    assert code == 0 and "Traceback" not in output, output
    assert "waiting, unconfigured, for a lifecycle manager" in output, output
