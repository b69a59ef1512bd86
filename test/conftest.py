"""Suite-wide test set-up: DDS isolation, the rule that ROS tests never silently skip, and a
tiny random model on disk for the node and end-to-end tests."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sharpeye_ros.ros.launch_support import SHIPPED_PROFILE, profile_environment
from sharpeye_ros.ros.processes import ros_environment

# Keep DDS traffic on this machine and away from any other test run: a random domain per
# pytest session that no other run of ours here holds (processes.claim_domain), discovery
# limited to localhost. Set before any test starts rclpy;
# subprocesses (nodes under test) inherit it.
os.environ.update(ros_environment(os.environ))
# Both ends of every test's DDS traffic use the shipped Fast DDS profile, as the README tells
# users to: with Fast DDS's defaults most 640x480 frames never arrive, even at an idle node,
# and the bag tests then see too few captions. A profile the user set wins; the tests that
# measure the default transport remove it for their own processes.
os.environ.update(profile_environment(os.environ, Path(__file__).resolve().parents[1] / "config" / SHIPPED_PROFILE))


def pytest_configure(config: pytest.Config) -> None:
    # scripts/test sets SHARPEYE_REQUIRE_ROS=1: there, a missing rclpy or unbuilt
    # messages must fail the run instead of quietly skipping every ROS test.
    if os.environ.get("SHARPEYE_REQUIRE_ROS") == "1":
        # vision_msgs too: scripts/test builds test/interfaces/vision_msgs where none is installed.
        try:
            import rclpy  # noqa: F401
            import sharpeye_ros.msg  # noqa: F401
            import vision_msgs.msg  # noqa: F401
        except ImportError as err:
            raise pytest.UsageError(
                f"SHARPEYE_REQUIRE_ROS=1 but the ROS side is unusable ({err}); "
                "run through scripts/test, which builds the package (and vision_msgs' stand-in) "
                "and sources install/"
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


@pytest.fixture(scope="session")
def save_tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """``save_tiny_model(name, configure=None)``: a tiny SharpEyes checkpoint with random
    weights (seed 0), saved like a trained one. Its captions stop after 8 tokens (random
    weights never stop early) unless ``configure(config)`` changes the config first."""
    torch = pytest.importorskip("torch")
    from sharpeye_ros.model import SharpEyes, presets

    def save(name: str, configure: Callable[[Any], None] = lambda config: None) -> Path:
        torch.manual_seed(0)
        config = presets.tiny()
        config.generation.max_new_tokens = 8
        configure(config)
        directory = tmp_path_factory.mktemp(name) / "model"
        SharpEyes.from_config(config).save_pretrained(directory)
        return directory

    return save


@pytest.fixture(scope="session")
def tiny_model_dir(save_tiny_model: Callable[..., Path]) -> Path:
    """The tiny checkpoint of :func:`save_tiny_model`, saved once per session."""
    return save_tiny_model("tiny_model")
