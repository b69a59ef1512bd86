"""captioner.launch.py and demo.launch.py run by launch_pytest, checked over ROS.

Needs a full ROS 2 install (launch, launch_ros, launch_pytest, with pytest < 8.4) and the
built package with its shipped demo model; elsewhere these tests are skipped, and
test_launch_files.py checks the files statically. SHARPEYE_LAUNCH_TEST_MODEL=<checkpoint
dir> runs them with another model.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable

import pytest

if os.environ.get("SHARPEYE_LAUNCH_PLUGINS_OFF"):  # scripts/test: this pytest is too new for them
    pytest.skip(os.environ["SHARPEYE_LAUNCH_PLUGINS_OFF"], allow_module_level=True)
launch_pytest = pytest.importorskip(
    "launch_pytest", reason="launch_pytest is not installed: it comes with a ROS 2 install "
                            "(ros-<distro>-launch-pytest); test_launch_files.py checks the files statically")
pytest.importorskip("launch_ros", reason="launch_ros is not installed (a ROS 2 install has it)")
rclpy = pytest.importorskip("rclpy")

from ament_index_python.packages import get_package_share_directory  # noqa: E402
from launch import LaunchDescription  # noqa: E402
from launch.actions import IncludeLaunchDescription  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402
from launch_ros.actions import Node  # noqa: E402

NAMESPACE = "launch_test"
TOPIC = "/launch_test_camera/image"
FRAME = "launch_test_frame"
MANAGED = "managed_test"
MANAGED_TOPIC = "/managed_test_camera/image"
WAIT = 120.0  # seconds for the captioner to load its model and caption a few frames


def _include(name: str, arguments: dict[str, str]) -> IncludeLaunchDescription:
    """The installed launch file ``name`` with ``arguments`` (plus the test model, if one is set)."""
    if os.environ.get("SHARPEYE_LAUNCH_TEST_MODEL"):
        arguments = {**arguments, "model_path": os.environ["SHARPEYE_LAUNCH_TEST_MODEL"]}
    path = Path(get_package_share_directory("sharpeye_ros")) / "launch" / name
    return IncludeLaunchDescription(PythonLaunchDescriptionSource(str(path)),
                                    launch_arguments=arguments.items())


def _camera_and_captioner(camera: str, topic: str, arguments: dict[str, str]) -> LaunchDescription:
    """A 5 Hz 320x240 synthetic camera named ``camera`` on ``topic``, and captioner.launch.py
    on the CPU captioning it with ``arguments``."""
    return LaunchDescription([
        Node(package="sharpeye_ros", executable="synthetic_camera", name=camera,
             parameters=[{"rate": 5.0, "width": 320, "height": 240, "frame_id": FRAME}],
             remappings=[("image", topic)]),
        _include("captioner.launch.py", {"image_topic": topic, "device": "cpu", **arguments}),
        launch_pytest.actions.ReadyToTest(),
    ])


@launch_pytest.fixture
def captioner_launch() -> LaunchDescription:
    """A synthetic camera on TOPIC, and captioner.launch.py told to caption it at <= 1 Hz."""
    return _camera_and_captioner("launch_test_camera", TOPIC, {"namespace": NAMESPACE, "max_rate": "1"})


@launch_pytest.fixture
def demo_launch() -> LaunchDescription:
    """The demo with the captioner on the camera's JPEG stream and no RViz."""
    return LaunchDescription([
        _include("demo.launch.py", {"rviz": "false", "image_transport": "compressed", "max_rate": "2.0",
                                    "device": "cpu", "scene_period": "2.0"}),
        launch_pytest.actions.ReadyToTest(),
    ])


@launch_pytest.fixture
def managed_launch() -> LaunchDescription:
    """The camera, and captioner.launch.py with autostart:=false: a node for a lifecycle manager."""
    return _camera_and_captioner("managed_test_camera", MANAGED_TOPIC,
                                 {"namespace": MANAGED, "autostart": "false", "max_rate": "2"})


# launch_pytest 3.4 reads a pytest-internal attribute that pytest 8.4 removed. Run by hand
# (not through scripts/test) with pytest 8.4.x, its plugin loads but cannot run these tests.
if not hasattr(captioner_launch, "_pytestfixturefunction"):
    pytest.skip(f"launch_pytest does not support pytest {pytest.__version__} (needs < 8.4); "
                "scripts/test leaves its plugin out for such a pytest", allow_module_level=True)


def _spin(context: Any, subscribe: Callable[[Any], Callable[[], bool]]) -> Any:
    """Spin a test node until ``subscribe(node)``'s condition holds or WAIT passes; the node,
    still alive, for graph queries (destroyed with its context)."""
    node = rclpy.create_node("launch_test_listener", context=context)
    done = subscribe(node)
    executor = rclpy.executors.SingleThreadedExecutor(context=context)
    executor.add_node(node)
    deadline = time.monotonic() + WAIT
    while not done() and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.1)
    executor.remove_node(node)
    return node


@pytest.mark.slow
@pytest.mark.ros
@pytest.mark.launch(fixture=captioner_launch)
def test_captioner_launch_captions_the_remapped_topic(rclpy_context: Any) -> None:
    from sharpeye_ros.msg import Caption

    captions: list[Any] = []

    def subscribe(node: Any) -> Callable[[], bool]:
        node.create_subscription(Caption, f"/{NAMESPACE}/caption", captions.append, 10)
        return lambda: len(captions) >= 3

    node = _spin(rclpy_context, subscribe)
    assert ("captioner", f"/{NAMESPACE}") in node.get_node_names_and_namespaces()
    assert len(captions) >= 3, f"{len(captions)} captions on /{NAMESPACE}/caption in {WAIT} s"
    assert all(c.header.frame_id == FRAME and (c.image_width, c.image_height) == (320, 240) for c in captions)
    stamps = [c.header.stamp.sec + c.header.stamp.nanosec * 1e-9 for c in captions]
    # max_rate:="1" reached the node as the double 1.0: captions 1 s apart (less the gate's
    # slack for stamp jitter), not the 0.5 s of the default 2 Hz.
    from sharpeye_ros.ros.frame_gate import RATE_SLACK

    assert all(b - a >= 1.0 - RATE_SLACK for a, b in zip(stamps, stamps[1:])), stamps


@pytest.mark.slow
@pytest.mark.ros
@pytest.mark.launch(fixture=demo_launch)
def test_demo_launch_captions_the_synthetic_camera(rclpy_context: Any) -> None:
    from std_msgs.msg import String

    from sharpeye_ros.msg import Caption
    from sharpeye_ros.ros.synthetic_camera_node import LATCHED

    captions: list[Any] = []
    truths: list[Any] = []

    def subscribe(node: Any) -> Callable[[], bool]:
        node.create_subscription(Caption, "/caption", captions.append, 10)
        node.create_subscription(String, "/ground_truth", truths.append, LATCHED)
        return lambda: len(captions) >= 3 and bool(truths)

    node = _spin(rclpy_context, subscribe)
    assert node.count_publishers("/camera/image_raw/compressed") == 1, \
        "image_transport:=compressed must make the camera publish JPEG"
    assert truths and json.loads(truths[0].data)["split"] == "test"
    assert len(captions) >= 3, f"{len(captions)} captions on /caption in {WAIT} s"
    for caption in captions:
        assert caption.header.frame_id == "camera_optical_frame"
        assert (caption.image_width, caption.image_height) == (640, 480) and caption.caption.strip()


@pytest.mark.slow
@pytest.mark.ros
@pytest.mark.launch(fixture=managed_launch)
def test_captioner_launch_with_autostart_false_waits_for_a_manager(rclpy_context: Any) -> None:
    from lifecycle_msgs.srv import ChangeState, GetState

    from sharpeye_ros.msg import Caption

    captions: list[Any] = []
    node = rclpy.create_node("launch_test_manager", context=rclpy_context)
    node.create_subscription(Caption, f"/{MANAGED}/caption", captions.append, 10)
    executor = rclpy.executors.SingleThreadedExecutor(context=rclpy_context)
    executor.add_node(node)

    def call(client: Any, request: Any) -> Any:
        assert client.wait_for_service(timeout_sec=WAIT), client.srv_name
        future = client.call_async(request)
        executor.spin_until_future_complete(future, timeout_sec=WAIT)
        assert future.done(), client.srv_name
        return future.result()

    def transition(label: str) -> bool:
        request = ChangeState.Request()
        request.transition.label = label
        return call(change, request).success

    change = node.create_client(ChangeState, f"/{MANAGED}/captioner/change_state")
    get = node.create_client(GetState, f"/{MANAGED}/captioner/get_state")
    assert call(get, GetState.Request()).current_state.label == "unconfigured"
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.1)
    assert captions == [] and node.count_subscribers(MANAGED_TOPIC) == 0  # unconfigured: idle
    assert transition("configure") and transition("activate")
    deadline = time.monotonic() + WAIT
    while len(captions) < 2 and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.1)
    assert len(captions) >= 2, f"{len(captions)} captions on /{MANAGED}/caption in {WAIT} s"
    assert call(get, GetState.Request()).current_state.label == "active"
    executor.remove_node(node)
