"""Pure helpers of the launch files and the ``demo`` executable (no launch, no rclpy).

What ``launch/captioner.launch.py``, ``launch/demo.launch.py`` and :mod:`sharpeye_ros.ros.demo`
share, kept here so it is unit-tested and written once: the Fast DDS profile choice, node
logger names for a scoped ``--log-level``, topic resolution in a namespace, the RViz
config rewritten for them, and the check that RViz is installed (``ament_index_python``,
imported where it is needed).
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Mapping, Optional

# Fast DDS reads its XML profiles from the file this variable names (Humble's Fast DDS 2.6
# and Jazzy's 2.14); Fast DDS 3 reads FASTDDS_DEFAULT_PROFILES_FILE. A user's choice in
# either one is kept.
PROFILE_VARIABLES = ("FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_DEFAULT_PROFILES_FILE")
SHIPPED_PROFILE = "fastdds_large_shm.xml"  # in the package's share/config
LOG_LEVELS = ("debug", "info", "warn", "error", "fatal")
TRUE, FALSE = ("true", "True", "1"), ("false", "False", "0")
# Topics named in config/sharpeye.rviz: the captioner's outputs and the camera image.
RVIZ_CAPTIONER_TOPICS = ("/caption_image", "/caption_markers")
RVIZ_CAMERA_TOPIC = "/camera/image_raw"


def profile_environment(env: Mapping[str, str], profile: str | Path) -> dict[str, str]:
    """The variables to set so that Fast DDS loads ``profile``: none when ``env`` already
    names a profiles file (the user's choice wins) or ``profile`` is empty."""
    if not str(profile) or any(env.get(name) for name in PROFILE_VARIABLES):
        return {}
    return {PROFILE_VARIABLES[0]: str(profile)}


def parse_bool(name: str, value: str) -> bool:
    """A launch argument's "true"/"false"; ValueError naming the argument otherwise."""
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    raise ValueError(f"launch argument {name} must be true or false, got {value!r}")


def normalize_namespace(namespace: str) -> str:
    """'' for the root namespace, else '/a/b' (slashes trimmed); ValueError for a bad name."""
    namespace = namespace.strip().strip("/")
    if namespace and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*", namespace):
        raise ValueError(f"launch argument namespace {namespace!r} is not a valid ROS namespace")
    return f"/{namespace}" if namespace else ""


def resolve_topic(topic: str, namespace: str) -> str:
    """The absolute name of ``topic`` for a node in ``namespace`` (as rcl resolves it):
    absolute names stay, relative ones go under the namespace."""
    topic = topic.strip()
    if not topic or topic == "/" or topic.startswith("~"):
        raise ValueError(f"topic {topic!r} must be a plain absolute or relative name")
    if topic.startswith("/"):
        return topic.rstrip("/")
    return f"{normalize_namespace(namespace)}/{topic.rstrip('/')}"


def logger_name(namespace: str, node: str) -> str:
    """The logger of node ``node`` in ``namespace`` ('/robot1' -> 'robot1.captioner'), the
    name ``--log-level <logger>:=<level>`` takes to set one node's level only."""
    parts = [p for p in normalize_namespace(namespace).split("/") if p]
    return ".".join(parts + [node])


def log_level_arguments(level: str, loggers: list[str]) -> list[str]:
    """``--ros-args`` that set ``level`` on ``loggers`` only, so that debug output is the
    node's own and not every rcl/rmw library's."""
    if level not in LOG_LEVELS:
        raise ValueError(f"launch argument log_level must be one of {', '.join(LOG_LEVELS)}, got {level!r}")
    arguments: list[str] = []
    for name in loggers:
        arguments += ["--log-level", f"{name}:={level}"]
    return arguments


def rviz_config(text: str, namespace: str, image_topic: str) -> str:
    """config/sharpeye.rviz with its topics moved to where the demo's nodes publish: the
    captioner's outputs under ``namespace`` and the camera display on ``image_topic``."""
    ns = normalize_namespace(namespace)
    mapping = {topic: ns + topic for topic in RVIZ_CAPTIONER_TOPICS}
    mapping[RVIZ_CAMERA_TOPIC] = resolve_topic(image_topic, namespace)

    def replace(match: re.Match[str]) -> str:
        return match.group(1) + mapping.get(match.group(2), match.group(2))

    return re.sub(r"^(\s*Value: )(/\S+)$", replace, text, flags=re.M)


def write_rviz_config(template: str | Path, namespace: str, image_topic: str) -> str:
    """:func:`rviz_config` of the file ``template``, written to a new temporary file (RViz
    reads a config from a path); its path."""
    text = rviz_config(Path(template).read_text(), namespace, image_topic)
    with tempfile.NamedTemporaryFile("w", prefix="sharpeye_", suffix=".rviz", delete=False) as f:
        f.write(text)
    return f.name


def rviz_installed() -> bool:
    """True when the rviz2 package is installed (in the ament index)."""
    from ament_index_python.packages import PackageNotFoundError, get_package_prefix

    try:
        get_package_prefix("rviz2")
        return True
    except PackageNotFoundError:
        return False


def rviz_missing_message(distro: Optional[str]) -> str:
    """What to tell a user who asked for rviz:=true on a machine without RViz."""
    package = f"ros-{distro}-rviz2" if distro else "ros-<distro>-rviz2"
    return (f"rviz:=true but RViz is not installed (package rviz2 not found): install it with "
            f"`sudo apt install {package}` (it brings rviz_default_plugins), or launch with rviz:=false")


__all__ = ["PROFILE_VARIABLES", "SHIPPED_PROFILE", "LOG_LEVELS", "profile_environment", "parse_bool",
           "normalize_namespace", "resolve_topic", "logger_name", "log_level_arguments", "rviz_config",
           "write_rviz_config", "rviz_installed", "rviz_missing_message", "NodeExited", "on_node_exit"]


class NodeExited(RuntimeError):
    """A node of the launch exited by itself with a failure: the launch ends non-zero."""


def on_node_exit(event, context):  # type: ignore[no-untyped-def]
    """``OnProcessExit`` callback that ends the whole launch when a node exits by itself:
    non-zero (raised, so ``ros2 launch`` logs why and exits 1) or zero (a plain Shutdown).
    Nothing happens while the launch is already shutting down (Ctrl-C)."""
    if context.is_shutdown:
        return None
    name = event.action.node_name if hasattr(event.action, "node_name") else event.process_name
    if event.returncode != 0:
        raise NodeExited(f"{name} exited with code {event.returncode} (its log above says why); "
                         "stopping the launch")
    from launch.actions import Shutdown  # only here: the rest of this module needs no launch

    return [Shutdown(reason=f"{name} exited")]
