"""Fixtures for the captioner tests: the tiny random model (saved by test/conftest.py) loaded
once, and a harness that runs the node in-process next to a test node that publishes frames
and collects what comes back."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pytest


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir: Path) -> Any:
    """The tiny checkpoint, loaded once through the real loading path."""
    from sharpeye_ros.model import SharpEyes

    return SharpEyes.from_pretrained(tiny_model_dir)


class ScriptedModel:
    """The real tiny model behind hooks a test can pull: block inside ``caption`` until
    released, fail the next calls, or replace the caption text or the regions of the result."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.model_id = model.model_id
        self.deeplens = model.deeplens
        self.device, self.dtype = model.device, model.dtype
        self.calls: list[dict] = []
        self.entered = threading.Event()  # set when caption() is entered
        self.release = threading.Event()  # caption() waits for it
        self.release.set()
        self.fail_next = 0
        self.text: Optional[str] = None
        self.regions: Optional[list] = None
        self.delay = 0.0  # seconds each caption takes at least (a slow model)

    def caption(self, images: list[np.ndarray], **kwargs: Any) -> list:
        self.calls.append({"shape": images[0].shape, "pixel": int(images[0][0, 0, 0]), **kwargs})
        self.entered.set()
        if not self.release.wait(timeout=30):
            raise TimeoutError("test never released the model")
        time.sleep(self.delay)
        if self.fail_next:
            self.fail_next -= 1
            raise RuntimeError("scripted inference failure")
        results = self.model.caption(images, **kwargs)
        if self.regions is not None:
            for result in results:
                result.regions = list(self.regions)
        if self.text is not None:
            for result in results:
                result.caption = self.text
        return results


@pytest.fixture
def scripted_model(tiny_model: Any) -> ScriptedModel:
    """A fresh :class:`ScriptedModel` around the session's tiny model."""
    return ScriptedModel(tiny_model)


def frame_rgb(width: int = 64, height: int = 48, value: int = 0) -> np.ndarray:
    """A small test frame; ``value`` marks it (the top-left red pixel), to tell frames apart."""
    rgb = np.zeros((height, width, 3), dtype=np.uint8)
    rgb[height // 4: 3 * height // 4, width // 4: width // 2] = (255, 0, 0)
    rgb[0, 0, 0] = value
    return rgb


class Harness:
    """A captioner node and a test node spinning on one executor in a background thread."""

    _ids = itertools.count()

    def __init__(self, context: Any, model: Any, params: dict[str, Any], transport: str = "raw",
                 image_topic: Optional[str] = None, namespace: Optional[str] = None, **node_kwargs: Any) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from rclpy.parameter import Parameter
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import CompressedImage, Image

        from sharpeye_ros.msg import Caption
        from sharpeye_ros.ros.captioner_node import CaptionerNode

        self.context = context
        # A namespace per harness keeps tests from hearing each other's topics (``namespace``:
        # a test's own, for parameters that name a topic).
        self.namespace = namespace or f"/captioner_test_{next(self._ids)}"
        # Scene gating off unless a test asks for it: most tests send near-identical frames
        # and count the captions the model wrote.
        params = {"image_transport": transport, "min_scene_change": 0.0, **params}
        overrides = [Parameter(k, value=v) for k, v in params.items()]
        self.captioner = CaptionerNode(model=model, context=context, namespace=self.namespace,
                                       parameter_overrides=overrides, **node_kwargs)
        self.captioner.autostart()  # configure and activate, as the executable does (autostart true)
        self.node = Node("captioner_tester", context=context, namespace=self.namespace)
        self._lock = threading.Lock()
        self.captions: list[Any] = []
        self.received: dict[str, list[Any]] = {"caption_image": [], "caption_markers": [], "diagnostics": []}
        self.node.create_subscription(Caption, "caption", self._store(self.captions), 10)
        self.node.create_subscription(DiagnosticArray, "/diagnostics",
                                      self._store(self.received["diagnostics"]), 10)
        topic, kind = ("image/compressed", CompressedImage) if transport == "compressed" else ("image", Image)
        self.image_pub = self.node.create_publisher(kind, image_topic or topic, qos_profile_sensor_data)
        # Single-threaded, as the node runs in production (spin.py). rclpy's multi-threaded
        # executor re-polls its wait set while a callback is in flight; on 2 cores that busy
        # loop held the GIL for up to 1.6 s and starved the test's publishing thread.
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.captioner)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()
        if self.captioner.lifecycle_state == "active":  # not with autostart false
            assert self.wait_for(lambda: self.image_pub.get_subscription_count() > 0), "no captioner subscription"

    def _spin(self) -> None:
        from rclpy.executors import ExternalShutdownException

        try:
            self.executor.spin()
        except ExternalShutdownException:
            pass

    def _store(self, into: list) -> Callable[[Any], None]:
        def callback(msg: Any) -> None:
            with self._lock:
                into.append(msg)
        return callback

    def subscribe(self, name: str, depth: int = 1) -> None:
        """Listen to one of the caption's other forms: ``caption_image``, ``caption_markers``,
        ``caption_text``, ``detections`` or ``caption_image/compressed`` (and wait until the
        node sees the subscription)."""
        from sensor_msgs.msg import CompressedImage, Image
        from std_msgs.msg import String
        from vision_msgs.msg import Detection2DArray
        from visualization_msgs.msg import MarkerArray

        kind = {"caption_image": Image, "caption_markers": MarkerArray, "caption_text": String,
                "detections": Detection2DArray, "caption_image/compressed": CompressedImage}[name]
        self.node.create_subscription(kind, name, self._store(self.received.setdefault(name, [])), depth)
        pub = self.captioner._outputs[name]
        assert self.wait_for(lambda: pub.get_subscription_count() > 0), f"{name} subscription not matched"

    def image_msg(self, rgb: np.ndarray, stamp_ns: int, frame_id: str = "camera_optical_frame",
                  encoding: str = "rgb8") -> Any:
        """A sensor_msgs/Image of ``rgb``."""
        from sensor_msgs.msg import Image

        from sharpeye_ros.ros.image_conversion import fill_image_msg

        msg = fill_image_msg(Image(), rgb, encoding)
        self.set_header(msg, stamp_ns, frame_id)
        return msg

    @staticmethod
    def set_header(msg: Any, stamp_ns: int, frame_id: str = "camera_optical_frame") -> Any:
        from sharpeye_ros.ros.stamps import stamp_parts

        msg.header.stamp.sec, msg.header.stamp.nanosec = stamp_parts(stamp_ns)
        msg.header.frame_id = frame_id
        return msg

    def publish(self, msg: Any, wait: bool = True) -> None:
        """Publish a frame; with ``wait``, return once the captioner's callback has it (the
        subscription keeps one frame, so frames published back to back would replace each other)."""
        offered = self.captioner._gate.counters().offered
        self.image_pub.publish(msg)
        if wait:
            assert self.wait_for(lambda: self.captioner._gate.counters().offered > offered, 10), "frame lost"

    def publish_frame(self, stamp_ns: int, value: int = 0, wait: bool = True, **kwargs: Any) -> None:
        """Publish a :func:`frame_rgb` frame with the given stamp."""
        self.publish(self.image_msg(frame_rgb(value=value), stamp_ns, **kwargs), wait)

    def now_ns(self) -> int:
        return self.captioner.get_clock().now().nanoseconds

    def snapshot(self, name: str = "caption") -> list[Any]:
        with self._lock:
            return list(self.captions if name == "caption" else self.received[name])

    @staticmethod
    def wait_for(predicate: Callable[[], bool], timeout: float = 20.0, period: float = 0.01) -> bool:
        """Poll ``predicate`` until it holds (True) or ``timeout`` seconds pass (False)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(period)
        return bool(predicate())

    def wait_captions(self, count: int, timeout: float = 20.0) -> list[Any]:
        """Wait for at least ``count`` captions in total; return them all."""
        assert self.wait_for(lambda: len(self.snapshot()) >= count, timeout), (
            f"expected {count} captions, got {len(self.snapshot())}; {self.captioner.health_report()}")
        return self.snapshot()

    def close(self) -> None:
        """Stop spinning, then destroy the nodes: the captioner stops its worker first, so
        no thread touches a publisher while the context shuts down."""
        self.executor.shutdown(timeout_sec=5.0)
        self._thread.join(timeout=5.0)
        self.captioner.destroy_node()
        self.node.destroy_node()


@pytest.fixture
def harness(rclpy_context: Any) -> Iterator[Callable[..., Harness]]:
    """Factory: ``harness(model, {param: value}, transport="raw", image_topic=None, namespace=None)``
    -> a running :class:`Harness` (``image_topic``: where its camera publishes, default the
    node's own; ``namespace``: the nodes', default a fresh one per harness)."""
    made: list[Harness] = []

    def make(model: Any, params: Optional[dict[str, Any]] = None, transport: str = "raw",
             image_topic: Optional[str] = None, **kwargs: Any) -> Harness:
        h = Harness(rclpy_context, model, params or {}, transport, image_topic, **kwargs)
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()


@pytest.fixture
def frame() -> Callable[..., np.ndarray]:
    """:func:`frame_rgb`, for tests (they cannot import this module)."""
    return frame_rgb
