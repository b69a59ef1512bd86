"""A Caption published in one process arrives intact in another, over real DDS."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

rclpy = pytest.importorskip("rclpy")
pytestmark = pytest.mark.ros

PUBLISHER = textwrap.dedent(
    """
    import rclpy
    from sensor_msgs.msg import RegionOfInterest
    from sharpeye_ros.msg import Caption, CaptionRegion

    rclpy.init()
    node = rclpy.create_node("caption_publisher")
    pub = node.create_publisher(Caption, "roundtrip/caption", 10)
    msg = Caption()
    msg.header.frame_id = "camera_optical"
    msg.header.stamp.sec = 1234
    msg.header.stamp.nanosec = 567
    msg.caption = "a small red star on the left."
    msg.initial_caption = "a small red circle on the left."
    msg.refined = True
    msg.zoomed = True
    msg.image_width, msg.image_height = 640, 480
    msg.model_id = "test-model"
    msg.glance_seconds, msg.refine_seconds, msg.latency_seconds = 0.5, 0.25, 1.0
    region = CaptionRegion(roi=RegionOfInterest(x_offset=10, y_offset=20, width=30, height=40), score=0.75, phrase="small red star")
    msg.regions = [region]
    while rclpy.ok():
        pub.publish(msg)
        rclpy.spin_once(node, timeout_sec=0.1)
    """
)


def test_caption_crosses_processes(rclpy_context: object, tmp_path) -> None:
    from sharpeye_ros.msg import Caption

    # cwd outside the repo: `python -c` puts the cwd on sys.path, and the source tree
    # must not shadow the installed package.
    publisher = subprocess.Popen([sys.executable, "-c", PUBLISHER], cwd=tmp_path)
    node = rclpy.create_node("caption_listener", context=rclpy_context)
    received: list[Caption] = []
    node.create_subscription(Caption, "roundtrip/caption", received.append, 10)
    executor = rclpy.executors.SingleThreadedExecutor(context=rclpy_context)
    executor.add_node(node)
    try:
        deadline = time.monotonic() + 30.0
        while not received and time.monotonic() < deadline:
            assert publisher.poll() is None, f"publisher exited with {publisher.returncode}"
            executor.spin_once(timeout_sec=0.1)
    finally:
        publisher.terminate()
        publisher.wait(timeout=10)
        node.destroy_node()
    assert received, "no Caption received from the other process within 30 s"
    msg = received[0]
    assert msg.header.frame_id == "camera_optical"
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (1234, 567)
    assert msg.caption == "a small red star on the left."
    assert msg.initial_caption == "a small red circle on the left."
    assert msg.refined and msg.zoomed
    assert (msg.image_width, msg.image_height) == (640, 480)
    assert msg.model_id == "test-model"
    assert msg.refine_seconds == pytest.approx(0.25)
    assert len(msg.regions) == 1
    roi = msg.regions[0].roi
    assert (roi.x_offset, roi.y_offset, roi.width, roi.height) == (10, 20, 30, 40)
    assert msg.regions[0].score == pytest.approx(0.75)
    assert msg.regions[0].phrase == "small red star"
