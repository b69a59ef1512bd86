"""Suite-wide test set-up: DDS isolation and the rule that ROS tests never silently skip."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from sharpeye_ros.ros.processes import ros_environment

# Keep DDS traffic on this machine and away from any other test run: a random domain
# per pytest session, discovery limited to localhost. Set before any test starts rclpy;
# subprocesses (nodes under test) inherit it.
os.environ.update(ros_environment(os.environ))


def pytest_configure(config: pytest.Config) -> None:
    # scripts/test sets SHARPEYE_REQUIRE_ROS=1: there, a missing rclpy or unbuilt
    # messages must fail the run instead of quietly skipping every ROS test.
    if os.environ.get("SHARPEYE_REQUIRE_ROS") == "1":
        try:
            import rclpy  # noqa: F401
            import sharpeye_ros.msg  # noqa: F401
        except ImportError as err:
            raise pytest.UsageError(
                f"SHARPEYE_REQUIRE_ROS=1 but the ROS side is unusable ({err}); "
                "run through scripts/test, which builds the package and sources install/"
            ) from err


@pytest.fixture
def rclpy_context() -> Iterator[object]:
    """A fresh rclpy context for one test, shut down afterwards."""
    rclpy = pytest.importorskip("rclpy")
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        yield context
    finally:
        if context.ok():
            rclpy.shutdown(context=context)
