"""Fixtures for end-to-end tests: installed executables run as real processes, and a rosbag
player that replays a bag at its recorded timing with ``/clock``."""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Optional

import pytest

from sharpeye_ros.ros.processes import Child, start_child, stop_children


@pytest.fixture
def start_process(tmp_path: Path) -> Iterator[Callable[..., Child]]:
    """``start_process(cmd, name, env=None)``: :func:`~sharpeye_ros.ros.processes.start_child`
    with cwd=tmp_path (outside the source tree, so it cannot shadow the installed package);
    every child still running is stopped at teardown, even when the test failed."""
    started: list[Child] = []

    def start(cmd: list[str], name: str, env: Optional[dict[str, str]] = None) -> Child:
        started.append(start_child(name, cmd, tmp_path, env=env, cwd=tmp_path))
        return started[-1]

    yield start
    stop_children(started)


def message_class(msgtype: str) -> Any:
    """The rclpy message class of a ROS 2 type name such as ``sensor_msgs/msg/Image``."""
    package, kind, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{package}.{kind}"), name)


class BagPlayer:
    """Replays a rosbag2 folder into ROS at its recorded timing, publishing ``/clock``.

    Like ``ros2 bag play --clock``: bag time advances with the wall clock (times ``rate``),
    ``/clock`` is published every ``1 / clock_hz`` seconds of bag time (and just before any
    message, so a node's clock is never behind a stamp it receives), and messages go out
    as their recorded CDR bytes when bag time reaches their timestamp.
    """

    def __init__(self, node: Any, path: Path, clock_hz: float = 100.0, rate: float = 1.0) -> None:
        from rosbags.rosbag2 import Reader
        from rosgraph_msgs.msg import Clock

        self.node, self.clock_hz, self.rate = node, clock_hz, rate
        self._clock_type = Clock
        self.clock_pub = node.create_publisher(Clock, "/clock", 10)
        self.publishers: dict[str, Any] = {}
        self.messages: list[tuple[int, str, bytes]] = []
        with Reader(path) as reader:
            for conn in reader.connections:
                msg_class = message_class(conn.msgtype)
                self.publishers[conn.topic] = node.create_publisher(msg_class, conn.topic, 10)
            for conn, stamp, raw in reader.messages():
                self.messages.append((stamp, conn.topic, bytes(raw)))
            self.start_ns, self.end_ns = reader.start_time, reader.end_time
        self.messages.sort(key=lambda m: m[0])
        self.clock_ns = self.start_ns

    def publish_clock(self, stamp_ns: int) -> None:
        """Publish ``/clock`` = ``stamp_ns``."""
        from rclpy.time import Time

        self.clock_ns = stamp_ns
        self.clock_pub.publish(self._clock_type(clock=Time(nanoseconds=stamp_ns).to_msg()))

    def wait_for_subscribers(self, executor: Any, topics: list[str], timeout: float,
                             alive: Callable[[], bool] = lambda: True) -> None:
        """Spin until every topic (and /clock) has a subscriber, publishing the start time."""
        deadline = time.monotonic() + timeout
        pubs = [self.publishers[t] for t in topics] + [self.clock_pub]
        while not all(p.get_subscription_count() > 0 for p in pubs):
            assert alive(), "the node under test exited while the player waited for it"
            assert time.monotonic() < deadline, f"no subscriber on {topics} + /clock after {timeout} s"
            self.publish_clock(self.start_ns)
            executor.spin_once(timeout_sec=0.1)
        # Give discovery a moment to finish both ways before the first frame goes out.
        settle = time.monotonic() + 0.5
        while time.monotonic() < settle:
            self.publish_clock(self.start_ns)
            executor.spin_once(timeout_sec=0.05)

    def play(self, executor: Any, tail_seconds: float = 0.0,
             alive: Callable[[], bool] = lambda: True) -> None:
        """Publish the whole bag in real time, then keep the clock running ``tail_seconds``
        of bag time (captions of the last frames still arrive); spins ``executor`` throughout."""
        step = round(1e9 / self.clock_hz)
        stop_ns = self.end_ns + round(tail_seconds * 1e9)
        wall0, next_clock, index = time.monotonic(), self.start_ns, 0
        while True:
            now = self.start_ns + round((time.monotonic() - wall0) * self.rate * 1e9)
            while index < len(self.messages) and self.messages[index][0] <= now:
                stamp, topic, raw = self.messages[index]
                if stamp > self.clock_ns:
                    self.publish_clock(stamp)
                self.publishers[topic].publish(raw)  # serialized CDR, exactly as recorded
                index += 1
            if now >= next_clock:
                self.publish_clock(max(now, self.clock_ns))
                next_clock = now + step
            if index >= len(self.messages) and now >= stop_ns:
                return
            assert alive(), "the node under test exited during playback"
            executor.spin_once(timeout_sec=min(0.005, step / 1e9))


@pytest.fixture
def bag_player(ros_node: tuple[Any, Any]) -> Callable[..., BagPlayer]:
    """Make a :class:`BagPlayer` on the test node: ``bag_player(path, clock_hz=100.0, rate=1.0)``."""
    return lambda path, **kwargs: BagPlayer(ros_node[0], path, **kwargs)


@pytest.fixture
def ros_node(rclpy_context: Any) -> Iterator[tuple[Any, Any]]:
    """A test node and an executor spinning it, in a fresh rclpy context."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    node = rclpy.create_node("integration_test", context=rclpy_context)
    executor = SingleThreadedExecutor(context=rclpy_context)
    executor.add_node(node)
    try:
        yield node, executor
    finally:
        executor.shutdown()
        node.destroy_node()
