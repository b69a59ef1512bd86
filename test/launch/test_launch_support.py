"""The launch files' shared helpers, and what the launch files do with them (read statically).

test_sharpeye_launch.py and test_ros2_launch.py run the launch files for real where a ROS 2
install with launch is; these checks run everywhere.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from sharpeye_ros.ros.launch_support import (NodeExited, log_level_arguments, logger_name, normalize_namespace,
                                             on_node_exit, parse_bool, profile_environment, resolve_topic,
                                             rviz_config, rviz_missing_message)

REPO = Path(__file__).resolve().parents[2]
LAUNCH = {"captioner": REPO / "launch" / "captioner.launch.py", "demo": REPO / "launch" / "demo.launch.py"}


def test_profile_applies_unless_the_user_chose_one() -> None:
    assert profile_environment({}, "/share/p.xml") == {"FASTRTPS_DEFAULT_PROFILES_FILE": "/share/p.xml"}
    assert profile_environment({"FASTRTPS_DEFAULT_PROFILES_FILE": "/mine.xml"}, "/share/p.xml") == {}
    assert profile_environment({"FASTDDS_DEFAULT_PROFILES_FILE": "/mine.xml"}, "/share/p.xml") == {}
    assert profile_environment({"FASTRTPS_DEFAULT_PROFILES_FILE": ""}, "/p.xml") == {
        "FASTRTPS_DEFAULT_PROFILES_FILE": "/p.xml"}  # set but empty: not a choice
    assert profile_environment({}, "") == {}


def test_names_resolve_as_rcl_resolves_them() -> None:
    assert normalize_namespace("") == normalize_namespace("/") == ""
    assert normalize_namespace("robot1/") == normalize_namespace("/robot1") == "/robot1"
    with pytest.raises(ValueError, match="not a valid ROS namespace"):
        normalize_namespace("robot 1")
    assert resolve_topic("/camera/image_raw", "robot1") == "/camera/image_raw"
    assert resolve_topic("front/image_raw/", "/robot1") == "/robot1/front/image_raw"
    assert resolve_topic("image", "") == "/image"
    assert logger_name("", "captioner") == "captioner"
    assert logger_name("/a/b", "captioner") == "a.b.captioner"


def test_log_level_is_set_on_the_named_loggers_only() -> None:
    assert log_level_arguments("debug", ["robot1.captioner"]) == ["--log-level", "robot1.captioner:=debug"]
    with pytest.raises(ValueError, match="log_level must be one of"):
        log_level_arguments("verbose", ["captioner"])
    for name, path in LAUNCH.items():
        source = path.read_text()
        # No bare `--log-level <level>`: that one is global and floods the console with rcl/rmw.
        assert "log_level_arguments(value[\"log_level\"], [logger_name(namespace," in source, name


def test_bools_are_checked() -> None:
    assert parse_bool("rviz", "True") and not parse_bool("rviz", "false")
    with pytest.raises(ValueError, match="rviz must be true or false"):
        parse_bool("rviz", "yes please")


def test_rviz_config_follows_namespace_and_image_topic() -> None:
    text = (REPO / "config" / "sharpeye.rviz").read_text()
    assert rviz_config(text, "", "/camera/image_raw") == text  # the defaults: unchanged
    moved = yaml.safe_load(rviz_config(text, "robot1", "front/image_raw"))
    topics = {d["Name"]: d["Topic"]["Value"] for d in moved["Visualization Manager"]["Displays"]}
    assert topics == {"Caption image": "/robot1/caption_image", "Caption text": "/robot1/caption_markers",
                      "Camera": "/robot1/front/image_raw"}


def test_rviz_missing_says_how_to_install_it() -> None:
    message = rviz_missing_message("jazzy")
    assert "sudo apt install ros-jazzy-rviz2" in message and "rviz:=false" in message


def _event(returncode: int) -> SimpleNamespace:
    return SimpleNamespace(returncode=returncode, process_name="captioner-2",
                           action=SimpleNamespace(node_name="/robot1/captioner"))


def test_a_node_that_fails_ends_the_launch_with_its_reason() -> None:
    with pytest.raises(NodeExited, match=r"/robot1/captioner exited with code 1 \(its log above says why\)"):
        on_node_exit(_event(1), SimpleNamespace(is_shutdown=False))
    # During a Ctrl-C shutdown every node exits, with whatever code: nothing more to do.
    assert on_node_exit(_event(-2), SimpleNamespace(is_shutdown=True)) is None


def test_a_node_that_exits_cleanly_shuts_the_launch_down() -> None:
    pytest.importorskip("launch", reason="launch (ROS 2) is not installed here; the failure path "
                                         "above needs none")
    from launch.actions import Shutdown

    (action,) = on_node_exit(_event(0), SimpleNamespace(is_shutdown=False))
    assert isinstance(action, Shutdown)


def _node_calls(name: str) -> list[ast.Call]:
    tree = ast.parse(LAUNCH[name].read_text())
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "Node"]


def _keywords(call: ast.Call) -> dict[str, str]:
    return {k.arg: ast.unparse(k.value) for k in call.keywords if k.arg}


def test_every_node_ends_the_launch_when_it_exits() -> None:
    for name in LAUNCH:
        source = LAUNCH[name].read_text()
        targets = re.findall(r"OnProcessExit\(target_action=(\w+), on_exit=on_node_exit\)", source)
        assigned = {m for m in re.findall(r"^\s*(\w+) = Node\(", source, re.M)}
        assert assigned and assigned == set(targets), (name, assigned, targets)


def test_demo_applies_its_arguments_to_every_node() -> None:
    """namespace, image_topic, use_sim_time, log_level and the Fast DDS profile reach the camera
    as well as the captioner (through captioner.launch.py), RViz its config and sim time."""
    camera, rviz = _node_calls("demo")
    cam = _keywords(camera)
    assert cam["namespace"] == "namespace"
    assert "topic" in cam["remappings"] and cam["additional_env"] == "env"
    assert "value['log_level']" in cam["ros_arguments"] and "params" == cam["parameters"][1:-1]
    source = LAUNCH["demo"].read_text()
    assert '"use_sim_time": sim_time' in source
    viewer = _keywords(rviz)
    assert viewer["additional_env"] == "env" and "sim_time" in viewer["parameters"]
    assert "rviz_config(f.read(), namespace, topic)" in source
    tree = ast.parse(source)
    passed = next(n for n in tree.body if isinstance(n, ast.Assign)
                  and getattr(n.targets[0], "id", "") == "CAPTIONER_ARGUMENTS")
    passed_names = set(ast.literal_eval(passed.value))
    captioner_args = set(ast.literal_eval(next(
        n.value for n in ast.parse(LAUNCH["captioner"].read_text()).body
        if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "ARGUMENTS")))
    assert passed_names == captioner_args | {"params_file"}  # all of captioner.launch.py's, passed on
    # Every declared argument is read.
    arguments = re.search(r"^ARGUMENTS = \{(.*?)^\}", source, re.S | re.M).group(1)
    for argument in re.findall(r'^    "(\w+)":', arguments, re.M):
        assert f'value["{argument}"]' in source or argument in passed_names, argument


def test_show_args_is_readable() -> None:
    """No substitution objects as defaults (they print as PathJoin(...)), no '' as a choice."""
    for name, path in LAUNCH.items():
        source = path.read_text()
        assert "PathJoinSubstitution" not in source and "FindPackageShare" not in source, name
        choices = re.search(r"^CHOICES = \{(.*?)^\}", source, re.S | re.M).group(1)
        assert '""' not in choices and "''" not in choices, name
    assert "from_launch_arguments(" in LAUNCH["captioner"].read_text()  # checked in the launch file instead
